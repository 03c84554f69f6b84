"""Slow clients (slowloris) against a real server socket: a trickled body gets 408 within
``webhook.read_timeout`` and its connection is closed, while other clients are served meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter.app import create_app

from .helpers import call_initiated, encode, free_port, headers_for, outcomes, plain_config

READ_TIMEOUT = 1.0


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, CollectorRegistry]]:
    config = plain_config(webhook={"read_timeout": "1s", "keepalive_timeout": "2s"})
    registry = CollectorRegistry()
    runner = web.AppRunner(
        create_app(config, registry), keepalive_timeout=config.webhook.keepalive_timeout, access_log=None
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, registry
    finally:
        await runner.cleanup()


async def trickle(port: int, length: int = 500, rate: float = 10.0) -> tuple[bytes, float, int]:
    """Send headers at once, then the body at ``rate`` bytes/s; stop when the server answers or
    closes. Returns (what the server sent, seconds until it did, body bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(
        b"POST /webhook/a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    sent = 0
    answer = b""
    try:
        while sent < length:
            try:
                answer = await asyncio.wait_for(reader.read(65536), timeout=1.0 / rate)
            except TimeoutError:
                writer.write(b" ")
                await writer.drain()
                sent += 1
                continue
            break
        elapsed = time.monotonic() - t0
        # Read to EOF: the server must close the connection after the 408.
        rest = await asyncio.wait_for(reader.read(), timeout=5)
        return answer + rest, elapsed, sent
    except (ConnectionResetError, BrokenPipeError):
        return answer, time.monotonic() - t0, sent
    finally:
        writer.close()


async def normal_request(port: int) -> tuple[int, float]:
    raw = encode(call_initiated())
    t0 = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/webhook/a", data=raw, headers=headers_for(raw)) as resp,
    ):
        await resp.read()
        return resp.status, time.monotonic() - t0


async def test_trickled_body_gets_408_while_others_are_served(server: tuple[int, CollectorRegistry]) -> None:
    port, registry = server
    slow = asyncio.create_task(trickle(port))
    await asyncio.sleep(0.2)  # the trickler is mid-body
    t_normal = time.monotonic()
    status, latency = await normal_request(port)
    normal_done = time.monotonic()
    answer, elapsed, sent = await slow
    slow_done = time.monotonic()

    assert status == 200
    assert latency < 0.5, latency
    assert normal_done < slow_done - 0.3  # served well before the trickler got its answer
    assert normal_done - t_normal < READ_TIMEOUT / 2

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    assert body == b'{"outcome": "timeout", "detail": "The body was not received in time."}'
    assert READ_TIMEOUT - 0.1 <= elapsed < READ_TIMEOUT + 1.0, elapsed
    assert sent < 500 // 2  # the server did not wait for the whole trickle (50 s at 10 B/s)
    assert outcomes(registry) == {("unknown", "timeout"): 1.0, ("a", "accepted"): 1.0}


async def test_many_tricklers_do_not_starve_normal_clients(server: tuple[int, CollectorRegistry]) -> None:
    port, registry = server
    slow = [asyncio.create_task(trickle(port)) for _ in range(20)]
    await asyncio.sleep(0.2)
    results = [await normal_request(port) for _ in range(5)]
    assert [s for s, _ in results] == [200] * 5
    assert max(latency for _, latency in results) < 0.5
    answers = await asyncio.gather(*slow)
    assert all(a.startswith(b"HTTP/1.1 408 ") for a, _, _ in answers)
    assert outcomes(registry) == {("unknown", "timeout"): 20.0, ("a", "accepted"): 5.0}


async def test_partial_headers_are_dropped_after_keepalive_timeout(server: tuple[int, CollectorRegistry]) -> None:
    """Headers that never finish never reach the handler (no 408 is possible before a request
    exists); aiohttp closes such a connection after webhook.keepalive_timeout (2 s here)."""
    port, registry = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(b"POST /webhook/a HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=10)
    elapsed = time.monotonic() - t0
    writer.close()
    assert data == b""
    assert 1.5 <= elapsed < 5.0, elapsed
    assert outcomes(registry) == {}


async def test_slow_chunked_body_gets_408(server: tuple[int, CollectorRegistry]) -> None:
    port, registry = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /webhook/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    t0 = time.monotonic()
    answer = b""
    for _ in range(50):
        writer.write(b"1\r\n \r\n")
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(65536), timeout=0.1)
            break
        except TimeoutError:
            continue
    elapsed = time.monotonic() - t0
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert elapsed < READ_TIMEOUT + 1.0
    assert outcomes(registry) == {("unknown", "timeout"): 1.0}


async def test_in_flight_bound_answers_503_overloaded() -> None:
    """More concurrent webhook requests than max_in_flight get 503 overloaded at once."""
    config = plain_config(webhook={"read_timeout": "2s", "max_in_flight": 3})
    registry = CollectorRegistry()
    runner = web.AppRunner(create_app(config, registry), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        holders = [asyncio.create_task(trickle(port)) for _ in range(3)]
        await asyncio.sleep(0.3)  # three requests are in flight, waiting for their bodies
        status, latency = await normal_request(port)
        assert status == 503
        assert latency < 0.5
        await asyncio.gather(*holders)
        assert (await normal_request(port))[0] == 200  # slots are freed after the 408s
        assert outcomes(registry) == {
            ("unknown", "overloaded"): 1.0,
            ("unknown", "timeout"): 3.0,
            ("a", "accepted"): 1.0,
        }
    finally:
        await runner.cleanup()
