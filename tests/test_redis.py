"""The Redis backend against a real ``redis-server``: store semantics, outages, TLS, and two
exporter processes sharing one Redis (docs/contract.md, "Replicas", issue 3)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
import redis
import redis.asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.dedupe import CallUpdate, DedupeUnavailable, event_key, material_key
from exporter.protocol import REQUEST_ID_HEADER
from exporter.redis_store import (
    RedisCallTracker,
    RedisDedupe,
    _Redis,
    build_client,
    build_redis_stores,
    mask_url,
)
from tests.helpers import (
    ENV,
    SECRET_B,
    TRUNK_B_ID,
    call_initiated,
    free_port,
    hangup,
    make_config,
    raw_config,
    signed,
)
from tests.redis_util import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, re-exported for pytest

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "r3dis-pa55-w0rd-never-logged"


def _stores(
    url: str,
    prefix: str = "t:",
    ttl: float = 3600.0,
    *,
    on_error: Literal["accept", "reject"] = "accept",
    max_call_duration: float = 3600.0,
    tombstone_ttl: float = 3600.0,
    refresh_interval: float = 3600.0,
    password: str | None = None,
    timeout: float = 0.5,
) -> tuple[RedisDedupe, RedisCallTracker]:
    conn = _Redis(build_client(url, password=password, timeout=timeout, pool_size=4), url, password, prefix, timeout, 4)
    dedupe = RedisDedupe(conn, ttl, on_error)
    calls = RedisCallTracker(
        conn,
        max_call_duration,
        tombstone_ttl,
        1000,
        trunks=["alpha", "bravo"],
        on_error=on_error,
        refresh_interval=refresh_interval,
    )
    dedupe.attach(calls)
    return dedupe, calls


async def _close(*stores: RedisDedupe | RedisCallTracker) -> None:
    for store in stores:
        await store.close()


def _raw(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=server.password, socket_timeout=2)


# --- de-duplication ------------------------------------------------------------------------


async def test_duplicate_if_either_key_was_seen(redis_server: RedisServer) -> None:
    d, c = _stores(redis_server.url, prefix="p1:")
    try:
        assert await d.seen_or_add((b"e1", b"m1"), 0, trunk="alpha") is False
        assert await d.seen_or_add((b"e1", b"m2"), 1, trunk="alpha") is True  # retry: same request id
        assert await d.seen_or_add((b"e2", b"m1"), 1, trunk="alpha") is True  # replay under a new request id
        assert await d.seen_or_add((b"e2", b"m2"), 2, trunk="alpha") is False
        raw = _raw(redis_server)
        keys = sorted(raw.keys("p1:dedupe:*"))
        # A duplicate records nothing: exactly the four keys of the two new events, hash-tagged
        # with the trunk.
        assert keys == sorted(b"p1:dedupe:{alpha}:" + k.hex().encode() for k in (b"e1", b"m1", b"e2", b"m2"))
        ttl_ms = raw.pttl(b"p1:dedupe:{alpha}:" + b"e1".hex().encode())
        assert 3_590_000 < ttl_ms <= 3_600_000
        assert d.entries() is None
    finally:
        await _close(d, c)


async def test_prefixes_do_not_share_keys(redis_server: RedisServer) -> None:
    a, ca = _stores(redis_server.url, prefix="site-a:")
    b, cb = _stores(redis_server.url, prefix="site-b:")
    try:
        keys = (event_key("alpha", "hangup", "r1"), material_key("alpha", b"{}"))
        assert await a.seen_or_add(keys, 0, trunk="alpha") is False
        assert await b.seen_or_add(keys, 0, trunk="alpha") is False
        assert await a.seen_or_add(keys, 0, trunk="alpha") is True
        assert await b.seen_or_add(keys, 0, trunk="alpha") is True
    finally:
        await _close(a, ca, b, cb)


async def test_keys_expire_after_ttl(redis_server: RedisServer) -> None:
    d, c = _stores(redis_server.url, ttl=0.3)
    try:
        assert await d.seen_or_add((b"k1", b"k2"), 0, trunk="alpha") is False
        assert await d.seen_or_add((b"k1", b"k2"), 0, trunk="alpha") is True
        await asyncio.sleep(0.45)
        assert await d.seen_or_add((b"k1", b"k2"), 0, trunk="alpha") is False
        d.configure(ttl=10.0, max_entries=1)  # a reload changes the TTL of new keys
        assert await d.seen_or_add((b"k3", b"k4"), 0, trunk="alpha") is False
        assert 9_000 < _raw(redis_server).pttl(b"t:dedupe:{alpha}:" + b"k3".hex().encode()) <= 10_000
    finally:
        await _close(d, c)


async def test_racing_replicas_count_an_event_once(redis_server: RedisServer) -> None:
    """Two clients (two replicas) deliver the same 40 events concurrently: each is new once."""
    a, ca = _stores(redis_server.url)
    b, cb = _stores(redis_server.url)
    try:
        events = [(event_key("alpha", "hangup", f"r{i}"), material_key("alpha", f"{i}".encode())) for i in range(40)]
        results = await asyncio.gather(
            *(store.seen_or_add(keys, 0, trunk="alpha") for keys in events for store in (a, b, a, b))
        )
        new = [not dup for dup in results]
        assert sum(new) == 40
        assert all(sum(new[i * 4 : (i + 1) * 4]) == 1 for i in range(40))
    finally:
        await _close(a, ca, b, cb)


# --- active calls --------------------------------------------------------------------------


async def test_call_started_on_one_replica_ended_on_the_other(redis_server: RedisServer) -> None:
    da, a = _stores(redis_server.url)
    db, b = _stores(redis_server.url)
    now = time.time()
    try:
        await a.call_started("alpha", "c1", now)
        await a.call_started("alpha", "c2", now)
        await a.call_started("alpha", "c2", now)  # a second start of the same call opens nothing
        await b.call_started("bravo", "c3", now)
        assert (a.active("alpha"), a.active("bravo")) == (2, 0)  # a has not refreshed bravo yet
        assert await a.refresh() is True
        assert (a.active("alpha"), a.active("bravo")) == (2, 1)
        await b.call_ended("alpha", "c1", now + 1)
        assert b.active("alpha") == 1  # the script returns the shared count
        await b.call_ended("alpha", "c1", now + 2)  # a retried Hangup changes nothing
        await b.call_ended("alpha", "never-started", now + 2)  # never below 0
        assert b.active("alpha") == 1
        await a.refresh()
        assert a.active("alpha") == 1
        await a.call_ended("alpha", "c2", now + 3)
        await b.refresh()
        assert (a.active("alpha"), b.active("alpha")) == (0, 0)
        assert a.active("unconfigured") == 0
    finally:
        await _close(da, a, db, b)


async def test_late_call_initiated_after_hangup_never_opens(redis_server: RedisServer) -> None:
    da, a = _stores(redis_server.url, tombstone_ttl=0.4)
    db, b = _stores(redis_server.url, tombstone_ttl=0.4)
    now = time.time()
    try:
        await b.call_ended("alpha", "late", now)
        await a.call_started("alpha", "late", now)
        assert a.active("alpha") == 0
        raw = _raw(redis_server)
        assert raw.zcard("t:calls:{alpha}") == 0
        await asyncio.sleep(0.6)  # the tombstone lives dedupe.ttl, then the uuid may open again
        await a.call_started("alpha", "late", now + 1)
        assert a.active("alpha") == 1
    finally:
        await _close(da, a, db, b)


async def test_stale_calls_expire(redis_server: RedisServer) -> None:
    da, a = _stores(redis_server.url, max_call_duration=100.0)
    db, b = _stores(redis_server.url, max_call_duration=100.0)
    t0 = time.time()
    try:
        await a.call_started("alpha", "old", t0 - 60)
        await a.call_started("alpha", "new", t0)
        assert a.active("alpha") == 2
        assert await b.sweep(t0 + 41) == 1  # "old" started at t0-60: older than 100 s at t0+40
        assert b.active("alpha") == 1
        await a.refresh(t0 + 41)
        assert a.active("alpha") == 1
        assert await a.sweep(t0 + 41) == 0  # idempotent across replicas
        # Without any sweep, the refresh already ignores calls past max_call_duration.
        await a.refresh(t0 + 101)
        assert a.active("alpha") == 0
        assert _raw(redis_server).pttl("t:calls:{alpha}") > 99_000  # an idle set expires by itself
    finally:
        await _close(da, a, db, b)


async def test_background_refresh_shows_other_replicas_calls(redis_server: RedisServer) -> None:
    da, a = _stores(redis_server.url, refresh_interval=0.1)
    db, b = _stores(redis_server.url)
    try:
        await b.call_started("bravo", "x", time.time())
        deadline = time.monotonic() + 3
        while a.active("bravo") != 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert a.active("bravo") == 1
        a.forget_trunk("bravo")  # a reload removed the trunk: no longer exported or refreshed
        await asyncio.sleep(0.3)
        assert a._counts.get("bravo") is None
    finally:
        await _close(da, a, db, b)


@pytest.mark.parametrize("read", ["refresh", "sweep"])
async def test_a_read_in_flight_keeps_its_older_count_off_a_trunk_a_script_updated(
    redis_server: RedisServer, read: str
) -> None:
    """A refresh or sweep reads every trunk's count in one pipeline. A script that returns a
    trunk's count while that pipeline is in flight ran later than the read began: the read's
    older count must not overwrite it (it once did, and test_redis_cluster saw a stale count
    right after the write). The other trunks take the read's counts."""
    da, a = _stores(redis_server.url)
    db, b = _stores(redis_server.url)
    try:
        await _first_refresh_done(a)  # the background refresher's first pass is over
        await b.call_started("bravo", "x", time.time())  # another replica's call: Redis has 1
        assert a.active("alpha") == 0 and a.active("bravo") == 0
        task = asyncio.create_task(a.refresh() if read == "refresh" else a.sweep(time.time()))
        await asyncio.sleep(0)  # the read has started (and taken its stamp); its reply is not in
        assert not task.done()
        a.applied("alpha", 7)  # a script's count arrives meanwhile (Redis itself holds 0 for alpha)
        await task
        assert (a.active("alpha"), a.active("bravo")) == (7, 1)
        # The next read, started after the script, is believed again.
        await (a.refresh() if read == "refresh" else a.sweep(time.time()))
        assert (a.active("alpha"), a.active("bravo")) == (0, 1)
    finally:
        await _close(da, a, db, b)


