"""Carrying out a domain plan: the converger behind :meth:`hvlib.virt.host.Domains.ensure`.

:mod:`hvlib.model.plan` says what differs and how each difference can be applied; the
:class:`Converger` applies it through :class:`hvlib.Domain` and the host's domain collection
(defines, hotplugs, restarts, state transitions), never calling libvirt itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from hvlib.enums import State
from hvlib.errors import AlreadyExists, Unsupported
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import (
    Change,
    ChangeHow,
    ChangeReport,
    merge,
    owned,
    plan,
    state_change,
)
from hvlib.model.render import render
from hvlib.model.spec import DomainSpec
from hvlib.model.xmlmodel import XmlNode
from hvlib.virt.domain import Domain


@dataclass
class EnsureResult(ChangeReport):
    """What a domain ``ensure`` changed; ``domain`` is None for ABSENT."""

    domain: Domain | None = None
    forced: bool = False


class DomainCollection(Protocol):
    """What the converger uses of a host's domains (:class:`hvlib.virt.host.Domains`)."""

    def find(self, name: str) -> Domain | None: ...

    def define(self, spec: DomainSpec) -> Domain: ...

    def define_xml(self, xml: str) -> Domain: ...


@dataclass
class Converger:
    """Carries one ``ensure`` out on a host's domain collection."""

    domains: DomainCollection
    spec: DomainSpec
    state: State
    check: bool
    allow_restart: bool
    allow_recreate: bool
    shutdown_timeout: float = 60.0
    force_shutdown: bool = True

    def run(self) -> EnsureResult:
        """Plan and (unless ``check``) apply; see :meth:`hvlib.virt.host.Domains.ensure`."""
        dom = self.domains.find(self.spec.name)
        if self.state is State.ABSENT:
            return self._absent(dom)
        if dom is None:
            return self._create()
        return self._existing(dom)

    def _absent(self, dom: Domain | None) -> EnsureResult:
        if dom is None:
            return EnsureResult(False)
        before = dom.xml(inactive=True)
        change = Change("state", dom.state, State.ABSENT, ChangeHow.STATE)
        if not self.check:
            dom.destroy()
            dom.undefine()
        return EnsureResult(True, [change], before_xml=before)

    def _create(self) -> EnsureResult:
        after = render(self.spec)
        changes = [Change("domain", None, "defined", ChangeHow.STATE)]
        if self.state is not State.SHUT_OFF:
            changes.append(Change("state", State.SHUT_OFF, self.state, ChangeHow.STATE))
        if self.check:
            return EnsureResult(True, changes, after_xml=after)
        try:
            dom = self.domains.define(self.spec)
        except AlreadyExists:  # another process defined it meanwhile: converge on that one
            return self.run()
        result = EnsureResult(True, changes, domain=dom, after_xml=after)
        self._converge_state(dom, result)
        return result

    def _existing(self, dom: Domain) -> EnsureResult:
        current = DomainXML.from_xml(dom.xml(inactive=True))
        before_xml = current.to_xml()  # serialised like the merged one, so diff() is minimal
        merged = merge(DomainXML.from_xml(before_xml), self.spec)
        running = dom.state.is_active
        live = DomainXML.from_xml(dom.xml()) if running else current
        limits = ((live.memory_kib or 0) // 1024, live.vcpu or 1)
        changes = plan(owned(current, self.spec), owned(merged, self.spec), running, limits)
        if dom.autostart != self.spec.autostart:
            changes.append(
                Change("autostart", dom.autostart, self.spec.autostart, ChangeHow.NEXT_BOOT)
            )
        stale = self._stale_live(live, merged, changes) if running else []
        result = EnsureResult(False, domain=dom, before_xml=before_xml, after_xml=merged.to_xml())
        self._sort(result, changes, stale)
        if not self.check:
            self._apply(dom, live, merged, result)
        state = state_change(dom.state, self.state)
        if state is not None:
            result.changes.append(state)
            if not self.check:
                self._converge_state(dom, result)
        result.changed = bool(result.changes)
        return result

    def _stale_live(
        self, live: DomainXML, merged: DomainXML, changes: list[Change]
    ) -> list[Change]:
        """Differences the persistent definition already has but the running guest has not
        (written by an earlier ensure that was not allowed to restart, or by a hotplug the
        driver refused). The live balloon size is left out: the guest reports it, and it
        drifts from the configured size by design."""
        known = {c.field for c in changes} | {"memory_mib"}
        stale = plan(owned(live, self.spec), owned(merged, self.spec), True, (0, 0))
        return [replace(c, how=ChangeHow.RESTART) for c in stale if c.field not in known]

    def _sort(self, result: EnsureResult, changes: list[Change], stale: list[Change]) -> None:
        """Split into applied and pending. A restart-only change not allowed to restart is
        still written to the persistent definition (NEXT_BOOT) and listed as pending."""
        if any(c.how is ChangeHow.RECREATE for c in changes) and not self.allow_recreate:
            result.pending.extend(changes + stale)  # nothing is applied without the recreate
            return
        for c in changes:
            if c.how is ChangeHow.RESTART and not self.allow_restart:
                result.changes.append(Change(c.field, c.before, c.after, ChangeHow.NEXT_BOOT))
                result.pending.append(c)
            else:
                result.changes.append(c)
        (result.changes if self.allow_restart else result.pending).extend(stale)

    def _apply(self, dom: Domain, live: DomainXML, merged: DomainXML, result: EnsureResult) -> None:
        applied = [c for c in result.changes if c.how is not ChangeHow.STATE]
        if not applied:
            return
        if any(c.how is ChangeHow.RECREATE for c in applied):
            dom.destroy()
            dom.undefine()
            self.domains.define_xml(merged.to_xml())
        elif any(c.field != "autostart" for c in applied):
            self.domains.define_xml(merged.to_xml())
        if any(c.field == "autostart" for c in applied):
            dom.autostart = self.spec.autostart
        for c in applied:
            if c.how is ChangeHow.LIVE:
                self._apply_live_or_defer(dom, c, live, merged, result)
        deferred = [c for c in result.pending if c.how is ChangeHow.RESTART]
        if self.allow_restart and (deferred or any(c.how is ChangeHow.RESTART for c in applied)):
            self._shutdown(dom, result)
            dom.start()
            result.changes.extend(deferred)  # the restart applied what hotplug could not
            result.pending = [c for c in result.pending if c not in deferred]

    def _apply_live_or_defer(
        self, dom: Domain, c: Change, live: DomainXML, merged: DomainXML, result: EnsureResult
    ) -> None:
        """Apply ``c`` live; where the driver cannot hot-plug, it stays a next-boot change
        (already in the persistent definition) and a pending restart."""
        try:
            self._apply_live(dom, c, live, merged)
        except Unsupported:
            result.changes[result.changes.index(c)] = replace(c, how=ChangeHow.NEXT_BOOT)
            result.pending.append(replace(c, how=ChangeHow.RESTART))

    def _apply_live(self, dom: Domain, c: Change, live: DomainXML, merged: DomainXML) -> None:
        if c.field == "memory_mib":
            dom.set_memory_live(c.after * 1024)
        elif c.field == "vcpus":
            dom.set_vcpus_live(c.after)
        else:
            old, new = _device(live, c.field), _device(merged, c.field)
            if old is not None:
                dom.detach_live(old.to_xml())
            if new is not None:
                dom.attach_live(new.to_xml())

    def _shutdown(self, dom: Domain, result: EnsureResult) -> None:
        """Shut ``dom`` down within ``shutdown_timeout``; past it, power it off when
        ``force_shutdown`` (``result.forced``) or raise WaitTimeout (it keeps running)."""
        done = dom.shutdown(timeout=self.shutdown_timeout, force=self.force_shutdown)
        result.forced |= not done.graceful

    def _converge_state(self, dom: Domain, result: EnsureResult) -> None:
        current = dom.state
        if self.state is State.SHUT_OFF and current.is_active:
            self._shutdown(dom, result)
            return
        if self.state in (State.RUNNING, State.PAUSED):
            if not current.is_active:
                dom.start()
            if self.state is State.PAUSED:
                dom.suspend()
            elif dom.state is State.PAUSED:
                dom.resume()
            dom.wait_for(self.state, timeout=self.shutdown_timeout)


def _device(doc: DomainXML, field_name: str) -> XmlNode | None:
    kind, _, key = field_name.partition("[")
    key = key.rstrip("]")
    if kind == "disks":
        return next((d for d in doc.disks if d.target_dev == key), None)
    if kind == "nics":
        return next((i for i in doc.interfaces if i.mac == key), None)
    return next((f for f in doc.filesystems if f.target_dir == key), None)
