"""Virtual networks: their XML against libvirt's network.rng, input checks, the pure planning
of changes and live reservation updates, and the idempotence of ensure on libvirt's
in-process test:/// driver with every libvirt call counted. (Addresses here are from the
documentation range 192.0.2.0/24 and exist only inside the test driver.)"""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

import hvlib
from hvlib import SpecError
from hvlib.model.netplan import (
    DhcpHost,
    NetworkSpec,
    Update,
    combine,
    merge,
    owned,
    plan,
    updates,
)
from hvlib.model.netxml import NetworkXML
from hvlib.model.plan import ChangeHow
from hvlib.virt import _virt
from hvlib.virt.host import Host
from hvlib.virt.network import Network, Networks
from tests.counting import WRITE_CALLS, CountingLibvirt

WRITES = WRITE_CALLS | {"networkDefineXML", "update"}
CIDR = "192.0.2.0/24"
RANGE = ("192.0.2.100", "192.0.2.199")
A = DhcpHost("52:54:00:00:00:0a", "192.0.2.10", "vm-a")
B = DhcpHost("52:54:00:00:00:0b", "192.0.2.11")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, CountingLibvirt]]:
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    with hvlib.connect("test:///default", poll_interval=None) as host:
        yield host, proxy


def writes(proxy: CountingLibvirt) -> dict[str, int]:
    return {k: v for k, v in proxy.calls.items() if k in WRITES}


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Update]:
    """Every networkUpdate hvlib makes, as the Update it was made from."""
    calls: list[Update] = []
    real = Network.update

    def record(self: Network, u: Update) -> None:
        calls.append(u)
        real(self, u)

    monkeypatch.setattr(Network, "update", record)
    return calls


def spec(name: str = "n", **kw: object) -> NetworkSpec:
    base: dict[str, object] = {"name": name, "ipv4": CIDR, "dhcp_range": RANGE, "hosts": [A]}
    base.update(kw)
    return NetworkSpec(**base)  # type: ignore[arg-type]


# -- input checks -------------------------------------------------------------------------


def test_dhcp_host_normalises_and_checks() -> None:
    h = DhcpHost("52:54:00:AB:CD:EF", "192.0.2.7")
    assert h.mac == "52:54:00:ab:cd:ef" and h.name is None
    for bad in (("52:54:00:ab:cd", "192.0.2.7"), ("x", "192.0.2.7")):
        with pytest.raises(SpecError, match=r"host\.mac"):
            DhcpHost(*bad)
    with pytest.raises(SpecError, match=r"host\.ip"):
        DhcpHost("52:54:00:ab:cd:ef", "2001:db8::1")
    for name in ("-a", "a_b", "a.b", "x" * 64, "a b"):
        with pytest.raises(SpecError, match=r"host\.name"):
            DhcpHost("52:54:00:ab:cd:ef", "192.0.2.7", name)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "a/b"}, "name"),
        ({"mode": "route"}, "mode"),
        ({"ipv4": "192.0.2.1"}, "ipv4"),
        ({"ipv4": "192.0.2.0/31"}, "ipv4"),
        ({"ipv4": "192.0.2.255/24"}, "ipv4"),
        ({"ipv4": "2001:db8::/64"}, "ipv4"),
        ({"ipv4": "not an address"}, "ipv4"),
        ({"dhcp_range": ("192.0.2.200", "192.0.2.100")}, "dhcp_range"),
        ({"dhcp_range": ("192.0.2.100", "198.51.100.1")}, "dhcp_range"),
        ({"dhcp_range": ("192.0.2.0", "192.0.2.9")}, "dhcp_range"),
        ({"dhcp_range": ("192.0.2.1", "192.0.2.9")}, "dhcp_range"),
        ({"dhcp_range": ("192.0.2.100",)}, "dhcp_range"),
        ({"hosts": [DhcpHost(A.mac, "198.51.100.1")]}, "hosts[0].ip"),
        ({"hosts": [DhcpHost(A.mac, "192.0.2.1")]}, "hosts[0].ip"),
        ({"hosts": [A, DhcpHost(A.mac, "192.0.2.12")]}, "hosts"),
        ({"hosts": [A, DhcpHost(B.mac, A.ip)]}, "hosts"),
        ({"hosts": [A, DhcpHost(B.mac, B.ip, A.name)]}, "hosts"),
        ({"hosts": [("52:54:00:00:00:01", "192.0.2.5")]}, "hosts[0]"),
        ({"bridge": "a-bridge-name-too-long"}, "bridge"),
        ({"bridge": "br 0"}, "bridge"),
        ({"autostart": "yes"}, "autostart"),
    ],
)
def test_bad_network_specs_are_refused(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_cidr_forms() -> None:
    assert spec(ipv4="192.0.2.0/24").ipv4 == "192.0.2.1/24"
    assert spec(ipv4="192.0.2.254/24").ipv4 == "192.0.2.254/24"
    assert spec(ipv4="192.0.2.64/26", dhcp_range=None, hosts=[]).interface.network.prefixlen == 26


# -- XML ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "s",
    [
        spec(),
        spec(mode="isolated", bridge="hvbr0"),
        spec(dhcp_range=None),
        spec(dhcp_range=None, hosts=[]),
        spec(hosts=[A, B]),
    ],
    ids=["nat", "isolated", "reservations-only", "no-dhcp", "two-hosts"],
)
def test_network_xml_validates_against_network_rng(s: NetworkSpec) -> None:
    xml = s.doc().to_xml()
    hvlib.validate(xml, "network")
    doc = NetworkXML.from_xml(xml)
    assert owned(doc, s) == owned(s.doc(), s)
    assert doc.forward_mode == ("nat" if s.mode == "nat" else None)
    assert (doc.bridge_stp, doc.bridge_delay) == ("off", "0")


