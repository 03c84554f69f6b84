"""exporter.exposition must equal prometheus_client's encoders byte for byte (not timed).

The registry under test is the exporter's own (every SPEC metric, several trunks, exemplars)
plus extra collectors that exercise every branch of the renderer: escaping in help texts,
label values and exemplars, a set_function gauge, unlabelled metrics, a histogram with a
negative first bucket (no ``_sum``), values that print in Go's exponent form, NaN and
infinities, and collectors only the stock encoder handles (Info, Enum, Summary, custom).
The process collector is left out: its CPU and memory values move between two renders.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
)
from prometheus_client import exposition as text_exp
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics import exposition as om_exp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter import exposition
from exporter.app import RUNTIME, Runtime, create_app
from exporter.events import REJECTION_REASONS, CallInitiated, Hangup
from exporter.exposition import ALLOWUTF8, UNDERSCORES, Renderer, renderer_for
from exporter.families import CounterFamily, GaugeFamily, HistogramFamily, OwnedMetric
from tests.helpers import make_config

NASTY = 'quote " backslash \\ newline \n end'
# Gauge values that print specially: NaN, infinities, Go's exponent forms, an int.
SPECIAL_VALUES = (
    ("nan", math.nan),
    ("inf", math.inf),
    ("minf", -math.inf),
    ("big", 12345678.0),
    ("huge", 1e22),
    ("tiny", 1e-7),
    ("neg", -2.5e9),
    ("int", 3),
)


class _Custom:
    """A hand-written collector with a timestamped sample: stock-rendered family."""

    def collect(self) -> Iterator[Any]:
        g = GaugeMetricFamily("custom_gauge", 'Custom "help" \\ with\nnewline', labels=["k"])
        g.add_metric([NASTY], 1.5, timestamp=1700000000.25)
        g.add_metric(["plain"], 2.0)
        yield g


def _record(rt: Runtime, trunk: str, i: int, *, call_uuid: str | None = None) -> None:
    m = rt.metrics
    tm = m.trunks[trunk]
    now = 1_700_000_000.0 + i
    m.record_call_initiated(
        tm,
        CallInitiated(
            call_uuid=f"c{i}",
            request_id=None,
            trunk_id=None,
            timestamp=now - 0.5,
            allowed=i % 3 != 0,
            reason="" if i % 3 else REJECTION_REASONS[i % len(REJECTION_REASONS)],
            from_number=None,
            to_number=None,
            invalid_fields=(),
        ),
        now,
    )
    m.record_hangup(
        tm,
        Hangup(
            call_uuid=call_uuid or f"uuid-{trunk}-{i}",
            request_id=None,
            trunk_id=None,
            timestamp=now - 1.25,
            duration=30.0 + i,
            billsec=float(i % 4) * 10,
            ring_time=float(i % 7),
            cost=0.25 * i,
            currency="INR" if i % 2 else "USD",
            mos=1.0 + (i % 40) / 10,
            jitter_seconds=0.001 * i,
            hangup_cause="normal_hangup" if i % 2 else "busy_line",
            hangup_category="normal" if i % 2 else "rejection",
            hangup_source="caller" if i % 3 else "callee",
            from_number=None,
            to_number=None,
            invalid_fields=("jitter",) if i == 1 else (),
        ),
        now,
    )
    tm.outcomes["accepted"].inc(2)


def _registry(parseable: bool = False) -> tuple[CollectorRegistry, Runtime]:
    registry = CollectorRegistry()
    rt = Runtime(make_config(), registry)
    registry.unregister(rt.metrics.process_collector)
    for trunk in rt.metrics.trunks:
        for i in range(12):
            _record(rt, trunk, i)
    # Exemplar label values that need escaping, and a histogram without _sum: prometheus_client's
    # OpenMetrics parser refuses both in the stock output too, so the parse test goes without.
    exemplar_id = 'q"b\\n\nx' if not parseable else "plain-exemplar"
    _record(rt, "alpha", 99, call_uuid=exemplar_id)
    rt.metrics.outcome(None, "unknown_trunk")

    weird = Counter("weird_events", NASTY, ["a", "b"], registry=registry)
    weird.labels(NASTY, "x").inc(3)
    weird.labels("plain", 'just "quotes"').inc(1e7)
    weird.labels("exemplar", "y").inc(2, exemplar={"trace_id": 'a"b\\c' if not parseable else "t1"})
    Gauge("bare_gauge", "Unlabelled gauge.", registry=registry).set(-0.0)
    special = Gauge("special_values", "NaN, infinities and Go exponents.", ["v"], registry=registry)
    for name, value in SPECIAL_VALUES:
        special.labels(name).set(value)
    fn = Gauge("function_gauge", "set_function gauge.", ["t"], registry=registry)
    fn.labels("a").set_function(lambda: 42.0)
    Gauge("function_bare", "Unlabelled set_function gauge.", registry=registry).set_function(lambda: 7)
    neg = Histogram(
        "temperature_celsius",
        "Negative first bucket: no _sum.",
        ["room"],
        buckets=(-10, 0, 10, 1e7) if not parseable else (1, 10, 1e7),
        registry=registry,
    )
    neg.labels("lab").observe(-3)
    neg.labels("lab").observe(2e7)
    plain = Histogram("plain_seconds", "Unlabelled histogram.", registry=registry)
    plain.observe(0.3, exemplar={"id": "e1"})
    Info("build", "Info is stock-rendered.", registry=registry).info({"v": NASTY})
    Enum("state", "Enum is stock-rendered.", states=["up", "down"], registry=registry).state("down")
    Summary("work_seconds", "Summary is stock-rendered.", ["w"], registry=registry).labels("w1").observe(1.5)
    registry.register(_Custom())
    _owned_extras(registry, parseable)
    return registry, rt


def _owned_extras(registry: CollectorRegistry, parseable: bool) -> None:
    """The same edge cases on the exporter's own families, which take the fast path."""
    weird = CounterFamily("owned_weird_events", NASTY, ["a", "b"], registry=registry)
    weird.labels(NASTY, "x").inc(3)
    weird.labels("plain", 'just "quotes"').inc(1e7)
    GaugeFamily("owned_bare_gauge", "Unlabelled gauge.", registry=registry).labels().set(-0.0)
    special = GaugeFamily("owned_special_values", "NaN, infinities and Go exponents.", ["v"], registry=registry)
    for name, value in SPECIAL_VALUES:
        special.labels(name).set(value)
    fn = GaugeFamily("owned_function_gauge", "set_function gauge.", ["t"], registry=registry)
    fn.labels("a").set_function(lambda: 42.0)
    GaugeFamily("owned_function_bare", "Unlabelled set_function gauge.", registry=registry).labels().set_function(
        lambda: 7
    )
    neg = HistogramFamily(
        "owned_temperature_celsius",
        "Negative first bucket: no _sum.",
        ["room"],
        buckets=(-10, 0, 10, 1e7) if not parseable else (1, 10, 1e7),
        registry=registry,
    )
    neg.labels("lab").observe(-3)
    neg.labels("lab").observe(2e7)
    # A cumulative count past 1e6 prints in Go's exponent form.
    big = HistogramFamily("owned_big_count", "Counts past 1e6.", buckets=(1.0,), registry=registry).labels()
    big.counts[0] = 1_234_567.0
    big.sum = 2.5e9
    plain = HistogramFamily("owned_plain_seconds", "Unlabelled histogram.", buckets=(0.1, 1), registry=registry)
    plain.labels().observe(0.3, exemplar={"id": 'e"1\\' if not parseable else "e1"}, ts=1700000000.5)


