"""Test guest kit: a tiny bootable Linux guest and an LXC root directory, from Debian packages.

What it does:

- :func:`ensure_guest_kit` picks the candidate versions of Debian 12's 6.1 *cloud* kernel,
  ``busybox-static``, ``dropbear-bin`` and dropbear's shared libraries with ``apt-cache``,
  fetches exactly those ``.deb`` files with ``apt-get download`` into the cache, unpacks them with
  ``dpkg -x`` and builds a kit directory: the kernel, an initramfs, an LXC root directory and
  fresh SSH keys. The kit is cached under a key made of the exact ``.deb`` versions and a hash of
  this file's source, so a new package version or an edit of this module builds a new kit. A
  build happens in a temporary directory that is renamed into place only when complete, under a
  file lock, so an interrupted build never leaves a kit that looks finished.
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
import functools
import gzip
import hashlib
import io
import json
import os
import posixpath
import re
import shlex
import shutil
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hvlib.testkit import cache_dir

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

# --- What the guest prints (one line each, on /dev/console; LXC: the container's stdout) ---
LINE_PREFIX = "hvlib-guest: "
READY_LINE = "hvlib-guest: ready"
SSH_LINE = "hvlib-guest: ssh server started"
SSH_FAILED_LINE = "hvlib-guest: ssh server failed"
SEED_FILES_PREFIX = "hvlib-guest: seed files: "
SEED_MARKER_PREFIX = "hvlib-guest: seed marker: "
CPU_FLAGS_PREFIX = "hvlib-guest: cpu flags: "
DISK_PREFIX = "hvlib-guest: disk: "
NIC_PREFIX = "hvlib-guest: nic: "
COUNTER_PREFIX = "hvlib-guest: counter "
LEASE_PREFIX = "hvlib-guest: dhcp lease: "
SSH_LEASE_WAIT_S = 30
"""About the most seconds /init waits, once dropbear listens, for a DHCP lease (or for DHCP to
give up on every interface) before it prints ``SSH_LINE`` anyway (polls 0.05 s apart)."""
POWEROFF_LINE = "hvlib-guest: powering off"
TERM_LINE = "hvlib-guest: terminated"

# --- Kernel command-line flags read by /init ---
FLAG_NOACPI = "hvlib.noacpi"
"""Ignore graceful power-off: no acpid (ACPI button) and no poweroff/reboot signal traps (Xen)."""
FLAG_NOSSH = "hvlib.nossh"
"""Do not start dropbear."""
FLAG_CPUINFO = "hvlib.cpuinfo"
"""Print the ``flags`` line of /proc/cpuinfo after :data:`CPU_FLAGS_PREFIX`."""
FLAG_NICS = "hvlib.nics"
"""Print one :data:`NIC_PREFIX` line per network interface (``NAME MAC``; ``lo`` left out)
before the ready line."""
FLAG_DISKS = "hvlib.disks"
"""Print one :data:`DISK_PREFIX` line per block device (``NAME SECTORS``; loop and ram
devices left out) before the ready line, once the first one has appeared or 10 s passed (Xen's
block front end connects to its back end after the module is loaded: in one full run of the
suite a PVH guest listed its disks before xvda existed)."""
FLAG_COUNTER = "hvlib.counter"
"""Print :data:`COUNTER_PREFIX` + N every 0.5 s (N = 1, 2, ...) in the background."""

# --- Seed (NoCloud) and LXC ---
SEED_LABEL = "cidata"
SEED_MARKER_DIRECTIVE = "#hvlib-marker: "
LXC_INIT = "/sbin/hvlib-init"
LXC_IGNORE_TERM_ARG = "--ignore-term"

# --- Inputs ---
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
_KERNEL_PACKAGE_RE = re.compile(r"^linux-image-6\.1\.0-\d+-cloud-amd64$")
SUPPORT_PACKAGES = (
    "busybox-static",
    "dropbear-bin",
    "libc6",
    "libcrypt1",
    "libgmp10",
    "libtomcrypt1",
    "libtommath1",
    "zlib1g",
)
GUEST_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_rng",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "evdev",
    "button",
    "virtio_console",
    "virtio_balloon",
    "isofs",
    "xen_netfront",
    "xen_blkfront",
)
"""Modules wanted in the guest, in load order; their ``depends=`` are added before them."""

_KIT_FORMAT = 1
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
_GUEST_LIB_DIR = "lib/x86_64-linux-gnu"
_GUEST_MODULE_DIR = "lib/modules/hvlib"
_HOST_KEY_GUEST_PATH = "etc/dropbear/dropbear_ed25519_host_key"
_UDHCPC_SCRIPT = "/etc/udhcpc/default.script"
_DHCP_STATE_DIR = "/run/hvlib-dhcp"
"""Where the lease script marks each interface ``IFACE.bound`` (a lease is configured) or
``IFACE.failed`` (DHCP gave up a round), for /init to decide when the guest is reachable (a
failed write is not fatal: ``echo`` is no special builtin)."""
_PWRF_SCRIPT = "/etc/acpi/PWRF/00000080"
_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"
_SHELLS = "/bin/sh\n/bin/ash\n"
_MANIFEST = "kit.json"
_PRUNE_AFTER_S = 24 * 3600  # other kits older than this are removed when a kit is built


class GuestKitError(RuntimeError):
    """Building or loading the guest kit failed (the message names the step and its error)."""


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


# ---------------------------------------------------------------------------------------------
# cpio "newc"
# ---------------------------------------------------------------------------------------------
_S_IFDIR, _S_IFREG, _S_IFLNK, _S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000


class NewcWriter:
    """Write a cpio "newc" archive (magic 070701, no checksums), as the kernel's initramfs reads it.

    Names are relative ("bin/sh"); missing parent directories are added (mode 0755) before an
    entry. Every entry is owned by root and has the same mtime, so equal inputs give equal bytes.
    """

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._ino = 0
        self._names: set[str] = set()
        self._closed = False

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        """Add a directory. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFDIR | perm, nlink=2)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file holding ``data``. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFREG | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        """Add a symbolic link to ``target``. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        """Write the ``TRAILER!!!`` entry; the archive is complete. Idempotent."""
        if not self._closed:
            self._header("TRAILER!!!", 0, 0, b"", (0, 0), 1)
            self._closed = True

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
        nlink: int = 1,
    ) -> None:
        name = _normalize_name(name)
        if self._closed:
            raise ValueError("archive already closed")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._ensure_parents(name)
        self._names.add(name)
        self._ino += 1
        self._header(name, self._ino, mode, data, rdev, nlink)

    def _ensure_parents(self, name: str) -> None:
        """Add the missing parent directories of ``name`` (mode 0755)."""
        parent = posixpath.dirname(name)
        if parent and parent not in self._names:
            self.add_dir(parent)

    def _header(
        self, name: str, ino: int, mode: int, data: bytes, rdev: tuple[int, int], nlink: int
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, *rdev, len(encoded), 0)
        head = b"070701" + b"".join(b"%08X" % field for field in fields) + encoded
        self._out.write(head + _pad4(len(head)) + data + _pad4(len(data)))


def _pad4(length: int) -> bytes:
    """Return the NUL padding that brings ``length`` to a multiple of 4."""
    return b"\0" * (-length % 4)


def _normalize_name(name: str) -> str:
    """Return ``name`` without leading "/" or "./". Raises ValueError for empty or ".." names."""
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in ("", ".") or clean == ".." or clean.startswith("../"):
        raise ValueError(f"bad cpio entry name {name!r}")
    return clean


def finish_gzip(writer: NewcWriter, buffer: io.BytesIO) -> bytes:
    """Close ``writer`` and return its archive gzip'd with a fixed header time (reproducible)."""
    writer.close()
    return gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)


