"""Every numeric option of every ``hvlib`` command is one validated type (item 8, CLI part):
inf, -inf, nan, a negative, a huge value or a non-number is bad input, exit 2 with one line
on stderr naming the option, before the command does anything. The options are found by
walking the click command tree, so an option added later is covered (and one declared with
click's own ``float``/``int`` types, or a number-like name without hvlib's type, fails here).
Runs in-process through click's runner; no host is contacted for a bad value."""

from __future__ import annotations

import math
import re

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from hvlib import cli
from hvlib.cli._base import SECONDS_MAX, Number

NUMBER_WORDS = re.compile(r"timeout|interval|wait|count|size|workers|jobs|retries|seconds|mib")
"""Option names that say a number: such an option must use hvlib's Number type."""


def numeric_options() -> list[tuple[str, click.Command, click.Option]]:
    """(command name, command, option) for every option of every command whose type is a
    number (hvlib's, or click's own: the latter fails test_every_numeric_option_is_validated)."""
    found = []
    for name, command in sorted(cli.cli.commands.items()):
        for param in command.params:
            if not isinstance(param, click.Option) or param.is_flag:
                continue
            numeric = isinstance(param.type, Number | click.types._NumberParamTypeBase)
            if numeric or NUMBER_WORDS.search(param.name or ""):
                found.append((name, command, param))
    return found


OPTIONS = numeric_options()
IDS = [f"{name} {opt.opts[0]}" for name, _, opt in OPTIONS]


def test_the_tree_has_numeric_options() -> None:
    assert {"up --timeout", "down --timeout", "exec --wait", "console --timeout"} <= set(IDS)


@pytest.mark.parametrize(("name", "command", "option"), OPTIONS, ids=IDS)
def test_every_numeric_option_is_validated(
    name: str, command: click.Command, option: click.Option
) -> None:
    assert isinstance(option.type, Number), f"{name} {option.opts[0]}: use hvlib's Number type"
    assert option.type.high <= SECONDS_MAX or option.type.unit != "seconds"


def invoke(name: str, command: click.Command, option: click.Option, value: str) -> tuple[int, str]:
    """``hvlib NAME OPTION=VALUE`` with a placeholder for each argument, in this process."""
    args = [name, f"{option.opts[-1]}={value}"]
    if any(p.name == "uris" for p in command.params):
        args += ["--uri", "test:///default"]
    for param in command.params:
        if isinstance(param, click.Argument):
            args.append("x")
    res = CliRunner().invoke(cli.cli, args)
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stderr


BAD_WORDS = st.sampled_from(
    [
        "inf", "-inf", "+inf", "Infinity", "nan", "NaN", "-nan", "1e400", "-1e400", "-1",
        "-0.001", "-5", str(SECONDS_MAX + 1), "9" * 40, "1e30", "", " ", "abc", "5s", "0x10",
        "1,5", "--", "1e", "five", "\x00", "5\x00", "true",
    ]
)  # fmt: skip


def number_type(option: click.Option) -> Number:
    assert isinstance(option.type, Number)
    return option.type


def out_of_range(kind: Number) -> st.SearchStrategy[str]:
    """Numbers outside ``kind``'s range (inf and nan included), non-numbers, known words."""

    def outside(x: float) -> bool:
        too_low = x < kind.low or (x == kind.low and kind.above_low)
        return not math.isfinite(x) or too_low or x > kind.high

    numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers()
    bad = numbers.filter(outside)
    words = st.text(max_size=12).filter(_not_a_number)
    return bad.map(repr) | bad.map(str) | words | BAD_WORDS


def in_range(kind: Number) -> st.SearchStrategy[float]:
    if kind.kind is int:
        return st.integers(int(kind.low) + int(kind.above_low), int(kind.high))
    values = st.floats(min_value=kind.low, max_value=kind.high, allow_nan=False)
    return values.filter(lambda x: x != kind.low or not kind.above_low)


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


@pytest.mark.parametrize(("name", "command", "option"), OPTIONS, ids=IDS)
def test_bad_values_exit_2_with_one_line(
    name: str, command: click.Command, option: click.Option
) -> None:
    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(value=out_of_range(number_type(option)))
    def check(value: str) -> None:
        status, stderr = invoke(name, command, option, value)
        assert status == 2, (value, stderr)
        lines = stderr.splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"hvlib: Invalid value for '{option.opts[-1]}': "), lines

    check()


@pytest.mark.parametrize(("name", "command", "option"), OPTIONS, ids=IDS)
def test_values_in_range_are_taken(name: str, command: click.Command, option: click.Option) -> None:
    kind = number_type(option)

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(value=in_range(kind))
    def check(value: float) -> None:
        assert kind.convert(repr(value), option, None) == value
        assert kind.convert(value, option, None) == value

    check()
