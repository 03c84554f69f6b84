"""The provider's wire vocabulary, declared once: header names, event names, and the request
signers that the exporter's tests, the simulator and the benchmarks use to send what the provider
sends (docs/contract.md, "Answers and order of checks")."""

from __future__ import annotations

from .signature import sign_base64, sign_hex, url_nonce_message

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


def delivery_headers(
    *, event: str | None = None, request_id: str | None = None, content_type: str = JSON
) -> dict[str, str]:
    """The unsigned headers of a provider delivery; the signers below add their signature last."""
    headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
    if event is not None:
        headers[EVENT_HEADER] = event
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return headers


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
    headers = delivery_headers(event=event, request_id=request_id, content_type=content_type)
    headers[header] = sign_base64(secret, body) if encoding == "base64" else sign_hex(secret, body)
    return headers


def url_nonce_headers(
    secret: bytes, public_url: str, path: str, nonce: str, *, event: str | None = None, request_id: str | None = None
) -> dict[str, str]:
    """The headers of a url-nonce-v3 delivery: base64 HMAC-SHA256 of ``public_url + path + "." + nonce``
    (the body is not signed), and the nonce."""
    headers = delivery_headers(event=event, request_id=request_id)
    headers[V3_SIGNATURE_HEADER] = sign_base64(secret, url_nonce_message(public_url, path, nonce))
    headers[V3_NONCE_HEADER] = nonce
    return headers
