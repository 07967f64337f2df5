"""The guest layer: reaching inside a running guest.

Readiness probes, command execution and file transfer over one transport interface
(:class:`hvlib.guest.transport.Transport`): SSH for VMs (:mod:`hvlib.guest.ssh`), the
container's namespaces for LXC (:mod:`hvlib.guest.container`), picked by the virtualization
type's profile. Sockets toward guests open inside the host's network namespace
(:mod:`hvlib.guest.netns`).

What it must not do: import :mod:`hvlib.virt` (what it needs of a domain it takes through
:class:`hvlib.guest.target.GuestTarget`, which :class:`hvlib.Domain` satisfies) or import
libvirt. It may import :mod:`hvlib.model`, :mod:`hvlib.errors` and :mod:`hvlib.enums`.
"""
