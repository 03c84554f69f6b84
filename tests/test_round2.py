"""Round-2 decisions (docs/contract.md): hostile senders that poisoned sums, crossed trunks or
grew label sets, and the telecom metrics the boards and rules read. Each test would fail on the
code before this round."""

from __future__ import annotations

import json
import logging
import random
import time
import types
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter import logs
from exporter.app import RUNTIME, create_app
from exporter.config import Config, parse_config
from exporter.events import HANGUP_CAUSES, HANGUP_SOURCES, INVALID_FIELD_NAMES, OUTCOME_GROUPS

from .helpers import (
    ENV,
    SECRET_A,
    SECRET_B,
    TRUNK_A_ID,
    ClientFactory,
    call_initiated,
    ended,
    hangup,
    make_config,
    raw_config,
    signed,
    val,
)


async def post(
    client: Any, payload: dict[str, Any] | bytes, path: str = "/webhook/alpha", secret: str = SECRET_A
) -> tuple[int, str]:
    body, headers = signed(payload, secret)
    resp = await client.post(path, data=body, headers=headers)
    return resp.status, (await resp.json())["outcome"]


# Ten currency codes besides INR (alpha's budget currency): they fill the cap of observed codes.
TEN_CODES = ("USD", "EUR", "GBP", "AED", "SGD", "JPY", "AUD", "CAD", "CHF", "ZAR")


async def reloadable(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, tmp_path: Any, raw: dict[str, Any]
) -> tuple[Any, Callable[[], None]]:
    """A client whose config file is ``raw``; ``reload()`` writes ``raw`` as it is now and reloads."""
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(raw))
    app = create_app(make_config(), registry, config_path=str(path), env=ENV)

    def reload() -> None:
        path.write_text(json.dumps(raw))
        app[RUNTIME].reload()

    return await aiohttp_client(app), reload


def with_delhi(**sections: Any) -> Config:
    """alpha (id), bravo (GET, id) and delhi: no id, its own secret."""
    raw = raw_config(**sections)
    raw["trunks"].append({"name": "delhi", "secret_env": "SECRET_B"})
    return parse_config(raw, source="test.yaml", env=ENV)


# --- accounting ---------------------------------------------------------------------------------


async def test_a_hangup_on_one_trunk_never_closes_another_trunks_call(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(with_delhi(), registry))
    assert await post(client, call_initiated(call_uuid="shared-1")) == (200, "accepted")
    # The same CallUUID hung up on delhi: delhi's tombstone, alpha's call stays open.
    assert await post(client, hangup(call_uuid="shared-1", trunk_id=None), "/webhook/delhi", SECRET_B) == (
        200,
        "accepted",
    )
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 1.0
    assert val(registry, "vobiz_calls_active", trunk="delhi") == 0.0
    # ... and delhi's tombstone does not stop a late CallInitiated of that id on delhi only.
    assert await post(
        client, call_initiated(call_uuid="shared-1", trunk_id=None, RequestID="r2"), "/webhook/delhi", SECRET_B
    ) == (200, "accepted")
    assert val(registry, "vobiz_calls_active", trunk="delhi") == 0.0
    assert await post(client, hangup(call_uuid="shared-1")) == (200, "accepted")
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 0.0


async def test_huge_cost_and_jitter_never_poison_the_sums(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(make_config(), registry))
    for _ in range(2):
        assert await post(client, hangup(cost=1e308, jitter=1e308)) == (200, "accepted")
    assert await post(client, hangup(cost=1_000_000, jitter=10_000)) == (200, "accepted")
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="INR") == 1_000_000.0
    assert val(registry, "vobiz_call_cost_count", trunk="alpha", currency="INR") == 1.0
    assert val(registry, "vobiz_call_jitter_seconds_sum", trunk="alpha") == 10.0
    assert val(registry, "vobiz_event_invalid_fields_total", trunk="alpha", field="cost") == 2.0
    assert val(registry, "vobiz_event_invalid_fields_total", trunk="alpha", field="jitter") == 2.0
    assert ended(registry) == 3.0


