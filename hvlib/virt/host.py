"""Host: one libvirt connection, its event subscription, and the domain collection.

``hvlib.connect(uri)`` returns a Host. ``host.domains`` defines, finds, lists and reports
statistics of domains with one bulk libvirt call per list, whatever the number of domains.
Checks that need the host (does a network exist?) run here, before anything is defined.
Only this module and :mod:`hvlib.virt.domain` call libvirt, always through :mod:`hvlib.virt._virt`.
"""

from __future__ import annotations

import builtins
import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from hvlib.enums import State
from hvlib.errors import AlreadyExists, DomainNotFound, NotFound, SpecError, Unsupported
from hvlib.guest.config import PathArg, check_ssh_config
from hvlib.model.checks import as_enum, check_bool, check_seconds
from hvlib.model.plan import ENSURE_STATES, defined_xml
from hvlib.model.render import render
from hvlib.model.spec import DiskKind, DomainSpec, check_text
from hvlib.model.uri import allowed_names
from hvlib.virt import _virt, accel
from hvlib.virt.connection import Connection, check_timeout
from hvlib.virt.console import ConsoleCapture
from hvlib.virt.converge import Converger, EnsureResult
from hvlib.virt.domain import Domain
from hvlib.virt.events import Callback, DomainEvent, EventHub, EventKind, Subscription
from hvlib.virt.hostfit import fit
from hvlib.virt.remote import check_path_arg, remote_uri

if TYPE_CHECKING:
    from hvlib.guest.config import SshConfig
    from hvlib.virt.network import Networks
    from hvlib.virt.pools import Pools
    from hvlib.virt.storage import Volumes

log = logging.getLogger("hvlib")
T = TypeVar("T")

_LIST_FLAGS = {
    State.RUNNING: "VIR_CONNECT_LIST_DOMAINS_RUNNING",
    State.PAUSED: "VIR_CONNECT_LIST_DOMAINS_PAUSED",
    State.SHUT_OFF: "VIR_CONNECT_LIST_DOMAINS_SHUTOFF",
}


