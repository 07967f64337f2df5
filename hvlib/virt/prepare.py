"""One pass from a domain spec to what a host defines.

:func:`prepare` fits the spec to the host (:func:`hvlib.virt.hostfit.fit`, which runs the
profile checks), renders it and checks its host references, each once, looking each
network and pool up once (:class:`hvlib.virt.hostrefs.HostRefs`). ``Domains.define`` and
``Domains.ensure`` call it once per call and hand the :class:`Prepared` on: the converger
defines, recreates and merges with it, and never fits, renders or checks again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hvlib.model import profiles
from hvlib.model.domxml import DomainXML
from hvlib.model.plan import defined_doc
from hvlib.model.profiles import Profile
from hvlib.model.spec import DomainSpec
from hvlib.virt.hostfit import fit
from hvlib.virt.hostrefs import HostRefs, check_host_refs

if TYPE_CHECKING:
    from hvlib.virt._parts import HostLike


@dataclass(frozen=True)
class Prepared:
    """A spec as one host defines it, checked and rendered."""

    spec: DomainSpec
    """The fitted spec (:attr:`hvlib.virt.hostfit.Fit.spec`), or the caller's for a removal."""
    profile: Profile
    """What :func:`hvlib.model.profiles.check` returned for :attr:`spec`."""
    doc: DomainXML
    """What a new domain is defined as (:func:`hvlib.model.plan.defined_doc`); never
    modified: :meth:`copy_doc` gives an editable copy."""
    xml: str
    """:attr:`doc` serialised: what ``defineXML`` gets."""
    notes: tuple[str, ...] = ()
    """The fit's notes (:attr:`hvlib.virt.hostfit.Fit.notes`)."""

    def copy_doc(self) -> DomainXML:
        """An editable copy of :attr:`doc`."""
        return DomainXML(copy.deepcopy(self.doc.el))


def prepare(host: HostLike, spec: DomainSpec) -> Prepared:
    """``spec`` fitted to ``host``, rendered, its networks, pools and volumes checked.

    Raises:
        SpecError, Unsupported: as :func:`hvlib.virt.hostfit.fit` and
            :func:`hvlib.model.render.render`, or a network, pool or volume the spec names
            does not exist here (:func:`hvlib.virt.hostrefs.check_host_refs`).
        HostError: the connection failed.
    """
    refs = HostRefs(host)
    fitted = fit(host, spec, refs=refs)
    prepared = rendered(fitted.spec, fitted.profile, fitted.notes)
    check_host_refs(refs, fitted.spec)
    return prepared


def rendered(
    spec: DomainSpec, profile: Profile | None = None, notes: tuple[str, ...] = ()
) -> Prepared:
    """``spec`` checked and rendered as it is, on no host (what a removal checks); with
    ``profile``, the checks are taken as run.

    Raises:
        SpecError, Unsupported: as :func:`hvlib.model.render.render`.
    """
    profile = profiles.check(spec) if profile is None else profile
    doc = defined_doc(spec, profile)
    return Prepared(spec, profile, doc, doc.to_xml(), notes)
