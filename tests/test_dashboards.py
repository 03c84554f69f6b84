"""Lint of the bundled Grafana dashboards, in the spirit of grafana/dashboard-linter, plus a
check that a real Prometheus parses every panel query.

Rules (each test names the panel and target that breaks it):
- a ``datasource`` variable (type datasource, query prometheus) exists, and every datasource
  reference in the file is ``{"type": "prometheus", "uid": "${datasource}"}``; no other uid;
- a multi-value ``trunk`` variable from ``label_values(vobiz_trunk_info, trunk)``, and every
  selector of a metric with a ``trunk`` label matches ``trunk=~"$trunk"``;
- every non-row panel has a title, a description and a known Grafana unit; panel ids are unique;
- every range is ``$__rate_interval``, except: ``$__range`` in instant targets (whole-range
  summaries such as "top causes" and "spend today"), and the fixed windows in
  ``FIXED_WINDOW_ALLOWLIST`` (spend over the trailing hour, compared with an hourly budget);
- every counter series (``*_total``, and a histogram's ``_bucket``/``_sum``/``_count``) is the
  direct argument of rate()/increase()/irate(), whose result is summed (replica-safe), and
  nothing else is; gauges every replica exports alike are aggregated with ``max``;
- every metric name is one of the README's metrics table (``SPEC_METRICS`` below), with labels it has;
- MOS-valued panels carry the E-model thresholds 3.1 / 3.6 / 4.0 / 4.3;
- cost panels group by currency, show it in the legend and map currency units;
- on the detail board, MOS, duration and cost percentiles and heatmaps request exemplars.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from .dashboards_util import (
    COUNTER_FUNCTIONS,
    MAY_BE_EMPTY_UNDER_NORMAL,
    REPO,
    Extracted,
    all_expressions,
    analyze,
    dashboard_paths,
    extract_expressions,
    is_balanced,
    iter_panels,
    load_dashboard,
    substitute,
)
from .prom_util import run_prometheus

# the README's metrics table: metric -> (type, labels). Histograms expand to _bucket (plus le), _sum and _count.
SPEC_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "vobiz_call_attempts_total": ("counter", frozenset({"trunk", "result"})),
    "vobiz_call_rejections_total": ("counter", frozenset({"trunk", "reason"})),
    "vobiz_calls_ended_total": (
        "counter",
        frozenset({"trunk", "hangup_cause", "hangup_category", "hangup_source"}),
    ),
    "vobiz_calls_answered_total": ("counter", frozenset({"trunk"})),
    # issue 12, the README's metrics table: NER numerator, who-acts groups, answers without ringing.
    "vobiz_calls_effective_total": ("counter", frozenset({"trunk"})),
    "vobiz_calls_ended_by_group_total": ("counter", frozenset({"trunk", "group"})),
    "vobiz_calls_answered_no_ring_total": ("counter", frozenset({"trunk"})),
    "vobiz_call_answer_ring_seconds": ("histogram", frozenset({"trunk"})),
    "vobiz_trunk_peak_calls_per_second": ("gauge", frozenset({"trunk"})),
    # Prometheus' own series of firing/pending alerts (the status table's "Firing alerts").
    "ALERTS": ("gauge", frozenset({"alertname", "alertstate", "severity", "trunk", "owner", "kind"})),
    "vobiz_calls_active": ("gauge", frozenset({"trunk"})),
    "vobiz_call_duration_seconds": ("histogram", frozenset({"trunk"})),
    "vobiz_call_billable_seconds": ("histogram", frozenset({"trunk"})),
    "vobiz_call_ring_seconds": ("histogram", frozenset({"trunk"})),
    "vobiz_call_mos": ("histogram", frozenset({"trunk"})),
    "vobiz_call_jitter_seconds": ("histogram", frozenset({"trunk"})),
    "vobiz_call_cost": ("histogram", frozenset({"trunk", "currency"})),
    "vobiz_webhook_delivery_delay_seconds": ("histogram", frozenset({"trunk", "event"})),
    "vobiz_last_event_timestamp_seconds": ("gauge", frozenset({"trunk", "event"})),
    "vobiz_trunk_info": ("gauge", frozenset({"trunk", "trunk_id"})),
    "vobiz_trunk_max_concurrent_calls": ("gauge", frozenset({"trunk"})),
    "vobiz_trunk_cps_limit": ("gauge", frozenset({"trunk"})),
    "vobiz_trunk_hourly_budget": ("gauge", frozenset({"trunk", "currency"})),
    "vobiz_webhook_requests_total": ("counter", frozenset({"trunk", "outcome"})),
    "vobiz_webhook_request_duration_seconds": ("histogram", frozenset()),
    "vobiz_webhook_signature_failures_allowed_total": ("counter", frozenset({"trunk"})),
    "vobiz_webhook_previous_secret_used_total": ("counter", frozenset({"trunk"})),
    "vobiz_event_invalid_fields_total": ("counter", frozenset({"trunk", "field"})),
    "vobiz_dedupe_entries": ("gauge", frozenset()),
    "vobiz_dedupe_evictions_total": ("counter", frozenset()),
    "vobiz_dedupe_errors_total": ("counter", frozenset()),
    "vobiz_config_last_reload_successful": ("gauge", frozenset()),
    "vobiz_config_last_reload_success_timestamp_seconds": ("gauge", frozenset()),
    "vobiz_exporter_build_info": ("gauge", frozenset({"version", "python_version"})),
}
# docs/contract.md, "Replicas": gauges every replica exports alike aggregate with max, never sum.
REPLICA_SHARED_GAUGES = frozenset(
    {
        "vobiz_trunk_max_concurrent_calls",
        "vobiz_trunk_cps_limit",
        "vobiz_trunk_hourly_budget",
        "vobiz_last_event_timestamp_seconds",
        "vobiz_calls_active",
    }
)
# (dashboard uid, panel title) -> fixed windows allowed there. Spend is compared with an
# *hourly* budget, so that panel uses the trailing hour on purpose.
FIXED_WINDOW_ALLOWLIST: dict[tuple[str, str], frozenset[str]] = {
    ("vobiz-overview", "Spend in the last hour vs hourly budget"): frozenset({"1h"}),
    ("vobiz-trunk-detail", "Spend in the last hour vs hourly budget"): frozenset({"1h"}),
}
CURRENCY_CODES = ("INR", "USD", "EUR", "GBP")
KNOWN_UNITS = frozenset(
    {"s", "ms", "percentunit", "reqps", "cps", "short", "none"} | {f"currency{c}" for c in CURRENCY_CODES}
)
DS = {"type": "prometheus", "uid": "${datasource}"}
MOS_THRESHOLDS = [3.1, 3.6, 4.0, 4.3]
EXPECTED_UIDS = {"vobiz-overview": "Vobiz trunks — overview", "vobiz-trunk-detail": "Vobiz trunk — detail"}
EXPECTED_ROWS = ["Admission", "Answer & duration", "Quality", "Capacity & spend", "Hangups", "Webhook health"]
FIRST_ROW = {"vobiz-overview": "Status", "vobiz-trunk-detail": "Summary"}
STATUS_COLUMNS = [
    "trunk",
    "Attempts/s",
    "Rejected",
    "ASR",
    "NER",
    "MOS <= 3.1",
    "Utilisation",
    "Last event",
    "Firing alerts",
]
SUMMARY_STATS = {
    "Attempts/s",
    "Rejected",
    "ASR",
    "NER",
    "MOS <= 3.1 share",
    "Concurrency (max)",
    "ABR",
    "ACD",
    "Drops",
    "Short calls",
    "Peak CPS",
    "Last event age",
}
# What the issue asks each board to show (by panel title).
SHARED_TITLES = {
    "Call attempts per second: admitted vs rejected",
    "Rejection ratio by trunk",
    "Rejections per second by reason",
    "ASR and ABR by trunk",
    "NER by trunk",
    "ACD by trunk",
    "Call duration p50 / p95",
    "Time to answer p95",
    "Short-call share",
    "MOS distribution",
    "MOS p50 and p10 by trunk",
    "Share of calls below MOS 3.6 and 3.1",
    "Jitter p95 by trunk",
    "Active calls vs max_concurrent_calls",
    "Peak calls per second vs cps_limit",
    "Concurrency used",
    "Spend in the last hour vs hourly budget",
    "Spend today",
    "Cost per answered minute",
    "Top hangup causes",
    "Hangups per second by category",
    "Hangups per second by source",
    "Failures per second by who acts",
    "Failure share by who acts",
    "Webhook requests per second by outcome",
    "Webhook delivery delay p95",
    "Time since last event",
    "Drop ratio",
}
EXEMPLAR_HISTOGRAMS = (
    "vobiz_call_mos",
    "vobiz_call_duration_seconds",
    "vobiz_call_billable_seconds",
    "vobiz_call_cost",
)


def series_labels() -> dict[str, tuple[str, frozenset[str]]]:
    """Every exposed series name -> (kind, labels); kind is counter or gauge as PromQL sees it."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for name, (kind, labels) in SPEC_METRICS.items():
        if kind == "histogram":
            out[name + "_bucket"] = ("counter", labels | {"le"})
            out[name + "_sum"] = ("counter", labels)
            out[name + "_count"] = ("counter", labels)
        else:
            out[name] = (kind, labels)
    return out


