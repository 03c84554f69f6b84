"""The bad-input matrix (issue 4): hostile or broken requests through the real webhook app.

Every case runs against a fresh app and registry and asserts three things: the exact status,
that exactly one outcome was counted (and which), and that no call metric moved, unless the
case is one the SPEC accepts (a wrong type in an optional field is an invalid field, the event
still counts), in which case exactly what changed is asserted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry
from yarl import URL

from exporter.app import create_app
from exporter.protocol import CALL_INITIATED, EVENT_HEADER, HANGUP, REQUEST_ID_HEADER, SIGNATURE_HEADER
from exporter.signature import sign_hex

from .helpers import (
    SECRET_A,
    SECRET_B,
    TRUNK_B_ID,
    Samples,
    call_initiated,
    call_samples,
    encode,
    hangup,
    headers_for,
    invalid_fields,
    outcomes,
    plain_config,
    rfc3339,
)

MAX_BODY = 65536
Sender = Callable[[TestClient[Any, Any]], Awaitable[ClientResponse]]
Check = Callable[[Samples, Samples, CollectorRegistry], None]


@dataclass
class Case:
    id: str
    send: Sender
    status: int
    trunk: str
    outcome: str
    check: Check | None = None  # None: call metrics must not change at all
    setup: Sender | None = None  # sent (and counted) before the snapshot, e.g. the first delivery
    prior: dict[tuple[str, str], float] = field(default_factory=dict)  # outcomes the setup counts


def post(path: str, raw: bytes | Callable[[], AsyncIterator[bytes]], headers: Any) -> Sender:
    async def send(client: TestClient[Any, Any]) -> ClientResponse:
        data = raw() if callable(raw) else raw
        return await client.post(path, data=data, headers=headers)

    return send


def signed(body: Any, path: str = "/webhook/a", secret: str = SECRET_A, **extra: str) -> Sender:
    raw = body if isinstance(body, bytes) else encode(body)
    return post(path, raw, headers_for(raw, secret, **extra))


def request(method: str, path: str, raw: bytes = b"", headers: Any = None) -> Sender:
    async def send(client: TestClient[Any, Any]) -> ClientResponse:
        return await client.request(method, URL(path, encoded=True), data=raw, headers=headers)

    return send


def malformed(case_id: str, body: Any, path: str = "/webhook/a", **extra: str) -> Case:
    trunk = "a" if path == "/webhook/a" else "unknown"
    return Case(case_id, signed(body, path, **extra), 400, trunk, "malformed")


def refused(case_id: str, send: Sender, status: int, trunk: str, outcome: str) -> Case:
    return Case(case_id, send, status, trunk, outcome)


# --- checks for requests the SPEC accepts -------------------------------------------------------


def _diff(before: Samples, after: Samples) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _admitted_diff(before: Samples, after: Samples, trunk: str = "a") -> None:
    """A CallInitiated with Allowed true: one admitted attempt and one active call, nothing else."""
    assert _diff(before, after) == {
        ("vobiz_call_attempts_total", (("result", "admitted"), ("trunk", trunk))): 1.0,
        ("vobiz_calls_active", (("trunk", trunk),)): 1.0,
    }


def admitted_once(before: Samples, after: Samples, registry: CollectorRegistry) -> None:
    _admitted_diff(before, after)
    assert invalid_fields(registry) == {}


HIST = {
    "duration": "vobiz_call_duration_seconds_count",
    "billsec": "vobiz_call_billable_seconds_count",
    "ring_time": "vobiz_call_ring_seconds_count",
    "mos": "vobiz_call_mos_count",
    "jitter": "vobiz_call_jitter_seconds_count",
}


def hangup_with_invalid(
    invalid: str | None,
    cause: str = "normal_hangup",
    category: str = "normal",
    source: str = "caller",
    currency: str = "INR",
) -> Check:
    """A Hangup accepted with field ``invalid`` dropped: it is counted as invalid, not observed,
    and every other measurement of the call still is."""

    def check(before: Samples, after: Samples, registry: CollectorRegistry) -> None:
        assert invalid_fields(registry) == ({("a", invalid): 1.0} if invalid else {})
        labels = {"trunk": "a", "hangup_cause": cause, "hangup_category": category, "hangup_source": source}
        assert (
            _value(after, "vobiz_calls_ended_total", **labels) - _value(before, "vobiz_calls_ended_total", **labels)
            == 1.0
        )
        for fname, sample in HIST.items():
            expected = 0.0 if fname == invalid or (fname == "billsec" and invalid == "billsec") else 1.0
            assert _value(after, sample, trunk="a") == expected, fname
        cost_count = _value(after, "vobiz_call_cost_count", trunk="a", currency=currency)
        assert cost_count == (0.0 if invalid == "cost" else 1.0)

    return check


def attempt_with_invalid(invalid: str) -> Check:
    def check(before: Samples, after: Samples, registry: CollectorRegistry) -> None:
        _admitted_diff(before, after)
        assert invalid_fields(registry) == {("a", invalid): 1.0}

    return check


def unchanged_calls(before: Samples, after: Samples, registry: CollectorRegistry) -> None:
    assert after == before


# --- the matrix -------------------------------------------------------------------------------


def _deep(depth: int) -> bytes:
    body = call_initiated()
    raw = encode(body)[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    return raw


def _padded(size: int) -> bytes:
    """A valid CallInitiated of exactly ``size`` bytes (padding in an ignored field)."""
    raw = encode(call_initiated(Pad=""))
    return raw.replace(b'"Pad": ""', b'"Pad": "' + b"p" * (size - len(raw)) + b'"')


def _chunks(total: int, size: int = 4096) -> Callable[[], AsyncIterator[bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        sent = 0
        while sent < total:
            yield b" " * min(size, total - sent)
            sent += size

    return gen


def _form(fields: dict[str, Any]) -> bytes:
    return "&".join(
        f"{quote(k)}={quote(str(v).lower() if isinstance(v, bool) else str(v))}" for k, v in fields.items()
    ).encode()


def _get_query(fields: dict[str, Any]) -> str:
    return _form(fields).decode()


def _repeated_signature() -> Sender:
    raw = encode(call_initiated())
    good = sign_hex(SECRET_A.encode(), raw)
    headers = CIMultiDict([("Content-Type", "application/json"), (SIGNATURE_HEADER, good), (SIGNATURE_HEADER, good)])
    return post("/webhook/a", raw, headers)


def _sig_value(value: Callable[[str], str], body: dict[str, Any] | None = None) -> Sender:
    raw = encode(body or call_initiated())
    signature = value(sign_hex(SECRET_A.encode(), raw))
    return post("/webhook/a", raw, {"Content-Type": "application/json", SIGNATURE_HEADER: signature})


def _odd_case_headers() -> Sender:
    raw = encode(call_initiated())
    return post(
        "/webhook/a",
        raw,
        {
            "content-TYPE": "application/json",
            SIGNATURE_HEADER.swapcase(): sign_hex(SECRET_A.encode(), raw).upper(),
            EVENT_HEADER.upper(): CALL_INITIATED,
        },
    )


def _tampered() -> Sender:
    raw = encode(call_initiated())
    headers = headers_for(raw)
    return post("/webhook/a", raw.replace(b'"Allowed": true', b'"Allowed": false'), headers)


def _form_request(fields: dict[str, Any]) -> Sender:
    raw = _form(fields)
    headers = headers_for(raw)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return post("/webhook/a", raw, headers)


def _get_signed(path: str, fields: dict[str, Any], secret: str) -> Sender:
    query = _get_query(fields)
    return request("GET", f"{path}?{query}", headers={SIGNATURE_HEADER: sign_hex(secret.encode(), query.encode())})


def _duplicate_pair() -> tuple[Sender, Sender]:
    raw = encode(call_initiated())
    send = post("/webhook/a", raw, headers_for(raw))
    return send, send


def _replayed_body_new_request_id() -> tuple[Sender, Sender]:
    """The same signed body under a new (unsigned) X-Vobiz-Request-ID: still a duplicate."""
    raw = encode(call_initiated())
    first = post("/webhook/a", raw, headers_for(raw, **{REQUEST_ID_HEADER: "r-1"}))
    second = post("/webhook/a", raw, headers_for(raw, **{REQUEST_ID_HEADER: "r-2"}))
    return first, second


# The cases below are signed once, at import, with Timestamps of that moment. A long suite can
# run this module minutes later, so each test shows the app the clock as it was then (plus the
# test's own elapsed time): the replay-window cases mean the same whenever they run.
CASES_BUILT_AT = time.time()


class _ClockAsBuilt:
    """``time`` as the exporter's modules see it, shifted back to when the cases were built."""

    def __init__(self) -> None:
        self._shift = time.time() - CASES_BUILT_AT

    def time(self) -> float:
        return time.time() - self._shift

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_dup_first, _dup_second = _duplicate_pair()
_rep_first, _rep_second = _replayed_body_new_request_id()
_ci = call_initiated  # brevity in the table below

