"""The benchmark arithmetic (bench.stats) and report parsing, checked on known numbers."""

from __future__ import annotations

import pytest

from bench import machine, stats
from bench.run import QUICK, Progress, parse_args, report, run_rows
from bench.sandboxed import LineWatcher
from bench.stats import Row, Target
from bench.testdriver import foreign_imports, parse_importtime


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 25, 1.75),
        ([1, 2, 3, 4], 95, 3.85),
        ([4, 1, 3, 2], 100, 4),
        ([7], 95, 7),
        ([3, 1, 2], 50, 2),
    ],
)
def test_percentile_interpolates_like_numpy(values: list[float], p: float, expected: float) -> None:
    assert stats.percentile(values, p) == pytest.approx(expected)


def test_median_and_iqr() -> None:
    assert stats.median([5, 1, 3]) == 3
    assert stats.median([1, 2, 3, 10]) == 2.5
    assert stats.iqr([1, 2, 3, 4, 5]) == (2, 4)


def test_percentile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        stats.median([])
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_ratios_pair_round_i_of_a_with_round_i_of_b() -> None:
    assert stats.ratios([2, 3, 9], [1, 2, 3]) == [2, 1.5, 3]
    with pytest.raises(ValueError):
        stats.ratios([1, 2], [1])
    with pytest.raises(ValueError):
        stats.ratios([1], [0])


def test_added_cost_per_call_is_per_call_and_in_rpcs_of_the_same_round() -> None:
    # round 0: (10 - 6) / 4 calls = 1.0 per call, RPC 1.0 -> 1.0
    # round 1: (12 - 8) / 4 calls = 1.0 per call, RPC 2.0 -> 0.5
    assert stats.added_cost_per_call([10, 12], [6, 8], [1, 2], 4) == [1.0, 0.5]
    with pytest.raises(ValueError):
        stats.added_cost_per_call([1], [1], [1, 1], 4)
    with pytest.raises(ValueError):
        stats.added_cost_per_call([1], [1], [1], 0)


def test_interleave_runs_a_b_then_b_a() -> None:
    order: list[str] = []

    def runner(tag: str, value: float):  # type: ignore[no-untyped-def]
        def run(i: int) -> float:
            order.append(f"{tag}{i}")
            return value + i

        return run

    out = stats.interleave({"a": runner("a", 10), "b": runner("b", 20)}, 3)
    assert order == ["a0", "b0", "b1", "a1", "a2", "b2"]
    assert out == {"a": [10, 11, 12], "b": [20, 21, 22]}


def test_interleave_throws_away_a_failed_round_whole_and_runs_it_again() -> None:
    calls = {"a": 0, "b": 0}

    def a(i: int) -> float:
        calls["a"] += 1
        return float(i)

    def b(i: int) -> float:
        calls["b"] += 1
        if calls["b"] == 2:  # the second round's B (run first in that round) fails once
            raise RuntimeError("flaky")
        return 10.0 + i

    discarded: list[str] = []
    out = stats.interleave({"a": a, "b": b}, 3, discarded=discarded, max_discarded=1)
    assert out == {"a": [0, 1, 2], "b": [10, 11, 12]}, "no figure of the failed round kept"
    assert discarded == ["RuntimeError: flaky"]
    assert calls == {"a": 3, "b": 4}, "round 1 failed before its A ran"


def test_interleave_gives_up_past_the_allowed_failures() -> None:
    def bad(_i: int) -> float:
        raise RuntimeError("always")

    discarded: list[str] = []
    with pytest.raises(RuntimeError, match="always"):
        stats.interleave({"x": bad}, 2, discarded=discarded, max_discarded=2)
    assert len(discarded) == 2
    with pytest.raises(RuntimeError):
        stats.interleave({"x": bad}, 1)


def test_same_count_and_growth() -> None:
    assert stats.same_count({10: 1, 100: 1, 1000: 1})
    assert not stats.same_count({10: 21, 100: 201, 1000: 2001})
    samples = [(0, 0.0), (500, 5.0), (1000, 10.0), (1500, 10.0), (2000, 11.0)]
    assert stats.growth(samples) == 1.0  # last (2000) minus the midpoint sample (1000)
    assert stats.growth([(0, 3.0), (10, 3.0)]) == 0.0
    with pytest.raises(ValueError):
        stats.growth([(0, 1.0)])


