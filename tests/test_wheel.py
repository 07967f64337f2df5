"""The built wheel ships py.typed and the per-type templates: install it in a fresh
virtualenv and render every type from there (not from this source tree)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the source tree without build products (setuptools' ``build/``
    directory of an earlier build would otherwise leak stale modules into the wheel)."""
    out, src = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("src") / "hvlib"
    skip = shutil.ignore_patterns(".*", "build", "dist", "docs", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, src, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("hvlib-*.whl"))


def test_wheel_contains_typing_marker_and_templates(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "hvlib/py.typed" in names
    assert "hvlib/guest/_nsexec.py" in names, "LXC exec runs this file"
    assert "hvlib/testkit/testhost.xml" in names, "hvlib.testkit.test_host_uri() names it"
    for t in ("hvm", "xen-pv", "xen-hvm", "lxc"):
        assert f"hvlib/templates/{t}.xml" in names


def test_wheel_contains_every_module_of_the_source_tree(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    root = Path(__file__).resolve().parent.parent
    sources = {p.relative_to(root).as_posix() for p in (root / "hvlib").rglob("*.py")}
    assert sources and sources <= names, sorted(sources - names)


def test_installed_wheel_renders_every_type(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    script = (
        "import hvlib, sys; from hvlib import *\n"
        "assert 'site-packages' in hvlib.__file__ and '" + str(venv) + "' in hvlib.__file__\n"
        "for v in VirtType:\n"
        "    kw = dict(init=['/sbin/init'], filesystems=[Filesystem.mount('/r')]) "
        "if v is VirtType.LXC else dict(kernel='/k')\n"
        "    hvlib.validate(hvlib.render(DomainSpec(name='w', virt=v, **kw)))\n"
        "print('ok', hvlib.__file__)\n"
    )
    # dependencies (lxml) come from this test run's environment; hvlib from the wheel only
    deps = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [str(py), "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok ")
