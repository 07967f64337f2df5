"""The model layer: what hvlib means, with no effect on the world.

Specs and their checks, the declarative XML field layer and the domain, network and storage
XML models built on it, the per-type profiles, CPU and domain-capability checks, URI checks,
cloud-init seed building, rendering, and the *plans* of ``ensure`` (what would change, for
domains, networks and volumes).

What it must not do: import libvirt, open sockets or files outside the package's own
templates, or import :mod:`hvlib.guest`, :mod:`hvlib.virt` or anything above them. It may
import :mod:`hvlib.errors` and :mod:`hvlib.enums`.
"""
