"""End to end: every panel of both bundled dashboards shows data from a real Prometheus.

One exporter (two trunks with limits and budgets) is fed by ``vobiz-exporter simulate``; one real
Prometheus (``--enable-feature=exemplar-storage``) scrapes it every second. Every target
expression of every panel, with Grafana's variables substituted (trunk = All, each trunk alone,
and both as a multi-value selection), is evaluated through the HTTP API: each must answer
``success`` with at least one series.

Phases, in one Prometheus so the whole file stays fast:
1. ``normal`` traffic: every expression except the few listed in MAY_BE_EMPTY_UNDER_NORMAL,
   plus a baseline showing the scenario-only signals are zero under normal traffic;
2. a handful of bad requests sent by hand (wrong/missing signature, unknown trunk, malformed,
   stale, duplicate, wrong method, a rotated secret, an invalid MOS): the webhook-health panels
   and "Invalid fields dropped per second" show them;
3. ``rejection-spike`` on ``demo`` and ``poor-quality`` on ``backup`` at once: balance and KYC
   rejections, MOS below 3.1 and jitter over 30 ms appear on their panels;
4. ``near-capacity`` on ``demo``: while it runs, "Concurrency used" reaches 90%.
Finally, at least one exemplar is stored for ``vobiz_call_mos_bucket``.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from collections.abc import Iterable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.protocol import SIGNATURE_HEADER

from .dashboards_util import MAY_BE_EMPTY_UNDER_NORMAL, Extracted, all_expressions
from .helpers import call_initiated, hangup, signed
from .procs import Exporter, Proc, run_exporter, run_simulator
from .procs import finish_simulator as finish
from .prom_util import Prometheus, PromQueryError, Series, run_prometheus, sample_value, scrape_job

pytestmark = pytest.mark.e2e

DEMO_ID = "5f2c1e0a-demo-4d1b-9a6e-000000000001"
BACKUP_ID = "7a9d3b2c-0b0b-4c3d-8e4f-000000000002"
DEMO_SECRET = "demo-signing-secret-change-me"
DEMO_OLD_SECRET = "demo-signing-secret-rotated-out"
BACKUP_SECRET = "backup-signing-secret-0123456789"
ENV = {"E2E_DEMO_OLD_SECRET": DEMO_OLD_SECRET, "E2E_BACKUP_SECRET": BACKUP_SECRET}
DEMO_LIMIT = 30

RAW_CONFIG: dict[str, Any] = {
    "trunks": [
        {  # config.example.yaml's demo trunk, plus a rotated-out previous secret
            "name": "demo",
            "id": DEMO_ID,
            "secret": DEMO_SECRET,
            "previous_secrets_env": ["E2E_DEMO_OLD_SECRET"],
            "max_concurrent_calls": DEMO_LIMIT,
            "cps_limit": 2,
            "hourly_budget": {"amount": 500, "currency": "INR"},
        },
        {
            "name": "backup",
            "id": BACKUP_ID,
            "secret_env": "E2E_BACKUP_SECRET",
            "max_concurrent_calls": 12,
            "cps_limit": 5,
            "hourly_budget": {"amount": 20, "currency": "USD"},
        },
    ]
}
TRUNKS = ("demo", "backup")
# Grafana's values of $trunk: All (allValue .*), each trunk alone, and a multi-value selection
# (Grafana renders a multi-value Prometheus variable as a regex alternation).
TRUNK_SELECTIONS: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("All", None),
    ("demo", "demo"),
    ("backup", "backup"),
    ("demo|backup", TRUNKS),
)
SIM_RATE = "20"
NORMAL_SECONDS = "15"
SCENARIO_SECONDS = "10"
SCRAPE_WAIT = 15.0
BAD_OUTCOMES = (
    "invalid_signature",
    "missing_signature",
    "unknown_trunk",
    "malformed",
    "stale",
    "duplicate",
    "method_not_allowed",
)


# --- helpers ---------------------------------------------------------------------------------


def panel_expr(uid: str, title: str, ref_id: str = "A", trunk: str | None = None) -> Extracted:
    """The one target of a panel, variables substituted (trunk None = All)."""
    found = [e for e in all_expressions(trunk) if (e.dashboard_uid, e.panel_title, e.ref_id) == (uid, title, ref_id)]
    assert len(found) == 1, f"{uid} / {title!r} target {ref_id}: found {len(found)} targets"
    return found[0]


def where(e: Extracted, selection: str) -> str:
    return (
        f"dashboard {e.dashboard_uid}, panel {e.panel_title!r} (id {e.panel_id}, target {e.ref_id}, trunk={selection})"
    )


def evaluate(prom: Prometheus, e: Extracted, selection: str) -> list[Series]:
    try:
        return prom.query(e.expr)
    except PromQueryError as exc:
        raise AssertionError(f"{where(e, selection)}: {exc}") from None


def check_every_panel(prom: Prometheus, phase: str, skip: Iterable[tuple[str, str]] = ()) -> int:
    """Every target under every trunk selection answers success with >= 1 series.

    Collects every failure before asserting, so one run names every empty panel.
    """
    skipped = set(skip)
    failures: list[str] = []
    checked = 0
    for selection, trunk in TRUNK_SELECTIONS:
        for e in all_expressions(trunk):
            if (e.dashboard_uid, e.panel_title) in skipped:
                continue
            checked += 1
            status, body = prom.query_raw(e.expr)
            if status != 200 or body.get("status") != "success":
                failures.append(f"{where(e, selection)}: HTTP {status} {body.get('error')}\n    expr: {e.expr}")
                continue
            data = body["data"]
            if data["resultType"] in ("vector", "matrix") and not data["result"]:
                failures.append(f"{where(e, selection)}: no series\n    expr: {e.expr}")
    assert not failures, f"after {phase}: {len(failures)} of {checked} panel queries failed:\n" + "\n".join(failures)
    return checked


def by_label(series: list[Series], label: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): sample_value(s) for s in series}


def only_value(series: list[Series], what: str) -> float:
    assert len(series) == 1, f"{what}: expected one series, got {series}"
    return sample_value(series[0])


def exporter_total(exp: Exporter, name: str) -> float:
    """Sum of every sample of a counter family as the exporter exposes it now."""
    total = 0.0
    for family in text_string_to_metric_families(exp.scrape()):
        for s in family.samples:
            if s.name == name:
                total += s.value
    return total


def wait_scraped(prom: Prometheus, exp: Exporter) -> None:
    """Prometheus holds the exporter's current count of webhook requests (all answered)."""
    want = exporter_total(exp, "vobiz_webhook_requests_total")
    prom.wait_for(
        "sum(vobiz_webhook_requests_total)",
        SCRAPE_WAIT,
        lambda r: bool(r) and sample_value(r[0]) == want,
    )


