"""Parse and normalise Vobiz webhook payloads into typed events.

No aiohttp in here: the handlers pass raw bytes / strings in and get immutable records out
(NamedTuples: one is built per request, and a tuple builds ~5x faster than a frozen dataclass).
Everything that becomes a label is mapped onto a bounded set here, so ``metrics`` never sees
free text. The only exception raised is :class:`MalformedPayload`.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple

CALL_INITIATED = "call_initiated"
HANGUP = "hangup"

REJECTION_REASONS = (
    "insufficient_balance",
    "cli_validation_failed",
    "aadhaar_pending",
    "kyc_required",
    "rate_limited",
    "no_routes",
    "other",
)
HANGUP_CATEGORIES = (
    "canceled",
    "destination",
    "rejection",
    "carrier",
    "normal",
    "system",
    "timeout",
    "url_error",
    "xml_error",
    "special",
    "other",
)
HANGUP_SOURCES = ("caller", "callee", "vobiz", "carrier", "api_request", "answer_xml", "error", "unknown")
# Who must act on how a call ended (TELECOM.md, "who acts"): the `group` label of
# vobiz_calls_ended_by_group_total. "user" is a normal outcome (answered and hung up, no answer,
# busy, declined, ring timeout, caller gave up on a ringing phone): nobody acts.
OUTCOME_GROUPS = (
    "user",
    "dialler",
    "caller_id",
    "account",
    "provider",
    "carrier",
    "destination",
    "media",
    "other",
)
USER_OUTCOME = "user"


class MalformedPayload(ValueError):
    """The request cannot be read as an event (answer 400 ``malformed``). ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallInitiated(NamedTuple):
    call_uuid: str
    request_id: str | None
    trunk_id: str | None
    timestamp: float | None  # unix seconds of the signed Timestamp; None when missing/invalid
    allowed: bool
    reason: str  # one of REJECTION_REASONS when not allowed, "" when allowed
    from_number: str | None  # for masked logging only, never a label
    to_number: str | None
    invalid_fields: tuple[str, ...]  # snake_case names of fields dropped as invalid


class Hangup(NamedTuple):
    call_uuid: str
    request_id: str | None
    trunk_id: str | None
    timestamp: float | None
    duration: float | None  # seconds, None = not observed
    billsec: float | None
    ring_time: float | None
    cost: float | None
    currency: str  # upper-case 3-letter code, or "other"
    mos: float | None  # None = not measured
    jitter_seconds: float | None
    hangup_cause: str  # snake_case documented name, or "other"
    hangup_category: str  # one of HANGUP_CATEGORIES
    hangup_source: str  # one of HANGUP_SOURCES
    from_number: str | None
    to_number: str | None
    invalid_fields: tuple[str, ...]
    hangup_code: int | None = None  # the code the cause was read from (for logs), None if none
    group: str = "other"  # one of OUTCOME_GROUPS
    effective: bool = False  # answered or a user outcome: the NER numerator (TELECOM.md)
    sip_call_id: str | None = None  # for the failed-call log line only, never a label

    @property
    def answered(self) -> bool:
        return self.billsec is not None and self.billsec > 0


class UnknownEvent(NamedTuple):
    """Verified but of an event type we do not measure: answered 200 ``ignored``."""

    event: str
    call_uuid: str | None
    request_id: str | None
    trunk_id: str | None
    timestamp: float | None


Event = CallInitiated | Hangup | UnknownEvent


# --------------------------------------------------------------------------------------------
# Implementation. Everything below maps untrusted values onto bounded sets; nothing here may
# raise anything but MalformedPayload, whatever the payload holds.
# --------------------------------------------------------------------------------------------

