"""The guest kit's inputs: Debian packages, resolved with ``apt-cache``, fetched with
``apt-get download`` and unpacked with ``dpkg -x``, and what is found in the unpacked tree
(shared libraries of a program, the kernel version, busybox's applets).

What it must not do: download anything but Debian packages through apt's own clients.
"""

from __future__ import annotations

import functools
import os
import posixpath
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hvlib.testkit.elfmods import elf_needed
from hvlib.testkit.kitlayout import (
    _KERNEL_PACKAGE_RE,
    _LIB_DIRS,
    KERNEL_META_PACKAGE,
    SUPPORT_PACKAGES,
    GuestKitError,
)


def _run(cmd: Sequence[str], *, cwd: Path | None = None, timeout: float = 900.0) -> str:
    """Run ``cmd`` (no shell) and return its stdout. Raises GuestKitError on failure or timeout."""
    try:
        proc = subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuestKitError(f"{cmd[0]}: {exc}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.strip()[-2000:]
        raise GuestKitError(f"{shlex.join(cmd)} exited {proc.returncode}: {detail}")
    return proc.stdout


def parse_apt_policy(text: str) -> dict[str, str]:
    """Return package -> candidate version from ``apt-cache policy`` output ("(none)" left out)."""
    result: dict[str, str] = {}
    package = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            package = line[:-1]
        elif line.strip().startswith("Candidate:") and package:
            version = line.split(":", 1)[1].strip()
            if version != "(none)":
                result[package] = version
    return result


def parse_kernel_dependency(text: str) -> str:
    """Return the ``linux-image-6.1.0-N-cloud-amd64`` name from ``apt-cache depends`` output.

    Raises GuestKitError if there is none.
    """
    for line in text.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Depends" and _KERNEL_PACKAGE_RE.match(value.strip()):
            return value.strip()
    raise GuestKitError(
        f"{KERNEL_META_PACKAGE} has no 6.1 cloud kernel dependency (run apt-get update?)"
    )


@functools.cache
def resolve_packages() -> tuple[tuple[str, str], ...]:
    """Return sorted (package, candidate version) pairs of every kit input (cached per process).

    Raises GuestKitError if apt-cache fails or a package has no candidate (no package lists?).
    """
    kernel = parse_kernel_dependency(_run(["apt-cache", "depends", KERNEL_META_PACKAGE]))
    names = [kernel, *SUPPORT_PACKAGES]
    candidates = parse_apt_policy(_run(["apt-cache", "policy", *names]))
    missing = [n for n in names if n not in candidates]
    if missing:
        raise GuestKitError(f"no candidate version for {missing} (run apt-get update?)")
    return tuple(sorted((n, candidates[n]) for n in names))


def _deb_glob(name: str, version: str) -> str:
    """Return the glob of the file apt names for ``name=version`` (":" quoted as "%3a")."""
    return f"{name}_{version.replace(':', '%3a')}_*.deb"


def _find_deb(debdir: Path, name: str, version: str) -> Path | None:
    """Return the downloaded .deb of ``name=version`` in ``debdir``, or None."""
    found = sorted(debdir.glob(_deb_glob(name, version)))
    return found[0] if found else None


def fetch_debs(packages: Sequence[tuple[str, str]], debdir: Path) -> list[Path]:
    """Return the .deb files of ``packages``, downloading missing ones with ``apt-get download``.

    Downloads land in a temporary directory first, so ``debdir`` only ever holds whole files.
    Raises GuestKitError if apt-get fails or a file is still missing afterwards.
    """
    debdir.mkdir(parents=True, exist_ok=True)
    missing = [(n, v) for n, v in packages if _find_deb(debdir, n, v) is None]
    if missing:
        _download(missing, debdir)
    debs = [_find_deb(debdir, n, v) for n, v in packages]
    if any(deb is None for deb in debs):
        raise GuestKitError(f"apt-get download did not produce all of {missing}")
    return [deb for deb in debs if deb is not None]


def _download(packages: Sequence[tuple[str, str]], debdir: Path) -> None:
    """Download ``packages`` into ``debdir`` through a temporary directory. Raises GuestKitError."""
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory(prefix=".download-", dir=debdir) as tmp:
        _run(
            ["apt-get", "download", "-q", *sandbox, *(f"{n}={v}" for n, v in packages)],
            cwd=Path(tmp),
        )
        for deb in Path(tmp).glob("*.deb"):
            os.replace(deb, debdir / deb.name)


def _extract(debs: Sequence[Path], tree: Path) -> None:
    """Unpack every .deb into ``tree`` with ``dpkg -x``. Raises GuestKitError on failure."""
    tree.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        _run(["dpkg", "-x", str(deb), str(tree)])


def _resolve_in_tree(tree: Path, guest_path: str) -> Path:
    """Return the regular file that ``guest_path`` names when ``tree`` is "/" (symlinks followed).

    Raises GuestKitError if it is missing or a symlink loop.
    """
    path = posixpath.normpath("/" + guest_path.lstrip("/"))
    for _ in range(40):
        host = tree / path.lstrip("/")
        if not host.is_symlink():
            if host.is_file():
                return host
            raise GuestKitError(f"{path} not found in the unpacked packages")
        target = os.readlink(host)
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    raise GuestKitError(f"symlink loop at {guest_path}")


def _find_library(tree: Path, soname: str) -> Path:
    """Return the unpacked file of library ``soname``. Raises GuestKitError if absent."""
    for libdir in _LIB_DIRS:
        candidate = tree / libdir / soname
        if candidate.exists() or candidate.is_symlink():
            return _resolve_in_tree(tree, f"{libdir}/{soname}")
    raise GuestKitError(f"shared library {soname} not found in the unpacked packages")


def library_closure(tree: Path, programs: Sequence[Path]) -> dict[str, Path]:
    """Return soname -> unpacked file for every library ``programs`` need, transitively.

    Raises GuestKitError if one is missing.
    """
    found: dict[str, Path] = {}
    todo = list(programs)
    while todo:
        for soname in elf_needed(todo.pop().read_bytes()):
            if soname not in found:
                found[soname] = _find_library(tree, soname)
                todo.append(found[soname])
    return found


def _kernel_version(tree: Path) -> str:
    """Return the single kernel release unpacked in ``tree``. Raises GuestKitError otherwise."""
    kernels = sorted(p.name[len("vmlinuz-") :] for p in (tree / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise GuestKitError(f"expected one kernel in the unpacked packages, found {kernels}")
    return kernels[0]


def busybox_applets(busybox: Path) -> list[str]:
    """Return busybox's applet paths ("bin/ls", ...) from ``busybox --list-full``.

    Raises GuestKitError if busybox cannot run.
    """
    lines = _run([str(busybox), "--list-full"]).split()
    return sorted(line for line in lines if line not in ("bin/busybox", "init", "linuxrc"))
