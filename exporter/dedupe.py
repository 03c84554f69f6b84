"""De-duplication of retried and replayed webhook deliveries.

Two keys per event (docs/contract.md, "De-duplication"): the event identity (trunk, event,
request id) and a digest of the signed material, so a replay with a new unsigned header is
still caught. Keys are 16-byte BLAKE2b digests: compact (memory per key is the bench's target) and not reversible into
call ids or phone numbers.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple, Protocol

KEY_BYTES = 16

# What a request does when its store fails (``dedupe.on_error``): accepted uncounted, or 503.
OnError = Literal["accept", "reject"]


class DedupeUnavailable(Exception):
    """The store could not answer (Redis down); ``on_error`` decides what happens."""


# Pre-initialised BLAKE2b states: copying one is cheaper than setting up the parameter block
# (digest size, personalisation) for every key; the digests are the same.
_EVENT_STATE = hashlib.blake2b(digest_size=KEY_BYTES, person=b"vobiz-event")
_BODY_STATE = hashlib.blake2b(digest_size=KEY_BYTES, person=b"vobiz-body")


def event_key(trunk: str, event: str, request_id: str) -> bytes:
    """Identity of one delivery: the same for a retry of the same event."""
    h = _EVENT_STATE.copy()
    h.update(f"{trunk}\x00{event}\x00{request_id}".encode("utf-8", "surrogatepass"))
    return h.digest()


def material_key(trunk: str, signed_material: bytes) -> bytes:
    """Digest of what the signature covers, per trunk: catches a replay under a new request id."""
    h = _BODY_STATE.copy()
    h.update(trunk.encode() + b"\x00")
    h.update(signed_material)
    return h.digest()


class CallUpdate(NamedTuple):
    """The active-call change an event makes once it is known not to be a duplicate."""

    started: bool  # True: an admitted CallInitiated opens the call; False: a Hangup closes it
    trunk: str
    call_uuid: str
    now: float  # wall clock (time.time()) of the request


class DedupeStore(Protocol):
    """What the handlers need from a store (memory here, Redis in ``redis_store``)."""

    # True when ``seen_or_add`` also applies ``call`` (in the same atomic step, only when the
    # event is not a duplicate): the Redis backend does both in one round trip. When False the
    # handler hands the update to the CallTracker itself.
    tracks_calls: bool
    on_error: OnError  # set by a reload; a store that cannot fail (memory) only keeps it

    @property
    def check_now(self) -> Callable[[tuple[bytes, ...], float], bool] | None:
        """``seen_or_add`` without a call update, synchronous, from a store that needs no I/O
        (memory): the handler calls it without a coroutine on the hot path. None otherwise."""
        ...

    async def seen_or_add(
        self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None, *, trunk: str | None = None
    ) -> bool:
        """True when any key was seen within the TTL; otherwise records all keys (``now`` is
        the monotonic clock). ``trunk`` is the event's trunk (Redis: the keys' hash tag)."""
        ...

    def entries(self) -> int | None:
        """Keys held, when the store can tell cheaply (memory); None otherwise."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...

    def configure(self, ttl: float, max_entries: int) -> None: ...


SHARDS = 256  # dicts per TTLSet (a power of two): see TTLSet
_SHARD_MASK = SHARDS - 1