def simulate(
    exp: Exporter, tmp_path: Path, scenario: str, duration: str, seed: int, trunk: str | None = None
) -> AbstractContextManager[Proc]:
    return run_simulator(exp, tmp_path, scenario, SIM_RATE, duration, seed, env=ENV, trunk=trunk)


def post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, str]:
    req = urllib.request.Request(url, data=body if method == "POST" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())["outcome"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())["outcome"]


# --- phases ----------------------------------------------------------------------------------


def send_bad_requests(exp: Exporter, prom: Prometheus) -> None:
    """What the simulator never sends, so the webhook-health panels have something to show."""
    demo = f"{exp.webhook_url}/webhook/demo"
    first = call_initiated(trunk_id=DEMO_ID)
    body, headers = signed(first, DEMO_OLD_SECRET)
    assert post(demo, body, headers) == (200, "accepted")  # rotated secret: counted, accepted
    assert post(demo, body, headers) == (200, "duplicate")
    body, headers = signed(call_initiated(trunk_id=DEMO_ID), DEMO_SECRET)
    assert post(demo, body, {**headers, SIGNATURE_HEADER: "ab" * 32}) == (401, "invalid_signature")
    assert post(demo, body, {k: v for k, v in headers.items() if k != SIGNATURE_HEADER}) == (
        401,
        "missing_signature",
    )
    assert post(f"{exp.webhook_url}/webhook/nope", body, headers) == (404, "unknown_trunk")
    assert post(demo, *signed(b'{"Event": "Hangup"}', DEMO_SECRET)) == (400, "malformed")
    assert post(demo, *signed(call_initiated(trunk_id=DEMO_ID, ts=time.time() - 3600), DEMO_SECRET)) == (400, "stale")
    assert post(demo, b"", {"User-Agent": "Vobiz-Vapor/1.0"}, method="GET") == (405, "method_not_allowed")

    # An invalid MOS drops the field and still counts the call, on each trunk. The series is
    # born at 1 on the first one; a second one after a scrape makes rate() see an increase.
    def bad_mos_hangups() -> None:
        for name, trunk_id, secret in (("demo", DEMO_ID, DEMO_SECRET), ("backup", BACKUP_ID, BACKUP_SECRET)):
            payload = hangup(call_uuid=str(uuid.uuid4()), trunk_id=trunk_id, mos=7.5)
            assert post(f"{exp.webhook_url}/webhook/{name}", *signed(payload, secret)) == (200, "accepted")

    invalid_mos = 'count(vobiz_event_invalid_fields_total{field="mos"} == {n})'
    bad_mos_hangups()
    prom.wait_for(invalid_mos.replace("{n}", "1"), SCRAPE_WAIT, lambda r: bool(r) and sample_value(r[0]) == 2)
    bad_mos_hangups()
    prom.wait_for(invalid_mos.replace("{n}", "2"), SCRAPE_WAIT, lambda r: bool(r) and sample_value(r[0]) == 2)
    wait_scraped(prom, exp)


