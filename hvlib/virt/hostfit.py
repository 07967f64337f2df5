"""A spec fitted to one host, before anything is defined: acceleration, CPU, machine, firmware.

:func:`fit` answers "how will this host run this spec, and can it?":

- a ``kvm`` spec on a host whose acceleration report (:mod:`hvlib.virt.accel`) says KVM does not
  work raises :class:`hvlib.Unsupported` quoting the report, unless the host was opened with
  ``allow_emulation=True`` (or ``HVLIB_ALLOW_EMULATION=1``): then the fitted spec is a ``qemu``
  one (software emulation), which is what gets defined, what ``dom.virt`` reports and what
  ``ensure`` compares against, so a second ``ensure`` finds nothing to change;
- the CPU (mode, model, features, nested virtualization), machine type, firmware and vcpu
  count are checked against the host's domain capabilities (:mod:`hvlib.model.domcaps`) and, for
  features, libvirt's own CPU comparison; a model the hypervisor cannot fully provide passes
  with a logged warning naming what it lacks;
- ``nested=True`` under KVM gets the host's extension (vmx or svm, by the host CPU's vendor)
  required on a named or host-model CPU, or :class:`hvlib.Unsupported` where the host has none;
- a volume disk without a ``format`` gets one (:func:`volume_formats`): the one the domain's
  current definition gives that volume, else the volume's own as its pool reports it.

On libvirt's test driver (no domain capabilities) these checks are skipped, and the notes say
"not checked on the test driver". Libvirt is called only through :meth:`hvlib.Host.call`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from hvlib.enums import VirtType
from hvlib.errors import DomainNotFound, LibvirtError, SpecError, Unsupported
from hvlib.model import profiles
from hvlib.model.cpu import CpuRequest, cpu_request, cpu_xml
from hvlib.model.devices import DISK_FORMATS, Disk, DiskKind
from hvlib.model.domcaps import (
    Compare,
    DomainCapabilities,
    HostCpu,
    blockers_in,
    check_cpu,
    check_platform,
    unknown_name_in,
)
from hvlib.model.domxml import DomainXML
from hvlib.model.profiles import VIRT_EXTENSIONS, Profile
from hvlib.model.spec import DomainSpec
from hvlib.model.storxml import VolumeXML
from hvlib.virt import _virt, accel
from hvlib.virt.hostrefs import HostRefs, volume_rule

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

log = logging.getLogger("hvlib")

NOT_CHECKED_TEST = "cpu, machine and firmware: not checked on the test driver"
_caps_cache: dict[tuple[str, int, str, str], DomainCapabilities] = {}
_warned: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Fit:
    """A spec as one host will run it."""

    spec: DomainSpec
    """What to define: the caller's spec, or its ``qemu`` twin under allowed emulation, with
    the host's virtualization extension added for nested KVM and every volume disk's format
    filled in."""
    profile: Profile
    """What :func:`hvlib.model.profiles.check` returned for :attr:`spec` (render with it)."""
    notes: tuple[str, ...] = ()
    """Warnings (also logged) and what could not be checked."""
    emulated: bool = False
    """True when a ``kvm`` spec runs under software emulation (``allow_emulation``)."""


def fit(host: HostLike, spec: DomainSpec, *, refs: HostRefs | None = None) -> Fit:
    """Fit ``spec`` to ``host``; see the module's description. The profile checks run once;
    a volume is looked up through ``refs`` (a fresh :class:`HostRefs` when None), so a
    caller that checks the spec's host references next looks nothing up twice.

    Raises:
        SpecError: a field the host cannot honour (an unknown CPU model or feature, a
            required feature it cannot provide, an unknown machine, too many vcpus), or a
            volume disk without a format whose pool or volume does not exist here, or whose
            volume is in a format hvlib does not read (naming ``disks[i]``).
        Unsupported: the spec's type cannot do it (see :func:`hvlib.model.profiles.check`), KVM
            does not work here and emulation was not allowed (the report is quoted), the CPU
            mode is unsupported, no (secure-boot) UEFI firmware, no nested virtualization.
        HostError: the connection failed.
    """
    profile = profiles.check(spec)
    notes: list[str] = []
    accelerated, profile = _accelerate(host, spec, profile, notes)
    fitted = volume_formats(host, accelerated, refs=refs)
    emulated = fitted.virt is not spec.virt
    if _wants_checks(fitted):
        if host.is_test_driver:
            notes.append(NOT_CHECKED_TEST)
            log.info("%s: %s", spec.name, NOT_CHECKED_TEST)
        else:
            fitted = _check_capabilities(host, fitted, notes)
    return Fit(fitted, profile, tuple(notes), emulated)


def _wants_checks(spec: DomainSpec) -> bool:
    platform = profiles.profile_for(spec.virt).platform
    asked = spec.cpu is not None or spec.nested or spec.machine is not None
    return platform and (asked or spec.firmware != "bios")


# -- acceleration -------------------------------------------------------------------------------


def _accelerate(
    host: HostLike, spec: DomainSpec, profile: Profile, notes: list[str]
) -> tuple[DomainSpec, Profile]:
    """The spec with the virt type this host runs it as (kvm, or qemu under emulation), and
    its profile (``profile`` is the kvm one)."""
    if spec.virt is not VirtType.KVM or host.is_test_driver:
        return spec, profile
    report = accel.acceleration(host)
    if report.works is None:
        notes.append(f"kvm: {report.summary}")
        return spec, profile
    if report.works:
        return spec, profile
    if not host.allow_emulation:
        raise Unsupported(
            f"{spec.name}: a kvm guest cannot run on {host.uri}: {report.summary} (pass "
            f"allow_emulation=True to hvlib.connect() or set {accel.ENV_ALLOW_EMULATION}=1 "
            "to run kvm specs under software emulation instead)",
            name=spec.name,
            field="virt",
        )
    emulated = replace(spec, virt=VirtType.QEMU)
    try:
        profile = profiles.check(emulated)
    except Unsupported as e:
        rule = f"{spec.name}: runs as qemu here (KVM does not work): {e}"
        raise Unsupported(rule, name=spec.name, field=e.field) from None
    note = f"runs as qemu (software emulation, allow_emulation): {report.summary}"
    notes.append(note)
    _warn_once(host, spec, note)
    return emulated, profile


# -- volume disk formats ------------------------------------------------------------------------

VOLUME_FORMATS = {"qcow2": "qcow2", "raw": "raw", "iso": "raw", "none": "raw", "": "raw"}
"""The disk format a volume's own format (as its pool reports it) is read as. ``iso`` (a
probed raw file holding an ISO 9660 image) and ``none`` or no format (a block device, an
LVM volume) are raw bytes; any other format (vmdk, vdi, ...) is refused."""


def volume_formats(host: HostLike, spec: DomainSpec, *, refs: HostRefs | None = None) -> DomainSpec:
    """``spec`` with a format on every volume disk that has none.

    A domain of that name already defined here keeps the format its definition gives the
    volume (so an ensure never changes how an existing disk is read: a guest that can write
    a raw volume could make its pool report it as a qcow2 overlay of a host file); a new
    one gets the volume's own format, read from its pool (:data:`VOLUME_FORMATS`). The
    domain's definition is read once (only when such a disk exists), each volume once
    (through ``refs``: a fresh :class:`HostRefs` when None).

    Raises:
        SpecError: naming ``disks[i].pool`` or ``disks[i].volume`` (it does not exist here),
            or ``disks[i].format`` (the volume's format is not one hvlib reads).
        HostError: the connection failed.
    """
    wanted = [i for i, d in enumerate(spec.disks) if d.kind is DiskKind.VOLUME and not d.format]
    if not wanted:
        return spec
    known = _defined_formats(host, spec.name)
    refs = HostRefs(host) if refs is None else refs
    disks = list(spec.disks)
    for i in wanted:
        disk = disks[i]
        key = (disk.pool, disk.volume_name)
        if key not in known:
            known[key] = _volume_format(host, refs, i, disk)
        disks[i] = replace(disk, format=known[key])
    return replace(spec, disks=tuple(disks))


def _defined_formats(host: HostLike, name: str) -> dict[tuple[str | None, str | None], str]:
    """(pool, volume) -> format of each volume disk in the persistent definition of the
    domain ``name`` ({} when there is none)."""
    flags = _virt.C.VIR_DOMAIN_XML_INACTIVE
    try:
        xml = host.call(lambda c: c.lookupByName(name).XMLDesc(flags), name=name, safe=True)
    except DomainNotFound:
        return {}
    return {
        (d.source_pool, d.source_volume): d.driver_type
        for d in DomainXML.from_xml(xml).disks
        if d.kind == "volume" and d.driver_type in DISK_FORMATS
    }


def _volume_format(host: HostLike, refs: HostRefs, index: int, disk: Disk) -> str:
    """The format ``disk``'s volume is read as (its pool and volume looked up in ``refs``)."""
    pool, name = disk.pool or "", disk.volume_name or ""
    volume = refs.volume(f"disks[{index}].volume", pool, name, rule=volume_rule(pool))
    xml = host.call(lambda _c: volume.XMLDesc(0), safe=True)
    own = VolumeXML.from_xml(xml).target_format or ""
    if own not in VOLUME_FORMATS:
        raise SpecError(
            f"disks[{index}].format",
            f"volume {pool}/{name} is {own}; hvlib reads volumes as raw or qcow2 "
            "(convert it, or give the disk a format to read it as)",
            own,
        )
    return VOLUME_FORMATS[own]


# -- domain capabilities ------------------------------------------------------------------------


def _check_capabilities(host: HostLike, spec: DomainSpec, notes: list[str]) -> DomainSpec:
    profile = profiles.for_machine(profiles.profile_for(spec.virt), spec.machine)
    caps = domain_capabilities(host, profile.domain_type, profile.machine or "pc")
    if caps is None:
        notes.append("cpu, machine and firmware: not checked (no domain capabilities)")
        return spec
    check_platform(spec, caps)
    if spec.nested and spec.virt is VirtType.KVM:
        spec = _nested_kvm(host, spec)
    request = cpu_request(spec, profile)
    if request is None:
        return spec
    nested = _nested_features(spec, request)
    warnings = check_cpu(
        request,
        caps,
        _comparer(host, caps),
        fallback=bool(spec.cpu and spec.cpu.fallback),
        nested=nested,
    )
    for warning in warnings:
        _warn_once(host, spec, warning)
    notes.extend(warnings)
    return spec


def _warn_once(host: HostLike, spec: DomainSpec, text: str) -> None:
    """Log ``text`` as a warning the first time for this host and domain, then at debug level
    (an ``ensure`` run again and again would repeat it)."""
    key = (host.uri, spec.name, text)
    level = logging.DEBUG if key in _warned else logging.WARNING
    _warned.add(key)
    log.log(level, "%s: %s", spec.name, text)


def domain_capabilities(
    host: HostLike, domain_type: str, machine: str
) -> DomainCapabilities | None:
    """The host's domain capabilities for ``domain_type`` on ``machine`` (cached per host
    connection), or None where the driver has none.

    Raises:
        SpecError: the host's hypervisor has no such machine type.
        HostError: the connection failed.
    """
    key = (host.uri, host.generation, domain_type, machine)
    if key in _caps_cache:
        return _caps_cache[key]
    try:
        text = host.call(
            lambda c: c.getDomainCapabilities(None, "x86_64", machine, domain_type, 0), safe=True
        )
    except Unsupported:
        return None
    except LibvirtError as e:
        if e.code == _virt.C.VIR_ERR_INVALID_ARG and "machine" in str(e):
            raise SpecError("machine", f"not offered by this host: {e}", machine) from None
        raise
    caps = DomainCapabilities.from_xml(text)
    _caps_cache[key] = caps
    return caps


def _comparer(host: HostLike, caps: DomainCapabilities) -> Compare:
    def compare(request: CpuRequest) -> frozenset[str]:
        return compare_cpu(host, caps, request)

    return compare


def compare_cpu(host: HostLike, caps: DomainCapabilities, request: CpuRequest) -> frozenset[str]:
    """The features of ``request`` the host's hypervisor cannot provide (libvirt's
    ``compareHypervisorCPU``).

    Raises:
        SpecError: libvirt does not know a model or feature name of the request.
        LibvirtError: another refusal (quoted).
    """
    xml = cpu_xml(request)
    flags = _virt.C.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE
    try:
        host.call(
            lambda c: c.compareHypervisorCPU(
                None, caps.arch, caps.machine, caps.domain_type, xml, flags
            ),
            safe=True,
        )
    except LibvirtError as e:
        return _compare_failed(e)
    return frozenset()


def _compare_failed(e: LibvirtError) -> frozenset[str]:
    message = str(e)
    blockers = blockers_in(message) if e.code == _virt.C.VIR_ERR_CPU_INCOMPATIBLE else None
    if blockers is not None:
        return blockers
    unknown = unknown_name_in(message)
    if unknown is not None:
        what, name = unknown
        field = "cpu.model" if what == "model" else "cpu.require"
        raise SpecError(field, f"this host does not know CPU {what} {name!r}", name) from None
    raise e


def _nested_features(spec: DomainSpec, request: CpuRequest) -> list[str]:
    if not spec.nested:
        return []
    asked = set(spec.cpu.require) if spec.cpu else set()
    return [f for f in request.require if f not in asked]


def _nested_kvm(host: HostLike, spec: DomainSpec) -> DomainSpec:
    """Nested KVM: refuse where the host has no extension or its module forbids nesting;
    require the host's extension on a named or host-model CPU."""
    cpu = HostCpu.from_capabilities(host.capabilities())
    ext = VIRT_EXTENSIONS.get(cpu.vendor or "")
    if ext is None or ext not in cpu.features:
        raise Unsupported(
            f"nested: this host's CPU ({cpu.vendor} {cpu.model}) has no "
            f"{ext or 'vmx or svm'} in libvirt's host capabilities: KVM cannot give guests "
            "hardware virtualization",
            field="nested",
        )
    if accel.is_local(host.uri):
        module = accel.nested_module()
        if module.ok is False:
            rule = f"nested: the host's KVM module does not allow it: {module.detail}"
            raise Unsupported(rule, field="nested")
    current = spec.cpu
    if current is None or current.mode == "host-passthrough" or ext in current.require:
        return spec
    return replace(spec, cpu=replace(current, require=(*current.require, ext)))
