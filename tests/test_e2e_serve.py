"""End to end: the real ``vobiz-exporter serve`` process on loopback ports."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from .helpers import ENV, SECRET_A, call_initiated, exposed, free_port, hangup, raw_config, signed
from .procs import ROOT, http_get, http_post, run_cli, run_exporter, wait_until

pytestmark = pytest.mark.e2e


def send(url: str, payload: dict[str, object], secret: str = SECRET_A) -> tuple[int, bytes]:
    return http_post(url, *signed(payload, secret))


def test_serve_counts_scrapes_reloads_and_stops(tmp_path: Path) -> None:
    raw = raw_config()
    with run_exporter(tmp_path, raw, env=ENV, extra_args=["--log.format", "json"]) as exp:
        ci = call_initiated(From="+919812345678")
        assert send(exp.webhook_url + "/webhook/alpha", ci)[0] == 200
        rejected = call_initiated(allowed=False, reason="KYC verification required")
        assert send(exp.webhook_url + "/webhook/alpha", rejected)[0] == 200
        uuid = "e2e0e2e0-0000-4000-8000-000000000042"
        assert send(exp.webhook_url + "/webhook/alpha", hangup(call_uuid=uuid, mos=3.9))[0] == 200
        assert send(exp.webhook_url + "/webhook/alpha", call_initiated(), secret="forged")[0] == 401

        text = exp.scrape()
        assert exposed(text, "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0
        assert exposed(text, "vobiz_call_rejections_total", trunk="alpha", reason="kyc_required") == 1.0
        assert exposed(text, "vobiz_calls_active", trunk="alpha") == 1.0
        assert exposed(text, "vobiz_webhook_requests_total", trunk="alpha", outcome="invalid_signature") == 1.0
        assert exposed(text, "vobiz_call_mos_count", trunk="alpha") == 1.0

        om = exp.scrape(openmetrics=True)
        exemplar_ids = {
            s.exemplar.labels["call_uuid"] for fam in om_families(om) for s in fam.samples if s.exemplar is not None
        }
        assert exemplar_ids == {uuid}

        # The webhook listener does not serve metrics; the metrics listener does not take webhooks.
        assert http_get(exp.webhook_url + "/metrics")[0] == 404
        assert http_get(exp.metrics_url + "/-/ready")[0] == 200

        # SIGHUP reload: add a trunk; counters survive.
        raw["trunks"].append({"name": "charlie", "secret_env": "SECRET_B"})
        cfg = yaml.safe_load(exp.config_path.read_text())
        cfg["trunks"] = raw["trunks"]
        exp.config_path.write_text(yaml.safe_dump(cfg))
        exp.proc.popen.send_signal(signal.SIGHUP)
        wait_until(
            lambda: exposed(exp.scrape(), "vobiz_trunk_info", trunk="charlie", trunk_id="") == 1.0, 10, what="reload"
        )
        assert exposed(exp.scrape(), "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0

        start = time.monotonic()
        assert exp.proc.stop(signal.SIGTERM, timeout=5) == 0
        assert time.monotonic() - start < 5
        log = exp.proc.log()
    assert '"msg": "vobiz-exporter started"' in log
    assert '"msg": "stopped"' in log
    assert SECRET_A not in log and "+919812345678" not in log
    assert "Traceback" not in log


def test_single_port_serves_everything(tmp_path: Path) -> None:
    port = free_port()
    raw = raw_config(web={"listen_address": f"127.0.0.1:{port}"}, webhook={"listen_address": f"127.0.0.1:{port}"})
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(raw))
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config", str(path)],
        cwd=str(ROOT),
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(base + "/-/healthy", timeout=1)[0] == 200, 20, what="exporter")
        assert send(base + "/webhook", call_initiated())[0] == 200
        status, body = http_get(base + "/metrics")
        assert status == 200
        assert exposed(body.decode(), "vobiz_call_attempts_total", trunk="alpha", result="admitted") == 1.0
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_config_from_environment_variable_and_bad_config_exit(tmp_path: Path) -> None:
    import os

    bad = tmp_path / "bad.yaml"
    bad.write_text("trunks: []\n")
    res = run_cli(env={**os.environ, "VOBIZ_EXPORTER_CONFIG": str(bad)})
    assert res.returncode == 1
    assert "trunks: at least one trunk is required" in res.stderr
    res = run_cli(env={k: v for k, v in os.environ.items() if k != "VOBIZ_EXPORTER_CONFIG"})
    assert res.returncode == 2 and "no configuration" in res.stderr
