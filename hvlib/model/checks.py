"""Argument checks shared by every public entry point: types, numbers, seconds, enums.

A check either returns the value (converted where the rule says so) or raises
:class:`hvlib.SpecError` naming the field or argument. The rules, the same everywhere:

- a ``bool`` is not a number, and an ``int`` field takes no ``float`` (``512.0``) either;
- a timeout or interval is a finite ``int`` or ``float`` between 0 (or just above, where 0
  would spin) and :data:`SECONDS_MAX`; ``inf`` and ``nan`` are refused;
- an enum argument takes the enum's member or the member's value string (``State.RUNNING``
  or ``"running"``, as spec files and the CLI spell it); any other string is refused with
  the choices;
- a list field takes a list, a tuple or another ordered iterable (kept as a tuple), never a
  string, bytes, a mapping, a set (no order) or a single item;
- a path field takes a ``str`` or an ``os.PathLike`` (kept as a ``str``);
- text holds nothing XML cannot carry (:func:`check_text`), a name is libvirt-safe
  (:func:`check_name`), a host path is absolute and without ``..`` (:func:`check_path`).

:func:`check_fields` applies these rules to every field of a spec dataclass from its type
annotations, so a field added later is checked without being listed anywhere.
This module neither renders XML nor talks to libvirt.
"""

from __future__ import annotations

import enum
import functools
import math
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import fields, is_dataclass
from pathlib import PurePosixPath
from types import NoneType, UnionType
from typing import Any, TypeAlias, TypeVar

from hvlib.errors import SpecError

E = TypeVar("E", bound=enum.Enum)

SECONDS_MAX = 365 * 86400
"""The longest timeout or interval hvlib takes, in seconds (a year; longer ones are refused
rather than overflowing a clock or a lock)."""


def check_int(fieldname: str, value: object, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]``.

    Raises:
        SpecError: not an ``int`` (a bool or float is not), or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(fieldname, "must be an integer", value)
    if not low <= value <= high:
        raise SpecError(fieldname, f"must be between {low} and {high}", value)
    return value


def check_bool(fieldname: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False``.

    Raises:
        SpecError: anything else (``0``, ``1``, ``"yes"``, None).
    """
    if not isinstance(value, bool):
        raise SpecError(fieldname, "must be true or false", value)
    return value


def check_seconds(
    fieldname: str, value: object, *, positive: bool = False, optional: bool = False
) -> float:
    """``value`` as a number of seconds: finite, at least 0 (above 0 with ``positive``), at
    most :data:`SECONDS_MAX`. With ``optional`` None passes (returned as ``math.inf``:
    no limit), else None is refused.

    Raises:
        SpecError: not an int or float (bools are not), nan, infinite, negative (or 0 with
            ``positive``), or above :data:`SECONDS_MAX`.
    """
    if value is None and optional:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = "a number of seconds or None" if optional else "a number of seconds"
        raise SpecError(fieldname, f"must be {what}", value)
    if not math.isfinite(value):
        raise SpecError(fieldname, "must be a finite number of seconds", value)
    low_ok = value > 0 if positive else value >= 0
    if not low_ok:
        raise SpecError(fieldname, "must be above 0" if positive else "must not be negative", value)
    if value > SECONDS_MAX:
        raise SpecError(fieldname, f"must be at most {SECONDS_MAX} s (a year)", value)
    return float(value)


def as_enum(cls: type[E], fieldname: str, value: object) -> E:
    """``value`` as a member of ``cls``: the member itself or its value string.

    Raises:
        SpecError: anything else, listing the choices.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        for member in cls:
            if member.value == value:
                return member
    choices = ", ".join(str(m.value) for m in cls)
    raise SpecError(fieldname, f"must be one of {choices}", value)


def as_enums(cls: type[E], fieldname: str, value: object) -> tuple[E, ...]:
    """One member of ``cls`` or several (see :func:`as_enum`) as a tuple; a single string is
    one value, not a sequence of characters.

    Raises:
        SpecError: an empty collection, or an item that is not a member (naming its index).
    """
    if isinstance(value, (cls, str)):
        return (as_enum(cls, fieldname, value),)
    items = as_tuple(fieldname, value, f"a {cls.__name__} or a list of them")
    if not items:
        raise SpecError(fieldname, "must not be empty", value)
    return tuple(as_enum(cls, f"{fieldname}[{i}]", v) for i, v in enumerate(items))


def as_tuple(fieldname: str, value: object, what: str) -> tuple[Any, ...]:
    """``value`` (an ordered collection) as a tuple.

    Raises:
        SpecError: a string, bytes, a mapping, a set, or anything not iterable (a single
            item where a list is wanted); ``what`` says what was wanted.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping, Set)) or not isinstance(value, Iterable):
        raise SpecError(fieldname, f"must be {what}", value)
    return tuple(value)


PathArg: TypeAlias = str | os.PathLike[str]
"""A filesystem path: a string or an :class:`os.PathLike` (what every path argument takes)."""


def as_path_text(fieldname: str, value: object) -> str:
    """``value`` (a ``str`` or an ``os.PathLike`` of one) as a ``str``.

    Raises:
        SpecError: anything else (bytes paths included).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise SpecError(fieldname, "must be a path (a string)", value)
    return value


# -- text, names and paths ----------------------------------------------------------------

NAME_MAX = 64
"""The longest object name (domain, network, pool, volume) hvlib takes."""
# Every pattern is matched whole (``fullmatch``): ``$`` would also match before a trailing
# newline, and a value libvirt normalises differently from the spec never converges.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_text(
    fieldname: str,
    value: str,
    *,
    max_len: int = 4096,
    allow_empty: bool = False,
    multiline: bool = False,
) -> str:
    """Reject strings XML cannot carry (NUL, control characters) or of absurd length. A tab
    is allowed; line breaks (``\\n``, ``\\r``) only with ``multiline``.

    Raises:
        SpecError: naming ``fieldname`` and the rule broken.
    """
    if not isinstance(value, str):
        raise SpecError(fieldname, "must be a string", value)
    if not value and not allow_empty:
        raise SpecError(fieldname, "must not be empty")
    if len(value) > max_len:
        raise SpecError(fieldname, f"must be at most {max_len} characters", len(value))
    allowed = "\t\n\r" if multiline else "\t"
    if any((ord(c) < 32 and c not in allowed) or ord(c) == 127 for c in value):
        raise SpecError(fieldname, "must not contain NUL or control characters", value)
    if any(0xD800 <= ord(c) <= 0xDFFF or ord(c) in (0xFFFE, 0xFFFF) for c in value):
        raise SpecError(fieldname, "must not contain characters XML cannot carry", value)
    return value


