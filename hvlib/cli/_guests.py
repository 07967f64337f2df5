"""``hvlib ls``, ``hvlib exec`` and ``hvlib console``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from hvlib.cli._base import (
    EXIT_BAD_INPUT,
    EXIT_EXEC_CANNOT_RUN,
    EXIT_EXEC_TIMEOUT,
    EXIT_FAILED,
    EXIT_OK,
    SECONDS,
    Exit,
    cli,
    find_one,
    hosts,
    hosts_options,
    note,
    ready_option,
    run_with_progress,
    say,
    timeout_option,
    uri_list,
    verbose_option,
)
from hvlib.errors import HvlibError, SpecError

if TYPE_CHECKING:
    from hvlib.virt.domain import Domain

READY_WAIT = 300.0
"""Seconds ``hvlib exec --ready WORD`` waits without ``--wait`` (a Debian cloud VM under
software emulation reached cloud-init done 35-51 s after start: FIELD-NOTES)."""


# -- ls ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One domain as ``ls`` shows it."""

    name: str
    uuid: str
    type: str
    state: str
    vcpus: int | None
    memory_mib: int | None
    addresses: dict[str, list[str]]
    host: str

    @property
    def ips(self) -> str:
        return ", ".join(a.split("/")[0] for addrs in self.addresses.values() for a in addrs)


