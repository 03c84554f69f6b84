"""Unit tests for exporter.events: decoding, normalisation and the bounded label mappings."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from exporter import events
from exporter.events import (
    CallInitiated,
    Hangup,
    MalformedPayload,
    UnknownEvent,
    classify_rejection,
    event_disagrees,
    hangup_category,
    hangup_source,
    mask_number,
    normalise,
    parse_body,
    parse_form,
    parse_json_body,
    parse_rfc3339,
    payload_trunk_id,
    snake_case,
)

TS = "2025-01-15T10:30:45Z"
TS_UNIX = datetime(2025, 1, 15, 10, 30, 45, tzinfo=UTC).timestamp()


def initiated(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Event": "CallInitiated",
        "CallUUID": "uuid-1",
        "RequestID": "req-1",
        "Timestamp": TS,
        "From": "+919876543210",
        "To": "+918765432109",
        "TrunkID": "trunk-a",
        "Allowed": True,
        "Reason": "",
    }
    fields.update(extra)
    return {k: v for k, v in fields.items() if v is not _DROP}


def hangup(**extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Event": "Hangup",
        "CallUUID": "uuid-1",
        "RequestID": "req-1",
        "Timestamp": TS,
        "From": "+919876543210",
        "To": "+918765432109",
        "TrunkID": "trunk-a",
        "StartTime": "2025-01-15T10:28:00Z",
        "EndTime": TS,
        "Duration": 165,
        "Billsec": 150,
        "RingTime": 15,
        "Cost": 1.25,
        "Currency": "INR",
        "MOS": 4.3,
        "Jitter": 12.5,
        "HangupCauseName": "Normal Hangup",
        "HangupCauseCode": 4000,
        "HangupSource": "Caller",
    }
    fields.update(extra)
    return {k: v for k, v in fields.items() if v is not _DROP}


_DROP: Any = object()


def as_hangup(fields: dict[str, Any], header: str | None = None) -> Hangup:
    event = normalise(fields, header)
    assert isinstance(event, Hangup)
    return event


def as_initiated(fields: dict[str, Any], header: str | None = None) -> CallInitiated:
    event = normalise(fields, header)
    assert isinstance(event, CallInitiated)
    return event


# ----------------------------------------------------------------------------- parse_json_body


def test_parse_json_body_object() -> None:
    raw = json.dumps(hangup()).encode()
    assert parse_json_body(raw) == hangup()


def test_parse_json_body_keeps_nested_duplicates_apart_from_siblings() -> None:
    assert parse_json_body(b'{"a": {"x": 1}, "b": {"x": 2}}') == {"a": {"x": 1}, "b": {"x": 2}}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty body"),
        (b"\xff\xfe{}", "body is not valid UTF-8"),
        (b'{"a": "\xe9"}', "body is not valid UTF-8"),
        (b'{"Event": "Hangup"', "body is not valid JSON"),
        (b"   ", "body is not valid JSON"),
        (b"[1, 2]", "JSON body is not an object"),
        (b"[]", "JSON body is not an object"),
        (b'"Hangup"', "JSON body is not an object"),
        (b"42", "JSON body is not an object"),
        (b"null", "JSON body is not an object"),
        (b'{"a": 1, "a": 1}', "duplicate key in JSON object"),
        (b'{"a": {"b": {"c": 1, "c": 2}}}', "duplicate key in JSON object"),
        (b'{"a": [{"k": 1, "k": 2}]}', "duplicate key in JSON object"),
        (b'{"MOS": NaN}', "NaN or Infinity in JSON"),
        (b'{"Allowed": Infinity}', "NaN or Infinity in JSON"),
        (b'{"Cost": -Infinity}', "NaN or Infinity in JSON"),
        (b"\xef\xbb\xbf{}", "body is not valid JSON"),  # BOM: not plain JSON
    ],
)
def test_parse_json_body_malformed(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload) as info:
        parse_json_body(raw)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"a": ' + b"[" * 33 + b"]" * 33 + b"}",  # depth 34 parses in json, over our cap
        b'{"a": ' + b'{"b": ' * 32 + b"1" + b"}" * 32 + b"}",
    ],
)
def test_parse_json_body_deep_nesting_is_malformed(raw: bytes) -> None:
    with pytest.raises(MalformedPayload) as info:
        parse_json_body(raw)
    assert info.value.reason == "JSON nested too deeply"


def test_parse_json_body_depth_at_cap_and_brackets_in_strings_are_fine() -> None:
    # Depth exactly 32 (the object itself + 31 arrays) is accepted.
    raw = b'{"a": ' + b"[" * 31 + b"]" * 31 + b"}"
    assert parse_json_body(raw)["a"] == json.loads(b"[" * 31 + b"]" * 31)
    # Brackets inside strings trigger the slower check, which must not count them.
    text = "[" * 500 + "{" * 500
    assert parse_json_body(json.dumps({"Reason": text}).encode()) == {"Reason": text}


def test_malformed_reason_never_quotes_payload() -> None:
    secret = "SECRET-PAYLOAD-TEXT"
    for raw in (f'{{"{secret}": 1, "{secret}": 2}}'.encode(), f'{{"{secret}"'.encode()):
        with pytest.raises(MalformedPayload) as info:
            parse_json_body(raw)
        assert secret not in str(info.value)
    with pytest.raises(MalformedPayload) as info2:
        parse_form(secret)
    assert secret not in str(info2.value)


# ----------------------------------------------------------------------------- forms


def test_parse_form_fields() -> None:
    assert parse_form(b"Event=Hangup&CallUUID=abc&Reason=&From=%2B91987+65") == {
        "Event": "Hangup",
        "CallUUID": "abc",
        "Reason": "",
        "From": "+91987 65",
    }
    assert parse_form("Allowed=true&Cost=1.5") == {"Allowed": "true", "Cost": "1.5"}
    assert parse_form("Name=%E0%A4%A8") == {"Name": "\u0928"}
    assert parse_form(b"") == {}
    # Empty segments (a trailing "&", "&&") carry nothing and are skipped.
    assert parse_form(b"a=1&&b=2&") == {"a": "1", "b": "2"}
    assert parse_form("&a=1") == {"a": "1"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"a=1&a=2", "repeated form field"),
        ("a=1&b=2&a=1", "repeated form field"),
        (b"a=%ff", "form field is not valid UTF-8"),
        ("a=%C3%28", "form field is not valid UTF-8"),
        (b"a=\xff", "form body is not valid UTF-8"),
        (b"novalue", "form body is not valid x-www-form-urlencoded"),
        (
            "&".join(f"k{i}=v" for i in range(events.MAX_FORM_FIELDS + 1)),
            "form body is not valid x-www-form-urlencoded",
        ),
    ],
)
def test_parse_form_malformed(raw: bytes | str, reason: str) -> None:
    with pytest.raises(MalformedPayload) as info:
        parse_form(raw)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-www-form-urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "Application/X-WWW-Form-URLEncoded ;charset=utf-8",
    ],
)
def test_parse_body_form(content_type: str) -> None:
    assert parse_body(b"Event=Hangup&CallUUID=x", content_type) == {"Event": "Hangup", "CallUUID": "x"}


@pytest.mark.parametrize("content_type", ["application/json", "", "text/plain", "application/json; charset=utf-8"])
def test_parse_body_json_by_default(content_type: str) -> None:
    assert parse_body(b'{"Event": "Hangup"}', content_type) == {"Event": "Hangup"}
    with pytest.raises(MalformedPayload):
        parse_body(b"Event=Hangup", content_type)


# ----------------------------------------------------------------------------- trunk id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("aabbccdd-1234", "aabbccdd-1234"),
        (12345, "12345"),
        (1.5, "1.5"),  # as config.py turns a float id into text
        ("", None),
        (None, None),
        (True, None),
        (["x"], None),
        ({"x": 1}, None),
        ("x" * 129, None),
        ("bad\nid", None),
        ("\ud800", None),
    ],
)
def test_payload_trunk_id(value: Any, expected: str | None) -> None:
    assert payload_trunk_id({"TrunkID": value}) == expected


def test_payload_trunk_id_missing() -> None:
    assert payload_trunk_id({}) is None


# ----------------------------------------------------------------------------- event type


def test_call_initiated_allowed() -> None:
    ev = as_initiated(initiated())
    assert ev == CallInitiated(
        call_uuid="uuid-1",
        request_id="req-1",
        trunk_id="trunk-a",
        timestamp=TS_UNIX,
        allowed=True,
        reason="",
        from_number="+919876543210",
        to_number="+918765432109",
        invalid_fields=(),
    )


def test_full_hangup() -> None:
    ev = as_hangup(hangup())
    assert ev == Hangup(
        call_uuid="uuid-1",
        request_id="req-1",
        trunk_id="trunk-a",
        timestamp=TS_UNIX,
        duration=165.0,
        billsec=150.0,
        ring_time=15.0,
        cost=1.25,
        currency="INR",
        mos=4.3,
        jitter_seconds=0.0125,
        hangup_cause="normal_hangup",
        hangup_category="normal",
        hangup_source="caller",
        from_number="+919876543210",
        to_number="+918765432109",
        invalid_fields=(),
        hangup_code=4000,
        group="user",
        effective=True,
        sip_call_id=None,
    )


@pytest.mark.parametrize("text", ["CallInitiated", "callinitiated", " CALLINITIATED\t", "callInitiated"])
def test_event_name_case_and_blanks_initiated(text: str) -> None:
    assert isinstance(normalise(initiated(Event=text), None), CallInitiated)


@pytest.mark.parametrize("text", ["Hangup", "hangup", " HANGUP\n", "hangUp"])
def test_event_name_case_and_blanks_hangup(text: str) -> None:
    assert isinstance(normalise(hangup(Event=text), None), Hangup)


def test_body_event_wins_over_header() -> None:
    fields = hangup()
    assert isinstance(normalise(fields, "CallInitiated"), Hangup)
    assert event_disagrees(fields, "CallInitiated") is True
    assert event_disagrees(fields, "hangup") is False
    assert event_disagrees(fields, None) is False
    assert event_disagrees(fields, "  ") is False


@pytest.mark.parametrize("body_event", [_DROP, None, "", "   "])
def test_header_used_when_body_has_no_event(body_event: Any) -> None:
    fields = hangup(Event=body_event)
    assert isinstance(normalise(fields, "Hangup"), Hangup)
    assert isinstance(normalise(initiated(Event=body_event), " callinitiated "), CallInitiated)
    assert event_disagrees(fields, "Hangup") is False


def test_unknown_event_is_ignored_not_malformed() -> None:
    ev = normalise({"Event": "CallAnswered", "CallUUID": "u", "TrunkID": 7, "Timestamp": TS}, None)
    assert ev == UnknownEvent(event="CallAnswered", call_uuid="u", request_id=None, trunk_id="7", timestamp=TS_UNIX)
    # No CallUUID needed; the text is sanitised and bounded for logs.
    ev2 = normalise({}, "Weird event\n" + "x" * 200)
    assert ev2 == UnknownEvent(
        event="Weird_event_" + "x" * 52, call_uuid=None, request_id=None, trunk_id=None, timestamp=None
    )


@pytest.mark.parametrize(
    ("fields", "header", "reason"),
    [
        ({"CallUUID": "u"}, None, "no event type in body or header"),
        ({"CallUUID": "u", "Event": ""}, "", "no event type in body or header"),
        ({"CallUUID": "u", "Event": 1}, "Hangup", "Event is not a string"),
        ({"CallUUID": "u", "Event": True}, None, "Event is not a string"),
        ({"CallUUID": "u", "Event": ["Hangup"]}, None, "Event is not a string"),
        ({"CallUUID": "u", "Event": float("nan")}, None, "Event is not a string"),
    ],
)
def test_event_type_malformed(fields: dict[str, Any], header: str | None, reason: str) -> None:
    with pytest.raises(MalformedPayload) as info:
        normalise(fields, header)
    assert info.value.reason == reason


# ----------------------------------------------------------------------------- required fields


@pytest.mark.parametrize(
    "uuid", [_DROP, None, "", "   ", True, 1.5, ["u"], {"u": 1}, "x" * 257, "a\nb", "\ud800", float("nan")]
)
def test_call_uuid_required(uuid: Any) -> None:
    for fields in (hangup(CallUUID=uuid), initiated(CallUUID=uuid)):
        with pytest.raises(MalformedPayload) as info:
            normalise(fields, None)
        assert info.value.reason == "CallUUID is missing or invalid"


def test_call_uuid_numbers_and_limits() -> None:
    assert as_hangup(hangup(CallUUID=12345)).call_uuid == "12345"
    assert as_hangup(hangup(CallUUID=" abc ")).call_uuid == "abc"
    assert as_hangup(hangup(CallUUID="x" * 256)).call_uuid == "x" * 256


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("FALSE", False), (" True ", True), ("fAlSe", False)],
)
def test_allowed_values(value: Any, expected: bool) -> None:
    assert as_initiated(initiated(Allowed=value, Reason="No routes available")).allowed is expected


@pytest.mark.parametrize("value", [_DROP, None, "", "yes", "1", 1, 0, float("nan"), "nan", ["true"], {}])
def test_allowed_invalid_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedPayload) as info:
        normalise(initiated(Allowed=value), None)
    assert info.value.reason == "Allowed is missing or not a boolean"


def test_hangup_does_not_need_allowed() -> None:
    assert as_hangup(hangup(Allowed="garbage")).invalid_fields == ()


def test_optional_ids_dropped_when_invalid() -> None:
    ev = as_initiated(initiated(RequestID=["x"], TrunkID={"a": 1}))
    assert (ev.request_id, ev.trunk_id, ev.invalid_fields) == (None, None, ("request_id", "trunk_id"))
    ev2 = as_initiated(initiated(RequestID="", TrunkID=""))
    assert (ev2.request_id, ev2.trunk_id, ev2.invalid_fields) == (None, None, ())
    assert as_initiated(initiated(RequestID=99)).request_id == "99"


# ----------------------------------------------------------------------------- rejection reasons


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Insufficient balance: 0.50 INR", "insufficient_balance"),
        ("insufficient  BALANCE", "insufficient_balance"),
        ("CLI ownership validation failed", "cli_validation_failed"),
        ("cli validation failed", "cli_validation_failed"),
        ("Aadhaar verification pending", "aadhaar_pending"),
        ("KYC verification required", "kyc_required"),
        ("Rate limit exceeded", "rate_limited"),
        ("rate-limit exceeded", "rate_limited"),
        ("Concurrent call limit exceeded", "rate_limited"),
        ("CPS limit exceeded", "rate_limited"),
        ("No routes available", "no_routes"),
        ("no route to destination", "no_routes"),
        ("Client error", "other"),  # "cli" only as a word
        ("Something else", "other"),
        ("", "other"),
        (None, "other"),
        (42, "other"),
    ],
)
def test_rejection_reasons(text: Any, reason: str) -> None:
    assert classify_rejection(text) == reason
    ev = as_initiated(initiated(Allowed=False, Reason=text))
    assert (ev.allowed, ev.reason) == (False, reason)


def test_allowed_true_has_empty_reason() -> None:
    assert as_initiated(initiated(Allowed="true", Reason="Insufficient balance")).reason == ""


def test_rejection_without_reason_field() -> None:
    assert as_initiated(initiated(Allowed=False, Reason=_DROP)).reason == "other"


# ----------------------------------------------------------------------------- hangup causes


def test_cause_labels() -> None:
    assert snake_case("Canceled (Out Of Credits)") == "canceled_out_of_credits"
    expected = {
        0: "unknown",
        1010: "canceled_out_of_credits",
        1020: "canceled_simultaneous_dial_limit_reached",
        3000: "no_answer",
        3010: "busy_line",
        3020: "rejected",
        3050: "unallocated_number",
        4000: "normal_hangup",
        5030: "concurrency_limit_breached",
        6010: "ring_timeout_reached",
        7011: "error_reaching_answer_url",
        7012: "error_reaching_action_url",
        7013: "error_reaching_transfer_url",
        7014: "error_reaching_redirect_url",
        7022: "invalid_action_url",
        7023: "invalid_transfer_url",
        7024: "invalid_redirect_url",
        7032: "invalid_method_for_action_url",
        7033: "invalid_method_for_transfer_url",
        7034: "invalid_method_for_redirect_url",
        8011: "invalid_answer_xml",
        8012: "invalid_action_xml",
        8013: "invalid_transfer_xml",
        8014: "invalid_redirect_xml",
        9110: "confirm_key_challenge_failed",
    }
    for code, label in expected.items():
        assert events.HANGUP_CAUSE_BY_CODE[code] == label
    assert len(events.HANGUP_CAUSE_NAMES) == 54
    assert len(set(events.HANGUP_CAUSES)) == len(events.HANGUP_CAUSES) == 55


@pytest.mark.parametrize(
    ("code", "cause", "category"),
    [
        (0, "unknown", "canceled"),
        (999, "other", "other"),
        (1000, "canceled", "canceled"),
        (1999, "other", "canceled"),
        (2000, "invalid_destination_address", "destination"),
        (2999, "other", "destination"),
        (3000, "no_answer", "rejection"),
        (3059, "other", "rejection"),
        (3060, "other", "carrier"),
        (3070, "request_timeout", "carrier"),
        (3999, "other", "carrier"),
        (4000, "normal_hangup", "normal"),
        (4999, "other", "normal"),
        (5030, "concurrency_limit_breached", "system"),
        (6010, "ring_timeout_reached", "timeout"),
        (7011, "error_reaching_answer_url", "url_error"),
        (7999, "other", "url_error"),
        (8014, "invalid_redirect_xml", "xml_error"),
        (9110, "confirm_key_challenge_failed", "special"),
        (9999, "other", "special"),
        (10000, "other", "other"),
        (-1, "other", "other"),
        (10**30, "other", "other"),
    ],
)
def test_hangup_codes(code: int, cause: str, category: str) -> None:
    ev = as_hangup(hangup(HangupCauseCode=code, HangupCauseName=_DROP))
    assert (ev.hangup_cause, ev.hangup_category, ev.invalid_fields) == (cause, category, ())
    assert hangup_category(code) == category


@pytest.mark.parametrize("code", ["4000", " 4000 ", "4000.0", 4000.0, "4e3", "+4000"])
def test_hangup_code_number_forms(code: Any) -> None:
    ev = as_hangup(hangup(HangupCauseCode=code, HangupCauseName="Busy Line"))
    assert (ev.hangup_cause, ev.hangup_category, ev.invalid_fields) == ("normal_hangup", "normal", ())


def test_code_is_the_key_over_the_name() -> None:
    ev = as_hangup(hangup(HangupCauseCode=3010, HangupCauseName="Normal Hangup"))
    assert (ev.hangup_cause, ev.hangup_category) == ("busy_line", "rejection")


@pytest.mark.parametrize(
    ("code", "name", "cause", "category"),
    [
        (_DROP, "Busy Line", "busy_line", "rejection"),
        ("", "busy line", "busy_line", "rejection"),
        (None, "  BUSY LINE ", "busy_line", "rejection"),
        (_DROP, "Canceled (Out Of Credits)", "canceled_out_of_credits", "canceled"),
        (_DROP, "Unknown", "unknown", "canceled"),
        (_DROP, "Not A Documented Name", "other", "other"),
        (_DROP, "", "other", "other"),
        (_DROP, 4000, "other", "other"),
        (_DROP, _DROP, "other", "other"),
        # undocumented code: cause "other", the code's range the category; the name never
        # overrides a parsed code, so cause and category always agree
        (9999, "Busy Line", "other", "special"),
        (3065, "Machine Detected", "other", "carrier"),
        (12345, "Normal Hangup", "other", "other"),
    ],
)
def test_hangup_name_fallback(code: Any, name: Any, cause: str, category: str) -> None:
    ev = as_hangup(hangup(HangupCauseCode=code, HangupCauseName=name))
    assert (ev.hangup_cause, ev.hangup_category, ev.invalid_fields) == (cause, category, ())


@pytest.mark.parametrize(
    ("code", "name", "cause", "category"),
    [
        ("abc", "Normal Hangup", "normal_hangup", "normal"),
        ("4000.5", _DROP, "other", "other"),
        (True, "Busy Line", "busy_line", "rejection"),
        ([4000], _DROP, "other", "other"),
        (float("nan"), _DROP, "other", "other"),
        (float("inf"), "Rejected", "rejected", "rejection"),
        ("1e999", _DROP, "other", "other"),
    ],
)
def test_unparsable_hangup_code(code: Any, name: Any, cause: str, category: str) -> None:
    ev = as_hangup(hangup(HangupCauseCode=code, HangupCauseName=name))
    assert (ev.hangup_cause, ev.hangup_category, ev.invalid_fields) == (
        cause,
        category,
        ("hangup_cause_code",),
    )


@pytest.mark.parametrize(
    ("value", "source"),
    [
        ("Caller", "caller"),
        ("caller", "caller"),
        ("Callee", "callee"),
        ("Call recipient", "callee"),
        ("Call Recipient", "callee"),
        ("Vobiz", "vobiz"),
        ("Carrier", "carrier"),
        ("API Request", "api_request"),
        ("api_request", "api_request"),
        ("Answer XML", "answer_xml"),
        ("Error", "error"),
        ("", "unknown"),
        ("Someone", "unknown"),
        (None, "unknown"),
        (7, "unknown"),
        (_DROP, "unknown"),
    ],
)
def test_hangup_sources(value: Any, source: str) -> None:
    ev = as_hangup(hangup(HangupSource=value))
    assert (ev.hangup_source, ev.invalid_fields) == (source, ())
    if value is not _DROP:
        assert hangup_source(value) == source


# ----------------------------------------------------------------------------- currency, cost


@pytest.mark.parametrize(
    ("value", "currency", "invalid"),
    [
        ("INR", "INR", ()),
        (" USD ", "USD", ()),
        ("inr", "other", ("currency",)),
        ("Inr", "other", ("currency",)),
        ("RUPEES", "other", ("currency",)),
        ("IN", "other", ("currency",)),
        ("₹", "other", ("currency",)),
        (356, "other", ("currency",)),
        ("", "other", ()),
        (None, "other", ()),
        (_DROP, "other", ()),
    ],
)
def test_currency(value: Any, currency: str, invalid: tuple[str, ...]) -> None:
    ev = as_hangup(hangup(Currency=value))
    assert (ev.currency, ev.invalid_fields) == (currency, invalid)


@pytest.mark.parametrize(
    ("value", "cost", "invalid"),
    [
        (0, 0.0, ()),
        ("0", 0.0, ()),
        ("12.5", 12.5, ()),
        (3, 3.0, ()),
        ("", None, ()),
        (_DROP, None, ()),
        (-0.01, None, ("cost",)),
        ("-1", None, ("cost",)),
        (float("inf"), None, ("cost",)),
        (float("nan"), None, ("cost",)),
        ("nan", None, ("cost",)),
        ("Infinity", None, ("cost",)),
        ("1e999", None, ("cost",)),
        (10**400, None, ("cost",)),
        (True, None, ("cost",)),
        ("1_000", None, ("cost",)),
        ("\u0661\u0662", None, ("cost",)),  # Arabic-Indic digits: float() would take them
        ("12 INR", None, ("cost",)),
        ([1], None, ("cost",)),
    ],
)
def test_cost(value: Any, cost: float | None, invalid: tuple[str, ...]) -> None:
    ev = as_hangup(hangup(Cost=value))
    assert (ev.cost, ev.invalid_fields) == (cost, invalid)


# ----------------------------------------------------------------------------- durations


@pytest.mark.parametrize("key,name", [("Duration", "duration"), ("Billsec", "billsec"), ("RingTime", "ring_time")])
@pytest.mark.parametrize(
    ("value", "expected", "is_invalid"),
    [
        (0, 0.0, False),
        ("0", 0.0, False),
        ("12", 12.0, False),
        ("12.5", 12.5, False),
        (86400, 86400.0, False),
        ("", None, False),
        (None, None, False),
        (86400.5, None, True),
        (-1, None, True),
        ("-0.5", None, True),
        ("abc", None, True),
        (False, None, True),
        (float("nan"), None, True),
        (1e308 * 10, None, True),
        ({"s": 1}, None, True),
    ],
)
def test_seconds_fields(key: str, name: str, value: Any, expected: float | None, is_invalid: bool) -> None:
    ev = as_hangup(hangup(**{key: value, "Jitter": _DROP}))
    assert getattr(ev, name) == expected
    assert ev.invalid_fields == ((name,) if is_invalid else ())


# ----------------------------------------------------------------------------- MOS and jitter


@pytest.mark.parametrize(
    ("value", "mos", "invalid"),
    [
        (4.3, 4.3, ()),
        ("4.3", 4.3, ()),
        (1, 1.0, ()),
        (5, 5.0, ()),
        (0, None, ()),
        ("0", None, ()),
        (0.0, None, ()),
        ("", None, ()),
        (None, None, ()),
        (_DROP, None, ()),
        (0.5, None, ("mos",)),
        (5.01, None, ("mos",)),
        (-1, None, ("mos",)),
        ("bad", None, ("mos",)),
        (float("nan"), None, ("mos",)),
        (True, None, ("mos",)),
    ],
)
def test_mos(value: Any, mos: float | None, invalid: tuple[str, ...]) -> None:
    ev = as_hangup(hangup(MOS=value))
    assert (ev.mos, ev.invalid_fields) == (mos, invalid)


@pytest.mark.parametrize(
    ("jitter", "billsec", "seconds", "invalid"),
    [
        (12.5, 150, 0.0125, ()),
        ("30", 150, 0.03, ()),
        (0, 150, 0.0, ()),  # answered: a real 0
        (0, 0, None, ()),  # unanswered: not measured
        (0, _DROP, None, ()),
        ("0", "0", None, ()),
        (0, "", None, ()),
        (5, 0, 0.005, ()),  # a non-zero jitter is measured even if unanswered
        ("", 150, None, ()),
        (_DROP, 150, None, ()),
        (None, 150, None, ()),
        (-1, 150, None, ("jitter",)),
        ("-0.1", 150, None, ("jitter",)),
        (float("inf"), 150, None, ("jitter",)),
        ("high", 150, None, ("jitter",)),
        (False, 150, None, ("jitter",)),
    ],
)
def test_jitter(jitter: Any, billsec: Any, seconds: float | None, invalid: tuple[str, ...]) -> None:
    ev = as_hangup(hangup(Jitter=jitter, Billsec=billsec))
    assert ev.jitter_seconds == seconds
    assert ev.invalid_fields == invalid


def test_unanswered_call_sample() -> None:
    """An unanswered call: MOS 0, Jitter 0, Billsec 0, RingTime 0 observed, Cost 0 observed."""
    ev = as_hangup(
        hangup(
            Billsec="0",
            Duration="30",
            RingTime=0,
            Cost="0",
            MOS="0",
            Jitter="0",
            HangupCauseCode="3000",
            HangupCauseName="No Answer",
            HangupSource="Call recipient",
        )
    )
    assert (ev.billsec, ev.duration, ev.ring_time, ev.cost, ev.mos, ev.jitter_seconds) == (
        0.0,
        30.0,
        0.0,
        0.0,
        None,
        None,
    )
    assert (ev.hangup_cause, ev.hangup_category, ev.hangup_source, ev.invalid_fields) == (
        "no_answer",
        "rejection",
        "callee",
        (),
    )


def test_invalid_fields_listed_in_order_and_event_kept() -> None:
    ev = as_hangup(
        hangup(
            Timestamp="yesterday",
            Duration=-5,
            Cost="x",
            Currency="inr",
            MOS=9,
            Jitter=-2,
            HangupCauseCode="x",
        )
    )
    assert ev.invalid_fields == (
        "timestamp",
        "duration",
        "cost",
        "currency",
        "mos",
        "jitter",
        "hangup_cause_code",
    )
    assert set(ev.invalid_fields) <= set(events.INVALID_FIELD_NAMES)
    # the unparsable code falls back to the documented name
    assert (ev.call_uuid, ev.billsec, ev.hangup_cause, ev.hangup_category) == (
        "uuid-1",
        150.0,
        "normal_hangup",
        "normal",
    )


def test_every_invalid_field_at_once_in_table_order() -> None:
    """All thirteen listed, in the order of normalise's field table, each under its documented name."""
    ev = as_hangup(
        hangup(
            Timestamp="yesterday",
            RequestID=["x"],
            TrunkID="x" * 129,
            StartTime="soon",
            EndTime=5,
            Duration=86400.5,
            Billsec="-1",
            RingTime=True,
            Cost=1e7,
            Currency="inr",
            MOS=0.5,
            Jitter="nan",
            HangupCauseCode=4000.5,
        )
    )
    expected = (
        "timestamp",
        "request_id",
        "trunk_id",
        "start_time",
        "end_time",
        "duration",
        "billsec",
        "ring_time",
        "cost",
        "currency",
        "mos",
        "jitter",
        "hangup_cause_code",
    )
    assert ev.invalid_fields == expected
    assert sorted(expected) == sorted(events.INVALID_FIELD_NAMES)
    assert (ev.request_id, ev.trunk_id, ev.timestamp, ev.duration, ev.billsec, ev.ring_time) == (None,) * 6
    assert (ev.cost, ev.currency, ev.mos, ev.jitter_seconds, ev.hangup_code) == (None, "other", None, None, 4000)


