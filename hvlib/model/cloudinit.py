"""cloud-init NoCloud seeds: an ISO 9660 image labelled ``cidata``, built in pure Python.

:func:`seed` returns the image's bytes (made with pycdlib): the files ``user-data``,
``meta-data`` and, when given, ``network-config``, under exactly those lowercase names for
Rock Ridge and Joliet readers (Linux, cloud-init, Windows) and under valid ISO 9660 level-1
names (``USERDATA.;1``, ...) for plain readers. Attach it by uploading it as a pool volume
(``host.volumes.create(pool, "seed.iso", data=seed(...))``) and naming that volume as a disk
of the guest (a virtio disk works for kernels without a cdrom driver).

This module never touches the filesystem, the network or libvirt. A seed is deterministic:
the same inputs give the same bytes, whenever and wherever (any time zone) it is built, so
``host.volumes.ensure(..., data=seed(...))`` writes nothing when nothing changed. Every date
in the image (volume descriptors, directory records, Rock Ridge time stamps) is
:data:`SEED_TIME` in UTC: pycdlib has no API for its dates (it reads the clock while it
builds and again while it writes), so while a seed is built the ``time`` module pycdlib's own
modules see answers that fixed time (:class:`_SeedClock`; other threads, and pycdlib used
outside :func:`seed`, see the real clock). Mappings are written as JSON with sorted keys.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from time import struct_time
from typing import Any

from hvlib.errors import SpecError

LABEL = "cidata"
"""The volume label cloud-init's NoCloud source looks for."""
SEED_MAX = 16 * 1024 * 1024
"""Largest total size of the seed's files (a seed carries configuration, not payloads)."""
_FILES = (
    ("user-data", "USERDATA.;1"),
    ("meta-data", "METADATA.;1"),
    ("network-config", "NETCONF.;1"),
)

SEED_TIME = 946684800.0
"""The date every seed carries: 2000-01-01T00:00:00Z (fixed, so that builds repeat)."""

Content = str | bytes | Mapping[str, Any]


def seed(
    user_data: Content,
    meta_data: Content,
    network_config: Content | None = None,
) -> bytes:
    """The bytes of a NoCloud seed ISO holding ``user_data``, ``meta_data`` and (optionally)
    ``network_config``.

    Each is bytes, text (UTF-8 encoded), or a mapping written as JSON (which YAML readers,
    cloud-init's included, accept); a mapping given as ``user_data`` gets the
    ``#cloud-config`` header cloud-init needs.

    Raises:
        SpecError: a value of another type, or files larger than :data:`SEED_MAX` in total.
        ImportError: pycdlib is not installed.
    """
    contents = [
        _content("user_data", user_data, cloud_config=True),
        _content("meta_data", meta_data),
    ]
    if network_config is not None:
        contents.append(_content("network_config", network_config))
    total = sum(len(c) for c in contents)
    if total > SEED_MAX:
        raise SpecError("seed", f"files must total at most {SEED_MAX} bytes", total)
    return _build(list(zip(_FILES, contents, strict=False)))


def _content(fieldname: str, value: object, *, cloud_config: bool = False) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Mapping):
        text = json.dumps(value, indent=2, sort_keys=True) + "\n"
        return (("#cloud-config\n" if cloud_config else "") + text).encode()
    raise SpecError(fieldname, "must be bytes, text or a mapping", type(value).__name__)


def _build(files: list[tuple[tuple[str, str], bytes]]) -> bytes:
    import pycdlib

    with _seed_clock():
        return _write(pycdlib.PyCdlib(), files)


def _write(iso: Any, files: list[tuple[tuple[str, str], bytes]]) -> bytes:
    iso.new(interchange_level=1, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    try:
        for (name, iso_name), data in files:
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                iso_path=f"/{iso_name}",
                rr_name=name,
                joliet_path=f"/{name}",
            )
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


class _SeedClock:
    """Stands in for the ``time`` module inside pycdlib's modules: while the calling thread
    builds a seed, ``time()`` is :data:`SEED_TIME` and ``localtime()`` is UTC (so the date
    and its offset do not depend on the time zone); otherwise, and for every other name, it
    is the real ``time`` module."""

    def time(self) -> float:
        return SEED_TIME if _fixed() else time.time()

    def localtime(self, secs: float | None = None) -> struct_time:
        return time.gmtime(secs) if _fixed() else time.localtime(secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_building = threading.local()
_install_lock = threading.Lock()
_PYCDLIB_MODULES = ("dates", "headervd", "inplaceeditor", "pycdlib", "udf", "utils")
"""pycdlib's modules that read the clock (``import time``, as of pycdlib 1.22; the tests of
tests/test_cloudinit.py fail if a later pycdlib reads it some other way)."""


def _fixed() -> bool:
    return bool(getattr(_building, "depth", 0))


@contextmanager
def _seed_clock() -> Iterator[None]:
    """Within the block, pycdlib reads :data:`SEED_TIME` (this thread only)."""
    _install()
    _building.depth = getattr(_building, "depth", 0) + 1
    try:
        yield
    finally:
        _building.depth -= 1


def _install() -> None:
    """Give each of pycdlib's modules that imported ``time`` a :class:`_SeedClock` (once)."""
    import importlib

    with _install_lock:
        for name in _PYCDLIB_MODULES:
            try:
                module = importlib.import_module(f"pycdlib.{name}")
            except ImportError:
                continue
            if getattr(module, "time", None) is time:
                module.time = _SeedClock()  # type: ignore[attr-defined]
