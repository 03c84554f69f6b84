"""Web config (exporter-toolkit schema): TLS and basic auth for the metrics listener.

Placeholder until the hardening work lands: a configured file is refused, never ignored.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiohttp import web

from .config import Config


class WebConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_web_config(path: str) -> Any:
    raise WebConfigError([f"{path}: (file): --web.config.file is not supported yet"])


def install_web_config(app: web.Application, runtime: Any, config: Config) -> ssl.SSLContext | None:
    if config.web.config_file is not None:
        load_web_config(config.web.config_file)
    return None


def ssl_context_for_webhook(config: Config) -> ssl.SSLContext | None:
    if config.webhook.tls is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(config.webhook.tls.cert_file, config.webhook.tls.key_file)
    return ctx
