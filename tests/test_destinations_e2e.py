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

import copy
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter import simulate as sim

from .am_util import ReceivedAlert, WebhookReceiver, run_alertmanager, run_webhook_receiver
from .dashboards_util import extract_expressions, load_dashboard
from .procs import Exporter, run_exporter, run_simulator, wait_until
from .procs import finish_simulator as finish
from .prom_util import Prometheus, run_prometheus, sample_value, scrape_job

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "prometheus/rules/vobiz-destinations.rules.yml"
AM_EXAMPLE = ROOT / "prometheus/alertmanager.example.yml"
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

FOR_SCALE = 60
RATE, SECONDS = "16", "30"  # 8 calls/s per trunk: > 18 answered calls (the 15m guard) per trunk
ALERT_TIMEOUT = 90.0
SCRAPE_WAIT = 15.0
NOTIFY_SLACK = 5.0
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> float:
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def shortened(text: str) -> str:
    return f"{max(1, round(duration_seconds(text) / FOR_SCALE))}s"


def _rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["groups"] for rule in group["rules"]]


def write_test_rules(dest: Path) -> Path:
    """A copy of the shipped destination rules with every ``for:`` shortened, nothing else changed."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    test_doc = copy.deepcopy(doc)
    for rule in _rules(test_doc):
        if "for" in rule:
            rule["for"] = shortened(rule["for"])
    path = dest / RULES.name
    path.write_text(yaml.safe_dump(test_doc, sort_keys=False, width=10_000), encoding="utf-8")
    written = _rules(yaml.safe_load(path.read_text(encoding="utf-8")))
    shipped = _rules(doc)
    assert [{k: v for k, v in r.items() if k != "for"} for r in written] == [
        {k: v for k, v in r.items() if k != "for"} for r in shipped
    ]
    return path


def alertmanager_config(receiver: WebhookReceiver) -> dict[str, Any]:
    """The shipped example: routes, grouping and inhibit rules kept; receiver URLs and timers for the test."""
    example = yaml.safe_load(AM_EXAMPLE.read_text(encoding="utf-8"))
    config: dict[str, Any] = copy.deepcopy(example)
    for rcv in config["receivers"]:
        rcv.pop("slack_configs", None)
        rcv.pop("pagerduty_configs", None)
        rcv["webhook_configs"] = [{"url": receiver.url(f"/{rcv['name']}"), "send_resolved": True}]
    config["route"]["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    assert config["route"]["routes"] == example["route"]["routes"]
    assert config["inhibit_rules"] == example["inhibit_rules"]
    return config


@contextmanager
def stack(tmp_path: Path) -> Iterator[tuple[WebhookReceiver, Exporter, Prometheus]]:
    rules = write_test_rules(tmp_path)
    with ExitStack() as es:
        receiver = es.enter_context(run_webhook_receiver())
        am = es.enter_context(run_alertmanager(tmp_path, alertmanager_config(receiver)))
        exp = es.enter_context(run_exporter(tmp_path, RAW_CONFIG, env=ENV))
        prom = es.enter_context(
            run_prometheus(
                tmp_path,
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.host_port]}]}]},
                    "scrape_configs": [scrape_job("vobiz-exporter", f"127.0.0.1:{exp.metrics_port}")],
                },
            )
        )
        prom.wait_for_targets_up()
        # Rules are added after the first scrape (a config reload), as in test_alerting_e2e.py.
        config = yaml.safe_load(prom.config_path.read_text(encoding="utf-8"))
        config["rule_files"] = [str(rules.resolve())]
        prom.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        prom.proc.popen.send_signal(signal.SIGHUP)
        wait_until(
            lambda: (
                sum(len(g["rules"]) for g in prom.rules())
                == len(_rules(yaml.safe_load(RULES.read_text(encoding="utf-8"))))
            ),
            15,
            interval=0.2,
            what=f"rules loaded:\n{prom.log()}",
        )
        yield receiver, exp, prom


def wait_scraped(prom: Prometheus, exp: Exporter) -> None:
    want = sum(
        s.value
        for f in text_string_to_metric_families(exp.scrape())
        for s in f.samples
        if s.name == "vobiz_webhook_requests_total"
    )
    prom.wait_for("sum(vobiz_webhook_requests_total)", SCRAPE_WAIT, lambda r: bool(r) and sample_value(r[0]) == want)


def rules_health(prom: Prometheus) -> list[str]:
    return [f"{r['name']}: {r.get('lastError')}" for g in prom.rules() for r in g["rules"] if r.get("health") != "ok"]


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
    with stack(tmp_path) as (receiver, exp, prom):
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
        longest_for = (
            max(duration_seconds(r["for"]) for r in _rules(yaml.safe_load(RULES.read_text())) if "for" in r) / FOR_SCALE
        )
        time.sleep(max(0.0, guards_met + longest_for + NOTIFY_SLACK - time.monotonic()))
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
