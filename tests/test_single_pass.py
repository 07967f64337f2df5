"""One pass from spec to libvirt (issue 17): ``Domains.ensure`` and ``Domains.define`` fit the
spec once, run the profile checks once, render once and look up each network and pool the
spec names once per call, and hand that to the converger (which does not do it again).

Observers, not fakes: :func:`spy` wraps the real ``fit``, ``render_tree`` and
``profiles.check`` wherever hvlib's modules hold them, counting calls and forwarding each to
the real function; the libvirt look-ups are counted by ``tests/counting.py``'s proxy around
``hvlib.virt._virt.libvirt`` on the in-process test:/// driver.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import libvirt
import pytest

import hvlib
from hvlib import Disk, DomainSpec, Nic, State, VirtType
from hvlib.model import profiles, render
from hvlib.virt import _virt, hostfit
from hvlib.virt.host import Host
from tests.counting import CountingLibvirt

LOOKUPS = ("networkLookupByName", "storagePoolLookupByName")
"""The libvirt look-ups of a spec's host references, by the name of the thing looked up."""


@dataclass
class Counted:
    """A test:/// host whose libvirt calls and hvlib's passes are counted."""

    host: Host
    proxy: CountingLibvirt
    passes: Counter[str]

    def clear(self) -> None:
        self.proxy.calls.clear()
        self.passes.clear()

    def counts(self) -> dict[str, int]:
        """The passes and the look-ups made since the last :meth:`clear`."""
        out = dict(self.passes)
        out.update({name: self.proxy.calls[name] for name in LOOKUPS})
        return out


def spy(monkeypatch: pytest.MonkeyPatch, real: Callable[..., Any], passes: Counter[str]) -> None:
    """Replace ``real`` by a counting wrapper in every hvlib module that holds it (as an
    attribute of its own module or imported by name), forwarding every call to ``real``."""
    key = real.__name__ if real is not profiles.check else "profiles.check"

    def counted(*args: Any, **kwargs: Any) -> Any:
        passes[key] += 1
        return real(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if module is None or not (name == "hvlib" or name.startswith("hvlib.")):
            continue
        for attr, value in list(vars(module).items()):
            if value is real:
                monkeypatch.setattr(module, attr, counted)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counted]:
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    passes: Counter[str] = Counter()
    for real in (hostfit.fit, render.render_tree, profiles.check):
        spy(monkeypatch, real, passes)
    with hvlib.connect("test:///default", poll_interval=None) as host:
        yield Counted(host, proxy, passes)


@pytest.fixture
def volumes(counted: Counted, unique: str) -> Iterator[tuple[str, str]]:
    """Two raw volumes in test:///'s ``default-pool``."""
    host = counted.host
    names = (f"{unique}-a.img", f"{unique}-b.img")
    made = [host.volumes.ensure("default-pool", n, size_mib=1, format="raw") for n in names]
    yield names
    for result in made:
        if result.volume is not None:
            result.volume.delete()


def vm(name: str, vols: tuple[str, str], **kw: Any) -> DomainSpec:
    """A guest naming one network (twice) and one pool (twice: one disk with a format, one
    read in its volume's own format, which needs the volume looked up)."""
    base: dict[str, Any] = {
        "name": name,
        "virt": VirtType.KVM,
        "kernel": "/boot/vmlinuz",
        "memory_mib": 256,
        "max_memory_mib": 512,
        "nics": [Nic.network("default"), Nic.network("default")],
        "disks": [
            Disk.volume("default-pool", vols[0], format="raw"),
            Disk.volume("default-pool", vols[1]),
        ],
    }
    base.update(kw)
    return DomainSpec(**base)


ONCE = {
    "fit": 1,
    "render_tree": 1,
    "profiles.check": 1,
    "networkLookupByName": 1,
    "storagePoolLookupByName": 1,
}


@pytest.mark.parametrize("state", [State.RUNNING, State.SHUT_OFF])
def test_a_create_ensure_fits_checks_renders_and_looks_up_once(
    counted: Counted, volumes: tuple[str, str], unique: str, state: State
) -> None:
    host = counted.host
    counted.clear()
    result = host.domains.ensure(vm(unique, volumes), state)
    assert result.changed and result.domain is not None
    counts = counted.counts()
    assert counts == ONCE, f"{counts}"
    assert result.domain.state is state
    host.domains.ensure(vm(unique, volumes), State.ABSENT)


def test_a_create_check_fits_checks_renders_and_looks_up_once(
    counted: Counted, volumes: tuple[str, str], unique: str
) -> None:
    counted.clear()
    result = counted.host.domains.ensure(vm(unique, volumes), check=True)
    assert result.changed and result.domain is None
    counts = counted.counts()
    assert counts == ONCE, f"{counts}"
    assert result.after_xml


