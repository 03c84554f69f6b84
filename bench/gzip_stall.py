"""How long one /metrics scrape holds the event loop at 100 fully populated trunks, identity and
gzip, measured in process as CPU time (``time.thread_time``) between two runs of a ticker task,
so another tenant preempting the process does not count. Once with the garbage collector off
(the scrape's own work) and once with it on (plus its passes, which the scrape's allocations can
trigger). Prints one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from populate import populated_runtime

from exporter import exposition


async def measure(trunks: int, scrapes: int) -> dict[str, object]:
    rt = populated_runtime(trunks)
    renderer = exposition.renderer_for(rt.registry)
    body = await renderer.render_async(True)  # warm the renderer's caches
    gzipped = await exposition.gzip_async(body)
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.thread_time()
        while not stop:
            await asyncio.sleep(0)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    pauses: list[float] = []
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time()
        else:
            pauses.append(time.thread_time() - started[0])

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    out: dict[str, object] = {
        "trunks": trunks,
        "scrapes": scrapes,
        "identity_bytes": len(body),
        "gzip_bytes": len(gzipped),
    }
    gc.callbacks.append(on_gc)
    try:
        for collector in ("off", "on"):
            (gc.disable if collector == "off" else gc.enable)()
            for encoding in ("identity", "gzip"):
                gaps.clear()
                pauses.clear()
                cpu = time.thread_time()
                for _ in range(scrapes):
                    b = await renderer.render_async(True)
                    if encoding == "gzip":
                        b = await exposition.gzip_async(b)
                cpu = (time.thread_time() - cpu) / scrapes
                out[f"{encoding}_gc_{collector}"] = {
                    "longest_hold_ms": round(max(gaps) * 1000, 3),
                    "cpu_ms_per_scrape": round(cpu * 1000, 2),
                    "yields_per_scrape": round(len(gaps) / scrapes, 1),
                    "gc_passes": len(pauses),
                    "longest_gc_pass_ms": round(max(pauses, default=0.0) * 1000, 3),
                }
    finally:
        gc.callbacks.remove(on_gc)
        gc.enable()
        stop = True
        await task
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trunks", type=int, default=100)
    p.add_argument("--scrapes", type=int, default=20)
    a = p.parse_args()
    print(json.dumps(asyncio.run(measure(a.trunks, a.scrapes))))


if __name__ == "__main__":
    main()
