"""The simulator's traffic model: which calls a run makes, and every event's payload.

:func:`plan_calls` is pure: from a config, a scenario and a seed it produces every call's
``CallInitiated`` payload and, for admitted calls, its ``Hangup`` payload, each with a send
offset (seconds from the start of the run). Encoding and signing is ``wire``, sending ``send``.

Time is compressed. Payloads carry realistic call records (ring 2-25 s, talk minutes long),
but a call's wall-clock hold (CallInitiated to Hangup) is scaled to fit the run and the
scenario's concurrency target, so every Hangup is sent before the run ends.
"""

from __future__ import annotations

import heapq
import math
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..config import Config, Trunk
from ..events import HANGUP_CAUSE_NAMES
from ..protocol import CALL_INITIATED, HANGUP
from .wire import rfc3339

K = TypeVar("K")

SCENARIOS = ("normal", "rejection-spike", "poor-quality", "near-capacity", "fraud", "outage")
DEFAULT_CAPACITY = 10  # provider default concurrent_calls_limit, used when a trunk sets none

# Normal traffic: rejections only while the running ratio stays at or under this.
NORMAL_MAX_REJECTION_RATIO = 0.02
NORMAL_REJECTION_PROBABILITY = 0.015
# Share of a trunk's limit that normal traffic may occupy (docs/simulator.md, scenario normal: at most half).
NORMAL_CAPACITY_SHARE = 0.5
NORMAL_TARGET_UTILISATION = 0.7  # of that half, on average
NEAR_CAPACITY_REJECTED_SHARE = 0.15
BUDGET_SHARE = 0.4  # projected hourly spend stays at this share of hourly_budget

# --- the provider's documented vocabulary ----------------------------------------------------

# code -> (Reason, Status, answered) of the codes the scenarios use; the HangupCauseName is
# the provider's documented name (exporter/events.py).
_HANGUP_FIELDS: dict[int, tuple[str, str, bool]] = {
    1000: ("ORIGINATOR_CANCEL", "canceled", False),
    1010: ("ALLOTTED_TIMEOUT", "canceled", True),
    1020: ("CALL_REJECTED", "canceled", False),
    2000: ("INVALID_NUMBER_FORMAT", "failed", False),
    2010: ("DESTINATION_OUT_OF_ORDER", "failed", False),
    3000: ("NO_ANSWER", "no-answer", False),
    3010: ("USER_BUSY", "busy", False),
    3020: ("CALL_REJECTED", "failed", False),
    3050: ("UNALLOCATED_NUMBER", "failed", False),
    3080: ("NORMAL_TEMPORARY_FAILURE", "failed", False),
    3070: ("RECOVERY_ON_TIMER_EXPIRE", "failed", False),
    3090: ("NORMAL_CIRCUIT_CONGESTION", "failed", False),
    3100: ("USER_BUSY", "busy", False),
    3110: ("CALL_REJECTED", "failed", False),
    4000: ("NORMAL_CLEARING", "completed", True),
    5000: ("NETWORK_OUT_OF_ORDER", "failed", False),
    5010: ("NORMAL_TEMPORARY_FAILURE", "failed", False),
    5020: ("NO_ROUTE_DESTINATION", "failed", False),
    5030: ("SWITCH_CONGESTION", "failed", False),
    6010: ("NO_USER_RESPONSE", "no-answer", False),
    6020: ("MEDIA_TIMEOUT", "completed", True),
}
# code -> (HangupCauseName, Reason, Status, answered)
HANGUP_CODES: dict[int, tuple[str, str, str, bool]] = {
    code: (HANGUP_CAUSE_NAMES[code], *fields) for code, fields in _HANGUP_FIELDS.items()
}

