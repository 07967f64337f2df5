"""Rows that need a process of their own, run as ``python -m bench.child ROW [ARGS]``.

Each prints one JSON object on stdout. B3 installs the counting proxy before hvlib opens its
connection (and must not share libvirt's per-process test driver with other rows); B9 measures
the resident set of a process that does nothing else.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
from typing import Any

TEST_URI = "test:///default"
B3_SIZES = (10, 100, 1000)
CLIENT_SIDE = frozenset({"name", "UUIDString", "UUID", "ID"})
"""Accessors libvirt answers from the handle itself, without calling the driver."""


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _spec(name: str) -> Any:
    from hvlib import DomainSpec, VirtType

    return DomainSpec(name=name, virt=VirtType.QEMU, memory_mib=64, kernel="/boot/vmlinuz")


def _thread_calls() -> Any:
    """A call counter (tests/counting.Calls) that ignores other threads (libvirt's event loop
    runs ``virEventRunDefaultImpl`` through the same module)."""
    from tests.counting import Calls

    owner = threading.get_ident()

    class ThreadCalls(Calls):
        def __setitem__(self, key: str, value: int) -> None:
            if threading.get_ident() == owner:
                super().__setitem__(key, value)

    return ThreadCalls()


def b3() -> dict[str, Any]:
    """Calls made by ``host.domains.list(state=RUNNING)`` for 10, 100 and 1000 running domains,
    counted by tests/counting.py's proxy installed as ``hvlib.virt._virt.libvirt``."""
    import libvirt

    import hvlib
    import hvlib.virt._virt
    from hvlib import State
    from tests.counting import CountingLibvirt

    proxy = CountingLibvirt(libvirt)
    calls = _thread_calls()
    object.__setattr__(proxy, "_calls", calls)
    hvlib.virt._virt.libvirt = proxy  # type: ignore[attr-defined]
    raw = libvirt.open(TEST_URI)
    for dom in raw.listAllDomains():  # the driver's built-in "test" domain
        dom.destroy()
        dom.undefine()
    out: dict[str, Any] = {}
    with hvlib.connect(TEST_URI, poll_interval=None) as host:
        defined = 0
        for size in B3_SIZES:
            while defined < size:
                raw.defineXML(hvlib.render(_spec(f"b3-{defined}"))).create()
                defined += 1
            calls.clear()
            found = host.domains.list(state=State.RUNNING)
            if len(found) != size:
                raise RuntimeError(f"list() found {len(found)} of {size} domains")
            out[str(size)] = dict(calls)
    raw.close()
    return out


def _sample(loop: int, baseline: int) -> tuple[int, int, int]:
    """(loop, RSS above the baseline in KiB, Python's allocated memory blocks after a full
    collection: exact, where RSS moves in allocator-sized steps)."""
    gc.collect()
    return loop, _status_kib("VmRSS") - baseline, sys.getallocatedblocks()


def b9(loops: int, tracked: int, every: int) -> dict[str, Any]:
    """Resident set of a process tracking ``tracked`` domains on test:/// (half running, the
    inventory re-listed every 100 loops) through ``loops`` define/start/destroy/undefine
    loops; sampled every ``every`` loops (RSS above the post-import baseline, and Python's
    allocated blocks)."""
    import hvlib
    import hvlib.virt.host  # everything a lifecycle needs, imported before the baseline

    gc.collect()
    baseline = _status_kib("VmRSS")
    started = time.monotonic()
    host = hvlib.connect(TEST_URI, poll_interval=None)
    keep = [host.domains.define(_spec(f"b9-t{i}")) for i in range(tracked)]
    for dom in keep[::2]:
        dom.start()
    samples = [_sample(0, baseline)]
    for i in range(1, loops + 1):
        dom = host.domains.define(_spec("b9-loop"))
        dom.start()
        dom.destroy()
        dom.undefine()
        if i % 100 == 0 and len(host.domains.list()) < tracked:
            raise RuntimeError("the tracked domains vanished")
        if i % every == 0:
            samples.append(_sample(i, baseline))
    return {
        "baseline_kib": baseline,
        "peak_kib": _status_kib("VmHWM") - baseline,
        "samples": samples,
        "seconds": time.monotonic() - started,
        "event_hub_entries": len(host.consoles),
        "tracked": len(keep),
    }


def main(argv: list[str]) -> int:
    """Run the row named by ``argv[0]``; print its JSON."""
    if argv[:1] == ["b3"]:
        result = b3()
    elif argv[:1] == ["b9"]:
        result = b9(*(int(a) for a in argv[1:4]))
    else:
        print(f"usage: python -m bench.child b3 | b9 LOOPS TRACKED EVERY (got {argv})")
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
