"""A small declarative layer over libvirt XML documents, built on lxml.

One declaration per XML field (``name = Text("name")``, ``mac = Attr("mac", "address")``)
serves both reading and writing, so parse and format cannot drift apart. Nodes wrap the lxml
element itself: whatever hvlib does not model (addresses, aliases, devices libvirt added)
stays in the tree untouched, so a live ``XMLDesc()`` read, edited and written back keeps it.

XML is only ever built here through lxml; this module never formats XML as text and never
calls libvirt.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, Generic, Self, TypeVar

from lxml import etree

from hvlib.errors import SpecError

T = TypeVar("T")
Element = etree._Element

_PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
_UNITS_KIB = {
    "b": 1 / 1024,
    "bytes": 1 / 1024,
    "k": 1,
    "kib": 1,
    "kb": 1000 / 1024,
    "m": 1024,
    "mib": 1024,
    "mb": 1000**2 / 1024,
    "g": 1024**2,
    "gib": 1024**2,
    "gb": 1000**3 / 1024,
    "t": 1024**3,
    "tib": 1024**3,
    "tb": 1000**4 / 1024,
}


def parse(text: str | bytes) -> Element:
    """Parse an XML document without network access or entity expansion.

    Raises:
        lxml.etree.XMLSyntaxError: when the text is not well-formed XML.
    """
    data = text.encode() if isinstance(text, str) else text
    return etree.fromstring(data, _PARSER)


def parse_checked(fieldname: str, text: object) -> Element:
    """:func:`parse` for input from a caller: anything but a well-formed document (a
    ``str`` or ``bytes``) is a SpecError naming ``fieldname``.

    Raises:
        SpecError: not a string or bytes, or not well-formed XML (lxml's reason quoted).
    """
    if not isinstance(text, (str, bytes)):
        raise SpecError(fieldname, "must be an XML document (a string)", type(text).__name__)
    try:
        return parse(text)
    except etree.XMLSyntaxError as e:
        raise SpecError(fieldname, f"is not well-formed XML: {e}") from None


def tostring(el: Element) -> str:
    """Serialise ``el`` as pretty-printed unicode XML (no declaration)."""
    etree.indent(el, space="  ")
    return etree.tostring(el, encoding="unicode")


def ensure_path(el: Element, path: str) -> Element:
    """Return the element at the simple ``a/b/c`` path below ``el``, creating missing steps."""
    node = el
    for step in _steps(path):
        child = next(node.iterchildren(step), None)  # half the cost of find() for a tag
        node = child if child is not None else etree.SubElement(node, step)
    return node


@functools.lru_cache(maxsize=512)
def _steps(path: str) -> tuple[str, ...]:
    """The tags of a simple ``a/b/c`` path (``.`` and empty steps dropped)."""
    return tuple(s for s in path.split("/") if s and s != ".")


def find(el: Element, path: str) -> Element | None:
    """The element at ``path`` below ``el`` (``.`` is ``el`` itself), or None."""
    return el if path in ("", ".") else el.find(path)


class Field(Generic[T]):
    """A typed XML field: the text of, or an attribute on, the element at ``path``.

    Reading a missing field gives None; writing None removes the attribute (or the element's
    text and, if then empty, the element itself).
    """

    def __init__(
        self,
        path: str,
        attr: str | None = None,
        conv: Callable[[str], T] = str,  # type: ignore[assignment]
        fmt: Callable[[T], str] = str,
    ) -> None:
        self.path, self.attr, self.conv, self.fmt = path, attr, conv, fmt

    def __get__(self, obj: XmlNode | None, owner: type | None = None) -> T | None:
        assert obj is not None, "fields are read on instances"
        el = find(obj.el, self.path)
        if el is None:
            return None
        raw = el.get(self.attr) if self.attr else el.text
        return None if raw is None else self.conv(raw)

    def __set__(self, obj: XmlNode, value: T | None) -> None:
        if value is None:
            self._clear(obj.el)
            return
        el = ensure_path(obj.el, self.path)
        if self.attr:
            el.set(self.attr, self.fmt(value))
        else:
            el.text = self.fmt(value)

    def _clear(self, root: Element) -> None:
        el = find(root, self.path)
        if el is None:
            return
        if self.attr:
            if self.attr in el.attrib:
                del el.attrib[self.attr]
        elif el is not root and len(el) == 0 and not el.attrib:
            el.getparent().remove(el)  # type: ignore[union-attr]
        else:
            el.text = None


def Text(path: str) -> Field[str]:
    """A string held as the text of the element at ``path``."""
    return Field(path)


def Attr(path: str, attr: str) -> Field[str]:
    """A string held in attribute ``attr`` of the element at ``path``."""
    return Field(path, attr)


def IntText(path: str) -> Field[int]:
    """An integer held as the text of the element at ``path``."""
    return Field(path, conv=int)


def IntAttr(path: str, attr: str) -> Field[int]:
    """An integer held in attribute ``attr`` of the element at ``path``."""
    return Field(path, attr, conv=int)


class Flag:
    """A boolean that is the presence of an empty element (``<readonly/>``, ``<privnet/>``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __get__(self, obj: XmlNode | None, owner: type | None = None) -> bool:
        assert obj is not None
        return obj.el.find(self.path) is not None

    def __set__(self, obj: XmlNode, value: bool) -> None:
        el = obj.el.find(self.path)
        if value and el is None:
            ensure_path(obj.el, self.path)
        elif not value and el is not None:
            el.getparent().remove(el)  # type: ignore[union-attr]


class MemoryKiB:
    """A memory size element with a ``unit`` attribute, always read and written in KiB."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __get__(self, obj: XmlNode | None, owner: type | None = None) -> int | None:
        assert obj is not None
        el = obj.el.find(self.path)
        if el is None or el.text is None:
            return None
        factor = _UNITS_KIB.get((el.get("unit") or "KiB").lower(), 1)
        return round(int(el.text) * factor)

    def __set__(self, obj: XmlNode, value: int | None) -> None:
        el = obj.el.find(self.path)
        if value is None:
            if el is not None:
                obj.el.remove(el)
            return
        el = ensure_path(obj.el, self.path)
        el.set("unit", "KiB")
        el.text = str(value)


class XmlNode:
    """Wraps one lxml element; subclasses declare their fields as class attributes."""

    tag = ""

    def __init__(self, el: Element) -> None:
        self.el = el

    @classmethod
    def new(cls, parent: Element | None = None) -> Self:
        """A new, empty element of this node's tag (appended to ``parent`` when given)."""
        el = etree.Element(cls.tag) if parent is None else etree.SubElement(parent, cls.tag)
        return cls(el)

    @classmethod
    def from_xml(cls, text: str | bytes) -> Self:
        """Parse ``text``.

        Raises:
            lxml.etree.XMLSyntaxError: not well-formed.
            ValueError: the root element is not ``<tag>``.
        """
        el = parse(text)
        if cls.tag and el.tag != cls.tag:
            raise ValueError(f"expected <{cls.tag}>, got <{el.tag}>")
        return cls(el)

    def to_xml(self) -> str:
        """Serialise this node (and everything below it, modelled or not)."""
        return tostring(self.el)

    def children(self, node_type: type[N], path: str) -> Iterator[N]:
        """Wrap every element matching ``path`` as ``node_type``."""
        return (node_type(el) for el in self.el.findall(path))

    def xpath(self, expr: str) -> list[Any]:
        """Evaluate an XPath expression on this node."""
        return list(self.el.xpath(expr))  # type: ignore[arg-type]


N = TypeVar("N", bound=XmlNode)
