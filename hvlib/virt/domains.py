"""The domains of one host (``host.domains``): define, ensure, find, list and statistics.

Lists and statistics take one bulk libvirt call, whatever the number of domains. A define or
an ensure makes its spec ready in one pass (:func:`hvlib.virt.prepare.prepare`: fitted,
checked, rendered, its networks and pools looked up once) before anything is defined; the
converger (:mod:`hvlib.virt.converge`) carries an ensure out. Libvirt is called only
through :mod:`hvlib.virt._virt` and the host's :meth:`~hvlib.Host.call`.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hvlib.enums import State
from hvlib.errors import AlreadyExists, DomainNotFound, SpecError, Unsupported
from hvlib.model.checks import as_enum, check_bool, check_seconds, check_text
from hvlib.model.plan import ENSURE_STATES
from hvlib.model.spec import DomainSpec
from hvlib.virt import _virt
from hvlib.virt.converge import Converger, EnsureResult, removed
from hvlib.virt.domain import Domain
from hvlib.virt.hostrefs import HostRefs, check_host_refs
from hvlib.virt.prepare import Prepared, prepare

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

_LIST_FLAGS = {
    State.RUNNING: "VIR_CONNECT_LIST_DOMAINS_RUNNING",
    State.PAUSED: "VIR_CONNECT_LIST_DOMAINS_PAUSED",
    State.SHUT_OFF: "VIR_CONNECT_LIST_DOMAINS_SHUTOFF",
}


@dataclass(frozen=True)
class DomainStats:
    """Figures for one domain from a bulk statistics call (absent figures are None/empty)."""

    name: str
    state: State
    cpu_time_ns: int | None = None
    vcpus: int | None = None
    memory_kib: int | None = None
    memory_max_kib: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """Every figure libvirt returned, under libvirt's own keys."""


