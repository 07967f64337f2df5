"""Pure arithmetic of the benchmarks: medians, percentiles, spreads, ratios, verdicts, the table.

Nothing here touches libvirt or the clock: every function takes numbers and returns numbers
or text, so ``tests/test_bench_stats.py`` checks them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between the closest ranks
    (numpy's default method).

    Raises:
        ValueError: ``values`` is empty or ``p`` is outside 0..100.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median (the mean of the two middle values for an even count).

    Raises:
        ValueError: ``values`` is empty.
    """
    return percentile(values, 50)


def iqr(values: Sequence[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles: the spread reported next to a median.

    Raises:
        ValueError: ``values`` is empty.
    """
    return percentile(values, 25), percentile(values, 75)


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Pairwise ``a / b`` of two interleaved series (run i of A with run i of B).

    Raises:
        ValueError: the series differ in length or a denominator is not positive.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} runs of A but {len(denominators)} of B")
    if any(b <= 0 for b in denominators):
        raise ValueError("a denominator is not positive")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def added_cost_per_call(
    hvlib_cycle: Sequence[float], raw_cycle: Sequence[float], rpc: Sequence[float], calls: int
) -> list[float]:
    """Per round: hvlib's added time per libvirt call, ``(hvlib - raw) / calls``, as a
    multiple of one RPC measured in the same round.

    Raises:
        ValueError: the series differ in length, ``calls`` < 1 or an RPC time is not positive.
    """
    if calls < 1:
        raise ValueError("calls must be at least 1")
    if not len(hvlib_cycle) == len(raw_cycle) == len(rpc):
        raise ValueError("the three series must have one value per round")
    added = [(h - r) / calls for h, r in zip(hvlib_cycle, raw_cycle, strict=True)]
    return ratios(added, rpc)


def interleave(
    runners: Mapping[str, Callable[[int], T]],
    rounds: int,
    *,
    discarded: list[str] | None = None,
    max_discarded: int = 0,
) -> dict[str, list[T]]:
    """Run each runner once per round, interleaved, the order flipped every other round
    (A B, B A, A B ...: neither side always runs right after the other's cleanup);
    ``runner(i)`` returns the figure of round ``i``. Returns each runner's figures in
    round order.

    A round in which a runner raises is thrown away whole and run again, up to
    ``max_discarded`` times in all; each such failure is appended to ``discarded``.

    Raises:
        Exception: what a runner raised once ``max_discarded`` rounds were thrown away.
    """
    out: dict[str, list[T]] = {key: [] for key in runners}
    thrown: list[str] = [] if discarded is None else discarded
    start = len(thrown)
    i = 0
    while i < rounds:
        order = list(runners.items())
        try:
            figures = {key: run(i) for key, run in (order if i % 2 == 0 else order[::-1])}
        except Exception as e:
            if len(thrown) - start >= max_discarded:
                raise
            thrown.append(f"{type(e).__name__}: {e}")
            continue
        for key, value in figures.items():
            out[key].append(value)
        i += 1
    return out


def same_count(counts: Mapping[int, int]) -> bool:
    """True when every size was served with the same number of calls (B3)."""
    return len(set(counts.values())) == 1


def growth(samples: Sequence[tuple[int, float]]) -> float:
    """Growth over the second half of a run: the last sample minus the sample at (or just
    before) the midpoint. ``samples`` are (loop index, value) in loop order.

    Raises:
        ValueError: fewer than two samples.
    """
    if len(samples) < 2:
        raise ValueError("growth needs at least two samples")
    last_index = samples[-1][0]
    mid = [v for i, v in samples if i <= last_index / 2]
    return samples[-1][1] - (mid[-1] if mid else samples[0][1])


@dataclass(frozen=True)
class Target:
    """A pass condition: ``value OP limit`` (``<=`` or ``>=``)."""

    op: str
    limit: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise ValueError(f"unknown comparison {self.op!r}")

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass(frozen=True)
class Row:
    """One line of the table. ``passed`` None: an extra row without a target of its own."""

    key: str
    what: str
    figure: str
    target: str
    spread: str
    n: int
    passed: bool | None
    note: str = ""

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or ``info`` for extra rows; ``n/a`` when it could not run."""
        if self.passed is None:
            return "n/a" if self.figure == "-" else "info"
        return "PASS" if self.passed else "FAIL"


def fmt(value: float, digits: int = 2) -> str:
    """A figure with ``digits`` decimals."""
    return f"{value:.{digits}f}"


def ratio_row(
    key: str, what: str, values: Sequence[float], target: Target | None, *, unit: str = ""
) -> Row:
    """A row whose figure is the median of per-round values, spread their IQR."""
    mid = median(values)
    lo, hi = iqr(values)
    return Row(
        key=key,
        what=what,
        figure=f"{fmt(mid)}{unit}",
        target=f"{target.op} {fmt(target.limit)}{unit}" if target else "-",
        spread=f"IQR {fmt(lo)}-{fmt(hi)}",
        n=len(values),
        passed=target.met(mid) if target else None,
    )


def p95_row(
    key: str, what: str, values: Sequence[float], target: Target | None, *, unit: str, scale: float
) -> Row:
    """A row whose figure is the 95th percentile of ``values`` (shown times ``scale``)."""
    p95 = percentile(values, 95)
    return Row(
        key=key,
        what=what,
        figure=f"p95 {fmt(p95 * scale)} {unit}",
        target=f"{target.op} {fmt(target.limit * scale)} {unit}" if target else "-",
        spread=f"median {fmt(median(values) * scale)}, max {fmt(max(values) * scale)}",
        n=len(values),
        passed=target.met(p95) if target else None,
    )


def missing_row(key: str, what: str, target: str, reason: str) -> Row:
    """A row that could not be measured (counted as failed when it has a target)."""
    return Row(key, what, "-", target, "-", 0, False if target != "-" else None, reason)


COLUMNS = ("row", "figure", "measured", "target", "spread", "n", "result")


def format_table(rows: Sequence[Row]) -> str:
    """The benchmark table as aligned plain text (also valid Markdown), notes below it."""
    cells = [list(COLUMNS)]
    for r in rows:
        cells.append([r.key, r.what, r.figure, r.target, r.spread, str(r.n), r.verdict])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(c) for c in cells[1:]]
    notes = [f"{r.key}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", *notes] if notes else []))
