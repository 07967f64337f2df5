"""Fleet, placement and remote URIs: pure functions, and Fleets of libvirt's test driver
(each ``test:///PATH.xml`` is a host of its own with the CPUs and memory that file says)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

import hvlib
from hvlib import DomainSpec, HostError, SpecError, State, VirtType
from hvlib.errors import PlacementError
from hvlib.fleet import Fleet
from hvlib.fleet_capacity import HostCapacity, choose, spec_memory_mib, virt_types_of
from hvlib.model.uri import check_uri
from hvlib.virt.remote import known_hosts_line, pin_host_keys, remote_uri, write_known_hosts

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIObwWgFbDqz/g1/jD42vNWllsAX/KOeq29nDOe8mBo69"
DOWN_URI = "qemu+unix:///system?socket=/nonexistent/hvlib-test/libvirt-sock"

# -- capabilities ----------------------------------------------------------------------------


def caps(*guests: tuple[str, list[str]]) -> str:
    root = etree.Element("capabilities")
    etree.SubElement(etree.SubElement(root, "host"), "uuid").text = "0-1-2"
    for os_type, domains in guests:
        guest = etree.SubElement(root, "guest")
        etree.SubElement(guest, "os_type").text = os_type
        arch = etree.SubElement(guest, "arch", name="x86_64")
        for kind in domains:
            etree.SubElement(arch, "domain", type=kind)
    return etree.tostring(root, encoding="unicode")


@pytest.mark.parametrize(
    ("guests", "expected"),
    [
        ([("hvm", ["qemu", "kvm"])], {VirtType.QEMU, VirtType.KVM}),
        ([("hvm", ["qemu"])], {VirtType.QEMU}),
        ([("exe", ["lxc"])], {VirtType.LXC}),
        ([("xen", ["xen"]), ("hvm", ["xen"])], {VirtType.XEN_PV, VirtType.XEN_HVM}),
        ([("xenpvh", ["xen"])], {VirtType.XEN_PVH}),
        ([("hvm", ["test"])], set(VirtType)),
        ([("hvm", ["bhyve"])], set()),
        ([], set()),
    ],
)
def test_virt_types_come_from_the_capabilities(
    guests: list[tuple[str, list[str]]], expected: set[VirtType]
) -> None:
    assert virt_types_of(caps(*guests)) == expected


# -- headroom and choice -----------------------------------------------------------------------


def cap(uri: str, **kw: object) -> HostCapacity:
    base: dict[str, object] = {
        "uri": uri,
        "hostname": uri,
        "cpus": 4,
        "memory_mib": 8192,
        "free_memory_mib": 8192,
        "virt_types": frozenset({VirtType.QEMU, VirtType.KVM}),
    }
    return HostCapacity(**(base | kw))  # type: ignore[arg-type]


def spec(name: str = "vm", memory: int = 1024, **kw: object) -> DomainSpec:
    kw.setdefault("virt", VirtType.QEMU)
    if kw["virt"] is not VirtType.LXC:
        kw.setdefault("kernel", "/boot/vmlinuz")
    return DomainSpec(name=name, memory_mib=memory, **kw)  # type: ignore[arg-type]


def test_headroom_subtracts_defined_domains_running_or_not() -> None:
    # 8 GiB host, 6 GiB defined of which 2 GiB stopped: free shows the 4 running GiB used
    c = cap("a", free_memory_mib=4096, committed_memory_mib=6144, idle_memory_mib=2048)
    assert c.headroom_mib == 2048
    # memory eaten by something else than domains counts too (free is the smaller bound)
    assert cap("b", free_memory_mib=1000, committed_memory_mib=0).headroom_mib == 1000


def test_refusal_names_type_memory_and_cpus() -> None:
    c = cap("a", committed_memory_mib=7680)
    assert c.refusal(spec(memory=256)) is None
    assert "needs 1024 MiB, headroom is 512 MiB" in (c.refusal(spec(memory=1024)) or "")
    assert "does not run lxc" in (c.refusal(spec(virt=VirtType.LXC, init=["/sbin/init"])) or "")
    assert "needs 8 vcpus" in (cap("b").refusal(spec(memory=256, vcpus=8)) or "")


def test_max_memory_is_what_a_spec_claims() -> None:
    assert spec_memory_mib(spec(memory=512, max_memory_mib=2048)) == 2048
    assert spec_memory_mib(spec(memory=512)) == 512


def test_choose_takes_the_most_headroom_and_says_why_not_the_others() -> None:
    caps_ = {
        "a": cap("a", committed_memory_mib=4096),
        "b": cap("b", committed_memory_mib=1024),
        "c": cap("c", virt_types=frozenset({VirtType.LXC})),
    }
    uri, reasons = choose(spec(), caps_)
    assert uri == "b"
    assert reasons["a"].startswith("less headroom (4096 MiB < 7168 MiB)")
    assert reasons["c"].startswith("does not run qemu")


def test_choose_breaks_ties_by_fewer_running_then_order() -> None:
    assert choose(spec(), {"a": cap("a", running=2), "b": cap("b", running=1)})[0] == "b"
    uri, reasons = choose(spec(), {"a": cap("a"), "b": cap("b")})
    assert uri == "a" and reasons["b"].startswith("same headroom (8192 MiB): ties go to")


def test_choose_with_no_fit_raises_with_every_reason() -> None:
    with pytest.raises(PlacementError) as e:
        choose(spec(memory=9000), {"a": cap("a"), "b": cap("b", virt_types=frozenset())})
    assert set(e.value.reasons) == {"a", "b"}
    assert "no host can run vm" in str(e.value)
    with pytest.raises(PlacementError, match="no host is up"):
        choose(spec(), {})


# -- remote URIs ----------------------------------------------------------------------------


def test_pinning_moves_ssh_to_libssh_with_known_hosts_and_key() -> None:
    uri = pin_host_keys(
        "qemu+ssh://root@db1.example/system", known_hosts="/etc/kh", keyfile="/root/.ssh/id"
    )
    assert uri == (
        "qemu+libssh://root@db1.example/system"
        "?known_hosts=/etc/kh&keyfile=/root/.ssh/id&sshauth=privkey"
    )
    assert check_uri(uri) == uri  # the result passes hvlib's URI check
    assert pin_host_keys(uri, known_hosts="/etc/kh", keyfile="/root/.ssh/id") == uri


def test_pinning_keeps_what_is_not_asked_for() -> None:
    assert pin_host_keys("qemu+ssh://h/system") == "qemu+ssh://h/system"
    assert pin_host_keys("qemu:///system") == "qemu:///system"
    # a key alone: plain ssh honours keyfile, so the transport stays
    assert pin_host_keys("qemu+ssh://h/system", keyfile="/k") == "qemu+ssh://h/system?keyfile=/k"
    assert pin_host_keys("xen+libssh2://h:2222/system?no_tty=1", known_hosts="/kh") == (
        "xen+libssh2://h:2222/system?no_tty=1&known_hosts=/kh"
    )
    assert pin_host_keys("qemu+ssh://h/system", known_hosts="/a//kh").endswith("known_hosts=/a/kh")
    assert pin_host_keys("qemu+ssh:///system", known_hosts="/kh") == (
        "qemu+libssh:///system?known_hosts=/kh"
    )


@pytest.mark.parametrize(
    ("uri", "kwargs", "message"),
    [
        ("qemu+tcp://h/system", {"known_hosts": "/kh"}, "SSH transports only"),
        ("qemu:///system", {"keyfile": "/k"}, "SSH transports only"),
        ("qemu+ssh://h/system", {"known_hosts": "kh"}, "absolute path"),
        ("qemu+ssh://h/system", {"keyfile": "/a/../k"}, "must not contain"),
        ("qemu+libssh://h/system?known_hosts=/x", {"known_hosts": "/y"}, "already sets"),
        (
            "qemu+libssh://h/system?known_hosts_verify=ignore",
            {"known_hosts": "/y"},
            "turns off",
        ),
    ],
)
def test_pinning_refuses_contradictions(uri: str, kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        pin_host_keys(uri, **kwargs)


def test_known_hosts_line_uses_brackets_off_port_22() -> None:
    assert known_hosts_line("qemu+ssh://root@h/system", KEY) == f"h {KEY}"
    assert known_hosts_line("qemu+ssh://root@127.0.0.1:2222/system", KEY) == (
        f"[127.0.0.1]:2222 {KEY}"
    )
    with pytest.raises(SpecError, match="no host"):
        known_hosts_line("qemu:///system", KEY)


def test_remote_uri_writes_a_pinned_host_key_once_and_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    ssh = hvlib.SshConfig(key="/root/id", host_key=KEY + " comment")
    with caplog.at_level(logging.INFO, logger="hvlib"):
        uri = remote_uri("qemu+ssh://root@h:2222/system", ssh=ssh)
    assert uri.startswith("qemu+libssh://root@h:2222/system?known_hosts=")
    path = Path(uri.split("known_hosts=")[1].split("&")[0])
    assert path.parent == tmp_path / ".cache/hvlib/known_hosts"
    assert path.read_text() == f"[h]:2222 {KEY}\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "using libvirt's +libssh transport" in caplog.text
    assert remote_uri("qemu+ssh://root@h:2222/system", ssh=ssh) == uri
    assert write_known_hosts("qemu+ssh://root@h:2222/system", KEY, tmp_path / "x").exists()


def test_display_uri_drops_the_pins_only() -> None:
    from hvlib.virt.remote import display_uri

    pinned = pin_host_keys(
        "qemu+ssh://root@h:2222/system?no_tty=1", known_hosts="/kh", keyfile="/k"
    )
    assert display_uri(pinned) == "qemu+libssh://root@h:2222/system?no_tty=1"
    unix = "qemu+unix:///system?socket=/run/x/libvirt-sock"
    assert display_uri(unix) == unix
    assert display_uri("qemu:///system") == "qemu:///system"


def test_remote_uri_refuses_host_key_and_known_hosts_together() -> None:
    ssh = hvlib.SshConfig(host_key=KEY, known_hosts="/kh")
    with pytest.raises(SpecError, match="not both"):
        remote_uri("qemu+ssh://h/system", ssh=ssh)


def test_remote_uri_without_pins_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hvlib"):
        assert remote_uri("qemu+ssh://h/system") == "qemu+ssh://h/system"
    assert caplog.text == ""


# -- Fleet on test-driver hosts --------------------------------------------------------------


def node_file(path: Path, memory_mib: int, cpus: int = 4) -> str:
    node = etree.Element("node")
    cpu = etree.SubElement(node, "cpu")
    for tag, value in (
        ("nodes", 1),
        ("sockets", 1),
        ("cores", cpus),
        ("threads", 1),
        ("active", cpus),
        ("mhz", 2000),
        ("model", "x86_64"),
    ):
        etree.SubElement(cpu, tag).text = str(value)
    etree.SubElement(node, "memory").text = str(memory_mib * 1024)
    path.write_bytes(etree.tostring(node))
    return f"test://{path}"


@pytest.fixture
def two_hosts(tmp_path: Path) -> list[str]:
    return [node_file(tmp_path / "small.xml", 4096), node_file(tmp_path / "big.xml", 8192)]


@pytest.fixture
def fleet(two_hosts: list[str]) -> Iterator[Fleet]:
    with Fleet(two_hosts, poll_interval=None) as f:
        yield f


def test_inventory_reads_every_host(fleet: Fleet, two_hosts: list[str]) -> None:
    inv = fleet.inventory()
    assert list(inv.hosts) == two_hosts and inv.down == {}
    small, big = inv.hosts.values()
    assert (small.memory_mib, big.memory_mib, big.cpus) == (4096, 8192, 4)
    assert big.virt_types == frozenset(VirtType)
    assert big.headroom_mib == 8192 and big.domains == 0
    assert len(inv.lines()) == 2


def test_place_prefers_headroom_and_counts_defined_domains(
    fleet: Fleet, two_hosts: list[str]
) -> None:
    small, big = two_hosts
    assert fleet.place(spec("new")).uri == big
    # fill the big host with defined (not running) domains: the small one wins now
    for i in range(3):
        fleet.host(big).domains.define(spec(f"filler{i}", memory=2048))
    assert fleet.inventory().hosts[big].idle_memory_mib == 6144
    placement = fleet.plan(spec("new"))
    assert placement.uri == small
    assert "less headroom (2048 MiB < 4096 MiB)" in placement.rejected[big]
    with pytest.raises(PlacementError) as e:
        fleet.place(spec("huge", memory=5000))
    assert set(e.value.reasons) == {small, big}


def test_place_skips_hosts_without_the_named_network(fleet: Fleet, two_hosts: list[str]) -> None:
    from hvlib import Nic

    with pytest.raises(PlacementError, match="does not exist on this host"):
        fleet.place(spec("netted", nics=[Nic.network("nowhere")]))


def test_a_down_host_is_reported_not_fatal(two_hosts: list[str]) -> None:
    with Fleet([DOWN_URI, *two_hosts], poll_interval=None) as f:
        assert list(f.down) == [DOWN_URI] and "cannot connect" in f.down[DOWN_URI]
        inv = f.inventory()
        assert list(inv.hosts) == two_hosts and list(inv.down) == [DOWN_URI]
        assert f.place(spec()).uri == two_hosts[1]
        with pytest.raises(HostError, match="cannot connect"):
            f.host(DOWN_URI)
        # a domain might live on the down host: ensure must not make a second copy
        with pytest.raises(HostError, match="cannot tell where vm is"):
            f.ensure(spec(), State.SHUT_OFF)


def test_ensure_places_once_and_finds_it_again(fleet: Fleet, two_hosts: list[str]) -> None:
    big = two_hosts[1]
    first = fleet.ensure(spec("web"), State.SHUT_OFF)
    assert first.changed and first.domain is not None
    assert first.domain.host.uri == big
    # the big host fills up: a re-run still converges the copy on the big host
    fleet.host(big).domains.define(spec("filler", memory=7000))
    second = fleet.ensure(spec("web"), State.SHUT_OFF)
    assert not second.changed and second.domain is not None
    assert second.domain.host.uri == big
    assert set(fleet.find("web")) == {big}
    # a change is applied where it is
    third = fleet.ensure(spec("web", memory=512), State.SHUT_OFF)
    assert third.changed and third.domain is not None and third.domain.host.uri == big
    gone = fleet.ensure(spec("web"), State.ABSENT)
    assert gone.changed and fleet.find("web") == {}
    assert not fleet.ensure(spec("web"), State.ABSENT).changed


def test_ensure_refuses_a_name_defined_twice(fleet: Fleet, two_hosts: list[str]) -> None:
    for uri in two_hosts:
        fleet.host(uri).domains.define(spec("twin"))
    with pytest.raises(hvlib.InvalidState, match="defined on 2 hosts"):
        fleet.ensure(spec("twin"), State.SHUT_OFF)


def test_fleet_refuses_bad_input() -> None:
    with pytest.raises(SpecError, match="at least one"):
        Fleet([])
    with pytest.raises(SpecError, match="no URI uses an SSH transport"):
        Fleet(["test:///default"], known_hosts="/kh")
    with pytest.raises(SpecError, match="command="):
        Fleet(["test:///default", "qemu+ssh://h/system?command=/bin/evil"])
    with Fleet(["test:///default"], poll_interval=None) as f, pytest.raises(SpecError):
        f.place(DomainSpec(name="ct", virt=VirtType.LXC))  # a container needs an init


def test_fleet_passes_ssh_pins_to_every_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def fake_connect(uri: str, **kw: object) -> object:
        opened.append(uri)
        raise HostError(f"cannot connect to {uri}: test")

    monkeypatch.setattr("hvlib.virt.host.connect", fake_connect)
    uris = ["qemu+ssh://root@a/system", "qemu+ssh://root@b/system", "qemu:///system"]
    with Fleet(uris, known_hosts="/kh") as f:
        assert len(f.down) == 3
    assert sorted(opened) == [
        "qemu+libssh://root@a/system?known_hosts=/kh",
        "qemu+libssh://root@b/system?known_hosts=/kh",
        "qemu:///system",
    ]


def test_fleet_connects_in_parallel(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    barrier = threading.Barrier(3, timeout=5)

    def slow_connect(uri: str, **kw: object) -> object:
        barrier.wait()  # only passes if all three connect at once
        time.sleep(0.01)
        raise HostError("down")

    monkeypatch.setattr("hvlib.virt.host.connect", slow_connect)
    with Fleet([f"qemu+tcp://h{i}/system" for i in range(3)]) as f:
        assert len(f.down) == 3


# -- the testkit pieces the remote integration tests stand on (pure) -------------------------


def test_sshd_config_listens_on_one_address_and_takes_keys_only(tmp_path: Path) -> None:
    from hvlib.testkit.sandbox_link import sshd_config

    address = "10.231.0.2"  # netns: a veth end inside a sandbox's namespace only
    text = sshd_config(address, 22, tmp_path / "hk", tmp_path / "ak", tmp_path / "pid")
    lines = dict(line.split(" ", 1) for line in text.splitlines())
    assert lines["ListenAddress"] == "10.231.0.2:22"  # netns
    assert lines["AuthorizedKeysFile"] == str(tmp_path / "ak")
    assert lines["PasswordAuthentication"] == "no" and lines["UsePAM"] == "no"
    assert lines["PermitRootLogin"] == "prohibit-password"
    assert "[fd00::2]:2222" in sshd_config("fd00::2", 2222, Path("/h"), Path("/a"), Path("/p"))


def test_ssh_server_pins_its_key_for_the_forwarded_port() -> None:
    from hvlib.testkit.sandbox import SshServer

    server = SshServer("10.231.0.2", 22, KEY, 1)  # netns
    assert server.known_hosts_line() == f"10.231.0.2 {KEY}"  # netns
    assert server.known_hosts_line("127.0.0.1", 40000) == f"[127.0.0.1]:40000 {KEY}"


# -- README's Fleet example, on the test-driver host hvlib.testkit ships ---------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_fleet_example() -> str:
    section = README.read_text().split("### Several hosts: `hvlib.fleet.Fleet`", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_s_fleet_example_places_on_the_shipped_test_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import hvlib.testkit as testkit

    scope: dict[str, object] = {}
    exec(compile(readme_fleet_example(), "README.md (Fleet example)", "exec"), scope)
    placement, result = scope["placement"], scope["result"]
    uri = testkit.test_host_uri()
    assert placement.uri == uri and placement.capacity.headroom_mib == 65536  # type: ignore[attr-defined]
    assert result.changed and result.domain is not None  # type: ignore[attr-defined]
    out = capsys.readouterr().out
    assert f"{uri}: up, 16 CPUs, 65536 MiB" in out and f"web-1 -> {uri}: changed=True" in out


def test_the_stock_test_driver_places_nothing_as_readme_says() -> None:
    """The stock host's own domain already takes more than its memory (-5120 MiB of
    headroom measured alone); other tests in this process may define more on the shared
    ``test:///default``, so only the sign is asserted."""
    web = spec("web-1", memory=2048)
    with (
        Fleet(["test:///default"], poll_interval=None) as f,
        pytest.raises(PlacementError, match=r"headroom is -\d+ MiB"),
    ):
        f.plan(web)


def test_copies_of_the_test_host_are_independent_hosts(tmp_path: Path) -> None:
    import hvlib.testkit as testkit

    uris = [testkit.test_host_uri(), testkit.test_host_uri(copy_to=tmp_path / "b c.xml")]
    with Fleet(uris, poll_interval=None) as f:
        assert list(f.inventory().hosts) == uris
        first = f.ensure(spec("one", memory=40000), State.SHUT_OFF)
        second = f.ensure(spec("two", memory=40000), State.SHUT_OFF)
        assert first.domain is not None and second.domain is not None
        assert {first.domain.host.uri, second.domain.host.uri} == set(uris)


def test_domains_of_a_closed_fleet_are_clearly_dead() -> None:
    with Fleet(["test:///default"]) as fleet:
        dom = fleet.find("test")["test:///default"]
    with pytest.raises(hvlib.HostClosed, match="closed with its Fleet"):
        dom.state  # noqa: B018
