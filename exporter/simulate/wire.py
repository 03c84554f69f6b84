"""The simulator's wire format: payloads become the bytes (or query string) the provider sends,
signed as the trunk's config says, with the header and event names of ``exporter/protocol.py``."""

from __future__ import annotations

import json
import secrets as _secrets
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..config import Config, Trunk
from ..protocol import HANGUP, delivery_headers, signed_headers, url_nonce_headers


def rfc3339(ts: float) -> str:
    """UTC with milliseconds and ``Z``, as the provider formats times."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def encode_body(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def encode_query(payload: Mapping[str, Any]) -> str:
    return urllib.parse.urlencode([(k, _query_value(v)) for k, v in payload.items()])


def build_request(
    config: Config,
    trunk: Trunk,
    payload: Mapping[str, Any],
    event: str,
    *,
    nonce: str | None = None,
) -> tuple[str, str, dict[str, str], bytes | str]:
    """(method, path, headers, body bytes for POST or raw query string for GET), signed.

    The signature covers exactly what is sent: the JSON bytes, or the encoded query string
    for ``method: GET`` trunks; url-nonce-v3 signs ``public_url + path + "." + nonce``.
    A trunk without a secret (possible only with ``mode: off``) sends no signature.
    """
    path = f"/webhook/{trunk.name}"
    body: bytes | str = encode_query(payload) if trunk.method == "GET" else encode_body(payload)
    names = {"event": event, "request_id": str(payload.get("RequestID", ""))}
    sig = config.signature
    if not trunk.secret:
        headers = delivery_headers(**names)
    elif sig.scheme == "url-nonce-v3":
        nonce = nonce or _secrets.token_urlsafe(18)
        headers = url_nonce_headers(trunk.secret, sig.public_url or "", path, nonce, **names)
    else:
        signed = body.encode() if isinstance(body, str) else body
        headers = signed_headers(signed, trunk.secret, header=sig.header, encoding=sig.encoding, **names)
    return trunk.method, path, headers, body


def stamp(payload: Mapping[str, Any], event: str, now: float) -> dict[str, Any]:
    """A copy whose times say it was sent at ``now`` (Hangup: Timestamp = EndTime = now)."""
    out = dict(payload)
    out["Timestamp"] = rfc3339(now)
    if event == HANGUP:
        out["EndTime"] = out["Timestamp"]
        out["StartTime"] = rfc3339(now - float(out.get("Duration", 0)))
    return out
