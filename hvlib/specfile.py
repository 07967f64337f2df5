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

The pieces: :mod:`hvlib.specfile_documents` (the kinds, their keys and the validated
documents), :mod:`hvlib.specfile_nodes` (YAML nodes read as the shapes a field takes, each
field's line recorded) and :mod:`hvlib.specfile_convert` (each kind and device read into
hvlib's own objects); :mod:`hvlib.specyaml` composes the YAML within the limits.

Must not: talk to libvirt (it imports only hvlib's pure model, never :mod:`hvlib.virt`), render
XML, read anything but the files it is given, or accept a key it does not know.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from hvlib.errors import Location, SpecFileError
from hvlib.model.volplan import norm_path
from hvlib.specfile_convert import DocumentReader
from hvlib.specfile_documents import (
    DOMAIN_KEYS,
    KEYS,
    KINDS,
    NETWORK_KEYS,
    VOLUME_KEYS,
    Document,
    DomainDocument,
    NetworkDocument,
    SpecFile,
    VolumeDocument,
)
from hvlib.specyaml import compose, read_text

__all__ = [
    "DOMAIN_KEYS",
    "KEYS",
    "KINDS",
    "NETWORK_KEYS",
    "VOLUME_KEYS",
    "Document",
    "DomainDocument",
    "NetworkDocument",
    "SpecFile",
    "VolumeDocument",
    "load",
    "load_all",
    "loads",
]


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


def _once(docs: Iterable[tuple[Document, str]]) -> None:
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
        if norm_path(first.pool_dir) != norm_path(doc.pool_dir):
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
        DocumentReader(loader, path, node).convert(out)
        found = True
    if not found:
        rule = "holds no document (it is empty, or only comments and ---)"
        raise SpecFileError(Location(path, 1), "file", rule)
    return out
