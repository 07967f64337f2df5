"""Remote hosts for real: two sandboxed libvirtds, each in its own network namespace, joined
by a veth pair. The second is reached over SSH (OpenSSH's sshd in its netns, listening only
on its veth address, with a host key made here and pinned; libvirt's +libssh transport,
through a loopback forwarder since the test process lives in the host's namespace). A Fleet
places guests on them; a guest on a qcow2 disk is snapshotted and reverted over SSH."""

from __future__ import annotations

import inspect
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hvlib
from hvlib import HostError, SpecError, State, Unsupported, VirtType
from hvlib.fleet import Fleet
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SshLink
from hvlib.virt.host import Host
from hvlib.virt.remote import remote_uri
from hvlib.virt.snapshot import SnapshotKind
from integration.conftest import counter_guest_spec, linked_pair, pinned_uri

pytestmark = [pytest.mark.integration, pytest.mark.remote, pytest.mark.qemu]
log = logging.getLogger(__name__)

IMAGES = "/var/lib/libvirt/images"  # inside each sandbox's mount namespace: a dir of its own
DOWN_URI = "qemu+unix:///system?socket=/nonexistent/hvlib-remote/libvirt-sock"
COUNTER = re.compile(r"counter (\d+)")


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLink]:
    with linked_pair("rm", tmp_path_factory.mktemp("ssh")) as link:
        yield link


@pytest.fixture(scope="module")
def host_b(linked: SshLink) -> Iterator[Host]:
    with hvlib.connect(pinned_uri(linked), poll_interval=None) as h:
        yield h


def counters(text: str | bytes) -> list[int]:
    data = text.decode(errors="replace") if isinstance(text, bytes) else text
    return [int(n) for n in COUNTER.findall(data)]


# -- connecting ------------------------------------------------------------------------------


def test_ssh_connection_pins_the_host_key(
    linked: SshLink, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.INFO, logger="hvlib"):
        uri = pinned_uri(linked)
    assert uri.startswith("qemu+libssh://root@127.0.0.1:") and "known_hosts=" in uri
    assert "using libvirt's +libssh transport" in caplog.text
    started = time.monotonic()
    with hvlib.connect(uri, poll_interval=None) as host:
        opened = time.monotonic() - started
        # it is b's daemon: its default pool is b's images directory
        assert host.pools.get("default").path == str(linked.b.root / "images")
        assert host.call(lambda c: c.getType()) == "QEMU"
    log.info("SSH connection opened in %.2f s", opened)
    # a different pinned key: refused by libvirt's libssh transport
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = tmp_path / "known_hosts"
    port = linked.ssh_uri.split(":")[2].split("/")[0]
    key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    wrong.write_text(f"[127.0.0.1]:{port} {key}\n")
    with pytest.raises(HostError, match=r"HOST KEY VERIFICATION FAILED|differs"):
        hvlib.connect(remote_uri(linked.ssh_uri, known_hosts=wrong, keyfile=linked.keyfile))
    # the plain +ssh transport would not check a pin: refused outright
    with pytest.raises(SpecError, match="use the \\+libssh transport"):
        hvlib.connect(f"{linked.ssh_uri}?known_hosts={linked.known_hosts}")


@pytest.mark.skipif(
    "known_hosts" not in inspect.signature(hvlib.virt.host.connect).parameters,
    reason="hvlib.connect(uri, known_hosts=, keyfile=) is not wired to hvlib.virt.remote yet",
)
def test_connect_takes_the_pins_itself(linked: SshLink) -> None:
    with hvlib.connect(  # type: ignore[call-arg]
        linked.ssh_uri, known_hosts=linked.known_hosts, keyfile=linked.keyfile
    ) as host:
        assert host.uri.startswith("qemu+libssh://")
        assert host.pools.get("default").path == str(linked.b.root / "images")


# -- a fleet of the two ----------------------------------------------------------------------