MAX_JSON_DEPTH = 32  # nesting of objects/arrays; real payloads are flat (depth 1)
MAX_FORM_FIELDS = 1000  # bounds parse_qsl work on a hostile body
MAX_ID_LENGTH = 256  # CallUUID / RequestID
MAX_TRUNK_ID_LENGTH = 128  # as config.py allows for trunk ids
MAX_NUMBER_TEXT = 64  # longer "numbers" are garbage, not values worth parsing
MAX_DURATION_SECONDS = 86400.0  # Duration, Billsec, RingTime: a call longer than a day is garbage
# Upper bounds beyond which a value is an invalid field (dropped and counted), so no histogram
# _sum can be poisoned towards infinity by one hostile or broken payload.
MAX_COST = 1_000_000.0  # per call, in any currency
MAX_JITTER_MS = 10_000.0
MAX_INT_DIGITS = 64  # a JSON integer literal longer than this is never a real value
MAX_PHONE_TEXT = 128  # From / To are kept (for masked logs) at most this long

# The provider's documented hangup codes (README, "Metrics"), code -> name. Labels derive from the names.
HANGUP_CAUSE_NAMES: dict[int, str] = {
    0: "Unknown",
    1000: "Canceled",
    1010: "Canceled (Out Of Credits)",
    1020: "Canceled (Simultaneous dial limit reached)",
    2000: "Invalid Destination Address",
    2010: "Destination Out Of Service",
    2020: "Endpoint Not Registered",
    2030: "Destination Country Barred",
    2040: "Destination Number Barred",
    2050: "Destination Prefix Barred",
    2060: "Loop Detected",
    2070: "Violates Media Anchoring",
    3000: "No Answer",
    3010: "Busy Line",
    3020: "Rejected",
    3030: "Unknown Caller ID",
    3040: "Forbidden",
    3050: "Unallocated number",
    3070: "Request timeout",
    3080: "Internal server error from carrier",
    3090: "Network congestion from carrier",
    3100: "Busy everywhere",
    3110: "Declined",
    3120: "User does not exist anywhere",
    3130: "Spam block",
    3140: "DNO Caller ID",
    4000: "Normal Hangup",
    4010: "End Of XML Instructions",
    4020: "Multiparty Call Ended",
    4030: "Kicked Out Of Multiparty Call",
    5000: "Network Error",
    5010: "Internal Error",
    5020: "Routing Error",
    5030: "Concurrency Limit Breached",
    6000: "Scheduled Hangup",
    6010: "Ring Timeout Reached",
    6020: "Media Timeout",
    7011: "Error Reaching Answer URL",
    7012: "Error Reaching Action URL",
    7013: "Error Reaching Transfer URL",
    7014: "Error Reaching Redirect URL",
    7022: "Invalid Action URL",
    7023: "Invalid Transfer URL",
    7024: "Invalid Redirect URL",
    7032: "Invalid Method For Action URL",
    7033: "Invalid Method For Transfer URL",
    7034: "Invalid Method For Redirect URL",
    8011: "Invalid Answer XML",
    8012: "Invalid Action XML",
    8013: "Invalid Transfer XML",
    8014: "Invalid Redirect XML",
    9000: "Lost Race",
    9100: "Machine Detected",
    9110: "Confirm Key Challenge Failed",
}

_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")


def snake_case(name: str) -> str:
    """The label form of a documented name: lower-case, non-alphanumeric runs -> "_", trimmed."""
    return _NON_ALNUM_RE.sub("_", name.lower()).strip("_")


HANGUP_CAUSE_BY_CODE: dict[int, str] = {code: snake_case(name) for code, name in HANGUP_CAUSE_NAMES.items()}
_CODE_BY_CAUSE: dict[str, int] = {label: code for code, label in HANGUP_CAUSE_BY_CODE.items()}
# The documented spellings themselves, resolved without snake_case() (same result).
_CODE_BY_NAME: dict[str, int] = {name: _CODE_BY_CAUSE[snake_case(name)] for name in HANGUP_CAUSE_NAMES.values()}
# Every value the hangup_cause label can take.
HANGUP_CAUSES: tuple[str, ...] = (*HANGUP_CAUSE_BY_CODE.values(), "other")