@pytest.fixture
def state() -> tuple[CollectorRegistry, Runtime]:
    return _registry()


FORMATS = [
    ("text", UNDERSCORES),
    ("text", ALLOWUTF8),
    ("om", UNDERSCORES),
    ("om", ALLOWUTF8),
    ("om", "dots"),
    ("text", "values"),
]


def _stock(registry: CollectorRegistry, fmt: str, escaping: str) -> bytes:
    if fmt == "om":
        out: bytes = om_exp.generate_latest(registry, escaping=escaping)  # type: ignore[no-untyped-call]
        return out
    return text_exp.generate_latest(registry, escaping=escaping)


def _fast(renderer: Renderer, fmt: str, escaping: str) -> bytes:
    return renderer.render_openmetrics(escaping) if fmt == "om" else renderer.render_text(escaping)


@pytest.mark.parametrize(("fmt", "escaping"), FORMATS)
def test_equal_to_stock(state: tuple[CollectorRegistry, Runtime], fmt: str, escaping: str) -> None:
    registry, _ = state
    renderer = Renderer(registry)
    expected = _stock(registry, fmt, escaping)
    assert _fast(renderer, fmt, escaping) == expected
    assert _fast(renderer, fmt, escaping) == expected  # second render: from the caches
    if escaping in (UNDERSCORES, ALLOWUTF8):  # the others rewrite names (stock path, still equal)
        assert b'vobiz_call_duration_seconds_bucket{le="60.0",trunk="alpha"}' in expected
    if fmt == "om":
        assert b'# {call_uuid="q\\"b\\\\n\\nx"}' in expected  # the escaped exemplar is there