async def test_a_budget_currency_added_by_reload_after_ten_codes_keeps_its_label(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, tmp_path: Any
) -> None:
    raw = raw_config()
    client, reload = await reloadable(aiohttp_client, registry, tmp_path, raw)
    for code in TEN_CODES:
        assert await post(client, hangup(currency=code, cost=1.0)) == (200, "accepted")
    assert await post(client, hangup(currency="BRL", cost=2.0)) == (200, "accepted")
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="other") == 2.0
    raw["trunks"][1]["hourly_budget"] = {"amount": 100, "currency": "BRL"}
    reload()
    assert val(registry, "vobiz_trunk_hourly_budget", trunk="bravo", currency="BRL") == 100.0
    assert await post(client, hangup(currency="BRL", cost=3.0)) == (200, "accepted")
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="BRL") == 3.0
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="other") == 2.0


async def test_calls_ended_label_sets_stay_within_the_documented_bound(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    """5,000 unsigned Hangups in report mode with random codes, names and sources: cause and
    category always agree, so at most (documented causes + 11) x 8 label sets per trunk."""
    client = await aiohttp_client(create_app(make_config(signature={"mode": "report"}), registry))
    rng = random.Random(7)
    names = ["Normal Hangup", "Busy Line", "Spam block", "nonsense", "", "Declined"]
    sources = ["Caller", "Callee", "Vobiz", "Carrier", "x", "", "Call recipient", "API request"]
    for i in range(5000):
        code: Any = rng.choice([rng.randrange(0, 12000), "bad", None, rng.choice([4000, 3010, 9999])])
        payload = hangup(code=code, name=rng.choice(names), source=rng.choice(sources), RequestID=f"r{i}")
        resp = await client.post(
            "/webhook/alpha", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        assert resp.status == 200
    label_sets = set()
    for family in registry.collect():
        if family.name == "vobiz_calls_ended":
            for s in family.samples:
                assert s.labels["hangup_cause"] in HANGUP_CAUSES and s.labels["hangup_source"] in HANGUP_SOURCES
                label_sets.add((s.labels["hangup_cause"], s.labels["hangup_category"], s.labels["hangup_source"]))
    causes = {c for c, _, _ in label_sets}
    # every documented cause maps to exactly one category
    for cause in causes - {"other"}:
        assert len({cat for c, cat, _ in label_sets if c == cause}) == 1, cause
    assert len(label_sets) <= (len(HANGUP_CAUSES) - 1 + 11) * len(HANGUP_SOURCES)
    assert len({cat for c, cat, _ in label_sets if c == "other"}) <= 11


async def test_zero_series_from_start_up(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    create_app(make_config(), registry)
    for outcome in (
        "malformed",
        "overloaded",
        "unknown_trunk",
        "too_large",
        "timeout",
        "forbidden_source",
        "method_not_allowed",
    ):
        assert val(registry, "vobiz_webhook_requests_total", trunk="unknown", outcome=outcome) == 0.0
    for trunk in ("alpha", "bravo"):
        for field in INVALID_FIELD_NAMES:
            assert val(registry, "vobiz_event_invalid_fields_total", trunk=trunk, field=field) == 0.0
        for group in OUTCOME_GROUPS:
            assert val(registry, "vobiz_calls_ended_by_group_total", trunk=trunk, group=group) == 0.0
        assert val(registry, "vobiz_calls_effective_total", trunk=trunk) == 0.0
        assert val(registry, "vobiz_calls_answered_no_ring_total", trunk=trunk) == 0.0
        assert val(registry, "vobiz_trunk_peak_calls_per_second", trunk=trunk) == 0.0
        assert val(registry, "vobiz_call_answer_ring_seconds_count", trunk=trunk) == 0.0


# --- trunk mismatch against every configured id -------------------------------------------------


async def test_trunk_id_of_another_trunk_on_a_trunk_without_id_is_a_mismatch(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(with_delhi(), registry))
    # alpha's TrunkID, sent to delhi (no id) and signed with delhi's secret.
    assert await post(client, call_initiated(trunk_id=TRUNK_A_ID), "/webhook/delhi", SECRET_B) == (
        400,
        "trunk_mismatch",
    )
    assert val(registry, "vobiz_webhook_requests_total", trunk="delhi", outcome="trunk_mismatch") == 1.0
    assert val(registry, "vobiz_call_attempts_total", trunk="delhi", result="admitted") == 0.0
    # An id no trunk has cannot be checked on a trunk without one: accepted.
    assert await post(client, call_initiated(trunk_id="not-configured"), "/webhook/delhi", SECRET_B) == (
        200,
        "accepted",
    )
    assert await post(client, call_initiated(trunk_id=None), "/webhook/delhi", SECRET_B) == (200, "accepted")
    assert val(registry, "vobiz_call_attempts_total", trunk="delhi", result="admitted") == 2.0


# --- telecom metrics ------------------------------------------------------------------------------


async def test_who_acts_groups_ner_numerator_and_answer_ring(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(make_config(), registry))
    sent = [
        hangup(code=4000, name="Normal Hangup", billsec=60, ring_time=8),
        hangup(code=4000, name="Normal Hangup", billsec=3, ring_time=0),  # answered without ringing
        hangup(code=1000, name="Canceled", billsec=0, ring_time=20),  # gave up on a ringing phone
        hangup(code=1000, name="Canceled", billsec=0, ring_time=0),
        hangup(code=3110, name="Declined", billsec=0, ring_time=4),
        hangup(code=5000, name="Network Error", billsec=0, ring_time=0),
        hangup(code=1020, name="Canceled (Simultaneous dial limit reached)", billsec=0, ring_time=0),
        hangup(code=3130, name="Spam block", billsec=0, ring_time=0),
    ]
    for payload in sent:
        assert await post(client, payload) == (200, "accepted")
    groups = {g: val(registry, "vobiz_calls_ended_by_group_total", trunk="alpha", group=g) for g in OUTCOME_GROUPS}
    assert groups == {
        "user": 4.0,
        "dialler": 1.0,
        "caller_id": 1.0,
        "account": 0.0,
        "provider": 1.0,
        "carrier": 0.0,
        "destination": 0.0,
        "media": 0.0,
        "other": 1.0,
    }
    assert val(registry, "vobiz_calls_effective_total", trunk="alpha") == 4.0
    assert val(registry, "vobiz_calls_answered_no_ring_total", trunk="alpha") == 1.0
    assert val(registry, "vobiz_call_answer_ring_seconds_count", trunk="alpha") == 2.0
    assert val(registry, "vobiz_call_answer_ring_seconds_sum", trunk="alpha") == 8.0
    assert val(registry, "vobiz_call_answer_ring_seconds_bucket", trunk="alpha", le="0.5") == 1.0
    assert val(registry, "vobiz_call_ring_seconds_count", trunk="alpha") == 8.0
    assert val(registry, "vobiz_call_billable_seconds_bucket", trunk="alpha", le="6.0") == 1.0
    assert val(registry, "vobiz_call_cost_bucket", trunk="alpha", currency="INR", le="0.005") == 0.0


async def test_peak_calls_per_second(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await aiohttp_client(create_app(make_config(), registry))
    for _ in range(5):
        assert await post(client, call_initiated()) == (200, "accepted")
    peak = val(registry, "vobiz_trunk_peak_calls_per_second", trunk="alpha")
    assert peak is not None and peak >= 3.0  # 5 within one or two seconds
    # Reading does not reset it (two Prometheus servers both see the peak).
    assert val(registry, "vobiz_trunk_peak_calls_per_second", trunk="alpha") == peak
    assert val(registry, "vobiz_trunk_peak_calls_per_second", trunk="bravo") == 0.0


async def test_failed_call_log_line_is_rate_limited_and_masked(
    aiohttp_client: ClientFactory,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The limiter's second stands still (its clock only): 21 requests may straddle a real
    # second boundary, which would allow 5 more lines in the next second.
    frozen = types.SimpleNamespace(monotonic=lambda: 1000.0, strftime=time.strftime, gmtime=time.gmtime)
    monkeypatch.setattr(logs, "time", frozen)
    client = await aiohttp_client(create_app(make_config(), registry))
    caplog.set_level(logging.INFO, logger="vobiz_exporter")
    for i in range(20):
        assert await post(
            client,
            hangup(
                code=5010, name="Internal Error", billsec=0, call_uuid=f"fail-{i}", SIPCallID=f"sip-{i}@203.0.113.5"
            ),
        ) == (200, "accepted")
    assert await post(client, hangup(code=3010, name="Busy Line", billsec=0)) == (200, "accepted")
    lines = [r for r in caplog.records if r.getMessage() == "call failed"]
    assert len(lines) == 5  # 5 a second per trunk and group; the Busy hangup is a user outcome
    first = lines[0].__dict__
    assert (first["trunk"], first["group"], first["code"], first["cause"]) == (
        "alpha",
        "provider",
        5010,
        "internal_error",
    )
    assert first["call_uuid"] == "fail-0" and first["sip_call_id"] == "sip-0@203.0.113.5"
    assert first["to"] == "+9187******09"
    assert all(r.__dict__["group"] != "user" for r in lines)


# --- destinations ------------------------------------------------------------------------------


def destinations_config(enabled: bool = True, **dest: Any) -> Config:
    return make_config(metrics={"destinations": {"enabled": enabled, **dest}})


async def test_destinations_count_by_region_and_flag_disallowed(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    cfg = destinations_config(allowed={"alpha": ["IN"]})
    client = await aiohttp_client(create_app(cfg, registry))
    assert await post(client, call_initiated(To="+918765432109")) == (200, "accepted")
    assert await post(client, call_initiated(To="+88213456789")) == (200, "accepted")  # satellite
    assert await post(client, call_initiated(To="+447911123456", Allowed=False, Reason="No routes")) == (
        200,
        "accepted",
    )
    assert await post(client, call_initiated(To="8765432109")) == (200, "accepted")  # no + : unknown
    assert await post(client, hangup(To="+88213456789", billsec=4, cost=9.5)) == (200, "accepted")
    v = val
    assert v(registry, "vobiz_destination_attempts_total", trunk="alpha", country="IN", result="admitted") == 1.0
    assert v(registry, "vobiz_destination_attempts_total", trunk="alpha", country="XN", result="admitted") == 1.0
    assert v(registry, "vobiz_destination_attempts_total", trunk="alpha", country="GG", result="rejected") == 1.0
    assert v(registry, "vobiz_destination_attempts_total", trunk="alpha", country="unknown", result="admitted") == 1.0
    # Only admitted calls outside the list count; an unreadable number is not "disallowed".
    assert v(registry, "vobiz_destination_disallowed_total", trunk="alpha", country="XN") == 1.0
    assert v(registry, "vobiz_destination_disallowed_total", trunk="alpha", country="GG") is None
    assert v(registry, "vobiz_destination_disallowed_total", trunk="alpha", country="unknown") is None
    assert v(registry, "vobiz_destination_answered_total", trunk="alpha", country="XN") == 1.0
    assert v(registry, "vobiz_destination_billable_seconds_total", trunk="alpha", country="XN") == 4.0
    assert v(registry, "vobiz_destination_cost_total", trunk="alpha", country="XN", currency="INR") == 9.5
    for family in registry.collect():
        for s in family.samples:
            for value in s.labels.values():
                assert "88213456789" not in value and "8765432109" not in value


async def test_destination_cap_is_process_wide_and_allowed_regions_are_pinned(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    cfg = destinations_config(max_countries=2, allowed={"bravo": ["JP"]})
    client = await aiohttp_client(create_app(cfg, registry))
    for to in ("+918765432109", "+6591234567", "+971501234567", "+81312345678"):
        assert await post(client, call_initiated(To=to)) == (200, "accepted")
    countries = {
        s.labels["country"] for f in registry.collect() if f.name == "vobiz_destination_attempts" for s in f.samples
    }
    assert countries == {"IN", "SG", "other", "JP"}


async def test_destinations_off_leaves_the_exposition_unchanged(aiohttp_client: ClientFactory) -> None:
    """Same traffic with destinations off and on: off is the on output minus vobiz_destination_*."""
    outputs = {}
    for enabled in (False, True):
        registry = CollectorRegistry()
        client = await aiohttp_client(create_app(destinations_config(enabled=enabled), registry))
        for i in range(3):
            body = call_initiated(call_uuid=f"c{i}", To="+14155550123")
            body["Timestamp"] = "2026-01-01T00:00:00Z"
            await post(client, body)
        outputs[enabled] = (
            [f.name for f in registry.collect()],
            {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in registry.collect()
                for s in f.samples
                if f.name.startswith("vobiz_")
            },
        )
    off_names, off_samples = outputs[False]
    on_names, on_samples = outputs[True]
    assert not any(n.startswith("vobiz_destination") for n in off_names)
    assert [n for n in on_names if not n.startswith("vobiz_destination")] == off_names
    on_rest = {k: v for k, v in on_samples.items() if not k[0].startswith("vobiz_destination")}
    volatile = (
        "vobiz_last_event_timestamp_seconds",
        "vobiz_webhook_request_duration_seconds_sum",
        "vobiz_webhook_delivery_delay_seconds_sum",
        "vobiz_config_last_reload_success_timestamp_seconds",
    )
    # bucket counts of the request-duration histogram depend on timing
    assert {
        k: v
        for k, v in on_rest.items()
        if not k[0].startswith(volatile) and not k[0].startswith("vobiz_webhook_request_duration")
    } == {
        k: v
        for k, v in off_samples.items()
        if not k[0].startswith(volatile) and not k[0].startswith("vobiz_webhook_request_duration")
    }


async def test_reload_turns_destinations_on_and_off(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, tmp_path: Any
) -> None:
    raw = raw_config()
    client, reload = await reloadable(aiohttp_client, registry, tmp_path, raw)
    raw["metrics"] = {"destinations": {"enabled": True}}
    reload()
    assert await post(client, call_initiated(To="+918765432109")) == (200, "accepted")
    assert val(registry, "vobiz_destination_attempts_total", trunk="alpha", country="IN", result="admitted") == 1.0
    del raw["metrics"]
    reload()
    assert not [f for f in registry.collect() if f.name.startswith("vobiz_destination")]


def test_destinations_config_is_validated() -> None:
    from exporter.config import ConfigError

    raw = raw_config(
        metrics={
            "destinations": {
                "enabled": "yes",
                "max_countries": 0,
                "allowd": {},
                "allowed": {"nosuch": ["IN"], "alpha": ["IN", "QQ", "in"]},
            }
        }
    )
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="c.yaml", env=ENV)
    assert info.value.problems == [
        "c.yaml: metrics.destinations.allowd: unknown key (did you mean `allowed`?)",
        "c.yaml: metrics.destinations.allowed.nosuch: is not a configured trunk name",
        "c.yaml: metrics.destinations.allowed.alpha[1]: 'QQ' is not an ISO 3166-1 alpha-2 region code (e.g. IN)",
        "c.yaml: metrics.destinations.allowed.alpha[2]: 'in' is not an ISO 3166-1 alpha-2 region code (e.g. IN)",
        "c.yaml: metrics.destinations.enabled: must be true or false",
        "c.yaml: metrics.destinations.max_countries: must be a positive integer",
    ]


def test_readme_answers_table_matches_the_outcome_table() -> None:
    """One declaration per fact: exporter/outcomes.py is the source; the README must agree."""
    import re
    from pathlib import Path

    from exporter import outcomes

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Endpoints and answers", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, int] = {}
    for status, names in re.findall(r"^\| (\d{3}) \| (.+?) \|", section, re.M):
        for name in re.findall(r"`(\w+)`", names):
            documented[name] = int(status)
    assert documented == {o.name: o.status for o in outcomes.TABLE}


def test_log_guard_strips_arguments_and_exceptions_and_rate_limits(caplog: pytest.LogCaptureFixture) -> None:
    """aiohttp's and asyncio's own lines: the template's first line only, the exception's class
    instead of its text, at most 10 a second per logger."""
    from exporter.server import install_log_guard

    install_log_guard()
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("aiohttp.server")
    for _ in range(30):
        try:
            raise ValueError("payload +919812345678 sig=deadbeef")
        except ValueError:
            log.exception("Error handling request from %s\nraw: %r", "127.0.0.1", b"+919812345678")
    logging.getLogger("aiohttp.access").info("127.0.0.1 GET /webhook/g?To=%2B919812345678 200")
    assert not [r for r in caplog.records if r.name == "aiohttp.access"]  # access lines never pass
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert 1 <= len(records) <= 20  # 10 a second; the loop may straddle one second boundary
    for r in records:
        assert (r.getMessage(), r.exc_info, r.__dict__["why"]) == ("Error handling request from %s", None, "ValueError")
    assert "919812345678" not in caplog.text and "deadbeef" not in caplog.text


# --- review fixes ---------------------------------------------------------------------------------


async def test_failed_call_line_never_logs_a_number_put_in_the_code(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(create_app(make_config(), registry))
    caplog.set_level(logging.INFO, logger="vobiz_exporter")
    assert await post(client, hangup(code=919876543210, billsec=0)) == (200, "accepted")
    lines = [r for r in caplog.records if r.getMessage() == "call failed"]
    assert [(r.__dict__["code"], r.__dict__["group"]) for r in lines] == [("other", "other")]
    assert "919876543210" not in caplog.text


async def test_an_unsupported_expect_value_is_a_counted_json_refusal(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(make_config(), registry))
    body, headers = signed(call_initiated())
    resp = await client.post("/webhook/alpha", data=body, headers={**headers, "Expect": "fly-me-to-the-moon"})
    assert resp.status == 400 and (await resp.json())["outcome"] == "malformed"
    assert val(registry, "vobiz_webhook_requests_total", trunk="unknown", outcome="malformed") == 1.0
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 0.0


async def test_report_mode_counts_only_the_failures_it_lets_through(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(make_config(signature={"mode": "report"}), registry))
    stale = call_initiated(ts=1_000_000_000)
    assert await post(client, stale, secret="wrong") == (400, "stale")
    assert await post(client, b'{"Event": "CallInitiated"}', secret="wrong") == (400, "malformed")
    assert val(registry, "vobiz_webhook_signature_failures_allowed_total", trunk="alpha") == 0.0
    ok = call_initiated()
    assert await post(client, ok, secret="wrong") == (200, "accepted")
    assert await post(client, ok, secret="wrong") == (200, "duplicate")  # answered 200: let through
    assert val(registry, "vobiz_webhook_signature_failures_allowed_total", trunk="alpha") == 2.0


async def test_budget_currency_already_observed_frees_its_slot(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, tmp_path: Any
) -> None:
    raw = raw_config()
    client, reload = await reloadable(aiohttp_client, registry, tmp_path, raw)
    for code in TEN_CODES:
        assert await post(client, hangup(currency=code, cost=1.0)) == (200, "accepted")
    raw["trunks"][1]["hourly_budget"] = {"amount": 100, "currency": "USD"}
    reload()
    assert await post(client, hangup(currency="BRL", cost=2.0)) == (200, "accepted")  # USD no longer counts
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="BRL") == 2.0
    assert await post(client, hangup(currency="MXN", cost=2.0)) == (200, "accepted")
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="other") == 2.0


async def test_an_implausible_timestamp_with_the_replay_window_off_is_invalid_not_a_delay(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await aiohttp_client(create_app(make_config(signature={"replay_tolerance": "0"}), registry))
    body = call_initiated()
    body["Timestamp"] = "0001-01-01T00:00:00Z"
    assert await post(client, body) == (200, "accepted")
    assert val(registry, "vobiz_webhook_delivery_delay_seconds_count", trunk="alpha", event="call_initiated") == 0.0
    assert val(registry, "vobiz_event_invalid_fields_total", trunk="alpha", field="timestamp") == 1.0
    assert await post(client, call_initiated(ts=time.time() - 3600)) == (200, "accepted")
    assert val(registry, "vobiz_webhook_delivery_delay_seconds_count", trunk="alpha", event="call_initiated") == 1.0
