"""The test guest kit's interface and layout: what the guest prints and reads, what goes in.

The ``*_LINE``/``*_PREFIX`` lines the guest prints on its console (LXC: the container's
stdout), the kernel command-line flags its ``/init`` reads (``FLAG_*``, joined by
:func:`kernel_cmdline`), the NoCloud seed label, the LXC init, the Debian packages a kit is
built from, and where things go inside the guest. Constants and one pure function; see
:mod:`hvlib.testkit.guestkit` for what the guest does with them.
"""

from __future__ import annotations

import re

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
