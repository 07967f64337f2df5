"""The benchmark run's overall deadline: an unattended ``make bench`` ends, saying which row hung.

hvlib's own calls are bounded (:mod:`hvlib.virt.deadline`), but the raw libvirt-python baselines
are not, and neither is anything a row waits on by itself. When the run passes its deadline
this thread prints the row that was running (and for how long), the run's last progress
line and every thread's stack, then ends the process with :data:`EXIT_HUNG`: nothing in a
hung process can be trusted to return. The sandbox's watcher then tears the sandbox down (it
does so whenever its owner dies).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

EXIT_HUNG = 3
"""Exit status of a run that passed its deadline (1 is a missed target)."""
DEFAULT_DEADLINE = 1800.0
"""Seconds for a whole run: the last full run took 255 s (README), so this is ~7 times that."""


class RunDeadline:
    """Watches one run; tell it which row is running with :meth:`row`."""

    def __init__(
        self,
        seconds: float,
        last_line: Callable[[], str],
        *,
        out: TextIO | None = None,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.seconds = seconds
        self._last_line = last_line
        self._out = out
        self._exit = exit
        self._row = ""
        self._row_started = time.monotonic()
        self._started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-deadline", daemon=True)

    def start(self) -> RunDeadline:
        self._thread.start()
        return self

    def row(self, key: str) -> None:
        """``key`` (e.g. "B6") runs from now on ("" between rows)."""
        self._row, self._row_started = key, time.monotonic()

    def stop(self) -> None:
        """The run is over in time."""
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def message(self) -> str:
        """What the run was doing, for the report of a hung run."""
        now = time.monotonic()
        where = (
            f"in row {self._row} (running for {now - self._row_started:.0f} s)"
            if self._row
            else "outside the rows (starting or stopping the sandbox)"
        )
        return (
            f"make bench: the run passed its deadline of {self.seconds:g} s {where}; its last "
            f"progress line: {self._last_line() or '(none)'!r}. Every thread's stack follows; "
            f"the process ends with status {EXIT_HUNG}."
        )

    def _watch(self) -> None:
        if self._done.wait(self.seconds):
            return
        out = self._out or sys.stderr
        print(self.message(), file=out, flush=True)
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.flush()
        self._exit(EXIT_HUNG)
