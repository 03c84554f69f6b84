"""Prometheus rules, promtool unit tests, example configs and runbook stay consistent.

The rules are generated from ``prometheus/thresholds.yaml`` by ``prometheus/generate_rules.py``;
the boards by ``grafana/generate_dashboards.py`` from the same file. Here:
- the committed rule files equal the generator's output (drift), and every threshold literal in
  an alert equals its value in thresholds.yaml;
- every board colour step equals the rule threshold of the same KPI, read from the two generated
  artefacts themselves (the JSON and the YAML), not from the generators;
- promtool checks and unit-tests the rules, and catches mutated thresholds and aggregations;
- a real Alertmanager with the shipped routes and inhibit rules turns the alerts the promtool
  scenarios expect into the notifications an operator gets (a balance outage: one page per trunk).

promtool and amtool/alertmanager are the real tools (Debian packages); a missing binary skips
only the tests that need it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from .am_util import run_alertmanager, run_webhook_receiver

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "prometheus"
RULES_DIR = PROM_DIR / "rules"
TESTS_DIR = PROM_DIR / "tests"
RECORDING_FILE = RULES_DIR / "vobiz-recording.rules.yml"
ALERTS_FILE = RULES_DIR / "vobiz-alerts.rules.yml"
DESTINATIONS_FILE = RULES_DIR / "vobiz-destinations.rules.yml"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))
TEST_FILES = sorted(TESTS_DIR.glob("*.yml"))
PROM_CONFIG = PROM_DIR / "prometheus.example.yml"
AM_CONFIG = PROM_DIR / "alertmanager.example.yml"
THRESHOLDS = PROM_DIR / "thresholds.yaml"
RUNBOOK = ROOT / "docs" / "runbooks.md"
DASHBOARDS = ROOT / "grafana" / "dashboards"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool not installed")
needs_alertmanager = pytest.mark.skipif(ALERTMANAGER is None, reason="alertmanager not installed")

OWNERS = {"provider", "carrier", "dialler", "caller_id", "account", "destination", "media", "exporter"}
# Alerts about the exporter or the whole job, not one trunk.
JOB_LEVEL = {"VobizExporterDown", "VobizDedupeErrors", "VobizConfigReloadFailed", "VobizWebhookDeliveriesRefused"}
EXPECTED_ALERTS = {
    "VobizCallRejectionSpike",
    "VobizInsufficientBalance",
    "VobizComplianceRejections",
    "VobizTrunkRateLimited",
    "VobizTrunkNearCapacity",
    "VobizTrunkOutage",
    "VobizLowNER",
    "VobizLowASR",
    "VobizProviderErrors",
    "VobizCarrierErrors",
    "VobizDestinationErrors",
    "VobizCallerIdBlocked",
    "VobizAccountConfigErrors",
    "VobizCallDrops",
    "VobizLowMOS",
    "VobizHighJitter",
    "VobizSpendOverBudget",
    "VobizWebhooksSilent",
    "VobizWebhookSignatureFailures",
    "VobizWebhookDeliveriesRefused",
    "VobizWebhookDeliveryDelay",
    "VobizDedupeErrors",
    "VobizConfigReloadFailed",
    "VobizExporterDown",
}


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alert_rules() -> list[dict[str, Any]]:
    return [r for r in _rules(ALERTS_FILE) if "alert" in r]


def _alert(name: str, severity: str) -> dict[str, Any]:
    found = [r for r in _alert_rules() if r["alert"] == name and r["labels"]["severity"] == severity]
    assert len(found) == 1, (name, severity)
    return found[0]


def _thresholds() -> dict[str, Any]:
    data: dict[str, Any] = _load(THRESHOLDS)
    return data


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def _generator() -> Any:
    sys.path.insert(0, str(PROM_DIR))
    import generate_rules

    return generate_rules


# --- one source of thresholds ------------------------------------------------------------------


def test_committed_rules_equal_generator_output() -> None:
    rendered = _generator().render_all()
    assert set(rendered) == {p.name for p in RULE_FILES}
    for name, text in rendered.items():
        assert (RULES_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} is stale: run python prometheus/generate_rules.py"
        )
    proc = _run(sys.executable, str(PROM_DIR / "generate_rules.py"), "--check")
    assert proc.returncode == 0, proc.stderr


def test_generator_check_fails_on_drift(tmp_path: Path) -> None:
    """--check is a real check: a hand edit of a committed rule file makes it exit 1."""
    shutil.copytree(PROM_DIR, tmp_path / "prometheus")
    shutil.copytree(ROOT / "exporter", tmp_path / "exporter")
    target = tmp_path / "prometheus" / "rules" / ALERTS_FILE.name
    target.write_text(target.read_text(encoding="utf-8").replace("> 0.1\n", "> 0.2\n", 1), encoding="utf-8")
    proc = _run(sys.executable, str(tmp_path / "prometheus" / "generate_rules.py"), "--check")
    assert proc.returncode == 1
    assert "stale (run python prometheus/generate_rules.py): vobiz-alerts.rules.yml" in proc.stderr


def test_a_threshold_change_reaches_the_rules(tmp_path: Path) -> None:
    t = _thresholds()
    t["kpi"]["ner_outage"] = 0.42
    t["runbook_base_url"] = "https://wiki.example.net/noc/vobiz"
    alerts = yaml.safe_load(_generator().render_all(t)[ALERTS_FILE.name])
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    outage = next(r for r in rules if r["alert"] == "VobizTrunkOutage")
    assert "trunk:vobiz_call_ner:ratio_rate5m < 0.42\n" in outage["expr"]
    assert {r["annotations"]["runbook_url"] for r in rules} == {
        f"https://wiki.example.net/noc/vobiz#{r['alert'].lower()}" for r in rules
    }


def _literal(expr: str, lhs: str, op: str) -> float:
    """The number after ``lhs op`` in an expression (e.g. ``trunk:x:ratio > 0.1``)."""
    m = re.search(re.escape(lhs) + r"\s*" + re.escape(op) + r"\s*([0-9.]+)", expr)
    assert m, f"{lhs} {op} N not in {expr!r}"
    return float(m.group(1))


# (alert, severity, left-hand side, operator, thresholds.yaml path)
THRESHOLD_SITES = [
    (
        "VobizCallRejectionSpike",
        "critical",
        "trunk:vobiz_call_rejection_generic_ratio:rate5m",
        ">",
        ("admission", "rejection_ratio"),
    ),
    ("VobizCallRejectionSpike", "critical", "trunk:vobiz_call_attempts:rate5m", ">", ("volume", "attempts_per_s_5m")),
    ("VobizTrunkOutage", "critical", "trunk:vobiz_call_ner:ratio_rate5m", "<", ("kpi", "ner_outage")),
    ("VobizTrunkOutage", "critical", "trunk:vobiz_call_asr:ratio_rate15m", "<", ("kpi", "asr_outage")),
    ("VobizLowNER", "warning", "trunk:vobiz_call_ner:ratio_rate15m", "<", ("kpi", "ner_warning")),
    ("VobizLowASR", "warning", "trunk:vobiz_call_asr:ratio_rate15m\n", "<", ("kpi", "asr_baseline_factor")),
    ("VobizCallDrops", "warning", "trunk:vobiz_call_drop:ratio_rate15m", ">", ("media", "drop_ratio")),
    ("VobizLowMOS", "warning", "trunk:vobiz_call_mos_below_3_6:ratio_rate15m", ">", ("quality", "mos_3_6_share")),
    ("VobizLowMOS", "critical", "trunk:vobiz_call_mos_below_3_1:ratio_rate15m", ">", ("quality", "mos_3_1_share")),
    (
        "VobizHighJitter",
        "warning",
        "trunk:vobiz_call_jitter_seconds:p95_rate15m",
        ">",
        ("quality", "jitter_p95_seconds"),
    ),
    ("VobizTrunkNearCapacity", "warning", "trunk:vobiz_call_capacity_utilization:ratio", ">", ("capacity", "warning")),
    (
        "VobizTrunkNearCapacity",
        "critical",
        "trunk:vobiz_call_capacity_utilization:ratio",
        ">",
        ("capacity", "critical"),
    ),
    (
        "VobizWebhookDeliveriesRefused",
        "warning",
        "job:vobiz_webhook_refused:ratio_rate5m",
        ">",
        ("webhooks", "refused_ratio"),
    ),
    (
        "VobizWebhookDeliveryDelay",
        "warning",
        "trunk:vobiz_webhook_delivery_delay_seconds:p95_rate15m",
        ">",
        ("webhooks", "delivery_delay_p95_seconds"),
    ),
]


@pytest.mark.parametrize("site", THRESHOLD_SITES, ids=lambda s: f"{s[0]}-{s[1]}-{s[4][1]}")
def test_alert_thresholds_come_from_thresholds_yaml(site: tuple[str, str, str, str, tuple[str, str]]) -> None:
    name, severity, lhs, op, (section, key) = site
    assert _literal(_alert(name, severity)["expr"], lhs, op) == _thresholds()[section][key]


def test_failure_group_alerts_come_from_thresholds_yaml() -> None:
    groups = _thresholds()["failure_groups"]
    for group, cfg in groups.items():
        rule = _alert(cfg["alert"], cfg["severity"])
        assert (
            _literal(rule["expr"], f'trunk_group:vobiz_calls_ended_by_group:ratio_rate15m{{group="{group}"}}', ">")
            == cfg["threshold"]
        )
        assert rule["labels"]["owner"] == group


def _board_panels() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(DASHBOARDS.glob("vobiz-*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            out[(board["uid"], panel["title"])] = panel
    return out


def _steps(panel: dict[str, Any], column: str | None = None) -> list[float]:
    """Threshold step values of a panel (or of one column override of a table)."""
    if column is None:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    else:
        over = [o for o in panel["fieldConfig"]["overrides"] if o["matcher"]["options"] == column]
        assert len(over) == 1, (panel["title"], column)
        steps = next(p["value"] for p in over[0]["properties"] if p["id"] == "thresholds")["steps"]
    return [s["value"] for s in steps if s["value"] is not None]


# (board uid, panel title, table column or None, alert, severity, lhs, op): the panel's colour
# steps must contain the alert's threshold; for two-tier alerts every tier's threshold.
BOARD_SITES = [
    (
        "vobiz-overview",
        "Rejection ratio",
        None,
        "VobizCallRejectionSpike",
        "critical",
        "trunk:vobiz_call_rejection_generic_ratio:rate5m",
        ">",
    ),
    (
        "vobiz-overview",
        "Rejection ratio by trunk",
        None,
        "VobizCallRejectionSpike",
        "critical",
        "trunk:vobiz_call_rejection_generic_ratio:rate5m",
        ">",
    ),
    (
        "vobiz-overview",
        "Trunk status",
        "Rejected",
        "VobizCallRejectionSpike",
        "critical",
        "trunk:vobiz_call_rejection_generic_ratio:rate5m",
        ">",
    ),
    ("vobiz-overview", "NER", None, "VobizLowNER", "warning", "trunk:vobiz_call_ner:ratio_rate15m", "<"),
    ("vobiz-overview", "NER", None, "VobizTrunkOutage", "critical", "trunk:vobiz_call_ner:ratio_rate5m", "<"),
    ("vobiz-overview", "Trunk status", "NER", "VobizLowNER", "warning", "trunk:vobiz_call_ner:ratio_rate15m", "<"),
    ("vobiz-overview", "Trunk status", "NER", "VobizTrunkOutage", "critical", "trunk:vobiz_call_ner:ratio_rate5m", "<"),
    ("vobiz-trunk-detail", "NER", None, "VobizLowNER", "warning", "trunk:vobiz_call_ner:ratio_rate15m", "<"),
    (
        "vobiz-overview",
        "Trunk status",
        "MOS <= 3.1",
        "VobizLowMOS",
        "critical",
        "trunk:vobiz_call_mos_below_3_1:ratio_rate15m",
        ">",
    ),
    (
        "vobiz-overview",
        "Calls below MOS 3.6",
        None,
        "VobizLowMOS",
        "warning",
        "trunk:vobiz_call_mos_below_3_6:ratio_rate15m",
        ">",
    ),
    (
        "vobiz-overview",
        "Jitter p95",
        None,
        "VobizHighJitter",
        "warning",
        "trunk:vobiz_call_jitter_seconds:p95_rate15m",
        ">",
    ),
    (
        "vobiz-overview",
        "Concurrency used",
        None,
        "VobizTrunkNearCapacity",
        "warning",
        "trunk:vobiz_call_capacity_utilization:ratio",
        ">",
    ),
    (
        "vobiz-overview",
        "Concurrency used",
        None,
        "VobizTrunkNearCapacity",
        "critical",
        "trunk:vobiz_call_capacity_utilization:ratio",
        ">",
    ),
    (
        "vobiz-overview",
        "Trunk status",
        "Utilisation",
        "VobizTrunkNearCapacity",
        "critical",
        "trunk:vobiz_call_capacity_utilization:ratio",
        ">",
    ),
    ("vobiz-overview", "Drop ratio", None, "VobizCallDrops", "warning", "trunk:vobiz_call_drop:ratio_rate15m", ">"),
    ("vobiz-trunk-detail", "Drop ratio", None, "VobizCallDrops", "warning", "trunk:vobiz_call_drop:ratio_rate15m", ">"),
]


@pytest.mark.parametrize("site", BOARD_SITES, ids=lambda s: f"{s[0]}-{s[1]}-{s[2]}-{s[3]}-{s[4]}")
def test_board_colours_equal_rule_thresholds(site: tuple[str, str, str | None, str, str, str, str]) -> None:
    uid, title, column, name, severity, lhs, op = site
    panels = _board_panels()
    assert (uid, title) in panels, f"{uid}: no panel {title!r}"
    threshold = _literal(_alert(name, severity)["expr"], lhs, op)
    assert threshold in _steps(panels[(uid, title)], column), (uid, title, column, threshold)


def test_silence_colour_equals_silence_window() -> None:
    panel = _board_panels()[("vobiz-overview", "Time since last event")]
    minutes = _thresholds()["webhooks"]["silent_minutes"]
    assert _steps(panel) == [minutes * 60]
    assert "increase15m == 0" in _alert("VobizWebhooksSilent", "critical")["expr"]
    assert minutes == 15


# --- promtool -------------------------------------------------------------------------------


def test_rule_and_test_files_exist() -> None:
    assert RULE_FILES == [ALERTS_FILE, DESTINATIONS_FILE, RECORDING_FILE]
    assert {"kpi.test.yml", "scenarios.test.yml", "webhooks.test.yml", "exporter_health.test.yml"} <= {
        p.name for p in TEST_FILES
    }


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


def test_recording_rule_names_are_unique_across_files() -> None:
    names = [r["record"] for path in RULE_FILES for r in _rules(path) if "record" in r]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


# Mutations the promtool cases must catch: proof that they test thresholds, guards and the
# aggregation, not merely that the files parse. (rule file, text, replacement, test file)
ALERTS_YML, RECORDING_YML = "vobiz-alerts.rules.yml", "vobiz-recording.rules.yml"
OWN_REASONS = "insufficient_balance|kyc_required|aadhaar_pending|cli_validation_failed"
MUTATIONS = [
    (
        ALERTS_YML,
        "trunk:vobiz_call_ner:ratio_rate5m < 0.5\n",
        "trunk:vobiz_call_ner:ratio_rate5m < 0.01\n",
        "kpi.test.yml",
    ),
    (ALERTS_YML, "trunk:vobiz_calls_ended:rate5m > 0.05\n", "trunk:vobiz_calls_ended:rate5m > 0\n", "kpi.test.yml"),
    (
        ALERTS_YML,
        "trunk:vobiz_call_ner:ratio_rate15m < 0.9\n",
        "trunk:vobiz_call_ner:ratio_rate15m < 0.97\n",
        "kpi.test.yml",
    ),
    (ALERTS_YML, "< 0.5 * trunk:vobiz_call_asr_baseline", "< 0.9 * trunk:vobiz_call_asr_baseline", "kpi.test.yml"),
    (
        RECORDING_YML,
        "expr: trunk:vobiz_calls_effective:rate15m / trunk:vobiz_calls_ended:rate15m",
        "expr: trunk:vobiz_calls_answered:rate15m / trunk:vobiz_calls_ended:rate15m",
        "kpi.test.yml",
    ),
    (RECORDING_YML, f'reason!~"{OWN_REASONS}|rate_limited"', f'reason!~"{OWN_REASONS}"', "admission.test.yml"),
    (ALERTS_YML, "trunk:vobiz_calls_active:max > 0\n", "trunk:vobiz_calls_active:max >= 0\n", "webhooks.test.yml"),
    (
        ALERTS_YML,
        'ALERTS{alertname="VobizWebhooksSilent", alertstate="firing"}',
        'ALERTS{alertname="VobizWebhooksSilentX", alertstate="firing"}',
        "webhooks.test.yml",
    ),
    (ALERTS_YML, "offset 1d)) >= 10", "offset 1h)) >= 10", "webhooks.test.yml"),
    (ALERTS_YML, 'sum(up{job="vobiz-exporter"}) == 0', 'min(up{job="vobiz-exporter"}) == 0', "webhooks.test.yml"),
    (ALERTS_YML, "> on (trunk, currency) 1 *", "> on (trunk) group_left 1 *", "capacity_spend.test.yml"),
    (RECORDING_YML, "max by (trunk) (vobiz_calls_active)", "sum by (trunk) (vobiz_calls_active)", "recording.test.yml"),
    (
        RECORDING_YML,
        "expr: trunk:vobiz_calls_answered:rate5m / trunk:vobiz_calls_ended:rate5m",
        "expr: trunk:vobiz_calls_answered:rate5m / trunk:vobiz_call_attempts_admitted:rate5m",
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
    assert "SUCCESS: 3 rule files found" in out, out
    for path in RULE_FILES:
        assert f"SUCCESS: {len(_rules(path))} rules found" in out


def test_prometheus_example_contents() -> None:
    cfg = _load(PROM_CONFIG)
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    targets = [t for sc in jobs["vobiz-exporter"]["static_configs"] for t in sc["targets"]]
    assert targets and all(t.endswith(":9612") for t in targets)
    assert [(PROM_CONFIG.parent / f).resolve() for f in cfg["rule_files"]] == [
        RECORDING_FILE,
        ALERTS_FILE,
        DESTINATIONS_FILE,
    ]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert "--enable-feature=exemplar-storage" in PROM_CONFIG.read_text(encoding="utf-8")


# --- lint: alert and recording rules --------------------------------------------------------


def test_recording_rule_names() -> None:
    names = [r["record"] for r in _rules(RECORDING_FILE)]
    assert names, "no recording rules"
    assert len(names) == len(set(names)), "duplicate recording rule"
    bad = [n for n in names if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", n)]
    assert bad == []
    assert all("alert" not in r for r in _rules(RECORDING_FILE))


def test_alert_set() -> None:
    assert {r["alert"] for r in _alert_rules()} == EXPECTED_ALERTS
    assert all("record" not in r for r in _rules(ALERTS_FILE))


@pytest.mark.parametrize("rule", _alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_rule_lint(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Vobiz(?:[A-Z][a-z0-9]*|[A-Z]+(?=[A-Z]|$))+", name), name
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{name}: for missing"
    labels = rule["labels"]
    assert labels["severity"] in {"critical", "warning"}
    assert set(labels) <= {"severity", "owner", "kind"}
    # owner decides the route (alertmanager.example.yml); Compliance sets it per reason.
    assert labels.get("owner", "account") in OWNERS
    if name == "VobizComplianceRejections":
        assert '"owner", "caller_id", "reason", "cli_validation_failed"' in rule["expr"]
    ann = rule["annotations"]
    assert set(ann) == {"summary", "description", "runbook_url"}
    assert ann["runbook_url"] == f"{_thresholds()['runbook_base_url']}#{name.lower()}"
    assert "$value" in ann["description"] and "humanize" in ann["description"]
    if name not in JOB_LEVEL:
        assert "$labels.trunk" in ann["description"], name


def test_ratio_alerts_have_volume_guards() -> None:
    for rule in _alert_rules():
        if ":ratio" in rule["expr"] and rule["alert"] != "VobizTrunkNearCapacity":
            assert re.search(r"and on \((trunk|job)\) \S+:rate(5m|15m|1d) > ", rule["expr"]), rule["alert"]


def test_multi_tier_alerts_differ_only_in_severity() -> None:
    by_name: dict[str, list[str]] = {}
    for r in _alert_rules():
        by_name.setdefault(r["alert"], []).append(r["labels"]["severity"])
    multi = {n: sorted(s) for n, s in by_name.items() if len(s) > 1}
    assert multi == {
        "VobizLowMOS": ["critical", "warning"],
        "VobizTrunkNearCapacity": ["critical", "warning"],
        "VobizSpendOverBudget": ["critical", "warning"],
        "VobizExporterDown": ["critical", "warning"],
    }


def test_severity_follows_who_acts() -> None:
    sev = {(r["alert"], r["labels"].get("owner")): r["labels"]["severity"] for r in _alert_rules()}
    assert sev[("VobizProviderErrors", "provider")] == "critical"
    assert sev[("VobizCarrierErrors", "carrier")] == "warning"
    assert sev[("VobizTrunkRateLimited", "dialler")] == "warning"
    assert sev[("VobizCallerIdBlocked", "caller_id")] == "warning"
    assert sev[("VobizTrunkOutage", "provider")] == "critical"
    assert sev[("VobizInsufficientBalance", "account")] == "critical"


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
            if name not in JOB_LEVEL:
                assert "trunk" in a["exp_labels"], c["test"]


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
        (["alertname=VobizTrunkOutage", "trunk=mumbai", "severity=critical", "owner=provider"], "pager"),
        (["alertname=VobizProviderErrors", "trunk=mumbai", "severity=critical", "owner=provider"], "pager"),
        (["alertname=VobizCarrierErrors", "trunk=mumbai", "severity=warning", "owner=carrier"], "provider"),
        (["alertname=VobizLowNER", "trunk=mumbai", "severity=warning", "owner=provider"], "provider"),
        (["alertname=VobizTrunkRateLimited", "trunk=mumbai", "severity=warning", "owner=dialler"], "chat"),
        (["alertname=VobizCallerIdBlocked", "trunk=mumbai", "severity=warning", "owner=caller_id"], "chat"),
    ],
)
def test_amtool_routes(labels: list[str], receiver: str) -> None:
    assert AMTOOL is not None
    proc = _run(AMTOOL, "config", "routes", "test", f"--config.file={AM_CONFIG}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receiver


def test_alertmanager_example_contents() -> None:
    cfg = _load(AM_CONFIG)
    assert cfg["route"]["group_by"] == ["alertname", "trunk"]
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert set(receivers) == {"pager", "provider", "chat"}
    for r in receivers.values():
        assert r["webhook_configs"][0]["url"].startswith("https://")
    sources = [tuple(i["source_matchers"]) for i in cfg["inhibit_rules"]]
    assert sources == [
        ('severity="critical"',),
        ('alertname="VobizInsufficientBalance"',),
        ('alertname="VobizTrunkOutage"',),
        ('alertname="VobizWebhooksSilent"',),
        ('alertname="VobizExporterDown"', 'severity="critical"'),
    ]


def _expected_alerts(test_file: str, test_name: str, eval_time: str) -> list[dict[str, Any]]:
    """The alerts a promtool case expects to fire at eval_time, as Alertmanager would receive them."""
    test = next(t for t in _load(TESTS_DIR / test_file)["tests"] if t["name"] == test_name)
    out = []
    for case in test["alert_rule_test"]:
        if case["eval_time"] != eval_time:
            continue
        for a in case.get("exp_alerts", []):
            out.append(
                {"labels": {"alertname": case["alertname"], **a["exp_labels"]}, "annotations": a["exp_annotations"]}
            )
    return out


def _am_config(receiver_url: str) -> dict[str, Any]:
    cfg: dict[str, Any] = _load(AM_CONFIG)
    for rcv in cfg["receivers"]:
        rcv["webhook_configs"][0]["url"] = f"{receiver_url}/{rcv['name']}"
    cfg["route"]["group_wait"] = "1s"
    cfg["route"]["group_interval"] = "1s"
    return cfg


def _post_alerts(url: str, alerts: list[dict[str, Any]]) -> None:
    req = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def _notified(
    tmp_path: Path, alerts: list[dict[str, Any]], settle: float = 4.0
) -> tuple[list[tuple[str, str, str, str]], dict[str, str]]:
    """(path, alertname, trunk, severity) of every firing alert notified, and the AM states."""
    with run_webhook_receiver() as receiver, run_alertmanager(tmp_path, _am_config(receiver.url(""))) as am:
        _post_alerts(am.url, alerts)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not receiver.received():
            time.sleep(0.1)
        time.sleep(settle)  # group_wait 1s, group_interval 1s: anything else would have arrived
        got = sorted(
            (a.path, a.labels["alertname"], a.labels.get("trunk", ""), a.labels["severity"])
            for a in receiver.received()
            if a.status == "firing"
        )
        states = {
            f"{a['labels']['alertname']}/{a['labels'].get('trunk', '')}/{a['labels']['severity']}": a["status"]["state"]
            for a in am.alerts()
        }
        assert not receiver.errors, receiver.errors
    return got, states


@needs_alertmanager
def test_balance_outage_is_one_page_per_trunk(tmp_path: Path) -> None:
    """The alerts promtool expects in the balance-outage scenario, through the shipped Alertmanager config."""
    alerts = _expected_alerts("scenarios.test.yml", "balance outage on two trunks", "27m")
    assert sorted({a["labels"]["alertname"] for a in alerts}) == [
        "VobizAccountConfigErrors",
        "VobizInsufficientBalance",
        "VobizLowNER",
        "VobizTrunkOutage",
    ]
    assert len(alerts) == 8
    got, states = _notified(tmp_path, alerts)
    assert got == [
        ("/pager", "VobizInsufficientBalance", "mumbai", "critical"),
        ("/pager", "VobizInsufficientBalance", "pune", "critical"),
    ]
    assert sum(1 for s in states.values() if s == "suppressed") == 6, states


@needs_alertmanager
def test_outage_inhibits_its_symptoms_and_exporter_down_inhibits_kpis(tmp_path: Path) -> None:
    outage = _expected_alerts(
        "kpi.test.yml", "total outage of one trunk pages critical within 10 minutes and names the cause", "50m"
    )
    outage += _expected_alerts(
        "kpi.test.yml", "total outage of one trunk pages critical within 10 minutes and names the cause", "37m"
    )
    names = sorted(a["labels"]["alertname"] for a in outage)
    assert names == ["VobizCarrierErrors", "VobizLowNER", "VobizProviderErrors", "VobizTrunkOutage"]
    # A low-MOS warning on another trunk is untouched by mumbai's outage.
    other = {
        "labels": {"alertname": "VobizLowMOS", "trunk": "pune", "severity": "warning", "owner": "media", "kind": "kpi"},
        "annotations": {},
    }
    got, _ = _notified(tmp_path / "outage", [*outage, other])
    assert got == [("/chat", "VobizLowMOS", "pune", "warning"), ("/pager", "VobizTrunkOutage", "mumbai", "critical")]

    down = _expected_alerts("webhooks.test.yml", "VobizExporterDown every replica down pages critical", "8m")
    got, _ = _notified(tmp_path / "down", [*down, other])
    assert got == [("/pager", "VobizExporterDown", "", "critical")]


@needs_alertmanager
def test_silence_inhibits_kpi_alerts_of_that_trunk(tmp_path: Path) -> None:
    silent = _expected_alerts(
        "webhooks.test.yml", "VobizWebhooksSilent fires when webhooks broke while the trunk was idle", "1d8h30m"
    )
    assert len(silent) == 1
    kpi = [
        {
            "labels": {
                "alertname": "VobizLowNER",
                "trunk": t,
                "severity": "warning",
                "owner": "provider",
                "kind": "kpi",
            },
            "annotations": {},
        }
        for t in ("mumbai", "pune")
    ]
    got, _ = _notified(tmp_path, [*silent, *kpi])
    assert got == [
        ("/pager", "VobizWebhooksSilent", "mumbai", "critical"),
        ("/provider", "VobizLowNER", "pune", "warning"),
    ]


@needs_alertmanager
def test_one_replica_down_is_not_a_page(tmp_path: Path) -> None:
    one = _expected_alerts(
        "webhooks.test.yml", "VobizExporterDown one replica of two down is a warning, not a page", "7m"
    )
    assert [a["labels"]["severity"] for a in one] == ["warning"]
    got, _ = _notified(tmp_path, one)
    assert got == [("/chat", "VobizExporterDown", "", "warning")]


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
    assert {"rules", "ours-or-the-providers", "escalating-to-vobiz-support", "finding-the-failed-calls"} <= anchors


def test_runbook_sections_complete() -> None:
    """Each alert section has its decision table, thresholds and silencing command; Rules names every rule."""
    text = RUNBOOK.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    for name in EXPECTED_ALERTS:
        body = sections[name]
        assert "amtool silence add" in body and f"alertname={name}" in body, name
        assert "Threshold" in body, name
        # An "ours or the provider's" decision table: a markdown table saying who acts.
        assert "|---|" in body and ("who acts" in body or "then |" in body or "every trunk |" in body), (
            f"{name}: no decision table"
        )
    rows = [line for line in sections["Rules"].splitlines() if line.startswith("| `")]
    for r in _rules(RECORDING_FILE):
        record = r["record"]
        level, metric, op = record.split(":")
        assert any(f"`{record}`" in row or (f"`{level}:{metric}:" in row and f"`:{op}`" in row) for row in rows), record
    for needle in ("Voice → Logs → Calls", 'msg="call failed"', "auto-recharge", "Geo Permissions", "CallUUID"):
        assert needle in text, needle
