"""Pre-generate the bench workload: a config with K trunks and a file of unique signed requests.

The request file holds complete HTTP/1.1 requests, each preceded by its length as 8 ASCII
digits, so the wrk Lua script (``replay.lua``) only hands out ready bytes and wrk's own CPU
cost stays flat. Every request is unique (own CallUUID / RequestID, own body), so a run that
replays each at most once never hits de-duplication; the bench checks that server-side.

The mix follows real trunk traffic: admitted calls whose Hangup comes a few hundred requests
later, and rejections with every documented reason, spread over K trunks.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.events import HANGUP_CAUSE_NAMES
from exporter.protocol import CALL_INITIATED, HANGUP, signed_headers

SECRET_ENV = "VOBIZ_BENCH_SECRET_{i}"
REJECTIONS = (
    "Insufficient balance: 0.50 INR",
    "CLI ownership validation failed",
    "Aadhaar verification pending",
    "KYC verification required",
    "Rate limit exceeded: 2 cps",
    "Concurrent call limit exceeded",
    "No routes available for destination",
    "Account suspended by operator",
)
# (code, name, share): mostly normal clearing, a realistic tail of failures; the provider's names.
HANGUPS = tuple(
    (code, HANGUP_CAUSE_NAMES[code], share)
    for code, share in (
        (4000, 60),
        (3000, 10),
        (3010, 8),
        (3020, 3),
        (6010, 4),
        (2000, 2),
        (5030, 1),
        (1010, 1),
        (3050, 2),
        (7011, 1),
        (1000, 4),
        (4010, 4),
    )
)
SOURCES = ("Caller", "Callee", "Vobiz", "Carrier")
CURRENCIES = ("INR", "INR", "INR", "USD")


def trunk_name(i: int) -> str:
    return f"t{i:04d}"


def trunk_id(i: int) -> str:
    return f"5f2c1e0a-bench-4d1b-9a6e-{i:012d}"


def trunk_secret(i: int) -> str:
    return f"bench-secret-{i:04d}-{'x' * 24}"


def secret_env(k: int) -> dict[str, str]:
    """Environment the server needs: one secret per trunk (never inline in the file)."""
    return {SECRET_ENV.format(i=i): trunk_secret(i) for i in range(k)}


def write_config(
    path: Path,
    k: int,
    webhook_port: int,
    metrics_port: int,
    *,
    backend: str = "memory",
    redis_url: str | None = None,
    max_in_flight: int = 10000,
) -> None:
    """A config with K trunks. The replay window is 1 h so a pre-generated file stays fresh."""
    lines = [
        "web:",
        f'  listen_address: "127.0.0.1:{metrics_port}"',
        "webhook:",
        f'  listen_address: "127.0.0.1:{webhook_port}"',
        f"  max_in_flight: {max_in_flight}",
        "signature:",
        "  mode: enforce",
        "  replay_tolerance: 1h",
        "dedupe:",
        f"  backend: {backend}",
        "  ttl: 1h",
        "  max_entries: 2000000",
    ]
    if redis_url:
        lines.append(f'  redis_url: "{redis_url}"')
        lines.append('  redis_key_prefix: "bench:"')
    lines.append("trunks:")
    for i in range(k):
        lines += [
            f"  - name: {trunk_name(i)}",
            f"    id: {trunk_id(i)}",
            f"    secret_env: {SECRET_ENV.format(i=i)}",
            "    max_concurrent_calls: 100",
            "    cps_limit: 10",
            "    hourly_budget: {amount: 5000, currency: INR}",
        ]
    path.write_text("\n".join(lines) + "\n")


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def _request(host: str, trunk: int, event: str, request_id: str, payload: dict[str, object]) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = signed_headers(body, trunk_secret(trunk).encode(), event=event, request_id=request_id)
    head = (
        f"POST /webhook/{trunk_name(trunk)} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def _identity(rng: random.Random, trunk: int, now: float) -> dict[str, object]:
    return {
        "CallUUID": _uuid(rng),
        "RequestID": _uuid(rng),
        "Timestamp": _rfc3339(now),
        "From": f"+9198{rng.randrange(10**8):08d}",
        "To": f"+9180{rng.randrange(10**8):08d}",
        "Direction": "outbound",
        "auth_id": "MA_BENCH0001",
        "TrunkID": trunk_id(trunk),
        "Domain": f"{trunk_name(trunk)}.sip.vobiz.ai",
        "SourceIP": f"203.0.113.{rng.randrange(1, 255)}",
        "SIPCallID": f"{rng.getrandbits(64):016x}@203.0.113.9",
    }


def _hangup(
    rng: random.Random, trunk: int, ident: dict[str, object], now: float, weights: list[int]
) -> dict[str, object]:
    code, name, _ = rng.choices(HANGUPS, weights)[0]
    answered = code in (4000, 4010)
    ring = round(rng.uniform(2, 25), 1)
    billsec = rng.randrange(5, 900) if answered else 0
    duration = int(ring) + billsec
    payload = dict(ident)
    payload.update(
        {
            "Event": HANGUP,
            "Timestamp": _rfc3339(now),
            "AccountId": "MA_BENCH0001",
            "BridgeUUID": _uuid(rng),
            "Status": "completed" if answered else "failed",
            "Reason": "NORMAL_CLEARING" if answered else "NO_ANSWER",
            "StartTime": _rfc3339(now - duration),
            "EndTime": _rfc3339(now),
            "Duration": duration,
            "Billsec": billsec,
            "RingTime": ring,
            "Cost": round(billsec / 60 * 0.45, 4),
            "Currency": rng.choice(CURRENCIES),
            "MOS": round(rng.uniform(3.0, 4.5), 2) if answered else 0,
            "HangupCauseName": name,
            "HangupCauseCode": code,
            "HangupSource": rng.choice(SOURCES),
        }
    )
    if answered:
        payload["Jitter"] = round(rng.uniform(1, 60), 1)
    return payload


def generate(
    path: Path, k: int, n: int, *, seed: int = 1, host: str = "127.0.0.1", reject_share: float = 0.15
) -> dict[str, int]:
    """Write ``n`` unique requests. Returns counts by kind (for the results)."""
    rng = random.Random(seed)
    now = time.time()
    weights = [w for _, _, w in HANGUPS]
    pending: list[tuple[int, int, bytes]] = []  # (due position, tiebreak, request)
    counts = {"call_initiated_admitted": 0, "call_initiated_rejected": 0, "hangup": 0}
    written = 0
    with path.open("wb") as out:
        seq = 0
        while written < n:
            if pending and pending[0][0] <= written:
                req = heapq.heappop(pending)[2]
                counts["hangup"] += 1
            else:
                trunk = rng.randrange(k)
                ident = _identity(rng, trunk, now)
                rid = str(ident["RequestID"])
                allowed = rng.random() >= reject_share
                payload = {
                    "Event": CALL_INITIATED,
                    **ident,
                    "Status": "initiated",
                    "Allowed": allowed,
                    "Reason": "" if allowed else rng.choice(REJECTIONS),
                }
                req = _request(host, trunk, CALL_INITIATED, rid, payload)
                if allowed:
                    counts["call_initiated_admitted"] += 1
                    hang = _hangup(rng, trunk, ident, now, weights)
                    seq += 1
                    due = written + rng.randrange(50, 1000)
                    heapq.heappush(pending, (due, seq, _request(host, trunk, HANGUP, rid, hang)))
                else:
                    counts["call_initiated_rejected"] += 1
            out.write(b"%08d" % len(req))
            out.write(req)
            written += 1
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trunks", type=int, default=10)
    p.add_argument("--requests", type=int, default=200_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    t = time.perf_counter()
    counts = generate(a.out, a.trunks, a.requests, seed=a.seed)
    print(
        json.dumps(
            {
                "file": str(a.out),
                "bytes": os.path.getsize(a.out),
                **counts,
                "seconds": round(time.perf_counter() - t, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
