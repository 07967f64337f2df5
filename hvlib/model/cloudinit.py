"""cloud-init NoCloud seeds: an ISO 9660 image labelled ``cidata``, built in pure Python.

:func:`seed` returns the image's bytes (made with pycdlib): the files ``user-data``,
``meta-data`` and, when given, ``network-config``, under exactly those lowercase names for
Rock Ridge and Joliet readers (Linux, cloud-init, Windows) and under valid ISO 9660 level-1
names (``USERDATA.;1``, ...) for plain readers. Attach it by uploading it as a pool volume
(``host.volumes.create(pool, "seed.iso", data=seed(...))``) and naming that volume as a disk
of the guest (a virtio disk works for kernels without a cdrom driver).

This module never touches the filesystem, the network or libvirt. The image carries its build
time (ISO 9660 dates), so two builds of the same inputs differ in a few bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
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

    iso = pycdlib.PyCdlib()
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
