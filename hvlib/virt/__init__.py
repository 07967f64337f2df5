"""The virt layer: the only code that talks to a libvirt connection.

The connection and its reconnects, remote URIs, the :class:`~hvlib.virt.host.Host` with its
domain, network, pool and volume collections, the :class:`~hvlib.Domain` (with its stopping,
addresses, snapshots and migration), events, consoles, the acceleration probe, the one pass
that makes a spec ready for a host (:mod:`hvlib.virt.prepare`: fitted, checked, rendered,
its host references looked up once), and the convergers that carry out the plans
:mod:`hvlib.model` makes. :mod:`hvlib.virt._virt` is the one module that imports libvirt.

What it must not do: import anything above it (:mod:`hvlib.fleet`, :mod:`hvlib.parallel`,
:mod:`hvlib.specfile`, :mod:`hvlib.cli`, :mod:`hvlib.demo`) or :mod:`hvlib.testkit`.
"""
