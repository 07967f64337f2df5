"""Every option of hvlib.connect (and of Host, HostPool and Fleet, which take the same ones)
is checked before anything is opened: a wrong type or value is a SpecError naming the
option, never a later AttributeError, OverflowError or a call that always times out.
Properties over the class of bad values (hypothesis); the good values still connect."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hvlib
from hvlib.fleet import Fleet
from hvlib.parallel import HostPool, ensure_all
from hvlib.virt.host import ConnectOptions, Host

URI = "test:///default"

NOT_NUMBERS = st.sampled_from(["5", b"5", None, [], {}, object(), True, False, 1j])
BAD_SECONDS = st.one_of(
    st.floats(max_value=0.0),  # zero, negative, -inf
    st.sampled_from([math.nan, -math.nan, math.inf, 1e300, 10**400, -1, 0]),
    st.floats(min_value=3.2e8, allow_infinity=True),  # past ten years, inf
)
BAD_OPTIONS: dict[str, st.SearchStrategy[object]] = {
    "netns": st.one_of(
        st.sampled_from(["", ".", "..", "a/b", "../etc", "x\x00y", "x\ny", "n" * 256]),
        st.sampled_from([42, b"ns", ["ns"], True]),
    ),
    "poll_interval": st.one_of(BAD_SECONDS, NOT_NUMBERS.filter(lambda v: v is not None)),
    "readonly": st.sampled_from(["yes", "", 1, 0, None, [], "True"]),
    "ssh": st.sampled_from([42, "root", {"user": "root"}, True, Path("/k")]),
    "reconnect_timeout": st.one_of(
        st.floats(max_value=-1e-9), st.sampled_from([math.nan, math.inf, 1e300]), NOT_NUMBERS
    ),
    "call_timeout": st.one_of(BAD_SECONDS, NOT_NUMBERS.filter(lambda v: v is not None)),
    "allow_uri_options": st.sampled_from(["command", b"command", 42, [1], [None], None]),
    "allow_emulation": st.sampled_from(["yes", 1, 0, [], "False"]),
    "known_hosts": st.sampled_from([42, b"/kh", ["/kh"], True]),
    "keyfile": st.sampled_from([42, b"/k", {}, 1.5]),
    "host_ssh": st.sampled_from([42, "root@h", {"key": "/k"}, True]),
}


def _openers() -> dict[str, Callable[[dict[str, Any]], object]]:
    spec = hvlib.DomainSpec(name="never", virt=hvlib.VirtType.QEMU, kernel="/boot/vmlinuz")
    return {
        "hvlib.connect": lambda kw: hvlib.connect(URI, **kw),
        "HostPool": lambda kw: HostPool(URI, **kw),
        "Fleet": lambda kw: Fleet([URI], **kw),
        "ensure_all": lambda kw: ensure_all(URI, [spec], connect_kw=kw),  # type: ignore[arg-type]
    }


PINS = ("known_hosts", "keyfile", "host_ssh")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(BAD_OPTIONS)), st.sampled_from(list(_openers())), st.data())
def test_a_bad_option_is_a_spec_error_naming_it(
    option: str, opener: str, data: st.DataObject
) -> None:
    value = data.draw(BAD_OPTIONS[option], label=option)
    with pytest.raises(hvlib.SpecError) as info:
        _openers()[opener]({option: value})
    assert info.value.field == option


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([o for o in BAD_OPTIONS if o not in PINS]), st.data())
def test_host_checks_the_same_options(option: str, data: st.DataObject) -> None:
    value = data.draw(BAD_OPTIONS[option], label=option)
    with pytest.raises(hvlib.SpecError) as info:
        Host(URI, **{option: value})
    assert info.value.field == option


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=1e-3, max_value=3e8) | st.integers(1, 10**8),
    st.floats(min_value=0.0, max_value=3e8),
    st.none() | st.floats(min_value=1e-3, max_value=3e8),
)
def test_good_values_connect(call_timeout: float, reconnect: float, poll: float | None) -> None:
    with hvlib.connect(
        URI, call_timeout=call_timeout, reconnect_timeout=reconnect, poll_interval=poll
    ) as host:
        assert host.domains.get("test").name == "test"


def test_the_examples_of_the_issue() -> None:
    for kw in ({"call_timeout": -1}, {"call_timeout": math.nan}, {"call_timeout": math.inf}):
        with pytest.raises(hvlib.SpecError, match="call_timeout"):
            hvlib.connect(URI, **kw)
    with pytest.raises(hvlib.SpecError, match=r"^ssh: must be an hvlib\.SshConfig"):
        hvlib.connect(URI, ssh=42)  # type: ignore[arg-type]


def test_unknown_connect_kw_keys_are_refused() -> None:
    spec = hvlib.DomainSpec(name="never", virt=hvlib.VirtType.QEMU, kernel="/boot/vmlinuz")
    with pytest.raises(hvlib.SpecError, match="'readnly' is not an option") as info:
        ensure_all(URI, [spec], connect_kw={"readnly": True})  # type: ignore[typeddict-unknown-key]
    assert info.value.field == "connect_kw"


def _params(fn: Callable[..., object], drop: tuple[str, ...] = ()) -> dict[str, object]:
    found = inspect.signature(fn).parameters.items()
    return {n: p.default for n, p in found if n not in ("self", "uri", "uris", *drop)}


def test_every_entry_point_takes_the_same_connect_options() -> None:
    """One list of options, spelled out in each signature (so a type checker catches a typo):
    a change to one that is not made to all fails here."""
    options = _params(hvlib.virt.host.connect)
    assert _params(hvlib.connect) == options
    assert set(ConnectOptions.__annotations__) == set(options)
    assert _params(HostPool, drop=("connections",)) == options
    fleet = _params(Fleet, drop=("timeout",))
    assert fleet == options | {"reconnect_timeout": hvlib.fleet.DEFAULT_RECONNECT_TIMEOUT}
    host = _params(Host)
    assert host == {k: v for k, v in options.items() if k not in PINS}