# ----------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-01-15T10:30:45Z", TS_UNIX),
        ("2025-01-15T10:30:45z", TS_UNIX),
        ("2025-01-15t10:30:45Z", TS_UNIX),
        ("2025-01-15 10:30:45Z", TS_UNIX),
        ("2025-01-15T16:00:45+05:30", TS_UNIX),
        ("2025-01-15T05:30:45-05:00", TS_UNIX),
        ("2025-01-15T10:30:45+00:00", TS_UNIX),
        ("2025-01-15T10:30:45-00:00", TS_UNIX),
        ("2025-01-15T10:30:45.5Z", TS_UNIX + 0.5),
        ("2025-01-15T10:30:45.123Z", TS_UNIX + 0.123),
        ("2025-01-15T10:30:45.123456789Z", TS_UNIX + 0.123456),
        ("2025-01-15T16:00:45.250+05:30", TS_UNIX + 0.25),
        ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC).timestamp()),  # leap second
        (" 2025-01-15T10:30:45Z ", TS_UNIX),
    ],
)
def test_timestamp_valid(text: str, expected: float) -> None:
    value = parse_rfc3339(text)
    assert value == pytest.approx(expected, abs=1e-6)
    ev = as_initiated(initiated(Timestamp=text))
    assert ev.timestamp == value
    assert ev.invalid_fields == ()