@cli.command(name="ls")
@hosts_options
@click.option("--json", "as_json", is_flag=True, help="A JSON list, for machines.")
@verbose_option
def ls(uris: tuple[str, ...], netns: str | None, as_json: bool) -> None:
    """List the domains of every host: name, type, state, vcpus, memory, addresses, host.

    TYPE is hvlib's virt type (kvm, qemu, xen-pv, xen-pvh, xen-hvm, lxc), or libvirt's own
    domain type for a domain hvlib does not model (``test``: the test driver's own domains).

    A host that cannot be reached is reported on stderr; the others are still listed
    (exit 1).
    """
    import hvlib

    rows: list[Row] = []
    failed = False
    for uri in uri_list(uris):
        try:
            with hvlib.connect(uri, netns=netns) as host:
                rows.extend(r for r in map(_row, host.domains.list()) if r is not None)
        except HvlibError as e:
            note(f"hvlib: error: {e}")
            failed = True
    rows.sort(key=lambda r: (r.host, r.name))
    if as_json:
        say(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        _table(rows)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


def _row(dom: Domain) -> Row | None:
    """``dom`` as a row (None if it vanished meanwhile)."""
    from hvlib.errors import DomainNotFound
    from hvlib.model.render import type_label

    try:
        state = dom.state
        doc = dom.xml_doc()
        found = dom.addresses() if state.is_active else {}
    except DomainNotFound:
        return None
    addrs = {mac: [str(a) for a in found[mac]] for mac in sorted(found)}
    memory_kib = doc.current_memory_kib or doc.memory_kib
    return Row(
        name=dom.name,
        uuid=dom.uuid,
        type=type_label(doc),
        state=state.value,
        vcpus=doc.vcpu_current or doc.vcpu,
        memory_mib=None if memory_kib is None else memory_kib // 1024,
        addresses=addrs,
        host=dom.host.uri,
    )


def _table(rows: Sequence[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for head in ("NAME", "TYPE", "STATE", "VCPUS", "MEMORY", "ADDRESSES", "HOST"):
        table.add_column(head, justify="right" if head in ("VCPUS", "MEMORY") else "left")
    for r in rows:
        memory = "-" if r.memory_mib is None else f"{r.memory_mib} MiB"
        table.add_row(r.name, r.type, r.state, str(r.vcpus or "-"), memory, r.ips or "-", r.host)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        say(line.rstrip())


# -- exec, console -------------------------------------------------------------------------


@cli.command(name="exec")
@click.argument("name")
@click.argument("command", nargs=-1, required=True)
@hosts_options
@timeout_option("Kill the command after this many seconds (exit 124). Default: no limit.")
@click.option(
    "--wait",
    type=SECONDS,
    default=0.0,
    metavar="SECONDS",
    help="First wait up to this long for the guest to take commands (SSH answers, the "
    "container can be entered). Default: do not wait.",
)
@ready_option(
    "What --wait waits for: ssh (a command runs; the default), address, cloud-init "
    "(cloud-init status says done), systemd (systemctl is-system-running says running or "
    f"degraded). Given alone it waits up to {READY_WAIT:g} s."
)
@click.option(
    "--transport",
    type=click.Choice(["ssh", "agent", "container"]),
    default=None,
    help="How the command reaches the guest: VMs ssh (the default) or agent (the QEMU guest "
    "agent: DomainSpec guest_agent, no SSH credentials needed; never a fallback), "
    "containers container.",
)
@click.option(
    "--stdin",
    "feed_stdin",
    is_flag=True,
    help="Feed hvlib's stdin to the command (else its stdin is empty).",
)
@click.option(
    "--ssh-user",
    envvar="HVLIB_SSH_USER",
    default="root",
    show_default=True,
    help="VMs: the user to log in as ($HVLIB_SSH_USER).",
)
@click.option(
    "--ssh-key",
    envvar="HVLIB_SSH_KEY",
    type=click.Path(dir_okay=False),
    help="VMs: private key file ($HVLIB_SSH_KEY).",
)
@click.option(
    "--known-hosts",
    envvar="HVLIB_KNOWN_HOSTS",
    type=click.Path(dir_okay=False),
    help="VMs: known_hosts file holding the guest's host key ($HVLIB_KNOWN_HOSTS).",
)
@click.option(
    "--host-key",
    envvar="HVLIB_HOST_KEY",
    help="VMs: the guest's host public key line, pinned ($HVLIB_HOST_KEY).",
)
@verbose_option
def exec_(
    name: str,
    command: tuple[str, ...],
    uris: tuple[str, ...],
    netns: str | None,
    timeout: float | None,
    wait: float,
    ready: str | None,
    transport: str | None,
    feed_stdin: bool,
    **ssh: Any,
) -> None:
    """Run COMMAND in the domain NAME; its exit status becomes hvlib's.

    hvlib exec NAME -- CMD ARGS...   (no shell; use `-- sh -c '...'` for one)

    Containers (LXC) are entered directly; VMs are reached over SSH with a pinned host key
    (--ssh-key with --host-key or --known-hosts). Exit 124: timed out; 125: hvlib could not
    run it (no such domain, not running, unreachable, not ready within --wait, or the
    guest said it will not get ready: cloud-init error).
    """
    from hvlib.errors import CommandTimeout
    from hvlib.guest.ready import Ready

    try:
        config = _ssh_config(**ssh)
        with hosts(uri_list(uris), netns) as hs:
            dom = find_one(hs, name)
            if transport != "agent":
                _require_credentials(dom, config)
            wait = READY_WAIT if ready and not wait else wait
            if wait > 0:
                probe = Ready.by_word(ready or "ssh")
                run_with_progress(
                    f"waiting for {name} to be ready ({ready or 'ssh'})",
                    lambda: dom.wait_ready(
                        timeout=wait, probe=probe, ssh=config, transport=transport
                    ),
                )
            result = dom.exec(
                list(command),
                timeout=timeout,
                input=sys.stdin.buffer if feed_stdin else None,
                on_stdout=_writer(sys.stdout),
                on_stderr=_writer(sys.stderr),
                ssh=config,
                transport=transport,
            )
    except CommandTimeout as e:
        raise Exit(EXIT_EXEC_TIMEOUT, f"hvlib: {e}") from None
    except Exit as e:
        status = EXIT_EXEC_CANNOT_RUN if e.status == EXIT_FAILED else e.status
        raise Exit(status, e.message) from None
    except SpecError as e:
        raise Exit(EXIT_BAD_INPUT, f"hvlib: {e}") from None
    except HvlibError as e:
        raise Exit(EXIT_EXEC_CANNOT_RUN, f"hvlib: error: {e}") from None
    raise Exit(_exit_status(result.exit_status))


def _require_credentials(dom: Domain, config: Any) -> None:
    """VMs are reached over SSH: refuse early, with the options to use, when none is set.

    Raises:
        Exit(125): ``dom`` is a VM and no SSH credentials are known for it.
    """
    if dom.virt.is_container or config is not None or dom.ssh or dom.host.ssh:
        return
    raise Exit(
        EXIT_EXEC_CANNOT_RUN,
        f"hvlib: {dom.name} is a {dom.virt.value} VM, reached over SSH: pass --ssh-key and "
        "--host-key (or --known-hosts)",
    )


def _writer(stream: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        stream.buffer.write(data)
        stream.buffer.flush()

    return write


def _exit_status(status: int) -> int:
    """A command's status as a process exit status (a signal N as 128+N, like a shell)."""
    if status < 0:
        return 128 - status
    return min(status, 255)


def _ssh_config(
    ssh_user: str, ssh_key: str | None, known_hosts: str | None, host_key: str | None
) -> Any:
    """An SshConfig when any SSH option was given, else None (the host's default)."""
    if ssh_key is None and known_hosts is None and host_key is None:
        return None
    from hvlib.guest.config import SshConfig

    return SshConfig(user=ssh_user, key=ssh_key, known_hosts=known_hosts, host_key=host_key)


@cli.command()
@click.argument("name")
@hosts_options
@timeout_option("Stop after this many seconds (default: until Ctrl-C or the console closes).")
@verbose_option
def console(name: str, uris: tuple[str, ...], netns: str | None, timeout: float | None) -> None:
    """Show the console of the domain NAME, read-only.

    Prints what hvlib captured if this process started the domain; otherwise follows the
    live console through libvirt until Ctrl-C, --timeout, or the guest stops. Nothing is
    ever typed into the console.
    """
    with hosts(uri_list(uris), netns) as hs:
        dom = find_one(hs, name)
        if dom.console is not None:
            sys.stdout.buffer.write(dom.console_log())
            return
        _follow_console(dom, timeout)


def _follow_console(dom: Domain, timeout: float | None) -> None:
    """Copy the live console to stdout until it closes, ``timeout`` passes or Ctrl-C.

    Raises:
        InvalidState: the domain is not running.
        Exit(1): libvirt has no console stream for it (the test driver) or refused one.
    """
    from hvlib.errors import InvalidState
    from hvlib.virt.console import ConsoleCapture

    if not dom.state.is_active:
        raise InvalidState(
            f"{dom.name} is {dom.state.value}: it has no live console",
            name=dom.name,
            state=dom.state,
        )
    capture = ConsoleCapture(dom.name, max_bytes=64 * 1024)
    capture.listeners.append(_writer(sys.stdout))
    try:
        capture.attach(dom.host.conn, dom.handle, force=False)
    except HvlibError as e:
        raise Exit(EXIT_FAILED, f"hvlib: error: {dom.name}: cannot open its console: {e}") from e
    note(f"(following the console of {dom.name}, read-only; Ctrl-C to stop)")
    try:
        with capture.cond:
            capture.cond.wait_for(lambda: capture.closed, timeout)
    except KeyboardInterrupt:
        pass
    finally:
        closed = capture.closed
        capture.close()
    if closed:
        note(f"(console of {dom.name} closed)")
