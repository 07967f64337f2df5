"""The benchmark's test:/// rows on a small scale: B3's call count, B9's process, B2's cycles,
B10's process CPU time (each in its own process where the row needs one)."""

from __future__ import annotations

import pytest

from bench import child
from bench.testdriver import (
    HVLIB_LIFECYCLE,
    Cycles,
    process_cpu,
    raw_lifecycle_code,
    run_child,
)


@pytest.fixture(scope="module")
def b3_counts() -> dict[int, dict[str, int]]:
    return {int(n): c for n, c in run_child("b3").items()}


def test_b3_counts_every_size_with_the_proxy(b3_counts: dict[int, dict[str, int]]) -> None:
    assert sorted(b3_counts) == list(child.B3_SIZES)
    for counts in b3_counts.values():
        assert counts.get("listAllDomains") == 1, counts
        assert "virEventRunDefaultImpl" not in counts, "the event thread is not counted"


def test_b3_calls_reaching_the_driver_are_constant(b3_counts: dict[int, dict[str, int]]) -> None:
    driver = {
        n: sum(v for k, v in c.items() if k not in child.CLIENT_SIDE) for n, c in b3_counts.items()
    }
    assert set(driver.values()) == {1}, driver


def test_b3_call_count_is_constant(b3_counts: dict[int, dict[str, int]]) -> None:
    totals = {n: sum(c.values()) for n, c in b3_counts.items()}
    assert len(set(totals.values())) == 1, totals


def test_b9_child_reports_peak_and_samples() -> None:
    out = run_child("b9", "200", "20", "100")
    assert [s[0] for s in out["samples"]] == [0, 100, 200]
    assert 0 < out["peak_kib"] < 50_000
    assert out["tracked"] == 20


def test_b2_cycles_time_both_sides_and_split_by_call() -> None:
    cycles = Cycles()
    try:
        assert cycles.hvlib_cycle(3) > 0
        assert cycles.raw_cycle(3) > 0
        split = cycles.split(2)
    finally:
        cycles.close()
    assert list(split) == ["define", "(of which rendering)", "start", "destroy", "undefine"]
    assert split["(of which rendering)"] > 0


def test_b10_processes_run_and_report_cpu_time() -> None:
    assert process_cpu(HVLIB_LIFECYCLE) > 0
    assert process_cpu(raw_lifecycle_code()) > 0
    with pytest.raises(RuntimeError, match="exited 3"):
        process_cpu("raise SystemExit(3)")
