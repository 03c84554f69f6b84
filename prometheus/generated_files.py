"""The one ``main`` of the generator scripts: write what they render, or with ``--check`` exit 1 on drift.

prometheus/generate_rules.py, prometheus/destinations_rules.py, grafana/generate_dashboards.py and
deploy/kubernetes/generate.py each render files from their sources and are run the same way
(``python path/to/script.py [--check]``); the tests and ``make k8s`` rely on what "stale" means
and on how it is said, so it is written once, here.

A plain module, not a package: generate_rules.py and destinations_rules.py import it as a
sibling; the other two put this directory on ``sys.path`` first (mypy finds it by ``mypy_path``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def _shown(path: Path, root: Path) -> str:
    """``path`` as the messages name it: relative to ``root`` when under it, else in full."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def write_or_check(outputs: Mapping[Path, str], root: Path, hint: str, check: bool) -> int:
    """Write every output that differs from its file (0), or with ``check`` name the stale ones (1).

    Unchanged files are not rewritten. ``hint`` is the command that regenerates them, printed
    as ``stale (run <hint>): <files>`` on stderr.
    """
    stale = []
    for path, text in outputs.items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if check:
            stale.append(_shown(path, root))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {_shown(path, root)}")
    if stale:
        print(f"stale (run {hint}): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def main(
    doc: str | None,
    outputs: Callable[[], Mapping[str, str] | Mapping[Path, str]],
    root: Path,
    hint: str,
    argv: list[str] | None = None,
) -> int:
    """Parse ``[--check]`` from ``argv`` (default: the command line), render, then write or check.

    ``doc`` (the script's docstring) is the ``--help`` text; ``outputs`` maps each file, a name
    under ``root`` or a full path, to its text.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    return write_or_check({root / name: text for name, text in outputs().items()}, root, hint, args.check)