CASES: list[Case] = [
    # Not JSON objects.
    malformed("truncated_json", encode(_ci())[:-7]),
    malformed("json_array", b"[" + encode(_ci()) + b"]"),
    malformed("json_scalar_number", b"42"),
    malformed("json_scalar_string", b'"CallInitiated"'),
    malformed("json_null", b"null"),
    malformed("empty_body", b""),
    malformed("whitespace_body", b" \r\n\t "),
    malformed("deep_nesting_100", _deep(100)),
    malformed("deep_nesting_30000", _deep(30000)),
    # An integer too long for the parser in an optional field is an invalid field, not a
    # malformed event (only required fields can make an event malformed).
    Case(
        "huge_integer_literal",
        signed(encode(_ci())[:-1] + b', "Duration": ' + b"9" * 5000 + b"}"),
        200,
        "a",
        "accepted",
        admitted_once,
    ),
    Case(
        "huge_integer_literal_hangup",
        signed(encode(hangup()).replace(b'"Duration": 75', b'"Duration": ' + b"9" * 5000)),
        200,
        "a",
        "accepted",
        hangup_with_invalid("duration"),
    ),
    malformed(
        "huge_integer_calluuid", encode(_ci(CallUUID="X")).replace(b'"CallUUID": "X"', b'"CallUUID": ' + b"9" * 5000)
    ),
    malformed("nan_in_allowed", encode(_ci()).replace(b'"Allowed": true', b'"Allowed": NaN')),
    malformed("infinity_in_calluuid", encode(_ci(CallUUID="X")).replace(b'"CallUUID": "X"', b'"CallUUID": Infinity')),
    malformed("neg_infinity_in_duration", encode(hangup()).replace(b'"Duration": 75', b'"Duration": -Infinity')),
    malformed("duplicate_keys", encode(_ci())[:-1] + b', "Allowed": false}'),
    malformed("duplicate_keys_nested", encode(_ci(Extra={"k": 1})).replace(b'{"k": 1}', b'{"k": 1, "k": 2}')),
    malformed("non_utf8_bytes", encode(_ci(CallUUID="c-XX")).replace(b"XX", b"\xff\xfe")),
    malformed("utf16_json", json.dumps(_ci()).encode("utf-16")),
    malformed("utf8_bom", b"\xef\xbb\xbf" + encode(_ci())),
    # Required fields with wrong types or missing.
    malformed("calluuid_object", _ci(CallUUID={})),
    malformed("calluuid_list", _ci(CallUUID=["a"])),
    malformed("calluuid_bool", _ci(CallUUID=True)),
    malformed("calluuid_missing", {k: v for k, v in _ci().items() if k != "CallUUID"}),
    malformed("calluuid_empty", _ci(CallUUID="")),
    malformed("calluuid_too_long", _ci(CallUUID="u" * 300)),
    malformed("allowed_yes", _ci(Allowed="yes")),
    malformed("allowed_number", _ci(Allowed=1)),
    malformed("allowed_null", _ci(Allowed=None)),
    malformed("allowed_missing", {k: v for k, v in _ci().items() if k != "Allowed"}),
    malformed("event_number", _ci(Event=123)),
    malformed("event_missing_no_header", {k: v for k, v in _ci().items() if k != "Event"}),
    malformed("hangup_calluuid_number_float", hangup(CallUUID=1.5)),
    # Content types.
    malformed("json_body_declared_form", encode(_ci()), **{"Content-Type": "application/x-www-form-urlencoded"}),
    Case(
        "json_body_declared_text_plain",
        signed(_ci(), **{"Content-Type": "text/plain"}),
        200,
        "a",
        "accepted",
        admitted_once,
    ),
    Case(
        "json_body_no_charset_odd_case_type",
        signed(_ci(), **{"Content-Type": "APPLICATION/JSON; charset=UTF-8"}),
        200,
        "a",
        "accepted",
        admitted_once,
    ),
    Case("form_body", _form_request(_ci()), 200, "a", "accepted", admitted_once),
    Case("form_body_allowed_yes", _form_request(_ci(Allowed="yes")), 400, "a", "malformed"),
    # Optional fields of the wrong type: counted as invalid, the event still counts.
    Case("duration_string", signed(hangup(Duration="abc")), 200, "a", "accepted", hangup_with_invalid("duration")),
    # A list where a number belongs: billsec dropped (so the call is not "answered" either).
    Case("billsec_list", signed(hangup(Billsec=[])), 200, "a", "accepted", hangup_with_invalid("billsec")),
    Case("ringtime_object", signed(hangup(RingTime={})), 200, "a", "accepted", hangup_with_invalid("ring_time")),
    Case("cost_text", signed(hangup(Cost="free")), 200, "a", "accepted", hangup_with_invalid("cost")),
    Case(
        "cost_overflow_1e400",
        signed(encode(hangup(Cost=1)).replace(b'"Cost": 1', b'"Cost": 1e400')),
        200,
        "a",
        "accepted",
        hangup_with_invalid("cost"),
    ),
    Case(
        "currency_number",
        signed(hangup(Currency=123)),
        200,
        "a",
        "accepted",
        hangup_with_invalid("currency", currency="other"),
    ),
    Case("mos_text", signed(hangup(MOS="excellent")), 200, "a", "accepted", hangup_with_invalid("mos")),
    Case("mos_out_of_range", signed(hangup(MOS=7)), 200, "a", "accepted", hangup_with_invalid("mos")),
    Case("jitter_bool", signed(hangup(Jitter=True)), 200, "a", "accepted", hangup_with_invalid("jitter")),
    Case(
        "hangup_code_text",
        signed(hangup(HangupCauseCode="abc")),
        200,
        "a",
        "accepted",
        hangup_with_invalid("hangup_cause_code"),
    ),
    # A parsed but undocumented code: cause "other", category by range (none here): the name
    # never overrides a parsed code, so cause and category agree.
    Case(
        "hangup_code_huge_int",
        signed(hangup(HangupCauseCode=10**30)),
        200,
        "a",
        "accepted",
        hangup_with_invalid(None, cause="other", category="other"),
    ),
    Case(
        "hangup_source_number",
        signed(hangup(HangupSource=42)),
        200,
        "a",
        "accepted",
        hangup_with_invalid(None, source="unknown"),
    ),
    Case("timestamp_number", signed(_ci(Timestamp=12345)), 200, "a", "accepted", attempt_with_invalid("timestamp")),
    Case(
        "timestamp_unparsable",
        signed(_ci(Timestamp="yesterday")),
        200,
        "a",
        "accepted",
        attempt_with_invalid("timestamp"),
    ),
    Case(
        "request_id_object", signed(_ci(RequestID={"a": 1})), 200, "a", "accepted", attempt_with_invalid("request_id")
    ),
    Case("trunk_id_list", signed(_ci(TrunkID=[])), 200, "a", "accepted", attempt_with_invalid("trunk_id")),
    Case("from_object", signed(_ci(From={"n": "+919876543210"})), 200, "a", "accepted", admitted_once),
    # Size limits (checked before the trunk is resolved: trunk "unknown").
    refused(
        "oversized_with_content_length",
        post("/webhook/a", b" " * (MAX_BODY + 1), {"Content-Type": "application/json"}),
        413,
        "unknown",
        "too_large",
    ),
    refused(
        "oversized_chunked",
        post("/webhook/a", _chunks(4 * MAX_BODY), {"Content-Type": "application/json"}),
        413,
        "unknown",
        "too_large",
    ),
    refused(
        "oversized_chunked_by_one",
        post("/webhook/a", _chunks(MAX_BODY + 1), {"Content-Type": "application/json"}),
        413,
        "unknown",
        "too_large",
    ),
    Case("exactly_max_body", signed(_padded(MAX_BODY)), 200, "a", "accepted", admitted_once),
    # Signature header shapes.
    Case("odd_case_headers_upper_hex", _odd_case_headers(), 200, "a", "accepted", admitted_once),
    refused("repeated_signature_header", _repeated_signature(), 401, "a", "invalid_signature"),
    refused(
        "missing_signature",
        post("/webhook/a", encode(_ci()), {"Content-Type": "application/json"}),
        401,
        "a",
        "missing_signature",
    ),
    refused("signature_too_short", _sig_value(lambda s: s[:-1]), 401, "a", "invalid_signature"),
    refused("signature_too_long", _sig_value(lambda s: s + "00"), 401, "a", "invalid_signature"),
    refused("signature_non_hex", _sig_value(lambda s: "z" * 64), 401, "a", "invalid_signature"),
    refused("signature_empty", _sig_value(lambda s: ""), 401, "a", "invalid_signature"),
    refused(
        "signature_base64_not_hex",
        _sig_value(lambda s: base64.b64encode(bytes.fromhex(s)).decode()),
        401,
        "a",
        "invalid_signature",
    ),
    Case("signature_sha256_prefix", _sig_value(lambda s: "sha256=" + s), 200, "a", "accepted", admitted_once),
    Case(
        "signature_sha256_prefix_upper",
        _sig_value(lambda s: "SHA256=" + s.upper()),
        200,
        "a",
        "accepted",
        admitted_once,
    ),
    refused("signature_sha256_prefix_wrong", _sig_value(lambda s: "sha256=" + s[::-1]), 401, "a", "invalid_signature"),
    refused("signature_other_trunks_secret", signed(_ci(), secret=SECRET_B), 401, "a", "invalid_signature"),
    refused("body_tampered_after_signing", _tampered(), 401, "a", "invalid_signature"),
    # Replay window.
    refused("timestamp_future_1h", signed(_ci(Timestamp=rfc3339(time.time() + 3600))), 400, "a", "stale"),
    refused("timestamp_far_past", signed(_ci(Timestamp="2001-01-01T00:00:00Z")), 400, "a", "stale"),
    Case(
        "timestamp_10m_old_within_window",
        signed(_ci(Timestamp=rfc3339(time.time() - 600))),
        200,
        "a",
        "accepted",
        admitted_once,
    ),
    # Event types.
    Case("unknown_event_type", signed(_ci(Event="CallRinging")), 200, "a", "ignored", unchanged_calls),
    Case(
        "event_header_disagrees_body_wins",
        signed(_ci(), **{EVENT_HEADER: HANGUP}),
        200,
        "a",
        "accepted",
        admitted_once,
    ),
    Case(
        "event_only_in_header",
        signed({k: v for k, v in hangup().items() if k != "Event"}, **{EVENT_HEADER: HANGUP}),
        200,
        "a",
        "accepted",
        hangup_with_invalid(None),
    ),
    # Trunk resolution, methods, mismatch.
    refused("unknown_trunk_name", signed(_ci(), "/webhook/nope"), 404, "unknown", "unknown_trunk"),
    refused("unknown_trunk_id", signed(_ci(TrunkID="no-such-trunk"), "/webhook"), 404, "unknown", "unknown_trunk"),
    refused(
        "no_trunk_id_on_webhook",
        signed({k: v for k, v in _ci().items() if k != "TrunkID"}, "/webhook"),
        404,
        "unknown",
        "unknown_trunk",
    ),
    malformed("unparsable_on_webhook", b"{not json", "/webhook"),
    Case("resolved_by_trunk_id", signed(_ci(), "/webhook"), 200, "a", "accepted", admitted_once),
    refused("trunk_mismatch", signed(_ci(TrunkID=TRUNK_B_ID)), 400, "a", "trunk_mismatch"),
    refused("get_to_post_trunk", _get_signed("/webhook/a", _ci(), SECRET_A), 405, "a", "method_not_allowed"),
    refused("put_to_trunk", request("PUT", "/webhook/a", encode(_ci())), 405, "unknown", "method_not_allowed"),
    refused("delete_to_webhook", request("DELETE", "/webhook"), 405, "unknown", "method_not_allowed"),
    refused(
        "get_trunk_unsigned",
        request("GET", "/webhook/g?" + _get_query(_ci(TrunkID=TRUNK_B_ID))),
        401,
        "g",
        "missing_signature",
    ),
    refused(
        "get_trunk_signed_with_wrong_secret",
        _get_signed("/webhook/g", _ci(TrunkID=TRUNK_B_ID), SECRET_A),
        401,
        "g",
        "invalid_signature",
    ),
    # Retries and replays.
    Case(
        "retry_is_duplicate",
        _dup_second,
        200,
        "a",
        "duplicate",
        unchanged_calls,
        setup=_dup_first,
        prior={("a", "accepted"): 1.0},
    ),
    Case(
        "replay_with_new_request_id_is_duplicate",
        _rep_second,
        200,
        "a",
        "duplicate",
        unchanged_calls,
        setup=_rep_first,
        prior={("a", "accepted"): 1.0},
    ),
]


