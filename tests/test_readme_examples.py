"""The README's hand-made webhook example works as written: its shell block (openssl signature,
curl) is run with bash against a real exporter with config.example.yaml, and its JSON samples
are valid events of the exporter's parser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter import events

from .helpers import exposed
from .procs import ROOT, run_exporter

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()
SECTION = README.split("## Sending a test webhook by hand", 1)[1].split("\n## ", 1)[0]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", SECTION, flags=re.S)


def test_json_samples_are_events_the_exporter_parses() -> None:
    samples = [json.loads(b) for b in _blocks("json")]
    assert [s["Event"] for s in samples] == ["CallInitiated", "Hangup"]
    initiated, hangup = (
        events.normalise(events.parse_body(json.dumps(s).encode(), "application/json"), None) for s in samples
    )
    assert isinstance(initiated, events.CallInitiated) and initiated.allowed is True
    assert initiated.invalid_fields == ()
    assert isinstance(hangup, events.Hangup) and hangup.invalid_fields == ()
    assert (hangup.hangup_cause, hangup.hangup_category, hangup.hangup_source) == ("normal_hangup", "normal", "caller")
    assert (hangup.duration, hangup.billsec, hangup.ring_time, hangup.cost, hangup.mos) == (95, 78, 17, 0.78, 4.3)
    # The samples and the shell block describe the same call, field for field.
    shell = _blocks("sh")[0]
    for sample in samples:
        for key in sample:
            assert f'"{key}":' in shell, key


def _post(script: str) -> list[str]:
    res = subprocess.run(["bash", "-euc", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return [json.loads(line)["outcome"] for line in res.stdout.splitlines()]


@pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("curl")), reason="needs openssl and curl")
def test_shell_block_signs_and_posts_both_events(tmp_path: Path) -> None:
    (script,) = _blocks("sh")
    assert script.startswith("URL=http://127.0.0.1:9613/webhook/demo ")
    raw = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    with run_exporter(tmp_path, raw) as exp:
        # The only change: the exporter under test listens on a free port, not :9613.
        run = script.replace("http://127.0.0.1:9613/", exp.webhook_url + "/", 1)
        assert _post(run) == ["accepted", "accepted"]
        text = exp.scrape()
        assert exposed(text, "vobiz_call_attempts_total", trunk="demo", result="admitted") == 1.0
        assert exposed(text, "vobiz_calls_answered_total", trunk="demo") == 1.0
        assert exposed(text, "vobiz_calls_active", trunk="demo") == 0.0
        assert exposed(text, "vobiz_call_billable_seconds_sum", trunk="demo") == 78.0
        assert exposed(text, "vobiz_webhook_requests_total", trunk="demo", outcome="accepted") == 2.0
        # The same call sent twice (a fixed CALL id): counted once, then answered duplicate.
        call_line = re.search(r"^CALL=.*$", run, flags=re.M)
        assert call_line is not None
        fixed = run.replace(call_line.group(0), "CALL=readme-test-fixed", 1)
        assert _post(fixed) == ["accepted", "accepted"]
        assert _post(fixed) == ["duplicate", "duplicate"]
        text = exp.scrape()
        assert exposed(text, "vobiz_call_attempts_total", trunk="demo", result="admitted") == 2.0
        assert exposed(text, "vobiz_webhook_requests_total", trunk="demo", outcome="duplicate") == 2.0
        assert exposed(text, "vobiz_webhook_requests_total", trunk="demo", outcome="invalid_signature") == 0.0
