"""Property-based tests: any string in any spec field either is refused with a SpecError
naming the field, or renders to XML that parses back to exactly the value given. Never a
parse error, never an injected element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, Nic, SpecError, VirtType
from hvlib.domxml import DomainXML

NASTY = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "<a/>",
            "]]>",
            "&amp;",
            "'\"",
            "\x00",
            "\x1b[0m",
            "a" * 5000,
            "é/ü",
            "<!ENTITY x SYSTEM 'file:///etc/passwd'>",
            "&x;",
            "\ud800",
            "\ufffe",
        ]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40).map(lambda s: "/" + s),
)


def _field_from(make: Callable[[str], DomainSpec], value: str) -> tuple[DomainSpec | None, str]:
    try:
        return make(value), ""
    except SpecError as e:
        assert e.field, "a SpecError must name its field"
        return None, e.field


def _check(
    make: Callable[[str], DomainSpec],
    read: Callable[[DomainXML], Any],
    value: str,
    expected: Callable[[str], Any] = lambda v: v,
) -> None:
    spec, _ = _field_from(make, value)
    if spec is None:
        return
    doc = DomainXML.from_xml(hvlib.render(spec))
    assert read(doc) == expected(value)
    allowed = {
        "domain",
        "name",
        "uuid",
        "metadata",
        "memory",
        "currentMemory",
        "vcpu",
        "os",
        "features",
        "clock",
        "on_poweroff",
        "on_reboot",
        "on_crash",
        "devices",
        "description",
    }
    assert {el.tag for el in doc.el if isinstance(el.tag, str)} <= allowed


def _qemu(**kw: Any) -> DomainSpec:
    return DomainSpec(**{"name": "p", "virt": VirtType.QEMU, "kernel": "/k", **kw})


def _lxc(**kw: Any) -> DomainSpec:
    return DomainSpec(
        **{
            "name": "p",
            "virt": VirtType.LXC,
            "init": ["/sbin/init"],
            "filesystems": [Filesystem.mount("/srv/r")],
            **kw,
        }
    )


@settings(max_examples=150)
@given(NASTY)
def test_name(value: str) -> None:
    _check(lambda v: _qemu(name=v), lambda d: d.name, value)


@settings(max_examples=150)
@given(NASTY)
def test_cmdline(value: str) -> None:
    _check(lambda v: _qemu(cmdline=v), lambda d: d.cmdline or "", value)


@settings(max_examples=150)
@given(NASTY)
def test_kernel_path(value: str) -> None:
    _check(lambda v: _qemu(kernel=v), lambda d: d.kernel, value)


@settings(max_examples=150)
@given(NASTY)
def test_disk_path(value: str) -> None:
    def make(v: str) -> DomainSpec:
        return _qemu(disks=[Disk.file(v)])

    _check(make, lambda d: d.disks[0].source_file, value)


@settings(max_examples=100)
@given(NASTY)
def test_description(value: str) -> None:
    _check(lambda v: _qemu(description=v), lambda d: d.description or "", value)


@settings(max_examples=100)
@given(NASTY, NASTY)
def test_init_args(init: str, arg: str) -> None:
    def make(v: str) -> DomainSpec:
        return _lxc(init=["/sbin/" + init.lstrip("/"), v])

    _check(make, lambda d: d.initargs, arg, lambda v: [v])


@settings(max_examples=100)
@given(NASTY)
def test_filesystem_source(value: str) -> None:
    _check(
        lambda v: _lxc(filesystems=[Filesystem.mount(v)]),
        lambda d: d.filesystems[0].source_dir,
        value,
    )


@settings(max_examples=100)
@given(NASTY)
def test_network_name(value: str) -> None:
    _check(lambda v: _qemu(nics=[Nic.network(v)]), lambda d: d.interfaces[0].source_network, value)


@settings(max_examples=100)
@given(NASTY, NASTY)
def test_volume_pool_and_name(pool: str, name: str) -> None:
    def make(v: str) -> DomainSpec:
        return _qemu(disks=[Disk.volume(v, name)])

    _check(
        make,
        lambda d: (d.disks[0].source_pool, d.disks[0].source_volume),
        pool,
        lambda v: (v, name),
    )
