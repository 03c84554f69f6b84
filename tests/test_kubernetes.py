"""deploy/kubernetes/: both kustomize overlays render with the real ``kubectl kustomize``, the
core kinds validate offline against the Kubernetes JSON schemas (``kubernetes-validate``), the
generated PrometheusRule and dashboard ConfigMaps equal a fresh generation from
prometheus/rules/ and grafana/dashboards/ (drift fails), the PrometheusRule's groups pass
``promtool check rules`` and the repository's promtool tests, the ServiceMonitor targets the
metrics Service's port by name, and the security and rollout settings are what docs/deploy.md
promises (issue 14)."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .procs import ROOT, run_cli

K8S = ROOT / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl")
PROMTOOL = shutil.which("promtool")
OVERLAYS = ("memory", "redis")
K8S_VERSION = "1.32.0"
CRDS = {"PrometheusRule", "ServiceMonitor"}

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (apt-get install kubectl)")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")

sys.path.insert(0, str(K8S))
import generate  # noqa: E402


def _render(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


_CACHE: dict[str, list[dict[str, Any]]] = {}


def rendered(overlay: str) -> list[dict[str, Any]]:
    if overlay not in _CACHE:
        _CACHE[overlay] = _render(K8S / "overlays" / overlay)
    return copy.deepcopy(_CACHE[overlay])


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return by_kind(docs, kind)[name]


def exporter_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "vobiz-exporter")


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- rendering ------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_expected_objects(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "-<hash>", d["metadata"]["name"])) for d in docs)
    expected = [
        ("ConfigMap", "vobiz-destinations-dashboard"),
        ("ConfigMap", "vobiz-exporter-config-<hash>"),
        ("ConfigMap", "vobiz-overview-dashboard"),
        ("ConfigMap", "vobiz-trunk-detail-dashboard"),
        ("Deployment", "vobiz-exporter"),
        ("NetworkPolicy", "vobiz-exporter"),
        ("PodDisruptionBudget", "vobiz-exporter"),
        ("PrometheusRule", "vobiz-alerts"),
        ("PrometheusRule", "vobiz-destinations"),
        ("PrometheusRule", "vobiz-recording"),
        ("Secret", "vobiz-exporter-trunks-<hash>"),
        ("Service", "vobiz-exporter"),
        ("Service", "vobiz-exporter-webhook"),
        ("ServiceMonitor", "vobiz-exporter"),
    ]
    if overlay == "redis":
        expected += [("Deployment", "vobiz-redis"), ("NetworkPolicy", "vobiz-redis"), ("Service", "vobiz-redis")]
    assert kinds == sorted(expected)
    assert {d["metadata"].get("namespace") for d in docs} == {"vobiz"}
    assert all(d["metadata"]["labels"]["app.kubernetes.io/name"] == "vobiz-exporter" for d in docs)
    assert exporter_deployment(docs)["spec"]["replicas"] == (1 if overlay == "memory" else 2)


def _config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("vobiz-exporter-config-")]
    cfg: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return cfg


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_rendered_config_passes_check_config(overlay: str, tmp_path: Path) -> None:
    """The ConfigMap's config is valid for this exporter, with the Secret's files where the
    Deployment mounts them (the mount path rewritten into tmp_path)."""
    docs = rendered(overlay)
    cfg = _config(docs)
    dep = exporter_deployment(docs)
    (secret,) = by_kind(docs, "Secret").values()
    mounts = {m["name"]: m["mountPath"] for m in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for key, value in secret["data"].items():
        (secrets_dir / key).write_bytes(base64.b64decode(value))
    for trunk in cfg["trunks"]:
        assert trunk["secret_file"].startswith(mounts["trunk-secrets"] + "/")
        trunk["secret_file"] = str(secrets_dir / Path(trunk["secret_file"]).name)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run_cli("check-config", str(path), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert cfg["dedupe"]["backend"] == overlay
    if overlay == "redis":
        assert cfg["dedupe"]["redis_url"] == "redis://vobiz-redis:6379/0"
        redis_svc = one(docs, "Service", "vobiz-redis")
        assert [p["port"] for p in redis_svc["spec"]["ports"]] == [6379]
    # The listeners are the container ports the Services and probes name.
    ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {
        "metrics": int(cfg["web"]["listen_address"].rsplit(":", 1)[1]),
        "webhook": int(cfg["webhook"]["listen_address"].rsplit(":", 1)[1]),
    }


# --- schemas --------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = rendered(overlay)
    checked = []
    for doc in docs:
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked.append(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "NetworkPolicy"} <= set(checked)
    # The validator really validates: a typo'd field and a wrong type are refused.
    bad = exporter_deployment(docs)
    bad["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = exporter_deployment(docs)
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


@needs_kubectl
def test_crds_have_the_operator_shape() -> None:
    """No offline schema for the Prometheus Operator's CRDs here: the fields it requires."""
    docs = rendered("redis")
    for doc in docs:
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    sm = one(docs, "ServiceMonitor", "vobiz-exporter")
    assert set(sm["spec"]) == {"jobLabel", "selector", "endpoints"}
    assert all(set(e) <= {"port", "path", "interval", "scrapeTimeout"} for e in sm["spec"]["endpoints"])
    for rule in by_kind(docs, "PrometheusRule").values():
        assert set(rule["spec"]) == {"groups"}
        for group in rule["spec"]["groups"]:
            assert set(group) <= {"name", "interval", "rules", "limit"}
            assert all(("alert" in r) != ("record" in r) and "expr" in r for r in group["rules"])