# (low, high inclusive, category): the provider's ranges (README, "Metrics").
_CATEGORY_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 0, "canceled"),
    (1000, 1999, "canceled"),
    (2000, 2999, "destination"),
    (3000, 3059, "rejection"),
    (3060, 3999, "carrier"),
    (4000, 4999, "normal"),
    (5000, 5999, "system"),
    (6000, 6999, "timeout"),
    (7000, 7999, "url_error"),
    (8000, 8999, "xml_error"),
    (9000, 9999, "special"),
)

# Category of every documented code, precomputed from the ranges below (the rest scan them).
_CATEGORY_BY_CODE: dict[int, str] = {}

_SOURCES: dict[str, str] = {
    "caller": "caller",
    "callee": "callee",
    "call_recipient": "callee",
    "vobiz": "vobiz",
    "carrier": "carrier",
    "api_request": "api_request",
    "answer_xml": "answer_xml",
    "error": "error",
}

_REJECTION_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\binsufficient balance"), "insufficient_balance"),
    (re.compile(r"\bcli\b"), "cli_validation_failed"),
    (re.compile(r"\baadhaar"), "aadhaar_pending"),
    (re.compile(r"\bkyc\b"), "kyc_required"),
    (re.compile(r"\brate limit|\bconcurrent|\bcps\b"), "rate_limited"),
    (re.compile(r"\bno routes?\b"), "no_routes"),
)
_MAX_REASON_TEXT = 1024

# ASCII-only: float() alone would take "1_000", " ١٢ " (Arabic-Indic digits), "nan", "infinity".
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_CURRENCY_RE = re.compile(r"[A-Z]{3}", re.ASCII)
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,12})?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EVENT_TEXT_RE = re.compile(r"[^A-Za-z0-9_.-]")

# Memos of pure string -> label mappings (the same few strings arrive over and over), each
# bounded to _MEMO_SIZE entries and cleared when full, so hostile input cannot grow them.
_MEMO_SIZE = 1024
_MEMO_TEXT = 128  # longer rejection texts are classified without the memo
_RFC3339_MEMO: dict[str, float | None] = {}
_SOURCE_MEMO: dict[str, str] = {}
_REASON_MEMO: dict[str, str] = {}
_TRUNK_ID_MEMO: dict[str, str | _Invalid | None] = {}
_FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class _Invalid:
    """Marker for "present but invalid" (distinct from None = absent / not observed)."""


_INVALID = _Invalid()

_orjson: Any
try:  # the `fast` extra; everything works without it
    _orjson = importlib.import_module("orjson")
except ImportError:  # pragma: no cover - depends on the installed extras
    _orjson = None
# Module switch for the orjson fast path in parse_json_body (tests run the JSON cases both ways).
USE_ORJSON = True
# orjson turns integer literals outside [-2**63, 2**64) into floats of at least this size.
_INT64_BOUND = float(2**63)


# ----------------------------------------------------------------------------- decoding


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MalformedPayload("duplicate key in JSON object")
    return obj


def _reject_constant(name: str) -> Any:
    raise MalformedPayload("NaN or Infinity in JSON")


class _HugeInt:
    """An integer literal too long to be a real value (and, past sys.get_int_max_str_digits(),
    too long for int()): an invalid field where a number belongs, never a malformed event."""

    __slots__ = ()


_HUGE_INT = _HugeInt()


