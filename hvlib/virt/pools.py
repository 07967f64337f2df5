"""Storage pools and the volumes in them, as objects on a host: :class:`Pool`, ``host.pools``
(:class:`Pools`: ``ensure_dir`` makes a directory pool exist, run and autostart) and
:class:`Volume` (its bytes in and out through libvirt streams, resize, clone, delete).

Creating a volume and removing what a failed creation left are here too (the collection of
volumes, ``host.volumes``, is :mod:`hvlib.virt.storage`). Calls go through
:meth:`hvlib.Host.call`; XML only through :mod:`hvlib.model.storxml`; libvirt never imported.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from hvlib.errors import AlreadyExists, HvlibError, InvalidState, NotFound, SpecError
from hvlib.model.checks import check_name
from hvlib.model.devices import Disk, DiskKind
from hvlib.model.plan import Change, ChangeHow
from hvlib.model.storxml import PoolXML, VolumeXML, dir_pool_doc, volume_doc
from hvlib.model.volplan import (
    FORMATS,
    MIB,
    Data,
    check_size_mib,
    dir_pool_path,
    norm_path,
    resolve_backing,
)
from hvlib.virt import _virt
from hvlib.virt.deadline import LONG_CALL_TIMEOUT
from hvlib.virt.handle import ByName, HostObject
from hvlib.virt.streams import CHUNK, Digest, byte_source, send_all

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

T = TypeVar("T")


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

    def find_volume(self, conn: Any) -> Any:
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


class Pools(ByName[Pool]):
    """The storage pools of one host: ``host.pools`` (or ``Pools(host)``)."""

    _kind, _item = "storage pool", Pool
    _lookup_call, _list_call = "storagePoolLookupByName", "listAllStoragePools"

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
        path = dir_pool_path(name, path)
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
        path = dir_pool_path(name, path)
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


def _check_dir_pool(pool: Pool, path: str) -> None:
    """Raises InvalidState unless ``pool`` is a directory pool at ``path``."""
    doc = pool.doc()
    if doc.pool_type != "dir" or norm_path(doc.target_path) != path:
        raise InvalidState(
            f"pool {pool.name} exists as a {doc.pool_type} pool at {doc.target_path}, "
            f"not as a directory pool at {path}",
            name=pool.name,
        )


class Volume(HostObject):
    """A storage volume in a :class:`Pool`. Get one from ``host.volumes``."""

    def __init__(self, pool: Pool, handle: Any) -> None:
        self.pool = pool
        super().__init__(pool.host, handle)
        with _virt.translated():
            self.name: str = handle.name()

    def __repr__(self) -> str:
        return f"<Volume {self.pool.name}/{self.name} on {self.host.uri}>"

    def find_volume(self, conn: Any) -> Any:
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
        size, chunks = byte_source(data)
        capacity = self.capacity
        if size > capacity:
            raise SpecError("data", f"{size} bytes do not fit in {self.name} ({capacity} bytes)")
        with self._stream() as stream:
            self._bounded(lambda: self.handle.upload(stream, 0, size, 0))
            for chunk in chunks:
                self._bounded(functools.partial(send_all, stream, chunk))
            self._bounded(stream.finish)
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
        with self._stream() as stream:
            self._bounded(lambda: self.handle.download(stream, offset, length or 0, 0))  # 0: all
            while True:
                chunk = self._bounded(lambda: stream.recv(CHUNK))
                if not isinstance(chunk, bytes) or not chunk:
                    break
                out.write(chunk)
                total += len(chunk)
            self._bounded(stream.finish)
        return total

    def _bounded(self, fn: Callable[[], T]) -> T:
        """One step of a transfer, bounded by the host's ``call_timeout``: a transfer may take
        as long as it needs while each message moves within that bound."""
        with self.host.connection.bounded(name=self.name):
            return fn()

    def sha256(self, *, length: int | None = None) -> str:
        """The hex SHA-256 of the volume's bytes (the first ``length`` of them; None: all),
        read through a libvirt stream without holding them in memory. A qcow2 volume gives
        its image file's bytes, as :meth:`download` does.

        Raises:
            SpecError: a negative length. Others: see :meth:`download`.
        """
        sink = Digest()
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
        new = check_size_mib("size_mib", size_mib) * MIB
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
        target = pool_of(self.host, pool or self.pool)
        if find_volume(target, name) is not None:
            raise AlreadyExists(f"volume {target.name}/{name} already exists", name=name)
        doc = volume_doc(name, self.capacity, self.format if self.format in FORMATS else "raw")
        return create_volume(
            target, doc, lambda xml: target.handle.createXMLFrom(xml, self.handle, 0)
        )

    def overlays(self) -> builtins.list[Volume]:
        """Volumes in the host's started pools whose backing image is this volume. Pools and
        volumes that vanish while they are read (deleted by someone else meanwhile) are
        skipped: they are no overlay of this one.

        Raises:
            NotFound: this volume is gone.
        """
        mine = posixpath.normpath(self.path)
        found = []
        for pool in Pools(self.host).list():
            for vol, doc in _volume_docs(pool):
                if (
                    doc.backing_path
                    and resolve_backing(doc.backing_path, doc.target_path or "") == mine
                ):
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


def _volume_docs(pool: Pool) -> builtins.list[tuple[Volume, VolumeXML]]:
    """Each volume of ``pool`` (if started) with its XML, leaving out what vanished while it
    was read: with many volumes made and deleted at once, another thread's delete between
    the listing and a volume's read gave NotFound, which made ``Volume.delete`` (taking it
    for its own volume being gone) skip the delete."""
    try:
        if not pool.active:
            return []
        vols = pool.volumes()
    except NotFound:
        return []
    out = []
    for vol in vols:
        try:
            out.append((vol, vol.doc()))
        except NotFound:
            continue
    return out


def find_volume(pool: Pool, name: str) -> Volume | None:
    try:
        handle = pool._read(lambda h: h.storageVolLookupByName(name))
    except NotFound:
        return None
    return Volume(pool, handle)


def create_volume(pool: Pool, doc: VolumeXML, call: Any) -> Volume:
    """Run ``call(xml)`` (a libvirt volume creation); on failure remove whatever it left and
    re-raise with the pool's free space in the message."""
    name, xml = doc.name or "", doc.to_xml()
    try:
        return Volume(
            pool, pool.host.call(lambda _c: call(xml), name=name, timeout=LONG_CALL_TIMEOUT)
        )
    except AlreadyExists:
        raise
    except HvlibError as e:
        remove_leftover(pool, name)
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


def remove_leftover(pool: Pool, name: str) -> None:
    """Delete volume ``name`` if libvirt knows it (after a refresh); failures are logged."""
    try:
        if pool.active:
            pool.refresh()
        found = find_volume(pool, name)
        if found is not None:
            found._write(lambda h: h.delete(0))
    except HvlibError as e:
        _virt.log.warning("could not remove half-made volume %s/%s: %s", pool.name, name, e)


def pool_of(host: HostLike, ref: Pool | str) -> Pool:
    """The pool ``ref`` names on ``host`` (a Pool is returned as it is).

    Raises:
        NotFound: there is no such pool. SpecError: a malformed name.
    """
    if isinstance(ref, Pool):
        return ref
    return Pools(host).get(check_name("pool.name", ref))
