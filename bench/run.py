"""The benchmark run: each row measured in turn, then one table (figure, target, pass/fail).

Ratios only: every figure compares runs made in this process, on this machine, interleaved
(A B, B A, A B ...), so the machine's speed and load cancel out as far as they can. Progress goes
to stderr, the table to stdout. The exit status is 0 when every target is met, 1 otherwise, and
3 when the run passed its overall deadline (``--deadline``; it then names the row that hung).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench import stats
from bench.deadline import DEFAULT_DEADLINE, EXIT_HUNG, RunDeadline
from bench.stats import Row, Target
from hvlib.virt.lxcstart import INIT_WAITS

B9_BLOCK_NOISE = 100
"""Python memory blocks the B9 process may gain over its second half and still count as not
growing (0.02 per loop; one leaked object per loop is 5000)."""
MB = 1_000_000
MAX_DISCARDED = 3
"""Rounds of a row that may fail (and be run again, said in its note) before the row fails."""


@dataclass(frozen=True)
class Plan:
    """How many repetitions each row makes."""

    b1_rounds: int = 20
    b2_rounds: int = 15
    b2_cycles: int = 200
    b4_pairs: int = 4
    b4_containers: int = 20
    b5_pairs: int = 4
    b5_guests: int = 10
    b6_pairs: int = 25
    b7_samples: int = 20
    b8_samples: int = 10
    b9_loops: int = 10_000
    b9_tracked: int = 1000
    b9_every: int = 500
    b10_pairs: int = 15


QUICK = Plan(
    b1_rounds=2,
    b2_rounds=3,
    b2_cycles=20,
    b4_pairs=1,
    b4_containers=4,
    b5_pairs=1,
    b5_guests=2,
    b6_pairs=2,
    b7_samples=2,
    b8_samples=1,
    b9_loops=1000,
    b9_tracked=100,
    b9_every=100,
    b10_pairs=2,
)
"""A smoke run of every code path; its figures are not the benchmark's."""


class Progress:
    """Timestamped progress lines on stderr."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last = ""
        """The last line printed (for the report of a run that hung)."""

    def __call__(self, text: str) -> None:
        self.last = f"[{time.monotonic() - self.started:7.1f}s] {text}"
        print(self.last, file=sys.stderr, flush=True)


class RestartCounter(logging.Handler):
    """Counts hvlib's "libvirt never learned the container's init" restarts (LXC starts)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "never learned the container's init" in record.getMessage():
            self.count += 1


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def init_summary(known: Sequence[tuple[float, int] | None]) -> str:
    """What B6's untimed watch of raw-started containers saw (when libvirt knew the init)."""
    seen = [k for k in known if k is not None]
    first = sum(1 for _, tries in seen if tries == 1)
    worst = f", the latest {_ms(max(s for s, _ in seen))} after create() returned" if seen else ""
    return (
        f"libvirt knew the init in {len(seen)} of {len(known)} containers ({first} on the "
        f"first try{worst}) and not within {sb_probe_s():g} s in the other "
        f"{len(known) - len(seen)}"
    )


def sb_probe_s() -> float:
    """How long B6 watched each raw-started container."""
    from bench.sandboxed import INIT_PROBE_S

    return INIT_PROBE_S


def thrown(discarded: Sequence[str]) -> str:
    """A note's tail naming the rounds thrown away and redone ("" when none was)."""
    if not discarded:
        return ""
    return f"; {len(discarded)} round(s) failed and were run again: " + " | ".join(discarded)


# -- rows on the sandbox -------------------------------------------------------------------


def b1(lab: Any, plan: Plan, say: Progress) -> list[Row]:
    """B1 and its extra row: QEMU lifecycle, hvlib / raw libvirt-python."""
    import hvlib
    from bench import sandboxed as sb

    xml = hvlib.render(sb.vm_spec(lab.kit, "bench-b1"))
    say(f"B1: warm-up, then {plan.b1_rounds} rounds of hvlib / raw / hvlib without capture")
    sb.qemu_lifecycle(lab, True)
    sb.raw_lifecycle(lab.raw_qemu, xml)
    discarded: list[str] = []
    runs = stats.interleave(
        {
            "hvlib": lambda _i: sb.qemu_lifecycle(lab, True),
            "raw": lambda _i: sb.raw_lifecycle(lab.raw_qemu, xml),
            "nocap": lambda _i: sb.qemu_lifecycle(lab, False),
        },
        plan.b1_rounds,
        discarded=discarded,
        max_discarded=MAX_DISCARDED,
    )
    main = stats.ratio_row(
        "B1",
        "QEMU define>start>destroy>undefine: hvlib / raw libvirt-python, same XML",
        stats.ratios(runs["hvlib"], runs["raw"]),
        Target("<=", 1.05),
    )
    med = {k: stats.median(v) for k, v in runs.items()}
    note = (
        f"medians hvlib {_ms(med['hvlib'])} (start() captures the console: paused start, "
        f"console opened, resume), raw {_ms(med['raw'])}, hvlib without capture "
        f"{_ms(med['nocap'])}{thrown(discarded)}"
    )
    extra = stats.ratio_row(
        "B1+",
        "  same, hvlib start(capture_console=False) / raw",
        stats.ratios(runs["nocap"], runs["raw"]),
        None,
    )
    return [replace(main, note=note), extra]