class Host:
    """A connection to one libvirt daemon (or the in-process ``test:///`` driver).

    Use as a context manager, or call :meth:`close`. Thread-safe: libvirt connections are.
    ``Host(uri, ...)`` takes the options of :func:`connect` but the SSH pins; the URI is
    checked the same way (:func:`hvlib.model.uri.check_uri`) before anything opens.
    """

    def __init__(
        self,
        uri: str,
        *,
        netns: str | None = None,
        poll_interval: float | None = 1.0,
        readonly: bool = False,
        ssh: SshConfig | None = None,
        reconnect_timeout: float = 30.0,
        call_timeout: float | None = None,
        allow_uri_options: Iterable[str] = (),
        allow_emulation: bool | None = None,
    ) -> None:
        """Check every option, then open the connection.

        Raises:
            SpecError: an option is of the wrong type or out of range (``field`` names it),
                or the URI was refused.
            HostError: the daemon cannot be reached or refused the connection.
        """
        check_host_options(netns, poll_interval, readonly, ssh, allow_emulation)
        self.allow_emulation = accel.allow_emulation_default(allow_emulation)
        """Run kvm specs under software emulation (as qemu) where KVM does not work (None:
        the environment's ``HVLIB_ALLOW_EMULATION``)."""
        self.ssh = ssh
        """Default SSH credentials for guests of this host (an :class:`hvlib.SshConfig`)."""
        self.netns = netns
        """Network namespace in which hvlib opens sockets toward guests (SSH, probes)."""
        self.poll_interval = poll_interval
        """Seconds between state re-reads during waits (None: events only)."""
        self.event_hub = EventHub()
        self.consoles: dict[str, ConsoleCapture] = {}
        """Console captures of the domains hvlib started, by uuid."""
        self.connection = Connection(
            uri,
            readonly=readonly,
            on_lifecycle=self._on_lifecycle,
            on_lost=self._on_connection_lost,
            reconnect_timeout=reconnect_timeout,
            call_timeout=call_timeout,
            allow_uri_options=allow_uri_options,
        )
        self._driver: tuple[int, str] | None = None
        self.domains = Domains(self)

    @property
    def uri(self) -> str:
        """The URI this Host opened (checked by :func:`hvlib.model.uri.check_uri`)."""
        return self.connection.uri

    @functools.cached_property
    def pools(self) -> Pools:
        """The storage pools of this host (:class:`hvlib.virt.pools.Pools`)."""
        from hvlib.virt.pools import Pools  # imported on first use: a faster ``import hvlib``

        return Pools(self)

    @functools.cached_property
    def volumes(self) -> Volumes:
        """The storage volumes of this host (:class:`hvlib.virt.storage.Volumes`)."""
        from hvlib.virt.storage import Volumes

        return Volumes(self)

    @functools.cached_property
    def networks(self) -> Networks:
        """The virtual networks of this host (:class:`hvlib.virt.network.Networks`)."""
        from hvlib.virt.network import Networks

        return Networks(self)

    def __repr__(self) -> str:
        return f"<Host {self.uri}>"

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> Any:
        """The libvirt connection, reconnected first if the daemon restarted (an escape hatch:
        raw calls on it raise raw libvirt errors).

        Raises:
            HostError: the host was closed, or the daemon did not come back in time.
        """
        return self.connection.get()

    @property
    def generation(self) -> int:
        """Bumped on every reconnect: libvirt handles from before are stale."""
        return self.connection.generation

    def call(
        self,
        fn: Callable[[Any], T],
        *,
        name: str | None = None,
        safe: bool = False,
        timeout: float | None = None,
    ) -> T:
        """Run ``fn(conn)``, translated, retried on transient errors only if ``safe``, bounded
        by ``timeout`` or ``call_timeout``: see :meth:`hvlib.virt.connection.Connection.call`."""
        return self.connection.call(fn, name=name, safe=safe, timeout=timeout)

    def close(self) -> None:
        """Deregister events and close the connection (idempotent). From then on every call
        on this Host and on its Domains, Networks, Pools and Volumes raises
        :class:`hvlib.virt.connection.HostClosed` (a HostError saying it was closed) at once,
        without retrying; their ``name`` and ``uuid`` stay readable. Console captures are
        closed first (what they captured stays readable): an open console stream holds a
        reference on the libvirt connection, so its socket would stay open."""
        for capture in list(self.consoles.values()):
            capture.close()
        self.connection.close()

    def _on_connection_lost(self) -> None:
        """Waiters re-check at once; console streams, which libvirt 9.0 leaves silent when
        the daemon dies (no event, no EOF), count as ended (waits re-open them)."""
        self.event_hub.wake_all()
        for capture in list(self.consoles.values()):
            capture.connection_lost()

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        self.event_hub.dispatch(
            DomainEvent(dom.name(), dom.UUIDString(), EventKind.of(event), detail)
        )

    # -- events --------------------------------------------------------------------------

    def subscribe(self, callback: Callback) -> Subscription:
        """Call ``callback(DomainEvent)`` for every lifecycle event of every domain.

        The callback runs on libvirt's event thread: keep it quick, do not block.
        """
        return self.event_hub.subscribe(callback)

    def events(
        self, names: Iterator[str] | list[str] | None = None, timeout: float | None = None
    ) -> Iterator[DomainEvent]:
        """Iterate over lifecycle events (of ``names`` only, if given) as they arrive.

        Stops after ``timeout`` s without an event (None: never). Subscribed on first
        ``next()``; closing the iterator unsubscribes.
        """
        return self.event_hub.stream(None if names is None else set(names), timeout)

    # -- host facts ----------------------------------------------------------------------

    def capabilities(self) -> str:
        """The host's capabilities XML."""
        return self.call(lambda c: str(c.getCapabilities()), safe=True)

    @property
    def driver(self) -> str:
        """libvirt's name of the driver behind this connection, as the driver itself says it
        (``getType()``: ``"QEMU"``, ``"LXC"``, ``"Xen"``, ``"TEST"``), whatever the URI's
        spelling or transport. Asked once per connection, and again after a reconnect.

        Raises:
            HostError: the connection failed.
        """
        self.connection.get()  # reconnected first if it was lost: a new connection, a new ask
        generation, cached = self.generation, self._driver
        if cached is not None and cached[0] == generation:
            return cached[1]
        answer = self.call(lambda c: str(c.getType()), safe=True)
        self._driver = (generation, answer)
        return answer

    @property
    def is_test_driver(self) -> bool:
        """True for libvirt's test driver (``test:///default``, ``test+unix://...`` through a
        daemon, a custom ``test:///path.xml``): :attr:`driver` is ``"TEST"``.

        Raises:
            HostError: the connection failed.
        """
        return self.driver == "TEST"

    def acceleration(
        self,
        probe_kernel: str | None = None,
        probe_initrd: str | None = None,
        *,
        probe_cmdline: str | None = None,
        probe_ready: str | None = None,
        probe_timeout: float | None = None,
        refresh: bool = False,
    ) -> accel.Acceleration:
        """Whether KVM works here: present, openable by QEMU, boots a real Linux kernel (the
        probe guest ``probe_kernel``/``probe_initrd`` to its ready line ``probe_ready``, else
        the one set by :func:`hvlib.virt.accel.set_probe_guest` or ``HVLIB_PROBE_KERNEL``), nested
        allowed; each "no" says why. Cached per host; "not probed" on ``test:///``.

        Raises:
            HostError: the connection failed.
        """
        guest = None
        if probe_kernel is not None:
            guest = accel.ProbeGuest(
                kernel=str(probe_kernel),
                initrd=None if probe_initrd is None else str(probe_initrd),
                cmdline=probe_cmdline or accel.ProbeGuest.cmdline,
                ready=probe_ready or accel.DEFAULT_READY,
                timeout=probe_timeout or accel.PROBE_TIMEOUT,
            )
        return accel.acceleration(self, guest, refresh=refresh)


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

    def __init__(self, host: Host) -> None:
        self.host = host

    def define(self, spec: DomainSpec) -> Domain:
        """Define (persistently) the domain ``spec`` describes, without starting it.

        Raises:
            SpecError, Unsupported: the spec is bad for its type or this host (nothing defined).
            AlreadyExists: a domain of that name exists (use ``ensure`` to converge).
        """
        spec = fit(self.host, spec).spec
        xml = defined_xml(spec)
        self.check_host_refs(spec)
        if self._lookup(spec.name) is not None:
            raise AlreadyExists(f"domain {spec.name} already exists", name=spec.name)
        with _virt.translated(spec.name):
            handle = self.host.conn.defineXML(xml)
        dom = Domain(self.host, handle, spec.virt)
        if spec.autostart:
            with _virt.translated(spec.name):
                handle.setAutostart(1)
        return dom

    def define_xml(self, xml: str) -> Domain:
        """Define (or redefine, same name and uuid) a domain from raw XML; return it.

        Raises:
            SpecError: libvirt rejected the XML. AlreadyExists: the name has another uuid.
        """
        with _virt.translated():
            return Domain(self.host, self.host.conn.defineXML(xml))

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
        destroys an active domain (``forced`` then too) and undefines it.

        ``check=True`` changes nothing and returns the report its apply would return: the
        same changes, ``how`` and MAC addresses. Only a refusal nothing predicts (a guest
        that does not take a hot-plugged device, or its balloon within
        :data:`hvlib.virt.converge.BALLOON_WAIT` s) turns a live change into a next-boot change
        and a pending restart at apply time. ``result.diff()`` shows the definition written
        (or, in check mode, that would be): empty whenever none is. A second call with the
        same spec reports ``changed=False`` and makes no write call to libvirt.

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
        if state is not State.ABSENT:  # a removal needs none of what the spec refers to
            spec = fit(self.host, spec).spec
        render(spec)
        if state is not State.ABSENT:
            self.check_host_refs(spec)
        return Converger(
            self,
            spec,
            state,
            check,
            allow_restart,
            allow_recreate,
            shutdown_timeout,
            force_shutdown,
        ).run()

    def check_host_refs(self, spec: DomainSpec) -> None:
        """Check that the networks and pools ``spec`` names exist on this host, and the
        volumes of its volume disks without a format (they are read in the volume's own,
        which the host must tell: :func:`hvlib.virt.hostfit.volume_formats`).

        Raises:
            SpecError: naming the missing network, pool or volume.
        """
        conn = self.host.conn
        for i, nic in enumerate(spec.nics):
            if nic.kind == "network":
                self._must_exist(f"nics[{i}].network", nic.source, conn.networkLookupByName)
        for i, disk in enumerate(spec.disks):
            if disk.kind is not DiskKind.VOLUME:
                continue
            where = f"disks[{i}]"
            pool = self._must_exist(f"{where}.pool", disk.pool or "", conn.storagePoolLookupByName)
            if disk.format is None:
                self._must_exist(
                    f"{where}.volume", disk.volume_name or "", pool.storageVolLookupByName
                )

    @staticmethod
    def _must_exist(fieldname: str, name: str, lookup: Any) -> Any:
        """``lookup(name)``, translated; NotFound as a SpecError naming ``fieldname``."""
        try:
            with _virt.translated():
                return lookup(name)
        except NotFound:
            raise SpecError(fieldname, "does not exist on this host", name) from None

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
        with _virt.translated():
            for handle in self.host.conn.listAllDomains(flags):
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


