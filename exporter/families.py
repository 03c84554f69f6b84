"""Metric state the exporter owns: counters, gauges and histograms as plain Python objects.

Why not prometheus_client's Counter/Histogram children: their updates take a lock and re-check
what is fixed for us (amount >= 0, exemplar size) on every call, the hot path would need their
private attributes to go faster, and a fast renderer would need them again to read the values.
Here every update is an attribute write on a ``__slots__`` object, done on the single event
loop (the only writer; a reader in another thread sees each float whole, under the GIL).

Each family is a prometheus_client custom collector (the public ``collect``/``describe``
protocol): ``registry.get_sample_value``, the stock text and OpenMetrics encoders, the process
collectors beside it and several registries all work unchanged. ``collect`` yields an
:class:`OwnedMetric`, a real ``Metric`` whose samples are built only when somebody reads them;
exposition.py recognises it and renders the family from this state directly.

No ``_created`` series: they would double the series count (docs/contract.md, "Labels").
"""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import floatToGoString as _untyped_go

# Names every exposition format and escaping writes as they are: no colon, nothing to quote.
PLAIN_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
INF: Final = math.inf
floatToGoString: Callable[[float], str] = _untyped_go  # the stock formatting of bounds, typed


def _exemplar(labels: dict[str, str], value: float, timestamp: float) -> Exemplar:
    """``Exemplar(labels, value, timestamp)``, built as the plain tuple it is when it is one (a
    NamedTuple's own constructor costs 3x as much; three per Hangup)."""
    return _new_tuple(Exemplar, (labels, value, timestamp))


def _exemplar_call(labels: dict[str, str], value: float, timestamp: float) -> Exemplar:
    return Exemplar(labels, value, timestamp)


_new_tuple = tuple.__new__
if not (issubclass(Exemplar, tuple) and getattr(Exemplar, "_fields", ()) == ("labels", "value", "timestamp")):
    _exemplar = _exemplar_call  # another prometheus_client shape: its constructor


class CounterChild:
    """One counter series. ``value`` may be incremented directly on the hot path."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount

    def get(self) -> float:
        return self.value


class GaugeChild:
    """One gauge series: a value, or a function read at collection time."""

    __slots__ = ("function", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        self.value = float(value)

    def set_function(self, function: Callable[[], float]) -> None:
        self.function = function

    def get(self) -> float:
        return float(self.function()) if self.function is not None else self.value


class HistogramChild:
    """One histogram series: per-bucket counts (not cumulative), the sum, per-bucket exemplars."""

    __slots__ = ("bounds", "counts", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, the last one +Inf
        self.counts = [0.0] * len(bounds)
        self.exemplars: list[Exemplar | None] = [None] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float, exemplar: dict[str, str] | None = None, ts: float | None = None) -> None:
        """Count ``value`` in the first bucket whose bound is >= it (``le``). Callers pass finite
        values (events.py bounds every field); an exemplar's labels must fit OpenMetrics' 128
        characters, which ``call_uuid`` ids of at most metrics.EXEMPLAR_MAX_ID do."""
        i = bisect_left(self.bounds, value)
        self.counts[i] += 1.0
        self.sum += value
        if exemplar is not None:
            self.exemplars[i] = _exemplar(exemplar, value, time.time() if ts is None else ts)

    def cumulative(self) -> list[float]:
        acc = 0.0
        out = []
        for c in self.counts:
            acc += c
            out.append(acc)
        return out


Child = CounterChild | GaugeChild | HistogramChild
C = TypeVar("C", CounterChild, GaugeChild, HistogramChild)
Registry = CollectorRegistry | None  # None: a family no registry collects (tests, a private render)


class OwnedMetric(Metric):
    """The ``Metric`` that a family's ``collect`` yields: its samples are built from the
    family's state on first read, so a renderer that reads the state itself never builds them."""

    def __init__(self, family: Family[Any]) -> None:
        self.family = family
        self._samples: list[Sample] | None = None
        super().__init__(family.name, family.documentation, family.kind)

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            self._samples = list(self.family.samples())
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._samples = value or None  # Metric.__init__ assigns []: stay lazy


