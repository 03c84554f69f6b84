"""The webhook listener's fast path (``server.SafeRequestHandler`` + ``Runtime.answer_message``)
against aiohttp's own request path: the same bytes on the wire (but the Date), the same metrics,
and every request it must not take left to aiohttp.

Each test runs two real servers on 127.0.0.1 with the same configuration and fresh registries,
one with the fast path (``FastPathServer``, which counts what it answered) and one without, and
sends both the very same bytes over raw sockets.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web_protocol
from aiohttp.http import SERVER_SOFTWARE
from prometheus_client import CollectorRegistry

from exporter import server as server_module
from exporter.app import RUNTIME, create_app, fast_hook
from exporter.config import Config, parse_config
from exporter.protocol import SIGNATURE_HEADER

from .conftest import FastPathServer
from .helpers import SECRET_A, SECRET_B, TRUNK_A_ID, TRUNK_B_ID, call_initiated, hangup, plain_config, signed

Wire = list[bytes]


def request(path: str, body: bytes, headers: dict[str, str], *, version: str = "1.1", extra: str = "") -> bytes:
    head = f"POST {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + extra + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def post(payload: dict[str, Any] | bytes, path: str = "/webhook/a", secret: str = SECRET_A) -> bytes:
    body, headers = signed(payload, secret)
    return request(path, body, headers)


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


DATE = re.compile(rb"\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n")


def undated(answer: bytes) -> bytes:
    out, n = re.subn(
        rb"\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n", b"\r\nDate: -\r\n", answer
    )
    assert n == 1, answer  # every answer carries exactly one Date, in the HTTP form
    return out


async def exchange(port: int, requests: Wire, *, answers: int | None = None, one_by_one: bool = False) -> list[bytes]:
    """One keep-alive connection: each request written, then its answer read (``answers``: the
    number to read after writing everything at once, for pipelining; with ``one_by_one``, each
    item is written in one segment and its answers, one per request in it, read before the next)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out: list[bytes] = []
    try:
        if one_by_one:
            for raw in requests:
                writer.write(raw)
                out += [await read_answer(reader) for _ in range(raw.count(b"POST /"))]
            assert len(out) == answers
        elif answers is not None:
            writer.write(b"".join(requests))
            out = [await read_answer(reader) for _ in range(answers)]
        else:
            for raw in requests:
                writer.write(raw)
                out.append(await read_answer(reader))
    finally:
        writer.close()
    return [undated(a) for a in out]


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exporter's own families but the request durations (time spent, not
    a count); the process and platform collectors describe the test process."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        if family.name.startswith("vobiz_") and family.name != "vobiz_webhook_request_duration_seconds"
        for s in family.samples
    }


class Pair:
    """The two servers of one test, both run as the webhook listener is: ``fast`` with the fast
    path, ``plain`` without it."""

    def __init__(self, config: Config) -> None:
        self.fast_registry, self.plain_registry = CollectorRegistry(), CollectorRegistry()
        self.fast = FastPathServer(create_app(config, self.fast_registry), listener=True)
        self.plain = FastPathServer(create_app(config, self.plain_registry), listener=True, fast=False)

    async def both(self, requests: Wire, *, answers: int | None = None) -> list[bytes]:
        """The answers of both servers to the same bytes, asserted equal; returns them."""
        fast = await exchange(self.fast.port or 0, requests, answers=answers)
        plain = await exchange(self.plain.port or 0, requests, answers=answers)
        assert fast == plain
        return fast


