"""A typed user script with one misspelt option in each call marked ``expect: call-arg``:
``mypy --strict`` must report a call-arg error on exactly those lines (tests/test_typing.py).
Never imported or run; its correctly spelt twin is typing_user_script_good.py."""

from __future__ import annotations

import hvlib
from hvlib.parallel import HostPool, ensure_all

SPEC = hvlib.DomainSpec(name="typed", virt=hvlib.VirtType.QEMU, kernel="/boot/vmlinuz")


def main() -> None:
    host = hvlib.connect("test:///default", readnly=True)  # expect: call-arg
    pool = HostPool("test:///default", conections=2)  # expect: call-arg
    fleet = hvlib.Fleet(["test:///default"], timout=5.0)  # expect: call-arg
    ensure_all("test:///default", [SPEC], allow_recreat=True)  # expect: call-arg
    fleet.ensure(SPEC, allow_recreat=True)  # expect: call-arg
    print(host, pool)
