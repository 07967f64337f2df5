# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
"""Ensuring and removing one volume through hvlib (the ``volume`` and ``seed`` modules)."""

from __future__ import annotations

from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common


def ensure(module, host, data):
    """``host.volumes.ensure`` as the options say; a check of a volume whose pool (or which
    itself) does not exist yet reports it as new, as ``hvlib up --check`` does."""
    p = module.params
    backing = (p["backing"]["pool"], p["backing"]["name"]) if p["backing"] else None
    label = f"volume {p['pool']}/{p['name']}"
    pool = host.pools.find(p["pool"])
    if module.check_mode and (pool is None or host.volumes.find(pool, p["name"]) is None):
        what = common.describe_volume(p["format"], backing, p["size_mib"], data)
        result = common.Report([common.hvlib.Change("volume", None, what, common.hvlib.ChangeHow.STATE)])
        return common.report(module, result, label, path=None)
    result = host.volumes.ensure(
        pool or p["pool"],
        p["name"],
        size_mib=p["size_mib"],
        format=p["format"],
        data=data,
        backing=backing,
        check=module.check_mode,
    )
    path = result.volume.path if result.volume is not None else None
    return common.report(module, result, label, path=path)


def absent(module, host):
    p = module.params
    pool = host.pools.find(p["pool"])
    vol = host.volumes.find(pool, p["name"]) if pool is not None else None
    result = common.Report()
    if vol is not None:
        result.changes.append(common.removal("volume", vol.path))
        if not module.check_mode:
            vol.delete()
    return common.report(module, result, f"volume {p['pool']}/{p['name']}", path=None)
