"""Real guests for tests: a Debian 12 cloud VM image and a Debian 12 systemd container root.

What it does: from Debian packages only (the archive this machine's apt sources name for its
own release, see :mod:`hvlib.testkit.imagebuild`):

- :func:`ensure_debian_vm_image`: ``debootstrap --variant=minbase`` a tree with
  initramfs-tools (``virtio_pci``, ``virtio_blk`` and ``ext4`` in its modules list: the
  initramfs holds only those), then ``apt-get install`` inside the chroot (debootstrap's
  ``--include`` cannot resolve cloud-init's virtual dependencies, and fetches one file at a
  time): systemd as init, the cloud kernel, OpenSSH, ifupdown with isc-dhcp-client, dbus,
  iproute2, the QEMU guest agent, locales (``en_US.UTF-8`` generated: without it cloud-init's
  locale module fails), python3, sudo and cloud-init. cloud-init
  looks only for a NoCloud seed; the image has no SSH host keys, no machine id and no
  hostname of its own (cloud-init and systemd make them on first boot). The tree becomes an
  ext4 filesystem (label :data:`VM_LABEL`, no partition table) in a qcow2 file, booted by
  direct kernel boot with the kernel and initramfs returned beside it and
  :data:`VM_CMDLINE`.
- :func:`ensure_debian_rootfs`: a minbase tree with (by apt-get) systemd as init
  (``/sbin/init``), dbus, iproute2 and systemd-networkd enabled (DHCP on every ``eth*`` and
  ``en*`` link), for a libvirt LXC container (:func:`copy_rootfs` makes a private, writable
  copy, owners shifted for an id map).

Both are cached under ``cache_dir()/debian-vm|debian-ct/KEY``, KEY hashing the archive, the
versions of the packages named and this module's source; a build that died half-way is never
used. What it must not do: boot anything, change the host's apt or libvirt state, or write
outside the cache directory and the destination given to :func:`copy_rootfs`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hvlib.testkit import cache_dir, imagebuild
from hvlib.testkit.imagebuild import (
    MIB,
    ImageBuildError,
    apt_source,
    debian_inputs,
    debootstrap,
    ensure_built,
    in_chroot,
    locked,
    mkfs,
    only,
    run,
    trim,
    write,
)

__all__ = [
    "CT_PACKAGES",
    "VM_CMDLINE",
    "VM_PACKAGES",
    "DebianImage",
    "DebianRootfs",
    "ImageBuildError",
    "copy_rootfs",
    "ensure_debian_rootfs",
    "ensure_debian_vm_image",
]

#: Installed by debootstrap into the VM image on top of ``--variant=minbase`` (before the
#: kernel: its configuration must be in place when the kernel's package makes the initramfs).
VM_BOOTSTRAP = ("initramfs-tools",)
#: Installed with apt-get inside the chroot: its downloads are pipelined (debootstrap fetches
#: one file at a time), and it resolves the virtual dependencies debootstrap cannot
#: (cloud-init's). The kernel comes after the initramfs configuration, so the initramfs is
#: made once, small.
VM_APT_PACKAGES = (
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "openssh-server",
    "ifupdown",
    "isc-dhcp-client",
    "dbus",
    "iproute2",
    "qemu-guest-agent",
    "locales",
    "python3",
    "sudo",
    "cloud-init",
)
#: Every package the VM image is built from (top level; what its cache key names).
VM_PACKAGES = (*VM_BOOTSTRAP, *VM_APT_PACKAGES)
#: Installed with apt-get into the container root on top of ``--variant=minbase``.
CT_PACKAGES = ("systemd-sysv", "dbus", "iproute2")
#: The VM's root filesystem label and kernel command line (direct kernel boot, virtio disk).
VM_LABEL = "hvlib-debian"
VM_CMDLINE = "root=/dev/vda rw console=ttyS0"
#: The VM disk's virtual size (the qcow2 file holds only what is used).
VM_DISK_BYTES = 3 * 1024 * MIB
#: The container's init.
CT_INIT = "/sbin/init"

_INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4")
_LOCALE = "en_US.UTF-8"
_CLOUD_CFG = """# hvlib testkit: a NoCloud seed only (no probing of network metadata services).
datasource_list: [NoCloud, None]
"""
_INTERFACES = """# hvlib testkit: cloud-init writes interfaces.d/50-cloud-init (network-config).
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback
"""
_FSTAB = f"LABEL={VM_LABEL} / ext4 defaults,errors=remount-ro 0 1\n"
_HOSTS = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
_NETWORKD = """# hvlib testkit: DHCP on the container's links.
[Match]
Name=eth* en* host*