def b2(lab: Any, plan: Plan, say: Progress) -> list[Row]:
    """B2: hvlib's added cost per call on test:///, in units of one local libvirtd RPC."""
    from bench import testdriver as td

    cycles = td.Cycles()
    try:
        say(f"B2: {plan.b2_rounds} rounds of {plan.b2_cycles} cycles hvlib / raw / RPCs")
        cycles.hvlib_cycle(plan.b2_cycles)
        cycles.raw_cycle(plan.b2_cycles)
        runs = stats.interleave(
            {
                "hvlib": lambda _i: cycles.hvlib_cycle(plan.b2_cycles),
                "raw": lambda _i: cycles.raw_cycle(plan.b2_cycles),
                "rpc": lambda _i: lab.rpc(plan.b2_cycles * td.B2_CALLS),
            },
            plan.b2_rounds,
        )
        split = cycles.split(plan.b2_cycles * 2)
    finally:
        cycles.close()
    values = stats.added_cost_per_call(runs["hvlib"], runs["raw"], runs["rpc"], td.B2_CALLS)
    row = stats.ratio_row(
        "B2",
        "test:///, same 4 calls from the DomainSpec: hvlib's added cost per call / 1 RPC",
        values,
        Target("<=", 0.5),
    )
    med = {k: stats.median(v) * 1e6 for k, v in runs.items()}
    parts = ", ".join(f"{k} +{v:.0f}" for k, v in split.items())
    note = (
        f"medians per cycle hvlib {med['hvlib']:.0f} us, raw {med['raw']:.0f} us; one RPC "
        f"(raw dom.state() on the sandbox's libvirtd) {med['rpc']:.0f} us; hvlib's added us "
        f"per call: {parts}"
    )
    return [replace(row, note=note)]


def provisioning(
    lab: Any, plan: Plan, say: Progress, restarts: RestartCounter, *, lxc: bool
) -> list[Row]:
    """B4 (LXC, ensure_all) or B5 (QEMU, start_all): a pool of one / the parallel default."""
    from bench import sandboxed as sb
    from hvlib.parallel import DEFAULT_CONNECTIONS, DEFAULT_WORKERS

    key, count = ("B4", plan.b4_containers) if lxc else ("B5", plan.b5_guests)
    pairs = plan.b4_pairs if lxc else plan.b5_pairs
    uri = lab.sandbox.lxc_uri if lxc else lab.sandbox.qemu_uri
    make = sb.ct_spec if lxc else sb.vm_spec
    specs = [make(lab.kit, f"bench-{key.lower()}-{i}") for i in range(count)]
    shape = (DEFAULT_WORKERS, DEFAULT_CONNECTIONS)
    say(f"{key}: {pairs} pairs of {count} {'containers' if lxc else 'VMs'}, {shape} / (1, 1)")

    def run(pool: tuple[int, int]) -> Callable[[int], float]:
        def once(i: int) -> float:
            took = sb.timed_provision(lab, uri, specs, ensure=lxc, pool=pool)
            say(f"{key}: round {i + 1}, workers/connections {pool}: {took:.2f} s")
            return took

        return once

    before, discarded = restarts.count, list[str]()
    runs = stats.interleave(
        {"parallel": run(shape), "serial": run((1, 1))},
        pairs,
        discarded=discarded,
        max_discarded=MAX_DISCARDED,
    )
    what = (
        f"{count} LXC ensured+started: speedup, parallel (ensure_all, {shape[0]} workers, "
        f"{shape[1]} conns) vs a pool of one"
        if lxc
        else f"{count} QEMU defined+started: speedup, parallel (start_all) vs a pool of one"
    )
    row = stats.ratio_row(
        key,
        what,
        stats.ratios(runs["serial"], runs["parallel"]),
        Target(">=", 2.0 if lxc else 1.5),
        unit="x",
    )
    again = f"; hvlib restarted {restarts.count - before} LXC starts" if lxc else ""
    note = (
        f"medians parallel {stats.median(runs['parallel']):.2f} s, pool of one "
        f"{stats.median(runs['serial']):.2f} s{again}{thrown(discarded)}"
    )
    return [replace(row, note=note)]


