"""Generate the bundled Grafana dashboards from one description of every panel.

The JSON files in ``grafana/dashboards/`` are what users import; this script is how they are
written, so the overview and the detail board cannot drift apart and every query is built from
the same few helpers (replica-safe aggregation, ``$__rate_interval``, the ``trunk`` matcher).
Every colour step comes from ``prometheus/thresholds.yaml``, the file the alert rules are
generated from (``prometheus/generate_rules.py``), so a board never disagrees with an alert.
``tests/test_dashboards.py`` checks that the committed JSON equals this script's output, and
``tests/test_rules.py`` that board colours equal rule thresholds.

The boards need Grafana 10.3 or later (dashboard schema 39; the status table's "Join by field"
and "Organize fields" transformations).

    python grafana/generate_dashboards.py          # rewrite grafana/dashboards/*.json
    python grafana/generate_dashboards.py --check  # exit 1 if the files are stale
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import destinations_board  # the "Vobiz destinations" board (issue 13), added by render_all()
import yaml

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
THRESHOLDS_FILE = Path(__file__).resolve().parent.parent / "prometheus" / "thresholds.yaml"

sys.path.insert(0, str(THRESHOLDS_FILE.parent))
import generated_files  # noqa: E402  (prometheus/generated_files.py: the shared write-or-check main)

MIN_GRAFANA_VERSION = "10.3.0"


def load_thresholds(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


T = load_thresholds()


def steps(base: str, *pairs: tuple[str, float]) -> list[dict[str, Any]]:
    """Grafana threshold steps: the base colour, then (colour, from this value up)."""
    return [{"color": base, "value": None}, *({"color": c, "value": v} for c, v in pairs)]


# Colour steps, each from the thresholds source (the alert threshold where an alert exists).
REJECTION_STEPS = steps(
    "green", ("yellow", T["admission"]["rejection_ratio_board_warn"]), ("red", T["admission"]["rejection_ratio"])
)
NER_STEPS = steps("red", ("orange", T["kpi"]["ner_outage"]), ("green", T["kpi"]["ner_warning"]))
MOS_SHARE_36_STEPS = steps(
    "green", ("yellow", T["quality"]["mos_share_board_warn"]), ("red", T["quality"]["mos_3_6_share"])
)
MOS_SHARE_31_STEPS = steps(
    "green", ("yellow", T["quality"]["mos_share_board_warn"]), ("red", T["quality"]["mos_3_1_share"])
)
JITTER_STEPS = steps(
    "green", ("yellow", T["quality"]["jitter_p95_seconds"]), ("red", T["quality"]["jitter_board_severe"])
)
CAPACITY_STEPS = steps("green", ("yellow", T["capacity"]["warning"]), ("red", T["capacity"]["critical"]))
DROP_STEPS = steps("green", ("red", T["media"]["drop_ratio"]))
SHORT_CALL_STEPS = steps(
    "green", ("yellow", T["kpi"]["short_call_board_warn"]), ("red", T["kpi"]["short_call_board_crit"])
)
FAILURE_SHARE_STEPS = steps(
    "green",
    ("yellow", T["failure_group_board_warn"]),
    ("red", min(g["threshold"] for g in T["failure_groups"].values())),
)
# Silence: amber from the silence window on; red comes only from the alert (status table).
LAST_EVENT_STEPS = steps("green", ("yellow", T["webhooks"]["silent_minutes"] * 60))
# ASR is judged against the trunk's own baseline (VobizLowASR), so it has no absolute colour.
NEUTRAL_STEPS = steps("blue")
DS: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
TRUNK = 'trunk=~"$trunk"'
RATE_WINDOW = "$__rate_interval"
# E-model (G.107) MOS bands: >= 4.3 very satisfied, 4.0 satisfied, 3.6 some dissatisfied,
# 3.1 many dissatisfied, below: nearly all dissatisfied.
MOS_STEPS: list[dict[str, Any]] = [
    {"color": "red", "value": None},
    {"color": "orange", "value": 3.1},
    {"color": "yellow", "value": 3.6},
    {"color": "green", "value": 4.0},
    {"color": "dark-green", "value": 4.3},
]
# Currencies get their symbol where Grafana has a unit for them; any other code shows as a plain
# number with the code in the legend.
CURRENCY_UNITS = ("INR", "USD", "EUR", "GBP")


@dataclass
class Target:
    expr: str
    legend: str
    instant: bool = False
    exemplar: bool = False
    fmt: str = "time_series"


@dataclass
class Panel:
    title: str
    description: str
    kind: str  # timeseries | stat | bargauge | heatmap
    unit: str
    targets: list[Target]
    w: int = 8
    h: int = 8
    thresholds: list[dict[str, Any]] | None = None
    threshold_style: str = "off"
    currency: bool = False
    stack: bool = False
    decimals: int | None = None
    min: float | None = 0
    max: float | None = None
    time_from: str | None = None
    extra_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    title: str
    panels: list[Panel]


# --- query helpers -------------------------------------------------------------------------


def sel(metric: str, matchers: str = "", trunk: bool = True) -> str:
    parts = [TRUNK] if trunk else []
    if matchers:
        parts.append(matchers)
    return f"{metric}{{{','.join(parts)}}}" if parts else metric


def rate(metric: str, matchers: str = "", trunk: bool = True) -> str:
    return f"rate({sel(metric, matchers, trunk)}[{RATE_WINDOW}])"


def agg(op: str, by: tuple[str, ...], inner: str) -> str:
    """``op by (labels) (inner)``: counters sum across replicas, shared gauges take the max."""
    if by:
        return f"{op} by ({', '.join(by)}) ({inner})"
    return f"{op}({inner})"


def srate(by: tuple[str, ...], metric: str, matchers: str = "", trunk: bool = True) -> str:
    return agg("sum", by, rate(metric, matchers, trunk))


def quantile(q: float, metric: str, by: tuple[str, ...], trunk: bool = True) -> str:
    return f"histogram_quantile({q}, {srate((*by, 'le'), metric + '_bucket', trunk=trunk)})"


def ratio(num: str, den: str) -> str:
    return f"{num}\n/\n{den}"


def asr(by: tuple[str, ...]) -> str:
    """Answered Hangups / all Hangups: both sides at hangup, never above 100% (TELECOM.md)."""
    return ratio(srate(by, "vobiz_calls_answered_total"), srate(by, "vobiz_calls_ended_by_group_total"))


def abr(by: tuple[str, ...]) -> str:
    """Answered / all bids: Hangups plus admission rejections (ITU-T E.411)."""
    return ratio(
        srate(by, "vobiz_calls_answered_total"),
        f"(\n  {srate(by, 'vobiz_calls_ended_by_group_total')}\n  + {srate(by, 'vobiz_call_rejections_total')}\n)",
    )


def ner(by: tuple[str, ...]) -> str:
    """Answered or user outcomes (the exporter's vobiz_calls_effective_total) / all Hangups."""
    return ratio(srate(by, "vobiz_calls_effective_total"), srate(by, "vobiz_calls_ended_by_group_total"))


def drop_ratio(by: tuple[str, ...]) -> str:
    """6020 media timeouts (group media) / answered calls."""
    return ratio(
        srate(by, "vobiz_calls_ended_by_group_total", 'group="media"'), srate(by, "vobiz_calls_answered_total")
    )


def short_call_share(by: tuple[str, ...]) -> str:
    """Answered calls billed under 6 s / answered calls (false answer supervision, fraud)."""
    # prometheus_client writes float bucket bounds ("6.0"), and Prometheus stores le as written.
    return ratio(
        srate(by, "vobiz_call_billable_seconds_bucket", 'le="6.0"'), srate(by, "vobiz_call_billable_seconds_count")
    )


def cost_per_answered_minute(by: tuple[str, ...]) -> str:
    """Spend per currency / billable minutes (each currency over all answered minutes)."""
    cur = (*by, "currency")
    return (
        f"{srate(cur, 'vobiz_call_cost_sum')}\n/ ignoring (currency) group_left ()\n"
        f"({srate(by, 'vobiz_call_billable_seconds_sum')} / 60)"
    )


def last_event_age(by: tuple[str, ...]) -> str:
    """Seconds since the last accepted event; no value before the first one (the gauge is 0 then)."""
    return f"time() - ({agg('max', by, sel('vobiz_last_event_timestamp_seconds'))} > 0)"


def utilisation(by: tuple[str, ...]) -> str:
    return ratio(agg("max", by, sel("vobiz_calls_active")), agg("max", by, sel("vobiz_trunk_max_concurrent_calls")))


def acd(by: tuple[str, ...]) -> str:
    return ratio(srate(by, "vobiz_call_billable_seconds_sum"), srate(by, "vobiz_call_billable_seconds_count"))


def rejection_ratio(by: tuple[str, ...]) -> str:
    return ratio(
        srate(by, "vobiz_call_attempts_total", 'result="rejected"'),
        srate(by, "vobiz_call_attempts_total"),
    )


def mos_share_below(le: str, by: tuple[str, ...]) -> str:
    return ratio(srate(by, "vobiz_call_mos_bucket", f'le="{le}"'), srate(by, "vobiz_call_mos_count"))


def legend(by: tuple[str, ...], suffix: str = "") -> str:
    text = " ".join(f"{{{{{label}}}}}" for label in by)
    return f"{text} {suffix}".strip() if suffix else (text or "selected trunks")


# --- the boards ------------------------------------------------------------------------------

STATUS_COLUMNS: list[tuple[str, str, list[dict[str, Any]] | None]] = [
    # (column, unit, colour steps or None for plain text)
    ("Attempts/s", "cps", None),
    ("Rejected", "percentunit", REJECTION_STEPS),
    ("ASR", "percentunit", None),
    ("NER", "percentunit", NER_STEPS),
    ("MOS <= 3.1", "percentunit", MOS_SHARE_31_STEPS),
    ("Utilisation", "percentunit", CAPACITY_STEPS),
    ("Last event", "s", LAST_EVENT_STEPS),
    ("Firing alerts", "short", steps("green", ("red", 1))),
]


def firing_alerts(by: tuple[str, ...]) -> str:
    """Firing Vobiz alerts per trunk (Prometheus' ALERTS series), 0 for a trunk without any."""
    return (
        f"{agg('count', by, sel('ALERTS', 'alertstate=' + chr(34) + 'firing' + chr(34)))}\n"
        f"or\n0 * {agg('max', by, sel('vobiz_trunk_info'))}"
    )


def status_row() -> Row:
    by = ("trunk",)
    exprs = [
        srate(by, "vobiz_call_attempts_total"),
        rejection_ratio(by),
        asr(by),
        ner(by),
        mos_share_below("3.1", by),
        utilisation(by),
        last_event_age(by),
        firing_alerts(by),
    ]
    table = Panel(
        "Trunk status",
        "One line per trunk: attempts/s, rejected share, ASR and NER (hangup-side), share of calls at MOS "
        "<= 3.1, concurrency used, seconds since the last accepted event (blank before the first one) and "
        "firing Vobiz alerts. Colours are the alert thresholds (prometheus/thresholds.yaml); ASR has none "
        "because it is judged against the trunk's own baseline.",
        "table",
        "none",
        [Target(e, col, instant=True, fmt="table") for e, (col, _, _) in zip(exprs, STATUS_COLUMNS, strict=True)],
        w=24,
        h=7,
        min=None,
    )
    return Row("Status", [table])


def summary_row() -> Row:
    """Detail board: stat panels over the selected trunk(s)."""

    def stat(
        title: str,
        description: str,
        unit: str,
        expr: str,
        thresholds: list[dict[str, Any]] | None,
        decimals: int | None = None,
    ) -> Panel:
        return Panel(
            title,
            description,
            "stat",
            unit,
            [Target(expr, title)],
            w=4,
            h=4,
            thresholds=thresholds or NEUTRAL_STEPS,
            decimals=decimals,
        )

    return Row(
        "Summary",
        [
            stat(
                "Attempts/s",
                "CallInitiated events per second on the selected trunk(s).",
                "cps",
                srate((), "vobiz_call_attempts_total"),
                None,
            ),
            stat(
                "Rejected",
                "Rejected / all call attempts (admission).",
                "percentunit",
                rejection_ratio(()),
                REJECTION_STEPS,
            ),
            stat(
                "ASR",
                "Answered Hangups / all Hangups. Compare with the trunk's own history: diallers run at 20-35%.",
                "percentunit",
                asr(()),
                None,
            ),
            stat(
                "NER",
                "Answered or user outcomes (busy, no answer, declined, ring timeout, cancel after ringing) "
                "/ all Hangups; healthy networks read 95-99%.",
                "percentunit",
                ner(()),
                NER_STEPS,
            ),
            stat(
                "MOS <= 3.1 share",
                "Share of measured calls at MOS 3.1 or below (nearly all users dissatisfied).",
                "percentunit",
                mos_share_below("3.1", ()),
                MOS_SHARE_31_STEPS,
            ),
            stat(
                "Concurrency (max)",
                "Active calls / max_concurrent_calls (highest trunk).",
                "percentunit",
                agg("max", (), utilisation(("trunk",))),
                CAPACITY_STEPS,
            ),
            stat(
                "ABR",
                "Answer-bid ratio: answered / (Hangups + admission rejections), the customer's view.",
                "percentunit",
                abr(()),
                None,
            ),
            stat("ACD", "Average billable seconds of answered calls.", "s", acd(()), None),
            stat(
                "Drops",
                "6020 media timeouts / answered calls: calls cut mid-conversation.",
                "percentunit",
                drop_ratio(()),
                DROP_STEPS,
            ),
            stat(
                "Short calls",
                "Answered calls billed under 6 s / answered calls: far above the trunk's norm "
                "it signals false answer supervision or fraud.",
                "percentunit",
                short_call_share(()),
                SHORT_CALL_STEPS,
            ),
            stat(
                "Peak CPS",
                "Highest number of CallInitiated events in any one second, over the "
                "dashboard interval (sum over replicas: an upper bound).",
                "cps",
                agg("max", (), peak_cps(("trunk",))),
                None,
            ),
            stat(
                "Last event age",
                "Seconds since the last accepted event (blank before the first one).",
                "s",
                agg("max", (), last_event_age(("trunk",))),
                LAST_EVENT_STEPS,
            ),
        ],
    )


def peak_cps(by: tuple[str, ...]) -> str:
    """Each replica reports its own per-second peak since the last scrape; their sum bounds the trunk's."""
    return agg("sum", by, f"max_over_time({sel('vobiz_trunk_peak_calls_per_second')}[{RATE_WINDOW}])")


def admission_row(detail: bool) -> Row:
    by_result = ("trunk", "result") if detail else ("result",)
    by_reason = ("trunk", "reason") if detail else ("reason",)
    panels: list[Panel] = []
    if not detail:
        panels += [
            Panel(
                "Call attempts per second",
                "CallInitiated events per second over the selected trunks, admitted and rejected.",
                "stat",
                "cps",
                [Target(srate((), "vobiz_call_attempts_total"), "attempts/s")],
                h=4,
            ),
            Panel(
                "Rejection ratio",
                "Share of call attempts the provider refused at admission (balance, KYC, CLI, limits, "
                "routes) over the selected trunks. Red is the rejection-spike alert threshold.",
                "stat",
                "percentunit",
                [Target(rejection_ratio(()), "rejected")],
                h=4,
                thresholds=REJECTION_STEPS,
            ),
            Panel(
                "Rejections per second",
                "Rejected call attempts per second over the selected trunks.",
                "stat",
                "cps",
                [Target(srate((), "vobiz_call_rejections_total"), "rejections/s")],
                h=4,
            ),
        ]
    panels += [
        Panel(
            "Call attempts per second: admitted vs rejected",
            "How many outbound attempts the provider admitted and how many it refused.",
            "timeseries",
            "cps",
            [Target(srate(by_result, "vobiz_call_attempts_total"), legend(by_result))],
            stack=True,
        ),
        Panel(
            "Rejection ratio by trunk",
            "Rejected / all call attempts per trunk: is one trunk being refused at admission?",
            "timeseries",
            "percentunit",
            [Target(rejection_ratio(("trunk",)), "{{trunk}}")],
            max=1,
            thresholds=REJECTION_STEPS,
            threshold_style="dashed",
        ),
        Panel(
            "Rejections per second by reason",
            "Why attempts are refused: balance, CLI ownership, Aadhaar, KYC, rate or concurrency "
            "limit, no route, other.",
            "timeseries",
            "cps",
            [Target(srate(by_reason, "vobiz_call_rejections_total"), legend(by_reason))],
            stack=True,
        ),
    ]
    return Row("Admission", panels)


def answer_row(detail: bool) -> Row:
    panels: list[Panel] = []
    if not detail:
        panels += [
            Panel(
                "ASR",
                "Answer-seizure ratio over the selected trunks: answered Hangups / all Hangups (both "
                "counted at hangup). No colour: judge it against the trunk's own history.",
                "stat",
                "percentunit",
                [Target(asr(()), "ASR")],
                w=4,
                h=4,
                thresholds=NEUTRAL_STEPS,
            ),
            Panel(
                "ABR",
                "Answer-bid ratio: answered / (Hangups + admission rejections), the customer's view.",
                "stat",
                "percentunit",
                [Target(abr(()), "ABR")],
                w=4,
                h=4,
                thresholds=NEUTRAL_STEPS,
            ),
            Panel(
                "NER",
                "Network effectiveness ratio (ITU-T E.425): answered or a user outcome (busy, no answer, "
                "declined, busy everywhere, ring timeout, cancel after ringing) over all Hangups. Orange and "
                "green start at the outage and low-NER alert thresholds.",
                "stat",
                "percentunit",
                [Target(ner(()), "NER")],
                w=4,
                h=4,
                thresholds=NER_STEPS,
            ),
            Panel(
                "ACD",
                "Average billable duration of answered calls over the selected trunks.",
                "stat",
                "s",
                [Target(acd(()), "ACD")],
                w=4,
                h=4,
            ),
            Panel(
                "Answered calls per second",
                "Hangups of answered calls (billable seconds > 0) per second over the selected trunks.",
                "stat",
                "cps",
                [Target(srate((), "vobiz_calls_answered_total"), "answered/s")],
                w=4,
                h=4,
            ),
            Panel(
                "Drop ratio",
                "6020 media timeouts / answered calls over the selected trunks: calls cut "
                "mid-conversation. Red is the VobizCallDrops threshold.",
                "stat",
                "percentunit",
                [Target(drop_ratio(()), "drop ratio")],
                w=4,
                h=4,
                thresholds=DROP_STEPS,
            ),
        ]
    exemplar = detail
    panels += [
        Panel(
            "ASR and ABR by trunk",
            "ASR: answered / all Hangups. ABR: answered / (Hangups + rejections). Low ASR with high NER means "
            "callees do not pick up, not a network fault.",
            "timeseries",
            "percentunit",
            [Target(asr(("trunk",)), "{{trunk}} ASR"), Target(abr(("trunk",)), "{{trunk}} ABR")],
            max=1,
        ),
        Panel(
            "NER by trunk",
            "Answered or user outcomes over all Hangups per trunk; low NER means the network, the account or "
            "the dialler fails calls (see failures by who acts).",
            "timeseries",
            "percentunit",
            [Target(ner(("trunk",)), "{{trunk}}")],
            max=1,
            thresholds=NER_STEPS,
            threshold_style="dashed",
        ),
        Panel(
            "ACD by trunk",
            "Average call duration: billable seconds of answered calls / answered calls, per trunk.",
            "timeseries",
            "s",
            [Target(acd(("trunk",)), "{{trunk}}")],
        ),
        Panel(
            "Call duration p50 / p95",
            "Whole call duration (ring + talk) percentiles per trunk"
            + ("; exemplar dots show the CallUUID." if detail else "."),
            "timeseries",
            "s",
            [
                Target(quantile(0.5, "vobiz_call_duration_seconds", ("trunk",)), "{{trunk}} p50", exemplar=exemplar),
                Target(quantile(0.95, "vobiz_call_duration_seconds", ("trunk",)), "{{trunk}} p95", exemplar=exemplar),
            ],
        ),
    ]
    if detail:
        panels.append(
            Panel(
                "Billable duration p50 / p95",
                "Connected (billable) seconds of answered calls per trunk; exemplar dots show the CallUUID.",
                "timeseries",
                "s",
                [
                    Target(quantile(0.5, "vobiz_call_billable_seconds", ("trunk",)), "{{trunk}} p50", exemplar=True),
                    Target(quantile(0.95, "vobiz_call_billable_seconds", ("trunk",)), "{{trunk}} p95", exemplar=True),
                ],
            )
        )
    panels.append(
        Panel(
            "Time to answer p95",
            "95th percentile of RingTime of answered calls per trunk: how long callees let it ring before "
            "answering (not post-dial delay, which the provider does not send).",
            "timeseries",
            "s",
            [Target(quantile(0.95, "vobiz_call_answer_ring_seconds", ("trunk",)), "{{trunk}} p95")],
        )
    )
    short = Panel(
        "Short-call share",
        "Answered calls billed under 6 s / answered calls, per trunk. Far above the trunk's norm it signals "
        "false answer supervision or fraud (see the destinations board).",
        "timeseries",
        "percentunit",
        [Target(short_call_share(("trunk",)), "{{trunk}}")],
        max=1,
        thresholds=SHORT_CALL_STEPS,
        threshold_style="dashed",
    )
    if detail:
        short.w = 12
        panels += [
            Panel(
                "Drop ratio",
                "6020 media timeouts / answered calls per trunk: calls cut mid-conversation (provider or "
                "network). The dashed line is the VobizCallDrops threshold.",
                "timeseries",
                "percentunit",
                [Target(drop_ratio(("trunk",)), "{{trunk}}")],
                w=12,
                max=1,
                thresholds=DROP_STEPS,
                threshold_style="dashed",
            ),
            short,
        ]
    else:
        panels.append(short)
    return Row("Answer & duration", panels)


def quality_row(detail: bool) -> Row:
    exemplar = detail
    panels: list[Panel] = []
    if not detail:
        panels += [
            Panel(
                "Median MOS",
                "Median mean opinion score of measured calls over the selected trunks, coloured by E-model band.",
                "stat",
                "none",
                [Target(quantile(0.5, "vobiz_call_mos", ()), "median MOS")],
                h=4,
                thresholds=MOS_STEPS,
                decimals=2,
                min=1,
                max=5,
            ),
            Panel(
                "Calls below MOS 3.6",
                "Share of measured calls at or below MOS 3.6 (many users dissatisfied) over the selected "
                "trunks; red is the VobizLowMOS warning threshold.",
                "stat",
                "percentunit",
                [Target(mos_share_below("3.6", ()), "below 3.6")],
                h=4,
                thresholds=MOS_SHARE_36_STEPS,
            ),
            Panel(
                "Jitter p95",
                "95th percentile of reported jitter over the selected trunks (target under 30 ms).",
                "stat",
                "s",
                [Target(quantile(0.95, "vobiz_call_jitter_seconds", ()), "jitter p95")],
                h=4,
                thresholds=JITTER_STEPS,
            ),
        ]
    panels += [
        Panel(
            "MOS distribution",
            "Calls per MOS bucket over time (E-model band edges)"
            + ("; exemplar dots show single calls (CallUUID)." if detail else "."),
            "heatmap",
            "none",
            [
                Target(
                    agg("sum", ("le",), f"increase({sel('vobiz_call_mos_bucket')}[{RATE_WINDOW}])"),
                    "{{le}}",
                    exemplar=exemplar,
                    fmt="heatmap",
                )
            ],
            w=12,
            thresholds=MOS_STEPS,
        ),
        Panel(
            "MOS p50 and p10 by trunk",
            "Median and 10th-percentile MOS per trunk against the E-model bands 4.3 / 4.0 / 3.6 / 3.1.",
            "timeseries",
            "none",
            [
                Target(quantile(0.5, "vobiz_call_mos", ("trunk",)), "{{trunk}} p50", exemplar=exemplar),
                Target(quantile(0.1, "vobiz_call_mos", ("trunk",)), "{{trunk}} p10", exemplar=exemplar),
            ],
            w=12,
            thresholds=MOS_STEPS,
            threshold_style="dashed",
            decimals=2,
            min=1,
            max=5,
        ),
        Panel(
            "Share of calls below MOS 3.6 and 3.1",
            "Fraction of measured calls under 3.6 (many dissatisfied) and 3.1 (nearly all "
            "dissatisfied) per trunk; averages hide bad calls, shares do not.",
            "timeseries",
            "percentunit",
            [
                Target(mos_share_below("3.6", ("trunk",)), "{{trunk}} < 3.6"),
                Target(mos_share_below("3.1", ("trunk",)), "{{trunk}} < 3.1"),
            ],
            w=12,
            max=1,
        ),
        Panel(
            "Jitter p95 by trunk",
            "95th percentile of reported jitter per trunk; 30 ms is the usual target, 40 ms severe.",
            "timeseries",
            "s",
            [Target(quantile(0.95, "vobiz_call_jitter_seconds", ("trunk",)), "{{trunk}} p95")],
            w=12,
            thresholds=JITTER_STEPS,
            threshold_style="dashed",
        ),
    ]
    return Row("Quality", panels)


def capacity_row(detail: bool) -> Row:
    by_cur = ("trunk", "currency") if detail else ("currency",)
    # A fixed 1h window on purpose: the budget is per hour (the lint test allowlists this panel).
    spend = agg("sum", by_cur, f"increase({sel('vobiz_call_cost_sum')}[1h])")
    # Every replica exports the same budget: max per trunk, then add trunks up.
    budget = agg("max", ("trunk", "currency"), sel("vobiz_trunk_hourly_budget"))
    if not detail:
        budget = agg("sum", by_cur, budget)
    active = agg("max", ("trunk",), sel("vobiz_calls_active"))
    limit = agg("max", ("trunk",), sel("vobiz_trunk_max_concurrent_calls"))
    by_cpm = ("trunk",) if detail else ()
    panels = [
        Panel(
            "Active calls vs max_concurrent_calls",
            "Calls admitted and not yet hung up per trunk, with the configured concurrency limit.",
            "timeseries",
            "short",
            [Target(active, "{{trunk}} active"), Target(limit, "{{trunk}} max_concurrent_calls")],
            w=12,
        ),
        Panel(
            "Peak calls per second vs cps_limit",
            "The highest number of new calls (CallInitiated) in any one wall-clock second, per trunk, "
            "against the per-second limit: an average over a minute would hide the bursts the provider "
            "refuses. With several replicas the sum of their peaks is an upper bound.",
            "timeseries",
            "cps",
            [
                Target(peak_cps(("trunk",)), "{{trunk}} peak calls/s"),
                Target(agg("max", ("trunk",), sel("vobiz_trunk_cps_limit")), "{{trunk}} cps_limit"),
            ],
            w=12,
        ),
        Panel(
            "Concurrency used",
            "Active calls / max_concurrent_calls per trunk: warning above "
            f"{T['capacity']['warning']:.0%}, critical above {T['capacity']['critical']:.0%}.",
            "bargauge",
            "percentunit",
            [Target(ratio(active, limit), "{{trunk}}")],
            max=1,
            thresholds=CAPACITY_STEPS,
        ),
        Panel(
            "Spend in the last hour vs hourly budget",
            "Sum of call costs over the trailing hour, per currency, against the configured hourly budget.",
            "timeseries",
            "short",
            [Target(spend, legend(by_cur, "spend last 1h")), Target(budget, legend(by_cur, "hourly budget"))],
            currency=True,
        ),
    ]
    if detail:
        panels.append(
            Panel(
                "Cost per call p50 / p95",
                "Per-call cost percentiles per trunk and currency; exemplar dots show the CallUUID.",
                "timeseries",
                "short",
                [
                    Target(
                        quantile(0.5, "vobiz_call_cost", ("trunk", "currency")),
                        "{{trunk}} {{currency}} p50",
                        exemplar=True,
                    ),
                    Target(
                        quantile(0.95, "vobiz_call_cost", ("trunk", "currency")),
                        "{{trunk}} {{currency}} p95",
                        exemplar=True,
                    ),
                ],
                currency=True,
            )
        )
    panels += [
        Panel(
            "Spend today",
            "Sum of call costs since midnight in the dashboard time zone (the panel's time range is 'today so far'), "
            "per currency.",
            "stat",
            "short",
            [
                Target(
                    agg("sum", by_cur, f"increase({sel('vobiz_call_cost_sum')}[$__range])"),
                    legend(by_cur),
                    instant=True,
                )
            ],
            currency=True,
            time_from="now/d",
        ),
        Panel(
            "Cost per answered minute",
            "Spend per billable minute of answered calls, per currency"
            + (" and trunk" if detail else "")
            + ": the price the traffic really pays, unanswered attempts "
            "included.",
            "timeseries",
            "short",
            [Target(cost_per_answered_minute(by_cpm), legend((*by_cpm, "currency"), "per answered minute"))],
            currency=True,
            w=16 if detail else 24,
        ),
    ]
    return Row("Capacity & spend", panels)


def hangups_row(detail: bool) -> Row:
    by_cat = ("trunk", "hangup_category") if detail else ("hangup_category",)
    by_src = ("trunk", "hangup_source") if detail else ("hangup_source",)
    by_group = ("trunk", "group") if detail else ("group",)
    top = "topk(10, " + agg("sum", ("hangup_cause",), f"increase({sel('vobiz_calls_ended_total')}[$__range])") + ")"
    failures = srate(by_group, "vobiz_calls_ended_by_group_total", 'group!="user"')
    share = (
        f"{srate(('trunk', 'group'), 'vobiz_calls_ended_by_group_total', 'group!=' + chr(34) + 'user' + chr(34))}"
        f"\n/ ignoring (group) group_left ()\n{srate(('trunk',), 'vobiz_calls_ended_by_group_total')}"
    )
    return Row(
        "Hangups",
        [
            Panel(
                "Top hangup causes",
                "The ten most frequent hangup causes over the dashboard's time range.",
                "bargauge",
                "short",
                [Target(top, "{{hangup_cause}}", instant=True)],
            ),
            Panel(
                "Hangups per second by category",
                "Ended calls per second by the provider's cause group (normal, rejection, destination, "
                "carrier, system, timeout, canceled, ...).",
                "timeseries",
                "cps",
                [Target(srate(by_cat, "vobiz_calls_ended_total"), legend(by_cat))],
                stack=True,
            ),
            Panel(
                "Hangups per second by source",
                "Which side ended the calls: caller, callee, the provider, the carrier, the API.",
                "timeseries",
                "cps",
                [Target(srate(by_src, "vobiz_calls_ended_total"), legend(by_src))],
                stack=True,
            ),
            Panel(
                "Failures per second by who acts",
                "Hangups that were not a user outcome, by the team that fixes them (docs/runbooks.md, 'Ours "
                "or the provider's'): dialler, caller_id, account, provider, carrier, destination, media, other.",
                "timeseries",
                "cps",
                [Target(failures, legend(by_group))],
                stack=True,
                w=12,
            ),
            Panel(
                "Failure share by who acts",
                "Each failure group's share of all Hangups per trunk; the dashed line is the lowest group "
                "alert threshold (prometheus/thresholds.yaml, failure_groups).",
                "timeseries",
                "percentunit",
                [Target(share, "{{trunk}} {{group}}")],
                w=12,
                max=1,
                thresholds=FAILURE_SHARE_STEPS,
                threshold_style="dashed",
            ),
        ],
    )


def webhook_row(detail: bool) -> Row:
    by_out = ("trunk", "outcome") if detail else ("outcome",)
    by_ev = ("trunk", "event") if detail else ("event",)
    panels = [
        Panel(
            "Webhook requests per second by outcome",
            "Every webhook request by outcome: accepted, duplicate, signature failures, malformed, "
            "stale, overloaded, ... (trunk 'unknown' counts only when All trunks are selected).",
            "timeseries",
            "reqps",
            [Target(srate(by_out, "vobiz_webhook_requests_total"), legend(by_out))],
            stack=True,
            w=8 if detail else 12,
        ),
        Panel(
            "Webhook delivery delay p95",
            "95th percentile of receive time minus the event's signed Timestamp, by event type.",
            "timeseries",
            "s",
            [Target(quantile(0.95, "vobiz_webhook_delivery_delay_seconds", by_ev), legend(by_ev, "p95"))],
            w=8 if detail else 12,
        ),
        Panel(
            "Time since last event",
            "Seconds since the last accepted event per trunk and event type: blank until the first event "
            "after a start, amber from the silence window on. Overnight quiet is normal for campaigns; "
            "VobizWebhooksSilent decides when it is not.",
            "bargauge",
            "s",
            [Target(last_event_age(("trunk", "event")), "{{trunk}} {{event}}", instant=True)],
            thresholds=LAST_EVENT_STEPS,
        ),
    ]
    if detail:
        panels += [
            Panel(
                "Signature failures accepted and previous secrets used",
                "Per trunk: requests that failed verification but were accepted in report mode, and "
                "requests verified only by a rotated (previous) secret.",
                "timeseries",
                "reqps",
                [
                    Target(
                        srate(("trunk",), "vobiz_webhook_signature_failures_allowed_total"),
                        "{{trunk}} failures accepted (report mode)",
                    ),
                    Target(
                        srate(("trunk",), "vobiz_webhook_previous_secret_used_total"), "{{trunk}} previous secret used"
                    ),
                ],
                w=12,
            ),
            Panel(
                "Invalid fields dropped per second",
                "Payload fields dropped as invalid (the event still counts), per trunk and field name.",
                "timeseries",
                "cps",
                [Target(srate(("trunk", "field"), "vobiz_event_invalid_fields_total"), "{{trunk}} {{field}}")],
                w=12,
            ),
        ]
    else:
        panels += [
            Panel(
                "Webhook handling time p95",
                "95th percentile of the exporter's time to handle one webhook request (all trunks; "
                "this histogram has no trunk label).",
                "timeseries",
                "s",
                [Target(quantile(0.95, "vobiz_webhook_request_duration_seconds", (), trunk=False), "p95")],
            ),
            Panel(
                "De-duplication store errors and evictions",
                "Store failures (events may double count or be refused, per dedupe.on_error) and LRU "
                "evictions of the memory backend, per second.",
                "timeseries",
                "cps",
                [
                    Target(srate((), "vobiz_dedupe_errors_total", trunk=False), "store errors"),
                    Target(srate((), "vobiz_dedupe_evictions_total", trunk=False), "evictions"),
                ],
            ),
        ]
    return Row("Webhook health", panels)


def rows(detail: bool) -> list[Row]:
    return [
        summary_row() if detail else status_row(),
        admission_row(detail),
        answer_row(detail),
        quality_row(detail),
        capacity_row(detail),
        hangups_row(detail),
        webhook_row(detail),
    ]


# --- JSON rendering --------------------------------------------------------------------------


def render_target(t: Target, ref: str) -> dict[str, Any]:
    return {
        "datasource": DS,
        "editorMode": "code",
        "exemplar": t.exemplar,
        "expr": t.expr,
        "format": t.fmt,
        "instant": t.instant,
        "legendFormat": t.legend,
        "range": not t.instant,
        "refId": ref,
    }


def render_panel(p: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    steps = p.thresholds or [{"color": "green", "value": None}]
    defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    defaults["color"] = {"mode": "thresholds" if p.kind in ("stat", "bargauge") else "palette-classic"}
    options: dict[str, Any]
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if p.stack else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if p.stack else "none"},
            "thresholdsStyle": {"mode": p.threshold_style},
        }
        options = {
            "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "stat":
        options = {
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    elif p.kind == "bargauge":
        options = {
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
        }
    elif p.kind == "heatmap":
        defaults.pop("min", None)
        defaults["custom"] = {"scaleDistribution": {"type": "linear"}}
        options = {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "exponent": 0.5,
                "fill": "dark-orange",
                "mode": "scheme",
                "reverse": False,
                "scale": "exponential",
                "scheme": "Oranges",
                "steps": 64,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
            "yAxis": {"axisPlacement": "left", "decimals": 1, "reverse": False, "unit": p.unit},
        }
    elif p.kind == "table":
        defaults["color"] = {"mode": "thresholds"}
        defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False}
        options = {
            "cellHeight": "sm",
            "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
            "showHeader": True,
            "sortBy": [{"desc": False, "displayName": "trunk"}],
        }
    else:
        raise ValueError(f"unknown panel kind {p.kind}")
    options.update(p.extra_options)
    overrides: list[dict[str, Any]] = []
    if p.currency:
        for code in CURRENCY_UNITS:
            overrides.append(
                {
                    "matcher": {"id": "byRegexp", "options": f".*\\b{code}\\b.*"},
                    "properties": [{"id": "unit", "value": f"currency{code}"}],
                }
            )
    panel: dict[str, Any] = {
        "datasource": DS,
        "description": p.description,
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "id": pid,
        "options": options,
        "targets": [render_target(t, chr(ord("A") + i)) for i, t in enumerate(p.targets)],
        "title": p.title,
        "type": p.kind,
    }
    if p.kind == "table":
        # One instant query per column, merged on the trunk label, "Value #A" ... renamed.
        refs = [chr(ord("A") + i) for i in range(len(p.targets))]
        names = {f"Value #{ref}": t.legend for ref, t in zip(refs, p.targets, strict=True)}
        panel["transformations"] = [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {"trunk": 0, **{name: i + 1 for i, name in enumerate(names)}},
                    "renameByName": names,
                },
            },
        ]
        for col, unit, col_steps in STATUS_COLUMNS:
            props: list[dict[str, Any]] = [{"id": "unit", "value": unit}]
            if col_steps is not None:
                props += [
                    {"id": "thresholds", "value": {"mode": "absolute", "steps": col_steps}},
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                ]
            overrides.append({"matcher": {"id": "byName", "options": col}, "properties": props})
    if p.time_from:
        panel["timeFrom"] = p.time_from
        panel["hideTimeOverride"] = False
    return panel