def test_of_two_overlapping_reads_the_later_started_one_stands() -> None:
    """A sweep (every 10 s) and the background refresh can be in flight together; whichever
    started later read Redis later, so an earlier-started read finishing last is not stored.
    (Which reply comes first cannot be forced on a real server: the stamps are driven here.)"""
    _, a = _stores("redis://127.0.0.1:1/0")  # never connected: no loop runs the refresher
    first, second = next(a._seq), next(a._seq)
    a._read_counts(second, [("alpha", 3), ("bravo", 1)])
    a._read_counts(first, [("alpha", 2), ("bravo", 0)])
    assert (a.active("alpha"), a.active("bravo")) == (3, 1)
    a.applied("alpha", 4)  # a script's reply after both reads started
    a._read_counts(next(a._seq), [("alpha", 5)])  # a read started after it
    assert a.active("alpha") == 5


async def test_an_update_in_flight_across_a_reload_does_not_bring_the_trunk_back(redis_server: RedisServer) -> None:
    """A fallback call_started for a trunk a reload just removed: the call is stored (other
    replicas may still have the trunk), but this replica keeps the trunk out of its refresh."""
    d, c = _stores(redis_server.url)
    try:
        await _first_refresh_done(c)
        c.forget_trunk("bravo")
        await c.call_started("bravo", "late", time.time())
        await c.refresh()
        assert "bravo" not in c._trunks and "bravo" not in c._counts
        assert _raw(redis_server).zcard(c.calls_key("bravo")) == 1
    finally:
        await _close(d, c)


