"""``ansible-test sanity`` on the collection hvlib.libvirt (scripts/ansible-sanity.sh): compile,
import, validate-modules, yamllint, shebang, line-endings, ansible-doc, pep8 and pylint, with
the venv's Python and no download from outside the package index. The first run installs each test's
pinned requirements into build/ansible-test-home (~1 min); later runs reuse them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = (
    "compile",
    "import",
    "validate-modules",
    "yamllint",
    "shebang",
    "line-endings",
    "pep8",
    "pylint",
)


@pytest.mark.slow
def test_ansible_test_sanity_passes_on_the_collection() -> None:
    env = dict(os.environ, VENV=str(Path(sys.executable).parent.parent))
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "ansible-sanity.sh"), *TESTS, "ansible-doc"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for test in (*TESTS, "ansible-doc"):
        assert f'Running sanity test "{test}"' in out, (test, out)
    assert "ERROR" not in out, out
