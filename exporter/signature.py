"""Signature verification: HMAC-SHA256 compared in constant time, with rotation.

Pure functions over bytes so they are trivial to test and cheap on the hot path.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any


class Verdict(enum.Enum):
    OK = "ok"
    OK_PREVIOUS = "ok_previous"  # verified with a rotated (previous) secret
    MISSING = "missing_signature"
    INVALID = "invalid_signature"


_SHA256_LEN = 32


def decode_signature(value: str, encoding: str) -> bytes | None:
    """Decode a header value into the 32 raw digest bytes, or None if it cannot be one.

    Hex may be in any case and may carry a ``sha256=`` prefix (as GitHub-style senders do).
    """
    value = value.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    try:
        if encoding == "hex":
            if len(value) != 2 * _SHA256_LEN:
                return None
            raw = bytes.fromhex(value)
        else:
            raw = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return None
    return raw if len(raw) == _SHA256_LEN else None


# Keyed HMAC states by secret: copying one skips hashing the padded key (two SHA-256 blocks)
# and the object set-up per request (~2.2 -> ~1.4 us for a 600-byte body). The state is the
# OpenSSL HMAC object inside hmac.HMAC when there is one (``_hmac``; copy/update/digest are
# the same calls hmac.HMAC forwards to), else the hmac.HMAC itself. Bounded: cleared when
# full (secrets change only on reload).
_KEYED: dict[bytes, Any] = {}
_KEYED_MAX = 256


def _keyed_state(secret: bytes) -> Any:
    outer = hmac.new(secret, digestmod=hashlib.sha256)
    inner = getattr(outer, "_hmac", None)
    if inner is not None and all(hasattr(inner, a) for a in ("copy", "update", "digest")):
        return inner
    return outer


def sign(secret: bytes, message: bytes) -> bytes:
    if type(secret) is not bytes:
        return hmac.new(secret, message, hashlib.sha256).digest()
    state = _KEYED.get(secret)
    if state is None:
        if len(_KEYED) >= _KEYED_MAX:
            _KEYED.clear()
        state = _KEYED[secret] = _keyed_state(secret)
    h = state.copy()
    h.update(message)
    digest: bytes = h.digest()
    return digest


def sign_hex(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_base64(secret: bytes, message: bytes) -> str:
    return base64.b64encode(sign(secret, message)).decode()


def verify(
    secrets: Sequence[bytes],
    message: bytes,
    header_values: Sequence[str],
    encoding: str,
) -> Verdict:
    """Check ``message`` against every secret (current first). A repeated header is invalid.

    Every secret is tried even after a match is impossible to tell apart by timing: each
    comparison is ``hmac.compare_digest``, and the loop length depends only on the config.
    """
    if not header_values:
        return Verdict.MISSING
    if len(header_values) != 1:
        return Verdict.INVALID
    given = decode_signature(header_values[0], encoding)
    if given is None:
        return Verdict.INVALID
    verdict = Verdict.INVALID
    for i, secret in enumerate(secrets):
        if hmac.compare_digest(sign(secret, message), given) and verdict is Verdict.INVALID:
            verdict = Verdict.OK if i == 0 else Verdict.OK_PREVIOUS
    return verdict


def url_nonce_message(public_url: str, path: str, nonce: str) -> bytes:
    """The url-nonce-v3 signed material: ``"<public URL without query>.<nonce>"``."""
    return f"{public_url.rstrip('/')}{path}.{nonce}".encode()