# --- one round trip per event: de-duplication and the active-call update in one script -----


async def _first_refresh_done(calls: RedisCallTracker) -> None:
    """Wait for the tracker's first background refresh (a pipeline of its own), so a MONITOR
    capture started after it sees only the events' commands. A refresh sets a count for every
    known trunk; the events of these tests never set bravo's (no call update on bravo)."""
    deadline = time.monotonic() + 5
    while "bravo" not in calls._counts and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert "bravo" in calls._counts


class Monitor:
    """Redis MONITOR on a raw socket: the commands the exporter's connections sent, without
    those run inside scripts (MONITOR tags those ``[0 lua]``). ``commands()`` ends the capture
    with a marker."""

    MARKER = "vobiz-monitor-end"

    def __init__(self, server: RedisServer) -> None:
        import socket

        self.server = server
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.buf = b""
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        assert self.buf.startswith(b"+OK")
        self.buf = self.buf.split(b"\r\n", 1)[1]

    def commands(self) -> list[str]:
        """What the exporter's connections (client name ``vobiz-exporter``) sent."""
        raw = _raw(self.server)
        ours = {c["addr"] for c in raw.client_list() if c.get("name") == "vobiz-exporter"}
        raw.echo(self.MARKER)
        out: list[str] = []
        self.addrs: list[str] = []  # the connection of each command
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            while b"\r\n" in self.buf:
                line, self.buf = self.buf.split(b"\r\n", 1)
                text = line.decode(errors="replace")
                if self.MARKER in text:
                    self.sock.close()
                    return out
                if "] " not in text:
                    continue
                addr = text.split("[", 1)[1].split("]", 1)[0].split(" ", 1)[-1]
                if addr not in ours:  # a script's own commands ("lua") or another client
                    continue
                out.append(text.split("] ", 1)[1].split(" ", 1)[0].strip('"').upper())
                self.addrs.append(addr)
            self.buf += self.sock.recv(65536)
        self.sock.close()
        raise AssertionError("MONITOR marker not seen")


async def test_event_and_call_update_are_one_command(redis_server: RedisServer) -> None:
    d, c = _stores(redis_server.url)
    raw = _raw(redis_server)
    now = time.time()
    try:
        assert await d.seen_or_add((b"warm", b"up"), 0, trunk="bravo") is False  # connect, load the script
        await _first_refresh_done(c)
        monitor = Monitor(redis_server)
        start = CallUpdate(True, "alpha", "u1", now)
        assert await d.seen_or_add((b"e1", b"m1"), 0, start) is False
        assert c.active("alpha") == 1  # the local count comes from the script's reply
        assert raw.zcard("t:calls:{alpha}") == 1
        assert await d.seen_or_add((b"e1", b"m1"), 0, start) is True  # a duplicate changes no call
        assert await d.seen_or_add((b"e2", b"m2"), 0, CallUpdate(True, "alpha", "u2", now)) is False
        assert c.active("alpha") == 2
        assert await d.seen_or_add((b"e3", b"m3"), 0, trunk="alpha") is False  # a rejected attempt: no call
        assert c.active("alpha") == 2 and raw.zcard("t:calls:{alpha}") == 2
        end = CallUpdate(False, "alpha", "u1", now + 5)
        assert await d.seen_or_add((b"h1", b"n1"), 0, end) is False
        assert c.active("alpha") == 1
        assert raw.pttl(c.tombstone_key("alpha", "u1")) > 3_590_000
        assert await d.seen_or_add((b"h1", b"n9"), 0, end) is True  # its retry: nothing changes
        assert c.active("alpha") == 1
        # Six events: six EVALSHA and not one other command (one round trip each).
        assert monitor.commands() == ["EVALSHA"] * 6
    finally:
        await _close(d, c)


async def test_tombstones_and_calls_are_per_trunk(redis_server: RedisServer) -> None:
    """docs/contract.md: the same CallUUID on two trunks is two calls; a Hangup on one trunk neither
    closes nor blocks the other trunk's call."""
    d, c = _stores(redis_server.url)
    now = time.time()
    try:
        assert await d.seen_or_add((b"b-h", b"b-hm"), 0, CallUpdate(False, "bravo", "same", now)) is False
        assert await d.seen_or_add((b"a-s", b"a-sm"), 0, CallUpdate(True, "alpha", "same", now)) is False
        assert c.active("alpha") == 1  # bravo's tombstone did not block alpha's call
        assert await d.seen_or_add((b"b-s", b"b-sm"), 0, CallUpdate(True, "bravo", "same", now)) is False
        assert c.active("bravo") == 0  # bravo's own tombstone blocks bravo's late start
        assert await c.refresh() is True
        assert (c.active("alpha"), c.active("bravo")) == (1, 0)
        # The fallback path (the handler updating calls itself) uses the same per-trunk keys.
        await c.call_ended("bravo", "other", now)
        await c.call_started("alpha", "other", now)
        assert c.active("alpha") == 2
        await c.call_started("bravo", "other", now)
        assert c.active("bravo") == 0
    finally:
        await _close(d, c)


async def test_every_key_of_an_event_is_in_the_trunks_slot(redis_server: RedisServer) -> None:
    from redis.crc import key_slot

    d, c = _stores(redis_server.url, prefix="vobiz:")
    for trunk in ("alpha", "bravo", "mumbai-primary", "t_9"):
        keys = [
            d.key(trunk, event_key(trunk, "hangup", "r")),
            d.key(trunk, material_key(trunk, b"{}")),
            c.calls_key(trunk).encode(),
            c.tombstone_key(trunk, "uuid-1").encode(),
        ]
        assert {key_slot(k) for k in keys} == {key_slot(trunk.encode())}
    assert key_slot(d.key("alpha", b"x")) != key_slot(d.key("bravo", b"x"))  # trunks spread over slots
    await _close(d, c)


