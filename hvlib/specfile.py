"""Spec files: YAML documents that map one-to-one onto :class:`hvlib.DomainSpec`.

A file holds one or more documents (separated by ``---``). Each is a mapping whose keys are
DomainSpec's own field names, with the same values and enum spellings (``virt: xen-pv``);
``kind: domain`` is the default, ``kind: network`` and ``kind: volume`` are recognised and
kept as :class:`ResourceDocument` (hvlib has no network or volume API yet: callers report
them as unsupported). Devices are small mappings::

    disks:       [{file: PATH}, {volume: {pool: P, name: N}}, {cdrom: PATH}]  # + target,
                                                                               #   format, readonly
    nics:        [{network: NAME}, {bridge: NAME}]                            # + mac, model
    filesystems: [{source: DIR, target: /, readonly: false}, host_root]
    xml_edits:   [{set: XPATH, value: V}, {remove: XPATH}]

Validation is DomainSpec's own (the real object is constructed) plus the per-type checks of
:func:`hvlib.profiles.check`; every error is a :class:`SpecFileError` carrying the file, the
line, the field (as a path into the document: ``disks[1].target``) and the rule. Unknown and
duplicate keys are errors. A key set to null means "not given" (the field's default).

Must not: talk to libvirt, render XML, read anything but the files it is given, or accept a
key it does not know.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hvlib import profiles
from hvlib.errors import SpecError, Unsupported
from hvlib.spec import Disk, DiskKind, DomainSpec, Filesystem, Nic, XmlEdit, check_text

KINDS = ("domain", "network", "volume")
"""The ``kind:`` values a document may have (``domain`` when absent)."""
NOT_IN_FILES = ("xml_hook",)
"""DomainSpec fields that have no spelling in a file (a Python callable)."""
DOMAIN_KEYS = (
    "kind",
    *(f.name for f in dataclasses.fields(DomainSpec) if f.name not in NOT_IN_FILES),
)
"""Every key a domain document may have: ``kind`` and DomainSpec's field names."""
_BOOL_FIELDS = ("autostart",)
_STR_FIELDS = (
    "name",
    "virt",
    "kernel",
    "initrd",
    "cmdline",
    "uuid",
    "description",
    "on_poweroff",
    "on_reboot",
    "on_crash",
)
_LIST_FIELDS = ("disks", "nics", "filesystems", "init", "xml_edits")
_FIELD_TAIL = re.compile(r"(\.[^.\[\]]*|\[[^\]]*\])$")
# Words of profiles.check's Unsupported messages, in the order to blame them.
_UNSUPPORTED_BLAME = (
    ("kernel command line", "cmdline"),
    ("max_vcpus", "max_vcpus"),
    ("initrd", "initrd"),
    ("cmdline", "cmdline"),
    ("init is", "init"),
    ("cdrom", "disks"),
    ("disks", "disks"),
    ("filesystems", "filesystems"),
    ("host_root", "filesystems"),
    ("kernel", "kernel"),
)

Node = yaml.Node
T = TypeVar("T")


@dataclass(frozen=True)
class Location:
    """A place in a spec file: the path as given and a 1-based line."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


class SpecFileError(SpecError):
    """A spec file is unreadable or says something hvlib refuses.

    ``str()`` is ``FILE:LINE: FIELD: RULE (got VALUE)``. Attributes: ``path``, ``line``,
    ``field`` (a path into the document, e.g. ``disks[1].target``), ``rule``, ``value``.
    """

    def __init__(self, where: Location, field: str, rule: str, value: object = None) -> None:
        super().__init__(field, rule, value)
        self.path = where.path
        self.line = where.line
        self.args = (f"{where}: {self.args[0]}",)

    @property
    def location(self) -> Location:
        """Where the error is."""
        return Location(self.path, self.line)


@dataclass(frozen=True)
class DomainDocument:
    """One ``kind: domain`` document: the validated spec and where each field was written."""

    spec: DomainSpec
    location: Location
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)
    """Document paths (``name``, ``disks[0].file``, ``disks[0]``, ...) to their lines."""

    def locate(self, fieldname: str) -> Location:
        """The line of ``fieldname`` (or of the nearest enclosing field; else the document).

        ``fieldname`` may be a document path or a field name from a :class:`SpecError` raised
        later by hvlib (``nics[0].network`` from a host check, say).
        """
        return _locate(self.fields, self.location, fieldname)

    def error(self, err: SpecError) -> SpecFileError:
        """``err`` (raised by hvlib about this spec) with this document's file and line."""
        if isinstance(err, SpecFileError):
            return err
        return SpecFileError(self.locate(err.field), err.field, err.rule, err.value)


