"""Snapshots of the host namespace's network (interfaces, non-loopback listeners), and the
difference two snapshots show: a sandbox must leave neither behind.

Part of :mod:`hvlib.testkit.sandbox`. Pure but for running ``ip`` and ``ss``.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from hvlib.testkit.sandbox_base import _run, _tool


@dataclasses.dataclass(frozen=True)
class NetSnapshot:
    """The host namespace's interface names and listening sockets (``"tcp 0.0.0.0:22"``)."""

    links: frozenset[str]
    listeners: frozenset[str]


@dataclasses.dataclass(frozen=True)
class NetDiff:
    """What changed between two snapshots, loopback listeners left out."""

    added_links: tuple[str, ...]
    removed_links: tuple[str, ...]
    added_listeners: tuple[str, ...]
    removed_listeners: tuple[str, ...]

    @property
    def leaks(self) -> list[str]:
        """What was added: any such line breaks the rule that the host namespace stays clean."""
        return [f"new interface {x}" for x in self.added_links] + [
            f"new listener {x}" for x in self.added_listeners
        ]


def parse_ip_br_link(text: str) -> frozenset[str]:
    """Interface names from ``ip -br link`` output (a veth's ``@peer`` suffix dropped)."""
    return frozenset(line.split()[0].split("@")[0] for line in text.splitlines() if line.strip())


def parse_ss_listeners(text: str) -> frozenset[str]:
    """``"PROTO LOCAL"`` for each line of ``ss -H -ltnu`` output (queues and peer dropped)."""
    rows = (line.split() for line in text.splitlines())
    return frozenset(f"{f[0]} {f[4]}" for f in rows if len(f) >= 5)


def is_loopback_listener(listener: str) -> bool:
    """True if a ``"PROTO ADDR:PORT"`` listener is bound to loopback (127/8, ::1 or ``%lo``)."""
    host = listener.split(" ", 1)[-1].rsplit(":", 1)[0].strip("[]")
    addr, _, iface = host.partition("%")
    if iface == "lo":
        return True
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:  # '*' is every address
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def host_network_snapshot() -> NetSnapshot:
    """Snapshot the calling process's (the host's) namespace. Raises SandboxError if ip/ss fail."""
    links = _run([_tool("ip"), "-br", "link"]).stdout
    listeners = _run([_tool("ss"), "-H", "-ltnu"]).stdout
    return NetSnapshot(parse_ip_br_link(links), parse_ss_listeners(listeners))


def diff_snapshots(before: NetSnapshot, after: NetSnapshot) -> NetDiff:
    """Differences between two snapshots, ignoring the noise that is not a leak.

    Ignored: listeners on loopback (allowed by the project's rules, and opened and closed all
    the time by test tooling, debuggers and other tests), and the per-call columns of ``ss``
    (queue sizes, process) which the snapshot never keeps. Every other added interface or
    listener — any non-loopback address, including wildcards — is reported.
    """

    def real(xs: frozenset[str]) -> frozenset[str]:
        return frozenset(x for x in xs if not is_loopback_listener(x))

    return NetDiff(
        tuple(sorted(after.links - before.links)),
        tuple(sorted(before.links - after.links)),
        tuple(sorted(real(after.listeners - before.listeners))),
        tuple(sorted(real(before.listeners - after.listeners))),
    )
