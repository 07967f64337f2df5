"""The API reference is whole: ``make apidoc`` (scripts/apidoc.py, pdoc) documents every name
of ``hvlib.__all__`` and the public methods of the main classes, and every module of the tree.

Before: pdoc warned that 28 names of ``hvlib.__all__`` "do not resolve" (they are imported on
first use) and documented no method of Domain, Host, Fleet or SshConfig, and no submodule but
``render`` (the function ``hvlib.render`` shadowed the module).
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import hvlib

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("pdoc")


def _apidoc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hvlib_apidoc", ROOT / "scripts" / "apidoc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("api")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _apidoc().build(out)
    return out, [str(w.message) for w in caught]


def test_no_name_of_all_fails_to_resolve(reference: tuple[Path, list[str]]) -> None:
    _, messages = reference
    assert not [m for m in messages if "does not resolve" in m]


def test_every_public_name_is_documented(reference: tuple[Path, list[str]]) -> None:
    page = (reference[0] / "hvlib.html").read_text()
    missing = [name for name in hvlib.__all__ if f'id="{name}"' not in page]
    assert not missing, f"hvlib.html lacks {missing}"


@pytest.mark.parametrize("name", ["Domain", "Host", "Fleet", "SshConfig"])
def test_public_methods_are_documented(reference: tuple[Path, list[str]], name: str) -> None:
    page = (reference[0] / "hvlib.html").read_text()
    cls = getattr(hvlib, name)
    public = [
        m
        for m, value in inspect.getmembers(cls)
        if not m.startswith("_") and (callable(value) or isinstance(value, property))
    ]
    assert public, name
    missing = [m for m in public if f'id="{name}.{m}"' not in page]
    assert not missing, f"{name}: undocumented {missing}"


def test_every_public_module_has_a_page(reference: tuple[Path, list[str]]) -> None:
    pages = {
        p.relative_to(reference[0]).with_suffix("").as_posix() for p in reference[0].rglob("*.html")
    }
    sources = {
        p.relative_to(ROOT).with_suffix("").as_posix().removesuffix("/__init__")
        for p in (ROOT / "hvlib").rglob("*.py")
        if not any(part.startswith("_") for part in p.relative_to(ROOT).parts[1:-1])
        and (p.name == "__init__.py" or not p.name.startswith("_"))
    }
    assert sources <= pages, sorted(sources - pages)
