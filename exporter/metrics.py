"""Every metric of the README's metrics table, built on an injected CollectorRegistry.

Label children are created once per trunk and cached in :class:`TrunkMetrics`, so the hot path
is a dict lookup and an ``inc()``/``observe()``, not a ``labels()`` call per metric. All label
values reaching this module come from bounded sets (see ``events``); the only open-ended
value, the currency code, is capped here at ``MAX_CURRENCIES`` distinct codes per process.
"""

from __future__ import annotations

import functools
import platform
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from . import __version__, outcomes
from .config import RESERVED_TRUNK, DestinationsSection, Trunk
from .destinations import UNKNOWN as UNKNOWN_REGION
from .destinations import RegionCap, region_of
from .events import (
    CALL_INITIATED,
    HANGUP,
    INVALID_FIELD_NAMES,
    OUTCOME_GROUPS,
    REJECTION_REASONS,
    CallInitiated,
    Hangup,
)
from .families import (
    C,
    CounterChild,
    CounterFamily,
    Family,
    GaugeChild,
    GaugeFamily,
    HistogramChild,
    HistogramFamily,
)

NAMESPACE = "vobiz"
MAX_CURRENCIES = 10
OTHER = "other"
EXEMPLAR_MAX_ID = 64
# A delivery later than this after its own Timestamp is a wrong Timestamp, not a delay (the
# provider retries for minutes, not days): counted as an invalid timestamp, not observed, so
# the delay histogram's _sum stays meaningful with signature.replay_tolerance 0.
MAX_DELIVERY_DELAY = 86400.0

OUTCOMES = outcomes.NAMES
# Outcomes that can happen before a trunk is resolved: pre-created for trunk="unknown".
UNRESOLVED_OUTCOMES = outcomes.UNRESOLVED
# Removed trunks whose metric children are kept, so a trunk that a reload removes and a later
# reload restores continues its series instead of losing what was counted meanwhile.
MAX_RETIRED_TRUNKS = 64
EVENTS = (CALL_INITIATED, HANGUP)

# Buckets. Each set is chosen for the question the boards and alerts ask of it.
# Call and billable duration: short abandoned calls (<10 s) through contact-centre handle times
# (3-6 min) to long conference calls (2 h); the bands match how ACD is usually reported.
# 2, 3 and 6 s make short calls readable: a share of answered calls under 6 s far above the
# trunk's norm is the false-answer-supervision / fraud signal (TELECOM.md, "Short calls").
DURATION_BUCKETS = (1, 2, 3, 5, 6, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 7200)
# Ring time: most calls are answered within 5-20 s; ring timeouts sit at 30-60 s.
RING_BUCKETS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 120)
# Time to answer (RingTime of answered calls): sub-second answers are machines or false answer
# supervision; people answer in 2-20 s; 30-60 s is where ring timeouts cut in.
ANSWER_RING_BUCKETS = (0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60)
# MOS: exactly the G.107 E-model band edges (2.6 / 3.1 / 3.6 / 4.0 / 4.3), plus 3.5 (Twilio's
# "low_mos" line) and 4.5, so "share of calls below band X" is a single bucket read.
MOS_BUCKETS = (1.0, 2.0, 2.6, 3.1, 3.5, 3.6, 4.0, 4.3, 4.5, 5.0)
# Jitter (seconds): 30 ms is the usual one-way target (Cisco), 40 ms is severe (8x8); finer below
# 50 ms where the decisions are made, coarse above.
JITTER_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.5)
# Per-call cost in currency units: 0 catches unanswered (free) calls; 0.005-0.05 resolves
# USD/EUR calls (about 0.01 a minute); typical INR rates (0.3-1.5 a minute) give a few units;
# the tail catches long international calls.
COST_BUCKETS = (0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100)
# Delivery delay: the provider delivers asynchronously with 10 s timeouts and retries, so the
# interesting range is sub-second (healthy) through minutes (retries, backlog).
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
# Request handling is in-process and sub-millisecond when healthy; the upper buckets show
# event-loop stalls (a slow scrape, GC) that would delay the provider's deliveries.
REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


def inc(child: CounterChild) -> None:
    """``child.inc()`` without the call's check (an increment of one is never negative)."""
    child.value += 1.0


def set_value(child: GaugeChild, value: float) -> None:
    child.value = float(value)


