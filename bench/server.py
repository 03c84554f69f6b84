"""Run the exporter exactly as ``vobiz-exporter serve`` does, plus optional bench hooks.

``--lag-file``: an event-loop lag probe. It sleeps 1 ms in a loop and records how late each
wake-up is (the loop was busy elsewhere, or the process was preempted), and how much CPU the
process used meanwhile (work of this process only: another tenant preempting us on a shared
machine does not count there). All samples are written as JSON on exit, so the bench can cut
them into its phases. ``--stock-metrics``: serve /metrics the way the exporter did before exposition.py
(prometheus_client's encoder in a worker thread), for the before/after rows.
Without these flags nothing is added to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import time
from pathlib import Path

from aiohttp import web

from exporter import app as app_module
from exporter import cli
from exporter.config import load_config
from exporter.logs import LOGGER_NAME, setup_logging


async def _stock_metrics(request: web.Request) -> web.Response:
    """The handler as it was: stock encoder, run in the default executor."""
    from prometheus_client.exposition import choose_encoder

    rt = request.app[app_module.RUNTIME]
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = await asyncio.get_running_loop().run_in_executor(None, encoder, rt.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def _probe(out: Path, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    lags: list[float] = []
    cpu: list[float] = []
    clock = time.process_time
    # Garbage-collector pauses over 1 ms (unix time at the end, generation, ms): a loop stall that
    # coincides with one is the collector's, not the code that happened to run.
    pauses: list[tuple[float, int, float]] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - gc_start[0]) * 1000
            if ms > 1.0:
                pauses.append((round(time.time(), 4), info["generation"], round(ms, 3)))

    gc.callbacks.append(on_gc)
    while not stop.is_set():
        t = loop.time()
        c = clock()
        await asyncio.sleep(0.001)
        lags.append(round((loop.time() - t - 0.001) * 1000, 3))
        cpu.append(round((clock() - c) * 1000, 3))
        times.append(round(time.time(), 4))
    gc.callbacks.remove(on_gc)
    out.write_text(json.dumps({"t": times, "lag_ms": lags, "cpu_ms": cpu, "gc": pauses}))


async def _main(config_path: str, lag_file: Path | None) -> None:
    logger = logging.getLogger(LOGGER_NAME)
    config = load_config(config_path)
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(lag_file, stop)) if lag_file is not None else None
    try:
        await cli._serve(config, config_path, {}, logger)
    finally:
        stop.set()
        if probe is not None:
            await probe


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--lag-file", type=Path)
    p.add_argument("--stock-metrics", action="store_true")
    a = p.parse_args()
    if a.stock_metrics:
        app_module._metrics = _stock_metrics  # type: ignore[assignment]  # create_app looks it up
    logger = setup_logging("info", "logfmt")  # the serve default
    cli._install_uvloop(logger)
    asyncio.run(_main(a.config, a.lag_file))


if __name__ == "__main__":
    main()