def _get_accepted_check(before: Samples, after: Samples, registry: CollectorRegistry) -> None:
    _admitted_diff(before, after, "g")
    assert invalid_fields(registry) == {}


CASES.append(
    Case(
        "get_trunk_signed_query",
        _get_signed("/webhook/g", _ci(TrunkID=TRUNK_B_ID), SECRET_B),
        200,
        "g",
        "accepted",
        _get_accepted_check,
    )
)


def test_matrix_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input(case: Case, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exporter.app.time", _ClockAsBuilt())
    registry = CollectorRegistry()
    client = await aiohttp_client(create_app(plain_config(), registry))
    if case.setup is not None:
        first = await case.setup(client)
        assert first.status == 200
    assert outcomes(registry) == case.prior
    before = call_samples(registry, ("vobiz_call",))

    resp = await case.send(client)
    body = await resp.json()

    assert resp.status == case.status, body
    assert body["outcome"] == case.outcome
    assert set(body) == {"outcome", "detail"}
    expected = dict(case.prior)
    expected[(case.trunk, case.outcome)] = expected.get((case.trunk, case.outcome), 0.0) + 1.0
    assert outcomes(registry) == expected
    assert (
        registry.get_sample_value("vobiz_webhook_requests_total", {"trunk": case.trunk, "outcome": case.outcome})
        == expected[(case.trunk, case.outcome)]
    )
    after = call_samples(registry, ("vobiz_call",))
    if case.check is None:
        assert after == before
        assert invalid_fields(registry) == {}
    else:
        case.check(before, after, registry)
    if case.status in (405,):
        assert "Allow" in resp.headers
    if case.status in (413,):
        assert resp.headers.get("Connection", "").lower() == "close"
