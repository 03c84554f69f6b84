"""The ``dedupe.backend: redis`` stores: de-duplication and active calls shared by every replica.

With several replicas behind a load balancer, a retry can land on another replica than the
original delivery, and a Hangup on another replica than its CallInitiated. Both stores keep
their state in Redis and change it with small Lua scripts, so each change is one atomic round
trip and two replicas racing on the same event count it exactly once.

Failures: every Redis error (refused, timed out, pool exhausted, auth, ...) becomes
``DedupeUnavailable`` from ``seen_or_add``, so the handler applies ``dedupe.on_error``. The
call tracker never raises into the handler: it runs after the event was de-duplicated (its
keys are stored), so failing the request then would lose the event for good (its retry is a
duplicate). A failed call update is logged, and the shared count catches up from Redis when it
returns. The client reconnects by itself: a pooled connection is checked on checkout, and a
script flushed by a Redis restart is loaded again (EVALSHA falls back to SCRIPT LOAD).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .calls import CallTracker
from .config import Config
from .dedupe import DedupeStore, DedupeUnavailable
from .logs import LOGGER_NAME

REFRESH_INTERVAL = 1.0
"""Seconds between refreshes of the shared active-call counts (other replicas' changes)."""

# Duplicate when ANY key exists; otherwise record every key (the MemoryDedupe semantics).
# A duplicate refreshes nothing. Atomic: no other client runs between the checks and the SETs.
_SEEN_OR_ADD = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 1 end
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1])
end
return 0
"""

# KEYS: the trunk's call set (member -> start time), the call's tombstone.
# ARGV: member, now, now - max_call_duration, max_call_duration in ms, max entries.
# A call whose Hangup was already seen (tombstone) never opens. Returns the trunk's count.
_CALL_STARTED = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[5]) then
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
end
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: the trunk's call set, the call's tombstone. ARGV: member, now - max_call_duration,
# tombstone TTL in ms. Returns the trunk's count.
_CALL_ENDED = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return redis.call('ZCARD', KEYS[1])
"""


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparsable redis url>"


def build_client(
    url: str,
    *,
    password: str | None = None,
    timeout: float = 0.5,
    pool_size: int = 10,
) -> Redis:
    """A client for ``url`` (redis://, rediss:// for TLS, unix://; query options such as
    ``ssl_ca_certs`` pass through). ``password`` (from ``redis_password_env``) wins over one in
    the URL. Every wait is bounded by ``timeout``: connect, each reply, and waiting for one of
    the ``pool_size`` connections. No retries: a retried SET NX whose reply was lost would call
    the first delivery a duplicate."""
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "client_name": "vobiz-exporter",
    }
    kwargs.update(parse_url(url))
    if password:
        kwargs["password"] = password
    pool = BlockingConnectionPool(max_connections=pool_size, timeout=timeout, **kwargs)
    return Redis.from_pool(pool)


def _digest(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16, person=b"vobiz-call").hexdigest()


class _Redis:
    """The client shared by both stores, with the secret-free error conversion."""

    def __init__(self, client: Redis, url: str, password: str | None, prefix: str) -> None:
        self.client = client
        self.url = mask_url(url)
        self._secrets = [s for s in (password, urlsplit(url).password if "://" in url else None) if s]
        self.prefix = prefix
        self.closed = False
        self._users = 0

    def acquire(self) -> _Redis:
        """Each store holding the client; the last ``close()`` closes the pool."""
        self._users += 1
        return self

    def unavailable(self, exc: BaseException) -> DedupeUnavailable:
        """The error to raise: its type and redis-py's message, any secret masked."""
        text = f"redis unavailable ({type(exc).__name__}): {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return DedupeUnavailable(text)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and not self.closed:
            self.closed = True
            await self.client.aclose(close_connection_pool=True)


