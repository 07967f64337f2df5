"""Carrying one domain ``ensure`` out on a host (:meth:`hvlib.virt.domains.Domains.ensure`).

The :class:`Converger` reads what the host has through :class:`hvlib.Domain` and
``host.domains`` only (no libvirt here), plans with :mod:`hvlib.model.plan`'s pure functions and,
unless in check mode, applies. The plan is made whole before anything is applied, and check
mode returns it: what a check reports is what its apply does (the same changes, the same
``how``, the same MAC addresses). Only a refusal nothing can predict turns a live change into
a pending restart at apply time, and the report then says so: a guest that does not take a
hot-plugged device, or its balloon within :data:`BALLOON_WAIT` seconds.

Every stop it makes is a shutdown (graceful, then forced at ``shutdown_timeout``), reported in
``EnsureResult.forced``; only a removal (ABSENT) destroys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

from hvlib.enums import State
from hvlib.errors import AlreadyExists, HvlibError
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import (
    Change,
    ChangeHow,
    ChangeReport,
    MacFor,
    balloon_reached,
    derived_mac,
    device_of,
    live_abilities,
    merge,
    owned,
    plan,
    recreated,
    state_change,
)
from hvlib.model.render import virt_of
from hvlib.model.spec import DomainSpec
from hvlib.model.xmlmodel import parse
from hvlib.virt._parts import HostLike
from hvlib.virt.domain import Domain
from hvlib.virt.prepare import Prepared

BALLOON_WAIT = 10.0
"""Seconds an ensure waits for a running guest's balloon to reach a live memory change
before it reports the change as needing a restart (a guest without a balloon driver never
takes one)."""
BALLOON_POLL = 0.1


@dataclass
class EnsureResult(ChangeReport):
    """What a domain ``ensure`` changed; ``domain`` is None for ABSENT."""

    domain: Domain | None = None
    forced: bool = False


class DomainCollection(Protocol):
    """What the converger uses of a host's domains (:class:`hvlib.virt.domains.Domains`)."""

    @property
    def host(self) -> HostLike: ...

    def find(self, name: str) -> Domain | None: ...

    def define_prepared(self, prepared: Prepared) -> Domain: ...

    def define_xml(self, xml: str) -> Domain: ...


@dataclass
class _Wanted:
    """An existing domain as read, and what is wanted of it."""

    current: DomainXML
    """Its persistent definition."""
    live: DomainXML
    """The running guest's definition (``current`` when it is not, or will not stay, up)."""
    doc: DomainXML
    """The definition wanted: the spec merged over ``current``, or a recreate's."""
    up: bool
    """The guest runs and stays up (the wanted state is not SHUT_OFF)."""
    recreate: bool
    """``doc`` is a recreate's definition (and, once reported, the recreate is allowed)."""
    define: bool = False
    """``doc`` is written (set when reported: there are changes and they are allowed)."""


def removed(dom: Domain | None, check: bool) -> EnsureResult:
    """Carries out an ``ensure`` to ABSENT of ``dom`` (None: there is none): destroys it when
    active (``forced`` then) and undefines it; with ``check``, only reports. A removal needs
    only the domain's name: nothing is fitted, checked or rendered.

    Raises:
        LibvirtError, InvalidState: libvirt refused the destroy or the undefine.
    """
    if dom is None:
        return EnsureResult(False)
    before, state = dom.xml(inactive=True), dom.state
    change = Change("state", state, State.ABSENT, ChangeHow.STATE)
    result = EnsureResult(True, [change], before_xml=before)
    if not check:
        result.forced = state.is_active  # a removal destroys an active domain
        dom.destroy()
        dom.undefine()
    return result


