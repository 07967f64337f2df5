"""Spec files: YAML documents that map one-to-one onto hvlib's own arguments.

A file holds one or more documents (separated by ``---``), each a mapping whose ``kind``
says what it describes:

``kind: domain`` (the default)
    keys are :class:`hvlib.DomainSpec`'s field names, with the same values and enum spellings
    (``virt: xen-pv``). Devices are small mappings::

        disks:       [{file: PATH}, {volume: {pool: P, name: N}}, {cdrom: PATH}]
                     # + target, format, readonly
        nics:        [{network: NAME}, {bridge: NAME}]  # + mac, model
        filesystems: [{source: DIR, target: /, readonly: false}, host_root]
        xml_edits:   [{set: XPATH, value: V}, {remove: XPATH}]

``kind: network``
    keys are :class:`hvlib.model.netplan.NetworkSpec`'s field names (``name``, ``ipv4``, ``mode``,
    ``dhcp_range``, ``hosts``, ``bridge``, ``autostart``); ``dhcp_range`` is a
    ``[first, last]`` pair and each of ``hosts`` a :class:`~hvlib.model.netplan.DhcpHost` mapping
    (``{mac: M, ip: A, name: N}``, ``name`` optional).

``kind: volume``
    keys are the parameters of :meth:`hvlib.virt.storage.Volumes.ensure`: ``pool``, ``name``,
    ``size_mib``, ``format`` (``raw``, ``qcow2``) and ``backing`` (``{pool: P, name: N}``:
    a qcow2 overlay on that volume). ``pool`` is a pool's name (it must exist), or
    ``{name: P, dir: PATH}``: a directory pool that ``hvlib up`` makes exist first
    (:meth:`hvlib.virt.pools.Pools.ensure_dir`, started and autostarted). ``data`` (bytes to
    upload) has no spelling in a file: upload through the library.

Validation is the library's own (the real DomainSpec and NetworkSpec are constructed, then
the per-type checks of :func:`hvlib.model.profiles.check`; a volume document gets the checks
``Volumes.ensure`` makes before calling libvirt); every error is a :class:`SpecFileError`
carrying the file, the line, the field (as a path into the document: ``disks[1].target``,
``hosts[0].mac``) and the rule. Unknown and duplicate keys are errors. A key set to null means
"not given" (the field's default). Across all files, a domain name, a network name and a
volume (pool and name) may each be declared once, and a directory pool with one ``dir``.
A file with no document at all (empty, or only comments) is an error too: ``up`` would
otherwise succeed having done nothing, which is never what an empty file meant.

Reading is bounded (:mod:`hvlib.specyaml` keeps the limits while it composes the YAML, so a
hostile file costs at most about a second and a few tens of MiB before it is refused; each
limit is an error naming the file, the line and the column where it was crossed):

=====================  =========  ==============================================================
limit                  value      why this number
=====================  =========  ==============================================================
file size              1 MiB      real spec files are a few KiB; a fleet of 300 domains is
                                  about 150 KiB. Pure-Python YAML reads ~1 MiB/s.
nodes, through aliases 50,000     a domain is ~20-150 nodes, so this is hundreds of domains per
                                  file; an alias counts as every node it stands for, so the
                                  463-byte alias bomb that took 4.3 GB is refused at once.
characters, through    1 MiB      what a file of the largest size could hold written out; an
aliases                           alias of a long value counts as all of its characters.
aliases (``*name``)    1,000      anchors are for sharing a disk or a nic list, a few per file.
nesting depth,         32         the deepest real document is 5 (``disks[0].volume.pool``,
through aliases                   ``idmap.uids[0].count``); Python's recursion limit is far.
one value              65,536     ``description`` takes 64 KiB, no other field more than 4,096.
                       chars
one key                64 chars   hvlib's longest key has 14 characters.
one list               1,024      items of disks, nics, DHCP reservations, cpu features,
                       items      xml_edits...: more than PCI slots allow; checks that compare
                                  each item with the others stay well under a second.
an integer             64 bits    the largest any field takes is below 2**33; longer literals
                                  are refused unread (Python refuses 4,300-digit ones).
=====================  =========  ==============================================================

A character YAML refuses (NUL, other control characters), bytes that are not UTF-8, and
every YAML syntax error are errors with their line and column; so is a value an explicit
tag cannot read (``!!int x``, ``!!bool maybe``, ``!!timestamp 2001-13-45``).

Must not: talk to libvirt (nor import it: :mod:`hvlib.virt.network` and :mod:`hvlib.virt.storage`
are imported only when a document of theirs is read), render XML, read anything but the files it is
given, or accept a key it does not know.
"""

