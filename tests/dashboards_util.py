"""Helpers to read the bundled Grafana dashboards and their PromQL.

Importable by several tests: the dashboard lint, the Prometheus parse check, and the end-to-end
test that evaluates every panel query against a Prometheus scraping the exporter.

``extract_expressions`` returns every target's query with Grafana's variables substituted, so
the result is plain PromQL that a real Prometheus can run. ``analyze`` is a small PromQL reader:
enough to find each metric selector, its label matchers, its range and the function call that
encloses it, which is what the lint rules need. It is not a full parser; a real Prometheus
checks that every query parses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = REPO / "grafana" / "dashboards"

DEFAULT_VARS = {
    "trunk": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
}
_VAR_RE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")
_TRUNK_NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")


# Panel targets that may be empty (no series at all) against an exporter fed by the simulator's
# `normal` scenario, and why. None: every series a panel reads is pre-created at 0 (docs/contract.md, also
# vobiz_event_invalid_fields_total per field), so every panel shows data on healthy traffic.
MAY_BE_EMPTY_UNDER_NORMAL: dict[tuple[str, str], str] = {}

# Targets that need the trunk config to set a limit or budget: empty for a trunk without one.
NEEDS_TRUNK_LIMITS: dict[str, str] = {
    "vobiz_trunk_max_concurrent_calls": "max_concurrent_calls",
    "vobiz_trunk_cps_limit": "cps_limit",
    "vobiz_trunk_hourly_budget": "hourly_budget",
}


# --- dashboards ------------------------------------------------------------------------------


# The boards generated from the core exporter metrics. The destinations board (issue 13) needs
# metrics.destinations enabled and has its own tests (tests/test_destinations_board.py).
CORE_BOARDS = ("vobiz-overview.json", "vobiz-trunk-detail.json")


def dashboard_paths() -> list[Path]:
    return [DASHBOARD_DIR / name for name in CORE_BOARDS]


def load_dashboard(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Extracted:
    dashboard_uid: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    instant: bool

    @property
    def name(self) -> str:
        return f"{self.dashboard_uid}#{self.panel_id}{self.ref_id} {self.panel_title}"


def substitute(expr: str, trunk: str | Sequence[str] | None = None, **overrides: str) -> str:
    """Replace Grafana variables the way Grafana would for the selected value(s).

    ``trunk`` None means "All" (``.*``, the variable's allValue); a given trunk name is used as
    is, since trunk names are ``[a-z0-9_-]`` and need no regex escaping. A sequence of names is a
    multi-value selection, rendered as Grafana does for Prometheus: ``(a|b)`` (one name: ``a``).
    An unknown variable raises KeyError, so a new variable cannot slip through untested.
    """
    values = dict(DEFAULT_VARS)
    if trunk is not None:
        names = [trunk] if isinstance(trunk, str) else list(trunk)
        for name in names:
            if not _TRUNK_NAME_RE.match(name):
                raise ValueError(f"not a valid trunk name: {name!r}")
        if not names:
            raise ValueError("an empty trunk selection")
        values["trunk"] = names[0] if len(names) == 1 else "(" + "|".join(names) + ")"
    values.update(overrides)

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VAR_RE.sub(repl, expr)


def extract_expressions(
    dashboard: dict[str, Any], trunk: str | Sequence[str] | None = None, **overrides: str
) -> list[Extracted]:
    """Every target expression of the dashboard, variables substituted (see ``substitute``)."""
    out: list[Extracted] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("hide"):
                continue
            out.append(
                Extracted(
                    dashboard_uid=dashboard["uid"],
                    panel_id=panel["id"],
                    panel_title=panel.get("title", ""),
                    ref_id=target.get("refId", ""),
                    expr=substitute(target.get("expr", ""), trunk, **overrides),
                    instant=bool(target.get("instant")),
                )
            )
    return out


def all_expressions(trunk: str | Sequence[str] | None = None, **overrides: str) -> list[Extracted]:
    """``extract_expressions`` over every bundled dashboard."""
    out: list[Extracted] = []
    for path in dashboard_paths():
        out.extend(extract_expressions(load_dashboard(path), trunk, **overrides))
    return out


# --- PromQL reading --------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\[\]]*\])
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}])
    """,
    re.VERBOSE,
)

FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bottomk",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "delta",
        "deriv",
        "floor",
        "group",
        "histogram_quantile",
        "idelta",
        "increase",
        "irate",
        "label_replace",
        "last_over_time",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "stddev",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
    }
)
AGGREGATIONS = frozenset(
    {
        "avg",
        "bottomk",
        "count",
        "count_values",
        "group",
        "max",
        "min",
        "quantile",
        "stddev",
        "stdvar",
        "sum",
        "topk",
    }
)
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset"}
COUNTER_FUNCTIONS = frozenset({"rate", "increase", "irate"})


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Frame:
    """An open parenthesis: a call (``name``; ``by`` for ``sum by (x) (...)``) or a group ``(``."""

    name: str
    by: tuple[str, ...] | None = None