class RedisDedupe:
    """``DedupeStore`` on Redis: one key per de-duplication key, ``SET NX PX ttl``."""

    def __init__(self, conn: _Redis, ttl: float, on_error: Literal["accept", "reject"] = "accept") -> None:
        self._conn = conn.acquire()
        self._ttl_ms = max(1, round(ttl * 1000))
        self._prefix = (conn.prefix + "dedupe:").encode()
        self._script = conn.client.register_script(_SEEN_OR_ADD)
        self.on_error = on_error

    def configure(self, ttl: float, max_entries: int) -> None:
        """``max_entries`` does not apply: Redis bounds memory itself (its ``maxmemory`` policy)."""
        self._ttl_ms = max(1, round(ttl * 1000))

    def key(self, key: bytes) -> bytes:
        return self._prefix + key.hex().encode()

    async def seen_or_add(self, keys: tuple[bytes, ...], now: float) -> bool:
        """``now`` is unused: Redis expires the keys (PX), the same clock for every replica."""
        try:
            result = await self._script(keys=[self.key(k) for k in keys], args=[self._ttl_ms])
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._conn.unavailable(exc) from None
        return bool(result)

    def entries(self) -> int | None:
        return None  # a DBSIZE per scrape would cost a round trip and count other data too

    async def ready(self) -> bool:
        """Not ready while Redis is unreachable, only with ``on_error: reject``: then this
        replica answers 503 anyway. With ``accept`` it still counts every event, and taking
        every replica out of the load balancer at once would lose them all."""
        if self.on_error == "accept":
            return True
        return await self._conn.ping()

    async def close(self) -> None:
        await self._conn.close()