from __future__ import annotations

import dataclasses
import difflib
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from hvlib.errors import Location, SpecError, SpecFileError, Unsupported
from hvlib.model import profiles
from hvlib.model.spec import (
    Disk,
    DiskKind,
    DomainSpec,
    Filesystem,
    Nic,
    XmlEdit,
    check_name,
    check_path,
)
from hvlib.specyaml import (
    MAX_INT_BITS,
    MAX_KEY_CHARS,
    BoundedLoader,
    compose,
    is_null,
    read_text,
)

if TYPE_CHECKING:
    from hvlib.model.netplan import DhcpHost, NetworkSpec

KINDS = ("domain", "network", "volume")
"""The ``kind:`` values a document may have (``domain`` when absent)."""
NOT_IN_FILES = ("xml_hook",)
"""DomainSpec fields that have no spelling in a file (a Python callable)."""
DOMAIN_KEYS = (
    "kind",
    *(f.name for f in dataclasses.fields(DomainSpec) if f.name not in NOT_IN_FILES),
)
"""Every key a domain document may have: ``kind`` and DomainSpec's field names."""
NETWORK_KEYS = ("kind", "name", "ipv4", "mode", "dhcp_range", "hosts", "bridge", "autostart")
"""Every key a network document may have: ``kind`` and NetworkSpec's field names."""
VOLUME_KEYS = ("kind", "pool", "name", "size_mib", "format", "backing")
"""Every key a volume document may have: ``kind`` and the parameters of ``Volumes.ensure``
(but ``data``)."""
DISK_SOURCES = ("file", "volume", "cdrom")
"""The keys of a disk that say what it is (exactly one is given)."""
DISK_OPTIONS = ("target", "format", "readonly")
NIC_SOURCES = ("network", "bridge")
"""The keys of a nic that say what it plugs into (exactly one is given)."""
NIC_OPTIONS = ("mac", "model")
FILESYSTEM_KEYS = ("source", "target", "readonly")
XML_EDIT_KEYS = ("set", "value", "remove")
DHCP_HOST_KEYS = ("mac", "ip", "name")
POOL_DIR_KEYS = ("name", "dir")
VOLUME_REF_KEYS = ("pool", "name")
KEYS: Mapping[str, tuple[str, ...]] = {
    "domain": DOMAIN_KEYS,
    "network": NETWORK_KEYS,
    "volume": VOLUME_KEYS,
    "disks[]": (*DISK_SOURCES, *DISK_OPTIONS),
    "disks[].volume": VOLUME_REF_KEYS,
    "nics[]": (*NIC_SOURCES, *NIC_OPTIONS),
    "filesystems[]": FILESYSTEM_KEYS,
    "xml_edits[]": XML_EDIT_KEYS,
    "hosts[]": DHCP_HOST_KEYS,
    "pool": POOL_DIR_KEYS,
    "backing": VOLUME_REF_KEYS,
}
"""Every mapping of a document and its keys: a kind, or a path into that kind's document
(``[]``: each item of the list; ``cpu`` and ``idmap`` are :class:`~hvlib.model.spec.Cpu`'s and
:class:`~hvlib.model.spec.IdMap`'s own ``from_dict`` keys)."""
_BOOL_FIELDS = ("autostart", "rng", "guest_agent")
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
    ("idmap", "idmap"),
    ("host_root", "filesystems"),
    ("kernel", "kernel"),
    ("rng is for", "rng"),
    ("guest_agent is for", "guest_agent"),
)

_INT_TAG = "tag:yaml.org,2002:int"
_INT_CHARS_MAX = MAX_INT_BITS + 6
"""Longer integer literals are refused unread: ``-0b`` and 64 binary digits is the longest."""

Node = yaml.Node
T = TypeVar("T")


class _Located:
    """What every document has: where it starts and where each of its fields was written."""

    location: Location
    fields: Mapping[str, Location]
    """Document paths (``name``, ``disks[0].file``, ``disks[0]``, ...) to their lines."""

    def locate(self, fieldname: str) -> Location:
        """The line of ``fieldname`` (or of the nearest enclosing field; else the document).

        ``fieldname`` may be a document path or a field name from a :class:`SpecError` raised
        later by hvlib (``nics[0].network`` from a host check, say).
        """
        return _locate(self.fields, self.location, fieldname)

    def error(self, err: SpecError) -> SpecFileError:
        """``err`` (raised by hvlib about this document) with its file and line."""
        if isinstance(err, SpecFileError):
            return err
        return SpecFileError(self.locate(err.field), err.field, err.rule, err.value)