# ---------------------------------------------------------------------------------------------
# ELF: just enough to read a module's modinfo, a program's DT_NEEDED and its interpreter
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


def _elf_sections(data: bytes) -> list[_Section]:
    """Return the section headers of a little-endian ELF64 file. Raises GuestKitError otherwise."""
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        raise GuestKitError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = raw[shstrndx][4]
    return [_Section(_cstring(data, names_at + r[0]), r[1], r[4], r[5], r[6]) for r in raw]


def _cstring(data: bytes, offset: int) -> str:
    """Return the NUL-terminated string at ``offset``. Raises ValueError if unterminated."""
    return data[offset : data.index(b"\0", offset)].decode()


def _section_bytes(data: bytes, name: str) -> bytes | None:
    """Return the contents of ELF section ``name``, or None. Raises GuestKitError if not ELF64."""
    for section in _elf_sections(data):
        if section.name == name:
            return data[section.offset : section.offset + section.size]
    return None


def modinfo_depends(ko: bytes) -> list[str]:
    """Return the ``depends=`` names of a kernel module image. Raises GuestKitError if not ELF."""
    info = _section_bytes(ko, ".modinfo") or b""
    for item in info.split(b"\0"):
        if item.startswith(b"depends="):
            return [d for d in item[len("depends=") :].decode().split(",") if d]
    return []


