# ruff: noqa: E501  (PromQL and annotation strings are long)
"""Generate the Prometheus recording and alert rules from prometheus/thresholds.yaml.

``prometheus/thresholds.yaml`` is the one place for every threshold (and the runbook base URL);
``grafana/generate_dashboards.py`` reads the same file for the board colours, so a board and the
alert about the same KPI cannot disagree. ``tests/test_rules.py`` checks that the committed rule
files equal this script's output.

    python prometheus/generate_rules.py          # rewrite prometheus/rules/*.rules.yml
    python prometheus/generate_rules.py --check  # exit 1 if the files are stale
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "prometheus"
RULES_DIR = PROM_DIR / "rules"
THRESHOLDS_FILE = PROM_DIR / "thresholds.yaml"
RECORDING_FILE = "vobiz-recording.rules.yml"
ALERTS_FILE = "vobiz-alerts.rules.yml"
DESTINATIONS_FILE = "vobiz-destinations.rules.yml"

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(PROM_DIR))
import generated_files  # noqa: E402  (prometheus/generated_files.py: the shared write-or-check main)

from exporter.events import HANGUP_CAUSE_BY_CODE, outcome_group  # noqa: E402

# Admission rejection reasons -> the "who acts" group (TELECOM.md). `other` has no owner.
REASON_GROUPS = {
    "rate_limited": "dialler",
    "cli_validation_failed": "caller_id",
    "insufficient_balance": "account",
    "kyc_required": "account",
    "aadhaar_pending": "account",
    "no_routes": "provider",
}
# Reasons with an alert of their own; the generic rejection spike counts only the rest.
OWN_ALERT_REASONS = ("insufficient_balance", "kyc_required", "aadhaar_pending", "cli_validation_failed", "rate_limited")
REFUSED_OUTCOMES = ("stale", "malformed", "unknown_trunk", "unavailable", "overloaded")


def load_thresholds(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def causes_of(group: str) -> list[str]:
    """The hangup_cause label values of the documented codes in a "who acts" group."""
    return sorted({cause for code, cause in HANGUP_CAUSE_BY_CODE.items() if outcome_group(code, 0) == group})


def runbook(t: dict[str, Any], alert: str) -> str:
    return f"{t['runbook_base_url']}#{alert.lower()}"


def num(value: float) -> str:
    """A threshold as PromQL prints it: 0.1, 0.05, 60 (no trailing .0)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def top_cause(trunk_window: str, causes: list[str] | None = None) -> str:
    """Template text naming the most frequent hangup cause of the trunk (among ``causes``)."""
    matcher = f'hangup_cause=~"{"|".join(causes)}",' if causes else ""
    query = f'topk(1, sum by (hangup_cause) (increase(vobiz_calls_ended_total{{{matcher}trunk="%s"}}[{trunk_window}])))'
    return (
        f"{{{{ with printf `{query}` $labels.trunk | query }}}}{{{{ with first . }}}}"
        f"{{{{ .Labels.hangup_cause }}}}{{{{ end }}}}{{{{ end }}}}"
    )


def top_group(window: str) -> str:
    query = f'topk(1, trunk_group:vobiz_calls_ended_by_group:ratio_rate{window}{{group!="user",trunk="%s"}} > 0)'
    return (
        f"{{{{ with printf `{query}` $labels.trunk | query }}}}{{{{ with first . }}}}"
        f"{{{{ .Labels.group }}}} ({{{{ .Value | humanizePercentage }}}}){{{{ end }}}}{{{{ end }}}}"
    )


# --- recording rules -----------------------------------------------------------------------------