@dataclass(frozen=True)
class DomainDocument(_Located):
    """One ``kind: domain`` document: the validated spec and where each field was written."""

    spec: DomainSpec
    location: Location
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class NetworkDocument(_Located):
    """One ``kind: network`` document: the validated :class:`~hvlib.model.netplan.NetworkSpec`
    (what ``host.networks.apply`` takes) and where each field was written."""

    spec: NetworkSpec
    location: Location
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class VolumeDocument(_Located):
    """One ``kind: volume`` document: the arguments of ``host.volumes.ensure`` (checked as it
    checks them before calling libvirt) and, with ``pool_dir``, the directory pool to make
    exist first."""

    pool: str
    name: str
    location: Location
    size_mib: int | None = None
    format: str | None = None
    """``raw`` or ``qcow2``; None: qcow2 with ``backing``, else raw (:attr:`image_format`)."""
    backing: tuple[str, str] | None = None
    """(pool, name) of the volume this one is a qcow2 overlay on."""
    pool_dir: str | None = None
    """The directory of ``pool`` when the file declares it (``pool: {name: P, dir: PATH}``)."""
    fields: Mapping[str, Location] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> str:
        """``pool/name``: how the volume is named in messages."""
        return f"{self.pool}/{self.name}"

    @property
    def image_format(self) -> str:
        """The format the volume gets: ``format``, else qcow2 with ``backing``, else raw."""
        return self.format or ("qcow2" if self.backing is not None else "raw")

    def ensure_args(self) -> dict[str, Any]:
        """The keyword arguments of ``host.volumes.ensure(pool, name, **these)``."""
        return {"size_mib": self.size_mib, "format": self.format, "backing": self.backing}


Document = DomainDocument | NetworkDocument | VolumeDocument
"""Any document of a spec file."""


def _locate(fields: Mapping[str, Location], default: Location, fieldname: str) -> Location:
    name = fieldname
    while name:
        if name in fields:
            return fields[name]
        shorter = _FIELD_TAIL.sub("", name)
        name = "" if shorter == name else shorter
    return default


@dataclass
class SpecFile:
    """The documents of one file, each kind in the file's order."""

    path: str
    domains: list[DomainDocument] = field(default_factory=list)
    networks: list[NetworkDocument] = field(default_factory=list)
    volumes: list[VolumeDocument] = field(default_factory=list)


def load(path: str | Path) -> SpecFile:
    """Read and validate the spec file at ``path``.

    Raises:
        SpecFileError: the file cannot be read, is too large, is not UTF-8, is not YAML,
            crosses a limit (see the module docstring), holds no document, or a document
            is invalid (the first error found, with its line).
    """
    return loads(read_text(path), str(path))


def load_all(paths: Iterable[str | Path]) -> list[SpecFile]:
    """:func:`load` each path; also refuse a domain, network or volume declared twice, and a
    directory pool declared with two different directories.

    Raises:
        SpecFileError: as :func:`load`, or ``name`` is already declared (at the second one),
            or ``pool.dir`` differs from an earlier declaration of that pool.
    """
    files = [load(p) for p in paths]
    _once((doc, doc.spec.name) for sf in files for doc in sf.domains)
    _once((doc, doc.spec.name) for sf in files for doc in sf.networks)
    _once((doc, doc.key) for sf in files for doc in sf.volumes)
    _one_dir_per_pool(doc for sf in files for doc in sf.volumes)
    return files


def _once(docs: Iterable[tuple[_Located, str]]) -> None:
    seen: dict[str, Location] = {}
    for doc, name in docs:
        first = seen.setdefault(name, doc.location)
        if first is not doc.location:
            raise SpecFileError(doc.locate("name"), "name", f"is already declared at {first}", name)


def _one_dir_per_pool(docs: Iterable[VolumeDocument]) -> None:
    seen: dict[str, VolumeDocument] = {}
    for doc in docs:
        if doc.pool_dir is None:
            continue
        first = seen.setdefault(doc.pool, doc)
        if _norm(first.pool_dir) != _norm(doc.pool_dir):
            where = first.locate("pool.dir")
            rule = f"pool {doc.pool} is declared at {where} with dir {first.pool_dir}"
            raise SpecFileError(doc.locate("pool.dir"), "pool.dir", rule, doc.pool_dir)


def loads(text: str, path: str = "<string>") -> SpecFile:
    """Parse and validate spec-file ``text`` (``path`` names it in errors).

    Raises:
        SpecFileError: as :func:`load` (but for reading the file).
    """
    out = SpecFile(path)
    found = False
    for loader, node in compose(text, path):
        _Document(loader, path, node).convert(out)
        found = True
    if not found:
        rule = "holds no document (it is empty, or only comments and ---)"
        raise SpecFileError(Location(path, 1), "file", rule)
    return out


