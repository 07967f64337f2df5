"""Console waits say the truth about why there is nothing to wait on (item 12a): on
libvirt's test driver, a domain hvlib itself started has no console capture because that
driver has no console streams, not because it was "not started with hvlib"."""

from __future__ import annotations

import pytest

from hvlib import DomainSpec, InvalidState, Ready, State, Unsupported, VirtType
from hvlib.guest.ready import missing_capture
from hvlib.virt.host import Host


def test_a_console_wait_after_an_hvlib_start_on_the_test_driver_names_the_driver(
    host: Host, unique: str
) -> None:
    dom = host.domains.define(
        DomainSpec(name=unique, virt=VirtType.QEMU, memory_mib=64, kernel="/k")
    )
    dom.start()
    try:
        with pytest.raises(Unsupported) as caught:
            dom.wait_for_console("login:", timeout=1)
        message = str(caught.value)
        assert "test driver has no console streams" in message
        assert "start it with hvlib" not in message and caught.value.name == unique
        with pytest.raises(Unsupported, match="test driver has no console streams"):
            dom.wait_ready(timeout=1, probe=Ready.CONSOLE("login:"))
    finally:
        dom.destroy()
        dom.undefine()


def test_elsewhere_the_message_says_how_hvlib_captures_a_console() -> None:
    err = missing_capture("web-1", test_driver=False, state=State.RUNNING)
    assert isinstance(err, InvalidState) and err.state is State.RUNNING
    assert "captures a console from a start made through hvlib in this process" in str(err)
