"""Base images imported into pool volumes: ``host.images`` (:class:`Images`).

``host.images.ensure(name, source, pool=...)`` makes volume ``name`` hold the image at
``source`` (an absolute path, ``file://`` or ``http(s)://`` URL): the bytes are streamed from
the source into a libvirt upload stream chunk by chunk (never all in memory), hashed on the
way, and checked against ``checksum`` (``sha256:HEX``, ``sha512:HEX``, bare hex, or the place
of a ``SHA256SUMS``-style listing that names the source's file) before the stream is
finished. The format (raw or qcow2) is read from the image's first bytes. Any failure (a
wrong checksum, a truncated body, a stalled source, libvirt refusing) aborts the stream and
removes the volume: no half volume is left.

Provenance: beside the volume, in the same pool, a small raw volume ``NAME.hvlib-image``
holds a JSON record (source, format, size, sha256 and the digest of the checksum given),
written through libvirt like any volume, so it works on every pool type that can upload
(directory, filesystem, logical, ...) and travels with the pool; nothing is kept on the
client. A second ``ensure`` with the same source (and a checksum the record has, if one is
given) finds the record and transfers and writes nothing. A pool that cannot hold the record
(a driver without upload) still gets the image; the record's absence is logged and the next
``ensure`` with a checksum compares the volume's own digest (read back through a stream)
instead of transferring again; without a checksum it imports again.

Pure decisions are in :mod:`hvlib.model.imagesrc`; reads of the source in
:mod:`hvlib.virt.fetch`; libvirt is called through :meth:`hvlib.Host.call` only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hvlib.errors import ChecksumMismatch, HvlibError, ImageError, SpecError
from hvlib.model.checks import check_name, check_seconds
from hvlib.model.imagesrc import (
    HEAD_BYTES,
    SUMS_MAX,
    Checksum,
    ImageRecord,
    ImageSource,
    checksum_from_sums,
    detect_format,
    is_digest,
    parse_checksum,
    parse_source,
)
from hvlib.model.storxml import volume_doc
from hvlib.model.volplan import kind_of
from hvlib.virt import _virt
from hvlib.virt.fetch import SourceReader, open_source, read_small
from hvlib.virt.pools import Pool, Volume, create_volume, find_volume, pool_of, remove_leftover
from hvlib.virt.streams import send_all

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

Progress = Callable[[int, "int | None"], None]
"""``progress(bytes_done, bytes_total)``: called as the bytes flow (total None: unknown)."""
RECORD_SUFFIX = ".hvlib-image"
"""The provenance record of volume ``NAME`` is the volume ``NAME`` + this suffix."""


@dataclass(frozen=True)
class ImageResult:
    """What :meth:`Images.ensure` did.

    ``volume``: the image's volume. ``changed``: whether it was (re)imported. ``transferred``:
    bytes read from the source (0 when nothing changed). ``checksum``: ``ALGO:HEX`` of the
    volume's content, verified against the checksum given (the sha256 computed while
    importing, or recorded, when none was given). ``format``: raw or qcow2. ``source``: where
    the bytes came from (a path or a URL).
    """

    volume: Volume
    changed: bool
    transferred: int
    checksum: str
    format: str
    source: str


class Images:
    """Base images as pool volumes: ``host.images`` (or ``Images(host)``)."""

    def __init__(self, host: HostLike) -> None:
        self.host = host

    def ensure(
        self,
        name: str,
        source: str | os.PathLike[str],
        *,
        pool: Pool | str,
        checksum: str | None = None,
        timeout: float = 60.0,
        progress: Progress | None = None,
    ) -> ImageResult:
        """Make volume ``name`` of ``pool`` hold the image at ``source``; see the module
        docstring for sources, checksums, provenance and idempotency. ``timeout`` bounds
        each wait for the source (connecting, and each read: a stalled transfer ends after
        that long without a byte). ``progress`` is called with (bytes so far, total or
        None) as the bytes flow.

        Raises:
            SpecError: a bad name, source, checksum, timeout or progress (nothing changed).
            NotFound: no such pool.
            ChecksumMismatch: the bytes do not have ``checksum`` (no volume is left).
            ImageTimeout: the source stalled for ``timeout`` s (no volume is left).
            ImageError: the source cannot be read, is truncated, is empty or of a format a
                volume cannot take (vmdk, compressed, ...), or the checksum listing has no
                entry for it (no volume is left).
            InvalidState: an existing volume ``name`` must be replaced but is the base of
                overlays.
            LibvirtError, Unsupported: libvirt could not create or upload the volume.
        """
        check_name("volume.name", name)
        src = parse_source(source)
        timeout = check_seconds("timeout", timeout, positive=True)
        if progress is not None and not callable(progress):
            raise SpecError("progress", "must be callable or None", progress)
        target = pool_of(self.host, pool)
        want = self._wanted_checksum(checksum, src, timeout)
        kept = self._unchanged(target, name, src, want)
        if kept is not None:
            return kept
        return self._import(target, name, src, want, timeout, progress)

    def record(self, pool: Pool | str, name: str) -> ImageRecord | None:
        """The provenance record of volume ``name`` (None: there is none, or it is damaged).

        Raises:
            NotFound: no such pool. SpecError: a malformed name.
        """
        check_name("volume.name", name)
        return _read_record(pool_of(self.host, pool), name)

    # -- deciding -----------------------------------------------------------------------------

    def _wanted_checksum(
        self, checksum: str | None, src: ImageSource, timeout: float
    ) -> Checksum | None:
        if checksum is None:
            return None
        if not isinstance(checksum, str):
            raise SpecError("checksum", "must be text ('sha256:HEX' or a listing's place)")
        if is_digest(checksum.strip()):
            return parse_checksum(checksum)
        try:
            listing = parse_source(checksum)
        except SpecError as e:
            rule = f"must be ALGO:HEX, hex, or a listing's absolute path or URL ({e.rule})"
            raise SpecError("checksum", rule, checksum) from e
        try:
            text = read_small(listing, timeout, SUMS_MAX).decode("utf-8", "replace")
        except ImageError as e:
            raise ImageError(f"checksum listing: {e}") from e
        try:
            return checksum_from_sums(text, src.filename)
        except SpecError as e:
            raise ImageError(f"{listing.location}: {e.rule}") from e

    def _unchanged(
        self, pool: Pool, name: str, src: ImageSource, want: Checksum | None
    ) -> ImageResult | None:
        """The result for a volume that already holds the image, or None (import it)."""
        vol = find_volume(pool, name)
        if vol is None:
            return None
        record = _read_record(pool, name)
        if record is not None and _agrees(vol, record):
            same_source = record.source == src.location
            if record.matches(want) and (want is not None or same_source):
                shown = want or Checksum("sha256", record.digests.get("sha256", ""))
                return ImageResult(vol, False, 0, str(shown), record.format, record.source)
        if want is None or record is not None:
            return None
        if _volume_digest(vol, want.algorithm) == want.hexdigest:  # adopted: no record yet
            return ImageResult(vol, False, 0, str(want), kind_of(vol.format), src.location)
        return None

    # -- importing ----------------------------------------------------------------------------

    def _import(
        self,
        pool: Pool,
        name: str,
        src: ImageSource,
        want: Checksum | None,
        timeout: float,
        progress: Progress | None,
    ) -> ImageResult:
        with open_source(src, timeout) as reader:
            head = _read_head(reader)
            try:
                detected = detect_format(head)
            except SpecError as e:
                raise ImageError(f"{src.location}: {e.rule}", name=name) from e
            old = find_volume(pool, name)
            if old is not None:
                old.delete()  # InvalidState if overlays use it: nothing changed then
            _delete_record(pool, name)
            capacity = max(detected.virtual_size or 0, reader.length or len(head))
            doc = volume_doc(name, capacity, detected.format)
            vol = create_volume(pool, doc, lambda xml: pool.handle.createXML(xml, 0))
            try:
                digests, sent = _upload(vol, reader, head, want, progress)
            except BaseException:
                remove_leftover(pool, name)
                raise
        _refresh(pool)
        record = ImageRecord(src.location, detected.format, sent, digests)
        _write_record(pool, name, record)
        shown = want or Checksum("sha256", digests["sha256"])
        return ImageResult(vol, True, sent, str(shown), detected.format, src.location)


def _read_head(reader: SourceReader) -> bytes:
    head = b""
    while len(head) < HEAD_BYTES and (chunk := reader.read(HEAD_BYTES - len(head))):
        head += chunk
    return head


def _upload(
    vol: Volume,
    reader: SourceReader,
    head: bytes,
    want: Checksum | None,
    progress: Progress | None,
) -> tuple[dict[str, str], int]:
    """Stream ``head`` and the rest of ``reader`` into ``vol``; verify before finishing.

    Returns the digests (sha256, and the algorithm of ``want``) and the bytes sent. The
    stream is aborted (by the caller's cleanup, which deletes the volume) on any failure.
    """
    hashes = {"sha256": hashlib.sha256()}
    if want is not None:
        hashes.setdefault(want.algorithm, hashlib.new(want.algorithm))
    stream = vol.host.call(lambda c: c.newStream(0), name=vol.name)
    try:
        with vol.host.connection.bounded(name=vol.name):
            vol.handle.upload(stream, 0, reader.length or 0, 0)
        sent = 0
        for chunk in _all_chunks(reader, head):
            for h in hashes.values():
                h.update(chunk)
            with vol.host.connection.bounded(name=vol.name):
                send_all(stream, chunk)
            sent += len(chunk)
            if progress is not None:
                progress(sent, reader.length)
        reader.check_complete(sent)
        digests = {algo: h.hexdigest() for algo, h in hashes.items()}
        if want is not None and digests[want.algorithm] != want.hexdigest:
            actual = f"{want.algorithm}:{digests[want.algorithm]}"
            raise ChecksumMismatch(
                f"{reader.source.location}: checksum mismatch: expected {want}, got {actual}",
                expected=str(want),
                actual=actual,
                name=vol.name,
            )
        with vol.host.connection.bounded(name=vol.name):
            stream.finish()
    except BaseException:
        _abort(stream)
        raise
    return digests, sent


def _all_chunks(reader: SourceReader, head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    total = len(head)
    while chunk := reader.read():
        total += len(chunk)
        yield chunk


def _abort(stream: Any) -> None:
    try:
        stream.abort()
    except Exception as e:
        _virt.log.debug("stream abort failed: %s", e)


def _refresh(pool: Pool) -> None:
    """Re-read the pool so the new volume's format and sizes are current (libvirt refreshes
    after an upload in a thread of its own, later)."""
    try:
        pool.refresh()
    except HvlibError as e:
        _virt.log.debug("pool refresh after an import failed: %s", e)


def _agrees(vol: Volume, record: ImageRecord) -> bool:
    """True if ``vol`` still looks like what ``record`` describes (format; raw: its size)."""
    doc = vol.doc()
    if kind_of(doc.target_format) != kind_of(record.format):
        return False
    return record.format != "raw" or (doc.capacity or 0) == record.size


def _volume_digest(vol: Volume, algorithm: str) -> str:
    """The digest of all of ``vol``'s bytes, read through a libvirt stream."""
    if algorithm == "sha256":
        return vol.sha256()
    sink = _HashSink(hashlib.new(algorithm))
    vol.download_to(sink)  # type: ignore[arg-type]
    return str(sink.hash.hexdigest())


