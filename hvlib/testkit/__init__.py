"""hvlib.testkit: throwaway, sandboxed libvirt hosts and a tiny test guest, for tests and demos.

Public pieces:
- :mod:`hvlib.testkit.sandbox`: a private libvirtd in its own network and mount namespaces.
- :mod:`hvlib.testkit.guestkit`: a bootable guest (kernel + initramfs) and an LXC root
  filesystem built from Debian packages, cached by their inputs.
- :mod:`hvlib.testkit.xenhost`: a nested Xen host (dom0) booted under QEMU software emulation.

This package must not be imported by the library proper (``hvlib`` never depends on it).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return the directory where built test artefacts are cached (created if missing).

    ``$HVLIB_CACHE`` if set, else ``/var/cache/hvlib-testkit``. Clearing it forces a cold build.
    """
    path = Path(os.environ.get("HVLIB_CACHE", "/var/cache/hvlib-testkit"))
    path.mkdir(parents=True, exist_ok=True)
    return path
