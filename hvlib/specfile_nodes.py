"""YAML nodes of a spec-file document read as the shapes its fields take (a mapping with
known keys, a list, a scalar, a string taken as written, a bool), each field's line recorded
under its document path (``disks[0].target``) as it is read.

:class:`NodeReader` refuses what a field cannot be (a list where a value goes, a duplicate
or unknown key, an integer beyond 64 bits, a tag that cannot read its value) with a
:class:`~hvlib.errors.SpecFileError` at the node's line. It knows no kind of document: that
is :mod:`hvlib.specfile_convert`. Nothing here talks to libvirt.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml

from hvlib.errors import Location, SpecFileError
from hvlib.specfile_documents import locate
from hvlib.specyaml import MAX_INT_BITS, MAX_KEY_CHARS, BoundedLoader

_INT_TAG = "tag:yaml.org,2002:int"
_INT_CHARS_MAX = MAX_INT_BITS + 6
"""Longer integer literals are refused unread: ``-0b`` and 64 binary digits is the longest."""

Node = yaml.Node


class NodeReader:
    """Reads the nodes of one document, recording where each field was written."""

    def __init__(self, loader: BoundedLoader, path: str, node: Node) -> None:
        self.loader = loader
        self.path = path
        self.node = node
        self.where = self.at(node)
        self.fields: dict[str, Location] = {}

    def at(self, node: Node) -> Location:
        """Where ``node`` starts."""
        return Location(self.path, node.start_mark.line + 1)

    def locate(self, fieldname: str) -> Location:
        """The line of ``fieldname`` or of the nearest enclosing field of this document."""
        return locate(self.fields, self.where, fieldname)

    def fail(self, node: Node, fieldname: str, rule: str, value: object = None) -> SpecFileError:
        """An error about ``fieldname``, written at ``node``."""
        return SpecFileError(self.at(node), fieldname, rule, value)

    def mapping(self, node: Node, where: str) -> dict[str, Node]:
        """The keys of a mapping node (merges resolved), each recorded under ``where.KEY``.

        Raises:
            SpecFileError: not a mapping, a key that is not a string, or a duplicate key.
        """
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where or "document", "must be a mapping (key: value)")
        seen: set[str] = set()
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                continue
            name = self.key_name(key, where)
            if name in seen:
                raise self.fail(key, join(where, name), "is given twice")
            seen.add(name)
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as e:
            raise self.fail(node, where or "document", f"bad merge: {e.problem}") from None
        out: dict[str, Node] = {}
        for key, value in node.value:
            name = self.key_name(key, where)
            out[name] = value
            self.fields[join(where, name)] = self.at(key)
        return out

    def one_of(
        self, node: Node, where: str, sources: Sequence[str], options: Iterable[str]
    ) -> tuple[dict[str, Node], str]:
        """The keys of mapping ``node`` and the one key of ``sources`` it must hold; besides
        that one, only keys of ``options`` may be given.

        Raises:
            SpecFileError: not a mapping, not exactly one of ``sources``, or another key.
        """
        keys = self.mapping(node, where)
        given = [k for k in sources if k in keys]
        if len(given) != 1:
            raise self.fail(node, where, f"needs exactly one of {', '.join(sources)}", given)
        self.check_keys(keys, (given[0], *options), where)
        return keys, given[0]

    def key_name(self, key: Node, where: str) -> str:
        """A mapping key: a string of at most MAX_KEY_CHARS characters."""
        if not isinstance(key, yaml.ScalarNode):
            what = "a list" if isinstance(key, yaml.SequenceNode) else "a mapping"
            raise self.fail(key, where or "document", f"keys must be strings, not {what}")
        value = self.scalar(key, where or "document")
        if not isinstance(value, str):
            raise self.fail(key, where or "document", "keys must be strings", key.value)
        if len(value) > MAX_KEY_CHARS:
            rule = f"keys are at most {MAX_KEY_CHARS} characters"
            raise self.fail(key, where or "document", rule, value)
        return value

    def check_keys(self, keys: Mapping[str, Node], allowed: Iterable[str], where: str) -> None:
        """Refuse any key of ``keys`` not in ``allowed``, naming it and its line."""
        allowed = tuple(allowed)
        for name, value in keys.items():
            if name not in allowed:
                hint = difflib.get_close_matches(name, allowed, n=1)
                rule = f"unknown key (did you mean {hint[0]!r}?)" if hint else "unknown key"
                rule += f"; known keys: {', '.join(allowed)}"
                raise SpecFileError(
                    self.fields.get(join(where, name), self.at(value)), join(where, name), rule
                )

    def scalar(self, node: Node, fieldname: str) -> Any:
        """The Python value of a scalar node (YAML 1.1 types: int, bool, str, null...).

        Raises:
            SpecFileError: not a scalar; a value its tag cannot read (PyYAML's constructors
                raise ValueError, KeyError, IndexError, AttributeError... on explicitly
                tagged nonsense such as ``!!int x``, ``!!bool maybe`` or
                ``!!timestamp domain``: any exception of theirs is reported, with the tag);
                an integer beyond MAX_INT_BITS bits.
        """
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, fieldname, "must be a single value, not a list or mapping")
        if node.tag == _INT_TAG and len(node.value.replace("_", "")) > _INT_CHARS_MAX:
            raise self.fail(node, fieldname, f"is too large (more than {MAX_INT_BITS} bits)")
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as e:
            raise self.fail(node, fieldname, f"cannot be read: {e.problem}") from None
        except MemoryError:
            raise
        except Exception as e:  # PyYAML's constructors on tagged nonsense: see the docstring
            tag = node.tag.rsplit(":", 1)[-1]
            why = f": {_one_line(e)}" if isinstance(e, ValueError | ArithmeticError) else ""
            raise self.fail(node, fieldname, f"is not a valid {tag}{why}", node.value) from None
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise self.fail(node, fieldname, f"is too large (more than {MAX_INT_BITS} bits)")
        return value

    def plain(self, node: Node, fieldname: str, *, mapping: bool = False) -> Any:
        """Plain Python data (dicts, lists, scalars) of ``node``, every nested field's line
        recorded (``idmap.uids[0].count``), for DomainSpec fields that take a mapping.

        Raises:
            SpecFileError: ``mapping`` and the node is not one, or a bad key or scalar.
        """
        if mapping or isinstance(node, yaml.MappingNode):
            keys = self.mapping(node, fieldname)
            return {k: self.plain(v, f"{fieldname}.{k}") for k, v in keys.items()}
        if isinstance(node, yaml.SequenceNode):
            items = self.sequence(node, fieldname)
            return [self.plain(item, f"{fieldname}[{i}]") for i, item in enumerate(items)]
        return self.scalar(node, fieldname)

    def sequence(self, node: Node, fieldname: str) -> list[Node]:
        """The items of a list node, each recorded under ``fieldname[i]``."""
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, fieldname, "must be a list")
        for i, item in enumerate(node.value):
            self.fields[f"{fieldname}[{i}]"] = self.at(item)
        return list(node.value)

    def string(self, node: Node, fieldname: str) -> str:
        """A string field's value. An unquoted scalar is taken as written: YAML 1.1 would
        read ``52:54:00:00:00:01`` as a number and ``no`` as false, never what is meant.
        (An integer is not even read: a string field takes any number of digits.)"""
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT_TAG:
            return str(node.value)
        value = self.scalar(node, fieldname)
        if isinstance(value, str):
            return value
        if value is None or not isinstance(node.value, str):
            raise self.fail(node, fieldname, "must be a string", value)
        return node.value

    def boolean(self, node: Node, fieldname: str) -> bool:
        value = self.scalar(node, fieldname)
        if not isinstance(value, bool):
            raise self.fail(node, fieldname, "must be true or false", value)
        return value

    def items(self, node: Node, where: str, one: Callable[[Node, str], Any]) -> list[Any]:
        """``one(item, "where[i]")`` of each item of the list ``node``."""
        return [one(item, f"{where}[{i}]") for i, item in enumerate(self.sequence(node, where))]


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def join(where: str, name: str) -> str:
    """The document path of key ``name`` of the mapping at ``where``."""
    return f"{where}.{name}" if where else name
