"""Command line: ``serve`` (the default), ``check-config`` and ``simulate``.

Flags follow the Prometheus exporter conventions (``--web.listen-address`` ...) and win over
the file. ``VOBIZ_EXPORTER_CONFIG`` names the config file when no flag does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import platform
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from . import __version__
from .app import RUNTIME, ReloadError, create_app, fast_hook
from .config import Config, ConfigError, load_config, parse_listen_address, summary, with_overrides
from .logs import setup_logging

CONFIG_ENV = "VOBIZ_EXPORTER_CONFIG"
SHUTDOWN_TIMEOUT = 3.0
COMMANDS = ("serve", "check-config", "simulate")


def _listen(value: str) -> Any:
    try:
        return parse_listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help=f"configuration file (default: ${CONFIG_ENV})")
    p.add_argument(
        "--web.listen-address", dest="web_listen_address", type=_listen, help="metrics listener address (default :9612)"
    )
    p.add_argument("--web.telemetry-path", dest="web_telemetry_path", help="metrics path (default /metrics)")
    p.add_argument(
        "--web.config.file",
        dest="web_config_file",
        help="exporter-toolkit web config (TLS, basic auth) for the metrics listener",
    )
    p.add_argument(
        "--web.enable-lifecycle",
        dest="web_enable_lifecycle",
        action="store_true",
        default=None,
        help="enable POST /-/reload",
    )
    p.add_argument(
        "--webhook.listen-address",
        dest="webhook_listen_address",
        type=_listen,
        help="webhook listener address (default :9613)",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warn", "warning", "error"],
        help="only log messages with this severity or above (default info)",
    )
    p.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="output format of log messages (default logfmt)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vobiz-exporter", description="Prometheus exporter for Vobiz SIP trunk webhooks."
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command")
    _serve_flags(sub.add_parser("serve", help="run the exporter (the default command)"))
    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", nargs="?", help=f"configuration file (or --config FILE, or ${CONFIG_ENV})")
    check.add_argument("--config", dest="config", help=f"configuration file (default: ${CONFIG_ENV})")
    from . import simulate

    simulate.add_arguments(sub.add_parser("simulate", help="send realistic signed traffic to an exporter"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "serve")  # plain `vobiz-exporter --config FILE` means serve
    args = build_parser().parse_args(args_list)
    if args.command == "check-config":
        path = _check_config_path(args.file, args.config)
        return 2 if path is None else check_config(path)
    if args.command == "simulate":
        from . import simulate

        return simulate.run(args)
    return serve(args)


def version_line() -> str:
    """``vobiz-exporter 0.1.0 (Python 3.11.7)``: the Python version matters for bug reports."""
    return f"vobiz-exporter {__version__} (Python {platform.python_version()})"


def _check_config_path(positional: str | None, flag: str | None) -> str | None:
    """The file to check: FILE or ``--config FILE`` (not two different ones), else the env."""
    if positional and flag and positional != flag:
        print(
            f"vobiz-exporter check-config: two files given ({positional} and --config {flag}): pass one",
            file=sys.stderr,
        )
        return None
    path = positional or flag or os.environ.get(CONFIG_ENV)
    if not path:
        print(
            f"vobiz-exporter check-config: no configuration: pass FILE, --config FILE or set {CONFIG_ENV}",
            file=sys.stderr,
        )
        return None
    return path


def load_config_reporting(path: str) -> Config | None:
    """The config at ``path``, or None after printing every problem in it on stderr (``check-config``
    and ``simulate`` both report a bad file this way)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def check_config(path: str) -> int:
    """Exit 0 with a one-line summary on stdout, or 1 with every problem on stderr."""
    config = load_config_reporting(path)
    if config is None:
        return 1
    problems = _check_web_config(config)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(summary(config))
    return 0


def _check_web_config(config: Config) -> list[str]:
    """Problems in the web-config file named by the config (exporter-toolkit schema)."""
    if config.web.config_file is None:
        return []
    from .webconfig import WebConfigError, load_web_config

    try:
        load_web_config(config.web.config_file)
    except WebConfigError as exc:
        return exc.problems
    return []


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "web.listen_address": args.web_listen_address,
        "web.telemetry_path": args.web_telemetry_path,
        "web.config_file": args.web_config_file,
        "web.enable_lifecycle": args.web_enable_lifecycle,
        "webhook.listen_address": args.webhook_listen_address,
    }