def _parse_int(text: str) -> int | _HugeInt:
    return int(text) if len(text) <= MAX_INT_DIGITS else _HUGE_INT


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body. Raises MalformedPayload (never anything else).

    With orjson (the ``fast`` extra) a flat object is decoded in C and returned only when it is
    provably what the stdlib path below would return; anything else, and every error, is decided
    by the stdlib path. The proof, for a body without backslashes (so every ``"`` delimits a
    string): the body's strings are its keys at every depth plus its string values, so when its
    ``"`` count is exactly 2 x (keys + string values) of the decoded top-level object, which holds
    no object or array, no key was repeated and nothing was nested (a repeated key adds a string
    the dict does not hold; a nested container can only hide in an overwritten duplicate).
    orjson turns integers outside [-2**63, 2**64) into floats where ``json`` keeps ints: a float
    of that size sends the body to the stdlib path. orjson refuses NaN/Infinity, numbers that
    overflow to infinity, invalid UTF-8, a BOM, control characters and trailing data: all go to
    the stdlib path, which answers them as before.
    """
    if _orjson is not None and USE_ORJSON and b"\\" not in raw:
        try:
            value = _orjson.loads(raw)
        except _orjson.JSONDecodeError:
            value = None
        if type(value) is dict:
            values = value.values()
            types = list(map(type, values))  # (scanned by identity: cheaper than a set of them)
            if dict not in types and list not in types and raw.count(b'"') == 2 * (len(value) + types.count(str)):
                if float not in types:
                    return value
                for item in values:
                    if type(item) is float and not -_INT64_BOUND < item < _INT64_BOUND:
                        break
                else:
                    return value
    return _parse_json_stdlib(raw)


def _parse_json_stdlib(raw: bytes) -> dict[str, Any]:
    """The reference decoder: decides every body the orjson fast path does not accept."""
    if not raw:
        raise MalformedPayload("empty body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("body is not valid UTF-8") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant, parse_int=_parse_int
        )
    except MalformedPayload:
        raise
    except RecursionError:
        raise MalformedPayload("JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, and ints past sys.get_int_max_str_digits()
        raise MalformedPayload("body is not valid JSON") from None
    if not isinstance(value, dict):
        raise MalformedPayload("JSON body is not an object")
    # Cheap guard first: the walk only runs when there are enough brackets to nest that deep.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and _depth_exceeds(value, MAX_JSON_DEPTH):
        raise MalformedPayload("JSON nested too deeply")
    return value


def parse_form(raw: bytes | str) -> dict[str, str]:
    """Decode an x-www-form-urlencoded body or a raw query string."""
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPayload("form body is not valid UTF-8") from None
    else:
        text = raw
    if "&&" in text or text.startswith("&") or text.endswith("&"):
        # Empty segments carry nothing (the HMAC already covered the raw string): skip them.
        text = "&".join(part for part in text.split("&") if part)
    try:
        pairs = urllib.parse.parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeError:  # percent-encoded bytes that are not UTF-8 (or a lone surrogate)
        raise MalformedPayload("form field is not valid UTF-8") from None
    except ValueError:  # "bad query field", too many fields; the message quotes input: not reused
        raise MalformedPayload("form body is not valid x-www-form-urlencoded") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise MalformedPayload("repeated form field")
        fields[key] = value
    return fields


def parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """Pick the decoder by content type (JSON by default, form when so declared)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == _FORM_CONTENT_TYPE:
        return parse_form(raw)
    return parse_json_body(raw)


# ----------------------------------------------------------------------------- field helpers


def _text(value: Any) -> str | None:
    """A string field with surrounding blanks removed; numbers as their text; None otherwise."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return str(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits()
            return None
    return None


def _identifier(value: Any, max_length: int = MAX_ID_LENGTH) -> str | _Invalid | None:
    """None when absent/empty, _INVALID when unusable, else the printable id text."""
    if value is None:
        return None
    text = value.strip() if type(value) is str else _text(value)  # (the usual case inlined)
    if text is None:
        return _INVALID
    if not text:
        return None
    # isprintable() also refuses lone surrogates, which could not be encoded for Redis or logs.
    if len(text) > max_length or not text.isprintable():
        return _INVALID
    return text


def _number(value: Any) -> float | _Invalid | None:
    """A finite float; None when absent or empty; _INVALID otherwise (bools are not numbers)."""
    kind = type(value)
    if kind is float:  # the common JSON cases first (same results as the general path below)
        return value if math.isfinite(value) else _INVALID
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return _INVALID
    if value is None:
        return None
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
        if len(value) > MAX_NUMBER_TEXT or not _NUMBER_RE.fullmatch(value):
            return _INVALID
    elif not isinstance(value, int | float):
        return _INVALID
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return _INVALID
    return number if math.isfinite(number) else _INVALID


def _in_range(low: float, high: float) -> Callable[[Any], float | _Invalid | None]:
    """A parser of numbers in [low, high]: outside it (NaN and infinities too) is _INVALID."""

    def parse(value: Any) -> float | _Invalid | None:
        kind = type(value)
        if kind is float or kind is int:  # the JSON cases, without _number (same results)
            return float(value) if low <= value <= high else _INVALID
        number = _number(value)
        if isinstance(number, float) and not low <= number <= high:
            return _INVALID
        return number

    return parse


_seconds = _in_range(0.0, MAX_DURATION_SECONDS)
_cost = _in_range(0.0, MAX_COST)
_jitter_ms = _in_range(0.0, MAX_JITTER_MS)


def _mos(value: Any) -> float | _Invalid | None:
    number = value if type(value) is float else _number(value)
    if number == 0.0:
        return None  # the provider sends 0 for "not measured"
    if isinstance(number, float) and not 1.0 <= number <= 5.0:
        return _INVALID  # (NaN and infinities too)
    return number


def parse_rfc3339(value: Any) -> float | None:
    """Unix seconds of an RFC 3339 time ("Z" or offset, optional fraction, "T" or space); else None.

    Memoised (a pure function of the string): under load most events of one second carry the
    same Timestamp/EndTime text. The memo is bounded and cleared when full."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return _RFC3339_MEMO[value]
    except KeyError:
        pass
    result = _parse_rfc3339(value)
    if len(_RFC3339_MEMO) >= _MEMO_SIZE:
        _RFC3339_MEMO.clear()
    _RFC3339_MEMO[value] = result
    return result