# Admitted calls: hangup code weights per traffic profile (each deck sums to 100).
# User outcomes (TELECOM.md) dominate normal traffic: no answer, busy, busy everywhere, rejected,
# declined, ring timeout, and the caller giving up on a ringing phone (1000 after ringing).
NORMAL_HANGUPS = {
    4000: 58,
    3000: 12,
    3010: 7,
    3100: 2,
    3020: 4,
    3110: 4,
    6010: 4,
    1000: 5,
    2000: 1,
    3050: 1,
    3080: 1,
    3090: 1,
}
# `outage`: the hot trunk's seized calls fail on the provider's or the carrier's side.
OUTAGE_HANGUPS = {5000: 20, 5010: 15, 5020: 15, 3070: 15, 3080: 15, 3090: 15, 4000: 3, 3000: 2}
SPIKE_HANGUPS = {4000: 56, 1010: 4, 3000: 13, 3010: 8, 3020: 5, 6010: 5, 1000: 5, 2010: 2, 3050: 2}
POOR_HANGUPS = {
    4000: 46,
    6020: 6,
    3000: 13,
    3010: 7,
    3020: 5,
    6010: 5,
    1000: 8,
    5000: 3,
    3080: 3,
    3090: 4,
}
NEAR_CAPACITY_HANGUPS = {4000: 55, 5030: 8, 1020: 3, 3000: 13, 3010: 7, 3020: 5, 6010: 5, 1000: 4}

# Rejection category (the exporter's `reason` label) -> weight in rejection-spike.
SPIKE_REJECTIONS = {
    "insufficient_balance": 6,
    "kyc_required": 4,
    "cli_validation_failed": 3,
    "aadhaar_pending": 2,
    "rate_limited": 2,
    "no_routes": 3,
}
SPIKE_REJECTED, SPIKE_ADMITTED = 4, 6  # 40% rejected

# Destinations (the region of `To`, ISO 3166-1 alpha-2 as the exporter labels it). Normal
# traffic calls mostly the home country (+91) and a few international routes; trunk i uses
# DESTINATION_MIXES[i % 3] (weights sum to 100). Normal traffic only ever calls
# NORMAL_DESTINATIONS: that is the `metrics.destinations.allowed` list under which `normal`
# never counts a disallowed call (docs/simulator.md).
DESTINATION_MIXES: tuple[dict[str, int], ...] = (
    {"IN": 92, "US": 3, "GB": 2, "AE": 2, "SG": 1},
    {"IN": 85, "AE": 6, "US": 4, "GB": 3, "SG": 2},
    {"IN": 95, "SG": 2, "AE": 2, "US": 1},
)
NORMAL_DESTINATIONS = frozenset({"IN", "US", "GB", "AE", "SG"})
# `fraud`: international revenue share fraud on the hot trunk. Half its calls go to premium-
# rate style destinations outside NORMAL_DESTINATIONS: Cuba +53, Somalia +252, Cook Islands
# +682, Latvia +371, Russia +7 and Iridium satellite +881 (libphonenumber's non-geographic
# region, labelled XN). They are answered at once (3 in 4 with RingTime 0: false answer
# supervision), last 1-5 s, and bill a whole minute at FRAUD_PRICE_FACTOR times the trunk's
# list price. The budget guard below keeps only normal calls' spend at 40% of hourly_budget:
# fraud spend is on top, so `fraud` also overspends a trunk's budget, as real IRSF does.
FRAUD_DESTINATIONS = {"CU": 3, "SO": 2, "CK": 2, "LV": 2, "XN": 2, "RU": 1}
FRAUD_SHARE = (1, 1)  # (fraud, normal) calls on the hot trunk
FRAUD_NO_RING = (3, 1)  # (RingTime 0, RingTime 1-2 s) among fraud calls
FRAUD_PRICE_FACTOR = 40.0


def rejection_text(rng: random.Random, category: str, currency: str) -> str:
    """The provider's free-text Reason for a rejection category (amounts and wording vary)."""
    if category == "insufficient_balance":
        return f"Insufficient balance: {rng.uniform(0.0, 4.99):.2f} {currency}"
    if category == "rate_limited":
        return rng.choice(("Concurrent call limit exceeded", "Concurrent call limit exceeded", "Rate limit exceeded"))
    return {
        "cli_validation_failed": "CLI ownership validation failed",
        "aadhaar_pending": "Aadhaar verification pending",
        "kyc_required": "KYC verification required",
        "no_routes": "No routes available",
    }[category]


# --- plan ----------------------------------------------------------------------------------


@dataclass(slots=True)
class PlannedCall:
    """One call: its CallInitiated (sent at ``start``) and, if admitted, its Hangup (at ``end``)."""

    trunk: str
    request_id: str
    start: float
    end: float | None
    call_initiated: dict[str, Any]
    hangup: dict[str, Any] | None
    rejection: str = ""  # the exporter's reason label for a rejected call, "" when admitted
    scenario: str = "normal"  # the traffic profile this trunk carries


