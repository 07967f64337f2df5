"""Test guest kit: a tiny bootable Linux guest and an LXC root directory, from Debian packages.

What it does:

- :func:`ensure_guest_kit` picks the candidate versions of Debian 12's 6.1 *cloud* kernel,
  ``busybox-static``, ``dropbear-bin`` and dropbear's shared libraries with ``apt-cache``,
  fetches exactly those ``.deb`` files with ``apt-get download`` into the cache, unpacks them with
  ``dpkg -x`` and builds a kit directory: the kernel, an initramfs, an LXC root directory and
  fresh SSH keys. The kit is cached under a key made of the exact ``.deb`` versions and a hash of
  the kit modules' sources (:data:`KIT_SOURCES`), so a new package version or an edit of them
  builds a new kit. A build happens in a temporary directory that is renamed into place only
  when complete, under a file lock, so an interrupted build never leaves a kit that looks
  finished.
- The initramfs is two gzip'd cpio "newc" archives written by :class:`NewcWriter` and
  concatenated (the kernel unpacks them in order): ``initramfs-base.cpio.gz`` holds no secret
  and is byte-for-byte reproducible from its inputs; ``initramfs-keys.cpio.gz`` holds the guest's
  SSH host key and the client's authorized key. ``initrd.img`` is the two joined.
- The guest's ``/init`` (busybox sh, PID 1) loads the virtio/Xen front-end modules (with
  ``virtio_rng``: given a virtio RNG device, ``DomainSpec(rng=True)``, the kernel's random pool
  is filled from the host early in boot, so dropbear's first connection does not block in
  ``getrandom()``, which under software emulation without one took seconds), starts DHCP,
  ``acpid`` and ``dropbear``, reads a NoCloud seed (an iso9660 image labelled ``cidata``) and
  prints the ``hvlib-guest: ...`` lines named by the ``*_LINE``/``*_PREFIX`` constants below on
  ``/dev/console``. Kernel command-line flags (``FLAG_*``, see :func:`kernel_cmdline`) change
  that behaviour. Order on the console: ``SSH_LINE``, the seed lines, the cpu-flags line, the
  disk lines, the nic lines, then ``READY_LINE``. ``SSH_LINE`` means the guest can be reached
  over SSH: port 22 is listening and, when the guest has a network interface, the first
  ``LEASE_PREFIX`` line (an address configured) came before it; it comes without a lease only
  when the guest has no interface (besides ``lo``) or DHCP gave up on every interface (one round
  of 5 tries, ~10 s; or, at the latest, after about :data:`SSH_LEASE_WAIT_S`). Further
  ``LEASE_PREFIX`` lines (other interfaces) come whenever DHCP answers.
  Graceful power-off works through the ACPI button (acpid) and, for Xen's shutdown request,
  through ``poweroff`` signalling PID 1; ``hvlib.noacpi`` turns both off.
- The LXC root directory holds busybox and ``/sbin/hvlib-init``, which prints ``READY_LINE`` on
  stdout and exits 0 on SIGTERM (or ignores it when given ``--ignore-term``).

A kit directory (``<cache>/guestkit-<key>/``) holds ``vmlinuz``, ``initrd.img``,
``initramfs-base.cpio.gz``, ``initramfs-keys.cpio.gz``, ``lxc-rootfs/``, ``host_ed25519``
(dropbear format) and ``.pub``, ``client_ed25519`` (OpenSSH format, 0600) and ``.pub``, and
``kit.json`` (written last: a kit without it is half-built and gets rebuilt). The downloaded
``.deb`` files stay in ``<cache>/debs/``. Building a kit removes other kits not touched for a day.

What it must not do: download anything but Debian packages through apt's own clients; start,
define or talk to libvirt or any VM (booting the kit is the callers' job); send to or listen on
any network address; put keys anywhere but the cache (they are made per kit and never
committed). The library proper (``hvlib``) must not import it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hvlib.testkit import cache_dir
from hvlib.testkit.debs import (
    _extract,
    _kernel_version,
    _resolve_in_tree,
    _run,
    busybox_applets,
    fetch_debs,
    library_closure,
    resolve_packages,
)
from hvlib.testkit.elfmods import elf_interpreter, guest_modules, module_load_order
from hvlib.testkit.guestinit import (
    acpi_power_script,
    lxc_init_script,
    render_init_script,
    udhcpc_script,
)
from hvlib.testkit.kitlayout import (
    _GROUP,
    _GUEST_LIB_DIR,
    _GUEST_MODULE_DIR,
    _HOST_KEY_GUEST_PATH,
    _KIT_FORMAT,
    _LIB_DIRS,
    _MANIFEST,
    _PASSWD,
    _PRUNE_AFTER_S,
    _PWRF_SCRIPT,
    _SHELLS,
    _UDHCPC_SCRIPT,
    COUNTER_PREFIX,
    CPU_FLAGS_PREFIX,
    DISK_PREFIX,
    FLAG_COUNTER,
    FLAG_CPUINFO,
    FLAG_DISKS,
    FLAG_NICS,
    FLAG_NOACPI,
    FLAG_NOSSH,
    GUEST_MODULES,
    LEASE_PREFIX,
    LINE_PREFIX,
    LXC_IGNORE_TERM_ARG,
    LXC_INIT,
    NIC_PREFIX,
    POWEROFF_LINE,
    READY_LINE,
    SEED_FILES_PREFIX,
    SEED_LABEL,
    SEED_MARKER_DIRECTIVE,
    SEED_MARKER_PREFIX,
    SSH_FAILED_LINE,
    SSH_LEASE_WAIT_S,
    SSH_LINE,
    TERM_LINE,
    GuestKitError,
    kernel_cmdline,
)
from hvlib.testkit.newc import NewcWriter, _normalize_name, finish_gzip

__all__ = [
    "COUNTER_PREFIX",
    "CPU_FLAGS_PREFIX",
    "DISK_PREFIX",
    "FLAG_COUNTER",
    "FLAG_CPUINFO",
    "FLAG_DISKS",
    "FLAG_NICS",
    "FLAG_NOACPI",
    "FLAG_NOSSH",
    "GUEST_MODULES",
    "LEASE_PREFIX",
    "LINE_PREFIX",
    "LXC_IGNORE_TERM_ARG",
    "LXC_INIT",
    "NIC_PREFIX",
    "POWEROFF_LINE",
    "READY_LINE",
    "SEED_FILES_PREFIX",
    "SEED_LABEL",
    "SEED_MARKER_DIRECTIVE",
    "SEED_MARKER_PREFIX",
    "SSH_FAILED_LINE",
    "SSH_LEASE_WAIT_S",
    "SSH_LINE",
    "TERM_LINE",
    "GuestKit",
    "GuestKitError",
    "NewcWriter",
    "ensure_guest_kit",
    "kernel_cmdline",
    "kit_cache_key",
    "lxc_init_script",
    "module_load_order",
    "render_init_script",
]


@dataclass(frozen=True)
class GuestKit:
    """A built kit: paths inside its cache directory and the SSH keys that go with it."""

    directory: Path
    kernel: Path
    initrd: Path
    lxc_rootfs: Path
    host_key_pub: str
    client_key: Path
    client_key_pub: str
    kernel_version: str
    packages: tuple[tuple[str, str], ...]
    modules: tuple[str, ...]

    def known_hosts_line(self, host: str, port: int = 22) -> str:
        """Return an OpenSSH known_hosts line pinning the guest's host key for ``host:port``.

        Raises ValueError for an empty host or a port outside 1..65535.
        """
        if not host or any(c.isspace() for c in host):
            raise ValueError(f"bad host {host!r}")
        if not 0 < port < 65536:
            raise ValueError(f"bad port {port}")
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.host_key_pub}"


def parse_dropbear_public(output: str) -> str:
    """Return "ssh-ed25519 BASE64" from ``dropbearkey -y`` output. Raises GuestKitError if none."""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "ssh-ed25519":
            return f"{fields[0]} {fields[1]}"
    raise GuestKitError(f"no ssh-ed25519 public key in dropbearkey output: {output!r}")


def _dropbearkey(tree: Path, *args: str) -> str:
    """Run the unpacked ``dropbearkey`` through the unpacked loader (no host dropbear needed)."""
    loader = _resolve_in_tree(tree, "lib64/ld-linux-x86-64.so.2")
    libpath = ":".join(str(tree / d) for d in _LIB_DIRS)
    program = tree / "usr/bin/dropbearkey"
    return _run([str(loader), "--library-path", libpath, str(program), *args])


def make_host_key(tree: Path, key_file: Path) -> str:
    """Create a dropbear ed25519 host key at ``key_file`` (0600); return its OpenSSH public line.

    Raises GuestKitError if dropbearkey fails.
    """
    key_file.unlink(missing_ok=True)
    _dropbearkey(tree, "-t", "ed25519", "-f", str(key_file))
    key_file.chmod(0o600)
    return parse_dropbear_public(_dropbearkey(tree, "-y", "-f", str(key_file)))


def make_client_key(key_file: Path) -> str:
    """Write a new OpenSSH-format ed25519 private key (0600); return its public line."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    _write_private(key_file, private)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created with mode 0600 (never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)


def _add_skeleton(writer: NewcWriter) -> None:
    """Add the directories, device nodes and /etc files every guest needs."""
    for name in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run"):
        writer.add_dir(name)
    writer.add_dir("tmp", 0o1777)
    writer.add_dir("root", 0o700)
    writer.add_dir("var")
    writer.add_symlink("var/run", "/run")
    writer.add_chardev("dev/console", 5, 1)
    writer.add_chardev("dev/null", 1, 3, 0o666)
    for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP), ("etc/shells", _SHELLS)):
        writer.add_file(name, text.encode())
    writer.add_file("etc/hostname", b"hvlib-guest\n")


def _add_busybox(writer: NewcWriter, busybox: Path, applets: Sequence[str]) -> None:
    """Add busybox and a symlink to it for every applet."""
    writer.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in applets:
        writer.add_symlink(applet, "/bin/busybox")


def _add_dropbear(writer: NewcWriter, tree: Path) -> None:
    """Add dropbear, its libraries (as sonames) and the dynamic loader named in its ``.interp``.

    Raises GuestKitError if a library or the loader is missing.
    """
    program = tree / "usr/sbin/dropbear"
    data = program.read_bytes()
    writer.add_file("usr/sbin/dropbear", data, 0o755)
    libraries = library_closure(tree, [program])
    interp = elf_interpreter(data)
    if interp is None:
        raise GuestKitError("dropbear has no program interpreter")
    loader = _resolve_in_tree(tree, interp)
    libraries.setdefault(loader.name, loader)
    for soname, path in sorted(libraries.items()):
        writer.add_file(f"{_GUEST_LIB_DIR}/{soname}", path.read_bytes(), 0o755)
    if _normalize_name(interp) != f"{_GUEST_LIB_DIR}/{loader.name}":
        writer.add_symlink(interp, f"/{_GUEST_LIB_DIR}/{loader.name}")


def _add_guest_config(writer: NewcWriter, modules: Sequence[tuple[str, Path]]) -> None:
    """Add the modules, /init, the udhcpc lease script and the power-button action."""
    for name, path in modules:
        writer.add_file(f"{_GUEST_MODULE_DIR}/{name}.ko", path.read_bytes())
    writer.add_file("init", render_init_script([n for n, _ in modules]).encode(), 0o755)
    writer.add_file(_UDHCPC_SCRIPT, udhcpc_script().encode(), 0o755)
    writer.add_file(_PWRF_SCRIPT, acpi_power_script().encode(), 0o755)


def build_base_initramfs(tree: Path, modules: Sequence[tuple[str, Path]]) -> bytes:
    """Return the key-free, reproducible gzip'd newc initramfs. Raises GuestKitError on a gap."""
    buffer = io.BytesIO()
    writer = NewcWriter(buffer)
    _add_skeleton(writer)
    busybox = tree / "bin/busybox"
    _add_busybox(writer, busybox, busybox_applets(busybox))
    _add_dropbear(writer, tree)
    _add_guest_config(writer, modules)
    return finish_gzip(writer, buffer)


def build_keys_initramfs(host_key: bytes, authorized_key: str) -> bytes:
    """Return the small gzip'd newc archive with the host key and ``/root/.ssh/authorized_keys``."""
    buffer = io.BytesIO()
    writer = NewcWriter(buffer)
    writer.add_dir("etc")
    writer.add_dir("etc/dropbear", 0o700)
    writer.add_file(_HOST_KEY_GUEST_PATH, host_key, 0o600)
    writer.add_dir("root", 0o700)
    writer.add_dir("root/.ssh", 0o700)
    writer.add_file("root/.ssh/authorized_keys", (authorized_key + "\n").encode(), 0o600)
    return finish_gzip(writer, buffer)


