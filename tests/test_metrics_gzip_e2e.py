"""A real Prometheus scrapes the exporter with gzip: a recording pass-through proxy on loopback
shows Prometheus asks for gzip and gets ``Content-Encoding: gzip``, and Prometheus reads the same
values as an identity scrape."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .helpers import ENV, SECRET_A, call_initiated, free_port, raw_config, signed
from .procs import http_post, run_exporter
from .prom_util import run_prometheus, sample_value, scrape_job

pytestmark = pytest.mark.e2e


@dataclass
class Seen:
    accept_encoding: str
    content_encoding: str
    vary: str
    length: int


@dataclass
class Recorder:
    port: int
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def recording_proxy(upstream: str) -> Iterator[Recorder]:
    """Forwards GET /metrics with its Accept and Accept-Encoding headers; returns the bytes as
    they came (never decompressed) and records the encodings."""
    rec = Recorder(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "accept-encoding")}
            req = urllib.request.Request(upstream + self.path, headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
                out = {k: resp.headers[k] for k in ("Content-Type", "Content-Encoding", "Vary") if resp.headers[k]}
            with rec.lock:
                rec.seen.append(
                    Seen(
                        self.headers.get("Accept-Encoding", ""),
                        out.get("Content-Encoding", ""),
                        out.get("Vary", ""),
                        len(body),
                    )
                )
            self.send_response(200)
            for k, v in out.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", rec.port), Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_prometheus_scrapes_gzip(tmp_path: Path) -> None:
    with run_exporter(tmp_path, raw_config(), env=ENV) as exp:
        assert http_post(exp.webhook_url + "/webhook/alpha", *signed(call_initiated(), SECRET_A))[0] == 200
        identity = exp.scrape()  # urllib: no Accept-Encoding, so identity
        with recording_proxy(exp.metrics_url) as rec:
            config = {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [scrape_job("vobiz-exporter", f"127.0.0.1:{rec.port}")],
            }
            with run_prometheus(tmp_path, config) as prom:
                prom.wait_for_targets_up(timeout=20)
                attempts = prom.wait_for('vobiz_call_attempts_total{trunk="alpha",result="admitted"}', 20)
                assert [sample_value(s) for s in attempts] == [1.0]
                info = prom.query("vobiz_trunk_info")
                assert sorted(s["metric"]["trunk"] for s in info) == ["alpha", "bravo"]
                assert [sample_value(s) for s in prom.query('up{job="vobiz-exporter"}')] == [1.0]
        with rec.lock:
            seen = list(rec.seen)
    assert seen, "Prometheus scraped nothing through the proxy"
    for s in seen:
        assert "gzip" in s.accept_encoding  # Prometheus asks for it ...
        assert s.content_encoding == "gzip"  # ... and gets it
        assert s.vary == "Accept-Encoding"
        assert 0 < s.length < len(identity.encode()) // 3  # the bytes on the wire are compressed
    assert 'vobiz_call_attempts_total{result="admitted",trunk="alpha"} 1.0' in identity