class TTLSet:
    """A set of keys that expire after ``ttl`` seconds, bounded to ``max_entries`` (oldest first out).

    Every key has the same TTL, so insertion order is expiry order: a deque of keys in insertion
    order gives O(1) expiry and eviction, and dicts hold each key's expiry for lookups.

    The expiries are spread over ``SHARDS`` small dicts by the key's hash instead of one big
    dict. The reason is memory: a dict that keeps losing its oldest keys and gaining new ones
    never reuses the deleted keys' slots, so it rebuilds its whole table every ~2.5 x its size in
    inserts, sized for 3x its live keys. One dict for 100,000 keys rebuilds a 10 MiB table, and
    glibc (its mmap threshold rises to the size of the first such block freed) places those
    tables in its heap, where each rebuild leaves the old table's block resident: the soak's RSS
    grew ~20 MiB after the stores were full (bench/NOTES.md, "Soak"). The shards rebuild small
    tables (37 KB each at 100,000 keys) at different times: blocks the allocator recycles, and no
    rebuild of 100,000 entries at once on the event loop.
    """

    __slots__ = ("_expiry", "_order", "_size", "max_entries", "on_evict", "ttl")

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.on_evict = on_evict
        self._expiry: list[dict[object, float]] = [{} for _ in range(SHARDS)]  # key -> expiry, by hash
        self._order: deque[object] = deque()
        self._size = 0  # keys held, over all shards

    def __len__(self) -> int:
        return self._size

    def expire(self, now: float) -> None:
        order, shards = self._order, self._expiry
        while order:
            key = order[0]
            shard = shards[hash(key) & _SHARD_MASK]
            exp = shard.get(key)
            if exp is not None and exp > now:
                break
            order.popleft()
            if exp is not None:
                del shard[key]
                self._size -= 1

    def contains(self, key: object, now: float) -> bool:
        exp = self._expiry[hash(key) & _SHARD_MASK].get(key)
        return exp is not None and exp > now

    def add(self, key: object, now: float) -> None:
        shard = self._expiry[hash(key) & _SHARD_MASK]
        if key in shard:
            # Refresh (only a key expired but not yet pruned, or a re-added tombstone): it keeps its
            # deque position, so expire() stops there until the new expiry; memory stays bounded
            # by max_entries, and with one TTL for every key this needs a reload that lowers it.
            shard[key] = now + self.ttl
            return
        shard[key] = now + self.ttl
        self._order.append(key)
        self._size += 1
        if self._size > self.max_entries:
            self._evict()

    def discard(self, key: object) -> None:
        if self._expiry[hash(key) & _SHARD_MASK].pop(key, None) is not None:
            self._size -= 1

    def _evict(self) -> None:
        order, shards = self._order, self._expiry
        limit = self.max_entries
        size = self._size
        evicted = 0
        while size > limit and order:
            key = order.popleft()
            if shards[hash(key) & _SHARD_MASK].pop(key, None) is not None:
                size -= 1
                evicted += 1
        self._size = size
        if evicted and self.on_evict is not None:
            self.on_evict(evicted)


class MemoryDedupe:
    """In-process store: right for one replica. Several replicas need the Redis backend."""

    tracks_calls = False

    def __init__(self, ttl: float, max_entries: int, on_evict: Callable[[int], None] | None = None) -> None:
        self._keys = TTLSet(ttl, max_entries, on_evict)
        self.on_error: OnError = "accept"

    @property
    def check_now(self) -> Callable[[tuple[bytes, ...], float], bool]:
        return self.check_and_add

    def configure(self, ttl: float, max_entries: int) -> None:
        self._keys.ttl = ttl
        self._keys.max_entries = max_entries

    async def seen_or_add(
        self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None, *, trunk: str | None = None
    ) -> bool:
        return self.check_and_add(keys, now)

    def check_and_add(self, keys: tuple[bytes, ...], now: float) -> bool:
        """Synchronous core (the handler calls it directly to skip a coroutine on the hot path).

        TTLSet's expire/contains/add inlined: the same steps, without a method call each; two
        distinct keys, none held, with room for both (the handler's usual case), take a
        straight path."""
        store = self._keys
        shards, order = store._expiry, store._order
        if order:
            head = order[0]
            oldest = shards[hash(head) & _SHARD_MASK].get(head)
            if oldest is None or oldest <= now:
                store.expire(now)
        if len(keys) == 2:
            k0, k1 = keys
            s0, s1 = shards[hash(k0) & _SHARD_MASK], shards[hash(k1) & _SHARD_MASK]
            e0, e1 = s0.get(k0), s1.get(k1)
            if (e0 is not None and e0 > now) or (e1 is not None and e1 > now):
                return True
            if e0 is None and e1 is None and k0 != k1 and store._size + 2 <= store.max_entries:
                s0[k0] = s1[k1] = now + store.ttl  # (one that evicts takes the general path)
                order.append(k0)
                order.append(k1)
                store._size += 2
                return False
        return self._check_and_add_any(keys, now)

    def _check_and_add_any(self, keys: tuple[bytes, ...], now: float) -> bool:
        """Any number of keys, repeated or expired-but-held ones too (expiry already done)."""
        store = self._keys
        shards, order = store._expiry, store._order
        for key in keys:
            exp = shards[hash(key) & _SHARD_MASK].get(key)
            if exp is not None and exp > now:
                return True
        deadline = now + store.ttl
        for key in keys:
            shard = shards[hash(key) & _SHARD_MASK]
            if key in shard:
                shard[key] = deadline  # refresh: keeps its deque position (see TTLSet.add)
                continue
            shard[key] = deadline
            order.append(key)
            store._size += 1
            if store._size > store.max_entries:
                store._evict()
        return False

    def entries(self) -> int:
        return len(self._keys)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None
