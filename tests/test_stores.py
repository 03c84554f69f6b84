"""Memory de-duplication and active-call tracking: TTL, LRU bound, tombstones, expiry."""

from __future__ import annotations

import random
import sys

from exporter import dedupe
from exporter.calls import MemoryCallTracker
from exporter.dedupe import KEY_BYTES, MemoryDedupe, TTLSet, event_key, material_key


def test_keys_are_compact_and_distinct() -> None:
    a = event_key("alpha", "hangup", "req-1")
    assert len(a) == KEY_BYTES
    assert a == event_key("alpha", "hangup", "req-1")
    assert a != event_key("bravo", "hangup", "req-1")
    assert a != event_key("alpha", "call_initiated", "req-1")
    assert material_key("alpha", b"{}") != material_key("bravo", b"{}")
    # The two key kinds never collide even on equal input.
    assert event_key("a", "b", "c") != material_key("a", b"b\x00c")


def test_duplicate_if_either_key_was_seen() -> None:
    d = MemoryDedupe(ttl=10, max_entries=100)
    assert d.check_and_add((b"e1", b"m1"), now=0) is False
    assert d.entries() == 2
    assert d.check_and_add((b"e1", b"m2"), now=1) is True  # retry: same request id
    assert d.check_and_add((b"e2", b"m1"), now=1) is True  # replay under a new request id
    assert d.entries() == 2  # a duplicate adds nothing
    assert d.check_and_add((b"e2", b"m2"), now=2) is False
    assert d.entries() == 4


def test_keys_expire_after_ttl() -> None:
    d = MemoryDedupe(ttl=10, max_entries=100)
    d.check_and_add((b"e1", b"m1"), now=0)
    assert d.check_and_add((b"e1", b"m1"), now=9.9) is True
    assert d.check_and_add((b"e1", b"m1"), now=10.0) is False
    assert d.entries() == 2


def test_lru_bound_evicts_oldest_and_counts() -> None:
    evicted: list[int] = []
    d = MemoryDedupe(ttl=100, max_entries=4, on_evict=evicted.append)
    d.check_and_add((b"e1", b"m1"), now=0)
    d.check_and_add((b"e2", b"m2"), now=1)
    d.check_and_add((b"e3", b"m3"), now=2)
    assert d.entries() == 4
    assert sum(evicted) == 2
    assert d.check_and_add((b"e1", b"m1"), now=3) is False  # oldest was evicted
    assert d.check_and_add((b"e3", b"m9"), now=3) is True


def test_ttlset_refresh_and_discard() -> None:
    s = TTLSet(ttl=10, max_entries=10)
    s.add("k", 0)
    s.add("k", 5)  # refresh
    s.expire(12)
    assert s.contains("k", 12) is True
    s.discard("k")
    assert s.contains("k", 12) is False
    assert len(s) == 0


async def test_calls_paired_and_never_negative() -> None:
    t = MemoryCallTracker(max_call_duration=100, tombstone_ttl=50, max_entries=100)
    await t.call_started("a", "c1", 0)
    await t.call_started("a", "c2", 0)
    await t.call_started("b", "c3", 0)
    assert (t.active("a"), t.active("b")) == (2, 1)
    await t.call_ended("a", "c1", 1)
    await t.call_ended("a", "c1", 2)  # a second Hangup for the same call changes nothing
    await t.call_ended("a", "never-started", 2)
    assert (t.active("a"), t.active("b")) == (1, 1)
    await t.call_ended("a", "c2", 3)
    assert t.active("a") == 0


async def test_late_call_initiated_after_hangup_never_becomes_active() -> None:
    t = MemoryCallTracker(max_call_duration=100, tombstone_ttl=50, max_entries=100)
    await t.call_ended("a", "c1", 0)
    await t.call_started("a", "c1", 1)
    assert t.active("a") == 0
    await t.call_started("a", "c1", 51)  # tombstone expired: treated as a new call
    assert t.active("a") == 1