@pytest.fixture
async def pair(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """The two servers, with the wall clock stopped: delivery delays, last-event and reload
    timestamps then come out the same on both (timers run on the loop's monotonic clock).
    ``@pytest.mark.webhook(...)`` sets the config's webhook section."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    marker = request.node.get_closest_marker("webhook")
    p = Pair(plain_config(webhook=marker.kwargs) if marker else plain_config())
    await p.fast.start_server()
    await p.plain.start_server()
    yield p
    await p.fast.close()
    await p.plain.close()


def status_and_outcome(answer: bytes) -> tuple[int, str]:
    status = int(answer.split(b" ", 2)[1])
    found = re.search(rb'"outcome": "([a-z_]+)"', answer)
    return status, found[1].decode() if found else ""


async def test_every_outcome_of_a_complete_request_is_answered_alike(pair: Pair) -> None:
    c1 = call_initiated()
    stale = call_initiated(ts=time.time() - 10 * 86400)
    body, headers = signed(call_initiated())
    del headers[SIGNATURE_HEADER]
    requests = [
        post(c1),
        post(c1),  # the same bytes again
        post(hangup(call_uuid=c1["CallUUID"])),
        post(hangup(code=3010, name="Busy", source="Callee")),  # a failed call (logged)
        post(call_initiated(allowed=False, reason="balance_low")),
        post(call_initiated(), secret=SECRET_B),
        request("/webhook/a", body, headers),
        post(call_initiated(), path="/webhook/nope"),
        post(call_initiated(), path="/webhook"),  # the trunk from the body's TrunkID
        post(b"{"),
        post(stale),
        post({"Event": "RecordingReady", "Timestamp": c1["Timestamp"], "RequestID": "r-9"}),
        post(call_initiated(trunk_id=TRUNK_B_ID)),
        post(call_initiated(trunk_id=TRUNK_B_ID), path="/webhook/g", secret=SECRET_B),  # a GET trunk
        post(hangup(mos="excellent")),  # an invalid field: dropped and counted, event counted
    ]
    answers = await pair.both(requests)
    assert [status_and_outcome(a) for a in answers] == [
        (200, "accepted"),
        (200, "duplicate"),
        (200, "accepted"),
        (200, "accepted"),
        (200, "accepted"),
        (401, "invalid_signature"),
        (401, "missing_signature"),
        (404, "unknown_trunk"),
        (200, "accepted"),
        (400, "malformed"),
        (400, "stale"),
        (200, "ignored"),
        (400, "trunk_mismatch"),
        (200, "accepted"),
        (200, "accepted"),
    ]
    assert pair.fast.answered == len(requests)  # every one of them on the fast path
    assert samples(pair.fast_registry) == samples(pair.plain_registry)
    accepted = {"trunk": "a", "outcome": "accepted"}  # the six 200 "accepted" answers on trunk a
    assert pair.fast_registry.get_sample_value("vobiz_webhook_requests_total", accepted) == 6
    assert pair.fast_registry.get_sample_value(
        "vobiz_event_invalid_fields_total", {"trunk": "a", "field": "mos"}
    ) == pytest.approx(1.0)
    count = pair.fast_registry.get_sample_value("vobiz_webhook_request_duration_seconds_count")
    assert count == pair.plain_registry.get_sample_value("vobiz_webhook_request_duration_seconds_count") == 15


async def closing(port: int | None, raw: bytes) -> bytes:
    """One request on its own connection, read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return undated(data)


@pytest.mark.webhook(max_body_bytes=1024)
async def test_a_body_over_the_limit_is_refused_and_the_connection_closed(pair: Pair) -> None:
    raw = post({"Event": "CallInitiated", "Pad": "x" * 2000})  # (small enough for one segment)
    fast, plain = await closing(pair.fast.port, raw), await closing(pair.plain.port, raw)
    assert fast == plain
    assert status_and_outcome(fast) == (413, "too_large")
    assert b"\r\nConnection: close\r\n" in fast
    assert pair.fast.answered == 1
    assert samples(pair.fast_registry) == samples(pair.plain_registry)


async def test_a_long_keep_alive_connection_and_both_paths_on_one_connection(pair: Pair) -> None:
    """40 requests one after the other on the fast path, then aiohttp's path, the fast path and
    a pipelined pair on the same connection: each answer in order, none lost. (aiohttp's parser
    parses the second request of a segment only while fewer than 32 of the connection's
    messages are unconsumed: the fast path must mark each one consumed.)"""
    many = [post(call_initiated()) for _ in range(40)]
    wire = [
        *many,
        post(call_initiated(), path="/webhook/a?x=1"),  # aiohttp's path
        post(call_initiated()),  # fast
        post(call_initiated()) + post(hangup()),  # pipelined: aiohttp's path, in order
        post(hangup()),  # fast again
    ]
    fast = await exchange(pair.fast.port or 0, wire, answers=45, one_by_one=True)
    plain = await exchange(pair.plain.port or 0, wire, answers=45, one_by_one=True)
    assert fast == plain
    assert [status_and_outcome(a) for a in fast] == [(200, "accepted")] * 45
    assert pair.fast.answered == 42
    requests = [p.runner.server.requests_count for p in (pair.fast, pair.plain)]  # type: ignore[union-attr]
    assert requests == [45, 45]
    assert samples(pair.fast_registry) == samples(pair.plain_registry)


async def test_parser_refusals_are_answered_alike(pair: Pair) -> None:
    for raw in (
        b"POST /webhook/a HTTP/1.1\r\nHost: x\r\nBad Header: y\r\nContent-Length: 0\r\n\r\n",
        b"POST /webhook/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /webhook/a HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    ):
        fast, plain = await closing(pair.fast.port, raw), await closing(pair.plain.port, raw)
        assert fast == plain
        assert status_and_outcome(fast) == (400, "malformed")
    assert pair.fast.answered == 0
    assert samples(pair.fast_registry) == samples(pair.plain_registry)


async def test_requests_the_fast_path_must_not_take_are_left_to_aiohttp(pair: Pair) -> None:
    body, headers = signed(call_initiated())
    chunked_head = f"POST /webhook/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{SIGNATURE_HEADER}: "
    chunked = (chunked_head + headers[SIGNATURE_HEADER] + "\r\n\r\n").encode()
    chunked += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    requests = [
        chunked,
        post(call_initiated(), path="/webhook/a?x=1"),
        post(call_initiated(), path="/webhook/%61"),  # "a", percent-encoded
        post(call_initiated(), path="/webhook/a/"),
        post(call_initiated(), path="http://127.0.0.1/webhook/a"),  # absolute form
        post(call_initiated(), path="//webhook/a"),
        post(call_initiated(), path="/webhook/./a"),
        post(call_initiated(), path="/webhook/.a"),
        post(call_initiated(), path="/webhook/a#f"),
        post(call_initiated(), path="/Webhook/a"),
    ]
    answers = await pair.both(requests)
    assert [status_and_outcome(a) for a in answers] == [
        (200, "accepted"),
        (200, "accepted"),
        (200, "accepted"),
        (404, ""),  # aiohttp's router: no such route
        (200, "accepted"),
        (404, ""),
        (404, ""),  # (a dot segment matches no route)
        (404, "unknown_trunk"),
        (200, "accepted"),  # (the fragment is not part of the path)
        (404, ""),
    ]
    # Expect: 100-continue (the body sent at once); aiohttp writes the 100 itself.
    body, headers = signed(call_initiated())
    raw = request("/webhook/a", body, headers, extra="Expect: 100-continue\r\n")
    replies = []
    for port in (pair.fast.port, pair.plain.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        replies.append(undated(await read_answer(reader)))
        writer.close()
    assert replies[0] == replies[1] and status_and_outcome(replies[0]) == (200, "accepted")
    # Two requests in one segment (pipelined): both queued for aiohttp, answered in order.
    pipelined = await pair.both([post(call_initiated()), post(hangup())], answers=2)
    assert [status_and_outcome(a) for a in pipelined] == [(200, "accepted"), (200, "accepted")]
    # Connection: close, and HTTP/1.0: aiohttp's path, which closes after the answer.
    for raw in (
        request("/webhook/a", *signed(call_initiated()), extra="Connection: close\r\n"),
        request("/webhook/a", *signed(call_initiated()), version="1.0"),
    ):
        answers = []
        for port in (pair.fast.port, pair.plain.port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            answers.append(undated(await asyncio.wait_for(reader.read(), 5)))
            writer.close()
        assert answers[0] == answers[1] and status_and_outcome(answers[0]) == (200, "accepted")
    assert pair.fast.answered == 0
    assert samples(pair.fast_registry) == samples(pair.plain_registry)


async def test_a_body_that_arrives_after_its_headers_is_left_to_aiohttp(pair: Pair) -> None:
    raw = post(call_initiated())
    cut = raw.index(b"\r\n\r\n") + 4
    for port in (pair.fast.port, pair.plain.port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(raw[cut:])
        answer = await read_answer(reader)
        writer.close()
        assert status_and_outcome(answer) == (200, "accepted")
    assert pair.fast.answered == 0
    assert samples(pair.fast_registry) == samples(pair.plain_registry)


async def test_the_keep_alive_timer_runs_after_a_fast_answer() -> None:
    """An idle connection is closed ``keepalive_timeout`` after its last answer, as aiohttp does;
    answers keep pushing the deadline on."""
    p = Pair(plain_config())
    await p.fast.start_server(keepalive_timeout=0.4)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.fast.port)
        started = time.monotonic()
        for _ in range(4):  # 4 answers 0.25 s apart: past the 0.4 s of one timeout, still open
            writer.write(post(call_initiated()))
            assert status_and_outcome(await read_answer(reader)) == (200, "accepted")
            await asyncio.sleep(0.25)
        last = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        closed = time.monotonic()
        writer.close()
        assert last - started > 0.75
        assert 0.1 < closed - last < 2.0  # ~0.15 s left of the 0.4 s after the last answer
        assert p.fast.answered == 4
    finally:
        await p.fast.close()


async def test_a_full_write_buffer_hands_over_to_aiohttps_flow_control(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "FAST_WRITE_LIMIT", -1)  # every buffer counts as full
    answers = await pair.both([post(call_initiated()), post(hangup())])
    assert [status_and_outcome(a) for a in answers] == [(200, "accepted"), (200, "accepted")]
    assert pair.fast.answered == 0


async def test_stores_that_need_io_take_aiohttps_path(pair: Pair) -> None:
    rt = pair.fast.app[RUNTIME]
    check = rt._check_now
    rt._check_now = None  # as with the Redis stores: every request needs an await
    try:
        answers = await exchange(pair.fast.port or 0, [post(call_initiated())])
    finally:
        rt._check_now = check
    assert pair.fast.answered == 0
    assert [status_and_outcome(a) for a in answers] == [(200, "accepted")]


def test_which_listeners_get_the_fast_path() -> None:
    config = plain_config()
    registry = CollectorRegistry()
    metrics_app = create_app(config, registry, role="metrics")
    webhook_app = create_app(config, registry, role="webhook", runtime=metrics_app[RUNTIME])
    assert fast_hook(metrics_app) is None  # no webhook route
    assert fast_hook(webhook_app) == metrics_app[RUNTIME].answer_message
    shared = create_app(config, CollectorRegistry())
    assert fast_hook(shared) == shared[RUNTIME].answer_message
    from exporter.webconfig import install_web_config

    install_web_config(shared, shared[RUNTIME], config)  # basic auth and headers: aiohttp's path
    assert fast_hook(shared) is None


async def test_another_aiohttp_without_the_handler_state_turns_the_fast_path_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert server_module.FAST_SUPPORTED  # the aiohttp the project is tested with
    assert all(hasattr(web_protocol.RequestHandler, name) for name in server_module._FAST_STATE)

    async def server_fast() -> object:
        runner = server_module.SafeAppRunner(create_app(plain_config(), CollectorRegistry()), fast=fast_hook)
        await runner.setup()
        try:
            assert runner.server is not None
            return getattr(runner.server, "fast", "missing")
        finally:
            await runner.cleanup()

    assert callable(await server_fast())
    monkeypatch.setattr(server_module, "FAST_SUPPORTED", False)
    assert await server_fast() is None


def test_encoded_answers_carry_aiohttps_headers_in_aiohttps_order() -> None:
    responses = server_module.Responses("application/json")
    out = responses.encode(405, b'{"x": 1}', allow="POST", close=True)
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 405 Method Not Allowed"
    assert [line.split(":", 1)[0] for line in lines[1:]] == [
        "Content-Type",
        "Allow",
        "Content-Length",
        "Date",
        "Server",
        "Connection",
    ]
    assert lines[3] == "Content-Length: 8" and lines[5] == f"Server: {SERVER_SOFTWARE}"
    assert body == b'{"x": 1}'


async def test_an_error_of_ours_on_the_fast_path_is_a_counted_500(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the pipeline must not become asyncio's "data_received() failed" with no answer:
    the client gets the JSON 500 of aiohttp's path (``handle_error``), the request is counted on
    trunk unknown, and the line names the place, never the exception's text."""
    rt = pair.fast.app[RUNTIME]

    def broken(*args: Any) -> None:
        raise RuntimeError("+919876543210 must not be logged")

    monkeypatch.setattr(rt.pipeline, "decide", broken)
    monkeypatch.setattr(pair.plain.app[RUNTIME].pipeline, "decide", broken)
    raw = post(call_initiated())
    data, plain = await closing(pair.fast.port, raw), await closing(pair.plain.port, raw)
    assert data == plain
    assert status_and_outcome(data) == (500, "malformed")
    assert b"\r\nConnection: close\r\n" in data
    assert pair.fast.answered == 0  # (the hook raised: nothing it returned was written)
    unknown = {"trunk": "unknown", "outcome": "malformed"}
    assert pair.fast_registry.get_sample_value("vobiz_webhook_requests_total", unknown) == 1.0
    assert samples(pair.fast_registry) == samples(pair.plain_registry)
    lines = [r for r in caplog.records if r.getMessage() == "unhandled error while handling a request"]
    # the innermost frame of the exporter's own code, once per server
    assert [(r.levelname, getattr(r, "why", ""), getattr(r, "where", "").split(":")[0]) for r in lines] == [
        ("ERROR", "RuntimeError", "app.py")
    ] * 2
    assert "+919876543210" not in caplog.text


async def test_a_request_parsed_while_an_answer_is_made_is_queued_behind_it(pair: Pair) -> None:
    """Reading the body can resume reading, and resuming parses what was held back: a request
    parsed then (inside the fast path) must wait for the answer being made, then be answered by
    aiohttp's path; not answered first, not dropped. The nested call is made here directly."""
    second = post(hangup())
    answer = pair.fast.runner.server.fast  # type: ignore[union-attr]
    nested: list[bool] = []

    def reentrant(message: Any, payload: Any, peer: Any) -> tuple[bytes, bool] | None:
        if not nested:
            nested.append(True)
            payload._protocol.data_received(second)  # the handler, as resume_reading() calls it
        return answer(message, payload, peer)  # type: ignore[no-any-return]

    pair.fast.runner.server.fast = reentrant  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection("127.0.0.1", pair.fast.port)
    writer.write(post(call_initiated(), path="/webhook/nope"))  # answered 404 on the fast path
    answers = [undated(await read_answer(reader)) for _ in range(2)]
    writer.close()
    assert [status_and_outcome(a) for a in answers] == [(404, "unknown_trunk"), (200, "accepted")]
    assert pair.fast.answered == 1  # the second went to aiohttp's path (queued), the first here


async def test_a_paused_writer_hands_over_to_aiohttp(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module.SafeRequestHandler, "writing_paused", property(lambda self: True))
    answers = await pair.both([post(call_initiated())])
    assert [status_and_outcome(a) for a in answers] == [(200, "accepted")]
    assert pair.fast.answered == 0


def test_the_fast_path_is_on_for_aiohttp_3_14_only() -> None:
    assert [server_module.fast_supported(v) for v in ("3.14.0", "3.14.5", "3.15.0", "3.13.3", "4.0.0")] == [
        True,
        True,
        False,
        False,
        False,
    ]


async def test_the_configured_routes_are_looked_up_and_follow_a_reload(pair: Pair) -> None:
    rt = pair.fast.app[RUNTIME]
    assert rt._routes == {"/webhook": None, "/webhook/a": "a", "/webhook/g": "g"}
    trunks = [{"name": "a", "id": TRUNK_A_ID, "secret": SECRET_A}, {"name": "z-9", "secret": "zz"}]
    rt.apply(parse_config({"trunks": trunks}, env={}))
    assert rt._routes == {"/webhook": None, "/webhook/a": "a", "/webhook/z-9": "z-9"}
    answers = await exchange(
        pair.fast.port or 0, [post(call_initiated(trunk_id=None), path="/webhook/z-9", secret="zz")]
    )
    assert [status_and_outcome(a) for a in answers] == [(200, "accepted")]
    assert pair.fast.answered == 1


def test_the_records_built_as_plain_tuples_have_the_fields_they_are_built_with() -> None:
    """pipeline, app and families build these with tuple.__new__ (positionally): a field added
    to one of them must fail here, not build a short record."""
    from prometheus_client.samples import Exemplar

    from exporter.dedupe import CallUpdate
    from exporter.pipeline import Admitted, Inbound

    assert Admitted._fields == ("trunk", "event", "event_name", "keys", "verdict", "event_header_disagrees", "call")
    assert Inbound._fields == ("method", "path", "trunk_name", "headers", "raw")
    assert CallUpdate._fields == ("started", "trunk", "call_uuid", "now")
    assert Exemplar._fields == ("labels", "value", "timestamp")
