"""Packaging: the Dockerfile, docker-compose.yml and the image's runtime layer, without a Docker engine.

No Docker engine runs here, so the files are parsed and checked against the repository and the
config, Prometheus' composed config goes through the real ``promtool``, and the image is
approximated by replaying the Dockerfile itself: the build stage's COPY/RUN steps and the runtime
stage's install steps run in temporary directories standing in for the container's paths, and
the installed ``vobiz-exporter`` is then started from outside the source tree with the config at
the (re-rooted) mounted-config path.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from exporter.cli import build_parser
from exporter.config import load_config

from .helpers import exposed, free_port
from .procs import ROOT, http_get, start_process, wait_until

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
CONFIG_EXAMPLE = ROOT / "config.example.yaml"
CONFIG_PATH = "/etc/vobiz-exporter/config.yaml"  # the documented mount path (docs/deploy.md)
RULES_DIR = ROOT / "prometheus" / "rules"
COMPILERS = ("gcc", "g++", "cc", "clang", "build-essential", "make", "cmake", "rustc", "cargo")


# --- a small Dockerfile parser -------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined
    line: int

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _substitute(text: str, variables: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` as Docker expands them in FROM and ENV (no modifiers needed here)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; comments and blank lines go, continuations are joined."""
    logical: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1].strip())
            continue
        buf.append(stripped)
        logical.append((start, " ".join(buf)))
        buf = []
    assert not buf, "the Dockerfile ends inside a continued instruction"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical:
        keyword, _, args = line.partition(" ")
        inst = Instruction(keyword.upper(), args.strip(), number)
        if inst.keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", inst.args, re.IGNORECASE)
            assert m, f"line {number}: cannot read FROM {inst.args!r}"
            stages.append(Stage(_substitute(m.group(1), global_args), m.group(2)))
        elif not stages:
            assert inst.keyword == "ARG", f"line {number}: only ARG may come before the first FROM"
            name, _, default = inst.args.partition("=")
            global_args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(inst)
    return stages


def env_pairs(inst: Instruction) -> list[tuple[str, str]]:
    pairs = []
    for token in shlex.split(inst.args):
        key, sep, value = token.partition("=")
        assert sep, f"line {inst.line}: use ENV KEY=VALUE, not the legacy ENV KEY VALUE"
        pairs.append((key, value))
    return pairs