@pytest.mark.parametrize(
    "text",
    [
        _DROP,
        None,
        "",
        "garbage",
        "2025-01-15T10:30:45",  # no offset: not RFC 3339
        "2025-01-15",
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-01-15T24:00:00Z",
        "2025-01-15T10:60:00Z",
        "2025-01-15T10:30:61Z",
        "2025-01-15T10:30:45+24:00",
        "2025-01-15T10:30:45+05:60",
        "0000-01-01T00:00:00Z",
        "20250115T103045Z",
        "2025-W03-3T10:30:45Z",
        "\u0662025-01-15T10:30:45Z",
        1736937045,
        True,
        ["2025-01-15T10:30:45Z"],
        "2025-01-15T10:30:45Z" + " " * 100,
    ],
)
def test_timestamp_invalid(text: Any) -> None:
    if text is not _DROP:
        assert parse_rfc3339(text) is None
    ev = as_initiated(initiated(Timestamp=text))
    assert (ev.timestamp, ev.invalid_fields) == (None, ("timestamp",))
    h = as_hangup(hangup(Timestamp=text))
    assert (h.timestamp, h.invalid_fields) == (None, ("timestamp",))


@pytest.mark.parametrize(("key", "name"), [("StartTime", "start_time"), ("EndTime", "end_time")])
def test_start_end_time(key: str, name: str) -> None:
    assert as_hangup(hangup(**{key: _DROP})).invalid_fields == ()
    assert as_hangup(hangup(**{key: ""})).invalid_fields == ()
    assert as_hangup(hangup(**{key: "2025-01-15T10:30:45.1+05:30"})).invalid_fields == ()
    assert as_hangup(hangup(**{key: "soon"})).invalid_fields == (name,)
    assert as_hangup(hangup(**{key: 5})).invalid_fields == (name,)


