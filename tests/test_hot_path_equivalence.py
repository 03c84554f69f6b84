"""The hot-path shortcuts give exactly what the reference code gives.

- events.parse_json_body's orjson fast path against the stdlib decoder (_parse_json_stdlib),
  on the inputs where the two libraries differ (duplicate keys, NaN/Infinity, numbers past
  64 bits or past float range, BOM, non-UTF-8, escapes, nesting, trailing data) and on
  generated objects;
- the memoised label mappings (parse_rfc3339, hangup_source, classify_rejection) against
  their uncached implementations, and their memos stay bounded;
- signature.sign (cached keyed HMAC states) against hmac.new;
- MemoryDedupe.check_and_add (TTLSet inlined) against the same steps through TTLSet's methods;
- exporter.families and metrics.inc / observe / set_value against prometheus_client's own metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from typing import Any

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.samples import Exemplar

from exporter import dedupe, events, metrics, signature
from exporter.events import MalformedPayload
from exporter.families import CounterFamily, GaugeFamily, HistogramFamily

needs_orjson = pytest.mark.skipif(events._orjson is None, reason="orjson (the `fast` extra) not installed")


def outcome(fn: Any, raw: bytes) -> tuple[str, str]:
    try:
        return "ok", repr(fn(raw))
    except MalformedPayload as exc:
        return "malformed", exc.reason


def fast(raw: bytes) -> dict[str, Any]:
    saved = events.USE_ORJSON
    events.USE_ORJSON = True
    try:
        return events.parse_json_body(raw)
    finally:
        events.USE_ORJSON = saved


TRICKY = [
    b'{"a": 1, "a": 1}',
    b'{"a" :":", "a" :1}',  # a repeated key hidden by a colon inside a string
    b'{"a": {"b": 1, "b": 2}, "a": 1}',  # a nested duplicate inside an overwritten value
    b'{"a": [1, {"k": 1, "k": 2}], "a": 2}',
    b'{"a": {"x": 1}, "b": {"x": 2}}',
    b'{"a": "\\u0041", "\\u0061": 2}',  # escapes: "a" twice once decoded
    b'{"a": "x\\"", "a": 1}',
    b'{"s": "\\ud800"}',  # lone surrogate by escape
    b'{"s": "\xed\xa0\x80"}',  # surrogate as raw bytes: not UTF-8
    b'{"s": "\xff"}',
    b"\xef\xbb\xbf{}",
    b'{"n": NaN}',
    b'{"n": Infinity}',
    b'{"n": -Infinity}',
    b'{"n": 1e400}',  # json: inf; orjson refuses
    b'{"n": -1e400}',
    b'{"n": 18446744073709551615}',  # the largest int orjson keeps
    b'{"n": 18446744073709551616}',  # orjson: a float; json: an int
    b'{"n": -9223372036854775808}',
    b'{"n": -9223372036854775809}',
    b'{"n": 123456789012345678901234567890, "m": 1.5}',
    b'{"n": 9.3e18}',
    b'{"n": 1e-400}',
    b'{"n": -0}',
    b'{"n": -0.0}',
    b'{"n": ' + b"9" * 5000 + b"}",
    b'{"n": 01}',
    b'{"n": 1.}',
    b'{"a": 1,}',
    b'{"a": 1} x',
    b'{"a": 1}\x00',
    b'{"a": 1}  \n',
    b' \t\r\n{"a": 1}',
    b'\x0c{"a": 1}',
    b'{"a": "\x01"}',
    b'{"a": "\x7f"}',
    b'{"": 1, "": 2}',
    b'{"": 1}',
    b"{}",
    b"[]",
    b'"x"',
    b"",
    b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}",
]


@needs_orjson
@pytest.mark.parametrize("raw", TRICKY)
def test_fast_path_equals_stdlib_on_tricky_bodies(raw: bytes) -> None:
    assert outcome(fast, raw) == outcome(events._parse_json_stdlib, raw)


@needs_orjson
def test_fast_path_keeps_huge_integers_as_ints() -> None:
    # A huge number must stay an int (an invalid optional field, not a malformed event).
    assert fast(b'{"Cost": 18446744073709551616}') == {"Cost": 18446744073709551616}
    assert type(fast(b'{"Cost": 18446744073709551616}')["Cost"]) is int
    assert fast(b'{"Cost": -9223372036854775809}') == {"Cost": -9223372036854775809}


ATOMS = [
    "1",
    "-0",
    "1.5",
    "1e400",
    "NaN",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775808",
    "1e19",
    "true",
    "null",
    '"x"',
    '""',
    '":"',
    '"a\\"b"',
    '"\\u0061"',
    "[]",
    "{}",
    '[1,{"k":1,"k":2}]',
    '{"k":1}',
    '"{"',
    '"["',
    "0.1",
]
KEYS = ['"a"', '"b"', '"a" ', '":"', '""', '"\\u0061"']


@st.composite
def objects(draw: st.DrawFn, depth: int = 0) -> str:
    n = draw(st.integers(0, 5))
    parts = []
    for _ in range(n):
        value = (
            draw(objects(depth + 1))
            if depth < 2 and draw(st.booleans()) and draw(st.booleans())
            else draw(st.sampled_from(ATOMS))
        )
        parts.append(draw(st.sampled_from(KEYS)) + draw(st.sampled_from([":", " : "])) + value)
    return "{" + ",".join(parts) + "}"


@needs_orjson
@settings(max_examples=500, deadline=None)
@given(objects(), st.sampled_from(["", " ", "\n", " x", "}"]))
def test_fast_path_equals_stdlib_on_generated_objects(text: str, tail: str) -> None:
    raw = (text + tail).encode()
    assert outcome(fast, raw) == outcome(events._parse_json_stdlib, raw)


@needs_orjson
@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=8),
        ),
        max_size=8,
    )
)
def test_fast_path_equals_stdlib_on_flat_objects(value: dict[str, Any]) -> None:
    raw = json.dumps(value).encode()
    assert outcome(fast, raw) == outcome(events._parse_json_stdlib, raw)


# ----------------------------------------------------------------------------- memos


def test_memoised_mappings_equal_the_uncached_ones_and_stay_bounded() -> None:
    rng = random.Random(7)
    texts = [
        "Caller",
        "callee",
        "CALL RECIPIENT",
        "api-request",
        "",
        " ",
        "x" * 64,
        "x" * 65,
        "Vobiz ",
        "Insufficient balance",
        "KYC pending",
        "no route",
        "2026-11-28T10:40:39Z",
        "2026-11-28t10:40:39z",
        "2026-11-28T23:59:60Z",
        "2026-11-28T10:40:39+05:60",
        "2026-11-28 10:40:39.5-01:00",
        "\ud800",
    ]
    texts += [f"2026-11-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z" for _ in range(3000)]
    for _ in range(2):  # the second pass answers from the memos
        for text in texts:
            assert repr(events.parse_rfc3339(text)) == repr(events._parse_rfc3339(text)) or len(text) > 64
            assert events.hangup_source(text) == (
                "unknown" if len(text) > 64 else events._SOURCES.get(events.snake_case(text), "unknown")
            )
            assert events.classify_rejection(text) == events._classify_rejection(text)
    for memo in (events._RFC3339_MEMO, events._SOURCE_MEMO, events._REASON_MEMO):
        assert 0 < len(memo) <= events._MEMO_SIZE
    assert events.parse_rfc3339("2026-11-28T10:40:39Z") == 1795862439.0


def test_hangup_tables_match_the_ranges_and_names() -> None:
    for code, name in events.HANGUP_CAUSE_NAMES.items():
        assert events._CATEGORY_BY_CODE[code] == next(
            c for low, high, c in events._CATEGORY_RANGES if low <= code <= high
        )
        assert events.hangup_cause(None, name) == events.hangup_cause(None, name.upper())
        assert events.hangup_cause(None, name)[0] == events.HANGUP_CAUSE_BY_CODE[code]
    assert events.hangup_category(3059) == "rejection"
    assert events.hangup_category(3060) == "carrier"
    assert events.hangup_category(10000) == "other"


# ----------------------------------------------------------------------------- signature


def test_sign_equals_hmac_new_and_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signature, "_KEYED", {})
    monkeypatch.setattr(signature, "_KEYED_MAX", 4)
    secrets = [b"", b"k", b"x" * 64, b"x" * 65, b"y" * 200, b"z"]
    for _ in range(2):
        for secret in secrets:
            for message in (b"", b"a", b"m" * 1000):
                assert signature.sign(secret, message) == hmac.new(secret, message, hashlib.sha256).digest()
        assert len(signature._KEYED) <= 4
    # Not bytes: not cached, same answer.
    assert signature.sign(bytearray(b"k"), b"a") == hmac.new(b"k", b"a", hashlib.sha256).digest()  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- dedupe


def _reference_check_and_add(store: dedupe.TTLSet, keys: tuple[bytes, ...], now: float) -> bool:
    """check_and_add as it was, through TTLSet's own methods."""
    store.expire(now)
    if any(store.contains(key, now) for key in keys):
        return True
    for key in keys:
        store.add(key, now)
    return False