class Deck(Generic[K]):
    """Stratified sampling: a shuffled deck of weighted keys, refilled when empty.

    Unlike independent draws, every full deck has the exact proportions, so even a short run
    shows the scenario's mix (and its hard limits hold by construction).
    """

    def __init__(self, rng: random.Random, weights: Mapping[K, int]) -> None:
        self._rng = rng
        self._cards = [k for k, w in weights.items() for _ in range(w)]
        self._pile: list[K] = []

    def draw(self) -> K:
        if not self._pile:
            self._pile = list(self._cards)
            self._rng.shuffle(self._pile)
        return self._pile.pop()


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _indian_mobile(rng: random.Random) -> str:
    return "+91" + str(rng.choice((6, 7, 8, 9))) + "".join(str(rng.randrange(10)) for _ in range(9))


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def destination_number(rng: random.Random, region: str) -> str:
    """A realistic E.164 number in ``region`` (one of DESTINATION_MIXES or FRAUD_DESTINATIONS)."""
    if region == "IN":
        return _indian_mobile(rng)
    if region == "US":
        exchange = rng.randint(200, 999)
        if exchange % 100 == 11:  # N11 codes are not exchanges
            exchange += 1
        return "+1" + rng.choice(("212", "312", "415", "617", "646")) + str(exchange) + _digits(rng, 4)
    prefix, length = {
        "GB": ("+4420" + rng.choice("378"), 7),  # London
        "AE": ("+9715" + rng.choice("024568"), 7),  # UAE mobile
        "SG": ("+65" + rng.choice("89") + rng.choice("12345678"), 6),
        "CU": ("+535", 7),
        "SO": ("+25261", 7),
        "CK": ("+682" + rng.choice("57"), 4),
        "LV": ("+3712" + rng.choice("6789"), 6),  # mobile
        "XN": ("+8816", 8),  # Iridium
        "RU": ("+79" + rng.choice("1256"), 8),  # mobile
    }[region]
    return prefix + _digits(rng, length)


def _indian_landline(rng: random.Random) -> str:
    # Bengaluru (80), Mumbai (22), Delhi (11), Chennai (44): 8-digit subscriber numbers.
    return "+91" + rng.choice(("80", "22", "11", "44")) + "".join(str(rng.randrange(10)) for _ in range(8))


@dataclass(slots=True)
class _Facts:
    """A call's realistic record, decided before its wall-clock timing."""

    allowed: bool
    rejection: str = ""
    code: int = 0
    ring: int = 0
    talk: int = 0
    source: str = ""
    mos: float = 0.0
    jitter: float | None = None
    region: str = ""  # destination region of `To`; "" = drawn from the trunk's normal mix
    premium: bool = False  # a fraud call: billed a whole minute at FRAUD_PRICE_FACTOR x price

    @property
    def duration(self) -> int:
        return self.ring + self.talk


