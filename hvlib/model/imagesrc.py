"""Base images as data: where one comes from, the checksum it must have, the format it is in.

What ``host.images.ensure`` (:mod:`hvlib.virt.images`) needs decided without touching
anything: :func:`parse_source` (a local path, ``file://`` or ``http(s)://`` URL),
:func:`parse_checksum` (``sha256:HEX``, ``sha512:HEX`` or bare hex),
:func:`checksum_from_sums` (the entry for one file in a ``SHA256SUMS``-style listing, GNU or
BSD style), :func:`detect_format` (from an image's first bytes: raw, qcow2, or a format a pool
volume cannot take as it is), and :class:`ImageRecord` (what is recorded about an import).

Pure: no files, no sockets, no libvirt.
"""

from __future__ import annotations

import json
import posixpath
import re
import struct
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote, urlsplit

from hvlib.errors import SpecError

ALGORITHMS = {"sha256": 64, "sha512": 128}
"""The checksum algorithms accepted, with the length of their hex digests."""
HEAD_BYTES = 64 * 1024
"""How much of an image :func:`detect_format` needs to see."""
SUMS_MAX = 1024 * 1024
"""Largest checksum listing read (a SHA256SUMS file lists files, it is not one)."""

_QCOW2_MAGIC = b"QFI\xfb"
_OTHER_FORMATS = (
    (0, b"KDMV", "vmdk"),
    (0, b"# Disk DescriptorFile", "vmdk"),
    (0, b"vhdxfile", "vhdx"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"BZh", "bzip2"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
)
_GNU_LINE = re.compile(r"^([0-9a-fA-F]+) [ *](.+)$")
_BSD_LINE = re.compile(r"^(SHA256|SHA512) \((.+)\) = ([0-9a-fA-F]+)$")


class SourceKind(Enum):
    """Where an image's bytes come from."""

    FILE = "file"
    HTTP = "http"


@dataclass(frozen=True)
class ImageSource:
    """A parsed image source: ``location`` is a local path (FILE) or a URL (HTTP)."""

    kind: SourceKind
    location: str

    @property
    def filename(self) -> str:
        """The last path component (what a ``SHA256SUMS`` listing names it by)."""
        path = self.location if self.kind is SourceKind.FILE else urlsplit(self.location).path
        return posixpath.basename(unquote(path))


@dataclass(frozen=True)
class Checksum:
    """A digest an image must have: ``algorithm`` (sha256 or sha512) and lowercase hex."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def parse_source(source: object) -> ImageSource:
    """``source`` as an :class:`ImageSource`: an absolute local path, ``file:///PATH``, or an
    ``http://``/``https://`` URL with a host.

    Raises:
        SpecError: anything else (another scheme, a relative path, a URL without a host).
    """
    if hasattr(source, "__fspath__"):
        source = str(source)  # a pathlib.Path
    if not isinstance(source, str) or not source:
        raise SpecError("source", "must be a path or a file/http/https URL", source)
    if "\x00" in source:
        raise SpecError("source", "must not contain NUL", source)
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise SpecError("source", "a URL needs a host", source)
        return ImageSource(SourceKind.HTTP, source)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise SpecError("source", "a file:// URL must name a local path", source)
        return ImageSource(SourceKind.FILE, _absolute(unquote(parts.path), source))
    if parts.scheme and len(parts.scheme) > 1:  # "C:" is no scheme, but no POSIX path either
        raise SpecError("source", "scheme must be file, http or https", parts.scheme)
    return ImageSource(SourceKind.FILE, _absolute(source, source))


def _absolute(path: str, source: str) -> str:
    if not path.startswith("/"):
        raise SpecError("source", "a local path must be absolute", source)
    return posixpath.normpath(path)


def is_digest(text: str) -> bool:
    """True if ``text`` reads as a digest (``ALGO:HEX`` or bare hex), not a listing's place."""
    algo, sep, _hex = text.partition(":")
    if sep and algo.lower() in ALGORITHMS:
        return True
    return bool(re.fullmatch(r"[0-9a-fA-F]+", text)) and len(text) in ALGORITHMS.values()


def parse_checksum(text: object, fieldname: str = "checksum") -> Checksum:
    """``sha256:HEX``, ``sha512:HEX`` or bare hex (its length says which) as a Checksum.

    Raises:
        SpecError: another algorithm, or hex of the wrong length or with other characters.
    """
    if not isinstance(text, str):
        raise SpecError(fieldname, "must be text such as 'sha256:HEX'", text)
    algo, sep, hexpart = text.strip().partition(":")
    if not sep:
        algo, hexpart = _algorithm_of(text.strip(), fieldname), text.strip()
    algo = algo.lower()
    if algo not in ALGORITHMS:
        raise SpecError(fieldname, f"algorithm must be one of {sorted(ALGORITHMS)}", algo)
    if len(hexpart) != ALGORITHMS[algo] or not re.fullmatch(r"[0-9a-fA-F]+", hexpart):
        raise SpecError(fieldname, f"{algo} needs {ALGORITHMS[algo]} hex digits", text)
    return Checksum(algo, hexpart.lower())


def _algorithm_of(hexpart: str, fieldname: str) -> str:
    for algo, length in ALGORITHMS.items():
        if len(hexpart) == length:
            return algo
    raise SpecError(fieldname, "must be ALGO:HEX, or 64 (sha256) or 128 (sha512) hex digits")


def checksum_from_sums(text: str, filename: str, fieldname: str = "checksum") -> Checksum:
    """The checksum a ``SHA256SUMS``/``SHA512SUMS``-style listing gives for ``filename``:
    GNU lines (``HEX  NAME``, ``HEX *NAME``) or BSD lines (``SHA256 (NAME) = HEX``); a
    name may carry a leading ``./``. The algorithm follows from the digest's length.

    Raises:
        SpecError: the listing has no (or more than one differing) entry for ``filename``,
        or the entry's digest is malformed.
    """
    found: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        bsd = _BSD_LINE.match(line)
        gnu = None if bsd else _GNU_LINE.match(line)
        if bsd:
            name, digest = bsd.group(2), f"{bsd.group(1).lower()}:{bsd.group(3)}"
        elif gnu:
            name, digest = gnu.group(2), gnu.group(1)
        else:
            continue
        if name.removeprefix("./") == filename:
            found.add(str(parse_checksum(digest, fieldname)))
    if not found:
        raise SpecError(fieldname, f"the checksum listing has no entry for {filename!r}")
    if len(found) > 1:
        raise SpecError(fieldname, f"the checksum listing disagrees about {filename!r}")
    return parse_checksum(found.pop(), fieldname)


@dataclass(frozen=True)
class DetectedFormat:
    """An image's format, and for qcow2 the virtual size its header declares (bytes)."""

    format: str
    virtual_size: int | None = None


def detect_format(head: bytes) -> DetectedFormat:
    """The format of an image whose first bytes are ``head`` (up to :data:`HEAD_BYTES`):
    ``qcow2`` (with its virtual size) or ``raw`` (anything else that is not a known other
    format; an ISO 9660 image is raw bytes too).

    Raises:
        SpecError: a format a pool volume cannot take as it is (vmdk, vhdx, vdi: convert it
        with qemu-img first) or a compressed file (xz, gzip, bzip2, zstd: unpack it first),
        or an empty image.
    """
    if not head:
        raise SpecError("source", "the image is empty")
    if head.startswith(_QCOW2_MAGIC):
        if len(head) < 32:
            raise SpecError("source", "the qcow2 header is truncated", len(head))
        return DetectedFormat("qcow2", struct.unpack(">Q", head[24:32])[0])
    for offset, magic, name in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            verb = "unpack" if name in ("xz", "gzip", "bzip2", "zstd") else "convert"
            raise SpecError("source", f"is a {name} file: {verb} it to raw or qcow2 first")
    return DetectedFormat("raw")


@dataclass(frozen=True)
class ImageRecord:
    """What ``host.images.ensure`` records about an imported image (kept as JSON)."""

    source: str
    format: str
    size: int
    digests: dict[str, str]

    def to_json(self) -> bytes:
        body = {"source": self.source, "format": self.format, "size": self.size}
        return (json.dumps({**body, "digests": self.digests}, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> ImageRecord | None:
        """The record in ``data``, or None if it is not one (a damaged record is ignored)."""
        try:
            doc = json.loads(data.decode())
            digests = {str(k): str(v) for k, v in dict(doc["digests"]).items()}
            return cls(str(doc["source"]), str(doc["format"]), int(doc["size"]), digests)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def matches(self, checksum: Checksum | None) -> bool:
        """True if this record's content has ``checksum`` (None: nothing to contradict)."""
        return checksum is None or self.digests.get(checksum.algorithm) == checksum.hexdigest
