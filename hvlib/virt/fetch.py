"""Reading an image's bytes from where it comes from, in chunks: a local file or HTTP(S).

:func:`open_source` gives a :class:`SourceReader` (its length when known, its chunks); the
reads of an HTTP source wait at most ``timeout`` seconds each, so a server that stalls ends
the transfer with :class:`hvlib.errors.ImageTimeout`; a body shorter than its
``Content-Length`` ends it with :class:`hvlib.errors.ImageError`. :func:`read_small` reads a
whole small document (a ``SHA256SUMS`` listing). Nothing is held in memory beyond one chunk.

What it must not do: call libvirt, or write anything (the caller streams the chunks on).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import BinaryIO

from hvlib.errors import ImageError, ImageTimeout
from hvlib.model.imagesrc import ImageSource, SourceKind

CHUNK = 256 * 1024
"""Bytes per read (and per libvirt stream message)."""
_USER_AGENT = "hvlib-image-import"


class SourceReader(contextlib.AbstractContextManager["SourceReader"]):
    """An open image source: ``length`` (bytes, None when the server does not say) and
    :meth:`chunks`. Close it (or use it as a context manager) when done."""

    def __init__(self, source: ImageSource, file: BinaryIO, length: int | None, timeout: float):
        self.source = source
        self.length = length
        self._file = file
        self._timeout = timeout

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            self._file.close()

    def read(self, size: int = CHUNK) -> bytes:
        """Up to ``size`` bytes (b"" at the end).

        Raises:
            ImageTimeout: no byte arrived for ``timeout`` s. ImageError: the read failed.
        """
        where = self.source.location
        try:
            return self._file.read(size)
        except TimeoutError as e:
            raise ImageTimeout(f"{where}: no data for {self._timeout:g} s (stalled)") from e
        except http.client.IncompleteRead as e:
            raise ImageError(f"{where}: the server closed the connection early: {e}") from e
        except (OSError, http.client.HTTPException) as e:
            raise ImageError(f"{where}: read failed: {e}") from e

    def chunks(self) -> Iterator[bytes]:
        """The rest of the bytes, chunk by chunk.

        Raises:
            ImageTimeout, ImageError: as :meth:`read`; ImageError also when the body ends
            before ``length`` bytes (a truncated transfer).
        """
        total = 0
        while chunk := self.read():
            total += len(chunk)
            yield chunk
        self.check_complete(total)

    def check_complete(self, total: int) -> None:
        """Raises ImageError when ``total`` bytes are fewer than the length announced."""
        if self.length is not None and total != self.length:
            raise ImageError(
                f"{self.source.location}: truncated: {total} of {self.length} bytes arrived"
            )


def open_source(source: ImageSource, timeout: float) -> SourceReader:
    """Open ``source`` for reading.

    Raises:
        ImageError: the file cannot be opened, or the server refused or answered an error
            (the HTTP status is in the message).
        ImageTimeout: the server did not answer within ``timeout`` s.
    """
    if source.kind is SourceKind.FILE:
        try:
            file = open(source.location, "rb")  # noqa: SIM115 - the reader closes it
        except OSError as e:
            raise ImageError(f"cannot open {source.location}: {e.strerror or e}") from e
        length = _file_length(file)
        return SourceReader(source, file, length, timeout)
    return _open_http(source, timeout)


def _file_length(file: BinaryIO) -> int | None:
    try:
        return os.fstat(file.fileno()).st_size
    except OSError:
        return None


def _open_http(source: ImageSource, timeout: float) -> SourceReader:
    request = urllib.request.Request(source.location, headers={"User-Agent": _USER_AGENT})
    where = source.location
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise ImageError(f"{where}: HTTP {e.code} {e.reason}") from e
    except TimeoutError as e:
        raise ImageTimeout(f"{where}: no answer within {timeout:g} s") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError | socket.timeout):
            raise ImageTimeout(f"{where}: no answer within {timeout:g} s") from e
        raise ImageError(f"{where}: cannot fetch: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:
        raise ImageError(f"{where}: cannot fetch: {e}") from e
    header = response.headers.get("Content-Length")
    length = int(header) if header is not None and header.strip().isdigit() else None
    return SourceReader(source, response, length, timeout)


def read_small(source: ImageSource, timeout: float, limit: int) -> bytes:
    """The whole of a small document at ``source`` (at most ``limit`` bytes).

    Raises:
        ImageError: it cannot be read, is truncated, or is larger than ``limit``.
        ImageTimeout: the server stalled.
    """
    with open_source(source, timeout) as reader:
        data = reader.read(limit + 1)
        while len(data) <= limit and (more := reader.read(limit + 1 - len(data))):
            data += more
        if len(data) > limit:
            raise ImageError(f"{source.location}: larger than {limit} bytes")
        reader.check_complete(len(data))
        return data
