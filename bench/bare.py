"""The reference peer: a bare aiohttp server on the same event loop as the exporter.

``plain``: read the body, answer 200 with a short JSON body (what any receiver must do).
``verify``: plus HMAC-SHA256 over the body and ``json.loads`` (the practical limit of a
verifying receiver). Both answer every path, so the exporter's request file replays as is.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen import trunk_secret

from exporter.protocol import SIGNATURE_HEADER

BODY = b'{"outcome": "accepted", "detail": "Event accepted."}'


def build(mode: str) -> web.Application:
    secrets = {f"t{i:04d}": trunk_secret(i).encode() for i in range(10000)}

    async def plain(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=BODY, content_type="application/json")

    async def verify(request: web.Request) -> web.Response:
        raw = await request.read()
        secret = secrets[request.match_info["trunk"]]
        given = bytes.fromhex(request.headers[SIGNATURE_HEADER])
        if not hmac.compare_digest(hmac.new(secret, raw, hashlib.sha256).digest(), given):
            return web.Response(status=401)
        json.loads(raw)
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/webhook/{trunk}", verify if mode == "verify" else plain)
    app.router.add_get("/-/healthy", plain)
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mode", choices=["plain", "verify"], default="plain")
    a = p.parse_args()
    if not os.environ.get("VOBIZ_EXPORTER_NO_UVLOOP"):
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    web.run_app(build(a.mode), host="127.0.0.1", port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