def layout(board_rows: list[Row]) -> list[dict[str, Any]]:
    """Rows in order; panels fill 24 columns left to right and wrap under the tallest one."""
    out: list[dict[str, Any]] = []
    pid = 1
    y = 0
    for row in board_rows:
        out.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": pid,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        pid += 1
        y += 1
        x = 0
        line_h = 0
        for p in row.panels:
            if x + p.w > 24:
                y += line_h
                x = 0
                line_h = 0
            out.append(render_panel(p, pid, x, y))
            pid += 1
            x += p.w
            line_h = max(line_h, p.h)
        y += line_h
    return out


def templating() -> dict[str, Any]:
    return {
        "list": [
            {
                "current": {},
                "hide": 0,
                "includeAll": False,
                "label": "Data source",
                "multi": False,
                "name": "datasource",
                "options": [],
                "query": "prometheus",
                "refresh": 1,
                "regex": "",
                "skipUrlSync": False,
                "type": "datasource",
            },
            {
                # allValue .* rather than the list of configured names: "All" then also shows the
                # trunk="unknown" webhook outcomes (requests that never resolved to a trunk).
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "datasource": DS,
                "definition": "label_values(vobiz_trunk_info, trunk)",
                "hide": 0,
                "includeAll": True,
                "label": "Trunk",
                "multi": True,
                "name": "trunk",
                "options": [],
                "query": {"query": "label_values(vobiz_trunk_info, trunk)", "refId": "StandardVariableQuery"},
                "refresh": 2,
                "regex": "",
                "skipUrlSync": False,
                "sort": 1,
                "type": "query",
            },
        ]
    }