def _parse_rfc3339(value: str) -> float | None:
    text = value.strip()
    m = _RFC3339_RE.fullmatch(text)
    if m is None or (m.group(8) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59)):
        return None  # (fromisoformat would take an offset like +05:60)
    try:  # fast path (C); the regex already made sure it is RFC 3339 with an offset
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        pass  # lower-case "t"/"z", a leap second, or out-of-range parts: decided below
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if hour > 23 or minute > 59 or second > 60:
        return None
    offset = 0
    if m.group(8) is not None:
        offset = (int(m.group(9)) * 3600 + int(m.group(10)) * 60) * (-1 if m.group(8) == "-" else 1)
    try:
        base = datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC).timestamp()
    except (ValueError, OverflowError):
        return None
    fraction = float(m.group(7)) if m.group(7) else 0.0
    leap = 1 if second == 60 else 0
    return base + leap - offset + fraction


def _event_key(value: str) -> str:
    return value.strip().lower()


def _body_event(fields: dict[str, Any]) -> str | None:
    """The body's event text (stripped), None when absent/empty; malformed when not a string."""
    value = fields.get("Event")
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedPayload("Event is not a string")
    value = value.strip()
    return value or None


def _header_event(header_event: str | None) -> str | None:
    if not isinstance(header_event, str):
        return None
    return header_event.strip() or None


def event_disagrees(fields: dict[str, Any], header_event: str | None) -> bool:
    """True when both the body's Event and the X-Vobiz-Event header are set and differ (to log it)."""
    value = fields.get("Event")
    if value == header_event:  # the common case; also both absent
        return False
    body = value.strip() if isinstance(value, str) else None
    header = _header_event(header_event)
    return bool(body) and header is not None and _event_key(body or "") != _event_key(header)


def classify_rejection(text: Any) -> str:
    """Map a free-text rejection Reason onto REJECTION_REASONS by keywords, case-insensitively."""
    if not isinstance(text, str):
        return "other"
    if len(text) <= _MEMO_TEXT:
        reason = _REASON_MEMO.get(text)
        if reason is None:
            reason = _classify_rejection(text)
            if len(_REASON_MEMO) >= _MEMO_SIZE:
                _REASON_MEMO.clear()
            _REASON_MEMO[text] = reason
        return reason
    return _classify_rejection(text)


def _classify_rejection(text: str) -> str:
    words = " ".join(_NON_ALNUM_RE.sub(" ", text[:_MAX_REASON_TEXT].lower()).split())
    for pattern, reason in _REJECTION_PATTERNS:
        if pattern.search(words):
            return reason
    return "other"


