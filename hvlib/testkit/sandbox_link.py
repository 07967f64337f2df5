"""Two sandboxes joined by a veth pair, and SSH from one to the other (for remote-host and
migration tests): :func:`link`, :func:`unlink`, :func:`ssh_linked`.

Part of :mod:`hvlib.testkit.sandbox`. Addresses exist only inside the sandboxes' network
namespaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from hvlib.testkit.forward import LoopbackForwarder
from hvlib.testkit.sandbox_base import SandboxError, _run, _tool

LINK_SUBNET = "10.231.0.0/30"  # the veth pair between two sandboxes: inside their netns only


@dataclasses.dataclass(frozen=True)
class SshServer:
    """An sshd started by :meth:`hvlib.testkit.sandbox.SandboxHost.start_sshd`: where it
    listens and its host key."""

    address: str
    port: int
    host_key_pub: str
    """``"ssh-ed25519 BASE64"``: the key to pin."""
    pid: int

    def known_hosts_line(self, host: str | None = None, port: int | None = None) -> str:
        """An OpenSSH known_hosts line pinning this server's key for ``host:port`` (default:
        its own address and port; give the forwarder's when reaching it through one)."""
        host, port = host or self.address, port or self.port
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.host_key_pub}"


class LinkedSandbox(Protocol):
    """What linking needs of a sandbox (:class:`hvlib.testkit.sandbox.SandboxHost` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def netns(self) -> str: ...

    def start_sshd(
        self, address: str, authorized_keys: Iterable[str], *, port: int = 22
    ) -> SshServer: ...

    def stop_sshd(self) -> None: ...


S = TypeVar("S", bound=LinkedSandbox)


class AddressForwarder(LoopbackForwarder):
    """Relay ``127.0.0.1:self.port`` (in the caller's namespace) to ``address:port`` inside
    ``netns``: how a test process reaches a server listening only on a sandbox's veth address
    (e.g. :meth:`hvlib.testkit.sandbox.SandboxHost.start_sshd`). Use as a context manager, or
    call ``close()``.

    Raises OSError: the local listening socket cannot be made.
    """

    def __init__(self, netns: str, address: str, port: int) -> None:
        self.address = address
        super().__init__(netns, port)

    def _connect_far(self) -> socket.socket:
        sock = socket.create_connection((self.address, self.target_port), timeout=10)
        sock.settimeout(None)
        return sock


def link_name(peer: LinkedSandbox) -> str:
    """The name of a sandbox's veth end toward ``peer`` (``hvl-`` + 8 hex digits)."""
    return "hvl-" + hashlib.sha256(peer.name.encode()).hexdigest()[:8]


def link(a: LinkedSandbox, b: LinkedSandbox, *, subnet: str = LINK_SUBNET) -> tuple[str, str]:
    """Join two started sandboxes with a veth pair and return (address in a, address in b).

    The pair is created directly inside the two network namespaces (it never exists in the
    host's) with the first two host addresses of ``subnet``; it disappears with either
    namespace, or with :func:`unlink`. Neither end has a route beyond ``subnet``.

    Raises ValueError: ``subnet`` has fewer than two host addresses, or a and b are the same
    sandbox. SandboxError: a step failed (e.g. the two are linked already).
    """
    if a.netns == b.netns:
        raise ValueError(f"cannot link sandbox {a.name} to itself")
    net = ipaddress.ip_network(subnet)
    hosts = [str(h) for _, h in zip(range(2), net.hosts(), strict=False)]
    if len(hosts) < 2:
        raise ValueError(f"subnet {subnet} has fewer than two host addresses")
    ip = _tool("ip")
    end_a, end_b = link_name(b), link_name(a)
    peer = ["peer", "name", end_b, "netns", b.netns]
    _run([ip, "link", "add", end_a, "netns", a.netns, "type", "veth", *peer])
    try:
        for sb, end, addr in ((a, end_a, hosts[0]), (b, end_b, hosts[1])):
            _run([ip, "-n", sb.netns, "addr", "add", f"{addr}/{net.prefixlen}", "dev", end])
            _run([ip, "-n", sb.netns, "link", "set", end, "up"])
    except SandboxError:
        unlink(a, b)
        raise
    return hosts[0], hosts[1]


def unlink(a: LinkedSandbox, b: LinkedSandbox) -> None:
    """Remove the veth pair :func:`link` made between a and b; nothing to do if it is gone."""
    _run([_tool("ip"), "-n", a.netns, "link", "del", link_name(b)], check=False)


def _sshd_files(directory: Path, address: str, port: int, authorized_keys: Iterable[str]) -> Path:
    """Write sshd's host key (made once), authorized_keys and config; return the config path.

    Raises SandboxError: ssh-keygen failed.
    """
    directory.mkdir(mode=0o700, exist_ok=True)
    key = directory / "host_ed25519"
    if not key.exists():
        _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
    keys = directory / "authorized_keys"
    keys.write_text("".join(line.strip() + "\n" for line in authorized_keys))
    keys.chmod(0o600)
    conf = directory / "sshd_config"
    conf.write_text(sshd_config(address, port, key, keys, directory / "sshd.pid"))
    return conf


def sshd_config(address: str, port: int, host_key: Path, authorized: Path, pidfile: Path) -> str:
    """sshd_config text: listen on address:port only, public-key logins of ``authorized`` only,
    no PAM, no forwarding, no passwords. Pure."""
    listen = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    settings = {
        "ListenAddress": listen,
        "HostKey": str(host_key),
        "PidFile": str(pidfile),
        "AuthorizedKeysFile": str(authorized),
        "PermitRootLogin": "prohibit-password",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UsePAM": "no",
        "StrictModes": "no",
        "AllowTcpForwarding": "no",
        "AllowAgentForwarding": "no",
        "X11Forwarding": "no",
        "PrintMotd": "no",
        "LogLevel": "VERBOSE",
    }
    return "".join(f"{k} {v}\n" for k, v in settings.items())


@dataclasses.dataclass(frozen=True)
class SshLink(Generic[S]):
    """Two linked sandboxes, the second reachable over SSH from the test process: see
    :func:`ssh_linked`."""

    a: S
    b: S
    address_a: str
    """a's end of the veth pair (inside a's netns only)."""
    address_b: str
    """b's end: where sshd listens, and where a's QEMU reaches b's (migration)."""
    server: SshServer
    ssh_uri: str
    """``qemu+ssh://root@127.0.0.1:PORT/system``: b's libvirtd over SSH, through a loopback
    forwarder in the caller's namespace (pin ``known_hosts``, log in with ``keyfile``)."""
    known_hosts: Path
    keyfile: Path


@contextlib.contextmanager
def ssh_linked(a: S, b: S, workdir: Path) -> Iterator[SshLink[S]]:
    """Link two started sandboxes (:func:`link`), start sshd in b on its veth address with a
    fresh host key, make a client key and a known_hosts file pinning that host key (in
    ``workdir``), and forward a loopback port of the caller's namespace to b's sshd. On exit
    the forwarder, sshd and the link are removed.

    Raises SandboxError: a step failed. OSError: the forwarder could not listen.
    """
    address_a, address_b = link(a, b)
    try:
        key = workdir / "client_ed25519"
        if not key.exists():
            _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)])
        server = b.start_sshd(address_b, [key.with_suffix(".pub").read_text()])
        try:
            with AddressForwarder(b.netns, address_b, server.port) as fwd:
                known_hosts = workdir / "known_hosts"
                known_hosts.write_text(server.known_hosts_line("127.0.0.1", fwd.port) + "\n")
                uri = f"qemu+ssh://root@127.0.0.1:{fwd.port}/system"
                yield SshLink(a, b, address_a, address_b, server, uri, known_hosts, key)
        finally:
            b.stop_sshd()
    finally:
        unlink(a, b)
