"""Fuzz: spec files through what ``hvlib render`` and ``hvlib up --check`` run (issue 16).

Hypothesis writes spec files: YAML documents of every kind with every key the loader knows
(taken from ``hvlib.specfile.KEYS`` and from ``Cpu.from_dict``/``IdMap.from_dict``, so a
new key is fuzzed without touching this file), right values and wrong types, anchors,
aliases, merge keys, tags, alias bombs, deep nesting, control characters, bytes that are
not UTF-8, truncations, several documents, and token soup. Each file goes to a child
process under a 1 GiB address-space limit and a 10 s deadline (``tests/fuzz_worker.py``),
which runs ``specfile.load_all``, ``render_files`` and the ``render`` and
``up --check --uri test:///default`` commands in-process. Every input must end in success,
a SpecError naming FILE:LINE, or "pending" (exit 0, 2 or 3), never anything else.

Reproducible: the generation is derandomized (``derandomize=True``: the same examples on
every run until the test's code or hypothesis changes; hypothesis then keeps no example
database, it refuses one next to derandomize). The seed corpus kept in the repository is
``tests/fuzz-corpus/``: the worst inputs found or known (alias bombs, deep nesting, NUL,
cycles, bad tags...), each run first. Add a file there for every input the fuzz ever finds.

Bounded: :data:`MAX_EXAMPLES` examples. Measured on a 2-core machine: 14-20 s within
``pytest tests`` (load ~1.5), 35 s pinned to one core shared with a busy loop. Should a
machine be slower still, the examples after :data:`BUDGET` seconds pass unjudged (with a
warning saying how many), so the test ends within BUDGET plus one example's 10 s.
``HVLIB_FUZZ_EXAMPLES=N`` runs N random (not derandomized) examples, with shrinking and no
time budget, for a longer local hunt.
"""

from __future__ import annotations

import functools
import os
import re
import resource
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hvlib import specfile
from hvlib.enums import VirtType
from hvlib.errors import SpecError
from hvlib.model.cpuspec import Cpu
from hvlib.model.idmap import IdMap, IdRange
from tests import fuzz_worker

CORPUS = Path(__file__).parent / "fuzz-corpus"
HVLIB = Path(sys.executable).parent / "hvlib"
HUNT = "HVLIB_FUZZ_EXAMPLES" in os.environ
"""A longer local hunt: N examples, shrinking, no time budget."""
MAX_EXAMPLES = int(os.environ.get("HVLIB_FUZZ_EXAMPLES", "500"))
BUDGET = float("inf") if HUNT else 90.0
"""Seconds after which the remaining examples pass unjudged."""


def _from_dict_keys(from_dict: Callable[[dict[str, Any]], object]) -> tuple[str, ...]:
    """The keys a ``from_dict`` knows, as its unknown-key error lists them."""
    try:
        from_dict({"not a key": 1})
    except SpecError as e:
        return tuple(e.rule.split("known keys: ", 1)[1].split(", "))
    raise AssertionError("from_dict took an unknown key")


MAPPINGS: dict[str, tuple[str, ...]] = {
    **{p: k for p, k in specfile.KEYS.items() if p not in specfile.KINDS},
    "cpu": _from_dict_keys(Cpu.from_dict),
    "idmap": _from_dict_keys(IdMap.from_dict),
    "idmap.uids[]": tuple(f.name for f in fields(IdRange)),
    "idmap.gids[]": tuple(f.name for f in fields(IdRange)),
}
"""Every mapping inside a document (a path; ``[]``: each item of that list) and its keys."""
ALL_KEYS = sorted({k for keys in (*specfile.KEYS.values(), *MAPPINGS.values()) for k in keys})

# -- values --------------------------------------------------------------------------------

