"""Write the API reference (HTML, pdoc) of hvlib into a directory: ``make apidoc``.

``import hvlib`` is cheap because most public names are imported on first use (the module's
``__getattr__``); pdoc reads a module's own namespace, so each name of ``hvlib.__all__`` is
resolved first, and the reference then documents every public name, with the methods of its
classes, and every module of the package (``hvlib.model``, ``hvlib.guest``, ``hvlib.virt``,
``cli``, ``testkit``, ...).

Usage: ``python scripts/apidoc.py OUTDIR``
"""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

import pdoc

import hvlib


def build(out: Path) -> None:
    """Resolve every lazy name of ``hvlib.__all__``, then write the reference into ``out``."""
    for name in hvlib.__all__:
        getattr(hvlib, name)
    pdoc.render.configure(docformat="google", show_source=False)
    pdoc.pdoc(*modules(), output_directory=out)


def modules() -> list[str]:
    """hvlib and each module and subpackage directly under it: pdoc would skip the ones that
    ``hvlib.__all__`` does not name (a subpackage brings its own modules), and ``__main__``."""
    found = ["hvlib"]
    for info in pkgutil.iter_modules(hvlib.__path__, "hvlib."):
        if not info.name.endswith("__main__"):
            found.append(info.name)
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: apidoc.py OUTDIR")
    build(Path(sys.argv[1]))