def _locate(fields: Mapping[str, Location], default: Location, fieldname: str) -> Location:
    name = fieldname
    while name:
        if name in fields:
            return fields[name]
        shorter = _FIELD_TAIL.sub("", name)
        name = "" if shorter == name else shorter
    return default


@dataclass(frozen=True)
class ResourceDocument:
    """A ``kind: network`` or ``kind: volume`` document, kept as written (not validated)."""

    kind: str
    name: str | None
    location: Location
    body: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class SpecFile:
    """The documents of one file, in order."""

    path: str
    domains: list[DomainDocument] = field(default_factory=list)
    resources: list[ResourceDocument] = field(default_factory=list)


def load(path: str | Path) -> SpecFile:
    """Read and validate the spec file at ``path``.

    Raises:
        SpecFileError: the file cannot be read, is not YAML, or a document is invalid
            (the first error found, with its line).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecFileError(Location(str(path), 0), "file", f"cannot be read: {reason}") from None
    return loads(text, str(path))


def load_all(paths: Iterable[str | Path]) -> list[SpecFile]:
    """:func:`load` each path; also refuse a domain name declared twice.

    Raises:
        SpecFileError: as :func:`load`, or ``name`` is already declared (at the second one).
    """
    files = [load(p) for p in paths]
    seen: dict[str, Location] = {}
    for sf in files:
        for doc in sf.domains:
            first = seen.setdefault(doc.spec.name, doc.location)
            if first is not doc.location:
                raise SpecFileError(
                    doc.locate("name"), "name", f"is already declared at {first}", doc.spec.name
                )
    return files


def loads(text: str, path: str = "<string>") -> SpecFile:
    """Parse and validate spec-file ``text`` (``path`` names it in errors).

    Raises:
        SpecFileError: not YAML, or a document is invalid (the first error, with its line).
    """
    out = SpecFile(path)
    loader = yaml.SafeLoader(text)
    try:
        for node in _documents(loader, path):
            _Document(loader, path, node).convert(out)
    finally:
        loader.dispose()
    return out


def _documents(loader: yaml.SafeLoader, path: str) -> Iterable[Node]:
    """The non-empty document nodes of ``loader``'s stream."""
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None and not _is_null(node):
                yield node
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise SpecFileError(Location(path, line), "yaml", str(e.problem or e.context)) from None
    except yaml.YAMLError as e:
        raise SpecFileError(Location(path, 0), "yaml", str(e)) from None


