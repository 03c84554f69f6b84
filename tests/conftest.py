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
from exporter.server import FastHook, SafeAppRunner

from .conftest_logscan import log_scan  # noqa: F401


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of the test's own, so that every metric value a test asserts is its own doing."""
    return CollectorRegistry()


class FastPathServer(TestServer):
    """A test server with the webhook listener's fast path (``server.SafeAppRunner`` with
    ``Runtime.answer_message``) in front of aiohttp's path, and nothing else changed.
    ``answered`` counts the requests the fast path answered itself. ``listener``: also count
    parser refusals and CONNECT, as the webhook listener does (exporter/cli.py); ``fast=False``:
    that listener without the fast path."""

    def __init__(self, app: web.Application, *, fast: bool = True, listener: bool = False, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.fast = fast
        self.listener = listener
        self.answered = 0

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        if self.listener:
            rt = self.app[RUNTIME]
            kwargs.update(on_protocol_error=rt.refuse_unparsed, on_connect=rt.refuse_connect)
        return SafeAppRunner(self.app, fast=self._counted if self.fast else None, **kwargs)

    def _counted(self, app: web.Application) -> FastHook:
        answer = fast_hook(app)
        assert answer is not None

        def counted(*args: Any) -> tuple[bytes, bool] | None:
            out = answer(*args)
            if out is not None:
                self.answered += 1
            return out

        return counted


Client = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["aiohttp_path", "fast_path"])
def aiohttp_client(request: pytest.FixtureRequest, aiohttp_client: Client) -> Client:
    """pytest-aiohttp's factory, run twice: once on aiohttp's request path, once with the fast
    path of the webhook listener in front of it. Every handler test so holds for both."""
    if request.param == "aiohttp_path":
        return aiohttp_client

    async def go(app: Any, *, server_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if isinstance(app, web.Application) and fast_hook(app) is not None:
            return await aiohttp_client(FastPathServer(app, **(server_kwargs or {})), **kwargs)
        return await aiohttp_client(app, server_kwargs=server_kwargs, **kwargs)

    return go
