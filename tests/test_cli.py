"""The command line: check-config's ways to name the file, unknown-key suggestions, help texts,
--version, and the start-up log line about the signature mode."""

from __future__ import annotations

import gc
import json
import platform
import weakref
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.app import Runtime
from exporter.cli import CONFIG_ENV, freeze_start_up_objects, main
from exporter.config import Config, parse_config
from exporter.metrics import MAX_RETIRED_TRUNKS

from .helpers import ENV, raw_config
from .procs import run_cli, run_exporter

SUMMARY_START = ": OK: 1 trunk(s) [a]"


def _write(tmp_path: Path, raw: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def good(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLI_SECRET", "cli-secret-never-printed")
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    return _write(tmp_path, {"trunks": [{"name": "a", "secret_env": "CLI_SECRET"}]}, "good.yaml")


def test_check_config_positional_flag_and_env(
    good: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["check-config", str(good)],
        ["check-config", "--config", str(good)],
        ["check-config", str(good), "--config", str(good)],
    ):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert out.startswith(f"{good}{SUMMARY_START}") and out.count("\n") == 1, argv
        assert err == ""
    monkeypatch.setenv(CONFIG_ENV, str(good))
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}{SUMMARY_START}") and err == ""


def test_check_config_flag_wins_over_env(
    good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "does-not-exist.yaml"))
    assert main(["check-config", "--config", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"{good}{SUMMARY_START}")


def test_check_config_without_a_file_or_with_two(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"vobiz-exporter check-config: no configuration: pass FILE, --config FILE or set {CONFIG_ENV}\n")
    other = tmp_path / "other.yaml"
    assert main(["check-config", str(good), "--config", str(other)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"vobiz-exporter check-config: two files given ({good} and --config {other}): pass one\n"


def test_check_config_env_in_a_real_process(good: Path) -> None:
    """The installed entry point, with only the environment naming the file."""
    res = run_cli(
        "check-config",
        env={"PATH": "/usr/bin:/bin", "CLI_SECRET": "cli-secret-never-printed", CONFIG_ENV: str(good)},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{good}{SUMMARY_START}")
    assert "cli-secret-never-printed" not in res.stdout + res.stderr


def test_check_config_suggests_the_nearest_key(good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(
        tmp_path,
        {
            "signature": {"replay_tolerence": "15m", "mode": "enforce"},
            "dedupe": {"tll": "1h"},
            "trunks": [{"name": "a", "secret_env": "CLI_SECRET", "max_concurent_calls": 3, "colour": "red"}],
        },
        "bad.yaml",
    )
    assert main(["check-config", "--config", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{bad}: signature.replay_tolerence: unknown key (did you mean `replay_tolerance`?)",
        f"{bad}: dedupe.tll: unknown key (did you mean `ttl`?)",
        f"{bad}: trunks[0].colour: unknown key",  # nothing near: no guess (keys in file order)
        f"{bad}: trunks[0].max_concurent_calls: unknown key (did you mean `max_concurrent_calls`?)",
    ]


def test_check_config_accepts_prometheus_durations(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path,
        {
            "signature": {"replay_tolerance": "1h30m"},
            "dedupe": {"ttl": "1d"},
            "calls": {"max_call_duration": "90m"},
            "trunks": [{"name": "a", "secret_env": "CLI_SECRET"}],
        },
    )
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}{SUMMARY_START}")


def test_version_names_the_python_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"vobiz-exporter {__version__} (Python {platform.python_version()})\n"


def test_log_flags_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert (
        "--log.level {debug,info,warn,warning,error} only log messages with this severity or above "
        "(default info)" in text
    )
    assert "--log.format {logfmt,json} output format of log messages (default logfmt)" in text


def _start_lines(tmp_path: Path, mode: str) -> list[dict[str, object]]:
    raw = raw_config(signature={"mode": mode})
    with run_exporter(tmp_path, raw, env=ENV, extra_args=["--log.format", "json"], name=f"exp-{mode}") as exp:
        pass
    return [json.loads(line) for line in exp.proc.log().splitlines() if line.startswith("{")]


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["report", "off"])
def test_start_up_warns_when_signatures_are_not_enforced(tmp_path: Path, mode: str) -> None:
    lines = _start_lines(tmp_path, mode)
    started = [x for x in lines if x["msg"] == "vobiz-exporter started"]
    assert len(started) == 1 and started[0]["signature_mode"] == mode and started[0]["trunks"] == 2
    warnings = [x for x in lines if str(x["msg"]).startswith("webhook signatures are not enforced")]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning" and warnings[0]["signature_mode"] == mode
    assert lines.index(warnings[0]) == lines.index(started[0]) + 1  # right after the start-up line


@pytest.mark.e2e
def test_start_up_in_enforce_mode_has_no_warning(tmp_path: Path) -> None:
    lines = _start_lines(tmp_path, "enforce")
    started = [x for x in lines if x["msg"] == "vobiz-exporter started"]
    assert len(started) == 1 and started[0]["signature_mode"] == "enforce"
    assert [x for x in lines if x["level"] == "warning"] == []


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _tracked(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_freezing_collects_the_garbage_first_and_takes_the_rest_out_of_the_collectors_walks() -> None:
    assert gc.get_freeze_count() == 0
    gc.disable()  # (an automatic pass between the lines below would free the cycle early)
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a reference cycle: only the collector frees it
        gone = weakref.ref(a)
        del a, b
        kept = _Node()
        assert gone() is not None and _tracked(kept)
        frozen = freeze_start_up_objects()
        assert gone() is None  # collected, not frozen for ever
        assert frozen == gc.get_freeze_count() > 0
        assert not _tracked(kept)  # in the permanent generation: no collection walks it
        later = _Node()
        assert _tracked(later)  # what comes after start-up is collected as before
    finally:
        gc.unfreeze()
        gc.enable()
    assert _tracked(kept)


def _trunks_config(names: list[str], destinations: bool) -> Config:
    raw = raw_config(metrics={"destinations": {"enabled": destinations}})
    raw["trunks"] = [raw["trunks"][0], *({"name": n, "secret_env": "SECRET_B"} for n in names)]
    return parse_config(raw, source="test.yaml", env=ENV)


def test_a_reload_frees_the_frozen_start_up_state_it_drops() -> None:
    """A frozen object in a reference cycle is never freed. What a reload drops of the start-up
    state (a removed trunk's metrics once evicted from the retired ones, the destination
    families when turned off, the old pipeline) must therefore be free of cycles: reference
    counting alone frees it, with the collector off."""
    rt = Runtime(_trunks_config(["bravo"], True), CollectorRegistry())
    gc.disable()
    freeze_start_up_objects()
    try:
        trunk = weakref.ref(rt.metrics.trunks["bravo"])
        destinations = weakref.ref(rt.metrics.destinations)
        pipeline = weakref.ref(rt.pipeline)
        rt.apply(_trunks_config(["t0"], False))
        assert trunk() is not None  # retired, kept for a reload that brings it back
        assert destinations() is None and pipeline() is None
        for i in range(1, MAX_RETIRED_TRUNKS + 1):  # one retirement each: bravo is evicted
            rt.apply(_trunks_config([f"t{i}"], False))
        assert trunk() is None
        assert sorted(rt.metrics.trunks) == ["alpha", f"t{MAX_RETIRED_TRUNKS}"]
    finally:
        gc.unfreeze()
        gc.enable()


def _frozen_at_start(tmp_path: Path, raw: dict[str, object], name: str) -> tuple[int, str]:
    """The frozen-object count of a served exporter's debug line, and the message after it."""
    with run_exporter(
        tmp_path, raw, env=ENV, extra_args=["--log.format", "json", "--log.level", "debug"], name=name
    ) as exp:
        pass
    lines = [json.loads(line) for line in exp.proc.log().splitlines() if line.startswith("{")]
    frozen = [i for i, x in enumerate(lines) if x["msg"] == "start-up objects frozen for the garbage collector"]
    assert len(frozen) == 1
    line = lines[frozen[0]]
    assert line["level"] == "debug" and isinstance(line["objects"], int)
    return line["objects"], lines[frozen[0] + 1]["msg"]


@pytest.mark.e2e
def test_serve_freezes_its_start_up_objects_with_each_trunks_metric_state(tmp_path: Path) -> None:
    few, after = _frozen_at_start(tmp_path, raw_config(), "exp-gc-2")
    assert after == "vobiz-exporter started"
    raw = raw_config()
    raw["trunks"] = [*raw["trunks"], *({"name": f"extra{i}", "secret_env": "SECRET_B"} for i in range(40))]
    many, _ = _frozen_at_start(tmp_path, raw, "exp-gc-42")
    # The freeze comes after the runtime is built: each trunk's metric state is in it (about 157
    # tracked objects per trunk, measured in process; 100 is the bound, well below).
    assert many - few >= 40 * 100