def elf_needed(data: bytes) -> list[str]:
    """Return the DT_NEEDED sonames of an ELF64 file. Raises GuestKitError if not ELF64."""
    sections = _elf_sections(data)
    needed: list[str] = []
    for section in (s for s in sections if s.type == 6):  # SHT_DYNAMIC
        strings = sections[section.link].offset
        for pos in range(section.offset, section.offset + section.size, 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                needed.append(_cstring(data, strings + value))
    return needed


def elf_interpreter(data: bytes) -> str | None:
    """Return a program's dynamic loader path (``.interp``), or None for a static program."""
    interp = _section_bytes(data, ".interp")
    return interp.rstrip(b"\0").decode() if interp else None


# ---------------------------------------------------------------------------------------------
# Kernel modules
# ---------------------------------------------------------------------------------------------
def module_load_order(wanted: Sequence[str], depends: Mapping[str, Sequence[str]]) -> list[str]:
    """Return ``wanted`` with every dependency placed before its first user (depth first).

    ``depends`` maps a module name to its ``depends=`` names; names absent from it (built into
    the kernel) are left out. Raises GuestKitError on a dependency cycle.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name not in depends:
            return
        if name in visiting:
            raise GuestKitError(f"module dependency cycle through {name}")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _module_files(moddir: Path) -> dict[str, Path]:
    """Map each module name ("-" read as "_") under ``moddir`` to its .ko file."""
    return {ko.name[: -len(".ko")].replace("-", "_"): ko for ko in moddir.rglob("*.ko")}


def _builtin_modules(moddir: Path) -> set[str]:
    """Return the names of the modules built into the kernel (``modules.builtin``)."""
    builtin = moddir / "modules.builtin"
    lines = builtin.read_text().split() if builtin.exists() else []
    return {posixpath.basename(line)[: -len(".ko")].replace("-", "_") for line in lines}


def guest_modules(moddir: Path, wanted: Sequence[str] = GUEST_MODULES) -> list[tuple[str, Path]]:
    """Return (name, .ko path) of ``wanted`` plus dependencies, in load order.

    Built-in modules are skipped. Raises GuestKitError for a name that is neither a module nor
    built in.
    """
    files = _module_files(moddir)
    builtin = _builtin_modules(moddir)
    depends: dict[str, list[str]] = {}
    names = [name.replace("-", "_") for name in wanted]
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in depends or name in builtin:
            continue
        if name not in files:
            raise GuestKitError(f"kernel module {name} is neither a module nor built in")
        depends[name] = modinfo_depends(files[name].read_bytes())
        todo.extend(depends[name])
    return [(n, files[n]) for n in module_load_order(names, depends)]


# ---------------------------------------------------------------------------------------------
# Scripts that run in the guest
# ---------------------------------------------------------------------------------------------
def _echo(line: str, to_console: bool = False) -> str:
    """Return a shell command printing ``line`` (quoted), optionally to /dev/console."""
    return f"echo {shlex.quote(line)}" + (" >/dev/console" if to_console else "")


_INIT_HEAD = """\
#!/bin/sh
# /init of the hvlib test guest: PID 1, run by busybox sh. Generated by hvlib.testkit.guestkit.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/log
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/seed
exec </dev/console >/dev/console 2>&1
CMDLINE=" $(cat /proc/cmdline) "
has_flag() { case "$CMDLINE" in *" $1 "*) return 0 ;; esac; return 1; }
hostname hvlib-guest
"""

_INIT_NET = f"""\
ip link set lo up
mkdir -p {_DHCP_STATE_DIR}
nics=0
for dev in /sys/class/net/*; do
  ifname=${{dev##*/}}
  [ "$ifname" = lo ] && continue
  nics=$((nics + 1))
  ip link set "$ifname" up
  udhcpc -f -i "$ifname" -s {_UDHCPC_SCRIPT} -t 5 -T 2 -A 3 >/dev/null 2>&1 &
