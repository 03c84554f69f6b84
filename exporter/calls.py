"""Active-call tracking: CallInitiated (admitted) opens a call, Hangup closes it.

Out-of-order delivery is normal for an asynchronous, retried webhook: a Hangup seen before its
CallInitiated leaves a tombstone for ``dedupe.ttl`` so the late CallInitiated never opens a
call that already ended. Calls older than ``calls.max_call_duration`` expire, so a lost Hangup
cannot leave the gauge high forever.

Calls and tombstones are keyed by (trunk, CallUUID): an event on one trunk never opens, closes
or blocks a call of another trunk, whatever CallUUID a sender puts in it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .dedupe import CallUpdate, OnError, TTLSet


class CallTracker(Protocol):
    on_error: OnError  # set by a reload; a tracker that cannot fail (memory) only keeps it

    @property
    def apply_now(self) -> Callable[[CallUpdate], None] | None:
        """``call_started`` / ``call_ended`` synchronous, from a tracker that needs no I/O
        (memory): the handler calls it without a coroutine on the hot path. None otherwise."""
        ...

    async def call_started(self, trunk: str, call_uuid: str, now: float) -> None: ...

    async def call_ended(self, trunk: str, call_uuid: str, now: float) -> None: ...

    def active(self, trunk: str) -> int:
        """The count exported as ``vobiz_calls_active``; never below 0."""
        ...

    async def sweep(self, now: float) -> int:
        """Expire calls older than max_call_duration; returns how many."""
        ...

    def configure(self, max_call_duration: float, tombstone_ttl: float, max_entries: int) -> None: ...

    def forget_trunk(self, trunk: str) -> None: ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryCallTracker:
    """One replica's view. With several replicas each sees only its own half: use Redis there."""

    def __init__(self, max_call_duration: float, tombstone_ttl: float, max_entries: int) -> None:
        self.max_call_duration = max_call_duration
        self.max_entries = max_entries
        self._calls: dict[tuple[str, str], float] = {}  # (trunk, CallUUID) -> start time
        self._counts: dict[str, int] = {}
        self._ended = TTLSet(tombstone_ttl, max_entries)
        self.on_error: OnError = "accept"

    @property
    def apply_now(self) -> Callable[[CallUpdate], None]:
        return self.apply

    def apply(self, update: CallUpdate) -> None:
        if update.started:
            self.start(update.trunk, update.call_uuid, update.now)
        else:
            self.end(update.trunk, update.call_uuid, update.now)

    def configure(self, max_call_duration: float, tombstone_ttl: float, max_entries: int) -> None:
        self.max_call_duration = max_call_duration
        self.max_entries = max_entries
        self._ended.ttl = tombstone_ttl
        self._ended.max_entries = max_entries

    async def call_started(self, trunk: str, call_uuid: str, now: float) -> None:
        self.start(trunk, call_uuid, now)

    async def call_ended(self, trunk: str, call_uuid: str, now: float) -> None:
        self.end(trunk, call_uuid, now)

    def start(self, trunk: str, call_uuid: str, now: float) -> None:
        key = (trunk, call_uuid)
        ended = self._ended
        ended.expire(now)
        if ended.contains(key, now) or key in self._calls:
            return
        if len(self._calls) >= self.max_entries:
            return  # bounded memory beats an exact gauge under a flood of never-ending calls
        self._calls[key] = now
        self._counts[trunk] = self._counts.get(trunk, 0) + 1

    def end(self, trunk: str, call_uuid: str, now: float) -> None:
        key = (trunk, call_uuid)
        if self._calls.pop(key, None) is not None:
            self._decrement(trunk)
        self._ended.add(key, now)

    def _decrement(self, trunk: str) -> None:
        count = self._counts.get(trunk, 0)
        self._counts[trunk] = count - 1 if count > 0 else 0

    def active(self, trunk: str) -> int:
        return self._counts.get(trunk, 0)

    async def sweep(self, now: float) -> int:
        limit = now - self.max_call_duration
        stale = [key for key, started in self._calls.items() if started <= limit]
        for key in stale:
            del self._calls[key]
            self._decrement(key[0])
        self._ended.expire(now)
        return len(stale)

    def forget_trunk(self, trunk: str) -> None:
        for key in [k for k in self._calls if k[0] == trunk]:
            del self._calls[key]
        self._counts.pop(trunk, None)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None
