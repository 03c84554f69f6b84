"""Start a real Prometheus (Debian package ``prometheus``) on loopback for tests, and query it.

Shared by the dashboard tests (every panel query parses; every panel is non-empty against a
scraped exporter) and the alerting end-to-end tests (rules evaluated, alerts sent). Storage lives
under the test's tmp_path, the port is free on 127.0.0.1, readiness is waited for with a bound,
and the process is stopped by PID.

The alerting tests evaluate test copies of the shipped rule files (``write_test_rules``): every
expression byte for byte, only ``for:`` shortened by ``FOR_SCALE`` (one minute of production is
one second here), so the relative order of the tiers holds; ``load_rules`` adds them once the
exporter has been scraped.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import signal
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
from prometheus_client.parser import text_string_to_metric_families

from .helpers import free_port
from .procs import Exporter, Proc, start_process, wait_ready, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
READY_TIMEOUT = 30.0
SCRAPE_WAIT = 15.0
FOR_SCALE = 60  # production for: / test for: in the rule copies (5m -> 5s, 15m -> 15s)

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

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


# --- test copies of the shipped rules ----------------------------------------------------------


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``) in seconds."""
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Prometheus duration: {text!r}"
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def shortened(text: str) -> str:
    """The test copy's ``for:`` of a shipped ``for:``: ``FOR_SCALE`` times shorter, at least 1 s."""
    return f"{max(1, round(duration_seconds(text) / FOR_SCALE))}s"


def rules_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rule of a rule file's document, in file order."""
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_file_rules(path: Path) -> list[dict[str, Any]]:
    return rules_of(yaml.safe_load(path.read_text(encoding="utf-8")))


def longest_for(rule_files: Sequence[Path]) -> float:
    """The longest shortened ``for:`` of the files, in seconds: what a quiet run must outwait."""
    return (
        max(duration_seconds(r["for"]) for path in rule_files for r in rule_file_rules(path) if "for" in r) / FOR_SCALE
    )


def write_test_rules(dest: Path, rule_files: Sequence[Path]) -> list[Path]:
    """Copies of the shipped rule files with every ``for:`` shortened and nothing else changed."""
    out = []
    for original in rule_files:
        doc = yaml.safe_load(original.read_text(encoding="utf-8"))
        test_doc = copy.deepcopy(doc)
        for rule in rules_of(test_doc):
            if "for" in rule:
                rule["for"] = shortened(rule["for"])
        path = dest / original.name
        path.write_text(yaml.safe_dump(test_doc, sort_keys=False, width=10_000), encoding="utf-8")
        # What Prometheus will read: the same rules, the same expressions byte for byte.
        written = rule_file_rules(path)
        shipped = rules_of(doc)
        assert [r["expr"] for r in written] == [r["expr"] for r in shipped], original.name
        assert [{k: v for k, v in r.items() if k != "for"} for r in written] == [
            {k: v for k, v in r.items() if k != "for"} for r in shipped
        ], original.name
        assert [r.get("for") for r in written] == [shortened(r["for"]) if "for" in r else None for r in shipped], (
            original.name
        )
        out.append(path)
    return out


def load_rules(prom: Prometheus, rule_files: Sequence[Path]) -> None:
    """Add the rule files once the exporter has been scraped, by a config reload (SIGHUP).

    Prometheus applies discovered scrape targets in 5 s steps, so the first scrape can come ~5 s
    after the first rule evaluation. With a shortened 5 s ``for:``, VobizExporterDown (absent)
    would fire on that start-up gap, which its 5m ``for:`` covers in production. Loading the
    rules after the first scrape keeps a test about the traffic, not about Prometheus' start.
    Returns once Prometheus runs as many rules as the files hold.
    """
    config = yaml.safe_load(prom.config_path.read_text(encoding="utf-8"))
    config["rule_files"] = [str(p.resolve()) for p in rule_files]
    prom.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    prom.proc.popen.send_signal(signal.SIGHUP)
    want = sum(len(rule_file_rules(p)) for p in rule_files)
    wait_until(
        lambda: sum(len(g["rules"]) for g in prom.rules()) == want,
        15,
        interval=0.2,
        what=f"{want} rules loaded after reload:\n{prom.log()}",
    )


def rules_health(prom: Prometheus) -> list[str]:
    """Rules whose last evaluation failed (e.g. a many-to-many match), as 'name: error'."""
    return [f"{r['name']}: {r.get('lastError')}" for g in prom.rules() for r in g["rules"] if r.get("health") != "ok"]


def wait_scraped(prom: Prometheus, exp: Exporter) -> None:
    """Prometheus holds the exporter's current count of webhook requests."""
    want = sum(
        s.value
        for f in text_string_to_metric_families(exp.scrape())
        for s in f.samples
        if s.name == "vobiz_webhook_requests_total"
    )
    prom.wait_for("sum(vobiz_webhook_requests_total)", SCRAPE_WAIT, lambda r: bool(r) and sample_value(r[0]) == want)