def test_check_and_add_equals_ttlset_steps() -> None:
    rng = random.Random(3)
    for max_entries in (1, 2, 3, 50):
        evicted: list[int] = []
        ref_evicted: list[int] = []
        fast_store = dedupe.MemoryDedupe(5.0, max_entries, evicted.append)
        ref = dedupe.TTLSet(5.0, max_entries, ref_evicted.append)
        now = 0.0
        for _ in range(3000):
            now += rng.choice((0.0, 0.1, 1.0, 3.0))
            keys = tuple(bytes([rng.randrange(12)]) for _ in range(rng.choice((1, 2, 2))))
            assert fast_store.check_and_add(keys, now) == _reference_check_and_add(ref, keys, now)
            assert fast_store._keys._expiry == ref._expiry
            assert list(fast_store._keys._order) == list(ref._order)
        assert evicted == ref_evicted


def test_dedupe_keys_are_the_documented_digests() -> None:
    body = b'{"a": 1}'
    e = hashlib.blake2b(b"t1\x00hangup\x00r-1", digest_size=16, person=b"vobiz-event").digest()
    m = hashlib.blake2b(b"t1\x00" + body, digest_size=16, person=b"vobiz-body").digest()
    assert dedupe.event_key("t1", "hangup", "r-1") == e
    assert dedupe.material_key("t1", body) == m
    assert dedupe.event_key("t1", "hangup", "r-1") == e  # the shared base state is not consumed


