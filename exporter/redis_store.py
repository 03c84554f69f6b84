"""The ``dedupe.backend: redis`` stores: de-duplication and active calls shared by every replica.

With several replicas behind a load balancer, a retry can land on another replica than the
original delivery, and a Hangup on another replica than its CallInitiated. Both stores keep
their state in Redis. One Lua script per event (docs/contract.md, "De-duplication")
de-duplicates it and, when it is new, applies its active-call change: one atomic round trip, so
two replicas racing on the same event count it exactly once. Every key carries the trunk as hash
tag (``{trunk}``), so one event's script touches one Redis Cluster slot (``dedupe.redis_mode:
cluster``). In standalone mode the scripts of concurrent webhooks are pipelined in batches
(``_Batcher``).

Failures: every Redis error (refused, timed out, pool exhausted, auth, no cluster node, ...)
becomes ``DedupeUnavailable`` from ``seen_or_add``, so the handler applies ``dedupe.on_error``
(and then updates the calls itself, through the tracker's fallback ``call_started`` /
``call_ended``). The call tracker never raises into the handler: it runs after the event was
de-duplicated (its keys are stored), so failing the request then would lose the event for good
(its retry is a duplicate). A failed call update is logged, and the shared count catches up from
Redis when it returns. The client reconnects by itself: a connection is checked before use
after an idle spell, a cluster re-reads its slot map after a failure, and a script flushed by a
restart (or missing on a promoted replica) is sent again with EVAL after NOSCRIPT.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, NoScriptError, RedisClusterException, RedisError, ResponseError

from .calls import CallTracker
from .config import Config
from .dedupe import CallUpdate, DedupeStore, DedupeUnavailable
from .logs import LOGGER_NAME

REFRESH_INTERVAL = 1.0
"""Seconds between refreshes of the shared active-call counts (other replicas' changes)."""

MAX_BATCH = 512
"""Most events sent to Redis in one write (standalone mode; see ``_Batcher``)."""

# One event, one round trip (docs/contract.md, "De-duplication"): de-duplication and, only when the event is new, its
# active-call update. Every key carries the hash tag {trunk}: one Redis Cluster slot per script.
# KEYS[1..n]: the de-duplication keys; with a call update also KEYS[n+1], the trunk's call set
# (member -> start time), and KEYS[n+2], the call's tombstone.
# ARGV: 1 dedupe TTL ms, 2 n, 3 op (0 none, 1 start, 2 end), 4 member, 5 now,
# 6 now - max_call_duration, 7 max_call_duration ms, 8 max entries, 9 tombstone TTL ms.
# Returns -1 for a duplicate (nothing written), else the trunk's call count (0 without a call).
# Duplicate when ANY key exists, otherwise every key is recorded (the MemoryDedupe semantics).
# A call whose Hangup was already seen (tombstone) never opens; a Hangup leaves a tombstone.
_EVENT = """
local n = tonumber(ARGV[2])
if redis.call('EXISTS', unpack(KEYS, 1, n)) > 0 then return -1 end
for i = 1, n do
  redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1])
end
local op = ARGV[3]
if op == '0' then return 0 end
local calls, tomb = KEYS[n + 1], KEYS[n + 2]
redis.call('ZREMRANGEBYSCORE', calls, '-inf', ARGV[6])
if op == '1' then
  if redis.call('EXISTS', tomb) == 0 and redis.call('ZCARD', calls) < tonumber(ARGV[8]) then
    if redis.call('ZADD', calls, 'NX', ARGV[5], ARGV[4]) == 1 then
      redis.call('PEXPIRE', calls, ARGV[7])
    end
  end
else
  redis.call('ZREM', calls, ARGV[4])
  redis.call('SET', tomb, '1', 'PX', ARGV[9])
end
return redis.call('ZCARD', calls)
"""


def _sha(script: str) -> str:
    """Redis names a cached script by the SHA-1 of its text (not a security use)."""
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


_EVENT_SHA = _sha(_EVENT)

# The CallTracker on its own (the fallback when the dedupe store did not apply the update).
# KEYS: the trunk's call set, the call's tombstone.
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
_CALL_STARTED_SHA = _sha(_CALL_STARTED)
_CALL_ENDED_SHA = _sha(_CALL_ENDED)


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
    mode: Literal["standalone", "cluster"] = "standalone",
) -> Redis | RedisCluster:
    """A client for ``url`` (redis://, rediss:// for TLS, unix://; query options such as
    ``ssl_ca_certs`` pass through). ``password`` (from ``redis_password_env``) wins over one in
    the URL. Every wait is bounded by ``timeout``: connect, each reply, and waiting for one of
    the ``pool_size`` connections. No retries: a retried SET NX whose reply was lost would call
    the first delivery a duplicate.

    ``mode: cluster``: a ``RedisCluster`` that discovers the nodes from the one in ``url``, follows
    MOVED/ASK redirects (the command did not run, so following is safe) and re-reads the slot map
    after a connection error (a failover); ``pool_size`` connections per node."""
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "client_name": "vobiz-exporter",
    }
    if mode == "cluster":
        kwargs["max_connections"] = pool_size
        if password:
            kwargs["password"] = password
        return RedisCluster.from_url(url, **kwargs)
    kwargs.update(parse_url(url))
    if password:
        kwargs["password"] = password
    pool = BlockingConnectionPool(max_connections=pool_size, timeout=timeout, **kwargs)
    return Redis.from_pool(pool)


