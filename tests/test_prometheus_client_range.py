"""The prometheus-client in use is inside the range pyproject.toml declares, and is the one the
compatibility matrix asked for (``make compat`` runs the byte-identity tests at both ends)."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import prometheus_client

ROOT = Path(__file__).resolve().parent.parent


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def _declared_range() -> tuple[tuple[int, ...], tuple[int, ...]]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if d.startswith("prometheus-client")]
    m = re.fullmatch(r"prometheus-client>=([\d.]+),<([\d.]+)", spec)
    assert m is not None, f"prometheus-client must be pinned to a tested range, not {spec!r}"
    return _version(m.group(1)), _version(m.group(2))


def test_installed_version_is_in_the_declared_range() -> None:
    low, high = _declared_range()
    installed = _version(importlib.metadata.version("prometheus-client"))
    assert low <= installed < high


def test_matrix_runs_the_version_it_asked_for() -> None:
    expected = os.environ.get("VOBIZ_EXPECT_PROMETHEUS_CLIENT")
    if expected is None:  # the main run: whatever the venv resolved inside the range
        return
    assert importlib.metadata.version("prometheus-client") == expected
    # The module imported is that copy, not the venv's.
    assert f"pc-{expected}" in Path(prometheus_client.__file__).parts[-3]


def test_matrix_ends_are_the_declared_range() -> None:
    """The Makefile's matrix tests exactly the declared lowest version and one below the cap."""
    makefile = (ROOT / "Makefile").read_text()
    lowest = re.search(r"^PC_LOWEST\s*:=\s*([\d.]+)$", makefile, re.M)
    newest = re.search(r"^PC_NEWEST\s*:=\s*([\d.]+)$", makefile, re.M)
    assert lowest is not None and newest is not None
    low, high = _declared_range()
    assert _version(lowest.group(1)) == low
    assert _version(newest.group(1))[:2] == (high[0], high[1] - 1)


# --- no private prometheus_client names (issue 15): what makes the range above safe to pin ---

# A named tuple's own API (``Exemplar._fields``) is public Python, not prometheus_client's.
NAMEDTUPLE_API = frozenset({"_fields", "_field_defaults", "_make", "_replace", "_asdict"})


def _private(part: str) -> bool:
    dunder = part.startswith("__") and part.endswith("__")
    return part.startswith("_") and not dunder and part not in NAMEDTUPLE_API


def private_imports(source: str) -> list[str]:
    """Each private prometheus_client name a module's source names, as ``line: what``: a module
    or name with a part starting with ``_`` imported from ``prometheus_client``, an
    ``_attribute`` read off anything such an import binds, or a ``getattr`` of one by name."""
    tree = ast.parse(source)
    bound: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "prometheus_client":
                    bound.add((alias.asname or alias.name).split(".")[0])
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "prometheus_client":
            module = node.module or ""
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if any(_private(p) for p in module.split(".")) or _private(alias.name):
                    found.append(f"{node.lineno}: from {module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{node.lineno}: {base.id}...{node.attr}")
        elif (by_name := _attribute_by_name(node)) is not None:
            line, func, obj, attr = by_name
            if isinstance(obj, ast.Name) and obj.id in bound and _private(attr):
                found.append(f"{line}: {func}({obj.id}, {attr!r})")
    return sorted(found)


def _attribute_by_name(node: ast.AST) -> tuple[int, str, ast.expr, str] | None:
    """(line, function, object, name) of a ``getattr``/``setattr``/``hasattr`` call by a literal name."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.lineno, node.func.id, node.args[0], node.args[1].value
    return None


def _own(obj: ast.expr) -> bool:
    """``self`` or ``cls``: a class's own state, whatever its name."""
    return isinstance(obj, ast.Name) and obj.id in ("self", "cls")


