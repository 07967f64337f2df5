"""Every :class:`hvlib.Unsupported` names the field that asks for what was refused, and a spec
file's error points at that key's line (issue 17: specfile used to guess the key from words
of the message, ``_UNSUPPORTED_BLAME``).

Before: ``Unsupported.field`` was None wherever hvlib raised it, and specfile blamed ``virt``
for anything its word list did not know (a ``cpu`` on Xen, a cdrom on a microvm, an ``rng``
on LXC, host-passthrough under qemu).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hvlib.errors import SpecFileError, Unsupported
from hvlib.model import profiles
from hvlib.specfile import loads

ROOT = Path(__file__).resolve().parent.parent / "hvlib"
LXC = "name: c\nvirt: lxc\ninit: [/i]\nfilesystems: [host_root]\n"

CASES = [
    # (document, the field Unsupported names, the key whose line the error gives)
    (LXC + "kernel: /k\n", "kernel", "kernel"),
    (LXC + "cmdline: quiet\n", "cmdline", "cmdline"),
    (LXC + "disks: [{file: /a}]\n", "disks", "disks"),
    (LXC + "max_vcpus: 2\n", "max_vcpus", "max_vcpus"),
    (LXC + "rng: true\n", "rng", "rng"),
    ("name: v\nvirt: xen-pv\nkernel: /k\ncpu: {model: Nehalem}\n", "cpu", "cpu"),
    ("name: v\nvirt: xen-hvm\ndisks: [{file: /a}]\nnested: true\n", "nested", "nested"),
    (
        "name: v\nvirt: qemu\ndisks: [{file: /a}]\ncpu: {mode: host-passthrough}\n",
        "cpu.mode",
        "cpu.mode",
    ),
    ("name: v\nvirt: kvm\ndisks: [{file: /a}]\nidmap: {target: 100000}\n", "idmap", "idmap"),
    ("name: v\nvirt: kvm\ndisks: [{file: /a}]\ninit: [/sbin/init]\n", "init", "init"),
    (
        "name: v\nvirt: xen-pv\nkernel: /k\nfilesystems: [{source: /s}]\n",
        "filesystems",
        "filesystems",
    ),
    (
        "name: v\nvirt: kvm\ndisks: [{file: /a}]\nfilesystems:\n  - {source: /s, target: /x}\n"
        "  - host_root\n",
        "filesystems[1]",
        "filesystems[1]",
    ),
    ("name: v\nvirt: qemu\ndisks: [{file: /a}]\ncmdline: quiet\n", "cmdline", "cmdline"),
    ("name: v\ndisks: [{file: /a}]\nvirt: xen-pv\n", "virt", "virt"),
    (
        "name: v\nvirt: xen-pv\nkernel: /k\ndisks:\n  - file: /a\n  - cdrom: /b.iso\n",
        "disks[1]",
        "disks[1]",
    ),
    ("name: v\nvirt: kvm\ndisks: [{file: /a}]\nmachine: microvm\n", "machine", "machine"),
    (
        "name: v\nvirt: kvm\nkernel: /k\nmachine: microvm\ndisks:\n  - cdrom: /b.iso\n",
        "disks[0]",
        "disks[0]",
    ),
    (
        "name: v\nvirt: kvm\nkernel: /k\nmachine: microvm\nfilesystems: [{source: /s}]\n",
        "filesystems",
        "filesystems",
    ),
]


def _line_of(text: str, key: str) -> int:
    """The 1-based line where ``key`` (``name``, ``disks[1]``, ``cpu.mode``) is written."""
    lines = text.splitlines()
    head, _, index = key.partition("[")
    head, _, sub = head.partition(".")
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{head}:"))
    if index:
        at += 1 + int(index.rstrip("]"))
    elif sub:
        assert f"{sub}:" in lines[at], (key, lines[at])
    return at + 1


@pytest.mark.parametrize(("text", "field", "key"), CASES)
def test_unsupported_names_its_field_and_the_file_its_line(text: str, field: str, key: str) -> None:
    with pytest.raises(SpecFileError) as info:
        loads(text, "f.yaml")
    err = info.value
    raised = err.__context__  # what profiles.check raised (specfile re-raises it "from None")
    assert isinstance(raised, Unsupported), repr(raised)
    assert raised.field == field
    line = _line_of(text, key)
    assert (err.field, err.line) == (key, line), str(err)
    assert str(err).startswith(f"f.yaml:{line}: {key}: {raised}")


def test_every_unsupported_hvlib_raises_says_its_field() -> None:
    """Each ``Unsupported(...)`` in hvlib passes ``field=`` (None where the refusal is about
    the whole call or the host, not one field), so a new one cannot forget it."""
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Unsupported"
                and not any(k.arg == "field" for k in node.keywords)
            ):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not missing, missing


def test_the_check_is_the_library_s_own() -> None:
    """Without a spec file: profiles.check raises Unsupported naming the field."""
    from hvlib import Cpu, Disk, DomainSpec, VirtType

    spec = DomainSpec("v", VirtType.XEN_HVM, disks=[Disk.file("/a")], cpu=Cpu.host_model())
    with pytest.raises(Unsupported) as info:
        profiles.check(spec)
    assert info.value.field == "cpu"
