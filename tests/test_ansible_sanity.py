"""``ansible-test sanity`` on the collection hvlib.libvirt (scripts/ansible-sanity.sh): every
sanity test but two (:data:`TESTS`), with the venv's Python and no download from outside the
package index. The first run installs each test's
pinned requirements into build/ansible-test-home (~1 min); later runs reuse them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = (
    "action-plugin-docs",
    "ansible-doc",
    "changelog",
    "compile",
    "empty-init",
    "ignores",
    "import",
    "line-endings",
    "no-assert",
    "no-get-exception",
    "no-illegal-filenames",
    "no-smart-quotes",
    "pep8",
    "pylint",
    "replace-urlopen",
    "runtime-metadata",
    "shebang",
    "symlinks",
    "use-argspec-type-path",
    "use-compat-six",
    "validate-modules",
    "yamllint",
)
"""Every sanity test of ansible-test 2.19 but pslint and shellcheck (no pwsh, no shellcheck
here; the collection has neither PowerShell nor shell scripts)."""


@pytest.mark.slow
def test_ansible_test_sanity_passes_on_the_collection() -> None:
    env = dict(os.environ, VENV=str(Path(sys.executable).parent.parent))
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "ansible-sanity.sh")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for test in TESTS:
        assert f'Running sanity test "{test}"' in out, (test, out)
    assert "ERROR" not in out, out
