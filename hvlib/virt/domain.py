"""Domain: the one handle over a guest of any virtualization type.

Name, uuid and virt type are cached identity; ``state`` is read live. Lifecycle calls are
idempotent where the goal is already reached (start a running domain, destroy a stopped one,
undefine an absent one). Waits block on libvirt's lifecycle events (see
:mod:`hvlib.virt.events`) with a polling fallback. Only this module and :mod:`hvlib.virt.host` call
libvirt, always through :meth:`hvlib.Host.call` (translated, retried only when safe).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import re
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from hvlib.enums import State, VirtType
from hvlib.errors import (
    CallTimeout,
    DomainNotFound,
    HvlibError,
    InvalidState,
    LibvirtError,
    SpecError,
    Unsupported,
    WaitTimeout,
)
from hvlib.guest.access import GuestAccess
from hvlib.guest.ready import missing_capture
from hvlib.model import addresses as addrs
from hvlib.model.addresses import AddressSource
from hvlib.model.checks import as_enum, as_enums, check_bool, check_int, check_seconds
from hvlib.model.domxml import DomainXML
from hvlib.model.render import virt_of
from hvlib.model.spec import MEMORY_MIB_MAX, VCPUS_MAX, check_text
from hvlib.model.xmlmodel import parse_checked
from hvlib.virt import _virt, lxcmonitor
from hvlib.virt.console import ConsoleCapture
from hvlib.virt.handle import HostObject
from hvlib.virt.migration import Mobility

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

log = logging.getLogger("hvlib")
T = TypeVar("T")

INIT_WAITS = (0.5, 1.0, 2.0, 5.0, 5.0, 5.0)
"""Seconds each start waits for libvirt to learn the container's init while libvirtd still
holds its monitor connection (a start whose monitor connection libvirt dropped is retried at
once: :func:`hvlib.lxcmonitor.monitor_lost`). When libvirt learns the init at all, it knows it
within 6 ms of create() returning (bench B6); the longer waits are for a loaded host."""
LXC_START_ATTEMPTS = len(INIT_WAITS)
"""Starts tried before giving up on a container whose init libvirt never learns. Measured
on libvirt 9.0 (NOTES: "The LXC start race"): 4.5-13 % of starts lose the init event, each
start independently, so six starts all fail about once in 10**5-10**6 calls."""
INIT_POLL = 0.01
"""Seconds between checks that libvirt knows a started container's init."""
NOT_READY_RETRY = 0.1
TEARDOWN_POLL = 0.05
"""Seconds between checks that a domain reported shut off is also torn down (libxl)."""
"""Seconds before re-asking a guest that could not take a shutdown request yet."""
_UNDEFINE_FLAGS = (
    "VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA",
    "VIR_DOMAIN_UNDEFINE_MANAGED_SAVE",
    "VIR_DOMAIN_UNDEFINE_NVRAM",
    "VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA",
)
"""What an undefine removes with the definition, most needed first, where the driver takes
the flag (libvirt 9.0's test driver takes only the first two, and refuses the whole call for
a third: it then kept no domain that had snapshots)."""
_UNDEFINE_MASKS: weakref.WeakKeyDictionary[HostLike, tuple[int, int]] = weakref.WeakKeyDictionary()
"""Per host: (connection generation, the undefine flags its driver took)."""


@dataclass(frozen=True)
class ShutdownResult:
    """What :meth:`Domain.shutdown` did: ``graceful`` False means it had to destroy."""

    graceful: bool
    elapsed: float
    requests: int = 0
    """How many shutdown requests were sent (0: it was already off)."""


def _undefine_flag_sets(first: int | None) -> Iterator[int]:
    """The undefine flag sets to try: ``first`` (what the driver took before), then every
    subset of :data:`_UNDEFINE_FLAGS` this libvirt-python has, larger sets first and, among
    sets of one size, those with the more needed flags first; 0 last."""
    if first is not None:
        yield first
    values = [v for v in (getattr(_virt.C, n, 0) for n in _UNDEFINE_FLAGS) if v]
    subsets = [
        combo
        for size in range(len(values), -1, -1)
        for combo in itertools.combinations(values, size)
    ]  # combinations() keeps the order of ``values``: the more needed flags come first
    for combo in subsets:
        flags = functools.reduce(lambda a, b: a | b, combo, 0)
        if flags != first:
            yield flags


