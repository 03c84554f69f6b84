"""Shared test helpers: configs, realistic payloads, signing and free ports."""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.config import Config, parse_config
from exporter.signature import sign_hex

SECRET_A = "s3cret-alpha-0123456789"
SECRET_B = "s3cret-bravo-9876543210"
SECRET_OLD = "s3cret-alpha-OLD-rotated"
TRUNK_A_ID = "aaaaaaaa-1111-4111-8111-000000000001"
TRUNK_B_ID = "bbbbbbbb-2222-4222-8222-000000000002"
ENV = {"SECRET_A": SECRET_A, "SECRET_B": SECRET_B, "SECRET_OLD": SECRET_OLD}


def raw_config(**sections: Any) -> dict[str, Any]:
    """A valid raw config with two trunks (alpha: POST with a previous secret, bravo: GET)."""
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


def fresh_registry() -> CollectorRegistry:
    return CollectorRegistry()


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
    call_uuid = call_uuid or str(uuid.uuid4())
    payload: dict[str, Any] = {
        "Event": "CallInitiated",
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
    call_uuid = call_uuid or str(uuid.uuid4())
    now = time.time() if ts is None else ts
    payload: dict[str, Any] = {
        "Event": "Hangup",
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
    if trunk_id is None:
        del payload["TrunkID"]
    for key in [k for k, v in payload.items() if v is None]:
        del payload[key]
    payload.update(extra)
    return payload


def signed(
    payload: dict[str, Any] | bytes, secret: str = SECRET_A, *, request_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Body bytes and headers as the provider sends them."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Vobiz-Vapor/1.0",
        "X-Vobiz-Signature": sign_hex(secret.encode(), body),
    }
    if isinstance(payload, dict):
        headers["X-Vobiz-Event"] = str(payload.get("Event", ""))
        headers["X-Vobiz-Request-ID"] = request_id or str(payload.get("RequestID", ""))
    return body, headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def call_samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every call-metric sample, to assert that a refused request changed none of them."""
    out = {}
    for family in registry.collect():
        if not (family.name.startswith("vobiz_call") or family.name.startswith("vobiz_event")):
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