SERIES = series_labels()
PATHS = dashboard_paths()


@pytest.fixture(params=PATHS, ids=[p.stem for p in PATHS])
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_dashboard(request.param)


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in iter_panels(board) if p.get("type") != "row"]


def targets(board: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield panel, target


def where(board: dict[str, Any], panel: dict[str, Any], target: dict[str, Any] | None = None) -> str:
    ref = f" target {target.get('refId')}" if target else ""
    return f"{board['uid']} panel {panel.get('id')} {panel.get('title')!r}{ref}"


def test_bundled_dashboards() -> None:
    """Overview and detail are linted here; the destinations board in tests/test_destinations_board.py."""
    assert sorted(p.name for p in PATHS) == ["vobiz-overview.json", "vobiz-trunk-detail.json"]
    assert sorted(p.name for p in (REPO / "grafana" / "dashboards").glob("*.json")) == [
        "vobiz-destinations.json",
        "vobiz-overview.json",
        "vobiz-trunk-detail.json",
    ]


def test_minimum_grafana_version_is_stated(board: dict[str, Any]) -> None:
    requires = {r["id"]: r["version"] for r in board["__requires"]}
    assert requires["grafana"] == "10.3.0"
    for doc in (REPO / "README.md", REPO / "docs" / "dashboards.md"):
        assert "Grafana 10.3" in doc.read_text(encoding="utf-8"), doc.name


def test_identity(board: dict[str, Any]) -> None:
    assert board["uid"] in EXPECTED_UIDS, f"unexpected uid {board['uid']!r}"
    assert board["title"] == EXPECTED_UIDS[board["uid"]]
    assert board["schemaVersion"] == 39
    assert board["id"] is None, "a provisioned/imported board must not carry a database id"
    assert board["description"]


def test_datasource_variable(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "datasource" in variables, "no datasource variable"
    ds = variables["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    assert ds["current"] == {}, "a pinned current datasource would hard-code one instance"


def test_trunk_variable(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert "trunk" in variables, "no trunk variable"
    trunk = variables["trunk"]
    assert trunk["type"] == "query"
    assert trunk["datasource"] == DS
    assert trunk["definition"] == "label_values(vobiz_trunk_info, trunk)"
    assert trunk["query"]["query"] == "label_values(vobiz_trunk_info, trunk)"
    assert trunk["multi"] is True
    assert trunk["includeAll"] is True
    assert trunk["allValue"] == ".*", 'All must also match trunk="unknown" webhook outcomes'
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "trunk"]


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_no_hard_coded_datasource(board: dict[str, Any]) -> None:
    refs = 0
    for path, key, value in _walk(board):
        if key == "datasource":
            refs += 1
            assert value == DS, f"{board['uid']}{path}: datasource {value!r} is not the variable"
        if key == "uid" and path:
            assert value == "${datasource}", f"{board['uid']}{path}: hard-coded uid {value!r}"
    assert refs > 0


def test_panels_have_title_description_unit_datasource(board: dict[str, Any]) -> None:
    for panel in panels(board):
        at = where(board, panel)
        assert panel.get("title", "").strip(), f"{at}: no title"
        assert panel.get("description", "").strip(), f"{at}: no description"
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert unit in KNOWN_UNITS, f"{at}: unit {unit!r} not in {sorted(KNOWN_UNITS)}"
        if panel["type"] == "heatmap":
            assert panel["options"]["yAxis"]["unit"] == unit, f"{at}: heatmap axis unit differs"
        assert panel.get("datasource") == DS, f"{at}: datasource {panel.get('datasource')!r}"
        refs = [t.get("refId") for t in panel.get("targets", [])]
        assert refs, f"{at}: no targets"
        assert len(set(refs)) == len(refs), f"{at}: duplicate refIds {refs}"
        for target in panel["targets"]:
            assert target.get("datasource") == DS, f"{where(board, panel, target)}: datasource"
            assert target.get("expr", "").strip(), f"{where(board, panel, target)}: empty expr"


def test_unique_panel_titles(board: dict[str, Any]) -> None:
    """Tests, links and people name a panel by its title: one title, one panel per board."""
    titles = [p["title"] for p in iter_panels(board)]
    assert sorted({t for t in titles if titles.count(t) > 1}) == []


def test_unique_panel_ids(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in iter_panels(board)]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert duplicates == [], f"{board['uid']}: duplicate panel ids {duplicates}"


def test_rows_and_layout(board: dict[str, Any]) -> None:
    all_panels = list(iter_panels(board))
    assert all_panels[0]["type"] == "row", "the first panel must be a row"
    assert [p["title"] for p in all_panels if p["type"] == "row"] == [FIRST_ROW[board["uid"]], *EXPECTED_ROWS]
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, f"{where(board, panel)}: {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{where(board, panel)} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
    # No layout gaps: every grid line is filled across all 24 columns.
    height = max(y for _, y in cells) + 1
    gaps = sorted({y for y in range(height) for x in range(24) if (x, y) not in cells})
    assert gaps == [], f"{board['uid']}: layout gaps on grid lines {gaps}"


def test_required_panels_present(board: dict[str, Any]) -> None:
    titles = {p["title"] for p in panels(board)}
    assert SHARED_TITLES - titles == set()
    if board["uid"] == "vobiz-overview":
        assert {
            "Trunk status",
            "Rejection ratio",
            "ASR",
            "ABR",
            "NER",
            "ACD",
            "Median MOS",
            "Calls below MOS 3.6",
        } <= titles
    else:
        summary = [p for p in panels(board) if p["gridPos"]["y"] < 10 and p["type"] == "stat"]
        assert {p["title"] for p in summary} == SUMMARY_STATS


def test_status_table() -> None:
    board = load_dashboard(REPO / "grafana/dashboards/vobiz-overview.json")
    [table] = [p for p in panels(board) if p["title"] == "Trunk status"]
    assert table["type"] == "table" and table["gridPos"] == {"h": 7, "w": 24, "x": 0, "y": 1}
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    assert ["trunk", *organize["renameByName"].values()] == STATUS_COLUMNS
    assert sorted(organize["indexByName"], key=organize["indexByName"].get) == ["trunk", *organize["renameByName"]]
    coloured = {
        o["matcher"]["options"]
        for o in table["fieldConfig"]["overrides"]
        if any(p["id"] == "thresholds" for p in o["properties"])
    }
    assert coloured == {"Rejected", "NER", "MOS <= 3.1", "Utilisation", "Last event", "Firing alerts"}
    last = next(t for t in table["targets"] if t["legendFormat"] == "Last event")["expr"]
    assert last.startswith("time() - (max by (trunk) (vobiz_last_event_timestamp_seconds") and last.endswith("> 0)")


def test_time_since_last_event_is_blank_before_the_first_event(board: dict[str, Any]) -> None:
    """time() - 0 would read ~55 years after every restart: the zero gauge is filtered out."""
    for panel, target in targets(board):
        if "vobiz_last_event_timestamp_seconds" in target["expr"]:
            assert re.search(
                r"\(max by \([a-z, ]+\) \(vobiz_last_event_timestamp_seconds\{[^}]*\}\) > 0\)", target["expr"]
            ), where(board, panel, target)


def test_every_query_reads_cleanly(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        errors = analyze(target["expr"]).errors
        assert errors == [], f"{where(board, panel, target)}: {errors}"


def test_rate_windows(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        at = where(board, panel, target)
        allowed = {"$__rate_interval"} | FIXED_WINDOW_ALLOWLIST.get((board["uid"], panel["title"]), set())
        if target.get("instant"):
            allowed.add("$__range")
        for window in analyze(target["expr"]).ranges:
            assert window in allowed, f"{at}: range [{window}] not in {sorted(allowed)}"


def test_allowlisted_windows_are_used() -> None:
    """The allowlist stays honest: every entry names a panel that really uses the window."""
    boards = {load_dashboard(p)["uid"]: load_dashboard(p) for p in PATHS}
    for (uid, title), windows in FIXED_WINDOW_ALLOWLIST.items():
        found = [p for p in panels(boards[uid]) if p["title"] == title]
        assert len(found) == 1, f"{uid}: allowlisted panel {title!r} not found once"
        used = {w for t in found[0]["targets"] for w in analyze(t["expr"]).ranges}
        assert windows <= used, f"{uid} {title!r}: allowlisted {sorted(windows)} but uses {sorted(used)}"


def test_may_be_empty_list_names_real_panels() -> None:
    titles = {(load_dashboard(p)["uid"], t["title"]) for p in PATHS for t in panels(load_dashboard(p))}
    assert set(MAY_BE_EMPTY_UNDER_NORMAL) - titles == set()


def test_metrics_exist_with_their_labels(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        at = where(board, panel, target)
        uses = analyze(target["expr"]).metrics
        assert uses, f"{at}: no metric selector"
        for use in uses:
            assert use.name in SERIES, f"{at}: {use.name} is not a README metrics-table series"
            _, labels = SERIES[use.name]
            for label, _, _ in use.matchers:
                assert label in labels, f"{at}: {use.name} has no label {label!r}"


def test_trunk_matcher_on_every_trunk_metric(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        for use in analyze(target["expr"]).metrics:
            if "trunk" in SERIES[use.name][1]:
                assert ("trunk", "=~", "$trunk") in use.matchers, (
                    f'{where(board, panel, target)}: {use.name} without trunk=~"$trunk"'
                )


def test_counters_only_inside_rate_and_summed(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        at = where(board, panel, target)
        for use in analyze(target["expr"]).metrics:
            kind = SERIES[use.name][0]
            chain = [f.name for f in use.call_chain]
            if kind == "counter":
                assert use.enclosing_call in COUNTER_FUNCTIONS, (
                    f"{at}: {use.name} is a counter series outside rate()/increase() (calls: {chain})"
                )
                assert use.range is not None, f"{at}: {use.name} in {use.enclosing_call}() without a range"
                assert len(chain) >= 2 and chain[-2] == "sum", (
                    f"{at}: {use.enclosing_call}({use.name}) must be summed across replicas (calls: {chain})"
                )
            else:
                assert use.enclosing_call not in COUNTER_FUNCTIONS, f"{at}: gauge {use.name} in a rate"
            if use.name in REPLICA_SHARED_GAUGES:
                assert use.enclosing_call == "max", (
                    f"{at}: {use.name} is exported alike by every replica: aggregate with max, not {chain}"
                )


def test_total_tokens_sit_in_rate(board: dict[str, Any]) -> None:
    """The literal rule: every `_total` token found in the text is inside rate()/increase()."""
    for panel, target in targets(board):
        expr = target["expr"]
        totals = [u for u in analyze(expr).metrics if u.name.endswith("_total")]
        assert len(totals) == expr.count("_total"), f"{where(board, panel, target)}: missed a _total token"
        for use in totals:
            assert use.enclosing_call in ("rate", "increase"), f"{where(board, panel, target)}: {use.name}"


def test_histogram_quantiles_keep_le(board: dict[str, Any]) -> None:
    for panel, target in targets(board):
        for use in analyze(target["expr"]).metrics:
            if not use.name.endswith("_bucket"):
                continue
            at = where(board, panel, target)
            quantile = any(f.name == "histogram_quantile" for f in use.call_chain)
            heatmap = target.get("format") == "heatmap"
            le_matcher = any(m[0] == "le" for m in use.matchers)
            assert quantile or heatmap or le_matcher, f"{at}: bucket used without quantile, heatmap or le"
            if quantile or heatmap:
                by = use.call_chain[-2].by or ()
                assert "le" in by, f"{at}: the sum under a quantile/heatmap must keep le (by {by})"


def test_mos_panels_have_emodel_thresholds(board: dict[str, Any]) -> None:
    mos_panels = 0
    for panel in panels(board):
        uses = {u.name for t in panel["targets"] for u in analyze(t["expr"]).metrics}
        if not any(name.startswith("vobiz_call_mos") for name in uses):
            continue
        if panel["fieldConfig"]["defaults"]["unit"] == "percentunit" or panel["type"] == "table":
            continue  # a share of calls below a band (the status table's column too), not a MOS value
        mos_panels += 1
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        values = [s["value"] for s in steps if s["value"] is not None]
        assert values == MOS_THRESHOLDS, f"{where(board, panel)}: MOS thresholds {values}"
    assert mos_panels >= 2, f"{board['uid']}: expected MOS heatmap and percentiles, found {mos_panels}"


def test_cost_panels_are_per_currency(board: dict[str, Any]) -> None:
    cost_panels = 0
    for panel in panels(board):
        cost_targets = [
            t
            for t in panel["targets"]
            if any(
                u.name.startswith(("vobiz_call_cost", "vobiz_trunk_hourly_budget")) for u in analyze(t["expr"]).metrics
            )
        ]
        if not cost_targets:
            continue
        cost_panels += 1
        at = where(board, panel)
        for target in cost_targets:
            assert "{{currency}}" in target["legendFormat"], f"{at}: legend without currency"
            outer = next(f for f in analyze(target["expr"]).metrics[0].call_chain if f.by is not None)
            assert "currency" in (outer.by or ()), f"{at}: outermost aggregation drops currency"
        mapped = {o["matcher"]["options"]: o["properties"][0]["value"] for o in panel["fieldConfig"]["overrides"]}
        for code in CURRENCY_CODES:
            assert mapped.get(f".*\\b{code}\\b.*") == f"currency{code}", f"{at}: no unit override for {code}"
    assert cost_panels >= 2


def test_detail_board_requests_exemplars() -> None:
    board = load_dashboard(next(p for p in PATHS if p.stem == "vobiz-trunk-detail"))
    checked = 0
    for panel, target in targets(board):
        names = {u.name for u in analyze(target["expr"]).metrics}
        value_view = "histogram_quantile(" in target["expr"] or target.get("format") == "heatmap"
        if value_view and any(n.startswith(EXEMPLAR_HISTOGRAMS) for n in names):
            checked += 1
            assert target["exemplar"] is True, f"{where(board, panel, target)}: exemplar off"
    # MOS heatmap + p50/p10, duration p50/p95, billable p50/p95, cost p50/p95.
    assert checked == 9


def test_generator_matches_committed_json() -> None:
    sys.path.insert(0, str(REPO / "grafana"))
    try:
        import generate_dashboards
    finally:
        sys.path.remove(str(REPO / "grafana"))
    for name, text in generate_dashboards.render_all().items():
        committed = (REPO / "grafana" / "dashboards" / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is stale: run python grafana/generate_dashboards.py"


def test_provisioning_files() -> None:
    ds = yaml.safe_load((REPO / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert (source["name"], source["type"], source["uid"]) == ("Prometheus", "prometheus", "prometheus")
    assert (source["url"], source["access"], source["isDefault"]) == ("http://prometheus:9090", "proxy", True)
    prov = yaml.safe_load((REPO / "grafana/provisioning/dashboards/vobiz.yml").read_text())
    assert prov["apiVersion"] == 1
    [provider] = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# --- extracted expressions --------------------------------------------------------------------


def test_substitute() -> None:
    expr = 'sum(rate(x{trunk=~"$trunk"}[$__rate_interval])) + y{trunk=~"${trunk}"}[$__range] [$__interval]'
    assert substitute(expr) == 'sum(rate(x{trunk=~".*"}[1m])) + y{trunk=~".*"}[1h] [15s]'
    assert substitute(expr, "mumbai-primary", __rate_interval="2m") == (
        'sum(rate(x{trunk=~"mumbai-primary"}[2m])) + y{trunk=~"mumbai-primary"}[1h] [15s]'
    )
    with pytest.raises(KeyError, match="currency"):
        substitute('x{currency="$currency"}')
    with pytest.raises(ValueError, match="trunk name"):
        substitute("x", 'a"b')


def test_is_balanced() -> None:
    assert is_balanced('sum(rate(x{a="(]"}[1m]))')
    assert not is_balanced("sum(rate(x[1m])")
    assert not is_balanced("sum(rate(x[1m)])")
    assert not is_balanced('x{a="b}')


@pytest.mark.parametrize("trunk", [None, "demo"])
def test_extracted_expressions_are_complete(trunk: str | None) -> None:
    exprs = all_expressions(trunk)
    per_board = {uid: sum(1 for e in exprs if e.dashboard_uid == uid) for uid in EXPECTED_UIDS}
    expected = {
        uid: sum(len(p["targets"]) for p in panels(load_dashboard(REPO / f"grafana/dashboards/{uid}.json")))
        for uid in EXPECTED_UIDS
    }
    assert per_board == expected
    for e in exprs:
        assert e.expr.strip(), f"{e.name}: empty"
        assert "$" not in e.expr, f"{e.name}: variable left in {e.expr!r}"
        assert is_balanced(e.expr), f"{e.name}: unbalanced {e.expr!r}"
        wanted = '".*"' if trunk is None else f'"{trunk}"'
        if "trunk=~" in e.expr:
            assert f"trunk=~{wanted}" in e.expr, f"{e.name}: trunk not substituted"


def test_extract_expressions_one_board() -> None:
    board = load_dashboard(REPO / "grafana/dashboards/vobiz-overview.json")
    [first] = [e for e in extract_expressions(board) if e.panel_title == "Call attempts per second"]
    assert first.expr == 'sum(rate(vobiz_call_attempts_total{trunk=~".*"}[1m]))'
    assert (first.dashboard_uid, first.ref_id, first.instant) == ("vobiz-overview", "A", False)


# --- a real Prometheus parses every query -----------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    with run_prometheus(tmp, {"global": {"scrape_interval": "15s"}, "scrape_configs": []}) as prom:
        yield prom.url


def _query(url: str, expr: str) -> tuple[int, dict[str, Any]]:
    qs = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query?{qs}", timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def test_prometheus_rejects_a_broken_query(prometheus_url: str) -> None:
    """The check below can fail: Prometheus answers 400 with an error for a bad query."""
    status, body = _query(prometheus_url, "sum(rate(vobiz_call_attempts_total[1m])")
    assert (status, body["status"], body["errorType"]) == (400, "error", "bad_data")


EXPRS: list[Extracted] = all_expressions() + all_expressions("demo")


@pytest.mark.parametrize("extracted", EXPRS, ids=[f"{e.name}|{i}" for i, e in enumerate(EXPRS)])
def test_prometheus_parses_every_query(prometheus_url: str, extracted: Extracted) -> None:
    status, body = _query(prometheus_url, extracted.expr)
    assert (status, body["status"]) == (200, "success"), f"{extracted.name}: {body.get('error')}\n{extracted.expr}"
