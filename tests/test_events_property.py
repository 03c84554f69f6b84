"""Property tests: whatever arrives, events.py raises only MalformedPayload and labels stay bounded."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import events
from exporter.events import CallInitiated, Hangup, MalformedPayload, UnknownEvent

SETTINGS = settings(max_examples=300, deadline=None)

FIELD_NAMES = [
    "Event",
    "CallUUID",
    "RequestID",
    "Timestamp",
    "From",
    "To",
    "Direction",
    "Status",
    "TrunkID",
    "Allowed",
    "Reason",
    "StartTime",
    "EndTime",
    "Duration",
    "Billsec",
    "RingTime",
    "Cost",
    "Currency",
    "MOS",
    "Jitter",
    "HangupCauseName",
    "HangupCauseCode",
    "HangupSource",
]
CURRENCY_LABEL = re.compile(r"^[A-Z]{3}$|^other$")

interesting_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "CallInitiated",
            "hangup",
            "true",
            "FALSE",
            "nan",
            "NaN",
            "inf",
            "-Infinity",
            "1e999",
            "-0",
            "4000",
            "4000.0",
            "9999",
            "12.5",
            "1_000",
            "0x10",
            "INR",
            "inr",
            "Normal Hangup",
            "busy line",
            "Call recipient",
            "API Request",
            "Insufficient balance: 0.50 INR",
            "2025-01-15T10:30:45Z",
            "2025-01-15T10:30:45.123+05:30",
            "2016-12-31T23:59:60Z",
            "9999-12-31T23:59:60-23:59",
            "0001-01-01T00:00:00+23:59",
            "\ud800",
            "\x00",
        ]
    ),
    st.from_regex(r"\A[+-]?\d{1,30}(\.\d{0,10})?([eE][+-]?\d{1,4})?\Z"),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,12})?([Zz]|[+-]\d{2}:\d{2})\Z"),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    interesting_text,
)
# Weighted towards numbers, so the numeric fields see edge values often.
numberish = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -0.0, 0, 0.0, 1, 5, 5.5, 86400, 86400.5, -1, 10**400]),
    st.sampled_from(["inf", "-inf", "nan", "1e999", "0", "0.0", "-1", "86401", "5.01", "4000.0", "", " "]),
    st.integers(),
)
field_values = st.one_of(numberish, scalars)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=6,
)
field_dicts = st.dictionaries(
    st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12)),
    json_values,
    max_size=12,
)
header_events = st.one_of(st.none(), st.sampled_from(["CallInitiated", "Hangup", "hangup ", "", "Other"]), st.text())


def check_bounded(event: events.Event) -> None:
    if isinstance(event, CallInitiated):
        assert isinstance(event.call_uuid, str) and 0 < len(event.call_uuid) <= events.MAX_ID_LENGTH
        assert event.call_uuid.isprintable()
        assert isinstance(event.allowed, bool)
        if event.allowed:
            assert event.reason == ""
        else:
            assert event.reason in events.REJECTION_REASONS
        assert set(event.invalid_fields) <= set(events.INVALID_FIELD_NAMES)
        assert len(event.invalid_fields) == len(set(event.invalid_fields))
    elif isinstance(event, Hangup):
        assert isinstance(event.call_uuid, str) and 0 < len(event.call_uuid) <= events.MAX_ID_LENGTH
        assert event.hangup_cause in events.HANGUP_CAUSES
        assert event.hangup_category in events.HANGUP_CATEGORIES
        assert event.hangup_source in events.HANGUP_SOURCES
        assert CURRENCY_LABEL.match(event.currency)
        assert set(event.invalid_fields) <= set(events.INVALID_FIELD_NAMES)
        assert len(event.invalid_fields) == len(set(event.invalid_fields))
        for name in ("duration", "billsec", "ring_time"):
            value = getattr(event, name)
            assert value is None or (isinstance(value, float) and 0.0 <= value <= 86400.0)
        assert event.cost is None or (math.isfinite(event.cost) and event.cost >= 0.0)
        assert event.mos is None or 1.0 <= event.mos <= 5.0
        assert event.jitter_seconds is None or (math.isfinite(event.jitter_seconds) and event.jitter_seconds >= 0)
    else:
        assert isinstance(event, UnknownEvent)
        assert re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", event.event)
    assert event.timestamp is None or math.isfinite(event.timestamp)
    if event.trunk_id is not None:
        assert 0 < len(event.trunk_id) <= events.MAX_TRUNK_ID_LENGTH


@SETTINGS
@given(st.binary(max_size=512))
def test_parse_json_body_arbitrary_bytes(raw: bytes) -> None:
    try:
        fields = events.parse_json_body(raw)
    except MalformedPayload as exc:
        assert exc.reason and len(exc.reason) < 80
    else:
        assert isinstance(fields, dict)


@SETTINGS
@given(json_values)
def test_parse_json_body_round_trip(value: Any) -> None:
    raw = json.dumps({"v": value}).encode()
    try:
        fields = events.parse_json_body(raw)
    except MalformedPayload as exc:
        # Only NaN/Infinity (json.dumps writes them) or a huge int may be refused.
        assert exc.reason in ("NaN or Infinity in JSON", "body is not valid JSON")
    else:
        assert list(fields) == ["v"]


@SETTINGS
@given(st.text(max_size=300))
def test_parse_form_arbitrary_text(text: str) -> None:
    try:
        fields = events.parse_form(text)
    except MalformedPayload as exc:
        assert exc.reason and len(exc.reason) < 80
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["application/x-www-form-urlencoded", "application/json", ""]))
def test_parse_body_arbitrary_bytes(raw: bytes, content_type: str) -> None:
    try:
        fields = events.parse_body(raw, content_type)
    except MalformedPayload as exc:
        assert exc.reason and len(exc.reason) < 80
    else:
        assert isinstance(fields, dict)


@SETTINGS
@given(field_dicts, header_events)
def test_normalise_arbitrary_fields(fields: dict[str, Any], header: str | None) -> None:
    try:
        event = events.normalise(fields, header)
    except MalformedPayload as exc:
        assert exc.reason and len(exc.reason) < 80
    else:
        check_bounded(event)
    assert isinstance(events.event_disagrees(fields, header), bool)
    trunk_id = events.payload_trunk_id(fields)
    assert trunk_id is None or 0 < len(trunk_id) <= events.MAX_TRUNK_ID_LENGTH


@SETTINGS
@given(
    st.sampled_from(["CallInitiated", "Hangup"]),
    st.fixed_dictionaries({}, optional={name: field_values for name in FIELD_NAMES if name != "Event"}),
)
def test_normalise_mostly_valid_shapes(kind: str, extra: dict[str, Any]) -> None:
    """A valid core with arbitrary other fields: never malformed, every invalid field is named."""
    fields = {**extra, "Event": kind, "CallUUID": "u-1", "Allowed": True}
    event = events.normalise(fields, None)
    check_bounded(event)
    assert isinstance(event, CallInitiated if kind == "CallInitiated" else Hangup)


@SETTINGS
@given(st.one_of(st.none(), st.text(max_size=80)))
def test_mask_number_never_leaks_middle_digits(number: str | None) -> None:
    masked = events.mask_number(number)
    digits = [c for c in masked if c.isdigit()]
    assert len(digits) <= 6
    assert set(masked) <= set("+*0123456789")


@SETTINGS
@given(
    st.sampled_from(["Duration", "Billsec", "RingTime", "Cost", "MOS", "Jitter", "HangupCauseCode", "Currency"]),
    st.one_of(numberish, interesting_text),
    st.one_of(numberish, st.just(150)),
)
def test_normalise_numeric_edges(name: str, value: Any, billsec: Any) -> None:
    """One numeric field at a time gets edge values; a dropped field is always named."""
    fields = {"Event": "Hangup", "CallUUID": "u-1", "Timestamp": "2025-01-15T10:30:45Z", "Billsec": billsec}
    fields[name] = value
    event = events.normalise(fields, None)
    assert isinstance(event, Hangup)
    check_bounded(event)
    snake = {"RingTime": "ring_time", "HangupCauseCode": "hangup_cause_code"}.get(name, name.lower())
    if snake in event.invalid_fields and snake != "hangup_cause_code":
        kept = getattr(event, "jitter_seconds" if snake == "jitter" else snake)
        assert kept == ("other" if snake == "currency" else None)
