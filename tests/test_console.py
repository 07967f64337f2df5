"""ConsoleCapture's line matching, fed bytes directly (no libvirt stream is needed for it)."""

from __future__ import annotations

import pytest

from hvlib.errors import WaitTimeout
from hvlib.virt.console import ConsoleCapture

# What a Xen HVM guest's serial console held on the nested Xen host (SeaBIOS, then the kit).
SEABIOS_THEN_READY = (
    b"\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
    b"Booting from ROM...\r\n\x1bc\x1b[?7l\x1b[2Jhvlib-guest: ready\r\n"
)


def fed(data: bytes) -> ConsoleCapture:
    capture = ConsoleCapture("t")
    capture._append(data)
    return capture


def test_anchored_pattern_matches_after_screen_clears() -> None:
    capture = fed(SEABIOS_THEN_READY)
    assert capture.wait_for(r"^hvlib-guest: ready$", timeout=0) == "hvlib-guest: ready"
    assert capture.wait_for(r"^SeaBIOS \(version", timeout=0).startswith("SeaBIOS")


def test_raw_bytes_are_kept() -> None:
    assert fed(SEABIOS_THEN_READY).data == SEABIOS_THEN_READY


@pytest.mark.parametrize(
    "noise", [b"\x1b[1;32m", b"\x1b[0m", b"\x1b(B", b"\x1b7", b"\x1b[?25h", b"\x1b]"]
)
def test_escape_sequences_do_not_split_or_pollute_lines(noise: bytes) -> None:
    capture = fed(b"log" + noise + b"in: \r\n")
    assert capture.wait_for(r"^login: $", timeout=0) == "login: "


def test_plain_text_is_untouched_and_misses_still_time_out() -> None:
    capture = fed(b"a [bracket] and ~tilde~\n")
    assert capture.wait_for(r"^a \[bracket\] and ~tilde~$", timeout=0)
    with pytest.raises(WaitTimeout, match=r"last line: 'a \[bracket\] and ~tilde~'"):
        capture.wait_for(r"^ready$", timeout=0.05)
    with pytest.raises(WaitTimeout, match=r"last line: '\(nothing printed\)'"):
        fed(b"\x1bc\r\n").wait_for(r"^ready$", timeout=0.01)
