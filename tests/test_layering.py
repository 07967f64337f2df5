"""The layout is the architecture: the layering of hvlib's modules, read from their imports.

Layers, from the bottom up (issue 17): ``hvlib.errors`` and ``hvlib.enums``; ``hvlib.model``
(pure); ``hvlib.guest`` (inside a guest); ``hvlib.virt`` (libvirt); then what sits above
(``hvlib`` itself, ``cli``, ``fleet``, ``parallel``, ``specfile``, ``demo``). A module imports
only from its own layer or below. ``hvlib.testkit`` sits beside: it may import anything, and
nothing in the library imports it (the ``demo`` program alone builds its sandbox with it).

Every import counts: top-level, under ``if TYPE_CHECKING``, inside functions, and
``importlib.import_module("...")`` with a string literal. No cycle of any kind is allowed
among hvlib's modules. The graph is read with :mod:`ast`, so the test sees what a reader sees.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hvlib"
BOTTOM = {"hvlib.errors", "hvlib.enums"}
LAYERS = {"model": 1, "guest": 2, "virt": 3}
TOP = 4
MAY_IMPORT_TESTKIT = {"hvlib.demo"}
"""The demo program makes its sandbox and guest kit with the testkit, like a test does."""


def module_name(path: Path) -> str:
    parts = ("hvlib", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> int | None:
    """0 for errors/enums, 1 model, 2 guest, 3 virt, 4 above; None for the testkit."""
    if module in BOTTOM:
        return 0
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "testkit":
        return None
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return TOP


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(module: str, path: Path, node: ast.AST) -> Iterator[str]:
    """The hvlib modules one AST node imports (``from pkg import mod`` names the module)."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        source = _resolve(module, path, node)
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            yield sub if sub in MODULES else source
    elif isinstance(node, ast.Call):
        fn = node.func
        called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
        if called == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            yield str(node.args[0].value)


def imports_of(module: str) -> set[str]:
    """Every hvlib module ``module`` imports, in any way (see the module docstring)."""
    path = MODULES[module]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        for target in _targets(module, path, node):
            if target == "hvlib" or target.startswith("hvlib."):
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_the_graph_is_read() -> None:
    """The reader itself: each kind of import is seen (a test that can fail)."""
    assert "hvlib.virt._virt" in GRAPH["hvlib.virt.domain"]  # from hvlib.virt import _virt
    assert "hvlib.model.spec" in GRAPH["hvlib.model.render"]  # from ... import names
    assert {"hvlib.guest", "hvlib.model", "hvlib.virt"} <= set(MODULES)
    tree = ast.parse("import importlib\nimportlib.import_module('hvlib.virt.host')\n")
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call))
    assert list(_targets("hvlib.x", ROOT / "x.py", call)) == ["hvlib.virt.host"]
    tc = ast.parse("if TYPE_CHECKING:\n    from hvlib.virt.host import Host\n")
    assert [t for n in ast.walk(tc) for t in _targets("hvlib.x", ROOT / "x.py", n)] == [
        "hvlib.virt.host"
    ]


def test_every_import_names_a_module_that_exists() -> None:
    missing = {(m, t) for m, ts in GRAPH.items() for t in ts if t not in MODULES}
    assert not missing, sorted(missing)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_stay_in_their_layer_or_below(module: str) -> None:
    own = layer(module)
    if own is None:
        return  # the testkit may import anything
    wrong = []
    for target in sorted(GRAPH[module]):
        theirs = layer(target)
        if theirs is None:
            if module not in MAY_IMPORT_TESTKIT:
                wrong.append(f"{target} (the testkit)")
        elif theirs > own:
            wrong.append(f"{target} (layer {theirs} > {own})")
    assert not wrong, f"{module} imports from above its layer: {wrong}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing
    itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_of_any_kind() -> None:
    assert not _cycles(GRAPH), _cycles(GRAPH)


def test_only_virt_imports_libvirt() -> None:
    """``import libvirt`` (and its lxc/qemu siblings) in hvlib/virt/_virt.py only."""
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            if any(n.split(".")[0].startswith("libvirt") for n in names):
                wrong.append(module)
    assert set(wrong) <= {"hvlib.virt._virt"}, wrong