def connect(
    uri: str,
    *,
    netns: str | None = None,
    poll_interval: float | None = 1.0,
    readonly: bool = False,
    ssh: SshConfig | None = None,
    reconnect_timeout: float = 30.0,
    call_timeout: float | None = None,
    allow_uri_options: Iterable[str] = (),
    allow_emulation: bool | None = None,
    known_hosts: PathArg | None = None,
    keyfile: PathArg | None = None,
    host_ssh: SshConfig | None = None,
) -> Host:
    """Open a :class:`Host` on ``uri`` (``qemu:///system``, ``lxc:///``, ``test:///default``,
    ``qemu+ssh://...``).

    ``netns`` names a network namespace (``ip netns``) in which hvlib opens its sockets toward
    guests; the calling process stays where it is. ``poll_interval`` is the state re-read
    period of waits (None: libvirt's events only). ``ssh`` (an :class:`hvlib.SshConfig`) is
    the default for reaching guests over SSH. After libvirtd restarts, the next call
    reconnects (retrying for up to ``reconnect_timeout`` s) and re-registers events; safe
    (read-only or idempotent) calls are retried on transient errors. ``call_timeout`` (off by
    default) bounds every libvirt call: past it, :class:`hvlib.CallTimeout`. URI options
    that make libvirt run commands or weaken its checks of the server, and options libvirt
    does not define, are refused in any spelling (read as libvirt reads them: any case, ``;``
    as well as ``&``, percent-encoded) unless named in ``allow_uri_options`` (see
    :mod:`hvlib.model.uri`). ``allow_emulation`` (else the environment's
    ``HVLIB_ALLOW_EMULATION=1``) lets a ``kvm`` spec run as ``qemu`` (software emulation) on a
    host whose acceleration report says KVM does not work (see :meth:`Host.acceleration`).
    ``known_hosts``/``keyfile`` (or ``host_ssh``, an :class:`hvlib.SshConfig` whose
    ``host_key`` is pinned) pin the SSH host key of an ``+ssh`` URI: hvlib then uses libvirt's
    ``+libssh`` transport, which checks it (libvirt 9.0's ``+ssh`` would not), and logs so.

    Every option is checked before anything is opened or written: a wrong type or value is
    a SpecError whose ``field`` names the option (``call_timeout=-1``, ``nan``, ``inf``,
    ``ssh=42``, ``readonly="yes"``...).

    Raises:
        HostError: the daemon cannot be reached or refused the connection.
        SpecError: an option is of the wrong type or out of range, or the URI has an option
            that was not allowed.
    """
    check_host_options(netns, poll_interval, readonly, ssh, allow_emulation)
    check_timeout("reconnect_timeout", reconnect_timeout, optional=False, zero=True)
    check_timeout("call_timeout", call_timeout, optional=True)
    allowed_names(allow_uri_options)
    check_path_arg("known_hosts", known_hosts)
    check_path_arg("keyfile", keyfile)
    check_ssh_config("host_ssh", host_ssh)
    uri = remote_uri(uri, known_hosts=known_hosts, keyfile=keyfile, ssh=host_ssh)
    return Host(
        uri,
        netns=netns,
        poll_interval=poll_interval,
        readonly=readonly,
        ssh=ssh,
        reconnect_timeout=reconnect_timeout,
        call_timeout=call_timeout,
        allow_uri_options=allow_uri_options,
        allow_emulation=allow_emulation,
    )


