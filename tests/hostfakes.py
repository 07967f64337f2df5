"""A stand-in for a real QEMU host that answers from the capabilities captured on one
(tests/fixtures/domcaps/, written by scripts/capture-domcaps.py): domain capabilities per virt
type and machine, the host capabilities, and libvirt's CPU comparison verdicts, word for word.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from hvlib.model.cpu import request_of
from hvlib.model.domxml import CpuXML
from hvlib.virt import _virt

FIXTURES = Path(__file__).parent / "fixtures" / "domcaps"
T = TypeVar("T")


@cache
def compare_verdicts() -> dict[str, dict[str, Any]]:
    """tests/fixtures/domcaps/cpu-compare.json: name -> what libvirt answered."""
    data: dict[str, dict[str, Any]] = json.loads((FIXTURES / "cpu-compare.json").read_text())
    return data


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirt error as the binding raises it (code and message as libvirt set them)."""
    err = libvirt.libvirtError(message)
    err.err = (code, 0, message, 2, None, None, None, 0, 0)
    return err


class CapturedConn:
    """The libvirt calls hvlib's host checks make, answered from the captured files."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def getDomainCapabilities(
        self, _emulator: Any, _arch: str, machine: str | None, virttype: str, _flags: int
    ) -> str:
        self.calls.append("getDomainCapabilities")
        path = FIXTURES / f"{virttype}-{machine or 'pc'}.xml"
        if not path.exists():
            raise libvirt_error(
                libvirt.VIR_ERR_INVALID_ARG,
                f"invalid argument: the machine '{machine}' is not supported by emulator "
                "'/usr/bin/qemu-system-x86_64'",
            )
        return path.read_text()

    def compareHypervisorCPU(
        self, _emulator: Any, _arch: str, _machine: str, virttype: str, xml: str, _flags: int
    ) -> int:
        self.calls.append("compareHypervisorCPU")
        key = request_of(CpuXML.from_xml(xml)).key()
        for entry in compare_verdicts().values():
            if entry["domain_type"] == virttype and entry["key"] == key:
                if "result" in entry:
                    return int(entry["result"])
                raise libvirt_error(entry["error_code"], entry["message"])
        raise AssertionError(f"no captured verdict for {virttype} {key}: add it to cpu_specs")

    def getCapabilities(self) -> str:
        self.calls.append("getCapabilities")
        return (FIXTURES / "capabilities.xml").read_text()


class CapturedHost:
    """Enough of :class:`hvlib.Host` for :func:`hvlib.virt.hostfit.fit` (a remote URI, so no local
    device or module is looked at)."""

    def __init__(self, *, allow_emulation: bool = False) -> None:
        self.uri = "qemu+ssh://captured.invalid/system"
        self.generation = 0
        self.is_test_driver = False
        self.driver = "QEMU"
        self.allow_emulation = allow_emulation
        self.conn = CapturedConn()

    def call(self, fn: Callable[[Any], T], **_kw: Any) -> T:
        with _virt.translated():
            return fn(self.conn)

    def capabilities(self) -> str:
        return self.call(lambda c: str(c.getCapabilities()))
