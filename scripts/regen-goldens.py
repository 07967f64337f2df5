"""Rewrite tests/golden/NAME.xml from tests/golden_specs.py (run: make goldens)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hvlib import render  # noqa: E402
from tests.golden_specs import GOLDEN_SPECS  # noqa: E402


def main() -> None:
    out = ROOT / "tests" / "golden"
    out.mkdir(exist_ok=True)
    for name, spec in GOLDEN_SPECS.items():
        (out / f"{name}.xml").write_text(render(spec) + "\n")
        print(f"wrote tests/golden/{name}.xml")


if __name__ == "__main__":
    main()