class _TrunkTraffic:
    """Generates one trunk's calls for one traffic profile (a scenario, or normal)."""

    def __init__(
        self, trunk: Trunk, index: int, profile: str, rng: random.Random, to_rng: random.Random | None = None
    ) -> None:
        self.trunk = trunk
        self.profile = profile
        self.rng = rng
        self.currency = trunk.hourly_budget.currency if trunk.hourly_budget else "INR"
        self.price_per_minute = round(rng.uniform(0.5, 1.2), 2)
        self.source_ip = f"203.0.113.{10 + index % 240}"  # TEST-NET-3: documentation only
        self.clis = [_indian_landline(rng) for _ in range(3)]
        self.domain = f"{trunk.name}.sip.example.net"
        hangups = {
            "rejection-spike": SPIKE_HANGUPS,
            "poor-quality": POOR_HANGUPS,
            "near-capacity": NEAR_CAPACITY_HANGUPS,
            "outage": OUTAGE_HANGUPS,
        }.get(profile, NORMAL_HANGUPS)
        self.hangup_deck = Deck(rng, hangups)
        self.spike_deck = Deck(rng, {True: SPIKE_REJECTED, False: SPIKE_ADMITTED})
        self.spike_reasons = Deck(rng, SPIKE_REJECTIONS)
        self.quality_deck = Deck(rng, {"bad": 17, "fair": 3} if profile == "poor-quality" else {"good": 1})
        self.jitter_deck = Deck(rng, {True: 9, False: 1})  # Jitter missing from 1 in 10 answered calls
        # Destinations draw from their own stream, so the rest of a seeded plan does not move.
        self.to_rng = to_rng or random.Random(f"{trunk.name}:{index}:to")
        self.destination_deck = Deck(self.to_rng, DESTINATION_MIXES[index % len(DESTINATION_MIXES)])
        self.fraud_deck = Deck(self.to_rng, {True: FRAUD_SHARE[0], False: FRAUD_SHARE[1]})
        self.fraud_regions = Deck(self.to_rng, FRAUD_DESTINATIONS)
        self.fraud_no_ring = Deck(self.to_rng, {True: FRAUD_NO_RING[0], False: FRAUD_NO_RING[1]})
        # Fraud is priced before the budget guard lowers the normal price: it blows the budget.
        self.premium_price = round(self.price_per_minute * FRAUD_PRICE_FACTOR, 2)
        self.calls_seen = 0
        self.rejected = 0

    # -- admission ------------------------------------------------------------------------

    def admission(self) -> _Facts:
        """Decide admission for the next arrival in time order."""
        self.calls_seen += 1
        if self.profile == "fraud" and self.fraud_deck.draw():
            return self._fraud()
        if self.profile == "rejection-spike":
            if self.spike_deck.draw():
                return self._reject(self.spike_reasons.draw())
        elif self.profile != "near-capacity" and (
            self.rng.random() < NORMAL_REJECTION_PROBABILITY
            and self.rejected + 1 <= NORMAL_MAX_REJECTION_RATIO * self.calls_seen
        ):
            # The running ratio never exceeds 2%, so any prefix of the run (and --calls) holds it.
            return self._reject("no_routes")
        return self.admitted()

    def _fraud(self) -> _Facts:
        """A short, expensive, admitted call to a premium-rate style destination."""
        rng = self.to_rng
        facts = _Facts(allowed=True, code=4000, region=self.fraud_regions.draw(), premium=True)
        facts.ring = 0 if self.fraud_no_ring.draw() else rng.randint(1, 2)
        facts.talk = rng.randint(1, 5)
        facts.source = "Callee"
        facts.mos, facts.jitter = self._quality()
        return facts

    def _reject(self, category: str) -> _Facts:
        self.rejected += 1
        return _Facts(allowed=False, rejection=category)

    # -- hangups --------------------------------------------------------------------------

    def admitted(self) -> _Facts:
        rng = self.rng
        code = self.hangup_deck.draw()
        answered = HANGUP_CODES[code][3]
        facts = _Facts(allowed=True, code=code)
        if answered:
            facts.ring = round(_clamp(rng.lognormvariate(math.log(6.0), 0.5), 2, 25))
            median = {4000: 75.0, 1010: 40.0, 6020: 20.0}[code]
            if self.profile == "poor-quality" and code == 4000:
                median = 35.0  # people give up on bad audio
            facts.talk = max(1, round(_clamp(rng.lognormvariate(math.log(median), 0.9), 3, 3600)))
            facts.source = {1010: "Vobiz", 6020: "Vobiz"}.get(code) or rng.choice(("Caller", "Callee"))
            facts.mos, facts.jitter = self._quality()
        else:
            facts.ring, facts.source = self._unanswered(code)
            facts.mos = 0.0
            facts.jitter = None if rng.random() < 0.5 else 0.0
        return facts

    def _unanswered(self, code: int) -> tuple[int, str]:
        rng = self.rng
        if code == 3000:
            return rng.randint(12, 24), "Carrier"
        if code == 6010:
            return 25, "Vobiz"
        if code == 3010:
            return rng.randint(2, 4), "Callee"
        if code in (3020, 3110):
            return rng.randint(3, 15), "Callee"
        if code == 3100:
            return rng.randint(1, 3), "Callee"
        if code == 1000:
            return rng.randint(2, 20), "Caller"
        if code in (1020, 5030, 5000, 5010, 5020):
            return 0, "Vobiz"
        return 0, "Carrier"  # 2000-range and carrier errors: the call never rang

    def _quality(self) -> tuple[float, float | None]:
        rng = self.rng
        band = self.quality_deck.draw()
        if band == "good":
            mos = _clamp(rng.gauss(4.28, 0.15), 3.6, 4.5)
            jitter = _clamp(rng.lognormvariate(math.log(8.0), 0.5), 1.0, 29.0)
        elif band == "bad":
            mos = rng.uniform(1.6, 3.05)
            jitter = rng.uniform(55.0, 180.0)
        else:
            mos = rng.uniform(3.1, 3.9)
            jitter = rng.uniform(20.0, 50.0)
        present = self.jitter_deck.draw()
        return round(mos, 2), (round(jitter, 1) if present else None)

    # -- payloads -------------------------------------------------------------------------

    def payloads(
        self, facts: _Facts, start: float, end: float | None, base: float, account: tuple[str, str]
    ) -> PlannedCall:
        rng = self.rng
        trunk = self.trunk
        request_id = _uuid4(rng)
        identity: dict[str, Any] = {
            "CallUUID": _uuid4(rng),
            "RequestID": request_id,
            "Timestamp": rfc3339(base + start),
            "From": rng.choice(self.clis),
            "To": destination_number(self.to_rng, facts.region or self.destination_deck.draw()),
            "Direction": "outbound",
        }
        tail: dict[str, Any] = {"auth_id": account[0]}
        if trunk.id is not None:
            tail["TrunkID"] = trunk.id
        tail["Domain"] = self.domain
        tail["SourceIP"] = self.source_ip
        tail["SIPCallID"] = f"{rng.getrandbits(96):024x}@{self.source_ip}"
        initiated: dict[str, Any] = {
            "Event": CALL_INITIATED,
            **identity,
            "Status": "initiated" if facts.allowed else "rejected",
            **tail,
            "Allowed": facts.allowed,
            "Reason": "" if facts.allowed else rejection_text(rng, facts.rejection, self.currency),
        }
        hangup: dict[str, Any] | None = None
        if facts.allowed and end is not None:
            name, reason, status, answered = HANGUP_CODES[facts.code]
            billsec = facts.talk if answered else 0
            if facts.premium:
                cost = self.premium_price * math.ceil(billsec / 60.0)
            else:
                cost = round(self.price_per_minute * billsec / 60.0, 4) if answered else 0.0
            end_ts = base + end
            hangup = {
                "Event": HANGUP,
                **identity,
                "Timestamp": rfc3339(end_ts),
                "Status": status,
                **tail,
                "AccountId": account[1],
                "BridgeUUID": _uuid4(rng) if answered else "",
                "Reason": reason,
                "StartTime": rfc3339(end_ts - facts.duration),
                "EndTime": rfc3339(end_ts),
                "Duration": facts.duration,
                "Billsec": billsec,
                "RingTime": facts.ring,
                "Cost": cost,
                "Currency": self.currency,
                "MOS": facts.mos,
            }
            if facts.jitter is not None:
                hangup["Jitter"] = facts.jitter
            hangup["HangupCauseName"] = name
            hangup["HangupCauseCode"] = facts.code
            hangup["HangupSource"] = facts.source
        return PlannedCall(
            trunk=trunk.name,
            request_id=request_id,
            start=start,
            end=end if facts.allowed else None,
            call_initiated=initiated,
            hangup=hangup,
            rejection=facts.rejection,
            scenario=self.profile,
        )


