"""A reload that removes a trunk while its events are in flight, with the Redis backend.

Before this round the trunk-metrics lookup after ``await dedupe.seen_or_add`` raised KeyError:
a 500, with the dedupe keys already stored, so the provider's retry was a duplicate and the
event was lost for good. Now a request past trunk resolution finishes on the configuration it
began with, and a trunk restored by a later reload continues its series: every event is
accepted exactly once and counted exactly once.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.protocol import CALL_INITIATED, signed_headers

from .procs import http_post, run_exporter
from .redis_util import RedisServer, redis_server

pytestmark = pytest.mark.e2e
__all__ = ["redis_server"]  # the fixture, re-exported for pytest

SECRET = "toggle-test-secret-0123456789"
SENDERS = 6
EVENTS_PER_SENDER = 120
TOGGLE_EVERY = 0.05  # seconds between reloads
MAX_ATTEMPTS = 400  # per event; each 404 while the trunk is out is retried


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def test_toggling_a_trunk_under_load_loses_and_doubles_nothing(redis_server: RedisServer, tmp_path: Path) -> None:
    steady = {"name": "steady", "secret": SECRET}
    toggled = {"name": "flip", "secret": SECRET}
    cfg: dict[str, Any] = {
        "dedupe": {"backend": "redis", "redis_url": redis_server.url, "on_error": "reject"},
        "trunks": [steady, toggled],
    }
    with run_exporter(tmp_path, cfg, extra_args=["--web.enable-lifecycle"]) as exp:
        written = yaml.safe_load(exp.config_path.read_text())
        with_flip = yaml.safe_dump(written)
        written["trunks"] = [t for t in written["trunks"] if t["name"] != "flip"]
        without_flip = yaml.safe_dump(written)

        statuses: dict[int, int] = {}
        final: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def sender(n: int) -> None:
            for i in range(EVENTS_PER_SENDER):
                call = f"{n}-{i}-{uuid.uuid4()}"
                body = json.dumps(
                    {
                        "Event": CALL_INITIATED,
                        "CallUUID": call,
                        "RequestID": call,
                        "Timestamp": stamp(),
                        "To": "+918765432109",
                        "Allowed": True,
                    }
                ).encode()
                headers = signed_headers(body, SECRET.encode())
                for _ in range(MAX_ATTEMPTS):
                    status, answer = http_post(exp.webhook_url + "/webhook/flip", body, headers)
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                    if status == 200:
                        with lock:
                            final.append(json.loads(answer)["outcome"])
                        break
                    time.sleep(0.002)

        def toggler() -> None:
            present = True
            while not stop.is_set():
                time.sleep(TOGGLE_EVERY)
                present = not present
                exp.config_path.write_text(with_flip if present else without_flip)
                status, _ = http_post(exp.metrics_url + "/-/reload", b"", {})
                assert status == 200
            exp.config_path.write_text(with_flip)
            assert http_post(exp.metrics_url + "/-/reload", b"", {})[0] == 200

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(SENDERS)]
        flip = threading.Thread(target=toggler)
        flip.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        stop.set()
        flip.join(30)

        total = SENDERS * EVENTS_PER_SENDER
        assert set(statuses) <= {200, 404}, statuses
        assert statuses.get(404, 0) > 0, "the trunk was never out while events were sent"
        assert final == ["accepted"] * total  # never a duplicate: no event's keys were stored and lost
        text = exp.scrape()
        m = re.search(r'vobiz_call_attempts_total\{result="admitted",trunk="flip"\} (\S+)', text)
        assert m and float(m.group(1)) == float(total)
        m = re.search(r'vobiz_webhook_requests_total\{outcome="accepted",trunk="flip"\} (\S+)', text)
        assert m and float(m.group(1)) == float(total)
        m = re.search(r'vobiz_webhook_requests_total\{outcome="unknown_trunk",trunk="unknown"\} (\S+)', text)
        assert m and float(m.group(1)) == float(statuses[404])
        assert "Traceback" not in exp.proc.log()


def test_every_key_an_event_writes_carries_its_trunk_tag(redis_server: RedisServer, tmp_path: Path) -> None:
    """Also events that change no call (a rejected CallInitiated, an unknown event type): the
    handler passes the trunk, so every key of one event is in the trunk's Redis Cluster slot."""
    import subprocess

    cfg: dict[str, Any] = {
        "dedupe": {"backend": "redis", "redis_url": redis_server.url},
        "trunks": [{"name": "steady", "secret": SECRET}],
    }
    with run_exporter(tmp_path, cfg) as exp:
        for payload in (
            {
                "Event": CALL_INITIATED,
                "CallUUID": "k1",
                "Timestamp": stamp(),
                "Allowed": False,
                "Reason": "KYC verification required",
            },
            {"Event": "SomethingNew", "CallUUID": "k2", "Timestamp": stamp()},
            {"Event": CALL_INITIATED, "CallUUID": "k3", "Timestamp": stamp(), "Allowed": True},
        ):
            body = json.dumps(payload).encode()
            headers = signed_headers(body, SECRET.encode())
            status, _ = http_post(exp.webhook_url + "/webhook/steady", body, headers)
            assert status == 200
        keys = subprocess.run(
            ["redis-cli", "-p", str(redis_server.port), "--scan"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
    assert len([k for k in keys if ":dedupe:" in k]) == 6  # two per event
    assert keys and all("{steady}" in k for k in keys), keys
