"""The prometheus-client in use is inside the range pyproject.toml declares, and is the one the
compatibility matrix asked for (``make compat`` runs the byte-identity tests at both ends)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import prometheus_client

ROOT = Path(__file__).resolve().parent.parent


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _declared_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("prometheus-client")]
    m = re.fullmatch(r"prometheus-client>=([\d.]+),<([\d.]+)", spec)
    assert m is not None, f"prometheus-client must be pinned to a tested range, not {spec!r}"
    return _version(m.group(1)), _version(m.group(2))


def test_installed_version_is_in_the_declared_range() -> None:
    low, high = _declared_range()
    installed = _version(importlib.metadata.version("prometheus-client"))
    assert low <= installed < high


def test_matrix_runs_the_version_it_asked_for() -> None:
    expected = os.environ.get("VOBIZ_EXPECT_PROMETHEUS_CLIENT")
    if expected is None:  # the main run: whatever the venv resolved inside the range
        return
    assert importlib.metadata.version("prometheus-client") == expected
    # The module imported is that copy, not the venv's.
    assert f"pc-{expected}" in Path(prometheus_client.__file__).parts[-3]


def test_matrix_ends_are_the_declared_range() -> None:
    """The Makefile's matrix tests exactly the declared lowest version and one below the cap."""
    makefile = (ROOT / "Makefile").read_text()
    lowest = re.search(r"^PC_LOWEST\s*:=\s*([\d.]+)$", makefile, re.M)
    newest = re.search(r"^PC_NEWEST\s*:=\s*([\d.]+)$", makefile, re.M)
    assert lowest is not None and newest is not None
    low, high = _declared_range()
    assert _version(lowest.group(1)) == low
    assert _version(newest.group(1))[:2] == (high[0], high[1] - 1)
