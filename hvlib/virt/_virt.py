"""The one module that imports libvirt: connections, error translation, states, the event loop.

Everything above this module sees hvlib's own exceptions, enums and objects. Every libvirt call made
by :mod:`hvlib.virt.host` and :mod:`hvlib.virt.domain` runs inside :func:`translated`, which is the
single place where ``libvirt.libvirtError`` becomes an :mod:`hvlib.errors` exception (the original
kept as ``__cause__`` and its code as ``.code``). Nothing here holds policy.

Tests may replace the module attribute ``libvirt`` with a counting proxy: every connection
and every call goes through it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import libvirt

from hvlib import errors
from hvlib.enums import State

log = logging.getLogger("hvlib")

# libvirt's per-process default error handler prints every error to stderr; hvlib raises
# them instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

_NOT_FOUND = {
    "VIR_ERR_NO_NETWORK",
    "VIR_ERR_NO_STORAGE_POOL",
    "VIR_ERR_NO_STORAGE_VOL",
    "VIR_ERR_NO_DOMAIN_SNAPSHOT",
    "VIR_ERR_NO_DOMAIN_CHECKPOINT",
    "VIR_ERR_NO_NETWORK_PORT",
    "VIR_ERR_NO_SECRET",
    "VIR_ERR_NO_NODE_DEVICE",
    "VIR_ERR_NO_DOMAIN_METADATA",
}
_EXISTS = {
    "VIR_ERR_DOM_EXIST",
    "VIR_ERR_NETWORK_EXIST",
    "VIR_ERR_STORAGE_VOL_EXIST",
    "VIR_ERR_NETWORK_PORT_EXIST",
}
_UNSUPPORTED = {
    "VIR_ERR_NO_SUPPORT",
    "VIR_ERR_OPERATION_UNSUPPORTED",
    "VIR_ERR_CONFIG_UNSUPPORTED",
    "VIR_ERR_ARGUMENT_UNSUPPORTED",
}
_HOST = {
    "VIR_ERR_NO_CONNECT",
    "VIR_ERR_INVALID_CONN",
    "VIR_ERR_RPC",
    "VIR_ERR_AUTH_FAILED",
    "VIR_ERR_AUTH_CANCELLED",
    "VIR_ERR_AUTH_UNAVAILABLE",
}
_SPEC = {
    "VIR_ERR_XML_ERROR",
    "VIR_ERR_XML_DETAIL",
    "VIR_ERR_XML_INVALID_SCHEMA",
    "VIR_ERR_INVALID_MAC",
}


def _codes(names: set[str]) -> frozenset[int]:
    return frozenset(getattr(libvirt, n) for n in names if hasattr(libvirt, n))


_CLASS_BY_CODE: dict[frozenset[int], type[errors.HvlibError]] = {
    frozenset({libvirt.VIR_ERR_NO_DOMAIN}): errors.DomainNotFound,
    _codes(_NOT_FOUND): errors.NotFound,
    _codes(_EXISTS): errors.AlreadyExists,
    _codes(_UNSUPPORTED): errors.Unsupported,
    _codes(_HOST): errors.HostError,
    frozenset({libvirt.VIR_ERR_OPERATION_INVALID}): errors.InvalidState,
}
_HOST_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})


def translate(err: BaseException, name: str | None = None) -> errors.HvlibError:
    """Map one libvirt error onto hvlib's tree (the caller raises it ``from err``).

    Raises:
        TypeError: ``err`` is not a libvirt error (re-raise it instead).
    """
    if not isinstance(err, libvirt.libvirtError):
        raise TypeError(f"not a libvirt error: {err!r}") from err
    code = err.get_error_code() or 0
    message = err.get_error_message() or str(err)
    if code in _codes(_SPEC):
        spec_err = errors.SpecError("xml", f"libvirt rejected the XML: {message}")
        spec_err.code, spec_err.name = code, name
        return spec_err
    if code == libvirt.VIR_ERR_OPERATION_FAILED and "already exists" in message:
        # a define racing another: libvirt 9.0 reports it as a plain operation failure
        return errors.AlreadyExists(message, code=code, name=name)
    for codes, cls in _CLASS_BY_CODE.items():
        if code in codes:
            return cls(message, code=code, name=name)
    if code == libvirt.VIR_ERR_SYSTEM_ERROR and err.get_error_domain() in _HOST_DOMAINS:
        return errors.HostError(message, code=code, name=name)
    return errors.LibvirtError(message, code=code, name=name)


@contextlib.contextmanager
def translated(name: str | None = None) -> Iterator[None]:
    """Run a block of libvirt calls; re-raise any libvirt error as hvlib's own.

    Raises:
        HvlibError: the translated error (see :func:`translate`).
    """
    try:
        yield
    except libvirt.libvirtError as e:
        raise translate(e, name) from e


_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: State.UNKNOWN,
    libvirt.VIR_DOMAIN_RUNNING: State.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: State.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: State.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: State.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: State.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: State.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: State.PM_SUSPENDED,
}


def state_of(code: int) -> State:
    """hvlib's State for libvirt's numeric domain state."""
    return _STATES.get(code, State.UNKNOWN)


# libvirt constants the layers above need, under hvlib's names.
C = libvirt  # attribute access only, e.g. _virt.C.VIR_DOMAIN_XML_INACTIVE

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def ensure_event_loop() -> None:
    """Make sure a libvirt event loop runs, so events, keepalive and streams work.

    If the application already registered one (e.g. ``libvirtaio``), it is used; otherwise
    hvlib registers libvirt's default implementation and runs it on a daemon thread it owns.
    Must run before the first connection is opened.
    """
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None or _app_loop_registered():
            return
        libvirt.virEventRegisterDefaultImpl()
        _loop_thread = threading.Thread(target=_run_loop, name="hvlib-libvirt-events", daemon=True)
        _loop_thread.start()


def _app_loop_registered() -> bool:
    aio = sys.modules.get("libvirtaio")
    return aio is not None and getattr(aio, "get_current_impl", lambda: None)() is not None


def _run_loop() -> None:
    while True:
        if libvirt.virEventRunDefaultImpl() < 0:
            log.warning("libvirt event loop iteration failed")


def open_connection(uri: str, *, readonly: bool = False) -> Any:
    """Open a libvirt connection to ``uri`` (with the event loop running).

    Raises:
        HostError: the daemon cannot be reached or refused the connection.
        LibvirtError: any other libvirt failure.
    """
    ensure_event_loop()
    with translated():
        try:
            conn = libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
        except libvirt.libvirtError as e:
            raise errors.HostError(
                f"cannot connect to {uri}: {e.get_error_message()}", code=e.get_error_code()
            ) from e
    return conn


def release_stream(stream: Any) -> None:
    """Free the libvirt object of a stream that is done with (its callback removed, finished
    or aborted). libvirt-python keeps the Python stream of an event callback alive after
    ``eventRemoveCallback`` (measured with libvirt 9.0 and libvirt-python 12: the callback's
    data stays referenced from C), and that stream keeps its connection, socket and all, open
    after the Host closed it: one connection left per Host that captured a console (the 67
    unix sockets of the hung B6 run). The Python object stays, emptied."""
    handle = getattr(stream, "_o", None)
    if handle is None:
        return
    stream.cb, stream._o, stream._conn = None, None, None
    with contextlib.suppress(libvirt.libvirtError):
        libvirt.libvirtmod.virStreamFree(handle)


def code_of(exc: BaseException) -> int | None:
    """libvirt's error code of a raw libvirt error; None for any other exception."""
    return exc.get_error_code() if isinstance(exc, libvirt.libvirtError) else None


