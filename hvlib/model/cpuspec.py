"""The guest CPU a spec asks for (:class:`Cpu`): mode, named model, features, topology.

Validated on construction, naming ``cpu.FIELD``. What a host can provide is checked later
(:mod:`hvlib.model.domcaps`, :mod:`hvlib.virt.hostfit`); how a request is rendered and
compared is :mod:`hvlib.model.cpu`. This module neither renders XML nor talks to libvirt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hvlib.errors import SpecError
from hvlib.model.checks import check_fields, check_int, check_text

VCPUS_MAX = 512
"""The most vcpus a domain (and a CPU topology) may have."""
# Matched whole (``fullmatch``), as every pattern of hvlib's checks.
_CPU_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_CPU_FEATURE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
CPU_MODES = ("host-passthrough", "host-model", "custom")
"""``Cpu.mode`` values (None: the hypervisor's default model)."""


@dataclass(frozen=True)
class Cpu:
    """The guest CPU: mode, named model, features and topology.

    Build with :meth:`model` (a named model such as ``Nehalem``), :meth:`host_model`,
    :meth:`host_passthrough`, or ``Cpu(sockets=.., cores=.., threads=..)`` for a topology on
    the hypervisor's default model. ``require`` and ``disable`` are libvirt feature names
    (``aes``, ``sse4.2``, ``svm``). ``fallback`` lets libvirt fall back to another model, and
    lets a required feature the host cannot provide pass with a logged warning instead of a
    :class:`hvlib.SpecError` when the spec is checked against a host. Topology fields left
    out count as 1; their product must equal the domain's maximum vcpu count.

    Raises:
        SpecError: on construction, naming ``cpu.FIELD`` and the rule broken.
    """

    mode: str | None = None
    name: str | None = None
    require: Sequence[str] = ()
    disable: Sequence[str] = ()
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    fallback: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "cpu.", names={"name": "model"})
        self._check_mode()
        self._check_features()
        for attr in ("sockets", "cores", "threads"):
            if getattr(self, attr) is not None:
                check_int(f"cpu.{attr}", getattr(self, attr), 1, VCPUS_MAX)

    def _check_mode(self) -> None:
        if self.mode is not None and self.mode not in CPU_MODES:
            raise SpecError("cpu.mode", f"must be one of {', '.join(CPU_MODES)}", self.mode)
        if self.mode == "custom" and self.name is None:
            raise SpecError("cpu.model", "a custom CPU needs a model name (Cpu.model(NAME))")
        if self.name is not None:
            if self.mode != "custom":
                raise SpecError("cpu.model", "a model name needs mode 'custom'", self.name)
            check_text("cpu.model", self.name, max_len=64)
            if not _CPU_MODEL_RE.fullmatch(self.name):
                raise SpecError("cpu.model", "must use only A-Z a-z 0-9 _ . + -", self.name)

    def _check_features(self) -> None:
        for attr in ("require", "disable"):
            for name in getattr(self, attr):
                if not _CPU_FEATURE_RE.fullmatch(name):
                    raise SpecError(
                        f"cpu.{attr}", "feature names use only a-z 0-9 _ . - (e.g. sse4.2)", name
                    )
            names = getattr(self, attr)
            if len(set(names)) != len(names):
                raise SpecError(f"cpu.{attr}", "lists a feature twice", list(names))
        both = sorted(set(self.require) & set(self.disable))
        if both:
            raise SpecError("cpu.disable", "a feature cannot be both required and disabled", both)
        if (self.require or self.disable) and self.mode is None:
            raise SpecError(
                "cpu.require" if self.require else "cpu.disable",
                "features need a CPU mode: Cpu.model(NAME), Cpu.host_model() or "
                "Cpu.host_passthrough()",
            )

    @classmethod
    def model(
        cls,
        name: str,
        *,
        require: Sequence[str] = (),
        disable: Sequence[str] = (),
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
        fallback: bool = False,
    ) -> Cpu:
        """A named CPU model (``mode='custom'``), e.g. ``Cpu.model("Nehalem", require=["aes"])``."""
        return cls("custom", name, require, disable, sockets, cores, threads, fallback)

    @classmethod
    def host_model(
        cls,
        *,
        require: Sequence[str] = (),
        disable: Sequence[str] = (),
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
        fallback: bool = False,
    ) -> Cpu:
        """The model closest to what the host (its hypervisor) provides, as libvirt picks it."""
        return cls("host-model", None, require, disable, sockets, cores, threads, fallback)

    @classmethod
    def host_passthrough(
        cls,
        *,
        require: Sequence[str] = (),
        disable: Sequence[str] = (),
        sockets: int | None = None,
        cores: int | None = None,
        threads: int | None = None,
    ) -> Cpu:
        """The host CPU exactly as it is (KVM only: software emulation cannot pass it through)."""
        return cls("host-passthrough", None, require, disable, sockets, cores, threads)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cpu:
        """A Cpu from a plain mapping (a spec file's ``cpu:``): ``mode``, ``model``,
        ``require``, ``disable``, ``sockets``, ``cores``, ``threads``, ``fallback``. A
        ``model`` alone implies mode ``custom``.

        Raises:
            SpecError: an unknown key (naming it) or any rule of the Cpu itself.
        """
        known = ("mode", "model", "require", "disable", "sockets", "cores", "threads", "fallback")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SpecError(f"cpu.{unknown[0]}", f"unknown key; known keys: {', '.join(known)}")
        name = data.get("model")
        mode = data.get("mode") or ("custom" if name is not None else None)
        return cls(
            mode,
            name,
            data.get("require") or (),
            data.get("disable") or (),
            data.get("sockets"),
            data.get("cores"),
            data.get("threads"),
            False if data.get("fallback") is None else data["fallback"],
        )

    @property
    def topology(self) -> tuple[int, int, int] | None:
        """(sockets, cores, threads), missing ones as 1; None when no topology is given."""
        parts = (self.sockets, self.cores, self.threads)
        if all(p is None for p in parts):
            return None
        return (self.sockets or 1, self.cores or 1, self.threads or 1)
