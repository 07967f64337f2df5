"""DomainSpec(guest_agent=True): the QEMU guest agent's virtio-serial channel, rendered,
spelled in spec files, owned by ensure (issue 18, guest agent). The golden is
tests/golden/qemu-agent.xml; the agent itself answers on the Debian VM
(integration/test_debian_ready.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import libvirt
import pytest
from lxml import etree

import hvlib
from hvlib import DomainSpec, State, VirtType
from hvlib.errors import SpecError, Unsupported
from hvlib.model.agent import AGENT_CHANNEL, has_agent
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import ChangeHow
from hvlib.model.render import render_tree
from hvlib.virt import _virt
from hvlib.virt.host import Host
from tests.counting import CountingLibvirt
from tests.golden_specs import GOLDEN_SPECS

SPEC = GOLDEN_SPECS["qemu-agent"]


def _channels(doc: DomainXML) -> list[tuple[str | None, str | None, str | None]]:
    return [(c.kind, c.target_type, c.target_name) for c in doc.channels]


def test_renders_the_agent_channel_and_validates() -> None:
    doc = render_tree(SPEC)
    assert _channels(doc) == [("unix", "virtio", AGENT_CHANNEL)]
    assert [el.tag for el in doc.devices][-3:] == ["console", "channel", "memballoon"]
    hvlib.validate(doc.to_xml())
    assert "<channel" not in hvlib.render(replace(SPEC, guest_agent=False))
    assert has_agent(render_tree(replace(SPEC, virt=VirtType.KVM)))


@pytest.mark.parametrize("virt", [VirtType.LXC, VirtType.XEN_PV, VirtType.XEN_HVM])
def test_other_types_refuse_it(virt: VirtType) -> None:
    fields = {"init": ["/sbin/init"]} if virt is VirtType.LXC else {"kernel": "/k"}
    spec = DomainSpec(name="a", virt=virt, guest_agent=True, **fields)  # type: ignore[arg-type]
    with pytest.raises(Unsupported, match="guest_agent is for kvm and qemu") as info:
        hvlib.render(spec)
    assert info.value.field == "guest_agent"


def test_the_field_is_a_bool() -> None:
    with pytest.raises(SpecError, match="guest_agent"):
        DomainSpec(name="a", kernel="/k", guest_agent="yes")  # type: ignore[arg-type]


def test_spec_file_spelling() -> None:
    from hvlib import specfile

    sf = specfile.loads("name: a\nvirt: qemu\nkernel: /k\nguest_agent: true\n")
    assert sf.domains[0].spec.guest_agent is True
    with pytest.raises(SpecError, match=r"<string>:4: guest_agent"):
        specfile.loads("name: a\nvirt: qemu\nkernel: /k\nguest_agent: 1\n")
    with pytest.raises(SpecError, match=r"<string>:3: guest_agent"):
        specfile.loads("name: a\ninit: [/sbin/init]\nguest_agent: true\nvirt: lxc\n")


def test_another_channel_is_left_alone() -> None:
    from hvlib.model.plan import merge

    current = render_tree(replace(SPEC, guest_agent=False))
    other = etree.SubElement(current.devices, "channel", type="spicevmc")
    etree.SubElement(other, "target", type="virtio", name="com.redhat.spice.0")
    merge(current, SPEC)
    assert [c.target_name for c in current.channels] == ["com.redhat.spice.0", AGENT_CHANNEL]
    merge(current, replace(SPEC, guest_agent=False))
    assert [c.target_name for c in current.channels] == ["com.redhat.spice.0"]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Host, CountingLibvirt]]:
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    with hvlib.connect("test:///default", poll_interval=None) as host:
        yield host, proxy


def test_ensure_owns_it(counted: tuple[Host, CountingLibvirt], unique: str) -> None:
    host, proxy = counted
    plain = replace(SPEC, name=unique, uuid=None, nics=[], guest_agent=False)
    host.domains.ensure(plain, state=State.SHUT_OFF)
    wanted = replace(plain, guest_agent=True)
    res = host.domains.ensure(wanted, state=State.SHUT_OFF)
    assert [(c.field, c.before, c.after, c.how) for c in res.changes] == [
        ("guest_agent", False, True, ChangeHow.NEXT_BOOT)
    ]
    assert has_agent(host.domains.get(unique).xml_doc(inactive=True))
    proxy.calls.clear()
    again = host.domains.ensure(wanted, state=State.SHUT_OFF)
    assert not again.changed and again.pending == [], again.changes
    assert proxy.calls.writes() == {}
    running = host.domains.ensure(wanted)
    assert [c.field for c in running.changes] == ["state"]
    off = host.domains.ensure(plain)
    assert [(c.field, c.how) for c in off.pending] == [("guest_agent", ChangeHow.RESTART)]
    host.domains.ensure(plain, state=State.ABSENT)


def test_agent_loopback_is_no_address() -> None:
    from hvlib.model.addresses import read

    raw = {  # what libvirt returns from the guest agent of the Debian test VM
        "lo": {
            "hwaddr": "00:00:00:00:00:00",
            "addrs": [
                {"type": 0, "addr": "127.0.0.1", "prefix": 8},
                {"type": 1, "addr": "::1", "prefix": 128},
            ],
        },
        "eth0": {
            "hwaddr": "52:54:00:de:b1:01",
            "addrs": [{"type": 0, "addr": "192.168.122.50", "prefix": 24}],
        },
    }
    found = read(raw)
    assert list(found) == ["52:54:00:de:b1:01"]
    assert [str(a) for a in found["52:54:00:de:b1:01"]] == ["192.168.122.50/24"]
    assert read({"lo": raw["lo"]}) == {}
    assert read({"eth0": {"hwaddr": "52:54:00:00:00:02", "addrs": None}}) == {
        "52:54:00:00:00:02": []
    }
