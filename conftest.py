"""Repository-wide pytest plugin: the per-virtualization-type summary that ends `make test`.

For each type it counts the integration tests that actually ran (passed or failed, not
skipped) on a real libvirt host started by the run, and otherwise says why none did: the
skip reasons the tests gave, or, when no test of that type exists, the reason below.
The lines are written to $HVLIB_SUMMARY_FILE (scripts/run-tests.sh prints it last) and to
the terminal summary.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

import pytest

TYPES = [
    ("qemu", "QEMU"),
    ("kvm", "KVM"),
    ("lxc", "LXC"),
    ("xen_pv", "Xen PV"),
    ("xen_pvh", "Xen PVH"),
    ("xen_hvm", "Xen HVM"),
    ("remote", "remote/migration"),
]
NO_TESTS_REASON = {
    "kvm": "no KVM test ran: /dev/kvm here does not run stock guest kernels (FIELD-NOTES)",
    "xen_pv": "no Xen test ran (they need the nested Xen host of integration/test_xen.py)",
    "xen_pvh": "no Xen test ran (they need the nested Xen host of integration/test_xen.py)",
    "xen_hvm": "no Xen test ran (they need the nested Xen host of integration/test_xen.py)",
}

_ran: Counter[str] = Counter()
_failed: Counter[str] = Counter()
_skips: defaultdict[str, list[str]] = defaultdict(list)
_totals: Counter[str] = Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _totals[report.outcome] += 1
    if "integration" not in report.keywords:
        return
    for marker, _label in TYPES:
        if marker not in report.keywords:
            continue
        if report.skipped and report.when in ("setup", "call"):
            _skips[marker].append(_skip_reason(report))
        elif report.when == "call":
            _ran[marker] += 1
            _failed[marker] += report.failed


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def summary_lines() -> list[str]:
    """One line per virtualization type."""
    lines = []
    for marker, label in TYPES:
        head = f"{label + ':':<18}"
        if _ran[marker]:
            lines.append(
                f"{head}{_ran[marker]} tests ran on a real host ({_failed[marker]} failed)"
            )
        elif _skips[marker]:
            reasons = "; ".join(sorted(set(_skips[marker])))
            lines.append(f"{head}0 ran on a real host: {len(_skips[marker])} skipped: {reasons}")
        else:
            lines.append(
                f"{head}0 ran on a real host: "
                + NO_TESTS_REASON.get(marker, "no integration test of this type ran")
            )
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    terminalreporter.section("tests on real hosts, by virtualization type")
    for line in lines:
        terminalreporter.write_line(line)
    totals = (
        f"totals: {_totals['passed']} passed, {_totals['failed']} failed, "
        f"{_totals['skipped']} skipped"
    )
    path = os.environ.get("HVLIB_SUMMARY_FILE")
    if path:
        with open(path, "w") as f:
            f.write("Tests on real hosts, by virtualization type:\n")
            f.write("\n".join([*lines, totals]) + "\n")
