"""libvirt's storage pool and volume XML, modelled field by field on :mod:`hvlib.model.xmlmodel`.

:class:`PoolXML` and :class:`VolumeXML` read what libvirt returns (``XMLDesc()``) and build
what hvlib sends (:func:`dir_pool_doc`, :func:`volume_doc`), keeping every element they do not
model. Sizes are read and written in bytes whatever ``unit`` libvirt used.

This module holds no policy (no name or path checks: that is :mod:`hvlib.virt.storage`), never
formats XML as text and never calls libvirt.
"""

from __future__ import annotations

from hvlib.model.xmlmodel import Attr, Text, XmlNode, ensure_path

# libvirt's scaled-integer units (basictypes.rng), as multiples of one byte.
_UNITS_BYTES = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
    "p": 1024**5,
    "pib": 1024**5,
    "pb": 1000**5,
    "e": 1024**6,
    "eib": 1024**6,
    "eb": 1000**6,
}


class SizeBytes:
    """A scaled size element (``<capacity unit='G'>2</capacity>``), read and written in bytes.

    Reading an absent element gives None; a unit libvirt does not define reads as ValueError.
    Writing None removes the element.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __get__(self, obj: XmlNode | None, owner: type | None = None) -> int | None:
        assert obj is not None, "fields are read on instances"
        el = obj.el.find(self.path)
        if el is None or el.text is None:
            return None
        unit = (el.get("unit") or "bytes").lower()
        if unit not in _UNITS_BYTES:
            raise ValueError(f"<{self.path}>: unknown unit {unit!r}")
        return int(el.text.strip()) * _UNITS_BYTES[unit]

    def __set__(self, obj: XmlNode, value: int | None) -> None:
        el = obj.el.find(self.path)
        if value is None:
            if el is not None:
                el.getparent().remove(el)  # type: ignore[union-attr]
            return
        el = ensure_path(obj.el, self.path)
        el.set("unit", "bytes")
        el.text = str(value)


class PoolXML(XmlNode):
    """``<pool>``: a storage pool (hvlib creates directory pools)."""

    tag = "pool"
    pool_type = Attr(".", "type")
    name = Text("name")
    uuid = Text("uuid")
    capacity = SizeBytes("capacity")
    allocation = SizeBytes("allocation")
    available = SizeBytes("available")
    target_path = Text("target/path")


class VolumeXML(XmlNode):
    """``<volume>``: a storage volume, with its format and optional backing store."""

    tag = "volume"
    vol_type = Attr(".", "type")
    name = Text("name")
    key = Text("key")
    capacity = SizeBytes("capacity")
    allocation = SizeBytes("allocation")
    target_path = Text("target/path")
    target_format = Attr("target/format", "type")
    backing_path = Text("backingStore/path")
    backing_format = Attr("backingStore/format", "type")


def dir_pool_doc(name: str, path: str) -> PoolXML:
    """A ``<pool type='dir'>`` called ``name`` whose volumes are files in ``path``."""
    doc = PoolXML.new()
    doc.pool_type = "dir"
    doc.name = name
    doc.target_path = path
    return doc


def volume_doc(
    name: str,
    capacity: int,
    fmt: str,
    *,
    allocation: int | None = None,
    backing: tuple[str, str] | None = None,
) -> VolumeXML:
    """A ``<volume>`` of ``capacity`` bytes in format ``fmt``.

    ``allocation`` None lets libvirt decide (for raw files: fully allocated). ``backing`` is
    the (path, format) of the image this one is an overlay on.
    """
    doc = VolumeXML.new()
    doc.name = name
    doc.capacity = capacity
    doc.allocation = allocation
    doc.target_format = fmt
    if backing is not None:
        doc.backing_path, doc.backing_format = backing
    return doc
