# Copyright: hvlib contributors
# Apache License 2.0 (see the hvlib repository's LICENSE)
"""What every hvlib.libvirt module shares: the connection options, running one hvlib call as
a task (hvlib's errors become task failures carrying hvlib's message and field, never a
traceback), and turning hvlib's change reports into ``changed``, ``changes`` and ``diff``.

Must not: hold any libvirt logic (every decision is hvlib's), import libvirt, or guess a
result hvlib did not report.
"""

from __future__ import annotations

import enum
import hashlib
import json
import traceback

from ansible.module_utils.basic import missing_required_lib

try:
    import hvlib
    from hvlib import specfile

    HVLIB_IMPORT_ERROR = None
except ImportError:  # reported by require_hvlib, as a task failure
    hvlib = None
    specfile = None
    HVLIB_IMPORT_ERROR = traceback.format_exc()

CONNECTION_ARGS = dict(
    uri=dict(type="str", default="qemu:///system"),
    netns=dict(type="str"),
)
"""The options every module takes (see the ``hvlib.libvirt.connection`` doc fragment)."""


def require_hvlib(module):
    """Fail the task, saying which interpreter lacks it, unless hvlib imports."""
    if HVLIB_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("hvlib"), exception=HVLIB_IMPORT_ERROR)


def connect(module):
    """An :class:`hvlib.Host` on the task's ``uri`` (and ``netns``), no polling thread."""
    return hvlib.connect(module.params["uri"], netns=module.params["netns"], poll_interval=None)


def run(module, work):
    """``work(host)`` on a host opened for the task; any hvlib error fails the task with
    hvlib's message (and ``field`` when hvlib names one). Returns what ``work`` returns."""
    require_hvlib(module)
    try:
        with connect(module) as host:
            return work(host)
    except hvlib.HvlibError as err:
        fail(module, err)


def fail(module, err, **extra):
    """Fail the task with hvlib's error ``err``: its message, its class and its field."""
    out = dict(msg=message(err), error=type(err).__name__)
    field = getattr(err, "field", None)
    if field:
        out["field"] = field
    name = getattr(err, "name", None)
    if name:
        out["name"] = name
    out.update(extra)
    module.fail_json(**out)


def message(err):
    """hvlib's message for ``err``; a spec-file error about options given inline (the
    module's own YAML text, not a file of the user's) without its meaningless line."""
    if isinstance(err, hvlib.SpecError) and getattr(err, "path", None) == INLINE:
        return str(hvlib.SpecError(err.field, err.rule, err.value))
    return str(err)


INLINE = "<task options>"
"""The path spec documents built from a task's options are read under."""


def document(kind, params, keys=None):
    """The spec-file document ``kind`` made of the task's ``params`` (those of ``keys`` that
    are set; all of them when ``keys`` is None), read by hvlib's own spec-file reader: every
    check and every error (naming the field, or an unknown key) is the library's. Returns
    the :class:`hvlib.specfile.SpecFile`.

    Raises:
        SpecFileError: the options are not a valid document.
    """
    doc = {"kind": kind}
    for key in params if keys is None else keys:
        if key != "kind" and params.get(key) is not None:
            doc[key] = plain(params[key])
    return specfile.loads(json.dumps(doc), path=INLINE)


def plain(value):
    """``value`` as JSON-safe data (enums by their value, other objects by their text)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return str(value)


def change_dict(change):
    """One :class:`hvlib.Change` as the task returns it: field, before, after, how."""
    return dict(
        field=change.field,
        before=plain(change.before),
        after=plain(change.after),
        how=change.how.value,
    )


def report(module, result, header, **extra):
    """The task's result for an hvlib change report: ``changed`` exactly when the report
    lists a change, ``changes`` and ``pending`` as field/before/after/how, and with --diff
    the before and after of each field the report names (what the spec owns that differs)."""
    changes = list(result.changes)
    pending = list(getattr(result, "pending", []) or [])
    out = dict(
        changed=bool(changes),
        changes=[change_dict(c) for c in changes],
        pending=[change_dict(c) for c in pending],
    )
    if module._diff and (changes or pending):
        out["diff"] = diff_of(changes + pending, header)
    out.update(extra)
    return out


def diff_of(changes, header):
    """Ansible's diff of ``changes``: one ``field: value`` line per field, before and after."""

    def lines(side):
        return "".join(
            f"{c.field}: {json.dumps(plain(getattr(c, side)), sort_keys=True)}\n" for c in changes
        )

    return dict(
        before=lines("before"),
        after=lines("after"),
        before_header=f"{header} (before)",
        after_header=f"{header} (after)",
    )


def state_enum(word):
    """The :class:`hvlib.State` a state word of the spec files names (``shut-off``)."""
    return hvlib.State(word)


class Report:
    """A change report made by a module from hvlib's own plan (a pool's ``plan_dir``) or
    from a removal it makes through hvlib: the fields :func:`report` reads."""

    def __init__(self, changes=None, pending=None):
        self.changes = list(changes or [])
        self.pending = list(pending or [])


def removal(what, before):
    """The change a removal of ``what`` (a network, a pool, a volume) is: before -> None."""
    return hvlib.Change(what, before, None, hvlib.ChangeHow.STATE)


def describe_volume(fmt, backing, size_mib, data):
    """What a volume not made yet will be, in hvlib's words (a check of a volume whose pool
    does not exist yet either)."""
    from hvlib.model.volplan import describe_volume as describe

    digest = None if data is None else hashlib.sha256(data).hexdigest()
    return describe(fmt or ("qcow2" if backing else "raw"), backing, size_mib, digest)


def seed(user_data, meta_data, network_config):
    """The bytes of hvlib's NoCloud seed ISO for these inputs (a mapping or text each).

    Raises:
        SpecError: a value of another type, or too large.
    """
    from hvlib.model.cloudinit import seed as build

    return build(user_data, meta_data, network_config)
