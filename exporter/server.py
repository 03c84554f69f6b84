"""The HTTP server side of the listeners: aiohttp's runner with our error path.

A request that aiohttp's HTTP parser refuses (bad header syntax, CL+TE, a duplicate
Content-Length, a bad chunk size, a NUL in a header, HTTP/1.2, too many headers, an unknown
method) never reaches a handler. aiohttp would answer it with plain text that echoes the
offending bytes and log an ERROR with a traceback quoting them, outside every rate limit. On a
port that faces the internet that is a log flood carrying phone numbers and signatures. Here
those requests get the usual JSON answer, are counted (trunk ``unknown``) and observed, and are
logged through the per-outcome rate limiter with the error's class name only.

``install_log_guard`` does the same for anything aiohttp or asyncio logs by themselves (a TLS
handshake that fails, a connection lost mid-response): one rate-limited line per logger, with
the message template and the exception's class, never its arguments or text.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.http import SERVER_SOFTWARE, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader

from .logs import LOGGER_NAME, RateLimitedLog
from .outcomes import BY_NAME

# Called with (outcome, remote, why, duration) and returning the JSON body to send.
ProtocolErrorHook = Callable[[str, str | None, str, float], bytes]
# Answers a CONNECT request (which no route can match).
ConnectHook = Callable[[web.BaseRequest], web.StreamResponse]

# Answers a complete request on the spot (its message, its body, complete, the peer address):
# the response's bytes and whether to close after them, or None (with the body left unread) to
# leave it to the application.
FastHook = Callable[[RawRequestMessage, StreamReader, Any], "tuple[bytes, bool] | None"]

# Above this much unsent output the fast path steps aside, so aiohttp's write flow control (and
# its bound on queued requests) applies to a client that sends without reading.
FAST_WRITE_LIMIT = 64 * 1024

# What the fast path touches of aiohttp's connection handler; without one of them (another
# aiohttp release) it stays off and every request takes aiohttp's own path.
_FAST_STATE = (
    "_waiter",
    "_messages",
    "_parser",
    "_keepalive_handle",
    "_next_keepalive_close_time",
    "_keepalive_timeout",
    "_process_keepalive",
    "_manager",
    "_buffer_paused",
)


def fast_supported(version: str) -> bool:
    """Only on the aiohttp minor release the fast path was built and tested against (3.14), and
    only with the handler state it uses: another release could keep the names and change what
    they mean."""
    return version.split(".")[:2] == ["3", "14"] and all(
        hasattr(web_protocol.RequestHandler, name) for name in _FAST_STATE
    )


FAST_SUPPORTED = fast_supported(aiohttp.__version__)

_GUARDED_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.internal", "aiohttp.web", "asyncio")


def classify(exc: BaseException | None) -> str:
    """The outcome of a request the HTTP layer refused, by the class of its error."""
    if isinstance(exc, BadHttpMethod):
        return "method_not_allowed"
    if isinstance(exc, LineTooLong) or (isinstance(exc, HttpProcessingError) and exc.code == 413):
        return "too_large"
    return "malformed"


class SafeRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler with a redacting, counting error path."""

    hook: ProtocolErrorHook | None = None  # set per connection by the server that made it
    fast: FastHook | None = None

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        start = time.perf_counter()
        if request.writer.output_size > 0:  # the answer had begun: only closing is left
            raise ConnectionError("response already started")
        answer_status, body = self._error_answer(status, exc, _remote(request), start)
        resp = web.Response(status=answer_status, body=body, content_type="application/json")
        resp.force_close()
        return resp

    def _error_answer(
        self, status: int, exc: BaseException | None, remote: str | None, start: float
    ) -> tuple[int, bytes]:
        """The status and JSON body for a request that failed outside the pipeline's answers:
        refused by the parser (counted by ``hook``), or an exception in our own code (500)."""
        why = type(exc).__name__ if exc is not None else f"status {status}"
        if status >= 500:  # an exception in our own code: log where, never the exception text
            outcome = "malformed"
            _ERRORS.log(
                "unhandled", logging.ERROR, "unhandled error while handling a request", why=why, where=_where(exc)
            )
            answer_status = 500
        else:
            outcome = classify(exc)
            answer_status = BY_NAME[outcome].status
        hook = self.hook
        body = hook(outcome, remote, why, time.perf_counter() - start) if hook else BY_NAME[outcome].body
        return answer_status, body

    def data_received(self, data: bytes) -> None:
        """A complete request arriving on an idle connection goes to ``fast`` first: answered
        there, it never becomes an aiohttp request, task and response (most of aiohttp's share
        of a webhook's cost: bench/NOTES.md, "Round 4"). Anything else (a partial body,
        pipelined requests, a parser error, a request ``fast`` declines) is queued for aiohttp
        exactly as aiohttp would queue it."""
        waiter = self._waiter
        if self.fast is None or waiter is None or waiter.done() or self._messages:
            self._data_received_busy(data)
            return
        # Until the answer is written the loop must not wake, and a nested call (reading the
        # body can resume reading, which parses again) must queue, not answer: an answer of its
        # own would overtake this one.
        self._waiter = None
        try:
            super().data_received(data)
            messages = self._messages
            if len(messages) == 1 and not self._buffer_paused:
                item = messages.popleft()
                if not self._answer_here(*item):
                    messages.appendleft(item)
        finally:
            self._waiter = waiter
        if self._force_close or self._close:
            waiter.cancel()  # (as force_close and close do to the waiter they find)
        elif self._messages and not waiter.done():
            waiter.set_result(None)

    def _answer_here(self, message: Any, payload: StreamReader) -> bool:
        transport = self.transport
        if (
            not isinstance(message, RawRequestMessage)
            or transport is None
            or not payload.is_eof()
            or payload.exception() is not None
            or self.writing_paused
            or transport.get_write_buffer_size() > FAST_WRITE_LIMIT
        ):
            return False
        assert self.fast is not None
        peer = transport.get_extra_info("peername")
        start = time.perf_counter()
        try:
            answer = self.fast(message, payload, peer)
        except Exception as exc:  # a bug of ours: a 500 as aiohttp's path gives it (handle_error)
            status, body = self._error_answer(500, exc, remote_of(peer), start)
            answer = JSON_RESPONSES.encode(status, body, close=True), True
        if answer is None:
            return False
        if self._parser is not None:  # (None only after connection_lost, with no transport)
            self._parser.message_consumed()  # a parser slot free again, as start() frees it
        if self._manager is not None:
            self._manager.requests_count += 1
        data, close = answer
        transport.write(data)
        if close:
            self.force_close()  # (the transport still sends what was written)
            return True
        # The keep-alive timer, as aiohttp restarts it after every answer.
        loop = self._loop
        close_time = loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None:
            self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)
        return True

    def _data_received_busy(self, data: bytes) -> None:
        """A parse error in the body of a request already being handled (a bad chunk that
        arrives late) would only be queued as the next message, leaving the handler waiting for
        the rest of the body until read_timeout. Fail the body now instead, so the request is
        answered ``malformed`` at once, and drop the queued error (it would be counted twice)."""
        messages = getattr(self, "_messages", None)
        queued = len(messages) if messages is not None else 0
        super().data_received(data)
        request = getattr(self, "_current_request", None)
        if request is None or messages is None or len(messages) <= queued:
            return
        message = messages[-1][0]
        exc = getattr(message, "exc", None)
        if isinstance(message, web_protocol._ErrInfo) and isinstance(exc, HttpProcessingError):
            content = request.content
            if not content.is_eof():
                messages.pop()
                content.set_exception(exc)
                self.close()  # the stream is broken: close after this answer

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own error lines: the template only, as a warning, rate-limited by the guard."""
        exc = kw.get("exc_info")
        why = type(exc).__name__ if isinstance(exc, BaseException) else ""
        self.logger.warning(str(args[0]) if args else "server error", extra={"why": why})


def remote_of(peer: Any) -> str | None:
    """``request.remote`` from the transport's peer address (as aiohttp computes it)."""
    if isinstance(peer, tuple | list):
        return str(peer[0])
    return str(peer) if peer is not None else None