def test_every_panel_has_data(tmp_path: Path) -> None:
    started = time.monotonic()
    with ExitStack() as stack:
        exp = stack.enter_context(run_exporter(tmp_path, RAW_CONFIG, env=ENV))
        prom = stack.enter_context(
            run_prometheus(
                tmp_path,
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [scrape_job("vobiz-exporter", f"127.0.0.1:{exp.metrics_port}")],
                },
            )
        )
        prom.wait_for_targets_up()
        run_started = time.time()

        # The trunk variable's query, label_values(vobiz_trunk_info, trunk), lists both trunks.
        status, body = prom.api("label/trunk/values", {"match[]": "vobiz_trunk_info"})
        assert (status, sorted(body["data"])) == (200, sorted(TRUNKS)), body

        # 0. before the first event: "time since last event" is blank, never ~55 years ----------
        prom.wait_for("count(vobiz_last_event_timestamp_seconds == 0)", SCRAPE_WAIT, lambda r: bool(r))
        for title, ref in (("Time since last event", "A"),):
            age = panel_expr("vobiz-overview", title, ref)
            assert evaluate(prom, age, "All") == [], f"{where(age, 'All')}: shows a value before any event"
        status_age = next(e for e in all_expressions() if e.panel_title == "Trunk status" and e.ref_id == "G")
        assert evaluate(prom, status_age, "All") == [], where(status_age, "All")

        # 1. normal traffic -------------------------------------------------------------------
        with simulate(exp, tmp_path, "normal", NORMAL_SECONDS, seed=101) as sim:
            finish(sim, NORMAL_SECONDS)
        wait_scraped(prom, exp)
        check_every_panel(prom, "normal traffic", skip=MAY_BE_EMPTY_UNDER_NORMAL)
        # Healthy traffic with declines and cancels after ringing is green on the board's NER.
        ner_panel = panel_expr("vobiz-overview", "NER by trunk")
        ner_now = by_label(evaluate(prom, ner_panel, "All"), "trunk")
        assert all(0.9 <= ner_now[t] <= 1.0 for t in TRUNKS), f"{where(ner_panel, 'All')}: {ner_now}"
        ages = by_label(evaluate(prom, status_age, "All"), "trunk")
        assert all(0 <= ages[t] < 120 for t in TRUNKS), ages
        # Baseline: the signals the scenarios add are absent under normal traffic, so the
        # scenario checks below measure the scenario, not the background.
        by_reason = panel_expr("vobiz-trunk-detail", "Rejections per second by reason", trunk="demo")
        reasons = by_label(evaluate(prom, by_reason, "demo"), "reason")
        assert all(reasons[r] == 0 for r in ("insufficient_balance", "kyc_required", "rate_limited")), (
            f"{where(by_reason, 'demo')} under normal: {reasons}"
        )
        below_31 = panel_expr("vobiz-trunk-detail", "Share of calls below MOS 3.6 and 3.1", "B", trunk="backup")
        assert only_value(evaluate(prom, below_31, "backup"), where(below_31, "backup")) == 0
        jitter = panel_expr("vobiz-trunk-detail", "Jitter p95 by trunk", trunk="backup")
        assert only_value(evaluate(prom, jitter, "backup"), where(jitter, "backup")) <= 0.03
        concurrency = panel_expr("vobiz-trunk-detail", "Concurrency used", trunk="demo")

        # 2. bad requests ---------------------------------------------------------------------
        send_bad_requests(exp, prom)
        outcomes_panel = panel_expr("vobiz-overview", "Webhook requests per second by outcome")
        outcomes = by_label(evaluate(prom, outcomes_panel, "All"), "outcome")
        assert all(outcomes[o] > 0 for o in BAD_OUTCOMES), f"{where(outcomes_panel, 'All')}: {outcomes}"
        rotated = panel_expr(
            "vobiz-trunk-detail", "Signature failures accepted and previous secrets used", "B", trunk="demo"
        )
        assert only_value(evaluate(prom, rotated, "demo"), where(rotated, "demo")) > 0
        invalid = panel_expr("vobiz-trunk-detail", "Invalid fields dropped per second", trunk="demo")
        assert by_label(evaluate(prom, invalid, "demo"), "field").get("mos", 0) > 0, where(invalid, "demo")
        check_every_panel(prom, "bad requests")

        # 3. rejection-spike on demo and poor-quality on backup, at once ----------------------
        with (
            simulate(exp, tmp_path, "rejection-spike", SCENARIO_SECONDS, seed=202, trunk="demo") as spike,
            simulate(exp, tmp_path, "poor-quality", SCENARIO_SECONDS, seed=303, trunk="backup") as poor,
        ):
            finish(spike, SCENARIO_SECONDS)
            finish(poor, SCENARIO_SECONDS)
        wait_scraped(prom, exp)
        check_every_panel(prom, "rejection-spike + poor-quality")
        reasons = by_label(evaluate(prom, by_reason, "demo"), "reason")
        assert reasons["insufficient_balance"] > 0 and reasons["kyc_required"] > 0, (
            f"{where(by_reason, 'demo')}: {reasons}"
        )
        ratio = panel_expr("vobiz-overview", "Rejection ratio by trunk")
        assert by_label(evaluate(prom, ratio, "All"), "trunk")["demo"] > 0.02, where(ratio, "All")
        assert only_value(evaluate(prom, below_31, "backup"), where(below_31, "backup")) > 0
        assert only_value(evaluate(prom, jitter, "backup"), where(jitter, "backup")) > 0.03

        # 4. near-capacity on demo: active calls are near the limit only while it runs ---------
        with simulate(exp, tmp_path, "near-capacity", SCENARIO_SECONDS, seed=404, trunk="demo") as near:
            try:
                peak = prom.wait_for(
                    concurrency.expr, float(SCENARIO_SECONDS), lambda r: bool(r) and sample_value(r[0]) >= 0.9
                )
            except TimeoutError as exc:
                raise AssertionError(f"{where(concurrency, 'demo')} never reached 0.9: {exc}") from None
            active = [
                panel_expr("vobiz-trunk-detail", "Active calls vs max_concurrent_calls", ref, "demo")
                for ref in ("A", "B")
            ]
            now_active, limit = (only_value(evaluate(prom, t, "demo"), where(t, "demo")) for t in active)
            finish(near, SCENARIO_SECONDS)
        assert sample_value(peak[0]) <= 1.0 and limit == DEMO_LIMIT
        assert now_active >= 0.9 * DEMO_LIMIT, f"{where(active[0], 'demo')}: {now_active} of {limit}"
        wait_scraped(prom, exp)
        check_every_panel(prom, "near-capacity")
        reasons = by_label(evaluate(prom, by_reason, "demo"), "reason")
        assert reasons["rate_limited"] > 0, f"{where(by_reason, 'demo')}: {reasons}"

        # Exemplars: the detail board's MOS panels ask for them; Prometheus stored some.
        stored = prom.exemplars('vobiz_call_mos_bucket{trunk=~".*"}', run_started - 5, time.time() + 1)
        exemplars = [x for series in stored for x in series["exemplars"]]
        assert exemplars, f"no exemplar stored for vobiz_call_mos_bucket: {stored}"
        assert all(re.fullmatch(r"[0-9a-f-]{36}", x["labels"]["call_uuid"]) for x in exemplars), exemplars[:3]
    print(f"\ndashboards e2e: {time.monotonic() - started:.1f}s")
