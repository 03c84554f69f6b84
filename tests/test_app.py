"""Handler tests: every answer code and outcome of the core receiver, with exact metric values."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Awaitable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from exporter.app import RUNTIME, create_app
from exporter.config import Config
from exporter.metrics import OUTCOMES, UNRESOLVED_OUTCOMES
from exporter.protocol import CALL_INITIATED, EVENT_HEADER, HANGUP, REQUEST_ID_HEADER, SIGNATURE_HEADER, signed_headers
from exporter.signature import sign_hex

from .helpers import (
    ENV,
    SECRET_A,
    SECRET_B,
    SECRET_OLD,
    TRUNK_A_ID,
    TRUNK_B_ID,
    ClientFactory,
    call_initiated,
    call_samples,
    ended,
    hangup,
    make_config,
    outcome,
    raw_config,
    rfc3339,
    signed,
    val,
)


async def client_for(aiohttp_client: ClientFactory, config: Config, registry: CollectorRegistry) -> Any:
    return await aiohttp_client(create_app(config, registry))


async def post(
    client: Any, payload: dict[str, Any] | bytes, path: str = "/webhook/alpha", secret: str = SECRET_A, **kw: Any
) -> tuple[int, dict[str, Any]]:
    body, headers = signed(payload, secret)
    headers.update(kw.pop("headers", {}))
    resp = await client.post(path, data=body, headers=headers, **kw)
    return resp.status, await resp.json()


# --- start-up state ---------------------------------------------------------------------------


async def test_zero_series_exist_from_startup(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    await client_for(aiohttp_client, make_config(), registry)
    for trunk in ("alpha", "bravo"):
        for result in ("admitted", "rejected"):
            assert val(registry, "vobiz_call_attempts_total", trunk=trunk, result=result) == 0.0
        for reason in (
            "insufficient_balance",
            "cli_validation_failed",
            "aadhaar_pending",
            "kyc_required",
            "rate_limited",
            "no_routes",
            "other",
        ):
            assert val(registry, "vobiz_call_rejections_total", trunk=trunk, reason=reason) == 0.0
        for o in OUTCOMES:
            assert outcome(registry, trunk, o) == 0.0
        assert val(registry, "vobiz_calls_active", trunk=trunk) == 0.0
    for o in UNRESOLVED_OUTCOMES:
        assert outcome(registry, "unknown", o) == 0.0
    assert outcome(registry, "unknown", "accepted") is None
    assert val(registry, "vobiz_trunk_info", trunk="alpha", trunk_id=TRUNK_A_ID) == 1.0
    assert val(registry, "vobiz_trunk_max_concurrent_calls", trunk="alpha") == 10.0
    assert val(registry, "vobiz_trunk_cps_limit", trunk="alpha") == 2.0
    assert val(registry, "vobiz_trunk_hourly_budget", trunk="alpha", currency="INR") == 500.0
    assert val(registry, "vobiz_trunk_max_concurrent_calls", trunk="bravo") is None
    assert val(registry, "vobiz_config_last_reload_successful") == 1.0
    import platform

    assert val(registry, "vobiz_exporter_build_info", version="0.1.0", python_version=platform.python_version()) == 1.0
    # No _created series anywhere (docs/contract.md), and process collectors are on the injected registry.
    names = {s.name for fam in registry.collect() for s in fam.samples}
    assert not [n for n in names if n.endswith("_created")]
    assert "process_cpu_seconds_total" in names or "python_info" in names


# --- accepted events -------------------------------------------------------------------------


async def test_admitted_call_then_hangup(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    ci = call_initiated()
    assert await post(client, ci) == (200, {"outcome": "accepted", "detail": "Event accepted."})
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 1.0
    h = hangup(call_uuid=ci["CallUUID"], duration=75, billsec=60, ring_time=15, cost=0.75, mos=4.4, jitter=12)
    assert (await post(client, h))[0] == 200
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 0.0
    assert val(registry, "vobiz_calls_answered_total", trunk="alpha") == 1.0
    assert ended(registry) == 1.0
    assert val(registry, "vobiz_call_duration_seconds_sum", trunk="alpha") == 75.0
    assert val(registry, "vobiz_call_duration_seconds_bucket", trunk="alpha", le="60.0") == 0.0
    assert val(registry, "vobiz_call_duration_seconds_bucket", trunk="alpha", le="90.0") == 1.0
    assert val(registry, "vobiz_call_billable_seconds_sum", trunk="alpha") == 60.0
    assert val(registry, "vobiz_call_billable_seconds_count", trunk="alpha") == 1.0
    assert val(registry, "vobiz_call_ring_seconds_sum", trunk="alpha") == 15.0
    assert val(registry, "vobiz_call_mos_sum", trunk="alpha") == 4.4
    assert val(registry, "vobiz_call_mos_bucket", trunk="alpha", le="4.3") == 0.0
    assert val(registry, "vobiz_call_mos_bucket", trunk="alpha", le="4.5") == 1.0
    assert val(registry, "vobiz_call_jitter_seconds_sum", trunk="alpha") == pytest.approx(0.012)
    assert val(registry, "vobiz_call_cost_sum", trunk="alpha", currency="INR") == 0.75
    assert val(registry, "vobiz_call_cost_count", trunk="alpha", currency="INR") == 1.0
    assert outcome(registry, "alpha", "accepted") == 2.0
    assert val(registry, "vobiz_webhook_delivery_delay_seconds_count", trunk="alpha", event="hangup") == 1.0
    last = val(registry, "vobiz_last_event_timestamp_seconds", trunk="alpha", event="hangup")
    assert last is not None and abs(last - time.time()) < 5
    assert val(registry, "vobiz_webhook_request_duration_seconds_count") == 2.0


REJECTIONS = [
    ("Insufficient balance: 0.50 INR", "insufficient_balance"),
    ("insufficient BALANCE: 12.75 USD", "insufficient_balance"),
    ("CLI ownership validation failed", "cli_validation_failed"),
    ("Aadhaar verification pending", "aadhaar_pending"),
    ("KYC verification required", "kyc_required"),
    ("Rate limit exceeded", "rate_limited"),
    ("Concurrent call limit exceeded", "rate_limited"),
    ("CPS limit reached", "rate_limited"),
    ("No routes available", "no_routes"),
    ("Something nobody documented", "other"),
    ("", "other"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTIONS)
async def test_rejection_reasons(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, text: str, reason: str
) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    assert (await post(client, call_initiated(allowed=False, reason=text)))[0] == 200
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="rejected") == 1.0
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 0.0
    assert val(registry, "vobiz_call_rejections_total", trunk="alpha", reason=reason) == 1.0
    total = sum(
        val(registry, "vobiz_call_rejections_total", trunk="alpha", reason=r) or 0 for _, r in REJECTIONS if r != reason
    )
    assert total == 0.0
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 0.0


HANGUP_CODES = [
    (4000, "Normal Hangup", "normal_hangup", "normal"),
    (3010, "Busy Line", "busy_line", "rejection"),
    (1010, "Canceled (Out Of Credits)", "canceled_out_of_credits", "canceled"),
    (5030, "Concurrency Limit Breached", "concurrency_limit_breached", "system"),
    (3080, "Internal server error from carrier", "internal_server_error_from_carrier", "carrier"),
    (6010, "Ring Timeout Reached", "ring_timeout_reached", "timeout"),
    (7011, "Error Reaching Answer URL", "error_reaching_answer_url", "url_error"),
    (8014, "Invalid Redirect XML", "invalid_redirect_xml", "xml_error"),
    (9999, "Whatever", "other", "special"),
    (0, "Unknown", "unknown", "canceled"),
    (2040, "Destination Number Barred", "destination_number_barred", "destination"),
    ("3000", "No Answer", "no_answer", "rejection"),
    (None, "Busy Line", "busy_line", "rejection"),
    (12345, "Weird", "other", "other"),
]


@pytest.mark.parametrize(("code", "name", "cause", "category"), HANGUP_CODES)
async def test_hangup_causes(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, code: Any, name: str, cause: str, category: str
) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    h = hangup(code=code, name=name, billsec=0, mos=0, jitter=0, source="Callee")
    assert (await post(client, h))[0] == 200
    assert ended(registry, cause=cause, category=category, source="callee") == 1.0
    assert val(registry, "vobiz_calls_answered_total", trunk="alpha") == 0.0
    # Not measured means not observed: MOS 0 and jitter 0 on an unanswered call.
    assert val(registry, "vobiz_call_mos_count", trunk="alpha") == 0.0
    assert val(registry, "vobiz_call_jitter_seconds_count", trunk="alpha") == 0.0
    assert val(registry, "vobiz_call_billable_seconds_count", trunk="alpha") == 0.0
    assert val(registry, "vobiz_call_ring_seconds_count", trunk="alpha") == 1.0


async def test_unparsable_code_and_bad_fields_are_counted_but_event_counts(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    h = hangup(
        code="four-thousand",
        name="Normal Hangup",
        mos=7.5,
        cost=-1,
        currency="rupees",
        duration="80",
        billsec="61",
        Timestamp="yesterday-ish",
    )
    assert (await post(client, h))[0] == 200
    for field in ("hangup_cause_code", "mos", "cost", "currency", "timestamp"):
        assert val(registry, "vobiz_event_invalid_fields_total", trunk="alpha", field=field) == 1.0, field
    assert ended(registry) == 1.0
    assert val(registry, "vobiz_call_duration_seconds_sum", trunk="alpha") == 80.0
    assert val(registry, "vobiz_call_billable_seconds_sum", trunk="alpha") == 61.0
    assert val(registry, "vobiz_call_mos_count", trunk="alpha") == 0.0
    assert val(registry, "vobiz_call_cost_count", trunk="alpha", currency="other") is None
    # A missing timestamp cannot be checked against the replay window, nor observed as delay.
    assert val(registry, "vobiz_webhook_delivery_delay_seconds_count", trunk="alpha", event="hangup") == 0.0


async def test_currency_cap_is_ten_codes(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    codes = ["USD", "EUR", "GBP", "AED", "SGD", "JPY", "AUD", "CAD", "CHF", "ZAR", "NZD"]  # INR is #1
    for code in codes:
        assert (await post(client, hangup(currency=code, cost=1.0)))[0] == 200
    # INR is a budget currency: it has its own label and does not count toward the cap of 10
    # observed codes, so USD ... ZAR are the ten and NZD is the first "other".
    assert val(registry, "vobiz_call_cost_count", trunk="alpha", currency="ZAR") == 1.0
    assert val(registry, "vobiz_call_cost_count", trunk="alpha", currency="NZD") is None
    assert val(registry, "vobiz_call_cost_count", trunk="alpha", currency="other") == 1.0
    assert val(registry, "vobiz_event_invalid_fields_total", trunk="alpha", field="currency") == 0.0


# --- refusals: every answer code of the core receiver -----------------------------------------


async def assert_refused(
    client: Any, registry: CollectorRegistry, status: int, want: str, trunk: str, coro: Awaitable[Any]
) -> None:
    before = call_samples(registry)
    resp = await coro
    assert resp.status == status
    body = await resp.json()
    assert body["outcome"] == want and isinstance(body["detail"], str)
    assert outcome(registry, trunk, want) == 1.0
    assert call_samples(registry) == before


async def test_invalid_and_missing_signature(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    body, headers = signed(call_initiated(), SECRET_B)
    await assert_refused(
        client, registry, 401, "invalid_signature", "alpha", client.post("/webhook/alpha", data=body, headers=headers)
    )
    del headers[SIGNATURE_HEADER]
    await assert_refused(
        client, registry, 401, "missing_signature", "alpha", client.post("/webhook/alpha", data=body, headers=headers)
    )


async def raw_request(client: Any, head: str, body: bytes) -> tuple[int, bytes]:
    """Send bytes as written (the aiohttp client would merge repeated headers)."""
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(head.encode() + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def test_repeated_signature_header_is_invalid(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    body, headers = signed(call_initiated())
    sig = headers[SIGNATURE_HEADER]
    head = (
        f"POST /webhook/alpha HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{SIGNATURE_HEADER}: {sig}\r\n{SIGNATURE_HEADER.lower()}: {sig}\r\n"
    )
    before = call_samples(registry)
    status, answer = await raw_request(client, head, body)
    assert status == 401 and json.loads(answer)["outcome"] == "invalid_signature"
    assert outcome(registry, "alpha", "invalid_signature") == 1.0
    assert call_samples(registry) == before
    # Odd header-name case alone is fine.
    head = (
        f"POST /webhook/alpha HTTP/1.1\r\nHost: x\r\ncontent-TYPE: application/json\r\n"
        f"{SIGNATURE_HEADER.swapcase()}: {sig}\r\n"
    )
    assert (await raw_request(client, head, body))[0] == 200


async def test_signature_forms(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    for transform in (str.upper, lambda s: "sha256=" + s, lambda s: "SHA256=" + s.upper()):
        body, headers = signed(call_initiated())
        headers[SIGNATURE_HEADER] = transform(headers[SIGNATURE_HEADER])
        assert (await client.post("/webhook/alpha", data=body, headers=headers)).status == 200
    assert outcome(registry, "alpha", "accepted") == 3.0


async def test_base64_encoding_and_custom_header(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    cfg = make_config(signature={"encoding": "base64", "header": "X-Custom-Sig"})
    client = await client_for(aiohttp_client, cfg, registry)
    body = json.dumps(call_initiated()).encode()
    headers = signed_headers(body, SECRET_A.encode(), header="x-custom-sig", encoding="base64")
    resp = await client.post("/webhook/alpha", data=body, headers=headers)
    assert resp.status == 200
    resp = await client.post(  # hex where base64 is configured, and over another body
        "/webhook/alpha",
        data=json.dumps(call_initiated()).encode(),
        headers=signed_headers(body, SECRET_A.encode(), header="X-Custom-Sig"),
    )
    assert resp.status == 401


async def test_previous_secret_is_accepted_and_counted(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    assert (await post(client, call_initiated(), secret=SECRET_OLD))[0] == 200
    assert val(registry, "vobiz_webhook_previous_secret_used_total", trunk="alpha") == 1.0
    assert (await post(client, call_initiated()))[0] == 200
    assert val(registry, "vobiz_webhook_previous_secret_used_total", trunk="alpha") == 1.0


async def test_report_mode_accepts_and_counts(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(signature={"mode": "report"}), registry)
    assert (await post(client, call_initiated(), secret="wrong"))[0] == 200
    body = json.dumps(call_initiated()).encode()
    assert (await client.post("/webhook/alpha", data=body)).status == 200
    assert outcome(registry, "alpha", "accepted") == 2.0
    assert outcome(registry, "alpha", "invalid_signature") == 0.0
    assert val(registry, "vobiz_webhook_signature_failures_allowed_total", trunk="alpha") == 2.0
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 2.0


async def test_off_mode_needs_no_signature(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(signature={"mode": "off"}), registry)
    assert (await client.post("/webhook/alpha", data=json.dumps(call_initiated()))).status == 200
    assert val(registry, "vobiz_webhook_signature_failures_allowed_total", trunk="alpha") == 0.0


async def test_unknown_trunk_by_path_and_by_id(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    body, headers = signed(call_initiated())
    await assert_refused(
        client, registry, 404, "unknown_trunk", "unknown", client.post("/webhook/nope", data=body, headers=headers)
    )
    body, headers = signed(call_initiated(trunk_id="not-a-trunk"))
    resp = await client.post("/webhook", data=body, headers=headers)
    assert resp.status == 404 and outcome(registry, "unknown", "unknown_trunk") == 2.0
    body, headers = signed(call_initiated(trunk_id=None))
    resp = await client.post("/webhook", data=body, headers=headers)
    assert resp.status == 404 and outcome(registry, "unknown", "unknown_trunk") == 3.0


async def test_routing_by_trunk_id(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    assert (await post(client, call_initiated(), path="/webhook"))[0] == 200
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0
    # /webhook with a body that does not parse: malformed, trunk unknown.
    body = b"{not json"
    resp = await client.post("/webhook", data=body, headers=signed(body)[1])
    assert resp.status == 400 and outcome(registry, "unknown", "malformed") == 1.0


async def test_malformed_bodies(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    cases: list[bytes] = [
        b'{"Event": "CallInitiated"',  # truncated
        b"[1, 2]",
        b"42",
        b"",
        b'{"Event":"CallInitiated","CallUUID":"a","CallUUID":"b","Allowed":true}',
        b'{"Event":"CallInitiated","CallUUID":"a","Allowed":NaN}',
        b"\xff\xfe{}",
        b"[" * 20000 + b"]" * 20000,
        json.dumps({k: v for k, v in call_initiated().items() if k != "CallUUID"}).encode(),
        json.dumps(call_initiated(Allowed="maybe")).encode(),
        json.dumps({k: v for k, v in call_initiated().items() if k != "Event"}).encode(),
    ]
    before = call_samples(registry)
    for i, body in enumerate(cases, start=1):
        headers = signed(body)[1]
        headers.pop(EVENT_HEADER, None)
        resp = await client.post("/webhook/alpha", data=body, headers=headers)
        assert resp.status == 400, body[:60]
        assert (await resp.json())["outcome"] == "malformed"
        assert outcome(registry, "alpha", "malformed") == float(i)
    assert call_samples(registry) == before


async def test_event_type_from_header_when_body_has_none(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    payload = call_initiated()
    del payload["Event"]
    body, headers = signed(payload)
    headers[EVENT_HEADER] = CALL_INITIATED
    assert (await client.post("/webhook/alpha", data=body, headers=headers)).status == 200
    # Disagreement: the signed body wins.
    body, headers = signed(call_initiated())
    headers[EVENT_HEADER] = HANGUP
    assert (await client.post("/webhook/alpha", data=body, headers=headers)).status == 200
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 2.0
    assert val(registry, "vobiz_calls_answered_total", trunk="alpha") == 0.0


async def test_unknown_event_is_ignored(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    before = call_samples(registry)
    status, body = await post(client, {"Event": "CallRinging", "CallUUID": "x-1", "Timestamp": rfc3339()})
    assert (status, body["outcome"]) == (200, "ignored")
    assert outcome(registry, "alpha", "ignored") == 1.0
    assert call_samples(registry) == before


async def test_trunk_mismatch(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    body, headers = signed(call_initiated(trunk_id=TRUNK_B_ID))
    await assert_refused(
        client, registry, 400, "trunk_mismatch", "alpha", client.post("/webhook/alpha", data=body, headers=headers)
    )


async def test_stale_and_future_timestamps(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    body, headers = signed(call_initiated(ts=time.time() - 16 * 60))
    await assert_refused(
        client, registry, 400, "stale", "alpha", client.post("/webhook/alpha", data=body, headers=headers)
    )
    body, headers = signed(call_initiated(ts=time.time() + 16 * 60))
    resp = await client.post("/webhook/alpha", data=body, headers=headers)
    assert resp.status == 400 and outcome(registry, "alpha", "stale") == 2.0
    # Within the window, an hour-long call's Hangup is fine: Timestamp is the event's time.
    assert (await post(client, hangup(duration=3600, billsec=3590)))[0] == 200


async def test_replay_window_off(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    cfg = make_config(signature={"replay_tolerance": "0"})
    client = await client_for(aiohttp_client, cfg, registry)
    assert (await post(client, call_initiated(ts=time.time() - 86400)))[0] == 200


async def test_duplicates_change_no_call_metric(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    ci = call_initiated()
    body, headers = signed(ci)
    assert (await client.post("/webhook/alpha", data=body, headers=headers)).status == 200
    before = call_samples(registry)
    resp = await client.post("/webhook/alpha", data=body, headers=headers)  # retry
    assert resp.status == 200 and (await resp.json())["outcome"] == "duplicate"
    headers[REQUEST_ID_HEADER] = "a-brand-new-unsigned-id"  # replay with a new unsigned header
    resp = await client.post("/webhook/alpha", data=body, headers=headers)
    assert (await resp.json())["outcome"] == "duplicate"
    assert call_samples(registry) == before
    assert outcome(registry, "alpha", "duplicate") == 2.0
    assert val(registry, "vobiz_dedupe_entries") == 2.0
    # Same request id but another event type (the Hangup of that call) is not a duplicate.
    assert (await post(client, hangup(call_uuid=ci["CallUUID"])))[0] == 200
    assert val(registry, "vobiz_dedupe_entries") == 4.0


async def test_dedupe_lru_bound(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(dedupe={"max_entries": 4}), registry)
    for _ in range(3):
        assert (await post(client, call_initiated()))[0] == 200
    assert val(registry, "vobiz_dedupe_entries") == 4.0
    assert val(registry, "vobiz_dedupe_evictions_total") == 2.0


async def test_out_of_order_hangup_first(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    ci = call_initiated()
    assert (await post(client, hangup(call_uuid=ci["CallUUID"])))[0] == 200
    assert ended(registry) == 1.0
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 0.0
    assert (await post(client, ci))[0] == 200
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0
    assert val(registry, "vobiz_calls_active", trunk="alpha") == 0.0


async def get_raw(client: Any, target: str, sig: str) -> tuple[int, dict[str, Any]]:
    """GET with the query exactly as written (yarl would re-quote it)."""
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\n{SIGNATURE_HEADER}: {sig}\r\n"
    status, body = await raw_request(client, head, b"")
    return status, json.loads(body)


async def test_get_trunk_signs_raw_query(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    fields = {k: ("true" if v is True else str(v)) for k, v in call_initiated(trunk_id=TRUNK_B_ID).items()}
    fields["From"] = "+91 98765 43210"  # spaces and plus signs stay percent-encoded in the signed string
    query = urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)
    assert "%2B91%2098765" in query
    sig = signed_headers(query.encode(), SECRET_B.encode())[SIGNATURE_HEADER]
    assert (await get_raw(client, f"/webhook/bravo?{query}", sig))[0] == 200
    assert val(registry, "vobiz_call_attempts_total", trunk="bravo", result="admitted") == 1.0
    # A signature over the decoded query does not verify: the HMAC covers the raw string.
    decoded_sig = sign_hex(SECRET_B.encode(), urllib.parse.unquote(query).encode())
    status, answer = await get_raw(client, f"/webhook/bravo?{query}", decoded_sig)
    assert (status, answer["outcome"]) == (401, "invalid_signature")
    # GET to a POST trunk is 405, counted on that trunk.
    resp = await client.get(f"/webhook/alpha?{query}", headers={SIGNATURE_HEADER: sig})
    assert resp.status == 405 and outcome(registry, "alpha", "method_not_allowed") == 1.0
    assert resp.headers["Allow"] == "POST"
    # Routing GET by TrunkID.
    fields["CallUUID"] = fields["CallUUID"] + "-2"
    fields["RequestID"] = fields["RequestID"] + "-2"
    query = urllib.parse.urlencode(fields, quote_via=urllib.parse.quote)
    sig = signed_headers(query.encode(), SECRET_B.encode())[SIGNATURE_HEADER]
    status, answer = await get_raw(client, f"/webhook?{query}", sig)
    assert (status, answer["outcome"]) == (200, "accepted")
    assert val(registry, "vobiz_call_attempts_total", trunk="bravo", result="admitted") == 2.0


async def test_post_form_body(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    fields = {
        k: ("false" if v is False else str(v))
        for k, v in call_initiated(allowed=False, reason="KYC verification required").items()
    }
    body = urllib.parse.urlencode(fields).encode()
    headers = signed_headers(body, SECRET_A.encode(), content_type="application/x-www-form-urlencoded")
    assert (await client.post("/webhook/alpha", data=body, headers=headers)).status == 200
    assert val(registry, "vobiz_call_rejections_total", trunk="alpha", reason="kyc_required") == 1.0


async def test_other_methods_and_too_large(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(webhook={"max_body_bytes": 1024}), registry)
    await assert_refused(
        client, registry, 405, "method_not_allowed", "unknown", client.put("/webhook/alpha", data=b"{}")
    )
    big = json.dumps(call_initiated(Padding="x" * 2000)).encode()
    await assert_refused(
        client, registry, 413, "too_large", "unknown", client.post("/webhook/alpha", data=big, headers=signed(big)[1])
    )

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 200

    resp = await client.post("/webhook/alpha", data=chunks(), headers={SIGNATURE_HEADER: "00" * 32})
    assert resp.status == 413 and outcome(registry, "unknown", "too_large") == 2.0


async def test_order_of_checks(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    """Unknown trunk beats a bad signature; a bad signature beats malformed; malformed beats stale."""
    client = await client_for(aiohttp_client, make_config(), registry)
    resp = await client.post("/webhook/nope", data=b"garbage", headers={SIGNATURE_HEADER: "zz"})
    assert resp.status == 404
    resp = await client.post("/webhook/alpha", data=b"garbage", headers={SIGNATURE_HEADER: "zz"})
    assert resp.status == 401
    body = b"garbage"
    resp = await client.post("/webhook/alpha", data=body, headers=signed(body)[1])
    assert resp.status == 400 and (await resp.json())["outcome"] == "malformed"
    body, headers = signed(call_initiated(trunk_id=TRUNK_B_ID, ts=time.time() - 3600))
    resp = await client.post("/webhook/alpha", data=body, headers=headers)
    assert (await resp.json())["outcome"] == "trunk_mismatch"
    # A stale duplicate is stale (the replay window comes before de-duplication).
    ci = call_initiated()
    assert (await post(client, ci))[0] == 200
    old = dict(ci, Timestamp=rfc3339(time.time() - 3600))
    status, answer = await post(client, old)
    assert (status, answer["outcome"]) == (400, "stale")


async def test_exemplars_in_openmetrics_and_long_ids(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    short = "c0ffee00-0000-4000-8000-000000000001"
    long_id = "x" * 65
    assert (await post(client, hangup(call_uuid=short, mos=4.1, duration=30, cost=0.3)))[0] == 200
    assert (await post(client, hangup(call_uuid=long_id, mos=4.2, duration=31, cost=0.4)))[0] == 200
    # The long id is observed (counted) but carries no exemplar.
    assert val(registry, "vobiz_call_mos_count", trunk="alpha") == 2.0
    resp = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await resp.text()
    exemplars: dict[str, list[str]] = {}
    for fam in om_families(text):
        for s in fam.samples:
            if s.exemplar is not None:
                exemplars.setdefault(fam.name, []).append(s.exemplar.labels["call_uuid"])
    assert sorted(exemplars) == ["vobiz_call_cost", "vobiz_call_duration_seconds", "vobiz_call_mos"]
    assert all(ids == [short] for ids in exemplars.values())
    assert long_id not in text
    plain = await (await client.get("/metrics")).text()
    assert "# TYPE vobiz_call_attempts_total counter" in plain and "_created" not in plain


async def test_metrics_listener_endpoints(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    client = await client_for(aiohttp_client, make_config(), registry)
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200
    landing = await client.get("/")
    assert landing.status == 200 and 'href="/metrics"' in await landing.text()
    resp = await client.post("/-/reload")
    assert resp.status == 403  # lifecycle API off by default


async def test_webhook_role_serves_no_metrics(aiohttp_client: ClientFactory, registry: CollectorRegistry) -> None:
    cfg = make_config()
    metrics_app = create_app(cfg, registry, role="metrics")
    webhook_app = create_app(cfg, registry, role="webhook", runtime=metrics_app[RUNTIME])
    wclient = await aiohttp_client(webhook_app)
    mclient = await aiohttp_client(metrics_app)
    assert (await wclient.get("/metrics")).status == 404
    assert (await wclient.get("/-/healthy")).status == 200
    assert (await mclient.post("/webhook/alpha", data=b"{}")).status == 404
    assert (await post(wclient, call_initiated()))[0] == 200
    text = await (await mclient.get("/metrics")).text()
    assert 'vobiz_call_attempts_total{result="admitted",trunk="alpha"} 1.0' in text


async def test_reload_adds_removes_and_keeps_counters(
    aiohttp_client: ClientFactory, registry: CollectorRegistry, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / "c.yaml"
    raw = raw_config()
    path.write_text(yaml.safe_dump(raw))
    from exporter.config import load_config, with_overrides

    overrides = {"web.enable_lifecycle": True}
    cfg = with_overrides(load_config(str(path)), overrides)
    app = create_app(cfg, registry, config_path=str(path), overrides=overrides)
    client = await aiohttp_client(app)
    assert (await post(client, call_initiated()))[0] == 200

    # Remove bravo, add charlie, rotate alpha's secret (old one stays accepted as previous).
    raw["trunks"][0]["secret_env"] = "SECRET_NEW"
    raw["trunks"][0]["previous_secrets_env"] = ["SECRET_A"]
    raw["trunks"][1] = {"name": "charlie", "secret_env": "SECRET_B"}
    monkeypatch.setenv("SECRET_NEW", "brand-new-secret")
    path.write_text(yaml.safe_dump(raw))
    resp = await client.post("/-/reload")
    assert resp.status == 200, await resp.text()
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0
    assert val(registry, "vobiz_call_attempts_total", trunk="bravo", result="admitted") is None
    assert val(registry, "vobiz_trunk_info", trunk="bravo", trunk_id=TRUNK_B_ID) is None
    assert val(registry, "vobiz_call_attempts_total", trunk="charlie", result="admitted") == 0.0
    assert val(registry, "vobiz_trunk_info", trunk="charlie", trunk_id="") == 1.0
    assert (await post(client, call_initiated(), secret="brand-new-secret"))[0] == 200
    assert (await post(client, call_initiated()))[0] == 200  # previous secret now
    assert val(registry, "vobiz_webhook_previous_secret_used_total", trunk="alpha") == 1.0
    assert val(registry, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 3.0

    # A broken file keeps the old config and flips the gauge.
    path.write_text("trunks: [{name: 'BAD NAME'}]\n")
    resp = await client.post("/-/reload")
    assert resp.status == 500
    assert "trunks[0].name" in await resp.text()
    assert val(registry, "vobiz_config_last_reload_successful") == 0.0
    assert (await post(client, call_initiated(), secret="brand-new-secret"))[0] == 200

    # A listen-address change needs a restart.
    raw["webhook"] = {"listen_address": "127.0.0.1:1"}
    path.write_text(yaml.safe_dump(raw))
    resp = await client.post("/-/reload")
    assert resp.status == 500 and "needs a restart" in await resp.text()

    del raw["webhook"]
    path.write_text(yaml.safe_dump(raw))
    assert (await client.post("/-/reload")).status == 200
    assert val(registry, "vobiz_config_last_reload_successful") == 1.0


async def test_compressed_body_is_not_decompressed_before_the_hmac(
    aiohttp_client: ClientFactory, registry: CollectorRegistry
) -> None:
    """The HMAC covers the raw bytes on the wire: a gzip body signed over its decompressed JSON
    does not verify, and one signed over the gzip bytes is not JSON (malformed)."""
    import gzip

    client = await client_for(aiohttp_client, make_config(), registry)
    plain = json.dumps(call_initiated()).encode()
    packed = gzip.compress(plain)
    gzip_header = {"Content-Encoding": "gzip"}
    over_plain = signed_headers(plain, SECRET_A.encode())
    resp = await client.post("/webhook/alpha", data=packed, headers={**over_plain, **gzip_header})
    assert resp.status == 401
    over_packed = signed_headers(packed, SECRET_A.encode())
    resp = await client.post("/webhook/alpha", data=packed, headers={**over_packed, **gzip_header})
    assert resp.status == 400 and (await resp.json())["outcome"] == "malformed"
    assert outcome(registry, "alpha", "invalid_signature") == 1.0
    assert outcome(registry, "alpha", "malformed") == 1.0