def _digest(text: str) -> str:
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16, person=b"vobiz-call").hexdigest()


# RedisClusterException is not a RedisError: redis-py raises it when no node of a cluster
# answers (the slot map cannot be read) or a slot has no node.
_ERRORS = (RedisError, RedisClusterException, OSError, TimeoutError)


class _Redis:
    """The client shared by both stores, with the secret-free error conversion and the key
    names (every key of one trunk carries the hash tag ``{trunk}``: one Redis Cluster slot)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        url: str,
        password: str | None,
        prefix: str,
        timeout: float = 0.5,
        pool_size: int = 10,
    ) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.url = mask_url(url)
        self._secrets = [s for s in (password, urlsplit(url).password if "://" in url else None) if s]
        self.prefix = prefix
        self.timeout = timeout
        self.closed = False
        self._users = 0
        self._batcher = None if self.cluster else _Batcher(self, pool_size)
        # RedisCluster's per-node pools fail at once when exhausted; this queues instead, as
        # the standalone BlockingConnectionPool does (for at most ``timeout``).
        self._slots = asyncio.Semaphore(pool_size)

    def acquire(self) -> _Redis:
        """Each store holding the client; the last ``close()`` closes the pool."""
        self._users += 1
        return self

    # --- key names ---------------------------------------------------------------------------

    def dedupe_key(self, trunk: str, key: bytes) -> bytes:
        return f"{self.prefix}dedupe:{{{trunk}}}:{key.hex()}".encode()

    def untagged_key(self, key: bytes, tag: str = "") -> bytes:
        return f"{self.prefix}dedupe:{tag}{key.hex()}".encode()

    def calls_key(self, trunk: str) -> str:
        return f"{self.prefix}calls:{{{trunk}}}"

    def tombstone_key(self, trunk: str, call_uuid: str) -> str:
        return f"{self.prefix}ended:{{{trunk}}}:{_digest(call_uuid)}"

    # --- commands ----------------------------------------------------------------------------

    async def run_event(self, keys: list[bytes | str], args: list[bytes | str | int]) -> int:
        """The event script: batched with concurrent events (standalone), or one command routed
        to the trunk's slot (cluster). EVALSHA, and EVAL when the server lacks the script (a
        restart or a newly promoted replica): NOSCRIPT means nothing ran, so resending is safe."""
        if self._batcher is not None:
            return await self._batcher.submit(keys, args)
        return int(await self.eval(_EVENT, _EVENT_SHA, keys, args))

    async def eval(self, script: str, sha: str, keys: list[bytes | str], args: list[bytes | str | int]) -> Any:
        """One script, one command (EVALSHA; EVAL after NOSCRIPT)."""
        if self.cluster:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise ConnectionError("no Redis connection available in time") from None
        try:
            try:
                return await self.client.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            except NoScriptError:
                return await self.client.execute_command("EVAL", script, len(keys), *keys, *args)
        finally:
            if self.cluster:
                self._slots.release()

    def rediscover(self) -> None:
        """Cluster: read the slot map again before the next command. A failed single command
        does this by itself, a failed pipeline (the refresh) does not; with it, the refresher
        (every second) finds a promoted replica before the next webhook tries the dead master."""
        if isinstance(self.client, RedisCluster):
            self.client._initialize = True  # redis-py's own flag for "re-read CLUSTER SLOTS"

    def unavailable(self, exc: BaseException) -> DedupeUnavailable:
        """The error to raise: its type and redis-py's message, any secret masked."""
        text = f"redis unavailable ({type(exc).__name__}): {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return DedupeUnavailable(text)

    async def ping(self) -> bool:
        try:
            if self.cluster:
                # Every slot must be served: PING reaches only one node, so ask the cluster.
                info = await self.client.execute_command("CLUSTER INFO", target_nodes=RedisCluster.RANDOM)
                if isinstance(info, dict):
                    return info.get("cluster_state") in ("ok", b"ok")
                text = info.decode() if isinstance(info, bytes) else str(info)
                return "cluster_state:ok" in text
            return bool(await self.client.ping())
        except _ERRORS:
            return False

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and not self.closed:
            self.closed = True
            if self._batcher is not None:
                await self._batcher.close()
            if isinstance(self.client, RedisCluster):
                await self.client.aclose()
            else:
                await self.client.aclose(close_connection_pool=True)


