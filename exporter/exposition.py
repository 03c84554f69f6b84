"""A faster /metrics renderer, byte-identical to prometheus_client's text and OpenMetrics output.

Why: the stock encoders rebuild every sample on every scrape (a ``Sample`` tuple, a merged and
sorted label dict, escaping, ``floatToGoString`` of every bucket bound): about 20,000 lines and
200 ms for 100 trunks, which stalls webhooks on the event loop. Almost all of that is the same
from one scrape to the next. Here each label child's sample-line prefixes
(``name_bucket{le="1.0",trunk="a"} ``) are built once and cached per child, so a scrape only
reads the current values and formats the numbers. A child that is removed and re-created (a
reload) gets a new cache entry, found by identity, so invalidation costs nothing on the hot path.

Scope of the fast path: the exporter's own families (exporter/families.py), which it reads
straight from their state, in the ``underscores`` / ``allow-utf-8`` escapings. Every other
family in the registry (process, platform, anyone's custom collector) and any other escaping is
rendered family by family with prometheus_client's own encoder, so output equals
``generate_latest`` by construction there. Only public prometheus_client API is used:
``registry.collect()`` gives the families in the stock order. ``render_async`` yields to the
event loop every quarter millisecond, so a scrape of any size never stalls webhooks for longer
than that.

Compression: Prometheus sends ``Accept-Encoding: gzip``. ``gzip_async`` compresses the rendered
body on the loop in 16 KiB slices with the same time budget (zlib level 1: the 2.1 MB OpenMetrics
scrape of 100 trunks becomes ~270 KB in ~7 ms of CPU, no slice over ~0.5 ms), so compression never
stalls webhooks either; ``accepts_gzip`` reads the header as RFC 9110 says (``q=0`` refuses, ``*``
counts).
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as _text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as _om
from prometheus_client.samples import Exemplar

from .families import (
    INF,
    CounterChild,
    CounterFamily,
    Family,
    GaugeChild,
    HistogramChild,
    HistogramFamily,
    OwnedMetric,
    floatToGoString,
)

UNDERSCORES: str = _om.UNDERSCORES
ALLOWUTF8: str = _om.ALLOWUTF8
# Our family and label names are plain (families.PLAIN_NAME): these two escapings write them as
# they are. Any other escaping goes through the stock encoder, family by family.
_FAST_ESCAPINGS = frozenset((UNDERSCORES, ALLOWUTF8))
_om_generate_latest: Callable[..., bytes] = _om.generate_latest
_text_generate_latest: Callable[..., bytes] = _text.generate_latest
_YIELD_EVERY = 32  # children rendered between checks of the time budget
DEFAULT_BUDGET = 0.00025  # seconds of rendering between two yields to the event loop
GZIP_LEVEL = 1  # 100 trunks: ~8x smaller (OpenMetrics), ~13x (text); level 6: ~2.7x the CPU, ~20% fewer bytes
GZIP_SLICE = 16384  # bytes handed to zlib at once: ~0.1-0.3 ms each at level 1


def _go(v: float) -> str:
    """``floatToGoString`` with a fast path: below 1e6 a finite float prints as ``repr``."""
    if type(v) is float and -INF < v < 1e6:
        return repr(v)
    return floatToGoString(v)


def _escape_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labelstr(labels: list[tuple[str, str]]) -> str:
    """``{a="x",b="y"}`` sorted by label name, as both stock encoders write it ('' if none)."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels)) + "}"


def _exemplar(ex: Exemplar) -> str:
    """OpenMetrics exemplar suffix, exactly as the stock OpenMetrics encoder writes it."""
    labels = "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(ex.labels.items())) + "}"
    if ex.timestamp is not None:
        return f" # {labels} {floatToGoString(ex.value)} {ex.timestamp}"
    return f" # {labels} {floatToGoString(ex.value)}"


class _One:
    """A one-family collector, to hand a single Metric to the stock encoders."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> list[Metric]:
        return [self._metric]


def _stock_family(metric: Metric, om: bool, escaping: str, version: str) -> str:
    if om:
        out = _om_generate_latest(_One(metric), escaping=escaping, version=version)
        return out.decode("utf-8")[: -len("# EOF\n")]
    return _text_generate_latest(_One(metric), escaping=escaping).decode("utf-8")


class _Child:
    """One label child's cached line prefixes and last rendered exemplars (by identity)."""

    __slots__ = ("child", "exemplars", "prefixes")

    def __init__(self, child: object, prefixes: list[str]) -> None:
        self.child = child
        self.prefixes = prefixes
        self.exemplars: dict[int, tuple[Exemplar, str]] = {}


