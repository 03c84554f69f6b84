"""Memory de-duplication and active-call tracking: TTL, LRU bound, tombstones, expiry."""

from __future__ import annotations

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
