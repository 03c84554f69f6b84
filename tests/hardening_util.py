"""Shared helpers of the hardening tests (bad input, fuzz, slow client, url-nonce-v3, TLS)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.config import Config, parse_config
from exporter.signature import sign_base64, sign_hex

SECRET = "s3cret-trunk-a-0123456789abcdef"
SECRET_B = "s3cret-trunk-b-fedcba9876543210"
TRUNK_A_ID = "aaaaaaaa-1111-2222-3333-444444444444"
TRUNK_B_ID = "bbbbbbbb-1111-2222-3333-444444444444"
SIG = "X-Vobiz-Signature"


def make_config(**sections: Any) -> Config:
    """Two trunks ("a" POST with id, "g" GET) plus overrides of whole sections."""
    raw: dict[str, Any] = {
        "trunks": [
            {"name": "a", "id": TRUNK_A_ID, "secret": SECRET},
            {"name": "g", "id": TRUNK_B_ID, "secret": SECRET_B, "method": "GET"},
        ],
    }
    raw.update(sections)
    return parse_config(raw, env={})


def rfc3339(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def call_initiated(**over: Any) -> dict[str, Any]:
    call = str(uuid.uuid4())
    body: dict[str, Any] = {
        "Event": "CallInitiated",
        "CallUUID": call,
        "RequestID": "req-" + call,
        "Timestamp": rfc3339(),
        "From": "+919876543210",
        "To": "+918012345678",
        "Direction": "outbound",
        "Status": "initiated",
        "auth_id": "MA_TEST",
        "TrunkID": TRUNK_A_ID,
        "Domain": "example.vobiz.ai",
        "SourceIP": "203.0.113.7",
        "SIPCallID": "sip-" + call,
        "Allowed": True,
        "Reason": "",
    }
    body.update(over)
    return body


def hangup(**over: Any) -> dict[str, Any]:
    body = call_initiated()
    for k in ("Allowed", "Status", "Reason"):
        body.pop(k)
    body.update(
        {
            "Event": "Hangup",
            "AccountId": "MA_TEST",
            "BridgeUUID": str(uuid.uuid4()),
            "Reason": "NORMAL_CLEARING",
            "StartTime": rfc3339(time.time() - 60),
            "EndTime": rfc3339(),
            "Duration": 60,
            "Billsec": 50,
            "RingTime": 10,
            "Cost": 1.25,
            "Currency": "INR",
            "MOS": 4.3,
            "Jitter": 12,
            "HangupCauseName": "Normal Hangup",
            "HangupCauseCode": 4000,
            "HangupSource": "Caller",
        }
    )
    body.update(over)
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def signed_headers(raw: bytes, secret: str = SECRET, event: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", SIG: sign_hex(secret.encode(), raw)}
    if event is not None:
        headers["X-Vobiz-Event"] = event
    headers.update(extra)
    return headers


def v3_headers(secret: str, url: str, nonce: str) -> dict[str, str]:
    return {
        "X-Vobiz-Signature-V3": sign_base64(secret.encode(), f"{url}.{nonce}".encode()),
        "X-Vobiz-Signature-V3-Nonce": nonce,
    }


def outcome(registry: CollectorRegistry, trunk: str, name: str) -> float | None:
    return registry.get_sample_value("vobiz_webhook_requests_total", {"trunk": trunk, "outcome": name})


def outcomes(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every non-zero outcome sample: lets a test assert that exactly one request was counted."""
    out: dict[tuple[str, str], float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "vobiz_webhook_requests_total" and s.value:
                out[(s.labels["trunk"], s.labels["outcome"])] = s.value
    return out


def call_samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every vobiz_call* / vobiz_calls* sample (attempts, rejections, ended, histograms, active)."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith(("vobiz_call_", "vobiz_calls_")):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def invalid_fields(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == "vobiz_event_invalid_fields_total" and s.value:
                out[(s.labels["trunk"], s.labels["field"])] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
