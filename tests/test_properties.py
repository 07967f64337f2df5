"""Property-based tests: any string in any spec field either is refused with a SpecError
naming the field, or renders to XML that parses back to exactly the value given. Never a
parse error, never an injected element."""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import math
import os
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import hvlib
from hvlib import (
    Cpu,
    Disk,
    Domain,
    DomainSpec,
    Filesystem,
    IdMap,
    IdRange,
    Nic,
    SpecError,
    State,
    VirtType,
    XmlEdit,
)
from hvlib.model.addresses import AddressSource
from hvlib.model.devices import DiskKind
from hvlib.model.domxml import DomainXML
from hvlib.model.netplan import DhcpHost, NetworkSpec

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


# -- issue 16 item 4: every constrained string is matched whole -------------------------------

UUID = "5b3f8f8e-6f2a-4c47-9a3e-2f5d8f0b6c11"
CONSTRAINED: dict[str, tuple[Callable[[str], object], str, str]] = {
    # label: (build with the value, a valid value, the field the SpecError must name)
    "DomainSpec.name": (lambda v: _qemu(name=v), "web-1", "name"),
    "DomainSpec.virt": (lambda v: _qemu(virt=v), "qemu", "virt"),
    "DomainSpec.uuid": (lambda v: _qemu(uuid=v), UUID, "uuid"),
    "DomainSpec.on_poweroff": (lambda v: _qemu(on_poweroff=v), "destroy", "on_poweroff"),
    "DomainSpec.on_reboot": (lambda v: _qemu(on_reboot=v), "restart", "on_reboot"),
    "DomainSpec.on_crash": (lambda v: _qemu(on_crash=v), "preserve", "on_crash"),
    "DomainSpec.machine": (lambda v: _qemu(machine=v), "q35", "machine"),
    "DomainSpec.firmware": (lambda v: _qemu(firmware=v), "bios", "firmware"),
    "Disk.kind": (lambda v: Disk(v, path="/a.img"), "file", "disk.kind"),  # type: ignore[arg-type]
    "Disk.device": (lambda v: Disk.volume("p", "v", device=v), "cdrom", "disk.device"),
    "Disk.target": (lambda v: Disk.file("/a.img", target=v), "vdb", "disk.target"),
    "Disk.format": (lambda v: Disk.file("/a.img", format=v), "qcow2", "disk.format"),
    "Disk.pool": (lambda v: Disk.volume(v, "v"), "default", "disk.pool"),
    "Disk.volume": (lambda v: Disk.volume("default", v), "web-1.qcow2", "disk.volume"),
    "Nic.kind": (lambda v: Nic(v, "default"), "network", "nic.kind"),
    "Nic.network": (lambda v: Nic.network(v), "default", "nic.network"),
    "Nic.bridge": (lambda v: Nic.bridge(v), "br0", "nic.bridge"),
    "Nic.mac": (lambda v: Nic.network("n", mac=v), "52:54:00:00:00:01", "nic.mac"),
    "Nic.model": (lambda v: Nic.network("n", model=v), "virtio", "nic.model"),
    "Cpu.mode": (lambda v: Cpu(mode=v), "host-model", "cpu.mode"),
    "Cpu.model": (lambda v: Cpu.model(v), "Nehalem", "cpu.model"),
    "Cpu.require": (lambda v: Cpu.model("Nehalem", require=[v]), "aes", "cpu.require"),
    "Cpu.disable": (lambda v: Cpu.host_model(disable=[v]), "sse4.2", "cpu.disable"),
    "NetworkSpec.name": (lambda v: NetworkSpec(v, "192.0.2.0/24"), "lan", "name"),
    "NetworkSpec.ipv4": (lambda v: NetworkSpec("lan", v), "192.0.2.1/24", "ipv4"),
    "NetworkSpec.mode": (lambda v: NetworkSpec("lan", "192.0.2.0/24", v), "nat", "mode"),  # type: ignore[arg-type]
    "NetworkSpec.bridge": (
        lambda v: NetworkSpec("lan", "192.0.2.0/24", bridge=v),
        "virbr7",
        "bridge",
    ),
    "DhcpHost.mac": (lambda v: DhcpHost(v, "192.0.2.5"), "52:54:00:00:00:01", "host.mac"),
    "DhcpHost.ip": (lambda v: DhcpHost("52:54:00:00:00:01", v), "192.0.2.5", "host.ip"),
    "DhcpHost.name": (lambda v: DhcpHost("52:54:00:00:00:01", "192.0.2.5", v), "web", "host.name"),
}
DECORATIONS = st.one_of(
    st.sampled_from(["\n", "\r", "\t", "\x00", "\x0b", "\x0c", "\x85", "\u2028", " ", "\r\n"]),
    st.characters(categories=["Cc", "Zs", "Zl", "Zp"]),  # every control and space character
)


