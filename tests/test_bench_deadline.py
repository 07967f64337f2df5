"""make bench's overall deadline: a run that passes it names the row that was running, prints
every thread's stack and exits 3."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.deadline import EXIT_HUNG, RunDeadline

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_past_its_deadline_names_the_row_and_exits_3() -> None:
    exits: list[int] = []
    with tempfile.TemporaryFile("w+") as out:
        watch = RunDeadline(0.2, lambda: "[  1.0s] B6: round 3", out=out, exit=exits.append)
        watch.start()
        watch.row("B6")
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
        watch.stop()
        out.seek(0)
        text = out.read()
    assert exits == [EXIT_HUNG]
    assert "in row B6" in text and "B6: round 3" in text, text
    assert "test_a_run_past_its_deadline" in text, "every thread's stack is printed"


def test_a_run_in_time_is_left_alone() -> None:
    exits: list[int] = []
    watch = RunDeadline(0.3, lambda: "", exit=exits.append).start()
    watch.row("B1")
    watch.stop()
    time.sleep(0.5)
    assert exits == []


def test_python_m_bench_says_which_row_hung() -> None:
    """A real run given less time than its row needs (B9 --quick takes seconds)."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--rows", "B9", "--deadline", "0.5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == EXIT_HUNG, (proc.returncode, proc.stderr[-2000:])
    assert "the run passed its deadline of 0.5 s in row B9" in proc.stderr, proc.stderr[-2000:]
