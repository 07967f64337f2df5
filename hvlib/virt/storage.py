"""The volumes of a host as an idempotent collection: ``host.volumes`` (:class:`Volumes`).

``Volumes(host)`` creates, finds and converges volumes (``ensure``: a :class:`VolumeResult`
says what changed, or with ``check=True`` would change). A ``backing`` volume makes a qcow2
overlay; ``data`` (bytes, or a local file's path: streamed) makes a volume holding exactly
that content (compared by SHA-256 on a later ensure, never by size). A volume whose creation
(or first upload) fails is removed again, so nothing half-made stays in the pool. The
objects (:class:`hvlib.virt.pools.Pool`, :class:`hvlib.virt.pools.Volume`) and
``host.pools`` are in :mod:`hvlib.virt.pools`; what a planned volume may be is pure, in
:mod:`hvlib.model.volplan`.

Names are checked with :func:`hvlib.model.checks.check_name` (no ``/``, no leading ``.``: a
volume stays inside its pool) and paths with :func:`hvlib.model.checks.check_path`, before
libvirt is called. This module never imports libvirt and never reads or writes pool files
itself (only libvirt does, wherever the pool is).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from hvlib.errors import AlreadyExists, InvalidState, NotFound, SpecError
from hvlib.model.checks import check_name, check_path
from hvlib.model.plan import Change, ChangeHow, ChangeReport
from hvlib.model.storxml import VolumeXML, volume_doc
from hvlib.model.volplan import (
    FORMATS,
    MIB,
    Data,
    VolumeFormat,
    check_size_mib,
    describe_volume,
    kind_of,
    norm_path,
    plan_data,
    resolve_backing,
)
from hvlib.virt.pools import (
    Pool,
    Volume,
    create_volume,
    find_volume,
    pool_of,
    remove_leftover,
)
from hvlib.virt.streams import Payload

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike

T = TypeVar("T")


# -- pools ----------------------------------------------------------------------------------


# -- volumes --------------------------------------------------------------------------------


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
        return pool_of(self.host, ref)

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
        found = find_volume(target, name)
        if found is None and target.active:
            target.refresh()
            found = find_volume(target, name)
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
        data: Data | os.PathLike[str] | None = None,
        backing: Volume | tuple[str, str] | None = None,
    ) -> Volume:
        """Create volume ``name`` in ``pool`` and return it.

        ``format`` is ``raw`` or ``qcow2`` (None: qcow2 with ``backing`` or when ``data`` is
        a qcow2 image, else raw). With ``backing`` (a Volume or a (pool, name) pair) the
        volume is a qcow2 overlay on that base, as large as the base unless ``size_mib`` says
        more. With ``data`` (bytes, or the path of a local file as an ``os.PathLike``: read
        in chunks, never whole) the volume is exactly that image (``size_mib`` may make it
        larger), uploaded through a libvirt stream; otherwise ``size_mib`` is required. Raw
        volumes are fully allocated, so a pool without the space fails here rather than
        later in a guest. On any failure the volume is removed again.

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
        if find_volume(target, name) is not None:
            raise AlreadyExists(f"volume {target.name}/{name} already exists", name=name)
        return _create_planned(target, doc, payload)

    def ensure(
        self,
        pool: Pool | str,
        name: str,
        *,
        size_mib: int | None = None,
        format: VolumeFormat | None = None,
        data: Data | os.PathLike[str] | None = None,
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
        data: Data | os.PathLike[str] | None,
        backing: Volume | tuple[str, str] | None,
    ) -> tuple[VolumeXML, Payload | None]:
        """The volume's XML and the bytes to upload, after every check."""
        check_name("volume.name", name)
        payload = None if data is None else Payload.of(data)
        fmt = format or _default_format(backing, payload)
        if fmt not in FORMATS:
            raise SpecError("format", "must be 'raw' or 'qcow2'", format)
        size = None if size_mib is None else check_size_mib("size_mib", size_mib) * MIB
        if payload is not None:
            if backing is not None:
                raise SpecError("data", "cannot be combined with backing")
            if fmt == "qcow2" and size is not None:
                rule = "cannot be combined with qcow2 data: the image's header says its size"
                raise SpecError("size_mib", rule, size_mib)
            return plan_data(name, fmt, size, payload.size, payload.head), payload
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


def _default_format(backing: object, payload: Payload | None) -> str:
    """qcow2 for an overlay or for data that is a qcow2 image (its header says so: libvirt
    would report such a "raw" volume as qcow2, and every ensure would make it anew), else raw."""
    if backing is not None or (payload is not None and payload.head.startswith(b"QFI\xfb")):
        return "qcow2"
    return "raw"


def _backing_key(backing: Volume | tuple[str, str] | None) -> tuple[str, str] | None:
    return (backing.pool.name, backing.name) if isinstance(backing, Volume) else backing


def _changes(
    vol: Volume | None,
    want: VolumeXML,
    payload: Payload | None,
    size_mib: int | None,
    base: tuple[str, str] | None,
) -> tuple[list[Change], str]:
    """What ensuring ``want`` (and ``payload``) over ``vol`` changes, and how: ``create``,
    ``recreate`` (delete, then create), ``resize`` or ``none``. Reads only.

    Raises:
        InvalidState: ``vol`` has another format or backing and there is no ``payload``.
    """
    if vol is None:
        digest = None if payload is None else payload.sha256
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


def _data_changes(vol: Volume, want: VolumeXML, payload: Payload) -> list[Change]:
    """How ``vol`` differs from a volume holding exactly ``payload`` (empty: it holds it).
    The content is compared by SHA-256 of the volume's first ``payload.size`` bytes, never
    by sizes (a qcow2's capacity is its virtual size, not the image file's length)."""
    have, changes = vol.doc(), []
    if kind_of(have.target_format) != kind_of(want.target_format):
        changes.append(Change("format", have.target_format, want.target_format, _RECREATE))
    if have.backing_path is not None:
        changes.append(Change("backing", have.backing_path, None, _RECREATE))
    before = vol.sha256(length=payload.size)
    after = payload.sha256
    if changes or before != after:
        changes.append(Change("content", f"sha256:{before}", f"sha256:{after}", _RECREATE))
    capacity = have.capacity or 0
    if changes and want.target_format == "raw" and capacity != want.capacity:
        changes.append(Change("capacity", capacity, want.capacity, _RECREATE))
    return changes


_RECREATE = ChangeHow.RECREATE
"""A data volume whose content or format differs is deleted and made anew."""


def _create_planned(pool: Pool, doc: VolumeXML, payload: Payload | None) -> Volume:
    """Create ``doc`` in ``pool`` and upload ``payload``; remove the volume if either fails."""
    vol = create_volume(pool, doc, lambda xml: pool.handle.createXML(xml, 0))
    if payload is not None:
        try:
            with payload.open() as content:
                vol.upload(content)
        except BaseException:
            remove_leftover(pool, vol.name)
            raise
    return vol


def _check_same_kind(vol: Volume, want: VolumeXML) -> None:
    have = vol.doc()
    where = f"volume {vol.pool.name}/{vol.name}"
    if kind_of(have.target_format) != kind_of(want.target_format):
        raise InvalidState(
            f"{where} is {have.target_format}, not {want.target_format}: delete it first",
            name=vol.name,
        )
    had = None if have.backing_path is None else resolve_backing(have.backing_path, vol.path)
    if had != norm_path(want.backing_path):
        raise InvalidState(
            f"{where} is backed by {had or 'nothing'}, not {want.backing_path or 'nothing'}: "
            "delete it first",
            name=vol.name,
        )
