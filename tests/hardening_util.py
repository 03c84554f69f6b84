"""A re-export left only for tests/test_webconfig_tls.py, which another change owns right now:
its import moves to tests.helpers (SECRET is SECRET_A, signed_headers is headers_for), then this
file goes."""

from __future__ import annotations

from .helpers import SECRET_A as SECRET
from .helpers import TRUNK_A_ID, call_initiated, encode, free_port
from .helpers import headers_for as signed_headers

__all__ = ["SECRET", "TRUNK_A_ID", "call_initiated", "encode", "free_port", "signed_headers"]