def observe(
    child: HistogramChild, value: float, exemplar: dict[str, str] | None = None, ts: float | None = None
) -> None:
    child.observe(value, exemplar, ts)


PEAK_WINDOW = 60  # seconds


class PeakRate:
    """The most CallInitiated events in one wall-clock second over the last PEAK_WINDOW seconds.

    A sliding window, not "since the last scrape": reading it changes nothing, so two
    Prometheus servers (an HA pair) both see every peak, and any scrape interval up to the
    window misses none (a per-minute average would hide bursts against a per-second limit)."""

    __slots__ = ("counts", "seconds")

    def __init__(self) -> None:
        self.seconds = [-1] * PEAK_WINDOW
        self.counts = [0] * PEAK_WINDOW

    def hit(self, now: float) -> None:
        second = int(now)
        slot = second % PEAK_WINDOW
        if self.seconds[slot] != second:
            self.seconds[slot] = second
            self.counts[slot] = 0
        self.counts[slot] += 1

    def peak(self, now: float) -> float:
        oldest = int(now) - PEAK_WINDOW
        return float(max((c for s, c in zip(self.seconds, self.counts, strict=True) if s > oldest), default=0))


class TrunkMetrics:
    """Cached label children of one trunk, and the list of every child made, for removal."""

    def __init__(self, m: ExporterMetrics, trunk: str) -> None:
        self._m = m
        self.trunk = trunk
        self.created: list[tuple[Family[Any], tuple[str, ...], object]] = []
        # Requests past trunk resolution that will still record here: a reload that removes the
        # trunk drops its series only once they are done (they finish on the config they began).
        self.in_flight = 0
        self.retiring = False
        c = self._child
        self.admitted, self.rejected = (c(m.attempts, trunk, result) for result in ("admitted", "rejected"))
        self.rejections = {r: c(m.rejections, trunk, r) for r in REJECTION_REASONS}
        self.outcomes = {o: c(m.requests, trunk, o) for o in OUTCOMES}
        self.groups = {grp: c(m.ended_by_group, trunk, grp) for grp in OUTCOME_GROUPS}
        self.delay = {e: c(m.delay, trunk, e) for e in EVENTS}
        self.last_event = {e: c(m.last_event, trunk, e) for e in EVENTS}
        counters = (m.answered, m.effective, m.answered_no_ring, m.sig_failures_allowed, m.previous_secret_used)
        self.answered, self.effective, self.no_ring, self.sig_failures_allowed, self.previous_secret_used = (
            c(f, trunk) for f in counters
        )
        histograms = (m.duration, m.billable, m.ring, m.mos, m.jitter, m.answer_ring)
        self.duration, self.billable, self.ring, self.mos, self.jitter, self.answer_ring = (
            c(f, trunk) for f in histograms
        )
        self.active = c(m.calls_active, trunk)
        # (the function closes over the PeakRate, not over self: a TrunkMetrics in a reference
        # cycle would outlive its removal when the start-up objects are frozen, cli.py)
        peak_rate = self.peak_rate = PeakRate()
        c(m.peak_cps, trunk).set_function(lambda: peak_rate.peak(time.time()))
        self._ended: dict[tuple[str, str, str], CounterChild] = {}
        self._cost: dict[str, HistogramChild] = {}
        self._invalid = {f: c(m.invalid_fields, trunk, f) for f in INVALID_FIELD_NAMES}

    def _child(self, family: Family[C], *labels: str) -> C:
        child = family.labels(*labels)
        self.created.append((family, labels, child))
        return child

    def ended(self, cause: str, category: str, source: str) -> CounterChild:
        key = (cause, category, source)
        child = self._ended.get(key)
        if child is None:
            child = self._ended[key] = self._child(self._m.ended, self.trunk, cause, category, source)
        return child

    def cost(self, currency: str) -> HistogramChild:
        child = self._cost.get(currency)
        if child is None:
            child = self._cost[currency] = self._child(self._m.cost, self.trunk, currency)
        return child

    def invalid(self, field: str) -> CounterChild:
        child = self._invalid.get(field)
        if child is None:
            child = self._invalid[field] = self._child(self._m.invalid_fields, self.trunk, field)
        return child

    def remove(self) -> None:
        """Drop this trunk's series from the exposition; the children are kept for restore()."""
        for family, labels, _ in self.created:
            family.remove(*labels)

    def restore(self) -> None:
        """Put the children back (a reload restored the trunk): the series continue where they stopped."""
        for family, labels, child in self.created:
            family.put(labels, child)


