"""Soak run (issue 4; not in CI): does the exporter hold steady memory under long, unique load?

Starts a real ``python -m exporter serve`` with ``dedupe.max_entries`` (default 100000), then:

1. bulk: ``--events`` unique events (default 1,000,000) as fast as ``--connections`` keep-alive
   connections carry them: far more keys than the dedupe store may hold, so it must evict;
2. steady: ``--steady-seconds`` (default 600) at ``--rate`` unique events per second.

Events are CallInitiated/Hangup pairs of unique calls, signed like the provider signs them. The
exporter's RSS (/proc/PID/status) and ``vobiz_dedupe_entries`` are sampled every
``--sample-every`` seconds. It passes when every answer was ``accepted``, the dedupe entries
never exceed max_entries, and RSS stays within 10% of its level once every bounded store is
full. Growth before that is those stores filling: the dedupe keys (two per event, full after
max_entries/2 events) and the hangup tombstones of the call tracker (one per call, full after
2 x max_entries events), both capped at max_entries.

What still moves after full, and why the 10% holds (bench/NOTES.md, "Soak"): a dict that loses
old keys and gains new ones reuses no deleted slot, so it rebuilds its table every ~2.5x its live
keys in inserts, and a table rebuilt under churn is sized for 3x the live keys where one grown by
inserts alone was sized for 1.5-3x. The tombstones' tables first rebuild ~3.5 x max_entries
events in, so they grow once more after "full" (~+5 MiB at 100,000, printed as "after N
events"), and no further. Before the stores were sharded (exporter/dedupe.py, TTLSet) that
rebuild was one 10 MiB table per store, which glibc kept in its heap, freed block and all:
RSS grew 21% after full (82 -> 99.5 MiB) and this check failed.

    .venv/bin/python bench/soak.py                      # the full run (~20-30 min on 2 cores)
    .venv/bin/python bench/soak.py --events 200000 --steady-seconds 60   # a short one
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.events import HANGUP_CAUSE_NAMES  # noqa: E402
from exporter.protocol import CALL_INITIATED, HANGUP, signed_headers  # noqa: E402

SECRET = "soak-secret-0123456789abcdef"
TRUNK_ID = "50a50a50-0000-4000-8000-000000000001"
FLAT_TOLERANCE = 0.10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("vobiz_dedupe_", 'vobiz_webhook_requests_total{outcome="accepted"')):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def event(i: int) -> bytes:
    """Event ``i``: even i = CallInitiated of call i//2, odd i = its Hangup. Unique bodies."""
    call = str(uuid.UUID(int=(0x50A5 << 112) + i // 2))
    now = time.time()
    base: dict[str, object] = {
        "CallUUID": call,
        "RequestID": f"soak-{i // 2}",
        "Timestamp": rfc3339(now),
        "From": "+919800000000",
        "To": "+918000000000",
        "Direction": "outbound",
        "TrunkID": TRUNK_ID,
        "Domain": "soak.example",
    }
    if i % 2 == 0:
        base.update(
            Event=CALL_INITIATED,
            Status="initiated",
            Allowed=i % 20 != 0,
            Reason="" if i % 20 else "No routes available",
        )
    else:
        base.update(
            Event=HANGUP,
            Duration=42,
            Billsec=35,
            RingTime=7,
            Cost=0.7,
            Currency="INR",
            MOS=4.2,
            Jitter=9,
            HangupCauseCode=4000,
            HangupCauseName=HANGUP_CAUSE_NAMES[4000],
            HangupSource="Caller",
            StartTime=rfc3339(now - 42),
            EndTime=rfc3339(now),
        )
    return json.dumps(base, separators=(",", ":")).encode()


@dataclass
class Phase:
    name: str
    sent: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, int, float, int]] = field(default_factory=list)  # (t, RSS KiB, entries, events)
    seconds: float = 0.0


SENT = [0]  # events answered so far, all phases