async def test_concurrent_events_share_one_connection_and_stay_exact(redis_server: RedisServer) -> None:
    """The batcher pipelines the events of one loop iteration: 300 concurrent events (100 new,
    each delivered three times) on a pool of 4 use one connection, and each counts once."""
    d, c = _stores(redis_server.url)
    raw = _raw(redis_server)
    now = time.time()
    try:
        assert await d.seen_or_add((b"warm", b"up"), 0, trunk="bravo") is False  # connect, load the script
        await c.refresh()
        monitor = Monitor(redis_server)
        calls = [CallUpdate(True, "alpha" if i % 2 else "bravo", f"c{i}", now) for i in range(100)]
        jobs = [d.seen_or_add((f"e{i}".encode(), f"m{i}".encode()), 0, calls[i]) for i in range(100) for _ in range(3)]
        results = await asyncio.gather(*jobs)
        assert [results[3 * i : 3 * i + 3].count(False) for i in range(100)] == [1] * 100
        sent = monitor.commands()
        assert sent == ["EVALSHA"] * 300
        assert len(set(monitor.addrs)) == 1  # all on one connection (without batching: all 4)
        assert (raw.zcard("t:calls:{alpha}"), raw.zcard("t:calls:{bravo}")) == (50, 50)
        assert await c.refresh() is True
        assert (c.active("alpha"), c.active("bravo")) == (50, 50)
    finally:
        await _close(d, c)


async def test_an_error_reply_fails_only_its_own_event_in_a_batch(redis_server: RedisServer) -> None:
    d, c = _stores(redis_server.url)
    raw = _raw(redis_server)
    raw.set("t:calls:{bravo}", "not a sorted set")  # another program's key under our prefix
    now = time.time()
    try:
        jobs = [
            d.seen_or_add(
                (f"b{i}".encode(), f"n{i}".encode()), 0, CallUpdate(True, "bravo" if i == 5 else "alpha", f"x{i}", now)
            )
            for i in range(10)
        ]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["bool"] * 5 + ["DedupeUnavailable"] + ["bool"] * 4
        assert "WRONGTYPE" in str(results[5])
        assert [r for i, r in enumerate(results) if i != 5] == [False] * 9
        assert c.active("alpha") == 9 and raw.zcard("t:calls:{alpha}") == 9
    finally:
        await _close(d, c)


async def test_flushed_script_cache_falls_back_to_eval(redis_server: RedisServer) -> None:
    d, c = _stores(redis_server.url)
    raw = _raw(redis_server)
    try:
        assert await d.seen_or_add((b"f1", b"g1"), 0, trunk="alpha") is False
        await _first_refresh_done(c)
        raw.script_flush()
        monitor = Monitor(redis_server)
        assert await d.seen_or_add((b"f2", b"g2"), 0, CallUpdate(True, "alpha", "x", time.time())) is False
        assert await d.seen_or_add((b"f2", b"g2"), 0, trunk="alpha") is True
        assert c.active("alpha") == 1
        assert monitor.commands() == ["EVALSHA", "EVAL", "EVALSHA"]  # NOSCRIPT once, then cached again
    finally:
        await _close(d, c)


def test_keys_without_a_trunk() -> None:
    """A caller that passes no trunk for an event without a call update: untagged 0.1 names on
    one server; on a cluster, both keys tagged with the signed-material digest (one slot)."""
    from redis.crc import key_slot

    for mode, expect in (("standalone", b"v:dedupe:6161"), ("cluster", b"v:dedupe:{6262}6161")):
        cfg = make_config(
            dedupe={
                "backend": "redis",
                "redis_url": "redis://127.0.0.1:1/0",
                "redis_mode": mode,
                "redis_key_prefix": "v:",
            }
        )
        d, _ = build_redis_stores(cfg, None)
        assert isinstance(d, RedisDedupe)
        tag = "{6262}" if mode == "cluster" else ""
        assert d._conn.untagged_key(b"aa", tag) == expect
    assert key_slot(b"v:dedupe:{6262}6161") == key_slot(b"v:dedupe:{6262}6262")


def test_redis_mode_config_key() -> None:
    from exporter.config import ConfigError

    assert make_config().dedupe.redis_mode == "standalone"
    cfg = make_config(dedupe={"backend": "redis", "redis_url": "redis://h:7000/0", "redis_mode": "cluster"})
    assert cfg.dedupe.redis_mode == "cluster"
    assert cfg.restart_fields()["dedupe.redis_mode"] == "cluster"  # a reload cannot switch it
    cases = [
        ({"redis_mode": "sentinel"}, "dedupe.redis_mode"),
        ({"redis_mode": "cluster", "redis_url": "redis://h:7000/2"}, "dedupe.redis_url: redis_mode cluster needs"),
        ({"redis_mode": "cluster", "redis_url": "unix:///run/redis.sock"}, "dedupe.redis_url: redis_mode cluster"),
        ({"redis_key_prefix": "a{b}:"}, "dedupe.redis_key_prefix: must not contain { or }"),
    ]
    for extra, problem in cases:
        with pytest.raises(ConfigError) as info:
            make_config(dedupe={"backend": "redis", "redis_url": "redis://h:7000/0", **extra})
        assert any(problem in line for line in info.value.problems), (extra, info.value.problems)


# --- failures, recovery, secrets, TLS ------------------------------------------------------


