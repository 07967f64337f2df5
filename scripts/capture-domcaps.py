"""Capture a real host's domain capabilities and CPU comparisons for the unit tests.

Starts a sandboxed libvirtd (:class:`hvlib.testkit.sandbox.SandboxHost`) and writes, under
tests/fixtures/domcaps/, exactly what libvirt answers there:

- ``{qemu,kvm}-{pc,q35,microvm}.xml``: ``getDomainCapabilities`` per virt type and machine;
- ``capabilities.xml``: ``getCapabilities`` (the host's uuid blanked);
- ``cpu-compare.json``: for each spec of tests/cpu_specs.py, the ``<cpu>`` hvlib renders and
  libvirt's ``compareHypervisorCPU`` verdict on it (result, or error code and message);
- ``live-NAME-{inactive,live}.xml``: the persistent definition and the running guest's XML of
  each ``LIVE_SPECS`` domain, booted with the test kit's kernel (what ``ensure`` compares).

The tests only read these files. Run as root: ``.venv/bin/python scripts/capture-domcaps.py``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hvlib  # noqa: E402
from hvlib.errors import HvlibError  # noqa: E402
from hvlib.model import profiles  # noqa: E402
from hvlib.model.cpu import cpu_request, cpu_xml  # noqa: E402
from hvlib.model.xmlmodel import parse, tostring  # noqa: E402
from hvlib.testkit.guestkit import ensure_guest_kit, kernel_cmdline  # noqa: E402
from hvlib.testkit.sandbox import SandboxHost  # noqa: E402
from hvlib.virt import _virt  # noqa: E402
from hvlib.virt.host import Host  # noqa: E402
from tests.cpu_specs import CPU_SPECS, LIVE_SPECS  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "domcaps"
MACHINES = ("pc", "q35", "microvm")


def _write(name: str, text: str) -> None:
    (OUT / name).write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote tests/fixtures/domcaps/{name}")


def _capabilities(host: Host) -> str:
    root = parse(host.capabilities())
    uuid = root.find("host/uuid")
    if uuid is not None:
        uuid.text = "00000000-0000-0000-0000-000000000000"
    return tostring(root)


def _compare(host: Host, name: str) -> dict[str, Any]:
    spec = CPU_SPECS[name]
    profile = profiles.check(spec)
    request = cpu_request(spec, profile)
    assert request is not None, name
    xml = cpu_xml(request)
    flags = _virt.C.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE
    entry: dict[str, Any] = {
        "domain_type": profile.domain_type,
        "machine": profile.machine,
        "key": request.key(),
        "xml": xml,
    }
    try:
        entry["result"] = host.call(
            lambda c: c.compareHypervisorCPU(
                None, "x86_64", profile.machine, profile.domain_type, xml, flags
            )
        )
    except HvlibError as e:
        entry["error_code"], entry["message"] = e.code, str(e)
    return entry


def _live(host: Host, name: str) -> None:
    kit = ensure_guest_kit()
    spec = replace(
        LIVE_SPECS[name],
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline=kernel_cmdline("ttyS0", "hvlib.nossh"),
    )
    dom = host.domains.define(spec)
    try:
        dom.start()
        _write(f"live-{name}-inactive.xml", dom.xml(inactive=True))
        _write(f"live-{name}-live.xml", dom.xml())
    finally:
        dom.destroy()
        dom.undefine()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with SandboxHost("domcaps") as sb, hvlib.connect(sb.qemu_uri) as host:
        for virt in ("qemu", "kvm"):
            for machine in MACHINES:
                text = host.call(
                    lambda c, v=virt, m=machine: c.getDomainCapabilities(None, "x86_64", m, v, 0)
                )
                _write(f"{virt}-{machine}.xml", text)
        _write("capabilities.xml", _capabilities(host))
        compared = {name: _compare(host, name) for name in CPU_SPECS}
        _write("cpu-compare.json", json.dumps(compared, indent=2, sort_keys=True))
        for name in LIVE_SPECS:
            _live(host, name)


if __name__ == "__main__":
    main()
