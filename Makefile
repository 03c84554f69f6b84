# vobiz-exporter: every command a user or CI needs. `make run` and `make test` work on a fresh
# machine: they create .venv and install what is missing (Debian packages need root).
# `make run` installs the runtime and the `fast` extra only; `make test` adds the test and lint
# tools. One stamp file each, so either order works from a fresh clone.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml
# The ends of the supported prometheus-client range (pyproject.toml); `make compat` tests both.
PC_LOWEST := 0.23.1
PC_NEWEST := 0.26.0
DEB_PACKAGES := prometheus prometheus-alertmanager redis-server wrk kubectl
# Commands the tests need, one per Debian package above.
DEB_COMMANDS := prometheus promtool prometheus-alertmanager amtool redis-server wrk kubectl

.PHONY: help venv deps run test lint unit compat bench demo compose k8s clean

help:
	@echo "make run    - run the exporter with $(CONFIG) (metrics :9612, webhooks :9613)"
	@echo "make test   - lint, type-check and run the whole test suite (installs what it needs)"
	@echo "make lint   - ruff and mypy"
	@echo "make compat - byte-identity tests on the lowest and newest supported prometheus-client"
	@echo "make bench  - benchmarks (bench/RESULTS.md)"
	@echo "make demo   - exporter + simulator on this machine, for a quick look at /metrics"
	@echo "make k8s    - regenerate the Kubernetes PrometheusRule and dashboard ConfigMaps (deploy/kubernetes)"

RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Runtime only (aiohttp, prometheus-client, PyYAML, bcrypt, redis) and the `fast` extra (orjson,
# uvloop). Editable, so `make run` in a clone always runs the code in the clone.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[fast]'
	touch $@

# Everything `make test`, `make lint` and `make unit` need, on top of the runtime.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,fast]'
	touch $@

venv: $(TEST_STAMP)

# Debian packages for the real-component tests (Prometheus, promtool, Alertmanager, Redis, wrk, kubectl).
deps:
	@missing=""; for c in $(DEB_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages (missing:$$missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES) >/dev/null; \
	fi

run: $(RUN_STAMP)
	$(BIN)/vobiz-exporter serve --config $(CONFIG)

lint: $(TEST_STAMP)
	$(BIN)/ruff check exporter tests bench deploy prometheus grafana
	$(BIN)/ruff format --check exporter tests bench deploy prometheus grafana
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/pytest -q -m "not e2e"

# Two workers, one test file each at a time (module fixtures stay in one process): most e2e
# tests wait on real Prometheus/Alertmanager timers, so the suite takes half the time.
test: deps $(TEST_STAMP) lint
	$(BIN)/pytest -q -n 2 --dist loadfile
	$(MAKE) --no-print-directory compat

# The byte-identity tests of the renderer and the owned metrics against both ends of the
# supported prometheus-client range, each installed beside the venv and put first on the path.
COMPAT_TESTS := tests/test_exposition.py tests/test_hot_path_equivalence.py tests/test_prometheus_client_range.py
compat: $(TEST_STAMP)
	@for v in $(PC_LOWEST) $(PC_NEWEST); do \
	  test -d $(VENV)/pc-$$v || $(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/pc-$$v prometheus-client==$$v || exit 1; \
	  echo "prometheus-client $$v:"; \
	  VOBIZ_EXPECT_PROMETHEUS_CLIENT=$$v PYTHONPATH=$(VENV)/pc-$$v $(BIN)/pytest -q -p no:cacheprovider $(COMPAT_TESTS) || exit 1; \
	done

bench: deps $(RUN_STAMP)
	bash bench/run.sh

# A local demo without Docker: the exporter in the background, the simulator for 60 s.
demo: $(RUN_STAMP)
	$(BIN)/vobiz-exporter serve --config $(CONFIG) & pid=$$!; \
	trap 'kill $$pid' EXIT; \
	for i in $$(seq 50); do $(BIN)/python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9613/-/healthy', timeout=1)" 2>/dev/null && break; sleep 0.2; done; \
	$(BIN)/vobiz-exporter simulate --config $(CONFIG) --url http://127.0.0.1:9613 --scenario normal --rate 2 --duration 60; \
	$(BIN)/python -c "import urllib.request; print(''.join(l for l in urllib.request.urlopen('http://127.0.0.1:9612/metrics').read().decode().splitlines(True) if l.startswith('vobiz_call_attempts_total')))"

# deploy/kubernetes/base/prometheusrule.yaml and dashboards.yaml from prometheus/rules/ and
# grafana/dashboards/ (tests/test_kubernetes.py fails when they drift).
k8s: $(RUN_STAMP)
	$(BIN)/python deploy/kubernetes/generate.py

# The full stack (exporter, Prometheus, Alertmanager, Grafana, simulator); needs a Docker engine.
compose:
	docker compose up --build

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache bench/out