GOOD: dict[str, list[Any]] = {
    "name": ["v1", "v2", "test", "lan", "web-1.img"],
    "virt": [v.value for v in VirtType],
    "vcpus": [1, 2],
    "max_vcpus": [2, 4],
    "memory_mib": [64, 128],
    "max_memory_mib": [256],
    "kernel": ["/boot/vmlinuz"],
    "initrd": ["/boot/initrd.img"],
    "cmdline": ["console=ttyS0"],
    "init": [["/sbin/init"], ["/bin/sh", "-c", "sleep 1"]],
    "uuid": ["6f1a4a4e-9d5b-4c8c-8a63-2b0c5a0d9e11"],
    "description": ["a guest", ""],
    "autostart": [True, False],
    "on_poweroff": ["destroy", "restart", "preserve"],
    "on_reboot": ["restart"],
    "on_crash": ["coredump-restart"],
    "nested": [True, False],
    "machine": ["pc", "q35", "microvm"],
    "firmware": ["bios", "efi"],
    "secure_boot": [False, True],
    "rng": [True, False],
    "file": ["/var/lib/libvirt/images/a.img"],
    "cdrom": ["/var/lib/libvirt/images/d.iso"],
    "target": ["vda", "vdb", "sda", "hdc", "xvda", "/", "/data"],
    "format": ["raw", "qcow2"],
    "readonly": [True, False],
    "network": ["default", "lan"],
    "bridge": ["virbr9", "br-x"],
    "mac": ["52:54:00:00:00:01", "52:54:00:00:00:02"],
    "model": ["virtio", "e1000", "EPYC", "Nehalem"],
    "source": ["/srv/ct"],
    "set": ["./description", "./on_crash", "./devices/disk[1]/@device"],
    "value": ["x", "destroy"],
    "remove": ["./description", "./devices/memballoon"],
    "ipv4": ["192.0.2.0/24", "198.51.100.1/24"],
    "mode": ["nat", "isolated", "custom", "host-model", "host-passthrough"],
    "dhcp_range": [["192.0.2.100", "192.0.2.199"]],
    "ip": ["192.0.2.10", "192.0.2.11"],
    "pool": ["default-pool", "images"],
    "dir": ["/var/lib/hvlib/images"],
    "size_mib": [1, 64],
    "require": [["aes"], ["aes", "avx"]],
    "disable": [["smap"]],
    "sockets": [1],
    "cores": [1, 2],
    "threads": [1],
    "fallback": [True, False],
    "start": [0],
    "count": [1000, 65536],
    "kind": list(specfile.KINDS),
}
"""Plausible values by key name; a key missing here still gets the hostile values."""

NASTY_STRINGS = [
    "",
    "~",
    "null",
    "no",
    "0x1F",
    "0o17",
    "0b101",
    "1:30:00",
    "2001-12-14",
    "1e309",
    ".nan",
    "-.inf",
    "52:54:00:00:00:01\n",
    "aes\n",
    "a" * 5000,
    "\x00",
    "\x07",
    "\x1b[0m",
    "\x7f",
    "\x85",
    "\u2028",
    "\ufeff",
    "\ufffe",
    "é/ü",
    "<a/>",
    "&x;",
    "../../etc/passwd",
    "//",
    "*",
    "&",
    "!!",
    "<<",
    "- ",
    ": ",
    "{",
    "[",
    "#",
    "|",
    ">",
    "'",
    '"',
    "%",
    "@",
    "`",
    "-1",
    "9" * 30,
    "test:///default?x=1",
]


@dataclass(frozen=True)
class Raw:
    """YAML text emitted as it is (a tag, a merge, an alias bomb, deep nesting)."""

    text: str


def _bomb(levels: int, width: int) -> Raw:
    parts = ["&b0 [x, x]"]
    parts += [f"&b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return Raw(f"[{', '.join(parts)}]")


def _deep(depth: int, brackets: str) -> Raw:
    return Raw(brackets[0] * depth + brackets[1] * depth)


TAGS = [
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!binary",
    "!!timestamp",
    "!!set",
    "!!omap",
    "!!python/object:os.system",
    "!custom",
    "!",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**32, 2**63, 2**64, 10**100]),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(NASTY_STRINGS),
)
specials = st.one_of(
    st.builds(_bomb, st.integers(1, 14), st.integers(2, 10)),
    st.builds(_deep, st.integers(1, 400), st.sampled_from(["[]", "{}"])),
    st.builds(lambda t, v: Raw(f"{t} {v}"), st.sampled_from(TAGS), st.sampled_from(NASTY_STRINGS)),
    st.sampled_from(
        [Raw("*nowhere"), Raw("&dup x"), Raw("[*dup]"), Raw("!!binary ====="), Raw("? [a]")]
    ),
)
hostile = st.recursive(
    st.one_of(scalars, specials),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=8)), inner, max_size=4
        ),
    ),
    max_leaves=10,
)


