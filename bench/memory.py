"""De-duplication memory per key at 1 million keys, measured two ways in a fresh process:
RSS growth (what the OS sees, allocator overhead included) and tracemalloc (Python objects).
Keys are made exactly as the handler makes them (event_key + material_key per event)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.dedupe import MemoryDedupe, event_key, material_key


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fill(store: MemoryDedupe, keys: int) -> None:
    now = time.monotonic()
    body = b'{"Event":"Hangup","CallUUID":"%d","Duration":42,"padding":"' + b"x" * 400 + b'"}'
    for i in range(keys // 2):
        rid = f"{i:08x}-1e2f-4b89-a14c-343c1027c4d1"
        pair = (event_key("t0001", "hangup", rid), material_key("t0001", body % i))
        if store.check_and_add(pair, now):
            raise AssertionError("unexpected duplicate")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--mode", choices=["rss", "tracemalloc"], default="rss")
    a = p.parse_args()
    store = MemoryDedupe(ttl=3600.0, max_entries=a.keys * 2)
    gc.collect()
    if a.mode == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        fill(store, a.keys)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    else:
        before_kib = rss_kib()
        fill(store, a.keys)
        gc.collect()
        used = (rss_kib() - before_kib) * 1024
    assert store.entries() == a.keys, store.entries()
    print(
        json.dumps(
            {"mode": a.mode, "keys": store.entries(), "bytes": used, "bytes_per_key": round(used / store.entries(), 1)}
        )
    )


if __name__ == "__main__":
    main()
