"""``hvlib down`` and ``hvlib rm`` (``--volumes``)."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NoReturn

import click

from hvlib.cli._base import (
    EXIT_FAILED,
    EXIT_OK,
    Exit,
    cli,
    find_all,
    forced_line,
    hostnames,
    hosts,
    hosts_options,
    json_option,
    note,
    run_with_progress,
    say,
    still_running,
    timeout_option,
    uri_list,
    verbose_option,
)
from hvlib.errors import HvlibError, WaitTimeout

if TYPE_CHECKING:
    from hvlib.model.domxml import DiskXML
    from hvlib.virt.domain import Domain
    from hvlib.virt.host import Host
    from hvlib.virt.pools import Volume


# -- down, rm ------------------------------------------------------------------------------


@cli.command()
@click.argument("names", nargs=-1, required=True)
@hosts_options
@timeout_option("Seconds the guest gets to shut down after the request.", default=60.0)
@click.option(
    "--force",
    is_flag=True,
    help="Power off whatever is still running at the deadline, printed as forced "
    "(--timeout 0 --force: at once). Without it such a guest is left running (exit 1).",
)
@json_option
@verbose_option
def down(
    names: tuple[str, ...],
    uris: tuple[str, ...],
    netns: str | None,
    timeout: float,
    force: bool,
    as_json: bool,
) -> None:
    """Shut the domains NAMES down gracefully (ACPI, or SIGTERM to a container's init).

    With several --uri, a name is shut down on every host that has it. A domain that is
    absent or already off is left as it is. A guest still running at the deadline is
    powered off only with --force (and then reported as forced, "forced": true in --json);
    without it, it keeps running and down exits 1.
    """
    records: list[Stopped] = []

    def act(dom: Domain) -> bool:
        record = _down_one(dom, timeout, force, quiet=as_json)
        records.append(record)
        return record.outcome != "timed-out"

    def absent(name: str, where: str) -> None:
        records.append(Stopped(name, None, "not-found"))
        if not as_json:
            say(f"{name}: not found on {where} (nothing to do)")

    try:
        _each(names, uris, netns, act, absent)
    except Exit:
        if as_json:
            say(json.dumps([asdict(r) for r in records], indent=2))
        raise


@dataclass
class Stopped:
    """One domain as ``down --json`` lists it."""

    name: str
    host: str | None
    outcome: str
    """graceful, forced, timed-out (still running), not-found or already-STATE."""
    forced: bool = False
    seconds: float | None = None


def _down_one(dom: Domain, timeout: float, force: bool, *, quiet: bool) -> Stopped:
    """Shut ``dom`` down; print what happened (unless ``quiet``); return it as a record."""
    uri = dom.host.uri
    if not dom.state.is_active:
        state = dom.state.value
        if not quiet:
            say(f"{dom.name}: already {state} ({uri})")
        return Stopped(dom.name, uri, f"already-{state}", seconds=0.0)
    try:
        res, _ = run_with_progress(
            f"shutting {dom.name} down", lambda: dom.shutdown(timeout, force=force)
        )
    except WaitTimeout as e:
        note(f"hvlib: error: {still_running(dom.name, timeout)} ({uri})")
        return Stopped(dom.name, uri, "timed-out", seconds=round(e.waited, 3))
    if not quiet and res.graceful:
        say(f"{dom.name}: shut down gracefully in {res.elapsed:.2f} s ({uri})")
    elif not quiet:
        say(f"{forced_line(dom.name, timeout)}, after {res.elapsed:.2f} s ({uri})")
    outcome = "graceful" if res.graceful else "forced"
    seconds = round(res.elapsed, 3)
    return Stopped(dom.name, uri, outcome, forced=not res.graceful, seconds=seconds)


@cli.command()
@click.argument("names", nargs=-1, required=True)
@hosts_options
@click.option("--force", is_flag=True, help="Power off a running domain first.")
@click.option(
    "--volumes",
    is_flag=True,
    help="Also delete the storage volumes its disks use: volume disks, and file disks whose "
    "path is a volume of one of the host's pools (cdroms and plain files are kept). A domain "
    "with a volume that another domain of the host also uses is not removed at all (exit 1).",
)
@verbose_option
def rm(
    names: tuple[str, ...], uris: tuple[str, ...], netns: str | None, force: bool, volumes: bool
) -> None:
    """Remove the definitions of the domains NAMES (a running one needs --force).

    With several --uri, a name is removed from every host that has it.
    """
    _each(names, uris, netns, lambda dom: _rm_one(dom, force, volumes))


def _each(
    names: Sequence[str],
    uris: Sequence[str],
    netns: str | None,
    act: Callable[[Domain], bool],
    absent: Callable[[str, str], None] | None = None,
) -> NoReturn:
    """``act`` on every domain called one of ``names`` on every host; exit 1 if one failed.
    A name no host has is passed to ``absent`` (with the hosts), or printed.

    Raises:
        Exit: always (0 when every ``act`` returned True; a missing name is not a failure).
    """
    failed = False
    with hosts(uri_list(uris), netns) as hs:
        for name in names:
            doms = find_all(hs, name)
            if not doms and absent is not None:
                absent(name, hostnames(hs))
            elif not doms:
                say(f"{name}: not found on {hostnames(hs)} (nothing to do)")
            for dom in doms:
                failed |= not act(dom)
    raise Exit(EXIT_FAILED if failed else EXIT_OK)


def _rm_one(dom: Domain, force: bool, volumes: bool) -> bool:
    """Undefine ``dom`` (destroyed first with ``force``), then delete its volumes when asked.

    Returns False when something was refused or failed (reported on stderr).
    """
    if dom.state.is_active and not force:
        note(
            f"hvlib: error: {dom.name} is {dom.state.value} on {dom.host.uri}: "
            "run hvlib down first, or pass --force"
        )
        return False
    doomed, kept = _disk_volumes(dom) if volumes else ([], [])
    shared = _shared(dom, doomed)
    if shared:
        note(
            f"hvlib: error: {dom.name} not removed ({dom.host.uri}): {shared}; nothing of "
            f"{dom.name} was deleted (remove the other domain first, or rm without --volumes)"
        )
        return False
    if dom.state.is_active:
        dom.destroy()
    dom.undefine()
    say(f"{dom.name}: removed ({dom.host.uri})")
    for what in kept:
        say(f"{dom.name}: kept {what}")
    return _delete_volumes(dom, doomed)


def _disk_volumes(dom: Domain) -> tuple[list[Volume], list[str]]:
    """The volumes ``dom``'s disks use (cdroms aside), each once; and what of its disks is
    kept, with why."""
    doomed: dict[tuple[str, str], Volume] = {}
    kept: list[str] = []
    for disk in _disks(dom):
        if disk.device == "cdrom":
            continue
        vol = _volume_of_disk(_host(dom), disk)
        if vol is not None:
            doomed.setdefault((vol.pool.name, vol.name), vol)
        elif disk.kind == "file" and disk.source_file:
            kept.append(f"{disk.source_file}: not a libvirt volume")
        elif disk.kind == "volume":
            kept.append(f"volume {disk.source_pool}/{disk.source_volume}: not found")
    return list(doomed.values()), sorted(set(kept))


def _disks(dom: Domain) -> list[DiskXML]:
    """The disks of ``dom``'s persistent definition and, while it runs, of its live one
    (none when the domain is gone)."""
    from hvlib.errors import DomainNotFound

    try:
        disks = list(dom.xml_doc(inactive=True).disks)
        if dom.state.is_active:
            disks += dom.xml_doc().disks
    except DomainNotFound:
        return []
    return disks


def _host(dom: Domain) -> Host:
    """``dom.host`` as the :class:`hvlib.Host` it is (Domain types it by the Protocol
    :class:`hvlib.virt._parts.HostLike`, which has no collections)."""
    from hvlib.virt.host import Host

    host = dom.host
    assert isinstance(host, Host)
    return host


def _volume_of_disk(host: Host, disk: DiskXML) -> Volume | None:
    if disk.kind == "volume" and disk.source_pool and disk.source_volume:
        pool = host.pools.find(disk.source_pool)
        return None if pool is None else host.volumes.find(pool, disk.source_volume)
    if disk.kind == "file" and disk.source_file:
        return host.volumes.find_by_path(disk.source_file)
    return None


def _shared(dom: Domain, vols: Sequence[Volume]) -> str:
    """Which of ``vols`` other domains of ``dom``'s host use, and who ("" when none)."""
    if not vols:
        return ""
    others = [(o.name, _disks(o)) for o in _host(dom).domains.list() if o.uuid != dom.uuid]
    found = []
    for vol in vols:
        key, path = (vol.pool.name, vol.name), posixpath.normpath(vol.path)
        users = [name for name, disks in others if any(_uses(d, key, path) for d in disks)]
        if users:
            found.append(f"volume {vol.pool.name}/{vol.name} is also used by {', '.join(users)}")
    return "; ".join(found)


def _uses(disk: DiskXML, key: tuple[str, str], path: str) -> bool:
    """Whether ``disk`` is the volume ``key`` (pool, name), or the file at its ``path``."""
    if disk.kind == "volume":
        return (disk.source_pool, disk.source_volume) == key
    source = disk.source_file
    return disk.kind == "file" and source is not None and posixpath.normpath(source) == path


def _delete_volumes(dom: Domain, vols: Sequence[Volume]) -> bool:
    """Delete ``vols`` (those with a backing image first: an overlay before its base); print
    each one deleted."""
    ok = True
    for vol in sorted(vols, key=lambda v: v.backing is None):
        try:
            vol.delete()
        except HvlibError as e:
            note(f"hvlib: error: {dom.name}: volume {vol.pool.name}/{vol.name}: {e}")
            ok = False
            continue
        say(f"{dom.name}: deleted volume {vol.pool.name}/{vol.name} ({dom.host.uri})")
    return ok