@functools.cache
def value_for(path: str, key: str) -> st.SearchStrategy[Any]:
    """A value for ``key`` at document path ``path``: mostly plausible, sometimes hostile."""
    here = f"{path}.{key}" if path else key
    if f"{here}[]" in MAPPINGS:
        good = st.lists(mapping_for(f"{here}[]"), min_size=1, max_size=3)
    elif here in MAPPINGS:
        good = mapping_for(here)
        if key in GOOD:
            good = st.one_of(good, st.sampled_from(GOOD[key]))
    elif key in GOOD:
        good = st.sampled_from(GOOD[key])
    else:
        good = scalars
    return st.one_of(good, good, good, hostile)


@functools.cache
def mapping_for(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping of some of the keys ``path`` takes (now and then one it does not)."""
    keys = MAPPINGS[path]
    return st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys), unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({k: value_for(path, k) for k in chosen})
    ) | st.fixed_dictionaries(
        {k: value_for(path, k) for k in keys[:1]}, optional={"extra": hostile}
    )


BASES: dict[str, dict[str, Any]] = {
    "domain": {"name": "v1", "virt": "qemu", "memory_mib": 64, "disks": [{"file": "/a.img"}]},
    "network": {"kind": "network", "name": "n1", "ipv4": "192.0.2.0/24"},
    "volume": {"kind": "volume", "pool": "default-pool", "name": "v1.img", "size_mib": 1},
}


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (the middle of the range: hypothesis favours its ends)."""
    return draw(st.integers(0, n - 1)) == n // 2


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document of some kind with some keys replaced, removed or added."""
    kind = draw(st.sampled_from(specfile.KINDS))
    doc = dict(BASES[kind])
    keys = specfile.KEYS[kind]
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        if one_in(draw, 6):
            doc.pop(key, None)
        else:
            doc[key] = draw(value_for("", key))
    if one_in(draw, 10):
        doc[draw(st.sampled_from(ALL_KEYS)) + draw(st.sampled_from(["", "x", "_"]))] = 1
    return doc


# -- YAML text -----------------------------------------------------------------------------


class Emitter:
    """Writes a document as YAML, choosing (through hypothesis) flow or block style, quoting,
    anchors, aliases to earlier anchors, merge keys and tags as it goes."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.anchors: list[str] = []
        self.mapping_anchors: list[str] = []

    def chance(self, n: int) -> bool:
        return one_in(self.draw, n)

    def document(self, doc: dict[str, Any]) -> str:
        return self.block_mapping(doc, 0)

    def block_mapping(self, d: dict[str, Any], indent: int) -> str:
        pad, lines = " " * indent, []
        for key, value in d.items():
            if self.mapping_anchors and self.chance(12):
                lines.append(f"{pad}<<: *{self.draw(st.sampled_from(self.mapping_anchors))}\n")
            lines.append(f"{pad}{self.key(key)}:{self.after_key(value, indent)}")
        return "".join(lines) or f"{pad}{{}}\n"

    def after_key(self, value: Any, indent: int) -> str:
        if isinstance(value, dict | list) and value and not self.chance(3):
            anchor = self.anchor(value)
            inner = (
                self.block_mapping(value, indent + 2)
                if isinstance(value, dict)
                else self.block_list(value, indent + 2)
            )
            return f"{' ' if anchor else ''}{anchor.rstrip()}\n{inner}"
        return f" {self.flow(value)}\n"

    def block_list(self, items: list[Any], indent: int) -> str:
        pad = " " * indent
        out = []
        for item in items:
            if isinstance(item, dict) and item and not self.chance(3):
                out.append(f"{pad}-\n{self.block_mapping(item, indent + 2)}")
            else:
                out.append(f"{pad}- {self.flow(item)}\n")
        return "".join(out)

    def flow(self, value: Any) -> str:
        if self.anchors and self.chance(15):
            return f"*{self.draw(st.sampled_from(self.anchors))}"
        if isinstance(value, Raw):
            return value.text
        anchor = self.anchor(value)
        if isinstance(value, dict):
            inner = ", ".join(f"{self.key(k)}: {self.flow(v)}" for k, v in value.items())
            return f"{anchor}{{{inner}}}"
        if isinstance(value, list):
            return f"{anchor}[{', '.join(self.flow(v) for v in value)}]"
        return anchor + self.scalar(value)

    def anchor(self, value: Any) -> str:
        if not self.chance(8):
            return ""
        name = f"a{len(self.anchors)}"
        self.anchors.append(name)
        if isinstance(value, dict):
            self.mapping_anchors.append(name)
        return f"&{name} "

    def key(self, key: Any) -> str:
        if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
            return key if not self.chance(10) else f'"{key}"'
        return self.scalar(key)

    def scalar(self, value: Any) -> str:
        if isinstance(value, str) and self.chance(20):
            return value  # unquoted as written: often not YAML at all
        text = yaml.safe_dump(value, default_flow_style=True, width=10**9, allow_unicode=True)
        text = text.removesuffix("\n").removesuffix("\n...").replace("\n", " ")
        if self.chance(20):
            text = f"{self.draw(st.sampled_from(TAGS))} {text}"
        return text


CONTROL = [chr(c) for c in (*range(0, 9), 11, 12, *range(14, 32), 127, *range(0x80, 0xA0))]
CONTROL += ["\ufffe", "\uffff"]
BAD_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80"]


@st.composite
def spec_files(draw: st.DrawFn) -> bytes:
    """The bytes of a spec file: documents, then now and then one damage to the text."""
    if one_in(draw, 8):
        return draw(token_soup())
    docs = draw(st.lists(documents(), min_size=1, max_size=3))
    text = "---\n".join(Emitter(draw).document(d) for d in docs)
    damage = draw(st.integers(0, 11)) - 3  # 0 to 4: one damage; else none
    if damage == 0:
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(CONTROL)) + text[at:]
    elif damage == 1:
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == 2:
        text = text.replace("  ", "\t", 1)
    elif damage == 3:
        text = "\ufeff" + text
    data = text.encode("utf-8", "surrogatepass")
    if damage == 4:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(BAD_BYTES)) + data[at:]
    return data