def test_fleet_places_a_guest_on_the_host_with_room(
    linked: SshLink, host_b: Host, kit: GuestKit
) -> None:
    a_uri, b_uri = linked.a.qemu_uri, linked.ssh_uri
    with Fleet([DOWN_URI, a_uri], poll_interval=None) as fleet:
        inv = fleet.inventory()
        assert list(inv.hosts) == [a_uri] and list(inv.down) == [DOWN_URI]
        assert "Failed to connect socket" in inv.down[DOWN_URI]
    pins = {"known_hosts": linked.known_hosts, "keyfile": linked.keyfile}
    with Fleet([a_uri, b_uri], poll_interval=None, **pins) as fleet:
        started = time.monotonic()
        fleet.inventory()  # capabilities over +libssh: stalls until a keepalive (5 s)
        cold = time.monotonic() - started
        started = time.monotonic()
        inv = fleet.inventory()
        took = time.monotonic() - started
        assert list(inv.hosts) == [a_uri, b_uri] and inv.down == {}
        for cap in inv.hosts.values():
            assert VirtType.QEMU in cap.virt_types and cap.headroom_mib > 1024
        log.info(
            "inventory of 2 hosts: %.2f s, then %.2f s:\n%s",
            cold,
            took,
            "\n".join(inv.lines()),
        )
        # both sandboxes share this machine's memory: the defined domains tell them apart
        filler = counter_guest_spec(kit, "filler", memory_mib=inv.hosts[a_uri].headroom_mib - 64)
        fleet.host(a_uri).domains.define(filler)
        try:
            plan = fleet.plan(counter_guest_spec(kit, "web"))
            assert plan.uri == b_uri
            assert re.fullmatch(r"needs 256 MiB, headroom is -?\d+ MiB", plan.rejected[a_uri])
            log.info("place(web) -> %s; rejected: %s", plan.uri, plan.rejected)
            first = fleet.ensure(counter_guest_spec(kit, "web"))
            assert first.changed and first.domain is not None
            web = first.domain
            assert web.host is fleet.host(b_uri) and web.state is State.RUNNING
            # its console comes over the SSH connection
            web.wait_for_console(guestkit.READY_LINE, timeout=60)
            # a re-run finds it on b and changes nothing (no second copy on a)
            again = fleet.ensure(counter_guest_spec(kit, "web"))
            assert not again.changed and again.domain is not None
            assert again.domain.host is web.host
            assert list(fleet.find("web")) == [b_uri]
            assert fleet.ensure(counter_guest_spec(kit, "web"), State.ABSENT).changed
            assert fleet.find("web") == {}
        finally:
            fleet.host(a_uri).domains.get("filler").undefine()
            dom = fleet.host(b_uri).domains.find("web")
            if dom is not None:
                dom.destroy()
                dom.undefine()


# -- snapshots over SSH ----------------------------------------------------------------------


def test_snapshot_and_revert_a_guest_on_a_qcow2_disk(host_b: Host, kit: GuestKit) -> None:
    host_b.pools.ensure_dir("images", IMAGES)
    vol = host_b.volumes.ensure("images", "snap.qcow2", size_mib=64, format="qcow2").volume
    assert vol is not None
    dom = host_b.domains.define(counter_guest_spec(kit, "snap", disks=[vol.disk()]))
    try:
        dom.start()
        dom.wait_for_console("counter 2", timeout=60)
        before = counters(dom.console_log())[-1]
        started = time.monotonic()
        snap = dom.snapshots.create("s1", description="counter at two or so")
        took = time.monotonic() - started
        at_snapshot = counters(dom.console_log())[-1]  # the saved state is in [before, this]
        assert (snap.kind, snap.state, snap.has_memory, snap.current) == (
            SnapshotKind.INTERNAL,
            "running",
            True,
            True,
        )
        assert dom.snapshots.create("s1") == snap  # same name and kind: nothing taken
        dom.wait_for_console(f"counter {at_snapshot + 5}", timeout=20)
        started = time.monotonic()
        dom.snapshots.revert("s1")
        reverted = time.monotonic() - started
        # the guest is back where it was: its counter goes on from the snapshot's value
        line = dom.wait_for_console(r"counter \d+", timeout=10)
        after = counters(line)[0]
        log.info(
            "snapshot in %.2f s at counter %d..%d; revert in %.2f s; next counter %d "
            "(it had reached %d)",
            took,
            before,
            at_snapshot,
            reverted,
            after,
            at_snapshot + 5,
        )
        assert before < after <= at_snapshot + 1
        assert [(s.name, s.current) for s in dom.snapshots.list()] == [("s1", True)]
        dom.snapshots.delete("s1")
        dom.snapshots.delete("s1")  # absent: success
        # external, disk-only: taken, listed, but libvirt 9.0 cannot revert it
        ext = dom.snapshots.create("e1", disk_only=True)
        assert ext.kind is SnapshotKind.EXTERNAL and ext.overlays == {"vda": f"{vol.path}.e1"}
        with pytest.raises(Unsupported, match=r"libvirt 9\.0\.0 cannot revert .* 9\.7\.0"):
            dom.snapshots.revert("e1")
        assert dom.state is State.RUNNING
        dom.snapshots.delete("e1")  # libvirt 9.0 merges the overlay back
        assert dom.snapshots.list() == []
    finally:
        dom.destroy()
        dom.undefine()
        vol.delete()