async def test_stale_calls_expire() -> None:
    t = MemoryCallTracker(max_call_duration=100, tombstone_ttl=50, max_entries=100)
    await t.call_started("a", "old", 0)
    await t.call_started("a", "new", 60)
    assert await t.sweep(99) == 0
    assert await t.sweep(100) == 1
    assert t.active("a") == 1
    t.forget_trunk("a")
    assert t.active("a") == 0


# ----------------------------------------------------------------------------- TTLSet generations


class _ReferenceTTLSet:
    """The single-dict TTLSet as it was before the generations: the behaviour to keep."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl, self.max_entries, self.evicted = ttl, max_entries, 0
        self.expiry: dict[object, float] = {}
        self.order: list[object] = []

    def expire(self, now: float) -> None:
        while self.order:
            exp = self.expiry.get(self.order[0])
            if exp is not None and exp > now:
                break
            key = self.order.pop(0)
            if exp is not None:
                del self.expiry[key]

    def contains(self, key: object, now: float) -> bool:
        exp = self.expiry.get(key)
        return exp is not None and exp > now

    def add(self, key: object, now: float) -> None:
        if key in self.expiry:
            self.expiry[key] = now + self.ttl
            return
        self.expiry[key] = now + self.ttl
        self.order.append(key)
        while len(self.expiry) > self.max_entries and self.order:
            if self.expiry.pop(self.order.pop(0), None) is not None:
                self.evicted += 1

    def discard(self, key: object) -> None:
        self.expiry.pop(key, None)


def _held(s: TTLSet) -> dict[object, float]:
    """Every key held with its expiry, whichever shard holds it."""
    held: dict[object, float] = {}
    shards: list[dict[object, float]] = s._expiry if isinstance(s._expiry, list) else [s._expiry]  # (one dict before)
    for shard in shards:
        held.update(shard)
    return held


def test_ttlset_keys_spread_over_shards_by_hash_evicted_oldest_first() -> None:
    evicted: list[int] = []
    s = TTLSet(ttl=100, max_entries=4, on_evict=evicted.append)
    shards = dedupe.SHARDS
    assert len(s._expiry) == shards == 256
    keys: list[object] = [b"k%d" % n for n in range(6)] + [("trunk", f"call-{n}") for n in range(4)]
    for k in keys:
        s.add(k, 0)
    assert (len(s), sum(evicted), list(s._order)) == (4, 6, keys[6:])
    for k in keys[6:]:
        assert s._expiry[hash(k) & (shards - 1)] == {
            key: 100 for key in keys[6:] if hash(key) & (shards - 1) == hash(k) & (shards - 1)
        }
        assert s.contains(k, 99) is True
    assert not any(s.contains(k, 0) for k in keys[:6])
    s.discard(keys[7])
    s.discard(keys[7])  # twice: counted once
    assert (len(s), s.contains(keys[7], 0)) == (3, False)
    s.expire(100)
    assert (len(s), _held(s), list(s._order)) == (0, {}, [])


def test_ttlset_tables_stay_small_under_churn() -> None:
    """Why the shards exist: under eviction churn a dict rebuilds its table, sized for 3x its
    live keys. One dict for 25,600 keys churned like the soak holds a table of MiBs; the shards
    each hold a small one (a block the allocator recycles), and the total stays comparable."""
    n = 25_600
    s = TTLSet(ttl=1e9, max_entries=n)
    single: dict[object, float] = {}
    for i in range(4 * n):
        key = b"%016d" % i
        s.add(key, 0)
        single[key] = 0
        if len(single) > n:
            del single[b"%016d" % (i - n)]
    assert set(_held(s)) == set(single) and len(s) == n
    assert isinstance(s._expiry, list) and len(s._expiry) == dedupe.SHARDS
    biggest = max(sys.getsizeof(d) for d in s._expiry)
    total = sum(sys.getsizeof(d) for d in s._expiry)
    assert sys.getsizeof(single) > 1 << 20
    assert biggest < 32 << 10
    assert total < 1.5 * sys.getsizeof(single)


def test_ttlset_answers_like_the_single_dict_it_replaced() -> None:
    rng = random.Random(11)
    for max_entries in (1, 2, 5, 40):
        evicted: list[int] = []
        s = TTLSet(ttl=5.0, max_entries=max_entries, on_evict=evicted.append)
        ref = _ReferenceTTLSet(5.0, max_entries)
        now = 0.0
        for step in range(4000):
            now += rng.choice((0.0, 0.0, 0.5, 2.0))
            key = rng.randrange(60)
            op = rng.random()
            if op < 0.55:
                s.add(key, now)
                ref.add(key, now)
            elif op < 0.75:
                s.expire(now)
                ref.expire(now)
            elif op < 0.8:
                s.discard(key)
                ref.discard(key)
            elif op < 0.81:
                s.max_entries = ref.max_entries = rng.choice((1, max_entries, 2 * max_entries))
            assert s.contains(key, now) == ref.contains(key, now), step
            assert _held(s) == ref.expiry, step
            assert list(s._order) == ref.order, step
            assert len(s) == len(ref.expiry)
        assert sum(evicted) == ref.evicted


def test_memory_dedupe_across_generations_matches_the_reference() -> None:
    rng = random.Random(5)
    evicted: list[int] = []
    d = MemoryDedupe(ttl=30.0, max_entries=16, on_evict=evicted.append)
    ref = _ReferenceTTLSet(30.0, 16)
    now = 0.0
    for _ in range(5000):
        now += rng.choice((0.0, 0.1, 1.0))
        keys = (bytes([rng.randrange(40)]), bytes([100 + rng.randrange(40)]))
        ref.expire(now)
        expected = any(ref.contains(k, now) for k in keys)
        if not expected:
            for k in keys:
                ref.add(k, now)
        assert d.check_and_add(keys, now) is expected
        assert _held(d._keys) == ref.expiry
        assert d.entries() == len(ref.expiry)
    assert sum(evicted) == ref.evicted > 0


async def test_tombstones_across_generations() -> None:
    t = MemoryCallTracker(max_call_duration=100, tombstone_ttl=50, max_entries=3)
    for n in range(1, 6):
        await t.call_ended("a", f"c{n}", 0)  # tombstones c3, c4, c5 remain (c1, c2 evicted)
    await t.call_started("a", "c1", 1)  # its tombstone was evicted: a new call
    await t.call_started("a", "c5", 1)  # still a tombstone: a late CallInitiated is dropped
    await t.call_started("b", "c5", 1)  # another trunk's c5 is another call
    assert (t.active("a"), t.active("b")) == (1, 1)
    await t.call_started("a", "c3", 50)  # c3's tombstone expired at 50
    assert t.active("a") == 2


def test_in_process_stores_offer_their_synchronous_steps() -> None:
    """What the handler's hot path calls without a coroutine (the protocols' check_now / apply_now)."""
    d = MemoryDedupe(ttl=10, max_entries=10)
    t = MemoryCallTracker(max_call_duration=100, tombstone_ttl=10, max_entries=10)
    assert d.check_now is not None and t.apply_now is not None
    assert d.check_now((b"e", b"m"), 0.0) is False
    assert d.check_now((b"e", b"m2"), 1.0) is True
    t.apply_now(dedupe.CallUpdate(True, "a", "c1", 0.0))
    t.apply_now(dedupe.CallUpdate(True, "a", "c2", 0.0))
    assert t.active("a") == 2
    t.apply_now(dedupe.CallUpdate(False, "a", "c1", 1.0))
    t.apply_now(dedupe.CallUpdate(True, "a", "c1", 2.0))  # its Hangup came: never active again
    assert (t.active("a"), t.active("b")) == (1, 0)
    assert (d.on_error, t.on_error) == ("accept", "accept")


def test_redis_stores_have_no_synchronous_steps() -> None:
    from exporter.redis_store import RedisCallTracker, RedisDedupe

    assert (RedisDedupe.check_now, RedisCallTracker.apply_now) == (None, None)
