"""Hardware acceleration: does KVM work on a host? Probed, reported, cached per host.

"libvirt lists kvm" is not "kvm works": on some hosts ``/dev/kvm`` exists and libvirt offers
``<domain type='kvm'>``, yet a stock Linux kernel never boots under it (FIELD-NOTES). So the
report (:class:`Acceleration`) answers four questions, each with what was observed:

- ``kvm_present``: is there a KVM device (``/dev/kvm``, on a local host) and does libvirt offer
  the ``kvm`` domain type (its domain capabilities)?
- ``kvm_openable``: can the hypervisor (QEMU, as libvirt runs it) open it? Known for sure once
  a probe guest started with ``type='kvm'``; before that, the device's mode is quoted.
- ``kvm_runs_guests``: does a real Linux kernel (a probe guest: :class:`ProbeGuest`) boot
  under ``<domain type='kvm'>`` to its ready line within a deadline?
- ``nested``: does the host's KVM module allow nested virtualization
  (``/sys/module/kvm_intel|kvm_amd/parameters/nested``, local hosts only)?

The probe boots a transient domain (it disappears when destroyed) and costs a boot, so the
report is cached per host URI for the life of the process (``refresh=True`` probes again). The
probe guest is passed in, or set once with :func:`set_probe_guest`, or named by the environment
(``HVLIB_PROBE_KERNEL``, ``HVLIB_PROBE_INITRD``, ``HVLIB_PROBE_CMDLINE``, ``HVLIB_PROBE_READY``);
without one, the report says what it could check and that the guest test was not run.
Libvirt is only called through :meth:`hvlib.Host.call`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hvlib.enums import State, VirtType
from hvlib.errors import HostError, HvlibError, WaitTimeout
from hvlib.model.render import render
from hvlib.model.spec import DomainSpec
from hvlib.virt import _virt
from hvlib.virt.console import ConsoleCapture

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

log = logging.getLogger("hvlib")

PROBE_TIMEOUT = 20.0
"""Seconds a probe guest gets to print its ready line (the test guest needs ~1 s under KVM and
~3.5 s under software emulation)."""
DEFAULT_READY = r"hvlib-guest: ready"
"""The ready line of hvlib's test guest (:mod:`hvlib.testkit.guestkit`)."""
KVM_DEVICE = "/dev/kvm"
SYS_MODULE = "/sys/module"
ENV_ALLOW_EMULATION = "HVLIB_ALLOW_EMULATION"
ENV_PROBE = {
    "kernel": "HVLIB_PROBE_KERNEL",
    "initrd": "HVLIB_PROBE_INITRD",
    "cmdline": "HVLIB_PROBE_CMDLINE",
    "ready": "HVLIB_PROBE_READY",
}
NOT_PROBED_TEST = "not probed: libvirt's test:/// driver runs no guests"


@dataclass(frozen=True)
class Finding:
    """One answer of the report: ``ok`` True, False or None (not checked), and why."""

    ok: bool | None
    detail: str

    def __str__(self) -> str:
        word = {True: "yes", False: "no", None: "unknown"}[self.ok]
        return f"{word}: {self.detail}"


@dataclass(frozen=True)
class ProbeGuest:
    """A bootable Linux guest for the KVM probe: kernel (and initrd) paths on the host, the
    kernel command line, and a regular expression for the console line that means "booted"."""

    kernel: str
    initrd: str | None = None
    cmdline: str = "console=ttyS0"
    ready: str = DEFAULT_READY
    timeout: float = PROBE_TIMEOUT
    memory_mib: int = 256