# --- security, probes, rollout --------------------------------------------------------------


def _dockerfile_user() -> tuple[int, int]:
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", (ROOT / "Dockerfile").read_text(), re.M)
    assert len(users) == 1, users
    return int(users[0][0]), int(users[0][1])


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down(overlay: str) -> None:
    docs = rendered(overlay)
    for dep in by_kind(docs, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert set(c["resources"]["requests"]) == {"cpu", "memory"}
            assert set(c["resources"]["limits"]) == {"cpu", "memory"}
            assert c["livenessProbe"] and c["readinessProbe"]
    pod = exporter_deployment(docs)["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == _dockerfile_user()
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "webhook"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "webhook"}
    assert c["image"] == "vobiz-exporter:0.1.0"


@needs_kubectl
def test_a_config_change_rolls_the_pods(tmp_path: Path) -> None:
    """configMapGenerator's content hash is the config checksum: another config renders another
    ConfigMap name, and the Deployment's pod template follows it (so `kubectl apply` rolls)."""
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy_dir)
    before = _render(copy_dir / "overlays" / "memory")
    cfg = copy_dir / "base" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("replay_tolerance: 15m", "replay_tolerance: 10m"))
    after = _render(copy_dir / "overlays" / "memory")

    def cm_name(docs: list[dict[str, Any]]) -> str:
        (name,) = [n for n in by_kind(docs, "ConfigMap") if n.startswith("vobiz-exporter-config-")]
        return name

    def volume(docs: list[dict[str, Any]]) -> str:
        vols = exporter_deployment(docs)["spec"]["template"]["spec"]["volumes"]
        names: list[str] = [v["configMap"]["name"] for v in vols if "configMap" in v]
        (name,) = names
        return name

    assert cm_name(before) != cm_name(after)
    assert (volume(before), volume(after)) == (cm_name(before), cm_name(after))
    assert exporter_deployment(before)["spec"]["template"] != exporter_deployment(after)["spec"]["template"]
    # The same for a rotated trunk secret.
    (copy_dir / "base" / "secrets" / "demo.example").write_text("rotated")
    rotated = _render(copy_dir / "overlays" / "memory")
    assert exporter_deployment(rotated)["spec"]["template"] != exporter_deployment(after)["spec"]["template"]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_pdb_and_network_policy_select_the_exporter_pods(overlay: str) -> None:
    docs = rendered(overlay)
    dep = exporter_deployment(docs)
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert _matches(dep["spec"]["selector"]["matchLabels"], pod_labels)
    container_ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    services = by_kind(docs, "Service")
    for name, port in (("vobiz-exporter", "metrics"), ("vobiz-exporter-webhook", "webhook")):
        svc = services[name]
        assert _matches(svc["spec"]["selector"], pod_labels)
        assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, port)]
        assert port in container_ports
    pdb = one(docs, "PodDisruptionBudget", "vobiz-exporter")
    assert _matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"]["maxUnavailable"] == 1
    if overlay == "redis":  # the Redis pod is not behind the exporter's Services or PDB
        redis_labels = one(docs, "Deployment", "vobiz-redis")["spec"]["template"]["metadata"]["labels"]
        assert not _matches(services["vobiz-exporter"]["spec"]["selector"], redis_labels)
        assert not _matches(pdb["spec"]["selector"]["matchLabels"], redis_labels)
        redis_np = one(docs, "NetworkPolicy", "vobiz-redis")
        assert redis_np["spec"]["ingress"] == [
            {
                "from": [{"podSelector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}],
                "ports": [{"port": "redis", "protocol": "TCP"}],
            }
        ]
    # Metrics: only the monitoring namespace. Webhooks: any source (the ingress controller).
    np = one(docs, "NetworkPolicy", "vobiz-exporter")
    assert _matches(np["spec"]["podSelector"]["matchLabels"], pod_labels)
    assert np["spec"]["policyTypes"] == ["Ingress"]
    rules = {r["ports"][0]["port"]: r.get("from") for r in np["spec"]["ingress"]}
    assert rules == {
        "metrics": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "webhook": None,
    }


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_targets_the_metrics_service_port_by_name(overlay: str) -> None:
    docs = rendered(overlay)
    sm = one(docs, "ServiceMonitor", "vobiz-exporter")
    services = by_kind(docs, "Service")
    wanted = sm["spec"]["selector"]["matchLabels"]
    selected = [n for n, s in services.items() if _matches(wanted, s["metadata"]["labels"])]
    assert selected == ["vobiz-exporter"]  # the metrics Service, and not the webhook one
    svc = services["vobiz-exporter"]
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert "namespaceSelector" not in sm["spec"]  # same namespace as the Service
    # The scrape job is named after the Service label the rules' up{job="vobiz-exporter"} expects.
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "vobiz-exporter"
    alerts = (ROOT / "prometheus" / "rules" / "vobiz-alerts.rules.yml").read_text()
    assert 'up{job="vobiz-exporter"}' in alerts


# --- generated objects: no drift, and the rules pass promtool -------------------------------


def test_committed_prometheusrule_and_dashboards_equal_a_fresh_generation() -> None:
    """Fails when prometheus/rules/ or grafana/dashboards/ changed without `make k8s`."""
    stale = [
        str(p.relative_to(ROOT)) for p, text in generate.outputs().items() if not p.exists() or p.read_text() != text
    ]
    assert stale == [], f"regenerate with `make k8s` (python deploy/kubernetes/generate.py): {stale}"
    check = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert check.returncode == 0, check.stderr


def test_generated_objects_carry_their_sources_unchanged() -> None:
    rules = [d for d in yaml.safe_load_all(generate.RULE_FILE.read_text()) if d]
    sources = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
    assert [d["metadata"]["annotations"]["vobiz-exporter/source"] for d in rules] == [
        f"prometheus/rules/{p.name}" for p in sources
    ]
    for doc, path in zip(rules, sources, strict=True):
        assert doc["spec"] == yaml.safe_load(path.read_text())
    boards = [d for d in yaml.safe_load_all(generate.DASHBOARD_FILE.read_text()) if d]
    sources = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert len(boards) == len(sources) > 0
    for doc, path in zip(boards, sources, strict=True):
        assert doc["kind"] == "ConfigMap"
        assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert list(doc["data"]) == [path.name]
        assert json.loads(doc["data"][path.name]) == json.loads(path.read_text())
        assert len(doc["data"][path.name].encode()) < 900_000  # a ConfigMap holds at most 1 MiB


def test_generator_detects_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift check can fail: a changed rule file makes the committed object stale."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "prometheus" / "rules", rules)
    monkeypatch.setattr(generate, "RULES_DIR", rules)
    before = generate.prometheus_rules()
    path = rules / "vobiz-alerts.rules.yml"
    assert "for: 5m" in path.read_text()
    path.write_text(path.read_text().replace("for: 5m", "for: 6m", 1))
    after = generate.prometheus_rules()
    assert before != after and after.count("for: 6m") == before.count("for: 6m") + 1
    monkeypatch.setattr(generate, "RULE_FILE", tmp_path / "prometheusrule.yaml")
    generate.RULE_FILE.write_text(before)
    monkeypatch.setattr(generate, "DASHBOARD_FILE", tmp_path / "dashboards.yaml")
    generate.DASHBOARD_FILE.write_text(generate.dashboards())
    monkeypatch.setattr(sys, "argv", ["generate.py", "--check"])
    assert generate.main() == 1  # the committed copy is stale: --check fails
    generate.RULE_FILE.write_text(after)
    assert generate.main() == 0


@needs_kubectl
@needs_promtool
def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    """The rendered PrometheusRules' groups, written back as rule files, pass `promtool check
    rules` and every promtool test in prometheus/tests/ (which name ../rules/<file>)."""
    assert PROMTOOL is not None
    rules_dir, tests_dir = tmp_path / "rules", tmp_path / "tests"
    rules_dir.mkdir()
    for doc in by_kind(rendered("redis"), "PrometheusRule").values():
        source = Path(doc["metadata"]["annotations"]["vobiz-exporter/source"]).name
        (rules_dir / source).write_text(yaml.safe_dump(doc["spec"], sort_keys=False))
    files = sorted(rules_dir.iterdir())
    assert [f.name for f in files] == sorted(p.name for p in (ROOT / "prometheus" / "rules").glob("*.yml"))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, files)], capture_output=True, text=True, timeout=120, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.copytree(ROOT / "prometheus" / "tests", tests_dir)
    tests = sorted(str(p) for p in tests_dir.glob("*.yml"))
    assert tests
    run = subprocess.run(
        [PROMTOOL, "test", "rules", *tests], capture_output=True, text=True, timeout=300, check=False, cwd=tests_dir
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