def test_define_fits_checks_renders_and_looks_up_once(
    counted: Counted, volumes: tuple[str, str], unique: str
) -> None:
    counted.clear()
    dom = counted.host.domains.define(vm(unique, volumes))
    counts = counted.counts()
    assert counts == ONCE, f"{counts}"
    dom.undefine()


def test_a_no_change_ensure_renders_at_most_once(
    counted: Counted, volumes: tuple[str, str], unique: str
) -> None:
    host = counted.host
    host.domains.ensure(vm(unique, volumes))
    counted.clear()
    again = host.domains.ensure(vm(unique, volumes))
    assert not again.changed, again.changes
    counts = counted.counts()
    assert counts.pop("render_tree", 0) <= 1, counted.counts()
    assert counts == {k: v for k, v in ONCE.items() if k != "render_tree"}, f"{counted.counts()}"
    host.domains.ensure(vm(unique, volumes), State.ABSENT)


def test_a_memory_change_of_a_shut_off_domain_renders_at_most_once(
    counted: Counted, volumes: tuple[str, str], unique: str
) -> None:
    host = counted.host
    host.domains.ensure(vm(unique, volumes), State.SHUT_OFF)
    counted.clear()
    bigger = host.domains.ensure(replace(vm(unique, volumes), memory_mib=384), State.SHUT_OFF)
    assert [c.field for c in bigger.changes] == ["memory_mib"], bigger.changes
    counts = counted.counts()
    assert counts.pop("render_tree", 0) <= 1, counted.counts()
    assert counts == {k: v for k, v in ONCE.items() if k != "render_tree"}, f"{counted.counts()}"
    dom = host.domains.get(unique)
    assert dom.xml_doc().current_memory_kib == 384 * 1024
    host.domains.ensure(vm(unique, volumes), State.ABSENT)


def test_a_recreate_renders_once(counted: Counted, volumes: tuple[str, str], unique: str) -> None:
    host = counted.host
    host.domains.ensure(vm(unique, volumes), State.SHUT_OFF)
    counted.clear()
    spec = vm(unique, volumes, virt=VirtType.QEMU)
    result = host.domains.ensure(spec, State.SHUT_OFF, allow_recreate=True)
    assert result.changed and result.domain is not None
    assert result.domain.virt is VirtType.QEMU
    counts = counted.counts()
    assert counts == ONCE, f"{counts}"
    host.domains.ensure(spec, State.ABSENT)


def test_the_spies_see_the_passes(counted: Counted) -> None:
    """The wrappers are in place (a count of 0 above would otherwise prove nothing)."""
    counted.clear()
    hvlib.render(DomainSpec(name="spied", virt=VirtType.QEMU, kernel="/boot/vmlinuz"))
    assert counted.passes == Counter({"render_tree": 1, "profiles.check": 1})


def test_check_host_refs_takes_names_the_caller_makes_first(counted: Counted, unique: str) -> None:
    """``hvlib up`` checks a domain's references before it makes the networks, pools and
    volumes its files declare: those count as existing (and are not looked up)."""
    spec = DomainSpec(
        name=unique,
        virt=VirtType.QEMU,
        kernel="/k",
        nics=[Nic.network(f"{unique}-net")],
        disks=[Disk.volume(f"{unique}-pool", "v"), Disk.volume("default-pool", f"{unique}-v")],
    )
    domains = counted.host.domains
    with pytest.raises(hvlib.SpecError) as info:
        domains.check_host_refs(spec)
    assert info.value.field == "nics[0].network"
    with pytest.raises(hvlib.SpecError) as info:
        domains.check_host_refs(spec, networks=[f"{unique}-net"])
    assert info.value.field == "disks[0].pool"
    with pytest.raises(hvlib.SpecError) as info:
        domains.check_host_refs(spec, networks=[f"{unique}-net"], pools={f"{unique}-pool"})
    assert info.value.field == "disks[1].volume"
    counted.clear()
    domains.check_host_refs(
        spec,
        networks=[f"{unique}-net"],
        pools={f"{unique}-pool"},
        volumes={("default-pool", f"{unique}-v")},
    )
    assert counted.counts()["storagePoolLookupByName"] == 1  # default-pool, not the declared
    assert counted.counts()["networkLookupByName"] == 0


@pytest.mark.parametrize(
    ("option", "value"),
    [("networks", "default"), ("pools", [1]), ("volumes", [("a", "b", "c")]), ("volumes", 3)],
)
def test_check_host_refs_checks_its_options(counted: Counted, option: str, value: object) -> None:
    spec = DomainSpec(name="refs", virt=VirtType.QEMU, kernel="/k")
    with pytest.raises(hvlib.SpecError) as info:
        counted.host.domains.check_host_refs(spec, **{option: value})  # type: ignore[arg-type]
    assert info.value.field == option
    with pytest.raises(hvlib.SpecError) as info:
        counted.host.domains.check_host_refs("refs")  # type: ignore[arg-type]
    assert info.value.field == "spec"
