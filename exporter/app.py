"""The aiohttp side: ``create_app(config, registry)``, the webhook pipeline and the metrics listener.

The webhook pipeline runs the checks in the order docs/contract.md ("Answers and order of
checks") fixes, cheapest and least trusting first: nothing in the body is believed before
the signature verifies, and nothing touches a call metric before the whole event is validated and de-duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Literal, NamedTuple

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.http import RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from . import events, exposition, outcomes
from .calls import CallTracker, MemoryCallTracker
from .config import Config, ConfigError, ReloadError, Trunk, WebhookSection, load_config, with_overrides
from .dedupe import CallUpdate, DedupeStore, DedupeUnavailable, MemoryDedupe
from .events import USER_OUTCOME, CallInitiated, Hangup
from .logs import LOGGER_NAME, RateLimitedLog
from .metrics import ExporterMetrics, TrunkMetrics, inc, observe
from .pipeline import Admitted, Headers, Inbound, Pipeline, Refused
from .server import JSON_RESPONSES, FastHook, install_log_guard, remote_of
from .signature import Verdict

__all__ = ["RUNTIME", "ReloadError", "Runtime", "create_app", "fast_hook"]

Role = Literal["all", "webhook", "metrics"]

SWEEP_INTERVAL = 10.0

# The answer of every outcome, encoded once (the table is exporter/outcomes.py).
_BODIES = {o.name: o.body for o in outcomes.TABLE}
STATUS = {o.name: o.status for o in outcomes.TABLE}
DETAILS = {o.name: o.detail for o in outcomes.TABLE}


class Reply(NamedTuple):
    """How a webhook request is answered: its outcome, whether the connection closes after it,
    and the ``Allow`` header of a 405."""

    outcome: str
    close: bool = False
    allow: str | None = None


_PLAIN = {name: Reply(name) for name in outcomes.NAMES}
_new_tuple = tuple.__new__

# The routes of the webhook listener whose trunk segment needs no decoding: every other path
# (percent-escapes, a query, dots, a trailing slash, an absolute URI) is left to aiohttp's router.
_FAST_PATH = re.compile(r"/webhook(?:/([A-Za-z0-9_~-][A-Za-z0-9._~-]*))?")
_NO_ROUTE = ""  # (never a trunk name: the config refuses an empty one)


class Refusal(Exception):
    """Internal control flow: stop the pipeline with this outcome (``tm``: the resolved trunk)."""

    def __init__(self, outcome: str, tm: TrunkMetrics | None = None, why: str = "") -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.tm = tm
        self.why = why


class Runtime:
    """Everything the handlers share: config, metrics, stores. Swapped config on reload."""

    def __init__(
        self,
        config: Config,
        registry: CollectorRegistry,
        *,
        config_path: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.env = env
        self.logger = logging.getLogger(LOGGER_NAME)
        self.refusals = RateLimitedLog(self.logger)
        self.failed_calls = RateLimitedLog(self.logger, per_second=5)
        # Called with the new config on reload, before it is applied; one raising ReloadError
        # fails the reload with everything old kept (the web config hooks in here).
        self.reload_hooks: list[Callable[[Config], None]] = []
        self.in_flight = 0
        self.dedupe, self.calls = _build_stores(config, self._on_evict)
        # Both stores in-process: the hot path calls them without a coroutine.
        check, apply = self.dedupe.check_now, self.calls.apply_now
        self._check_now = check if apply is not None else None
        self._apply_now: Callable[[CallUpdate], None] = apply or _no_update
        self.metrics = ExporterMetrics(registry, active_calls=self.calls.active)
        entries = self.dedupe.entries
        self.metrics.dedupe_entries.set_function(lambda: float(entries() or 0))
        self._index(config)
        self.metrics.configure_trunks(config.trunks, config.metrics.destinations)
        self.metrics.set_reload(True, time.time())

    def _on_evict(self, n: int) -> None:
        self.metrics.dedupe_evictions.inc(n)

    def _index(self, config: Config) -> None:
        self.pipeline = Pipeline(config)
        # The fast path's routes of the configured trunks (one dict look-up instead of the regex).
        self._routes: dict[str, str | None] = {"/webhook": None}
        for t in config.trunks:
            path = f"/webhook/{t.name}"
            if _FAST_PATH.fullmatch(path):  # (every valid trunk name does)
                self._routes[path] = t.name

    # --- lifecycle ----------------------------------------------------------------------

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: run the expiry sweeper while the app lives, close stores after."""
        task = asyncio.create_task(self._sweeper())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.dedupe.close()
        await self.calls.close()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                expired = await self.calls.sweep(time.time())
                if expired:
                    self.logger.info("expired active calls", extra={"count": expired})
            except Exception:
                self.logger.exception("active-call sweep failed")

    async def ready(self) -> bool:
        try:
            return await self.dedupe.ready() and await self.calls.ready()
        except Exception:
            return False

    def reload(self) -> None:
        """Re-read the config file (and secrets). Raises ReloadError; the old config then stays."""
        if self.config_path is None:
            self.metrics.set_reload(False, None)
            raise ReloadError("no configuration file to reload")
        try:
            new = with_overrides(load_config(self.config_path, self.env), self.overrides)
        except ConfigError as exc:
            self.metrics.set_reload(False, None)
            raise ReloadError("; ".join(exc.problems)) from None
        old_fields = self.config.restart_fields()
        changed = [k for k, v in new.restart_fields().items() if old_fields[k] != v]
        if changed:
            self.metrics.set_reload(False, None)
            raise ReloadError(f"{', '.join(changed)} changed: needs a restart")
        for hook in self.reload_hooks:
            try:
                hook(new)
            except ReloadError:
                self.metrics.set_reload(False, None)
                raise
        self.apply(new)

    def apply(self, new: Config) -> None:
        removed = set(self.pipeline.by_name) - {t.name for t in new.trunks}
        self.config = new
        self._index(new)
        self.dedupe.configure(new.dedupe.ttl, new.dedupe.max_entries)
        self.calls.configure(new.calls.max_call_duration, new.dedupe.ttl, new.dedupe.max_entries)
        self.dedupe.on_error = self.calls.on_error = new.dedupe.on_error
        for name in removed:
            self.calls.forget_trunk(name)
        self.metrics.configure_trunks(new.trunks, new.metrics.destinations)
        self.metrics.set_reload(True, time.time())
        for warning in new.warnings:
            self.logger.warning(warning)
        self.logger.info("configuration reloaded", extra={"trunks": len(new.trunks)})

    # --- the webhook pipeline -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        start = time.perf_counter()
        if self.in_flight >= self.config.webhook.max_in_flight:
            resp = _response(self._refuse(request.remote, Refusal("overloaded")))
        else:
            self.in_flight += 1
            held: list[TrunkMetrics] = []
            try:
                resp = _answer(await self._process(request, held))
            except Refusal as refusal:
                resp = _response(self._refuse(request.remote, refusal))
                if refusal.outcome == "timeout":
                    await _send_and_close(request, resp)
            finally:
                self.in_flight -= 1
                for tm in held:
                    self.metrics.release(tm)
        observe(self.metrics.request_duration, time.perf_counter() - start)
        return resp

    def respond_now(
        self, method: str, raw_path: str, trunk: str | None, headers: Headers, body: bytes, peer: Any
    ) -> Reply:
        """The same pipeline as ``handle`` in one synchronous step, for a POST whose whole body
        came with its headers (see ``server.SafeRequestHandler``): no request object, no task,
        no response object. Only with in-process stores (``_check_now``)."""
        check = self._check_now
        assert check is not None
        start = time.perf_counter()
        held: list[TrunkMetrics] = []
        try:
            webhook = self.config.webhook
            if self.in_flight >= webhook.max_in_flight:
                raise Refusal("overloaded")
            if self._may_refuse_unread(method, len(body)):
                self._pre_body_checks(method, len(body), peer, headers)
            reply = _PLAIN[self._conclude_now(check, method, raw_path, trunk, headers, body, held)]
        except Refusal as refusal:
            reply = self._refuse(remote_of(peer), refusal)
        finally:
            for tm in held:
                self.metrics.release(tm)
        observe(self.metrics.request_duration, time.perf_counter() - start)
        return reply

    def answer_message(self, message: RawRequestMessage, payload: StreamReader, peer: Any) -> tuple[bytes, bool] | None:
        """``server.FastHook`` of the webhook listener: a keep-alive HTTP/1.1 POST to a webhook
        route with a complete Content-Length body and no ``Expect``, with in-process stores,
        answered by ``respond_now``. None, the body unread, for every other request: aiohttp's
        router takes it."""
        if (
            self._check_now is None
            or message.method != "POST"
            or message.version != HttpVersion11
            or message.should_close
            or message.upgrade
            or message.chunked
        ):
            return None
        path = message.path
        trunk = self._routes.get(path, _NO_ROUTE)
        if trunk is _NO_ROUTE:
            route = _FAST_PATH.fullmatch(path)
            if route is None:
                return None
            trunk = route[1]
        if hdrs.EXPECT in message.headers:
            return None
        reply = self.respond_now("POST", path, trunk, message.headers, payload.read_nowait(-1), peer)
        return encode_reply(reply), reply.close

    def refuse_unparsed(self, outcome: str, remote: str | None, why: str, duration: float) -> bytes:
        """Count and log a request that aiohttp's HTTP parser refused (bad header syntax,
        smuggling attempts, an unknown method, oversized lines): trunk ``unknown``, the usual
        JSON answer. ``why`` names the error class only: never the request's bytes."""
        self.metrics.outcome(None, outcome)
        self.refusals.log(
            outcome, logging.WARNING, "webhook refused", outcome=outcome, trunk="unknown", remote=remote or "", why=why
        )
        observe(self.metrics.request_duration, duration)
        return _BODIES[outcome]

    async def expect_continue(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: run the checks that come before the body (in-flight bound,
        source, declared size) first, so a refused body is never invited with 100 Continue."""
        start = time.perf_counter()
        try:
            if self.in_flight >= self.config.webhook.max_in_flight:
                raise Refusal("overloaded")
            self._request_pre_body_checks(request)
        except Refusal as refusal:
            resp = self._refuse_outside_handler(request, refusal, start)
            await _send_and_close(request, resp)  # the body was never invited: don't wait for it
            return resp
        if request.version == HttpVersion11:
            if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
                return self._refuse_outside_handler(
                    request, Refusal("malformed", why="unsupported Expect value"), start
                )
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer itself has not started (as aiohttp does)
        return None

    def refuse_connect(self, request: web.BaseRequest) -> web.StreamResponse:
        """CONNECT (a proxy tunnel request) never reaches a route: aiohttp would answer it with a
        plain-text 404 and then read the tunnel's bytes as the next request. Refused and closed
        (called by the server in front of the router: see ``server.SafeAppRunner``)."""
        return self._refuse_outside_handler(
            request, Refusal("method_not_allowed", why="method CONNECT"), time.perf_counter()
        )

    def _refuse_outside_handler(self, request: web.BaseRequest, refusal: Refusal, start: float) -> web.Response:
        """A refusal decided before the webhook handler (which observes the duration itself):
        counted, observed, and the connection closed after the answer."""
        resp = _response(self._refuse(request.remote, refusal))
        resp.force_close()
        observe(self.metrics.request_duration, time.perf_counter() - start)
        return resp

    def _refuse(self, remote: str | None, refusal: Refusal) -> Reply:
        """Count and log a refusal; the answer says whether to close and what ``Allow`` holds."""
        outcome = refusal.outcome
        tm = refusal.tm
        self.metrics.outcome(tm, outcome)
        if outcome == "duplicate":
            return _PLAIN[outcome]
        trunk = tm.trunk if tm is not None else "unknown"
        fields = {"outcome": outcome, "trunk": trunk, "remote": remote or ""}
        if refusal.why:
            fields["why"] = refusal.why
        self.refusals.log(outcome, logging.WARNING, "webhook refused", **fields)
        if outcome in ("too_large", "timeout"):
            return Reply(outcome, close=True)
        if outcome == "method_not_allowed":
            return Reply(outcome, allow="POST" if tm is not None else "GET, POST")
        return _PLAIN[outcome]

    def _may_refuse_unread(self, method: str, length: int | None) -> bool:
        """Whether the pre-body checks can refuse this request: only with a source allowlist, a
        method other than POST or a declared body over the limit (the common case skips them)."""
        webhook = self.config.webhook
        too_large = length is not None and length > webhook.max_body_bytes
        return bool(webhook.allowed_sources) or method != "POST" or too_large

    def _request_pre_body_checks(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self._pre_body_checks(request.method, request.content_length, peer, request.headers)

    def _pre_body_checks(self, method: str, length: int | None, peer: Any, headers: Headers) -> None:
        """Source allowlist, method and declared body size: what can be refused unread."""
        host = peer[0] if isinstance(peer, tuple | list) and peer else None
        try:
            self.pipeline.check_before_body(method, length, host, headers.getall("X-Forwarded-For", ()))
        except Refused as refused:
            raise Refusal(refused.outcome, why=refused.why) from None

    async def _process(self, request: web.Request, held: list[TrunkMetrics]) -> str:
        """The pipeline; returns the outcome. ``held`` receives the resolved trunk's metrics
        (released by the caller), so a reload removing the trunk meanwhile cannot pull them from
        under this request."""
        webhook = self.config.webhook
        raw = self._signed_bytes_now(request, webhook)
        if raw is None:
            raw = await _read_body(request, webhook.max_body_bytes, webhook.read_timeout)
        # Everything from trunk resolution to the replay window: one synchronous decision, so a
        # reload cannot interleave (the body read above was the last await before it).
        method, raw_path, headers = request.method, request.raw_path, request.headers
        trunk = request.match_info.get("trunk")
        check = self._check_now
        if check is not None:  # in-process stores: plain calls, no coroutine
            return self._conclude_now(check, method, raw_path, trunk, headers, raw, held)
        now = time.time()
        adm, tm = self._decide(method, raw_path, trunk, headers, raw, now, held)
        await self._dedupe_and_track(adm.keys, adm.call, tm)
        return self._recorded(tm, adm, now)

    def _conclude_now(
        self,
        check: Callable[[tuple[bytes, bytes], float], bool],
        method: str,
        raw_path: str,
        trunk: str | None,
        headers: Headers,
        raw: bytes,
        held: list[TrunkMetrics],
    ) -> str:
        """Decide, de-duplicate and record with in-process stores, in one step."""
        now = time.time()
        adm, tm = self._decide(method, raw_path, trunk, headers, raw, now, held)
        if check(adm.keys, time.monotonic()):
            raise Refusal("duplicate", tm)
        if adm.call is not None:
            self._apply_now(adm.call)
        return self._recorded(tm, adm, now)

    def _recorded(self, tm: TrunkMetrics, adm: Admitted, now: float) -> str:
        """Record: nothing here can refuse, so the event is counted wholly."""
        outcome = self._record(tm, adm.event, now)
        if self.logger.isEnabledFor(logging.DEBUG):
            self._log_recorded(tm.trunk, adm, outcome)
        return outcome

    def _signed_bytes_now(self, request: web.Request, webhook: WebhookSection) -> bytes | None:
        """The pre-body checks, then the exact bytes the signature covers: the body (POST) when
        already buffered, else None (``_read_body`` waits for it), or the raw query (GET)."""
        method = request.method
        length = request.content_length
        if self._may_refuse_unread(method, length):
            self._request_pre_body_checks(request)  # (the common case passes every one of them)
        if method == "POST":
            return _buffered_body(request, webhook.max_body_bytes)
        raw = _query_bytes(request.raw_path)
        if len(raw) > webhook.max_body_bytes:
            raise Refusal("too_large")
        return raw

    def _decide(
        self,
        method: str,
        raw_path: str,
        trunk: str | None,
        headers: Headers,
        raw: bytes,
        now: float,
        held: list[TrunkMetrics],
    ) -> tuple[Admitted, TrunkMetrics]:
        """``Pipeline.decide`` on the request; its refusal becomes a ``Refusal`` on the trunk."""
        pipeline = self.pipeline
        # (only url-nonce-v3 signs the path: not worth yarl's work otherwise)
        path = raw_path.partition("?")[0] if pipeline.config.signature.scheme != "body" else ""
        inbound = _new_tuple(Inbound, (method, path, trunk, headers, raw))  # (3x cheaper than Inbound(...))
        try:
            adm = pipeline.decide(inbound, now)
        except Refused as refused:
            tm = self._hold(refused.trunk, held)
            if tm is not None and refused.verdict is Verdict.OK_PREVIOUS:
                inc(tm.previous_secret_used)  # (a report-mode failure refused later was not let through)
            raise Refusal(refused.outcome, tm, refused.why) from None
        tm = self.metrics.acquire(adm.trunk.name)
        if tm is None:  # cannot happen: config and metrics change together, synchronously
            raise Refusal("unknown_trunk", why="trunk not configured")
        held.append(tm)
        if adm.verdict is not Verdict.OK:
            self._note_verdict(tm, adm.verdict)
        if adm.event_header_disagrees:
            self.refusals.log(
                "event_header_mismatch",
                logging.INFO,
                "X-Vobiz-Event disagrees with the body's Event",
                trunk=tm.trunk,
            )
        return adm, tm

    def _record(self, tm: TrunkMetrics, ev: events.Event, now: float) -> str:
        """Count the event on its trunk; returns the outcome (``accepted`` or ``ignored``)."""
        if isinstance(ev, CallInitiated):
            self.metrics.record_call_initiated(tm, ev, now)
            outcome = "accepted"
        elif isinstance(ev, Hangup):
            self.metrics.record_hangup(tm, ev, now)
            if ev.group != USER_OUTCOME:
                self._log_failed_call(tm.trunk, ev)
            outcome = "accepted"
        else:
            outcome = "ignored"
        inc(tm.outcomes[outcome])
        return outcome

    def _log_recorded(self, trunk: str, adm: Admitted, outcome: str) -> None:
        ev = adm.event
        self.logger.debug(
            "event recorded",
            extra={
                "trunk": trunk,
                "event": adm.event_name,
                "outcome": outcome,
                "from": events.mask_number(getattr(ev, "from_number", None)),
                "to": events.mask_number(getattr(ev, "to_number", None)),
            },
        )

    async def _dedupe_and_track(self, keys: tuple[bytes, bytes], update: CallUpdate | None, tm: TrunkMetrics) -> None:
        """A store that needs I/O: one round trip when it also tracks calls (Redis), else two
        steps. Raises the ``duplicate`` or ``unavailable`` refusal."""
        tname = tm.trunk
        calls_done = self.dedupe.tracks_calls
        try:
            duplicate = await self.dedupe.seen_or_add(keys, time.monotonic(), update, trunk=tname)
        except DedupeUnavailable as exc:
            self.metrics.dedupe_errors.inc()
            if self.config.dedupe.on_error == "reject":
                raise Refusal("unavailable", tm, str(exc)) from None
            self.refusals.log(
                "dedupe_error",
                logging.WARNING,
                "de-duplication store failed; accepting (on_error: accept)",
                trunk=tname,
            )
            duplicate = False
            calls_done = False  # the call update did not happen either: the tracker tries it
        if duplicate:
            raise Refusal("duplicate", tm)
        if update is not None and not calls_done:
            if update.started:
                await self.calls.call_started(tname, update.call_uuid, update.now)
            else:
                await self.calls.call_ended(tname, update.call_uuid, update.now)

    def _hold(self, trunk: Trunk | None, held: list[TrunkMetrics]) -> TrunkMetrics | None:
        tm = self.metrics.acquire(trunk.name) if trunk is not None else None
        if tm is not None:
            held.append(tm)
        return tm

    def _note_verdict(self, tm: TrunkMetrics, verdict: Verdict) -> None:
        """Rotated-secret use, and report-mode failures let through (a request the later checks
        refuse anyway is not counted as allowed; a duplicate, answered 200, is)."""
        if verdict is Verdict.OK:
            return
        if verdict is Verdict.OK_PREVIOUS:
            inc(tm.previous_secret_used)
            return
        inc(tm.sig_failures_allowed)
        self.refusals.log(
            "report_" + verdict.value,
            logging.INFO,
            "signature failure allowed (report mode)",
            outcome=verdict.value,
            trunk=tm.trunk,
        )

    def _log_failed_call(self, trunk: str, ev: Hangup) -> None:
        """What an operator needs to open a provider ticket (rate-limited per trunk and group):
        the ids and the code, the called number masked."""
        self.failed_calls.log(
            f"{trunk}:{ev.group}",
            logging.INFO,
            "call failed",
            trunk=trunk,
            group=ev.group,
            call_uuid=ev.call_uuid,
            sip_call_id=ev.sip_call_id or "",
            code=_loggable_code(ev.hangup_code),
            cause=ev.hangup_cause,
            source=ev.hangup_source,
            to=events.mask_number(ev.to_number),
        )


def _no_update(update: CallUpdate) -> None:
    """Never called: without an in-process tracker, ``Runtime._check_now`` is None too."""
    raise AssertionError("no in-process call tracker")


def _query_bytes(raw_path: str) -> bytes:
    """The raw query string as it came on the wire (the HMAC covers those bytes): aiohttp's C
    parser hands it over as latin-1 text; the pure-Python parser may hand over UTF-8 text."""
    query = raw_path.partition("?")[2]
    try:
        return query.encode("latin-1")
    except UnicodeEncodeError:
        return query.encode("utf-8", "surrogateescape")


def _buffered_body(request: web.Request, limit: int) -> bytes | None:
    """The common case without a coroutine: a small body already fully buffered with the
    headers. None when it is not complete yet (``_read_body`` then waits for it). A declared
    Content-Length over the limit was refused before (``_pre_body_checks``); the bytes read are
    checked here and in ``_read_body`` alike."""
    try:
        content = request.content
        if not content.is_eof():
            return None
        body = content.read_nowait(-1)
    except (RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
        raise Refusal("malformed", why=f"body could not be read ({type(exc).__name__})") from None
    if len(body) > limit:
        raise Refusal("too_large")
    return body


async def _read_body(request: web.Request, limit: int, deadline: float) -> bytes:
    """Read the whole body, enforcing the size limit while reading and a deadline for all of it.

    A body aiohttp cannot decode (broken chunked framing, a Content-Encoding that does not
    decompress) or a client gone mid-body is ``malformed``, never a 500."""
    try:
        return await _read_body_limited(request, limit, deadline)
    except (RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
        raise Refusal("malformed", why=f"body could not be read ({type(exc).__name__})") from None


async def _read_body_limited(request: web.Request, limit: int, deadline: float) -> bytes:
    content = request.content
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise Refusal("too_large")
                chunks.append(chunk)
    except TimeoutError:
        raise Refusal("timeout", why=f"body not complete after {deadline:g}s") from None
    return b"".join(chunks)


async def _send_and_close(request: web.Request, resp: web.Response) -> None:
    """Answer a slow client and drop its connection now: aiohttp would otherwise keep reading
    ("lingering") the rest of its trickled body for up to 10 s after the 408."""
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()


def _loggable_code(code: int | None) -> int | str:
    """A hangup code for a log line: only within the provider's ranges (0-9999), so no other
    number a sender puts there (a phone number, say) reaches a log."""
    if code is None:
        return ""
    return code if 0 <= code <= 9999 else "other"


def _response(reply: Reply) -> web.Response:
    resp = _answer(reply.outcome)
    if reply.close:
        resp.force_close()
    if reply.allow is not None:
        resp.headers["Allow"] = reply.allow
    return resp


def encode_reply(reply: Reply) -> bytes:
    """A reply's bytes on the wire, as aiohttp's path would write them (``_response``)."""
    outcome = reply.outcome
    return JSON_RESPONSES.encode(STATUS[outcome], _BODIES[outcome], allow=reply.allow, close=reply.close)


def _answer(outcome: str) -> web.Response:
    # (headers copied from a prepared set: ~10% cheaper than content_type=, same header)
    return web.Response(body=_BODIES[outcome], status=STATUS[outcome], headers=_JSON_HEADERS)


_JSON_HEADERS = CIMultiDictProxy(CIMultiDict({hdrs.CONTENT_TYPE: "application/json"}))


# --- the metrics listener ------------------------------------------------------------------

RUNTIME = web.AppKey("runtime", Runtime)


async def _webhook(request: web.Request) -> web.Response:
    return await request.app[RUNTIME].handle(request)


async def _metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    renderer = exposition.renderer_for(rt.registry)
    openmetrics, escaping, version, content_type = renderer.negotiate(request.headers.get("Accept", ""))
    # Byte-identical to prometheus_client's encoders, ~15x faster, and rendered on the loop in
    # slices of ~0.25 ms, so a scrape of any size never stalls webhooks for longer (bench/RESULTS.md).
    body = await renderer.render_async(openmetrics, escaping, version)
    # gzip when asked (Prometheus always asks), compressed on the loop in slices as well.
    gzipped = exposition.accepts_gzip(request.headers.get("Accept-Encoding", ""))
    resp = web.Response(body=await exposition.gzip_async(body) if gzipped else body)
    resp.headers["Content-Type"] = content_type
    if gzipped:
        resp.headers["Content-Encoding"] = "gzip"
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


async def _healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def _ready(request: web.Request) -> web.Response:
    if await request.app[RUNTIME].ready():
        return web.Response(text="Ready.\n")
    return web.Response(text="Not ready: a store is unreachable.\n", status=503)


async def _reload(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    if not rt.config.web.enable_lifecycle:
        return web.Response(text="Lifecycle API is not enabled.\n", status=403)
    try:
        rt.reload()
    except ReloadError as exc:
        rt.logger.error("reload failed", extra={"why": str(exc)})
        return web.Response(text=f"failed to reload config: {exc}\n", status=500)
    return web.Response(text="Reloaded.\n")


async def _landing(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    path = html.escape(rt.config.web.telemetry_path)
    trunks = "".join(f"<li>{html.escape(t.name)}</li>" for t in rt.config.trunks)
    page = (
        "<!doctype html><html><head><title>Vobiz Exporter</title></head><body>"
        "<h1>Vobiz Exporter</h1><p>Prometheus exporter for Vobiz SIP trunk webhooks.</p>"
        f'<ul><li><a href="{path}">Metrics</a></li><li><a href="/-/healthy">Health</a></li>'
        f'<li><a href="/-/ready">Readiness</a></li></ul><h2>Trunks</h2><ul>{trunks}</ul></body></html>'
    )
    return web.Response(text=page, content_type="text/html")


def create_app(
    config: Config,
    registry: CollectorRegistry,
    *,
    role: Role = "all",
    runtime: Runtime | None = None,
    config_path: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> web.Application:
    """The aiohttp application. ``role`` picks the routes: ``all`` for one port serving
    everything, or ``webhook`` / ``metrics`` for the two-listener layout. A webhook app shares
    the metrics app's ``runtime``; the app that creates the runtime owns its lifecycle."""
    owns = runtime is None
    rt = runtime or Runtime(config, registry, config_path=config_path, overrides=overrides, env=env)
    # auto_decompress off: the HMAC covers the bytes on the wire (docs/contract.md), and a compressed body
    # can never expand past max_body_bytes behind our back.
    app = web.Application(
        client_max_size=config.webhook.max_body_bytes + 1,
        handler_args={"auto_decompress": False},
    )
    app[RUNTIME] = rt
    install_log_guard()
    if owns:
        app.cleanup_ctx.append(rt.lifecycle)
    if role in ("all", "webhook"):
        app.router.add_route("*", "/webhook", _webhook, expect_handler=rt.expect_continue)
        app.router.add_route("*", "/webhook/{trunk}", _webhook, expect_handler=rt.expect_continue)
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready)
    if role in ("all", "metrics"):
        app.router.add_get(config.web.telemetry_path, _metrics)
        app.router.add_get("/", _landing)
        app.router.add_post("/-/reload", _reload)
        app.router.add_put("/-/reload", _reload)
    return app


def fast_hook(app: web.Application) -> FastHook | None:
    """The fast path for a listener serving ``app`` (``server.SafeAppRunner(fast=...)``): only
    where webhooks are routed and nothing else (a middleware, a response hook: basic auth and
    the web config's headers on a shared port) has to see the request or its answer."""
    routed = any(r.canonical == "/webhook/{trunk}" for r in app.router.resources())
    if not routed or app.middlewares or len(app.on_response_prepare):
        return None
    return app[RUNTIME].answer_message


def _build_stores(config: Config, on_evict: Any) -> tuple[DedupeStore, CallTracker]:
    d = config.dedupe
    if d.backend == "redis":
        from .redis_store import build_redis_stores  # imported lazily: only this backend needs redis

        return build_redis_stores(config, on_evict)
    return (
        MemoryDedupe(d.ttl, d.max_entries, on_evict),
        MemoryCallTracker(config.calls.max_call_duration, d.ttl, d.max_entries),
    )