@dataclass
class MetricUse:
    """One vector selector ``name{matchers}[range]`` and the parentheses around it."""

    name: str
    matchers: list[tuple[str, str, str]] = field(default_factory=list)
    range: str | None = None
    call_chain: tuple[Frame, ...] = ()

    @property
    def enclosing_call(self) -> str | None:
        """The function this selector is a direct argument of (None inside plain parentheses)."""
        if self.call_chain and self.call_chain[-1].name != "(":
            return self.call_chain[-1].name
        return None


@dataclass
class Analysis:
    metrics: list[MetricUse] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    ranges: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} at {pos} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos))
        pos = m.end()
    return tokens


def analyze(expr: str) -> Analysis:
    """Find selectors, ranges, functions and the chain of calls around each selector.

    Aggregations are read in the prefix form ``sum by (a, b) (...)``; the suffix form
    ``sum(...) by (a)`` is reported as an error so the boards keep one readable style.
    """
    result = Analysis()
    tokens = tokenize(expr)
    stack: list[Frame] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "ident" and tok.text in AGGREGATIONS and nxt is not None and nxt.text in ("by", "without"):
            labels, j = _label_list(tokens, i + 1, result)
            if j >= len(tokens) or tokens[j].text != "(":
                result.errors.append(f"{tok.text} {nxt.text} (...) not followed by its argument")
                i = j
                continue
            by = tuple(labels) if nxt.text == "by" else None
            stack.append(Frame(tok.text, by))
            result.functions.append(tok.text)
            i = j + 1
            continue
        if tok.kind == "ident" and nxt is not None and nxt.text == "(" and tok.text not in KEYWORDS:
            if tok.text not in FUNCTIONS:
                result.errors.append(f"unknown function {tok.text}()")
            result.functions.append(tok.text)
            stack.append(Frame(tok.text, () if tok.text in AGGREGATIONS else None))
            i += 2
            continue
        if tok.kind == "ident" and tok.text in LABEL_LIST_KEYWORDS:
            if tok.text in ("by", "without"):
                result.errors.append(f"suffix '{tok.text}' clause at {tok.pos}: write 'sum {tok.text} (...) (...)'")
            _, i = _label_list(tokens, i, result)
            continue
        if tok.kind == "ident" and tok.text not in KEYWORDS:
            use = MetricUse(tok.text, call_chain=tuple(stack))
            j = i + 1
            if j < len(tokens) and tokens[j].text == "{":
                j += 1
                while j < len(tokens) and tokens[j].text != "}":
                    if tokens[j].text == ",":
                        j += 1
                        continue
                    if j + 2 >= len(tokens) or tokens[j].kind != "ident" or tokens[j + 2].kind != "string":
                        result.errors.append(f"bad label matcher near {tokens[j].text!r}")
                        break
                    use.matchers.append((tokens[j].text, tokens[j + 1].text, tokens[j + 2].text[1:-1]))
                    j += 3
                j += 1
            if j < len(tokens) and tokens[j].kind == "range":
                use.range = tokens[j].text[1:-1]
                result.ranges.append(use.range)
                j += 1
            result.metrics.append(use)
            i = j
            continue
        if tok.kind == "range":
            result.errors.append(f"range {tok.text} not after a selector")
            result.ranges.append(tok.text[1:-1])
        elif tok.text == "(":
            stack.append(Frame("("))
        elif tok.text == ")":
            if not stack:
                result.errors.append(f"unbalanced ')' at {tok.pos}")
            else:
                stack.pop()
        elif tok.text in ("{", "}"):
            result.errors.append(f"stray {tok.text!r} at {tok.pos}")
        i += 1
    if stack:
        result.errors.append(f"{len(stack)} unclosed '('")
    return result


def _label_list(tokens: list[Token], i: int, result: Analysis) -> tuple[list[str], int]:
    """Read ``keyword (a, b)`` starting at the keyword; return the labels and the next index."""
    keyword = tokens[i].text
    if i + 1 >= len(tokens) or tokens[i + 1].text != "(":
        result.errors.append(f"{keyword} without a label list")
        return [], i + 1
    labels: list[str] = []
    j = i + 2
    while j < len(tokens) and tokens[j].text != ")":
        if tokens[j].kind == "ident":
            labels.append(tokens[j].text)
        elif tokens[j].text != ",":
            result.errors.append(f"unexpected {tokens[j].text!r} in {keyword}(...)")
        j += 1
    if j == len(tokens):
        result.errors.append(f"unclosed {keyword}(...)")
    return labels, j + 1


def is_balanced(expr: str) -> bool:
    """Parentheses, brackets and braces pair up, ignoring anything inside string literals."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in expr:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and quote is None