@dataclass(frozen=True)
class Acceleration:
    """Whether KVM works on one host, each answer with what was observed."""

    uri: str
    kvm_present: Finding
    kvm_openable: Finding
    kvm_runs_guests: Finding
    nested: Finding
    probe_seconds: float | None = None
    """How long the probe guest ran (None: no probe)."""

    @property
    def works(self) -> bool | None:
        """True: a probe guest booted under KVM. False: KVM is missing, cannot be opened, or
        did not boot the probe guest. None: not known (no probe was run)."""
        for finding in (self.kvm_present, self.kvm_openable):
            if finding.ok is False:
                return False
        return self.kvm_runs_guests.ok

    @property
    def probed(self) -> bool:
        """Whether a probe guest was run (whatever came of it)."""
        return self.probe_seconds is not None

    @property
    def summary(self) -> str:
        """One sentence: the verdict and the observation behind it."""
        if self.kvm_present.ok is None and self.kvm_runs_guests.ok is None:
            return self.kvm_runs_guests.detail
        if self.kvm_present.ok is False:
            return f"KVM is not available: {self.kvm_present.detail}"
        if self.kvm_openable.ok is False:
            return f"KVM is present but the hypervisor cannot open it: {self.kvm_openable.detail}"
        if self.kvm_runs_guests.ok is False:
            return (
                "KVM is present but does not run stock guest kernels: "
                f"{self.kvm_runs_guests.detail}"
            )
        if self.kvm_runs_guests.ok:
            return f"KVM works: {self.kvm_runs_guests.detail}"
        return f"KVM is present; whether it runs guests is unknown: {self.kvm_runs_guests.detail}"

    def __str__(self) -> str:
        return "\n".join(
            [
                f"acceleration on {self.uri}: {self.summary}",
                f"  kvm present:       {self.kvm_present}",
                f"  kvm openable:      {self.kvm_openable}",
                f"  kvm runs guests:   {self.kvm_runs_guests}",
                f"  nested (host KVM): {self.nested}",
            ]
        )


# -- the probe guest ----------------------------------------------------------------------------

_probe_hook: ProbeGuest | Callable[[], ProbeGuest | None] | None = None
_cache: dict[str, Acceleration] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def set_probe_guest(guest: ProbeGuest | Callable[[], ProbeGuest | None] | None) -> None:
    """Set the probe guest used when none is passed (a ProbeGuest, or a callable returning one
    when asked, e.g. one that builds a test kit on first use); None removes it."""
    global _probe_hook
    _probe_hook = guest


def probe_guest(env: dict[str, str] | None = None) -> ProbeGuest | None:
    """The probe guest set by :func:`set_probe_guest`, else the one the environment names."""
    hook = _probe_hook
    if isinstance(hook, ProbeGuest):
        return hook
    if hook is not None:
        found = hook()
        if found is not None:
            return found
    env = dict(os.environ) if env is None else env
    kernel = env.get(ENV_PROBE["kernel"])
    if not kernel:
        return None
    return ProbeGuest(
        kernel=kernel,
        initrd=env.get(ENV_PROBE["initrd"]) or None,
        cmdline=env.get(ENV_PROBE["cmdline"]) or ProbeGuest.cmdline,
        ready=env.get(ENV_PROBE["ready"]) or DEFAULT_READY,
    )


def allow_emulation_default(value: bool | None, env: dict[str, str] | None = None) -> bool:
    """``value``, or when None the environment's ``HVLIB_ALLOW_EMULATION`` (1/true/yes/on)."""
    if value is not None:
        return value
    env = dict(os.environ) if env is None else env
    return env.get(ENV_ALLOW_EMULATION, "").strip().lower() in ("1", "true", "yes", "on")


# -- the report ---------------------------------------------------------------------------------


def acceleration(
    host: HostLike, guest: ProbeGuest | None = None, *, refresh: bool = False
) -> Acceleration:
    """The acceleration report of ``host``: cached per URI; built (probing with ``guest``, else
    :func:`probe_guest`) on first use, when ``refresh``, or when the cached report has no probe
    and a probe guest is now known.

    Raises:
        HostError: the connection failed (a failing probe guest is a finding, not an error).
    """
    if host.is_test_driver:
        return not_probed(host.uri, NOT_PROBED_TEST)
    if host.driver != "QEMU":
        return not_probed(host.uri, "not probed: KVM is run by libvirt's QEMU driver only")
    with _lock(host.uri):
        cached = _cache.get(host.uri)
        guest = guest or probe_guest()
        if cached is not None and not refresh and (cached.probed or guest is None):
            return cached
        report = build_report(host, guest)
        _cache[host.uri] = report
        log.info("%s", report)
        return report


def cached(uri: str) -> Acceleration | None:
    """The cached report of ``uri``, if one was made."""
    return _cache.get(uri)


def forget(uri: str | None = None) -> None:
    """Drop the cached report of ``uri`` (all of them when None)."""
    if uri is None:
        _cache.clear()
    else:
        _cache.pop(uri, None)


