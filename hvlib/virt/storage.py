"""Storage pools and volumes as idempotent objects: ``host.pools`` and ``host.volumes``.

``Pools(host).ensure_dir(name, path)`` makes a directory pool exist, run and autostart.
``Volumes(host)`` creates, finds, converges (``ensure``: a :class:`VolumeResult` says what
changed, or with ``check=True`` would change), clones, resizes and deletes volumes;
a volume's bytes go in (:meth:`Volume.upload`) and out (:meth:`Volume.download`) through
libvirt streams, so the same calls work against a remote host. A ``backing`` volume makes a
qcow2 overlay; a base with overlays refuses deletion. A volume whose creation (or first
upload) fails is removed again, so nothing half-made stays in the pool.

Names are checked with :func:`hvlib.model.spec.check_name` (no ``/``, no leading ``.``: a volume
stays inside its pool) and paths with :func:`hvlib.model.spec.check_path`, before libvirt is called.
XML is built only through :mod:`hvlib.model.storxml` (lxml). Calls go through
:meth:`hvlib.Host.call` (reads retried on transient errors, writes made once, handles looked up
again after a reconnect); stream transfers run inside :func:`hvlib.virt._virt.translated`. This
module never imports libvirt and never reads or writes pool files itself (only libvirt does,
wherever the pool is).
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import io
import os
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar, cast

from hvlib.errors import AlreadyExists, HvlibError, InvalidState, NotFound, SpecError
from hvlib.model.plan import Change, ChangeHow, ChangeReport
from hvlib.model.spec import Disk, DiskKind, check_name, check_path
from hvlib.model.storxml import PoolXML, VolumeXML, dir_pool_doc, volume_doc
from hvlib.virt import _virt
from hvlib.virt.handle import HostObject

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

T = TypeVar("T")
MIB = 1024 * 1024
SIZE_MIB_MAX = 64 * 1024 * 1024  # 64 TiB
FORMATS = ("raw", "qcow2")
CHUNK = 256 * 1024
"""Bytes per stream message (libvirt's RPC payload limit is 256 KiB)."""
_QCOW2_MAGIC = b"QFI\xfb"

Data = bytes | bytearray | memoryview
VolumeFormat = Literal["raw", "qcow2"]


# -- pools ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolInfo:
    """A pool's sizes in bytes, as libvirt last measured them."""

    capacity: int
    allocation: int
    available: int


class Pool(HostObject):
    """A libvirt storage pool on a :class:`hvlib.Host`. Get one from ``host.pools``."""

    def __init__(self, host: HostLike, handle: Any) -> None:
        super().__init__(host, handle)
        with _virt.translated():
            self.name: str = handle.name()
            self.uuid: str = handle.UUIDString()

    def __repr__(self) -> str:
        return f"<Pool {self.name} on {self.host.uri}>"

    def _lookup(self, conn: Any) -> Any:
        return conn.storagePoolLookupByUUIDString(self.uuid)

    def doc(self) -> PoolXML:
        """The pool's XML, parsed.

        Raises:
            NotFound: the pool is gone.
        """
        return PoolXML.from_xml(self._read(lambda h: h.XMLDesc(0)))

    @property
    def path(self) -> str | None:
        """The directory (or device) the pool's volumes live in. Raises NotFound (gone)."""
        return self.doc().target_path

    @property
    def active(self) -> bool:
        """True while the pool is started. Raises NotFound when the pool is gone."""
        return bool(self._read(lambda h: h.isActive()))

    @property
    def autostart(self) -> bool:
        """Whether libvirt starts the pool with the daemon. Setting it raises NotFound (gone)
        or LibvirtError (refused)."""
        return bool(self._read(lambda h: h.autostart()))

    @autostart.setter
    def autostart(self, value: bool) -> None:
        self._write(lambda h: h.setAutostart(1 if value else 0))

    def info(self) -> PoolInfo:
        """Capacity, allocation and free space in bytes (call :meth:`refresh` first for
        figures that include changes made behind libvirt's back).

        Raises:
            NotFound: the pool is gone.
        """
        _state, capacity, allocation, available = self._read(lambda h: h.info())
        return PoolInfo(capacity, allocation, available)

    def refresh(self) -> None:
        """Re-read the pool's volumes and sizes from its storage.

        Raises:
            InvalidState: the pool is not started. NotFound: the pool is gone.
        """
        self._read(lambda h: h.refresh(0))

    def start(self) -> None:
        """Start the pool (nothing to do when it runs).

        Raises:
            NotFound: the pool is gone. LibvirtError: libvirt could not start it (e.g. its
            directory is missing).
        """
        if not self.active:
            self._write(lambda h: h.create(0))

    def volumes(self) -> builtins.list[Volume]:
        """Every volume of the (started) pool, in one libvirt call (as libvirt last saw the
        pool: :meth:`refresh` first to include files added behind its back).

        Raises:
            InvalidState: the pool is not started. NotFound: the pool is gone.
        """
        return [Volume(self, v) for v in self._read(lambda h: h.listAllVolumes(0))]

    def delete(self) -> None:
        """Stop and undefine the pool; its directory and files stay. A pool that is already
        gone is success.

        Raises:
            LibvirtError: libvirt refused.
        """
        try:
            if self.active:
                self._write(lambda h: h.destroy())
            self._write(lambda h: h.undefine())
        except NotFound:
            pass


class Pools:
    """The storage pools of one host: ``host.pools`` (or ``Pools(host)``)."""

    def __init__(self, host: HostLike) -> None:
        self.host = host

    def ensure_dir(self, name: str, path: str, *, autostart: bool = True) -> Pool:
        """Make a directory pool ``name`` at ``path`` exist, run and (by default) autostart.

        libvirt creates the directory if it is missing. A pool that is already right gets no
        write call; one defined but stopped is started. A pool created by this call is
        undefined again if it cannot be started.

        Raises:
            SpecError: a bad name or path (nothing changed).
            InvalidState: a pool of that name exists but is not a directory pool at ``path``.
            LibvirtError: libvirt could not build or start the pool.
        """
        path = _dir_pool_path(name, path)
        pool = self.find(name)
        if pool is None:
            return self._create_dir(name, path, autostart)
        _check_dir_pool(pool, path)
        pool.start()
        if autostart and not pool.autostart:
            pool.autostart = True
        return pool

    def plan_dir(self, name: str, path: str, *, autostart: bool = True) -> builtins.list[Change]:
        """What :meth:`ensure_dir` with the same arguments would change; reads only.

        Raises:
            SpecError, InvalidState: as :meth:`ensure_dir` (nothing changed either way).
        """
        path = _dir_pool_path(name, path)
        pool = self.find(name)
        started = Change("state", "inactive", "active", ChangeHow.STATE)
        autostarts = Change("autostart", False, True, ChangeHow.NEXT_BOOT)
        if pool is None:
            created = Change("pool", None, f"directory {path}", ChangeHow.STATE)
            return [created, started, *([autostarts] if autostart else [])]
        _check_dir_pool(pool, path)
        due = ((started, not pool.active), (autostarts, autostart and not pool.autostart))
        return [change for change, needed in due if needed]

    def _create_dir(self, name: str, path: str, autostart: bool) -> Pool:
        xml = dir_pool_doc(name, path).to_xml()
        pool = Pool(self.host, self.host.call(lambda c: c.storagePoolDefineXML(xml, 0), name=name))
        try:
            pool._write(lambda h: h.build(0))
            pool.start()
            if autostart:
                pool.autostart = True
        except BaseException:
            pool.delete()
            raise
        return pool

    def get(self, name: str) -> Pool:
        """The pool called ``name``.

        Raises:
            NotFound: there is none.
        """
        found = self.find(name)
        if found is None:
            raise NotFound(f"no storage pool named {name}", name=name)
        return found

    def find(self, name: str) -> Pool | None:
        """The pool called ``name``, or None."""
        try:
            handle = self.host.call(lambda c: c.storagePoolLookupByName(name), name=name, safe=True)
        except NotFound:
            return None
        return Pool(self.host, handle)

    def list(self) -> builtins.list[Pool]:
        """Every pool of the host (started or not), in one libvirt call."""
        handles = self.host.call(lambda c: c.listAllStoragePools(0), safe=True)
        return [Pool(self.host, h) for h in handles]


def _dir_pool_path(name: str, path: str) -> str:
    """``path`` normalised, after checking ``name`` and ``path``.

    Raises:
        SpecError: a bad name or path.
    """
    check_name("pool.name", name)
    return posixpath.normpath(check_path("pool.path", str(path)))


def _check_dir_pool(pool: Pool, path: str) -> None:
    """Raises InvalidState unless ``pool`` is a directory pool at ``path``."""
    doc = pool.doc()
    if doc.pool_type != "dir" or _norm(doc.target_path) != path:
        raise InvalidState(
            f"pool {pool.name} exists as a {doc.pool_type} pool at {doc.target_path}, "
            f"not as a directory pool at {path}",
            name=pool.name,
        )


def _norm(path: str | None) -> str | None:
    return None if path is None else posixpath.normpath(path)


# -- volumes --------------------------------------------------------------------------------


class Volume(HostObject):
    """A storage volume in a :class:`Pool`. Get one from ``host.volumes``."""

    def __init__(self, pool: Pool, handle: Any) -> None:
        self.pool = pool
        super().__init__(pool.host, handle)
        with _virt.translated():
            self.name: str = handle.name()

    def __repr__(self) -> str:
        return f"<Volume {self.pool.name}/{self.name} on {self.host.uri}>"

    def _lookup(self, conn: Any) -> Any:
        return self.pool.handle.storageVolLookupByName(self.name)

    def doc(self) -> VolumeXML:
        """The volume's XML, parsed. Raises NotFound when the volume is gone."""
        return VolumeXML.from_xml(self._read(lambda h: h.XMLDesc(0)))

    @property
    def path(self) -> str:
        """The volume's path on its host. Raises NotFound when the volume is gone."""
        return str(self._read(lambda h: h.path()))

    @property
    def format(self) -> str | None:
        """The image format libvirt reports (``raw``, ``qcow2``, ``iso``: a probed raw file).
        Raises NotFound when the volume is gone."""
        return self.doc().target_format

    @property
    def capacity(self) -> int:
        """The size the guest sees, in bytes. Raises NotFound when the volume is gone."""
        return self.doc().capacity or 0

    @property
    def allocation(self) -> int:
        """The bytes the volume takes on its storage. Raises NotFound (gone)."""
        return self.doc().allocation or 0

    @property
    def backing(self) -> str | None:
        """The path of the image this volume is an overlay on, or None. Raises NotFound (gone)."""
        return self.doc().backing_path

    def disk(self, *, target: str | None = None, readonly: bool = False) -> Disk:
        """A :class:`hvlib.Disk` on this volume, with its format (raw or qcow2) read now and
        declared (``Disk.volume`` without a format reads it when a host defines the domain).

        Raises:
            SpecError: ``target`` is malformed. NotFound: the volume is gone.
        """
        fmt = self.format if self.format in FORMATS else "raw"
        return Disk(
            DiskKind.VOLUME,
            pool=self.pool.name,
            volume_name=self.name,
            format=fmt,
            target=target,
            readonly=readonly,
        )

    # -- bytes in and out, through libvirt streams -------------------------------------------

    def upload(self, data: Data | BinaryIO) -> int:
        """Write ``data`` (bytes, or a binary file read from its current position to its end)
        at the start of the volume, through a libvirt stream; return the bytes sent.

        Raises:
            SpecError: ``data`` is larger than the volume, or not bytes or a binary file.
            Unsupported: the driver cannot upload. NotFound: the volume is gone.
            LibvirtError: the transfer failed (the stream is aborted).
        """
        size, chunks = _source(data)
        capacity = self.capacity
        if size > capacity:
            raise SpecError("data", f"{size} bytes do not fit in {self.name} ({capacity} bytes)")
        with self._stream() as stream, _virt.translated(self.name):
            self.handle.upload(stream, 0, size, 0)
            for chunk in chunks:
                _send_all(stream, chunk)
            stream.finish()
        return size

    def download(self, *, offset: int = 0, length: int | None = None) -> bytes:
        """The volume's bytes (from ``offset``, ``length`` of them; None: to the end) through
        a libvirt stream. A qcow2 volume gives its image file's bytes.

        Raises:
            Unsupported: the driver cannot download. NotFound: the volume is gone.
            LibvirtError: the transfer failed (the stream is aborted).
        """
        out = io.BytesIO()
        self.download_to(out, offset=offset, length=length)
        return out.getvalue()

    def download_to(self, out: BinaryIO, *, offset: int = 0, length: int | None = None) -> int:
        """Like :meth:`download`, writing into the binary file ``out``; return the bytes read.

        Raises:
            SpecError: a negative offset or length. Others: see :meth:`download`.
        """
        if offset < 0 or (length is not None and length < 0):
            raise SpecError("download", "offset and length must not be negative", (offset, length))
        total = 0
        if length == 0:
            return total
        with self._stream() as stream, _virt.translated(self.name):
            self.handle.download(stream, offset, length or 0, 0)  # 0: to the end
            while True:
                chunk = stream.recv(CHUNK)
                if not isinstance(chunk, bytes) or not chunk:
                    break
                out.write(chunk)
                total += len(chunk)
            stream.finish()
        return total

    def sha256(self, *, length: int | None = None) -> str:
        """The hex SHA-256 of the volume's bytes (the first ``length`` of them; None: all),
        read through a libvirt stream without holding them in memory. A qcow2 volume gives
        its image file's bytes, as :meth:`download` does.

        Raises:
            SpecError: a negative length. Others: see :meth:`download`.
        """
        sink = _Digest()
        self.download_to(cast(BinaryIO, sink), length=length)
        return sink.hexdigest()

    @contextlib.contextmanager
    def _stream(self) -> Iterator[Any]:
        """A new blocking libvirt stream, aborted if the block fails."""
        stream = self.host.call(lambda c: c.newStream(0), name=self.name)
        try:
            yield stream
        except BaseException:
            with contextlib.suppress(Exception):
                stream.abort()
            raise

    # -- changes ------------------------------------------------------------------------------

    def resize(self, size_mib: int) -> None:
        """Grow the volume to ``size_mib`` MiB (the same size: nothing to do).

        Raises:
            SpecError: a bad size, or smaller than now (shrinking would lose data).
            Unsupported: the driver cannot resize. LibvirtError: libvirt refused.
        """
        new = _size_mib("size_mib", size_mib) * MIB
        current = self.capacity
        if new == current:
            return
        if new < current:
            raise SpecError("size_mib", f"volumes only grow (now {current} bytes)", size_mib)
        self._write(lambda h: h.resize(new, 0))

    def clone(self, name: str, *, pool: Pool | str | None = None) -> Volume:
        """A full, independent copy of this volume called ``name`` (in ``pool``; default: the
        same pool), made by libvirt. A clone of an overlay is flattened.

        Raises:
            SpecError: a bad name. AlreadyExists: ``name`` exists already there.
            LibvirtError: the copy failed (nothing is left behind).
        """
        check_name("volume.name", name)
        target = Volumes(self.host).pool(pool or self.pool)
        if _lookup(target, name) is not None:
            raise AlreadyExists(f"volume {target.name}/{name} already exists", name=name)
        doc = volume_doc(name, self.capacity, self.format if self.format in FORMATS else "raw")
        return _create(target, doc, lambda xml: target.handle.createXMLFrom(xml, self.handle, 0))

    def overlays(self) -> builtins.list[Volume]:
        """Volumes in the host's started pools whose backing image is this volume.

        Raises:
            NotFound: this volume is gone.
        """
        mine = posixpath.normpath(self.path)
        found = []
        for pool in Pools(self.host).list():
            if not pool.active:
                continue
            for vol in pool.volumes():
                doc = vol.doc()
                if doc.backing_path and _resolve(doc.backing_path, doc.target_path or "") == mine:
                    found.append(vol)
        return found

    def delete(self) -> None:
        """Delete the volume and its storage. A volume that is already gone is success.

        Raises:
            InvalidState: other volumes are overlays on this one (they are named).
            LibvirtError: libvirt refused.
        """
        try:
            overlays = self.overlays()
            if overlays:
                names = ", ".join(f"{v.pool.name}/{v.name}" for v in overlays)
                raise InvalidState(
                    f"volume {self.pool.name}/{self.name} is the base of {names}: "
                    "delete those overlays first",
                    name=self.name,
                )
            self._write(lambda h: h.delete(0))
        except NotFound:
            pass


def _resolve(backing: str, overlay_path: str) -> str:
    """A backing path as written in an overlay, made absolute against the overlay's dir."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(overlay_path), backing))


class _Digest(io.RawIOBase):
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


def _size_mib(fieldname: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(fieldname, "must be an integer number of MiB", value)
    if not 1 <= value <= SIZE_MIB_MAX:
        raise SpecError(fieldname, f"must be between 1 and {SIZE_MIB_MAX}", value)
    return value


def _source(data: Data | BinaryIO) -> tuple[int, Iterator[bytes]]:
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


def _send_all(stream: Any, chunk: bytes) -> None:
    sent = 0
    while sent < len(chunk):
        n = stream.send(chunk[sent:])
        if n < 0:  # -2: would block (only on a non-blocking stream)
            continue
        sent += n


class Volumes:
    """The storage volumes of one host: ``host.volumes`` (or ``Volumes(host)``).

    A pool is named by a :class:`Pool` or its name; a volume by its pool and name.
    """

    def __init__(self, host: HostLike) -> None:
        self.host = host

    def pool(self, ref: Pool | str) -> Pool:
        """The pool ``ref`` names.

        Raises:
            NotFound: there is no such pool. SpecError: a malformed name.
        """
        if isinstance(ref, Pool):
            return ref
        return Pools(self.host).get(check_name("pool.name", ref))

    def get(self, pool: Pool | str, name: str) -> Volume:
        """The volume ``name`` in ``pool``.

        Raises:
            NotFound: no such pool or volume. SpecError: a malformed name.
        """
        found = self.find(pool, name)
        if found is None:
            raise NotFound(f"no volume {name} in pool {self.pool(pool).name}", name=name)
        return found

    def find(self, pool: Pool | str, name: str) -> Volume | None:
        """The volume ``name`` in ``pool``, or None (a miss re-reads the pool once, so files
        added behind libvirt's back are found).

        Raises:
            NotFound: no such pool. SpecError: a malformed name.
        """
        target = self.pool(pool)
        check_name("volume.name", name)
        found = _lookup(target, name)
        if found is None and target.active:
            target.refresh()
            found = _lookup(target, name)
        return found

    def find_by_path(self, path: str) -> Volume | None:
        """The volume at ``path`` in one of the host's started pools, or None (a plain file
        that is no libvirt volume). Paths are compared as libvirt knows them, never resolved
        on the host's filesystem (which may be remote).

        Raises:
            SpecError: ``path`` is not absolute. HostError: the connection failed.
        """
        path = posixpath.normpath(check_path("volume.path", str(path)))
        try:
            handle = self.host.call(lambda c: c.storageVolLookupByPath(path), safe=True)
        except NotFound:
            return None
        pool = Pool(self.host, self.host.call(lambda _c: handle.storagePoolLookupByVolume()))
        return Volume(pool, handle)

    def plan(
        self,
        pool: Pool | str,
        name: str,
        *,
        size_mib: int | None = None,
        format: VolumeFormat | None = None,
        backing: Volume | tuple[str, str] | None = None,
    ) -> list[Change]:
        """What :meth:`ensure` with the same arguments (no ``data``) would change; reads only:
        ``ensure(..., check=True).changes``.

        Raises:
            SpecError, InvalidState, NotFound: as :meth:`ensure` (nothing changed either way).
        """
        return self.ensure(
            pool, name, size_mib=size_mib, format=format, backing=backing, check=True
        ).changes

    def create(
        self,
        pool: Pool | str,
        name: str,
        *,
        size_mib: int | None = None,
        format: VolumeFormat | None = None,
        data: Data | None = None,
        backing: Volume | tuple[str, str] | None = None,
    ) -> Volume:
        """Create volume ``name`` in ``pool`` and return it.

        ``format`` is ``raw`` or ``qcow2`` (None: qcow2 with ``backing``, else raw). With
        ``backing`` (a Volume or a (pool, name) pair) the volume is a qcow2 overlay on that
        base, as large as the base unless ``size_mib`` says more. With ``data`` the volume is
        exactly that image (``size_mib`` may make it larger), uploaded through a libvirt
        stream; otherwise ``size_mib`` is required. Raw volumes are fully allocated, so a
        pool without the space fails here rather than later in a guest. On any failure the
        volume is removed again.

        Raises:
            SpecError: a bad name, size, format or combination (nothing is created).
            NotFound: no such pool, or no such backing volume.
            AlreadyExists: the volume exists (use :meth:`ensure` to converge instead).
            Unsupported: the driver cannot upload ``data``.
            LibvirtError: libvirt could not create it (e.g. no space left; the message says
            how much space the pool has).
        """
        target = self.pool(pool)
        doc, payload = self._plan(name, size_mib, format, data, backing)
        if _lookup(target, name) is not None:
            raise AlreadyExists(f"volume {target.name}/{name} already exists", name=name)
        return _create_planned(target, doc, payload)

    def ensure(
        self,
        pool: Pool | str,
        name: str,
        *,
        size_mib: int | None = None,
        format: VolumeFormat | None = None,
        data: Data | None = None,
        backing: Volume | tuple[str, str] | None = None,
        check: bool = False,
    ) -> VolumeResult:
        """Make volume ``name`` in ``pool`` be what :meth:`create` would make; report what
        changed (``result.volume`` is the volume). ``check=True`` changes nothing and
        returns the same report (``volume`` is None if the volume does not exist yet).

        The changes (:class:`hvlib.Change`): ``volume`` (None -> what is created);
        ``size_mib`` (MiB before -> after: an existing volume grows to ``size_mib``, never
        shrinks); with ``data``, ``content`` (``sha256:HEX`` of the volume's first
        ``len(data)`` bytes, read back through a stream, -> that of ``data``), ``format``
        (a data volume of another format) and ``capacity`` (bytes, when a raw data volume
        made anew changes size): a volume whose content or format differs is deleted and
        made anew, since ``data`` is all of it. A qcow2 data volume's capacity is the
        virtual size its image header says (never compared with ``len(data)``). A volume
        that is already right gets no write call; a second ensure reports
        ``changed=False``.

        Raises:
            InvalidState: the volume exists with another format or backing image (without
            ``data``: its bytes are not hvlib's to drop), or is the base of overlays and
            would have to be made anew.
            Others: as :meth:`create`, and for ``data`` as :meth:`Volume.download`.
        """
        target = self.pool(pool)
        doc, payload = self._plan(name, size_mib, format, data, backing)
        vol = self.find(target, name)
        changes, action = _changes(vol, doc, payload, size_mib, _backing_key(backing))
        if check or not changes:
            return VolumeResult(bool(changes), changes, volume=vol)
        if vol is None or action == "recreate":
            if vol is not None:
                vol.delete()
            vol = _create_planned(target, doc, payload)
        elif size_mib is not None:
            vol.resize(size_mib)
        return VolumeResult(True, changes, volume=vol)

    # -- planning (reads only) ---------------------------------------------------------------

    def _plan(
        self,
        name: str,
        size_mib: int | None,
        format: str | None,
        data: Data | None,
        backing: Volume | tuple[str, str] | None,
    ) -> tuple[VolumeXML, bytes | None]:
        """The volume's XML and the bytes to upload, after every check."""
        check_name("volume.name", name)
        fmt = format or ("qcow2" if backing is not None else "raw")
        if fmt not in FORMATS:
            raise SpecError("format", "must be 'raw' or 'qcow2'", format)
        size = None if size_mib is None else _size_mib("size_mib", size_mib) * MIB
        if data is not None:
            if backing is not None:
                raise SpecError("data", "cannot be combined with backing")
            if fmt == "qcow2" and size is not None:
                rule = "cannot be combined with qcow2 data: the image's header says its size"
                raise SpecError("size_mib", rule, size_mib)
            return _plan_data(name, fmt, size, data)
        if backing is not None:
            return self._plan_overlay(name, fmt, size, backing), None
        if size is None:
            raise SpecError("size_mib", "is needed when there is neither data nor backing")
        return volume_doc(name, size, fmt, allocation=size if fmt == "raw" else None), None

    def _plan_overlay(
        self, name: str, fmt: str, size: int | None, backing: Volume | tuple[str, str]
    ) -> VolumeXML:
        if fmt != "qcow2":
            raise SpecError("format", "an overlay on a backing volume must be qcow2", fmt)
        if isinstance(backing, Volume):
            base = backing
        elif isinstance(backing, tuple) and len(backing) == 2:
            base = self.get(*backing)
        else:
            raise SpecError("backing", "must be a Volume or a (pool, name) pair", backing)
        base_doc = base.doc()
        path = check_path("backing.path", base.path)
        base_fmt = base_doc.target_format or "raw"
        return volume_doc(name, size or base_doc.capacity or 0, fmt, backing=(path, base_fmt))


@dataclass
class VolumeResult(ChangeReport):
    """What a volume ``ensure`` changed (or, with ``check=True``, would change).

    ``volume`` is the volume ensured; None only for a check of a volume not made yet.
    """

    volume: Volume | None = None


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


def _backing_key(backing: Volume | tuple[str, str] | None) -> tuple[str, str] | None:
    return (backing.pool.name, backing.name) if isinstance(backing, Volume) else backing


def _changes(
    vol: Volume | None,
    want: VolumeXML,
    payload: bytes | None,
    size_mib: int | None,
    base: tuple[str, str] | None,
) -> tuple[list[Change], str]:
    """What ensuring ``want`` (and ``payload``) over ``vol`` changes, and how: ``create``,
    ``recreate`` (delete, then create), ``resize`` or ``none``. Reads only.

    Raises:
        InvalidState: ``vol`` has another format or backing and there is no ``payload``.
    """
    if vol is None:
        digest = None if payload is None else hashlib.sha256(payload).hexdigest()
        what = describe_volume(want.target_format or "raw", base, size_mib, digest)
        return [Change("volume", None, what, ChangeHow.STATE)], "create"
    if payload is not None:
        changes = _data_changes(vol, want, payload)
        if changes:
            return changes, "recreate"
    else:
        _check_same_kind(vol, want)
    qcow2_data = payload is not None and want.target_format == "qcow2"
    if size_mib is not None and not qcow2_data and (want.capacity or 0) > vol.capacity:
        return [Change("size_mib", vol.capacity // MIB, size_mib, ChangeHow.LIVE)], "resize"
    return [], "none"


def _data_changes(vol: Volume, want: VolumeXML, payload: bytes) -> list[Change]:
    """How ``vol`` differs from a volume holding exactly ``payload`` (empty: it holds it).
    The content is compared by SHA-256 of the volume's first ``len(payload)`` bytes."""
    have, changes = vol.doc(), []
    if _kind_of(have.target_format) != _kind_of(want.target_format):
        changes.append(Change("format", have.target_format, want.target_format, _RECREATE))
    if have.backing_path is not None:
        changes.append(Change("backing", have.backing_path, None, _RECREATE))
    before = vol.sha256(length=len(payload))
    after = hashlib.sha256(payload).hexdigest()
    if changes or before != after:
        changes.append(Change("content", f"sha256:{before}", f"sha256:{after}", _RECREATE))
    capacity = have.capacity or 0
    if changes and want.target_format == "raw" and capacity != want.capacity:
        changes.append(Change("capacity", capacity, want.capacity, _RECREATE))
    return changes


_RECREATE = ChangeHow.RECREATE
"""A data volume whose content or format differs is deleted and made anew."""


def _plan_data(name: str, fmt: str, size: int | None, data: object) -> tuple[VolumeXML, bytes]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SpecError("data", "must be bytes", type(data).__name__)
    payload = bytes(data)
    if not payload:
        raise SpecError("data", "must not be empty")
    if fmt == "qcow2" and not payload.startswith(_QCOW2_MAGIC):
        raise SpecError("data", "is not a qcow2 image (format='qcow2')")
    if size is not None and size < len(payload):
        raise SpecError("size_mib", f"is smaller than data ({len(payload)} bytes)", size // MIB)
    return volume_doc(name, size or len(payload), fmt), payload


def _lookup(pool: Pool, name: str) -> Volume | None:
    try:
        handle = pool._read(lambda h: h.storageVolLookupByName(name))
    except NotFound:
        return None
    return Volume(pool, handle)


def _create_planned(pool: Pool, doc: VolumeXML, payload: bytes | None) -> Volume:
    """Create ``doc`` in ``pool`` and upload ``payload``; remove the volume if either fails."""
    vol = _create(pool, doc, lambda xml: pool.handle.createXML(xml, 0))
    if payload is not None:
        try:
            vol.upload(payload)
        except BaseException:
            _remove_leftover(pool, vol.name)
            raise
    return vol


def _create(pool: Pool, doc: VolumeXML, call: Any) -> Volume:
    """Run ``call(xml)`` (a libvirt volume creation); on failure remove whatever it left and
    re-raise with the pool's free space in the message."""
    name, xml = doc.name or "", doc.to_xml()
    try:
        return Volume(pool, pool.host.call(lambda _c: call(xml), name=name))
    except AlreadyExists:
        raise
    except HvlibError as e:
        _remove_leftover(pool, name)
        if isinstance(e, SpecError):
            raise
        prefix = f"cannot create volume {pool.name}/{name} ({doc.capacity} bytes"
        raise type(e)(f"{prefix}{_available(pool)}): {e}", code=e.code, name=e.name) from (
            e.__cause__ or e
        )


def _available(pool: Pool) -> str:
    try:
        pool.refresh()
        return f"; pool has {pool.info().available} bytes available"
    except HvlibError:
        return ""


def _remove_leftover(pool: Pool, name: str) -> None:
    """Delete volume ``name`` if libvirt knows it (after a refresh); failures are logged."""
    try:
        if pool.active:
            pool.refresh()
        found = _lookup(pool, name)
        if found is not None:
            found._write(lambda h: h.delete(0))
    except HvlibError as e:
        _virt.log.warning("could not remove half-made volume %s/%s: %s", pool.name, name, e)


def _check_same_kind(vol: Volume, want: VolumeXML) -> None:
    have = vol.doc()
    where = f"volume {vol.pool.name}/{vol.name}"
    if _kind_of(have.target_format) != _kind_of(want.target_format):
        raise InvalidState(
            f"{where} is {have.target_format}, not {want.target_format}: delete it first",
            name=vol.name,
        )
    had = None if have.backing_path is None else _resolve(have.backing_path, vol.path)
    if had != _norm(want.backing_path):
        raise InvalidState(
            f"{where} is backed by {had or 'nothing'}, not {want.backing_path or 'nothing'}: "
            "delete it first",
            name=vol.name,
        )


def _kind_of(fmt: str | None) -> str:
    """libvirt's dir pools probe file formats: a raw file holding an ISO image reads as
    ``iso``; to hvlib both are raw bytes."""
    return "raw" if fmt in (None, "raw", "iso") else fmt
