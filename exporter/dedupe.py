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
from typing import NamedTuple, Protocol

KEY_BYTES = 16


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

    async def seen_or_add(self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None,
                          *, trunk: str | None = None) -> bool:
        """True when any key was seen within the TTL; otherwise records all keys (``now`` is
        the monotonic clock). ``trunk`` is the event's trunk (Redis: the keys' hash tag)."""
        ...

    def entries(self) -> int | None:
        """Keys held, when the store can tell cheaply (memory); None otherwise."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...

    def configure(self, ttl: float, max_entries: int) -> None: ...


class TTLSet:
    """A set of keys that expire after ``ttl`` seconds, bounded to ``max_entries`` (oldest first out).

    Every key has the same TTL, so insertion order is expiry order: a deque of keys in insertion
    order gives O(1) expiry and eviction, and dicts hold each key's expiry for lookups.

    The keys are held in two dicts, generations: new keys go into ``_expiry`` (the current one),
    and expiry and eviction, oldest first, take them out of ``_old``; once ``_old`` is empty the
    current generation becomes the old one and a new, empty one starts. A key is in exactly one
    of them, so the pair answers like one dict. The reason is memory: a single dict that keeps
    losing its oldest keys and gaining new ones never reuses the deleted keys' slots, so every
    ~2.5 x max_entries inserts it rebuilds its whole table (10 MiB at 100,000 keys, sized for 3x
    the live keys), and glibc keeps the previous table's freed block resident for the next
    rebuild: at 100,000 keys the measured RSS of a full store went on rising for ~2.5 x
    max_entries inserts after it was full (bench/NOTES.md, "Soak"). A generation here is only
    ever filled (its table grows by doubling, as any dict does) and then only emptied, so no
    table is rebuilt under churn, each is at most ~5 MiB at 100,000 keys, and the blocks freed
    by one cycle are the sizes the next cycle asks for.
    """

    __slots__ = ("_expiry", "_old", "_order", "max_entries", "on_evict", "ttl")

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.on_evict = on_evict
        self._expiry: dict[object, float] = {}  # the current generation: new keys go here
        self._old: dict[object, float] = {}  # the older generation: only ever emptied
        self._order: deque[object] = deque()

    def __len__(self) -> int:
        return len(self._old) + len(self._expiry)

    def expire(self, now: float) -> None:
        order, old = self._order, self._old
        while order:
            key = order[0]
            exp = old.get(key)
            if exp is None:
                exp = self._expiry.get(key)
            if exp is not None and exp > now:
                break
            order.popleft()
            if exp is not None:
                old = self._remove(key)

    def contains(self, key: object, now: float) -> bool:
        exp = self._expiry.get(key)
        if exp is None:
            exp = self._old.get(key)
        return exp is not None and exp > now

    def add(self, key: object, now: float) -> None:
        expiry = self._expiry
        if key in expiry:
            # Refresh (only a key expired but not yet pruned, or a re-added tombstone): it keeps its
            # deque position, so expire() stops there until the new expiry; memory stays bounded
            # by max_entries, and with one TTL for every key this needs a reload that lowers it.
            expiry[key] = now + self.ttl
            return
        if key in self._old:
            self._old[key] = now + self.ttl  # the same refresh, in the older generation
            return
        expiry[key] = now + self.ttl
        self._order.append(key)
        if len(expiry) + len(self._old) > self.max_entries:
            self._evict()

    def discard(self, key: object) -> None:
        if self._expiry.pop(key, None) is None:
            self._old.pop(key, None)

    def _remove(self, key: object) -> dict[object, float]:
        """Delete a key that is held (the oldest live one, or one behind only discarded ones);
        returns the older generation as it is afterwards."""
        old = self._old
        if not old:  # the older generation is used up: the current one takes its place
            old = self._old = self._expiry
            self._expiry = {}
        if old.pop(key, None) is None:
            self._expiry.pop(key, None)  # a discarded key added again: it is in the current one
        return old

    def _evict(self) -> None:
        order, old, cur = self._order, self._old, self._expiry
        limit = self.max_entries
        evicted = 0
        while len(old) + len(cur) > limit and order:
            key = order.popleft()
            if not old:
                old = self._old = cur
                cur = self._expiry = {}
            if old.pop(key, None) is not None or cur.pop(key, None) is not None:
                evicted += 1
        if evicted and self.on_evict is not None:
            self.on_evict(evicted)


class MemoryDedupe:
    """In-process store: right for one replica. Several replicas need the Redis backend."""

    tracks_calls = False

    def __init__(self, ttl: float, max_entries: int, on_evict: Callable[[int], None] | None = None) -> None:
        self._keys = TTLSet(ttl, max_entries, on_evict)

    def configure(self, ttl: float, max_entries: int) -> None:
        self._keys.ttl = ttl
        self._keys.max_entries = max_entries

    async def seen_or_add(self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None,
                          *, trunk: str | None = None) -> bool:
        return self.check_and_add(keys, now)

    def check_and_add(self, keys: tuple[bytes, ...], now: float) -> bool:
        """Synchronous core (the handler calls it directly to skip a coroutine on the hot path).

        TTLSet's expire/contains/add inlined: the same steps, without a method call each."""
        store = self._keys
        order = store._order
        cur, old = store._expiry, store._old
        if order:
            head = order[0]  # the oldest key: in the older generation while that holds any
            oldest = old.get(head) if old else cur.get(head)
            if oldest is None or oldest <= now:
                store.expire(now)
                cur, old = store._expiry, store._old
        for key in keys:
            exp = cur.get(key)
            if exp is None and old:
                exp = old.get(key)
            if exp is not None and exp > now:
                return True
        deadline = now + store.ttl
        for key in keys:
            if key in cur:
                cur[key] = deadline  # refresh: keeps its deque position (see TTLSet.add)
                continue
            if old and key in old:
                old[key] = deadline
                continue
            cur[key] = deadline
            order.append(key)
            if len(cur) + len(old) > store.max_entries:
                store._evict()
                cur, old = store._expiry, store._old
        return False

    def entries(self) -> int:
        return len(self._keys)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None