# ----------------------------------------------------------------------------- metrics


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float, Any]]:
    return sorted(
        ((s.name, s.labels, s.value, s.exemplar) for fam in registry.collect() for s in fam.samples),
        key=repr,
    )


def test_owned_families_equal_prometheus_client_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """exporter.families (and metrics' inc/observe/set_value) give the samples that
    prometheus_client's Counter, Gauge and Histogram give for the same calls. NaN is left out:
    events.py never produces it (every numeric field is bounded), and the stock Histogram counts
    a NaN in no bucket but in _sum."""
    monkeypatch.setattr("exporter.families.time.time", lambda: 1234.5)  # exemplar timestamps compare equal
    monkeypatch.setattr("prometheus_client.metrics.time.time", lambda: 1234.5)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    ours, stock = CollectorRegistry(), CollectorRegistry()
    c1 = CounterFamily("c", "c", ["t"], registry=ours)
    g1 = GaugeFamily("g", "g", ["t"], registry=ours)
    h1 = HistogramFamily("h", "h", ["t"], buckets=(0.5, 1, 2.5, 10), registry=ours)
    c2 = Counter("c", "c", ["t"], registry=stock)
    g2 = Gauge("g", "g", ["t"], registry=stock)
    h2 = Histogram("h", "h", ["t"], buckets=(0.5, 1, 2.5, 10), registry=stock)
    values = [0.0, 0.5, 0.50001, 1, 2.5, 3, 10, 11, 1e9, -1, float("inf")]
    for i, v in enumerate(values):
        ex = {"call_uuid": f"c-{i}"} if i % 2 else None
        metrics.inc(c1.labels("a"))
        c2.labels("a").inc()
        c1.labels("b").inc(abs(v) if v != float("inf") else 1)
        c2.labels("b").inc(abs(v) if v != float("inf") else 1)
        metrics.set_value(g1.labels("a"), v)
        g2.labels("a").set(v)
        metrics.observe(h1.labels("a"), v, ex, 1234.5 if i % 3 else None)
        h2.labels("a").observe(v, ex)
    got, want = _samples(ours), _samples(stock)
    assert repr(got) == repr(want)
    assert any(isinstance(s[3], Exemplar) for s in got)
    assert ours.get_sample_value("h_bucket", {"t": "a", "le": "+Inf"}) == len(values)
    with pytest.raises(ValueError, match="only go up"):
        c1.labels("a").inc(-1)