def test_merge_keeps_what_the_spec_does_not_own() -> None:
    current = NetworkXML.from_xml(
        "<network><name>n</name><uuid>4b1b0f5c-5fd0-4a5f-9a7e-8a3f1d1c2b3a</uuid>"
        "<forward mode='nat'><nat><port start='1024' end='65535'/></nat></forward>"
        "<bridge name='virbr9' stp='on' delay='0'/><mac address='52:54:00:11:22:33'/>"
        "<domain name='example'/><dns><host ip='192.0.2.5'><hostname>x</hostname></host></dns>"
        "<ip address='192.0.2.1' netmask='255.255.255.0'><dhcp>"
        "<range start='192.0.2.2' end='192.0.2.254'/></dhcp></ip>"
        "<ip family='ipv6' address='2001:db8::1' prefix='64'/></network>"
    )
    s = spec()
    merged = merge(current, s)
    hvlib.validate(merged.to_xml(), "network")
    assert owned(merged, s) == owned(s.doc(), s)
    for kept in ("uuid", "mac", "domain", "dns", "forward/nat", "ip[@family='ipv6']"):
        assert merged.el.find(kept) is not None, kept
    assert merged.bridge_name == "virbr9" and merged.bridge_stp == "on"
    isolated = merge(merged, spec(mode="isolated"))
    assert isolated.el.find("forward") is None


def test_plan_classifies_by_how_a_running_network_takes_it() -> None:
    before = owned(spec().doc(), spec())
    after = owned(spec(ipv4="192.0.2.128/25", dhcp_range=None, hosts=[]).doc(), spec())
    changes = {c.field: c.how for c in plan(before, after, active=True)}
    assert changes == {
        "ipv4": ChangeHow.RESTART,
        "dhcp_range": ChangeHow.LIVE,
        f"hosts[{A.mac}]": ChangeHow.LIVE,
    }
    assert {c.how for c in plan(before, after, active=False)} == {ChangeHow.NEXT_BOOT}


def test_updates_delete_then_range_then_modify_then_add() -> None:
    current = spec(hosts=[A, B]).doc()
    moved_a = DhcpHost(A.mac, "192.0.2.20", "vm-a")
    c = DhcpHost("52:54:00:00:00:0c", "192.0.2.30")
    got = updates(current, spec(dhcp_range=("192.0.2.100", "192.0.2.150"), hosts=[moved_a, c]))
    assert [(u.command, u.section) for u in got] == [
        ("delete", "host"),
        ("delete", "range"),
        ("add", "range"),
        ("modify", "host"),
        ("add", "host"),
    ]
    assert B.mac in got[0].xml and "192.0.2.20" in got[3].xml and c.mac in got[4].xml
    assert {u.index for u in got} == {0}
    assert updates(current, spec(hosts=[A, B])) == []


def test_swapping_two_addresses_deletes_and_adds_instead_of_modifying() -> None:
    current = spec(hosts=[A, B]).doc()
    swapped = [DhcpHost(A.mac, B.ip), DhcpHost(B.mac, A.ip)]
    got = updates(current, spec(hosts=swapped))
    assert [u.command for u in got] == ["delete", "delete", "add", "add"]


def test_combine_makes_identical_calls_once_on_both_deletions_first() -> None:
    add = Update("add", "host", "<host/>")
    only_live = Update("delete", "host", "<host mac='x'/>")
    only_config = Update("delete", "host", "<host mac='y'/>")
    got = combine([only_live, add], [add, only_config])
    assert [(u.command, u.xml, u.live, u.config) for u in got] == [
        ("delete", only_live.xml, True, False),
        ("delete", only_config.xml, False, True),
        ("add", add.xml, True, True),
    ]


# -- ensure on the test driver -------------------------------------------------------------


def test_ensure_creates_then_makes_no_write_call(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    nets = Networks(host)
    net = nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=RANGE, hosts=[A])
    assert net.result is not None and net.result.changed
    assert [c.field for c in net.result.changes] == ["network", "state", "autostart"]
    assert net.active and net.autostart
    assert writes(proxy) == {"networkDefineXML": 1, "create": 1, "setAutostart": 1}
    hvlib.validate(net.xml(), "network")
    proxy.calls.clear()
    again = nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=RANGE, hosts=[A])
    assert again.result is not None
    assert not again.result.changed, again.result.changes
    assert again.result.diff() == ""
    assert writes(proxy) == {}, proxy.calls
    assert again.hosts == [A]
    net.delete()
    net.delete()  # absent is success
    assert nets.find(f"n{unique}") is None


