"""Active-call tracking: CallInitiated (admitted) opens a call, Hangup closes it.

Out-of-order delivery is normal for an asynchronous, retried webhook: a Hangup seen before its
CallInitiated leaves a tombstone for ``dedupe.ttl`` so the late CallInitiated never opens a
call that already ended. Calls older than ``calls.max_call_duration`` expire, so a lost Hangup
cannot leave the gauge high forever.
"""

from __future__ import annotations

from typing import Protocol

from .dedupe import TTLSet


class CallTracker(Protocol):
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
        self._calls: dict[str, tuple[str, float]] = {}
        self._counts: dict[str, int] = {}
        self._ended = TTLSet(tombstone_ttl, max_entries)

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
        ended = self._ended
        ended.expire(now)
        if ended.contains(call_uuid, now) or call_uuid in self._calls:
            return
        if len(self._calls) >= self.max_entries:
            return  # bounded memory beats an exact gauge under a flood of never-ending calls
        self._calls[call_uuid] = (trunk, now)
        self._counts[trunk] = self._counts.get(trunk, 0) + 1

    def end(self, trunk: str, call_uuid: str, now: float) -> None:
        entry = self._calls.pop(call_uuid, None)
        if entry is not None:
            self._decrement(entry[0])
        self._ended.add(call_uuid, now)

    def _decrement(self, trunk: str) -> None:
        count = self._counts.get(trunk, 0)
        self._counts[trunk] = count - 1 if count > 0 else 0

    def active(self, trunk: str) -> int:
        return self._counts.get(trunk, 0)

    async def sweep(self, now: float) -> int:
        limit = now - self.max_call_duration
        stale = [uuid for uuid, (_, started) in self._calls.items() if started <= limit]
        for uuid in stale:
            trunk, _ = self._calls.pop(uuid)
            self._decrement(trunk)
        self._ended.expire(now)
        return len(stale)

    def forget_trunk(self, trunk: str) -> None:
        for uuid in [u for u, (t, _) in self._calls.items() if t == trunk]:
            del self._calls[uuid]
        self._counts.pop(trunk, None)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        return None