# ----------------------------------------------------------------------------- forms end to end


def test_form_hangup_all_strings() -> None:
    raw = (
        b"Event=Hangup&CallUUID=u-9&Timestamp=2025-01-15T10%3A30%3A45Z&Duration=60&Billsec=45&RingTime=15"
        b"&Cost=0.75&Currency=INR&MOS=4.1&Jitter=8&HangupCauseCode=4000&HangupSource=Callee&TrunkID=t1"
    )
    ev = as_hangup(parse_body(raw, "application/x-www-form-urlencoded"))
    assert (ev.call_uuid, ev.timestamp, ev.duration, ev.billsec, ev.ring_time) == (
        "u-9",
        TS_UNIX,
        60.0,
        45.0,
        15.0,
    )
    assert (ev.cost, ev.currency, ev.mos, ev.jitter_seconds) == (0.75, "INR", 4.1, 0.008)
    assert (ev.hangup_cause, ev.hangup_category, ev.hangup_source, ev.trunk_id) == (
        "normal_hangup",
        "normal",
        "callee",
        "t1",
    )
    assert ev.invalid_fields == ()


def test_query_string_call_initiated() -> None:
    fields = parse_form("Event=CallInitiated&CallUUID=q1&Allowed=False&Reason=KYC+verification+required")
    ev = as_initiated(fields)
    assert (ev.call_uuid, ev.allowed, ev.reason, ev.invalid_fields) == (
        "q1",
        False,
        "kyc_required",
        ("timestamp",),
    )