async def test_outage_raises_unavailable_then_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    d, c = _stores(url, on_error="reject")
    da, ca = _stores(url, on_error="accept")
    try:
        now = time.time()
        assert await d.seen_or_add((b"a", b"b"), 0, trunk="alpha") is False
        await c.call_started("alpha", "c1", now)
        assert c.active("alpha") == 1
        assert (await d.ready(), await c.ready()) == (True, True)
        server.stop()

        with pytest.raises(DedupeUnavailable) as info:
            await d.seen_or_add((b"x", b"y"), 0, trunk="alpha")
        assert PASSWORD not in str(info.value)
        assert "ConnectionError" in str(info.value)
        # The tracker never raises into the handler; its count stays at the last known value.
        await c.call_started("alpha", "c2", now)
        await c.call_ended("alpha", "c1", now)
        assert await c.sweep(now) == 0
        assert await c.refresh() is False
        assert c.active("alpha") == 1
        assert (await d.ready(), await c.ready()) == (False, False)  # on_error: reject
        assert (await da.ready(), await ca.ready()) == (True, True)  # on_error: accept

        server.start()  # same port, empty data, scripts flushed; pooled connections are dead
        assert await d.seen_or_add((b"x", b"y"), 0, trunk="alpha") is False
        assert await d.seen_or_add((b"x", b"y"), 0, trunk="alpha") is True
        await c.call_started("alpha", "c3", now)
        assert c.active("alpha") == 1  # only c3: the outage's updates were lost with the old data
        assert (await d.ready(), await c.ready()) == (True, True)
    finally:
        await _close(d, c, da, ca)
        server.stop()


async def test_password_from_env_wins_and_wrong_password_is_unavailable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password=PASSWORD)
    server.start()
    try:
        good, gc = _stores(f"redis://:wrong@127.0.0.1:{server.port}/0", password=PASSWORD)
        bad, bc = _stores(f"redis://:wrong-{PASSWORD}@127.0.0.1:{server.port}/0", on_error="reject")
        try:
            assert await good.seen_or_add((b"1", b"2"), 0, trunk="alpha") is False
            with pytest.raises(DedupeUnavailable) as info:
                await bad.seen_or_add((b"1", b"2"), 0, trunk="alpha")
            assert PASSWORD not in str(info.value)
            assert await bad.ready() is False
        finally:
            await _close(good, gc, bad, bc)
    finally:
        server.stop()


async def test_unresponsive_redis_times_out_within_the_timeout() -> None:
    """A Redis that accepts connections but never answers (a hung server, a black hole
    behind a proxy): every call gives up after redis_timeout, not redis-py's 5 s default."""
    import socket

    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
        url = f"redis://127.0.0.1:{hole.getsockname()[1]}/0"
        d, c = _stores(url, on_error="reject", timeout=0.2)
        try:
            start = time.monotonic()
            with pytest.raises(DedupeUnavailable) as info:
                await d.seen_or_add((b"a", b"b"), 0, trunk="alpha")
            assert "Timeout" in str(info.value)
            assert await d.ready() is False
            await c.call_started("alpha", "c", time.time())  # logged, not raised
            assert time.monotonic() - start < 2.0
        finally:
            await _close(d, c)


async def test_a_small_pool_queues_instead_of_failing(redis_server: RedisServer) -> None:
    """More concurrent requests than connections wait for one (up to redis_timeout)."""
    conn = _Redis(build_client(redis_server.url, timeout=2.0, pool_size=2), redis_server.url, None, "pool:", 2.0, 2)
    d = RedisDedupe(conn, 60)
    try:
        results = await asyncio.gather(*(d.seen_or_add((f"e{i}".encode(), f"m{i}".encode()), 0) for i in range(50)))
        assert results == [False] * 50
        assert len(_raw(redis_server).keys("pool:dedupe:*")) == 100
    finally:
        await d.close()


def test_mask_url() -> None:
    assert mask_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert (
        mask_url("rediss://user:s3cret@host/1?ssl_ca_certs=/ca.pem") == "rediss://user:***@host/1?ssl_ca_certs=/ca.pem"
    )
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert mask_url("unix:///run/redis.sock?db=2") == "unix:///run/redis.sock?db=2"


def test_client_settings_come_from_config() -> None:
    cfg = make_config(
        dedupe={
            "backend": "redis",
            "redis_url": "redis://127.0.0.1:1/3",
            "redis_timeout": "250ms",
            "redis_pool_size": 3,
            "redis_key_prefix": "x:",
        }
    )
    d, c = build_redis_stores(cfg, None)
    assert isinstance(d, RedisDedupe) and isinstance(c, RedisCallTracker)
    client = d._conn.client
    assert isinstance(client, redis.asyncio.Redis)
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"], kwargs["db"]) == (0.25, 0.25, 3)
    assert pool.max_connections == 3
    assert pool.timeout == 0.25  # type: ignore[attr-defined]
    assert c.calls_key("alpha") == "x:calls:{alpha}"
    assert c.tombstone_key("alpha", "u1").startswith("x:ended:{alpha}:")
    assert d.key("alpha", b"\x01\xff") == b"x:dedupe:{alpha}:01ff"
    assert d.tracks_calls is True and d.calls is c


async def test_tls_rediss_url(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        extra=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(cert_file),
            "--tls-key-file",
            str(key_file),
            "--tls-ca-cert-file",
            str(ca_file),
            "--tls-auth-clients",
            "no",
        ],
    )
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"redis-server without TLS support: {exc}")
    try:
        d, c = _stores(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca_file}", timeout=2.0)
        untrusted, uc = _stores(f"rediss://127.0.0.1:{tls_port}/0", timeout=2.0)
        try:
            assert await d.seen_or_add((b"tls1", b"tls2"), 0, trunk="alpha") is False
            assert await d.seen_or_add((b"tls1", b"tls2"), 0, trunk="alpha") is True
            with pytest.raises(DedupeUnavailable):  # the server's CA is not in the system store
                await untrusted.seen_or_add((b"tls3", b"tls4"), 0, trunk="alpha")
        finally:
            await _close(d, c, untrusted, uc)
    finally:
        server.stop()


# --- real exporter processes sharing one Redis ---------------------------------------------