[Network]
DHCP=yes
"""
#: Timers that only add load to a short-lived guest under software emulation.
_MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer")
_NO_SERVICES = b"#!/bin/sh\n# hvlib testkit build: start no service inside the chroot\nexit 101\n"
_APT_ENV = "DEBIAN_FRONTEND=noninteractive"


@dataclass(frozen=True)
class DebianImage:
    """The cached Debian cloud VM (all read-only: boot it on an overlay)."""

    directory: Path
    #: The root filesystem (ext4, no partition table) as a qcow2 image.
    disk: Path
    kernel: Path
    initrd: Path
    #: What the cache key was computed from: archive, suite, package versions, source hash.
    inputs: Mapping[str, str]
    #: The kernel command line for direct kernel boot (``root=/dev/vda``: the first virtio disk).
    cmdline: str = VM_CMDLINE


@dataclass(frozen=True)
class DebianRootfs:
    """The cached Debian system container root (read-only: run a :func:`copy_rootfs`)."""

    directory: Path
    rootfs: Path
    inputs: Mapping[str, str]
    init: str = CT_INIT


def ensure_debian_vm_image() -> DebianImage:
    """Return the Debian 12 cloud VM image, building it first when its inputs changed.

    Raises :class:`ImageBuildError` when the apt source, package versions or a build step
    (debootstrap, apt-get, update-initramfs, mkfs.ext4, qemu-img) fails.
    """
    inputs = debian_inputs(VM_PACKAGES, _sources())
    directory = ensure_built("debian-vm", inputs, _vm_complete, _build_vm)
    return _vm_at(directory, inputs)


def ensure_debian_rootfs() -> DebianRootfs:
    """Return the Debian 12 system container root, building it first when its inputs changed.

    Raises :class:`ImageBuildError` when the apt source, package versions or debootstrap fail.
    """
    inputs = debian_inputs(CT_PACKAGES, _sources())
    directory = ensure_built(
        "debian-ct", inputs, lambda d: (d / "rootfs" / "sbin" / "init").exists(), _build_ct
    )
    return DebianRootfs(directory, directory / "rootfs", dict(inputs))


def copy_rootfs(rootfs: DebianRootfs, dest: Path, *, shift: int = 0) -> Path:
    """Copy the container root to ``dest`` (which must not exist) and return it; with
    ``shift``, every owner and group is moved up by ``shift`` (for ``IdMap.shifted(shift)``:
    libvirt's LXC driver needs the root owned by the mapped root).

    Raises ``ValueError`` for a negative shift, :class:`ImageBuildError` when the copy fails.
    """
    if shift < 0:
        raise ValueError(f"shift must not be negative: {shift}")
    run(["cp", "-a", "--reflink=auto", str(rootfs.rootfs), str(dest)], "cp -a", timeout=300)
    if shift:
        _shift_owners(dest, shift)
    return dest


def _shift_owners(root: Path, by: int) -> None:
    """Move the owner and group of ``root`` and of everything below it up by ``by`` (each
    path once: a directory is shifted as its parent's entry, not again as a walk's top)."""
    _shift_one(str(root), by)
    for dirpath, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            _shift_one(os.path.join(dirpath, name), by)


def _shift_one(path: str, by: int) -> None:
    st = os.lstat(path)
    os.chown(path, st.st_uid + by, st.st_gid + by, follow_symlinks=False)
    if not os.path.islink(path) and st.st_mode & 0o6000:
        os.chmod(path, st.st_mode & 0o7777)  # chown clears setuid and setgid


def _debs() -> Path:
    """The .debs both builds fetched (kept for the next build; shared, under its own lock)."""
    return cache_dir() / "debian-debs"


def _sources() -> list[Path]:
    return [Path(__file__), Path(imagebuild.__file__)]


def _vm_at(directory: Path, inputs: Mapping[str, str]) -> DebianImage:
    return DebianImage(
        directory=directory,
        disk=directory / "disk.qcow2",
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        inputs=dict(inputs),
    )


def _vm_complete(directory: Path) -> bool:
    image = _vm_at(directory, {})
    return all(p.is_file() for p in (image.disk, image.kernel, image.initrd))


# -- the VM image -----------------------------------------------------------------------------


def _build_vm(work: Path) -> None:
    tree = work / "tree"
    uri, suite = apt_source()
    debs = _debs()
    with locked(debs):
        debootstrap(tree, uri, suite, debs, VM_BOOTSTRAP)
    _configure_common(tree, "debian")
    _configure_initramfs(tree)
    _apt_install(tree, VM_APT_PACKAGES, debs)
    _configure_vm(tree)
    boot = tree / "boot"
    shutil.copyfile(only(boot.glob("vmlinuz-*")), work / "vmlinuz")
    shutil.copyfile(only(boot.glob("initrd.img-*")), work / "initrd.img")
    for path in boot.iterdir():
        path.unlink()
    _finish(tree)
    raw = work / "disk.raw"
    mkfs(tree, raw, VM_LABEL, VM_DISK_BYTES)
    shutil.rmtree(tree)
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "disk.qcow2")], "qemu-img")
    raw.unlink()


def _configure_initramfs(tree: Path) -> None:
    """An initramfs with only what mounting the root needs (Debian's ``MODULES=most`` is
    ~36 MB and makes udev load dozens of drivers: seconds of every boot under TCG)."""
    conf = tree / "etc/initramfs-tools"
    write(conf / "conf.d/hvlib.conf", b"# hvlib testkit: see ../modules\nMODULES=list\n", 0o644)
    with (conf / "modules").open("a") as modules:
        modules.write("".join(f"{name}\n" for name in _INITRAMFS_MODULES))


def _apt_install(tree: Path, packages: tuple[str, ...], debs: Path) -> None:
    """``apt-get install`` inside the chroot, its downloads kept in ``debs`` (bind-mounted
    over the chroot's archive cache) for the next build."""
    archives = tree / "var/cache/apt/archives"
    for deb in debs.glob("*.deb"):  # what debootstrap already fetched, without a second copy
        target = archives / deb.name
        if not target.exists():
            os.link(deb, target)
    opts = "-y -q --no-install-recommends -o Dpkg::Options::=--force-confold"
    script = f"apt-get -q update && {_APT_ENV} apt-get install {opts} {' '.join(packages)}"
    in_chroot(tree, script, "apt-get install " + " ".join(packages), timeout=900)
    with locked(debs):
        for deb in archives.glob("*.deb"):
            if not (debs / deb.name).exists():
                os.link(deb, debs / deb.name)


def _configure_vm(tree: Path) -> None:
    write(tree / "etc/cloud/cloud.cfg.d/01-hvlib.cfg", _CLOUD_CFG.encode(), 0o644)
    write(tree / "etc/network/interfaces", _INTERFACES.encode(), 0o644)
    write(tree / "etc/fstab", _FSTAB.encode(), 0o644)
    for key in (tree / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every guest gets its own (cloud-init makes them, or pins the seed's)
    write(tree / "etc/locale.gen", f"{_LOCALE} UTF-8\n".encode(), 0o644)
    write(tree / "etc/default/locale", f"LANG={_LOCALE}\n".encode(), 0o644)
    in_chroot(tree, "locale-gen", "locale-gen")


# -- the container root -----------------------------------------------------------------------


def _build_ct(work: Path) -> None:
    tree = work / "rootfs"
    uri, suite = apt_source()
    with locked(_debs()):
        debootstrap(tree, uri, suite, _debs(), ())
    _configure_common(tree, "debian-ct")
    _apt_install(tree, CT_PACKAGES, _debs())
    write(tree / "etc/systemd/network/80-hvlib-dhcp.network", _NETWORKD.encode(), 0o644)
    in_chroot(tree, "systemctl enable systemd-networkd.service", "systemctl enable")
    _finish(tree)
    write(tree / "etc/fstab", b"# hvlib testkit: libvirt mounts the root\n", 0o644)
    os.chmod(tree, 0o755)


# -- both -------------------------------------------------------------------------------------


def _configure_common(tree: Path, hostname: str) -> None:
    """Settings of every tree: no services started by the build, hosts, hostname, timers."""
    write(tree / "usr/sbin/policy-rc.d", _NO_SERVICES, 0o755)
    write(tree / "etc/hostname", f"{hostname}\n".encode(), 0o644)  # debootstrap copies ours
    write(tree / "etc/hosts", _HOSTS.encode(), 0o644)
    masks = tree / "etc/systemd/system"
    masks.mkdir(parents=True, exist_ok=True)
    for unit in _MASKED:
        link = masks / unit
        if not link.is_symlink():
            link.symlink_to("/dev/null")


def _finish(tree: Path) -> None:
    """Remove what only the build needed, and what each guest must make for itself."""
    (tree / "usr/sbin/policy-rc.d").unlink()
    write(tree / "etc/machine-id", b"", 0o444)  # empty: systemd makes one on first boot
    (tree / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    write(tree / "etc/resolv.conf", b"", 0o644)  # debootstrap copies the host's
    trim(tree)
