"""The "Vobiz destinations" board and the destination/fraud rules (issue 13), checked statically.

Board (grafana/dashboards/vobiz-destinations.json, written by grafana/destinations_board.py):
the datasource and trunk variables, every datasource reference the variable, title, description
and a known unit on every panel, no overlap, ``$__rate_interval`` (``$__range`` only in instant
whole-range summaries), every ``_total`` the direct argument of rate()/increase() and summed,
every metric and label one the exporter exposes, cost per currency, the geomap keyed on the
ISO alpha-2 ``country`` label, and colours taken from prometheus/thresholds.yaml. A real
Prometheus parses every query.

Rules (prometheus/rules/vobiz-destinations.rules.yml, written by prometheus/destinations_rules.py):
no drift from the thresholds source, naming, required labels and annotations, a firing and a
silent promtool case per alert, and ``promtool test rules`` passing.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .dashboards_util import COUNTER_FUNCTIONS, analyze, extract_expressions, iter_panels
from .prom_util import Prometheus, run_prometheus

ROOT = Path(__file__).resolve().parent.parent
BOARD_PATH = ROOT / "grafana" / "dashboards" / "vobiz-destinations.json"
RULES_PATH = ROOT / "prometheus" / "rules" / "vobiz-destinations.rules.yml"
PROMTOOL_TESTS = ROOT / "prometheus" / "tests" / "destinations.test.yml"
THRESHOLDS = ROOT / "prometheus" / "thresholds.yaml"
DS = {"type": "prometheus", "uid": "${datasource}"}
CURRENCY_CODES = ("INR", "USD", "EUR", "GBP")
KNOWN_UNITS = frozenset({"s", "percentunit", "cps", "short", "none"} | {f"currency{c}" for c in CURRENCY_CODES})

# Series the board may read -> labels (the README's metrics table); histograms expanded.
SERIES: dict[str, frozenset[str]] = {
    "vobiz_destination_attempts_total": frozenset({"trunk", "country", "result"}),
    "vobiz_destination_answered_total": frozenset({"trunk", "country"}),
    "vobiz_destination_billable_seconds_total": frozenset({"trunk", "country"}),
    "vobiz_destination_cost_total": frozenset({"trunk", "country", "currency"}),
    "vobiz_destination_disallowed_total": frozenset({"trunk", "country"}),
    "vobiz_calls_answered_total": frozenset({"trunk"}),
    "vobiz_calls_answered_no_ring_total": frozenset({"trunk"}),
    "vobiz_call_billable_seconds_bucket": frozenset({"trunk", "le"}),
    "vobiz_call_billable_seconds_count": frozenset({"trunk"}),
}
ALERTS = (
    "VobizDisallowedDestination",
    "VobizNewDestinationSpend",
    "VobizShortCallsAboveBaseline",
    "VobizAnswersWithoutRinging",
)
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")


def _import(directory: str, module: str) -> Any:
    sys.path.insert(0, str(ROOT / directory))
    try:
        return __import__(module)
    finally:
        sys.path.remove(str(ROOT / directory))


gen_dashboards = _import("grafana", "generate_dashboards")
board_module = _import("grafana", "destinations_board")
rules_module = _import("prometheus", "destinations_rules")


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(BOARD_PATH.read_text(encoding="utf-8"))
    return data


def thresholds() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(THRESHOLDS.read_text(encoding="utf-8"))
    return data


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(board) if p["type"] != "row"]


def by_title(board: dict[str, Any], title: str) -> dict[str, Any]:
    [panel] = [p for p in panels(board) if p["title"] == title]
    return panel


def targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(board):
        for target in panel["targets"]:
            yield panel, target


def steps(panel: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(s["color"], s["value"]) for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]


# --- generated, not hand-edited ----------------------------------------------------------------


def test_committed_board_and_rules_equal_their_generators() -> None:
    rendered = gen_dashboards.render_all()
    assert "vobiz-destinations.json" in rendered, "generate_dashboards.render_all() does not write the board"
    assert rendered["vobiz-destinations.json"] == BOARD_PATH.read_text(encoding="utf-8"), (
        "stale: run python grafana/generate_dashboards.py"
    )
    assert rules_module.render() == RULES_PATH.read_text(encoding="utf-8"), (
        "stale: run python prometheus/destinations_rules.py"
    )
    assert (
        subprocess.run(
            [sys.executable, str(ROOT / "prometheus/destinations_rules.py"), "--check"], check=False
        ).returncode
        == 0
    )


def test_generators_read_the_thresholds_source() -> None:
    """Change a value in the source: the board colour and the rule threshold follow it."""
    t = copy.deepcopy(thresholds())
    d = t["destinations"]
    d.update(
        new_spend_share=0.35,
        short_call_margin=0.15,
        no_ring_margin=0.25,
        new_spend_min_answered=7,
        country_asr_board_low=0.1,
        country_asr_board_ok=0.3,
        disallowed_window="15m",
    )
    changed = board_module.dashboard(d)
    assert steps(by_title(changed, "Share of each trunk's spend by country")) == [("green", None), ("orange", 0.35)]
    assert steps(by_title(changed, "Answered calls billed under 6 s")) == [("green", None), ("orange", 0.15)]
    assert steps(by_title(changed, "Answers without ringing (RingTime 0)")) == [("green", None), ("orange", 0.25)]
    assert steps(by_title(changed, "ASR by country")) == [("red", None), ("orange", 0.1), ("green", 0.3)]
    rules = yaml.safe_load(rules_module.render(t))
    exprs = {r.get("alert") or r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert "ratio_increase1h > 0.35 " in exprs["VobizNewDestinationSpend"]
    assert "answered:increase1h >= 7 " in exprs["VobizNewDestinationSpend"]
    assert "(0.15 + (trunk:vobiz_call_billable_under_6s" in exprs["VobizShortCallsAboveBaseline"]
    assert "(0.25 + (trunk:vobiz_calls_answered_no_ring" in exprs["VobizAnswersWithoutRinging"]
    assert "trunk_country:vobiz_destination_disallowed:increase15m" in exprs
    assert "[15m]" in exprs["trunk_country:vobiz_destination_disallowed:increase15m"]


def test_board_colours_equal_the_shipped_thresholds(board: dict[str, Any]) -> None:
    d = thresholds()["destinations"]
    assert steps(by_title(board, "Share of each trunk's spend by country")) == [
        ("green", None),
        ("orange", d["new_spend_share"]),
    ]
    assert steps(by_title(board, "Answered calls billed under 6 s")) == [
        ("green", None),
        ("orange", d["short_call_margin"]),
    ]
    assert steps(by_title(board, "Answers without ringing (RingTime 0)")) == [
        ("green", None),
        ("orange", d["no_ring_margin"]),
    ]
    assert steps(by_title(board, "ASR by country")) == [
        ("red", None),
        ("orange", d["country_asr_board_low"]),
        ("green", d["country_asr_board_ok"]),
    ]
    # Any disallowed call is red, as any one pages.
    assert steps(by_title(board, "Calls to disallowed destinations")) == [("green", None), ("red", 1)]
    # The same numbers in the rules.
    rules = RULES_PATH.read_text(encoding="utf-8")
    assert f"ratio_increase1h > {d['new_spend_share']:g} " in rules
    assert f"({d['short_call_margin']:g} + (trunk:vobiz_call_billable_under_6s" in rules
    assert f"({d['no_ring_margin']:g} + (trunk:vobiz_calls_answered_no_ring" in rules


# --- board structure ---------------------------------------------------------------------------


def test_identity_and_variables(board: dict[str, Any]) -> None:
    assert (board["uid"], board["title"]) == ("vobiz-destinations", "Vobiz destinations — fraud and per-country KPIs")
    assert board["id"] is None and board["schemaVersion"] == 39 and board["description"]
    variables = board["templating"]["list"]
    assert [v["name"] for v in variables] == ["datasource", "trunk"]
    ds, trunk = variables
    assert (ds["type"], ds["query"], ds["current"]) == ("datasource", "prometheus", {})
    assert (trunk["type"], trunk["datasource"], trunk["multi"], trunk["includeAll"], trunk["allValue"]) == (
        "query",
        DS,
        True,
        True,
        ".*",
    )
    assert trunk["query"]["query"] == "label_values(vobiz_trunk_info, trunk)"


def test_every_datasource_is_the_variable(board: dict[str, Any]) -> None:
    def walk(node: Any) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield key, value
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = [value for key, value in walk(board) if key == "datasource"]
    assert len(refs) == 1 + sum(1 + len(p["targets"]) for p in panels(board))  # trunk variable, panels, targets
    assert all(ref == DS for ref in refs), refs


def test_rows_panels_titles_units_layout(board: dict[str, Any]) -> None:
    everything = list(iter_panels(board))
    assert [p["title"] for p in everything if p["type"] == "row"] == [
        "Fraud signals",
        "Per country",
        "Top destinations",
    ]
    assert sorted(p["type"] for p in panels(board)) == sorted(
        [
            "stat",
            "bargauge",
            "bargauge",
            "timeseries",
            "timeseries",
            "timeseries",
            "timeseries",
            "timeseries",
            "timeseries",
            "timeseries",
            "table",
            "table",
            "geomap",
        ]
    )
    ids = [p["id"] for p in everything]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in everything:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    for panel in panels(board):
        assert panel["title"].strip() and panel["description"].strip(), panel["id"]
        assert panel["fieldConfig"]["defaults"]["unit"] in KNOWN_UNITS, panel["title"]
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    # What the issue asks the board to show.
    titles = {p["title"] for p in panels(board)}
    assert {
        "ASR by country",
        "ACD by country",
        "Call attempts per second by country",
        "Spend per hour by country",
        "Cost per answered minute by country",
        "Top 10 countries by attempts",
        "Top 10 countries by spend",
        "Call attempts by country (map)",
        "Calls to disallowed destinations",
        "Share of each trunk's spend by country",
    } <= titles


def test_ranges_are_rate_interval_or_range_in_instant_targets(board: dict[str, Any]) -> None:
    seen = set()
    for panel, target in targets(board):
        for window in analyze(target["expr"]).ranges:
            seen.add(window)
            allowed = {"$__rate_interval", "$__range"} if target["instant"] else {"$__rate_interval"}
            assert window in allowed, f"{panel['title']}: [{window}] (instant={target['instant']})"
        if not target["instant"]:
            assert "$__rate_interval" in target["expr"], panel["title"]
    assert seen == {"$__rate_interval", "$__range"}


def test_every_total_inside_rate_or_increase_and_summed(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        expr = target["expr"]
        result = analyze(expr)
        assert result.errors == [], f"{panel['title']}: {result.errors}"
        assert result.metrics, panel["title"]
        totals = [u for u in result.metrics if u.name.endswith("_total")]
        assert len(totals) == expr.count("_total"), f"{panel['title']}: a _total token outside a selector"
        for use in result.metrics:
            at = f"{panel['title']}: {use.name}"
            assert use.name in SERIES, f"{at} is not an exporter series"
            assert {m[0] for m in use.matchers} <= SERIES[use.name], at
            assert ("trunk", "=~", "$trunk") in use.matchers, f'{at} without trunk=~"$trunk"'
            chain = [f.name for f in use.call_chain]
            assert use.enclosing_call in COUNTER_FUNCTIONS and use.enclosing_call != "irate", f"{at}: {chain}"
            assert use.range is not None and len(chain) >= 2 and chain[-2] == "sum", f"{at}: not summed {chain}"


def test_cost_panels_per_currency(board: dict[str, Any]) -> None:
    checked = 0
    for panel, target in targets(board):
        uses = analyze(target["expr"]).metrics
        if not any(u.name == "vobiz_destination_cost_total" for u in uses):
            continue
        checked += 1
        assert "{{currency}}" in target["legendFormat"], panel["title"]
        for use in uses:
            if use.name == "vobiz_destination_cost_total":
                by = use.call_chain[-2].by or ()
                assert "currency" in by, f"{panel['title']}: cost summed without currency ({by})"
        if panel["type"] == "timeseries":
            mapped = {o["matcher"]["options"]: o["properties"][0]["value"] for o in panel["fieldConfig"]["overrides"]}
            assert all(mapped[f".*\\b{c}\\b.*"] == f"currency{c}" for c in CURRENCY_CODES), panel["title"]
    assert checked == 4  # spend share, spend per hour, cost per answered minute, top by spend


def test_geomap_keys_on_the_iso_alpha2_country_label(board: dict[str, Any]) -> None:
    geomap = by_title(board, "Call attempts by country (map)")
    assert geomap["type"] == "geomap"
    [layer] = geomap["options"]["layers"]
    assert layer["location"] == {"mode": "lookup", "lookup": "country", "gazetteer": "public/gazetteer/countries.json"}
    assert layer["type"] == "markers"
    [target] = geomap["targets"]
    assert (target["instant"], target["format"]) == (True, "table")
    assert target["expr"] == (
        'sum by (country) (increase(vobiz_destination_attempts_total{trunk=~"$trunk"}[$__range]))'
    )
    for title in ("Top 10 countries by attempts", "Top 10 countries by spend"):
        table = by_title(board, title)
        assert table["type"] == "table" and table["targets"][0]["format"] == "table"
        assert table["targets"][0]["expr"].startswith("topk(10, sum by (country")


def test_disallowed_panels_show_zero_not_no_data(board: dict[str, Any]) -> None:
    stat = by_title(board, "Calls to disallowed destinations")["targets"][0]["expr"]
    assert stat.endswith("\nor vector(0)")
    bars = by_title(board, "Disallowed calls by trunk and country")["targets"][0]["expr"]
    assert "\nor on (trunk)\n" in bars


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with run_prometheus(
        tmp_path_factory.mktemp("prom"), {"global": {"scrape_interval": "15s"}, "scrape_configs": []}
    ) as prom:
        yield prom


def test_a_real_prometheus_parses_every_query(board: dict[str, Any], prometheus: Prometheus) -> None:
    status, body = prometheus.query_raw("sum(rate(vobiz_destination_attempts_total[1m])")
    assert (status, body["status"]) == (400, "error")  # the check below can fail
    extracted = (
        extract_expressions(board) + extract_expressions(board, "demo") + extract_expressions(board, ["demo", "backup"])
    )
    assert len(extracted) == 3 * sum(len(p["targets"]) for p in panels(board))
    for e in extracted:
        status, body = prometheus.query_raw(e.expr)
        assert (status, body["status"]) == (200, "success"), f"{e.name}: {body.get('error')}\n{e.expr}"


# --- rules -------------------------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES_PATH.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_have_what_every_alert_needs() -> None:
    alerts = [r for r in rules() if "alert" in r]
    assert [a["alert"] for a in alerts] == list(ALERTS)
    base = thresholds()["runbook_base_url"]
    for a in alerts:
        assert re.fullmatch(r"Vobiz[A-Z][A-Za-z]+", a["alert"])
        assert re.fullmatch(r"\d+m", a["for"]), a["alert"]
        assert a["labels"]["severity"] in ("critical", "warning")
        assert set(a["annotations"]) == {"summary", "description", "runbook_url"}
        assert a["annotations"]["runbook_url"] == f"{base}#{a['alert'].lower()}"
    severities = {a["alert"]: (a["labels"]["severity"], a["labels"]["owner"]) for a in alerts}
    assert severities == {
        "VobizDisallowedDestination": ("critical", "account"),
        "VobizNewDestinationSpend": ("critical", "account"),
        "VobizShortCallsAboveBaseline": ("warning", "carrier"),
        "VobizAnswersWithoutRinging": ("warning", "carrier"),
    }
    runbooks = (ROOT / "docs/runbooks.md").read_text(encoding="utf-8").lower()
    for name in ALERTS:
        assert f"## {name.lower()}" in runbooks, f"docs/runbooks.md has no section for {name}"


def test_recording_rule_names_and_no_clash_with_other_rule_files() -> None:
    mine = [r["record"] for r in rules() if "record" in r]
    assert len(mine) == 15 and len(set(mine)) == len(mine)
    assert all(RECORD_NAME.match(name) for name in mine), mine
    others = set()
    for path in (ROOT / "prometheus/rules").glob("*.yml"):
        if path != RULES_PATH:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            others |= {r.get("record") or r.get("alert") for g in doc["groups"] for r in g["rules"]}
    assert others.isdisjoint(mine) and others.isdisjoint(ALERTS), others & (set(mine) | set(ALERTS))


def test_each_alert_has_a_firing_and_a_silent_promtool_case() -> None:
    doc = yaml.safe_load(PROMTOOL_TESTS.read_text(encoding="utf-8"))
    assert doc["rule_files"] == ["../rules/vobiz-destinations.rules.yml"]
    cases = [c for test in doc["tests"] for c in test.get("alert_rule_test", [])]
    for name in ALERTS:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays silent"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
def test_promtool_check_and_test() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(RULES_PATH)], capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "SUCCESS: 19 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run(
        ["promtool", "test", "rules", str(PROMTOOL_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROMTOOL_TESTS.parent,
    )
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


# Mutations the promtool cases must catch: proof that they test each threshold, guard and the
# new-series / baseline logic, not merely that the files parse. (text, replacement) in the rules.
MUTATIONS = [
    # every disallowed series counted whole: a trunk's calls from before Prometheus' time would page
    (
        "(vobiz_destination_disallowed_total unless vobiz_destination_disallowed_total offset 10m) + 0",
        "vobiz_destination_disallowed_total + 0",
    ),
    # no "Prometheus has known the trunk for 10m" guard: a fresh Prometheus sees old series as new
    ("                and on (trunk) group by (trunk) (vobiz_trunk_info offset 10m)\n", ""),
    # no look-back: known countries over the share would page
    (
        "          unless on (trunk, country, currency) trunk_country_currency:vobiz_destination_cost:"
        "max_increase1h_7d_offset1d > 0\n",
        "",
    ),
    # no history guard: a trunk whose destination data just started would page for every country
    ("          and on (trunk) group by (trunk) (trunk_currency:vobiz_destination_cost:increase1h offset 1d)\n", ""),
    ("ratio_increase1h > 0.2 ", "ratio_increase1h > 0.3 "),
    ("answered:increase1h >= 5 ", "answered:increase1h >= 0 "),
    ("(2 * (trunk:vobiz_call_billable_under_6s", "(1 * (trunk:vobiz_call_billable_under_6s"),
    (
        "trunk:vobiz_call_billable_under_6s:ratio_increase7d_offset1d >= 0 or 0 * "
        "trunk:vobiz_call_billable_under_6s:ratio_rate15m",
        "trunk:vobiz_call_billable_under_6s:ratio_increase7d_offset1d",
    ),
    ("(0.1 + (trunk:vobiz_calls_answered_no_ring", "(0.45 + (trunk:vobiz_calls_answered_no_ring"),
    ("rate(vobiz_calls_answered_total[15m])) > 0.02 ", "rate(vobiz_calls_answered_total[15m])) > 0 "),
]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
@pytest.mark.parametrize(("old", "new"), MUTATIONS, ids=[f"m{i}" for i in range(len(MUTATIONS))])
def test_promtool_cases_catch_mutation(tmp_path: Path, old: str, new: str) -> None:
    text = RULES_PATH.read_text(encoding="utf-8")
    assert old in text, f"mutation target not in the rules: {old!r}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    mutated = tmp_path / "rules" / RULES_PATH.name
    mutated.write_text(text.replace(old, new), encoding="utf-8")
    shutil.copy(PROMTOOL_TESTS, tmp_path / "tests" / PROMTOOL_TESTS.name)
    check = subprocess.run(["promtool", "check", "rules", str(mutated)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr  # still valid rules: the failure below is semantic
    test = subprocess.run(
        ["promtool", "test", "rules", PROMTOOL_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path / "tests",
    )
    assert test.returncode != 0 and "FAILED" in test.stdout + test.stderr, (
        f"the promtool cases did not notice {old!r} -> {new!r}:\n{test.stdout}"
    )
