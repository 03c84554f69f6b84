"""Suite-wide fixtures. The log scan checks, at the end of the session, that no log line written by
the exporter (in-process or by the processes the tests start) holds a secret, a signature or a
full phone number. Plain helpers (configs, payloads, the signer) are in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_runner import BaseRunner
from prometheus_client import CollectorRegistry

from exporter.app import RUNTIME, fast_hook
from exporter.server import SafeAppRunner

from .conftest_logscan import log_scan  # noqa: F401


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own, so that every metric value a test asserts is its own doing."""
    return CollectorRegistry()


class FastPathServer(TestServer):
    """A test server run the way the dedicated webhook listener is (``server.SafeAppRunner``:
    the fast path ``Runtime.answer_message``, parser refusals and CONNECT answered and counted).
    ``answered`` counts the requests the fast path answered itself."""

    answered = 0

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        answer = fast_hook(self.app)
        assert answer is not None

        def counted(*args: Any) -> tuple[bytes, bool] | None:
            out = answer(*args)
            if out is not None:
                self.answered += 1
            return out

        rt = self.app[RUNTIME]
        # As the webhook listener is run (exporter/cli.py): parser refusals and CONNECT counted too.
        return SafeAppRunner(
            self.app, on_protocol_error=rt.refuse_unparsed, on_connect=rt.refuse_connect, fast=counted, **kwargs
        )


Client = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["aiohttp_path", "fast_path"])
def aiohttp_client(request: pytest.FixtureRequest, aiohttp_client: Client) -> Client:
    """pytest-aiohttp's factory, run twice: once on aiohttp's request path, once with the fast
    path of the webhook listener in front of it. Every handler test so holds for both."""
    if request.param == "aiohttp_path":
        return aiohttp_client

    async def go(app: Any, **kwargs: Any) -> Any:
        if isinstance(app, web.Application) and fast_hook(app) is not None:
            return await aiohttp_client(FastPathServer(app), **kwargs)
        return await aiohttp_client(app, **kwargs)

    return go