def test_reservations_change_live_on_both_views_without_restart(
    counted: tuple[Host, CountingLibvirt], made: list[Update], unique: str
) -> None:
    host, proxy = counted
    nets = Networks(host)
    nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=RANGE, hosts=[A])
    proxy.calls.clear()
    moved_a = DhcpHost(A.mac, "192.0.2.20", "vm-a")
    net = nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=RANGE, hosts=[moved_a, B])
    assert net.result is not None
    assert [(c.field, c.how) for c in net.result.changes] == [
        (f"hosts[{A.mac}]", ChangeHow.LIVE),
        (f"hosts[{B.mac}]", ChangeHow.LIVE),
    ]
    assert writes(proxy) == {"update": 2}, "no redefine, no destroy/create"
    assert [(u.command, u.live, u.config) for u in made] == [
        ("modify", True, True),
        ("add", True, True),
    ]
    assert net.hosts == [moved_a, B]
    made.clear()
    net = nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=None, hosts=[])
    assert [u.command for u in made] == ["delete", "delete", "delete"]
    ip = net.doc().ipv4
    assert ip is not None and ip.hosts == [] and ip.range_start is None
    net.delete()


def test_check_reports_without_writing(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, proxy = counted
    nets = Networks(host)
    result = nets.apply(spec(f"n{unique}"), check=True)
    assert result.changed and result.network is None
    assert nets.find(f"n{unique}") is None
    nets.apply(spec(f"n{unique}"))
    proxy.calls.clear()
    result = nets.apply(spec(f"n{unique}", hosts=[B], mode="isolated"), check=True)
    assert {c.field for c in result.changes} >= {f"hosts[{B.mac}]", "mode"}
    assert writes(proxy) == {}
    nets.get(f"n{unique}").delete()


def test_restart_changes_of_a_running_network_wait_unless_allowed(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    nets = Networks(host)
    nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=RANGE)
    proxy.calls.clear()
    net = nets.ensure(f"n{unique}", ipv4=CIDR, dhcp_range=RANGE, mode="isolated", hosts=[A])
    assert net.result is not None
    assert {(c.field, c.how) for c in net.result.changes} == {
        ("mode", ChangeHow.NEXT_BOOT),
        (f"hosts[{A.mac}]", ChangeHow.NEXT_BOOT),
    }
    assert {c.how for c in net.result.pending} == {ChangeHow.RESTART}
    assert writes(proxy) == {"networkDefineXML": 1}, "only the definition; the network runs on"
    proxy.calls.clear()
    net = nets.ensure(
        f"n{unique}", ipv4=CIDR, dhcp_range=RANGE, mode="isolated", hosts=[A], allow_restart=True
    )
    assert writes(proxy)["destroy"] == 1 and writes(proxy)["create"] == 1
    assert net.active
    net.delete()


def test_a_stopped_network_is_redefined_and_started(
    counted: tuple[Host, CountingLibvirt], unique: str
) -> None:
    host, proxy = counted
    nets = Networks(host)
    net = nets.ensure(f"n{unique}", ipv4=CIDR, autostart=False)
    net.stop()
    proxy.calls.clear()
    net = nets.ensure(f"n{unique}", ipv4="192.0.2.128/25", hosts=[DhcpHost(A.mac, "192.0.2.130")])
    assert net.result is not None
    assert [(c.field, c.how) for c in net.result.changes] == [
        (f"hosts[{A.mac}]", ChangeHow.NEXT_BOOT),
        ("ipv4", ChangeHow.NEXT_BOOT),
        ("autostart", ChangeHow.NEXT_BOOT),
        ("state", ChangeHow.STATE),
    ]
    assert writes(proxy) == {"networkDefineXML": 1, "setAutostart": 1, "create": 1}
    assert net.active and net.autostart
    ip = net.doc().ipv4
    assert ip is not None and str(ip.interface) == "192.0.2.129/25"
    net.delete()


def test_list_get_find(host: Host, unique: str) -> None:
    nets = Networks(host)
    assert "default" in [n.name for n in nets.list()]
    with pytest.raises(hvlib.NotFound):
        nets.get(f"n{unique}")
    assert nets.find(f"n{unique}") is None
    with pytest.raises(hvlib.Unsupported):
        nets.get("default").leases()


def test_merge_adds_an_ipv4_element_to_a_network_without_one() -> None:
    current = NetworkXML.from_xml(
        "<network><name>n</name><bridge name='b0'/>"
        "<ip family='ipv6' address='2001:db8::1' prefix='64'/></network>"
    )
    s = spec(hosts=[A, B])
    merged = merge(current, s)
    hvlib.validate(merged.to_xml(), "network")
    assert owned(merged, s) == owned(s.doc(), s)
    assert updates(merged, s) == [] and len(merged.el.findall("ip")) == 2
    assert all(u.index == 1 for u in updates(merged, spec(hosts=[A])))