class _Maker:
    """Builds families named ``vobiz_<name>`` on one registry: one line per metric below."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> CounterFamily:
        return CounterFamily(f"{NAMESPACE}_{name}", doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> GaugeFamily:
        return GaugeFamily(f"{NAMESPACE}_{name}", doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, buckets: tuple[float, ...], labels: tuple[str, ...] = ()
    ) -> HistogramFamily:
        return HistogramFamily(f"{NAMESPACE}_{name}", doc, labels, buckets=buckets, registry=self.registry)


class ExporterMetrics:
    """Builds every metric on ``registry`` (never the global one) and records events into them."""

    def __init__(self, registry: CollectorRegistry, active_calls: Callable[[str], int] | None = None) -> None:
        self.registry = registry
        self._active_calls = active_calls
        self._lock = threading.Lock()
        m = _Maker(registry)
        self.attempts = m.counter("call_attempts", "CallInitiated events by admission result.", ("trunk", "result"))
        self.rejections = m.counter(
            "call_rejections", "Rejected call attempts by normalised reason.", ("trunk", "reason")
        )
        self.ended = m.counter(
            "calls_ended",
            "Hangup events by cause, provider category and source.",
            ("trunk", "hangup_cause", "hangup_category", "hangup_source"),
        )
        self.answered = m.counter("calls_answered", "Hangup events with Billsec > 0 (answered calls).", ("trunk",))
        self.calls_active = m.gauge(
            "calls_active", "Calls admitted and not yet hung up (expire after calls.max_call_duration).", ("trunk",)
        )
        self.duration = m.histogram(
            "call_duration_seconds", "Call duration (ring + talk) from Hangup events.", DURATION_BUCKETS, ("trunk",)
        )
        self.billable = m.histogram(
            "call_billable_seconds",
            "Billable (connected) seconds of answered calls; sum/count = ACD.",
            DURATION_BUCKETS,
            ("trunk",),
        )
        self.ring = m.histogram("call_ring_seconds", "Ring time before answer or give-up.", RING_BUCKETS, ("trunk",))
        self.mos = m.histogram("call_mos", "Mean opinion score of measured calls (1.0-5.0).", MOS_BUCKETS, ("trunk",))
        self.jitter = m.histogram(
            "call_jitter_seconds", "Jitter reported at hangup, in seconds.", JITTER_BUCKETS, ("trunk",)
        )
        self.cost = m.histogram(
            "call_cost", "Per-call cost in the call's currency; _sum is the spend.", COST_BUCKETS, ("trunk", "currency")
        )
        self.answer_ring = m.histogram(
            "call_answer_ring_seconds", "Ring time of answered calls (time to answer).", ANSWER_RING_BUCKETS, ("trunk",)
        )
        self.effective = m.counter(
            "calls_effective", "Hangups that were answered or ended in a user outcome (NER numerator).", ("trunk",)
        )
        self.ended_by_group = m.counter(
            "calls_ended_by_group", "Hangup events by who acts on how the call ended.", ("trunk", "group")
        )
        self.answered_no_ring = m.counter(
            "calls_answered_no_ring", "Answered Hangups with RingTime 0 (a false answer supervision sign).", ("trunk",)
        )
        self.peak_cps = m.gauge(
            "trunk_peak_calls_per_second",
            "Most CallInitiated events in one second over the last minute (against cps_limit).",
            ("trunk",),
        )
        self.delay = m.histogram(
            "webhook_delivery_delay_seconds",
            "Receive time minus the event's signed Timestamp.",
            DELAY_BUCKETS,
            ("trunk", "event"),
        )
        self.last_event = m.gauge(
            "last_event_timestamp_seconds", "Unix time the last accepted event was received.", ("trunk", "event")
        )
        self.trunk_info = m.gauge("trunk_info", "One series per configured trunk.", ("trunk", "trunk_id"))
        self.max_concurrent = m.gauge(
            "trunk_max_concurrent_calls", "Configured concurrent-call limit of the trunk.", ("trunk",)
        )
        self.cps_limit = m.gauge("trunk_cps_limit", "Configured new-calls-per-second limit of the trunk.", ("trunk",))
        self.hourly_budget = m.gauge(
            "trunk_hourly_budget", "Configured hourly spend budget of the trunk.", ("trunk", "currency")
        )
        self.requests = m.counter("webhook_requests", "Webhook requests by outcome.", ("trunk", "outcome"))
        self.request_duration = m.histogram(
            "webhook_request_duration_seconds", "Time to handle one webhook request.", REQUEST_BUCKETS
        ).labels()
        self.sig_failures_allowed = m.counter(
            "webhook_signature_failures_allowed", "Signature failures accepted in report mode.", ("trunk",)
        )
        self.previous_secret_used = m.counter(
            "webhook_previous_secret_used", "Requests verified with a previous (rotated) secret.", ("trunk",)
        )
        self.invalid_fields = m.counter(
            "event_invalid_fields", "Fields dropped as invalid; the event itself still counted.", ("trunk", "field")
        )
        self.dedupe_entries = m.gauge(
            "dedupe_entries", "De-duplication keys held (memory backend; two per event)."
        ).labels()
        self.dedupe_evictions = m.counter(
            "dedupe_evictions", "De-duplication keys evicted by the max_entries bound."
        ).labels()
        self.dedupe_errors = m.counter("dedupe_errors", "De-duplication store failures.").labels()
        self.reload_ok, self.reload_ts = (
            m.gauge(name, doc).labels()
            for name, doc in (
                ("config_last_reload_successful", "Whether the last configuration reload succeeded."),
                ("config_last_reload_success_timestamp_seconds", "Time of the last successful reload."),
            )
        )
        self.build_info = m.gauge("exporter_build_info", "Build information.", ("version", "python_version"))
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # Kept so a caller (a test comparing two renders) can unregister the moving CPU and memory values.
        self.process_collector = ProcessCollector(registry=registry)
        self.platform_collector = PlatformCollector(registry=registry)

        self.trunks: dict[str, TrunkMetrics] = {}
        self._retiring: dict[str, TrunkMetrics] = {}
        self._retired: OrderedDict[str, TrunkMetrics] = OrderedDict()
        self.unknown = _UnknownTrunk(self)
        self._currencies: set[str] = set()  # observed codes, at most MAX_CURRENCIES
        self._budget_currencies: frozenset[str] = frozenset()  # always their own label
        self._trunk_labels: dict[str, tuple[str, str | None, int | None, float | None, Any]] = {}
        self.destinations: DestinationMetrics | None = None

    # --- configuration -----------------------------------------------------------------

    def configure_trunks(self, trunks: Iterable[Trunk], destinations: DestinationsSection | None = None) -> None:
        """Create zero series for every trunk; drop the series of removed trunks (on reload),
        once the requests still recording into them are done."""
        wanted = {t.name: t for t in trunks}
        self._budget_currencies = frozenset(
            t.hourly_budget.currency for t in wanted.values() if t.hourly_budget is not None
        )
        for name in list(self.trunks):
            if name not in wanted:
                tm = self.trunks.pop(name)
                self._set_trunk_gauges(name, None)
                tm.retiring = True
                if tm.in_flight:
                    self._retiring[name] = tm
                else:
                    self._retire(tm)
        for name, trunk in wanted.items():
            if name not in self.trunks:
                self.trunks[name] = self._revive(name)
            self._set_trunk_gauges(name, trunk)
        self._configure_destinations(destinations, wanted)

    def _revive(self, name: str) -> TrunkMetrics:
        tm = self._retiring.pop(name, None)
        if tm is None:
            tm = self._retired.pop(name, None)
            if tm is not None:
                tm.restore()
        if tm is None:
            tm = TrunkMetrics(self, name)
            if self._active_calls is not None:
                tm.active.set_function(functools.partial(self._active_calls, name))
        tm.retiring = False
        return tm

    def _retire(self, tm: TrunkMetrics) -> None:
        tm.remove()
        if self.destinations is not None:
            self.destinations.remove_trunk(tm.trunk)
        self._retired[tm.trunk] = tm
        while len(self._retired) > MAX_RETIRED_TRUNKS:
            self._retired.popitem(last=False)

    def acquire(self, name: str) -> TrunkMetrics | None:
        """The live metrics of a configured trunk, held until ``release``."""
        tm = self.trunks.get(name)
        if tm is not None:
            tm.in_flight += 1
        return tm

    def release(self, tm: TrunkMetrics) -> None:
        tm.in_flight -= 1
        if tm.retiring and not tm.in_flight and self._retiring.get(tm.trunk) is tm:
            del self._retiring[tm.trunk]
            self._retire(tm)

    def _configure_destinations(self, cfg: DestinationsSection | None, trunks: dict[str, Trunk]) -> None:
        if cfg is None or not cfg.enabled:
            if self.destinations is not None:
                self.destinations.unregister()
                self.destinations = None
            return
        if self.destinations is None:
            self.destinations = DestinationMetrics(self.registry, cfg)
        else:
            self.destinations.configure(cfg)
        for name in self.destinations.trunks() - set(trunks):
            self.destinations.remove_trunk(name)

    def _set_trunk_gauges(self, name: str, trunk: Trunk | None) -> None:
        old = self._trunk_labels.pop(name, None)
        if old is not None:
            _, old_id, old_max, old_cps, old_budget = old
            self.trunk_info.remove(name, old_id or "")
            if old_max is not None:
                self.max_concurrent.remove(name)
            if old_cps is not None:
                self.cps_limit.remove(name)
            if old_budget is not None:
                self.hourly_budget.remove(name, old_budget.currency)
        if trunk is None:
            return
        self.trunk_info.labels(name, trunk.id or "").set(1)
        if trunk.max_concurrent_calls is not None:
            self.max_concurrent.labels(name).set(trunk.max_concurrent_calls)
        if trunk.cps_limit is not None:
            self.cps_limit.labels(name).set(trunk.cps_limit)
        if trunk.hourly_budget is not None:
            self.hourly_budget.labels(name, trunk.hourly_budget.currency).set(trunk.hourly_budget.amount)
        self._trunk_labels[name] = (
            name,
            trunk.id,
            trunk.max_concurrent_calls,
            trunk.cps_limit,
            trunk.hourly_budget,
        )

    def _admit_currency(self, code: str) -> str:
        """Currency label value: a budget currency, or an observed code while fewer than
        MAX_CURRENCIES are known (budget currencies do not count), else other."""
        if code in self._currencies or code in self._budget_currencies:
            return code
        if code == OTHER:
            return OTHER
        with self._lock:
            if len(self._currencies - self._budget_currencies) < MAX_CURRENCIES:
                self._currencies.add(code)
                return code
        return OTHER

    def set_reload(self, ok: bool, timestamp: float | None) -> None:
        self.reload_ok.set(1 if ok else 0)
        if ok and timestamp is not None:
            self.reload_ts.set(timestamp)

    # --- recording ---------------------------------------------------------------------

    def outcome(self, tm: TrunkMetrics | None, outcome: str) -> None:
        if tm is None:
            self.unknown.outcome(outcome)
        else:
            tm.outcomes[outcome].value += 1.0

    def record_call_initiated(self, tm: TrunkMetrics, ev: CallInitiated, received: float) -> None:
        if ev.allowed:
            tm.admitted.value += 1.0
        else:
            tm.rejected.value += 1.0
            tm.rejections[ev.reason].value += 1.0
        tm.peak_rate.hit(received)
        if self.destinations is not None:
            self.destinations.call_initiated(tm.trunk, ev)
        self._common(tm, CALL_INITIATED, ev.timestamp, ev.invalid_fields, received)

    def record_hangup(self, tm: TrunkMetrics, ev: Hangup, received: float) -> None:
        exemplar = {"call_uuid": ev.call_uuid} if len(ev.call_uuid) <= EXEMPLAR_MAX_ID else None
        currency = self._admit_currency(ev.currency) if ev.cost is not None else OTHER
        tm.ended(ev.hangup_cause, ev.hangup_category, ev.hangup_source).value += 1.0
        tm.groups[ev.group].value += 1.0
        if ev.effective:
            tm.effective.value += 1.0
        if ev.billsec is not None and ev.billsec > 0:
            tm.answered.value += 1.0
            tm.billable.observe(ev.billsec)
            if ev.ring_time is not None:
                tm.answer_ring.observe(ev.ring_time)
                if ev.ring_time == 0:
                    tm.no_ring.value += 1.0
        if ev.duration is not None:
            tm.duration.observe(ev.duration, exemplar, received)
        if ev.ring_time is not None:
            tm.ring.observe(ev.ring_time)
        if ev.mos is not None:
            tm.mos.observe(ev.mos, exemplar, received)
        if ev.jitter_seconds is not None:
            tm.jitter.observe(ev.jitter_seconds)
        if ev.cost is not None:
            tm.cost(currency).observe(ev.cost, exemplar, received)
        if self.destinations is not None:
            self.destinations.hangup(tm.trunk, ev, currency)
        self._common(tm, HANGUP, ev.timestamp, ev.invalid_fields, received)

    def _common(
        self, tm: TrunkMetrics, event: str, timestamp: float | None, invalid: tuple[str, ...], received: float
    ) -> None:
        for field in invalid:
            tm.invalid(field).value += 1.0
        if timestamp is not None:
            delay = received - timestamp
            if delay <= MAX_DELIVERY_DELAY:
                tm.delay[event].observe(max(delay, 0.0))
            else:  # only possible with the replay window off: an implausible Timestamp
                tm.invalid("timestamp").value += 1.0
        tm.last_event[event].value = received


class DestinationMetrics:
    """The opt-in per-destination families (``metrics.destinations``). They are registered only
    while enabled, so with destinations off the exposition is exactly what it was without them.
    ``country`` is the region of ``To`` (``destinations.region_of``), capped process-wide."""

    def __init__(self, registry: CollectorRegistry, cfg: DestinationsSection) -> None:
        self._registry = registry
        m = _Maker(registry)
        self.attempts = m.counter(
            "destination_attempts",
            "CallInitiated events by destination region and admission result.",
            ("trunk", "country", "result"),
        )
        self.answered = m.counter(
            "destination_answered", "Answered Hangups (Billsec > 0) by destination region.", ("trunk", "country")
        )
        self.billable = m.counter(
            "destination_billable_seconds",
            "Billable seconds of answered calls by destination region.",
            ("trunk", "country"),
        )
        self.cost = m.counter(
            "destination_cost",
            "Call cost by destination region, in the call's currency.",
            ("trunk", "country", "currency"),
        )
        self.disallowed = m.counter(
            "destination_disallowed",
            "Admitted calls to a region outside the trunk's metrics.destinations.allowed list.",
            ("trunk", "country"),
        )
        self._families = (self.attempts, self.answered, self.billable, self.cost, self.disallowed)
        self._cap = RegionCap(cfg.max_countries)
        self.configure(cfg)

    def configure(self, cfg: DestinationsSection) -> None:
        self._allowed = cfg.allowed
        self._cap.max_countries = cfg.max_countries
        self._cap.pinned = frozenset().union(*cfg.allowed.values()) if cfg.allowed else frozenset()

    def call_initiated(self, trunk: str, ev: CallInitiated) -> None:
        region = region_of(ev.to_number)
        country = self._cap.label(region)
        inc(self.attempts.labels(trunk, country, "admitted" if ev.allowed else "rejected"))
        allowed = self._allowed.get(trunk)
        # An unreadable number is not counted as disallowed: a payload format change would
        # otherwise page as fraud (it shows as country="unknown" in the attempts).
        if ev.allowed and allowed is not None and region not in allowed and region != UNKNOWN_REGION:
            inc(self.disallowed.labels(trunk, country))

    def hangup(self, trunk: str, ev: Hangup, currency: str) -> None:
        country = self._cap.label(region_of(ev.to_number))
        if ev.billsec is not None and ev.billsec > 0:
            inc(self.answered.labels(trunk, country))
            self.billable.labels(trunk, country).value += ev.billsec
        if ev.cost is not None:
            self.cost.labels(trunk, country, currency).value += ev.cost

    def trunks(self) -> set[str]:
        return {labels[0] for family in self._families for labels in family.children}

    def remove_trunk(self, trunk: str) -> None:
        for family in self._families:
            for labels in [k for k in family.children if k[0] == trunk]:
                family.remove(*labels)

    def unregister(self) -> None:
        for family in self._families:
            self._registry.unregister(family)


class _UnknownTrunk:
    """Outcomes of requests whose trunk was never resolved (trunk="unknown")."""

    def __init__(self, m: ExporterMetrics) -> None:
        self._m = m
        self._children = {o: m.requests.labels(RESERVED_TRUNK, o) for o in UNRESOLVED_OUTCOMES}

    def outcome(self, outcome: str) -> None:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = self._m.requests.labels(RESERVED_TRUNK, outcome)
        child.inc()
