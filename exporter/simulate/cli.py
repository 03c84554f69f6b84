"""``vobiz-exporter simulate``: the command's flags, its run (load, plan, send) and its summary."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

from ..cli import CONFIG_ENV, load_config_reporting
from ..config import Config
from .plan import SCENARIOS, plan_calls, run_window
from .send import RunStats, execute

N = TypeVar("N", int, float)


def _positive(convert: Callable[[str], N], kind: str, positive: str) -> Callable[[str], N]:
    """An argparse type: ``convert(text)``, finite and above 0 ("'x' is not {kind}", "... must be {positive}")."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {positive}")
        return value

    return parse


_positive_float = _positive(float, "a number", "a positive number")
_positive_int = _positive(int, "an integer", "a positive integer")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` subcommand's flags."""
    parser.add_argument("--config", default=None, help="exporter config file (default: $VOBIZ_EXPORTER_CONFIG)")
    parser.add_argument(
        "--url",
        default=None,
        help="exporter webhook base URL, e.g. http://127.0.0.1:9613 "
        "(default: the config's webhook.listen_address on 127.0.0.1)",
    )
    parser.add_argument(
        "--rate", type=_positive_float, default=5.0, help="new calls per second, in total over all trunks (default 5)"
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=60.0,
        help="seconds; bounds the whole run, every Hangup included (default 60)",
    )
    parser.add_argument(
        "--calls", type=_positive_int, default=None, help="stop after this many calls (default: no limit)"
    )
    parser.add_argument(
        "--scenario", choices=SCENARIOS, default="normal", help="traffic profile for the hot trunk (default normal)"
    )
    parser.add_argument(
        "--trunk", default=None, help="trunk name the scenario hits (default: the first configured trunk)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed, for reproducible runs")
    parser.add_argument("--concurrency", type=_positive_int, default=50, help="maximum requests in flight (default 50)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines and a one-line summary")


def default_url(config: Config) -> str:
    """The config's webhook listener as seen from this host (wildcard binds -> 127.0.0.1)."""
    addr = config.webhook.listen_address
    host = addr.host if addr.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.webhook.tls is not None else "http"
    return f"{scheme}://{host}:{addr.port}"


def _check_url(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--url {url!r} must be an http(s) URL like http://127.0.0.1:9613"
    if parts.query or parts.fragment:
        return f"--url {url!r} must be a base URL without query or fragment"
    return None


def format_summary(stats: RunStats, scenario: str, url: str, quiet: bool) -> list[str]:
    total = stats.sent + stats.unsent
    bad = total - stats.accepted
    verdict = (
        f"OK: all {stats.accepted} requests answered 200 accepted"
        if stats.ok
        else f"FAILED: {bad} of {total} requests not accepted"
    )
    head = f"simulate: scenario {scenario}, {stats.elapsed:.1f}s, to {url}: {verdict}"
    if quiet:
        return [head]
    lines = [head]
    for name, ts in stats.trunks.items():
        rejected = sum(ts.rejected.values())
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(ts.rejected.items()))
        line = (
            f"  trunk {name}: calls {ts.calls}, admitted {ts.admitted}, rejected {rejected}"
            + (f" ({reasons})" if reasons else "")
            + f", hangups {ts.hangups} (answered {ts.answered}), accepted answers {ts.accepted}"
        )
        if ts.not_accepted:
            line += ", not accepted: " + ", ".join(
                f"{status} {outcome} x{n}" for (status, outcome), n in sorted(ts.not_accepted.items())
            )
        lines.append(line)
    if stats.unsent:
        lines.append(f"  {stats.unsent} planned requests were not sent before the deadline")
    return lines


def run(args: argparse.Namespace) -> int:
    """Load the config, plan, send, summarise. 0 = every request accepted, 1 = not, 2 = usage."""
    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        print(f"simulate: --config is required (or set {CONFIG_ENV})", file=sys.stderr)
        return 2
    config = load_config_reporting(path)
    if config is None:
        return 2
    quiet = bool(getattr(args, "quiet", False))
    if not quiet:
        for warning in config.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    url = args.url or default_url(config)
    url_problem = _check_url(url)
    if url_problem:
        print(f"simulate: {url_problem}", file=sys.stderr)
        return 2
    try:
        plan = plan_calls(config, args.scenario, args.rate, args.duration, args.calls, args.trunk, args.seed)
    except ValueError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    window = run_window(args.rate, args.duration, args.calls)
    stats = asyncio.run(
        execute(config, plan, url, length=window.length, concurrency=args.concurrency, progress=not quiet)
    )
    for line in format_summary(stats, args.scenario, url, quiet):
        print(line)
    return 0 if stats.ok else 1
