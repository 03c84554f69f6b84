"""The config schema is declared once (exporter/config.py): the README's configuration reference
and config.example.yaml must agree with it, and writing a default out changes nothing."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import schema
from exporter.config import Config, ConfigError, DedupeSection, Trunk, load_config, parse_config

from .helpers import ENV, raw_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE = ROOT / "config.example.yaml"
ROWS = list(schema.rows(Config))
KEYS = {row.key for row in ROWS}


def readme_rows() -> dict[str, str]:
    """key -> default of each row of the README's configuration reference table."""
    out = {}
    for line in schema.readme_table(README).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        m = re.fullmatch(r"`([^`]+)`", cells[0])
        assert m, f"a README row must name one key: {line}"
        out[m.group(1)] = cells[1]
    return out


def test_every_schema_key_is_in_the_readme_with_its_default() -> None:
    rows = readme_rows()
    assert {r.key: r.default for r in ROWS if rows.get(r.key) != r.default} == {}
    assert rows["webhook.read_timeout"] == "`10s`" and rows["trunks[].name"] == "required"
    assert rows["dedupe.redis_url"] == "—" and rows["metrics.destinations.enabled"] == "`false`"


def test_no_readme_row_names_a_key_outside_the_schema() -> None:
    assert sorted(readme_rows().keys() - KEYS) == []


def test_readme_table_is_rendered_from_the_schema() -> None:
    # Docs too: refresh with `python -m exporter.schema --write README.md`.
    assert schema.readme_table(README) == schema.reference_table(Config)
    assert schema.main([str(ROOT / "README.md")]) == 0


def _uncommented(text: str) -> str:
    """config.example.yaml with its commented-out keys (``# key: value``) switched on."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)# ?(.*)$", line)
        if m and _is_key_line(m.group(2)):
            line = m.group(1) + m.group(2)
        out.append(line)
    return "\n".join(out) + "\n"


def _is_key_line(text: str) -> bool:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return False  # prose
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return isinstance(value, dict) and len(value) == 1 and bool(re.fullmatch(r"[a-z_]+", str(next(iter(value)))))


def _keys_in(node: object, path: str) -> Iterator[str]:
    """The dotted key paths of a YAML tree, stopping at schema keys (whose values are data)."""
    if path in KEYS:
        yield path
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _keys_in(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for item in node:
            yield from _keys_in(item, path + "[]")
    else:
        yield path


def test_every_key_in_the_example_is_a_schema_key() -> None:
    text = EXAMPLE.read_text()
    live = set(_keys_in(yaml.safe_load(text), ""))
    every = set(_keys_in(yaml.safe_load(_uncommented(text)), ""))
    assert sorted(every - KEYS) == []
    # The walk sees the commented-out keys too (tls, redis_url, metrics, the production trunk).
    assert {"webhook.tls.cert_file", "dedupe.redis_url", "metrics.destinations.allowed"} <= every - live
    assert "trunks[].previous_secrets_file" in every and "trunks[].hourly_budget.currency" in live


def test_example_parses_cleanly_and_shows_the_defaults() -> None:
    cfg = load_config(str(EXAMPLE), env={})
    assert cfg.warnings == (
        f"{EXAMPLE}: trunks[0].secret: inline secret in the config file; use secret_env or secret_file outside demos",
    )
    # "Every key is shown with its default": the sections it sets are the defaults.
    assert (cfg.web, cfg.webhook, cfg.signature, cfg.dedupe, cfg.calls, cfg.metrics) == (
        Config().web,
        Config().webhook,
        Config().signature,
        Config().dedupe,
        Config().calls,
        Config().metrics,
    )


def _set(raw: dict[str, Any], path: str, value: object) -> None:
    """Set ``path`` (``a.b``, ``trunks[].x``: on the first trunk) in a raw config."""
    node: Any = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part[:-2], [{}])[0] if part.endswith("[]") else node.setdefault(part, {})
    node[parts[-1]] = value


@pytest.mark.parametrize("row", [r for r in ROWS if r.default not in ("—", "required")], ids=lambda r: r.key)
def test_writing_a_default_out_changes_nothing(row: schema.Row) -> None:
    base: dict[str, Any] = {"trunks": [{"name": "t", "secret_env": "SECRET_A"}]}
    raw = copy.deepcopy(base)
    _set(raw, row.key, yaml.safe_load(row.default.strip("`")))
    assert parse_config(raw, source="c.yaml", env=ENV) == parse_config(base, source="c.yaml", env=ENV)


def test_secret_fields_stay_out_of_repr() -> None:
    hidden = {(cls.__name__, f.name) for cls in (Trunk, DedupeSection) for f in dataclasses.fields(cls) if not f.repr}
    assert hidden == {
        ("Trunk", "secret"),
        ("Trunk", "previous_secrets"),
        ("DedupeSection", "redis_url"),
        ("DedupeSection", "redis_password"),
    }


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.key)
def test_no_problem_quotes_a_value(row: schema.Row) -> None:
    """Whatever a key holds (a pasted secret, say), no problem line repeats it."""
    raw = raw_config()
    value = "s3cr3t value/with spaces{}"
    _set(raw, row.key, value)
    try:
        cfg = parse_config(raw, source="c.yaml", env=ENV)
    except ConfigError as exc:
        assert exc.problems and not [p for p in exc.problems if "s3cr3t" in p]
    else:
        assert row.key in {"web.config_file", "trunks[].id", "trunks[].secret", "dedupe.redis_password_env"}
        assert ("s3cr3t" in repr(cfg)) == (row.key in {"web.config_file", "trunks[].id", "dedupe.redis_password_env"})