@dataclass
class Converger:
    """Carries one ``ensure`` out on a host's domain collection, with the spec as
    :func:`hvlib.virt.prepare.prepare` made it (fitted, checked and rendered once: the
    converger does none of that again)."""

    domains: DomainCollection
    prepared: Prepared
    state: State
    check: bool
    allow_restart: bool
    allow_recreate: bool
    shutdown_timeout: float = 60.0
    force_shutdown: bool = True
    """Past ``shutdown_timeout`` a guest is powered off (``result.forced``); when False it
    is left running and the shutdown's WaitTimeout raised."""

    @property
    def spec(self) -> DomainSpec:
        """The fitted spec."""
        return self.prepared.spec

    def run(self) -> EnsureResult:
        """Plan and (unless ``check``) apply; see :meth:`hvlib.virt.domains.Domains.ensure`."""
        dom = self.domains.find(self.spec.name)
        if self.state is State.ABSENT:
            return self._absent(dom)
        if dom is None:
            return self._create()
        return self._existing(dom)

    def _absent(self, dom: Domain | None) -> EnsureResult:
        return removed(dom, self.check)

    def _create(self) -> EnsureResult:
        after = self.prepared.xml
        changes = [Change("domain", None, "defined", ChangeHow.STATE)]
        if self.state is not State.SHUT_OFF:
            changes.append(Change("state", State.SHUT_OFF, self.state, ChangeHow.STATE))
        result = EnsureResult(True, changes, after_xml=after)
        if self.check:
            return result
        try:
            dom = self.domains.define_prepared(self.prepared)
        except AlreadyExists:  # another process defined it meanwhile: converge on that one
            return self.run()
        result.domain = dom
        self._converge_state(dom, result)
        return result

    def _existing(self, dom: Domain) -> EnsureResult:
        state0 = dom.state
        wanted = self._wanted(dom, state0)
        result = self._report(dom, wanted)
        state = state_change(state0, self.state)
        if state is not None:
            result.changes.append(state)
        if not self.check:
            self._apply(dom, wanted, result)
            self._converge_state(result.domain or dom, result)
        result.changed = bool(result.changes)
        return result

    def _wanted(self, dom: Domain, state0: State) -> _Wanted:
        current = DomainXML.from_xml(dom.xml(inactive=True))
        up = state0.is_active and self.state is not State.SHUT_OFF  # the guest stays up
        live = DomainXML.from_xml(dom.xml()) if up else current
        recreate = self._recreates(current)
        mac_for = self._mac_for(current)
        if recreate:
            doc = recreated(current, self.spec, mac_for, fresh=self.prepared.copy_doc())
        else:
            doc = merge(
                DomainXML.from_xml(current.to_xml()),
                self.spec,
                mac_for,
                profile=self.prepared.profile,
            )
        return _Wanted(current, live, doc, up, recreate)

    def _report(self, dom: Domain, w: _Wanted) -> EnsureResult:
        """The report of everything but the run state; settles what ``w`` applies."""
        before_xml = w.current.to_xml()  # serialised like the wanted one: a minimal diff
        changes = self._plan(w)
        defines = bool(changes)
        if dom.autostart != self.spec.autostart:
            changes.append(
                Change("autostart", dom.autostart, self.spec.autostart, ChangeHow.NEXT_BOOT)
            )
        stale = self._stale_live(w.live, w.doc, changes) if w.up and not w.recreate else []
        result = EnsureResult(False, domain=dom, before_xml=before_xml, after_xml=before_xml)
        blocked = self._sort(result, changes, stale)
        w.define, w.recreate = defines and not blocked, w.recreate and not blocked
        if w.define:
            result.after_xml = w.doc.to_xml()
        return result

    def _recreates(self, current: DomainXML) -> bool:
        """Whether the spec needs the domain recreated: another virt type, or another uuid."""

        other_uuid = self.spec.uuid is not None and self.spec.uuid != current.uuid
        return virt_of(current) is not self.spec.virt or other_uuid

    def _plan(self, w: _Wanted) -> list[Change]:
        """The differences of the persistent definition; in a recreate, every one of them is
        applied by the recreate."""
        limits = ((w.live.memory_kib or 0) // 1024, w.live.vcpu or 1)
        abilities = live_abilities(self.spec.virt, self.domains.host.is_test_driver)
        changes = plan(
            owned(w.current, self.spec), owned(w.doc, self.spec), w.up, limits, abilities
        )
        if w.recreate:
            return [replace(c, how=ChangeHow.RECREATE) for c in changes]
        return changes

    def _mac_for(self, current: DomainXML) -> MacFor:
        """MACs for new NICs, derived from the host's uuid and the domain's (read from the
        host only when a NIC needs one): stable from a check to its apply, and different for
        two domains of one name on two hosts."""
        seed: list[str] = []

        def mac_for(index: int, taken: Any) -> str:
            if not seed:
                caps = parse(self.domains.host.capabilities())
                domain_uuid = self.spec.uuid or current.uuid or ""
                seed.append(f"{caps.findtext('host/uuid') or ''}/{domain_uuid}")
            return derived_mac(seed[0], index, taken)

        return mac_for

    def _stale_live(
        self, live: DomainXML, wanted: DomainXML, changes: list[Change]
    ) -> list[Change]:
        """Differences the persistent definition already has but the running guest has not
        (written by an earlier ensure that was not allowed to restart, or by a hotplug or a
        balloon the guest did not take): they stay pending until a restart applies them. The
        live memory size counts as reached within the balloon's slack
        (:func:`hvlib.model.plan.balloon_reached`)."""
        known = {c.field for c in changes}
        stale = plan(owned(live, self.spec), owned(wanted, self.spec), True, (0, 0), ())
        return [
            replace(c, how=ChangeHow.RESTART)
            for c in stale
            if c.field not in known
            and not (c.field == "memory_mib" and balloon_reached(c.before, c.after))
        ]

    def _sort(self, result: EnsureResult, changes: list[Change], stale: list[Change]) -> bool:
        """Split into applied and pending; True when nothing is applied (a recreate that was
        not allowed). A restart-only change not allowed to restart is still written to the
        persistent definition (NEXT_BOOT) and listed as pending."""
        if any(c.how is ChangeHow.RECREATE for c in changes) and not self.allow_recreate:
            result.pending.extend(changes + stale)
            return True
        for c in changes:
            if c.how is ChangeHow.RESTART and not self.allow_restart:
                result.changes.append(replace(c, how=ChangeHow.NEXT_BOOT))
                result.pending.append(c)
            else:
                result.changes.append(c)
        (result.changes if self.allow_restart else result.pending).extend(stale)
        return False

    # -- applying ------------------------------------------------------------------------

    def _apply(self, dom: Domain, w: _Wanted, result: EnsureResult) -> None:
        if w.recreate:
            result.domain = self._recreate(dom, w.doc, result)
            return
        if w.define:
            self.domains.define_xml(w.doc.to_xml())
        if any(c.field == "autostart" for c in result.changes):
            dom.autostart = self.spec.autostart
        deferred: list[Change] = []
        for c in list(result.changes):
            if c.how is ChangeHow.LIVE:
                self._apply_live_or_defer(dom, c, w, result, deferred)
        self._restart_if_needed(dom, result, deferred)

    def _recreate(self, dom: Domain, wanted: DomainXML, result: EnsureResult) -> Domain:
        """Shut the guest down (as a restart does), undefine it, define ``wanted``; if libvirt
        refuses that, the old definition is put back (without its snapshot metadata) and the
        refusal raised."""
        if dom.state.is_active:
            self._stop(dom, result)
        dom.undefine()
        try:
            fresh: Domain = self.domains.define_xml(wanted.to_xml())
        except HvlibError:
            self.domains.define_xml(result.before_xml)
            raise
        if self.spec.autostart:
            fresh.autostart = True
        return fresh

    def _restart_if_needed(self, dom: Domain, result: EnsureResult, deferred: list[Change]) -> None:
        restart = deferred or any(c.how is ChangeHow.RESTART for c in result.changes)
        if not (self.allow_restart and restart):
            return
        self._stop(dom, result)
        dom.start()
        result.changes.extend(deferred)  # the restart applied what hotplug could not
        result.pending = [c for c in result.pending if c not in deferred]

    def _stop(self, dom: Domain, result: EnsureResult) -> None:
        shut = dom.shutdown(timeout=self.shutdown_timeout, force=self.force_shutdown)
        result.forced = result.forced or not shut.graceful

    def _apply_live_or_defer(
        self, dom: Domain, c: Change, w: _Wanted, result: EnsureResult, deferred: list[Change]
    ) -> None:
        """Apply ``c`` live; where the driver cannot hot-plug (or the guest's balloon does not
        get there in time), it stays a next-boot change (already in the persistent
        definition) and a pending restart."""
        from hvlib.errors import Unsupported

        try:
            taken = self._apply_live(dom, c, w)
        except Unsupported:
            taken = False
        if not taken:
            result.changes[result.changes.index(c)] = replace(c, how=ChangeHow.NEXT_BOOT)
            pending = replace(c, how=ChangeHow.RESTART)
            result.pending.append(pending)
            deferred.append(pending)

    def _apply_live(self, dom: Domain, c: Change, w: _Wanted) -> bool:
        if c.field == "memory_mib":
            dom.set_memory_live(c.after * 1024)
            return self._balloon_reaches(dom, c.after)
        if c.field == "vcpus":
            dom.set_vcpus_live(c.after)
            return True
        old, new = device_of(w.live, c.field), device_of(w.doc, c.field)
        if old is not None:
            dom.detach_live(old.to_xml())
        if new is not None:
            dom.attach_live(new.to_xml())
        return True

    @staticmethod
    def _balloon_reaches(dom: Domain, mib: int) -> bool:
        """Whether the guest reports ``mib`` MiB within :data:`BALLOON_WAIT` s (a paused guest
        cannot move its balloon: it is taken at its word)."""
        deadline = time.monotonic() + BALLOON_WAIT
        while True:
            have = (dom.xml_doc().current_memory_kib or 0) // 1024
            if balloon_reached(have, mib) or dom.state is State.PAUSED:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(BALLOON_POLL)

    def _converge_state(self, dom: Domain, result: EnsureResult) -> None:
        current = dom.state
        if self.state is State.SHUT_OFF:
            if current.is_active:
                self._stop(dom, result)
            return
        if not current.is_active:
            dom.start()
        if self.state is State.PAUSED:
            dom.suspend()
        elif dom.state is State.PAUSED:
            dom.resume()
        dom.wait_for(self.state, timeout=self.shutdown_timeout)