@dataclass(frozen=True, slots=True)
class RunWindow:
    """The run's time budget: arrivals stop at ``arrival_end``, every Hangup by ``end_limit``."""

    length: float
    end_limit: float
    arrival_end: float


def run_window(rate: float, duration: float, calls: int | None) -> RunWindow:
    """With ``--calls``, a short run is shortened so N calls need not wait out ``--duration``."""
    length = duration
    if calls is not None:
        length = min(duration, max(2.0, calls / rate / 0.8))
    end_limit = length - min(2.0, 0.05 * length)
    return RunWindow(length=length, end_limit=end_limit, arrival_end=0.85 * end_limit)


def near_capacity_slots(limit: int) -> int:
    """Calls held open on a near-capacity trunk: at least 90% of the limit, at most the limit."""
    return min(limit, max(math.ceil(0.9 * limit), round(0.93 * limit)))


def _open_timeline(
    gen: _TrunkTraffic, rate: float, window: RunWindow, limit: int | None
) -> list[tuple[_Facts, float, float | None]]:
    """Random arrivals at ``rate``; holds scaled to the run and kept under ``limit``."""
    rng = gen.rng
    cap = max(1, math.floor(limit * NORMAL_CAPACITY_SHARE)) if limit else None
    mean_hold = (cap * NORMAL_TARGET_UTILISATION / rate) if cap else None
    out: list[tuple[_Facts, float, float | None]] = []
    t = rng.expovariate(rate)
    while t < window.arrival_end:
        facts = gen.admission()
        end: float | None = None
        if facts.allowed:
            room = window.end_limit - t
            hold = min(float(max(facts.duration, 1)), room * rng.uniform(0.3, 0.95))
            if mean_hold is not None:
                hold = min(hold, mean_hold * rng.uniform(0.5, 1.5))
            end = t + max(hold, min(0.05, room))
        out.append((facts, t, end))
        t += rng.expovariate(rate)
    if cap is not None:
        _enforce_cap(out, cap)
    return out


