"""A typed user script with every option spelt right: ``mypy --strict`` must pass it
(tests/test_typing.py). Never imported or run; its misspelt twin is
typing_user_script_bad.py, line for line."""

from __future__ import annotations

import hvlib
from hvlib.parallel import HostPool, ensure_all

SPEC = hvlib.DomainSpec(name="typed", virt=hvlib.VirtType.QEMU, kernel="/boot/vmlinuz")


def main() -> None:
    host = hvlib.connect("test:///default", readonly=True)
    pool = HostPool("test:///default", connections=2)
    fleet = hvlib.Fleet(["test:///default"], timeout=5.0)
    ensure_all("test:///default", [SPEC], allow_recreate=True)
    fleet.ensure(SPEC, allow_recreate=True)
    print(host, pool)
