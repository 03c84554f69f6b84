"""/metrics compression: ``Accept-Encoding: gzip`` gets a gzip body that decompresses to the very
bytes of the identity answer, with ``Content-Encoding: gzip`` and ``Vary: Accept-Encoding``;
identity when not asked or refused with ``q=0``. Compression runs on the loop in slices."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client import exposition as text_exp

from exporter.app import RUNTIME, create_app
from exporter.exposition import GZIP_SLICE, accepts_gzip, gzip_async, renderer_for
from tests.helpers import make_config

OM = "application/openmetrics-text; version=1.0.0"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("gzip;q=0.001", True),
        ("gzip;q=1", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),  # what Prometheus 3 sends
        ("*", True),
        ("*;q=0", False),
        ("*;q=0.5, gzip;q=0", False),  # an explicit refusal wins over the wildcard
        ("gzip;q=0, *", False),
        ("identity, *;q=0", False),
        ("gzip;q=abc", False),  # unparsable q-value: not acceptable
        ("gzip;q=2", False),
        ("gzip;q=nan", False),
        ("gzipx", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


async def test_gzip_async_roundtrip_and_format() -> None:
    body = b"".join(b'vobiz_call_attempts_total{result="admitted",trunk="t%d"} %d.0\n' % (i, i) for i in range(20000))
    out = await gzip_async(body)
    assert out[:3] == b"\x1f\x8b\x08"  # gzip magic, deflate
    assert out[4:8] == b"\x00\x00\x00\x00"  # mtime 0: the same body compresses to the same bytes
    assert gzip.decompress(out) == body
    assert out == await gzip_async(body)
    assert len(out) < len(body) // 5
    assert gzip.decompress(await gzip_async(b"")) == b""


async def test_gzip_async_yields_between_slices() -> None:
    """With a zero budget every slice is followed by a yield: another task runs in between."""
    body = bytes(range(256)) * (GZIP_SLICE * 8 // 256)  # 8 slices
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    out = await gzip_async(body, budget=0.0)
    during = ticks - before
    stop.set()
    await task
    assert gzip.decompress(out) == body
    assert during >= 8  # one yield after each of the 8 slices
    # The ordinary budget yields too on a large body (here: no assertion on timing, only output).
    assert zlib.decompress(await gzip_async(body, budget=1.0), 16 + zlib.MAX_WBITS) == body


async def _client(aiohttp_client: Any) -> tuple[TestClient[Any, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    app = create_app(make_config(), registry)
    # The process collector's CPU and memory values move between two scrapes: drop it, so two
    # scrapes of an unchanged registry are byte-identical.
    for collector in list(registry._collector_to_names):
        if isinstance(collector, ProcessCollector):
            registry.unregister(collector)
    rt = app[RUNTIME]
    # Values that do not move with the clock (a peak-rate gauge would, between two scrapes), and
    # enough series for many compression slices.
    for n, trunk in enumerate(("alpha", "bravo"), 1):
        rt.metrics.trunks[trunk].outcomes["accepted"].inc(n)
    extra = Histogram("gzip_test_seconds", "A static histogram", ["k"], registry=registry)
    for i in range(3000):
        extra.labels(k=f"series-{i}").observe(i / 100)
    client: TestClient[Any, Any] = await aiohttp_client(app, auto_decompress=False)
    return client, registry


@pytest.mark.parametrize("accept", ["", OM])
async def test_metrics_gzip_equals_identity_byte_for_byte(aiohttp_client: Any, accept: str) -> None:
    client, registry = await _client(aiohttp_client)
    ident = await client.get("/metrics", headers={"Accept": accept, "Accept-Encoding": "identity"})
    assert ident.status == 200
    plain = await ident.read()
    assert "Content-Encoding" not in ident.headers
    assert ident.headers["Vary"] == "Accept-Encoding"
    assert ident.headers["Content-Type"] == text_exp.choose_encoder(accept)[1]
    assert int(ident.headers["Content-Length"]) == len(plain)

    gz = await client.get("/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
    assert gz.status == 200
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gz.headers["Vary"] == "Accept-Encoding"
    assert gz.headers["Content-Type"] == text_exp.choose_encoder(accept)[1]
    raw = await gz.read()
    assert int(gz.headers["Content-Length"]) == len(raw)
    assert raw[:2] == b"\x1f\x8b"
    assert gzip.decompress(raw) == plain
    assert len(raw) < len(plain)
    # And both equal what the renderer produces for the registry as it is.
    renderer = renderer_for(registry)
    expected = renderer.render_openmetrics() if accept else renderer.render_text()
    assert plain == expected
    assert b'vobiz_webhook_requests_total{outcome="accepted",trunk="bravo"} 2.0' in plain
    assert len(plain) > 20 * GZIP_SLICE  # many slices


@pytest.mark.parametrize("header", ["gzip;q=0", "deflate", "br", "identity", "*;q=0"])
async def test_metrics_identity_when_gzip_not_acceptable(aiohttp_client: Any, header: str) -> None:
    client, _ = await _client(aiohttp_client)
    resp = await client.get("/metrics", headers={"Accept-Encoding": header})
    assert resp.status == 200
    assert "Content-Encoding" not in resp.headers
    assert resp.headers["Vary"] == "Accept-Encoding"
    body = await resp.read()
    assert body.startswith(b"# HELP ")
    assert int(resp.headers["Content-Length"]) == len(body)


async def test_metrics_identity_without_accept_encoding(aiohttp_client: Any) -> None:
    client, _ = await _client(aiohttp_client)
    resp = await client.get("/metrics", skip_auto_headers=["Accept-Encoding"])
    assert resp.status == 200
    assert "Content-Encoding" not in resp.headers
    assert (await resp.read()).startswith(b"# HELP ")


async def test_prometheus_accept_encoding_gets_gzip(aiohttp_client: Any) -> None:
    """The header Prometheus 2.x sends (``gzip``) and the one Prometheus 3 sends."""
    client, _ = await _client(aiohttp_client)
    for header in ("gzip", "br;q=1.0, gzip;q=0.8, *;q=0.1"):
        resp = await client.get("/metrics", headers={"Accept-Encoding": header})
        assert resp.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(await resp.read()).startswith(b"# HELP ")
