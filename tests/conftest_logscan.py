"""Session-wide log scan (issue 4): no log line written during the whole test session may hold a
configured secret, a signature or a full phone number.

Two sources are scanned when the session ends:
- every record of the ``vobiz_exporter`` and ``aiohttp`` loggers emitted in-process (captured by a
  handler on those loggers, so ``setup_logging`` replacing the root handlers does not lose it;
  the exporter logger is set to DEBUG so the masked-number debug lines are exercised too);
- every ``*.log`` file under the session's base temp directory, where the tests that start real
  processes (``tests/procs.py``) write those processes' stdout and stderr.

Wire it from ``tests/conftest.py`` with ``from .conftest_logscan import log_scan  # noqa: F401``.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.logs import LOGGER_NAME, JSONFormatter, LogfmtFormatter

# Test modules whose SECRET* / PHONE* constants are the secrets and numbers the suite sends.
_SOURCES = ("tests.helpers", "tests.test_secret_hygiene", "tests.test_webconfig_tls")
# Any full E.164 number ("+" and 10-15 digits); masked numbers ("+9198******10") do not match.
_PHONE_RE = re.compile(r"\+\d{10,15}(?!\d)")
# A hex SHA-256 (a body signature) or a base64 one (url-nonce-v3 / base64 encoding).
_SIGNATURE_RE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])|[A-Za-z0-9+/]{43}=")
_DEMO_SECRET = "demo-signing-secret-change-me"  # config.example.yaml


def sensitive_strings() -> set[str]:
    """The secrets and phone numbers the suite's helpers use (module constants named SECRET*,
    *_SECRET, *_PW or PHONES), and the demo secret of config.example.yaml."""
    found = {_DEMO_SECRET}
    for name in _SOURCES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for key, value in vars(module).items():
            if not key.isupper():
                continue
            if ("SECRET" in key or key.endswith("_PW")) and isinstance(value, str) and len(value) >= 8:
                found.add(value)
            elif key == "PHONES" and isinstance(value, list | tuple):
                found.update(v for v in value if isinstance(v, str))
    return found


def scan(text: str, needles: set[str]) -> list[str]:
    """What in ``text`` must not be there: known secrets/numbers, and anything number- or
    signature-shaped."""
    hits = [n for n in sorted(needles) if n in text]
    hits += [n.lstrip("+") for n in sorted(needles) if n.startswith("+") and n.lstrip("+") in text]
    hits += _PHONE_RE.findall(text)
    hits += _SIGNATURE_RE.findall(text)
    return hits


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._formats = (LogfmtFormatter(), JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        for fmt in self._formats:
            try:
                self.lines.append(fmt.format(record))
            except Exception:  # a record the formatter cannot render is still scanned raw
                self.lines.append(repr(record.__dict__))


@pytest.fixture(scope="session", autouse=True)
def log_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    capture = _Capture()
    loggers = [logging.getLogger(LOGGER_NAME), logging.getLogger("aiohttp")]
    exporter_logger = loggers[0]
    old_level = exporter_logger.level
    exporter_logger.setLevel(logging.DEBUG)
    for lg in loggers:
        lg.addHandler(capture)
    yield
    for lg in loggers:
        lg.removeHandler(capture)
    exporter_logger.setLevel(old_level)

    needles = sensitive_strings()
    problems: list[str] = []
    for i, line in enumerate(capture.lines):
        hits = scan(line, needles)
        if hits:
            problems.append(f"in-process log line {i}: {hits[:3]}")
    base = Path(tmp_path_factory.getbasetemp())
    seen: set[Path] = set()
    for path in sorted(base.rglob("*.log")):
        real = path.resolve()
        if real in seen:
            continue  # pytest's "...current" links repeat real directories
        seen.add(real)
        text = path.read_text(errors="replace")
        hits = scan(text, needles)
        if hits:
            problems.append(f"{path.relative_to(base)}: {hits[:3]}")
    if problems:
        pytest.fail("secrets, signatures or phone numbers in logs:\n" + "\n".join(problems[:20]), pytrace=False)