def hangup_category(code: int) -> str:
    """The provider's group of a hangup code, by range (also for undocumented codes)."""
    category = _CATEGORY_BY_CODE.get(code)
    if category is not None:
        return category
    for low, high, category in _CATEGORY_RANGES:
        if low <= code <= high:
            return category
    return "other"


_CATEGORY_BY_CODE.update({code: hangup_category(code) for code in HANGUP_CAUSE_NAMES})


def hangup_source(value: Any) -> str:
    """Map HangupSource onto HANGUP_SOURCES; anything unknown or empty is "unknown"."""
    if not isinstance(value, str) or len(value) > 64:
        return "unknown"
    source = _SOURCE_MEMO.get(value)
    if source is None:
        source = _SOURCES.get(snake_case(value), "unknown")
        if len(_SOURCE_MEMO) >= _MEMO_SIZE:
            _SOURCE_MEMO.clear()
        _SOURCE_MEMO[value] = source
    return source


def _hangup_code(value: Any) -> int | _Invalid | None:
    """HangupCauseCode as an int: ints, integral floats and their strings ("4000", "4000.0")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _number(value)
    if isinstance(number, float):
        return int(number) if number.is_integer() else _INVALID
    return number


def hangup_cause(code_value: Any, name_value: Any) -> tuple[str, str, bool]:
    """(hangup_cause, hangup_category, code_invalid) from HangupCauseCode and HangupCauseName."""
    code = _hangup_code(code_value)
    cause, category, _ = _resolve_cause(code, name_value)
    return cause, category, isinstance(code, _Invalid)


def _resolve_cause(code: int | _Invalid | None, name_value: Any) -> tuple[str, str, int | None]:
    """(cause, category, the code they were read from). The cause and category always agree: a
    documented code decides both; an undocumented one is cause ``other`` in its range's
    category; only a missing or unparsable code lets a documented name decide (with its code's
    category). So a trunk has at most (documented causes + 11) x sources label sets."""
    if isinstance(code, int):
        return HANGUP_CAUSE_BY_CODE.get(code, "other"), _CATEGORY_BY_CODE.get(code) or hangup_category(code), code
    name_code: int | None = None
    if isinstance(name_value, str) and len(name_value) <= 128:
        name_code = _CODE_BY_NAME.get(name_value)
        if name_code is None:
            name_code = _CODE_BY_CAUSE.get(snake_case(name_value))
    if name_code is not None:
        return HANGUP_CAUSE_BY_CODE[name_code], hangup_category(name_code), name_code
    return "other", "other", None


# TELECOM.md "who acts" table: code -> group. 1000 Canceled is a user outcome only after the
# phone rang (the caller gave up: E.425's "ring no answer"); see outcome_group().
_USER_CODES = frozenset((3000, 3010, 3020, 3100, 3110, 6010, 4000, 4010, 4020, 4030))
_GROUP_BY_CODE: dict[int, str] = {
    **dict.fromkeys((1020, 5030), "dialler"),
    **dict.fromkeys((3030, 3130, 3140), "caller_id"),
    **dict.fromkeys((1010, 2030, 2040, 2050), "account"),
    **dict.fromkeys((5000, 5010, 5020), "provider"),
    **dict.fromkeys((3070, 3080, 3090), "carrier"),
    **dict.fromkeys((2000, 2010, 2020, 2060, 2070, 3040, 3050, 3120), "destination"),
    6020: "media",
}


def outcome_group(code: int | None, ring_time: float | None) -> str:
    """The "who acts" group of a hangup (one of OUTCOME_GROUPS)."""
    if code is None:
        return "other"
    if code in _USER_CODES or (code == 1000 and ring_time is not None and ring_time > 0):
        return USER_OUTCOME
    group = _GROUP_BY_CODE.get(code)
    if group is not None:
        return group
    if 7000 <= code <= 8999:  # URL and XML errors: the account's application configuration
        return "account"
    return "other"


def _currency(value: Any) -> str | _Invalid | None:
    """The currency label; None (then "other", not invalid) when missing or empty."""
    if type(value) is str and len(value) == 3 and value.isascii() and value.isalpha() and value.isupper():
        return value  # the usual case: exactly a code, so strip() and the regex agree
    if value is None:
        return None
    if not isinstance(value, str):
        return _INVALID
    value = value.strip()
    if not value:
        return None
    return value if _CURRENCY_RE.fullmatch(value) else _INVALID


def _time_field(value: Any) -> _Invalid | None:
    """StartTime / EndTime are only checked (listed when present but not RFC 3339)."""
    if value is None or value == "" or parse_rfc3339(value) is not None:
        return None
    return _INVALID


def _timestamp(value: Any) -> float | _Invalid:
    """The signed Timestamp: missing counts as invalid too."""
    timestamp = parse_rfc3339(value)
    return _INVALID if timestamp is None else timestamp


def _allowed(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "true":
            return True
        if text == "false":
            return False
    raise MalformedPayload("Allowed is missing or not a boolean")


def _phone(value: Any) -> str | None:
    text = value.strip() if type(value) is str else _text(value)  # (the usual case inlined)
    return text[:MAX_PHONE_TEXT] if text else None


def payload_trunk_id(fields: dict[str, Any]) -> str | None:
    """The payload's TrunkID as a string, or None."""
    value = _trunk_id(fields.get("TrunkID"))
    return value if isinstance(value, str) else None