def test_every_constrained_value_given_is_valid() -> None:
    for label, (build, valid, _field) in CONSTRAINED.items():
        build(valid)  # the table's valid values are valid: the property below means something
        assert label


@settings(max_examples=600)
@given(st.sampled_from(sorted(CONSTRAINED)), DECORATIONS, st.sampled_from(["append", "prepend"]))
def test_a_constrained_value_with_whitespace_or_a_control_character_is_refused(
    label: str, decoration: str, where: str
) -> None:
    """A trailing newline once passed ``$`` and libvirt then normalised the value, so an
    ensure never converged: every constrained string is matched whole."""
    build, valid, fieldname = CONSTRAINED[label]
    value = valid + decoration if where == "append" else decoration + valid
    with pytest.raises(SpecError) as info:
        build(value)
    assert info.value.field == fieldname, (label, value, info.value)


# -- issue 16 item 6: every field of every spec class refuses a value of the wrong type ---------

_SAMPLES: list[object] = [
    Disk.file("/a.img"),
    Nic.network("default"),
    Filesystem.mount("/srv/r"),
    Cpu(),
    IdRange(0, 100000, 65536),
    IdMap.shifted(100000),
    XmlEdit.set("./on_crash", "preserve"),
    VirtType.QEMU,
    DiskKind.FILE,
    State.RUNNING,
    PurePosixPath("/a.img"),
    object(),
    b"/a.img",
    {"a": 1},
    {1, 2},
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["/a.img", "qemu", "file", "default", "aes", "destroy"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.sampled_from(_SAMPLES),
    st.lists(st.sampled_from(_SAMPLES), min_size=1, max_size=2),
)
_BASES: dict[type, tuple[dict[str, Any], str]] = {
    # a valid instance's keyword arguments, and the prefix of its fields' SpecError names
    DomainSpec: ({"name": "p", "virt": VirtType.QEMU, "kernel": "/k"}, ""),
    Disk: ({"kind": DiskKind.FILE, "path": "/a.img"}, "disk."),
    Nic: ({"kind": "network", "source": "default"}, "nic."),
    Filesystem: ({"source": "/srv/r", "target": "/"}, "filesystem."),
    Cpu: ({}, "cpu."),
    IdMap: ({"uids": [IdRange(0, 1, 1)], "gids": [IdRange(0, 1, 1)]}, "idmap."),
    XmlEdit: ({"xpath": "./on_crash", "value": "preserve"}, "xml_edits."),
    IdRange: ({"start": 0, "target": 1, "count": 1}, "idmap.uids[0]."),
}
_BUILD: dict[type, Callable[[dict[str, Any]], object]] = {
    # an IdRange is checked where it is used: in an IdMap, naming its place there
    IdRange: lambda kw: IdMap(uids=[IdRange(**kw)], gids=[IdRange(0, 1, 1)]),
}
_RENAMED = {(Disk, "volume_name"): "volume", (Nic, "source"): "network", (Cpu, "name"): "model"}
_PATHS = {(DomainSpec, "kernel"), (DomainSpec, "initrd"), (Disk, "path")}
_PATHS |= {(Filesystem, "source"), (Filesystem, "target")}
_FROM_MAPPINGS = {(DomainSpec, "cpu"), (DomainSpec, "idmap")}
SPEC_FIELDS = [(cls, f.name) for cls in _BASES for f in dataclasses.fields(cls)]


def _fits(hint: Any, value: object, path: bool = False) -> bool:
    """Whether ``value`` is of the annotated type, by the rules of hvlib.model.checks written out
    again: bools are not ints, enums take their value strings, lists are lists or tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return value is None or any(_fits(a, value, path) for a in args if a is not type(None))
    if origin is collections.abc.Sequence:
        return isinstance(value, (list, tuple)) and all(_fits(args[0], v) for v in value)
    if origin is collections.abc.Callable:
        return callable(value)
    if hint is Any:
        return True
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in [m.value for m in hint]
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str and path:
        return isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str)
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise AssertionError(f"the test knows no wrong values for {hint!r}: add them")


def test_the_field_list_covers_every_spec_class_and_field() -> None:
    assert len(SPEC_FIELDS) >= 50
    for cls, name in SPEC_FIELDS:
        _fits(typing.get_type_hints(cls)[name], None)  # every annotation kind is known here


@settings(max_examples=1500)
@given(st.sampled_from(SPEC_FIELDS), ANY_VALUE)
def test_a_value_of_the_wrong_type_in_any_field_is_a_spec_error_naming_it(
    where: tuple[type, str], value: object
) -> None:
    """``DomainSpec(init="/sbin/init")`` once became one argument per character, and
    ``disks=Disk(...)`` an AttributeError: every field is checked against its annotation."""
    cls, name = where
    hint = typing.get_type_hints(cls)[name]
    assume(not _fits(hint, value, (cls, name) in _PATHS))
    assume(not ((cls, name) in _FROM_MAPPINGS and isinstance(value, dict)))
    kwargs, prefix = _BASES[cls]
    label = prefix + _RENAMED.get((cls, name), name)
    build = _BUILD.get(cls, lambda kw: cls(**kw))
    with pytest.raises(SpecError) as info:
        build({**kwargs, name: value})
    got = info.value.field
    assert got == label or got.startswith((label + "[", label + ".")), (label, value, got)


# -- issue 16 item 8: every timeout and interval of every public Domain method ---------------

_SECONDS_ARGS: list[tuple[str, str, bool, bool]] = [
    # (method, argument, > 0 (not >= 0), None allowed)
    ("shutdown", "timeout", False, False),
    ("shutdown", "resend_interval", True, False),
    ("wait_for", "timeout", False, False),
    ("wait_for", "poll_interval", True, True),
    ("wait_for_address", "timeout", False, False),
    ("wait_for_address", "interval", True, False),
    ("wait_for_console", "timeout", False, False),
    ("wait_ready", "timeout", False, False),
    ("wait_ready", "interval", True, False),
    ("exec", "timeout", True, True),
    ("migrate", "timeout", True, True),
    ("migrate", "poll_interval", True, False),
]
_FIXED: dict[str, dict[str, Any]] = {
    # arguments that make a call with valid seconds return at once on a shut-off domain
    "wait_for": {"state": State.SHUT_OFF},
    "wait_for_console": {"pattern": "x"},
    "wait_for_address": {"source": AddressSource.LEASE},  # raises at once: not running
    "exec": {"command": ["true"]},
}
SECONDS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([math.inf, -math.inf, math.nan, -1, -1e-9, 0, 0.0, 1e-9, 31536000, 31536001]),
    st.sampled_from([True, False, None, "5", b"5", [5], object()]),
)


def _seconds_ok(value: object, positive: bool, optional: bool) -> bool:
    if value is None:
        return optional
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    low = value > 0 if positive else value >= 0
    return math.isfinite(value) and low and value <= 365 * 86400


@pytest.fixture(scope="module")
def stopped() -> Iterator[Domain]:
    with hvlib.connect("test:///default", poll_interval=None) as h:
        dest = hvlib.connect("test:///default", poll_interval=None)
        dom = h.domains.define(_qemu(name="seconds-prop"))
        dom.dest = dest  # type: ignore[attr-defined]
        try:
            yield dom
        finally:
            dom.undefine()
            dest.close()


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(_SECONDS_ARGS), SECONDS)
def test_every_timeout_and_interval_is_finite_and_in_range(
    stopped: Domain, arg: tuple[str, str, bool, bool], value: object
) -> None:
    """``shutdown(timeout=inf)`` once overflowed and ``nan`` passed: every seconds argument
    of the Domain's methods goes through one check (finite, >= 0 or > 0, at most a year,
    bools are not numbers), before the call does anything."""
    method, name, positive, optional = arg
    call = getattr(stopped, method)
    args = {**_FIXED.get(method, {}), name: value}
    if method == "migrate":
        args["dest"] = stopped.dest  # type: ignore[attr-defined]
    if _seconds_ok(value, positive, optional):
        try:
            call(**args)
        except SpecError as e:  # valid seconds: only another argument may be refused
            assert e.field != name, (method, name, value, e)
        except hvlib.HvlibError:
            pass  # the call itself failed on a stopped domain (not running, no console)
        return
    with pytest.raises(SpecError) as info:
        call(**args)
    assert info.value.field == name, (method, name, value, info.value)
