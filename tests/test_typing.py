"""A user's type checker catches a misspelt option of the public entry points: ``mypy
--strict`` (the venv's, in a subprocess) on a small typed user script reports a call-arg
error on each line marked ``expect: call-arg`` (connect, HostPool, Fleet, ensure_all,
Fleet.ensure) and nowhere else; the same script spelt right passes. The two scripts are named
so that pytest never collects them, and nothing imports them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MYPY = Path(sys.executable).with_name("mypy")
BAD, GOOD = TESTS / "typing_user_script_bad.py", TESTS / "typing_user_script_good.py"


def marked_lines() -> list[int]:
    lines = BAD.read_text().splitlines()
    return [n for n, line in enumerate(lines, 1) if line.endswith("# expect: call-arg")]


def mypy(script: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    if not MYPY.exists():
        pytest.fail(f"{MYPY} not found: make deps installs mypy into the venv")
    return subprocess.run(
        [str(MYPY), "--strict", "--cache-dir", str(cache), "--no-error-summary", str(script)],
        capture_output=True,
        text=True,
        cwd=TESTS.parent,  # the project's [tool.mypy] settings
        timeout=300,
    )


def test_each_misspelt_option_is_a_call_arg_error_on_its_line(tmp_path: Path) -> None:
    marked = set(marked_lines())
    assert len(marked) == 5
    done = mypy(BAD, tmp_path)
    errors = re.findall(r"^[^:]+:(\d+): error: .*\[([a-z-]+)\]$", done.stdout, re.M)
    assert {(int(n), code) for n, code in errors} == {(n, "call-arg") for n in marked}, (
        done.stdout + done.stderr
    )
    assert len(errors) == 5 and done.returncode == 1


def test_the_same_script_spelt_right_passes(tmp_path: Path) -> None:
    done = mypy(GOOD, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_the_scripts_differ_only_in_the_marked_spellings() -> None:
    bad, good = BAD.read_text().splitlines(), GOOD.read_text().splitlines()
    assert len(bad) == len(good)
    changed = [n for n, (b, g) in enumerate(zip(bad, good, strict=True), 1) if b != g]
    body = [n for n in changed if n > 5]  # past the docstrings
    assert body == marked_lines()
