"""End to end: the destinations board has data, and the fraud scenario pages, through real processes.

Real processes on loopback, each on free ports and stopped by PID: ``vobiz-exporter serve`` with
``metrics.destinations`` enabled and an ``allowed`` list per trunk (the simulator's home mix,
``simulate.NORMAL_DESTINATIONS``), ``vobiz-exporter simulate``, Prometheus evaluating a test copy
of prometheus/rules/vobiz-destinations.rules.yml, and Alertmanager with the shipped routing
(prometheus/alertmanager.example.yml) sending webhooks to a receiver inside the test.

As in tests/test_alerting_e2e.py, the test copy keeps every expression byte for byte and shortens
only ``for:`` (one minute of production is one second here), and Prometheus scrapes and evaluates
every second. Rate windows (15m) hold only the test's seconds of data, so a rate reads as "calls
in the window / window length": the normal run checks that the volume guards are met, so its
silence is a real "no".

1. ``normal`` on both trunks: every target of the destinations board (trunk All, each trunk,
   both) answers with at least one series; only allowed countries are called; no destination
   alert fires or is delivered.
2. ``fraud`` on ``alpha``: VobizDisallowedDestination pages (critical, /pager) for alpha and the
   premium countries; the false answer supervision warnings (short calls, no-ring answers) reach
   the provider route; ``bravo`` (normal traffic) raises nothing. VobizNewDestinationSpend stays
   silent by design: it needs a day of history (promtool covers it, prometheus/tests/).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter import simulate as sim

from .am_util import ReceivedAlert, run_alerting_stack
from .dashboards_util import extract_expressions, load_dashboard
from .procs import finish_simulator as finish
from .procs import run_simulator
from .prom_util import Prometheus, longest_for, rules_health, sample_value, wait_scraped, write_test_rules

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus/rules/vobiz-destinations.rules.yml"
BOARD = ROOT / "grafana/dashboards/vobiz-destinations.json"

ALPHA_ID = "0a1b2c3d-alfa-4e5f-8a9b-000000000013"
BRAVO_ID = "0a1b2c3d-brav-4e5f-8a9b-000000000013"
ENV = {
    "E2E_DEST_ALPHA_SECRET": "alpha-destinations-secret-0123456789",
    "E2E_DEST_BRAVO_SECRET": "bravo-destinations-secret-9876543210",
}
ALLOWED = sorted(sim.NORMAL_DESTINATIONS)
RAW_CONFIG: dict[str, Any] = {
    "metrics": {
        "destinations": {"enabled": True, "max_countries": 50, "allowed": {"alpha": ALLOWED, "bravo": ALLOWED}}
    },
    "trunks": [
        {
            "name": "alpha",
            "id": ALPHA_ID,
            "secret_env": "E2E_DEST_ALPHA_SECRET",
            "max_concurrent_calls": 30,
            "cps_limit": 5,
            "hourly_budget": {"amount": 500, "currency": "INR"},
        },
        {
            "name": "bravo",
            "id": BRAVO_ID,
            "secret_env": "E2E_DEST_BRAVO_SECRET",
            "max_concurrent_calls": 30,
            "cps_limit": 5,
            "hourly_budget": {"amount": 20, "currency": "USD"},
        },
    ],
}
HOT, OTHER = "alpha", "bravo"  # fraud hits the first configured trunk
TRUNK_SELECTIONS: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("All", None),
    ("alpha", "alpha"),
    ("bravo", "bravo"),
    ("alpha|bravo", ("alpha", "bravo")),
)
FRAUD_ALERTS = ("VobizDisallowedDestination", "VobizShortCallsAboveBaseline", "VobizAnswersWithoutRinging")

RATE, SECONDS = "16", "30"  # 8 calls/s per trunk: > 18 answered calls (the 15m guard) per trunk
ALERT_TIMEOUT = 90.0
NOTIFY_SLACK = 5.0


def describe(alerts: list[ReceivedAlert]) -> list[tuple[str, str, str, str, str, str]]:
    return [
        (
            a.path,
            a.status,
            a.labels.get("alertname", ""),
            a.labels.get("trunk", ""),
            a.labels.get("country", ""),
            a.labels.get("severity", ""),
        )
        for a in alerts
    ]


def firing(alertname: str, trunk: str) -> Callable[[ReceivedAlert], bool]:
    def match(a: ReceivedAlert) -> bool:
        return a.status == "firing" and a.labels.get("alertname") == alertname and a.labels.get("trunk") == trunk

    return match


def check_every_target(prom: Prometheus, board: dict[str, Any], phase: str) -> int:
    failures: list[str] = []
    checked = 0
    for selection, trunk in TRUNK_SELECTIONS:
        for e in extract_expressions(board, trunk):
            checked += 1
            status, body = prom.query_raw(e.expr)
            if status != 200 or body.get("status") != "success":
                failures.append(f"{e.name} (trunk={selection}): HTTP {status} {body.get('error')}\n    {e.expr}")
            elif body["data"]["resultType"] in ("vector", "matrix") and not body["data"]["result"]:
                failures.append(f"{e.name} (trunk={selection}): no series\n    {e.expr}")
    assert not failures, f"after {phase}: {len(failures)} of {checked} queries failed:\n" + "\n".join(failures)
    return checked


def by_labels(series: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(s["metric"].get(label, "") for label in labels): sample_value(s) for s in series}


def test_destinations_board_and_fraud_alerts(tmp_path: Path) -> None:
    started = time.monotonic()
    board = load_dashboard(BOARD)
    rules = write_test_rules(tmp_path, (RULES,))
    with run_alerting_stack(tmp_path, RAW_CONFIG, ENV, rules) as (receiver, exp, prom):
        # 1. normal traffic ------------------------------------------------------------------------
        stack_ready = time.time()
        with run_simulator(exp, tmp_path, "normal", RATE, SECONDS, seed=131, env=ENV) as proc:
            finish(proc, SECONDS)
        wait_scraped(prom, exp)
        checked = check_every_target(prom, board, "normal traffic")

        countries = by_labels(
            prom.query("sum by (trunk, country) (vobiz_destination_attempts_total)"), "trunk", "country"
        )
        assert {c for (_, c) in countries} <= sim.NORMAL_DESTINATIONS, countries
        for trunk in (HOT, OTHER):
            total = sum(v for (t, _), v in countries.items() if t == trunk)
            assert countries[(trunk, "IN")] >= 0.8 * total, countries
        assert prom.query("sum(vobiz_destination_disallowed_total)") == [], "normal traffic called a disallowed country"
        # The guards are met on both trunks, and the FAS shares sit far under their thresholds.
        answered = by_labels(prom.query("sum by (trunk) (rate(vobiz_calls_answered_total[15m]))"), "trunk")
        assert all(answered[(t,)] > 0.02 for t in (HOT, OTHER)), answered
        short = by_labels(prom.query("trunk:vobiz_call_billable_under_6s:ratio_rate15m"), "trunk")
        no_ring = by_labels(prom.query("trunk:vobiz_calls_answered_no_ring:ratio_rate15m"), "trunk")
        assert all(short[(t,)] < 0.05 and no_ring[(t,)] == 0 for t in (HOT, OTHER)), (short, no_ring)
        guards_met = time.monotonic()
        time.sleep(max(0.0, guards_met + longest_for((RULES,)) + NOTIFY_SLACK - time.monotonic()))
        window = max(1, round(time.time() - stack_ready) + 5)
        ever = sorted(
            {
                (s["metric"]["alertname"], s["metric"].get("trunk", ""), s["metric"]["alertstate"])
                for s in prom.query(f"max_over_time(ALERTS[{window}s])")
            }
        )
        assert describe(receiver.received()) == [], f"normal traffic delivered alerts; ALERTS: {ever}"
        assert ever == [], f"destination alerts pending or firing under normal traffic: {ever}"
        assert rules_health(prom) == []

        # 2. fraud on alpha ------------------------------------------------------------------------
        with run_simulator(exp, tmp_path, "fraud", RATE, SECONDS, seed=132, env=ENV) as proc:
            fraud_started = time.monotonic()
            try:
                page = receiver.wait_for(firing("VobizDisallowedDestination", HOT), ALERT_TIMEOUT)
            except TimeoutError as exc:
                raise AssertionError(
                    f"{exc}\nalerts: {prom.alerts()}\nrule errors: {rules_health(prom)}\n"
                    f"disallowed: {prom.query('trunk_country:vobiz_destination_disallowed:increase10m')}\n"
                    f"simulator: {proc.log()[-2000:]}"
                ) from None
            time_to_page = page.received_at - fraud_started
            warnings = {name: receiver.wait_for(firing(name, HOT), ALERT_TIMEOUT) for name in FRAUD_ALERTS[1:]}
            finish(proc, SECONDS)
        time.sleep(NOTIFY_SLACK)
        wait_scraped(prom, exp)
        check_every_target(prom, board, "fraud")

        assert (page.path, page.labels["severity"], page.labels["owner"]) == ("/pager", "critical", "account")
        assert page.labels["country"] in sim.FRAUD_DESTINATIONS, page.labels
        assert page.annotations["summary"] == (
            f"Vobiz trunk {HOT} calls {page.labels['country']}, outside its allowed destinations"
        )
        assert page.annotations["runbook_url"].endswith("/docs/runbooks.md#vobizdisalloweddestination")
        for name, alert in warnings.items():
            # Warnings owned by the carrier go to the provider route of the shipped Alertmanager config.
            assert (alert.path, alert.labels["severity"], alert.labels["owner"]) == (
                "/provider",
                "warning",
                "carrier",
            ), describe([alert])
            assert alert.annotations["runbook_url"].endswith(f"#{name.lower()}")
        received = receiver.received()
        paged_countries = {
            a.labels["country"] for a in received if a.labels["alertname"] == "VobizDisallowedDestination"
        }
        assert paged_countries <= set(sim.FRAUD_DESTINATIONS) and len(paged_countries) >= 3, paged_countries
        assert {a.labels["alertname"] for a in received} == set(FRAUD_ALERTS), describe(received)
        assert [a for a in received if a.labels.get("trunk") != HOT] == [], describe(received)
        disallowed = by_labels(
            prom.query("sum by (trunk, country) (vobiz_destination_disallowed_total)"), "trunk", "country"
        )
        assert {t for (t, _) in disallowed} == {HOT} and {c for (_, c) in disallowed} == set(sim.FRAUD_DESTINATIONS)
        assert rules_health(prom) == []
        assert not receiver.errors, receiver.errors
    print(
        f"\ndestinations e2e: {checked} board queries with data under normal; VobizDisallowedDestination"
        f"{{trunk={HOT}}} reached /pager {time_to_page:.1f}s after fraud started; "
        f"pages for {sorted(paged_countries)};"
        f" test {time.monotonic() - started:.1f}s"
    )
