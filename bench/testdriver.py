"""Rows on libvirt's in-process ``test:///`` driver, where the point is hvlib's own cost:
B2's two sides (the RPC it is divided by comes from the sandbox), B3, B9 and B10."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEST_URI = "test:///default"
ROOT = Path(__file__).resolve().parent.parent
B2_CALLS = 4
"""define, start, destroy, undefine."""

HVLIB_LIFECYCLE = """\
import hvlib
from hvlib import DomainSpec, VirtType
spec = DomainSpec(name="b10", virt=VirtType.QEMU, memory_mib=64, kernel="/boot/vmlinuz")
with hvlib.connect("test:///default") as host:
    dom = host.domains.define(spec)
    dom.start()
    dom.destroy()
    dom.undefine()
"""
RAW_LIFECYCLE = """\
import libvirt
conn = libvirt.open("test:///default")
dom = conn.defineXML({xml!r})
dom.create()
dom.destroy()
dom.undefine()
conn.close()
"""


def spec(name: str) -> Any:
    """The domain every test-driver row uses: a small QEMU guest booting a kernel."""
    from hvlib import DomainSpec, VirtType

    return DomainSpec(name=name, virt=VirtType.QEMU, memory_mib=64, kernel="/boot/vmlinuz")


class Cycles:
    """B2's two sides, in this process: hvlib from the DomainSpec (rendering included) and
    raw libvirt-python with the XML hvlib renders for that spec."""

    def __init__(self) -> None:
        import libvirt

        import hvlib

        self.host = hvlib.connect(TEST_URI)
        self.raw = libvirt.open(TEST_URI)
        self.spec = spec("bench-b2")
        self.xml = hvlib.render(self.spec)

    def close(self) -> None:
        """Close both connections."""
        self.host.close()
        self.raw.close()

    def hvlib_cycle(self, cycles: int) -> float:
        """Seconds per define -> start -> destroy -> undefine through hvlib."""
        domains, spec_ = self.host.domains, self.spec
        started = time.perf_counter()
        for _ in range(cycles):
            dom = domains.define(spec_)
            dom.start()
            dom.destroy()
            dom.undefine()
        return (time.perf_counter() - started) / cycles

    def raw_cycle(self, cycles: int) -> float:
        """Seconds per define -> start -> destroy -> undefine through libvirt-python."""
        conn, xml = self.raw, self.xml
        started = time.perf_counter()
        for _ in range(cycles):
            dom = conn.defineXML(xml)
            dom.create()
            dom.destroy()
            dom.undefine()
        return (time.perf_counter() - started) / cycles

    def split(self, cycles: int) -> dict[str, float]:
        """hvlib's added microseconds per call, by call (define split into rendering and the
        rest), from ``cycles`` cycles of each side timed call by call."""
        import hvlib

        hv = dict.fromkeys(("render", "define", "start", "destroy", "undefine"), 0.0)
        raw = dict.fromkeys(("define", "start", "destroy", "undefine"), 0.0)
        clock = time.perf_counter
        for _ in range(cycles):
            t0 = clock()
            hvlib.render(self.spec)
            t1 = clock()
            dom = self.host.domains.define(self.spec)
            t2 = clock()
            dom.start()
            t3 = clock()
            dom.destroy()
            t4 = clock()
            dom.undefine()
            t5 = clock()
            for key, took in zip(hv, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                hv[key] += took
            t0 = clock()
            rdom = self.raw.defineXML(self.xml)
            t1 = clock()
            rdom.create()
            t2 = clock()
            rdom.destroy()
            t3 = clock()
            rdom.undefine()
            t4 = clock()
            for key, took in zip(raw, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                raw[key] += took
        out = {"define": (hv["define"] - raw["define"]) / cycles * 1e6}
        out["(of which rendering)"] = hv["render"] / cycles * 1e6
        for key in ("start", "destroy", "undefine"):
            out[key] = (hv[key] - raw[key]) / cycles * 1e6
        return out


def run_child(*args: str, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -m bench.child ARGS`` from the repository root; its JSON.

    Raises:
        RuntimeError: the child failed (its stderr's tail is in the message).
    """
    proc = subprocess.run(
        [sys.executable, "-m", "bench.child", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"bench.child {' '.join(args)} exited {proc.returncode}: {tail}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def process_cpu(code: str) -> float:
    """CPU seconds (user + system) of a whole ``python -c CODE`` process.

    Raises:
        RuntimeError: the process failed.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"python -c exited {proc.returncode}: {err.strip()[-300:]}")
    return float(usage.ru_utime + usage.ru_stime)


def raw_lifecycle_code() -> str:
    """B10's raw side: the same lifecycle with the XML hvlib renders for the same spec."""
    import hvlib

    return RAW_LIFECYCLE.format(xml=hvlib.render(spec("b10")))


@dataclass(frozen=True)
class ImportEntry:
    """One line of ``python -X importtime``: microseconds and nesting depth."""

    name: str
    self_us: int
    cumulative_us: int
    depth: int


_IMPORT_RE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def parse_importtime(text: str) -> list[ImportEntry]:
    """The entries of ``-X importtime`` output, in its (post-)order."""
    out = []
    for match in _IMPORT_RE.finditer(text):
        self_us, cum_us, indent, name = match.groups()
        out.append(ImportEntry(name, int(self_us), int(cum_us), (len(indent) - 1) // 2))
    return out


def foreign_imports(entries: list[ImportEntry]) -> dict[str, int]:
    """Cumulative microseconds of each non-hvlib module imported directly by an hvlib module
    (children are listed before their parent, one level deeper)."""
    out: dict[str, int] = {}
    for i, entry in enumerate(entries):
        parent = next((e for e in entries[i + 1 :] if e.depth == entry.depth - 1), None)
        if parent and parent.name.startswith("hvlib") and not entry.name.startswith("hvlib"):
            out[entry.name] = max(out.get(entry.name, 0), entry.cumulative_us)
    return out


def import_profile() -> str:
    """What ``import hvlib.virt.host`` costs, by the largest imports hvlib makes (one line)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import hvlib.virt.host"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    entries = parse_importtime(proc.stderr)
    total = next((e.cumulative_us for e in entries if e.name == "hvlib.virt.host"), 0)
    total = max([total] + [e.cumulative_us for e in entries if e.name == "hvlib"])
    own = sum(e.self_us for e in entries if e.name.startswith("hvlib"))
    biggest = sorted(foreign_imports(entries).items(), key=lambda kv: -kv[1])[:5]
    parts = ", ".join(f"{name} {us / 1000:.0f}" for name, us in biggest)
    return (
        f"import of hvlib + hvlib.virt.host: {total / 1000:.0f} ms wall (hvlib's own modules "
        f"{own / 1000:.0f} ms; largest imports it makes, ms: {parts})"
    )
