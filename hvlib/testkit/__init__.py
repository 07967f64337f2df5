"""hvlib.testkit: throwaway, sandboxed libvirt hosts and a tiny test guest, for tests and demos.

Public pieces:
- :mod:`hvlib.testkit.sandbox`: a private libvirtd in its own network and mount namespaces.
- :mod:`hvlib.testkit.guestkit`: a bootable guest (kernel + initramfs) and an LXC root
  filesystem built from Debian packages, cached by their inputs.
- :mod:`hvlib.testkit.debian`: real distributions, built from Debian packages and cached by
  their inputs: a Debian 12 cloud VM image (systemd, cloud-init; direct kernel boot) and a
  Debian 12 system container root (systemd as init).
- :mod:`hvlib.testkit.xenhost`: a nested Xen host (dom0) booted under QEMU software emulation.
- :func:`test_host_uri`: a libvirt test-driver host with room to place guests on (64 GiB,
  16 CPUs, no domains, a ``default`` network and pool), for dry runs of a ``Fleet``: the
  stock ``test:///default`` has a 3 GiB node whose own domain claims 8 GiB, so nothing fits.

This package must not be imported by the library proper (``hvlib`` never depends on it).
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path
from urllib.parse import quote

TEST_HOST_FILE = "testhost.xml"
"""The test-driver host file shipped in this package (see :func:`test_host_uri`)."""


def cache_dir() -> Path:
    """Return the directory where built test artefacts are cached (created if missing).

    ``$HVLIB_CACHE`` if set, else ``/var/cache/hvlib-testkit``. Clearing it forces a cold build.
    """
    path = Path(os.environ.get("HVLIB_CACHE", "/var/cache/hvlib-testkit"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_host_uri(copy_to: str | os.PathLike[str] | None = None) -> str:
    """The ``test:///PATH`` URI of the test-driver host file shipped with hvlib: a node
    with 16 CPUs and 64 GiB, no domains, a ``default`` NAT network and a ``default``
    directory pool (all in libvirt's memory: nothing on this machine changes).

    Each connection to it starts from the file, so one Fleet member is one host. With
    ``copy_to`` (a file path) the file is copied there first: another, independent host
    for a fleet of several (URIs are kept distinct by path).

    Raises:
        OSError: ``copy_to`` cannot be written.
    """
    path = Path(str(resources.files(__package__).joinpath(TEST_HOST_FILE)))
    if copy_to is not None:
        target = Path(copy_to).absolute()
        shutil.copyfile(path, target)
        path = target
    return "test://" + quote(str(path.absolute()), safe="/")


setattr(test_host_uri, "__test__", False)  # noqa: B010 - pytest must not collect it