def recording_rules() -> list[dict[str, Any]]:
    r: list[dict[str, Any]] = []

    def rec(name: str, expr: str) -> None:
        r.append({"record": name, "expr": expr})

    # admission
    rec("trunk:vobiz_call_attempts:rate5m", "sum by (trunk) (rate(vobiz_call_attempts_total[5m]))")
    rec(
        "trunk:vobiz_call_attempts_admitted:rate5m",
        'sum by (trunk) (rate(vobiz_call_attempts_total{result="admitted"}[5m]))',
    )
    rec(
        "trunk:vobiz_call_attempts_rejected:rate5m",
        'sum by (trunk) (rate(vobiz_call_attempts_total{result="rejected"}[5m]))',
    )
    rec(
        "trunk:vobiz_call_attempts_rejected:rate15m",
        'sum by (trunk) (rate(vobiz_call_attempts_total{result="rejected"}[15m]))',
    )
    rec(
        "trunk:vobiz_call_rejection_ratio:rate5m",
        "trunk:vobiz_call_attempts_rejected:rate5m / trunk:vobiz_call_attempts:rate5m",
    )
    rec("trunk_reason:vobiz_call_rejections:rate5m", "sum by (trunk, reason) (rate(vobiz_call_rejections_total[5m]))")
    rec(
        "trunk_reason:vobiz_call_rejections:increase5m",
        "sum by (trunk, reason) (increase(vobiz_call_rejections_total[5m]))",
    )
    own = "|".join(OWN_ALERT_REASONS)
    rec(
        "trunk:vobiz_call_rejections_generic:rate5m",
        f'sum by (trunk) (rate(vobiz_call_rejections_total{{reason!~"{own}"}}[5m]))',
    )
    rec(
        "trunk:vobiz_call_rejection_generic_ratio:rate5m",
        "trunk:vobiz_call_rejections_generic:rate5m / trunk:vobiz_call_attempts:rate5m",
    )
    terms = "\n  or\n".join(
        f'  label_replace(trunk_reason:vobiz_call_rejections:rate5m{{reason="{reason}"}}, "group", "{group}", "", "")'
        for reason, group in REASON_GROUPS.items()
    )
    rec("trunk_group:vobiz_call_rejections:rate5m", f"sum by (trunk, group) (\n{terms}\n)\n")

    # hangups, answers, KPIs: hangup-side on both sides of every ratio
    for w in ("5m", "15m"):
        # Every Hangup once, from the group counter: its series exist at 0 from start-up, so a
        # cause seen for the first time is not lost to rate() (new vobiz_calls_ended_total series are).
        rec(f"trunk:vobiz_calls_ended:rate{w}", f"sum by (trunk) (rate(vobiz_calls_ended_by_group_total[{w}]))")
        rec(f"trunk:vobiz_calls_answered:rate{w}", f"sum by (trunk) (rate(vobiz_calls_answered_total[{w}]))")
        rec(f"trunk:vobiz_calls_effective:rate{w}", f"sum by (trunk) (rate(vobiz_calls_effective_total[{w}]))")
        rec(
            f"trunk_group:vobiz_calls_ended_by_group:rate{w}",
            f"sum by (trunk, group) (rate(vobiz_calls_ended_by_group_total[{w}]))",
        )
    for w in ("5m", "15m"):
        rec(
            f"trunk:vobiz_call_asr:ratio_rate{w}",
            f"trunk:vobiz_calls_answered:rate{w} / trunk:vobiz_calls_ended:rate{w}",
        )
        rec(
            f"trunk:vobiz_call_ner:ratio_rate{w}",
            f"trunk:vobiz_calls_effective:rate{w} / trunk:vobiz_calls_ended:rate{w}",
        )
        rec(
            f"trunk_group:vobiz_calls_ended_by_group:ratio_rate{w}",
            f"trunk_group:vobiz_calls_ended_by_group:rate{w}\n/ on (trunk) group_left\ntrunk:vobiz_calls_ended:rate{w}\n",
        )
    rec(
        "trunk:vobiz_call_abr:ratio_rate15m",
        "trunk:vobiz_calls_answered:rate15m\n/ on (trunk)\n"
        "(trunk:vobiz_calls_ended:rate15m + on (trunk) trunk:vobiz_call_attempts_rejected:rate15m)\n",
    )
    rec(
        "trunk:vobiz_call_asr_baseline:ratio_rate1d",
        "sum by (trunk) (rate(vobiz_calls_answered_total[1d] offset 1h))\n"
        "/\nsum by (trunk) (rate(vobiz_calls_ended_by_group_total[1d] offset 1h))\n",
    )
    rec(
        "trunk:vobiz_calls_ended_baseline:rate1d",
        "sum by (trunk) (rate(vobiz_calls_ended_by_group_total[1d] offset 1h))",
    )
    rec(
        "trunk:vobiz_call_drop:ratio_rate15m",
        'trunk_group:vobiz_calls_ended_by_group:rate15m{group="media"}\n/ ignoring (group)\n'
        "trunk:vobiz_calls_answered:rate15m\n",
    )
    # Short-call share (Billsec < 6 s) and answers without ringing are recorded, with their
    # baselines and alerts, in vobiz-destinations.rules.yml (prometheus/destinations_rules.py).
    rec(
        "trunk:vobiz_call_acd_seconds:mean15m",
        "sum by (trunk) (rate(vobiz_call_billable_seconds_sum[15m]))\n"
        "/\nsum by (trunk) (rate(vobiz_call_billable_seconds_count[15m]))\n",
    )
    rec(
        "trunk:vobiz_call_answer_ring_seconds:p95_rate15m",
        "histogram_quantile(0.95, sum by (trunk, le) (rate(vobiz_call_answer_ring_seconds_bucket[15m])))",
    )
    # 1010 canceled_out_of_credits: a hangup-cause series is created by its first event and
    # increase() needs two samples, so a series younger than 5m counts whole.
    cause = 'vobiz_calls_ended_total{hangup_cause="canceled_out_of_credits"}'
    rec(
        "trunk:vobiz_calls_out_of_credits:increase5m",
        f"sum by (trunk) (\n    ({cause} unless {cause} offset 5m)\n  or\n    increase({cause}[5m])\n)\n",
    )
    # 5030 and 1020 (the dialler group, pre-created at 0 per trunk).
    rec(
        "trunk:vobiz_calls_dialler_limit:increase5m",
        'sum by (trunk) (increase(vobiz_calls_ended_by_group_total{group="dialler"}[5m]))',
    )

    # voice quality
    rec("trunk:vobiz_call_mos_count:rate15m", "sum by (trunk) (rate(vobiz_call_mos_count[15m]))")
    for le, name in (("3.6", "3_6"), ("3.1", "3_1")):
        rec(
            f"trunk:vobiz_call_mos_below_{name}:ratio_rate15m",
            f'sum by (trunk) (rate(vobiz_call_mos_bucket{{le="{le}"}}[15m]))\n/\ntrunk:vobiz_call_mos_count:rate15m\n',
        )
    rec("trunk:vobiz_call_jitter_seconds_count:rate15m", "sum by (trunk) (rate(vobiz_call_jitter_seconds_count[15m]))")
    rec(
        "trunk:vobiz_call_jitter_seconds:p95_rate15m",
        "histogram_quantile(0.95, sum by (trunk, le) (rate(vobiz_call_jitter_seconds_bucket[15m])))",
    )

    # spend
    rec("trunk_currency:vobiz_call_cost_sum:rate5m", "sum by (trunk, currency) (rate(vobiz_call_cost_sum[5m]))")
    rec("trunk_currency:vobiz_call_cost_sum:rate15m", "sum by (trunk, currency) (rate(vobiz_call_cost_sum[15m]))")
    rec(
        "trunk_currency:vobiz_call_cost_sum:increase1h",
        "sum by (trunk, currency) (\n    (vobiz_call_cost_sum unless vobiz_call_cost_sum offset 1h)\n  or\n"
        "    increase(vobiz_call_cost_sum[1h])\n)\n",
    )

    # gauges every replica exports alike: max, never sum
    rec("trunk:vobiz_calls_active:max", "max by (trunk) (vobiz_calls_active)")
    rec("trunk:vobiz_trunk_max_concurrent_calls:max", "max by (trunk) (vobiz_trunk_max_concurrent_calls)")
    rec("trunk_currency:vobiz_trunk_hourly_budget:max", "max by (trunk, currency) (vobiz_trunk_hourly_budget)")
    rec("trunk:vobiz_last_event_timestamp_seconds:max", "max by (trunk) (vobiz_last_event_timestamp_seconds)")
    rec(
        "trunk:vobiz_call_capacity_utilization:ratio",
        "trunk:vobiz_calls_active:max / on (trunk) (trunk:vobiz_trunk_max_concurrent_calls:max > 0)",
    )
    # Each replica sees its share of the calls: the sum of the per-replica peaks is an upper bound.
    rec(
        "trunk:vobiz_trunk_peak_calls_per_second:sum_max5m",
        "sum by (trunk) (max_over_time(vobiz_trunk_peak_calls_per_second[5m]))",
    )

    # webhook delivery
    rec(
        "trunk_outcome:vobiz_webhook_requests:rate5m",
        "sum by (trunk, outcome) (rate(vobiz_webhook_requests_total[5m]))",
    )
    rec(
        "trunk:vobiz_webhook_accepted:increase15m",
        'sum by (trunk) (increase(vobiz_webhook_requests_total{outcome="accepted"}[15m]))',
    )
    rec(
        "trunk:vobiz_webhook_signature_failures:rate5m",
        'sum by (trunk) (\n    rate(vobiz_webhook_requests_total{outcome=~"invalid_signature|missing_signature"}[5m])\n'
        "  or\n    rate(vobiz_webhook_signature_failures_allowed_total[5m])\n)\n",
    )
    rec("job:vobiz_webhook_requests:rate5m", "sum by (job) (rate(vobiz_webhook_requests_total[5m]))")
    rec(
        "job:vobiz_webhook_refused:ratio_rate5m",
        f'sum by (job) (rate(vobiz_webhook_requests_total{{outcome=~"{"|".join(REFUSED_OUTCOMES)}"}}[5m]))\n'
        "/\njob:vobiz_webhook_requests:rate5m\n",
    )
    rec(
        "trunk:vobiz_webhook_delivery_delay_seconds_count:rate15m",
        "sum by (trunk) (rate(vobiz_webhook_delivery_delay_seconds_count[15m]))",
    )
    rec(
        "trunk:vobiz_webhook_delivery_delay_seconds:p95_rate15m",
        "histogram_quantile(0.95, sum by (trunk, le) (rate(vobiz_webhook_delivery_delay_seconds_bucket[15m])))",
    )
    return r