class _HashSink:
    def __init__(self, h: Any) -> None:
        self.hash = h

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def _record_name(name: str) -> str:
    return name + RECORD_SUFFIX


def _read_record(pool: Pool, name: str) -> ImageRecord | None:
    vol = find_volume(pool, _record_name(name))
    if vol is None:
        return None
    try:
        return ImageRecord.from_json(vol.download(length=64 * 1024))
    except HvlibError as e:
        _virt.log.warning("cannot read the record of %s/%s: %s", pool.name, name, e)
        return None


def _delete_record(pool: Pool, name: str) -> None:
    vol = find_volume(pool, _record_name(name))
    if vol is not None:
        vol.delete()


def _write_record(pool: Pool, name: str, record: ImageRecord) -> None:
    """Keep ``record`` in the raw volume ``NAME.hvlib-image`` (failures are logged)."""
    data = record.to_json()
    doc = volume_doc(_record_name(name), len(data), "raw")
    try:
        vol = create_volume(pool, doc, lambda xml: pool.handle.createXML(xml, 0))
    except HvlibError as e:
        _virt.log.warning("no provenance record for %s/%s: %s", pool.name, name, e)
        return
    try:
        vol.upload(data)
    except HvlibError as e:
        _virt.log.warning("no provenance record for %s/%s: %s", pool.name, name, e)
        remove_leftover(pool, _record_name(name))
