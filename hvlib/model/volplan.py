"""Storage volumes as data: sizes and formats a volume may have, the checks of a planned
volume and what it will be (:func:`describe_volume`), without a pool or a connection.

Pure: no libvirt, no files (:mod:`hvlib.virt.storage` and :mod:`hvlib.virt.pools` do the
effects; :mod:`hvlib.specfile` checks volume documents with the same rules).
"""

from __future__ import annotations

import posixpath
from typing import Literal

from hvlib.errors import SpecError
from hvlib.model.checks import check_name, check_path
from hvlib.model.storxml import VolumeXML, volume_doc

MIB = 1024 * 1024


SIZE_MIB_MAX = 64 * 1024 * 1024  # 64 TiB


FORMATS = ("raw", "qcow2")


_QCOW2_MAGIC = b"QFI\xfb"


Data = bytes | bytearray | memoryview


VolumeFormat = Literal["raw", "qcow2"]


def dir_pool_path(name: str, path: str) -> str:
    """``path`` normalised, after checking ``name`` and ``path``.

    Raises:
        SpecError: a bad name or path.
    """
    check_name("pool.name", name)
    return posixpath.normpath(check_path("pool.path", str(path)))


def norm_path(path: str | None) -> str | None:
    """``path`` normalised (``/srv/p/`` and ``/srv//p`` are ``/srv/p``); None stays None."""
    return None if path is None else posixpath.normpath(path)


def resolve_backing(backing: str, overlay_path: str) -> str:
    """A backing path as written in an overlay, made absolute against the overlay's dir."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(overlay_path), backing))


def check_size_mib(fieldname: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(fieldname, "must be an integer number of MiB", value)
    if not 1 <= value <= SIZE_MIB_MAX:
        raise SpecError(fieldname, f"must be between 1 and {SIZE_MIB_MAX}", value)
    return value


def describe_volume(
    fmt: str,
    backing: tuple[str, str] | None,
    size_mib: int | None,
    data_sha256: str | None = None,
) -> str:
    """``qcow2, overlay on POOL/NAME, 64 MiB``: what a planned volume will be. Pure."""
    parts = [fmt]
    if backing is not None:
        parts.append(f"overlay on {'/'.join(backing)}")
    if size_mib is not None:
        parts.append(f"{size_mib} MiB")
    if data_sha256 is not None:
        parts.append(f"data sha256:{data_sha256}")
    return ", ".join(parts)


def plan_data(name: str, fmt: str, size: int | None, length: int, head: bytes) -> VolumeXML:
    """The XML of a volume made to hold ``length`` bytes of content starting with ``head``.

    Raises:
        SpecError: empty content, ``format='qcow2'`` for content that is no qcow2 image, or
        ``size`` smaller than the content.
    """
    if not length:
        raise SpecError("data", "must not be empty")
    if fmt == "qcow2" and not head.startswith(_QCOW2_MAGIC):
        raise SpecError("data", "is not a qcow2 image (format='qcow2')")
    if size is not None and size < length:
        raise SpecError("size_mib", f"is smaller than data ({length} bytes)", size // MIB)
    return volume_doc(name, size or length, fmt)


def kind_of(fmt: str | None) -> str:
    """libvirt's dir pools probe file formats: a raw file holding an ISO image reads as
    ``iso``; to hvlib both are raw bytes."""
    return "raw" if fmt in (None, "raw", "iso") else fmt
