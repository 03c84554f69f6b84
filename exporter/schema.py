"""The configuration schema's building blocks: each key of the file is declared once.

A section of the file is a frozen dataclass. A field that is a key of the file is declared with
``key(default, parse, doc)``: the default as an operator writes it in YAML, the parser (which
holds the constraint and raises ValueError with the reason) and a one-line doc. The field's
default is that YAML default parsed, so no default is written twice; ``section`` declares a nested
mapping (or list of mappings), ``custom`` a field that the section's own code reads from one or
more keys. ``Reader`` parses a section from the declarations, collecting every problem as
``FILE: key.path: why``; ``reference_table`` renders the README's configuration reference.

``python -m exporter.schema [--write] README.md`` checks (or rewrites) that table.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, Final, TypeVar

import yaml

T = TypeVar("T")
Parse = Callable[[object], Any]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()  # a key without a default: "is required" when missing
_SCHEMA = "vobiz.schema"  # the dataclass field metadata entry holding a Spec


class Invalid(ValueError):
    """Problems below a key (e.g. one per list item), as ``(suffix, why)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(why for _, why in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Key:
    """One key of the file. ``name`` "" is the field's own name; ``parse`` None: read by custom code."""

    name: str
    default: object  # as written in YAML; REQUIRED; None for "unset"
    doc: str
    parse: Parse | None = None
    path: bool = False  # a file name, resolved against the config file's directory

    @property
    def shown(self) -> str:
        """The default as the README shows it."""
        if self.default is REQUIRED:
            return "required"
        if self.default is None:
            return "—"
        if isinstance(self.default, bool):
            return "`true`" if self.default else "`false`"
        if isinstance(self.default, list | dict):
            return "`[]`" if isinstance(self.default, list) else "`{}`"
        if isinstance(self.default, str) and yaml.safe_load(self.default) != self.default:
            return f'`"{self.default}"`'  # as it must be written in YAML (``vobiz:`` would be a mapping)
        return f"`{self.default}`"


@dataclass(frozen=True, slots=True)
class Spec:
    """What a dataclass field is in the file: its keys, or a nested section (``many``: a list)."""

    keys: tuple[Key, ...]
    section: type | None = None
    many: bool = False


def _field(spec: Spec, value: object, secret: bool) -> Any:
    meta = {_SCHEMA: spec}
    if value is REQUIRED:
        return field(repr=not secret, metadata=meta)
    if isinstance(value, dict):
        return field(default_factory=lambda: dict(value), repr=not secret, metadata=meta)
    return field(default=value, repr=not secret, metadata=meta)


def key(default: object, parse: Parse, doc: str, *, secret: bool = False, path: bool = False) -> Any:
    """A field that is the key of its name; its default is ``parse(default)``."""
    value = default if default is None or default is REQUIRED else parse(default)
    return _field(Spec((Key("", default, doc, parse, path),)), value, secret)


def custom(value: object, *keys: Key, secret: bool = False) -> Any:
    """A field that the section's own code reads from ``keys`` (``value`` when none is set)."""
    return _field(Spec(keys), value, secret)


def section(cls: type, value: object, *, many: bool = False) -> Any:
    """A field that is a nested mapping of ``cls``'s keys (``many``: a list of them)."""
    return _field(Spec((Key("", None, ""),), cls, many), value, False)


@cache
def _specs(cls: type) -> tuple[tuple[str, Spec, object], ...]:
    out = []
    for f in fields(cls):
        spec = f.metadata.get(_SCHEMA)
        if spec is not None:
            fallback = None if f.default is MISSING else f.default
            out.append((f.name, spec, fallback))
    return tuple(out)


@cache
def key_names(cls: type) -> tuple[str, ...]:
    """The keys a mapping of ``cls`` may hold, in declaration order."""
    return tuple(k.name or name for name, spec, _ in _specs(cls) for k in spec.keys)


def required_keys(cls: type) -> tuple[str, ...]:
    return tuple(k.name or name for name, spec, _ in _specs(cls) for k in spec.keys if k.default is REQUIRED)


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    default: str
    doc: str


def rows(cls: type, prefix: str = "") -> Iterator[Row]:
    """Every key below ``cls``, with its dotted path (``trunks[].name``), default and doc."""
    for name, spec, _ in _specs(cls):
        for k in spec.keys:
            path = prefix + (k.name or name)
            if spec.section is not None:
                yield from rows(spec.section, path + ("[]." if spec.many else "."))
            else:
                yield Row(path, k.shown, k.doc)


def reference_table(cls: type) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{r.key}` | {r.default} | {r.doc} |" for r in rows(cls)]
    return "\n".join(lines) + "\n"


# --- reading a file ----------------------------------------------------------------------------


class Reader:
    """Walks the raw YAML tree, collecting problems instead of stopping at the first one."""

    def __init__(self, source: str, base_dir: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, key: str, why: str) -> None:
        self.problems.append(f"{self.source}: {key}: {why}")

    def resolve(self, path: str) -> str:
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.base_dir, path))

    def mapping(self, value: object, path: str, why: str = "must be a mapping") -> dict[str, Any] | None:
        """``value`` as a mapping; None when it is unset, or not a mapping (a problem)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.problem(path, why)
            return None
        return value

    def section(self, raw: Mapping[str, Any], name: str, cls: type) -> dict[str, Any]:
        """The mapping ``raw[name]`` of ``cls``'s keys ({} when unset or broken); unknown keys reported."""
        value = self.mapping(raw.get(name), name) or {}
        self.unknown_keys(value, name, key_names(cls))
        return value

    def unknown_keys(self, mapping: Mapping[str, Any], prefix: str, allowed: Iterable[str]) -> None:
        allowed_set = set(allowed)
        for k in mapping:
            if k not in allowed_set:
                path = f"{prefix}.{k}" if prefix else str(k)
                near = difflib.get_close_matches(str(k), sorted(allowed_set), n=1, cutoff=0.6)
                self.problem(path, f"unknown key (did you mean `{near[0]}`?)" if near else "unknown key")

    def get(self, mapping: Mapping[str, Any], prefix: str, key: str, conv: Callable[[object], T], default: T) -> T:
        """``conv(mapping[key])``; ``default`` when unset (null is unset) or invalid (a problem)."""
        if key not in mapping or mapping[key] is None:
            return default
        try:
            return conv(mapping[key])
        except Invalid as exc:
            for suffix, why in exc.problems:
                self.problem(f"{prefix}.{key}{suffix}", why)
        except ValueError as exc:
            self.problem(f"{prefix}.{key}", str(exc))
        return default

    def value(self, cls: type, mapping: Mapping[str, Any], prefix: str, name: str) -> Any:
        """Field ``name`` of ``cls`` read by its declared parser (None for a missing required key)."""
        spec, fallback = next((s, d) for n, s, d in _specs(cls) if n == name)
        k = spec.keys[0]
        assert k.parse is not None, name
        if k.default is REQUIRED and mapping.get(name) is None:
            self.problem(f"{prefix}.{name}", "is required")
            return None
        value = self.get(mapping, prefix, name, k.parse, fallback)
        return self.resolve(value) if k.path and isinstance(value, str) else value

    def read(self, cls: type, mapping: Mapping[str, Any], prefix: str, skip: Iterable[str] = ()) -> dict[str, Any]:
        """Every field of ``cls`` that has a parser (but ``skip``), in declaration order."""
        skipped = set(skip)
        return {
            name: self.value(cls, mapping, prefix, name)
            for name, spec, _ in _specs(cls)
            if name not in skipped and spec.section is None and spec.keys[0].parse is not None
        }

    def str_list(self, key: str, value: object) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, "must be a list of strings")
            return []
        return list(value)


# --- the README table ---------------------------------------------------------------------------

README_SECTION = "## Configuration reference"


def readme_table(text: str) -> str:
    """The table of the README's configuration reference, as it stands."""
    body = text.split(README_SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in body.splitlines() if line.startswith("|"))


def main(argv: list[str]) -> int:
    """Check (or with --write, rewrite) the README's configuration reference against the schema."""
    from .config import Config

    write = "--write" in argv
    path = next((a for a in argv if not a.startswith("--")), "README.md")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    old, new = readme_table(text), reference_table(Config)
    if old == new:
        return 0
    if not write:
        print(f"{path}: the configuration reference differs from the schema; run with --write", file=sys.stderr)
        return 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text.replace(old, new, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
