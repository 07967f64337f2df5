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

import gzip
import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lxml import etree

from hvlib.testkit import cache_dir, imagebuild
from hvlib.testkit.imagebuild import (
    MIB,
    ImageBuildError,
    apt_source,
    debian_inputs,
    debootstrap,
    ensure_built,
    file_hash,
    locked,
    mkfs,
    only,
    run,
    tree_size,
    trim,
    write,
)

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


XenImageError = ImageBuildError
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
    directory = ensure_built("xen", inputs, lambda d: _complete(_image_at(d, inputs)), _build)
    return _image_at(directory, inputs)


def build_inputs() -> dict[str, str]:
    """Return what the dom0 image depends on: archive URI, suite, package versions, source hash.

    Raises :class:`XenImageError` when no apt source for this release is configured or apt's
    package lists lack a package (run ``apt-get update``).
    """
    return debian_inputs(DOM0_PACKAGES, [Path(__file__), Path(imagebuild.__file__)])


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
        digest.update(name.encode() + b"\0" + file_hash(files[name]).encode())
    root = cache_dir() / "xen"
    path = root / f"kit-{digest.hexdigest()[:16]}.img"
    with locked(root):
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
        size = sum(f.stat().st_size for f in tree.iterdir()) + 16 * MIB
        image = Path(tmp) / "kit.img"
        mkfs(tree, image, KIT_LABEL, size)
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


def _build(work: Path) -> None:
    tree = work / "tree"
    uri, suite = apt_source()
    debootstrap(tree, uri, suite, cache_dir() / "xen" / "debs", DOM0_PACKAGES)
    _write_keys(work)
    _configure(tree, work)
    _rebuild_initramfs(tree)
    _extract_boot_files(tree, work)
    for path in (tree / "boot").iterdir():
        path.unlink()
    trim(tree)
    mkfs(tree, work / "dom0.img", "hvlib-dom0", tree_size(tree) * 5 // 4 + 512 * MIB)
    shutil.rmtree(tree)


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
        write(work / name, private, 0o600)
        write(work / f"{name}.pub", public + b"\n", 0o644)


def _configure(tree: Path, work: Path) -> None:
    """Apply every dom0 change: init, network, SSH, libvirt, Xen console logging, cpu_map."""
    write(tree / DOM0_INIT.lstrip("/"), _INIT_SCRIPT.encode(), 0o755)
    write(tree / "usr/local/lib/hvlib/udhcpc-script", _UDHCPC_SCRIPT.encode(), 0o755)
    (tree / DOM0_KIT_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    _configure_ssh(tree, work)
    write(tree / "etc/libvirt/libvirtd.conf", _LIBVIRTD_CONFIG.encode(), 0o644)
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
    write(ssh / "sshd_config.d/hvlib.conf", _SSHD_CONFIG.encode(), 0o644)
    dot_ssh = tree / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    write(dot_ssh / "authorized_keys", (work / "client_key.pub").read_bytes(), 0o600)


def _rebuild_initramfs(tree: Path) -> None:
    """Regenerate dom0's initramfs with only the modules that mounting its root needs.

    Debian's default (``MODULES=most``, ~36 MB) makes udev load dozens of drivers during the
    boot; the small one (~7 MB) saves seconds of every boot under TCG. dom0's init loads the
    rest. Raises :class:`XenImageError` when update-initramfs fails.
    """
    conf = tree / "etc/initramfs-tools"
    write(
        conf / "conf.d/hvlib.conf",
        b"# hvlib dom0: see /etc/initramfs-tools/modules\nMODULES=list\n",
        0o644,
    )
    with (conf / "modules").open("a") as modules:
        modules.write("".join(f"{name}\n" for name in _INITRAMFS_MODULES))
    script = 'mount -t proc proc "$1/proc" && exec chroot "$1" update-initramfs -u -k all'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(tree)]
    run(argv, "update-initramfs")


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
    shutil.copyfile(only(boot.glob("vmlinuz-*")), work / "vmlinuz")
    shutil.copyfile(only(boot.glob("initrd.img-*")), work / "initrd.img")
