"""``vobiz-exporter simulate``: realistic, correctly signed Vobiz trunk webhook traffic.

Four modules, so the interesting part is testable without a network and each changes alone:

* ``plan``: the traffic model. :func:`plan_calls` is pure: from a config, a scenario and a seed,
  every call's ``CallInitiated`` and (admitted calls) ``Hangup`` payload with its send offset.
* ``wire``: payloads become bodies or query strings, signed (:func:`build_request`).
* ``send``: :func:`execute` sends the plan over asyncio/aiohttp, each event stamped with its
  real send time, and counts the answers.
* ``cli``: the ``simulate`` command's flags and :func:`run` (load, plan, send, summarise).
"""

from ..protocol import CALL_INITIATED, HANGUP
from .cli import add_arguments, default_url, format_summary, run
from .plan import (
    DEFAULT_CAPACITY,
    DESTINATION_MIXES,
    FRAUD_DESTINATIONS,
    HANGUP_CODES,
    NORMAL_DESTINATIONS,
    SCENARIOS,
    Deck,
    PlannedCall,
    RunWindow,
    active_timeline,
    destination_number,
    hot_trunk,
    near_capacity_slots,
    plan_calls,
    rejection_text,
    run_window,
)
from .send import GRACE, REQUEST_TIMEOUT, RunStats, TrunkStats, execute
from .wire import build_request, encode_body, encode_query, rfc3339, stamp

__all__ = [
    "CALL_INITIATED",
    "DEFAULT_CAPACITY",
    "DESTINATION_MIXES",
    "FRAUD_DESTINATIONS",
    "GRACE",
    "HANGUP",
    "HANGUP_CODES",
    "NORMAL_DESTINATIONS",
    "REQUEST_TIMEOUT",
    "SCENARIOS",
    "Deck",
    "PlannedCall",
    "RunStats",
    "RunWindow",
    "TrunkStats",
    "active_timeline",
    "add_arguments",
    "build_request",
    "default_url",
    "destination_number",
    "encode_body",
    "encode_query",
    "execute",
    "format_summary",
    "hot_trunk",
    "near_capacity_slots",
    "plan_calls",
    "rejection_text",
    "rfc3339",
    "run",
    "run_window",
    "stamp",
]