class _Document:
    """Turns one document node into a DomainDocument, NetworkDocument or VolumeDocument."""

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
                    self.fields.get(_join(where, name), self.at(value)), _join(where, name), rule
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

    # -- documents --

    def convert(self, out: SpecFile) -> None:
        """Append this document to ``out`` as what its ``kind`` says."""
        keys = self.mapping(self.node, "")
        kind = "domain"
        if "kind" in keys and not is_null(keys["kind"]):
            kind = self.string(keys["kind"], "kind")
        if kind not in KINDS:
            raise self.fail(keys["kind"], "kind", f"must be one of {', '.join(KINDS)}", kind)
        if kind == "domain":
            out.domains.append(self.domain(keys))
        elif kind == "network":
            out.networks.append(self.network(keys))
        else:
            out.volumes.append(self.volume(keys))

    def given(
        self, keys: dict[str, Node], allowed: Iterable[str], *required: str
    ) -> dict[str, Node]:
        """The document's keys but ``kind`` and those set to null, each one in ``allowed``.

        Raises:
            SpecFileError: an unknown key, or one of ``required`` is missing.
        """
        self.check_keys(keys, allowed, "")
        out = {k: node for k, node in keys.items() if k != "kind" and not is_null(node)}
        for name in required:
            if name not in out:
                raise SpecFileError(self.where, name, "is required")
        return out

    def domain(self, keys: dict[str, Node]) -> DomainDocument:
        given = self.given(keys, DOMAIN_KEYS, "name")
        kwargs = {name: self.field_value(name, node) for name, node in given.items()}
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
            "cpu": lambda n: self.plain(n, "cpu", mapping=True),
            "idmap": lambda n: self.plain(n, "idmap", mapping=True),
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

    # -- network and volume documents --

    def network(self, keys: dict[str, Node]) -> NetworkDocument:
        from hvlib.model.netplan import NetworkSpec

        given = self.given(keys, NETWORK_KEYS, "name", "ipv4")
        kwargs = {name: self.network_value(name, node) for name, node in given.items()}
        try:
            spec = NetworkSpec(**kwargs)
        except SpecError as e:
            raise SpecFileError(self.locate(e.field), e.field, e.rule, e.value) from None
        return NetworkDocument(spec, self.where, dict(self.fields))

    def network_value(self, name: str, node: Node) -> Any:
        if name == "autostart":
            return self.boolean(node, name)
        if name == "hosts":
            return self.items(node, name, self.dhcp_host)
        if name == "dhcp_range":
            items = enumerate(self.sequence(node, name))
            return tuple(self.string(item, f"{name}[{i}]") for i, item in items)
        return self.string(node, name)

    def dhcp_host(self, node: Node, where: str) -> DhcpHost:
        from hvlib.model.netplan import DhcpHost

        keys = self.mapping(node, where)
        self.check_keys(keys, DHCP_HOST_KEYS, where)
        args = {k: self.string(n, f"{where}.{k}") for k, n in keys.items() if not is_null(n)}
        for k in ("mac", "ip"):
            if k not in args:
                raise self.fail(node, f"{where}.{k}", "is required")
        renames = {"host.mac": "mac", "host.ip": "ip", "host.name": "name"}
        return self.device(where, lambda: DhcpHost(**args), renames)

    def volume(self, keys: dict[str, Node]) -> VolumeDocument:
        if "data" in keys:
            rule = "has no spelling in a file: upload bytes through host.volumes.ensure(data=...)"
            raise SpecFileError(self.locate("data"), "data", rule)
        given = self.given(keys, VOLUME_KEYS, "pool", "name")
        pool, pool_dir = self.pool_ref(given["pool"])
        name = self.string(given["name"], "name")
        size = self.scalar(given["size_mib"], "size_mib") if "size_mib" in given else None
        fmt = self.string(given["format"], "format") if "format" in given else None
        backing = self.volume_ref(given["backing"], "backing") if "backing" in given else None
        doc = VolumeDocument(
            pool, name, self.where, size, fmt, backing, pool_dir, fields=dict(self.fields)
        )
        try:
            _check_volume(doc)
        except SpecError as e:
            raise doc.error(e) from None
        return doc

    def pool_ref(self, node: Node) -> tuple[str, str | None]:
        """``pool: NAME`` as (NAME, None), ``pool: {name: NAME, dir: PATH}`` as (NAME, PATH)."""
        if not isinstance(node, yaml.MappingNode):
            return self.string(node, "pool"), None
        keys = self.mapping(node, "pool")
        self.check_keys(keys, POOL_DIR_KEYS, "pool")
        name, path = (self.required_string(keys, node, f"pool.{k}") for k in ("name", "dir"))
        return name, path

    def volume_ref(self, node: Node, where: str) -> tuple[str, str]:
        """A ``{pool: P, name: N}`` mapping as (P, N)."""
        keys = self.mapping(node, where)
        self.check_keys(keys, VOLUME_REF_KEYS, where)
        pool, name = (self.required_string(keys, node, f"{where}.{k}") for k in ("pool", "name"))
        return pool, name

    def required_string(self, keys: Mapping[str, Node], node: Node, fieldname: str) -> str:
        """The string at ``fieldname`` (a key of ``keys``, the mapping ``node``)."""
        key = fieldname.rsplit(".", 1)[-1]
        if key not in keys or is_null(keys[key]):
            raise self.fail(node, fieldname, "is required")
        return self.string(keys[key], fieldname)

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
        sources = [k for k in DISK_SOURCES if k in keys]
        if len(sources) != 1:
            raise self.fail(node, where, "needs exactly one of file, volume, cdrom", sources)
        source = sources[0]
        self.check_keys(keys, (source, *DISK_OPTIONS), where)
        opts = self.disk_options(keys, where)
        if source == "volume":
            pool, name = self.volume_ref(keys["volume"], f"{where}.volume")
            return self.device(
                where,
                lambda: Disk.volume(pool, name, **opts),
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
            if k in keys and not is_null(keys[k]):
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
        sources = [k for k in NIC_SOURCES if k in keys]
        if len(sources) != 1:
            raise self.fail(node, where, "needs exactly one of network, bridge", sources)
        kind = sources[0]
        self.check_keys(keys, (kind, *NIC_OPTIONS), where)
        source = self.string(keys[kind], f"{where}.{kind}")
        opts = {
            k: self.string(keys[k], f"{where}.{k}")
            for k in ("mac", "model")
            if k in keys and not is_null(keys[k])
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
        self.check_keys(keys, FILESYSTEM_KEYS, where)
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
            return self.device(where, lambda: XmlEdit.delete(xpath), {"xml_edits.xpath": "remove"})
        self.check_keys(keys, ("set", "value"), where)
        if "value" not in keys:
            raise self.fail(node, f"{where}.value", "is required with set")
        xpath = self.string(keys["set"], f"{where}.set")
        value = self.string(keys["value"], f"{where}.value")
        return self.device(
            where,
            lambda: XmlEdit.set(xpath, value),
            {"xml_edits.xpath": "set", "xml_edits.value": "value"},
        )


_DISK_OPTS = {"disk.target": "target", "disk.format": "format", "disk.device": ""}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _blame(message: str, keys: Mapping[str, Node]) -> str:
    """The document key an Unsupported message of :func:`hvlib.model.profiles.check` is about: the
    first of its words that the document has, else ``virt`` (the type refused it)."""
    for word, key in _UNSUPPORTED_BLAME:
        if word in message and key in keys:
            return key
    return "virt"


def _norm(path: str | None) -> str | None:
    return None if path is None else posixpath.normpath(path)


def _check_volume(doc: VolumeDocument) -> None:
    """The checks ``Volumes.ensure`` makes before it calls libvirt, named by document path.

    Raises:
        SpecError: a bad name, path, format or size, or a combination ``ensure`` refuses.
    """
    check_name("pool.name" if doc.pool_dir is not None else "pool", doc.pool)
    if doc.pool_dir is not None:
        check_path("pool.dir", doc.pool_dir)
    check_name("name", doc.name)
    if doc.backing is not None:
        check_name("backing.pool", doc.backing[0])
        check_name("backing.name", doc.backing[1])
    _check_volume_shape(doc)


def _check_volume_shape(doc: VolumeDocument) -> None:
    from hvlib.model.volplan import FORMATS, SIZE_MIB_MAX

    if doc.format is not None and doc.format not in FORMATS:
        raise SpecError("format", "must be 'raw' or 'qcow2'", doc.format)
    size = doc.size_mib
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise SpecError("size_mib", "must be an integer number of MiB", size)
    if size is not None and not 1 <= size <= SIZE_MIB_MAX:
        raise SpecError("size_mib", f"must be between 1 and {SIZE_MIB_MAX}", size)
    if doc.backing is not None and doc.image_format != "qcow2":
        raise SpecError("format", "an overlay on a backing volume must be qcow2", doc.format)
    if doc.backing is None and size is None:
        raise SpecError("size_mib", "is required when there is no backing volume")
