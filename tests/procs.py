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


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m exporter ARGS`` run to its end from the repository root, its output captured."""
    cmd = [sys.executable, "-m", "exporter", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env, check=False)


def wait_ready(proc: Proc, url: str, what: str, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail early (with the log) if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.popen.returncode}:\n{proc.log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in {timeout}s:\n{proc.log()}")
        time.sleep(0.2)


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


def start_process(
    args: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Proc:
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process
    popen = subprocess.Popen(
        list(args),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(cwd or ROOT),
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
def run_exporter(
    tmp_path: Path,
    raw_config: dict[str, Any],
    env: dict[str, str] | None = None,
    extra_args: Sequence[str] = (),
    name: str = "exporter",
) -> Iterator[Exporter]:
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
        tmp_path / f"{name}.log",
        env=full_env,
    )
    exp = Exporter(proc, metrics_port, webhook_port, path)
    try:
        wait_until(lambda: http_get(exp.webhook_url + "/-/healthy", timeout=1)[0] == 200, 20, what="exporter")
        yield exp
    finally:
        proc.stop()


SIM_GRACE = 25.0  # the simulator's own bound is --duration + 11 s


@contextmanager
def run_simulator(
    exp: Exporter,
    tmp_path: Path,
    scenario: str,
    rate: str,
    duration: str,
    seed: int,
    env: dict[str, str],
    trunk: str | None = None,
) -> Iterator[Proc]:
    """``python -m exporter simulate`` as a child process; stopped by PID if still running."""
    args = [
        sys.executable,
        "-m",
        "exporter",
        "simulate",
        "--config",
        str(exp.config_path),
        "--url",
        exp.webhook_url,
        "--rate",
        rate,
        "--duration",
        duration,
        "--scenario",
        scenario,
        "--seed",
        str(seed),
        "--quiet",
    ]
    if trunk:
        args += ["--trunk", trunk]
    proc = start_process(args, tmp_path / f"simulate-{scenario}-{seed}.log", env={**os.environ, **env})
    try:
        yield proc
    finally:
        proc.stop()


def finish_simulator(proc: Proc, duration: str) -> None:
    """The simulator exits by itself; 0 = every request answered 200 accepted."""
    try:
        rc = proc.popen.wait(float(duration) + SIM_GRACE)
    except subprocess.TimeoutExpired:
        proc.stop()
        raise AssertionError(f"simulate did not exit in time:\n{proc.log()}") from None
    assert rc == 0, f"simulate exited {rc}:\n{proc.log()}"
