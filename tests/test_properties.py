"""Property-based tests: any string in any spec field either is refused with a SpecError
naming the field, or renders to XML that parses back to exactly the value given. Never a
parse error, never an injected element."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import hvlib
from hvlib import Disk, DomainSpec, Filesystem, IdMap, IdRange, Nic, SpecError, VirtType
from hvlib.model.domxml import DomainXML

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


# -- user-namespace id maps: hvlib accepts exactly the maps the kernel and libvirt take ------

_EDGES = [0, 1, 999, 1000, 65535, 65536, 100000, 2**31, 2**32 - 2, 2**32 - 1, 2**32, -1]
_ID = st.one_of(st.sampled_from(_EDGES), st.integers(0, 3000), st.booleans())
_RANGES = st.lists(st.builds(IdRange, _ID, _ID, _ID), max_size=4)


@st.composite
def _valid_ranges(draw: st.DrawFn) -> list[IdRange]:
    """Disjoint ranges on both sides, one of them for container id 0, in any order."""
    counts = draw(st.lists(st.integers(1, 70000), min_size=1, max_size=6))
    gaps = draw(st.lists(st.integers(0, 500), min_size=len(counts), max_size=len(counts)))
    starts = [sum(counts[:i]) + sum(gaps[1 : i + 1]) for i in range(len(counts))]
    order = draw(st.permutations(range(len(counts))))
    base = draw(st.integers(0, 2**31))
    targets, at = [0] * len(counts), base
    for i in order:
        targets[i], at = at, at + counts[i] + gaps[i]
    ranges = [IdRange(s, t, c) for s, t, c in zip(starts, targets, counts, strict=True)]
    return draw(st.permutations(ranges))


def _kernel_takes(ranges: list[IdRange]) -> bool:
    """The rules written out again, independently: ints (not bools), 1..340 ranges, each
    within 32 bits with a count of at least 1, no two overlapping on either side, 0 mapped."""
    if not 1 <= len(ranges) <= 340:
        return False
    for r in ranges:
        values = (r.start, r.target, r.count)
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            return False
        if r.start < 0 or r.target < 0 or r.count < 1:
            return False
        if r.start + r.count > 2**32 - 1 or r.target + r.count > 2**32 - 1:
            return False
    for a in range(len(ranges)):
        for b in range(a + 1, len(ranges)):
            x, y = ranges[a], ranges[b]
            if x.start < y.start + y.count and y.start < x.start + x.count:
                return False
            if x.target < y.target + y.count and y.target < x.target + x.count:
                return False
    return any(r.start == 0 for r in ranges)


def _check_idmap(uids: list[IdRange], gids: list[IdRange]) -> None:
    try:
        idmap = IdMap(uids=uids, gids=gids)
    except SpecError as e:
        assert e.field.startswith(("idmap.uids", "idmap.gids")), e.field
        assert not (_kernel_takes(uids) and _kernel_takes(gids)), e
        return
    assert _kernel_takes(uids) and _kernel_takes(gids)
    xml = hvlib.render(_lxc(idmap=idmap))
    hvlib.validate(xml)
    back = DomainXML.from_xml(xml).idmap
    assert back == {
        "uid": tuple(sorted((r.start, r.target, r.count) for r in uids)),
        "gid": tuple(sorted((r.start, r.target, r.count) for r in gids)),
    }


@settings(max_examples=300)
@given(_RANGES, _RANGES)
def test_idmap_refused_exactly_when_the_kernel_would(
    uids: list[IdRange], gids: list[IdRange]
) -> None:
    _check_idmap(uids, gids)


@settings(max_examples=150)
@given(_valid_ranges(), _valid_ranges())
def test_idmap_renders_back_to_exactly_the_ranges_given(
    uids: list[IdRange], gids: list[IdRange]
) -> None:
    assert _kernel_takes(uids) and _kernel_takes(gids)
    _check_idmap(uids, gids)
