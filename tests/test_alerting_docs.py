"""docs/alerting.md: its Slack and PagerDuty receivers, put into the example Alertmanager config in
place of the placeholder receivers, pass the real ``amtool check-config``; every receiver the
example's routes name exists; a misspelt field is refused (the check can fail)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .procs import ROOT

DOC = (ROOT / "docs" / "alerting.md").read_text()
EXAMPLE = ROOT / "prometheus" / "alertmanager.example.yml"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)


def _amtool(tmp_path: Path, cfg: dict[str, Any], name: str) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is needed (Debian package prometheus-alertmanager)"
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)


def _with_receivers(block: str) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    cfg["receivers"] = yaml.safe_load(block)["receivers"]
    return cfg


def _route_receivers(route: dict[str, Any]) -> set[str]:
    names = {route["receiver"]} if "receiver" in route else set()
    for child in route.get("routes", []):
        names |= _route_receivers(child)
    return names


def test_two_examples_slack_and_pagerduty() -> None:
    assert len(BLOCKS) == 2
    kinds = [sorted({k for r in yaml.safe_load(b)["receivers"] for k in r if k != "name"}) for b in BLOCKS]
    assert kinds == [["slack_configs"], ["pagerduty_configs", "slack_configs"]]


@pytest.mark.parametrize("index", [0, 1])
def test_receivers_pass_amtool_and_cover_every_route(tmp_path: Path, index: int) -> None:
    cfg = _with_receivers(BLOCKS[index])
    names = [r["name"] for r in cfg["receivers"]]
    assert sorted(names) == sorted(_route_receivers(cfg["route"])) == ["chat", "pager", "provider"]
    res = _amtool(tmp_path, cfg, f"am{index}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout and " - 3 receivers" in res.stdout
    # No secret inline: the Slack URL and the PagerDuty key come from files.
    for receiver in cfg["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack and slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
        for pd in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in pd and pd["routing_key_file"].startswith("/etc/alertmanager/secrets/")


def test_amtool_refuses_a_misspelt_field(tmp_path: Path) -> None:
    block = BLOCKS[1].replace("routing_key_file:", "routing_kee_file:")
    res = _amtool(tmp_path, _with_receivers(block), "bad")
    assert res.returncode == 1
    assert "field routing_kee_file not found" in res.stdout + res.stderr


def _rule_for() -> dict[str, str]:
    rules = yaml.safe_load((ROOT / "prometheus" / "rules" / "vobiz-alerts.rules.yml").read_text())
    return {r["alert"]: r.get("for", "") for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_demo_timings_name_the_rules_for() -> None:
    """The demo table and the README state each alert's ``for:`` as the shipped rules have it."""
    rows = re.findall(r"^\| `(Vobiz\w+)` \([a-z]+\) \| (\w+) \|", DOC, flags=re.M)
    assert [name for name, _ in rows] == [
        "VobizInsufficientBalance",
        "VobizComplianceRejections",
        "VobizTrunkRateLimited",
        "VobizCallRejectionSpike",
    ]
    shipped = _rule_for()
    assert {name: shipped[name] for name, _ in rows} == dict(rows)
    readme = (ROOT / "README.md").read_text()
    for name, for_ in re.findall(r"`(Vobiz\w+)` \(`for: (\w+)`", readme):
        assert shipped[name] == for_, name
    assert "`VobizCallRejectionSpike` (`for: 5m`" in readme
