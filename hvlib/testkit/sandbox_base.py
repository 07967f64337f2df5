"""The sandbox's constants and small helpers: where sandboxes live, their network's
addresses, names and paths they accept, :class:`SandboxError`, and running a tool.

Part of :mod:`hvlib.testkit.sandbox`; no libvirt, no state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/hvlib-sandboxes")
ROOT_BASE = Path("/var/tmp/hvlib-sandboxes")
NETNS_PREFIX = "hvlib-"
# The five directories a sandboxed libvirtd sees as its own (relative to / and to ROOT).
LIBVIRT_DIRS = (
    "run/libvirt",
    "var/lib/libvirt",
    "var/cache/libvirt",
    "var/log/libvirt",
    "etc/libvirt",
)
# The `default` NAT network (a /24); the addresses exist only inside each sandbox's netns.
NET_ADDRESS = "192.168.122.1"  # the bridge's address, inside the sandbox netns only
NET_DHCP_START, NET_DHCP_END = "192.168.122.2", "192.168.122.254"  # DHCP range, netns only
NET_NETMASK = "255.255.255.0"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]+")  # the socket path goes into a URI unescaped
_SOCKET_MAX = 107  # sun_path holds 108 bytes with the NUL
_MARKER = ".hvlib-sandbox"
_START_TIMEOUT = 90.0  # a cold QEMU capability probe takes ~8 s on 2 idle cores
_QEMU_CONF: dict[str, str | int] = {
    "stdio_handler": "file",
    "user": "root",
    "group": "root",
    "dynamic_ownership": 0,
    "remember_owner": 0,
    "security_driver": "none",
}
_LXC_CONF: dict[str, str | int] = {"security_driver": "none"}
_LIBVIRTD_CONF: dict[str, str | int] = {"log_outputs": "3:file:/var/log/libvirt/libvirtd.log"}


class SandboxError(RuntimeError):
    """A sandbox could not be started (the message says which step and why)."""


def _tool(name: str) -> str:
    """Absolute path of an executable (PATH, then /usr/sbin, /sbin). Raises SandboxError."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise SandboxError(f"{name} not found: install the packages of scripts/install-deps.sh")
    return found


def _run(
    argv: list[str], *, timeout: float = 30.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run argv (no shell, own session so a terminal's Ctrl-C does not hit it), capture output.

    Raises SandboxError if it cannot start, times out, or (with check) exits non-zero.
    """
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxError(f"{shlex.join(argv)}: {e}") from e
    if check and proc.returncode != 0:
        raise SandboxError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll predicate until it is true or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _conf_text(settings: dict[str, str | int]) -> str:
    """libvirt .conf lines for settings (strings quoted, ints bare)."""
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())


def bridge_name(name: str) -> str:
    """The sandbox's bridge: ``hvbr-`` + 8 hex digits of the name's hash (fits IFNAMSIZ)."""
    return "hvbr-" + hashlib.sha256(name.encode()).hexdigest()[:8]


def check_name(name: str) -> None:
    """Raise ValueError unless name is 1-32 chars of [a-z0-9_-], starting alphanumeric."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"sandbox name {name!r}: use 1-32 of [a-z0-9_-], starting with a-z0-9")


def check_root(root: Path) -> None:
    """Raise ValueError if root is relative, has URI-unsafe characters or a too long socket path."""
    if not _PATH_RE.fullmatch(str(root)):
        raise ValueError(f"sandbox root {root}: need an absolute path of [A-Za-z0-9_./-]")
    if len(str(root / "run/libvirt/libvirt-sock")) > _SOCKET_MAX:
        raise ValueError(f"sandbox root {root}: the libvirt socket path would exceed {_SOCKET_MAX}")
