"""The "Vobiz destinations" board: fraud signals and per-country KPIs (issue 13).

Built with the same panel helpers as the overview and detail boards (``generate_dashboards``:
replica-safe sums, ``$__rate_interval``, the ``trunk`` matcher, the datasource variable) and
coloured from the ``destinations`` section of prometheus/thresholds.yaml, the same numbers the
rules in prometheus/rules/vobiz-destinations.rules.yml are generated from.

``generate_dashboards.render_all()`` imports ``render()`` from here, so
``python grafana/generate_dashboards.py`` writes this board too. It needs the exporter's opt-in
``metrics.destinations`` (the ``vobiz_destination_*`` series).

The region view is Grafana's core geomap panel (no plugin): markers placed by a lookup of the
``country`` label in the bundled gazetteer ``public/gazetteer/countries.json``, whose keys are
ISO 3166-1 alpha-2 codes, the values of the exporter's ``country`` label. ``XN``
(non-geographic numbers: satellite, international networks), ``other`` and ``unknown`` have no
place on a map; the tables beside it list them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

# generate_dashboards imports this module at its top, so this module imports it back only
# inside functions (when a board is built), never at import time.
if TYPE_CHECKING:
    from generate_dashboards import Panel, Row

THRESHOLDS_FILE = Path(__file__).resolve().parent.parent / "prometheus" / "thresholds.yaml"
FILE_NAME = "vobiz-destinations.json"
UID = "vobiz-destinations"
TITLE = "Vobiz destinations — fraud and per-country KPIs"
GAZETTEER = "public/gazetteer/countries.json"

ATTEMPTS = "vobiz_destination_attempts_total"
ANSWERED = "vobiz_destination_answered_total"
BILLSEC = "vobiz_destination_billable_seconds_total"
COST = "vobiz_destination_cost_total"
DISALLOWED = "vobiz_destination_disallowed_total"


def load_thresholds(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    destinations: dict[str, Any] = data["destinations"]
    return destinations


def over_range(by: tuple[str, ...], metric: str, matchers: str = "") -> str:
    """``sum by (...) (increase(metric{trunk=~"$trunk"}[$__range]))``: a whole-range summary."""
    import generate_dashboards as gd

    return gd.agg("sum", by, f"increase({gd.sel(metric, matchers)}[$__range])")


def steps(*pairs: tuple[str, float | None]) -> list[dict[str, Any]]:
    return [{"color": color, "value": value} for color, value in pairs]


def fraud_row(t: dict[str, Any]) -> Row:
    import generate_dashboards as gd
    from generate_dashboards import Panel, Row, Target

    share = (
        f"{over_range(('trunk', 'country', 'currency'), COST)}\n/ on (trunk, currency) group_left ()\n"
        f"{over_range(('trunk', 'currency'), COST)}"
    )
    # Under clean traffic no disallowed series exists at all; a zero per trunk keeps the panel
    # saying "0" instead of "No data" (which would also hide a broken scrape).
    zero_per_trunk = gd.agg("sum", ("trunk",), f"0 * increase({gd.sel(ATTEMPTS)}[$__range])")
    return Row(
        "Fraud signals",
        [
            Panel(
                "Calls to disallowed destinations",
                "Admitted calls over the dashboard's time range to countries outside the trunk's "
                "metrics.destinations.allowed list (VobizDisallowedDestination pages on any).",
                "stat",
                "short",
                [Target(f"{over_range((), DISALLOWED)}\nor vector(0)", "disallowed calls", instant=True)],
                w=4,
                thresholds=steps(("green", None), ("red", 1)),
                decimals=0,
            ),
            Panel(
                "Disallowed calls by trunk and country",
                "Which trunk called which disallowed country over the time range; 0 per trunk when there were none.",
                "bargauge",
                "short",
                [
                    Target(
                        f"{over_range(('trunk', 'country'), DISALLOWED)}\nor on (trunk)\n{zero_per_trunk}",
                        "{{trunk}} {{country}}",
                        instant=True,
                    )
                ],
                w=8,
                thresholds=steps(("green", None), ("red", 1)),
                decimals=0,
            ),
            Panel(
                "Share of each trunk's spend by country",
                "Each country's share of its trunk's spend (same currency) over the time range. A "
                "country new to the trunk above the line is VobizNewDestinationSpend "
                f"({t['new_spend_share']:.0%} of an hour's spend).",
                "bargauge",
                "percentunit",
                [Target(share, "{{trunk}} {{country}} {{currency}}", instant=True)],
                w=12,
                max=1,
                thresholds=steps(("green", None), ("orange", t["new_spend_share"])),
            ),
            Panel(
                "Answered calls billed under 6 s",
                "Share of answered calls with billable seconds under 6 per trunk (the le=6 bucket of "
                "vobiz_call_billable_seconds): far above the trunk's own norm is a sign of false "
                "answer supervision or fraud. The line is the alert's margin over a zero baseline.",
                "timeseries",
                "percentunit",
                [
                    Target(
                        gd.ratio(
                            gd.srate(("trunk",), "vobiz_call_billable_seconds_bucket", 'le="6.0"'),
                            gd.srate(("trunk",), "vobiz_call_billable_seconds_count"),
                        ),
                        "{{trunk}}",
                    )
                ],
                w=12,
                max=1,
                threshold_style="dashed",
                thresholds=steps(("green", None), ("orange", t["short_call_margin"])),
            ),
            Panel(
                "Answers without ringing (RingTime 0)",
                "Share of answered calls that never rang, per trunk: answered before the callee's phone "
                "rang is a false answer supervision signal. The line is the alert's margin over a zero "
                "baseline.",
                "timeseries",
                "percentunit",
                [
                    Target(
                        gd.ratio(
                            gd.srate(("trunk",), "vobiz_calls_answered_no_ring_total"),
                            gd.srate(("trunk",), "vobiz_calls_answered_total"),
                        ),
                        "{{trunk}}",
                    )
                ],
                w=12,
                max=1,
                threshold_style="dashed",
                thresholds=steps(("green", None), ("orange", t["no_ring_margin"])),
            ),
        ],
    )


def country_row(t: dict[str, Any]) -> Row:
    import generate_dashboards as gd
    from generate_dashboards import Panel, Row, Target

    by = ("country",)
    by_cur = ("country", "currency")
    asr = gd.ratio(gd.srate(by, ANSWERED), gd.srate(by, ATTEMPTS, 'result="admitted"'))
    acd = gd.ratio(gd.srate(by, BILLSEC), gd.srate(by, ANSWERED))
    per_minute = f"{gd.srate(by_cur, COST)}\n/ on (country) group_left ()\n{gd.srate(by, BILLSEC)}\n* 60"
    return Row(
        "Per country",
        [
            Panel(
                "Call attempts per second by country",
                "CallInitiated events per second by destination country (the region of To), admitted "
                "and rejected, over the selected trunks.",
                "timeseries",
                "cps",
                [Target(gd.srate(by, ATTEMPTS), "{{country}}")],
                w=12,
                stack=True,
            ),
            Panel(
                "ASR by country",
                "Answer-seizure ratio per destination country: answered calls / admitted attempts to it.",
                "timeseries",
                "percentunit",
                [Target(asr, "{{country}}")],
                w=12,
                max=1,
                threshold_style="dashed",
                thresholds=steps(
                    ("red", None), ("orange", t["country_asr_board_low"]), ("green", t["country_asr_board_ok"])
                ),
            ),
            Panel(
                "ACD by country",
                "Average call duration per destination country: billable seconds / answered calls.",
                "timeseries",
                "s",
                [Target(acd, "{{country}}")],
            ),
            Panel(
                "Spend per hour by country",
                "Call cost per hour by destination country and currency (the rate of "
                "vobiz_destination_cost_total x 3600).",
                "timeseries",
                "short",
                [Target(f"{gd.srate(by_cur, COST)} * 3600", "{{country}} {{currency}}")],
                currency=True,
                stack=True,
            ),
            Panel(
                "Cost per answered minute by country",
                "Spend / billable minutes per destination country and currency: what a connected "
                "minute costs. Premium-rate fraud shows as a country with a high price.",
                "timeseries",
                "short",
                [Target(per_minute, "{{country}} {{currency}}")],
                currency=True,
            ),
        ],
    )


def top_row() -> Row:
    from generate_dashboards import Panel, Row, Target

    return Row(
        "Top destinations",
        [
            Panel(
                "Top 10 countries by attempts",
                "The destination countries with the most call attempts over the time range.",
                "table",
                "short",
                [Target(f"topk(10, {over_range(('country',), ATTEMPTS)})", "{{country}}", instant=True, fmt="table")],
                h=10,
                decimals=0,
            ),
            Panel(
                "Top 10 countries by spend",
                "The destination countries with the highest spend over the time range, per currency.",
                "table",
                "short",
                [
                    Target(
                        f"topk(10, {over_range(('country', 'currency'), COST)})",
                        "{{country}} {{currency}}",
                        instant=True,
                        fmt="table",
                    )
                ],
                h=10,
                decimals=2,
            ),
            Panel(
                "Call attempts by country (map)",
                "Call attempts over the time range on a world map (core geomap panel, countries found "
                "by their ISO 3166-1 alpha-2 code). Non-geographic numbers (XN), other and unknown "
                "are in the tables only.",
                "geomap",
                "short",
                [Target(over_range(("country",), ATTEMPTS), "{{country}}", instant=True, fmt="table")],
                h=10,
            ),
        ],
    )


def rows(t: dict[str, Any]) -> list[Row]:
    return [fraud_row(t), country_row(t), top_row()]


# --- panel kinds generate_dashboards does not render: table and geomap --------------------------


def _table(panel: dict[str, Any], p: Panel) -> None:
    value_name = "attempts" if "attempts" in p.title else "spend"
    panel["options"] = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
        "sortBy": [{"desc": True, "displayName": value_name}],
    }
    panel["fieldConfig"]["defaults"]["custom"] = {
        "align": "auto",
        "cellOptions": {"type": "auto"},
        "inspect": False,
    }
    panel["transformations"] = [
        {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": value_name}}}
    ]


def _geomap(panel: dict[str, Any], p: Panel) -> None:
    panel["fieldConfig"]["defaults"]["color"] = {"mode": "continuous-GrYlRd"}
    panel["fieldConfig"]["defaults"]["custom"] = {"hideFrom": {"legend": False, "tooltip": False, "viz": False}}
    panel["options"] = {
        "basemap": {"config": {}, "name": "Basemap", "type": "default"},
        "controls": {"mouseWheelZoom": False, "showAttribution": True, "showZoom": True},
        "layers": [
            {
                "config": {
                    "showLegend": True,
                    "style": {
                        "color": {"field": "Value", "fixed": "dark-green"},
                        "opacity": 0.6,
                        "size": {"field": "Value", "fixed": 5, "max": 30, "min": 4},
                        "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                        "text": {"field": "country", "fixed": "", "mode": "field"},
                        "textConfig": {
                            "fontSize": 10,
                            "offsetX": 0,
                            "offsetY": -12,
                            "textAlign": "center",
                            "textBaseline": "middle",
                        },
                    },
                },
                "location": {"gazetteer": GAZETTEER, "lookup": "country", "mode": "lookup"},
                "name": "Call attempts",
                "tooltip": True,
                "type": "markers",
            }
        ],
        "tooltip": {"mode": "details"},
        "view": {"allLayers": True, "id": "zero", "lat": 20, "lon": 40, "zoom": 1},
    }


PATCHES: dict[str, Callable[[dict[str, Any], Panel], None]] = {"table": _table, "geomap": _geomap}


def panels(t: dict[str, Any]) -> list[dict[str, Any]]:
    """Rendered panels: generate_dashboards' layout, tables and the geomap patched in afterwards."""
    board_rows = rows(t)
    patched: dict[str, tuple[str, Panel]] = {}
    for row in board_rows:
        for p in row.panels:
            if p.kind in PATCHES:
                patched[p.title] = (p.kind, p)
                p.kind = "bargauge"  # rendered like one, then turned into its own type below
    from generate_dashboards import layout

    out = layout(board_rows)
    for panel in out:
        if panel["type"] != "row" and panel["title"] in patched:
            kind, p = patched[panel["title"]]
            panel["type"] = kind
            PATCHES[kind](panel, p)
    return out


def dashboard(t: dict[str, Any] | None = None) -> dict[str, Any]:
    from generate_dashboards import board

    t = t if t is not None else load_thresholds()
    description = (
        "Destinations and fraud: calls outside each trunk's allowed list, spend on new countries, "
        "short and no-ring answers (false answer supervision), and ASR, ACD, attempts, spend and "
        "cost per answered minute per destination country. Needs metrics.destinations.enabled."
    )
    return board(UID, TITLE, description, ["vobiz", "sip", "telephony", "fraud"], panels(t))


def render() -> dict[str, str]:
    """File name -> JSON text, merged into generate_dashboards.render_all()."""
    return {FILE_NAME: json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"}