def _lock(uri: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(uri, threading.Lock())


def not_probed(uri: str, why: str) -> Acceleration:
    """A report that checked nothing, saying ``why``."""
    nothing = Finding(None, why)
    return Acceleration(uri, nothing, nothing, nothing, nothing)


def build_report(host: HostLike, guest: ProbeGuest | None) -> Acceleration:
    """Check and probe ``host`` now (uncached).

    Raises:
        HostError: the connection failed.
    """
    local = is_local(host.uri)
    present = _present(host, local)
    nested = nested_module() if local else Finding(None, "not checked: the host is remote")
    if present.ok is False:
        skipped = Finding(False, "not probed: KVM is not available")
        return Acceleration(host.uri, present, skipped, skipped, nested)
    if guest is None:
        openable = device_mode_finding() if local else Finding(None, "not checked: remote host")
        runs = Finding(
            None,
            "no probe guest was run (pass probe_kernel= to acceleration(), call "
            f"hvlib.virt.accel.set_probe_guest(), or set {ENV_PROBE['kernel']})",
        )
        return Acceleration(host.uri, present, openable, runs, nested)
    openable, runs, seconds = probe(host, guest)
    return Acceleration(host.uri, present, openable, runs, nested, seconds)


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a daemon on this machine (no host name in it)."""
    return not urlsplit(uri).hostname


def _present(host: HostLike, local: bool) -> Finding:
    listed = _kvm_listed(host)
    if not local:
        return listed
    device = kvm_device()
    if device.ok is False or listed.ok is False:
        return Finding(False, f"{device.detail}; {listed.detail}")
    return Finding(True, f"{device.detail}; {listed.detail}")


def _kvm_listed(host: HostLike) -> Finding:
    """Whether libvirt offers domain type kvm (its domain capabilities answer for it)."""
    try:
        host.call(lambda c: c.getDomainCapabilities(None, "x86_64", None, "kvm", 0), safe=True)
    except HvlibError as e:
        if isinstance(e, HostError):
            raise
        return Finding(False, f"libvirt offers no kvm domain type: {e}")
    return Finding(True, "libvirt's domain capabilities list <domain>kvm</domain>")


def kvm_device(path: str = KVM_DEVICE) -> Finding:
    """Whether the KVM device exists (with its mode and owner)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Finding(False, f"there is no {path} (the kvm module is not loaded)")
    except OSError as e:
        return Finding(False, f"{path}: {e.strerror}")
    if not stat.S_ISCHR(st.st_mode):
        return Finding(False, f"{path} is not a character device")
    return Finding(True, f"{path} exists ({_describe_mode(path, st)})")


def device_mode_finding(path: str = KVM_DEVICE) -> Finding:
    """What the device's mode says about who may open it (not a test: no probe was run)."""
    try:
        st = os.stat(path)
    except OSError as e:
        return Finding(None, f"not checked: {path}: {e.strerror}")
    others = st.st_mode & (stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH)
    mode = _describe_mode(path, st)
    if not others:
        return Finding(
            None,
            f"{path} is {mode}: only its owner can open it, so QEMU running as a "
            "non-root user (libvirt-qemu on Debian) cannot (chgrp kvm; chmod 660 would let "
            "group kvm); not probed",
        )
    return Finding(None, f"{path} is {mode}; not probed")


def _describe_mode(path: str, st: os.stat_result) -> str:
    import grp
    import pwd

    with contextlib.suppress(KeyError):
        owner = pwd.getpwuid(st.st_uid).pw_name
        group = grp.getgrgid(st.st_gid).gr_name
        return f"{stat.filemode(st.st_mode)} {owner}:{group}"
    return f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"


def nested_module(sys_module: str = SYS_MODULE) -> Finding:
    """Whether the host's KVM vendor module allows nested virtualization."""
    base = Path(sys_module)
    for module in ("kvm_intel", "kvm_amd"):
        param = base / module / "parameters" / "nested"
        if (base / module).is_dir():
            try:
                value = param.read_text().strip()
            except OSError as e:
                return Finding(False, f"{module} is loaded but {param}: {e.strerror}")
            ok = value.upper() in ("Y", "1")
            return Finding(ok, f"{param} is {value}")
    loaded = sorted(p.name for p in base.glob("kvm*")) if base.is_dir() else []
    return Finding(
        False,
        "neither kvm_intel nor kvm_amd is loaded"
        + (f" (KVM modules here: {', '.join(loaded)})" if loaded else ""),
    )


# -- the probe ----------------------------------------------------------------------------------


def probe(host: HostLike, guest: ProbeGuest) -> tuple[Finding, Finding, float]:
    """Boot ``guest`` as a transient ``type='kvm'`` domain; destroy it. Returns the openable
    and runs-guests findings and how long it took.

    Raises:
        HostError: the connection failed.
    """
    name = f"hvlib-kvm-probe-{secrets.token_hex(3)}"
    spec = DomainSpec(
        name=name,
        virt=VirtType.KVM,
        memory_mib=guest.memory_mib,
        kernel=guest.kernel,
        initrd=guest.initrd,
        cmdline=guest.cmdline,
    )
    xml = render(spec)
    started = time.monotonic()
    try:
        flags = _virt.C.VIR_DOMAIN_START_PAUSED
        handle = host.call(lambda c: c.createXML(xml, flags), name=name)
    except HvlibError as e:
        if isinstance(e, HostError):
            raise
        return (*_start_failed(e), time.monotonic() - started)
    try:
        runs = _watch(host, handle, name, guest)
    finally:
        with contextlib.suppress(HvlibError):
            host.call(lambda _c: handle.destroy(), name=name)
    opened = Finding(True, "QEMU opened it: a probe domain started with <domain type='kvm'>")
    return opened, runs, time.monotonic() - started


def _start_failed(e: HvlibError) -> tuple[Finding, Finding]:
    text = str(e)
    if "kvm" in text.lower():
        return (
            Finding(False, f"a probe domain with <domain type='kvm'> did not start: {text}"),
            Finding(False, "not probed: QEMU could not use KVM"),
        )
    why = f"the probe domain did not start (not a KVM error): {text}"
    return Finding(None, why), Finding(None, why)


def _watch(host: HostLike, handle: Any, name: str, guest: ProbeGuest) -> Finding:
    capture = ConsoleCapture(name)
    capture.attach(host.conn, handle)
    try:
        host.call(lambda _c: handle.resume(), name=name)
        started = time.monotonic()
        deadline = started + guest.timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = capture.wait_for(guest.ready, min(0.5, left))
            except WaitTimeout:
                state, reason = host.call(lambda _c: handle.state(), name=name, safe=True)
                if _virt.state_of(state) not in (State.RUNNING, State.BLOCKED):
                    return _failed(host, handle, name, guest, capture, (state, reason), started)
                continue
            took = time.monotonic() - started
            return Finding(
                True,
                f"a Linux kernel ({guest.kernel}) printed {line.strip()!r} on its console "
                f"{took:.1f} s after start under <domain type='kvm'>",
            )
        state, reason = host.call(lambda _c: handle.state(), name=name, safe=True)
        return _failed(host, handle, name, guest, capture, (state, reason), started)
    finally:
        capture.close()


def _failed(
    host: HostLike,
    handle: Any,
    name: str,
    guest: ProbeGuest,
    capture: ConsoleCapture,
    state: tuple[int, int],
    started: float,
) -> Finding:
    waited = time.monotonic() - started
    data = capture.data
    cpu = ""
    with contextlib.suppress(HvlibError, IndexError, TypeError):
        cpu_ns = host.call(lambda _c: handle.info(), name=name, safe=True)[4]
        cpu = f", having used {cpu_ns / 1e9:.1f} s of CPU time"
    tail = [ln for ln in data.decode("utf-8", "replace").replace("\r", "").split("\n") if ln]
    console = (
        f"its console printed {len(data)} bytes, ending {tail[-3:]!r}"
        if tail
        else "its console printed nothing (0 bytes)"
    )
    return Finding(
        False,
        f"a Linux kernel ({guest.kernel}) started under <domain type='kvm'> did not print "
        f"{guest.ready!r} within {waited:.0f} s: the domain was {describe_state(*state)}{cpu}; "
        f"{console}",
    )


def describe_state(state: int, reason: int) -> str:
    """libvirt's (state, reason) in words, e.g. ``running (booted)`` or ``paused (crashed)``."""
    word = _virt.state_of(state).value
    prefix = {
        State.RUNNING: "VIR_DOMAIN_RUNNING_",
        State.PAUSED: "VIR_DOMAIN_PAUSED_",
        State.SHUT_OFF: "VIR_DOMAIN_SHUTOFF_",
        State.CRASHED: "VIR_DOMAIN_CRASHED_",
    }.get(_virt.state_of(state))
    if prefix is None:
        return word
    names = [
        n[len(prefix) :].lower().replace("_", " ")
        for n in dir(_virt.C)
        if n.startswith(prefix) and getattr(_virt.C, n) == reason and not n.endswith("_LAST")
    ]
    return f"{word} ({names[0]})" if names else word
