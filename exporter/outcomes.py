"""Every outcome of a webhook request, declared once: its HTTP status, the one-sentence detail of
the JSON answer, and its value of the ``outcome`` label. The handlers, the metrics, the docs and
the tests all read this table."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str  # the `outcome` label value
    status: int
    detail: str
    before_trunk: bool = False  # can happen before a trunk is resolved (then trunk="unknown")

    @property
    def body(self) -> bytes:
        return json.dumps({"outcome": self.name, "detail": self.detail}).encode()


TABLE: tuple[Outcome, ...] = (
    Outcome("accepted", 200, "Event accepted."),
    Outcome("duplicate", 200, "Already received; not counted again."),
    Outcome("ignored", 200, "Verified, but this event type is not measured."),
    Outcome("invalid_signature", 401, "The signature does not verify with this trunk's secret."),
    Outcome("missing_signature", 401, "The signature header is missing."),
    Outcome("unknown_trunk", 404, "No configured trunk matches this request.", before_trunk=True),
    Outcome("trunk_mismatch", 400, "The payload's TrunkID does not belong to this trunk."),
    Outcome("malformed", 400, "The body is not a valid Vobiz event.", before_trunk=True),
    Outcome("stale", 400, "The event Timestamp is outside the replay window."),
    Outcome("too_large", 413, "The body is over the size limit.", before_trunk=True),
    Outcome("timeout", 408, "The body was not received in time.", before_trunk=True),
    Outcome("forbidden_source", 403, "The source address is not allowed.", before_trunk=True),
    Outcome("method_not_allowed", 405, "This trunk does not accept this method.", before_trunk=True),
    Outcome("unavailable", 503, "The de-duplication store is unavailable; retry later."),
    Outcome("overloaded", 503, "Too many requests in flight; retry later.", before_trunk=True),
)
BY_NAME: dict[str, Outcome] = {o.name: o for o in TABLE}
NAMES: tuple[str, ...] = tuple(o.name for o in TABLE)
# Pre-created for trunk="unknown" (docs/contract.md, "Labels").
UNRESOLVED: tuple[str, ...] = tuple(o.name for o in TABLE if o.before_trunk)
SUCCESS = frozenset(o.name for o in TABLE if o.status == 200)
