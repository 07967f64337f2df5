"""What the testkit's Debian-built images share: the apt source, cache keys, builds in place.

Used by :mod:`hvlib.testkit.xenimage` (the nested Xen host) and :mod:`hvlib.testkit.debian`
(a Debian cloud VM image and a systemd container root). An image is built from the archive
that this machine's apt sources name for its own release (:func:`apt_source`), and cached
under ``cache_dir()/KIND/KEY`` where KEY hashes its inputs (:func:`cache_key`: archive, suite,
the versions of the packages named, the builder's source). :func:`ensure_built` builds in a
temporary directory renamed into place when complete, under a lock, so a build that died
half-way is never used and is repaired by the next call; older builds are pruned.

What it must not do: change the host's apt or libvirt state, or write outside the cache
directory (commands that mount run in a private mount namespace that dies with them).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from hvlib.testkit import cache_dir

MIB = 1024 * 1024


class ImageBuildError(RuntimeError):
    """Raised when a testkit image cannot be built (the message says which step failed)."""


def cache_key(inputs: Mapping[str, str]) -> str:
    """The 16 hex digits that name a build of ``inputs`` in the cache."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def ensure_built(
    kind: str,
    inputs: Mapping[str, str],
    complete: Callable[[Path], bool],
    build: Callable[[Path], None],
) -> Path:
    """Return ``cache_dir()/kind/KEY`` for ``inputs``, built by ``build(work)`` first unless
    ``complete(directory)`` says it is there already.

    ``build`` fills a fresh directory (mode 0755); ``inputs.json`` is written beside what it
    made, and the directory is renamed into place. Raises what ``build`` raises.
    """
    key = cache_key(inputs)
    root = cache_dir() / kind
    with locked(root):
        final = root / key
        if not complete(final):
            _build_into(root, key, inputs, build)
            prune(root, keep={key})
        return final


def _build_into(
    root: Path, key: str, inputs: Mapping[str, str], build: Callable[[Path], None]
) -> None:
    """Build in ``root/.build-*`` and rename it to ``root/key`` (replacing a broken one)."""
    work = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    os.chmod(work, 0o755)  # QEMU may run as an unprivileged user
    try:
        build(work)
        (work / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True))
        shutil.rmtree(root / key, ignore_errors=True)
        work.rename(root / key)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def prune(root: Path, keep: set[str]) -> None:
    """Remove older builds and stale temporary directories (called with the lock held)."""
    for path in root.iterdir():
        stale = path.name.startswith(".build-") or re.fullmatch(r"[0-9a-f]{16}", path.name)
        if stale and path.name not in keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.lock`` (serialises builds across processes)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def debian_inputs(packages: Iterable[str], sources: Iterable[Path]) -> dict[str, str]:
    """What an image built from Debian packages depends on: archive URI, suite, each
    package's version and a hash of the builder's ``sources`` (files).

    Raises :class:`ImageBuildError` when no apt source for this release is configured or
    apt's package lists lack a package (run ``apt-get update``).
    """
    uri, suite = apt_source()
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.read_bytes())
    inputs = {"archive": uri, "suite": suite, "source": digest.hexdigest()[:16]}
    inputs.update(package_versions(uri, suite, tuple(packages)))
    return inputs


def apt_source(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """Return ``(uri, suite)`` of the Debian archive that apt uses for this machine's release.

    Reads ``sources.list`` and ``sources.list.d/*.list|*.sources`` (one-line and deb822
    formats); the suite is the release codename from ``/etc/os-release``. Raises
    :class:`ImageBuildError` when no enabled ``deb`` entry with component ``main`` names it.
    """
    suite = _os_release().get("VERSION_CODENAME", "")
    for uri, suites, components in _apt_entries(apt_dir):
        if suite in suites and "main" in components:
            return uri.rstrip("/"), suite
    raise ImageBuildError(f"no apt source for suite {suite!r} with component main in {apt_dir}")


def package_versions(uri: str, suite: str, packages: tuple[str, ...]) -> dict[str, str]:
    """Return each package's version in ``uri suite`` from apt's lists (``apt-cache madison``)."""
    out = run(["apt-cache", "madison", *packages], "apt-cache madison")
    versions: dict[str, str] = {}
    for line in out.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2].startswith(f"{uri} {suite}/"):
            versions.setdefault(fields[0], fields[1])
    missing = sorted(set(packages) - set(versions))
    if missing:
        raise ImageBuildError(f"apt has no {suite} version of {missing}: run apt-get update")
    return versions


def _apt_entries(apt_dir: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """Yield ``(uri, suites, components)`` of every enabled ``deb`` source."""
    one_line = [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]
    for path in one_line:
        if path.is_file():
            yield from _one_line_entries(path.read_text())
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        yield from _deb822_entries(path.read_text())


def _one_line_entries(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], [words[2]], words[3:]


def _deb822_entries(text: str) -> Iterator[tuple[str, list[str], list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
            continue
        for uri in fields.get("uris", "").split():
            yield uri, fields.get("suites", "").split(), fields.get("components", "").split()


def _os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        if "=" in line:
            name, value = line.split("=", 1)
            values[name] = value.strip().strip('"')
    return values


def debootstrap(
    tree: Path, uri: str, suite: str, debs: Path, include: Iterable[str], timeout: float = 1800
) -> None:
    """``debootstrap --variant=minbase --include=...`` into ``tree``, in a private mount
    namespace (its /proc mounts die with it), keeping the .debs in ``debs`` for the next
    build. Raises :class:`ImageBuildError` when it fails."""
    debs.mkdir(parents=True, exist_ok=True)
    argv = ["unshare", "--mount", "--propagation", "private", "debootstrap"]
    argv += ["--variant=minbase", f"--cache-dir={debs}"]
    argv += ["--include=" + ",".join(include)] if include else []
    run([*argv, suite, str(tree), uri], "debootstrap", timeout=timeout)


def in_chroot(tree: Path, script: str, what: str, timeout: float = 600.0) -> str:
    """Run the shell ``script`` inside ``tree`` with /proc, /sys and /dev/pts mounted (in a
    private mount namespace); return its output. Raises :class:`ImageBuildError`."""
    outer = (
        'mount -t proc proc "$0/proc" && mount -t sysfs sysfs "$0/sys" && '
        '{ mount -t devpts devpts "$0/dev/pts" || true; } && exec chroot "$0" /bin/sh -ec "$1"'
    )
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", outer]
    return run([*argv, str(tree), script], what, timeout=timeout)


def mkfs(tree: Path, image: Path, label: str, size: int) -> None:
    """An ext4 image of ``size`` bytes (rounded up to MiB) holding ``tree``."""
    size_mib = -(-size // MIB)
    argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", label, "-d", str(tree)]
    run([*argv, str(image), f"{size_mib}M"], "mkfs.ext4")


def trim(tree: Path) -> None:
    """Drop what a guest never reads: package caches and lists, docs, man pages, translations."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin"):
        for path in tree.glob(pattern):
            path.unlink()
    for sub in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(tree / sub, ignore_errors=True)
    (tree / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def tree_size(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def only(paths: Iterator[Path]) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise ImageBuildError(f"expected exactly one file, found {found}")
    return found[0]


def write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def run(argv: list[str], what: str, timeout: float = 300.0) -> str:
    """Run ``argv``; return its stdout.

    Raises :class:`ImageBuildError` with the end of stderr when it fails or runs longer than
    ``timeout`` seconds.
    """
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ImageBuildError(f"{what} did not finish within {timeout} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise ImageBuildError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout
