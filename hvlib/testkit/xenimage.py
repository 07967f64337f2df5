"""Build and cache the boot files of hvlib's nested Xen host: Xen, a dom0 kernel, a dom0 image.

What it does: from Debian packages only (the archive that this machine's apt sources name for
its own release), ``debootstrap --variant=minbase`` a dom0 tree holding Xen 4.17's tools,
libvirt with its libxl driver, ``qemu-system-xen`` (HVM device models) and OpenSSH; apply what
running Xen nested under QEMU's software emulation needs (a minimal CPU model in libvirt's
cpu_map, no QEMU driver in dom0's libvirtd, xenconsoled logging guest consoles, ``/run/lock``,
``busybox poweroff -f``); generate the SSH keys that pin dom0's host key and let the test process
log in as root; and pack the tree into an ext4 image with ``mkfs.ext4 -d``. The result is
cached under ``cache_dir()/xen/KEY`` where KEY hashes the archive, the versions of the packages
installed and this module's source: it is rebuilt only when one of them changes. A build runs
in a temporary directory that is renamed into place when complete, under a lock, so a build that
died half-way is never used and is repaired by the next call.

:func:`ensure_kit_disk` packs a few files (the test guest's kernel and initramfs) into a small
ext4 image that dom0 mounts read-only at :data:`DOM0_KIT_DIR`.

What it must not do: boot anything, change the host's apt or libvirt state, or write outside
the cache directory. debootstrap's mounts live in a private mount namespace that dies with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree

from hvlib.testkit import cache_dir

#: Packages installed into dom0 on top of ``--variant=minbase``.
DOM0_PACKAGES = (
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "linux-image-amd64",
    "libvirt-daemon",
    "libvirt-daemon-driver-xen",
    "libvirt-clients",
    "qemu-system-xen",
    "openssh-server",
    "busybox",
    "iproute2",
    "kmod",
)
#: Where dom0 mounts the disk made by :func:`ensure_kit_disk`.
DOM0_KIT_DIR = "/var/lib/hvlib/kit"
#: Xen's HVM firmware inside dom0.
DOM0_HVMLOADER = "/usr/lib/xen-4.17/boot/hvmloader"
#: dom0's PID 1, a shell script written by this module.
DOM0_INIT = "/usr/local/sbin/hvlib-dom0-init"
#: xenconsoled writes each guest's console to ``DOM0_CONSOLE_DIR/guest-NAME.log``.
DOM0_CONSOLE_DIR = "/var/log/xen/console"
#: The line dom0's init prints on its console once sshd and libvirtd run.
DOM0_READY = "hvlib-dom0: ready"
#: Printed by dom0's init when a step it cannot do without fails.
DOM0_FAILED = "hvlib-dom0: failed"
KIT_LABEL = "hvlib-kit"

_MIB = 1024 * 1024
_INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4")
#: Loaded by dom0's init: its NIC, Xen's back ends for guest disks and NICs, and loop (Xen's
#: ``block`` hotplug script attaches a file-backed guest disk through a loop device; without
#: it libxl failed to create such a guest) - no udev runs in dom0 to load them on demand.
_DOM0_MODULES = ("virtio_net", "xen-blkback", "xen-netback", "xen-gntalloc", "loop")
_CPU_MODEL = "hvlib-minimal"

_INIT_SCRIPT = rf"""#!/bin/sh
# PID 1 of hvlib's nested Xen dom0 (written by hvlib.testkit.xenimage). It starts Xen's daemons,
# the network (a DHCP lease from QEMU's user network), sshd and libvirtd, prints
# "{DOM0_READY}", then idles. SIGUSR2 or SIGTERM (busybox poweroff) powers dom0 off at once.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
trap 'busybox poweroff -f' USR2 TERM
say() {{ echo "hvlib-dom0: $*"; }}
must() {{ "$@" || say "failed: $*"; }}
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
must mount -o remount,rw /
mkdir -p /run/lock /run/sshd {DOM0_CONSOLE_DIR} /var/log/libvirt
hostname hvlib-dom0
ip link set lo up
say "starting xen daemons"
must /etc/init.d/xen start
say "starting network"
modprobe -a {" ".join(_DOM0_MODULES)} || say "some modules did not load"
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
must ip link set "$nic" up
must busybox udhcpc -q -n -t 30 -T 1 -i "$nic" -s /usr/local/lib/hvlib/udhcpc-script
mount -o ro LABEL={KIT_LABEL} {DOM0_KIT_DIR} || say "no kit disk"
say "starting sshd and libvirtd"
must /usr/sbin/sshd -E /var/log/sshd.log
must virtlogd -d
must libvirtd -d
say ready
while :; do sleep 3600 & wait $!; done
"""

_UDHCPC_SCRIPT = """#!/bin/sh
# busybox udhcpc event script (hvlib dom0): puts the leased address on the interface, nothing else.
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    ;;
esac
"""

_SSHD_CONFIG = """# hvlib dom0: root logs in with the test's key only; one pinned ed25519 host key.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
LogLevel VERBOSE
"""

_LIBVIRTD_CONFIG = """# hvlib dom0: log to a file (there is no syslog) for diagnostics.
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

_XEN_DEFAULTS = """
# hvlib dom0: Debian's init script ignores XENCONSOLED_TRACE; log every guest console to a file.
XENCONSOLED_ARGS="--log=guest --log-dir=/var/log/xen/console"
"""


class XenImageError(RuntimeError):
    """Raised when the nested Xen host's files cannot be built (the message says which step)."""


@dataclass(frozen=True)
class XenImage:
    """The cached boot files of the nested Xen host (all read-only; boot dom0 on an overlay)."""

    directory: Path
    #: The unpacked Xen hypervisor, a multiboot ELF that QEMU's direct kernel boot loads.
    xen: Path
    dom0_kernel: Path
    dom0_initrd: Path
    #: dom0's root filesystem, a raw ext4 image.
    rootfs: Path
    #: OpenSSH private key (ed25519) that dom0's root accepts.
    client_key: Path
    #: dom0's SSH host key, public half, as ``ssh-ed25519 BASE64``.
    host_key_pub: Path
    #: What the cache key was computed from: archive, suite, package versions, source hash.
    inputs: Mapping[str, str]


def ensure_xen_image() -> XenImage:
    """Return the nested Xen host's boot files, building them first when their inputs changed.

    Raises :class:`XenImageError` when the apt source, package versions or a build step
    (debootstrap, mkfs.ext4) fails; a cold build takes a few minutes.
    """
    inputs = build_inputs()
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_dir() / "xen"
    with _locked(root):
        image = _image_at(root / key, inputs)
        if not _complete(image):
            _build_into(root, key, inputs)
            _prune(root, keep={key})
        return image


def build_inputs() -> dict[str, str]:
    """Return what the dom0 image depends on: archive URI, suite, package versions, source hash.

    Raises :class:`XenImageError` when no apt source for this release is configured or apt's
    package lists lack a package (run ``apt-get update``).
    """
    uri, suite = apt_source()
    inputs = {"archive": uri, "suite": suite, "source": _source_hash()}
    inputs.update(_package_versions(uri, suite, DOM0_PACKAGES))
    return inputs


def apt_source(apt_dir: Path = Path("/etc/apt")) -> tuple[str, str]:
    """Return ``(uri, suite)`` of the Debian archive that apt uses for this machine's release.

    Reads ``sources.list`` and ``sources.list.d/*.list|*.sources`` (one-line and deb822
    formats); the suite is the release codename from ``/etc/os-release``. Raises
    :class:`XenImageError` when no enabled ``deb`` entry with component ``main`` names it.
    """
    suite = _os_release().get("VERSION_CODENAME", "")
    for uri, suites, components in _apt_entries(apt_dir):
        if suite in suites and "main" in components:
            return uri.rstrip("/"), suite
    raise XenImageError(f"no apt source for suite {suite!r} with component main in {apt_dir}")


def ensure_kit_disk(files: Mapping[str, Path]) -> Path:
    """Return a cached ext4 image (label ``hvlib-kit``) holding ``files`` under their names.

    dom0 mounts it read-only at :data:`DOM0_KIT_DIR`. Raises ``ValueError`` for a name that is
    not a plain file name, :class:`XenImageError` when mkfs.ext4 fails and ``OSError`` when a
    file cannot be read.
    """
    bad = [name for name in files if name in ("", ".", "..") or "/" in name]
    if bad:
        raise ValueError(f"kit file names must be plain file names: {bad}")
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + _file_hash(files[name]).encode())
    root = cache_dir() / "xen"
    path = root / f"kit-{digest.hexdigest()[:16]}.img"
    with _locked(root):
        if not path.exists():
            _make_kit_disk(files, path)
            for old in root.glob("kit-*.img"):
                if old != path:
                    old.unlink()  # a running QEMU keeps its open copy
    return path


def _make_kit_disk(files: Mapping[str, Path], path: Path) -> None:
    """Write the kit image to a temporary name, then rename it to ``path``."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".kit-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        for name, source in files.items():
            shutil.copyfile(source, tree / name)
        size = sum(f.stat().st_size for f in tree.iterdir()) + 16 * _MIB
        image = Path(tmp) / "kit.img"
        _mkfs(tree, image, KIT_LABEL, size)
        image.rename(path)


def _image_at(directory: Path, inputs: Mapping[str, str]) -> XenImage:
    return XenImage(
        directory=directory,
        xen=directory / "xen",
        dom0_kernel=directory / "vmlinuz",
        dom0_initrd=directory / "initrd.img",
        rootfs=directory / "dom0.img",
        client_key=directory / "client_key",
        host_key_pub=directory / "host_key.pub",
        inputs=dict(inputs),
    )


def _complete(image: XenImage) -> bool:
    files = (image.xen, image.dom0_kernel, image.dom0_initrd, image.rootfs, image.client_key)
    return all(f.is_file() for f in (*files, image.host_key_pub))


def _build_into(root: Path, key: str, inputs: Mapping[str, str]) -> None:
    """Build in ``root/.build-*`` and rename it to ``root/key`` (replacing a broken one)."""
    work = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    os.chmod(work, 0o755)  # QEMU may run as an unprivileged user
    try:
        _build(work, inputs["archive"], inputs["suite"])
        (work / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True))
        shutil.rmtree(root / key, ignore_errors=True)
        work.rename(root / key)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build(work: Path, uri: str, suite: str) -> None:
    tree = work / "tree"
    _debootstrap(tree, uri, suite, cache_dir() / "xen" / "debs")
    _write_keys(work)
    _configure(tree, work)
    _rebuild_initramfs(tree)
    _extract_boot_files(tree, work)
    _trim(tree)
    _mkfs(tree, work / "dom0.img", "hvlib-dom0", _tree_size(tree) * 5 // 4 + 512 * _MIB)
    shutil.rmtree(tree)


def _debootstrap(tree: Path, uri: str, suite: str, debs: Path) -> None:
    """Run debootstrap in a private mount namespace (its /proc mounts die with it)."""
    debs.mkdir(parents=True, exist_ok=True)
    argv = ["unshare", "--mount", "--propagation", "private", "debootstrap"]
    argv += ["--variant=minbase", f"--cache-dir={debs}", "--include=" + ",".join(DOM0_PACKAGES)]
    _run([*argv, suite, str(tree), uri], "debootstrap", timeout=1800)


def _write_keys(work: Path) -> None:
    """Generate dom0's host key and the test process's client key (ed25519, OpenSSH format)."""
    for name in ("host_key", "client_key"):
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        _write(work / name, private, 0o600)
        _write(work / f"{name}.pub", public + b"\n", 0o644)


def _configure(tree: Path, work: Path) -> None:
    """Apply every dom0 change: init, network, SSH, libvirt, Xen console logging, cpu_map."""
    _write(tree / DOM0_INIT.lstrip("/"), _INIT_SCRIPT.encode(), 0o755)
    _write(tree / "usr/local/lib/hvlib/udhcpc-script", _UDHCPC_SCRIPT.encode(), 0o755)
    (tree / DOM0_KIT_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    _configure_ssh(tree, work)
    _write(tree / "etc/libvirt/libvirtd.conf", _LIBVIRTD_CONFIG.encode(), 0o644)
    with (tree / "etc/default/xen").open("a") as defaults:
        defaults.write(_XEN_DEFAULTS)
    for driver in tree.glob("usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so"):
        driver.unlink()  # it takes libvirtd down when the libvirt-qemu user is missing
    _add_cpu_model(tree / "usr/share/libvirt/cpu_map")


def _configure_ssh(tree: Path, work: Path) -> None:
    ssh = tree / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    (work / "host_key").rename(ssh / "ssh_host_ed25519_key")  # only dom0 keeps it
    shutil.copyfile(work / "host_key.pub", ssh / "ssh_host_ed25519_key.pub")
    _write(ssh / "sshd_config.d/hvlib.conf", _SSHD_CONFIG.encode(), 0o644)
    dot_ssh = tree / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    _write(dot_ssh / "authorized_keys", (work / "client_key.pub").read_bytes(), 0o600)


def _rebuild_initramfs(tree: Path) -> None:
    """Regenerate dom0's initramfs with only the modules that mounting its root needs.

    Debian's default (``MODULES=most``, ~36 MB) makes udev load dozens of drivers during the
    boot; the small one (~7 MB) saves seconds of every boot under TCG. dom0's init loads the
    rest. Raises :class:`XenImageError` when update-initramfs fails.
    """
    conf = tree / "etc/initramfs-tools"
    _write(
        conf / "conf.d/hvlib.conf",
        b"# hvlib dom0: see /etc/initramfs-tools/modules\nMODULES=list\n",
        0o644,
    )
    with (conf / "modules").open("a") as modules:
        modules.write("".join(f"{name}\n" for name in _INITRAMFS_MODULES))
    script = 'mount -t proc proc "$1/proc" && exec chroot "$1" update-initramfs -u -k all'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(tree)]
    _run(argv, "update-initramfs")


def _add_cpu_model(cpu_map: Path) -> None:
    """Add a CPU model with only fpu and pse to libvirt's x86 cpu_map.

    Under TCG, Xen reports neither VME nor SEP, every stock model needs one of them, and the
    libxl driver then fails with "Cannot find suitable CPU model for given data".
    """
    model_file = f"x86_{_CPU_MODEL}.xml"
    cpus = etree.Element("cpus")
    model = etree.SubElement(cpus, "model", name=_CPU_MODEL)
    etree.SubElement(model, "decode", host="on", guest="on")
    for feature in ("fpu", "pse"):
        etree.SubElement(model, "feature", name=feature)
    etree.ElementTree(cpus).write(str(cpu_map / model_file), pretty_print=True)
    index = etree.parse(str(cpu_map / "index.xml"))
    anchor = index.find("arch[@name='x86']/include[@filename='x86_486.xml']")
    if anchor is None:
        raise XenImageError(f"{cpu_map}/index.xml has no x86_486.xml include")
    anchor.addnext(etree.Element("include", filename=model_file))
    index.write(str(cpu_map / "index.xml"))


def _extract_boot_files(tree: Path, work: Path) -> None:
    """Copy Xen (gunzipped), dom0's kernel and initramfs out of the tree's /boot."""
    boot = tree / "boot"
    with gzip.open(boot / "xen-4.17-amd64.gz") as src, (work / "xen").open("wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copyfile(_only(boot.glob("vmlinuz-*")), work / "vmlinuz")
    shutil.copyfile(_only(boot.glob("initrd.img-*")), work / "initrd.img")


def _trim(tree: Path) -> None:
    """Drop what dom0 never reads: /boot, package caches and lists, docs, man pages, locales."""
    for pattern in ("boot/*", "var/cache/apt/archives/*.deb", "var/cache/apt/*.bin"):
        for path in tree.glob(pattern):
            path.unlink()
    for sub in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale"):
        shutil.rmtree(tree / sub, ignore_errors=True)


def _mkfs(tree: Path, image: Path, label: str, size: int) -> None:
    size_mib = -(-size // _MIB)
    argv = ["mkfs.ext4", "-q", "-F", "-m", "0", "-L", label, "-d", str(tree)]
    _run([*argv, str(image), f"{size_mib}M"], "mkfs.ext4")


def _prune(root: Path, keep: set[str]) -> None:
    """Remove older builds and stale temporary directories (called with the lock held)."""
    for path in root.iterdir():
        stale = path.name.startswith(".build-") or re.fullmatch(r"[0-9a-f]{16}", path.name)
        if stale and path.name not in keep and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.lock`` (serialises builds across processes)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _package_versions(uri: str, suite: str, packages: tuple[str, ...]) -> dict[str, str]:
    """Return each package's version in ``uri suite`` from apt's lists (``apt-cache madison``)."""
    out = _run(["apt-cache", "madison", *packages], "apt-cache madison")
    versions: dict[str, str] = {}
    for line in out.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and fields[2].startswith(f"{uri} {suite}/"):
            versions.setdefault(fields[0], fields[1])
    missing = sorted(set(packages) - set(versions))
    if missing:
        raise XenImageError(f"apt has no {suite} version of {missing}: run apt-get update")
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


def _source_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _tree_size(tree: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(tree):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _only(paths: Iterator[Path]) -> Path:
    found = sorted(paths)
    if len(found) != 1:
        raise XenImageError(f"expected exactly one file, found {found}")
    return found[0]


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def _run(argv: list[str], what: str, timeout: float = 300.0) -> str:
    """Run ``argv``; return its stdout.

    Raises :class:`XenImageError` with the end of stderr when it fails or runs longer than
    ``timeout`` seconds.
    """
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise XenImageError(f"{what} did not finish within {timeout} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise XenImageError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout
