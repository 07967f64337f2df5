#!/usr/bin/python
# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
from __future__ import annotations

DOCUMENTATION = r"""
module: domains
short_description: Make a libvirt host hold many domains at once, in one process
description:
  - Ensures every domain of O(specs) (or of O(spec_files)) through C(hvlib.parallel.ensure_all)
    - O(workers) threads over O(connections) libvirt connections, in this one module process
    (an Ansible loop over M(hvlib.libvirt.domain) starts one process per item).
  - One domain's failure does not stop the others; the task then fails, and RV(results) says
    what each domain got.
  - C(changed) is true exactly when some domain's change report is not empty.
version_added: 0.1.0
author: hvlib contributors (!UNKNOWN)
extends_documentation_fragment:
  - hvlib.libvirt.connection
options:
  specs:
    description:
      - The domains, each a mapping of the keys of a spec file's domain document (the spec
        options of M(hvlib.libvirt.domain)).
    type: list
    elements: dict
  spec_files:
    description: hvlib spec files whose domains to ensure (their other documents are checked, not ensured).
    type: list
    elements: path
  workers:
    description: Threads.
    type: int
    default: 4
  connections:
    description: libvirt connections the threads share.
    type: int
    default: 2
  state:
    description: The run state every domain should be in, spelt as in spec files.
    type: str
    choices: [running, shut-off, paused, absent]
    default: running
  shutdown_timeout:
    description: Seconds a guest gets to shut down gracefully when it must stop.
    type: float
    default: 60
  force:
    description: Power off a guest still running at O(shutdown_timeout) (else that domain fails).
    type: bool
    default: false
  allow_restart:
    description: Restart running guests whose change needs it (else the change is pending).
    type: bool
    default: false
  allow_recreate:
    description: Undefine and define again where a change needs it, keeping uuid and MACs.
    type: bool
    default: false
  fail_on_pending:
    description: Fail the task when some domain has changes left pending.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Three containers in one task
  hvlib.libvirt.domains:
    uri: lxc:///system
    specs:
      - {name: ct1, virt: lxc, init: [/sbin/init], filesystems: [{source: /srv/ct1, target: /}]}
      - {name: ct2, virt: lxc, init: [/sbin/init], filesystems: [{source: /srv/ct2, target: /}]}
      - {name: ct3, virt: lxc, init: [/sbin/init], filesystems: [{source: /srv/ct3, target: /}]}
    workers: 4
"""

RETURN = r"""
results:
  description: Per domain, in the specs' order - its name, changed, changes, pending, forced, or failed with msg and field.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common


def specs_of(params):
    """The DomainSpecs of the task, read by hvlib's spec-file reader.

    Raises:
        SpecFileError: an item or a file is invalid (``specs[i].FIELD`` for an item).
    """
    if params["spec_files"]:
        return [d.spec for f in common.specfile.load_all(params["spec_files"]) for d in f.domains]
    specs = []
    for i, item in enumerate(params["specs"]):
        try:
            specs.append(common.document("domain", item).domains[0].spec)
        except common.hvlib.SpecError as err:
            raise common.hvlib.SpecError(f"specs[{i}].{err.field}", err.rule, err.value) from None
    return specs


def record(module, spec, result):
    """One domain's part of the task's result."""
    out = common.report(module, result, f"domain {spec.name}", forced=bool(result.forced))
    out.pop("diff", None)
    return dict(name=spec.name, **out)


def failure(spec, err):
    out = dict(name=spec.name, failed=True, msg=common.message(err), error=type(err).__name__)
    if getattr(err, "field", None):
        out["field"] = err.field
    return out


def run(module):
    from hvlib.parallel import ParallelError, ensure_all

    p = module.params
    specs = specs_of(p)
    kw = dict(netns=p["netns"], poll_interval=None)
    try:
        results = ensure_all(
            p["uri"],
            specs,
            workers=p["workers"],
            connections=p["connections"],
            state=common.state_enum(p["state"]),
            connect_kw=kw,
            check=module.check_mode,
            allow_restart=p["allow_restart"],
            allow_recreate=p["allow_recreate"],
            shutdown_timeout=p["shutdown_timeout"],
            force_shutdown=p["force"],
        )
        errors = {}
    except ParallelError as err:
        results, errors = err.results, err.errors
    records = [
        failure(s, errors[s.name]) if r is None else record(module, s, r)
        for s, r in zip(specs, results)
    ]
    out = dict(changed=any(r.get("changed") for r in records), results=records)
    if module._diff:
        changes = [
            common.hvlib.Change(f"{s.name}.{c.field}", c.before, c.after, c.how)
            for s, r in zip(specs, results)
            if r is not None
            for c in [*r.changes, *r.pending]
        ]
        if changes:
            out["diff"] = common.diff_of(changes, f"{len(specs)} domains")
    failed = [r["name"] for r in records if r.get("failed")]
    pending = [r["name"] for r in records if r.get("pending")]
    if failed:
        out.update(failed=True, msg=f"{len(failed)} of {len(specs)} failed: {', '.join(failed)}")
    elif p["fail_on_pending"] and pending:
        out.update(failed=True, msg=f"changes pending (need a restart): {', '.join(pending)}")
    return out


def main():
    state_words = ["running", "shut-off", "paused", "absent"]
    module = AnsibleModule(
        argument_spec=dict(
            **common.CONNECTION_ARGS,
            specs=dict(type="list", elements="dict"),
            spec_files=dict(type="list", elements="path"),
            workers=dict(type="int", default=4),
            connections=dict(type="int", default=2),
            state=dict(type="str", default="running", choices=state_words),
            shutdown_timeout=dict(type="float", default=60.0),
            force=dict(type="bool", default=False),
            allow_restart=dict(type="bool", default=False),
            allow_recreate=dict(type="bool", default=False),
            fail_on_pending=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        required_one_of=[("specs", "spec_files")],
        mutually_exclusive=[("specs", "spec_files")],
    )
    common.require_hvlib(module)
    try:
        out = run(module)
    except common.hvlib.HvlibError as err:
        common.fail(module, err)
    if out.pop("failed", False):
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