class _Family:
    """Cached headers and per-child line prefixes of one owned family."""

    __slots__ = ("children", "family", "om_header", "text_header")

    def __init__(self, family: Family[Any]) -> None:
        self.family = family
        doc = family.documentation
        text_name = family.name + "_total" if family.kind == "counter" else family.name
        text_doc = doc.replace("\\", r"\\").replace("\n", r"\n")
        self.text_header = f"# HELP {text_name} {text_doc}\n# TYPE {text_name} {family.kind}\n"
        self.om_header = f"# HELP {family.name} {_escape_value(doc)}\n# TYPE {family.name} {family.kind}\n"
        # labelvalues -> cached child: the child is kept to notice a removed and re-made one.
        self.children: dict[tuple[str, ...], _Child] = {}

    def _prefixes(self, labelvalues: tuple[str, ...]) -> list[str]:
        f = self.family
        series = list(zip(f.labelnames, labelvalues, strict=True))
        if isinstance(f, HistogramFamily):
            prefixes = [f"{f.name}_bucket{_labelstr([*series, ('le', le)])} " for le in f.le]
            prefixes.append(f"{f.name}_count{_labelstr(series)} ")
            if f.bounds[0] >= 0:
                prefixes.append(f"{f.name}_sum{_labelstr(series)} ")
            return prefixes
        suffix = "_total" if isinstance(f, CounterFamily) else ""
        return [f"{f.name}{suffix}{_labelstr(series)} "]

    def render(self, out: list[str], om: bool) -> Iterator[None]:
        """Append this family's lines to ``out``; yields between batches of children."""
        out.append(self.om_header if om else self.text_header)
        cache = self.children
        items = list(self.family.children.items())
        for n, (labelvalues, child) in enumerate(items, 1):
            entry = cache.get(labelvalues)
            if entry is None or entry.child is not child:
                entry = cache[labelvalues] = _Child(child, self._prefixes(labelvalues))
            if type(child) is HistogramChild:
                _histogram(out, entry, child, om)
            elif type(child) is CounterChild:
                out.append(f"{entry.prefixes[0]}{_go(child.value)}\n")
            else:
                assert type(child) is GaugeChild
                out.append(f"{entry.prefixes[0]}{_go(child.get())}\n")
            if n % _YIELD_EVERY == 0:
                yield
        if len(cache) > len(items):  # children were removed: drop their prefixes
            live = {lv for lv, _ in items}
            for lv in [lv for lv in cache if lv not in live]:
                del cache[lv]


def _histogram(out: list[str], entry: _Child, child: HistogramChild, om: bool) -> None:
    """Cumulative bucket lines (with exemplars in OpenMetrics), then _count and _sum."""
    prefixes = entry.prefixes
    exemplars = child.exemplars
    append = out.append
    acc = 0.0
    i = 0
    for i, count in enumerate(child.counts):
        acc += count  # a float: the repr fast path of _go, inlined
        value = repr(acc) if acc < 1e6 else floatToGoString(acc)
        ex = exemplars[i] if om else None
        if ex is None:
            append(f"{prefixes[i]}{value}\n")
        else:
            cached = entry.exemplars.get(i)
            if cached is None or cached[0] is not ex:
                cached = entry.exemplars[i] = (ex, _exemplar(ex))
            append(f"{prefixes[i]}{value}{cached[1]}\n")
    append(f"{prefixes[i + 1]}{_go(acc)}\n")
    if len(prefixes) > i + 2:
        append(f"{prefixes[i + 2]}{_go(child.sum)}\n")


