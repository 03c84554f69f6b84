"""The suite's one set of plain helpers: configs, realistic payloads, signing through
exporter/protocol.py, metric snapshots and free ports. Fixtures live in conftest.py."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import Config, parse_config
from exporter.protocol import CALL_INITIATED, HANGUP, V3_NONCE_HEADER, V3_SIGNATURE_HEADER, signed_headers
from exporter.signature import sign_base64

SECRET_A = "s3cret-alpha-0123456789"
SECRET_B = "s3cret-bravo-9876543210"
SECRET_OLD = "s3cret-alpha-OLD-rotated"
TRUNK_A_ID = "aaaaaaaa-1111-4111-8111-000000000001"
TRUNK_B_ID = "bbbbbbbb-2222-4222-8222-000000000002"
ENV = {"SECRET_A": SECRET_A, "SECRET_B": SECRET_B, "SECRET_OLD": SECRET_OLD}

# The pytest-aiohttp ``aiohttp_client`` fixture.
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
# A metric snapshot: (sample name, sorted labels) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# --- configs -------------------------------------------------------------------------------------


def raw_config(**sections: Any) -> dict[str, Any]:
    """A valid raw config with two trunks (alpha: POST with a previous secret and limits, bravo: GET)."""
    raw: dict[str, Any] = {
        "trunks": [
            {
                "name": "alpha",
                "id": TRUNK_A_ID,
                "secret_env": "SECRET_A",
                "previous_secrets_env": ["SECRET_OLD"],
                "max_concurrent_calls": 10,
                "cps_limit": 2,
                "hourly_budget": {"amount": 500, "currency": "INR"},
            },
            {"name": "bravo", "id": TRUNK_B_ID, "secret_env": "SECRET_B", "method": "GET"},
        ]
    }
    raw.update(sections)
    return raw


def make_config(**sections: Any) -> Config:
    return parse_config(raw_config(**sections), source="test.yaml", env=ENV)


def plain_config(**sections: Any) -> Config:
    """Two trunks without limits ("a": POST, "g": GET), for the hardening tests that send many
    requests and must not meet a CPS cap, a concurrency cap or a previous secret."""
    raw: dict[str, Any] = {
        "trunks": [
            {"name": "a", "id": TRUNK_A_ID, "secret": SECRET_A},
            {"name": "g", "id": TRUNK_B_ID, "secret": SECRET_B, "method": "GET"},
        ],
    }
    raw.update(sections)
    return parse_config(raw, env={})


# --- payloads ------------------------------------------------------------------------------------


def rfc3339(ts: float | None = None) -> str:
    ts = time.time() if ts is None else ts
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def call_initiated(
    *,
    allowed: bool = True,
    reason: str = "",
    call_uuid: str | None = None,
    trunk_id: str | None = TRUNK_A_ID,
    ts: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A CallInitiated as the provider sends it; ``extra`` sets or replaces any field by its wire name."""
    call_uuid = call_uuid or str(uuid.uuid4())
    payload: dict[str, Any] = {
        "Event": CALL_INITIATED,
        "CallUUID": call_uuid,
        "RequestID": "req-" + call_uuid,
        "Timestamp": rfc3339(ts),
        "From": "+919876543210",
        "To": "+918765432109",
        "Direction": "outbound",
        "Status": "initiated",
        "auth_id": "MA_TEST",
        "TrunkID": trunk_id,
        "Domain": "trunk.example.invalid",
        "SourceIP": "203.0.113.10",
        "SIPCallID": "sip-" + call_uuid,
        "Allowed": allowed,
        "Reason": reason,
    }
    if trunk_id is None:
        del payload["TrunkID"]
    payload.update(extra)
    return payload


