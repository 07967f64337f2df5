"""Remote URIs: options that make libvirt run commands or skip host-key checks are refused
unless explicitly allowed."""

from __future__ import annotations

import pytest

import hvlib
from hvlib.model.uri import check_uri, is_remote


@pytest.mark.parametrize(
    "uri",
    [
        "qemu+ssh://root@h/system?command=/bin/evil",
        "qemu+ssh://root@h/system?netcat=/tmp/nc",
        "qemu+tls://h/system?no_verify=1",
        "qemu+libssh://root@h/system?known_hosts_verify=ignore",
        "qemu+ssh://root@h/system?proxy=native",
        "qemu+ssh://root@h/system?known_hosts=/root/.ssh/known_hosts",
    ],
)
def test_risky_uris_are_refused_before_connecting(uri: str) -> None:
    with pytest.raises(hvlib.SpecError) as info:
        hvlib.connect(uri)
    assert info.value.field == "uri"


def test_refusal_names_the_option_and_the_opt_in() -> None:
    with pytest.raises(hvlib.SpecError, match=r"command=.*allow_uri_options=\['command'\]"):
        check_uri("qemu+ssh://h/system?command=x")


def test_explicitly_allowed_options_pass() -> None:
    uri = "qemu+ssh://h/system?command=/usr/bin/ssh"
    assert check_uri(uri, allow=["command"]) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "test:///default",
        "qemu+libssh://root@h:2222/system?keyfile=/k&known_hosts=/kh&sshauth=privkey",
        "qemu+tls://h/system?no_verify=0",
        "xen+tcp://127.0.0.1:16509/system",
    ],
)
def test_safe_uris_pass(uri: str) -> None:
    assert check_uri(uri) == uri


def test_is_remote() -> None:
    assert is_remote("qemu+ssh://h/system") and is_remote("qemu://h/system")
    assert not is_remote("qemu:///system") and not is_remote("test:///default")