done
"""


def _init_reachable() -> str:
    """Return the /init shell function ``wait_reachable``: it returns once the guest can be
    reached, i.e. at once without interfaces (``$nics`` is 0), else on the first DHCP lease or
    when DHCP gave up on every interface; after about :data:`SSH_LEASE_WAIT_S` at the latest."""
    polls = SSH_LEASE_WAIT_S * 20
    return f"""\
dhcp_done() {{
  for f in {_DHCP_STATE_DIR}/*.bound; do [ -e "$f" ] && return 0; done
  set -- {_DHCP_STATE_DIR}/*.failed
  [ -e "$1" ] && [ $# -ge "$nics" ]
}}
wait_reachable() {{
  i=0
  while [ "$nics" -gt 0 ] && [ $i -lt {polls} ] && ! dhcp_done; do sleep 0.05; i=$((i + 1)); done
}}
"""


def _init_power() -> str:
    """Return the /init part that makes graceful power-off work (unless hvlib.noacpi)."""
    return f"""\
if ! has_flag {FLAG_NOACPI}; then
  acpid -f -c /etc/acpi -l /run/acpid.log &
  power_off() {{ {_echo(POWEROFF_LINE)}; poweroff -f; }}
  trap power_off USR1 USR2
  trap 'reboot -f' TERM
fi
"""


def _init_ssh() -> str:
    """Return the /init part that starts dropbear and reports once port 22 listens and the
    guest can be reached (see :func:`_init_reachable`)."""
    listening = "grep -q ':0016 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null"
    return f"""\
if ! has_flag {FLAG_NOSSH}; then
  dropbear -r /{_HOST_KEY_GUEST_PATH} -s -p 22 -P /run/dropbear.pid
  i=0
  until {listening} || [ $i -ge 50 ]; do sleep 0.1; i=$((i + 1)); done
  if {listening}; then wait_reachable; {_echo(SSH_LINE)}; else {_echo(SSH_FAILED_LINE)}; fi
fi
"""


def _init_seed() -> str:
    """Return the /init part that finds, mounts and reports a NoCloud ``cidata`` seed."""
    labels = f"{SEED_LABEL} | {SEED_LABEL.upper()}"
    return f"""\
iso_label() {{
  [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 1
  dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' \\000'
}}
find_seed() {{
  dev=$(findfs LABEL={SEED_LABEL} 2>/dev/null) && [ -b "$dev" ] && {{ echo "$dev"; return 0; }}
  for dev in /dev/vd? /dev/xvd? /dev/sr?; do
    [ -b "$dev" ] || continue
    case "$(iso_label "$dev")" in {labels}) echo "$dev"; return 0 ;; esac
  done
  return 1
}}
if ls /sys/bus/xen/devices/vbd-* >/dev/null 2>&1; then
  i=0
  until ls /dev/xvd? >/dev/null 2>&1 || [ $i -ge 30 ]; do sleep 0.1; i=$((i + 1)); done
fi
if seed=$(find_seed) && mount -t iso9660 -o ro "$seed" /run/seed; then
  echo "{SEED_FILES_PREFIX}$(ls /run/seed | tr '\\n' ' ' | sed 's/ $//')"
  if [ -f /run/seed/user-data ]; then
    tr -d '\\r' </run/seed/user-data | sed -n 's/^{SEED_MARKER_DIRECTIVE}//p' |
      while IFS= read -r text; do echo "{SEED_MARKER_PREFIX}$text"; done
  fi
fi
"""


def _init_tail() -> str:
    """Return the /init part for the cpuinfo, disks, nics and counter flags, the ready line
    and the idle loop."""
    return f"""\
if has_flag {FLAG_CPUINFO}; then
  echo "{CPU_FLAGS_PREFIX}$(sed -n 's/^flags[[:space:]]*: *//p' /proc/cpuinfo | head -n 1)"
fi
if has_flag {FLAG_DISKS}; then
  i=0
  until ls /sys/block | grep -qv -e '^loop' -e '^ram' || [ $i -ge 200 ]; do
    sleep 0.05; i=$((i + 1))
  done
  for d in /sys/block/*; do
    n=${{d##*/}}
    case "$n" in loop*|ram*) continue ;; esac
    echo "{DISK_PREFIX}$n $(cat "$d/size")"
  done
