"""Each kind of spec-file document, and each device of a domain, read into hvlib's own
objects: the real :class:`~hvlib.model.spec.DomainSpec` and its devices, checked by
:func:`hvlib.model.profiles.check`; the real :class:`~hvlib.model.netplan.NetworkSpec`; a
volume checked as ``Volumes.ensure`` checks it before calling libvirt
(:mod:`hvlib.model.volplan`'s rules). An error hvlib raises about a field is moved to the
key it came from (``disk.target`` of the third disk is ``disks[2].target``, at its line).

Pure: the YAML shapes are :mod:`hvlib.specfile_nodes`'; nothing here talks to libvirt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import yaml

from hvlib.errors import SpecError, SpecFileError, Unsupported
from hvlib.model import profiles
from hvlib.model.checks import check_name, check_path
from hvlib.model.devices import Disk, DiskKind, Filesystem, Nic, XmlEdit
from hvlib.model.netplan import DhcpHost, NetworkSpec
from hvlib.model.spec import DomainSpec
from hvlib.model.volplan import FORMATS, check_size_mib
from hvlib.specfile_documents import (
    DHCP_HOST_KEYS,
    DISK_OPTIONS,
    DISK_SOURCES,
    DOMAIN_KEYS,
    FILESYSTEM_KEYS,
    KINDS,
    NETWORK_KEYS,
    NIC_OPTIONS,
    NIC_SOURCES,
    POOL_DIR_KEYS,
    VOLUME_KEYS,
    VOLUME_REF_KEYS,
    DomainDocument,
    NetworkDocument,
    SpecFile,
    VolumeDocument,
    in_document,
)
from hvlib.specfile_nodes import Node, NodeReader, join
from hvlib.specyaml import is_null

T = TypeVar("T")
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


class DocumentReader(NodeReader):
    """Turns one document node into a DomainDocument, NetworkDocument or VolumeDocument."""

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
        except (SpecError, Unsupported) as e:
            raise in_document(e, self.locate) from None
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

    # -- network and volume documents --

    def network(self, keys: dict[str, Node]) -> NetworkDocument:
        given = self.given(keys, NETWORK_KEYS, "name", "ipv4")
        kwargs = {name: self.network_value(name, node) for name, node in given.items()}
        try:
            spec = NetworkSpec(**kwargs)
        except SpecError as e:
            raise in_document(e, self.locate) from None
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
            fieldname = join(where, renames.get(e.field, ""))
            loc = self.fields.get(fieldname) or self.fields.get(where) or self.where
            raise SpecFileError(loc, fieldname.rstrip("."), e.rule, e.value) from None

    def disk(self, node: Node, where: str) -> Disk:
        keys, source = self.one_of(node, where, DISK_SOURCES, DISK_OPTIONS)
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
        keys, kind = self.one_of(node, where, NIC_SOURCES, NIC_OPTIONS)
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
    if doc.format is not None and doc.format not in FORMATS:
        raise SpecError("format", "must be 'raw' or 'qcow2'", doc.format)
    if doc.size_mib is not None:
        check_size_mib("size_mib", doc.size_mib)
    if doc.backing is not None and doc.image_format != "qcow2":
        raise SpecError("format", "an overlay on a backing volume must be qcow2", doc.format)
    if doc.backing is None and doc.size_mib is None:
        raise SpecError("size_mib", "is required when there is no backing volume")