def copy_parts(inst: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY."""
    tokens = inst.exec_form() or shlex.split(inst.args)
    flags = {}
    while tokens and tokens[0].startswith("--"):
        key, _, value = tokens.pop(0)[2:].partition("=")
        flags[key] = value
    assert len(tokens) >= 2, f"line {inst.line}: COPY needs a source and a destination"
    return flags, tokens[:-1], tokens[-1]


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def example_ports() -> tuple[int, int]:
    config = load_config(str(CONFIG_EXAMPLE))
    return config.web.listen_address.port, config.webhook.listen_address.port


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


# --- Dockerfile ----------------------------------------------------------------------------------


def test_parser_joins_continuations_and_drops_comments() -> None:
    stages = parse_dockerfile(
        'ARG BASE=python:3.11-slim\nFROM ${BASE} AS b\nRUN a \\\n  # a comment\n  && b\nFROM $BASE\nCMD ["x", "y"]\n'
    )
    assert [(s.base, s.name) for s in stages] == [("python:3.11-slim", "b"), ("python:3.11-slim", None)]
    assert stages[0].instructions == [Instruction("RUN", "a && b", 3)]
    assert stages[1].instructions[0].exec_form() == ["x", "y"]


def test_two_stages_on_python_slim_and_the_final_one_takes_only_the_wheel(stages: list[Stage]) -> None:
    assert len(stages) == 2
    build, final = stages
    assert build.base == final.base == "python:3.11-slim"
    assert build.name is not None
    copies = [copy_parts(i) for i in final.all("COPY")]
    assert copies, "the final stage must copy the wheel from the build stage"
    for flags, _sources, _dest in copies:
        # Anything copied straight from the build context would bring source files in.
        assert flags.get("from") == build.name, flags


def test_final_stage_runs_as_uid_10001(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the final stage has no USER: it would run as root"
    name, _, group = user.args.partition(":")
    assert name not in ("root", "0", "")
    assert group not in ("root", "0")
    assert name == "10001", "numeric, so Kubernetes' runAsNonRoot can check it"
    # The uid exists in the image (useradd in a RUN of the final stage).
    assert any(re.search(r"useradd\b.*--uid 10001\b", r.args) for r in final.all("RUN"))


def test_exposes_both_listener_ports(final: Stage, example_ports: tuple[int, int]) -> None:
    exposed = {int(p.split("/")[0]) for e in final.all("EXPOSE") for p in e.args.split()}
    assert exposed == {9612, 9613}
    assert set(example_ports) == exposed


def test_healthcheck_hits_the_webhook_listener_healthy_endpoint(final: Stage) -> None:
    hc = final.last("HEALTHCHECK")
    assert hc is not None
    m = re.fullmatch(r"((?:--\S+\s+)*)CMD\s+(.+)", hc.args)
    assert m, f"HEALTHCHECK must run a command, got {hc.args!r}"
    cmd = Instruction("CMD", m.group(2), hc.line).exec_form()
    assert cmd is not None, "exec form, so no shell is needed"
    assert cmd[:2] == ["python", "-c"], "slim images have no curl or wget"
    assert "'http://127.0.0.1:9613/-/healthy'" in cmd[2]
    assert "timeout=" in cmd[2]
    options = dict(opt.lstrip("-").split("=", 1) for opt in m.group(1).split())
    assert set(options) <= {"interval", "timeout", "start-period", "retries", "start-interval"}


def test_entrypoint_is_the_console_script(final: Stage) -> None:
    entry = final.last("ENTRYPOINT")
    cmd = final.last("CMD")
    assert entry is not None and cmd is not None
    assert entry.exec_form() == ["vobiz-exporter"]
    assert cmd.exec_form() == ["serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vobiz-exporter"] == "exporter.cli:main"


def test_config_path_and_environment(final: Stage) -> None:
    env = dict(p for e in final.all("ENV") for p in env_pairs(e))
    assert env["VOBIZ_EXPORTER_CONFIG"] == CONFIG_PATH
    assert env["PATH"].split(":")[0] == "/opt/venv/bin"
    workdir = final.last("WORKDIR")
    assert workdir is not None and workdir.args == str(PurePosixPath(CONFIG_PATH).parent)
    # No secret is baked in: nothing named like one is set in the image.
    assert not [k for k in env if re.search(r"SECRET|PASSWORD|TOKEN", k)]


def test_final_stage_installs_no_build_tools(final: Stage) -> None:
    for run in final.all("RUN"):
        words = set(re.split(r"[\s;&|]+", run.args))
        assert not words & {"apt-get", "apt", "apk", "yum", "dnf"}, f"line {run.line}: {run.args}"
        assert not words & set(COMPILERS), f"line {run.line}: {run.args}"
        assert not [w for w in words if w.endswith("-dev")], f"line {run.line}: {run.args}"
    installs = [r for r in final.all("RUN") if "pip install" in r.args]
    assert len(installs) == 1
    assert "python -m venv /opt/venv" in installs[0].args
    assert "[fast]" in installs[0].args


def _ignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln.rstrip("/") for ln in lines if ln and not ln.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = PurePosixPath(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not handled by this check"
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatch(prefix, pattern) or (bare != pattern and fnmatch.fnmatch(prefix.split("/")[-1], bare)):
                return True
    return False


def test_build_context_has_every_copied_file(stages: list[Stage]) -> None:
    patterns = _ignore_patterns()
    for needed in (".venv", ".git", ".pytest_cache", "bench/out", "exporter/__pycache__"):
        assert _ignored(needed, patterns), f".dockerignore should exclude {needed}"
    sources = [
        s for st in stages for i in st.all("COPY") for f, srcs, _ in [copy_parts(i)] if "from" not in f for s in srcs
    ]
    assert sources, "the build stage copies the project in"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
    # The wheel build reads these; pyproject names README.md as the long description.
    assert {"pyproject.toml", "README.md", "exporter"} <= set(sources)


# --- docker-compose.yml --------------------------------------------------------------------------


@dataclass
class Mount:
    source: str
    target: str
    bind: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
            found.append(Mount(source, target, source.startswith((".", "/", "~"))))
        else:
            found.append(Mount(vol["source"], vol["target"], vol.get("type") == "bind"))
    return found


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
        else:
            host, _, container = str(entry).rpartition(":")
            ports[int(container.split("/")[0])] = int(host.rpartition(":")[2] or container.split("/")[0])
    return ports


def host_path(mount: Mount, container_path: str) -> Path:
    """The repository file a container path resolves to through a bind mount."""
    rel = PurePosixPath(container_path).relative_to(mount.target)
    return ROOT / mount.source / rel


def test_every_bind_mounted_path_exists(compose: dict[str, Any]) -> None:
    checked = set()
    for name, service in compose["services"].items():
        for mount in mounts(service):
            if mount.bind:
                assert not mount.source.startswith(("/", "~")), f"{name}: {mount.source} is outside the repo"
                checked.add(mount.source)
            else:
                assert mount.source in compose.get("volumes", {}), f"{name}: undeclared volume {mount.source}"
    # Guards the parser: these are the mounts the stack needs.
    assert checked == {
        "./config.example.yaml",
        "./deploy/prometheus.compose.yml",
        "./prometheus/rules",
        "./prometheus/alertmanager.example.yml",
        "./grafana/provisioning",
        "./grafana/dashboards",
    }
    missing = sorted(src for src in checked if not (ROOT / src).exists())
    assert not missing, f"bind-mounted but not in the repository: {missing}"
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    assert builds and all((ROOT / b / "Dockerfile").is_file() for b in builds)


def test_exporter_ports_match_the_config(compose: dict[str, Any], example_ports: tuple[int, int]) -> None:
    ports = published(compose["services"]["exporter"])
    metrics, webhooks = example_ports
    assert ports == {metrics: metrics, webhooks: webhooks}
    assert published(compose["services"]["prometheus"]) == {9090: 9090}
    assert published(compose["services"]["alertmanager"]) == {9093: 9093}
    assert published(compose["services"]["grafana"]) == {3000: 3000}


def test_exporter_and_simulator_mount_the_example_at_the_documented_path(compose: dict[str, Any]) -> None:
    for name in ("exporter", "simulator"):
        service = compose["services"][name]
        assert service["image"] == compose["services"]["exporter"]["image"]
        config_mounts = [m for m in mounts(service) if m.target == CONFIG_PATH]
        assert len(config_mounts) == 1 and config_mounts[0].source == "./config.example.yaml"


def test_simulator_arguments_parse_and_aim_at_the_exporter(
    compose: dict[str, Any], example_ports: tuple[int, int]
) -> None:
    sim = compose["services"]["simulator"]
    assert sim["entrypoint"] == ["vobiz-exporter", "simulate"]
    assert sim["restart"] == "no"
    assert sim["depends_on"] == {"exporter": {"condition": "service_healthy"}}
    args = build_parser().parse_args(["simulate", *sim["command"]])  # the real CLI parser
    assert args.config == CONFIG_PATH
    assert args.url == f"http://exporter:{example_ports[1]}"
    assert (args.scenario, args.rate, args.duration) == ("normal", 2.0, 600.0)


def test_prometheus_keeps_exemplars_and_scrapes_the_exporter(
    compose: dict[str, Any], example_ports: tuple[int, int]
) -> None:
    prom = compose["services"]["prometheus"]
    features = [
        f for arg in prom["command"] if arg.startswith("--enable-feature=") for f in arg.split("=", 1)[1].split(",")
    ]
    assert "exemplar-storage" in features
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    by_target = {m.target: m.source for m in mounts(prom)}
    assert by_target["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.compose.yml"
    assert by_target["/etc/prometheus/rules"] == "./prometheus/rules"

    config = yaml.safe_load((ROOT / "deploy" / "prometheus.compose.yml").read_text())
    jobs = {j["job_name"]: [t for sc in j["static_configs"] for t in sc["targets"]] for j in config["scrape_configs"]}
    # The alert rules watch up{job="vobiz-exporter"}.
    assert jobs["vobiz-exporter"] == [f"exporter:{example_ports[0]}"]
    assert 'up{job="vobiz-exporter"}' in (RULES_DIR / "vobiz-alerts.rules.yml").read_text()
    am = [t for a in config["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    assert am == ["alertmanager:9093"]
    for target in [*am, *(t for ts in jobs.values() for t in ts)]:
        host = target.split(":")[0]
        assert host == "localhost" or host in compose["services"], target


def test_grafana_is_provisioned_from_the_repository(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    by_target = {m.target: m for m in mounts(grafana)}
    assert by_target["/etc/grafana/provisioning"].source == "./grafana/provisioning"
    dashboards = by_target["/var/lib/grafana/dashboards"]
    assert dashboards.source == "./grafana/dashboards"
    assert sorted(p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json")) == [
        "vobiz-destinations.json",
        "vobiz-overview.json",
        "vobiz-trunk-detail.json",
    ]
    # The provider reads the directory the dashboards are mounted at.
    providers = [
        p
        for f in sorted((ROOT / "grafana/provisioning/dashboards").glob("*.yml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert [p["options"]["path"] for p in providers] == [dashboards.target]
    assert host_path(dashboards, env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]).is_file()
    # The datasource points at the compose service and its port.
    sources = [
        d
        for f in sorted((ROOT / "grafana/provisioning/datasources").glob("*.yml"))
        for d in yaml.safe_load(f.read_text())["datasources"]
    ]
    assert [d["url"] for d in sources] == ["http://prometheus:9090"]


def test_promtool_checks_the_composed_prometheus_config(compose: dict[str, Any], tmp_path: Path) -> None:
    """Lay out the files as the container sees them (re-rooted under tmp_path) and check them."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is needed (Debian package prometheus)"
    prom = compose["services"]["prometheus"]
    for mount in mounts(prom):
        if mount.bind:
            dest = tmp_path / mount.target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = ROOT / mount.source
            if src.is_dir():
                shutil.copytree(src, dest)
            else:
                shutil.copy(src, dest)
    config_file = tmp_path / "etc/prometheus/prometheus.yml"
    text = config_file.read_text()
    assert "/etc/prometheus/rules/*.yml" in text
    config_file.write_text(text.replace("/etc/prometheus/", f"{tmp_path}/etc/prometheus/"))
    proc = subprocess.run([promtool, "check", "config", str(config_file)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    rule_files = sorted(RULES_DIR.glob("*.yml"))
    assert len(rule_files) >= 2
    assert f"SUCCESS: {len(rule_files)} rule files found" in out, out
    for rule_file in rule_files:
        assert f"Checking {tmp_path}/etc/prometheus/rules/{rule_file.name}" in out, out


def test_amtool_checks_the_mounted_alertmanager_config(compose: dict[str, Any]) -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is needed (Debian package prometheus-alertmanager)"
    (mount,) = [m for m in mounts(compose["services"]["alertmanager"]) if m.bind]
    assert mount.target == "/etc/alertmanager/alertmanager.yml"
    proc = subprocess.run(
        [amtool, "check-config", str(ROOT / mount.source)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


# --- the image's runtime layer, replayed ---------------------------------------------------------

# Container directories the replay re-roots under a temporary directory. A RUN that names any
# other absolute path fails the replay: add it here when the Dockerfile starts using one.
REROOTED = ("/src", "/tmp/wheels", "/opt/venv", "/etc/vobiz-exporter")
_ABS = r"(?<![\w./$-])(/[\w.-]+(?:/[\w.*-]*)*)"


def reroot(text: str, root: Path) -> str:
    def sub(m: re.Match[str]) -> str:
        path = m.group(1)
        if any(path == p or path.startswith(p + "/") for p in REROOTED):
            return f"{root}{path}"
        return path

    return re.sub(_ABS, sub, text)


def unknown_paths(text: str) -> list[str]:
    return [p for p in re.findall(_ABS, text) if not any(p == r or p.startswith(r + "/") for r in REROOTED)]


@dataclass
class Replay:
    """One stage replayed under ``root``: its working directory and environment."""

    root: Path
    env: dict[str, str]
    workdir: str = "/"

    def path(self, container_path: str) -> Path:
        joined = PurePosixPath(self.workdir) / container_path
        return self.root / str(joined).lstrip("/")


def copy_into(src: Path, dest: Path, dest_is_dir: bool) -> None:
    """Docker COPY: a directory's contents go into the destination; a file into it or onto it."""
    if src.is_dir():
        shutil.copytree(src, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        target = dest / src.name if dest_is_dir else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, target)


def replay_stage(
    stage: Stage, root: Path, base_env: dict[str, str], previous: dict[str, Replay], run_filter: Any, timeout: float
) -> Replay:
    rp = Replay(root, dict(base_env))
    root.mkdir(parents=True, exist_ok=True)
    for inst in stage.instructions:
        if inst.keyword == "WORKDIR":
            rp.workdir = str(PurePosixPath(rp.workdir) / inst.args)
            rp.path(".").mkdir(parents=True, exist_ok=True)
        elif inst.keyword == "ENV":
            for key, value in env_pairs(inst):
                rp.env[key] = reroot(_substitute(value, rp.env), root)
        elif inst.keyword == "COPY":
            flags, sources, dest = copy_parts(inst)
            dest_path = rp.path(dest)
            many = len(sources) > 1 or dest.endswith("/")
            for src in sources:
                if "from" in flags:
                    origin = previous[flags["from"]]
                    src_path = origin.root / src.lstrip("/")
                else:
                    src_path = ROOT / src
                copy_into(src_path, dest_path, many)
        elif inst.keyword == "RUN" and run_filter(inst.args):
            assert not unknown_paths(inst.args), f"line {inst.line}: teach REROOTED {unknown_paths(inst.args)}"
            cmd = reroot(inst.args, root)
            proc = subprocess.run(
                ["/bin/sh", "-c", cmd], cwd=rp.path("."), env=rp.env, capture_output=True, text=True, timeout=timeout
            )
            assert proc.returncode == 0, f"line {inst.line}: {cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return rp


def base_image_env(tmp_path: Path) -> dict[str, str]:
    """Stands in for python:3.11-slim: `python` is a plain interpreter with pip, nothing else set.

    The project's venv is deliberately not on PATH: the build and the install must not see it.
    """
    shim = tmp_path / "base-bin"
    shim.mkdir()
    python = shim / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(getattr(sys, "_base_executable", sys.executable))} "$@"\n')
    python.chmod(0o755)
    env = {"PATH": f"{shim}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8"}
    # How this machine reaches the package index (pip may download the dependencies).
    env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("SSL_CERT_FILE",)})
    return env


def run_health(cmd: list[str], env: dict[str, str], cwd: Path) -> int:
    python = shutil.which(cmd[0], path=env["PATH"])
    assert python
    return subprocess.run([python, *cmd[1:]], env=env, cwd=cwd, capture_output=True, timeout=20).returncode


@pytest.mark.e2e
def test_wheel_built_and_installed_as_in_the_image_serves_from_outside_the_tree(
    stages: list[Stage], compose: dict[str, Any], tmp_path: Path
) -> None:
    """Build stage replayed as written; runtime install replayed; then serve, health-check, simulate."""
    build, final = stages
    env = base_image_env(tmp_path)
    built = replay_stage(build, tmp_path / "build", env, {}, run_filter=lambda _: True, timeout=150)
    wheels = sorted((tmp_path / "build/src/dist").glob("*.whl"))
    assert [w.name for w in wheels] == ["vobiz_exporter-0.1.0-py3-none-any.whl"]

    # The runtime stage's install steps (the useradd step needs root in a container: checked above).
    root = tmp_path / "image"
    image = replay_stage(
        final,
        root,
        env,
        {build.name or "": built},
        run_filter=lambda cmd: "pip install" in cmd or "-m venv" in cmd,
        timeout=180,
    )
    venv_bin = root / "opt/venv/bin"
    exe = shutil.which("vobiz-exporter", path=image.env["PATH"])
    assert exe == str(venv_bin / "vobiz-exporter")

    # The config as compose mounts it, at the documented path (re-rooted: /etc is not ours to write).
    (mount,) = [m for m in mounts(compose["services"]["exporter"]) if m.target == CONFIG_PATH]
    config_file = Path(image.env["VOBIZ_EXPORTER_CONFIG"])
    assert config_file == root / CONFIG_PATH.lstrip("/")
    shutil.copy(ROOT / mount.source, config_file)
    workdir = image.path(".")
    assert not workdir.is_relative_to(ROOT)

    # Imported from the venv, with the `fast` extra, not from the source tree.
    probe = subprocess.run(
        [str(venv_bin / "python"), "-c", "import exporter, orjson, uvloop; print(exporter.__file__)"],
        env=image.env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(root / "opt/venv/lib")
    version = subprocess.run([exe, "--version"], env=image.env, cwd=workdir, capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == f"vobiz-exporter 0.1.0 (Python {platform.python_version()})"

    entry, cmd = final.last("ENTRYPOINT"), final.last("CMD")
    assert entry is not None and cmd is not None
    args = [*(entry.exec_form() or []), *(cmd.exec_form() or [])]
    metrics_port, webhook_port = free_port(), free_port()
    argv = [
        exe,
        *args[1:],
        f"--web.listen-address=127.0.0.1:{metrics_port}",
        f"--webhook.listen-address=127.0.0.1:{webhook_port}",
    ]  # no --config: VOBIZ_EXPORTER_CONFIG
    proc = start_process(argv, tmp_path / "exporter.log", env=image.env, cwd=workdir)
    webhook = f"http://127.0.0.1:{webhook_port}"
    hc = final.last("HEALTHCHECK")
    assert hc is not None
    hc_cmd = Instruction("CMD", hc.args.split("CMD", 1)[1], hc.line).exec_form()
    assert hc_cmd is not None
    hc_env = {**image.env, "VOBIZ_EXPORTER_HEALTHCHECK_URL": f"{webhook}/-/healthy"}
    try:
        try:
            wait_until(lambda: http_get(f"{webhook}/-/healthy", timeout=1)[0] == 200, 30, what="/-/healthy")
        except TimeoutError:
            pytest.fail(f"the installed exporter did not come up:\n{proc.log()}")
        status, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert exposed(body.decode(), "vobiz_calls_active", trunk="demo") == 0.0
        assert run_health(hc_cmd, hc_env, workdir) == 0

        # The simulator service runs the same image: a short run must be counted.
        sim = subprocess.run(
            [
                exe,
                "simulate",
                f"--config={config_file}",
                f"--url={webhook}",
                "--scenario=normal",
                "--rate=10",
                "--calls=10",
                "--duration=30",
                "--seed=7",
            ],
            env=image.env,
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sim.returncode == 0, sim.stdout + sim.stderr
        m = re.search(r"trunk demo: calls (\d+), admitted (\d+)", sim.stdout)
        assert m, sim.stdout
        calls, admitted = int(m.group(1)), int(m.group(2))
        assert calls == 10
        text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode()
        assert exposed(text, "vobiz_call_attempts_total", trunk="demo", result="admitted") == admitted
        assert exposed(text, "vobiz_call_attempts_total", trunk="demo", result="rejected") == calls - admitted
    finally:
        rc = proc.stop(signal.SIGTERM)
    assert rc == 0, proc.log()
    assert run_health(hc_cmd, hc_env, workdir) != 0, "the health check must fail once the exporter is gone"