def lxc_open_namespace(handle: Any, name: str | None = None) -> list[int]:
    """File descriptors of the namespaces of a running LXC domain's init (caller closes them).

    Raises:
        Unsupported: not an LXC domain, or the connection cannot pass file descriptors.
        InvalidState: the domain is not running (or its init has not started yet).
        HvlibError: any other libvirt failure.
    """
    import libvirt_lxc

    with translated(name):
        return [int(fd) for fd in libvirt_lxc.lxcOpenNamespace(handle, 0)]


_AGENT_ERRORS = frozenset(
    getattr(libvirt, n)
    for n in (
        "VIR_ERR_AGENT_UNRESPONSIVE",
        "VIR_ERR_AGENT_UNSYNCED",
        "VIR_ERR_AGENT_COMMAND_TIMEOUT",
        "VIR_ERR_AGENT_COMMAND_FAILED",
    )
    if hasattr(libvirt, n)
)


def agent_command(handle: Any, command: str, timeout: int, name: str | None = None) -> str:
    """Send one QEMU guest agent command (JSON text) to a running domain; its JSON answer.

    Raises:
        GuestAccessError: the agent did not answer (not connected, not running in the guest,
            timed out) or refused the command (the message is libvirt's).
        Unsupported: the driver has no agent passthrough.
        HvlibError: any other libvirt failure.
    """
    import libvirt_qemu

    try:
        return str(libvirt_qemu.qemuAgentCommand(handle, command, timeout, 0))
    except libvirt.libvirtError as e:
        code = e.get_error_code()
        if code in _AGENT_ERRORS:
            message = e.get_error_message() or str(e)
            raise errors.GuestAccessError(
                f"{name}: the guest agent: {message}", code=code, name=name
            ) from e
        raise translate(e, name) from e
