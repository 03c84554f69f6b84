"""Structured logs (logfmt or JSON) and a per-outcome rate limiter for refused requests.

A flood of forged requests must not fill a disk, so refusals log at most ``per_second`` lines
per outcome, then one "suppressed N" line when the next second starts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "vobiz_exporter"
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _RESERVED and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            text = str(value)
            if text == "" or any(c in text for c in ' ="\n\t\\'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup_logging(level: str = "info", fmt: str = "logfmt") -> logging.Logger:
    """Configure the exporter's logger on stderr; aiohttp's access log stays off (one line per
    request would be the costliest thing on the hot path)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    from .server import install_log_guard

    install_log_guard()
    return logging.getLogger(LOGGER_NAME)


class RateLimitedLog:
    """At most ``per_second`` lines per key each second; the rest are counted and summarised."""

    def __init__(self, logger: logging.Logger, per_second: int = 10) -> None:
        self.logger = logger
        self.per_second = per_second
        self._window: dict[str, tuple[int, int, int]] = {}  # key -> (second, logged, suppressed)

    def log(self, key: str, level: int, msg: str, **fields: Any) -> None:
        now = int(time.monotonic())
        second, logged, suppressed = self._window.get(key, (now, 0, 0))
        if second != now:
            if suppressed:
                self.logger.log(
                    level, "suppressed refused-request log lines", extra={"outcome": key, "suppressed": suppressed}
                )
            second, logged, suppressed = now, 0, 0
        if logged < self.per_second:
            self.logger.log(level, msg, extra=fields)
            logged += 1
        else:
            suppressed += 1
        self._window[key] = (second, logged, suppressed)
