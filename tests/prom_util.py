"""Start a real Prometheus (Debian package ``prometheus``) on loopback for tests, and query it.

Shared by the dashboard tests (every panel query parses; every panel is non-empty against a
scraped exporter) and the alerting end-to-end test (rules evaluated, alerts sent). Storage lives
under the test's tmp_path, the port is free on 127.0.0.1, readiness is waited for with a bound,
and the process is stopped by PID.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .helpers import free_port
from .procs import Proc, start_process, wait_ready, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
READY_TIMEOUT = 30.0

Series = dict[str, Any]


class PromQueryError(AssertionError):
    """Prometheus answered something other than ``status: success`` (e.g. a parse error)."""

    def __init__(self, expr: str, status: int, body: dict[str, Any]) -> None:
        self.expr = expr
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status} {body.get('errorType', '')}: {body.get('error', body)}\n  expr: {expr}")


def scrape_job(job: str, target: str, interval: str = "1s", **extra: Any) -> dict[str, Any]:
    """One static scrape job; ``target`` is ``host:port`` of a metrics listener."""
    return {
        "job_name": job,
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "static_configs": [{"targets": [target]}],
        **extra,
    }


def sample_value(series: Series) -> float:
    """The float of an instant-vector element (``value: [ts, "1.5"]``); NaN stays NaN."""
    return float(series["value"][1])


@dataclass
class Prometheus:
    proc: Proc
    port: int
    config_path: Path
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.proc.log()

    def api(
        self, path: str, params: dict[str, str] | None = None, timeout: float = 10.0, method: str = "GET"
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, decoded JSON) of ``/api/v1/<path>``; error answers are returned too."""
        qs = urllib.parse.urlencode(params or {})
        url = f"{self.url}/api/v1/{path}"
        data = None
        if method == "POST":
            data = qs.encode()
        elif qs:
            url += "?" + qs
        req = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as err:
            try:
                return err.code, json.load(err)
            except ValueError:
                return err.code, {"status": "error", "error": f"HTTP {err.code} without JSON"}

    def query_raw(self, expr: str, at: float | None = None) -> tuple[int, dict[str, Any]]:
        """Instant query, POSTed (long panel expressions stay out of the URL)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", params, method="POST")

    def query(self, expr: str, at: float | None = None) -> list[Series]:
        """The result of an instant query: a list of series (a scalar/string becomes one item).

        Raises PromQueryError when Prometheus does not answer ``status: success``.
        """
        status, body = self.query_raw(expr, at)
        if status != 200 or body.get("status") != "success":
            raise PromQueryError(expr, status, body)
        data = body["data"]
        if data["resultType"] in ("vector", "matrix"):
            result: list[Series] = data["result"]
            return result
        return [{"metric": {}, "value": data["result"]}]

    def wait_for(
        self, expr: str, timeout: float, predicate: Callable[[list[Series]], bool] = bool, interval: float = 0.25
    ) -> list[Series]:
        """Poll ``expr`` until ``predicate(result)`` holds (default: at least one series)."""
        last: list[Series] = []
        deadline = time.monotonic() + timeout
        while True:
            last = self.query(expr)
            if predicate(last):
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {expr!r}; last result: {last}")
            time.sleep(interval)

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars``: one item per series, each with its ``exemplars`` list."""
        status, body = self.api("query_exemplars", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        if status != 200 or body.get("status") != "success":
            raise PromQueryError(expr, status, body)
        result: list[dict[str, Any]] = body["data"] or []
        return result

    def targets(self) -> list[dict[str, Any]]:
        status, body = self.api("targets", {"state": "active"})
        assert status == 200, body
        active: list[dict[str, Any]] = body["data"]["activeTargets"]
        return active

    def wait_for_targets_up(self, timeout: float = 15.0) -> None:
        """Every active target has been scraped successfully at least once."""

        def all_up() -> bool:
            targets = self.targets()
            return bool(targets) and all(t["health"] == "up" for t in targets)

        wait_until(all_up, timeout, interval=0.2, what=f"all targets up: {self.targets()}")

    def rules(self) -> list[dict[str, Any]]:
        status, body = self.api("rules")
        assert status == 200, body
        groups: list[dict[str, Any]] = body["data"]["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        status, body = self.api("alerts")
        assert status == 200, body
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts


@contextmanager
def run_prometheus(
    tmp_path: Path,
    config_yaml: dict[str, Any],
    rule_files: Sequence[Path] = (),
    extra_args: Sequence[str] = (),
    name: str = "prometheus",
) -> Iterator[Prometheus]:
    """``prometheus --enable-feature=exemplar-storage`` with ``config_yaml`` on a free port.

    ``rule_files`` are added (as absolute paths) to the config's own ``rule_files``. The data
    directory, config and log are under ``tmp_path/name``. Waits (bounded) for ``/-/ready``.
    """
    home = tmp_path / name
    home.mkdir(parents=True, exist_ok=True)
    config = dict(config_yaml)
    rules = [str(Path(p).resolve()) for p in rule_files]
    if rules:
        config["rule_files"] = [*config.get("rule_files", []), *rules]
    config_path = home / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    data_dir = home / "data"
    proc = start_process(
        [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
            *extra_args,
        ],
        home / "prometheus.log",
    )
    prom = Prometheus(proc, port, config_path, data_dir)
    try:
        wait_ready(proc, f"{prom.url}/-/ready", "prometheus", READY_TIMEOUT)
        yield prom
    finally:
        proc.stop()