def check_host_options(
    netns: object, poll_interval: object, readonly: object, ssh: object, allow_emulation: object
) -> None:
    """Check the options a :class:`Host` keeps (see :func:`connect`).

    Raises:
        SpecError: naming the option that is of the wrong type or out of range.
    """
    if netns is not None:
        _check_netns(netns)
    check_timeout("poll_interval", poll_interval, optional=True)
    if not isinstance(readonly, bool):
        raise SpecError("readonly", "must be True or False", readonly)
    if allow_emulation is not None and not isinstance(allow_emulation, bool):
        raise SpecError("allow_emulation", "must be True, False or None", allow_emulation)
    check_ssh_config("ssh", ssh)


def _check_netns(netns: object) -> None:
    """A name ``ip netns`` can have: a file name under /run/netns (no ``/``, not ``.``)."""
    if not isinstance(netns, str):
        raise SpecError("netns", "must be the name of a network namespace (ip netns)", netns)
    if not netns or netns in (".", "..") or "/" in netns or len(netns.encode()) > 255:
        raise SpecError("netns", "must be a file name under /run/netns (ip netns)", netns)
    if any(ord(c) < 32 or ord(c) == 127 for c in netns):
        raise SpecError("netns", "must not contain NUL or control characters", netns)


class ConnectOptions(TypedDict, total=False):
    """The options of :func:`connect` but the URI, as a dict a type checker checks (for
    ``connect_kw=`` of :func:`hvlib.parallel.ensure_all` and
    :func:`hvlib.parallel.start_all`)."""

    netns: str | None
    poll_interval: float | None
    readonly: bool
    ssh: SshConfig | None
    reconnect_timeout: float
    call_timeout: float | None
    allow_uri_options: Iterable[str]
    allow_emulation: bool | None
    known_hosts: PathArg | None
    keyfile: PathArg | None
    host_ssh: SshConfig | None


def check_connect_options(field: str, options: object) -> ConnectOptions:
    """``options`` if it is a dict of :class:`ConnectOptions` keys (their values are checked
    by :func:`connect`).

    Raises:
        SpecError: naming ``field``: not a dict, or a key that is not an option of connect.
    """
    if not isinstance(options, dict):
        raise SpecError(field, "must be a dict of hvlib.connect options", options)
    known = ConnectOptions.__annotations__
    for key in options:
        if key not in known:
            raise SpecError(
                field, f"{key!r} is not an option of hvlib.connect ({', '.join(known)})", key
            )
    return options  # type: ignore[return-value]