@dataclass
class Exporter:
    """One ``python -m exporter serve`` process on a free loopback port (both listeners)."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


def _start_exporter(tmp_path: Path, name: str, dedupe: dict[str, Any], env: dict[str, str] | None = None) -> Exporter:
    port = free_port()
    raw = raw_config(dedupe=dedupe)
    raw["web"] = {"listen_address": f"127.0.0.1:{port}"}
    raw["webhook"] = {"listen_address": f"127.0.0.1:{port}"}
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--config", str(cfg)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ENV, **(env or {}), "PYTHONPATH": str(ROOT)},
        )
    exp = Exporter(port, proc, log)
    deadline = time.monotonic() + 20
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exporter {name} exited {proc.returncode}: {exp.logs()[-3000:]}")
        try:
            with urllib.request.urlopen(exp.base + "/-/healthy", timeout=1) as resp:
                if resp.status == 200:
                    return exp
        except OSError:
            time.sleep(0.1)
    _stop(exp)
    raise AssertionError(f"exporter {name} did not start: {exp.logs()[-3000:]}")


def _stop(exp: Exporter) -> int:
    if exp.proc.poll() is None:
        os.kill(exp.proc.pid, signal.SIGTERM)
        try:
            return exp.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(exp.proc.pid, signal.SIGKILL)
            exp.proc.wait(timeout=15)
            return -9
    return exp.proc.returncode


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exp in started:
        _stop(exp)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@dataclass
class Req:
    trunk: str
    body: bytes
    headers: dict[str, str]


async def _post(http: aiohttp.ClientSession, exp: Exporter, req: Req) -> tuple[int, str]:
    async with http.post(f"{exp.base}/webhook/{req.trunk}", data=req.body, headers=req.headers) as resp:
        return resp.status, (await resp.json())["outcome"]


Sample = tuple[str, tuple[tuple[str, str], ...]]


async def _scrape(http: aiohttp.ClientSession, exp: Exporter) -> dict[Sample, float]:
    """Every vobiz_ counter and histogram sample, plus vobiz_calls_active."""
    async with http.get(exp.base + "/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("vobiz_"):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# Timing-dependent (delivery delay, handling time) or per-process (gauges other than active calls).
_TIMING = ("vobiz_webhook_delivery_delay_seconds", "vobiz_webhook_request_duration_seconds")


def _summable(samples: dict[Sample, float], types: dict[str, str]) -> dict[Sample, float]:
    out = {}
    for (name, labels), value in samples.items():
        base = next((f for f in types if name == f or name.startswith(f + "_")), None)
        if base is None or base in _TIMING or types[base] not in ("counter", "histogram"):
            continue
        out[(name, labels)] = value
    return out


async def _types(http: aiohttp.ClientSession, exp: Exporter) -> dict[str, str]:
    async with http.get(exp.base + "/metrics") as resp:
        text = await resp.text()
    return {f.name: f.type for f in text_string_to_metric_families(text) if f.name.startswith("vobiz_")}


def _v(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def _summed(http: aiohttp.ClientSession, replicas: list[Exporter], types: dict[str, str]) -> dict[Sample, float]:
    """The replicas' counter and histogram samples added series by series (what a sum over
    instances reads)."""
    summed: dict[Sample, float] = {}
    for exp in replicas:
        for key, value in _summable(await _scrape(http, exp), types).items():
            summed[key] = summed.get(key, 0.0) + value
    return summed


def _assert_plan_counts(summed: dict[Sample, float], plan: Plan) -> None:
    """The attempts, rejections, answered calls and outcomes the plan implies, exactly."""
    for trunk in ("alpha", "bravo"):
        for result in ("admitted", "rejected"):
            assert _v(summed, "vobiz_call_attempts_total", trunk=trunk, result=result) == plan.attempts[(trunk, result)]
        for _, reason in REJECTIONS:
            got = _v(summed, "vobiz_call_rejections_total", trunk=trunk, reason=reason)
            assert got == plan.reasons[(trunk, reason)]
        assert _v(summed, "vobiz_calls_answered_total", trunk=trunk) == plan.answered[trunk]
        for outcome in ("accepted", "duplicate", "unavailable"):
            assert (
                _v(summed, "vobiz_webhook_requests_total", trunk=trunk, outcome=outcome)
                == plan.outcomes[(trunk, outcome)]
            ), (trunk, outcome)


async def _actives(
    http: aiohttp.ClientSession, replicas: list[Exporter], want: Mapping[str, float]
) -> list[dict[str, float]]:
    """Every replica's active calls per trunk, polled until all show ``want`` or 5 s pass: each
    replica exports the shared count, the other replicas' changes within one refresh."""
    deadline = time.monotonic() + 5
    while True:
        views = [await _scrape(http, e) for e in replicas]
        actives = [{t: _v(v, "vobiz_calls_active", trunk=t) for t in ("alpha", "bravo")} for v in views]
        if all(a == want for a in actives) or time.monotonic() > deadline:
            return actives
        await asyncio.sleep(0.2)


@dataclass
class Plan:
    """The traffic and the single-replica counts it must produce, derived from the plan itself."""

    steps: list[tuple[str, Req, int]] = field(default_factory=list)  # (kind, request, replica)
    attempts: Tally[tuple[str, str]] = field(default_factory=Tally)
    reasons: Tally[tuple[str, str]] = field(default_factory=Tally)
    ended: Tally[tuple[str, str, str, str]] = field(default_factory=Tally)
    answered: Tally[str] = field(default_factory=Tally)
    outcomes: Tally[tuple[str, str]] = field(default_factory=Tally)
    active: dict[str, int] = field(default_factory=lambda: {"alpha": 0, "bravo": 0})


