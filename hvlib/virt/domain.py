"""Domain: the one handle over a guest of any virtualization type.

Name, uuid and virt type are cached identity; ``state`` is read live. Lifecycle calls are
idempotent where the goal is already reached (start a running domain, destroy a stopped one,
undefine an absent one). Waits block on libvirt's lifecycle events (see
:mod:`hvlib.virt.events`) with a polling fallback. Libvirt is called always through
:meth:`hvlib.Host.call` (translated, retried only when safe).

This module holds identity, state, start (with the console capture and the LXC start
race), pause, configuration and waits; the Domain's other concerns are mixed in from their
own modules: stopping (:mod:`hvlib.virt.stopping`: shutdown, destroy, undefine), addresses
(:mod:`hvlib.virt.addressing`), migration and snapshots (:mod:`hvlib.virt.migration`), and
reaching inside the guest (:mod:`hvlib.guest.access`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from hvlib.enums import State, VirtType
from hvlib.errors import (
    CallTimeout,
    DomainNotFound,
    HvlibError,
    InvalidState,
    LibvirtError,
    SpecError,
    WaitTimeout,
)
from hvlib.guest.access import GuestAccess
from hvlib.guest.ready import missing_capture
from hvlib.model.checks import as_enums, check_bool, check_int, check_seconds, check_text
from hvlib.model.cpuspec import VCPUS_MAX
from hvlib.model.domxml import DomainXML
from hvlib.model.render import virt_of
from hvlib.model.spec import MEMORY_MIB_MAX
from hvlib.model.xmlmodel import parse_checked
from hvlib.virt import _virt
from hvlib.virt.addressing import Addressing
from hvlib.virt.console import ConsoleCapture
from hvlib.virt.handle import HostObject
from hvlib.virt.lxcstart import INIT_SETTLE, INIT_WAITS, LXC_START_ATTEMPTS, ContainerStart
from hvlib.virt.migration import Mobility
from hvlib.virt.stopping import Stopping

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

log = logging.getLogger("hvlib")
T = TypeVar("T")


class Domain(Addressing, ContainerStart, GuestAccess, Mobility, Stopping, HostObject):
    """A libvirt domain on a :class:`hvlib.Host`. Get one from ``host.domains``.

    ``host`` is the :class:`hvlib.Host` it is on (typed as the Protocol
    :class:`hvlib.virt._parts.HostLike`: its connection-level members).
    """

    host: HostLike

    def __init__(self, host: HostLike, handle: Any, virt: VirtType | None = None) -> None:
        super().__init__(host, handle)
        self._virt = virt

    @functools.cached_property
    def name(self) -> str:
        """The domain's name (read on first use, from the handle itself: no RPC)."""
        with _virt.translated():
            return str(self._handle.name())

    @functools.cached_property
    def uuid(self) -> str:
        """The domain's uuid (read on first use, from the handle itself: no RPC)."""
        with _virt.translated():
            return str(self._handle.UUIDString())

    def __repr__(self) -> str:
        return f"<Domain {self.name} {self._virt.value if self._virt else '?'} {self.uuid}>"

    @property
    def virt(self) -> VirtType:
        """The virtualization type (read once from the domain's XML, then cached).

        Raises:
            DomainNotFound: the domain no longer exists and its type was never read.
        """
        if self._virt is None:
            self._virt = virt_of(self.xml_doc(inactive=True))
        return self._virt

    def _lookup(self, conn: Any) -> Any:
        return conn.lookupByUUIDString(self.uuid)

    @property
    def state(self) -> State:
        """The current state, read live; ABSENT once the domain is gone.

        Raises:
            HostError: the connection failed.
        """
        try:
            return _virt.state_of(self._read(lambda h: h.state())[0])
        except DomainNotFound:
            return State.ABSENT

    def xml(self, *, inactive: bool = False) -> str:
        """The domain's XML: live, or with ``inactive`` the persistent definition.

        Raises:
            DomainNotFound: the domain is gone. SpecError: ``inactive`` is not a bool.
        """
        check_bool("inactive", inactive)
        flags = _virt.C.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return str(self._read(lambda h: h.XMLDesc(flags)))

    def xml_doc(self, *, inactive: bool = False) -> DomainXML:
        """:meth:`xml`, parsed into the editable model."""
        return DomainXML.from_xml(self.xml(inactive=inactive))

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, capture_console: bool = True) -> None:
        """Start the domain; a no-op if it is already active (running, or paused: a paused
        domain needs :meth:`resume`).

        With ``capture_console`` hvlib records the console from the first byte (a VM is
        started paused, its console stream opened, then resumed): see :meth:`console_log`.

        Raises:
            DomainNotFound: the domain is gone.
            LibvirtError, InvalidState: libvirt failed to start it (the message says why).
            InvalidState: a container's init exited during the start (within
                :data:`hvlib.virt.lxcstart.INIT_SETTLE` s of libvirt learning it); the
                message holds the console's last lines.
            SpecError: ``capture_console`` is not a bool.
        """
        check_bool("capture_console", capture_console)
        # No state read first: libvirt's own "already running" refusal is the check (one RPC
        # less on every start). The test driver has neither console streams nor START_PAUSED.
        capture_console = capture_console and not self.host.is_test_driver
        for attempt in range(1, LXC_START_ATTEMPTS + 1):
            if not self._create(capture_console):
                return  # it was running already
            if not self.virt.is_container or self.host.is_test_driver:
                return
            if self._init_known(INIT_WAITS[attempt - 1]):
                self._watch_init(INIT_SETTLE)
                return
            log.warning(
                "%s: libvirt never learned the container's init (libvirt 9.0 race, "
                "start %d of %d); starting it again",
                self.name,
                attempt,
                LXC_START_ATTEMPTS,
            )
            self.destroy()
        raise LibvirtError(
            f"{self.name}: libvirt did not learn the container's init pid "
            f"after {LXC_START_ATTEMPTS} starts",
            name=self.name,
        )

    def _create(self, capture_console: bool) -> bool:
        """One start (paused first for VMs whose console is captured); False if the domain
        turned out to be running already."""
        paused_first = capture_console and not self.virt.is_container
        try:
            flags = _virt.C.VIR_DOMAIN_START_PAUSED if paused_first else 0
            self._write(lambda h: h.createWithFlags(flags))
        except (InvalidState, LibvirtError) as e:
            # "already running" is OPERATION_INVALID from most drivers, an internal error
            # from the test driver: whichever, it is only that when the domain is active now
            if not self.state.is_active:
                raise self._explained(e) from e.__cause__
            return False
        if capture_console:
            self._capture_console()
        if paused_first:
            self._write(lambda h: h.resume())
        return True

    def _explained(self, err: HvlibError) -> HvlibError:
        """``err`` with a hint when an LXC container under an id map could not reach its root
        filesystem (libvirt 9.0 says only "Failed to create ROOTFS/.oldroot: Permission
        denied"); else ``err`` itself."""
        if not (self.virt.is_container and "Permission denied" in str(err)):
            return err
        try:
            ranges = self.xml_doc(inactive=True).idmap.get("uid", ())
        except HvlibError:
            return err
        root = next((target for start, target, _ in ranges if start == 0), None)
        if root is None:
            return err
        hint = (
            f" (under its id map the container's root is host uid {root}: its root filesystem "
            f"must belong to {root}:{root}, ids shifted like the map, and every directory "
            f"above it must be passable by uid {root})"
        )
        return type(err)(f"{err}{hint}", code=err.code, name=err.name)

    def container_namespaces(self) -> list[int]:
        """File descriptors of the namespaces of this running container's init, opened by
        libvirt in this process (the caller closes them): what the container transport of
        :meth:`exec` enters.

        Raises:
            InvalidState: the container is not running, or its init has not started yet.
            Unsupported: not an LXC domain, or the connection cannot pass descriptors.
        """
        return self.host.call(lambda _c: _virt.lxc_open_namespace(self.handle, self.name))

    def agent_command(self, command: dict[str, Any], timeout: float) -> Any:
        """Send ``command`` (``{"execute": ..., "arguments": ...}``) to the QEMU guest agent
        in the guest (``DomainSpec(guest_agent=True)``); return the answer's ``return``
        member. Made once, never retried (``guest-exec`` starts a process).

        Raises:
            GuestAccessError: the agent did not answer within ``timeout`` s, is not
                connected, or refused the command.
            InvalidState: the domain is not running. Unsupported: the driver has none.
        """
        wait = max(1, int(timeout + 0.999))
        text = json.dumps(command)
        answer = self._write(
            lambda h: _virt.agent_command(h, text, wait, self.name), timeout=wait + 10.0
        )
        return json.loads(answer).get("return")

    def _capture_console(self) -> None:
        capture = ConsoleCapture(self.name)
        try:
            with self.host.connection.bounded(name=self.name) as conn:
                capture.attach(
                    conn,
                    self.handle,
                    force=not self.virt.is_container,
                    generation=self.host.generation,
                )
        except CallTimeout:
            raise
        except HvlibError as e:  # the test driver has no consoles; a start must not fail on it
            log.info("no console capture for %s: %s", self.name, e)
            return
        previous = self.host.consoles.get(self.uuid)
        if previous is not None:
            previous.close()  # an earlier start's stream, if libvirt never ended it
        self.host.consoles[self.uuid] = capture

    @property
    def console(self) -> ConsoleCapture | None:
        """The capture of the console since hvlib last started the domain, if any."""
        return self.host.consoles.get(self.uuid)

    def console_log(self) -> bytes:
        """Everything the guest printed on its console since hvlib last started it
        (b"" when hvlib did not start it or the driver has no console streams)."""
        capture = self.console
        return b"" if capture is None else capture.data

    def wait_for_console(self, pattern: str | re.Pattern[str], timeout: float = 60.0) -> str:
        """Block until a console line (since the last start) matches ``pattern`` (a regular
        expression, or a compiled one); return it.

        Raises:
            WaitTimeout: no such line in time (``.last`` holds the console's tail).
            HostError: no such line in time after the console stream broke (libvirtd
                restarted) and was re-opened on the new connection: a line printed while it
                was down may have been missed; or libvirtd did not come back.
            Unsupported: the driver has no console streams (libvirt's test driver).
            InvalidState: hvlib is not capturing this domain's console (it was not started
            through hvlib in this process, or its console could not be opened).
            SpecError: ``pattern`` is not a valid regular expression, or ``timeout`` is not
                a finite number of seconds >= 0.
        """
        pattern = _check_pattern(pattern)
        timeout = check_seconds("timeout", timeout)
        capture = self.console
        if capture is None:
            test_driver = self.host.is_test_driver
            raise missing_capture(self.name, test_driver=test_driver, state=self.state)
        return capture.wait_for(pattern, timeout, reattach=lambda: self._reattach(capture))

    def _reattach(self, capture: ConsoleCapture) -> bool:
        """Re-open an ended console stream into ``capture`` if it ended with its connection
        (the state read reconnects first: the generation then differs); False if it did not
        or the domain is no longer running."""
        try:
            if not self.state.is_active or self.host.generation == capture.generation:
                return False
            capture.attach(
                self.host.conn,
                self.handle,
                force=not self.virt.is_container,
                generation=self.host.generation,
            )
        except (InvalidState, DomainNotFound):
            return False
        return True

    def suspend(self) -> None:
        """Pause the running domain; a no-op if it is already paused.

        Raises:
            InvalidState: the domain is not running.
        """
        if self._require_active("suspend") is State.PAUSED:
            return
        self._write(lambda h: h.suspend())

    def resume(self) -> None:
        """Resume a paused domain; a no-op if it is already running.

        Raises:
            InvalidState: the domain is not active.
        """
        if self._require_active("resume") is not State.PAUSED:
            return
        self._write(lambda h: h.resume())

    def reboot(self) -> None:
        """Ask the guest to reboot (ACPI or the container's init).

        Raises:
            InvalidState: the domain is not active.
        """
        self._require_active("reboot")
        self._write(lambda h: h.reboot(0))

    def _require_active(self, action: str) -> State:
        state = self.state
        if not state.is_active:
            raise InvalidState(
                f"cannot {action} {self.name}: it is {state.value}", name=self.name, state=state
            )
        return state

    # -- configuration -------------------------------------------------------------------

    @property
    def autostart(self) -> bool:
        """Whether libvirt starts the domain when the host (daemon) starts."""
        return bool(self._read(lambda h: h.autostart()))

    @autostart.setter
    def autostart(self, value: bool) -> None:
        check_bool("autostart", value)
        self._write(lambda h: h.setAutostart(1 if value else 0))

    def set_memory_live(self, kib: int) -> None:
        """Balloon the running guest to ``kib`` KiB (up to its maximum memory).

        Raises:
            SpecError: ``kib`` is not an integer from 16 MiB to 4 TiB (in KiB), the range a
                spec's ``memory_mib`` takes.
            InvalidState: the domain is not running. LibvirtError: above the maximum, say.
        """
        check_int("kib", kib, 16 * 1024, MEMORY_MIB_MAX * 1024)
        self._write(lambda h: h.setMemoryFlags(kib, _virt.C.VIR_DOMAIN_AFFECT_LIVE))

    def set_vcpus_live(self, count: int) -> None:
        """Hot-plug (or unplug) vcpus of the running guest, up to its maximum.

        Raises:
            SpecError: ``count`` is not an integer from 1 to 512 (what a spec's ``vcpus``
                takes).
            InvalidState: the domain is not running. LibvirtError: libvirt refused.
        """
        check_int("count", count, 1, VCPUS_MAX)
        self._write(lambda h: h.setVcpusFlags(count, _virt.C.VIR_DOMAIN_AFFECT_LIVE))

    def attach_live(self, device_xml: str) -> None:
        """Hot-plug a device (``<disk>``, ``<interface>`` ...) into the running guest only.

        Raises:
            SpecError: ``device_xml`` is not a string of well-formed XML.
            InvalidState: the domain is not running. Unsupported, LibvirtError: refused.
        """
        self._write(_live_device(device_xml, lambda h: h.attachDeviceFlags))

    def detach_live(self, device_xml: str) -> None:
        """Hot-unplug a device from the running guest only (persistent config untouched).

        Raises:
            SpecError: ``device_xml`` is not a string of well-formed XML.
            InvalidState: the domain is not running. Unsupported, LibvirtError: refused.
        """
        self._write(_live_device(device_xml, lambda h: h.detachDeviceFlags))

    # -- waiting -------------------------------------------------------------------------

    def wait_for(
        self,
        state: State | Iterable[State],
        timeout: float = 60.0,
        poll_interval: float | None = None,
    ) -> State:
        """Block until the domain is in ``state`` (or one of several); return the state.

        A state is a :class:`hvlib.State` or its value string (``"running"``, ``"shut-off"``);
        one string is one state. Wakes on libvirt's lifecycle events, and also re-reads the
        state every ``poll_interval`` s (default: the host's; None on the host disables
        polling).

        Raises:
            WaitTimeout: not reached within ``timeout`` s (``.last`` is the last state seen).
            SpecError: a state that is not one, an empty list of states, ``timeout`` not a
                finite number of seconds >= 0 or ``poll_interval`` not one > 0.
        """
        goals = set(as_enums(State, "state", state))
        timeout = check_seconds("timeout", timeout)
        if poll_interval is not None:
            check_seconds("poll_interval", poll_interval, positive=True)
        poll = self.host.poll_interval if poll_interval is None else poll_interval
        hub, started = self.host.event_hub, time.monotonic()
        deadline = started + timeout
        while True:
            seq = hub.seq()
            current = self.state
            if current in goals:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(
                    f"{self.name} did not reach {'/'.join(sorted(g.value for g in goals))} "
                    f"within {timeout:g} s (it is {current.value})",
                    name=self.name,
                    waited=time.monotonic() - started,
                    last=current,
                )
            with hub.cond:
                hub.cond.wait_for(
                    lambda seq=seq: hub.seq() != seq,  # type: ignore[misc]
                    timeout=min(remaining, poll) if poll else remaining,
                )