# ----------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+919876543210", "+9198******10"),
        ("919876543210", "9198******10"),
        ("+91 98765 43210", "+9198******10"),
        ("1234567", "*****67"),  # under 10 digits: only the last two show
        ("+123456789", "+*******89"),
        ("1234567890", "1234****90"),
        ("123456", "****56"),
        ("+12", "+12"),
        ("7", "7"),
        ("", ""),
        (None, ""),
        ("anonymous", ""),
        ("sip:alice@example.com", ""),
        ("sip:+919876543210@sip.example.com", "9198******10"),
    ],
)
def test_mask_number(number: str | None, masked: str) -> None:
    assert mask_number(number) == masked


def test_phone_numbers_kept_only_as_text() -> None:
    ev = as_hangup(hangup(From=919876543210, To=["x"]))
    assert (ev.from_number, ev.to_number) == ("919876543210", None)
    assert as_hangup(hangup(From="", To="x" * 500)).to_number == "x" * events.MAX_PHONE_TEXT


# --- round-2 decisions: bounded sums, long integers, who acts ---------------------------------


@pytest.mark.parametrize(
    ("field", "value", "invalid"),
    [
        ("Cost", 1_000_000, ()),
        ("Cost", 1_000_000.01, ("cost",)),
        ("Cost", 1e308, ("cost",)),
        ("Jitter", 10_000, ()),
        ("Jitter", 10_000.5, ("jitter",)),
        ("Jitter", 1e308, ("jitter",)),
        ("RingTime", 86_400, ()),
        ("RingTime", 86_401, ("ring_time",)),
    ],
)
def test_upper_bounds_make_invalid_fields(field: str, value: float, invalid: tuple[str, ...]) -> None:
    ev = as_hangup(hangup(**{field: value}))
    assert ev.invalid_fields == invalid


