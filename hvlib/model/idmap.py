"""A container's user-namespace id map (:class:`IdMap` of :class:`IdRange` items): which host
uids and gids its ids are. Validated on construction, naming ``idmap.uids[i].FIELD``; the
kernel's own rules (no overlap, id 0 mapped, at most 340 ranges) are checked here, before a
container start would fail on them. This module neither renders XML nor talks to libvirt.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hvlib.errors import SpecError
from hvlib.model.checks import check_fields, check_int

ID_LIMIT = 2**32
"""User and group ids are 32-bit; ``start + count`` of a mapped range stays below this."""
IDMAP_RANGES_MAX = 340
"""The most ranges the kernel takes in one ``uid_map`` or ``gid_map`` (Linux 4.15 and later)."""


@dataclass(frozen=True)
class IdRange:
    """Container ids ``[start, start + count)`` seen as host ids ``[target, target + count)``.

    A range is checked where it is used: building an :class:`IdMap` checks each of its
    ranges and names the one at fault (``idmap.uids[0].count``).
    """

    start: int
    target: int
    count: int

    def check(self, fieldname: str) -> None:
        """Check this range as ``fieldname`` (``idmap.uids[0]``).

        Raises:
            SpecError: naming ``fieldname.start``, ``.target`` or ``.count``: not an integer
                (bools are refused), negative, a count of 0, or a range reaching 2**32.
        """
        check_int(f"{fieldname}.start", self.start, 0, ID_LIMIT - 1)
        check_int(f"{fieldname}.target", self.target, 0, ID_LIMIT - 1)
        check_int(f"{fieldname}.count", self.count, 1, ID_LIMIT - 1)
        for side in ("start", "target"):
            if getattr(self, side) + self.count >= ID_LIMIT:
                raise SpecError(
                    f"{fieldname}.count",
                    f"{side} + count must stay below 2**32 (ids are 32-bit; -1 is no id)",
                    self.count,
                )


@dataclass(frozen=True)
class IdMap:
    """A user-namespace id map for an LXC container: which host uids and gids its ids are.

    Without one, a container shares the host's user namespace: root in the container is
    root on the host. ``IdMap.shifted(100000)`` runs container ids 0..65535 as host ids
    100000..165535, so container root is an unprivileged host uid.

    Each list needs at least one range and must map container id 0 (root: libvirt refuses a
    map without it); the ranges of one list may not overlap, neither the container ids nor
    the host ids (the kernel refuses such a map when the container starts).

    Raises:
        SpecError: on construction, naming ``idmap.uids[i].FIELD`` (or ``idmap.gids``) and
            the rule broken.
    """

    uids: Sequence[IdRange]
    gids: Sequence[IdRange]

    def __post_init__(self) -> None:
        check_fields(self, "idmap.")
        for attr in ("uids", "gids"):
            _check_id_ranges(f"idmap.{attr}", getattr(self, attr))

    @classmethod
    def shifted(cls, target: int, count: int = 65536) -> IdMap:
        """Container uids and gids ``0..count-1`` as host ids ``target..target+count-1``.

        Raises:
            SpecError: ``target`` or ``count`` out of range (see :class:`IdMap`).
        """
        return cls((IdRange(0, target, count),), (IdRange(0, target, count),))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdMap:
        """An IdMap from a plain mapping (a spec file's ``idmap:``): either ``target`` and
        an optional ``count`` (:meth:`shifted`), or ``uids`` and ``gids``, each a list of
        mappings with ``start``, ``target`` and ``count``.

        Raises:
            SpecError: an unknown key or a mix of both forms (naming it), or any rule of the
                IdMap itself.
        """
        known = ("target", "count", "uids", "gids")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(f"idmap.{unknown[0]}", f"unknown key; known keys: {', '.join(known)}")
        if "target" in data or "count" in data:
            mixed = sorted({"uids", "gids"} & set(data))
            if mixed:
                raise SpecError(f"idmap.{mixed[0]}", "give either target (and count) or lists")
            if "target" not in data:
                raise SpecError("idmap.target", "is required with count")
            return cls.shifted(data["target"], data.get("count", 65536))
        return cls(
            _ranges_from("idmap.uids", data.get("uids")),
            _ranges_from("idmap.gids", data.get("gids")),
        )


def _ranges_from(fieldname: str, items: Any) -> tuple[IdRange, ...]:
    if items is None or isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise SpecError(fieldname, "must be a list of {start, target, count}", items)
    ranges = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) != {"start", "target", "count"}:
            raise SpecError(f"{fieldname}[{i}]", "must have exactly start, target, count", item)
        ranges.append(IdRange(item["start"], item["target"], item["count"]))
    return tuple(ranges)


def _check_id_ranges(fieldname: str, ranges: tuple[IdRange, ...]) -> None:
    """Each range valid; at least one, at most the kernel's limit; no overlap; id 0 mapped."""
    if not ranges:
        raise SpecError(fieldname, "must not be empty: container id 0 (root) must be mapped")
    if len(ranges) > IDMAP_RANGES_MAX:
        raise SpecError(fieldname, f"takes at most {IDMAP_RANGES_MAX} ranges", len(ranges))
    for i, r in enumerate(ranges):
        r.check(f"{fieldname}[{i}]")
    for side in ("start", "target"):
        _check_disjoint(fieldname, ranges, side)
    if not any(r.start == 0 for r in ranges):
        raise SpecError(fieldname, "must map container id 0 (root): libvirt refuses without")


def _check_disjoint(fieldname: str, ranges: tuple[IdRange, ...], side: str) -> None:
    """No two ranges share an id on ``side`` (``start``: container, ``target``: host)."""
    order = sorted(range(len(ranges)), key=lambda i: getattr(ranges[i], side))
    for a, b in itertools.pairwise(order):
        if getattr(ranges[a], side) + ranges[a].count > getattr(ranges[b], side):
            where = "container" if side == "start" else "host"
            raise SpecError(
                f"{fieldname}[{max(a, b)}]",
                f"overlaps {fieldname}[{min(a, b)}] on the {where} side",
                ranges[max(a, b)],
            )