REJECTIONS = [
    ("Insufficient balance: 0.50 INR", "insufficient_balance"),
    ("KYC verification required", "kyc_required"),
    ("Concurrent call limit exceeded", "rate_limited"),
    ("No routes available", "no_routes"),
    ("something new", "other"),
]
HANGUPS = [  # code, name, source, billsec -> cause, category, source label
    (4000, "Normal Hangup", "Caller", 60, "normal_hangup", "normal", "caller"),
    (3010, "Busy Line", "Callee", 0, "busy_line", "rejection", "callee"),
    (3000, "No Answer", "Callee", 0, "no_answer", "rejection", "callee"),
    (4000, "Normal Hangup", "Callee", 200, "normal_hangup", "normal", "callee"),
    (5030, "Concurrency Limit Breached", "Caller", 0, "concurrency_limit_breached", "system", "caller"),
]


def _plan() -> Plan:
    plan = Plan()
    secrets = {"alpha": None, "bravo": SECRET_B}
    ids = {"alpha": None, "bravo": TRUNK_B_ID}

    def req(trunk: str, payload: dict[str, Any], request_id: str | None = None) -> Req:
        secret = secrets[trunk]
        body, headers = (
            signed(payload, secret, request_id=request_id) if secret else signed(payload, request_id=request_id)
        )
        return Req(trunk, body, headers)

    def tid(trunk: str) -> dict[str, Any]:
        return {"trunk_id": ids[trunk]} if ids[trunk] else {}

    def deliver(kind: str, r: Req, first: int) -> None:
        """The event to one replica and its retry to the other; counted once."""
        plan.steps.append((kind, r, first))
        plan.steps.append(("retry", r, 1 - first))
        plan.outcomes[(r.trunk, "accepted")] += 1
        plan.outcomes[(r.trunk, "duplicate")] += 1

    n = 0
    for trunk, calls in (("alpha", 15), ("bravo", 6)):
        for i in range(calls):
            n += 1
            uuid = f"call-{trunk}-{i:03d}"
            first = n % 2
            rejected = i % 4 == 3
            reason_text, reason = REJECTIONS[i % len(REJECTIONS)]
            ci = call_initiated(
                call_uuid=uuid, allowed=not rejected, reason=reason_text if rejected else "", **tid(trunk)
            )
            deliver("race" if i % 5 == 0 else "send", req(trunk, ci), first)
            plan.attempts[(trunk, "rejected" if rejected else "admitted")] += 1
            if rejected:
                plan.reasons[(trunk, reason)] += 1
                continue
            if i % 3 == 0:
                plan.active[trunk] += 1  # no Hangup yet: still active
                continue
            code, cname, source, billsec, cause, category, slabel = HANGUPS[i % len(HANGUPS)]
            h = hangup(
                call_uuid=uuid,
                code=code,
                name=cname,
                source=source,
                billsec=billsec,
                duration=billsec + 10,
                mos=4.3 if billsec else 0,
                **tid(trunk),
            )
            deliver("send", req(trunk, h), 1 - first)  # the replica that did not see CallInitiated
            plan.ended[(trunk, cause, category, slabel)] += 1
            plan.answered[trunk] += 1 if billsec > 0 else 0
    # Out of order: the Hangup first on replica 0, the late CallInitiated on replica 1.
    for j in range(2):
        uuid = f"late-{j}"
        deliver("send", req("alpha", hangup(call_uuid=uuid)), 0)
        deliver("send", req("alpha", call_initiated(call_uuid=uuid)), 1)
        plan.ended[("alpha", "normal_hangup", "normal", "caller")] += 1
        plan.answered["alpha"] += 1
        plan.attempts[("alpha", "admitted")] += 1
    # A replay of a delivered body under a new request id: caught by the body digest.
    replay = next(r for kind, r, _ in plan.steps if kind == "send" and r.trunk == "alpha")
    plan.steps.append(("replay", Req("alpha", replay.body, {**replay.headers, REQUEST_ID_HEADER: "fresh"}), 1))
    plan.outcomes[("alpha", "duplicate")] += 1
    return plan


async def _run(http: aiohttp.ClientSession, plan: Plan, replicas: list[Exporter]) -> None:
    """Send the plan; with one replica, everything goes to it. Asserts every answer."""
    i = 0
    steps = plan.steps
    while i < len(steps):
        kind, r, target = steps[i]
        if kind == "race":  # the event and its retry at once, one to each replica
            _, retry, other = steps[i + 1]
            answers = await asyncio.gather(
                _post(http, replicas[target % len(replicas)], r), _post(http, replicas[other % len(replicas)], retry)
            )
            assert sorted(answers) == [(200, "accepted"), (200, "duplicate")]
            i += 2
            continue
        answer = await _post(http, replicas[target % len(replicas)], r)
        assert answer == ((200, "duplicate") if kind in ("retry", "replay") else (200, "accepted")), (kind, r.body)
        i += 1