fi
if has_flag {FLAG_NICS}; then
  for d in /sys/class/net/*; do
    n=${{d##*/}}
    [ "$n" = lo ] || echo "{NIC_PREFIX}$n $(cat "$d/address")"
  done
fi
if has_flag {FLAG_COUNTER}; then
  (n=0; while :; do n=$((n + 1)); echo "{COUNTER_PREFIX}$n"; sleep 0.5; done) &
fi
{_echo(READY_LINE)}
while :; do sleep 3600 & wait $!; done
"""


def render_init_script(modules: Sequence[str]) -> str:
    """Return the guest's ``/init``; ``modules`` are insmod'ed in order (a failure is ignored)."""
    names = " ".join(shlex.quote(m) for m in modules)
    load = (
        f'for m in {names}; do\n  insmod "/{_GUEST_MODULE_DIR}/$m.ko" 2>/dev/null || true\ndone\n'
    )
    return (
        _INIT_HEAD
        + load
        + _INIT_NET
        + _init_reachable()
        + _init_power()
        + _init_ssh()
        + _init_seed()
        + _init_tail()
    )


def udhcpc_script() -> str:
    """Return the udhcpc lease script: applies address, default route and DNS; reports the lease
    (on the console, and to /init as ``IFACE.bound``; a round of DHCP that got no lease as
    ``IFACE.failed``)."""
    return f"""\
#!/bin/sh
# udhcpc lease script of the hvlib test guest (busybox udhcpc exports ip, mask, router, dns).
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound | renew)
    if [ "$1" = bound ]; then ip -4 addr flush dev "$interface"; fi
    ip addr replace "$ip/${{mask:-24}}" dev "$interface"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    if [ "$1" = bound ]; then
      echo "{LEASE_PREFIX}$interface $ip" >/dev/console
      echo "$ip" >"{_DHCP_STATE_DIR}/$interface.bound"
    fi
    ;;
  leasefail)
    echo "$ip" >"{_DHCP_STATE_DIR}/$interface.failed"
    ;;
esac
exit 0
"""


def acpi_power_script() -> str:
    """Return the acpid action for the power button: announce, then ``poweroff -f``."""
    return f"#!/bin/sh\n{_echo(POWEROFF_LINE, to_console=True)}\npoweroff -f\n"


def lxc_init_script() -> str:
    """Return ``/sbin/hvlib-init``: prints the ready line, exits 0 on TERM (unless told not to)."""
    return f"""\
#!/bin/sh
# Init of the hvlib test container. {LXC_IGNORE_TERM_ARG}: ignore SIGTERM (forced-shutdown tests).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
on_term() {{ {_echo(TERM_LINE)}; kill -KILL $! 2>/dev/null; exit 0; }}
if [ "${{1:-}}" = {LXC_IGNORE_TERM_ARG} ]; then
  trap '' TERM
else
  trap on_term TERM
fi
{_echo(READY_LINE)}
if [ -c /dev/null ]; then
  while :; do sleep 3600 & wait $!; done
fi
while :; do sleep 1; done
"""


# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Building the initramfs and the LXC root
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------
def source_digest() -> str:
    """Return the SHA-256 of this module's source file (part of the cache key)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


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


# ---------------------------------------------------------------------------------------------
# Kernel command line
# ---------------------------------------------------------------------------------------------
def kernel_cmdline(console: str = "ttyS0", *flags: str) -> str:
    """Return the guest kernel's command line: ``console=CONSOLE`` then ``flags`` (``FLAG_*``).

    Use ``ttyS0`` under QEMU and ``hvc0`` for Xen PV. Raises ValueError for an empty console or
    a flag that is empty or holds whitespace.
    """
    words = [f"console={console}", *flags]
    for word in (console, *flags):
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"bad kernel command-line word {word!r}")
    return " ".join(words)