def serve(args: argparse.Namespace) -> int:
    logger = setup_logging("warning" if args.log_level == "warn" else args.log_level, args.log_format)
    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        print(f"vobiz-exporter: no configuration: pass --config FILE or set {CONFIG_ENV}", file=sys.stderr)
        return 2
    overrides = overrides_from_args(args)
    try:
        config = with_overrides(load_config(path), overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            logger.error("invalid configuration", extra={"problem": problem})
        return 1
    problems = _check_web_config(config)
    if problems:
        for problem in problems:
            logger.error("invalid web configuration", extra={"problem": problem})
        return 1
    for warning in config.warnings:
        logger.warning(warning)
    _install_uvloop(logger)
    try:
        asyncio.run(_serve(config, path, overrides, logger))
    except OSError as exc:
        logger.error("cannot listen", extra={"why": str(exc)})
        return 1
    return 0


def _install_uvloop(logger: logging.Logger) -> None:
    """uvloop is an optional extra (``[fast]``): used when installed, measured in bench/."""
    if os.environ.get("VOBIZ_EXPORTER_NO_UVLOOP"):
        return
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    logger.debug("using uvloop")


def freeze_start_up_objects() -> int:
    """Collect once, then move every object left (modules, the config, the apps, each trunk's
    metric state) to the collector's permanent generation; returns how many it holds.

    They live as long as the process, yet every full collection walked them all again: at 100
    trunks such a pass held the event loop for 29-36 ms, the longest stall a webhook met without
    scrapes (bench/NOTES.md, "Round 6"). Frozen, a full pass walks only what came later.
    The price: a frozen object in a reference cycle is never freed. So this runs before the
    listeners accept (no request's objects), and the start-up state a reload can drop (a removed
    trunk's metrics, the destination families, the pipeline) holds no cycle: reference counting
    frees it (tests/test_cli.py holds that)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def _serve(config: Config, path: str, overrides: dict[str, Any], logger: logging.Logger) -> None:
    registry = CollectorRegistry()
    metrics_app = create_app(
        config,
        registry,
        role="all" if config.single_listener else "metrics",
        config_path=path,
        overrides=overrides,
    )
    rt = metrics_app[RUNTIME]
    from .webconfig import install_web_config, ssl_context_for_webhook

    web_ssl = install_web_config(metrics_app, rt, config)
    runner_kwargs: dict[str, Any] = {
        "access_log": None,
        "keepalive_timeout": config.webhook.keepalive_timeout,
        "shutdown_timeout": SHUTDOWN_TIMEOUT,
    }
    runners: list[web.AppRunner] = []
    from .server import SafeAppRunner

    # With one port for both, every parser refusal counts as a webhook outcome (it cannot be
    # told apart); with two, only the webhook listener's do.
    metrics_runner = SafeAppRunner(
        metrics_app,
        on_protocol_error=rt.refuse_unparsed if config.single_listener else None,
        on_connect=rt.refuse_connect if config.single_listener else None,
        **runner_kwargs,
    )
    await metrics_runner.setup()
    runners.append(metrics_runner)
    addr = config.web.listen_address
    sites: list[web.TCPSite] = [
        web.TCPSite(metrics_runner, addr.bind_host, addr.port, ssl_context=web_ssl, reuse_address=True)
    ]
    if not config.single_listener:
        webhook_app = create_app(config, registry, role="webhook", runtime=rt)
        # The dedicated webhook port answers complete webhook requests on the connection itself
        # (``Runtime.answer_message``); one shared port keeps aiohttp's path for all, since the
        # web config's headers and basic auth apply there.
        webhook_runner = SafeAppRunner(
            webhook_app,
            on_protocol_error=rt.refuse_unparsed,
            on_connect=rt.refuse_connect,
            fast=fast_hook,
            **runner_kwargs,
        )
        await webhook_runner.setup()
        runners.append(webhook_runner)
        waddr = config.webhook.listen_address
        sites.append(
            web.TCPSite(
                webhook_runner,
                waddr.bind_host,
                waddr.port,
                ssl_context=ssl_context_for_webhook(config),
                reuse_address=True,
            )
        )
    frozen = freeze_start_up_objects()
    try:
        for site in sites:
            await site.start()
    except OSError:
        for runner in runners:
            await runner.cleanup()
        raise
    logger.debug("start-up objects frozen for the garbage collector", extra={"objects": frozen})
    logger.info(
        "vobiz-exporter started",
        extra={
            "version": __version__,
            "metrics": str(config.web.listen_address),
            "webhooks": str(config.webhook.listen_address),
            "trunks": len(config.trunks),
            "signature_mode": config.signature.mode,
        },
    )
    if config.signature.mode != "enforce":
        logger.warning(
            "webhook signatures are not enforced: unsigned or forged events are accepted",
            extra={
                "signature_mode": config.signature.mode,
                "hint": "report counts failures in vobiz_webhook_signature_failures_allowed_total; "
                "set signature.mode: enforce and reload when they stay at 0"
                if config.signature.mode == "report"
                else "signatures are not checked at all",
            },
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            rt.reload()
        except ReloadError as exc:
            logger.error("reload failed; keeping the previous configuration", extra={"why": str(exc)})

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    logger.info("shutting down")
    for runner in reversed(runners):
        with contextlib.suppress(Exception):
            await runner.cleanup()
    logger.info("stopped")