@pytest.mark.e2e
async def test_two_replicas_count_like_one(
    tmp_path: Path, redis_server: RedisServer, exporters: list[Exporter], http: aiohttp.ClientSession
) -> None:
    dedupe = {"backend": "redis", "redis_url": redis_server.url, "redis_key_prefix": "e2e:"}
    exporters.append(_start_exporter(tmp_path, "replica-0", dedupe))
    exporters.append(_start_exporter(tmp_path, "replica-1", dedupe))
    exporters.append(_start_exporter(tmp_path, "single", {"backend": "memory"}))
    replicas, single = exporters[:2], exporters[2]
    plan = _plan()
    await _run(http, plan, replicas)
    await _run(http, plan, [single])

    types = await _types(http, single)
    summed = await _summed(http, replicas, types)
    one = await _scrape(http, single)
    _assert_plan_counts(summed, plan)
    ended = {
        (
            dict(labels)["trunk"],
            dict(labels)["hangup_cause"],
            dict(labels)["hangup_category"],
            dict(labels)["hangup_source"],
        ): v
        for (name, labels), v in summed.items()
        if name == "vobiz_calls_ended_total" and v
    }
    assert ended == dict(plan.ended)
    assert sum(plan.outcomes.values()) == len(plan.steps)
    # And the same as one replica fed the same traffic, for every counter and histogram series
    # (approx only for float sums added in another order, e.g. 0.07 + 0.05 vs 0.05 + 0.07).
    reference = _summable(one, types)
    assert summed.keys() == reference.keys()
    assert summed == pytest.approx(reference, rel=1e-12, abs=0)
    assert _v(summed, "vobiz_dedupe_errors_total") == 0

    # Active calls: every replica exports the shared count (the other replica's within a refresh).
    assert plan.active["alpha"] > 0 and plan.active["bravo"] > 0
    assert await _actives(http, replicas, plan.active) == [plan.active, plan.active]
    assert {t: _v(one, "vobiz_calls_active", trunk=t) for t in ("alpha", "bravo")} == plan.active
    # The other replica's hang-ups move both replicas' gauges back down.
    open_calls = [
        r
        for kind, r, _ in plan.steps
        if kind in ("send", "race")
        and b'"CallInitiated"' in r.body
        and b'"Allowed": true' in r.body
        and b"late-" not in r.body
    ]
    ended_uuids = {
        json.loads(r.body)["CallUUID"] for kind, r, _ in plan.steps if kind == "send" and b'"Hangup"' in r.body
    }
    still_open = [json.loads(r.body) for r in open_calls if json.loads(r.body)["CallUUID"] not in ended_uuids]
    assert len(still_open) == plan.active["alpha"] + plan.active["bravo"]
    for k, ci in enumerate(still_open):
        trunk = "alpha" if ci["TrunkID"] != TRUNK_B_ID else "bravo"
        h = hangup(call_uuid=ci["CallUUID"], trunk_id=ci["TrunkID"])
        body, headers = signed(h, SECRET_B) if trunk == "bravo" else signed(h)
        assert await _post(http, replicas[k % 2], Req(trunk, body, headers)) == (200, "accepted")
    zero = {"alpha": 0.0, "bravo": 0.0}
    assert await _actives(http, replicas, zero) == [zero, zero]

    for exp in exporters:
        assert exp.proc.poll() is None
        assert "Traceback" not in exp.logs()


async def _ready(http: aiohttp.ClientSession, exp: Exporter) -> int:
    async with http.get(exp.base + "/-/ready") as resp:
        return resp.status


async def _wait_ready(http: aiohttp.ClientSession, exp: Exporter, status: int, seconds: float = 10) -> int:
    deadline = time.monotonic() + seconds
    got = await _ready(http, exp)
    while got != status and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        got = await _ready(http, exp)
    return got


def _event(uuid: str) -> Req:
    body, headers = signed(call_initiated(call_uuid=uuid))
    return Req("alpha", body, headers)


@pytest.mark.e2e
async def test_redis_outage_follows_on_error_and_recovers(
    tmp_path: Path, exporters: list[Exporter], http: aiohttp.ClientSession
) -> None:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir, password=PASSWORD)
    server.start()
    try:
        base = {"backend": "redis", "redis_timeout": "300ms"}
        # accept: password from the environment; reject: password in the URL (must be masked).
        accept = _start_exporter(
            tmp_path,
            "accept",
            {
                **base,
                "on_error": "accept",
                "redis_url": server.url,
                "redis_password_env": "VOBIZ_REDIS_PASSWORD",
                "redis_key_prefix": "acc:",
            },
            env={"VOBIZ_REDIS_PASSWORD": PASSWORD},
        )
        exporters.append(accept)
        reject = _start_exporter(
            tmp_path,
            "reject",
            {
                **base,
                "on_error": "reject",
                "redis_url": f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0",
                "redis_key_prefix": "rej:",
            },
        )
        exporters.append(reject)
        for exp in (accept, reject):
            assert await _ready(http, exp) == 200
            assert await _post(http, exp, _event("before")) == (200, "accepted")
            assert await _post(http, exp, _event("before")) == (200, "duplicate")

        server.stop()
        # on_error: accept — counted (the retry too: no store to tell), errors counted, still ready.
        for uuid in ("during-1", "during-2", "during-2"):
            assert await _post(http, accept, _event(uuid)) == (200, "accepted")
        m = await _scrape(http, accept)
        assert _v(m, "vobiz_dedupe_errors_total") == 3
        assert _v(m, "vobiz_webhook_requests_total", trunk="alpha", outcome="accepted") == 4
        assert _v(m, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 4
        assert await _ready(http, accept) == 200
        # on_error: reject — 503 unavailable, nothing counted, not ready.
        assert await _post(http, reject, _event("during-1")) == (503, "unavailable")
        m = await _scrape(http, reject)
        assert _v(m, "vobiz_dedupe_errors_total") == 1
        assert _v(m, "vobiz_webhook_requests_total", trunk="alpha", outcome="unavailable") == 1
        assert _v(m, "vobiz_webhook_requests_total", trunk="alpha", outcome="accepted") == 1
        assert _v(m, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1
        assert await _ready(http, reject) == 503
        await asyncio.sleep(1.5)  # let the background refresh fail a few times too

        server.start()  # same port, empty: the client must reconnect and reload its scripts
        assert await _wait_ready(http, reject, 200) == 200
        assert await _post(http, reject, _event("during-1")) == (200, "accepted")  # the refused event
        assert await _post(http, reject, _event("during-1")) == (200, "duplicate")
        assert await _post(http, accept, _event("after")) == (200, "accepted")
        assert await _post(http, accept, _event("after")) == (200, "duplicate")
        m = await _scrape(http, accept)
        assert _v(m, "vobiz_dedupe_errors_total") == 3  # no failure after Redis came back
        assert _v(await _scrape(http, reject), "vobiz_dedupe_errors_total") == 1

        for exp in (accept, reject):
            assert exp.proc.poll() is None
        codes = [_stop(exp) for exp in (accept, reject)]
        assert codes == [0, 0]
        for exp in (accept, reject):
            logs = exp.logs()
            assert "Traceback" not in logs
            assert PASSWORD not in logs
        assert "redis://:***@127.0.0.1" in reject.logs()
    finally:
        server.stop()