async def sampler(pid: int, metrics: str, phase: Phase, every: float, stop: asyncio.Event) -> None:
    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        values = await loop.run_in_executor(None, scrape, metrics)
        phase.samples.append((time.monotonic() - t0, rss_kib(pid), values.get("vobiz_dedupe_entries", -1.0), SENT[0]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def drive(
    url: str, phase: Phase, start: int, count: int | None, rate: float | None, seconds: float | None, connections: int
) -> int:
    """Send events start, start+1, ...: ``count`` of them, or for ``seconds`` at ``rate``."""
    next_i = start
    t0 = time.monotonic()
    deadline = t0 + seconds if seconds else None
    sig_key = SECRET.encode()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_i
        while True:
            i = next_i
            if count is not None and i - start >= count:
                return
            due = None
            if rate is not None:
                due = t0 + (i - start) / rate
                if deadline is not None and due >= deadline:
                    return
            next_i += 1
            if due is not None and due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            body = event(i)
            headers = signed_headers(
                body, sig_key, event=CALL_INITIATED if i % 2 == 0 else HANGUP, request_id=f"soak-{i // 2}"
            )
            async with session.post(url, data=body, headers=headers) as resp:
                outcome = json.loads(await resp.read())["outcome"]
            phase.answers[outcome] = phase.answers.get(outcome, 0) + 1
            phase.sent += 1
            SENT[0] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    phase.seconds = time.monotonic() - t0
    return next_i


def flat_from(samples: list[tuple[float, int, float, int]], full_at: int) -> tuple[int, int, int, float] | None:
    """(baseline, max, last RSS in KiB, max deviation from baseline) over the samples taken once
    ``full_at`` events were sent; None when there are fewer than two such samples."""
    after = [s for s in samples if s[3] >= full_at]
    if len(after) < 2:
        return None
    base = after[0][1]
    peak = max(s[1] for s in after)
    low = min(s[1] for s in after)
    deviation = max(peak - base, base - low) / base
    return base, peak, after[-1][1], deviation


async def run(args: argparse.Namespace) -> int:
    mport, wport = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="vobiz-soak-"))
    cfg = tmp / "soak.yaml"
    cfg.write_text(
        json.dumps(
            {
                "web": {"listen_address": f"127.0.0.1:{mport}"},
                "webhook": {"listen_address": f"127.0.0.1:{wport}"},
                "dedupe": {"max_entries": args.max_entries, "ttl": "1h"},
                "trunks": [{"name": "soak", "id": TRUNK_ID, "secret_env": "VOBIZ_SOAK_SECRET"}],
            }
        )
    )
    log = open(tmp / "exporter.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(cfg), "--log.level", "warn"],
        cwd=ROOT,
        env={**os.environ, "VOBIZ_SOAK_SECRET": SECRET},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    metrics = f"http://127.0.0.1:{mport}/metrics"
    url = f"http://127.0.0.1:{wport}/webhook/soak"
    try:
        for _ in range(200):
            try:
                scrape(metrics)
                break
            except OSError:
                time.sleep(0.1)
        start_rss = rss_kib(proc.pid)
        print(f"exporter pid {proc.pid}, RSS at start {start_rss / 1024:.1f} MiB, max_entries {args.max_entries}")
        phases = []
        next_i = 0
        for name, kwargs in (
            ("bulk", {"count": args.events, "rate": None, "seconds": None}),
            ("steady", {"count": None, "rate": args.rate, "seconds": args.steady_seconds}),
        ):
            if (name == "bulk" and not args.events) or (name == "steady" and not args.steady_seconds):
                continue
            phase = Phase(name)
            stop = asyncio.Event()
            sampling = asyncio.create_task(sampler(proc.pid, metrics, phase, args.sample_every, stop))
            next_i = await drive(url, phase, next_i, connections=args.connections, **kwargs)
            stop.set()
            await sampling
            phase.samples.append(
                (phase.seconds, rss_kib(proc.pid), scrape(metrics).get("vobiz_dedupe_entries", -1), SENT[0])
            )
            phases.append(phase)
            print(
                f"{name}: {phase.sent} events in {phase.seconds:.0f}s ({phase.sent / phase.seconds:.0f}/s), "
                f"answers {phase.answers}"
            )
        final = scrape(metrics)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()

    ok = True
    report: dict[str, object] = {"max_entries": args.max_entries, "start_rss_kib": start_rss, "phases": []}
    all_samples = [s for p in phases for s in p.samples]
    max_entries_seen = max(s[2] for s in all_samples)
    full_at = 2 * args.max_entries  # events after which the dedupe keys and the tombstones are both full
    fill = next((s for s in all_samples if s[3] >= full_at), None)
    print(
        f"RSS: start {start_rss / 1024:.1f} MiB, max {max(s[1] for s in all_samples) / 1024:.1f} MiB, "
        f"end {all_samples[-1][1] / 1024:.1f} MiB"
    )
    if fill is not None:
        print(
            f"stores full after {full_at} events: RSS {fill[1] / 1024:.1f} MiB "
            f"(+{(fill[1] - start_rss) / 1024:.1f} MiB over the start)"
        )
        # Not judged, shown: the hash tables of a churned store reach their steady size only at their
        # first rebuild under churn (for the tombstones ~3.5 x max_entries events; docstring).
        for mark in (3 * args.max_entries, 4 * args.max_entries):
            later = next((s for s in all_samples if s[3] >= mark), None)
            if later is not None:
                print(
                    f"  after {mark} events: RSS {later[1] / 1024:.1f} MiB "
                    f"({(later[1] - fill[1]) / fill[1]:+.1%} since full)"
                )
    for label, samples in [*((p.name, p.samples) for p in phases), ("whole run", all_samples)]:
        result = flat_from(samples, full_at)
        if result is None:
            print(
                f"{label}: fewer than two samples after the stores were full ({full_at} events); "
                "send more events to judge flatness"
            )
            if label == "whole run":
                ok = False
            continue
        base, peak, last, dev = result
        flat = dev <= FLAT_TOLERANCE
        ok = ok and flat
        print(
            f"{label}: RSS once the stores were full: base {base / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
            f"end {last / 1024:.1f} MiB, max deviation {dev:.1%} -> {'flat' if flat else 'NOT FLAT'} "
            f"(tolerance {FLAT_TOLERANCE:.0%})"
        )
    for p in phases:
        ok = ok and set(p.answers) == {"accepted"}
        report["phases"].append(
            {  # type: ignore[attr-defined]
                "name": p.name,
                "events": p.sent,
                "seconds": round(p.seconds, 1),
                "answers": p.answers,
                "samples": p.samples,
            }
        )
    bounded = max_entries_seen <= args.max_entries
    ok = ok and bounded
    evictions = final.get("vobiz_dedupe_evictions_total", 0.0)
    print(
        f"dedupe entries: max seen {max_entries_seen:.0f} (limit {args.max_entries}) -> "
        f"{'bounded' if bounded else 'NOT BOUNDED'}; evictions {evictions:.0f}; "
        f"events sent in all {sum(p.sent for p in phases)}"
    )
    print("PASS" if ok else "FAIL")
    if args.json:
        report.update(ok=ok, dedupe_max_seen=max_entries_seen, evictions=evictions)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="unique events in the bulk phase")
    p.add_argument("--steady-seconds", type=float, default=600.0, help="length of the steady phase")
    p.add_argument("--rate", type=float, default=200.0, help="events per second in the steady phase")
    p.add_argument("--max-entries", type=int, default=100_000, help="dedupe.max_entries")
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections of the sender")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--json", help="also write the report (with every sample) to this file")
    args = p.parse_args()
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
