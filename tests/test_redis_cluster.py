"""The Redis backend on a real three-master Redis Cluster (three replicas, started on loopback):
hash-tagged keys, one script per event in the trunk's slot, two exporter replicas counting
exactly once, and a master killed mid-traffic (its replica promoted by the cluster's own
failover) survived per ``on_error`` (issue 14, docs/contract.md)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import redis

from exporter.dedupe import CallUpdate, event_key, material_key
from exporter.redis_store import REFRESH_INTERVAL, RedisCallTracker, RedisDedupe, build_redis_stores
from tests.helpers import call_initiated, make_config, signed
from tests.redis_util import RedisClusterServers, redis_cluster
from tests.test_redis import (
    Exporter,
    Req,
    _actives,
    _assert_plan_counts,
    _plan,
    _post,
    _run,
    _scrape,
    _start_exporter,
    _summable,
    _summed,
    _types,
    _v,
    _wait_ready,
    exporters,
    http,
)

__all__ = ["exporters", "http", "redis_cluster"]  # fixtures, re-exported for pytest

TRUNKS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


def _raw(cluster: RedisClusterServers) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, socket_timeout=2)


async def test_cluster_store_one_slot_per_event_and_pipelined_refresh(redis_cluster: RedisClusterServers) -> None:
    cfg = make_config(
        dedupe={
            "backend": "redis",
            "redis_url": redis_cluster.url,
            "redis_mode": "cluster",
            "redis_key_prefix": "s:",
            "on_error": "reject",
        }
    )
    d, c = build_redis_stores(cfg, None)
    assert isinstance(d, RedisDedupe) and isinstance(c, RedisCallTracker) and d.tracks_calls
    raw = _raw(redis_cluster)
    now = time.time()
    try:
        assert await d.ready() is True and await c.ready() is True
        for i, trunk in enumerate(TRUNKS):
            for n in range(i + 1):  # trunk i gets i+1 calls
                keys = (event_key(trunk, "call_initiated", f"r{n}"), material_key(trunk, f"{trunk}{n}".encode()))
                assert await d.seen_or_add(keys, 0, CallUpdate(True, trunk, f"u{n}", now)) is False
                assert await d.seen_or_add(keys, 0, CallUpdate(True, trunk, f"u{n}", now)) is True
            assert c.active(trunk) == i + 1
        # A Hangup on one trunk closes only that trunk's call of that uuid.
        hk = (event_key("alpha", "hangup", "h"), material_key("alpha", b"h"))
        assert await d.seen_or_add(hk, 0, CallUpdate(False, "alpha", "u0", now)) is False
        assert c.active("alpha") == 0 and c.active("bravo") == 2
        # Rejected attempts (no call update) with the trunk passed, and without it.
        rk = (event_key("bravo", "call_initiated", "rej"), material_key("bravo", b"rej"))
        assert await d.seen_or_add(rk, 0, trunk="bravo") is False
        assert await d.seen_or_add(rk, 0, trunk="bravo") is True
        nk = (event_key("bravo", "call_initiated", "legacy"), material_key("bravo", b"legacy"))
        assert await d.seen_or_add(nk, 0) is False
        assert await d.seen_or_add(nk, 0) is True
        # The trunks' call sets live on more than one master: the keys really are spread.
        masters = {redis_cluster.master_of(c.calls_key(t)).port for t in TRUNKS}
        assert len(masters) >= 2
        assert {t: raw.zcard(c.calls_key(t)) for t in TRUNKS} == {
            t: (i + 1 if t != "alpha" else 0) for i, t in enumerate(TRUNKS)
        }
        # Refresh and sweep: one pipeline over every node.
        c._counts.clear()
        assert await c.refresh() is True
        assert [c.active(t) for t in TRUNKS] == [0, 2, 3, 4, 5, 6]
        assert await c.sweep(now + 3 * 3600) == 0  # max_call_duration 4h: nothing stale yet
        assert await c.sweep(now + 5 * 3600) == 20
        assert [c.active(t) for t in TRUNKS] == [0] * 6
    finally:
        await d.close()
        await c.close()
        raw.close()


def _alpha_event(uuid: str) -> Req:
    body, headers = signed(call_initiated(call_uuid=uuid))
    return Req("alpha", body, headers)


async def _outcomes(http: aiohttp.ClientSession, exp: Exporter, trunk: str) -> dict[str, float]:
    s = await _scrape(http, exp)
    return {
        o: _v(s, "vobiz_webhook_requests_total", trunk=trunk, outcome=o)
        for o in ("accepted", "duplicate", "unavailable")
    }


@pytest.mark.e2e
async def test_two_replicas_on_a_cluster_count_once_and_survive_a_failover(
    tmp_path: Path, redis_cluster: RedisClusterServers, exporters: list[Exporter], http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    base = {"backend": "redis", "redis_url": redis_cluster.url, "redis_mode": "cluster", "redis_timeout": "300ms"}
    exporters.append(_start_exporter(tmp_path, "replica-0", {**base, "redis_key_prefix": "e2e:"}))
    exporters.append(_start_exporter(tmp_path, "replica-1", {**base, "redis_key_prefix": "e2e:"}))
    exporters.append(_start_exporter(tmp_path, "single", {"backend": "memory"}))
    exporters.append(_start_exporter(tmp_path, "reject", {**base, "redis_key_prefix": "rej:", "on_error": "reject"}))
    replicas, single, reject = exporters[:2], exporters[2], exporters[3]
    assert await _wait_ready(http, reject, 200) == 200

    # 1. Exactly once across two replicas: the same counts as one memory-backed replica.
    plan = _plan()
    await _run(http, plan, replicas)
    await _run(http, plan, [single])
    types = await _types(http, single)
    summed = await _summed(http, replicas, types)
    one = await _scrape(http, single)
    _assert_plan_counts(summed, plan)
    reference = _summable(one, types)
    assert summed.keys() == reference.keys()
    assert summed == pytest.approx(reference, rel=1e-12, abs=0)
    assert await _actives(http, replicas, plan.active) == [plan.active, plan.active]

    # 2. Kill the master of alpha's slot (a crash); the cluster promotes its replica.
    victim = redis_cluster.master_of("e2e:calls:{alpha}")
    assert redis_cluster.master_of("rej:calls:{alpha}") is victim  # same slot: the tag is the trunk
    # Every write so far has reached the replica, so what the promoted replica knows is exact.
    assert redis_cluster.wait_replicated(victim)
    pre_kill = plan.steps[0][1]  # an alpha event delivered before the kill
    victim.kill()
    t_kill = time.monotonic()

    # on_error reject: 503 unavailable while the slot has no master; on_error accept: counted.
    assert await _post(http, reject, _alpha_event("during-r")) == (503, "unavailable")
    before = await _outcomes(http, replicas[0], "alpha")
    assert await _post(http, replicas[0], _alpha_event("during-a")) == (200, "accepted")
    after = await _outcomes(http, replicas[0], "alpha")
    assert after["accepted"] == before["accepted"] + 1
    assert _v(await _scrape(http, replicas[0]), "vobiz_dedupe_errors_total") >= 1

    # Recovery: the promoted replica serves the slot; the reject replica accepts again and
    # de-duplicates again; the accept replicas de-duplicate across each other again.
    redis_cluster.wait_ok(timeout=20)
    failover_s = time.monotonic() - t_kill
    deadline = time.monotonic() + 15
    answer = await _post(http, reject, _alpha_event("after-r"))
    while answer != (200, "accepted") and time.monotonic() < deadline:
        assert answer == (503, "unavailable")
        await asyncio.sleep(0.1)
        answer = await _post(http, reject, _alpha_event("after-r"))
    assert answer == (200, "accepted")
    assert await _post(http, reject, _alpha_event("after-r")) == (200, "duplicate")
    # The accept replicas: each finds the new master (its refresher re-reads the slot map every
    # second); then an event on either is a duplicate on the other again. A probe that still
    # hit the dead master was accepted alone (on_error accept), so every probe is a new call.
    for first, second in ((replicas[0], replicas[1]), (replicas[1], replicas[0])):
        k = 0
        started = time.monotonic()
        while True:
            k += 1
            probe = _alpha_event(f"after-{first.port}-{k}")
            assert await _post(http, first, probe) == (200, "accepted")
            if await _post(http, second, probe) == (200, "duplicate") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert await _post(http, second, probe) == (200, "duplicate")
        # At most a refresh interval or two of stale slot map after the failover. (This was
        # "k <= 3" probes, about 0.35 s, stricter than it said; a CI run under load took 7.)
        took = time.monotonic() - started
        assert took <= 2 * REFRESH_INTERVAL, (k, took)
    # What was written before the kill survived the failover: a late retry is still a duplicate.
    assert await _post(http, replicas[1], pre_kill) == (200, "duplicate")
    assert await _wait_ready(http, reject, 200) == 200  # every slot served again: ready (CLUSTER INFO ok)
    rej = await _outcomes(http, reject, "alpha")
    assert rej["unavailable"] >= 1 and rej["accepted"] == 1 and rej["duplicate"] == 1

    # 3. The crashed node comes back (same port, its nodes.conf): it rejoins as a replica of the
    # promoted one, and nothing changes for the exporters.
    victim.start()
    redis_cluster.wait_ok(timeout=20)
    assert redis_cluster.master_of("e2e:calls:{alpha}") is not victim
    back = _alpha_event("after-rejoin")
    assert await _post(http, replicas[0], back) == (200, "accepted")
    assert await _post(http, replicas[1], back) == (200, "duplicate")
    assert await _post(http, reject, back) == (200, "accepted")  # another prefix: its own keys

    # 4. The whole cluster gone: the reject replica leaves the load balancer, the accept ones
    # stay ready and keep counting.
    for node in redis_cluster.nodes:
        node.kill()
    assert await _wait_ready(http, reject, 503) == 503
    assert await _wait_ready(http, replicas[0], 200) == 200
    assert await _post(http, replicas[0], _alpha_event("no-cluster")) == (200, "accepted")

    for exp in exporters:
        assert exp.proc.poll() is None
        assert "Traceback" not in exp.logs()
    assert failover_s < 15
    assert time.monotonic() - started < 60