def check_name(fieldname: str, value: str) -> str:
    """Check an object name (domain, network, pool, volume) against libvirt-safe rules.

    Raises:
        SpecError: empty, longer than 64, or not ``[A-Za-z0-9][A-Za-z0-9_.+-]*``.
    """
    check_text(fieldname, value, max_len=NAME_MAX)
    if not _NAME_RE.fullmatch(value):
        raise SpecError(
            fieldname, "must start with a letter or digit and use only A-Z a-z 0-9 _ . + -", value
        )
    return value


def check_path(fieldname: str, value: str) -> str:
    """Check a host path: absolute, normalised, no ``..`` component. A path is otherwise
    free-form: any character a file name may hold but NUL and control characters (a
    trailing space or U+2028 is part of a name, not a typo hvlib could tell).

    Raises:
        SpecError: relative, containing ``..``, or not valid text.
    """
    check_text(fieldname, value)
    if not value.startswith("/"):
        raise SpecError(fieldname, "must be an absolute path", value)
    if ".." in PurePosixPath(value).parts:
        raise SpecError(fieldname, "must not contain '..'", value)
    return value


# -- every field of a spec dataclass, from its annotations --------------------------------------

Checker = Callable[[str, Any], Any]
"""Checks one value as a named field; returns it (converted) or raises SpecError."""


def check_fields(
    obj: Any,
    prefix: str = "",
    *,
    names: Mapping[str, str] | None = None,
    paths: Iterable[str] = (),
) -> None:
    """Check the type of every field of the frozen dataclass ``obj`` against its annotation
    (see the module's rules), storing converted values back (tuples, enums, path strings).

    Errors name ``prefix + field`` (or ``prefix + names[field]``); the fields in ``paths``
    take ``os.PathLike`` values too.

    Raises:
        SpecError: naming the first field of the wrong type.
    """
    renames = names or {}
    path_fields = frozenset(paths)
    cls: type = type(obj)
    for name, checker in _checkers(cls):
        label = prefix + renames.get(name, name)
        value = getattr(obj, name)
        if name in path_fields and value is not None:
            value = as_path_text(label, value)
        checked = checker(label, value)
        if checked is not getattr(obj, name):
            object.__setattr__(obj, name, checked)


@functools.cache
def _checkers(cls: type) -> tuple[tuple[str, Checker], ...]:
    """One checker per dataclass field of ``cls`` (annotations resolved once per class)."""
    assert is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    return tuple((f.name, _checker(hints[f.name])) for f in fields(cls))


def _checker(hint: Any) -> Checker:
    """The checker of one annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (UnionType, typing.Union):
        return _optional(hint, args)
    if origin is Sequence or hint is Sequence:
        return _sequence(args[0] if args else Any)
    if isinstance(origin, type) and issubclass(origin, Callable):  # type: ignore[arg-type]
        return _callable
    if hint is Any:
        return lambda _label, value: value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return functools.partial(_enum, hint)
    if hint in (int, bool, str):
        return _SCALARS[hint]
    if isinstance(hint, type):
        return functools.partial(_instance, hint)
    raise TypeError(f"no checker for annotation {hint!r}")  # a new kind of field: add one


def _optional(hint: Any, args: tuple[Any, ...]) -> Checker:
    inner = [a for a in args if a is not NoneType]
    if len(inner) != 1 or len(args) != 2:
        raise TypeError(f"no checker for annotation {hint!r}")
    check = _checker(inner[0])

    def optional(label: str, value: Any) -> Any:
        return None if value is None else check(label, value)

    return optional


def _sequence(item: Any) -> Checker:
    check = _checker(item)
    what = _describe(item)

    def sequence(label: str, value: Any) -> tuple[Any, ...]:
        items = as_tuple(label, value, f"a list of {what}")
        checked = tuple(check(f"{label}[{i}]", v) for i, v in enumerate(items))
        return checked

    return sequence


def _describe(hint: Any) -> str:
    if hint is str:
        return "strings"
    return f"{getattr(hint, '__name__', hint)}" if hint is not Any else "items"


def _callable(label: str, value: Any) -> Any:
    if not callable(value):
        raise SpecError(label, "must be a function", value)
    return value


def _enum(cls: type[enum.Enum], label: str, value: Any) -> enum.Enum:
    return as_enum(cls, label, value)


def _instance(cls: type, label: str, value: Any) -> Any:
    if not isinstance(value, cls):
        article = "an" if cls.__name__[:1] in "AEIOU" else "a"
        raise SpecError(label, f"must be {article} {cls.__name__}", value)
    return value


def _int(label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(label, "must be an integer", value)
    return value


def _str(label: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(label, "must be a string", value)
    return value


_SCALARS: dict[Any, Checker] = {int: _int, bool: check_bool, str: _str}
