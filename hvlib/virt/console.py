"""Capture of a domain's console through libvirt's console stream (works on remote hosts).

hvlib opens the stream when it starts a domain (VMs are started paused, the stream opened,
then resumed, so not a byte of the boot is lost) and keeps everything the guest prints, up
to a bound, in memory. The stream is non-blocking and driven by libvirt's event loop: a
blocking read on a thread was seen to make a later ``destroy()`` hang (FIELD-NOTES).
Waiters block on a condition until a line matches. This module is part of the Domain layer:
it is handed libvirt objects by :mod:`hvlib.virt.domain` and uses :mod:`hvlib.virt._virt` for
the rest.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from hvlib.errors import HostError, WaitTimeout
from hvlib.virt import _virt

log = logging.getLogger("hvlib")
MAX_BYTES = 8 * 1024 * 1024
_TERMINAL_CONTROL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[ -/]*[0-~])")
"""Terminal escape sequences (ECMA-48: CSI, and ESC + intermediates + final). Firmware such
as SeaBIOS clears the screen with them: a guest's first line can start with ``ESC c ESC [2J``."""


class ConsoleCapture:
    """Everything a domain printed on its console since hvlib started it.

    ``listeners`` receive each chunk as it arrives (on libvirt's event thread).
    """

    def __init__(self, name: str, max_bytes: int = MAX_BYTES) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.cond = threading.Condition()
        self._buf = bytearray()
        self._dropped = 0
        self._stream: Any = None
        self.closed = False
        self.ended = False
        """True once the stream ended by itself (the guest stopped, or libvirtd went away
        with the connection), not by :meth:`close`; :meth:`attach` resets it."""
        self.generation = 0
        """The connection generation the stream was opened on (see :meth:`attach`)."""
        self.listeners: list[Callable[[bytes], None]] = []

    def attach(self, conn: Any, handle: Any, *, force: bool = True, generation: int = 0) -> None:
        """Open the console stream of ``handle`` and start capturing (again, after the
        stream ended: what was captured is kept). ``force`` takes the console over from
        another client (libvirt's LXC driver does not offer that); ``generation`` is that of
        the Host's connection (:attr:`hvlib.virt.connection.Connection.generation`).

        Raises:
            Unsupported: the driver has no console streams (the test driver).
            HvlibError: libvirt refused to open the console.
        """
        with _virt.translated(self.name):
            stream = conn.newStream(_virt.C.VIR_STREAM_NONBLOCK)
            handle.openConsole(None, stream, _virt.C.VIR_DOMAIN_CONSOLE_FORCE if force else 0)
            events = (
                _virt.C.VIR_STREAM_EVENT_READABLE
                | _virt.C.VIR_STREAM_EVENT_ERROR
                | _virt.C.VIR_STREAM_EVENT_HANGUP
            )
            # through a weak reference: libvirt 9.0 never frees a stream callback's data
            # (see _virt.release_stream), which must then not pin this capture and its buffer
            stream.eventAddCallback(events, _weak_handler(self), None)
        with self.cond:
            self._stream, self.closed, self.ended = stream, False, False
            self.generation = generation

    def _on_event(self, stream: Any, events: int, _opaque: Any) -> None:
        if events & _virt.C.VIR_STREAM_EVENT_READABLE:
            self._drain(stream)
        if events & (_virt.C.VIR_STREAM_EVENT_ERROR | _virt.C.VIR_STREAM_EVENT_HANGUP):
            self._end()

    def connection_lost(self) -> None:
        """The Host's connection was lost: the stream ends with it (libvirt sends nothing on
        it when the daemon dies)."""
        self._end()

    def _end(self) -> None:
        """The stream ended by itself: note it, then close."""
        with self.cond:
            if self._stream is not None:
                self.ended = True
        self.close()

    def _drain(self, stream: Any) -> None:
        while True:
            try:
                chunk = stream.recv(65536)
            except Exception as e:  # the domain or the daemon went away under us
                log.debug("console of %s: %s", self.name, e)
                self._end()
                return
            if isinstance(chunk, int) or not chunk:  # -2: would block; b"": end
                if chunk == b"":
                    self._end()
                return
            self._append(bytes(chunk))

    def _append(self, chunk: bytes) -> None:
        with self.cond:
            self._buf += chunk
            excess = len(self._buf) - self.max_bytes
            if excess > 0:
                del self._buf[:excess]
                self._dropped += excess
            self.cond.notify_all()
        for listener in list(self.listeners):
            listener(chunk)

    def close(self) -> None:
        """Stop capturing (idempotent); what was captured stays readable."""
        stream, self._stream = self._stream, None
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if stream is None:
            return
        try:
            stream.eventRemoveCallback()
            stream.abort()
        except Exception as e:  # already torn down by libvirt
            log.debug("closing console stream of %s: %s", self.name, e)
        _virt.release_stream(stream)

    @property
    def data(self) -> bytes:
        """The captured bytes (the oldest dropped past ``max_bytes``)."""
        with self.cond:
            return bytes(self._buf)

    @property
    def offset(self) -> int:
        """Total bytes seen so far (including dropped ones): a position for waits."""
        with self.cond:
            return self._dropped + len(self._buf)

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        since: int = 0,
        *,
        reattach: Callable[[], bool] | None = None,
    ) -> str:
        """Block until a line printed after byte ``since`` matches ``pattern``; return the line.

        Lines are matched as a terminal shows them: carriage returns and terminal escape
        sequences are removed first, so ``^login:`` matches after a firmware cleared the screen.
        When the stream ends by itself, ``reattach`` is called: it re-opens the stream into
        this capture and returns True where the stream ended with the connection to libvirtd
        (killed, restarted: it reconnects first), or returns False (the domain stopped).

        Raises:
            WaitTimeout: no match within ``timeout`` s (``.last`` holds the console's tail).
            HostError: no match within ``timeout`` s after the stream ended with the
                connection and was re-opened: a line printed in between may have been
                missed. Also what ``reattach`` raises (the daemon did not come back).
        """
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        lost = False
        while True:
            with self.cond:
                line = self._match(regex, since)
                if line is not None:
                    return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._timed_out(regex, timeout, lost)
                if not self.ended or reattach is None:
                    self.cond.wait(remaining)
                    continue
            if reattach():
                lost = True
                log.warning("console stream of %s ended with its connection; re-opened", self.name)
            else:
                reattach = None

    def _timed_out(
        self, regex: re.Pattern[str], timeout: float, lost: bool
    ) -> WaitTimeout | HostError:
        tail = self._buf[-400:].decode("utf-8", "replace")
        last = _TERMINAL_CONTROL.sub("", tail).replace("\r", "").strip()
        what = (
            f"{self.name}: no console line matching {regex.pattern!r} within {timeout:g} s; "
            f"the console's last line: "
            f"{last.splitlines()[-1] if last else '(nothing printed)'!r}"
        )
        if lost:
            return HostError(
                f"{what}; the console stream ended with the connection to libvirtd meanwhile "
                "and was re-opened on the new one: a line printed in between was not captured",
                name=self.name,
            )
        return WaitTimeout(what, name=self.name, waited=timeout, last=tail)

    def _match(self, regex: re.Pattern[str], since: int) -> str | None:
        start = max(0, since - self._dropped)
        text = self._buf[start:].decode("utf-8", "replace").replace("\r", "")
        for line in _TERMINAL_CONTROL.sub("", text).split("\n"):
            if regex.search(line):
                return line
        return None


def _weak_handler(capture: ConsoleCapture) -> Callable[[Any, int, Any], None]:
    """A stream event callback that reaches ``capture`` through a weak reference."""
    ref = weakref.ref(capture)

    def handler(stream: Any, events: int, opaque: Any) -> None:
        target = ref()
        if target is not None:
            target._on_event(stream, events, opaque)

    return handler
