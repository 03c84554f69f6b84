"""Config parsing: every problem reported by key, never a secret; check-config's contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import (
    ConfigError,
    ListenAddress,
    load_config,
    parse_config,
    parse_duration,
    parse_listen_address,
    with_overrides,
)

from .helpers import ENV, SECRET_A, SECRET_OLD, TRUNK_A_ID, raw_config

ROOT = Path(__file__).resolve().parent.parent


def problems_of(raw: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="c.yaml", env=ENV if env is None else env)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15.0),
        ("15m", 900.0),
        ("4h", 14400.0),
        ("0", 0.0),
        (0, 0.0),
        # Prometheus' grammar: integer components, units in descending order, combined.
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("90s", 90.0),
        ("1w", 604800.0),
        ("1y", 31536000.0),
        ("2w3d", 1468800.0),
        ("1m30s500ms", 90.5),
        ("1d2h3m4s5ms", 93784.005),
        ("0s", 0.0),
        ("0ms", 0.0),
        # Kept for compatibility (accepted before): one decimal number with one unit.
        ("1.5s", 1.5),
        ("1.5h", 5400.0),
        ("0.5d", 43200.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    "text",
    [
        "15",
        15,
        "m",
        "-1s",
        True,
        None,
        "1 h",
        "",
        "30m1h",
        "1h1h",
        "1s1m",
        "1ms1s",
        "1.5h30m",
        "1h0.5m",
        "1.5.5h",
        "1hms",
        "1D",
        "1H",
        "5x",
        ".5h",
        "1e3s",
        1.5,
    ],
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r"^must be a duration like 500ms, 90s, 15m, 1h30m or 1d \(or 0\)$"):
        parse_duration(text)


def test_prometheus_durations_in_a_config() -> None:
    cfg = parse_config(
        raw_config(signature={"replay_tolerance": "1h30m"}, dedupe={"ttl": "1d"}, calls={"max_call_duration": "6h"}),
        source="c.yaml",
        env=ENV,
    )
    assert cfg.signature.replay_tolerance == 5400.0 and cfg.dedupe.ttl == 86400.0
    assert cfg.calls.max_call_duration == 21600.0
    assert problems_of(raw_config(dedupe={"ttl": "30m1h"})) == [
        "c.yaml: dedupe.ttl: must be a duration like 500ms, 90s, 15m, 1h30m or 1d (or 0)"
    ]


def test_unknown_key_suggests_the_nearest_known_one() -> None:
    raw = raw_config(signature={"replay_tolerence": "15m", "mod": "report"}, dedup={"ttl": "1h"})
    raw["trunks"][0]["secretenv"] = "X"
    assert problems_of(raw) == [
        "c.yaml: dedup: unknown key (did you mean `dedupe`?)",
        "c.yaml: signature.replay_tolerence: unknown key (did you mean `replay_tolerance`?)",
        "c.yaml: signature.mod: unknown key (did you mean `mode`?)",
        "c.yaml: trunks[0].secretenv: unknown key (did you mean `secret_env`?)",
    ]


def test_parse_listen_address() -> None:
    assert parse_listen_address(":9612") == ListenAddress("", 9612)
    assert parse_listen_address("127.0.0.1:9613") == ListenAddress("127.0.0.1", 9613)
    assert parse_listen_address("[::1]:80") == ListenAddress("::1", 80)
    assert str(ListenAddress("::1", 80)) == "[::1]:80"
    for bad in ["9612", ":99999", "host:port", 9612]:
        with pytest.raises(ValueError):
            parse_listen_address(bad)


def test_valid_config_resolves_secrets_and_defaults() -> None:
    cfg = parse_config(raw_config(), source="c.yaml", env=ENV)
    alpha, bravo = cfg.trunks
    assert alpha.name == "alpha" and alpha.id == TRUNK_A_ID
    assert alpha.secrets == (SECRET_A.encode(), SECRET_OLD.encode())
    assert alpha.max_concurrent_calls == 10 and alpha.cps_limit == 2.0
    assert alpha.hourly_budget is not None and alpha.hourly_budget.currency == "INR"
    assert bravo.method == "GET"
    assert cfg.webhook.max_body_bytes == 65536 and cfg.webhook.read_timeout == 10.0
    assert cfg.signature.mode == "enforce" and cfg.signature.replay_tolerance == 900.0
    assert cfg.dedupe.ttl == 3600.0 and cfg.calls.max_call_duration == 14400.0
    assert SECRET_A not in repr(cfg)


def test_every_problem_is_reported_with_its_key() -> None:
    raw = raw_config(
        web={"listen_address": "nope", "bogus": 1},
        signature={"mode": "strict", "replay_tolerance": "2h"},
        dedupe={"ttl": "1h"},
    )
    raw["trunks"].append({"name": "alpha", "id": TRUNK_A_ID, "secret_env": "MISSING"})
    raw["trunks"].append({"name": "Bad Name", "secret": "x"})
    problems = problems_of(raw)
    assert problems == [
        "c.yaml: web.bogus: unknown key",
        "c.yaml: web.listen_address: must be host:port, e.g. :9612 or 127.0.0.1:9612",
        "c.yaml: signature.mode: must be one of enforce, report, off",
        "c.yaml: dedupe.ttl: must be >= signature.replay_tolerance, or a replayed event outlives its dedupe key",
        'c.yaml: trunks[2].name: duplicate name "alpha"',
        f'c.yaml: trunks[2].id: duplicate id "{TRUNK_A_ID}"',
        "c.yaml: trunks[2].secret_env: environment variable MISSING is not set or empty",
        "c.yaml: trunks[3].name: must match [a-z0-9_-]{1,64}",
    ]


def test_missing_secret_unknown_reserved_and_budget_problems() -> None:
    raw = {
        "trunks": [
            {"name": "unknown", "secret": "x"},
            {"name": "b"},
            {"name": "c", "secret": "x", "secret_env": "SECRET_A"},
            {"name": "d", "secret": "x", "hourly_budget": {"amount": 5, "currency": "inr"}},
            {"name": "e", "secret": "x", "method": "PUT", "max_concurrent_calls": 0, "colour": "red"},
        ]
    }
    assert problems_of(raw) == [
        'c.yaml: trunks[0].name: "unknown" is reserved for unresolved requests',
        "c.yaml: trunks[1].secret_env: a secret is required: set secret_env or secret_file",
        "c.yaml: trunks[2].secret_env: set only one of secret_env, secret_file and secret",
        "c.yaml: trunks[3].hourly_budget.currency: must be an upper-case 3-letter code",
        "c.yaml: trunks[4].colour: unknown key",
        "c.yaml: trunks[4].method: must be one of POST, GET",
        "c.yaml: trunks[4].max_concurrent_calls: must be a positive integer",
    ]


@pytest.mark.parametrize(
    ("section", "problems"),
    [
        # A TLS section with a null file once turned TLS off without a word: the webhook
        # listener served plain HTTP (a templated value left empty renders as null).
        (
            {"webhook": {"tls": {"cert_file": None, "key_file": None}}},
            ["c.yaml: webhook.tls.cert_file: is required", "c.yaml: webhook.tls.key_file: is required"],
        ),
        (
            {"webhook": {"tls": {"cert_file": None}}},
            ["c.yaml: webhook.tls.cert_file: is required", "c.yaml: webhook.tls.key_file: is required"],
        ),
        (
            {"webhook": {"tls": {"cert_file": ""}}},
            ["c.yaml: webhook.tls.cert_file: must be a non-empty string", "c.yaml: webhook.tls.key_file: is required"],
        ),
        (
            {"webhook": {"tls": {}}},
            ["c.yaml: webhook.tls.cert_file: is required", "c.yaml: webhook.tls.key_file: is required"],
        ),
        (
            {"webhook": {"tls": {"cert_file": 5, "key_file": []}}},
            [
                "c.yaml: webhook.tls.cert_file: must be a non-empty string",
                "c.yaml: webhook.tls.key_file: must be a non-empty string",
            ],
        ),
        ({"webhook": {"tls": ""}}, ["c.yaml: webhook.tls: must be a mapping with cert_file and key_file"]),
        # A budget with a null amount was dropped the same way.
        (
            {"hourly_budget": {"amount": None, "currency": "INR"}},
            ["c.yaml: trunks[0].hourly_budget.amount: is required"],
        ),
        (
            {"hourly_budget": {}},
            [
                "c.yaml: trunks[0].hourly_budget.amount: is required",
                "c.yaml: trunks[0].hourly_budget.currency: must be an upper-case 3-letter code",
            ],
        ),
    ],
)
def test_a_null_required_key_is_a_problem_not_an_unset_section(section: dict[str, Any], problems: list[str]) -> None:
    raw = raw_config(**{k: v for k, v in section.items() if k != "hourly_budget"})
    if "hourly_budget" in section:
        raw["trunks"][0]["hourly_budget"] = section["hourly_budget"]
    assert problems_of(raw) == problems


def test_no_tls_section_or_a_null_one_is_plain_http() -> None:
    assert parse_config(raw_config(), env=ENV).webhook.tls is None
    assert parse_config(raw_config(webhook={"tls": None}), env=ENV).webhook.tls is None


def test_secret_pasted_as_env_name_is_never_echoed() -> None:
    raw = {"trunks": [{"name": "a", "secret_env": "0f3a9c-pasted secret value"}]}
    assert problems_of(raw) == [
        "c.yaml: trunks[0].secret_env: must be the name of an environment variable, like VOBIZ_SECRET_MAIN"
    ]


def test_web_config_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = parse_config(raw_config(web={"config_file": "web.yml"}), source="c.yaml", env=ENV, base_dir=str(tmp_path))
    assert cfg.web.config_file == str(tmp_path / "web.yml")


def test_no_trunks_and_non_mapping() -> None:
    assert problems_of({}) == ["c.yaml: trunks: at least one trunk is required"]
    assert problems_of([1, 2]) == ["c.yaml: (top level): must be a mapping"]


def test_inline_secret_is_warned_not_logged() -> None:
    cfg = parse_config({"trunks": [{"name": "demo", "secret": "hunter2-demo"}]}, source="c.yaml", env={})
    assert cfg.warnings == (
        "c.yaml: trunks[0].secret: inline secret in the config file; use secret_env or secret_file outside demos",
    )
    assert "hunter2" not in repr(cfg)


def test_secret_file_trailing_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(b"file-secret-value\n")
    (tmp_path / "old").write_bytes(b"old-secret\r\n")
    (tmp_path / "empty").write_bytes(b"\n")
    raw = {"trunks": [{"name": "f", "secret_file": "s", "previous_secrets_file": ["old"]}]}
    cfg = parse_config(raw, source="c.yaml", env={}, base_dir=str(tmp_path))
    assert cfg.trunks[0].secrets == (b"file-secret-value", b"old-secret")
    bad = {"trunks": [{"name": "f", "secret_file": "empty"}, {"name": "g", "secret_file": "nope"}]}
    with pytest.raises(ConfigError) as info:
        parse_config(bad, source="c.yaml", env={}, base_dir=str(tmp_path))
    assert info.value.problems == [
        "c.yaml: trunks[0].secret_file: the secret file is empty",
        "c.yaml: trunks[1].secret_file: cannot read the secret file (No such file or directory)",
    ]


def test_url_nonce_needs_public_url_and_redis_needs_url() -> None:
    raw = raw_config(signature={"scheme": "url-nonce-v3"}, dedupe={"backend": "redis"})
    assert problems_of(raw) == [
        "c.yaml: signature.public_url: is required with scheme url-nonce-v3",
        "c.yaml: dedupe.redis_url: is required with backend redis",
    ]


def test_networks_are_parsed() -> None:
    cfg = parse_config(
        raw_config(webhook={"allowed_sources": ["203.0.113.0/24"], "trusted_proxies": ["10.0.0.1"]}),
        source="c.yaml",
        env=ENV,
    )
    assert [str(n) for n in cfg.webhook.allowed_sources] == ["203.0.113.0/24"]
    assert [str(n) for n in cfg.webhook.trusted_proxies] == ["10.0.0.1/32"]
    assert problems_of(raw_config(webhook={"allowed_sources": ["300.1.1.1/8"]})) == [
        "c.yaml: webhook.allowed_sources[0]: is not a valid CIDR like 10.0.0.0/8"
    ]


def test_overrides_win_over_the_file() -> None:
    cfg = parse_config(raw_config(), source="c.yaml", env=ENV)
    new = with_overrides(
        cfg, {"web.listen_address": ListenAddress("127.0.0.1", 1), "web.telemetry_path": "/m", "x": None}
    )
    assert new.web.listen_address == ListenAddress("127.0.0.1", 1)
    assert new.web.telemetry_path == "/m"
    assert new.webhook == cfg.webhook


def test_example_config_is_valid_as_shipped() -> None:
    cfg = load_config(str(ROOT / "config.example.yaml"), env={})
    assert [t.name for t in cfg.trunks] == ["demo"]
    assert cfg.trunks[0].max_concurrent_calls == 30
    assert len(cfg.warnings) == 1 and "inline secret" in cfg.warnings[0]


def test_load_config_reports_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("trunks: [\n  - name: a\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={})
    assert info.value.problems == [f"{path}: line 2: invalid YAML"]


def run_check(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=str(ROOT),
    )


def test_check_config_cli_success_and_failure(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"trunks": [{"name": "a", "secret_env": "CHK_SECRET"}]}))
    res = run_check(good, env={"CHK_SECRET": "do-not-print-me", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0
    assert res.stdout.count("\n") == 1
    assert res.stdout.startswith(f"{good}: OK: 1 trunk(s) [a]")
    assert "do-not-print-me" not in res.stdout + res.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"trunks": [{"name": "a", "secret": "inline-topsecret"}, {"name": "a", "secret": "x"}]})
    )
    res = run_check(bad)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.splitlines() == [f'{bad}: trunks[1].name: duplicate name "a"']
    assert "inline-topsecret" not in res.stderr