def _pack(commands: list[tuple[bytes | str | int, ...]]) -> bytes:
    """RESP arrays of bulk strings for ``commands`` (what redis-py's ``pack_commands`` sends,
    at a fraction of its cost: this is on the hot path, once per event)."""
    out: list[bytes] = []
    append = out.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg if isinstance(arg, bytes) else (arg.encode() if isinstance(arg, str) else b"%d" % arg)
            append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_Pending = tuple[list[bytes | str], list[bytes | str | int], "asyncio.Future[int]"]


class _Batcher:
    """Standalone mode: the event scripts of every request that reached Redis in the same loop
    iteration go out in one write, and their replies are read in order (Redis pipelining; no
    MULTI: each script is atomic by itself). Up to ``WORKERS`` batches are in flight at once,
    each on a pooled connection that its worker keeps while there is work, so under load N
    events cost one write, one read and no pool checkout; an event that finds a worker idle
    waits for nothing but the next loop iteration. Events that arrive while every worker is
    busy form the next batch.

    An error reply fails only its own event; a connection error or timeout fails the whole
    batch, every event with ``DedupeUnavailable`` (the caller applies ``on_error``). Nothing is
    retried, for the reason in ``build_client``: only NOSCRIPT, which means nothing ran."""

    WORKERS = 2

    def __init__(self, conn: _Redis, pool_size: int = 10) -> None:
        self._conn = conn
        self._pending: list[_Pending] = []
        self._idle: list[asyncio.Future[None]] = []
        self._workers: set[asyncio.Task[None]] = set()
        # Leave the refresh a connection; with a pool of 1 or 2, hand it back when idle.
        self._max_workers = max(1, min(self.WORKERS, pool_size - 1))
        self._keep_when_idle = pool_size > self._max_workers + 1

    def submit(self, keys: list[bytes | str], args: list[bytes | str | int]) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._pending.append((keys, args, fut))
        while self._idle:
            waiter = self._idle.pop()
            if not waiter.done():
                waiter.set_result(None)  # the worker runs on the next iteration: this one's events batch
                return fut
        if len(self._workers) < self._max_workers:
            task = loop.create_task(self._work(), name="vobiz-redis-batch")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        return fut

    async def close(self) -> None:
        tasks = list(self._workers)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._fail(self._pending, ConnectionError("the Redis client was closed"))
        self._pending = []

    async def _work(self) -> None:
        client = self._conn.client
        assert isinstance(client, Redis)
        pool = client.connection_pool
        connection: Any = None
        check = True  # check a kept connection after an idle spell (Redis may have restarted)
        try:
            while True:
                if not self._pending:
                    if connection is not None and not self._keep_when_idle:
                        kept, connection = connection, None
                        with contextlib.suppress(Exception):
                            await pool.release(kept)
                    waiter = asyncio.get_running_loop().create_future()
                    self._idle.append(waiter)
                    try:
                        await waiter
                    finally:
                        if waiter in self._idle:
                            self._idle.remove(waiter)
                    check = True
                    continue
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                try:
                    if connection is None:
                        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
                    elif check:
                        await pool.ensure_connection(connection)
                    check = False
                    await self._exchange(connection, batch)
                except BaseException as exc:  # cancelled (close) too: no event may wait forever
                    self._fail(batch, exc if isinstance(exc, Exception) else ConnectionError("closed"))
                    if connection is not None:
                        kept, connection = connection, None
                        with contextlib.suppress(Exception):
                            await kept.disconnect()
                        await pool.release(kept)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await pool.release(connection)

    @staticmethod
    async def _exchange(connection: Any, batch: list[_Pending]) -> None:
        noscript = await _Batcher._send(connection, "EVALSHA", _EVENT_SHA, batch)
        if noscript:  # the server lost its script cache (a restart): EVAL loads it again
            await _Batcher._send(connection, "EVAL", _EVENT, noscript)

    @staticmethod
    async def _send(connection: Any, command: str, script: str, batch: list[_Pending]) -> list[_Pending]:
        """One write of ``command`` (EVALSHA with the script's SHA, or EVAL with its text) per
        event, then each event's future settled from its reply, in order. Returns the events
        answered NOSCRIPT to EVALSHA (nothing ran for them); every other error reply fails its
        own event."""
        commands = [(command, script, len(keys), *keys, *args) for keys, args, _ in batch]
        await connection.send_packed_command(_pack(commands), check_health=False)
        noscript: list[_Pending] = []
        for item in batch:
            fut = item[2]
            try:
                reply = await connection.read_response()
            except ResponseError as exc:
                if isinstance(exc, NoScriptError) and command == "EVALSHA":
                    noscript.append(item)
                elif not fut.done():
                    fut.set_exception(exc)
                continue
            if not fut.done():
                fut.set_result(int(reply))
        return noscript

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for _, _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)