# --- alert rules ---------------------------------------------------------------------------------


def alert_rules(t: dict[str, Any]) -> list[dict[str, Any]]:
    v, kpi, q, w = t["volume"], t["kpi"], t["quality"], t["webhooks"]
    out: list[dict[str, Any]] = []

    def alert(
        name: str,
        expr: str,
        for_: str,
        severity: str,
        owner: str | None,
        summary: str,
        description: str,
        kpi_alert: bool = False,
    ) -> None:
        labels: dict[str, str] = {"severity": severity}
        if owner:
            labels["owner"] = owner
        if kpi_alert:
            labels["kind"] = "kpi"
        out.append(
            {
                "alert": name,
                "expr": expr,
                "for": for_,
                "labels": labels,
                "annotations": {"summary": summary, "description": description, "runbook_url": runbook(t, name)},
            }
        )

    # --- admission
    rej = num(t["admission"]["rejection_ratio"])
    alert(
        "VobizCallRejectionSpike",
        f"trunk:vobiz_call_rejection_generic_ratio:rate5m > {rej}\n"
        f"and on (trunk) trunk:vobiz_call_attempts:rate5m > {num(v['attempts_per_s_5m'])}\n"
        f"and on (trunk) trunk:vobiz_call_rejections_generic:rate5m > {num(v['rejected_per_s_5m'])}\n",
        "5m",
        "critical",
        "provider",
        "Vobiz trunk {{ $labels.trunk }} rejects many call attempts",
        "{{ $value | humanizePercentage }} of call attempts on trunk {{ $labels.trunk }} were rejected "
        f"at admission for no_routes or an unclassified reason over the last 5m (threshold {num(float(rej) * 100)}%). "
        "Balance, KYC/Aadhaar, CLI and rate-limit rejections have their own alerts.",
        kpi_alert=True,
    )
    alert(
        "VobizInsufficientBalance",
        'sum by (trunk) (\n    trunk_reason:vobiz_call_rejections:increase5m{reason="insufficient_balance"}\n'
        "  or\n    trunk:vobiz_calls_out_of_credits:increase5m\n) > 0\n",
        "1m",
        "critical",
        "account",
        "Vobiz account balance exhausted (trunk {{ $labels.trunk }})",
        "{{ $value | humanize }} call(s) on trunk {{ $labels.trunk }} were refused for insufficient balance "
        "or ended with 1010 canceled_out_of_credits in the last 5m. Top up or fix auto-recharge in the console.",
    )
    alert(
        "VobizComplianceRejections",
        "label_replace(\n  label_replace(\n    trunk_reason:vobiz_call_rejections:increase5m"
        '{reason=~"kyc_required|aadhaar_pending|cli_validation_failed"} > 0,\n'
        '    "owner", "account", "", ""),\n  "owner", "caller_id", "reason", "cli_validation_failed")\n',
        "1m",
        "warning",
        None,
        "Vobiz refuses calls on trunk {{ $labels.trunk }} for compliance ({{ $labels.reason }})",
        "{{ $value | humanize }} call attempt(s) on trunk {{ $labels.trunk }} were rejected with reason "
        "{{ $labels.reason }} in the last 5m (owner: {{ $labels.owner }}).",
    )
    alert(
        "VobizTrunkRateLimited",
        'sum by (trunk) (\n    trunk_reason:vobiz_call_rejections:increase5m{reason="rate_limited"}\n'
        "  or\n    trunk:vobiz_calls_dialler_limit:increase5m\n) > 0\n",
        "5m",
        "warning",
        "dialler",
        "Vobiz trunk {{ $labels.trunk }} calls are refused by the dialler's own limits",
        "{{ $value | humanize }} call(s) on trunk {{ $labels.trunk }} in the last 5m were rate-limited at "
        "admission, hit the trunk concurrency limit (5030) or dialled the same destination too often at "
        "once (1020).",
    )
    for sev, key, for_ in (("warning", "warning", "10m"), ("critical", "critical", "5m")):
        thr = num(t["capacity"][key])
        alert(
            "VobizTrunkNearCapacity",
            f"trunk:vobiz_call_capacity_utilization:ratio > {thr}",
            for_,
            sev,
            "dialler",
            f"Vobiz trunk {{{{ $labels.trunk }}}} is above {num(float(thr) * 100)}% of its concurrent-call limit",
            "Trunk {{ $labels.trunk }} carries {{ $value | humanizePercentage }} of max_concurrent_calls "
            f"({sev} above {num(float(thr) * 100)}% for {for_}).",
        )

    # --- network effectiveness and answer
    alert(
        "VobizTrunkOutage",
        f"(\n    trunk:vobiz_call_ner:ratio_rate5m < {num(kpi['ner_outage'])}\n"
        f"  and on (trunk) trunk:vobiz_calls_ended:rate5m > {num(v['hangups_per_s_5m'])}\n)\nor\n(\n"
        f"    trunk:vobiz_call_asr:ratio_rate15m < {num(kpi['asr_outage'])}\n"
        f"  and on (trunk) trunk:vobiz_calls_ended:rate15m > {num(v['hangups_per_s_15m'])}\n)\n",
        "3m",
        "critical",
        "provider",
        "Vobiz trunk {{ $labels.trunk }} is failing nearly every call",
        "Trunk {{ $labels.trunk }}: NER over 5m (or ASR over 15m) is {{ $value | humanizePercentage }} "
        f"(outage below NER {num(kpi['ner_outage'] * 100)}% or ASR {num(kpi['asr_outage'] * 100)}%). "
        f"Dominant failure group: {top_group('5m')}; top cause: {top_cause('5m', failure_causes())}.",
        kpi_alert=True,
    )
    alert(
        "VobizLowNER",
        f"trunk:vobiz_call_ner:ratio_rate15m < {num(kpi['ner_warning'])}\n"
        f"and on (trunk) trunk:vobiz_calls_ended:rate15m > {num(v['hangups_per_s_15m'])}\n",
        "10m",
        "warning",
        "provider",
        "Vobiz trunk {{ $labels.trunk }} network effectiveness is low",
        "Only {{ $value | humanizePercentage }} of calls on trunk {{ $labels.trunk }} ended in an answer or a "
        f"user outcome over the last 15m (threshold {num(kpi['ner_warning'] * 100)}%). "
        f"Dominant failure group: {top_group('15m')}; top cause: {top_cause('15m', failure_causes())}.",
        kpi_alert=True,
    )
    factor = num(kpi["asr_baseline_factor"])
    alert(
        "VobizLowASR",
        f"trunk:vobiz_call_asr:ratio_rate15m\n< {factor} * trunk:vobiz_call_asr_baseline:ratio_rate1d\n"
        f"and on (trunk) trunk:vobiz_calls_ended:rate15m > {num(v['hangups_per_s_15m'])}\n"
        f"and on (trunk) trunk:vobiz_calls_ended_baseline:rate1d > {num(v['hangups_per_s_15m'])} / 24\n",
        "15m",
        "warning",
        "dialler",
        "Vobiz trunk {{ $labels.trunk }} answers far fewer calls than usual",
        "ASR on trunk {{ $labels.trunk }} is {{ $value | humanizePercentage }} over the last 15m, below "
        f"{factor} x its own ASR over the previous day "
        '({{ with printf `trunk:vobiz_call_asr_baseline:ratio_rate1d{trunk="%s"}` $labels.trunk | query }}'
        "{{ with first . }}{{ .Value | humanizePercentage }}{{ end }}{{ end }}).",
        kpi_alert=True,
    )
    for group, cfg in t["failure_groups"].items():
        thr = num(cfg["threshold"])
        alert(
            cfg["alert"],
            f'trunk_group:vobiz_calls_ended_by_group:ratio_rate15m{{group="{group}"}} > {thr}\n'
            f"and on (trunk) trunk:vobiz_calls_ended:rate15m > {num(v['hangups_per_s_15m'])}\n",
            "10m",
            cfg["severity"],
            group,
            f"Vobiz trunk {{{{ $labels.trunk }}}}: many calls fail in the {group} group",
            f"{{{{ $value | humanizePercentage }}}} of calls ended on trunk {{{{ $labels.trunk }}}} over the last "
            f"15m failed with {group} causes (threshold {num(cfg['threshold'] * 100)}%); top cause: "
            f"{top_cause('15m', causes_of(group))}.",
            kpi_alert=True,
        )
    alert(
        "VobizCallDrops",
        f"trunk:vobiz_call_drop:ratio_rate15m > {num(t['media']['drop_ratio'])}\n"
        f"and on (trunk) trunk:vobiz_calls_answered:rate15m > {num(v['answered_per_s_15m'])}\n",
        "10m",
        "warning",
        "media",
        "Vobiz trunk {{ $labels.trunk }} drops answered calls (media timeout)",
        "{{ $value | humanizePercentage }} of answered calls on trunk {{ $labels.trunk }} ended with 6020 "
        f"media_timeout over the last 15m (threshold {num(t['media']['drop_ratio'] * 100)}%).",
        kpi_alert=True,
    )

    # --- voice quality
    for sev, band, key in (("warning", "3_6", "mos_3_6_share"), ("critical", "3_1", "mos_3_1_share")):
        dotted = band.replace("_", ".")
        alert(
            "VobizLowMOS",
            f"trunk:vobiz_call_mos_below_{band}:ratio_rate15m > {num(q[key])}\n"
            f"and on (trunk) trunk:vobiz_call_mos_count:rate15m > {num(v['measured_per_s_15m'])}\n",
            "10m",
            sev,
            "media",
            f"Vobiz trunk {{{{ $labels.trunk }}}} voice quality is {'poor' if sev == 'warning' else 'bad'} "
            f"(MOS <= {dotted})",
            f"{{{{ $value | humanizePercentage }}}} of measured calls on trunk {{{{ $labels.trunk }}}} had MOS at "
            f"or below {dotted} over the last 15m (threshold {num(q[key] * 100)}%).",
            kpi_alert=True,
        )
    alert(
        "VobizHighJitter",
        f"trunk:vobiz_call_jitter_seconds:p95_rate15m > {num(q['jitter_p95_seconds'])}\n"
        f"and on (trunk) trunk:vobiz_call_jitter_seconds_count:rate15m > {num(v['measured_per_s_15m'])}\n",
        "10m",
        "warning",
        "media",
        "Vobiz trunk {{ $labels.trunk }} jitter is high",
        "95th percentile jitter on trunk {{ $labels.trunk }} is {{ $value | humanizeDuration }} over the last "
        f"15m (threshold {num(q['jitter_p95_seconds'] * 1000)}ms).",
        kpi_alert=True,
    )

    # --- spend
    s = t["spend"]
    alert(
        "VobizSpendOverBudget",
        "trunk_currency:vobiz_call_cost_sum:increase1h\n"
        f"> on (trunk, currency) {num(s['hourly_budget_factor'])} * trunk_currency:vobiz_trunk_hourly_budget:max\n",
        "5m",
        "warning",
        "account",
        "Vobiz trunk {{ $labels.trunk }} spends over its hourly budget",
        "Trunk {{ $labels.trunk }} spent {{ $value | humanize }} {{ $labels.currency }} in the last hour, over "
        "its configured hourly_budget.",
    )
    alert(
        "VobizSpendOverBudget",
        "trunk_currency:vobiz_call_cost_sum:rate15m * 3600\n"
        f"> on (trunk, currency) {num(s['projection_factor'])} * trunk_currency:vobiz_trunk_hourly_budget:max\n",
        "5m",
        "critical",
        "account",
        "Vobiz trunk {{ $labels.trunk }} spends at twice its hourly budget or more",
        "Trunk {{ $labels.trunk }} spends at {{ $value | humanize }} {{ $labels.currency }} per hour (15m rate), "
        f"over {num(s['projection_factor'])}x its configured hourly_budget: a runaway campaign or fraud.",
    )

    # --- webhook delivery
    silent = f"{int(w['silent_minutes'])}m"
    accepted = 'vobiz_webhook_requests_total{outcome="accepted"}'
    alert(
        "VobizWebhooksSilent",
        f"trunk:vobiz_webhook_accepted:increase15m == 0\nand on (trunk)\n(\n"
        f"    (\n        sum by (trunk) (increase({accepted}[1h] offset {silent})) >= {w['silent_min_events_before']}\n"
        "      and on (trunk)\n        (\n            trunk:vobiz_calls_active:max > 0\n          or\n"
        f"            sum by (trunk) ({accepted}) == 0\n        )\n    )\n  or\n"
        f"    sum by (trunk) (increase({accepted}[{silent}] offset 1d)) >= {w['silent_min_events_yesterday']}\n"
        "  or\n"
        '    max by (trunk) (ALERTS{alertname="VobizWebhooksSilent", alertstate="firing"})\n)\n',
        "10m",
        "critical",
        "exporter",
        "No webhook events from Vobiz trunk {{ $labels.trunk }}",
        f"Trunk {{{{ $labels.trunk }}}} has had no accepted webhook event for {silent} (value {{{{ $value | humanize }}}}), "
        "while calls are still open, since the exporter restarted, or although the same time yesterday had "
        "traffic. It stays firing until an event arrives.",
    )
    alert(
        "VobizWebhookSignatureFailures",
        "trunk:vobiz_webhook_signature_failures:rate5m * 60 > 0",
        "10m",
        "warning",
        "exporter",
        "Webhook signature failures on Vobiz trunk {{ $labels.trunk }}",
        "Trunk {{ $labels.trunk }} receives {{ $value | humanize }} webhook requests per minute with an invalid "
        "or missing signature (refused, or accepted in report mode).",
    )
    alert(
        "VobizWebhookDeliveriesRefused",
        f"job:vobiz_webhook_refused:ratio_rate5m > {num(w['refused_ratio'])}\n"
        f"and on (job) job:vobiz_webhook_requests:rate5m > {num(v['deliveries_per_s_5m'])}\n",
        "10m",
        "warning",
        "exporter",
        "vobiz-exporter refuses many webhook deliveries",
        "{{ $value | humanizePercentage }} of webhook deliveries were refused as "
        f"{', '.join(REFUSED_OUTCOMES)} over the last 5m (threshold {num(w['refused_ratio'] * 100)}%); top: "
        '{{ with query `topk(1, sum by (outcome, trunk) (rate(vobiz_webhook_requests_total{outcome=~"'
        + "|".join(REFUSED_OUTCOMES)
        + '"}[5m])))` }}{{ with first . }}{{ .Labels.outcome }} (trunk {{ .Labels.trunk }}){{ end }}{{ end }}.',
    )
    alert(
        "VobizWebhookDeliveryDelay",
        f"trunk:vobiz_webhook_delivery_delay_seconds:p95_rate15m > {num(w['delivery_delay_p95_seconds'])}\n"
        f"and on (trunk) trunk:vobiz_webhook_delivery_delay_seconds_count:rate15m > {num(v['deliveries_per_s_5m'])}\n",
        "10m",
        "warning",
        "provider",
        "Vobiz webhooks for trunk {{ $labels.trunk }} arrive late",
        "95th percentile delivery delay (receive time minus the signed Timestamp) on trunk {{ $labels.trunk }} "
        f"is {{{{ $value | humanizeDuration }}}} over the last 15m (threshold {num(w['delivery_delay_p95_seconds'])}s).",
    )

    # --- the exporter itself
    alert(
        "VobizDedupeErrors",
        "sum by (job, instance) (rate(vobiz_dedupe_errors_total[5m])) * 60 > 0",
        "5m",
        "warning",
        "exporter",
        "vobiz-exporter de-duplication store fails",
        "vobiz-exporter {{ $labels.instance }} counts {{ $value | humanize }} de-duplication store errors per "
        "minute: events may double count (on_error: accept) or be refused (on_error: reject).",
    )
    alert(
        "VobizConfigReloadFailed",
        "max by (job, instance) (vobiz_config_last_reload_successful) == 0",
        "5m",
        "warning",
        "exporter",
        "vobiz-exporter failed to reload its configuration",
        "vobiz-exporter {{ $labels.instance }} runs an older configuration: its last reload failed "
        "(vobiz_config_last_reload_successful = {{ $value | humanize }}).",
    )
    alert(
        "VobizExporterDown",
        'up{job="vobiz-exporter"} == 0',
        "5m",
        "warning",
        "exporter",
        "A vobiz-exporter replica is down",
        "Prometheus cannot scrape vobiz-exporter at {{ $labels.instance }} (up = {{ $value | humanize }}); "
        "the other replicas still carry the webhooks behind the load balancer.",
    )
    alert(
        "VobizExporterDown",
        'sum(up{job="vobiz-exporter"}) == 0\nor\nabsent(up{job="vobiz-exporter"})\n',
        "5m",
        "critical",
        "exporter",
        "Every vobiz-exporter replica is down or not scraped",
        "No vobiz-exporter replica is scraped successfully (value {{ $value | humanize }}): call metrics and "
        "every other Vobiz alert are blind.",
    )
    return out