def test_targets_include_their_limit() -> None:
    assert Target("<=", 1.05).met(1.05)
    assert not Target("<=", 1.05).met(1.0501)
    assert Target(">=", 2).met(2)
    assert not Target(">=", 2).met(1.99)
    with pytest.raises(ValueError):
        Target("<", 1)


def test_ratio_row_judges_the_median_not_the_best_run() -> None:
    row = stats.ratio_row("B1", "x", [0.9, 1.2, 1.1], Target("<=", 1.05))
    assert row.figure == "1.10"
    assert row.spread == "IQR 1.00-1.15"
    assert (row.n, row.passed, row.verdict) == (3, False, "FAIL")
    assert stats.ratio_row("B1+", "x", [1.0], None).verdict == "info"


def test_p95_row_scales_for_display_and_judges_unscaled() -> None:
    delays = [0.001 * i for i in range(1, 21)]  # 1 .. 20 ms
    row = stats.p95_row("B7", "x", delays, Target("<=", 0.100), unit="ms", scale=1000)
    assert row.figure == "p95 19.05 ms"
    assert row.target == "<= 100.00 ms"
    assert row.passed is True
    assert row.spread == "median 10.50, max 20.00"


def test_table_is_aligned_markdown_with_notes_below() -> None:
    rows = [
        Row("B1", "first", "1.00", "<= 1.05", "IQR 1-1", 3, True, "a note"),
        Row("B10", "second row", "3.30", "<= 1.20", "-", 15, False),
        stats.missing_row("B8", "needs the sandbox", "<= 0.50 s", "not root"),
    ]
    text = stats.format_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| row ")
    assert len({len(line) for line in lines[:5]}) == 1, "every table line has one width"
    assert "| PASS " in lines[2] and "| FAIL " in lines[3] and "| FAIL " in lines[4]
    assert lines[-2:] == ["B1: a note", "B8: not root"]


def test_cpu_model_and_nproc() -> None:
    text = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n"
    assert machine.cpu_model(text) == "Intel(R) Xeon(R) Processor"
    assert machine.cpu_model("") == "unknown"
    assert machine.nproc() >= 1


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |     lxml.etree
import time:        50 |        150 |   hvlib.model.render
import time:       300 |        300 |   libvirt
import time:        20 |         20 |     typing
import time:        10 |         30 |   tenacity
import time:        40 |        520 | hvlib.virt.host
"""


def test_importtime_is_parsed_and_imports_attributed_to_their_hvlib_parent() -> None:
    entries = parse_importtime(IMPORTTIME)
    assert [(e.name, e.depth) for e in entries][:3] == [
        ("lxml.etree", 2),
        ("hvlib.model.render", 1),
        ("libvirt", 1),
    ]
    assert foreign_imports(entries) == {"lxml.etree": 100, "libvirt": 300, "tenacity": 30}


def test_line_watcher_finds_a_line_split_across_chunks() -> None:
    watch = LineWatcher(["hvlib-guest: ssh server started", "hvlib-guest: dhcp lease: "])
    watch(b"boot...\r\nhvlib-guest: ssh ser")
    assert watch.seen == {}
    watch(b"ver started\r\n")
    assert list(watch.seen) == ["hvlib-guest: ssh server started"]
    first = watch.seen["hvlib-guest: ssh server started"]
    watch(b"hvlib-guest: dhcp lease: eth0 192.0.2.9\r\nhvlib-guest: ssh server started\r\n")
    assert watch.seen["hvlib-guest: ssh server started"] == first, "the first arrival counts"


def test_rows_without_the_sandbox_fail_and_say_why() -> None:
    rows = run_rows(["B1", "B8"], None, "not root", QUICK, Progress())
    assert [(r.key, r.verdict, r.note) for r in rows] == [
        ("B1", "FAIL", "not root"),
        ("B8", "FAIL", "not root"),
    ]
    text = report(rows, 1.0, QUICK)
    assert text.splitlines()[0].startswith("machine: nproc ")
    assert "--quick" in text and "run time: 1 s" in text


def test_command_line() -> None:
    assert parse_args(["--rows", "b3,B10"]).rows == ["B3", "B10"]
    with pytest.raises(SystemExit):
        parse_args(["--rows", "B12"])
