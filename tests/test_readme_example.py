"""README's pytest-plugin example is exactly integration/test_plugin_example.py (which the
suite runs), and the plugin is registered under pytest's entry point group."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START, END = "# --- README example start\n", "# --- README example end\n"


def test_readme_example_is_the_file_the_suite_runs() -> None:
    text = (REPO / "integration" / "test_plugin_example.py").read_text()
    example = text[text.index(START) + len(START) : text.index(END)]
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Testing your own guests: the pytest plugin") :]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None
    assert block.group(1).strip() == example.strip()
    assert len(example.strip().splitlines()) <= 12


def test_the_plugin_is_an_entry_point() -> None:
    found = [e for e in entry_points(group="pytest11") if e.name == "hvlib"]
    assert [e.value for e in found] == ["hvlib.testkit.pytest_plugin"]
    assert "pytest11 =\n    hvlib = hvlib.testkit.pytest_plugin" in (REPO / "setup.cfg").read_text()