def _write_file(path: Path, data: bytes, perm: int = 0o644) -> None:
    """Write ``data`` to ``path`` (parents created) and set its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(perm)


_LXC_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "dev", "proc", "sys", "run", "var/log")


def _lxc_skeleton(root: Path) -> None:
    """Create the container's directories (and /dev/null, for use under chroot, when root)."""
    for name in _LXC_DIRS:
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    (root / "root").mkdir(mode=0o700)
    with contextlib.suppress(PermissionError):  # libvirt mounts its own /dev over this one
        os.mknod(root / "dev/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (root / "dev/null").chmod(0o666)


def build_lxc_rootfs(tree: Path, root: Path) -> None:
    """Create the container root directory: busybox and its applets, /etc basics, the init.

    Raises GuestKitError if the unpacked busybox cannot list its applets.
    """
    _lxc_skeleton(root)
    busybox = tree / "bin/busybox"
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    for applet in busybox_applets(busybox):
        (root / applet).symlink_to("/bin/busybox")
    for name, text in (("etc/passwd", _PASSWD), ("etc/group", _GROUP), ("etc/shells", _SHELLS)):
        _write_file(root / name, text.encode())
    _write_file(root / "etc/hostname", b"hvlib-container\n")
    _write_file(root / LXC_INIT.lstrip("/"), lxc_init_script().encode(), 0o755)


KIT_SOURCES = ("kitlayout", "newc", "elfmods", "guestinit", "debs", "guestkit")
"""The modules a kit is made by: an edit of any of them builds a new kit."""


def source_digest() -> str:
    """Return the SHA-256 of the kit's source files (part of the cache key)."""
    digest = hashlib.sha256()
    for name in KIT_SOURCES:
        digest.update(Path(__file__).with_name(f"{name}.py").read_bytes())
    return digest.hexdigest()


def kit_cache_key(packages: Sequence[tuple[str, str]], source: str) -> str:
    """Return the cache key (16 hex digits) of a kit built from ``packages`` by ``source``."""
    text = json.dumps(
        {"format": _KIT_FORMAT, "packages": sorted(packages), "source": source}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_file`` (created if missing) for the ``with`` body."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load_kit(directory: Path, key: str) -> GuestKit | None:
    """Return the kit in ``directory`` if it is complete and made for ``key``, else None."""
    try:
        manifest = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("key") != key:
        return None
    kit = _kit_from_manifest(directory, manifest)
    if kit is None:
        return None
    needed = (kit.kernel, kit.initrd, kit.client_key, kit.lxc_rootfs / LXC_INIT.lstrip("/"))
    return kit if all(path.exists() for path in needed) else None


def _kit_from_manifest(directory: Path, manifest: dict[str, object]) -> GuestKit | None:
    """Return the GuestKit a manifest describes, or None if a field is missing or malformed."""
    packages, modules = manifest.get("packages"), manifest.get("modules")
    if not isinstance(packages, list) or not isinstance(modules, list):
        return None
    try:
        return GuestKit(
            directory=directory,
            kernel=directory / "vmlinuz",
            initrd=directory / "initrd.img",
            lxc_rootfs=directory / "lxc-rootfs",
            host_key_pub=str(manifest["host_key_pub"]),
            client_key=directory / "client_ed25519",
            client_key_pub=str(manifest["client_key_pub"]),
            kernel_version=str(manifest["kernel_version"]),
            packages=tuple((str(n), str(v)) for n, v in packages),
            modules=tuple(str(m) for m in modules),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _build_keys(dest: Path, tree: Path, base: bytes) -> tuple[str, str]:
    """Make the host and client keys, the keys archive and ``initrd.img``; return the publics."""
    host_pub = make_host_key(tree, dest / "host_ed25519")
    (dest / "host_ed25519.pub").write_text(host_pub + "\n")
    client_pub = make_client_key(dest / "client_ed25519")
    (dest / "client_ed25519.pub").write_text(client_pub + "\n")
    keys = build_keys_initramfs((dest / "host_ed25519").read_bytes(), client_pub)
    _write_file(dest / "initramfs-keys.cpio.gz", keys, 0o600)
    (dest / "initrd.img").write_bytes(base + keys)
    return host_pub, client_pub


def _build_kit(
    dest: Path, debs: Sequence[Path], key: str, packages: Sequence[tuple[str, str]]
) -> None:
    """Build a whole kit into the empty directory ``dest``; the manifest is written last.

    Raises GuestKitError if a step fails.
    """
    tree = dest / "unpacked"
    _extract(debs, tree)
    kver = _kernel_version(tree)
    shutil.copyfile(tree / "boot" / f"vmlinuz-{kver}", dest / "vmlinuz")
    modules = guest_modules(tree / "lib/modules" / kver)
    base = build_base_initramfs(tree, modules)
    (dest / "initramfs-base.cpio.gz").write_bytes(base)
    host_pub, client_pub = _build_keys(dest, tree, base)
    build_lxc_rootfs(tree, dest / "lxc-rootfs")
    shutil.rmtree(tree)
    manifest = {"key": key, "kernel_version": kver, "packages": [list(p) for p in packages]}
    manifest |= {"modules": [name for name, _ in modules], "host_key_pub": host_pub}
    manifest |= {"client_key_pub": client_pub}
    (dest / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _remove_stale(root: Path, final: Path) -> None:
    """Remove leftovers of interrupted builds and kits unused for a day (hold the lock)."""
    for leftover in root.glob(".guestkit-build-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if final.exists():
        shutil.rmtree(final)
    too_old = time.time() - _PRUNE_AFTER_S
    for old in root.glob("guestkit-*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and old.stat().st_mtime < too_old:
                shutil.rmtree(old)


def _build_into_place(
    root: Path, final: Path, key: str, packages: Sequence[tuple[str, str]]
) -> None:
    """Build in a temporary directory under ``root`` and rename it to ``final`` when complete.

    Raises GuestKitError if a step fails (the temporary directory is removed).
    """
    debs = fetch_debs(packages, root / "debs")
    build = Path(tempfile.mkdtemp(prefix=".guestkit-build-", dir=root))
    try:
        _build_kit(build, debs, key, packages)
        build.chmod(0o755)  # QEMU may run as another user: it must reach kernel and initrd
        os.rename(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


def ensure_guest_kit(cache: Path | None = None) -> GuestKit:
    """Return the guest kit for the current package candidates, building it if needed.

    ``cache`` defaults to :func:`hvlib.testkit.cache_dir`. Idempotent and safe to call from
    several processes at once (a file lock serialises builds). A cold build took ~5 s here,
    downloads (31 MB of .debs) included. Raises GuestKitError if apt, dpkg or a build step
    fails (the message says which).
    """
    root = cache if cache is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    packages = resolve_packages()
    key = kit_cache_key(packages, source_digest())
    final = root / f"guestkit-{key}"
    kit = _load_kit(final, key)
    if kit is not None:
        with contextlib.suppress(OSError):
            os.utime(final)  # its mtime says when it was last used (see _remove_stale)
        return kit
    with _locked(root / "guestkit.lock"):
        kit = _load_kit(final, key)
        if kit is not None:
            return kit
        _remove_stale(root, final)
        _build_into_place(root, final, key, packages)
    kit = _load_kit(final, key)
    if kit is None:
        raise GuestKitError(f"kit at {final} is incomplete right after its build")
    return kit