def b6(lab: Any, plan: Plan, say: Progress, restarts: RestartCounter) -> list[Row]:
    """B6 and its extra row: LXC start, hvlib / raw create()."""
    from bench import sandboxed as sb

    say(f"B6: {plan.b6_pairs} rounds of hvlib start() / raw create() / hvlib without capture")
    before, discarded = restarts.count, list[str]()
    init_known: list[tuple[float, int] | None] = []
    runs = stats.interleave(
        {
            "hvlib": lambda i: sb.hvlib_start(lab, f"bench-b6-{i}", True),
            "raw": lambda i: sb.raw_start(lab, f"bench-b6-{i}", init_known),
            "nocap": lambda i: sb.hvlib_start(lab, f"bench-b6-{i}", False),
        },
        plan.b6_pairs,
        discarded=discarded,
        max_discarded=MAX_DISCARDED,
    )
    main = stats.ratio_row(
        "B6",
        "LXC start in one process: hvlib start() / raw create()",
        stats.ratios(runs["hvlib"], runs["raw"]),
        Target("<=", 1.10),
    )
    med = {k: stats.median(v) for k, v in runs.items()}
    note = (
        f"medians hvlib {_ms(med['hvlib'])}, raw {_ms(med['raw'])}, hvlib without capture "
        f"{_ms(med['nocap'])}; hvlib restarted {restarts.count - before} starts whose init "
        f"libvirt 9.0 never learned (waits {', '.join(f'{w:g}' for w in INIT_WAITS)} s for "
        f"starts 1, 2, 3); after raw create() "
        f"{init_summary(init_known)}{thrown(discarded)}"
    )
    extra = stats.ratio_row(
        "B6+",
        "  hvlib start(capture_console=False) / raw create()",
        stats.ratios(runs["nocap"], runs["raw"]),
        None,
    )
    return [replace(main, note=note), extra]


def b7(lab: Any, plan: Plan, say: Progress) -> list[Row]:
    """B7: libvirt's lifecycle event -> wait_for's return, polling disabled."""
    from bench import sandboxed as sb

    say(f"B7: {plan.b7_samples} starts and stops of a container, a thread in wait_for()")
    delays = sb.event_delays(lab, plan.b7_samples)
    return [
        stats.p95_row(
            "B7",
            "wait_for() with polling disabled: libvirt's event -> the caller's return",
            delays,
            Target("<=", 0.100),
            unit="ms",
            scale=1000,
        )
    ]


def b8(lab: Any, plan: Plan, say: Progress) -> list[Row]:
    """B8 and its extra row: the guest's SSH console line -> wait_ready's return."""
    from bench import sandboxed as sb

    say(f"B8: {plan.b8_samples} boots of the kit's VM on the NAT network, wait_ready(SSH)")
    discarded: list[str] = []
    with sb.ssh_sampler(lab) as sample:
        samples = stats.interleave(
            {"boot": sample}, plan.b8_samples, discarded=discarded, max_discarded=MAX_DISCARDED
        )["boot"]
    main = stats.p95_row(
        "B8",
        "wait_ready(SSH): the guest's 'ssh server started' console line -> return",
        [s.from_ssh_line for s in samples],
        Target("<=", 0.5),
        unit="s",
        scale=1,
    )
    login = stats.median([s.fresh_login for s in samples])
    crng = [s.crng for s in samples if s.crng is not None]
    crng_text = (
        f"the guest kernel's '{sb.CRNG_LINE}' line came a median {stats.median(crng):+.2f} s "
        f"from that moment ({len(crng)} of {len(samples)} boots); "
        if crng
        else ""
    )
    lease = stats.median([s.lease_after_ssh for s in samples])
    # a stage is logged when the probe starts it, i.e. once the one before it passed
    passed = {"tcp": "address", "banner": "TCP connect", "login": "banner", "command": "login"}
    stage = ", ".join(
        f"{label} {stats.median([s.stages[n] for s in samples if n in s.stages]):+.2f}"
        for n, label in passed.items()
        if any(n in s.stages for s in samples)
    )
    note = (
        f"the guest's DHCP lease line came a median {abs(lease):.2f} s "
        f"{'after' if lease >= 0 else 'before'} its SSH line; from "
        f"the later of the two, wait_ready's probe had (median s): {stage}; {crng_text}a second, "
        f"fresh SSH login + 'true' on the ready guest (TCG) takes a median {login:.2f} s"
        f"{thrown(discarded)}"
    )
    extra = stats.p95_row(
        "B8+",
        "  from the later of the SSH line and the guest's DHCP lease line -> return",
        [s.from_reachable for s in samples],
        None,
        unit="s",
        scale=1,
    )
    return [replace(main, note=note), extra]


