"""What the benchmarks ran on: cores, CPU model, kernel, versions, load."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def cpu_model(cpuinfo: str) -> str:
    """The first ``model name`` of a /proc/cpuinfo text ("unknown" if there is none)."""
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def nproc() -> int:
    """CPUs this process may run on (what ``nproc`` prints)."""
    return len(os.sched_getaffinity(0))


def describe(libvirt_version: str) -> str:
    """One line naming the machine: nproc, CPU model, kernel, Python, libvirt, load."""
    try:
        model = cpu_model(Path("/proc/cpuinfo").read_text())
    except OSError:
        model = "unknown"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: nproc {nproc()}, {model}, kernel {platform.release()}, "
        f"Python {platform.python_version()}, libvirt {libvirt_version}; load average {load}"
    )
