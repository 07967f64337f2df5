"""The guest CPU as libvirt sees it: what a spec asks for, and what a definition says.

:class:`CpuRequest` is the normalized ``<cpu>`` of a spec (mode, model, fallback, features,
topology, nested virtualization folded in) with a canonical text, :meth:`CpuRequest.key`, that
makes two definitions comparable whatever libvirt added (``check``, ``match``, ``dies='1'``,
its default ``qemu64``). A running guest's ``<cpu>`` is libvirt's expansion (host-model becomes
a named model with every feature), so the key is also recorded in the domain's ``<metadata>``
under its own namespace and read from there for running guests. XML only through
:mod:`hvlib.model.domxml`; no libvirt here.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvlib.enums import VirtType
from hvlib.model.domxml import CpuXML, DomainXML
from hvlib.model.profiles import NESTED_TCG_FEATURES, Profile
from hvlib.model.spec import DomainSpec

HVLIB_CPU_NS = "https://hvlib.dev/xmlns/hvlib-cpu/1"
"""Namespace of the CPU request recorded in ``<metadata>`` (libvirt keeps one metadata element
per namespace, so it cannot share hvlib's own)."""
LIBVIRT_DEFAULT_CPU_MODELS = ("qemu64",)
"""The model libvirt writes into a definition that asked for no CPU (x86_64)."""


@dataclass(frozen=True)
class CpuRequest:
    """The ``<cpu>`` a spec asks for, normalized (what is compared, and what is rendered)."""

    mode: str | None
    name: str | None = None
    fallback: str | None = None
    require: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    topology: tuple[int, int, int] | None = None

    def key(self) -> str | None:
        """A canonical text of the request (None: the hypervisor's default CPU)."""
        mode, name = self.mode, self.name
        default = mode in (None, "custom") and name in (None, *LIBVIRT_DEFAULT_CPU_MODELS)
        if default and self.fallback in (None, "forbid"):
            mode, name = None, None
        parts = [f"mode={mode or 'default'}"]
        if name is not None:
            parts.append(f"model={name} fallback={self.fallback or 'allow'}")
        if self.topology is not None:
            parts.append("topology={}x{}x{}".format(*self.topology))
        parts += [f"+{f}" for f in sorted(self.require)] + [f"-{f}" for f in sorted(self.disable)]
        if parts == ["mode=default"]:
            return None
        return " ".join(parts)


def cpu_request(spec: DomainSpec, profile: Profile) -> CpuRequest | None:
    """The CPU ``spec`` asks for on ``profile``'s type, nested virtualization included.

    ``nested`` under software emulation adds svm and npt (the default model becomes
    ``qemu64``); under KVM the default becomes ``host-passthrough``, which passes the host's
    vmx or svm through (for host-model or a named model the host's extension is added when
    the spec is fitted to a host: :func:`hvlib.virt.hostfit.fit`)."""
    cpu = spec.cpu
    if cpu is None and not spec.nested:
        return None
    mode = cpu.mode if cpu else None
    name = cpu.name if cpu else None
    require = list(cpu.require) if cpu else []
    if spec.nested and profile.virt is VirtType.QEMU:
        if mode is None:
            mode, name = "custom", "qemu64"
        require += [f for f in NESTED_TCG_FEATURES if f not in require]
    elif spec.nested and mode is None:
        mode = "host-passthrough"
    return CpuRequest(
        mode=mode,
        name=name,
        fallback=("allow" if cpu and cpu.fallback else "forbid") if mode == "custom" else None,
        require=tuple(require),
        disable=tuple(cpu.disable) if cpu else (),
        topology=cpu.topology if cpu else None,
    )


def request_of(node: CpuXML) -> CpuRequest:
    """The request a ``<cpu>`` element expresses (libvirt's ``check``/``match`` and a
    ``dies='1'`` it adds are not part of it)."""
    policies = node.features
    sockets, cores, threads = node.sockets, node.cores, node.threads
    topology = None
    if sockets or cores or threads:
        topology = (sockets or 1, cores or 1, threads or 1)
    mode = node.mode or ("custom" if node.model else None)
    return CpuRequest(
        mode=mode,
        name=node.model,
        fallback=(node.fallback or "allow") if node.model else None,
        require=tuple(n for p, n in policies if p in ("require", "force")),
        disable=tuple(n for p, n in policies if p in ("disable", "forbid")),
        topology=topology,
    )


def cpu_key_of(doc: DomainXML) -> str | None:
    """The CPU request of a definition, comparable across definitions: a running guest's
    (libvirt expands its ``<cpu>``: host-model becomes a named model with every feature) is
    the one recorded in hvlib's metadata when it was defined; a persistent one is read from
    its ``<cpu>``."""
    if doc.el.get("id") is not None:  # a running guest's definition
        return doc.get_metadata(HVLIB_CPU_NS, "cpu")
    node = doc.cpu
    return None if node is None else request_of(node).key()


def cpu_xml(request: CpuRequest) -> str:
    """A standalone ``<cpu>`` document for ``request`` (what libvirt's CPU comparison takes)."""
    node = CpuXML.new()
    cpu_node(node, request)
    return node.to_xml()


def cpu_node(node: CpuXML, want: CpuRequest) -> None:
    """Write ``want`` into the (empty) ``<cpu>`` element ``node``."""
    node.mode = want.mode
    if want.mode == "custom":
        node.match = "exact"
        node.model = want.name
        node.fallback = want.fallback
    if want.topology is not None:
        node.sockets, node.cores, node.threads = want.topology
    node.features = [("require", f) for f in want.require] + [("disable", f) for f in want.disable]
