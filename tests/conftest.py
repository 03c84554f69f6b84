"""Suite-wide fixtures. The log scan checks, at the end of the session, that no log line written by
the exporter (in-process or by the processes the tests start) holds a secret, a signature or a
full phone number. Plain helpers (configs, payloads, the signer) are in tests/helpers.py."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from .conftest_logscan import log_scan  # noqa: F401


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own, so that every metric value a test asserts is its own doing."""
    return CollectorRegistry()
