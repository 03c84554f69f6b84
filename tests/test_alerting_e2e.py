"""End to end: real Prometheus and Alertmanager, the shipped rules and routing, the simulator's traffic.

- ``normal`` (user declines, cancels after ringing, 2% no_routes) delivers nothing;
- ``rejection-spike`` (balance, KYC, CLI, rate-limit and no-route rejections) pages exactly once
  for the hot trunk (VobizInsufficientBalance; the generic spike and the ASR alert are inhibited or
  excluded), with warnings to chat;
- ``outage`` (the hot trunk's seized calls fail with provider/carrier codes) gives one critical
  page, VobizTrunkOutage, naming the trunk; its symptoms (provider/carrier shares, low NER) are
  inhibited.

Real processes on loopback, each on free ports and stopped by PID: the exporter, ``vobiz-exporter
simulate``, Prometheus (Debian ``prometheus``) evaluating test copies of the shipped rule files, and
Alertmanager (Debian ``prometheus-alertmanager``) with the shipped routing, sending webhooks to a
small HTTP receiver inside the test.

The test copies keep every expression byte for byte; only ``for:`` is shortened, by a constant
factor (one minute of production is one second here), so the relative order of the tiers holds.
Prometheus scrapes and evaluates every second. Alertmanager keeps the example's routes, grouping
and inhibit rules; only the receivers' URLs (``/pager`` and ``/chat`` on the test receiver) and the
group timers (1 s) change.

Rate windows (5m, 15m) hold only the test's few seconds of data, so a rate reads as "calls in the
window / window length": the volume guards are met by call counts (15 attempts for 5m, 90 admitted
calls for 15m), and the normal run checks that it met them, so its silence is a real "no".
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from .am_util import ReceivedAlert, WebhookReceiver, run_alerting_stack
from .procs import Exporter, Proc, run_simulator, wait_until
from .procs import finish_simulator as finish
from .prom_util import (
    FOR_SCALE,
    Prometheus,
    duration_seconds,
    longest_for,
    rule_file_rules,
    rules_health,
    sample_value,
    wait_scraped,
    write_test_rules,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RULE_FILES = (
    ROOT / "prometheus/rules/vobiz-recording.rules.yml",
    ROOT / "prometheus/rules/vobiz-alerts.rules.yml",
    ROOT / "prometheus/rules/vobiz-destinations.rules.yml",
)

ALPHA_ID = "0a1b2c3d-alfa-4e5f-8a9b-000000000001"
BRAVO_ID = "0a1b2c3d-brav-4e5f-8a9b-000000000002"
ENV = {
    "E2E_ALERT_ALPHA_SECRET": "alpha-alerting-secret-0123456789",
    "E2E_ALERT_BRAVO_SECRET": "bravo-alerting-secret-9876543210",
}
RAW_CONFIG: dict[str, Any] = {
    "trunks": [
        {
            "name": "alpha",
            "id": ALPHA_ID,
            "secret_env": "E2E_ALERT_ALPHA_SECRET",
            "max_concurrent_calls": 30,
            "cps_limit": 5,
            "hourly_budget": {"amount": 500, "currency": "INR"},
        },
        {
            "name": "bravo",
            "id": BRAVO_ID,
            "secret_env": "E2E_ALERT_BRAVO_SECRET",
            "max_concurrent_calls": 30,
            "cps_limit": 5,
            "hourly_budget": {"amount": 20, "currency": "USD"},
        },
    ]
}
HOT, OTHER = "alpha", "bravo"  # rejection-spike hits the first configured trunk

SPIKE_RATE, SPIKE_SECONDS = "4", "30"  # 2 calls/s per trunk: 15 attempts (the 5m guard) in ~8 s
NORMAL_RATE, NORMAL_SECONDS = "16", "30"  # 8 calls/s per trunk: > 90 admitted (the 15m guards)
OUTAGE_RATE, OUTAGE_SECONDS = "12", "30"  # 6 calls/s per trunk: > 90 Hangups (the 15m guards) in ~15 s
ROUTES = {("critical", None): "/pager", ("warning", "provider"): "/provider", ("warning", "carrier"): "/provider"}
ALERT_TIMEOUT = 90.0  # bound for the spike alert to reach the receiver
NOTIFY_SLACK = 5.0  # evaluation (1 s) + Alertmanager group_wait (1 s) + delivery, with margin


@pytest.fixture(scope="module")
def test_rules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_test_rules(tmp_path_factory.mktemp("rules"), RULE_FILES)


# --- the stack -------------------------------------------------------------------------------------


@contextmanager
def alerting_stack(tmp_path: Path, rule_files: list[Path]) -> Iterator[tuple[WebhookReceiver, Exporter, Prometheus]]:
    """Receiver, Alertmanager, exporter and Prometheus (scraping, then evaluating and alerting)."""
    with run_alerting_stack(tmp_path, RAW_CONFIG, ENV, rule_files) as (receiver, exp, prom):
        check_rules_loaded(prom)
        yield receiver, exp, prom


def check_rules_loaded(prom: Prometheus) -> None:
    """Prometheus runs every shipped rule, with the shortened hold durations."""
    loaded = [r for g in prom.rules() for r in g["rules"]]
    shipped = [r for path in RULE_FILES for r in rule_file_rules(path)]
    assert sorted((r["name"], r["type"], r.get("duration", 0)) for r in loaded) == sorted(
        (
            r.get("alert") or r.get("record"),
            "alerting" if "alert" in r else "recording",
            duration_seconds(r["for"]) / FOR_SCALE if "for" in r else 0,
        )
        for r in shipped
    )


def simulate(
    exp: Exporter, tmp_path: Path, scenario: str, rate: str, duration: str, seed: int
) -> AbstractContextManager[Proc]:
    return run_simulator(exp, tmp_path, scenario, rate, duration, seed, env=ENV)


def route_of(alert: ReceivedAlert) -> str:
    """The receiver path the shipped routes pick: critical pages, provider/carrier warnings, chat."""
    if alert.labels["severity"] == "critical":
        return "/pager"
    return ROUTES.get(("warning", alert.labels.get("owner")), "/chat")


KPIS = ("trunk:vobiz_call_asr:ratio_rate5m", "trunk:vobiz_call_ner:ratio_rate5m", "trunk:vobiz_call_abr:ratio_rate15m")


def kpis(prom: Prometheus) -> dict[str, dict[str, float]]:
    """ASR, NER (5m) and ABR (15m) per trunk as Prometheus records them now."""
    out: dict[str, dict[str, float]] = {}
    for expr in KPIS:
        name = expr.split(":")[1].removeprefix("vobiz_call_")
        for series in prom.query(expr):
            out.setdefault(series["metric"]["trunk"], {})[name] = round(sample_value(series), 3)
    return out


def describe(alerts: list[ReceivedAlert]) -> list[tuple[str, str, str, str, str]]:
    return [
        (a.path, a.status, a.labels.get("alertname", ""), a.labels.get("trunk", ""), a.labels.get("severity", ""))
        for a in alerts
    ]


# --- tests -----------------------------------------------------------------------------------------


def test_rejection_spike_pages_once_for_the_hot_trunk(tmp_path: Path, test_rules: list[Path]) -> None:
    started = time.monotonic()
    with alerting_stack(tmp_path, test_rules) as (receiver, exp, prom):
        assert receiver.received() == [], describe(receiver.received())
        with simulate(exp, tmp_path, "rejection-spike", SPIKE_RATE, SPIKE_SECONDS, seed=61) as sim:
            sim_started = time.monotonic()
            try:
                page = receiver.wait_for(
                    lambda a: (
                        a.status == "firing"
                        and a.labels.get("alertname") == "VobizInsufficientBalance"
                        and a.labels.get("trunk") == HOT
                    ),
                    ALERT_TIMEOUT,
                )
            except TimeoutError as exc:
                raise AssertionError(
                    f"{exc}\nPrometheus alerts: {prom.alerts()}\nrule errors: {rules_health(prom)}\n"
                    f"rejections: {prom.query('trunk_reason:vobiz_call_rejections:increase5m')}\n"
                    f"simulator: {sim.log()[-2000:]}"
                ) from None
            time_to_alert = page.received_at - sim_started
            # Warnings of the same spike (compliance, rate limit) reach the chat route.
            compliance = receiver.wait_for(
                lambda a: (
                    a.status == "firing"
                    and a.labels.get("alertname") == "VobizComplianceRejections"
                    and a.labels.get("trunk") == HOT
                ),
                max(NOTIFY_SLACK, ALERT_TIMEOUT - time_to_alert),
            )
            # Longest shortened for: plus evaluation and notification: every alert the spike raises
            # has fired and been delivered (or inhibited) by then.
            time.sleep(longest_for(RULE_FILES) + NOTIFY_SLACK)
            firing_in_prom = {
                (a["labels"]["alertname"], a["labels"].get("trunk")) for a in prom.alerts() if a["state"] == "firing"
            }
            rule_errors = rules_health(prom)
            measured = kpis(prom)

        assert page.path == "/pager", describe([page])
        assert page.labels["severity"] == "critical"
        assert page.annotations["summary"] == f"Vobiz account balance exhausted (trunk {HOT})"
        assert page.annotations["runbook_url"].endswith("/docs/runbooks.md#vobizinsufficientbalance")
        assert compliance.path == "/chat" and compliance.labels["severity"] == "warning", describe([compliance])
        received = receiver.received()
        # Exactly one page for the hot trunk: balance, nothing else critical.
        pages = {(a.labels["alertname"], a.labels.get("trunk")) for a in received if a.path == "/pager"}
        assert pages == {("VobizInsufficientBalance", HOT)}, describe(received)
        # Reasons with their own alert never raise the generic spike.
        assert ("VobizCallRejectionSpike", HOT) not in firing_in_prom
        assert all(a.path == route_of(a) for a in received), describe(received)
        # The other trunk carried normal traffic: it raised no alert of any kind.
        assert [a for a in received if a.labels.get("trunk") == OTHER] == [], describe(received)
        assert [a for a in received if a.labels.get("trunk") is None] == [], describe(received)
        # Grouping as shipped: one notification per alertname and trunk, sent to its route's receiver.
        notes = receiver.snapshot()
        assert [(n.path, n.body["receiver"], sorted(n.body["groupLabels"])) for n in notes] == [
            (n.path, n.path.lstrip("/"), ["alertname", "trunk"]) for n in notes
        ]
        assert rule_errors == []
        assert not receiver.errors, receiver.errors
    print(
        f"\nalerting e2e (spike): VobizInsufficientBalance{{trunk={HOT}}} reached /pager "
        f"{time_to_alert:.1f}s after the simulator started; alerts received: "
        f"{sorted({(a.labels['alertname'], a.labels['trunk'], a.path) for a in received})}; KPIs {measured}; "
        f"test {time.monotonic() - started:.1f}s"
    )


def test_outage_pages_critical_naming_the_trunk(tmp_path: Path, test_rules: list[Path]) -> None:
    started = time.monotonic()
    with alerting_stack(tmp_path, test_rules) as (receiver, exp, prom):
        with simulate(exp, tmp_path, "outage", OUTAGE_RATE, OUTAGE_SECONDS, seed=63) as sim:
            sim_started = time.monotonic()
            try:
                page = receiver.wait_for(
                    lambda a: a.status == "firing" and a.labels.get("alertname") == "VobizTrunkOutage", ALERT_TIMEOUT
                )
            except TimeoutError as exc:
                raise AssertionError(
                    f"{exc}\nPrometheus alerts: {prom.alerts()}\nrule errors: {rules_health(prom)}\n"
                    f"NER: {prom.query('trunk:vobiz_call_ner:ratio_rate5m')}\n"
                    f"simulator: {sim.log()[-2000:]}"
                ) from None
            time_to_page = page.received_at - sim_started

            # The symptoms (15m shares, for: 10m -> 10 s) fire too, later; Alertmanager inhibits them.
            def firing() -> set[tuple[str, str | None]]:
                return {
                    (a["labels"]["alertname"], a["labels"].get("trunk"))
                    for a in prom.alerts()
                    if a["state"] == "firing"
                }

            symptoms = {("VobizProviderErrors", HOT), ("VobizCarrierErrors", HOT), ("VobizLowNER", HOT)}
            wait_until(
                lambda: symptoms <= firing(),
                ALERT_TIMEOUT,
                interval=0.5,
                what=f"outage symptoms firing in Prometheus: {prom.alerts()}",
            )
            time.sleep(NOTIFY_SLACK)
            firing_in_prom = firing()
            measured = kpis(prom)
            rule_errors = rules_health(prom)
            finish(sim, OUTAGE_SECONDS)

        assert (page.path, page.labels["trunk"], page.labels["severity"]) == ("/pager", HOT, "critical")
        assert page.annotations["summary"] == f"Vobiz trunk {HOT} is failing nearly every call"
        assert re.search(r"Dominant failure group: (provider|carrier) \(\d", page.annotations["description"]), (
            page.annotations
        )
        assert re.search(
            r"top cause: (network_error|internal_error|routing_error|request_timeout|"
            r"internal_server_error_from_carrier|network_congestion_from_carrier)\.",
            page.annotations["description"],
        ), page.annotations
        # The symptoms fired in Prometheus but were inhibited: one page, nothing to chat or provider.
        assert symptoms <= firing_in_prom, firing_in_prom
        received = receiver.received()
        assert {(a.path, a.labels["alertname"], a.labels.get("trunk")) for a in received} == {
            ("/pager", "VobizTrunkOutage", HOT)
        }, describe(received)
        assert measured[HOT]["ner"] < 0.5 and measured[OTHER]["ner"] > 0.9, measured
        assert rule_errors == []
        assert not receiver.errors, receiver.errors
    print(
        f"\nalerting e2e (outage): VobizTrunkOutage{{trunk={HOT}}} reached /pager {time_to_page:.1f}s after "
        f"the simulator started (for: 3m shortened to 3s); firing in Prometheus: {sorted(firing_in_prom)}; "
        f"KPIs {measured}; test {time.monotonic() - started:.1f}s"
    )


def test_normal_traffic_delivers_no_alert(tmp_path: Path, test_rules: list[Path]) -> None:
    started = time.monotonic()
    with alerting_stack(tmp_path, test_rules) as (receiver, exp, prom):
        stack_ready = time.time()
        with simulate(exp, tmp_path, "normal", NORMAL_RATE, NORMAL_SECONDS, seed=62) as sim:
            finish(sim, NORMAL_SECONDS)
        wait_scraped(prom, exp)
        # The volume guards are met on both trunks: every ratio alert really compared its ratio.
        guards = {
            "trunk:vobiz_call_attempts:rate5m": 0.05,
            "trunk:vobiz_call_attempts_rejected:rate5m": None,
            "trunk:vobiz_calls_ended:rate5m": 0.05,
            "trunk:vobiz_calls_ended:rate15m": 0.1,
            "trunk:vobiz_calls_answered:rate15m": 0.05,
            "trunk:vobiz_call_mos_count:rate15m": 0.05,
            "trunk:vobiz_call_jitter_seconds_count:rate15m": 0.05,
        }
        volumes: dict[str, dict[str, float]] = {}
        for expr, guard in guards.items():
            volumes[expr] = {s["metric"]["trunk"]: sample_value(s) for s in prom.query(expr)}
            if guard is not None:
                assert all(volumes[expr].get(t, 0) > guard for t in (HOT, OTHER)), (expr, volumes[expr])
        guards_met = time.monotonic()
        # Longest shortened for: (15 s) plus evaluation and notification: anything the end of the
        # run would trigger has fired and been delivered by then.
        time.sleep(max(0.0, guards_met + longest_for(RULE_FILES) + NOTIFY_SLACK - time.monotonic()))

        received = receiver.received()
        active = [(a["labels"]["alertname"], a["labels"].get("trunk"), a["state"]) for a in prom.alerts()]
        window = max(1, round(time.time() - stack_ready) + 5)
        ever = sorted(
            {
                (s["metric"]["alertname"], s["metric"].get("trunk", ""), s["metric"]["alertstate"])
                for s in prom.query(f"max_over_time(ALERTS[{window}s])")
            }
        )
        values = {
            name: prom.query(name)
            for name in (
                "trunk:vobiz_call_rejection_ratio:rate5m",
                "trunk:vobiz_call_ner:ratio_rate15m",
                "trunk_group:vobiz_calls_ended_by_group:ratio_rate15m",
                "trunk:vobiz_call_mos_below_3_6:ratio_rate15m",
                "trunk:vobiz_call_jitter_seconds:p95_rate15m",
                "trunk:vobiz_call_capacity_utilization:ratio",
            )
        }
        measured = kpis(prom)
        context = f"\nalerts now: {active}\nALERTS during the run: {ever}\nKPIs: {values}"
        assert describe(received) == [], f"normal traffic delivered alerts{context}"
        assert active == [], f"alerts pending or firing at the end of the normal run{context}"
        assert [a for a in ever if a[2] == "firing"] == [], context
        assert rules_health(prom) == []
        assert not receiver.errors, receiver.errors
    assert all(0.9 < measured[t]["ner"] <= 1 and 0 < measured[t]["asr"] <= 1 for t in (HOT, OTHER)), measured
    print(
        f"\nalerting e2e (normal): no alert delivered; pending at some point: {ever}; "
        f"volumes {volumes}; KPIs {measured}; test {time.monotonic() - started:.1f}s"
    )
