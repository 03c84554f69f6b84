"""Requests that aiohttp's HTTP parser refuses, against a real ``serve`` process.

Before this round each of them logged an ERROR with a traceback quoting the raw request bytes
(phone numbers, signatures, payloads), outside every rate limit, and was answered with plain
text echoing those bytes and counted nowhere. Now: the usual JSON answer, counted under
trunk ``unknown``, observed, and logged through the per-outcome rate limit without any bytes.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .helpers import free_port
from .procs import Exporter, run_exporter, start_process, wait_until

pytestmark = pytest.mark.e2e

NUMBER = b"+919812345678"
SIGNATURE = b"5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ffee5e1f0c0ff"
BODY = b'{"Event":"CallInitiated","CallUUID":"c-smuggle","To":"' + NUMBER + b'","Allowed":true}'
HEAD = b"Host: x\r\nContent-Type: application/json\r\nX-Vobiz-Signature: " + SIGNATURE + b"\r\n"
CL = b"Content-Length: %d\r\n" % len(BODY)

# name -> (raw request, status, outcome)
CASES: dict[str, tuple[bytes, int, str]] = {
    "space_before_colon": (
        b"POST /webhook/a HTTP/1.1\r\n" + HEAD + b"Content-Length : %d\r\n\r\n" % len(BODY) + BODY,
        400,
        "malformed",
    ),
    "cl_and_te": (
        b"POST /webhook/a HTTP/1.1\r\n" + HEAD + CL + b"Transfer-Encoding: chunked\r\n\r\n" + BODY,
        400,
        "malformed",
    ),
    "duplicate_content_length": (b"POST /webhook/a HTTP/1.1\r\n" + HEAD + CL + CL + b"\r\n" + BODY, 400, "malformed"),
    "bad_chunk_size": (
        b"POST /webhook/a HTTP/1.1\r\n"
        + HEAD
        + b"Transfer-Encoding: chunked\r\n\r\nzz"
        + NUMBER
        + b"\r\n"
        + BODY
        + b"\r\n0\r\n\r\n",
        400,
        "malformed",
    ),
    "nul_in_header": (
        b"POST /webhook/a HTTP/1.1\r\n" + HEAD + b"X-Note: a\x00" + NUMBER + b"\r\n" + CL + b"\r\n" + BODY,
        400,
        "malformed",
    ),
    "http_1_2": (b"POST /webhook/a HTTP/1.2\r\n" + HEAD + CL + b"\r\n" + BODY, 400, "malformed"),
    "too_many_headers": (
        b"POST /webhook/a HTTP/1.1\r\n"
        + HEAD
        + b"".join(b"X-H%d: %s\r\n" % (i, NUMBER) for i in range(200))
        + CL
        + b"\r\n"
        + BODY,
        400,
        "malformed",
    ),
    "connect_with_signed_body": (
        b"CONNECT /webhook/a HTTP/1.1\r\n" + HEAD + CL + b"\r\n" + BODY,
        405,
        "method_not_allowed",
    ),
    "invalid_method_token": (b"P@ST /webhook/a HTTP/1.1\r\n" + HEAD + CL + b"\r\n" + BODY, 405, "method_not_allowed"),
    "request_line_too_long": (b"POST /webhook/a?" + NUMBER * 800 + b" HTTP/1.1\r\n" + HEAD + b"\r\n", 413, "too_large"),
}


def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (every answer here closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    return data


def parse_answers(data: bytes) -> list[tuple[int, bytes, dict[str, Any]]]:
    """Every HTTP answer in ``data``: (status, raw head, JSON body)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        out.append((status, head, json.loads(rest[:length])))
        data = rest[length:]
    return out


