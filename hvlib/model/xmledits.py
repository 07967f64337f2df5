"""The caller's XML edits (:class:`~hvlib.model.devices.XmlEdit`), applied to a rendered or
live domain document, and the identity nodes no edit may touch (:data:`IDENTITY`): how hvlib
finds a domain again and tells its type, CPU and NICs apart, hvlib's own ``<metadata>``
namespaces among them.

An XPath is evaluated on the document, so every spelling of a node counts; each node an edit
selects is checked before any is changed. Pure: lxml only, no libvirt.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from hvlib.errors import SpecError
from hvlib.model.cpu import HVLIB_CPU_NS
from hvlib.model.devices import XmlEdit
from hvlib.model.domxml import DomainXML
from hvlib.model.xmlmodel import Element

HVLIB_NS = "https://hvlib.dev/xmlns/hvlib/1"
"""Namespace of hvlib's own ``<metadata>`` (the virt type a domain was made as)."""
IDENTITY = "the domain's name, uuid, type, os type, hvlib's own metadata or a NIC's MAC"
"""What no XmlEdit may touch: how hvlib finds a domain again (its name; its uuid, which every
redefine must keep), tells its virt type (the ``type`` attribute, the ``<os><type>``,
hvlib's ``<metadata>`` record of it), compares its CPU (hvlib's CPU ``<metadata>``) and
tells its NICs apart (their ``<mac>``: ``ensure`` keys NICs by MAC and keeps a generated
one; an edit that dropped it would have libvirt make a new one on every define). An edit of
any of them would make the next ``ensure`` look up, or compare against, something other than
what it defined: set ``DomainSpec.name``, ``uuid``, ``virt`` or ``Nic.mac`` instead. The
``xml_hook`` may not change the first five either (checked after it ran)."""
HVLIB_NAMESPACES = (HVLIB_NS, HVLIB_CPU_NS)


def identity_of(doc: DomainXML) -> tuple[object, ...]:
    """The identity values of ``doc`` (see :data:`IDENTITY`), comparable before and after
    a change."""
    meta = [etree.tostring(el) for el in _hvlib_metadata(doc.el)]
    return (doc.name, doc.uuid, doc.domain_type, doc.os_type, meta)


def _hvlib_metadata(root: Element) -> list[Element]:
    meta = root.find("metadata")
    if meta is None:
        return []
    return [el for el in meta if etree.QName(el).namespace in HVLIB_NAMESPACES]


class _Identity:
    """The identity nodes of one document (:data:`IDENTITY`): the elements whose text (or
    whose whole self) hvlib owns, the (element, attribute) pairs it owns, the ancestors a
    delete may not take with them, and the NICs' ``<mac>`` elements."""

    def __init__(self, root: Element) -> None:
        owned = [root.find("name"), root.find("uuid"), root.find("os/type")]
        self.texts = {el for el in owned if el is not None}
        self.wholes = {d for m in _hvlib_metadata(root) for d in m.iter()}
        self.attrs = {(root, "type")}
        self.ancestors = {a for el in self.texts | self.wholes for a in el.iterancestors()}
        self.macs = set(root.findall("devices/interface/mac"))  # a NIC itself may go

    def touched(self, el: Element, attr: str, remove: bool) -> bool:
        """Whether setting (or with ``remove``, deleting) ``attr`` of ``el`` (its text, or
        with ``remove`` the element itself, when ``attr`` is empty) touches identity."""
        if el in self.wholes or el in self.macs or (el, attr) in self.attrs:
            return True
        if attr:
            return False
        return el in self.texts or (remove and el in self.ancestors)


def apply_edits(doc: DomainXML, edits: Sequence[XmlEdit]) -> None:
    """Apply the caller's XPath edits to ``doc``, in order.

    Every node an edit's XPath selects on ``doc`` is checked before any is changed: an edit
    touching an identity node (:data:`IDENTITY`) is refused whatever its spelling.

    Raises:
        SpecError: naming ``xml_edits[i]``: an XPath that does not parse or selects no
            element for a set, a bad attribute name, or an identity node touched.
    """
    for i, edit in enumerate(edits):
        _apply_edit(doc, edit, f"xml_edits[{i}]")


def _apply_edit(doc: DomainXML, edit: XmlEdit, fieldname: str) -> None:
    path, attr = _split_attr(edit.xpath)
    elements = _select(doc.el, path, fieldname, edit.xpath)
    if not elements and not edit.remove:
        raise SpecError(fieldname, "the XPath matches no element", edit.xpath)
    identity = _Identity(doc.el)
    if any(identity.touched(el, attr, edit.remove) for el in elements):
        raise SpecError(
            fieldname, f"must not touch {IDENTITY}: set the spec's own fields", edit.xpath
        )
    try:
        for el in elements:
            _edit_element(el, edit, attr)
    except ValueError as e:  # lxml: an attribute name XML cannot have
        raise SpecError(fieldname, f"cannot be applied: {e}", edit.xpath) from None


def _split_attr(xpath: str) -> tuple[str, str]:
    """(element path, attribute) of ``.../@attr``; (xpath, "") for anything else."""
    path, _, attr = xpath.rpartition("/@")
    if not path or not attr or any(c in attr for c in "/[]()|@*= "):
        return xpath, ""
    return path, attr


def _select(root: Element, path: str, fieldname: str, xpath: str) -> list[Element]:
    """The elements ``path`` selects below ``root``.

    Raises:
        SpecError: not a valid XPath, or one whose value is not a node set of elements
            (a number, a string, attributes or text).
    """
    try:
        matches = root.xpath(path)
    except (etree.XPathError, RecursionError, ValueError) as e:
        raise SpecError(fieldname, f"not a valid XPath: {e}", xpath) from None
    if not isinstance(matches, list):
        raise SpecError(fieldname, "the XPath must select elements, not a value", xpath)
    if any(not isinstance(m, etree._Element) for m in matches):
        raise SpecError(fieldname, "the XPath must select elements (or end in /@attribute)", xpath)
    return [m for m in matches if isinstance(m, etree._Element)]


def _edit_element(el: Element, edit: XmlEdit, attr: str) -> None:
    if edit.remove and attr:
        if attr in el.attrib:
            del el.attrib[attr]
    elif edit.remove:
        parent = el.getparent()
        if parent is not None:
            parent.remove(el)
    elif attr:
        el.set(attr, edit.value or "")
    else:
        el.text = edit.value
