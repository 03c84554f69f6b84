"""The whole benchmark: throughput against a bare aiohttp peer, scrape cost, memory; writes
bench/RESULTS.md (and bench/results.json). Run through ``bash bench/run.sh`` (``make bench``).

Layout: every server runs pinned to CPU 0, wrk (one thread) and this script to CPU 1.
Every subprocess and every wrk run is bounded in time; processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from gen import generate, secret_env, write_config  # noqa: E402

PY = sys.executable
SERVER_CPU = "0"
CLIENT_CPU = "1"
# What Prometheus 2.x sends: OpenMetrics first (the costlier format, with exemplars).
PROM_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, accept: str = "", timeout: float = 10.0) -> tuple[int, bytes, float]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read()
        return resp.status, body, (time.perf_counter() - t) * 1000


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout}s")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc: immune to other tenants' load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(cmd: list[str], env: dict[str, str], ready_url: str, logfile: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server pinned to the server CPU; stop it by PID (TERM, then KILL)."""
    with logfile.open("ab") as out:
        proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, *cmd], env=env, stdout=out, stderr=out, cwd=ROOT)
    try:
        wait_http(ready_url, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def wrk(
    url: str,
    requests: Path,
    duration: float,
    connections: int,
    *,
    wrap: bool = False,
    offset: int = 0,
    limit: int = 0,
    delay_ms: float | None = None,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    env = dict(
        os.environ, BENCH_REQUESTS=str(requests), BENCH_JSON=str(out), BENCH_OFFSET=str(offset), BENCH_LIMIT=str(limit)
    )
    if wrap:
        env["BENCH_WRAP"] = "1"
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = f"{delay_ms:.3f}"
    cmd = [
        "timeout",
        str(int(duration) + 60),
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "replay.lua"),
        url,
    ]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=duration + 90)
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def outcomes(metrics_url: str) -> dict[str, float]:
    """Sum of vobiz_webhook_requests_total by outcome, from the exporter's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    _, body, _ = http_get(metrics_url)
    totals: dict[str, float] = {}
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "vobiz_webhook_requests":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    totals[s.labels["outcome"]] = totals.get(s.labels["outcome"], 0.0) + s.value
        if fam.name == "vobiz_dedupe_entries":
            totals["_dedupe_entries"] = fam.samples[0].value
    return totals


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.a = args
        self.work = work
        self.results: dict[str, Any] = {"runs": []}
        self.logfile = work / "servers.log"

    # --- environment -------------------------------------------------------------------------

    def environment(self) -> dict[str, Any]:
        cpu = "unknown"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        versions: dict[str, str] = {}
        from importlib import metadata

        for pkg in ("aiohttp", "prometheus-client", "uvloop", "orjson", "redis", "multidict", "yarl"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = "not installed"
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        redis_v = ""
        if shutil.which("redis-server"):
            redis_v = subprocess.run(
                ["redis-server", "--version"], capture_output=True, text=True, check=False
            ).stdout.strip()
        return {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.node()} {platform.system()} {platform.release()} {platform.machine()}",
            "cpu_model": cpu,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "versions": versions,
            "wrk": (wrk_v.stdout or wrk_v.stderr).splitlines()[0] if (wrk_v.stdout or wrk_v.stderr) else "?",
            "redis_server": redis_v,
            "loadavg_at_start": os.getloadavg(),
        }

    # --- servers ---------------------------------------------------------------------------------

    def exporter_cmd(self, config: Path, *, lag_file: Path | None = None, stock: bool = False) -> list[str]:
        cmd = [PY, str(BENCH / "server.py"), "--config", str(config)]
        if lag_file is not None:
            cmd += ["--lag-file", str(lag_file)]
        if stock:
            cmd.append("--stock-metrics")
        return cmd

    def env(self, k: int, *, uvloop: bool = True) -> dict[str, str]:
        env = dict(os.environ, **secret_env(k), PYTHONPATH=str(ROOT))
        env.pop("VOBIZ_EXPORTER_NO_UVLOOP", None)
        if not uvloop:
            env["VOBIZ_EXPORTER_NO_UVLOOP"] = "1"
        return env

    def run_bare(self, mode: str, requests: Path, *, uvloop: bool) -> dict[str, Any]:
        port = free_port()
        with server(
            [PY, str(BENCH / "bare.py"), "--port", str(port), "--mode", mode],
            self.env(0, uvloop=uvloop),
            f"http://127.0.0.1:{port}/-/healthy",
            self.logfile,
        ) as proc:
            cpu = cpu_seconds(proc.pid)
            r = wrk(f"http://127.0.0.1:{port}/", requests, self.a.duration, self.a.connections, wrap=True)
            r["cpu_us_per_request"] = (cpu_seconds(proc.pid) - cpu) / r["requests"] * 1e6
            r["peak_rss_mb"] = status_kib(proc.pid, "VmHWM") / 1024
        r.update(kind=f"bare-{mode}", uvloop=uvloop)
        return r

    def run_exporter(
        self,
        k: int,
        requests: Path,
        *,
        uvloop: bool,
        backend: str = "memory",
        redis_url: str | None = None,
        paced_share: float = 0.0,
    ) -> dict[str, Any]:
        wport, mport = free_port(), free_port()
        cfg = self.work / f"exporter-{k}-{backend}.yaml"
        write_config(cfg, k, wport, mport, backend=backend, redis_url=redis_url)
        with server(
            self.exporter_cmd(cfg), self.env(k, uvloop=uvloop), f"http://127.0.0.1:{wport}/-/healthy", self.logfile
        ) as proc:
            cpu = cpu_seconds(proc.pid)
            r = wrk(f"http://127.0.0.1:{wport}/", requests, self.a.duration, self.a.connections)
            r["cpu_us_per_request"] = (cpu_seconds(proc.pid) - cpu) / r["requests"] * 1e6
            r["peak_rss_mb"] = status_kib(proc.pid, "VmHWM") / 1024
            r["outcomes"] = outcomes(f"http://127.0.0.1:{mport}/metrics")
            if paced_share:
                r["paced"] = self.paced(wport, mport, requests, r, paced_share)
        r.update(kind=f"exporter-{backend}", uvloop=uvloop, trunks=k)
        self.check_outcomes(r)
        return r

    def paced(self, wport: int, mport: int, requests: Path, first: dict[str, Any], share: float) -> dict[str, Any]:
        """Webhook latency at ``share`` of the throughput just measured (16 connections, each
        pausing between requests), on the same server with the next, still unseen requests.
        A 3 s calibration run measures the time per request besides the pause, so the pause
        of the measured run gives the target rate (a fixed guess of it undershoots)."""
        conns = 16
        target = first["rps"] * share
        url = f"http://127.0.0.1:{wport}/"
        offset = first["sent"] + self.a.connections
        guess = max(0.0, conns * 1000.0 / target - 0.5)
        cal = wrk(url, requests, 3, conns, offset=offset, delay_ms=guess)
        offset += cal["sent"] + conns
        busy_ms = max(0.0, conns * 1000.0 / cal["rps"] - guess)  # per request, besides the pause
        delay = max(0.0, conns * 1000.0 / target - busy_ms)
        before = outcomes(f"http://127.0.0.1:{mport}/metrics")
        p = wrk(url, requests, self.a.duration, conns, offset=offset, delay_ms=delay)
        after = outcomes(f"http://127.0.0.1:{mport}/metrics")
        non_accepted = {
            k: v - before.get(k, 0.0)
            for k, v in after.items()
            if not k.startswith("_") and k != "accepted" and v != before.get(k, 0.0)
        }
        return {
            "target_rps": target,
            "rps": p["rps"],
            "delay_ms": delay,
            "p50_ms": p["latency_us"]["p50"] / 1000,
            "p99_ms": p["latency_us"]["p99"] / 1000,
            "max_ms": p["latency_us"]["max"] / 1000,
            "non2xx": p["errors"]["status"],
            "non_accepted": non_accepted,
            "exhausted": p["exhausted"],
        }

    @staticmethod
    def check_outcomes(r: dict[str, Any]) -> None:
        """Every request wrk completed was accepted once: no duplicate, no refusal."""
        o = r["outcomes"]
        accepted = o.get("accepted", 0.0)
        others = {k: v for k, v in o.items() if not k.startswith("_") and k != "accepted" and v}
        r["check"] = {
            "accepted": accepted,
            "wrk_completed": r["requests"],
            "other_outcomes": others,
            "ok": (
                not others
                and r["requests"] <= accepted <= r["sent"]
                and r["errors"]["status"] == 0
                and not r["exhausted"]
            ),
        }

    # --- phases ----------------------------------------------------------------------------------

    def throughput(self, req10: Path) -> None:
        for uvloop in (True, False):
            for rnd in range(self.a.rounds):
                round_runs = {}
                # The exporter between its peers, the peers' order alternating per round: a drift
                # of the shared machine within a round then biases neither ratio.
                kinds = ["plain", "exporter"] + (["verify"] if uvloop else [])
                if rnd % 2:
                    kinds.reverse()
                for kind in kinds:
                    log(f"throughput uvloop={uvloop} round {rnd + 1}: {kind}")
                    if kind == "exporter":
                        r = self.run_exporter(10, req10, uvloop=uvloop)
                    else:
                        r = self.run_bare(kind, req10, uvloop=uvloop)
                    r["round"] = rnd
                    round_runs[kind] = r
                    self.results["runs"].append(r)
                    log(
                        f"  {r['rps']:.0f} req/s, {r['cpu_us_per_request']:.0f} CPU µs/req, "
                        f"p99 {r['latency_us']['p99'] / 1000:.1f} ms"
                        + (f" check {r['check']['ok']}" if "check" in r else "")
                    )
                self.results.setdefault("rounds", []).append(
                    {
                        "uvloop": uvloop,
                        "round": rnd,
                        "ratio": round_runs["exporter"]["rps"] / round_runs["plain"]["rps"],
                        "cpu_ratio": (
                            round_runs["plain"]["cpu_us_per_request"] / round_runs["exporter"]["cpu_us_per_request"]
                        ),
                        "verify_ratio": (
                            round_runs["verify"]["rps"] / round_runs["plain"]["rps"] if "verify" in round_runs else None
                        ),
                        # The exporter against the HMAC + json.loads peer of the same round (issue 15).
                        "vs_verify": (
                            round_runs["exporter"]["rps"] / round_runs["verify"]["rps"]
                            if "verify" in round_runs
                            else None
                        ),
                        "vs_verify_cpu": (
                            round_runs["verify"]["cpu_us_per_request"] / round_runs["exporter"]["cpu_us_per_request"]
                            if "verify" in round_runs
                            else None
                        ),
                    }
                )

    def redis(self, req10: Path) -> None:
        if not (ROOT / "exporter" / "redis_store.py").exists():
            self.results["redis"] = {"skipped": "exporter/redis_store.py is not there yet"}
            return
        if not shutil.which("redis-server"):
            self.results["redis"] = {"skipped": "redis-server is not installed"}
            return
        port = free_port()
        rdir = self.work / "redis"
        rdir.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            [
                "taskset",
                "-c",
                CLIENT_CPU,
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(rdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                    break
                time.sleep(0.1)
            log("redis backend: bare, exporter-memory, exporter-redis")
            bare = self.run_bare("plain", req10, uvloop=True)
            mem = self.run_exporter(10, req10, uvloop=True)
            red = self.run_exporter(
                10, req10, uvloop=True, backend="redis", redis_url=f"redis://127.0.0.1:{port}/0", paced_share=0.5
            )
            for r in (bare, mem, red):
                r["round"] = "redis"
                self.results["runs"].append(r)
            self.results["redis"] = {
                "bare_rps": bare["rps"],
                "memory_rps": mem["rps"],
                "redis_rps": red["rps"],
                "memory_ratio": mem["rps"] / bare["rps"],
                "redis_ratio": red["rps"] / bare["rps"],
                "redis_vs_memory": red["rps"] / mem["rps"],
                "redis_p99_ms": red["latency_us"]["p99"] / 1000,
                "memory_p99_ms": mem["latency_us"]["p99"] / 1000,
                "redis_check": red["check"],
                "redis_paced": red["paced"],
                # CPU per request of the server process: immune to other tenants' load.
                "redis_vs_memory_cpu": mem["cpu_us_per_request"] / red["cpu_us_per_request"],
            }
            log(
                f"  redis {red['rps']:.0f} req/s vs memory {mem['rps']:.0f} req/s; check {red['check']['ok']}; "
                f"p99 {red['paced']['p99_ms']:.2f} ms at {red['paced']['rps']:.0f} req/s (half)"
            )
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def scrapes(self, req100: Path, max_rps: float) -> None:
        """Webhook latency and loop stalls at 100 trunks, without and with a scrape every second."""
        rows = {}
        for variant in ("fast", "stock"):
            wport, mport = free_port(), free_port()
            cfg = self.work / "exporter-100.yaml"
            write_config(cfg, 100, wport, mport)
            lag_file = self.work / f"lag-{variant}.json"
            url = f"http://127.0.0.1:{wport}/"
            murl = f"http://127.0.0.1:{mport}/metrics"
            log(f"scrape test at 100 trunks ({variant} /metrics): warm-up, then without and with scrapes")
            conns = 16
            target = max_rps * self.a.paced_share
            delay = max(0.0, conns * 1000.0 / target - 0.5)
            with server(
                self.exporter_cmd(cfg, lag_file=lag_file, stock=variant == "stock"),
                self.env(100),
                f"http://127.0.0.1:{wport}/-/healthy",
                self.logfile,
            ) as proc:
                warm = wrk(url, req100, 3, self.a.connections, limit=20_000)  # 200 events per trunk
                offset = warm["sent"] + self.a.connections
                idle = [http_get(murl, PROM_ACCEPT)[2] for _ in range(5)]
                _, body, _ = http_get(murl, PROM_ACCEPT)
                windows = {}
                runs = {}
                for phase in ("without", "with"):
                    stop = threading.Event()
                    scrape_ms: list[float] = []

                    def scraper(
                        stop: threading.Event = stop, scrape_ms: list[float] = scrape_ms, murl: str = murl
                    ) -> None:
                        while not stop.wait(1.0):
                            scrape_ms.append(http_get(murl, PROM_ACCEPT, timeout=30)[2])

                    t0 = time.time()
                    th = threading.Thread(target=scraper) if phase == "with" else None
                    if th:
                        th.start()
                    r = wrk(url, req100, self.a.duration, conns, offset=offset, delay_ms=delay)
                    if th:
                        stop.set()
                        th.join(timeout=40)
                    windows[phase] = (t0 + 0.5, time.time() - 0.5)
                    offset += r["sent"] + conns
                    r["scrape_ms"] = scrape_ms
                    runs[phase] = r
                    log(
                        f"  {phase} scrapes: {r['rps']:.0f} req/s p99 {r['latency_us']['p99'] / 1000:.2f} ms"
                        + (f", scrape median {statistics.median(scrape_ms):.0f} ms" if scrape_ms else "")
                    )
                peak = status_kib(proc.pid, "VmHWM") / 1024
                o = outcomes(murl)
            lag = json.loads(lag_file.read_text())
            row: dict[str, Any] = {
                "target_rps": target,
                "delay_ms": delay,
                "series_lines": body.count(b"\n"),
                "idle_scrape_ms": statistics.median(idle),
                "peak_rss_mb": peak,
                "non_accepted": {k: v for k, v in o.items() if not k.startswith("_") and k != "accepted" and v},
            }
            for phase, (a, b) in windows.items():
                lags = [x for t, x in zip(lag["t"], lag["lag_ms"], strict=True) if a <= t <= b]
                cpu_lags = [x for t, x in zip(lag["t"], lag["cpu_ms"], strict=True) if a <= t <= b]
                r = runs[phase]
                row[phase] = {
                    "rps": r["rps"],
                    "p50_ms": r["latency_us"]["p50"] / 1000,
                    "p99_ms": r["latency_us"]["p99"] / 1000,
                    "p999_ms": r["latency_us"]["p999"] / 1000,
                    "max_ms": r["latency_us"]["max"] / 1000,
                    "non2xx": r["errors"]["status"],
                    "scrapes": len(r["scrape_ms"]),
                    "exhausted": r["exhausted"],
                    "scrape_median_ms": statistics.median(r["scrape_ms"]) if r["scrape_ms"] else None,
                    "loop_lag_max_ms": max(lags) if lags else None,
                    "loop_lag_over_10ms": sum(1 for x in lags if x > 10.0),
                    "loop_cpu_max_ms": max(cpu_lags) if cpu_lags else None,
                    "loop_cpu_over_10ms": sum(1 for x in cpu_lags if x > 10.0),
                    "loop_samples": len(lags),
                }
            row["p99_ratio"] = row["with"]["p99_ms"] / row["without"]["p99_ms"]
            rows[variant] = row
        self.results["scrape"] = rows

    def gzip_scrape(self, req100: Path, max_rps: float) -> None:
        """What Prometheus asks for (``Accept-Encoding: gzip``) at 100 trunks: bytes and time of a
        gzip scrape against an identity one, and webhook latency and loop stalls under paced load
        without scrapes, with an identity scrape every second, and with a gzip scrape every second,
        all in one exporter process."""
        wport, mport = free_port(), free_port()
        cfg = self.work / "exporter-100-gzip.yaml"
        write_config(cfg, 100, wport, mport)
        lag_file = self.work / "lag-gzip.json"
        url = f"http://127.0.0.1:{wport}/"
        murl = f"http://127.0.0.1:{mport}/metrics"
        conns = 16
        prior = self.results.get("scrape", {}).get("fast", {}).get("target_rps")
        target = prior or max_rps * self.a.paced_share  # the scrape test's load when it is known
        delay = max(0.0, conns * 1000.0 / target - 0.5)

        def get(encoding: str) -> tuple[bytes, float, str]:
            req = urllib.request.Request(murl, headers={"Accept": PROM_ACCEPT, "Accept-Encoding": encoding})
            t = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as resp:
                body = resp.read()
                return body, (time.perf_counter() - t) * 1000, resp.headers.get("Content-Encoding", "")

        log("gzip scrapes at 100 trunks: idle sizes and times, then paced load without / identity / gzip scrapes")
        with server(
            self.exporter_cmd(cfg, lag_file=lag_file),
            self.env(100),
            f"http://127.0.0.1:{wport}/-/healthy",
            self.logfile,
        ) as proc:
            warm = wrk(url, req100, 3, self.a.connections, limit=20_000)  # 200 events per trunk
            offset = warm["sent"] + self.a.connections
            idle: dict[str, list[tuple[bytes, float, str]]] = {"identity": [], "gzip": []}
            for _ in range(7):
                for enc in idle:
                    idle[enc].append(get(enc))
            ident_body, gz_body = idle["identity"][-1][0], idle["gzip"][-1][0]
            plain = gzip.decompress(gz_body)
            windows = {}
            runs = {}
            for phase in ("without", "identity", "gzip"):
                stop = threading.Event()
                scrape_ms: list[float] = []

                def scraper(stop: threading.Event = stop, scrape_ms: list[float] = scrape_ms, enc: str = phase) -> None:
                    while not stop.wait(1.0):
                        scrape_ms.append(get(enc)[1])

                t0 = time.time()
                th = threading.Thread(target=scraper) if phase != "without" else None
                if th:
                    th.start()
                r = wrk(url, req100, self.a.duration, conns, offset=offset, delay_ms=delay)
                if th:
                    stop.set()
                    th.join(timeout=40)
                windows[phase] = (t0 + 0.5, time.time() - 0.5)
                offset += r["sent"] + conns
                r["scrape_ms"] = scrape_ms
                runs[phase] = r
                log(
                    f"  {phase}: {r['rps']:.0f} req/s p99 {r['latency_us']['p99'] / 1000:.2f} ms"
                    + (f", scrape median {statistics.median(scrape_ms):.1f} ms" if scrape_ms else "")
                )
            o = outcomes(murl)
            peak = status_kib(proc.pid, "VmHWM") / 1024
        lag = json.loads(lag_file.read_text())
        row: dict[str, Any] = {
            "target_rps": target,
            "delay_ms": delay,
            "peak_rss_mb": peak,
            "identity_bytes": len(ident_body),
            "gzip_bytes": len(gz_body),
            "gzip_decompressed_bytes": len(plain),
            "compression_ratio": len(plain) / len(gz_body),
            "gzip_content_encoding": idle["gzip"][-1][2],
            "identity_content_encoding": idle["identity"][-1][2],
            "lines_identity": ident_body.count(b"\n"),
            "lines_gzip": plain.count(b"\n"),
            "idle_identity_ms": statistics.median(x[1] for x in idle["identity"]),
            "idle_gzip_ms": statistics.median(x[1] for x in idle["gzip"]),
            "non_accepted": {k: v for k, v in o.items() if not k.startswith("_") and k != "accepted" and v},
        }
        for phase, (a, b) in windows.items():
            lags = [x for t, x in zip(lag["t"], lag["lag_ms"], strict=True) if a <= t <= b]
            cpu_lags = [x for t, x in zip(lag["t"], lag["cpu_ms"], strict=True) if a <= t <= b]
            r = runs[phase]
            row[phase] = {
                "rps": r["rps"],
                "p50_ms": r["latency_us"]["p50"] / 1000,
                "p99_ms": r["latency_us"]["p99"] / 1000,
                "p999_ms": r["latency_us"]["p999"] / 1000,
                "max_ms": r["latency_us"]["max"] / 1000,
                "non2xx": r["errors"]["status"],
                "scrapes": len(r["scrape_ms"]),
                "exhausted": r["exhausted"],
                "scrape_median_ms": statistics.median(r["scrape_ms"]) if r["scrape_ms"] else None,
                "loop_lag_max_ms": max(lags) if lags else None,
                "loop_lag_over_10ms": sum(1 for x in lags if x > 10.0),
                "loop_cpu_max_ms": max(cpu_lags) if cpu_lags else None,
                "loop_cpu_over_10ms": sum(1 for x in cpu_lags if x > 10.0),
                "loop_samples": len(lags),
            }
            # The collector's pauses in the window, and the longest stall with no pause inside it
            # (a sample at time t covers the ~1 ms sleep that ended at t, plus the stall itself).
            pauses = [(t, g, ms) for t, g, ms in lag.get("gc", []) if a <= t <= b]
            samples = [(t, x) for t, x in zip(lag["t"], lag["cpu_ms"], strict=True) if a <= t <= b]
            clean = [x for t, x in samples if not any(t - x / 1000 - 0.002 <= pt <= t + 0.001 for pt, _, _ in pauses)]
            row[phase].update(
                gc_pauses=len(pauses),
                gc_max_ms=max((ms for _, _, ms in pauses), default=0.0),
                gc_gen2=sum(1 for _, g, _ in pauses if g == 2),
                loop_cpu_max_ms_no_gc=max(clean) if clean else None,
            )
        # The scrape's own hold on the loop, in process and in CPU time (no preemption, no traffic).
        pin = ["timeout", "300", "taskset", "-c", SERVER_CPU, PY]
        out = subprocess.run(
            [*pin, str(BENCH / "gzip_stall.py")],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        row["in_process"] = json.loads(out.stdout)
        row["p99_ratio_gzip"] = row["gzip"]["p99_ms"] / row["without"]["p99_ms"]
        row["p99_ratio_identity"] = row["identity"]["p99_ms"] / row["without"]["p99_ms"]
        self.results["gzip"] = row
        log(
            f"  gzip {row['gzip_bytes']:,} B vs identity {row['identity_bytes']:,} B; idle "
            f"{row['idle_gzip_ms']:.1f} vs {row['idle_identity_ms']:.1f} ms; longest loop stall with gzip "
            f"scrapes {row['gzip']['loop_cpu_max_ms']} ms CPU"
        )

    def rss_100k(self, req100: Path) -> None:
        """RSS of a real exporter with 100 trunks after 50,000 events (= 100,000 dedupe keys)."""
        wport, mport = free_port(), free_port()
        cfg = self.work / "exporter-100-rss.yaml"
        write_config(cfg, 100, wport, mport)
        log("RSS with 100 trunks and 100,000 keys")
        with server(self.exporter_cmd(cfg), self.env(100), f"http://127.0.0.1:{wport}/-/healthy", self.logfile) as proc:
            r = wrk(f"http://127.0.0.1:{wport}/", req100, 30, self.a.connections, limit=50_000)
            http_get(f"http://127.0.0.1:{mport}/metrics", PROM_ACCEPT)  # renderer caches exist too
            o = outcomes(f"http://127.0.0.1:{mport}/metrics")
            self.results["rss"] = {
                "events_sent": r["sent"],
                "accepted": o.get("accepted", 0.0),
                "dedupe_keys": o.get("_dedupe_entries", 0.0),
                "rss_mb": status_kib(proc.pid, "VmRSS") / 1024,
                "peak_rss_mb": status_kib(proc.pid, "VmHWM") / 1024,
            }
        log(f"  {self.results['rss']}")

    def in_process(self, req10: Path) -> None:
        log("render times (10, 100, 1000 trunks), dedupe memory, micro costs")
        pin = ["timeout", "600", "taskset", "-c", SERVER_CPU, PY]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        render = subprocess.run(
            [*pin, str(BENCH / "render.py"), "--repeat", str(self.a.render_repeat)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        self.results["render"] = json.loads(render.stdout)["render"]
        self.results["dedupe"] = {}
        for mode in ("rss", "tracemalloc"):
            out = subprocess.run(
                [*pin, str(BENCH / "memory.py"), "--mode", mode], capture_output=True, text=True, check=True, env=env
            )
            self.results["dedupe"][mode] = json.loads(out.stdout)
        micro = subprocess.run(
            [*pin, str(BENCH / "micro.py"), "--requests", str(req10)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        self.results["micro"] = json.loads(micro.stdout)
        pipe = subprocess.run(
            [*pin, str(BENCH / "pipeline.py"), "--requests", str(req10), "--rounds", "3"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        self.results["pipeline"] = json.loads(pipe.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="bare/exporter rounds per event loop")
    p.add_argument("--requests", type=int, default=250_000, help="unique requests for 10 trunks")
    p.add_argument(
        "--paced-share", type=float, default=0.5, help="scrape test load as a share of the measured exporter throughput"
    )
    p.add_argument("--render-repeat", type=int, default=7)
    p.add_argument("--only", nargs="*", default=[], help="throughput redis scrape gzip rss inproc")
    p.add_argument(
        "--merge", action="store_true", help="keep the other sections of the last --json file (use with --only)"
    )
    p.add_argument("--out", type=Path, default=BENCH / "RESULTS.md")
    p.add_argument("--json", type=Path, default=BENCH / "results.json", help="where the raw results go")
    a = p.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vobiz-bench-") as tmp:
        work = Path(tmp)
        b = Bench(a, work)
        merged = a.merge and a.json.exists()
        if merged:
            b.results = json.loads(a.json.read_text())
            b.results.setdefault("runs", [])
            # The full run's environment and settings stay; this partial run is listed apart.
            # One entry per section list: a re-run of the same sections replaces its entry.
            b.results["partial_runs"] = [x for x in b.results.get("partial_runs", []) if x["only"] != a.only]
            b.results["partial_runs"].append(
                {"only": a.only, "environment": b.environment(), "settings": vars(a) | {"out": str(a.out)}}
            )
        else:
            b.results["environment"] = b.environment()
            b.results["settings"] = vars(a) | {"out": str(a.out)}
        n100 = max(150_000, a.requests)
        log(f"generating {a.requests} requests over 10 trunks and {n100} over 100 trunks")
        req10, req100 = work / "req10.bin", work / "req100.bin"
        workload = {"10": generate(req10, 10, a.requests, seed=1), "100": generate(req100, 100, n100, seed=2)}
        (b.results["partial_runs"][-1] if merged else b.results)["workload"] = workload
        only = set(a.only)
        try:
            if not only or "throughput" in only:
                b.throughput(req10)
            if not only or "redis" in only:
                b.redis(req10)
            if not only or "scrape" in only:
                ex = [r["rps"] for r in b.results["runs"] if r["kind"] == "exporter-memory" and r["uvloop"]]
                b.scrapes(req100, statistics.mean(ex) if ex else 4000.0)
            if not only or "gzip" in only:
                ex = [r["rps"] for r in b.results["runs"] if r["kind"] == "exporter-memory" and r["uvloop"]]
                b.gzip_scrape(req100, statistics.mean(ex) if ex else 4000.0)
            if not only or "rss" in only:
                b.rss_100k(req100)
            if not only or "inproc" in only:
                b.in_process(req10)
        finally:
            end = {"elapsed_s": round(time.monotonic() - started), "loadavg_at_end": os.getloadavg()}
            (b.results["partial_runs"][-1] if merged else b.results).update(end)
            a.json.write_text(json.dumps(b.results, indent=1, default=str))
            if b.logfile.exists():
                tail = b.logfile.read_text(errors="replace").splitlines()[-20:]
                errors = [line for line in tail if "level=error" in line or "Traceback" in line]
                if errors:
                    log("server errors:\n" + "\n".join(errors))
    from report import write_report

    write_report(b.results, a.out)
    log(f"done in {end['elapsed_s']} s: {a.out}")


if __name__ == "__main__":
    main()