FRAGMENTS = [
    *ALL_KEYS,
    *(f"{k}: " for k in ALL_KEYS),
    "kind: network\n",
    "kind: volume\n",
    "\n",
    "\n  ",
    "- ",
    ": ",
    "? ",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: ",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!tag ",
    "|\n",
    ">-\n",
    "'",
    '"',
    "#",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "%TAG ! tag:x,2000:\n",
    "\t",
    "\x00",
    "\\",
    "52:54:00:00:00:01",
    "/a.img",
    "1",
    "yes",
]


def token_soup() -> st.SearchStrategy[bytes]:
    """Fragments of YAML syntax and of hvlib's keys in any order: the parser's error paths."""
    return st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=40).map(
        lambda f: "".join(f).encode()
    )


# -- the fuzz ------------------------------------------------------------------------------


class Run:
    """What the fuzz saw: its start, the outcomes, whether anything failed."""

    started: ClassVar[float] = 0.0
    failed: ClassVar[bool] = False
    outcomes: ClassVar[Counter[str]] = Counter()


def _judge_bytes(tmp: Path, data: bytes) -> None:
    path = tmp / "spec.yaml"
    path.write_bytes(data)
    outcome, detail = fuzz_worker.run_isolated(str(path))
    if outcome != "ok":
        Run.failed = True
        raise AssertionError(f"{detail}\n--- the input ({len(data)} bytes) ---\n{data[:3000]!r}")
    Run.outcomes["valid" if detail == "valid" else detail.split(": ", 2)[1]] += 1


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=not HUNT,
    deadline=None,  # the child has its own 10 s
    phases=[Phase.explicit, Phase.generate, Phase.shrink]
    if HUNT
    else [Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


def test_fuzz_spec_files_end_in_success_a_located_spec_error_or_pending(tmp_path: Path) -> None:
    """The fuzz target of issue 16 (see the module docstring)."""
    Run.started, Run.failed, Run.outcomes = time.monotonic(), False, Counter()
    skipped = Counter[str]()

    @FUZZ_SETTINGS
    @given(data=spec_files())
    def one(data: bytes) -> None:
        if time.monotonic() - Run.started > BUDGET and not Run.failed:
            skipped["over budget"] += 1
            return
        _judge_bytes(tmp_path, data)

    one()
    took = time.monotonic() - Run.started
    judged = sum(Run.outcomes.values())
    print(f"\nfuzz: {judged} spec files judged in {took:.0f} s: {dict(Run.outcomes)}")
    if skipped:
        unjudged = skipped["over budget"]
        warnings.warn(f"fuzz: {unjudged} examples passed unjudged (over budget)", stacklevel=1)
    # the generator must reach the commands, not only the YAML parser
    assert Run.outcomes["valid"] >= judged // 10, Run.outcomes


def test_the_memory_limit_really_applies() -> None:
    assert fuzz_worker.run_isolated("/dev/null", mode="allocate") == ("ok", "MemoryError")


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.yaml")))
def test_the_seed_corpus(tmp_path: Path, name: str) -> None:
    """Each input of tests/fuzz-corpus/ is judged like a fuzzed one."""
    _judge_bytes(tmp_path, (CORPUS / name).read_bytes())


def test_the_corpus_is_not_empty() -> None:
    assert len(list(CORPUS.glob("*.yaml"))) >= 10


# -- the worst inputs through the real command line ------------------------------------------


def alias_bomb() -> bytes:
    """Aliases nested under a cpu feature list: 9 levels of 9 (9**9 nodes) in ~470 bytes."""
    levels = ["&l0 [aes, aes, aes, aes, aes, aes, aes, aes, aes]"]
    levels += [f"&l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    body = "".join(f"    - {level}\n" for level in levels)
    return f"name: v\nvirt: qemu\nkernel: /k\ncpu:\n  model: EPYC\n  require:\n{body}".encode()


WORST: dict[str, Callable[[], bytes]] = {
    "alias-bomb": alias_bomb,
    "deep-nesting": lambda: b"name: v\ncpu: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "nul": lambda: b"name: v\nvirt: qemu\nkernel: /k\x00\n",
    "huge-file": lambda: b"name: v\nvirt: qemu\nkernel: /k\n" + b"# padding\n" * 200_000,
    "not-utf-8": lambda: b"name: v\nvirt: qemu\ndescription: caf\xe9\nkernel: /k\n",
}


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (fuzz_worker.MEMORY_LIMIT, fuzz_worker.MEMORY_LIMIT))


@pytest.mark.parametrize("name", sorted(WORST))
@pytest.mark.parametrize(
    "argv", [["render"], ["up", "--check", "--uri", "test:///default"]], ids=["render", "up"]
)
def test_the_worst_inputs_through_the_cli(tmp_path: Path, name: str, argv: Sequence[str]) -> None:
    """Exit 2, nothing on stdout, one line on stderr naming FILE:LINE, under 1 GiB and 10 s."""
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(WORST[name]())
    started = time.monotonic()
    res = subprocess.run(
        [str(HVLIB), *argv, str(path)],
        capture_output=True,
        text=True,
        timeout=fuzz_worker.TIME_LIMIT,
        preexec_fn=_limited,
        check=False,
    )
    took = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert fuzz_worker.names_the_line(lines[0].removeprefix("hvlib: "), str(path)), lines[0]
    assert took < fuzz_worker.TIME_LIMIT