@pytest.mark.parametrize("fmt", ["text", "om"])
def test_owned_families_never_reach_the_stock_encoder(
    state: tuple[CollectorRegistry, Runtime], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path is really taken: only the families the exporter does not own are stock-rendered."""
    registry, _ = state
    stocked: list[str] = []
    real = exposition._stock_family

    def spy(metric: Any, om: bool, escaping: str, version: str) -> str:
        stocked.append(metric.name)
        return real(metric, om, escaping, version)

    monkeypatch.setattr(exposition, "_stock_family", spy)
    Renderer(registry).render_openmetrics() if fmt == "om" else Renderer(registry).render_text()
    assert sorted(stocked) == [
        "bare_gauge",
        "build",
        "custom_gauge",
        "function_bare",
        "function_gauge",
        "plain_seconds",
        "python_info",
        "special_values",
        "state",
        "temperature_celsius",
        "weird_events",
        "work_seconds",
    ]


async def test_async_render_equals_stock_and_yields(state: tuple[CollectorRegistry, Runtime]) -> None:
    registry, _ = state
    renderer = Renderer(registry)
    for om in (False, True):
        expected = _stock(registry, "om" if om else "text", UNDERSCORES)
        assert await renderer.render_async(om) == expected
        assert await renderer.render_async(om, budget=0.0) == expected  # yields after every batch


def test_parses_with_both_parsers() -> None:
    registry, rt = _registry(parseable=True)
    renderer = Renderer(registry)
    text = renderer.render_text().decode()
    families = {f.name: f for f in parse_text(text)}
    attempts = {(s.labels["trunk"], s.labels["result"]): s.value for s in families["vobiz_call_attempts"].samples}
    assert attempts == {
        ("alpha", "admitted"): 8.0,
        ("alpha", "rejected"): 5.0,  # i=99: i % 3 == 0
        ("bravo", "admitted"): 8.0,
        ("bravo", "rejected"): 4.0,
    }
    assert families["weird_events"].documentation == NASTY
    weird = {s.labels["a"]: s.value for s in families["weird_events"].samples}
    assert weird[NASTY] == 3.0

    om = renderer.render_openmetrics().decode()
    om_families = {f.name: f for f in parse_om(om)}
    buckets = [
        s
        for s in om_families["vobiz_call_mos"].samples
        if s.name == "vobiz_call_mos_bucket" and s.labels["trunk"] == "alpha"
    ]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert buckets[-1].value == 13.0
    assert any(s.exemplar is not None and s.exemplar.labels == {"call_uuid": "plain-exemplar"} for s in buckets)
    om_weird = {s.labels["a"]: s for s in om_families["weird_events"].samples if s.name == "weird_events_total"}
    assert om_weird["exemplar"].exemplar is not None
    assert om_weird["exemplar"].exemplar.labels == {"trace_id": "t1"}
    assert om_families["weird_events"].documentation == NASTY
    assert om.endswith("# EOF\n")
    assert rt.metrics.trunks["alpha"].admitted.value == 8.0


def test_caches_follow_changes(state: tuple[CollectorRegistry, Runtime]) -> None:
    """New observations, new exemplars, removed and re-created children, a removed trunk."""
    registry, rt = state
    renderer = Renderer(registry)
    renderer.render_openmetrics()
    renderer.render_text()
    _record(rt, "bravo", 500, call_uuid="fresh-exemplar")
    weird = _collector(registry, "owned_weird_events")
    assert isinstance(weird, CounterFamily)
    weird.remove(NASTY, "x")
    weird.labels(NASTY, "x").inc(1)  # same labels, new child: must not reuse the old one
    rt.metrics.configure_trunks([t for t in rt.config.trunks if t.name == "alpha"])
    om = renderer.render_openmetrics()
    assert om == _stock(registry, "om", UNDERSCORES)
    assert b'trunk="bravo"' not in om
    assert b'call_uuid="fresh-exemplar"' not in om  # bravo's series are gone with its trunk
    assert renderer.render_text() == _stock(registry, "text", UNDERSCORES)
    registry.unregister(weird)
    assert renderer.render_text() == _stock(registry, "text", UNDERSCORES)


def _collector(registry: CollectorRegistry, name: str) -> object:
    """The owned family named ``name``, found through the public collect()."""
    return next(m.family for m in registry.collect() if isinstance(m, OwnedMetric) and m.name == name)


def test_created_series_fall_back_to_stock() -> None:
    """With _created enabled (not the exporter's setting) the stock path is used: still equal."""
    prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        registry = CollectorRegistry()
        c = Counter("with_created", "Counter with _created.", ["x"], registry=registry)
        c.labels("a").inc()
        Histogram("h_created", "Histogram with _created.", registry=registry).observe(1)
        renderer = Renderer(registry)
        for fmt in ("text", "om"):
            out = _fast(renderer, fmt, UNDERSCORES)
            assert out == _stock(registry, fmt, UNDERSCORES)
            assert b"with_created_created" in out
    finally:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "application/openmetrics-text",
        "application/openmetrics-text;version=1.0.0",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
        "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        "application/json",
    ],
)
def test_negotiation_matches_choose_encoder(state: tuple[CollectorRegistry, Runtime], accept: str) -> None:
    registry, _ = state
    renderer = Renderer(registry)
    encoder, content_type = text_exp.choose_encoder(accept)
    om, escaping, version, fast_type = renderer.negotiate(accept)
    assert fast_type == content_type
    fast = renderer.render_openmetrics(escaping, version) if om else renderer.render_text(escaping)
    assert fast == encoder(registry)


async def test_metrics_endpoint_serves_the_fast_rendering(aiohttp_client: Any) -> None:
    """The /metrics handler answers what the stock encoder would (process lines aside)."""
    registry = CollectorRegistry()
    app = create_app(make_config(), registry)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    rt = app[RUNTIME]
    for i in range(5):
        _record(rt, "alpha", i)
    assert renderer_for(registry) is renderer_for(registry)

    def strip(body: bytes) -> list[bytes]:
        return [line for line in body.split(b"\n") if b"process_" not in line]

    for accept, stock in (
        ("", text_exp.generate_latest),
        ("application/openmetrics-text; version=1.0.0", om_exp.generate_latest),
    ):
        resp = await client.get("/metrics", headers={"Accept": accept})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == text_exp.choose_encoder(accept)[1]
        body = await resp.read()
        assert strip(body) == strip(stock(registry))
        assert b'vobiz_call_attempts_total{result="admitted",trunk="alpha"} 3.0' in body