def _is_null(node: Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


class _Document:
    """Turns one document node into a DomainDocument or a ResourceDocument."""

    def __init__(self, loader: yaml.SafeLoader, path: str, node: Node) -> None:
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
        return _locate(self.fields, self.where, fieldname)

    def fail(self, node: Node, fieldname: str, rule: str, value: object = None) -> SpecFileError:
        """An error about ``fieldname``, written at ``node``."""
        return SpecFileError(self.at(node), fieldname, rule, value)

    # -- YAML shapes --

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
                raise self.fail(key, _join(where, name), "is given twice")
            seen.add(name)
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as e:
            raise self.fail(node, where or "document", f"bad merge: {e.problem}") from None
        out: dict[str, Node] = {}
        for key, value in node.value:
            name = self.key_name(key, where)
            out[name] = value
            self.fields[_join(where, name)] = self.at(key)
        return out

    def key_name(self, key: Node, where: str) -> str:
        value = self.scalar(key, where or "document") if isinstance(key, yaml.ScalarNode) else key
        if not isinstance(value, str):
            raise self.fail(key, where or "document", "keys must be strings", str(key.value))
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
                    self.fields.get(_join(where, name), self.at(value)), _join(where, name), rule
                )

    def scalar(self, node: Node, fieldname: str) -> Any:
        """The Python value of a scalar node (YAML 1.1 types: int, bool, str, null...)."""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, fieldname, "must be a single value, not a list or mapping")
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as e:
            raise self.fail(node, fieldname, f"cannot be read: {e}") from None

    def sequence(self, node: Node, fieldname: str) -> list[Node]:
        """The items of a list node, each recorded under ``fieldname[i]``."""
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, fieldname, "must be a list")
        for i, item in enumerate(node.value):
            self.fields[f"{fieldname}[{i}]"] = self.at(item)
        return list(node.value)

    def string(self, node: Node, fieldname: str) -> str:
        """A string field's value. An unquoted scalar is taken as written: YAML 1.1 would
        read ``52:54:00:00:00:01`` as a number and ``no`` as false, never what is meant."""
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

    # -- documents --

    def convert(self, out: SpecFile) -> None:
        """Append this document to ``out`` as what its ``kind`` says."""
        keys = self.mapping(self.node, "")
        kind = "domain"
        if "kind" in keys and not _is_null(keys["kind"]):
            kind = self.string(keys["kind"], "kind")
        if kind not in KINDS:
            raise self.fail(keys["kind"], "kind", f"must be one of {', '.join(KINDS)}", kind)
        if kind == "domain":
            out.domains.append(self.domain(keys))
        else:
            out.resources.append(self.resource(kind, keys))

    def resource(self, kind: str, keys: dict[str, Node]) -> ResourceDocument:
        name = keys.get("name")
        body = self.loader.construct_document(self.node)
        return ResourceDocument(
            kind,
            None if name is None else str(self.scalar(name, "name")),
            self.where,
            body if isinstance(body, dict) else {},
        )

    def domain(self, keys: dict[str, Node]) -> DomainDocument:
        self.check_keys(keys, DOMAIN_KEYS, "")
        kwargs: dict[str, Any] = {}
        for name, node in keys.items():
            if name == "kind" or _is_null(node):
                continue
            kwargs[name] = self.field_value(name, node)
        if "name" not in kwargs:
            raise SpecFileError(self.where, "name", "is required")
        try:
            spec = DomainSpec(**kwargs)
            profiles.check(spec)
        except SpecError as e:
            raise SpecFileError(self.locate(e.field), e.field, e.rule, e.value) from None
        except Unsupported as e:
            blamed = _blame(str(e), keys)
            raise SpecFileError(self.locate(blamed), blamed, str(e)) from None
        return DomainDocument(spec, self.where, dict(self.fields))

    def field_value(self, name: str, node: Node) -> Any:
        converter: Callable[[Node], Any] | None = {
            "disks": lambda n: self.items(n, "disks", self.disk),
            "nics": lambda n: self.items(n, "nics", self.nic),
            "filesystems": lambda n: self.items(n, "filesystems", self.filesystem),
            "xml_edits": lambda n: self.items(n, "xml_edits", self.xml_edit),
            "init": lambda n: [
                self.string(item, f"init[{i}]") for i, item in enumerate(self.sequence(n, "init"))
            ],
        }.get(name)
        if converter is not None:
            return converter(node)
        if name in _BOOL_FIELDS:
            return self.boolean(node, name)
        if name in _STR_FIELDS:
            return self.string(node, name)
        return self.scalar(node, name)

    def items(self, node: Node, where: str, one: Callable[[Node, str], Any]) -> list[Any]:
        return [one(item, f"{where}[{i}]") for i, item in enumerate(self.sequence(node, where))]

    # -- devices --

    def device(self, where: str, build: Callable[[], T], renames: Mapping[str, str]) -> T:
        """``build()``, its SpecError moved to the device key the failed field came from."""
        try:
            return build()
        except SpecError as e:
            fieldname = _join(where, renames.get(e.field, ""))
            loc = self.fields.get(fieldname) or self.fields.get(where) or self.where
            raise SpecFileError(loc, fieldname.rstrip("."), e.rule, e.value) from None

    def disk(self, node: Node, where: str) -> Disk:
        keys = self.mapping(node, where)
        sources = [k for k in ("file", "volume", "cdrom") if k in keys]
        if len(sources) != 1:
            raise self.fail(node, where, "needs exactly one of file, volume, cdrom", sources)
        source = sources[0]
        self.check_keys(keys, (source, "target", "format", "readonly"), where)
        opts = self.disk_options(keys, where)
        if source == "volume":
            vol = self.mapping(keys["volume"], f"{where}.volume")
            self.check_keys(vol, ("pool", "name"), f"{where}.volume")
            for k in ("pool", "name"):
                if k not in vol:
                    raise self.fail(keys["volume"], f"{where}.volume.{k}", "is required")
            pool, name = (self.string(vol[k], f"{where}.volume.{k}") for k in ("pool", "name"))
            return self.device(
                where,
                lambda: Disk(DiskKind.VOLUME, pool=pool, volume_name=name, **opts),
                {"disk.pool": "volume.pool", "disk.volume": "volume.name", **_DISK_OPTS},
            )
        path = self.string(keys[source], f"{where}.{source}")
        if source == "cdrom":
            return self.cdrom(path, opts, where)
        return self.device(
            where,
            lambda: Disk(DiskKind.FILE, path=path, **opts),
            {"disk.path": source, **_DISK_OPTS},
        )

    def disk_options(self, keys: Mapping[str, Node], where: str) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        for k in ("target", "format"):
            if k in keys and not _is_null(keys[k]):
                opts[k] = self.string(keys[k], f"{where}.{k}")
        if "readonly" in keys:
            opts["readonly"] = self.boolean(keys["readonly"], f"{where}.readonly")
        return opts

    def cdrom(self, path: str, opts: dict[str, Any], where: str) -> Disk:
        if opts.pop("readonly", True) is not True:
            loc = self.fields[f"{where}.readonly"]
            raise SpecFileError(loc, f"{where}.readonly", "a cdrom is always read-only", False)
        opts.setdefault("format", "raw")
        return self.device(
            where,
            lambda: Disk(DiskKind.FILE, path=path, device="cdrom", readonly=True, **opts),
            {"disk.path": "cdrom", **_DISK_OPTS},
        )

    def nic(self, node: Node, where: str) -> Nic:
        keys = self.mapping(node, where)
        sources = [k for k in ("network", "bridge") if k in keys]
        if len(sources) != 1:
            raise self.fail(node, where, "needs exactly one of network, bridge", sources)
        kind = sources[0]
        self.check_keys(keys, (kind, "mac", "model"), where)
        source = self.string(keys[kind], f"{where}.{kind}")
        opts = {
            k: self.string(keys[k], f"{where}.{k}")
            for k in ("mac", "model")
            if k in keys and not _is_null(keys[k])
        }
        return self.device(
            where,
            lambda: Nic(kind, source, **opts),
            {f"nic.{kind}": kind, "nic.mac": "mac", "nic.model": "model"},
        )

    def filesystem(self, node: Node, where: str) -> Filesystem:
        if isinstance(node, yaml.ScalarNode):
            if self.scalar(node, where) != "host_root":
                raise self.fail(node, where, "must be a mapping or the word host_root")
            return Filesystem.host_root()
        keys = self.mapping(node, where)
        self.check_keys(keys, ("source", "target", "readonly"), where)
        if "source" not in keys:
            raise self.fail(node, f"{where}.source", "is required")
        source = self.string(keys["source"], f"{where}.source")
        target = self.string(keys["target"], f"{where}.target") if "target" in keys else "/"
        readonly = (
            self.boolean(keys["readonly"], f"{where}.readonly") if "readonly" in keys else False
        )
        return self.device(
            where,
            lambda: Filesystem.mount(source, target, readonly=readonly),
            {"filesystem.source": "source", "filesystem.target": "target"},
        )

    def xml_edit(self, node: Node, where: str) -> XmlEdit:
        keys = self.mapping(node, where)
        if ("set" in keys) == ("remove" in keys):
            raise self.fail(node, where, "needs exactly one of set, remove")
        if "remove" in keys:
            self.check_keys(keys, ("remove",), where)
            xpath = self.string(keys["remove"], f"{where}.remove")
            edit = XmlEdit.delete(xpath)
            key = "remove"
        else:
            self.check_keys(keys, ("set", "value"), where)
            if "value" not in keys:
                raise self.fail(node, f"{where}.value", "is required with set")
            xpath = self.string(keys["set"], f"{where}.set")
            edit = XmlEdit.set(xpath, self.string(keys["value"], f"{where}.value"))
            key = "set"
        self.device(where, lambda: check_text("xml_edits.xpath", xpath), {"xml_edits.xpath": key})
        return edit


_DISK_OPTS = {"disk.target": "target", "disk.format": "format", "disk.device": ""}


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _blame(message: str, keys: Mapping[str, Node]) -> str:
    """The document key an Unsupported message of :func:`hvlib.profiles.check` is about: the
    first of its words that the document has, else ``virt`` (the type refused it)."""
    for word, key in _UNSUPPORTED_BLAME:
        if word in message and key in keys:
            return key
    return "virt"
