"""User-namespace id maps on a real, sandboxed LXC host: who root in a container is on the host.

Without an id map a container shares the host's user namespace, so its root is the host's
root. With ``IdMap.shifted(100000)`` its init is uid 0 inside and uid 100000 on the host.
What the host sees is read from ``/proc/PID/{status,uid_map,gid_map}`` of the container's init
(found by a unique argument on its command line); what the container sees, through
``Domain.exec``.

Found on libvirt 9.0 (the evidence is ``test_root_owned_rootfs_is_refused_under_an_id_map``):
the container's root is made with the mapped ids, and libvirt's LXC driver, as that root,
creates ``ROOTFS/.oldroot`` to pivot into the root filesystem. So the root filesystem must be
owned by the mapped root (here: a private copy of the kit's root, every owner shifted by
100000), and every directory above it searchable by that host uid (a 0700 temporary
directory is not: libvirt then reports the same EACCES).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hvlib import DomainSpec, Filesystem, IdMap, LibvirtError, State, VirtType
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.virt.host import Host
from integration.conftest import MakeDomain

SHIFT = 100000
COUNT = 65536
WHOLE_RANGE = (0, 0, 2**32 - 1)
"""The initial user namespace's map: what a process that shares the host's ids reads."""


def ct_spec(name: str, rootfs: Path, marker: str, idmap: IdMap | None) -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=VirtType.LXC,
        memory_mib=64,
        init=[guestkit.LXC_INIT, marker],  # the init ignores the argument; the test finds it
        filesystems=[Filesystem.mount(str(rootfs), "/")],
        idmap=idmap,
    )


def shift_owners(root: Path, by: int) -> None:
    """Add ``by`` to the owner and group of ``root`` and of everything below it (links too)."""
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        os.chown(path, st.st_uid + by, st.st_gid + by, follow_symlinks=False)


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A fresh directory that any uid may pass through (not list), removed afterwards."""
    top = Path(tempfile.mkdtemp(prefix="hvlib-idmap-"))
    try:
        top.chmod(0o711)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def shifted_rootfs(kit: GuestKit, private_dir: Path) -> Path:
    """A copy of the kit's container root, owned by container root as the host sees it."""
    rootfs = private_dir / "rootfs"
    shutil.copytree(kit.lxc_rootfs, rootfs, symlinks=True)
    shift_owners(rootfs, SHIFT)
    return rootfs


