"""A domain's IP addresses: read from the DHCP leases, the guest agent or the ARP table,
and waited for.

:class:`Addressing` is mixed into :class:`hvlib.Domain` (it uses the members
:class:`hvlib.virt._parts.DomainParts` declares). Libvirt is called only through the
Domain's ``_read``.
"""

from __future__ import annotations

import time
from typing import Any

from hvlib.errors import InvalidState, LibvirtError, SpecError, Unsupported, WaitTimeout
from hvlib.model import addresses as addrs
from hvlib.model.addresses import AddressSource
from hvlib.model.checks import as_enum, check_seconds
from hvlib.virt import _virt
from hvlib.virt._parts import DomainParts


class Addressing(DomainParts):
    """The addresses of a :class:`hvlib.Domain`'s NICs (a mix-in)."""

    def addresses(self, source: AddressSource = AddressSource.AUTO) -> addrs.Addresses:
        """The guest's IP addresses per NIC, keyed by MAC (a NIC with none maps to []).

        AUTO asks the DHCP leases, then the guest agent, then the ARP table, and returns the
        first non-empty answer.

        Raises:
            DomainNotFound: the domain is gone. Unsupported: the driver lacks that source.
            SpecError: ``source`` is not an :class:`AddressSource` (or its value string).
        """
        source = as_enum(AddressSource, "source", source)
        return self._addresses(source, addrs.Attempts())

    def _addresses(self, source: AddressSource, attempts: addrs.Attempts) -> addrs.Addresses:
        sources = addrs.ORDER if source is AddressSource.AUTO else (source,)
        found: addrs.Addresses = {}
        for src in sources:
            try:
                flag = getattr(_virt.C, f"VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_{src.name}")
                found = addrs.read(self._interface_addresses(flag))
            except (InvalidState, Unsupported, LibvirtError) as e:
                if source is not AddressSource.AUTO:
                    raise
                attempts.note(src, str(e).splitlines()[0])
                continue
            attempts.note(src, "no address yet" if not any(found.values()) else "ok")
            if any(found.values()):
                return found
        return found

    def _interface_addresses(self, flag: int) -> dict[str, Any]:
        result: dict[str, Any] = self._read(lambda h: h.interfaceAddresses(flag, 0))
        return result

    def mac_addresses(self) -> list[str]:
        """The MACs of the domain's NICs, from its live (or else persistent) XML."""
        return [i.mac.lower() for i in self.xml_doc().interfaces if i.mac]

    def wait_for_address(
        self,
        timeout: float = 120.0,
        *,
        nics: str = "all",
        family: int | None = 4,
        source: AddressSource = AddressSource.AUTO,
        interval: float = 0.25,
    ) -> addrs.Addresses:
        """Block until the NICs (``"all"`` or ``"any"``) have an address of ``family``.

        Returns the same mapping as :meth:`addresses`.

        Raises:
            WaitTimeout: in time no address came; the message says what each source answered.
            SpecError: ``nics`` is not "all" or "any", ``family`` not 4, 6 or None,
                ``source`` not an :class:`AddressSource` (or its value string), ``timeout``
                not a finite number of seconds >= 0 or ``interval`` not one > 0.
        """
        timeout = check_seconds("timeout", timeout)
        interval = check_seconds("interval", interval, positive=True)
        if not isinstance(nics, str) or nics not in ("all", "any"):
            raise SpecError("nics", "must be 'all' or 'any'", nics)
        if family is not None and (isinstance(family, bool) or family not in (4, 6)):
            raise SpecError("family", "must be 4, 6 or None (either)", family)
        source = as_enum(AddressSource, "source", source)
        macs, attempts = self.mac_addresses(), addrs.Attempts()
        deadline = time.monotonic() + timeout
        while True:
            found = addrs.only_family(self._addresses(source, attempts), family)
            if addrs.satisfied(found, macs, nics):
                return found
            if time.monotonic() >= deadline:
                raise WaitTimeout(
                    f"{self.name}: no IPv{family or '4/6'} address on {nics} NICs within "
                    f"{timeout:g} s ({attempts.describe()})",
                    name=self.name,
                    waited=timeout,
                    last=found,
                )
            time.sleep(interval)
