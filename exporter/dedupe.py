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

    async def seen_or_add(self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None) -> bool:
        """True when any key was seen within the TTL; otherwise records all keys (``now`` is
        the monotonic clock)."""
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
    order gives O(1) expiry and eviction, and a dict holds each key's expiry for lookups.
    """

    __slots__ = ("_expiry", "_order", "max_entries", "on_evict", "ttl")

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        on_evict: Callable[[int], None] | None = None,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.on_evict = on_evict
        self._expiry: dict[object, float] = {}
        self._order: deque[object] = deque()

    def __len__(self) -> int:
        return len(self._expiry)

    def expire(self, now: float) -> None:
        order, expiry = self._order, self._expiry
        while order:
            key = order[0]
            exp = expiry.get(key)
            if exp is not None and exp > now:
                break
            order.popleft()
            if exp is not None:
                del expiry[key]

    def contains(self, key: object, now: float) -> bool:
        exp = self._expiry.get(key)
        return exp is not None and exp > now

    def add(self, key: object, now: float) -> None:
        expiry = self._expiry
        if key in expiry:
            # Refresh (only a key expired but not yet pruned, or a re-added tombstone): it keeps its
            # deque position, so expire() stops there until the new expiry; memory stays bounded
            # by max_entries, and with one TTL for every key this needs a reload that lowers it.
            expiry[key] = now + self.ttl
            return
        expiry[key] = now + self.ttl
        self._order.append(key)
        if len(expiry) > self.max_entries:
            self._evict()

    def discard(self, key: object) -> None:
        self._expiry.pop(key, None)

    def _evict(self) -> None:
        order, expiry = self._order, self._expiry
        evicted = 0
        while len(expiry) > self.max_entries and order:
            key = order.popleft()
            if expiry.pop(key, None) is not None:
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

    async def seen_or_add(self, keys: tuple[bytes, ...], now: float, call: CallUpdate | None = None) -> bool:
        return self.check_and_add(keys, now)

    def check_and_add(self, keys: tuple[bytes, ...], now: float) -> bool:
        """Synchronous core (the handler calls it directly to skip a coroutine on the hot path).

        TTLSet's expire/contains/add inlined: the same steps, without a method call each."""
        store = self._keys
        expiry, order = store._expiry, store._order
        if order:
            oldest = expiry.get(order[0])
            if oldest is None or oldest <= now:
                store.expire(now)
        for key in keys:
            exp = expiry.get(key)
            if exp is not None and exp > now:
                return True
        deadline = now + store.ttl
        for key in keys:
            if key in expiry:
                expiry[key] = deadline  # refresh: keeps its deque position (see TTLSet.add)
                continue
            expiry[key] = deadline
            order.append(key)
            if len(expiry) > store.max_entries:
                store._evict()
        return False

    def entries(self) -> int:
        return len(self._keys)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None