class RedisDedupe:
    """``DedupeStore`` on Redis: one key per de-duplication key, ``SET NX PX ttl``, and the
    event's active-call update in the same script (``tracks_calls``): one round trip per event.
    The call parameters (max call duration, tombstone TTL, max entries) and the local count
    cache are the ``RedisCallTracker``'s, attached by ``build_redis_stores``."""

    tracks_calls = True
    check_now = None  # every answer is a round trip

    def __init__(
        self,
        conn: _Redis,
        ttl: float,
        on_error: Literal["accept", "reject"] = "accept",
        calls: RedisCallTracker | None = None,
    ) -> None:
        self._conn = conn.acquire()
        self._ttl_ms = max(1, round(ttl * 1000))
        self.on_error = on_error
        self.calls = calls
        # Without a tracker to share parameters and counts with, the handler must update calls.
        self.tracks_calls = calls is not None

    def attach(self, calls: RedisCallTracker) -> None:
        self.calls = calls
        self.tracks_calls = True

    def configure(self, ttl: float, max_entries: int) -> None:
        """``max_entries`` does not apply: Redis bounds memory itself (its ``maxmemory`` policy)."""
        self._ttl_ms = max(1, round(ttl * 1000))

    def key(self, trunk: str, key: bytes) -> bytes:
        return self._conn.dedupe_key(trunk, key)

    async def seen_or_add(
        self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None, *, trunk: str | None = None
    ) -> bool:
        """``now`` is unused: Redis expires the keys (PX), the same clock for every replica.

        The keys carry the event's trunk as hash tag: ``call.trunk``, else ``trunk``. Pass
        ``trunk`` for every event (also those without a call update), so the key names of one
        event never depend on whether it changes a call. Without either (a caller that passes
        no trunk for an event without a call update), the keys are the untagged
        ``<prefix>dedupe:<hex>`` of 0.1 on a single server, and on a cluster they are tagged with
        the last key (the signed-material digest), so a retry or replay of the same signed
        bytes still meets its keys in one slot."""
        name = call.trunk if call is not None else trunk
        conn = self._conn
        if name is None:
            tag = f"{{{keys[-1].hex()}}}" if conn.cluster and keys else ""
            rkeys: list[bytes | str] = [conn.untagged_key(k, tag) for k in keys]
            name = ""
        else:
            rkeys = [conn.dedupe_key(name, k) for k in keys]
        args: list[bytes | str | int] = [self._ttl_ms, len(keys)]
        tracker = self.calls
        if call is not None and tracker is not None:
            rkeys.append(conn.calls_key(name))
            rkeys.append(conn.tombstone_key(name, call.call_uuid))
            args += [
                1 if call.started else 2,
                _digest(call.call_uuid),
                repr(call.now),
                repr(call.now - tracker.max_call_duration),
                tracker._duration_ms,
                tracker.max_entries,
                tracker._tombstone_ms,
            ]
        else:
            args.append(0)
        try:
            result = await conn.run_event(rkeys, args)
        except _ERRORS as exc:
            raise conn.unavailable(exc) from None
        if result < 0:
            return True
        if call is not None and tracker is not None:
            tracker.applied(name, result)
        return False

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

    apply_now = None  # every update is a round trip

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
        self.configure(max_call_duration, tombstone_ttl, max_entries)
        self.on_error = on_error
        self.refresh_interval = refresh_interval
        self._forgotten: set[str] = set()  # removed by a reload (forget_trunk)
        self._counts: dict[str, int] = {}
        # When each trunk's count was last set, on one counter that never repeats: by a script's
        # reply, or by a read (refresh, sweep) as of when the read started. A read stores only
        # counts set before it started, so neither a read still in flight while a script replied
        # nor a read that started earlier than another overwrites the newer count.
        self._seq = itertools.count(1)
        self._stamps: dict[str, int] = {}
        self._trunks: set[str] = set(trunks)
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
        return self._conn.calls_key(trunk)

    def tombstone_key(self, trunk: str, call_uuid: str) -> str:
        return self._conn.tombstone_key(trunk, call_uuid)

    # call_started/call_ended: the fallback when the dedupe store did not apply the update
    # (``RedisDedupe`` does it in its own script, one round trip per event).

    async def call_started(self, trunk: str, call_uuid: str, now: float) -> None:
        keys: list[bytes | str] = [self.calls_key(trunk), self.tombstone_key(trunk, call_uuid)]
        args: list[bytes | str | int] = [
            _digest(call_uuid),
            repr(now),
            repr(now - self.max_call_duration),
            self._duration_ms,
            self.max_entries,
        ]
        await self._update(trunk, _CALL_STARTED, _CALL_STARTED_SHA, keys, args)

    async def call_ended(self, trunk: str, call_uuid: str, now: float) -> None:
        keys: list[bytes | str] = [self.calls_key(trunk), self.tombstone_key(trunk, call_uuid)]
        args: list[bytes | str | int] = [_digest(call_uuid), repr(now - self.max_call_duration), self._tombstone_ms]
        await self._update(trunk, _CALL_ENDED, _CALL_ENDED_SHA, keys, args)

    async def _update(
        self, trunk: str, script: str, sha: str, keys: list[bytes | str], args: list[bytes | str | int]
    ) -> None:
        self._ensure_refresher()
        if trunk not in self._forgotten:  # (an update in flight across a reload: not brought back)
            self._trunks.add(trunk)
        try:
            count = await self._conn.eval(script, sha, keys, args)
        except _ERRORS as exc:
            self._failed("active-call update failed; the shared count catches up when Redis returns", exc)
            return
        self.applied(trunk, int(count))

    def applied(self, trunk: str, count: int) -> None:
        """A script changed ``trunk``'s calls and returned its shared count (the set's ZCARD)."""
        self._ensure_refresher()
        self._recovered()
        if trunk in self._forgotten:
            return
        self._trunks.add(trunk)
        self._counts[trunk] = count
        self._stamps[trunk] = next(self._seq)

    def _read_counts(self, start: int, counts: Iterable[tuple[str, int]]) -> None:
        """Store counts read by a pipeline that started at ``start``, except those of trunks
        removed meanwhile or set since it started."""
        stamps = self._stamps
        for trunk, count in counts:
            if trunk in self._trunks and stamps.get(trunk, 0) < start:
                self._counts[trunk] = count
                stamps[trunk] = start

    def active(self, trunk: str) -> int:
        """Called from the scrape's render thread: reads a dict, never waits on Redis."""
        if trunk not in self._trunks:
            self._trunks.add(trunk)  # a trunk added by a reload is refreshed from its first scrape
            self._forgotten.discard(trunk)
        return self._counts.get(trunk, 0)

    async def refresh(self, now: float | None = None) -> bool:
        """Read every known trunk's shared count (calls younger than max_call_duration)."""
        trunks = sorted(self._trunks)
        if not trunks:
            return True
        floor = (time.time() if now is None else now) - self.max_call_duration
        start = next(self._seq)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for trunk in trunks:
                    pipe.zcount(self.calls_key(trunk), f"({floor!r}", "+inf")
                counts = await pipe.execute()
        except _ERRORS as exc:
            self._failed("refreshing active calls failed", exc)
            return False
        self._recovered()
        self._read_counts(start, zip(trunks, map(int, counts), strict=True))
        return True

    async def sweep(self, now: float) -> int:
        """Remove calls older than max_call_duration from every known trunk (any replica may
        do it; it is idempotent). Returns how many this call removed; 0 when Redis fails."""
        self._ensure_refresher()
        trunks = sorted(self._trunks)
        if not trunks:
            return 0
        floor = now - self.max_call_duration
        start = next(self._seq)
        try:
            # One round trip for every trunk: remove the stale calls, then read the count.
            async with self._client.pipeline(transaction=False) as pipe:
                for trunk in trunks:
                    pipe.zremrangebyscore(self.calls_key(trunk), "-inf", repr(floor))
                    pipe.zcard(self.calls_key(trunk))
                replies = await pipe.execute()
        except _ERRORS as exc:
            self._failed("active-call sweep failed", exc)
            return 0
        self._recovered()
        self._read_counts(start, zip(trunks, map(int, replies[1::2]), strict=True))
        return sum(int(n) for n in replies[0::2])

    def forget_trunk(self, trunk: str) -> None:
        """Stop exporting a removed trunk; its calls stay in Redis for replicas that still have it."""
        self._trunks.discard(trunk)
        self._counts.pop(trunk, None)
        self._stamps.pop(trunk, None)  # (safe: the counter never repeats a stamp)
        self._forgotten.add(trunk)  # an event still in flight must not bring it back

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
        self._conn.rediscover()
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
        d.redis_url,
        password=d.redis_password,
        timeout=d.redis_timeout,
        pool_size=d.redis_pool_size,
        mode=d.redis_mode,
    )
    conn = _Redis(client, d.redis_url, d.redis_password, d.redis_key_prefix, d.redis_timeout, d.redis_pool_size)
    logging.getLogger(LOGGER_NAME).info(
        "de-duplication backend: redis",
        extra={"redis": conn.url, "mode": d.redis_mode, "prefix": d.redis_key_prefix, "on_error": d.on_error},
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
    dedupe.attach(calls)
    return dedupe, calls
