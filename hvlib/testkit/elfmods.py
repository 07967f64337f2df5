"""Reading what the guest kit needs from ELF files and kernel modules.

ELF section readers (``.modinfo`` dependencies, ``DT_NEEDED`` libraries, the program
interpreter) and the order kernel modules load in. Pure: they read bytes and directories.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hvlib.testkit.kitlayout import GUEST_MODULES, GuestKitError


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


def _elf_sections(data: bytes) -> list[_Section]:
    """Return the section headers of a little-endian ELF64 file. Raises GuestKitError otherwise."""
    if data[:4] != b"\x7fELF" or data[4:6] != b"\x02\x01":
        raise GuestKitError("not a little-endian ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = raw[shstrndx][4]
    return [_Section(_cstring(data, names_at + r[0]), r[1], r[4], r[5], r[6]) for r in raw]


def _cstring(data: bytes, offset: int) -> str:
    """Return the NUL-terminated string at ``offset``. Raises ValueError if unterminated."""
    return data[offset : data.index(b"\0", offset)].decode()


def _section_bytes(data: bytes, name: str) -> bytes | None:
    """Return the contents of ELF section ``name``, or None. Raises GuestKitError if not ELF64."""
    for section in _elf_sections(data):
        if section.name == name:
            return data[section.offset : section.offset + section.size]
    return None


def modinfo_depends(ko: bytes) -> list[str]:
    """Return the ``depends=`` names of a kernel module image. Raises GuestKitError if not ELF."""
    info = _section_bytes(ko, ".modinfo") or b""
    for item in info.split(b"\0"):
        if item.startswith(b"depends="):
            return [d for d in item[len("depends=") :].decode().split(",") if d]
    return []


def elf_needed(data: bytes) -> list[str]:
    """Return the DT_NEEDED sonames of an ELF64 file. Raises GuestKitError if not ELF64."""
    sections = _elf_sections(data)
    needed: list[str] = []
    for section in (s for s in sections if s.type == 6):  # SHT_DYNAMIC
        strings = sections[section.link].offset
        for pos in range(section.offset, section.offset + section.size, 16):
            tag, value = struct.unpack_from("<qQ", data, pos)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                needed.append(_cstring(data, strings + value))
    return needed


def elf_interpreter(data: bytes) -> str | None:
    """Return a program's dynamic loader path (``.interp``), or None for a static program."""
    interp = _section_bytes(data, ".interp")
    return interp.rstrip(b"\0").decode() if interp else None


def module_load_order(wanted: Sequence[str], depends: Mapping[str, Sequence[str]]) -> list[str]:
    """Return ``wanted`` with every dependency placed before its first user (depth first).

    ``depends`` maps a module name to its ``depends=`` names; names absent from it (built into
    the kernel) are left out. Raises GuestKitError on a dependency cycle.
    """
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name not in depends:
            return
        if name in visiting:
            raise GuestKitError(f"module dependency cycle through {name}")
        visiting.add(name)
        for dep in depends[name]:
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


def _module_files(moddir: Path) -> dict[str, Path]:
    """Map each module name ("-" read as "_") under ``moddir`` to its .ko file."""
    return {ko.name[: -len(".ko")].replace("-", "_"): ko for ko in moddir.rglob("*.ko")}


def _builtin_modules(moddir: Path) -> set[str]:
    """Return the names of the modules built into the kernel (``modules.builtin``)."""
    builtin = moddir / "modules.builtin"
    lines = builtin.read_text().split() if builtin.exists() else []
    return {posixpath.basename(line)[: -len(".ko")].replace("-", "_") for line in lines}


def guest_modules(moddir: Path, wanted: Sequence[str] = GUEST_MODULES) -> list[tuple[str, Path]]:
    """Return (name, .ko path) of ``wanted`` plus dependencies, in load order.

    Built-in modules are skipped. Raises GuestKitError for a name that is neither a module nor
    built in.
    """
    files = _module_files(moddir)
    builtin = _builtin_modules(moddir)
    depends: dict[str, list[str]] = {}
    names = [name.replace("-", "_") for name in wanted]
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in depends or name in builtin:
            continue
        if name not in files:
            raise GuestKitError(f"kernel module {name} is neither a module nor built in")
        depends[name] = modinfo_depends(files[name].read_bytes())
        todo.extend(depends[name])
    return [(n, files[n]) for n in module_load_order(names, depends)]
