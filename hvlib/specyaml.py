"""Reading a spec file's YAML within bounds: the bytes, the characters, the node tree.

:func:`read_text` and :func:`compose` are the only way :mod:`hvlib.specfile` reads YAML. They
turn every failure into a :class:`SpecFileError` naming the file, the line and, where it is
known, the column (``FILE:LINE:COL``): unreadable paths, non-UTF-8 bytes, characters YAML
refuses (NUL and other controls), syntax errors, and input beyond the limits below, which
bound the time and memory a file can cost before a single field is looked at. What the
limits are and why is written in :mod:`hvlib.specfile`'s docstring.

The node tree is PyYAML's (for the line of every field), composed by a subclass of its
composer that counts as it goes: every node, and every alias as the whole subtree it stands
for, so that an alias bomb (a few hundred bytes that expand exponentially) is refused after
:data:`MAX_NODES` nodes, not after the machine runs out of memory; the nesting depth,
through aliases too, so no later recursive walk can reach Python's recursion limit; and an
alias used inside the very node it names (a cycle) is refused.

Must not: construct Python objects from whole nodes (:mod:`hvlib.specfile` walks the tree
itself), import libvirt, or read anything but the one file it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hvlib.errors import Location, SpecError, SpecFileError

MAX_FILE_BYTES = 1024 * 1024
"""The largest spec file read (1 MiB)."""
MAX_NODES = 50_000
"""The most YAML nodes one file may hold, counting each alias as all the nodes it stands for."""
MAX_CHARS = 1024 * 1024
"""The most characters of keys and values one file may hold, aliases counted as every
character they stand for (what a file of MAX_FILE_BYTES could hold written out)."""
MAX_ALIASES = 1_000
"""The most aliases (``*name``) one file may use."""
MAX_DEPTH = 32
"""The deepest nesting of lists and mappings, counted through aliases."""
MAX_SCALAR_CHARS = 65_536
"""The longest single value (a description may be this long, nothing else comes close)."""
MAX_KEY_CHARS = 64
"""The longest mapping key (hvlib's longest key has 14 characters)."""
MAX_ITEMS = 1_024
"""The most items in one list (disks, nics, DHCP reservations, cpu features...)."""
MAX_INT_BITS = 64
"""Integers must fit in 64 bits (the largest any field takes is below 2**33)."""
_Mark = Any
"""A PyYAML mark (``yaml.Mark``, or libyaml's of the same shape): 0-based ``line``, ``column``."""
_BREAKS = re.compile(r"\r\n|[\n\r\x85\u2028\u2029]")
"""What YAML counts as a line break (PyYAML's reader counts lines the same way)."""


def position(text: str, index: int, path: str) -> Location:
    """The line and column of character ``index`` of ``text``, counted as YAML counts them."""
    breaks = list(_BREAKS.finditer(text, 0, index))
    start = breaks[-1].end() if breaks else 0
    return Location(path, len(breaks) + 1, index - start + 1)


def mark_location(mark: _Mark | None, path: str) -> Location:
    """Where a PyYAML mark points (0-based there, 1-based here)."""
    if mark is None:
        return Location(path, 0)
    return Location(path, mark.line + 1, mark.column + 1)


# -- bytes and characters ------------------------------------------------------------------


def read_text(path: str | Path) -> str:
    """The text of the spec file at ``path``: at most :data:`MAX_FILE_BYTES`, UTF-8 (a
    leading byte-order mark is dropped).

    Raises:
        SpecError: ``path`` is neither a str nor a Path (an int would open that descriptor).
        SpecFileError: the file cannot be read (line 0: the file as a whole), is too large
            (at the line where the limit is crossed), or is not UTF-8 (at the first bad byte).
    """
    if not isinstance(path, str | Path):
        raise SpecError("path", "must be a str or a Path", path)
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecFileError(Location(name, 0), "file", f"cannot be read: {reason}") from None
    if len(data) > MAX_FILE_BYTES:
        line = data[:MAX_FILE_BYTES].count(b"\n") + 1
        rule = f"is larger than {MAX_FILE_BYTES} bytes (1 MiB): split it into several files"
        raise SpecFileError(Location(name, line), "file", rule)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        head = data[: e.start].decode("utf-8-sig")
        where = position(head, len(head), name)
        bad = data[e.start : e.start + 1].hex()
        rule = f"is not UTF-8 text (byte 0x{bad}: {e.reason}); spec files are UTF-8"
        raise SpecFileError(where, "file", rule) from None


def check_text_size(text: str, path: str) -> None:
    """Refuse ``text`` longer than :data:`MAX_FILE_BYTES` characters (for :func:`loads`).

    Raises:
        SpecError: ``text`` is not a str. SpecFileError: it is too long.
    """
    if not isinstance(text, str):
        raise SpecError("text", "must be a str", type(text).__name__)
    if len(text) > MAX_FILE_BYTES:
        line = position(text, MAX_FILE_BYTES, path).line
        rule = f"is larger than {MAX_FILE_BYTES} characters (1 MiB): split it into several files"
        raise SpecFileError(Location(path, line), "file", rule)


# -- nodes ---------------------------------------------------------------------------------


def compose(text: str, path: str) -> Iterator[tuple[BoundedLoader, yaml.Node]]:
    """Each non-empty document node of ``text`` with the loader that made it (whose
    constructor turns its scalars into values), composed within the limits.

    Raises:
        SpecFileError: a character YAML refuses, a syntax error, an undefined, duplicate or
            cyclic anchor, or a limit crossed (with the line and column).
    """
    check_text_size(text, path)
    try:
        loader = BoundedLoader(text, path)
    except yaml.reader.ReaderError as e:
        raise _reader_error(e, text, path) from None
    try:
        yield from _documents(loader, path)
    finally:
        loader.dispose()


def _documents(loader: BoundedLoader, path: str) -> Iterator[tuple[BoundedLoader, yaml.Node]]:
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not is_null(node):
                yield loader, node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(str(p) for p in (e.context, e.problem) if p)
        raise SpecFileError(mark_location(mark, path), "yaml", what or "is not valid") from None
    except yaml.YAMLError as e:
        raise SpecFileError(Location(path, 0), "yaml", str(e)) from None


def _reader_error(e: yaml.reader.ReaderError, text: str, path: str) -> SpecFileError:
    """A character YAML refuses, at its line and column."""
    char = e.character if isinstance(e.character, str) else chr(e.character)
    name = {"\x00": "NUL", "\x7f": "DEL"}.get(char) or f"U+{ord(char):04X}"
    rule = f"character {name} is not allowed (YAML refuses control characters)"
    return SpecFileError(position(text, int(e.position), path), "yaml", rule)


def is_null(node: yaml.Node) -> bool:
    """A null scalar (``~``, ``null``, or nothing)."""
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader whose composer keeps every limit of this module."""

    def __init__(self, text: str, path: str) -> None:
        super().__init__(text)
        self.path = path
        self.nodes = 0
        """Nodes of the file so far, each alias counted as the nodes it stands for."""
        self.chars = 0
        """Characters of keys and values so far, each alias counted as those it stands for."""
        self.aliases = 0
        self._depth = 0
        self._deepest = 0
        self._done: dict[str, tuple[int, int, int]] = {}
        """Anchors of this document whose node is complete: (nodes, characters, height)."""

    def compose_document(self) -> yaml.Node | None:
        self._done = {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            return self._alias()
        event = self._next_event()
        self._depth += 1
        self._count(1, event.start_mark)
        before, chars, outer = self.nodes, self.chars, self._deepest
        self._deepest = self._depth
        node = super().compose_node(parent, index)
        height = self._deepest - self._depth + 1
        anchor = event.anchor
        if anchor is not None:
            self._done[anchor] = (self.nodes - before + 1, self.chars - chars, height)
        self._deepest = max(outer, self._deepest)
        self._depth -= 1
        return node

    def _alias(self) -> yaml.Node:
        """The node an alias names, its size and depth counted as if it were written out."""
        event = self._next_event()
        anchor = str(event.anchor)
        if anchor in self.anchors and anchor not in self._done:
            raise self.refuse(event.start_mark, f"alias *{anchor} is used inside the node it names")
        node = super().compose_node(None, 0)  # the node, or PyYAML's undefined-alias error
        assert node is not None
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            raise self.refuse(event.start_mark, f"more than {MAX_ALIASES} aliases")
        nodes, chars, height = self._done[anchor]
        reached = self._depth + height
        if reached > MAX_DEPTH:
            raise self.refuse(event.start_mark, _too_deep(f" through alias *{anchor}"))
        self._deepest = max(self._deepest, reached)
        self._count(nodes, event.start_mark)
        self._count_chars(chars, event.start_mark)
        return node

    def _next_event(self) -> yaml.NodeEvent:
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def _count(self, nodes: int, mark: _Mark | None) -> None:
        self.nodes += nodes
        if self._depth > MAX_DEPTH:
            raise self.refuse(mark, _too_deep(""))
        if self.nodes > MAX_NODES:
            rule = (
                f"expands to more than {MAX_NODES} YAML nodes (aliases count as every node "
                "they stand for): split it into several files"
            )
            raise self.refuse(mark, rule)

    def _count_chars(self, chars: int, mark: _Mark | None) -> None:
        self.chars += chars
        if self.chars > MAX_CHARS:
            rule = (
                f"expands to more than {MAX_CHARS} characters of keys and values (aliases "
                "count as every character they stand for): split it into several files"
            )
            raise self.refuse(mark, rule)

    def compose_scalar_node(self, anchor: dict[object, yaml.Node]) -> yaml.ScalarNode:
        node = super().compose_scalar_node(anchor)
        if len(node.value) > MAX_SCALAR_CHARS:
            rule = f"a value longer than {MAX_SCALAR_CHARS} characters"
            raise self.refuse(node.start_mark, rule, len(node.value))
        self._count_chars(len(node.value), node.start_mark)
        return node

    def compose_sequence_node(self, anchor: dict[object, yaml.Node]) -> yaml.SequenceNode:
        node = super().compose_sequence_node(anchor)
        if len(node.value) > MAX_ITEMS:
            raise self.refuse(node.start_mark, f"a list of more than {MAX_ITEMS} items")
        return node

    def refuse(self, mark: _Mark | None, rule: str, value: object = None) -> SpecFileError:
        """A limit crossed at ``mark``."""
        return SpecFileError(mark_location(mark, self.path), "yaml", rule, value)


def _too_deep(how: str) -> str:
    return f"nested more than {MAX_DEPTH} lists or mappings deep{how}"