class RedisCallTracker:
    """``CallTracker`` on Redis: a sorted set per trunk (call -> start time) and a tombstone key
    per ended call (kept ``dedupe.ttl``). ``active()`` is read at scrape time and cannot wait
    on Redis, so it returns a local copy of the shared counts, updated by every start and end
    on this replica and refreshed every ``REFRESH_INTERVAL`` for the other replicas' changes.
    Every replica therefore exports the same shared count: aggregate with ``max by (trunk)``."""

    def __init__(
        self,
        conn: _Redis,
        max_call_duration: float,
        tombstone_ttl: float,
        max_entries: int,
        trunks: Iterable[str] = (),
        on_error: Literal["accept", "reject"] = "accept",
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self._conn = conn.acquire()
        self._client = conn.client
        self._prefix = conn.prefix
        self.configure(max_call_duration, tombstone_ttl, max_entries)
        self.on_error = on_error
        self.refresh_interval = refresh_interval
        self._counts: dict[str, int] = {}
        self._trunks: set[str] = set(trunks)
        self._start = self._client.register_script(_CALL_STARTED)
        self._end = self._client.register_script(_CALL_ENDED)
        self._logger = logging.getLogger(LOGGER_NAME)
        self._healthy = True
        self._task: asyncio.Task[None] | None = None
        self._ensure_refresher()

    def configure(self, max_call_duration: float, tombstone_ttl: float, max_entries: int) -> None:
        self.max_call_duration = max_call_duration
        self._duration_ms = max(1, round(max_call_duration * 1000))
        self._tombstone_ms = max(1, round(tombstone_ttl * 1000))
        self.max_entries = max_entries

    def calls_key(self, trunk: str) -> str:
        return f"{self._prefix}calls:{trunk}"

    def tombstone_key(self, call_uuid: str) -> str:
        return f"{self._prefix}ended:{_digest(call_uuid)}"

    async def call_started(self, trunk: str, call_uuid: str, now: float) -> None:
        self._ensure_refresher()
        self._trunks.add(trunk)
        keys = [self.calls_key(trunk), self.tombstone_key(call_uuid)]
        args = [_digest(call_uuid), repr(now), repr(now - self.max_call_duration), self._duration_ms,
                self.max_entries]
        await self._update(trunk, self._start, keys, args)

    async def call_ended(self, trunk: str, call_uuid: str, now: float) -> None:
        self._ensure_refresher()
        self._trunks.add(trunk)
        keys = [self.calls_key(trunk), self.tombstone_key(call_uuid)]
        args = [_digest(call_uuid), repr(now - self.max_call_duration), self._tombstone_ms]
        await self._update(trunk, self._end, keys, args)

    async def _update(self, trunk: str, script: Any, keys: list[str], args: list[Any]) -> None:
        try:
            count = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("active-call update failed; the shared count catches up when Redis returns", exc)
            return
        self._recovered()
        self._counts[trunk] = int(count)

    def active(self, trunk: str) -> int:
        """Called from the scrape's render thread: reads a dict, never waits on Redis."""
        if trunk not in self._trunks:
            self._trunks.add(trunk)  # a trunk added by a reload is refreshed from its first scrape
        return self._counts.get(trunk, 0)

    async def refresh(self, now: float | None = None) -> bool:
        """Read every known trunk's shared count (calls younger than max_call_duration)."""
        trunks = sorted(self._trunks)
        if not trunks:
            return True
        floor = (time.time() if now is None else now) - self.max_call_duration
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for trunk in trunks:
                    pipe.zcount(self.calls_key(trunk), f"({floor!r}", "+inf")
                counts = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("refreshing active calls failed", exc)
            return False
        self._recovered()
        for trunk, count in zip(trunks, counts, strict=True):
            if trunk in self._trunks:
                self._counts[trunk] = int(count)
        return True

    async def sweep(self, now: float) -> int:
        """Remove calls older than max_call_duration from every known trunk (any replica may
        do it; it is idempotent). Returns how many this call removed; 0 when Redis fails."""
        self._ensure_refresher()
        trunks = sorted(self._trunks)
        removed = 0
        if trunks:
            floor = now - self.max_call_duration
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for trunk in trunks:
                        pipe.zremrangebyscore(self.calls_key(trunk), "-inf", repr(floor))
                    removed = sum(int(n) for n in await pipe.execute())
            except (RedisError, OSError, TimeoutError) as exc:
                self._failed("active-call sweep failed", exc)
                return 0
        await self.refresh(now)
        return removed

    def forget_trunk(self, trunk: str) -> None:
        """Stop exporting a removed trunk; its calls stay in Redis for replicas that still have it."""
        self._trunks.discard(trunk)
        self._counts.pop(trunk, None)

    async def ready(self) -> bool:
        self._ensure_refresher()
        if self.on_error == "accept":
            return True
        return await self._conn.ping()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._conn.close()

    # --- background refresh and outage logging ------------------------------------------------

    def _ensure_refresher(self) -> None:
        """Start the refresh task on the running loop (lazily: the store may be built before it)."""
        if (self._task is not None and not self._task.done()) or self._conn.closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._refresher(), name="vobiz-redis-refresh")

    async def _refresher(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # never let the task die with an unretrieved exception
                self._failed("refreshing active calls failed", exc)
            await asyncio.sleep(self.refresh_interval)

    def _failed(self, msg: str, exc: BaseException) -> None:
        """Log the first failure of an outage (no traceback, no secret); the rest are quiet."""
        if self._healthy:
            self._healthy = False
            why = str(self._conn.unavailable(exc))
            self._logger.warning(msg, extra={"redis": self._conn.url, "why": why})

    def _recovered(self) -> None:
        if not self._healthy:
            self._healthy = True
            self._logger.info("redis reachable again", extra={"redis": self._conn.url})


def build_redis_stores(
    config: Config, on_evict: Callable[[int], None] | None = None
) -> tuple[DedupeStore, CallTracker]:
    """Both stores on one client (one pool). ``on_evict`` is unused: Redis expires keys itself."""
    d = config.dedupe
    if d.redis_url is None:
        raise ValueError("dedupe.redis_url is required with backend redis")
    client = build_client(
        d.redis_url, password=d.redis_password, timeout=d.redis_timeout, pool_size=d.redis_pool_size
    )
    conn = _Redis(client, d.redis_url, d.redis_password, d.redis_key_prefix)
    logging.getLogger(LOGGER_NAME).info(
        "de-duplication backend: redis",
        extra={"redis": conn.url, "prefix": d.redis_key_prefix, "on_error": d.on_error},
    )
    dedupe = RedisDedupe(conn, d.ttl, d.on_error)
    calls = RedisCallTracker(
        conn,
        config.calls.max_call_duration,
        d.ttl,
        d.max_entries,
        trunks=[t.name for t in config.trunks],
        on_error=d.on_error,
    )
    return dedupe, calls
