"""Start and stop real processes (the exporter, Prometheus, Alertmanager) on loopback for tests.

Every process gets free 127.0.0.1 ports, a bounded readiness wait, and is stopped by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def http_get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def start_process(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
                  cwd: Path | None = None) -> Proc:
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    popen = subprocess.Popen(
        list(args), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(cwd or ROOT),
        start_new_session=True,
    )
    return Proc(popen, log_path)


@dataclass
class Exporter:
    proc: Proc
    metrics_port: int
    webhook_port: int
    config_path: Path

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}"

    def scrape(self, openmetrics: bool = False) -> str:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        status, body = http_get(self.metrics_url + "/metrics", headers=headers)
        assert status == 200, body
        return body.decode()


@contextmanager
def run_exporter(tmp_path: Path, raw_config: dict[str, Any], env: dict[str, str] | None = None,
                 extra_args: Sequence[str] = (), name: str = "exporter") -> Iterator[Exporter]:
    """``python -m exporter serve`` with the given config on free loopback ports."""
    metrics_port, webhook_port = free_port(), free_port()
    cfg = dict(raw_config)
    cfg["web"] = {**cfg.get("web", {}), "listen_address": f"127.0.0.1:{metrics_port}"}
    cfg["webhook"] = {**cfg.get("webhook", {}), "listen_address": f"127.0.0.1:{webhook_port}"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    full_env = {**os.environ, **(env or {})}
    proc = start_process(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path), *extra_args],
        tmp_path / f"{name}.log", env=full_env,
    )
    exp = Exporter(proc, metrics_port, webhook_port, path)
    try:
        wait_until(lambda: http_get(exp.webhook_url + "/-/healthy", timeout=1)[0] == 200, 20, what="exporter")
        yield exp
    finally:
        proc.stop()
