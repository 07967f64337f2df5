"""Moving a volume's bytes through libvirt streams: chunks out of bytes or a binary file,
sending a chunk whole, and a sink that keeps only a SHA-256.

What :class:`hvlib.virt.pools.Volume`'s upload and download use; the stream itself is
libvirt's, opened and translated by the caller.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from hvlib.errors import SpecError
from hvlib.model.volplan import Data

CHUNK = 256 * 1024
"""Bytes per stream message (libvirt's RPC payload limit is 256 KiB)."""


class Digest(io.RawIOBase):
    """A write-only file that keeps only the SHA-256 of what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self._hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._hash.update(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Payload:
    """A volume's wanted content: bytes in memory, or a local file read in chunks (never
    whole). ``size``, ``head`` (the first bytes, for format checks) and ``sha256`` (computed
    once, by streaming a file)."""

    HEAD = 64 * 1024

    def __init__(self, data: Data | None = None, path: Path | None = None) -> None:
        self._data = None if data is None else bytes(data)
        self._path = path
        if self._data is not None:
            self.size, self.head = len(self._data), self._data[: self.HEAD]
        else:
            assert path is not None
            with path.open("rb") as f:
                self.size, self.head = os.fstat(f.fileno()).st_size, f.read(self.HEAD)

    @classmethod
    def of(cls, data: object) -> Payload:
        """A payload of bytes-like ``data`` or of the file at the path ``data``.

        Raises:
            SpecError: neither, or the path names no readable file.
        """
        if isinstance(data, bytes | bytearray | memoryview):
            return cls(data=data)
        if isinstance(data, os.PathLike):
            path = Path(os.fspath(data))
            try:
                return cls(path=path)
            except OSError as e:
                raise SpecError("data", f"cannot read {path}: {e.strerror or e}") from e
        raise SpecError("data", "must be bytes or a file path (os.PathLike)", type(data).__name__)

    @functools.cached_property
    def sha256(self) -> str:
        if self._data is not None:
            return hashlib.sha256(self._data).hexdigest()
        sink = Digest()
        with self.open() as f:
            for chunk in iter(lambda: _read_bytes(f), b""):
                sink.write(chunk)
        return sink.hexdigest()

    def open(self) -> BinaryIO:
        """The content as a binary file (a fresh handle on the file, or the bytes)."""
        if self._data is not None:
            return io.BytesIO(self._data)
        assert self._path is not None
        return self._path.open("rb")


def byte_source(data: Data | BinaryIO) -> tuple[int, Iterator[bytes]]:
    """(size, chunks) of bytes-like data or of a binary file from its position to its end."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        return len(view), (bytes(view[i : i + CHUNK]) for i in range(0, len(view), CHUNK))
    if hasattr(data, "read") and hasattr(data, "seek"):
        file: BinaryIO = data
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
        return end - start, iter(lambda: _read_bytes(file), b"")
    raise SpecError("data", "must be bytes or a binary file", type(data).__name__)


def _read_bytes(f: Any) -> bytes:
    chunk = f.read(CHUNK)
    if not isinstance(chunk, bytes):
        raise SpecError("data", "the file must be opened in binary mode", type(chunk).__name__)
    return chunk


def send_all(stream: Any, chunk: bytes) -> None:
    sent = 0
    while sent < len(chunk):
        n = stream.send(chunk[sent:])
        if n < 0:  # -2: would block (only on a non-blocking stream)
            continue
        sent += n