def defined_names(trees: list[ast.Module]) -> set[str]:
    """Every name the sources define: functions, classes, assigned names and ``self.``/``cls.``
    attributes, ``__slots__`` entries, import bindings, parameters."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                names.add(node.attr)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
            ):
                names.update(
                    c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def private_attribute_reads(sources: dict[str, str], theirs: set[str]) -> dict[str, list[str]]:
    """Per module, each ``obj._name`` it reads or writes, and each ``getattr``/``hasattr``/
    ``setattr`` of one by a literal name, where ``_name`` is one of ``theirs`` (the private names
    prometheus_client defines) and ``obj`` is not ``self`` or ``cls`` (a class's own state,
    whatever its name). This is how the exporter once read children's ``_value``, ``_sum`` and
    ``_buckets``, the registry's ``_collector_to_names`` and ``_lock``, and wrote a family's
    ``_metrics``."""
    found: dict[str, list[str]] = {}
    for name, text in sources.items():
        uses: list[str] = []
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Attribute) and node.attr in theirs and _private(node.attr):
                if not _own(node.value):
                    uses.append(f"{node.lineno}: .{node.attr}")
            elif (by_name := _attribute_by_name(node)) is not None:
                line, func, obj, attr = by_name
                if attr in theirs and _private(attr) and not _own(obj):
                    uses.append(f"{line}: {func}(..., {attr!r})")
        if uses:
            found[name] = sorted(uses)
    return found


def prometheus_client_private_names() -> set[str]:
    package = Path(prometheus_client.__file__).parent
    trees = [ast.parse(p.read_text()) for p in sorted(package.rglob("*.py"))]
    return {n for n in defined_names(trees) if _private(n)}


def test_the_private_import_check_finds_each_kind_of_use() -> None:
    source = "\n".join(
        [
            "import prometheus_client",
            "from prometheus_client import _private_helper, Counter",
            "from prometheus_client.values import _ValueClass as Value",
            "import prometheus_client._internal",
            "from prometheus_client.registry import CollectorRegistry as R",
            "x = prometheus_client.registry._names",
            "y = R._collector_to_names",
            "z = getattr(Counter, '_metrics')",
            "ok = Counter.__name__",
            "ok2 = getattr(Counter, '_fields', ())",
            "ok3 = prometheus_client.generate_latest",
        ]
    )
    assert private_imports(source) == [
        "2: from prometheus_client import _private_helper",
        "3: from prometheus_client.values import _ValueClass",
        "4: import prometheus_client._internal",
        "6: prometheus_client..._names",
        "7: R..._collector_to_names",
        "8: getattr(Counter, '_metrics')",
    ]


def test_the_attribute_check_finds_reads_of_prometheus_client_state() -> None:
    theirs = prometheus_client_private_names()
    assert {"_value", "_sum", "_buckets", "_collector_to_names", "_labelnames", "_lock", "_metrics"} <= theirs
    sources = {
        "a.py": "def f(child, reg):\n    return child._value.get() + child._sum.get(), reg._collector_to_names\n",
        "b.py": "class Own:\n    def __init__(self):\n        self._sum = 0.0\n        self._lock = None\n",
        "c.py": "def g(obj):\n    return obj._not_prometheus_clients + obj._fields\n",
        "d.py": "def h(m, c):\n    m._metrics[()] = c\n    return getattr(c, '_value', None), hasattr(c, '_sum')\n",
    }
    assert private_attribute_reads(sources, theirs) == {
        "a.py": ["2: ._collector_to_names", "2: ._sum", "2: ._value"],
        "d.py": ["2: ._metrics", "3: getattr(..., '_value')", "3: hasattr(..., '_sum')"],
    }


def _exporter_sources() -> dict[str, str]:
    modules = sorted((ROOT / "exporter").rglob("*.py"))
    assert len(modules) >= 20  # (the package, not an empty glob)
    return {str(p.relative_to(ROOT / "exporter")): p.read_text() for p in modules}


def test_no_exporter_module_imports_a_private_prometheus_client_name() -> None:
    uses = {path: private_imports(text) for path, text in _exporter_sources().items()}
    assert {path: found for path, found in uses.items() if found} == {}


def test_no_exporter_module_reads_private_prometheus_client_state() -> None:
    assert private_attribute_reads(_exporter_sources(), prometheus_client_private_names()) == {}