class Renderer:
    """Renders one registry; keeps the per-family caches between scrapes. Not thread-safe: use
    it from one thread (the event loop).

    It walks ``registry.collect()`` (the public collector protocol, so the order and the set of
    families are exactly what the stock encoders see): an :class:`~exporter.families.OwnedMetric`
    is rendered from the family's own state, any other family with the stock encoder."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._families: weakref.WeakKeyDictionary[Family[Any], _Family] = weakref.WeakKeyDictionary()

    # --- public API -------------------------------------------------------------------------

    def render_text(self, escaping: str = UNDERSCORES) -> bytes:
        """Equals ``prometheus_client.exposition.generate_latest(registry, escaping)``."""
        return self._run(False, escaping, "1.0.0")

    def render_openmetrics(self, escaping: str = UNDERSCORES, version: str = "1.0.0") -> bytes:
        """Equals ``prometheus_client.openmetrics.exposition.generate_latest(registry, ...)``."""
        return self._run(True, escaping, version)

    async def render_async(
        self,
        openmetrics: bool,
        escaping: str = UNDERSCORES,
        version: str = "1.0.0",
        budget: float = DEFAULT_BUDGET,
    ) -> bytes:
        """The same bytes, rendered on the event loop in slices of at most ~``budget`` seconds."""
        out: list[str] = []
        clock = time.perf_counter
        start = clock()
        for _ in self._parts(out, openmetrics, escaping, version):
            if clock() - start > budget:
                await asyncio.sleep(0)
                start = clock()
        return "".join(out).encode("utf-8")

    def negotiate(self, accept: str) -> tuple[bool, str, str, str]:
        """(openmetrics, escaping, version, content type) for an Accept header, as
        prometheus_client's ``choose_encoder`` decides them."""
        encoder, content_type = _text.choose_encoder(accept)
        func: Callable[..., bytes] = encoder
        kwargs: dict[str, Any] = {}
        if isinstance(encoder, functools.partial):
            func, kwargs = encoder.func, dict(encoder.keywords)
        openmetrics = func is _om_generate_latest
        return (
            openmetrics,
            kwargs.get("escaping", UNDERSCORES),
            kwargs.get("version", "1.0.0"),
            content_type,
        )

    # --- internals ----------------------------------------------------------------------------

    def _run(self, om: bool, escaping: str, version: str) -> bytes:
        out: list[str] = []
        for _ in self._parts(out, om, escaping, version):
            pass
        return "".join(out).encode("utf-8")

    def _cached(self, family: Family[Any]) -> _Family:
        cached = self._families.get(family)
        if cached is None:
            cached = self._families[family] = _Family(family)
        return cached

    def _parts(self, out: list[str], om: bool, escaping: str, version: str) -> Iterator[None]:
        fast = escaping in _FAST_ESCAPINGS
        for metric in self.registry.collect():
            if fast and isinstance(metric, OwnedMetric):
                yield from self._cached(metric.family).render(out, om)
            else:
                out.append(_stock_family(metric, om, escaping, version))
            yield
        if om:
            out.append("# EOF\n")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip: ``gzip`` (or ``x-gzip``) with a q-value
    above 0, else ``*`` with a q-value above 0. Absent, unparsable or ``q=0``: identity."""
    explicit: float | None = None
    star: float | None = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # also NaN
                    q = 0.0
        if coding == "*":
            star = q if star is None else max(star, q)
        else:
            explicit = q if explicit is None else max(explicit, q)
    if explicit is not None:
        return explicit > 0.0
    return star is not None and star > 0.0


async def gzip_async(
    body: bytes, budget: float = DEFAULT_BUDGET, level: int = GZIP_LEVEL, slice_bytes: int = GZIP_SLICE
) -> bytes:
    """``body`` as one gzip member (RFC 1952, mtime 0), compressed on the event loop in slices of
    ``slice_bytes``, yielding whenever ~``budget`` seconds of work have passed."""
    comp = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    view = memoryview(body)
    parts: list[bytes] = []
    clock = time.perf_counter
    await asyncio.sleep(0)  # the render's final join and encode ran just before: yield first
    start = clock()
    for i in range(0, len(body), slice_bytes):
        parts.append(comp.compress(view[i : i + slice_bytes]))
        if clock() - start > budget:
            await asyncio.sleep(0)
            start = clock()
    parts.append(comp.flush())
    return b"".join(parts)


_renderers: weakref.WeakKeyDictionary[CollectorRegistry, Renderer] = weakref.WeakKeyDictionary()


def renderer_for(registry: CollectorRegistry) -> Renderer:
    """The registry's renderer (one per registry, so its caches live as long as the registry)."""
    renderer = _renderers.get(registry)
    if renderer is None:
        renderer = _renderers[registry] = Renderer(registry)
    return renderer