def _enforce_cap(calls: list[tuple[_Facts, float, float | None]], cap: int) -> None:
    """Hang up the soonest-ending call just before an arrival that would exceed ``cap``."""
    active: list[tuple[float, int]] = []  # (end, index) heap
    for i, (facts, start, end) in enumerate(calls):
        while active and active[0][0] <= start:
            heapq.heappop(active)
        if end is None:
            continue
        if len(active) >= cap:
            _, j = heapq.heappop(active)
            f, s, _old = calls[j]
            calls[j] = (f, s, start - min(0.02, (start - s) / 2))
        heapq.heappush(active, (end, i))
        calls[i] = (facts, start, end)


def _near_capacity_timeline(
    gen: _TrunkTraffic, rate: float, window: RunWindow, limit: int
) -> list[tuple[_Facts, float, float | None]]:
    """Hold ``near_capacity_slots(limit)`` calls open: each call ends as a later one starts.

    Admitted calls start every ``gap`` seconds and each hangs up just after the call ``slots``
    arrivals later has started (Little's law: active = rate x hold), so between the ramp-up and
    the last arrival exactly ``slots`` calls are active (``slots + 1`` for a moment when there is
    room under the limit). The arrival rate is raised above the trunk's share of ``--rate`` when
    needed so that one hold fits in 15% of the run.
    """
    slots = near_capacity_slots(limit)
    hold = min(slots / rate, 0.15 * window.length)
    gap = hold / slots
    overlap = min(0.05, gap / 4) if slots < limit else 0.0
    ramp_gap = min(gap, 0.05 * window.length / slots)
    last_arrival = window.end_limit - hold - 2 * gap
    starts: list[float] = []
    t = 0.0
    while t <= last_arrival or len(starts) < slots:
        starts.append(t)
        t += ramp_gap if len(starts) < slots else gap

    def start_of(k: int) -> float:
        if k < len(starts):
            return starts[k]
        return starts[-1] + (k - len(starts) + 1) * gap

    admitted = [(k, start_of(k + slots) + overlap) for k in range(len(starts))]
    rng = gen.rng
    n_rejected = round(len(starts) * NEAR_CAPACITY_REJECTED_SHARE / (1 - NEAR_CAPACITY_REJECTED_SHARE))
    lo, hi = starts[min(slots, len(starts) - 1)], starts[-1]
    rejected_at = sorted(rng.uniform(lo, hi) for _ in range(n_rejected))
    merged: list[tuple[float, float | None]] = [(starts[k], end) for k, end in admitted]
    merged += [(t_r, None) for t_r in rejected_at]
    merged.sort(key=lambda x: x[0])
    out: list[tuple[_Facts, float, float | None]] = []
    reasons = {"rate_limited": 1}
    deck = Deck(rng, reasons)
    for start, end in merged:
        gen.calls_seen += 1
        if end is None:
            gen.rejected += 1
            out.append((_Facts(allowed=False, rejection=deck.draw()), start, None))
        else:
            out.append((gen.admitted(), start, min(end, window.end_limit)))
    return out