def init_pid(marker: str) -> int:
    """The host pid of the container's init: the process whose command line has ``marker`` as
    an argument and that is pid 1 of its pid namespace (a child the init shell is forking has
    the same command line until it execs; one such was seen here)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            nspid = _status(entry).get("NSpid", "").split()
        except OSError:
            continue
        if marker.encode() in args and nspid[-1:] == ["1"]:
            found.append(int(entry.name))
    assert len(found) == 1, (marker, found)
    return found[0]


def _status(proc: Path) -> dict[str, str]:
    """``/proc/PID/status`` as a mapping of its fields (raises OSError once it is gone)."""
    lines = (proc / "status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def ids_on_host(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, fs uids), (same gids) of ``pid`` as the host sees them."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]


def id_map(pid: int, kind: str) -> list[tuple[int, int, int]]:
    """``/proc/PID/uid_map`` (or ``gid_map``) as (inside, outside, count) lines."""
    text = Path(f"/proc/{pid}/{kind}_map").read_text()
    return [tuple(int(x) for x in line.split()) for line in text.splitlines()]  # type: ignore[misc]


@pytest.mark.integration
@pytest.mark.lxc
def test_without_an_idmap_container_root_is_host_root(
    lxc_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    marker = f"--it-no-idmap-{os.getpid()}"
    dom = make_domain(lxc_host, ct_spec("it-ct-noidmap", kit.lxc_rootfs, marker, None))
    dom.start()
    dom.wait_for_console(guestkit.READY_LINE, timeout=30)
    pid = init_pid(marker)
    assert ids_on_host(pid) == ([0, 0, 0, 0], [0, 0, 0, 0])  # root in there is root out here
    assert id_map(pid, "uid") == id_map(pid, "gid") == [WHOLE_RANGE]
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user")


@pytest.mark.integration
@pytest.mark.lxc
def test_shifted_idmap_runs_container_root_as_an_unprivileged_host_uid(
    lxc_host: Host, shifted_rootfs: Path, make_domain: MakeDomain
) -> None:
    marker = f"--it-idmap-{os.getpid()}"
    spec = ct_spec("it-ct-idmap", shifted_rootfs, marker, IdMap.shifted(SHIFT, COUNT))
    dom = make_domain(lxc_host, spec)
    dom.start()
    assert dom.state is State.RUNNING
    dom.wait_for_console(guestkit.READY_LINE, timeout=30)
    pid = init_pid(marker)
    # the host's view of the container's init: uid and gid 100000, in a namespace of its own
    assert ids_on_host(pid) == ([SHIFT] * 4, [SHIFT] * 4)
    assert id_map(pid, "uid") == id_map(pid, "gid") == [(0, SHIFT, COUNT)]
    assert os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")
    # the container's view: its init is root, its files are root's
    status = dom.exec(["cat", "/proc/1/status"], check=True).text
    assert "Uid:\t0\t0\t0\t0\n" in status and "Gid:\t0\t0\t0\t0\n" in status
    assert dom.exec(["cat", "/proc/1/uid_map"], check=True).text.split() == ["0", "100000", "65536"]
    assert dom.exec(["stat", "-c", "%u:%g", "/etc/passwd"], check=True).text == "0:0\n"
    # the live definition has the map as asked: ensure sees nothing to do
    assert dom.xml_doc().idmap == {"uid": ((0, SHIFT, COUNT),), "gid": ((0, SHIFT, COUNT),)}
    again = lxc_host.domains.ensure(spec)
    assert not again.changed and again.pending == [], (again.changes, again.pending)


@pytest.mark.integration
@pytest.mark.lxc
def test_root_owned_rootfs_is_refused_under_an_id_map(
    lxc_host: Host, kit: GuestKit, private_dir: Path, make_domain: MakeDomain
) -> None:
    # The kit's root as it is (owned by host root, which is unmapped in the container), in
    # a directory the mapped root can pass through. libvirt creates ROOTFS/.oldroot as the
    # container's root; a root that an earlier container without a map already used has
    # one (libvirt leaves it behind), so it is removed to see what a fresh root gets.
    rootfs = private_dir / "rootfs"
    shutil.copytree(kit.lxc_rootfs, rootfs, symlinks=True)
    if (rootfs / ".oldroot").exists():
        (rootfs / ".oldroot").rmdir()
    marker = f"--it-idmap-rootowned-{os.getpid()}"
    dom = make_domain(
        lxc_host, ct_spec("it-ct-idmap-ro", rootfs, marker, IdMap.shifted(SHIFT, COUNT))
    )
    refused = r"Failed to create .*/rootfs/\.oldroot: Permission(.|\n)*"
    hint = r"root is host uid 100000: its root filesystem must belong to 100000:100000"
    with pytest.raises(LibvirtError, match=refused + hint):
        dom.start()
    assert dom.state is State.SHUT_OFF


@pytest.mark.integration
@pytest.mark.lxc
def test_exec_under_an_idmap_runs_as_container_root(
    lxc_host: Host, shifted_rootfs: Path, make_domain: MakeDomain
) -> None:
    marker = f"--it-idmap-exec-{os.getpid()}"
    dom = make_domain(
        lxc_host, ct_spec("it-ct-idmap-exec", shifted_rootfs, marker, IdMap.shifted(SHIFT))
    )
    dom.start()
    dom.wait_for_console(guestkit.READY_LINE, timeout=30)
    dom.exec(["touch", "/tmp/made-by-exec"], check=True)
    owner = (shifted_rootfs / "tmp" / "made-by-exec").stat().st_uid
    assert (dom.exec(["id", "-u"], check=True).text, owner) == ("0\n", SHIFT)
