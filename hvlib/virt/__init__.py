"""The virt layer: the only code that talks to a libvirt connection.

The connection and its reconnects, remote URIs, the :class:`~hvlib.virt.host.Host` with its
domain, network, pool and volume collections, events, consoles, snapshots, migration, the
acceleration probe, fitting a spec to a host, and the convergers that carry out the plans
:mod:`hvlib.model` makes. :mod:`hvlib.virt._virt` is the one module that imports libvirt.

What it must not do: import anything above it (:mod:`hvlib.fleet`, :mod:`hvlib.parallel`,
:mod:`hvlib.specfile`, :mod:`hvlib.cli`, :mod:`hvlib.demo`) or :mod:`hvlib.testkit`.
"""