def hangup(
    *,
    call_uuid: str | None = None,
    trunk_id: str | None = TRUNK_A_ID,
    duration: Any = 75,
    billsec: Any = 60,
    ring_time: Any = 15,
    cost: Any = 0.75,
    currency: Any = "INR",
    mos: Any = 4.4,
    jitter: Any = 12,
    code: Any = 4000,
    name: str = "Normal Hangup",
    source: str = "Caller",
    ts: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Hangup as the provider sends it; a keyword set to None drops that field."""
    call_uuid = call_uuid or str(uuid.uuid4())
    now = time.time() if ts is None else ts
    payload: dict[str, Any] = {
        "Event": HANGUP,
        "CallUUID": call_uuid,
        "RequestID": "req-" + call_uuid,
        "Timestamp": rfc3339(now),
        "From": "+919876543210",
        "To": "+918765432109",
        "Direction": "outbound",
        "TrunkID": trunk_id,
        "AccountId": "acct-1",
        "BridgeUUID": "bridge-" + call_uuid,
        "Reason": "NORMAL_CLEARING",
        "StartTime": rfc3339(now - 75),
        "EndTime": rfc3339(now),
        "Duration": duration,
        "Billsec": billsec,
        "RingTime": ring_time,
        "Cost": cost,
        "Currency": currency,
        "MOS": mos,
        "Jitter": jitter,
        "HangupCauseName": name,
        "HangupCauseCode": code,
        "HangupSource": source,
    }
    for key in [k for k, v in payload.items() if v is None]:
        del payload[key]
    payload.update(extra)
    return payload


# Every field name the two payloads carry, CallInitiated's first, then those only a Hangup has.
WIRE_FIELDS: tuple[str, ...] = tuple(dict.fromkeys([*call_initiated(), *hangup()]))


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


# --- signing (exporter/protocol.py is the one signer) ---------------------------------------------


def signed(
    payload: dict[str, Any] | bytes, secret: str = SECRET_A, *, request_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body bytes and headers as the provider sends them: a payload also names its event and
    request id in headers, raw bytes get only the signature."""
    if isinstance(payload, bytes):
        return payload, signed_headers(payload, secret.encode())
    body = encode(payload)
    event = str(payload.get("Event", ""))
    return body, signed_headers(
        body, secret.encode(), event=event, request_id=request_id or str(payload.get("RequestID", ""))
    )


def headers_for(raw: bytes, secret: str = SECRET_A, **extra: str) -> dict[str, str]:
    """The signed headers of ``raw``, then ``extra`` (which may add or replace any header)."""
    return {**signed_headers(raw, secret.encode()), **extra}


def v3_headers(secret: str, url: str, nonce: str) -> dict[str, str]:
    """url-nonce-v3: base64 HMAC of "<url>.<nonce>" (docs/contract.md)."""
    return {V3_SIGNATURE_HEADER: sign_base64(secret.encode(), f"{url}.{nonce}".encode()), V3_NONCE_HEADER: nonce}


# --- metric snapshots ----------------------------------------------------------------------------


def val(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The value of one sample, None when the series does not exist."""
    return registry.get_sample_value(name, labels)


def exposed(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in an exposition text (a scrape), None when it is not there."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def outcome(registry: CollectorRegistry, trunk: str, name: str) -> float | None:
    return val(registry, "vobiz_webhook_requests_total", trunk=trunk, outcome=name)


def ended(
    registry: CollectorRegistry,
    trunk: str = "alpha",
    cause: str = "normal_hangup",
    category: str = "normal",
    source: str = "caller",
) -> float | None:
    """vobiz_calls_ended_total of one cause, category and source (by default a caller's normal hangup)."""
    labels = {"trunk": trunk, "hangup_cause": cause, "hangup_category": category, "hangup_source": source}
    return val(registry, "vobiz_calls_ended_total", **labels)


def _nonzero(registry: CollectorRegistry, name: str, *labels: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and s.value:
                out[(s.labels[labels[0]], s.labels[labels[1]])] = s.value
    return out


def outcomes(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every non-zero (trunk, outcome) count: lets a test assert that exactly one request was counted."""
    return _nonzero(registry, "vobiz_webhook_requests_total", "trunk", "outcome")


def invalid_fields(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every non-zero (trunk, field) count of vobiz_event_invalid_fields_total."""
    return _nonzero(registry, "vobiz_event_invalid_fields_total", "trunk", "field")


def call_samples(registry: CollectorRegistry, prefixes: tuple[str, ...] = ("vobiz_call", "vobiz_event")) -> Samples:
    """Every sample of the families named ``prefixes*`` (by default the call metrics and the invalid
    fields), to assert that a refused request changed none of them."""
    out: Samples = {}
    for family in registry.collect():
        if not family.name.startswith(prefixes):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
