"""One exception tree, drawn once: every exception class of hvlib is in hvlib/errors.py, and the
tree in that module's docstring lists exactly those classes with their real parents.

Outside ``cli/`` (its ``Exit``) and ``testkit/`` (its own build errors), a class deriving from
BaseException anywhere in hvlib is either defined in errors.py or private (``_NotReady``:
control flow that never reaches a caller). Classes are found with :mod:`ast` (so a class that is
never imported is found too) and compared with the live classes of :mod:`hvlib.errors`.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import re
from pathlib import Path

import hvlib.errors

ROOT = Path(__file__).resolve().parent.parent / "hvlib"
EXEMPT_DIRS = ("cli", "testkit")
_TREE_LINE = re.compile(r"^(?P<indent>(?:[│ ] {3})*)(?:[├└]── )?(?P<name>[A-Z]\w*)(?P<rest>.*)$")


def _exception_classes(path: Path) -> list[str]:
    """Classes in ``path`` whose bases name an exception (a builtin one, or one ending in
    Error/Exception/Timeout/Lost, or a class of hvlib.errors)."""
    known = {n for n, c in vars(hvlib.errors).items() if inspect.isclass(c)}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef):
            continue
        for base in node.bases:
            name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            builtin = getattr(builtins, name, None)
            is_exc = inspect.isclass(builtin) and issubclass(builtin, BaseException)
            if is_exc or name in known or name.endswith(("Error", "Exception")):
                found.append(node.name)
                break
    return found


def test_every_public_exception_class_is_in_errors_py() -> None:
    outside = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in EXEMPT_DIRS or rel == Path("errors.py"):
            continue
        outside += [f"{rel}: {c}" for c in _exception_classes(path) if not c.startswith("_")]
    assert not outside, f"exception classes outside hvlib/errors.py: {outside}"


def test_the_finder_sees_exception_classes() -> None:
    """The finder itself (a test that can fail): errors.py's own classes are seen."""
    assert "GuestAccessError" in _exception_classes(ROOT / "errors.py")
    assert "_NotReady" in _exception_classes(ROOT / "guest" / "progress.py")


def parse_tree(doc: str) -> dict[str, tuple[str | None, set[str]]]:
    """``{class: (parent in the tree, {the "also" bases})}`` from the docstring's tree block."""
    block = doc.split("::", 1)[1]
    tree: dict[str, tuple[str | None, set[str]]] = {}
    stack: list[str] = []
    for line in block.splitlines():
        if not line.strip():
            if tree:
                break
            continue
        text = line[4:] if line.startswith("    ") else line
        m = _TREE_LINE.match(text)
        assert m, f"not a tree line: {line!r}"
        depth = len(m["indent"]) // 4 + (0 if text == m["name"] + m["rest"] else 1)
        del stack[depth:]
        parent = stack[-1] if stack else None
        also = re.match(r"\s*\(also ([\w, ]+)\)", m["rest"])
        extra = {a.strip() for a in also.group(1).split(",")} if also else set()
        assert m["name"] not in tree, f"{m['name']} drawn twice"
        tree[m["name"]] = (parent, extra)
        stack.append(m["name"])
    return tree


def test_parse_tree_reads_depth_and_also() -> None:
    doc = "x\n\n::\n\n    A\n    ├── B (also ValueError)\n    │   └── C\n    └── D\n\nend\n"
    assert parse_tree(doc) == {
        "A": (None, set()),
        "B": ("A", {"ValueError"}),
        "C": ("B", set()),
        "D": ("A", set()),
    }


def test_errors_docstring_tree_matches_the_classes() -> None:
    tree = parse_tree(hvlib.errors.__doc__ or "")
    classes = {
        name: cls
        for name, cls in vars(hvlib.errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == "hvlib.errors"
    }
    assert set(tree) == set(classes), set(tree) ^ set(classes)
    for name, cls in classes.items():
        ours = [b.__name__ for b in cls.__bases__ if b.__module__ == "hvlib.errors"]
        others = {b.__name__ for b in cls.__bases__ if b.__module__ != "hvlib.errors"}
        parent, also = tree[name]
        assert ours[:1] == ([parent] if parent else []), f"{name}: tree says {parent}, is {ours}"
        assert len(ours) <= 1, f"{name} has two hvlib parents: {ours}"
        if parent is None:
            others.discard("Exception")
        assert also == others, f"{name}: tree says also {also}, bases {others}"


def test_every_public_exception_of_hvlib_is_from_errors() -> None:
    """What ``hvlib`` exports as an exception is the class defined in hvlib.errors."""
    for name in hvlib.__all__:
        obj = getattr(hvlib, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert obj.__module__ == "hvlib.errors", f"hvlib.{name} is from {obj.__module__}"