@pytest.mark.parametrize(
    ("field", "label"),
    [
        ("Duration", "duration"),
        ("Cost", "cost"),
        ("MOS", "mos"),
        ("Jitter", "jitter"),
        ("HangupCauseCode", "hangup_cause_code"),
        ("RingTime", "ring_time"),
    ],
)
def test_integer_too_long_in_optional_field_is_invalid_not_malformed(field: str, label: str) -> None:
    raw = json.dumps(hangup(**{field: 7})).replace(f'"{field}": 7', f'"{field}": ' + "9" * 5000).encode()
    ev = normalise(parse_json_body(raw), None)
    assert isinstance(ev, Hangup)
    assert ev.invalid_fields == (label,)


def test_integer_too_long_in_required_field_is_malformed() -> None:
    raw = json.dumps(hangup(CallUUID=7)).replace('"CallUUID": 7', '"CallUUID": ' + "9" * 5000).encode()
    with pytest.raises(MalformedPayload, match="CallUUID"):
        normalise(parse_json_body(raw), None)


@pytest.mark.parametrize(
    ("code", "ring", "billsec", "group", "effective"),
    [
        (4000, 10, 60, "user", True),
        (3000, 30, 0, "user", True),
        (3010, 0, 0, "user", True),
        (3100, 0, 0, "user", True),
        (3110, 5, 0, "user", True),
        (6010, 60, 0, "user", True),
        (1000, 12, 0, "user", True),  # the caller gave up on a ringing phone
        (1000, 0, 0, "other", False),  # canceled before it rang
        (1020, 0, 0, "dialler", False),
        (5030, 0, 0, "dialler", False),
        (3030, 0, 0, "caller_id", False),
        (3130, 0, 0, "caller_id", False),
        (1010, 5, 40, "account", True),  # answered, then cut for credit: effective, account acts
        (2040, 0, 0, "account", False),
        (7012, 0, 0, "account", False),
        (8011, 0, 0, "account", False),
        (5010, 0, 0, "provider", False),
        (3090, 0, 0, "carrier", False),
        (3040, 0, 0, "destination", False),
        (3050, 0, 0, "destination", False),
        (6020, 4, 30, "media", True),
        (9000, 0, 0, "other", False),
        (4999, 0, 0, "other", False),
    ],
)
def test_who_acts_group_and_ner_effectiveness(code: int, ring: int, billsec: int, group: str, effective: bool) -> None:
    ev = as_hangup(hangup(HangupCauseCode=code, HangupCauseName=_DROP, RingTime=ring, Billsec=billsec))
    assert (ev.group, ev.effective, ev.hangup_code) == (group, effective, code)


def test_group_follows_the_name_when_the_code_is_missing() -> None:
    ev = as_hangup(hangup(HangupCauseCode=_DROP, HangupCauseName="Network Error", Billsec=0))
    assert (ev.hangup_cause, ev.hangup_category, ev.group, ev.hangup_code) == (
        "network_error",
        "system",
        "provider",
        5000,
    )
