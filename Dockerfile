# vobiz-exporter container image. docs/deploy.md describes how to run it.
#
#   docker build -t vobiz-exporter .
#   docker run -p 9612:9612 -p 9613:9613 \
#     -v "$PWD/config.yaml:/etc/vobiz-exporter/config.yaml:ro" \
#     -e VOBIZ_SECRET_MUMBAI=... vobiz-exporter
#
# Stage 1 builds the wheel; stage 2 installs it into a venv on a clean slim base, so the final
# image carries no build tools and no source tree. tests/test_packaging.py replays the build
# stage's commands and the runtime stage's install outside Docker: keep them plain shell.

ARG PYTHON_IMAGE=python:3.11-slim

# --- stage 1: build the wheel ---------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m pip wheel --no-deps --wheel-dir dist .

# --- stage 2: runtime -----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="vobiz-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Vobiz SIP trunk webhooks" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/opt/venv/bin:${PATH}" \
    VOBIZ_EXPORTER_CONFIG=/etc/vobiz-exporter/config.yaml

# An unprivileged user with a fixed uid, so Kubernetes' runAsNonRoot can verify it and a
# mounted config or secret file only needs to be readable by 10001.
RUN groupadd --gid 10001 vobiz \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin vobiz \
 && mkdir -p /etc/vobiz-exporter

# The `fast` extra brings orjson and uvloop (prebuilt manylinux wheels: no compiler needed).
COPY --from=build /src/dist/ /tmp/wheels/
RUN python -m venv /opt/venv \
 && set -- /tmp/wheels/vobiz_exporter-*.whl \
 && /opt/venv/bin/pip install --no-cache-dir "$1[fast]"

# The configuration is mounted here (VOBIZ_EXPORTER_CONFIG points at config.yaml); relative
# paths in it (web.config_file, TLS files) resolve against this directory. Trunk secrets come
# from the environment (secret_env) or mounted files (secret_file), never from the image.
WORKDIR /etc/vobiz-exporter
USER 10001:10001

# 9612: metrics (keep internal). 9613: webhooks (may face the internet via your proxy).
EXPOSE 9612 9613

# The webhook listener answers /-/healthy without authentication even when the metrics
# listener has basic auth, so this works in every configuration with plain HTTP on :9613.
# Set VOBIZ_EXPORTER_HEALTHCHECK_URL when the webhook listener is on another port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ.get('VOBIZ_EXPORTER_HEALTHCHECK_URL', 'http://127.0.0.1:9613/-/healthy'), timeout=3)"]

ENTRYPOINT ["vobiz-exporter"]
CMD ["serve"]