def _check_pattern(pattern: object) -> re.Pattern[str]:
    """``pattern`` compiled (a string) or as it is (a compiled ``str`` pattern).

    Raises:
        SpecError: neither, or not a valid regular expression.
    """
    if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
        return pattern
    if not isinstance(pattern, str):
        raise SpecError("pattern", "must be a regular expression (a string)", pattern)
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as e:
        raise SpecError("pattern", f"is not a valid regular expression: {e}", pattern) from None


def _live_device(
    device_xml: str, method: Callable[[Any], Callable[[str, int], Any]]
) -> Callable[[Any], Any]:
    """The write that hands ``device_xml`` to ``method(handle)`` for the running guest only
    (``VIR_DOMAIN_AFFECT_LIVE``), once the XML is checked.

    Raises:
        SpecError: ``device_xml`` is not a string of well-formed XML.
    """
    _check_device_xml(device_xml)
    return lambda h: method(h)(device_xml, _virt.C.VIR_DOMAIN_AFFECT_LIVE)


def _check_device_xml(device_xml: object) -> None:
    """Refuse what is not a string of well-formed XML (before libvirt is asked).

    Raises:
        SpecError: naming ``device_xml``.
    """
    text = check_text("device_xml", device_xml, max_len=1 << 20, multiline=True)  # type: ignore[arg-type]
    parse_checked("device_xml", text)