def _trunk_id(value: Any) -> str | _Invalid | None:
    """Memoised for strings: the same few trunk ids arrive over and over."""
    if type(value) is str and len(value) <= _MEMO_TEXT:
        try:
            return _TRUNK_ID_MEMO[value]
        except KeyError:
            pass
        trunk_id = _identifier(value, MAX_TRUNK_ID_LENGTH)
        if len(_TRUNK_ID_MEMO) >= _MEMO_SIZE:
            _TRUNK_ID_MEMO.clear()
        _TRUNK_ID_MEMO[value] = trunk_id
        return trunk_id
    # Numbers become text the way config.py turns a numeric `id` into text, so the two compare.
    if isinstance(value, float) and math.isfinite(value):
        return str(value)
    return _identifier(value, MAX_TRUNK_ID_LENGTH)


def mask_number(number: str | None) -> str:
    """A phone number safe to log: leading "+", first 4 and last 2 digits, the rest "*".

    Only ASCII digits are kept (anything else is dropped), so a SIP URI or a name never reaches a
    log. Six digits or fewer: all but the last 2 are masked. Nothing to show gives "".
    """
    if not isinstance(number, str):
        return ""
    text = number.strip()[:MAX_PHONE_TEXT]
    digits = "".join(c for c in text if "0" <= c <= "9")
    if not digits:
        return ""
    plus = "+" if text.startswith("+") else ""
    if len(digits) < 10:  # too short to show a prefix without showing most of the number
        return plus + "*" * max(len(digits) - 2, 0) + digits[-2:]
    return plus + digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


# ----------------------------------------------------------------------------- normalise

# (wire key, invalid-field label, parser), in the order invalid_fields lists them. A parser
# returns the value, None (absent: not observed) or _INVALID (listed, then taken as None).
_Field = tuple[str, str, Callable[[Any], Any]]


