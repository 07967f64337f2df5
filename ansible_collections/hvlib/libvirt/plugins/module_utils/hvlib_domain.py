# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
"""Ensuring domains through hvlib: the spec options and the state options of the ``domain``
and ``domains`` modules, and one domain's ensure as a task result."""

from __future__ import annotations

import re

from ansible_collections.hvlib.libvirt.plugins.module_utils import hvlib_common as common

SPEC_KEYS = (
    "name",
    "virt",
    "vcpus",
    "memory_mib",
    "max_memory_mib",
    "max_vcpus",
    "kernel",
    "initrd",
    "cmdline",
    "disks",
    "nics",
    "filesystems",
    "init",
    "uuid",
    "description",
    "autostart",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "cpu",
    "nested",
    "machine",
    "firmware",
    "secure_boot",
    "xml_edits",
    "idmap",
    "rng",
)
"""The options that are keys of a spec file's domain document."""

SSH_ARGS = dict(
    user=dict(type="str", default="root"),
    key_file=dict(type="path", required=True, no_log=False),
    known_hosts=dict(type="path", required=True),
)
WAIT_ARGS = dict(
    ready=dict(type="str", required=True, choices=["address", "ssh", "console"]),
    pattern=dict(type="str"),
    timeout=dict(type="float", default=120.0),
    ssh=dict(type="dict", options=SSH_ARGS),
)
STATE_ARGS = dict(
    state=dict(type="str", default="running", choices=["running", "shut-off", "paused", "absent"]),
    shutdown_timeout=dict(type="float", default=60.0),
    force=dict(type="bool", default=False),
    allow_restart=dict(type="bool", default=False),
    allow_recreate=dict(type="bool", default=False),
    fail_on_pending=dict(type="bool", default=False),
    wait_for=dict(type="dict", options=WAIT_ARGS),
)
"""The options of how a domain is ensured (shared with the ``domains`` module)."""
SPEC_ARGS = dict(
    name=dict(type="str"),
    virt=dict(type="str"),
    vcpus=dict(type="int"),
    memory_mib=dict(type="int"),
    max_memory_mib=dict(type="int"),
    max_vcpus=dict(type="int"),
    kernel=dict(type="str"),
    initrd=dict(type="str"),
    cmdline=dict(type="str"),
    disks=dict(type="list", elements="dict"),
    nics=dict(type="list", elements="dict"),
    filesystems=dict(type="list", elements="raw"),
    init=dict(type="list", elements="str"),
    uuid=dict(type="str"),
    description=dict(type="str"),
    autostart=dict(type="bool"),
    on_poweroff=dict(type="str"),
    on_reboot=dict(type="str"),
    on_crash=dict(type="str"),
    cpu=dict(type="dict"),
    nested=dict(type="bool"),
    machine=dict(type="str"),
    firmware=dict(type="str"),
    secure_boot=dict(type="bool"),
    xml_edits=dict(type="list", elements="dict"),
    idmap=dict(type="dict"),
    rng=dict(type="bool"),
)


def spec_of(module, params):
    """The DomainSpec the task describes: read from ``spec_file`` (the domain ``name``), or
    made of the spec options by hvlib's spec-file reader.

    Raises:
        SpecFileError: the options or the file are not a valid domain.
    """
    path = params.get("spec_file")
    if not path and params["state"] == "absent":  # a removal needs only the name
        return common.hvlib.DomainSpec(name=params["name"])
    if not path:
        return common.document("domain", params, SPEC_KEYS).domains[0].spec
    docs = common.specfile.load(path).domains
    name = params.get("name")
    if name is None and len(docs) == 1:
        return docs[0].spec
    for doc in docs:
        if doc.spec.name == name:
            return doc.spec
    names = ", ".join(d.spec.name for d in docs) or "none"
    module.fail_json(msg=f"{path}: no domain named {name!r} (it has {names})", field="name")


def ensure(module, host, spec, params):
    """``host.domains.ensure`` of ``spec`` as the task's options say; the task's result."""
    state = common.state_enum(params["state"])
    try:
        result = host.domains.ensure(
            spec,
            state,
            check=module.check_mode,
            allow_restart=params["allow_restart"],
            allow_recreate=params["allow_recreate"],
            shutdown_timeout=params["shutdown_timeout"],
            force_shutdown=params["force"],
        )
    except common.hvlib.SpecError as err:
        if not (module.check_mode and HOST_REF.match(err.field or "")):
            raise
        return not_checked(module, spec, state, err)
    dom = result.domain
    wait = params.get("wait_for")
    if wait and dom is not None and not module.check_mode and state is common.hvlib.State.RUNNING:
        wait_ready(dom, wait)
    out = common.report(
        module,
        result,
        f"domain {spec.name}",
        forced=bool(result.forced),
        state=_state_of(dom, state, module.check_mode),
        addresses=_addresses(dom),
    )
    if params["fail_on_pending"] and out["pending"]:
        fields = ", ".join(c["field"] for c in out["pending"])
        out.update(failed=True, msg=f"{spec.name}: changes pending (need a restart): {fields}")
    return out


HOST_REF = re.compile(r"^(nics\[\d+\]\.network|disks\[\d+\]\.(pool|volume))$")
"""The fields hvlib's host check names when what a spec uses is not on the host (the spec
itself was checked before: any error on them from ``ensure`` is that one)."""


def not_checked(module, spec, state, err):
    """A check-mode result for a domain whose network, pool or volume is not on the host yet
    (an earlier task of the play would create it): it cannot be planned, so it is reported as
    changing, with a warning naming what is missing. A real run fails there instead."""
    module.warn(f"{spec.name}: not checked: {common.message(err)} (an earlier task may create it)")
    missing = common.hvlib.Change(err.field, None, err.value, common.hvlib.ChangeHow.STATE)
    result = common.Report([missing])
    return common.report(
        module, result, f"domain {spec.name}", forced=False, state=state.value, addresses={}
    )


def wait_ready(dom, wait):
    """Block until ``dom`` is ready as ``wait`` says.

    Raises:
        WaitTimeout: it was not in time. SpecError: a bad pattern or timeout.
    """
    ready, timeout = wait["ready"], wait["timeout"]
    if ready == "address":
        dom.wait_for_address(timeout)
    elif ready == "console":
        if not wait.get("pattern"):
            raise common.hvlib.SpecError("wait_for.pattern", "is needed for ready: console")
        dom.wait_for_console(re.compile(wait["pattern"]), timeout=timeout)
    else:
        ssh = wait.get("ssh")
        config = None
        if ssh:
            config = common.hvlib.SshConfig(
                user=ssh["user"], key=ssh["key_file"], known_hosts=ssh["known_hosts"]
            )
        dom.wait_ready(timeout, common.hvlib.Ready.SSH, ssh=config)


def _state_of(dom, wanted, check_mode):
    if dom is None:
        return wanted.value if check_mode else "absent"
    return (wanted if check_mode else dom.state).value


def _addresses(dom):
    """The guest's addresses by MAC, as hvlib reads them (none from a domain not running)."""
    if dom is None or not dom.state.is_active:
        return {}
    try:
        found = dom.addresses()
    except (common.hvlib.Unsupported, common.hvlib.InvalidState):
        return {}
    return common.plain(found)
