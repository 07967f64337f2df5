"""A writer of cpio "newc" archives (the initramfs format), reproducible byte for byte.

Pure: it writes to the file object it is given (:func:`finish_gzip` gzips a buffer with a fixed
timestamp). No subprocess, no network.
"""

from __future__ import annotations

import gzip
import io
import posixpath
from typing import BinaryIO

_S_IFDIR, _S_IFREG, _S_IFLNK, _S_IFCHR = 0o040000, 0o100000, 0o120000, 0o020000


class NewcWriter:
    """Write a cpio "newc" archive (magic 070701, no checksums), as the kernel's initramfs reads it.

    Names are relative ("bin/sh"); missing parent directories are added (mode 0755) before an
    entry. Every entry is owned by root and has the same mtime, so equal inputs give equal bytes.
    """

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._ino = 0
        self._names: set[str] = set()
        self._closed = False

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        """Add a directory. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFDIR | perm, nlink=2)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file holding ``data``. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFREG | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        """Add a symbolic link to ``target``. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFLNK | 0o777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node. Raises ValueError for a bad or repeated name."""
        self._entry(name, _S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        """Write the ``TRAILER!!!`` entry; the archive is complete. Idempotent."""
        if not self._closed:
            self._header("TRAILER!!!", 0, 0, b"", (0, 0), 1)
            self._closed = True

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        rdev: tuple[int, int] = (0, 0),
        nlink: int = 1,
    ) -> None:
        name = _normalize_name(name)
        if self._closed:
            raise ValueError("archive already closed")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name!r}")
        self._ensure_parents(name)
        self._names.add(name)
        self._ino += 1
        self._header(name, self._ino, mode, data, rdev, nlink)

    def _ensure_parents(self, name: str) -> None:
        """Add the missing parent directories of ``name`` (mode 0755)."""
        parent = posixpath.dirname(name)
        if parent and parent not in self._names:
            self.add_dir(parent)

    def _header(
        self, name: str, ino: int, mode: int, data: bytes, rdev: tuple[int, int], nlink: int
    ) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, self._mtime, len(data), 0, 0, *rdev, len(encoded), 0)
        head = b"070701" + b"".join(b"%08X" % field for field in fields) + encoded
        self._out.write(head + _pad4(len(head)) + data + _pad4(len(data)))


def _pad4(length: int) -> bytes:
    """Return the NUL padding that brings ``length`` to a multiple of 4."""
    return b"\0" * (-length % 4)


def _normalize_name(name: str) -> str:
    """Return ``name`` without leading "/" or "./". Raises ValueError for empty or ".." names."""
    clean = posixpath.normpath(name.lstrip("/"))
    if clean in ("", ".") or clean == ".." or clean.startswith("../"):
        raise ValueError(f"bad cpio entry name {name!r}")
    return clean


def finish_gzip(writer: NewcWriter, buffer: io.BytesIO) -> bytes:
    """Close ``writer`` and return its archive gzip'd with a fixed header time (reproducible)."""
    writer.close()
    return gzip.compress(buffer.getvalue(), compresslevel=9, mtime=0)
