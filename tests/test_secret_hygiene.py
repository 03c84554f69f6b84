"""Nothing secret in output: a real ``vobiz-exporter serve`` process at debug level gets signed
events carrying phone numbers, forged and broken requests, and failed reloads; its whole output
must hold none of the secrets, none of the signatures sent and no full phone number."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.protocol import SIGNATURE_HEADER, signed_headers

from .helpers import TRUNK_A_ID, TRUNK_B_ID, call_initiated, encode, hangup, rfc3339
from .procs import ROOT, http_get, http_post, run_cli, run_exporter

pytestmark = pytest.mark.e2e

ENV_SECRET = "env-secret-Zq7wX2-4d8f0b9e1c3a5d7f"
OLD_SECRET = "old-secret-Kp3vN8-0a1b2c3d4e5f6a7b"
FILE_SECRET = "file-secret-Hy6tR1-9f8e7d6c5b4a3f2e"
NEW_FILE_SECRET = "file-secret-NEW-Ww2qP5-77aa88bb99cc"
PHONES = ["+919811122233", "+918044455566", "+14155550123", "+447700900456", "+919822233344"]


post = http_post


def leaks(text: str, needles: list[str]) -> list[str]:
    found = [n for n in needles if n in text]
    # Every full phone number, with or without "+", and any run that looks like one.
    for phone in PHONES:
        if phone[1:] in text:
            found.append(phone)
    found += re.findall(r"\+\d{10,15}", text)
    return found


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_serve_output_holds_no_secret_signature_or_phone_number(tmp_path: Path, log_format: str) -> None:
    secret_file = tmp_path / "trunk-b.secret"
    secret_file.write_text(FILE_SECRET + "\n")
    raw_cfg: dict[str, Any] = {
        "trunks": [
            {"name": "a", "id": TRUNK_A_ID, "secret_env": "HYG_SECRET", "previous_secrets_env": ["HYG_OLD"]},
            {"name": "b", "id": TRUNK_B_ID, "secret_file": str(secret_file)},
        ],
    }
    env = {"HYG_SECRET": ENV_SECRET, "HYG_OLD": OLD_SECRET}
    sent_signatures: list[str] = []

    def signed(trunk: str, body: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
        raw = encode(body)
        headers = signed_headers(raw, secret.encode())
        sent_signatures.append(headers[SIGNATURE_HEADER])
        return raw, headers

    with run_exporter(
        tmp_path,
        raw_cfg,
        env=env,
        name="hyg",
        extra_args=["--log.level", "debug", "--log.format", log_format, "--web.enable-lifecycle"],
    ) as exp:
        url = exp.webhook_url
        for i, phone in enumerate(PHONES):
            other = PHONES[(i + 1) % len(PHONES)]
            trunk, tid, secret = ("a", TRUNK_A_ID, ENV_SECRET) if i % 2 == 0 else ("b", TRUNK_B_ID, FILE_SECRET)
            ci = call_initiated(From=phone, To=other, TrunkID=tid)
            assert post(f"{url}/webhook/{trunk}", *signed(trunk, ci, secret))[0] == 200
            rejected = call_initiated(
                From=phone, To=other, TrunkID=tid, Allowed=False, Reason=f"CLI ownership validation failed for {phone}"
            )
            assert post(f"{url}/webhook/{trunk}", *signed(trunk, rejected, secret))[0] == 200
            hu = hangup(From=phone, To=other, TrunkID=tid, CallUUID=ci["CallUUID"])
            assert post(f"{url}/webhook/{trunk}", *signed(trunk, hu, secret))[0] == 200
        # Rotated secret, forged, stale, malformed, mismatched, unknown, oversize, replayed.
        assert post(f"{url}/webhook/a", *signed("a", call_initiated(From=PHONES[0]), OLD_SECRET))[0] == 200
        forged_raw, forged_headers = signed("a", call_initiated(From=PHONES[1]), "attacker-guess")
        assert post(f"{url}/webhook/a", forged_raw, forged_headers)[0] == 401
        assert (
            post(f"{url}/webhook/a", *signed("a", call_initiated(From=PHONES[2], Timestamp=rfc3339(0)), ENV_SECRET))[0]
            == 400
        )
        bad = b'{"Event": "CallInitiated", "From": "' + PHONES[3].encode() + b'", "CallUUID": '
        bad_headers = signed_headers(bad, ENV_SECRET.encode())
        assert post(f"{url}/webhook/a", bad, bad_headers)[0] == 400
        sent_signatures.append(bad_headers[SIGNATURE_HEADER])
        assert (
            post(f"{url}/webhook/b", *signed("b", call_initiated(From=PHONES[4], TrunkID=TRUNK_A_ID), FILE_SECRET))[0]
            == 400
        )
        assert post(f"{url}/webhook/zz-{PHONES[0][1:]}", b"{}", {SIGNATURE_HEADER: "00" * 32})[0] == 404
        assert post(f"{url}/webhook/a", b"x" * 70000, {SIGNATURE_HEADER: "ab" * 32})[0] == 413
        dup_raw, dup_headers = signed("a", call_initiated(From=PHONES[0]), ENV_SECRET)
        assert post(f"{url}/webhook/a", dup_raw, dup_headers)[0] == 200
        assert post(f"{url}/webhook/a", dup_raw, dup_headers)[0] == 200  # duplicate

        # A good reload picks up a new file secret; then broken reloads.
        secret_file.write_text(NEW_FILE_SECRET + "\n")
        status, _ = post(exp.metrics_url + "/-/reload", b"", {})
        assert status == 200
        assert (
            post(f"{url}/webhook/b", *signed("b", call_initiated(From=PHONES[1], TrunkID=TRUNK_B_ID), NEW_FILE_SECRET))[
                0
            ]
            == 200
        )
        secret_file.write_text("")  # empty secret file: the reload fails, the old secret stays
        status, body = post(exp.metrics_url + "/-/reload", b"", {})
        assert status == 500
        assert b"the secret file is empty" in body
        cfg = yaml.safe_load(exp.config_path.read_text())
        cfg["trunks"][0]["secret"] = ENV_SECRET  # both secret_env and secret: refused
        exp.config_path.write_text(yaml.safe_dump(cfg))
        status, body = post(exp.metrics_url + "/-/reload", b"", {})
        assert status == 500
        for secret in (ENV_SECRET, OLD_SECRET, FILE_SECRET, NEW_FILE_SECRET):
            assert secret.encode() not in body
        exp.config_path.write_text("trunks: [{name: a, secret: " + ENV_SECRET + "\n")  # broken YAML
        exp.proc.popen.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        status, metrics = http_get(exp.metrics_url + "/metrics")
        assert status == 200
        assert b"vobiz_config_last_reload_successful 0.0" in metrics
        for needle in (ENV_SECRET, OLD_SECRET, FILE_SECRET, NEW_FILE_SECRET, *PHONES):
            assert needle.encode() not in metrics
    output = exp.proc.log()
    assert "reload failed" in output and "webhook refused" in output and "event recorded" in output
    assert (
        leaks(output, [ENV_SECRET, OLD_SECRET, FILE_SECRET, NEW_FILE_SECRET, "attacker-guess", *sent_signatures]) == []
    )
    # Masked numbers are what the debug log shows instead.
    assert "+9198******33" in output


def test_check_config_never_prints_a_secret(tmp_path: Path) -> None:
    """Operators paste secrets into the wrong key: the problem names the key, never the value."""
    secret = "pasted-secret-Jd8sK2mQ9vL4xR7t"
    cases = [
        {"name": "a", "secret_file": secret},  # the secret where its path belongs
        {"name": "a", "secret_file": str(tmp_path)},  # a directory
        {"name": "a", "secret": secret, "secret_file": str(tmp_path / "nope")},  # two sources
        {"name": "a", "secret": [secret]},  # wrong type
        {"name": "a", "previous_secrets_file": [secret]},
        {"name": "a", "secret_file": str(tmp_path / "empty")},
    ]
    (tmp_path / "empty").write_text("\n")
    for i, trunk in enumerate(cases):
        cfg = tmp_path / f"c{i}.yaml"
        cfg.write_text(yaml.safe_dump({"trunks": [trunk]}))
        proc = run_cli("check-config", str(cfg))
        assert proc.returncode == 1, (trunk, proc.stdout, proc.stderr)
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"{cfg}: trunks[0]."), proc.stderr
        assert secret not in proc.stderr
    # A secret inside broken YAML is not quoted back either.
    cfg = tmp_path / "broken.yaml"
    cfg.write_text(f"trunks:\n  - name: a\n    secret: {secret}: [\n")
    proc = run_cli("check-config", str(cfg))
    assert proc.returncode == 1
    assert secret not in proc.stderr and secret not in proc.stdout
    # And serve refuses to start without echoing it.
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(tmp_path / "c0.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    assert secret not in proc.stderr + proc.stdout
    assert "trunks[0].secret_file" in proc.stderr