# -- rows on test:/// --------------------------------------------------------------------


def b3(plan: Plan, say: Progress) -> list[Row]:
    """B3 and its extra row: calls made by list(state=RUNNING), by size."""
    from bench import child
    from bench import testdriver as td

    say("B3: counting the calls of host.domains.list(state=RUNNING)")
    counts = td.run_child("b3")
    total = {int(n): sum(c.values()) for n, c in counts.items()}
    driver = {
        int(n): sum(v for k, v in c.items() if k not in child.CLIENT_SIDE)
        for n, c in counts.items()
    }
    detail = "; ".join(
        f"{n}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for n, c in counts.items()
    )
    row = Row(
        "B3",
        "libvirt calls by domains.list(state=RUNNING), 10 / 100 / 1000 domains",
        " / ".join(str(total[n]) for n in sorted(total)),
        "same for all",
        "-",
        len(total),
        stats.same_count(total),
        f"counted by tests/counting.py's proxy as hvlib.virt._virt.libvirt: {detail}",
    )
    extra = Row(
        "B3+",
        "  of those, calls that reach the driver (not name()/UUIDString() of a handle)",
        " / ".join(str(driver[n]) for n in sorted(driver)),
        "-",
        "-",
        len(driver),
        None,
    )
    return [row, extra]


def b9(plan: Plan, say: Progress) -> list[Row]:
    """B9: peak RSS and second-half growth of a long-running tracking process."""
    from bench import testdriver as td

    say(f"B9: {plan.b9_tracked} tracked domains, {plan.b9_loops} lifecycle loops (subprocess)")
    out = td.run_child("b9", str(plan.b9_loops), str(plan.b9_tracked), str(plan.b9_every))
    rss = [(i, kib * 1024 / MB) for i, kib, _ in out["samples"]]
    blocks = [(i, float(b)) for i, _, b in out["samples"]]
    peak = out["peak_kib"] * 1024 / MB
    grew_blocks, grew_rss = stats.growth(blocks), stats.growth(rss)
    passed = peak <= 50 and grew_blocks <= B9_BLOCK_NOISE
    row = Row(
        "B9",
        f"{plan.b9_tracked} domains + {plan.b9_loops} lifecycles on test:///: peak RSS "
        "above baseline; 2nd-half growth",
        f"{peak:.1f} MB; +{grew_blocks:.0f} blocks, {grew_rss:+.2f} MB RSS",
        f"<= 50 MB; <= {B9_BLOCK_NOISE} blocks",
        "-",
        len(out["samples"]),
        passed,
        f"one process, {out['seconds']:.1f} s; growth = last sample - midpoint sample of "
        f"Python's allocated blocks (exact) and of RSS (moves in allocator steps); "
        f"the host held {out['event_hub_entries']} console captures at the end",
    )
    return [row]


def b10(plan: Plan, say: Progress) -> list[Row]:
    """B10: CPU time of a whole ``python -c`` lifecycle process, hvlib / raw."""
    from bench import testdriver as td

    say(f"B10: {plan.b10_pairs} pairs of python -c processes, hvlib / raw")
    raw_code = td.raw_lifecycle_code()
    runs = stats.interleave(
        {
            "hvlib": lambda _i: td.process_cpu(td.HVLIB_LIFECYCLE),
            "raw": lambda _i: td.process_cpu(raw_code),
        },
        plan.b10_pairs,
    )
    row = stats.ratio_row(
        "B10",
        "python -c, one lifecycle on test:///: process CPU time hvlib / raw",
        stats.ratios(runs["hvlib"], runs["raw"]),
        Target("<=", 1.2),
    )
    note = (
        f"medians hvlib {_ms(stats.median(runs['hvlib']))}, raw "
        f"{_ms(stats.median(runs['raw']))} CPU; {td.import_profile()}"
    )
    return [replace(row, note=note)]


# -- the run -----------------------------------------------------------------------------

ROWS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11")
SANDBOX_ROWS = frozenset({"B1", "B2", "B4", "B5", "B6", "B7", "B8", "B11"})
TARGETS = {
    "B1": "<= 1.05",
    "B2": "<= 0.50",
    "B3": "same for all",
    "B4": ">= 2.00x",
    "B5": ">= 1.50x",
    "B6": "<= 1.10",
    "B7": "<= 100.00 ms",
    "B8": "<= 0.50 s",
    "B9": "<= 50 MB; no growth",
    "B10": "<= 1.20",
    "B11": "-",
}


def measure(key: str, lab: Any, plan: Plan, say: Progress, restarts: RestartCounter) -> list[Row]:
    """The rows of one benchmark."""
    if key == "B1":
        return b1(lab, plan, say)
    if key == "B2":
        return b2(lab, plan, say)
    if key == "B3":
        return b3(plan, say)
    if key in ("B4", "B5"):
        return provisioning(lab, plan, say, restarts, lxc=key == "B4")
    if key == "B6":
        return b6(lab, plan, say, restarts)
    if key == "B7":
        return b7(lab, plan, say)
    if key == "B8":
        return b8(lab, plan, say)
    if key == "B11":
        from bench import load

        return load.rows(lab, say, quick=plan == QUICK)
    return b9(plan, say) if key == "B9" else b10(plan, say)


def run_rows(
    keys: Sequence[str],
    lab: Any,
    lab_error: str,
    plan: Plan,
    say: Progress,
    watch: RunDeadline | None = None,
) -> list[Row]:
    """Measure each row; one that cannot run (or fails) becomes a failed row saying why.
    ``watch`` is told which row runs (it names the row if the run passes its deadline)."""
    restarts = RestartCounter()
    logging.getLogger("hvlib").addHandler(restarts)
    rows: list[Row] = []
    for key in keys:
        if key in SANDBOX_ROWS and lab is None:
            rows.append(stats.missing_row(key, "needs the sandbox", TARGETS[key], lab_error))
            continue
        if watch is not None:
            watch.row(key)
        try:
            rows.extend(measure(key, lab, plan, say, restarts))
        except Exception as e:  # one broken row must not hide the others
            say(f"{key}: failed: {type(e).__name__}: {e}")
            rows.append(stats.missing_row(key, "could not be measured", TARGETS[key], str(e)))
        finally:
            if watch is not None:
                watch.row("")
    return rows


def open_lab(keys: Sequence[str], say: Progress) -> tuple[Any, str]:
    """The sandbox lab if a row needs it: (lab, "") or (None, why it is missing)."""
    if not SANDBOX_ROWS.intersection(keys):
        return None, ""
    if os.geteuid() != 0:
        return None, "not root: the sandboxed libvirtd needs root (run make bench as root)"
    from bench import sandboxed as sb

    say("starting the sandboxed libvirtd (and building the guest kit if needed)")
    try:
        return sb.Lab.open(sb.sandbox_name()), ""
    except Exception as e:
        return None, f"sandbox: {type(e).__name__}: {e}"


def libvirt_version() -> str:
    """libvirt's library version, as "9.0.0"."""
    import libvirt

    v = libvirt.getVersion()
    return f"{v // 1_000_000}.{v // 1000 % 1000}.{v % 1000}"


def report(rows: Sequence[Row], seconds: float, plan: Plan) -> str:
    """The whole printed report: machine, command, the table and its notes, run time."""
    from bench import machine

    quick = " --quick (a smoke run: too few repetitions for figures)" if plan == QUICK else ""
    return "\n".join(
        [
            machine.describe(libvirt_version()),
            f"command: make bench (python -m bench{quick}); medians of interleaved runs "
            "(A B, B A, A B ...), ratios within this run",
            "",
            stats.format_table(rows),
            "",
            f"run time: {seconds:.0f} s",
        ]
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line of ``python -m bench``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help="comma-separated rows to run (default: all)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of every code path (no figures)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help=f"seconds for the whole run; past it the run says which row hung, prints every "
        f"thread's stack and exits {EXIT_HUNG} (default {DEFAULT_DEADLINE:g})",
    )
    args = parser.parse_args(argv)
    if not 0 < args.deadline < 10 * 365 * 86400:
        parser.error(f"--deadline must be a positive number of seconds (got {args.deadline})")
    args.rows = [r.strip().upper() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join(ROWS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks, print the report; 0 if every target was met, else 1."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = QUICK if args.quick else Plan()
    say = Progress()
    watch = RunDeadline(args.deadline, lambda: say.last).start()
    try:
        lab, why = open_lab(args.rows, say)
        try:
            rows = run_rows(args.rows, lab, why, plan, say, watch)
        finally:
            if lab is not None:
                say("stopping the sandbox")
                lab.close()
    finally:
        watch.stop()
    print(report(rows, time.monotonic() - say.started, plan), flush=True)
    return 1 if any(r.passed is False for r in rows) else 0
