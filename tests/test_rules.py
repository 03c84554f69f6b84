"""Prometheus rules, promtool unit tests, example configs and runbook stay consistent.

promtool and amtool/alertmanager are the real tools (Debian packages); a missing binary skips
only the tests that need it. The lint tests are pure Python over the same YAML files.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "prometheus"
RULES_DIR = PROM_DIR / "rules"
TESTS_DIR = PROM_DIR / "tests"
RECORDING_FILE = RULES_DIR / "vobiz-recording.rules.yml"
ALERTS_FILE = RULES_DIR / "vobiz-alerts.rules.yml"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.yml"))
PROM_CONFIG = PROM_DIR / "prometheus.example.yml"
AM_CONFIG = PROM_DIR / "alertmanager.example.yml"
RUNBOOK = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/vobiz-exporter/vobiz-exporter/blob/main/docs/runbooks.md#"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool not installed")
needs_alertmanager = pytest.mark.skipif(ALERTMANAGER is None, reason="alertmanager not installed")


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alert_rules() -> list[dict[str, Any]]:
    return [r for r in _rules(ALERTS_FILE) if "alert" in r]


def _alert_names() -> list[str]:
    return sorted({r["alert"] for r in _alert_rules()})


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


# --- promtool -------------------------------------------------------------------------------


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES == [ALERTS_FILE, RECORDING_FILE]
    assert len(TEST_FILES) >= 4


@needs_promtool
@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    assert PROMTOOL is not None
    proc = _run(PROMTOOL, "check", "rules", str(path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"SUCCESS: {len(_rules(path))} rules found" in out, out


@needs_promtool
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    assert PROMTOOL is not None
    proc = _run(PROMTOOL, "test", "rules", path.name, cwd=path.parent)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS" in out and "FAILED" not in out, out


# Mutations that the promtool cases must catch: proof that they test the thresholds and the
# aggregation, not merely that the files parse.
# (rule file, text, replacement, the promtool test file that must then fail)
MUTATIONS = [
    (
        "vobiz-alerts.rules.yml",
        "trunk:vobiz_call_rejection_ratio:rate5m > 0.10",
        "trunk:vobiz_call_rejection_ratio:rate5m > 0.35",
        "admission.test.yml",
    ),
    (
        "vobiz-alerts.rules.yml",
        "trunk:vobiz_call_attempts:rate5m > 0.05",
        "trunk:vobiz_call_attempts:rate5m > 0",
        "admission.test.yml",
    ),
    (
        "vobiz-alerts.rules.yml",
        "trunk:vobiz_calls_active:max > 0\n",
        "trunk:vobiz_calls_active:max >= 0\n",
        "webhooks.test.yml",
    ),
    ("vobiz-alerts.rules.yml", "> on (trunk, currency)", "> on (trunk) group_left", "capacity_spend.test.yml"),
    (
        "vobiz-recording.rules.yml",
        "max by (trunk) (vobiz_calls_active)",
        "sum by (trunk) (vobiz_calls_active)",
        "capacity_spend.test.yml",
    ),
    (
        "vobiz-recording.rules.yml",
        'vobiz_calls_ended_total{hangup_cause="canceled_out_of_credits"} offset 5m',
        'vobiz_calls_ended_total{hangup_cause="canceled_out_of_credits"}',
        "recording.test.yml",
    ),
]


@needs_promtool
@pytest.mark.parametrize(("rule_file", "old", "new", "test_file"), MUTATIONS, ids=lambda v: str(v)[:40])
def test_promtool_cases_catch_mutation(tmp_path: Path, rule_file: str, old: str, new: str, test_file: str) -> None:
    assert PROMTOOL is not None
    shutil.copytree(PROM_DIR, tmp_path / "prometheus")
    target = tmp_path / "prometheus" / "rules" / rule_file
    text = target.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"mutation anchor not found once: {old!r}"
    target.write_text(text.replace(old, new), encoding="utf-8")
    proc = _run(PROMTOOL, "test", "rules", test_file, cwd=tmp_path / "prometheus" / "tests")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout + proc.stderr


@needs_promtool
def test_promtool_check_config(tmp_path: Path) -> None:
    """The example config with its rule paths, checked from a copy outside the repo."""
    assert PROMTOOL is not None
    dest = tmp_path / "etc"
    (dest / "rules").mkdir(parents=True)
    shutil.copy(PROM_CONFIG, dest / "prometheus.yml")
    for path in RULE_FILES:
        shutil.copy(path, dest / "rules" / path.name)
    proc = _run(PROMTOOL, "check", "config", str(dest / "prometheus.yml"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS: 2 rule files found" in out, out
    assert f"SUCCESS: {len(_rules(RECORDING_FILE))} rules found" in out
    assert f"SUCCESS: {len(_rules(ALERTS_FILE))} rules found" in out


def test_prometheus_example_contents() -> None:
    cfg = _load(PROM_CONFIG)
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    targets = [t for sc in jobs["vobiz-exporter"]["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":9612") for t in targets)
    assert [(PROM_CONFIG.parent / f).resolve() for f in cfg["rule_files"]] == [RECORDING_FILE, ALERTS_FILE]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert "--enable-feature=exemplar-storage" in PROM_CONFIG.read_text(encoding="utf-8")


# --- Alertmanager ---------------------------------------------------------------------------


@needs_amtool
def test_amtool_check_config() -> None:
    assert AMTOOL is not None
    proc = _run(AMTOOL, "check-config", str(AM_CONFIG))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS" in out, out


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=VobizCallRejectionSpike", "trunk=mumbai", "severity=critical"], "pager"),
        (["alertname=VobizLowASR", "trunk=mumbai", "severity=warning"], "chat"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    assert AMTOOL is not None
    proc = _run(AMTOOL, "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receiver


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
        is_json = resp.headers.get_content_type() == "application/json"
        return resp.status, json.loads(raw) if is_json and raw.strip() else raw


@needs_alertmanager
def test_alertmanager_loads_config_and_inhibits_warning(tmp_path: Path) -> None:
    """A real Alertmanager: the config loads, and a critical tier mutes its warning tier."""
    assert ALERTMANAGER is not None
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "am.log").open("w")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={AM_CONFIG}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "am.log").read_text()
            try:
                if _http("GET", f"{base}/-/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "alertmanager not ready in 20s"
            time.sleep(0.2)

        status = _http("GET", f"{base}/api/v2/status")[1]
        assert status["config"]["original"], status
        loaded = yaml.safe_load(status["config"]["original"])
        assert loaded["route"]["group_by"] == ["alertname", "trunk"]

        def alert(trunk: str, severity: str) -> dict[str, Any]:
            return {"labels": {"alertname": "VobizTrunkNearCapacity", "trunk": trunk, "severity": severity}}

        code, _ = _http(
            "POST",
            f"{base}/api/v2/alerts",
            [alert("mumbai", "critical"), alert("mumbai", "warning"), alert("pune", "warning")],
        )
        assert code == 200

        states: dict[tuple[str, str], str] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got = _http("GET", f"{base}/api/v2/alerts")[1]
            states = {(a["labels"]["trunk"], a["labels"]["severity"]): a["status"]["state"] for a in got}
            if states.get(("mumbai", "warning")) == "suppressed":
                break
            time.sleep(0.2)
        assert states == {
            ("mumbai", "critical"): "active",
            ("mumbai", "warning"): "suppressed",
            ("pune", "warning"): "active",
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def test_alertmanager_example_contents() -> None:
    cfg = _load(AM_CONFIG)
    assert cfg["route"]["group_by"] == ["alertname", "trunk"]
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert set(receivers) == {"pager", "chat"}
    for r in receivers.values():
        assert r["webhook_configs"][0]["url"].startswith("https://")
    inhibit = cfg["inhibit_rules"]
    assert inhibit == [
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["alertname", "trunk"],
        }
    ]


# --- lint: alert and recording rules --------------------------------------------------------


def test_recording_rule_names() -> None:
    names = [r["record"] for r in _rules(RECORDING_FILE)]
    assert names, "no recording rules"
    assert len(names) == len(set(names)), "duplicate recording rule"
    bad = [n for n in names if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", n)]
    assert bad == []
    assert all("alert" not in r for r in _rules(RECORDING_FILE))


EXPECTED_ALERTS = {
    "VobizCallRejectionSpike",
    "VobizInsufficientBalance",
    "VobizComplianceRejections",
    "VobizTrunkRateLimited",
    "VobizTrunkNearCapacity",
    "VobizLowASR",
    "VobizLowMOS",
    "VobizHighJitter",
    "VobizSpendOverBudget",
    "VobizCarrierErrors",
    "VobizWebhooksSilent",
    "VobizWebhookSignatureFailures",
    "VobizExporterDown",
}


def test_alert_set() -> None:
    assert set(_alert_names()) == EXPECTED_ALERTS
    assert all("record" not in r for r in _rules(ALERTS_FILE))


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_rule_lint(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Vobiz(?:[A-Z][a-z0-9]*|[A-Z]+(?=[A-Z]|$))+", name), name
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: for missing"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    ann = rule["annotations"]
    assert set(ann) >= {"summary", "description", "runbook_url"}
    assert ann["runbook_url"] == RUNBOOK_BASE + name.lower()
    assert "$value" in ann["description"] and "humanize" in ann["description"]
    if name != "VobizExporterDown":
        assert "$labels.trunk" in ann["description"], name


def test_two_tier_alerts_differ_only_in_severity() -> None:
    by_name: dict[str, list[str]] = {}
    for r in _alert_rules():
        by_name.setdefault(r["alert"], []).append(r["labels"]["severity"])
    multi = {n: sorted(s) for n, s in by_name.items() if len(s) > 1}
    assert multi == {
        "VobizLowMOS": ["critical", "warning"],
        "VobizTrunkNearCapacity": ["critical", "warning"],
    }


def _cases() -> list[dict[str, Any]]:
    """Every alert_rule_test case of every promtool test file."""
    cases = []
    for path in TEST_FILES:
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.append({"file": path.name, "test": test["name"], **case})
    return cases


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_every_alert_has_firing_and_silent_cases(name: str) -> None:
    cases = [c for c in _cases() if c["alertname"] == name]
    firing = [c for c in cases if c.get("exp_alerts")]
    silent = [c for c in cases if not c.get("exp_alerts")]
    assert firing, f"{name}: no promtool case where it fires"
    assert silent, f"{name}: no promtool case where it stays silent"
    severities = {r["labels"]["severity"] for r in _alert_rules() if r["alert"] == name}
    fired = {a["exp_labels"]["severity"] for c in firing for a in c["exp_alerts"]}
    assert fired == severities, f"{name}: tiers without a firing case: {severities - fired}"
    for c in firing:
        for a in c["exp_alerts"]:
            assert set(a["exp_annotations"]) == {"summary", "description", "runbook_url"}, c["test"]
            if name != "VobizExporterDown":
                assert "trunk" in a["exp_labels"], c["test"]


# --- runbook --------------------------------------------------------------------------------


def _github_anchor(heading: str) -> str:
    """GitHub's heading slug: lower case, punctuation dropped, spaces to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_runbook_anchors_exist() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = {_github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
    for rule in _alert_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, anchor
    assert "rules" in anchors


def test_runbook_sections_complete() -> None:
    """Each alert section names its silencing command, and the Rules section every rule."""
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    for name in EXPECTED_ALERTS:
        body = sections[name]
        assert "amtool silence add" in body and f"alertname={name}" in body, name
        assert "Threshold" in body, name
    rows = [line for line in sections["Rules"].splitlines() if line.startswith("| `")]
    for r in _rules(RECORDING_FILE):
        record = r["record"]
        level, metric, op = record.split(":")
        # A row names the rule in full, or as `level:metric:op1`, `:op2` for sibling windows.
        assert any(f"`{record}`" in row or (f"`{level}:{metric}:" in row and f"`:{op}`" in row) for row in rows), record
