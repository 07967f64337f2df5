"""Commands, their input and their output, the same for every transport.

A command is a string (run by ``/bin/sh -c``) or an argv (no shell); :func:`normalize_command`
checks it. :class:`InputFeeder` feeds stdin from bytes or a file object on a thread;
:class:`OutputSink` collects stdout and stderr or hands each piece to a callback. Pure
plumbing: no sockets, no libvirt.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import IO, TypeAlias

from hvlib.errors import Command, SpecError

log = logging.getLogger("hvlib")

Input: TypeAlias = bytes | bytearray | memoryview | IO[bytes]
"""What can be fed to a command's stdin: bytes, or a binary file object read in chunks."""
OutputCallback: TypeAlias = Callable[[bytes], None]
CHUNK = 64 * 1024
"""Size of the pieces input is read and sent in."""


def normalize_command(command: Command) -> str | tuple[str, ...]:
    """Check a command: a non-empty string, or a non-empty sequence of strings; no NUL.

    Raises:
        SpecError: empty, not strings, or containing NUL (which no argv can carry).
    """
    if isinstance(command, str):
        if not command.strip():
            raise SpecError("command", "must not be empty")
        if "\0" in command:
            raise SpecError("command", "must not contain NUL", command)
        return command
    if isinstance(command, bytes | bytearray):
        raise SpecError("command", "must be a string or a sequence of strings", command)
    argv = tuple(command)
    if not argv or not argv[0]:
        raise SpecError("command", "argv must not be empty and argv[0] must be a name", argv)
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise SpecError(f"command[{i}]", "must be a string", arg)
        if "\0" in arg:
            raise SpecError(f"command[{i}]", "must not contain NUL", arg)
    return argv


def shell_argv(command: str | tuple[str, ...]) -> list[str]:
    """The argv that runs ``command``: a string through ``/bin/sh -c``, an argv as is."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def input_chunks(data: Input | None, size: int = CHUNK) -> Iterator[bytes]:
    """``data`` as chunks of at most ``size`` bytes (a file object is read lazily)."""
    if data is None:
        return
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
        return
    while chunk := data.read(size):
        yield chunk


class InputFeeder:
    """Feeds a command's stdin from ``data`` on a thread, then ends it; without input, ends
    it at once. ``write(chunk)`` sends one chunk, ``end()`` closes the stream; a failure of
    either of the kinds in ``gone`` means the command stopped reading (logged, not raised).
    An error reading the caller's ``data`` is kept for :meth:`raise_local_error`.
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        end: Callable[[], None],
        data: Input | None,
        *,
        gone: tuple[type[BaseException], ...],
        label: str,
    ) -> None:
        self._write, self._end, self._gone, self._label = write, end, gone, label
        self._local_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if data is None:
            self._close()
            return
        self._thread = threading.Thread(
            target=self._feed, args=(data,), name=f"hvlib-{label}-stdin", daemon=True
        )
        self._thread.start()

    def _feed(self, data: Input) -> None:
        try:
            for chunk in self._chunks(data):
                self._write(chunk)
        except self._gone as e:
            log.debug("stdin of %s command: %s", self._label, e)
        finally:
            self._close()

    def _chunks(self, data: Input) -> Iterator[bytes]:
        chunks = input_chunks(data)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except BaseException as e:  # reading the caller's input failed
                self._local_error = e
                return
            yield chunk

    def _close(self) -> None:
        with contextlib.suppress(*self._gone):
            self._end()

    def join(self) -> None:
        """Wait (briefly) for the feeding thread."""
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def raise_local_error(self) -> None:
        """Re-raise an error reading the caller's input (the command saw a short stdin)."""
        if self._local_error is not None:
            raise self._local_error


class OutputSink:
    """Collects a command's stdout and stderr, or hands each piece to a callback.

    Thread-safe enough for one reader thread per stream.
    """

    def __init__(
        self, on_stdout: OutputCallback | None = None, on_stderr: OutputCallback | None = None
    ) -> None:
        self._callbacks = (on_stdout, on_stderr)
        self._buffers = (bytearray(), bytearray())

    def stdout(self, data: bytes) -> None:
        """Take a piece of stdout."""
        self._take(0, data)

    def stderr(self, data: bytes) -> None:
        """Take a piece of stderr."""
        self._take(1, data)

    def _take(self, which: int, data: bytes) -> None:
        if not data:
            return
        callback = self._callbacks[which]
        if callback is None:
            self._buffers[which].extend(data)
        else:
            callback(data)

    @property
    def collected(self) -> tuple[bytes, bytes]:
        """(stdout, stderr) kept so far (b"" for a stream given to a callback)."""
        return bytes(self._buffers[0]), bytes(self._buffers[1])


def decode_lines(callback: Callable[[str], None]) -> OutputCallback:
    """An ``on_stdout``/``on_stderr`` callback that calls ``callback`` once per decoded line
    (UTF-8, bad bytes replaced, newline stripped). A last unterminated line is not delivered."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending = [""]

    def take(data: bytes) -> None:
        text = pending[0] + decoder.decode(data)
        *lines, pending[0] = text.split("\n")
        for line in lines:
            callback(line)

    return take