def _remote(request: Any) -> str | None:
    try:
        return str(request.remote) if request.remote else None
    except Exception:  # a half-parsed request may not have a transport any more
        return None


def _where(exc: BaseException | None) -> str:
    """file:line of the innermost frame of our package, for a bug report without any data."""
    tb = exc.__traceback__ if exc is not None else None
    where = ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if "/exporter/" in code.co_filename:
            where = f"{code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}:{code.co_name}"
        tb = tb.tb_next
    return where


class _SafeServer(web.Server):
    protocol_error_hook: ProtocolErrorHook | None = None
    fast: FastHook | None = None

    def __call__(self) -> web_protocol.RequestHandler:
        handler = SafeRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.hook = self.protocol_error_hook
        handler.fast = self.fast
        return handler


class Responses:
    """The bytes of an answer as aiohttp would write them (status line, Content-Type, Allow,
    Content-Length, Date, Server, Connection), the part around the date encoded once."""

    def __init__(self, content_type: str = "application/json") -> None:
        self.content_type = content_type
        self._parts: dict[tuple[int, bytes, str | None, bool], tuple[bytes, bytes]] = {}
        self._second = -1
        self._date = b""

    def encode(self, status: int, body: bytes, *, allow: str | None = None, close: bool = False) -> bytes:
        key = (status, body, allow, close)
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = self._build(*key)
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, email.utils.formatdate(now, usegmt=True).encode()
        return parts[0] + self._date + parts[1]

    def _build(self, status: int, body: bytes, allow: str | None, close: bool) -> tuple[bytes, bytes]:
        head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {self.content_type}\r\n"
        if allow is not None:
            head += f"Allow: {allow}\r\n"
        head += f"Content-Length: {len(body)}\r\nDate: "
        tail = f"\r\nServer: {SERVER_SOFTWARE}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        return head.encode("latin-1"), tail.encode("latin-1") + body


class SafeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use ``SafeRequestHandler``; ``on_protocol_error``
    counts what the parser refused (the webhook listener's outcome counter), and ``fast``, given
    the frozen app, returns the fast path's hook (or None for none)."""

    def __init__(
        self,
        app: web.Application,
        *,
        on_protocol_error: ProtocolErrorHook | None = None,
        on_connect: ConnectHook | None = None,
        fast: Callable[[web.Application], FastHook | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._on_protocol_error = on_protocol_error
        self._on_connect = on_connect
        self._fast = fast

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _SafeServer  # same object and state; only the handler factory changes
        assert isinstance(server, _SafeServer)
        server.protocol_error_hook = self._on_protocol_error
        # Asked once the app is frozen: nothing added to it later can be bypassed.
        server.fast = self._fast(self.app) if self._fast is not None and FAST_SUPPORTED else None
        on_connect = self._on_connect
        if on_connect is not None:
            # In front of the router rather than as a middleware: a middleware costs every
            # request a few microseconds; this costs one comparison.
            route = server.request_handler

            async def handle(request: web.BaseRequest) -> web.StreamResponse:
                if request.method == "CONNECT":
                    return on_connect(request)
                return await route(request)

            server.request_handler = handle
        return server


_ERRORS = RateLimitedLog(logging.getLogger(LOGGER_NAME))
# The fast path's JSON answers, its 500s included (`app.encode_reply`): one cache, one Date per second.
JSON_RESPONSES = Responses("application/json")


class _Guard(logging.Filter):
    """Per-logger rate limit (``per_second`` lines, then a "suppressed" count) that also strips
    the record down to its template: no arguments, no exception text, no traceback."""

    def __init__(self, per_second: int = 10) -> None:
        super().__init__()
        self.per_second = per_second
        self._second = 0
        self._logged = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "aiohttp.access":
            return False  # the exporter never logs access (the line would carry the request)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and not hasattr(record, "why"):
            record.why = type(exc).__name__
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        if record.args:
            record.args = None
        # The template's first line only: asyncio appends the context (transport, protocol,
        # exception repr) on further lines.
        record.msg = record.msg.split("\n", 1)[0][:200] if isinstance(record.msg, str) else type(record.msg).__name__
        for key in ("message", "context"):  # asyncio puts the exception's context here
            record.__dict__.pop(key, None)
        now = int(time.monotonic())
        if now != self._second:
            if self._suppressed:
                record.suppressed = self._suppressed
            self._second, self._logged, self._suppressed = now, 0, 0
        if self._logged >= self.per_second:
            self._suppressed += 1
            return False
        self._logged += 1
        return True


def install_log_guard() -> None:
    """Guard the loggers of aiohttp and asyncio (idempotent)."""
    for name in _GUARDED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Guard) for f in logger.filters):
            logger.addFilter(_Guard())