def _snake(wire_key: str) -> str:
    """The field's label: ``HangupCauseCode`` -> ``hangup_cause_code``, ``RequestID`` -> ``request_id``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", wire_key).lower()


def _table(*rows: tuple[Callable[[Any], Any], tuple[str, ...]]) -> tuple[_Field, ...]:
    """One (parser, wire keys) row per parser, flattened in order."""
    return tuple((key, _snake(key), parse) for parse, keys in rows for key in keys)


_FIELDS = _table(
    # Every event's: its unix time and ids (CallUUID apart: without it the event is malformed).
    (_timestamp, ("Timestamp",)),
    (_identifier, ("RequestID",)),
    (_trunk_id, ("TrunkID",)),
    # A Hangup's measured fields.
    (_time_field, ("StartTime", "EndTime")),
    (_seconds, ("Duration", "Billsec", "RingTime")),
    (_cost, ("Cost",)),
    (_currency, ("Currency",)),
    (_mos, ("MOS",)),
    (_jitter_ms, ("Jitter",)),
    (_hangup_code, ("HangupCauseCode",)),
)
_COMMON_FIELDS = _FIELDS[:3]
# snake_case names a field can be reported under (vobiz_event_invalid_fields_total{field}).
INVALID_FIELD_NAMES = tuple(label for _, label, _ in _FIELDS)


def _read(get: Callable[[str], Any], table: tuple[_Field, ...], invalid: list[str]) -> list[Any]:
    """Each field of ``table`` parsed; an invalid one is listed in ``invalid`` and read as None."""
    values: list[Any] = []
    append = values.append
    for key, label, parse in table:
        value = parse(get(key))
        if value is _INVALID:
            invalid.append(label)
            value = None
        append(value)
    return values


def normalise(fields: dict[str, Any], header_event: str | None) -> Event:
    """Turn decoded fields into a typed event, dropping and listing invalid fields."""
    if not isinstance(fields, dict):
        raise MalformedPayload("payload is not an object")
    get = fields.get
    event_text = _body_event(fields) or _header_event(header_event)
    if event_text is None:
        raise MalformedPayload("no event type in body or header")
    kind = event_text.lower()  # _event_key(): both sources are already stripped

    invalid: list[str] = []
    if kind == "hangup":
        return _hangup(get, invalid)
    timestamp, request_id, trunk_id = _read(get, _COMMON_FIELDS, invalid)
    call_uuid = _identifier(get("CallUUID"))
    if kind != "callinitiated":
        return UnknownEvent(
            event=_EVENT_TEXT_RE.sub("_", event_text[:64]),
            call_uuid=call_uuid if isinstance(call_uuid, str) else None,
            request_id=request_id,
            trunk_id=trunk_id,
            timestamp=timestamp,
        )
    if not isinstance(call_uuid, str):
        raise MalformedPayload("CallUUID is missing or invalid")
    allowed = _allowed(get("Allowed"))
    return CallInitiated(
        call_uuid=call_uuid,
        request_id=request_id,
        trunk_id=trunk_id,
        timestamp=timestamp,
        allowed=allowed,
        reason="" if allowed else classify_rejection(get("Reason")),
        from_number=_phone(get("From")),
        to_number=_phone(get("To")),
        invalid_fields=tuple(invalid),
    )


def _hangup(get: Callable[[str], Any], invalid: list[str]) -> Hangup:
    call_uuid = _identifier(get("CallUUID"))
    if not isinstance(call_uuid, str):
        raise MalformedPayload("CallUUID is missing or invalid")
    values = _read(get, _FIELDS, invalid)
    timestamp, request_id, trunk_id, _, _, duration, billsec, ring_time, cost, currency, mos, jitter_ms, code = values
    if jitter_ms == 0.0 and not billsec:
        jitter_ms = None  # an unanswered call reports 0: nothing was measured
    cause, category, read_code = _resolve_cause(code, get("HangupCauseName"))
    group = outcome_group(read_code, ring_time)
    # Only a failed call's log line uses SIPCallID: read it for those alone.
    sip_call_id = _identifier(get("SIPCallID")) if group != USER_OUTCOME else None
    return Hangup(
        call_uuid=call_uuid,
        request_id=request_id,
        trunk_id=trunk_id,
        timestamp=timestamp,
        duration=duration,
        billsec=billsec,
        ring_time=ring_time,
        cost=cost,
        currency="other" if currency is None else currency,
        mos=mos,
        jitter_seconds=None if jitter_ms is None else jitter_ms / 1000.0,
        hangup_cause=cause,
        hangup_category=category,
        hangup_source=hangup_source(get("HangupSource")),
        from_number=_phone(get("From")),
        to_number=_phone(get("To")),
        invalid_fields=tuple(invalid),
        hangup_code=read_code,
        group=group,
        effective=bool(billsec) or group == USER_OUTCOME,
        sip_call_id=sip_call_id if isinstance(sip_call_id, str) else None,
    )