def failure_causes() -> list[str]:
    groups = ("dialler", "caller_id", "account", "provider", "carrier", "destination", "media")
    return sorted({c for g in groups for c in causes_of(g)})


# --- YAML output ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)

HEADER = """\
# GENERATED by prometheus/generate_rules.py from prometheus/thresholds.yaml: do not edit by hand.
# Change a threshold (or runbook_base_url) in prometheus/thresholds.yaml, then run
#   python prometheus/generate_rules.py && python grafana/generate_dashboards.py
"""

RECORDING_DOC = """\
#
# Recording rules, named level:metric:operation (https://prometheus.io/docs/practices/rules/).
# Replica-safe (docs/contract.md): counters and histograms are summed by trunk; gauges every replica
# exports alike (limits, budget, last event time, calls_active with Redis) take max by trunk.
# KPIs (TELECOM.md) count both sides at hangup, so no ratio reads above 100% while a campaign
# winds down: ASR = answered / Hangups, NER = (answered + user outcomes) / Hangups (the exporter
# counts vobiz_calls_effective_total), ABR = answered / (Hangups + admission rejections).
# A ratio over an idle trunk is NaN (0/0): it compares false in every alert and is a gap on a graph.
"""

ALERTS_DOC = """\
#
# Alert rules; they read the recording rules, so load both files. Labels: severity (critical
# pages, warning notifies), owner (the "who acts" group of TELECOM.md, used for routing), and
# kind="kpi" on the call-quality alerts that exporter-down and silence inhibit. Every ratio alert
# has a minimum-volume guard. Runbooks: docs/runbooks.md (one section per alert).
"""


def render(rules: list[dict[str, Any]], group: str, doc: str) -> str:
    body = yaml.dump(
        {"groups": [{"name": group, "rules": rules}]}, Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True
    )
    return HEADER + doc + body


def render_all(t: dict[str, Any] | None = None) -> dict[str, str]:
    """File name -> text of every rule file, the destinations rules included (one command)."""
    t = t or load_thresholds()
    sys.path.insert(0, str(PROM_DIR))
    import destinations_rules  # prometheus/destinations_rules.py (issue 13)

    return {
        RECORDING_FILE: render(recording_rules(), "vobiz.recording", RECORDING_DOC),
        ALERTS_FILE: render(alert_rules(t), "vobiz.alerts", ALERTS_DOC),
        DESTINATIONS_FILE: destinations_rules.render(t),
    }


def main(argv: list[str] | None = None) -> int:
    """Rewrite prometheus/rules/*.rules.yml, or with ``--check`` exit 1 if one is stale."""
    return generated_files.main(__doc__, render_all, RULES_DIR, "python prometheus/generate_rules.py", argv)


if __name__ == "__main__":
    sys.exit(main())
