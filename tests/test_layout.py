"""
The shape of the code, as docs/design.md promises it: imports point one way,
every module fits a sitting, and tests share helpers only through
C{tests.helpers}.

These read the source with L{ast}, so they see type-only imports (under
C{if TYPE_CHECKING:}) and imports inside functions as well as the ones that
run at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipe"
TESTS = ROOT / "tests"

#: The longest module and class a reader takes in at one sitting.
MODULE_LINES = 600
CLASS_LINES = 250


def module_name(path: Path) -> str:
    """The dotted name of the module at C{path} (relative to L{ROOT})."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, name: str = "") -> Iterator[str]:
    """
    Every dotted name that the module at C{path} (called C{name}, by default
    its name under L{ROOT}) imports, anywhere in it, with relative imports
    made absolute.  C{from a import b} yields both C{a} and C{a.b} (C{b} may
    be a module).
    """
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            yield source
            for alias in node.names:
                yield f"{source}.{alias.name}"


def import_graph() -> Dict[str, Set[str]]:
    """Which C{pipe} modules each C{pipe} module imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imported(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycles_are_found() -> None:
    """
    The cycle finder itself finds a cycle through any number of modules and
    leaves a chain alone (a test of the test, so that an empty answer means
    something).
    """
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_type_only_imports_are_seen(tmp_path: Path) -> None:
    """An import under C{if TYPE_CHECKING:} counts as an import."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ._fanout import Fanout\n"
    )
    assert "pipe._fanout.Fanout" in set(imported(source, "pipe._probe"))


def test_no_import_cycle() -> None:
    """
    No two modules of C{pipe} import each other, however indirectly, not even
    for type checking only.
    """
    found = cycles(import_graph())
    assert not found, "\n".join(" <-> ".join(group) for group in found)


def sizes() -> Iterator[Tuple[str, str, int, int]]:
    """(kind, name, lines, limit) of every module and class in C{pipe}."""
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = module_name(path)
        yield "module", name, len(text.splitlines()), MODULE_LINES
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                yield "class", f"{name}.{node.name}", lines, CLASS_LINES


@pytest.mark.parametrize("kind", ["module", "class"])
def test_one_sitting(kind: str) -> None:
    """No module of C{pipe} is over 600 lines, no class over 250."""
    too_long = [
        f"{name}: {lines} lines (limit {limit})"
        for what, name, lines, limit in sizes()
        if what == kind and lines > limit
    ]
    assert not too_long, "\n".join(too_long)


def test_tests_import_no_test_module() -> None:
    """
    A test module imports helpers from C{tests.helpers} (or gets fixtures
    from C{conftest}), never from another test module.
    """
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for name in imported(path):
            last = name.split(".")
            if name.startswith("tests.") and any(
                part.startswith("test_") or part == "conftest" for part in last
            ):
                offenders.append(f"{module_name(path)} imports {name}")
    assert not offenders, "\n".join(offenders)


#: The layers of C{pipe}: each private folder is one layer, each top-level
#: module its own.  A layer may import only the layers listed for it (and
#: itself); docs/design.md draws the same table.
ALLOWED: Dict[str, Set[str]] = {
    "pipe": set(),
    "pipe._compat": set(),
    "pipe._compat.legacy": {"pipe._compat"},
    "pipe._http": {"pipe._compat"},
    "pipe._oidc": set(),
    "pipe.signing": set(),
    "pipe.logs": set(),
    "pipe._settings": {"pipe._http"},
    "pipe._transfer": {
        "pipe",
        "pipe._compat",
        "pipe._http",
        "pipe._oidc",
        "pipe._settings",
        "pipe.signing",
    },
    "pipe._landing": {"pipe", "pipe._http", "pipe._transfer"},
    "pipe._metrics": {"pipe", "pipe._transfer"},
    "pipe.resource": {
        "pipe._http",
        "pipe._landing",
        "pipe._transfer",
        "pipe.signing",
    },
    "pipe.server": {
        "pipe._compat",
        "pipe._http",
        "pipe._settings",
        "pipe._transfer",
        "pipe.resource",
    },
    "pipe.tap": {
        "pipe",
        "pipe._compat",
        "pipe._http",
        "pipe._metrics",
        "pipe._oidc",
        "pipe._settings",
        "pipe.server",
        "pipe.signing",
    },
    "pipe._client": set(),
    "pipe.client": {"pipe._client"},
    "pipe._cli": {
        "pipe",
        "pipe._client",
        "pipe._settings",
        "pipe.client",
        "pipe.signing",
        "pipe.tap",
    },
    "pipe.__main__": {"pipe._cli"},
    "pipe._deploy": {"pipe.tap"},
    "pipe.buildbot": {"pipe.signing", "pipe.tap"},
}


def layer_of(module: str) -> str:
    """
    The layer of the C{pipe} module C{module}: its private folder (the
    legacy folder of C{pipe._compat} is a layer of its own), else itself.
    """
    if module.startswith("pipe._compat.legacy"):
        return "pipe._compat.legacy"
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def layer_graph() -> Dict[str, Set[str]]:
    """Which layers each layer imports (type-only imports included)."""
    graph: Dict[str, Set[str]] = {}
    for module, imports in import_graph().items():
        layer = layer_of(module)
        graph.setdefault(layer, set()).update(
            layer_of(m) for m in imports if layer_of(m) != layer
        )
    return graph


def test_every_layer_is_in_the_table() -> None:
    """
    Each private folder and top-level module of C{pipe} is a layer of the
    table, and the table names no layer that is gone.
    """
    assert set(layer_graph()) == set(ALLOWED)


def test_layers_import_only_what_the_table_allows() -> None:
    """
    No layer imports one the table does not allow it (type-only imports
    included): the folders point one way, and a new arrow is a decision,
    made here and in docs/design.md.
    """
    wrong = [
        f"{layer} -> {other}"
        for layer, others in sorted(layer_graph().items())
        for other in sorted(others - ALLOWED.get(layer, set()))
    ]
    assert wrong == [], "\n".join(wrong)


def test_the_layer_table_has_no_cycle() -> None:
    """The allowed arrows themselves never lead back up."""
    assert cycles({k: set(v) for k, v in ALLOWED.items()}) == []
