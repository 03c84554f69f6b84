"""Fill an exporter registry as a long-running production process would have it: every trunk
with every series it can realistically grow (all rejection reasons, a spread of hangup causes
and sources, two currencies, invalid fields, every histogram with observations and exemplars).
Used by the render and memory benches."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.app import Runtime
from exporter.config import Budget, Config, Trunk
from exporter.events import REJECTION_REASONS, CallInitiated, Hangup

CAUSES = (
    ("normal_hangup", "normal"),
    ("no_answer", "rejection"),
    ("busy_line", "rejection"),
    ("rejected", "rejection"),
    ("ring_timeout_reached", "timeout"),
    ("canceled", "canceled"),
    ("end_of_xml_instructions", "normal"),
    ("unallocated_number", "rejection"),
)
SOURCES = ("caller", "callee", "vobiz")
INVALID = ("jitter", "timestamp")


def bench_config(k: int) -> Config:
    trunks = tuple(
        Trunk(
            name=f"t{i:04d}",
            id=f"5f2c1e0a-bench-4d1b-9a6e-{i:012d}",
            secret=b"s" * 32,
            max_concurrent_calls=100,
            cps_limit=10.0,
            hourly_budget=Budget(5000.0, "INR"),
        )
        for i in range(k)
    )
    return Config(trunks=trunks)


def populated_runtime(k: int, events_per_trunk: int = 60, seed: int = 7) -> Runtime:
    """A Runtime (the real metrics wiring) whose registry holds K fully populated trunks."""
    rt = Runtime(bench_config(k), CollectorRegistry())
    rng = random.Random(seed)
    now = time.time()
    m = rt.metrics
    for name, tm in m.trunks.items():
        for reason in REJECTION_REASONS:
            m.record_call_initiated(
                tm,
                CallInitiated(
                    call_uuid=f"{name}-r-{reason}",
                    request_id=None,
                    trunk_id=None,
                    timestamp=now - 0.3,
                    allowed=False,
                    reason=reason,
                    from_number=None,
                    to_number=None,
                    invalid_fields=(),
                ),
                now,
            )
        for j in range(events_per_trunk):
            m.record_call_initiated(
                tm,
                CallInitiated(
                    call_uuid=f"{name}-{j}",
                    request_id=None,
                    trunk_id=None,
                    timestamp=now - 0.2,
                    allowed=True,
                    reason="",
                    from_number=None,
                    to_number=None,
                    invalid_fields=(),
                ),
                now,
            )
            cause, category = CAUSES[j % len(CAUSES)]
            billsec = float(rng.randrange(0, 900))
            m.record_hangup(
                tm,
                Hangup(
                    call_uuid=f"{rng.getrandbits(128):032x}",
                    request_id=None,
                    trunk_id=None,
                    timestamp=now - rng.random() * 3,
                    duration=billsec + rng.uniform(2, 25),
                    billsec=billsec,
                    ring_time=rng.uniform(1, 40),
                    cost=round(billsec / 60 * 0.45, 4),
                    currency="INR" if j % 4 else "USD",
                    mos=rng.uniform(1.5, 4.6),
                    jitter_seconds=rng.uniform(0.001, 0.3),
                    hangup_cause=cause,
                    hangup_category=category,
                    hangup_source=SOURCES[j % len(SOURCES)],
                    from_number=None,
                    to_number=None,
                    invalid_fields=INVALID if j == 0 else (),
                ),
                now,
            )
            tm.outcomes["accepted"].inc(2)
        tm.outcomes["duplicate"].inc(3)
        tm.outcomes["invalid_signature"].inc()
    return rt
