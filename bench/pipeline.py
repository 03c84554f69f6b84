"""CPU cost of the exporter's webhook pipeline alone, without the HTTP server.

By default it times what the webhook listener runs for a complete request (``Runtime.respond_now``
and the answer's bytes, the fast path); ``--handle`` times aiohttp's path instead
(``Runtime.handle`` on mocked requests: headers, a fully buffered body, the matched trunk).
The bench's own signed requests go to a Runtime with 10 trunks, best of several rounds.
This isolates what the exporter adds on top of aiohttp, so a change to the pipeline can be
measured to a microsecond even on a busy machine, and profiles it (``--profile``)."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from unittest import mock

from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gen import secret_env, write_config

from exporter.app import Runtime, encode_reply
from exporter.config import load_config


def load(path: Path, n: int) -> list[tuple[str, CIMultiDict[str], bytes]]:
    out = []
    with path.open("rb") as f:
        while len(out) < n:
            head = f.read(8)
            if not head:
                break
            raw = f.read(int(head))
            head_b, body = raw.split(b"\r\n\r\n", 1)
            lines = head_b.decode().split("\r\n")
            path_ = lines[0].split(" ")[1]
            headers: CIMultiDict[str] = CIMultiDict()
            for line in lines[1:]:
                k, v = line.split(": ", 1)
                headers.add(k, v)
            out.append((path_, headers, body))
    return out


class _Protocol:
    """The least a StreamReader needs from its protocol (a Mock would dominate the profile)."""

    _reading_paused = False

    def pause_reading(self, **_: object) -> None:
        pass

    def resume_reading(self, **_: object) -> None:
        pass


def requests(items: list[tuple[str, CIMultiDict[str], bytes]]) -> list[object]:
    loop = asyncio.get_running_loop()
    protocol = _Protocol()
    # One set of stand-ins for all requests: building them per request takes longer than the test.
    shared = {"protocol": mock.Mock(), "transport": mock.Mock(), "writer": mock.Mock(), "app": web.Application()}
    reqs = []
    for path_, headers, body in items:
        payload = streams.StreamReader(protocol, 2**16, loop=loop)
        payload.feed_data(body)
        payload.feed_eof()
        reqs.append(
            make_mocked_request(
                "POST", path_, headers, match_info={"trunk": path_.rsplit("/", 1)[1]}, payload=payload, **shared
            )
        )
    return reqs


async def run(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path("/tmp/vobiz-bench-pipeline.yaml")
    write_config(tmp, 10, 1, 2)
    import os

    os.environ.update(secret_env(10))
    items = load(args.requests, args.n)
    best = float("inf")
    for _ in range(args.rounds):
        statuses: dict[int, int] = {}
        rt = Runtime(load_config(str(tmp)), CollectorRegistry())
        reqs = requests(items) if args.handle else []
        peer = ("127.0.0.1", 40000)
        prof = cProfile.Profile() if args.profile else None
        t = time.process_time()
        if prof:
            prof.enable()
        if args.handle:
            for req in reqs:
                resp = await rt.handle(req)  # type: ignore[arg-type]
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
        else:
            for path_, headers, body in items:
                reply = rt.respond_now("POST", path_, path_.rsplit("/", 1)[1], headers, body, peer)
                status = int(encode_reply(reply)[9:12])
                statuses[status] = statuses.get(status, 0) + 1
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        best = min(best, time.process_time() - t)
    return {"requests": len(items), "pipeline_us_per_request": round(best / len(items) * 1e6, 2), "statuses": statuses}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=Path, required=True)
    p.add_argument("-n", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--handle", action="store_true", help="aiohttp's path (Runtime.handle) instead of the fast path")
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a))))


if __name__ == "__main__":
    main()
