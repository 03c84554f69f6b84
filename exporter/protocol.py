"""The provider's wire vocabulary, declared once: header names, event names, and the one request
signer that the exporter's tests, the simulator and the benchmarks use to send what the provider
sends (docs/contract.md, "Answers and order of checks")."""

from __future__ import annotations

from .signature import sign_base64, sign_hex

SIGNATURE_HEADER = "X-Vobiz-Signature"  # the documented default; configurable (signature.header)
EVENT_HEADER = "X-Vobiz-Event"
REQUEST_ID_HEADER = "X-Vobiz-Request-ID"
V3_SIGNATURE_HEADER = "X-Vobiz-Signature-V3"
V3_NONCE_HEADER = "X-Vobiz-Signature-V3-Nonce"
USER_AGENT = "Vobiz-Vapor/1.0"
JSON = "application/json"

# `Event` values on the wire (the exporter's `event` label values are call_initiated, hangup).
CALL_INITIATED = "CallInitiated"
HANGUP = "Hangup"


def signed_headers(
    body: bytes,
    secret: bytes,
    *,
    event: str | None = None,
    request_id: str | None = None,
    header: str = SIGNATURE_HEADER,
    encoding: str = "hex",
    content_type: str = JSON,
) -> dict[str, str]:
    """The headers of a provider delivery of ``body``: HMAC-SHA256 of the raw bytes."""
    signature = sign_base64(secret, body) if encoding == "base64" else sign_hex(secret, body)
    headers = {"Content-Type": content_type, "User-Agent": USER_AGENT, header: signature}
    if event is not None:
        headers[EVENT_HEADER] = event
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return headers