class Family(Generic[C]):
    """A labelled family of owned children, registered on ``registry`` as a collector."""

    kind = "untyped"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = (), *, registry: Registry) -> None:
        for n in (name, *labelnames):
            if not PLAIN_NAME.match(n) or n.startswith("__"):
                raise ValueError(f"not a plain metric or label name: {n!r}")
        if "le" in labelnames:
            raise ValueError("'le' is reserved for histogram buckets")
        self.name = name
        self.documentation = doc
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], C] = {}
        if not self.labelnames:
            self.children[()] = self._new()
        if registry is not None:
            registry.register(self)

    def _new(self) -> C:
        raise NotImplementedError

    def labels(self, *labelvalues: str) -> C:
        """The child of these label values, made on first use (zero until updated)."""
        child = self.children.get(labelvalues)
        if child is None:
            if len(labelvalues) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {labelvalues}")
            child = self.children[labelvalues] = self._new()
        return child

    def remove(self, *labelvalues: str) -> None:
        """Drop one series; a missing one is no error (reloads remove what may never have existed)."""
        self.children.pop(labelvalues, None)

    def put(self, labelvalues: tuple[str, ...], child: C) -> None:
        """Re-insert a removed child: its series continues where it stopped (a restored trunk)."""
        self.children[labelvalues] = child

    def describe(self) -> list[Metric]:
        """The family's names, without samples, so the registry refuses a clash at register time."""
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> Iterator[Metric]:
        yield OwnedMetric(self)

    def samples(self) -> Iterator[Sample]:
        for labelvalues, child in list(self.children.items()):
            labels = dict(zip(self.labelnames, labelvalues, strict=True))
            yield from self._samples(labels, child)

    def _samples(self, labels: dict[str, str], child: C) -> Iterable[Sample]:
        raise NotImplementedError


class CounterFamily(Family[CounterChild]):
    kind = "counter"

    def _new(self) -> CounterChild:
        return CounterChild()

    def _samples(self, labels: dict[str, str], child: CounterChild) -> Iterable[Sample]:
        return (Sample(self.name + "_total", labels, child.value),)


class GaugeFamily(Family[GaugeChild]):
    kind = "gauge"

    def _new(self) -> GaugeChild:
        return GaugeChild()

    def _samples(self, labels: dict[str, str], child: GaugeChild) -> Iterable[Sample]:
        return (Sample(self.name, labels, child.get()),)


class HistogramFamily(Family[HistogramChild]):
    kind = "histogram"

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float], registry: Registry
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if bounds != tuple(sorted(bounds)) or len(set(bounds)) != len(bounds) or not bounds:
            raise ValueError(f"{name}: buckets must be distinct and ascending")
        if any(b != b for b in bounds):
            raise ValueError(f"{name}: a bucket bound is NaN")
        self.bounds = bounds if bounds[-1] == INF else (*bounds, INF)
        self.le = tuple(floatToGoString(b) for b in self.bounds)
        super().__init__(name, doc, labelnames, registry=registry)

    def _new(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def _samples(self, labels: dict[str, str], child: HistogramChild) -> Iterable[Sample]:
        """What prometheus_client's Histogram writes: cumulative ``_bucket`` samples with their
        exemplars, ``_count``, and ``_sum`` unless a bucket bound is negative."""
        out = [
            Sample(self.name + "_bucket", {**labels, "le": le}, acc, None, ex)
            for le, acc, ex in zip(self.le, child.cumulative(), child.exemplars, strict=True)
        ]
        out.append(Sample(self.name + "_count", labels, out[-1].value))
        if self.bounds[0] >= 0:
            out.append(Sample(self.name + "_sum", labels, child.sum))
        return out
