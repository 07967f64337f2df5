"""The container exec helper says which step of entering a container failed (issue 18 item 8).

A failed ``chdir`` used to read "cannot enter the container: Permission denied", like a
namespace failure. Here the helper really runs, with no namespace to join, as uid 65534 on
this machine: its chdir to ``/root`` (mode 0700, root's) really fails with EACCES, as it does
in a container whose root filesystem was not shifted for its id map. The helper is run by
the system's Python (its stdlib is all it imports): uid 65534 cannot read the one under /root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess

import pytest

from hvlib.guest import container as lxcexec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switching to uid 65534 needs root"),
    pytest.mark.skipif(
        stat.S_IMODE(os.stat("/root").st_mode) & 0o001 != 0, reason="/root is searchable by all"
    ),
    pytest.mark.skipif(shutil.which("python3", path="/usr/bin") is None, reason="no /usr/bin"),
    pytest.mark.timeout(30),
]
SYSTEM_PYTHON = "/usr/bin/python3"


def run_helper_as(uid: int, argv: list[str]) -> tuple[int, list[str]]:
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, *lxcexec.helper_argv(status_w, [], argv)[1:]],
            pass_fds=(status_w,),
            user=uid,
            group=uid,
            extra_groups=[],
            capture_output=True,
            timeout=20,
            env={},
        )
        os.close(status_w)
        with os.fdopen(status_r, "rb") as f:
            lines = f.read().decode().splitlines()
    finally:
        with contextlib.suppress(OSError):
            os.close(status_w)
    return proc.returncode, lines


def test_a_failed_chdir_names_the_step_and_the_owner() -> None:
    code, status = run_helper_as(65534, ["true"])
    assert code == 125, status
    assert status == [
        "error entered the container, but chdir('/root') failed: Permission denied "
        "(/root belongs to uid 0, mode 0700; the command would run as uid 65534)"
    ]


def test_the_same_helper_as_root_runs_the_command() -> None:
    code, status = run_helper_as(0, ["true"])
    assert code == 0 and status[0].startswith("pid ")