def counts(exp: Exporter) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in exp.scrape().splitlines():
        m = re.match(r'vobiz_webhook_requests_total\{outcome="(\w+)",trunk="unknown"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def request_count(exp: Exporter) -> float:
    for line in exp.scrape().splitlines():
        if line.startswith("vobiz_webhook_request_duration_seconds_count "):
            return float(line.split()[1])
    raise AssertionError("no vobiz_webhook_request_duration_seconds_count")


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("parser")
    cfg = {"signature": {"mode": "report"}, "trunks": [{"name": "a", "id": "t-a", "secret": "an-inline-test-secret"}]}
    with run_exporter(tmp, cfg) as exp:
        yield exp


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_parser_refusal_gets_a_json_answer_and_is_counted(exporter: Exporter, case: str) -> None:
    raw, status, outcome = CASES[case]
    before, seen_before = counts(exporter), request_count(exporter)
    answers = parse_answers(exchange(exporter.webhook_port, raw))
    assert [(a[0], a[2]["outcome"]) for a in answers] == [(status, outcome)]
    _, head, body = answers[0]
    assert set(body) == {"outcome", "detail"}
    assert b"application/json" in head
    assert NUMBER not in head and SIGNATURE not in head
    after = counts(exporter)
    assert after[outcome] - before[outcome] == 1.0
    assert {k: v for k, v in after.items() if k != outcome} == {k: v for k, v in before.items() if k != outcome}
    assert request_count(exporter) - seen_before == 1.0


def test_expect_continue_with_an_oversized_body_gets_413_without_100_continue(exporter: Exporter) -> None:
    before = counts(exporter)
    raw = b"POST /webhook/a HTTP/1.1\r\n" + HEAD + b"Expect: 100-continue\r\nContent-Length: 999999\r\n\r\n"
    data = exchange(exporter.webhook_port, raw)
    assert b"100 Continue" not in data
    assert [(a[0], a[2]["outcome"]) for a in parse_answers(data)] == [(413, "too_large")]
    assert counts(exporter)["too_large"] - before["too_large"] == 1.0


def test_expect_continue_within_the_limit_still_continues(exporter: Exporter) -> None:
    body = b'{"Event":"CallInitiated","CallUUID":"c-expect","Allowed":true}'
    raw = b"POST /webhook/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
    raw += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", exporter.webhook_port), timeout=5) as s:
        s.sendall(raw)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert b" 200 " in data.split(b"\r\n", 1)[0] and b'"accepted"' in data


def test_a_flood_of_parser_errors_writes_few_log_lines_and_no_request_bytes(exporter: Exporter, tmp_path: Path) -> None:
    log_before = exporter.proc.log().count("\n")
    before = counts(exporter)
    kinds = sorted(CASES)
    for i in range(2000):
        raw, _, _ = CASES[kinds[i % len(kinds)]]
        assert exchange(exporter.webhook_port, raw)
    after = counts(exporter)
    sent = {
        o: float(sum(1 for i in range(2000) if CASES[kinds[i % len(kinds)]][2] == o))
        for o in ("malformed", "method_not_allowed", "too_large")
    }
    assert {o: after[o] - before[o] for o in sent} == sent
    time.sleep(1.2)  # a request in the next second flushes the "suppressed" summaries
    exchange(exporter.webhook_port, CASES["http_1_2"][0])
    log = exporter.proc.log()
    new_lines = log.splitlines()[log_before:]
    assert len(new_lines) < 100, len(new_lines)
    assert any("suppressed" in line for line in new_lines)
    for needle in (NUMBER.decode(), SIGNATURE.decode(), "c-smuggle", "Traceback", "X-H1"):
        assert needle not in log
    assert all(line.startswith("ts=") for line in new_lines)


def test_bad_tls_handshakes_and_plain_http_on_tls_ports_do_not_flood(tmp_path: Path) -> None:
    """Both listeners on TLS: plain HTTP carrying a number, and clients that reject the
    certificate, 600 connections in all, add at most a handful of log lines and no bytes."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    tls = {"cert_file": str(tmp_path / "cert.pem"), "key_file": str(tmp_path / "key.pem")}
    (tmp_path / "web.yml").write_text(json.dumps({"tls_server_config": tls}))
    metrics_port, webhook_port = free_port(), free_port()
    cfg = {
        "web": {"config_file": str(tmp_path / "web.yml"), "listen_address": f"127.0.0.1:{metrics_port}"},
        "webhook": {"tls": tls, "listen_address": f"127.0.0.1:{webhook_port}"},
        "trunks": [{"name": "a", "secret": "an-inline-test-secret"}],
    }
    (tmp_path / "tls.yaml").write_text(json.dumps(cfg))
    proc = start_process(
        [sys.executable, "-m", "exporter", "serve", "--config", str(tmp_path / "tls.yaml")], tmp_path / "tls.log"
    )
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{webhook_port}/-/healthy", context=trusted, timeout=1
            ) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    try:
        wait_until(healthy, 20, what="exporter with TLS")
        wait_lines = proc.log().count("\n")
        for port in (metrics_port, webhook_port):
            for _ in range(200):
                exchange(port, b"POST /webhook/a HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n" + NUMBER, timeout=2)
            for _ in range(100):
                ctx = ssl.create_default_context()  # does not trust the test CA: the handshake fails
                with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, pytest.raises(ssl.SSLError):
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        time.sleep(0.5)
        log = proc.log()
        assert log.count("\n") - wait_lines <= 20
        assert NUMBER.decode() not in log and "Traceback" not in log
    finally:
        proc.stop()


def test_a_bad_chunk_arriving_late_is_malformed_at_once_not_a_timeout(exporter: Exporter) -> None:
    before = counts(exporter)
    head = b"POST /webhook/a HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(("127.0.0.1", exporter.webhook_port), timeout=5) as s:
        s.sendall(head + b'5\r\n{"Eve\r\n')
        time.sleep(0.3)  # the handler is now waiting for the rest of the body
        started = time.monotonic()
        s.sendall(b"zz" + NUMBER + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        took = time.monotonic() - started
    assert [(a[0], a[2]["outcome"]) for a in parse_answers(data)] == [(400, "malformed")]
    assert took < 2.0  # read_timeout is 10 s: it did not wait for it
    after = counts(exporter)
    assert after["malformed"] - before["malformed"] == 1.0  # once, not also as a parser error
    assert after["timeout"] == before["timeout"]
