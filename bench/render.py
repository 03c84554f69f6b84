"""Time /metrics rendering at 10, 100 and 1,000 fully populated trunks, both formats:
prometheus_client's stock encoders against exporter.exposition's renderer (when present).
Prints one JSON object; also checks the two outputs are byte-identical."""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from populate import populated_runtime
from prometheus_client import exposition as text_exp
from prometheus_client.openmetrics import exposition as om_exp


def _time(fn: Callable[[], bytes], repeat: int) -> tuple[float, bytes]:
    out = fn()  # warm caches (the renderer's caches are part of its steady state)
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trunks", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    try:
        from exporter import exposition as fast
    except ImportError:
        fast = None
    rows = []
    for k in a.trunks:
        rt = populated_runtime(k)
        reg = rt.registry
        repeat = max(3, a.repeat if k <= 100 else a.repeat // 2)
        row: dict[str, object] = {"trunks": k}
        stock_text_ms, stock_text = _time(lambda reg=reg: text_exp.generate_latest(reg), repeat)
        stock_om_ms, _ = _time(lambda reg=reg: om_exp.generate_latest(reg), repeat)
        row.update(
            lines=stock_text.count(b"\n"),
            bytes=len(stock_text),
            stock_text_ms=round(stock_text_ms, 2),
            stock_om_ms=round(stock_om_ms, 2),
        )
        if fast is not None:
            renderer = fast.Renderer(reg)
            fast_text_ms, fast_text = _time(lambda r=renderer: r.render_text(), repeat)
            fast_om_ms, fast_om = _time(lambda r=renderer: r.render_openmetrics(), repeat)
            # Process metrics (CPU seconds, RSS) move between two renders: compare the rest.
            row.update(
                fast_text_ms=round(fast_text_ms, 2),
                fast_om_ms=round(fast_om_ms, 2),
                text_identical=_same(fast_text, text_exp.generate_latest(reg)),
                om_identical=_same(fast_om, om_exp.generate_latest(reg)),
            )
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(json.dumps({"render": rows}))


def _same(a: bytes, b: bytes) -> bool:
    keep = (b"process_", b"# HELP process_", b"# TYPE process_")
    fa = [line for line in a.split(b"\n") if not line.startswith(keep)]
    fb = [line for line in b.split(b"\n") if not line.startswith(keep)]
    return fa == fb


if __name__ == "__main__":
    main()