def board(uid: str, title: str, description: str, tags: list[str], panels: list[dict[str, Any]]) -> dict[str, Any]:
    """Every bundled board's frame (links, refresh, time range, the trunk variables) around its panels.

    The destinations board (destinations_board.py) uses it too, so the boards look and link alike.
    """
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "asDropdown": False,
                "icon": "dashboard",
                "includeVars": True,
                "keepTime": True,
                "tags": ["vobiz"],
                "targetBlank": False,
                "title": "Vobiz dashboards",
                "type": "dashboards",
            }
        ],
        "liveNow": False,
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": tags,
        "templating": templating(),
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def dashboard(detail: bool) -> dict[str, Any]:
    if detail:
        uid, title = "vobiz-trunk-detail", "Vobiz trunk — detail"
        description = (
            "The selected Vobiz trunk(s) broken down per trunk, with exemplars (CallUUID) on MOS, "
            "duration and cost. Needs Prometheus with --enable-feature=exemplar-storage for exemplars."
        )
    else:
        uid, title = "vobiz-overview", "Vobiz trunks — overview"
        description = (
            "Admission, answer, quality, capacity, spend, hangups and webhook health across all Vobiz "
            "trunks, from vobiz-exporter metrics."
        )
    return {
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": MIN_GRAFANA_VERSION},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        **board(uid, title, description, ["vobiz", "sip", "telephony"], layout(rows(detail))),
    }


def render_all() -> dict[str, str]:
    """File name -> JSON text for every bundled dashboard."""
    return {
        "vobiz-overview.json": json.dumps(dashboard(False), indent=2, ensure_ascii=False) + "\n",
        "vobiz-trunk-detail.json": json.dumps(dashboard(True), indent=2, ensure_ascii=False) + "\n",
        **destinations_board.render(),
    }


def main(argv: list[str] | None = None) -> int:
    """Rewrite grafana/dashboards/*.json, or with ``--check`` exit 1 if one is stale."""
    return generated_files.main(__doc__, render_all, DASHBOARD_DIR, "python grafana/generate_dashboards.py", argv)


if __name__ == "__main__":
    sys.exit(main())
