"""The simulator's sender: the plan goes to ``--url`` at its offsets, over asyncio/aiohttp, each
event stamped with its real send time and signed by ``wire``; every answer is counted."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from ..config import Config
from ..protocol import CALL_INITIATED, HANGUP
from .plan import PlannedCall
from .wire import build_request, stamp

REQUEST_TIMEOUT = 10.0  # the provider's delivery timeout
GRACE = REQUEST_TIMEOUT + 1.0  # after --duration, time for the last answers to arrive
PROGRESS_EVERY = 10.0


@dataclass(slots=True)
class TrunkStats:
    calls: int = 0
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    hangups: int = 0
    answered: int = 0
    accepted: int = 0
    not_accepted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, outcome)

    def count_sent(self, call: PlannedCall, event: str) -> None:
        """What was sent: a call (admitted or rejected for its reason), or a hangup (answered?)."""
        if event == CALL_INITIATED:
            self.calls += 1
            if call.rejection:
                self.rejected[call.rejection] += 1
            else:
                self.admitted += 1
        else:
            self.hangups += 1
            if call.hangup is not None and float(call.hangup.get("Billsec", 0)) > 0:
                self.answered += 1

    def count_answer(self, status: str, outcome: str) -> None:
        if status == "200" and outcome == "accepted":
            self.accepted += 1
        else:
            self.not_accepted[(status, outcome)] += 1

    def count_unanswered(self) -> None:
        """A request cancelled while waiting for its answer was sent but never answered."""
        missing = self.calls + self.hangups - self.accepted - sum(self.not_accepted.values())
        if missing > 0:
            self.not_accepted[("error", "no_answer_before_deadline")] += missing


@dataclass(slots=True)
class RunStats:
    trunks: dict[str, TrunkStats]
    planned_requests: int
    sent: int = 0
    unsent: int = 0
    elapsed: float = 0.0

    @property
    def accepted(self) -> int:
        return sum(t.accepted for t in self.trunks.values())

    @property
    def ok(self) -> bool:
        return self.unsent == 0 and self.sent == self.planned_requests and self.accepted == self.sent


async def _answer(resp: aiohttp.ClientResponse) -> str:
    try:
        data = json.loads(await resp.read())
    except ValueError:
        return "unreadable"
    outcome = data.get("outcome") if isinstance(data, dict) else None
    return outcome if isinstance(outcome, str) and outcome else "none"


def _target(base: str, path: str, body: bytes | str) -> tuple[URL, bytes | None]:
    """The URL and the request body: a GET trunk's query string goes in the URL, as signed."""
    if isinstance(body, str):
        return URL(f"{base}{path}?{body}", encoded=True), None
    return URL(f"{base}{path}", encoded=True), body


class _Run:
    """One run: its clock (offset 0 = the start), its counts and the requests in flight."""

    def __init__(self, config: Config, plan: Sequence[PlannedCall], url: str, concurrency: int) -> None:
        self.config = config
        self.plan = plan
        self.trunks = {t.name: t for t in config.trunks}
        self.stats = RunStats(
            trunks={t.name: TrunkStats() for t in config.trunks},
            planned_requests=sum(2 if c.hangup is not None else 1 for c in plan),
        )
        self.base = url.rstrip("/")
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.wall0 = time.time()
        self.sem = asyncio.Semaphore(concurrency)
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def sleep_until(self, offset: float) -> None:
        delay = self.t0 + offset - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def send(
        self, session: aiohttp.ClientSession, call: PlannedCall, event: str, payload: Mapping[str, Any]
    ) -> None:
        ts = self.stats.trunks[call.trunk]
        async with self.sem:
            self.in_flight += 1
            try:
                stamped = stamp(payload, event, self.wall0 + (self.loop.time() - self.t0))
                method, path, headers, body = build_request(self.config, self.trunks[call.trunk], stamped, event)
                target, data = _target(self.base, path, body)
                self.stats.sent += 1
                ts.count_sent(call, event)
                try:
                    async with session.request(method, target, data=data, headers=headers) as resp:
                        outcome = await _answer(resp)
                        status = str(resp.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, outcome = "error", type(exc).__name__
                ts.count_answer(status, outcome)
            finally:
                self.in_flight -= 1

    async def one_call(self, session: aiohttp.ClientSession, call: PlannedCall) -> None:
        await self.send(session, call, CALL_INITIATED, call.call_initiated)
        if call.hangup is not None and call.end is not None:
            await self.sleep_until(call.end)  # only after the CallInitiated was answered
            await self.send(session, call, HANGUP, call.hangup)

    async def report_progress(self) -> None:
        stats = self.stats
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            print(
                f"simulate: {self.loop.time() - self.t0:.0f}s: sent {stats.sent}/{stats.planned_requests} "
                f"requests, {stats.accepted} accepted, {stats.sent - stats.accepted - self.in_flight} "
                f"not accepted, {self.in_flight} in flight",
                file=sys.stderr,
                flush=True,
            )

    async def schedule(self, session: aiohttp.ClientSession) -> None:
        for call in self.plan:
            await self.sleep_until(call.start)
            task = asyncio.create_task(self.one_call(session, call))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        while self.tasks:
            await asyncio.wait(set(self.tasks))

    async def send_all(self, session: aiohttp.ClientSession, length: float) -> None:
        """The whole plan, cut off (every request still open cancelled) at ``length`` + GRACE."""
        try:
            await asyncio.wait_for(self.schedule(session), timeout=max(0.0, length + GRACE))
        except TimeoutError:
            pending = set(self.tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def finish(self) -> RunStats:
        stats = self.stats
        stats.unsent = stats.planned_requests - stats.sent
        for ts in stats.trunks.values():
            ts.count_unanswered()
        stats.elapsed = self.loop.time() - self.t0
        return stats


async def execute(
    config: Config,
    plan: Sequence[PlannedCall],
    url: str,
    *,
    length: float,
    concurrency: int = 50,
    progress: bool = False,
) -> RunStats:
    """Send the plan at its offsets; bounded by ``length`` + GRACE whatever the receiver does."""
    run = _Run(config, plan, url, concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency)
    reporter = asyncio.create_task(run.report_progress()) if progress else None
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await run.send_all(session, length)
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
    return run.finish()
