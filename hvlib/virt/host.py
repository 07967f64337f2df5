"""Host: one libvirt connection, its event subscription, and the domain collection.

``hvlib.connect(uri)`` returns a Host. ``host.domains`` (:class:`hvlib.virt.domains.Domains`)
defines, ensures, finds, lists and reports statistics of domains; ``host.networks``,
``host.pools`` and ``host.volumes`` are made on first use. Libvirt is called only through
:mod:`hvlib.virt._virt` (the connection's :meth:`~hvlib.virt.connection.Connection.call`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from hvlib.errors import SpecError
from hvlib.guest.config import check_ssh_config
from hvlib.model.checks import PathArg
from hvlib.model.uri import allowed_names
from hvlib.virt import accel
from hvlib.virt.closing import Closing
from hvlib.virt.connection import Connection, check_timeout
from hvlib.virt.console import ConsoleCapture
from hvlib.virt.domains import Domains
from hvlib.virt.events import Callback, DomainEvent, EventHub, EventKind, Subscription
from hvlib.virt.remote import check_path_arg, remote_uri

if TYPE_CHECKING:
    from hvlib.guest.config import SshConfig
    from hvlib.virt.images import Images
    from hvlib.virt.network import Networks
    from hvlib.virt.pools import Pools
    from hvlib.virt.storage import Volumes

log = logging.getLogger("hvlib")
T = TypeVar("T")


class Host(Closing):
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
    def images(self) -> Images:
        """Base images imported into pool volumes (:class:`hvlib.virt.images.Images`)."""
        from hvlib.virt.images import Images

        return Images(self)

    @functools.cached_property
    def networks(self) -> Networks:
        """The virtual networks of this host (:class:`hvlib.virt.network.Networks`)."""
        from hvlib.virt.network import Networks

        return Networks(self)

    def __repr__(self) -> str:
        return f"<Host {self.uri}>"

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
        without retrying; their ``name`` and ``uuid`` stay readable. Console captures stop
        (what they captured stays readable)."""
        for capture in list(self.consoles.values()):
            with self.connection.bounded(reconnect=False):
                capture.close()  # a stream holds its connection open
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
    (read-only or idempotent) calls are retried on transient errors. ``call_timeout`` bounds
    every libvirt call, the open included (None: :data:`hvlib.virt.deadline.DEFAULT_CALL_TIMEOUT`,
    120 s; long calls such as snapshots with memory have bounds of their own): past it,
    :class:`hvlib.CallTimeout` naming the call and the domain, and the connection is reopened
    on next use. URI options
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