def _apply_budget_guard(
    gen: _TrunkTraffic, timeline: list[tuple[_Facts, float, float | None]], window: RunWindow
) -> None:
    """Lower the per-minute price so projected hourly spend stays under the trunk's budget share.

    Only normal calls count and are repriced; premium (fraud) calls keep their own price.

    Simulated rates (calls per second) are far above what a small hourly budget pays for; without
    this, every scenario would also page the spend alert.
    """
    budget = gen.trunk.hourly_budget
    if budget is None:
        return
    billed_minutes = (
        sum(f.talk for f, _, end in timeline if f.allowed and not f.premium and HANGUP_CODES[f.code][3]) / 60.0
    )
    if billed_minutes <= 0:
        return
    per_hour_at_price = billed_minutes * gen.price_per_minute * 3600.0 / window.length
    limit = BUDGET_SHARE * budget.amount
    if per_hour_at_price > limit:
        gen.price_per_minute = gen.price_per_minute * limit / per_hour_at_price


def hot_trunk(config: Config, name: str | None) -> Trunk:
    """The trunk a non-normal scenario hits: ``--trunk`` or the first configured one."""
    if name is None:
        if not config.trunks:
            raise ValueError("the config has no trunks")
        return config.trunks[0]
    trunk = config.trunk_by_name(name)
    if trunk is None:
        known = ", ".join(t.name for t in config.trunks)
        raise ValueError(f"--trunk {name!r} is not a configured trunk (configured: {known})")
    return trunk


def plan_calls(
    config: Config,
    scenario: str,
    rate: float,
    duration: float,
    calls: int | None = None,
    trunk: str | None = None,
    seed: int | None = None,
    *,
    start: float | None = None,
) -> list[PlannedCall]:
    """Every call of the run, sorted by send offset. Pure given ``seed`` and ``start``.

    ``rate`` (new calls/s) is split evenly over the trunks; ``start`` is the unix time of
    offset 0 used in the payloads' times (the sender restamps them at the real send time).
    Raises ValueError for an unknown scenario or trunk and non-positive numbers.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    if not rate > 0 or not duration > 0 or not math.isfinite(rate) or not math.isfinite(duration):
        raise ValueError("--rate and --duration must be positive numbers")
    if calls is not None and calls <= 0:
        raise ValueError("--calls must be a positive integer")
    hot = hot_trunk(config, trunk)
    base = time.time() if start is None else start
    run_seed = seed if seed is not None else random.SystemRandom().getrandbits(64)
    account_rng = random.Random(f"{run_seed}:account")
    account = (
        "MA" + "".join(account_rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(18)),
        _uuid4(account_rng),
    )
    window = run_window(rate, duration, calls)
    share = rate / len(config.trunks)
    planned: list[PlannedCall] = []
    for index, t in enumerate(config.trunks):
        profile = scenario if t.name == hot.name else "normal"
        gen = _TrunkTraffic(
            t, index, profile, random.Random(f"{run_seed}:{t.name}"), random.Random(f"{run_seed}:{t.name}:to")
        )
        if profile == "near-capacity":
            timeline = _near_capacity_timeline(gen, share, window, t.max_concurrent_calls or DEFAULT_CAPACITY)
        else:
            timeline = _open_timeline(gen, share, window, t.max_concurrent_calls)
        _apply_budget_guard(gen, timeline, window)
        for facts, t_start, t_end in timeline:
            planned.append(gen.payloads(facts, t_start, t_end, base, account))
    planned.sort(key=lambda c: c.start)
    if calls is not None:
        planned = planned[:calls]
    return planned


def active_timeline(calls: Sequence[PlannedCall], trunk: str) -> list[tuple[float, int]]:
    """(time, active calls from then on) steps for a trunk; a Hangup at t ends before a start at t."""
    events: list[tuple[float, int]] = []
    for c in calls:
        if c.trunk == trunk and c.end is not None:
            events.append((c.start, 1))
            events.append((c.end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    steps: list[tuple[float, int]] = []
    active = 0
    for t, delta in events:
        active += delta
        if steps and steps[-1][0] == t:
            steps[-1] = (t, active)
        else:
            steps.append((t, active))
    return steps
