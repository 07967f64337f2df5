"""What a host's hypervisor offers, from libvirt's domain capabilities, and the checks of a spec
against it (CPU mode, model and features, machine, firmware, vcpu count).

:class:`DomainCapabilities` and :class:`HostCpu` are parsed with lxml from the XML of
``virConnectGetDomainCapabilities`` and ``virConnectGetCapabilities``. The checks are pure: the
one question only libvirt can answer (which features of a CPU the hypervisor cannot provide)
comes in as a ``compare`` callable that :mod:`hvlib.virt.hostfit` backs with
``virConnectCompareHypervisorCPU``. No libvirt here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hvlib.errors import SpecError, Unsupported
from hvlib.model.cpu import CpuRequest
from hvlib.model.spec import DomainSpec
from hvlib.model.xmlmodel import Element, parse

Compare = Callable[[CpuRequest], frozenset[str]]
"""Features of a CPU request the hypervisor cannot provide (empty: it can run it as asked).
Raises SpecError for a model or feature name the host does not know."""

_BLOCKERS_RE = re.compile(r"does not provide required features: (?P<names>[^;\n]+)")
_UNKNOWN_RE = re.compile(r"Unknown CPU (?P<what>feature|model) (?P<name>\S+)")


@dataclass(frozen=True)
class CpuModel:
    """One named CPU model of the custom mode: may the hypervisor run it as it is?"""

    name: str
    usable: bool | None
    """False: the hypervisor lacks some of its features (libvirt's ``usable='no'``)."""
    vendor: str | None = None


@dataclass(frozen=True)
class DomainCapabilities:
    """libvirt's domain capabilities for one (virt type, machine): parsed, not interpreted."""

    domain_type: str
    machine: str
    arch: str
    max_vcpus: int | None = None
    firmware: tuple[str, ...] = ()
    """``<os><enum name='firmware'>``: the firmware kinds autoselection can pick (``efi``)."""
    secure_boot: tuple[bool, ...] = ()
    """``<loader><enum name='secure'>``: whether firmware with (True) or without secure boot
    is installed for this machine."""
    cpu_modes: dict[str, bool] = field(default_factory=dict)
    host_model: str | None = None
    models: dict[str, CpuModel] = field(default_factory=dict)

    @classmethod
    def from_xml(cls, text: str | bytes) -> DomainCapabilities:
        """Parse ``<domainCapabilities>``.

        Raises:
            ValueError: not a ``<domainCapabilities>`` document (or not well-formed XML).
        """
        root = parse(text)
        if root.tag != "domainCapabilities":
            raise ValueError(f"expected <domainCapabilities>, got <{root.tag}>")
        vcpu = root.find("vcpu")
        max_vcpus = vcpu.get("max") if vcpu is not None else None
        return cls(
            domain_type=root.findtext("domain") or "",
            machine=root.findtext("machine") or "",
            arch=root.findtext("arch") or "",
            max_vcpus=int(max_vcpus) if max_vcpus else None,
            firmware=tuple(_enum(root, "os/enum[@name='firmware']")),
            secure_boot=tuple(v == "yes" for v in _enum(root, "os/loader/enum[@name='secure']")),
            cpu_modes={
                el.get("name") or "": el.get("supported") == "yes"
                for el in root.findall("cpu/mode")
            },
            host_model=root.findtext("cpu/mode[@name='host-model']/model"),
            models=_models(root),
        )


def _enum(root: Element, path: str) -> list[str]:
    return [el.text or "" for el in root.findall(f"{path}/value")]


def _models(root: Element) -> dict[str, CpuModel]:
    out = {}
    for el in root.findall("cpu/mode[@name='custom']/model"):
        usable = el.get("usable")
        name = el.text or ""
        out[name] = CpuModel(name, None if usable is None else usable == "yes", el.get("vendor"))
    return out


@dataclass(frozen=True)
class HostCpu:
    """The host's own CPU, from ``<capabilities><host><cpu>``."""

    vendor: str | None
    model: str | None
    features: frozenset[str]

    @classmethod
    def from_capabilities(cls, text: str | bytes) -> HostCpu:
        """Parse the host CPU out of a ``<capabilities>`` document.

        Raises:
            ValueError: not a ``<capabilities>`` document with a ``<host><cpu>``.
        """
        root = parse(text)
        cpu = root.find("host/cpu")
        if root.tag != "capabilities" or cpu is None:
            raise ValueError("expected <capabilities> with <host><cpu>")
        return cls(
            vendor=cpu.findtext("vendor"),
            model=cpu.findtext("model"),
            features=frozenset(el.get("name") or "" for el in cpu.findall("feature")),
        )


def blockers_in(message: str) -> frozenset[str] | None:
    """The features named by libvirt's "Host CPU does not provide required features: a, b"
    (None when the message says something else)."""
    match = _BLOCKERS_RE.search(message)
    if match is None:
        return None
    return frozenset(n.strip() for n in match.group("names").split(",") if n.strip())


def unknown_name_in(message: str) -> tuple[str, str] | None:
    """("feature" or "model", name) from libvirt's "Unknown CPU feature X" / "... model X"."""
    match = _UNKNOWN_RE.search(message)
    return None if match is None else (match.group("what"), match.group("name"))


def check_platform(spec: DomainSpec, caps: DomainCapabilities) -> None:
    """Check the spec's vcpu count and firmware against the capabilities of its machine.

    Raises:
        SpecError: more vcpus than the machine takes.
        Unsupported: no UEFI (or no secure-boot UEFI) firmware for this machine.
    """
    want = spec.max_vcpus or spec.vcpus
    if caps.max_vcpus is not None and want > caps.max_vcpus:
        which = "max_vcpus" if spec.max_vcpus else "vcpus"
        raise SpecError(which, f"machine {caps.machine} takes at most {caps.max_vcpus}", want)
    where = f"machine {caps.machine} ({caps.domain_type})"
    if spec.firmware == "efi" and "efi" not in caps.firmware:
        raise Unsupported(
            f"firmware efi: this host has no UEFI firmware for {where} (its domain capabilities "
            "list none; on Debian the package is ovmf)",
            field="firmware",
        )
    if spec.secure_boot and True not in caps.secure_boot:
        rule = f"secure_boot: this host has no secure-boot UEFI firmware for {where}"
        raise Unsupported(rule, field="secure_boot")


def check_cpu(
    request: CpuRequest,
    caps: DomainCapabilities,
    compare: Compare,
    *,
    fallback: bool = False,
    nested: Iterable[str] = (),
) -> list[str]:
    """Check a CPU request against the hypervisor; return warnings (each to be logged).

    ``nested`` are the features added for nested virtualization. A model that is not fully
    usable (software emulation lacks some of its features) is allowed with a warning naming
    what it lacks; libvirt then starts the guest without those features.

    Raises:
        Unsupported: the mode is not supported here (host-passthrough under TCG), or a
            feature nested virtualization needs is missing.
        SpecError: a model the host does not know (``cpu.model``), or a required feature it
            cannot provide (``cpu.require``; with ``fallback`` that is only a warning).
    """
    where = f"this host's {caps.domain_type} (machine {caps.machine})"
    if request.mode in ("host-passthrough", "host-model") and not caps.cpu_modes.get(
        request.mode, False
    ):
        rule = f"cpu mode {request.mode} is not supported by {where}"
        raise Unsupported(rule, field="cpu.mode")
    if request.mode == "custom" and request.name not in caps.models:
        known = ", ".join(sorted(caps.models, key=str.lower))
        raise SpecError(
            "cpu.model", f"{where} does not know this CPU model; it knows {known}", request.name
        )
    missing = compare(request)
    return _judge(request, missing, fallback, frozenset(nested), where)


def _judge(
    request: CpuRequest,
    missing: frozenset[str],
    fallback: bool,
    nested: frozenset[str],
    where: str,
) -> list[str]:
    lacking_nested = sorted(missing & nested)
    if lacking_nested:
        rule = f"nested: {where} cannot provide {', '.join(lacking_nested)}"
        raise Unsupported(rule, field="nested")
    wanted = sorted((missing & set(request.require)) - nested)
    warnings = []
    if wanted and not fallback:
        raise SpecError("cpu.require", f"{where} cannot provide {', '.join(wanted)}", wanted)
    if wanted:
        warnings.append(
            f"cpu.require: {where} cannot provide {', '.join(wanted)}; "
            "fallback is allowed, so the guest runs without them"
        )
    lacks = sorted(missing - set(request.require))
    if lacks:
        what = f"CPU model {request.name}" if request.name else f"CPU mode {request.mode}"
        warnings.append(
            f"{what} is not fully usable on {where}: it lacks {', '.join(lacks)}; "
            "the guest runs without those features"
        )
    return warnings
