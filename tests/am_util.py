"""A real Alertmanager (Debian package ``prometheus-alertmanager``) and a webhook receiver, for tests.

The alerting end-to-end test needs both ends of a notification: Alertmanager on a free loopback
port (clustering off, storage under the test's tmp_path, stopped by PID) and a small HTTP server
that records every webhook POST, so a test can assert what was routed where and when.

``run_alerting_stack`` is the whole real stack of the alerting end-to-end tests: the receiver,
Alertmanager with the shipped routing, the exporter and Prometheus (scraping, then evaluating test
copies of the rules and alerting), each on free 127.0.0.1 ports and stopped by PID.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from .helpers import free_port
from .procs import ROOT, Exporter, Proc, run_exporter, start_process, wait_ready
from .prom_util import Prometheus, load_rules, run_prometheus, scrape_job

ALERTMANAGER = (
    shutil.which("prometheus-alertmanager") or shutil.which("alertmanager") or "/usr/bin/prometheus-alertmanager"
)
READY_TIMEOUT = 30.0
AM_EXAMPLE = ROOT / "prometheus/alertmanager.example.yml"


# --- Alertmanager ------------------------------------------------------------------------------


@dataclass
class Alertmanager:
    proc: Proc
    port: int
    config_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host_port(self) -> str:
        """What Prometheus' ``alerting.alertmanagers[].static_configs[].targets`` lists."""
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.proc.log()

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts``: the alerts Alertmanager currently holds (from Prometheus)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as resp:
            alerts: list[dict[str, Any]] = json.load(resp)
        return alerts


@contextmanager
def run_alertmanager(tmp_path: Path, config: dict[str, Any], name: str = "alertmanager") -> Iterator[Alertmanager]:
    """``prometheus-alertmanager`` with ``config`` on a free 127.0.0.1 port, clustering disabled.

    Config, storage (notification log, silences) and log live under ``tmp_path/name``. Waits
    (bounded) for ``/-/ready``; an invalid config makes the process exit, which is reported with
    its log. Stopped by PID on exit.
    """
    home = tmp_path / name
    home.mkdir(parents=True, exist_ok=True)
    config_path = home / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    proc = start_process(
        [
            ALERTMANAGER,
            f"--config.file={config_path}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # empty: no gossip port, a single instance
            "--log.level=warn",
        ],
        home / "alertmanager.log",
    )
    am = Alertmanager(proc, port, config_path)
    try:
        wait_ready(proc, f"{am.url}/-/ready", "alertmanager", READY_TIMEOUT)
        yield am
    finally:
        proc.stop()


# --- webhook receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One webhook POST from Alertmanager: the URL path it was sent to and its JSON body."""

    path: str
    received_at: float  # time.monotonic() at receipt
    body: dict[str, Any]

    @property
    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.body.get("alerts", [])
        return alerts


@dataclass(frozen=True)
class ReceivedAlert:
    """One alert of a notification, flattened with where and when it arrived."""

    path: str
    received_at: float
    status: str  # "firing" or "resolved" (the alert's own status)
    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass
class WebhookReceiver:
    """Records Alertmanager webhook notifications (any path); thread-safe."""

    port: int = 0
    notifications: list[Notification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, path: str, raw: bytes) -> None:
        now = time.monotonic()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            with self._lock:
                self.errors.append(f"{path}: body is not JSON ({exc}): {raw[:200]!r}")
            return
        with self._lock:
            self.notifications.append(Notification(path, now, body))

    def snapshot(self) -> list[Notification]:
        """Every notification so far, in arrival order."""
        with self._lock:
            return list(self.notifications)

    def received(self) -> list[ReceivedAlert]:
        """Every alert of every notification so far, flattened."""
        notes = self.snapshot()
        return [
            ReceivedAlert(
                n.path, n.received_at, a.get("status", ""), dict(a.get("labels", {})), dict(a.get("annotations", {}))
            )
            for n in notes
            for a in n.alerts
        ]

    def wait_for(
        self, predicate: Callable[[ReceivedAlert], bool], timeout: float, interval: float = 0.1
    ) -> ReceivedAlert:
        """The first received alert that satisfies ``predicate``, waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for alert in self.received():
                if predicate(alert):
                    return alert
            if time.monotonic() >= deadline:
                seen = [(a.path, a.status, a.labels) for a in self.received()]
                raise TimeoutError(f"no matching alert reached the receiver in {timeout}s; received: {seen}")
            time.sleep(interval)


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            receiver.record(self.path, self.rfile.read(length))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reports what it received."""

    return Handler


@contextmanager
def run_webhook_receiver() -> Iterator[WebhookReceiver]:
    """An HTTP server on a free 127.0.0.1 port, in a thread, recording every POST."""
    receiver = WebhookReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="webhook-receiver", daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- the alerting stack ------------------------------------------------------------------------


def alertmanager_config(receiver: WebhookReceiver) -> dict[str, Any]:
    """The shipped example: routes, grouping and inhibit rules kept; receiver URLs and timers for the test.

    Each receiver posts to ``/<its name>`` on ``receiver``; group_wait and group_interval are 1 s.
    """
    example = yaml.safe_load(AM_EXAMPLE.read_text(encoding="utf-8"))
    config: dict[str, Any] = copy.deepcopy(example)
    for rcv in config["receivers"]:
        for hook in rcv["webhook_configs"]:
            hook["url"] = receiver.url(f"/{rcv['name']}")
    config["route"]["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    assert {r["name"] for r in config["receivers"]} == {"pager", "provider", "chat"}
    assert config["route"]["routes"] == example["route"]["routes"]
    assert config["route"]["group_by"] == example["route"]["group_by"] == ["alertname", "trunk"]
    assert config["inhibit_rules"] == example["inhibit_rules"]
    return config


@contextmanager
def run_alerting_stack(
    tmp_path: Path, raw_config: dict[str, Any], env: dict[str, str], rule_files: Sequence[Path]
) -> Iterator[tuple[WebhookReceiver, Exporter, Prometheus]]:
    """Receiver, Alertmanager, exporter (``raw_config``, ``env``) and Prometheus, scraping every second.

    ``rule_files`` (test copies, ``prom_util.write_test_rules``) are loaded once the exporter has
    been scraped (``prom_util.load_rules``); Prometheus evaluates every second and alerts to the
    Alertmanager.
    """
    with ExitStack() as stack:
        receiver = stack.enter_context(run_webhook_receiver())
        am = stack.enter_context(run_alertmanager(tmp_path, alertmanager_config(receiver)))
        exp = stack.enter_context(run_exporter(tmp_path, raw_config, env=env))
        prom = stack.enter_context(
            run_prometheus(
                tmp_path,
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am.host_port]}]}]},
                    # The job name is the contract VobizExporterDown watches.
                    "scrape_configs": [scrape_job("vobiz-exporter", f"127.0.0.1:{exp.metrics_port}")],
                },
            )
        )
        prom.wait_for_targets_up()
        load_rules(prom, rule_files)
        yield receiver, exp, prom