class Domains:
    """The domains of one host: ``host.domains``."""

    def __init__(self, host: HostLike) -> None:
        self.host = host
        """The :class:`hvlib.Host` these domains are on."""

    def define(self, spec: DomainSpec) -> Domain:
        """Define (persistently) the domain ``spec`` describes, without starting it. The spec
        is fitted to the host, checked and rendered once, and each network and pool it names
        looked up once (:func:`hvlib.virt.prepare.prepare`), before anything is defined.

        Raises:
            SpecError, Unsupported: the spec is bad for its type or this host (nothing defined).
            AlreadyExists: a domain of that name exists (use ``ensure`` to converge).
        """
        if not isinstance(spec, DomainSpec):
            raise SpecError("spec", "must be an hvlib.DomainSpec", spec)
        return self.define_prepared(prepare(self.host, spec))

    def define_prepared(self, prepared: Prepared) -> Domain:
        """Define the domain :func:`hvlib.virt.prepare.prepare` made ready, as it is (what
        :meth:`define` and a creating :meth:`ensure` do once the spec is fitted, rendered
        and its host references checked).

        Raises:
            SpecError: ``prepared`` is not a Prepared, or libvirt rejected its XML.
            AlreadyExists: a domain of that name exists.
        """
        if not isinstance(prepared, Prepared):
            raise SpecError("prepared", "must be what hvlib.virt.prepare.prepare returns", prepared)
        spec = prepared.spec
        if self._lookup(spec.name) is not None:
            raise AlreadyExists(f"domain {spec.name} already exists", name=spec.name)
        handle = self.host.call(lambda c: c.defineXML(prepared.xml), name=spec.name)
        dom = Domain(self.host, handle, spec.virt)
        if spec.autostart:
            self.host.call(lambda _c: handle.setAutostart(1), name=spec.name)
        return dom

    def define_xml(self, xml: str) -> Domain:
        """Define (or redefine, same name and uuid) a domain from raw XML; return it.

        Raises:
            SpecError: libvirt rejected the XML. AlreadyExists: the name has another uuid.
        """
        return Domain(self.host, self.host.call(lambda c: c.defineXML(xml)))

    def ensure(
        self,
        spec: DomainSpec,
        state: State = State.RUNNING,
        *,
        check: bool = False,
        allow_restart: bool = False,
        allow_recreate: bool = False,
        shutdown_timeout: float = 60.0,
        force_shutdown: bool = True,
    ) -> EnsureResult:
        """Make the host hold exactly ``spec`` in ``state``; report what changed.

        Every field the spec owns is compared (:data:`hvlib.model.plan.DEVICES` lists those of
        each device; libvirt's defaults, addresses and the uuid are kept across re-defines;
        a field the spec leaves unset, such as a volume disk's format, is libvirt's to
        choose). The spec's device lists replace the current ones; a new NIC without a MAC
        gets one derived from the host's and the domain's uuids. Changes are applied live
        where the guest's driver can (balloon, vcpus, hot-plugging a NIC, or a disk on a bus
        that takes hotplug), else to the persistent definition. A running guest is
        restarted only with ``allow_restart``; a change of virt type (or of the spec's
        uuid) needs ``allow_recreate``: the domain is then shut down like for a restart,
        undefined (with its snapshot metadata, managed save image and NVRAM) and defined as
        exactly what ``render(spec)`` gives, keeping its uuid and MAC addresses. What is not
        allowed is listed in ``result.pending``, and stays there until it is applied:
        the running guest is compared with the spec too, not only its definition.

        Every stop is a shutdown, forced (destroyed) only past ``shutdown_timeout``;
        ``result.forced`` says whether one had to be. With ``force_shutdown=False`` a guest
        still running at the deadline is left running and WaitTimeout raised. ABSENT
        destroys an active domain (``forced`` then too) and undefines it; of its spec only
        the name counts (``DomainSpec(name=N)`` removes N, whatever its type).

        ``check=True`` changes nothing and returns the report its apply would return: the
        same changes, ``how`` and MAC addresses. Only a refusal nothing predicts (a guest
        that does not take a hot-plugged device, or its balloon within
        :data:`hvlib.virt.converge.BALLOON_WAIT` s) turns a live change into a next-boot change
        and a pending restart at apply time. ``result.diff()`` shows the definition written
        (or, in check mode, that would be): empty whenever none is. A second call with the
        same spec reports ``changed=False`` and makes no write call to libvirt. Each call fits,
        checks and renders the spec once and looks each network and pool it names up once
        (:func:`hvlib.virt.prepare.prepare`; a removal does none of that), and hands
        that to the converger.

        Raises:
            SpecError, Unsupported: the spec cannot be true on this host (nothing changed).
            WaitTimeout: a state transition did not complete.
            LibvirtError, InvalidState: libvirt refused a step (the message says which).
        """
        if not isinstance(spec, DomainSpec):
            raise SpecError("spec", "must be an hvlib.DomainSpec", spec)
        state = as_enum(State, "state", state)
        if state not in ENSURE_STATES:
            raise SpecError("state", "must be RUNNING, SHUT_OFF, PAUSED or ABSENT", state)
        for flag, value in (
            ("check", check),
            ("allow_restart", allow_restart),
            ("allow_recreate", allow_recreate),
            ("force_shutdown", force_shutdown),
        ):
            check_bool(flag, value)
        shutdown_timeout = check_seconds("shutdown_timeout", shutdown_timeout)
        if state is State.ABSENT:  # only the name counts: nothing is fitted or rendered
            return removed(self.find(spec.name), check)
        return Converger(
            self,
            prepare(self.host, spec),
            state,
            check,
            allow_restart,
            allow_recreate,
            shutdown_timeout,
            force_shutdown,
        ).run()

    def check_host_refs(
        self,
        spec: DomainSpec,
        *,
        networks: Iterable[str] = (),
        pools: Iterable[str] = (),
        volumes: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Check that the networks and pools ``spec`` names exist on this host, and the
        volumes of its volume disks without a format (they are read in the volume's own,
        which the host must tell: :func:`hvlib.virt.hostfit.volume_formats`), each looked
        up once. The names in ``networks``, ``pools`` and ``volumes`` (``(pool, name)``
        pairs) count as existing: the caller makes them before the domain.

        Raises:
            SpecError: naming the missing network (``nics[i].network``), pool
                (``disks[i].pool``) or volume (``disks[i].volume``), or an argument of the
                wrong type.
            HostError: the connection failed.
        """
        if not isinstance(spec, DomainSpec):
            raise SpecError("spec", "must be an hvlib.DomainSpec", spec)
        check_host_refs(
            HostRefs(self.host),
            spec,
            networks=_names("networks", networks),
            pools=_names("pools", pools),
            volumes=_volume_names(volumes),
        )

    def _lookup(self, name: str) -> Any | None:
        try:
            return self.host.call(lambda c: c.lookupByName(name), name=name, safe=True)
        except DomainNotFound:
            return None

    def get(self, name: str) -> Domain:
        """The domain called ``name``.

        Raises:
            DomainNotFound: there is none.
            SpecError: ``name`` is not a string (or holds NUL or control characters).
        """
        handle = self._lookup(_lookup_name(name))
        if handle is None:
            raise DomainNotFound(f"no domain named {name}", name=name)
        return Domain(self.host, handle)

    def find(self, name: str) -> Domain | None:
        """The domain called ``name``, or None.

        Raises:
            SpecError: ``name`` is not a string (or holds NUL or control characters).
        """
        handle = self._lookup(_lookup_name(name))
        return None if handle is None else Domain(self.host, handle)

    def list(self, state: State | str | None = None) -> builtins.list[Domain]:
        """All domains (only those in ``state``, if given), in one libvirt call.

        ``state`` is a :class:`hvlib.State` or its value string (``"running"``). RUNNING,
        PAUSED and SHUT_OFF are filtered by libvirt itself; the other states need each
        domain's state, which comes from the same bulk call where the driver has one (QEMU,
        test) and from one call per domain where it has not (LXC).

        Raises:
            SpecError: ``state`` is not a State (or a State's value string).
        """
        state = _state_arg(state)
        if state is None or state in _LIST_FLAGS:
            flags = getattr(_virt.C, _LIST_FLAGS[state]) if state is not None else 0
            handles = self.host.call(lambda c: c.listAllDomains(flags), safe=True)
            return [Domain(self.host, h) for h in handles]
        return [Domain(self.host, h) for h, _ in self._bulk(state, 0)]

    def stats(self, state: State | str | None = None) -> dict[str, DomainStats]:
        """CPU, memory, vcpu, disk and network figures of every domain (in ``state``, as for
        :meth:`list`), in one libvirt call where the driver has bulk statistics, else one
        ``info()`` per domain.

        Raises:
            SpecError: ``state`` is not a State (or a State's value string).
        """
        state = _state_arg(state)
        kinds = 0
        for name in ("STATE", "CPU_TOTAL", "BALLOON", "VCPU", "INTERFACE", "BLOCK"):
            kinds |= getattr(_virt.C, f"VIR_DOMAIN_STATS_{name}")
        return {h.name(): _stats_of(h.name(), raw) for h, raw in self._bulk(state, kinds)}

    def _bulk(self, state: State | None, kinds: int) -> builtins.list[tuple[Any, dict[str, Any]]]:
        """Each domain (in ``state``) with its statistics: ``getAllDomainStats``, one call for
        any number of domains, or ``info()`` per domain on drivers without it (LXC)."""
        flags = getattr(_virt.C, _LIST_FLAGS[state]) if state in _LIST_FLAGS else 0
        kinds |= _virt.C.VIR_DOMAIN_STATS_STATE
        try:
            found = self.host.call(lambda c: c.getAllDomainStats(kinds, flags), safe=True)
        except Unsupported:
            found = self._info_each(flags)
        if state is None or state in _LIST_FLAGS:
            return builtins.list(found)
        return [(h, raw) for h, raw in found if _virt.state_of(raw["state.state"]) is state]

    def _info_each(self, flags: int) -> builtins.list[tuple[Any, dict[str, Any]]]:
        out = []
        with self.host.connection.bounded() as conn:
            for handle in conn.listAllDomains(flags):
                st, max_kib, cur_kib, vcpus, cpu_ns = handle.info()
                out.append(
                    (
                        handle,
                        {
                            "state.state": st,
                            "balloon.maximum": max_kib,
                            "balloon.current": cur_kib,
                            "vcpu.current": vcpus,
                            "cpu.time": cpu_ns,
                        },
                    )
                )
        return out


def _names(field: str, names: object) -> frozenset[str]:
    """An iterable of names (not a string) as a set."""
    if isinstance(names, str | bytes) or not isinstance(names, Iterable):
        raise SpecError(field, "must be an iterable of names", names)
    out = frozenset(names)
    if not all(isinstance(n, str) for n in out):
        raise SpecError(field, "must hold names (strings) only", names)
    return out


def _volume_names(volumes: object) -> frozenset[tuple[str, str]]:
    """An iterable of (pool, volume) name pairs as a set."""
    if isinstance(volumes, str | bytes) or not isinstance(volumes, Iterable):
        raise SpecError("volumes", "must be an iterable of (pool, volume) pairs", volumes)
    out = frozenset(volumes)
    pairs = (isinstance(v, tuple) and len(v) == 2 for v in out)
    if not all(pairs) or not all(isinstance(n, str) for v in out for n in v):
        raise SpecError("volumes", "must hold (pool, volume) pairs of names", volumes)
    return out


def _state_arg(state: object) -> State | None:
    """A ``state`` argument: None, a State, or a State's value string."""
    return None if state is None else as_enum(State, "state", state)


def _lookup_name(name: object) -> str:
    """A domain name to look up: any string libvirt could hold as one."""
    return check_text("name", name, max_len=1024)  # type: ignore[arg-type]


def _stats_of(name: str, raw: dict[str, Any]) -> DomainStats:
    return DomainStats(
        name=name,
        state=_virt.state_of(raw.get("state.state", 0)),
        cpu_time_ns=raw.get("cpu.time"),
        vcpus=raw.get("vcpu.current"),
        memory_kib=raw.get("balloon.current"),
        memory_max_kib=raw.get("balloon.maximum"),
        raw=dict(raw),
    )