class Domain(GuestAccess, Mobility, HostObject):
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

    def _init_known(self, wait: float) -> bool:
        """Whether libvirt knows the started container's init (it can then be entered, shut
        down, and its exit seen). libvirt 9.0 loses it in about one start in ten: its event
        loop reads the controller's ``init`` event before the monitor's program is added,
        finds no program, and closes the monitor (README, "The LXC start race"). Such a
        start is recognised at once where the controller's sockets can be read
        (:func:`hvlib.lxcmonitor.monitor_lost`), else after ``wait`` s. True where it cannot be
        checked (a remote connection cannot pass descriptors)."""
        deadline = time.monotonic() + wait
        controller: int | None = None
        while True:
            try:
                for fd in self.container_namespaces():
                    os.close(fd)
                return True
            except InvalidState:
                if controller is None:
                    controller = int(self._read(lambda h: h.ID()))
                if lxcmonitor.monitor_lost(controller, self.name):
                    log.info("%s: libvirt dropped its monitor of the container", self.name)
                    return False
                if time.monotonic() >= deadline:
                    return False
                time.sleep(INIT_POLL)
            except (Unsupported, LibvirtError):
                return True

    def container_namespaces(self) -> list[int]:
        """File descriptors of the namespaces of this running container's init, opened by
        libvirt in this process (the caller closes them): what the container transport of
        :meth:`exec` enters.

        Raises:
            InvalidState: the container is not running, or its init has not started yet.
            Unsupported: not an LXC domain, or the connection cannot pass descriptors.
        """
        return _virt.lxc_open_namespace(self.handle, self.name)

    def _capture_console(self) -> None:
        capture = ConsoleCapture(self.name)
        try:
            capture.attach(
                self.host.conn,
                self.handle,
                force=not self.virt.is_container,
                generation=self.host.generation,
            )
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

    def shutdown(
        self, timeout: float = 60.0, *, force: bool = True, resend_interval: float = 5.0
    ) -> ShutdownResult:
        """Shut down gracefully: send ACPI (or the container's init) a request, re-sent every
        ``resend_interval`` s, until the domain is off; past ``timeout``, destroy it.

        Returns what happened. A domain that is already off (or absent) gives
        ``ShutdownResult(graceful=True, elapsed=0.0, requests=0)``.

        Raises:
            WaitTimeout: ``force=False`` and the guest did not stop in time (it keeps running).
            SpecError: ``timeout`` is not a finite number of seconds >= 0, ``resend_interval``
                not one > 0, or ``force`` not a bool.
        """
        timeout = check_seconds("timeout", timeout)
        resend_interval = check_seconds("resend_interval", resend_interval, positive=True)
        check_bool("force", force)
        started = time.monotonic()
        deadline = started + timeout
        requests = 0
        while self.state.is_active:
            if deadline - time.monotonic() <= 0:
                return self._shutdown_timed_out(started, requests, force, timeout)
            sent = self._request_shutdown(requests, deadline - time.monotonic())
            requests += sent
            pause = resend_interval if sent else NOT_READY_RETRY
            if self._wait_inactive(max(0.0, min(pause, deadline - time.monotonic()))):
                break
        return ShutdownResult(True, time.monotonic() - started, requests)

    def _request_shutdown(self, attempt: int, timeout: float) -> bool:
        """Send one shutdown request; False if the guest cannot take one yet.

        VMs get ACPI. Containers alternate: first SIGTERM to their init (libvirt's
        ``SIGNAL`` mode), then libvirt's default (initctl, then SIGTERM). The default alone was
        seen to report success without signalling a busybox init (libvirt 9.0), while an init
        such as systemd wants initctl. Right after a container starts, libvirt refuses with
        "Init process ID is not yet known": that is retried within 0.1 s, not counted.
        A request libvirt does not answer within ``timeout`` s (a frozen guest blocks its
        monitor) counts as sent: the deadline then decides.
        """
        flags = 0
        if self.virt.is_container and attempt % 2 == 0:
            flags = _virt.C.VIR_DOMAIN_SHUTDOWN_SIGNAL
        try:
            self._write(lambda h: self._shutdown_flags(h, flags), timeout=timeout)
        except (DomainNotFound, CallTimeout):
            return True  # vanished meanwhile, or the guest's monitor does not answer
        except InvalidState:
            return not self.state.is_active  # stopped meanwhile; else: not ready for it yet
        return True

    @staticmethod
    def _shutdown_flags(handle: Any, flags: int) -> None:
        try:
            handle.shutdownFlags(flags)
        except Exception as e:  # a driver without that mode (the test driver): its default
            if not flags or _virt.code_of(e) != _virt.C.VIR_ERR_INVALID_ARG:
                raise
            handle.shutdownFlags(0)

    def _wait_inactive(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        try:
            self.wait_for((State.SHUT_OFF, State.ABSENT, State.CRASHED), timeout=timeout)
        except WaitTimeout:
            return False
        return self._wait_torn_down(deadline)

    def _wait_torn_down(self, deadline: float) -> bool:
        """Wait until libvirt no longer counts the domain as active; False at ``deadline``.

        libvirt's Xen (libxl) driver reports shut-off before its clean-up thread has torn the
        domain down (seen on Xen 4.17 with libvirt 9.0 after a guest's ACPI power-off): an
        undefine in that window only made the domain transient, and it stayed listed.
        """
        while True:
            try:
                if not self._read(lambda h: h.isActive()):
                    return True
            except DomainNotFound:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(TEARDOWN_POLL)

    def _shutdown_timed_out(
        self, started: float, requests: int, force: bool, timeout: float
    ) -> ShutdownResult:
        if not force:
            raise WaitTimeout(
                f"{self.name} did not shut down within {timeout:g} s",
                name=self.name,
                waited=time.monotonic() - started,
                last=self.state,
            )
        self.destroy()
        return ShutdownResult(False, time.monotonic() - started, requests)

    def destroy(self) -> None:
        """Stop the domain at once (power off); a no-op if it is off or absent."""
        if not self.state.is_active:
            return
        with contextlib.suppress(InvalidState, DomainNotFound):  # it stopped meanwhile
            self._write(lambda h: h.destroy())

    def undefine(self) -> None:
        """Remove the persistent definition with its snapshot metadata, managed save image,
        NVRAM and checkpoint metadata (each where the driver has it); a no-op if the domain
        is absent. A running domain keeps running, transient. The snapshots' data (inside
        qcow2 images, or overlay files) stays on disk.

        A driver refuses an undefine flag it does not know (``VIR_ERR_INVALID_ARG``) as a
        whole, so the largest set of these flags the driver takes is found by trying them,
        most needed first, and remembered for the host's connection.

        Raises:
            LibvirtError, InvalidState: libvirt refused (the message says why).
        """
        try:
            self._write(self._undefine)
        except DomainNotFound:
            return

    def _undefine(self, handle: Any) -> None:
        known = _UNDEFINE_MASKS.get(self.host)
        first = known[1] if known is not None and known[0] == self.host.generation else None
        for flags in _undefine_flag_sets(first):
            try:
                handle.undefineFlags(flags)
            except Exception as e:
                code = _virt.code_of(e)
                if code == _virt.C.VIR_ERR_NO_SUPPORT:  # a driver without undefineFlags
                    handle.undefine()
                    return
                if code != _virt.C.VIR_ERR_INVALID_ARG or not flags:
                    raise
                continue
            _UNDEFINE_MASKS[self.host] = (self.host.generation, flags)
            return

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
        _check_device_xml(device_xml)
        self._write(lambda h: h.attachDeviceFlags(device_xml, _virt.C.VIR_DOMAIN_AFFECT_LIVE))

    def detach_live(self, device_xml: str) -> None:
        """Hot-unplug a device from the running guest only (persistent config untouched).

        Raises:
            SpecError: ``device_xml`` is not a string of well-formed XML.
            InvalidState: the domain is not running. Unsupported, LibvirtError: refused.
        """
        _check_device_xml(device_xml)
        self._write(lambda h: h.detachDeviceFlags(device_xml, _virt.C.VIR_DOMAIN_AFFECT_LIVE))

    # -- addresses -----------------------------------------------------------------------

    def addresses(self, source: AddressSource = AddressSource.AUTO) -> addrs.Addresses:
        """The guest's IP addresses per NIC, keyed by MAC (a NIC with none maps to []).

        AUTO asks the DHCP leases, then the guest agent, then the ARP table, and returns the
        first non-empty answer.

        Raises:
            DomainNotFound: the domain is gone. Unsupported: the driver lacks that source.
            SpecError: ``source`` is not an :class:`AddressSource` (or its value string).
        """
        source = as_enum(AddressSource, "source", source)
        return self._addresses(source, addrs.Attempts())

    def _addresses(self, source: AddressSource, attempts: addrs.Attempts) -> addrs.Addresses:
        sources = addrs.ORDER if source is AddressSource.AUTO else (source,)
        found: addrs.Addresses = {}
        for src in sources:
            try:
                flag = getattr(_virt.C, f"VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_{src.name}")
                found = addrs.read(self._interface_addresses(flag))
            except (InvalidState, Unsupported, LibvirtError) as e:
                if source is not AddressSource.AUTO:
                    raise
                attempts.note(src, str(e).splitlines()[0])
                continue
            attempts.note(src, "no address yet" if not any(found.values()) else "ok")
            if any(found.values()):
                return found
        return found

    def _interface_addresses(self, flag: int) -> dict[str, Any]:
        result: dict[str, Any] = self._read(lambda h: h.interfaceAddresses(flag, 0))
        return result

    def mac_addresses(self) -> list[str]:
        """The MACs of the domain's NICs, from its live (or else persistent) XML."""
        return [i.mac.lower() for i in self.xml_doc().interfaces if i.mac]

    def wait_for_address(
        self,
        timeout: float = 120.0,
        *,
        nics: str = "all",
        family: int | None = 4,
        source: AddressSource = AddressSource.AUTO,
        interval: float = 0.25,
    ) -> addrs.Addresses:
        """Block until the NICs (``"all"`` or ``"any"``) have an address of ``family``.

        Returns the same mapping as :meth:`addresses`.

        Raises:
            WaitTimeout: in time no address came; the message says what each source answered.
            SpecError: ``nics`` is not "all" or "any", ``family`` not 4, 6 or None,
                ``source`` not an :class:`AddressSource` (or its value string), ``timeout``
                not a finite number of seconds >= 0 or ``interval`` not one > 0.
        """
        timeout = check_seconds("timeout", timeout)
        interval = check_seconds("interval", interval, positive=True)
        if not isinstance(nics, str) or nics not in ("all", "any"):
            raise SpecError("nics", "must be 'all' or 'any'", nics)
        if family is not None and (isinstance(family, bool) or family not in (4, 6)):
            raise SpecError("family", "must be 4, 6 or None (either)", family)
        source = as_enum(AddressSource, "source", source)
        macs, attempts = self.mac_addresses(), addrs.Attempts()
        deadline = time.monotonic() + timeout
        while True:
            found = addrs.only_family(self._addresses(source, attempts), family)
            if addrs.satisfied(found, macs, nics):
                return found
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"{self.name}: no IPv{family or '4/6'} address on {nics} NICs within "
                    f"{timeout:g} s ({attempts.describe()})",
                    name=self.name,
                    waited=timeout,
                    last=found,
                )
            time.sleep(interval)

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


def _check_device_xml(device_xml: object) -> None:
    """Refuse what is not a string of well-formed XML (before libvirt is asked).

    Raises:
        SpecError: naming ``device_xml``.
    """
    text = check_text("device_xml", device_xml, max_len=1 << 20, multiline=True)  # type: ignore[arg-type]
    parse_checked("device_xml", text)
