"""Checks of libvirt connection URIs before they are opened: the one guard every open passes.

Some URI query options make libvirt's client run programs or weaken its checks of the server;
hvlib refuses them unless the caller allows them by name, so a URI that came from a config
file cannot quietly execute something or accept any server. The options are read exactly as
libvirt 9.0 reads them (``virURIParseParams`` in src/util/viruri.c, the remote driver's
``doRemoteOpen``), because a guard that reads them any other way can be walked around:

- options are separated by ``&``; only when no ``&`` follows does ``;`` separate them
  (``a=1;command=x`` is two options, ``a=1;command=x&b=2`` is ``a`` = ``1;command=x`` and
  ``b``);
- names and values are percent-decoded (``%63ommand`` is ``command``); ``+`` stays ``+``;
  a decoded NUL ends the string (``command%00x`` is ``command``);
- names are matched without regard to ASCII case (``COMMAND``, ``Known_Hosts_Verify``), and
  so are the values of ``known_hosts_verify`` and ``sshauth``;
- an option may repeat: the remote driver takes the last, ``virURIGetParam`` the first, so
  hvlib checks every occurrence; an option written without ``=`` has the value ``""``;
  ``=value`` and empty sections are ignored (a bare ``=`` makes libvirt read a name that
  begins with ``=``, which no driver takes: ignored too, see :func:`ignorable`);
- the transport (after the first ``+`` of the scheme) is matched without regard to case.

What is refused (:data:`RISKY_OPTIONS` says why for each): ``command``, ``netcat``,
``proxy``, ``name``, ``tls_priority``; ``no_verify`` unless it reads as the integer 0;
``known_hosts_verify`` unless ``normal``; ``sshauth`` unless every method is ``privkey``;
and any option libvirt 9.0 does not define (:data:`HARMLESS_OPTIONS` lists those that are
accepted as they are: ``socket``, ``mode``, ``keyfile``, ``known_hosts``, ``pkipath``,
``auth``, ``authfile``, ``no_tty``, ``no_sanity``). libvirt 9.0's plain ``+ssh`` transport
ignores ``known_hosts`` (FIELD-NOTES): a URI that pins host keys with it is refused (in any
spelling) with the advice to use ``+libssh``. hvlib drives the ``qemu``, ``lxc``, ``xen`` and
``test`` drivers over the transports ``ssh``, ``libssh``, ``libssh2``, ``ext``, ``tcp``,
``tls`` and ``unix`` (or none); other schemes are refused. Pure string handling; no libvirt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from hvlib.errors import SpecError

RISKY_OPTIONS = {
    "command": "makes libvirt run this local program (the ssh binary, or the ext transport)",
    "netcat": "names the program libvirt runs on the remote host",
    "proxy": "chooses the program libvirt runs on the remote host (nc or virt-ssh-helper)",
    "name": "replaces the URI the remote daemon opens, which hvlib cannot check",
    "tls_priority": "sets GnuTLS's priorities, which can allow weak or unauthenticated TLS",
    "no_verify": "skips the server's certificate (TLS) or host-key (SSH) check unless it is 0",
    "known_hosts_verify": "auto accepts unknown SSH host keys and ignore checks none "
    "(only normal is accepted)",
    "sshauth": "can allow agent, password or keyboard logins (only privkey is accepted)",
}
"""Options libvirt 9.0 defines that can run a program or weaken a check, and why."""

HARMLESS_OPTIONS = frozenset(
    {
        "socket",  # the daemon's socket path (local, or on the remote host)
        "mode",  # which daemon: auto, legacy (libvirtd) or direct (virtqemud...)
        "keyfile",  # the SSH private key
        "known_hosts",  # the SSH known_hosts file (a pin: refused on plain +ssh)
        "pkipath",  # the directory of the TLS CA and client certificates (a pin)
        "auth",  # the client-side authentication type (the server decides)
        "authfile",  # the credentials file
        "no_tty",  # ssh without a terminal (stricter)
        "no_sanity",  # skip the client's checks of its own certificates
    }
)
"""Options libvirt 9.0 defines that cannot run a program or weaken a check."""

DRIVERS = frozenset({"qemu", "lxc", "xen", "test"})
"""The drivers (the scheme before ``+``) hvlib drives."""
TRANSPORTS = frozenset({"ssh", "libssh", "libssh2", "ext", "tcp", "tls", "unix"})
"""libvirt 9.0's transports (the scheme after ``+``)."""
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
"""The transports that log in over SSH (``qemu+ssh://``, ``qemu+libssh://``, ...)."""

_URI_TEXT = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_STRTOL_INT = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")


@dataclass(frozen=True)
class Option:
    """One query option as libvirt reads it."""

    written: str
    """The name as written in the URI (before percent-decoding)."""
    name: str
    """The name after percent-decoding, cut at a decoded NUL."""
    value: str
    """The value after percent-decoding, cut at a decoded NUL (``""`` when absent)."""

    @property
    def key(self) -> str:
        """The name as libvirt compares it: ASCII letters lowered."""
        return ascii_lower(self.name)


@dataclass(frozen=True)
class ParsedUri:
    """A libvirt URI taken apart as libvirt takes it apart."""

    scheme: str
    driver: str
    """The scheme before ``+``, ASCII-lowered (``qemu``)."""
    transport: str | None
    """The scheme after the first ``+``, ASCII-lowered (``ssh``), or None."""
    options: tuple[Option, ...]
    """Every query option in order, repetitions included."""

    def named(self, key: str) -> list[Option]:
        """Every occurrence of the option ``key`` (any spelling), in order."""
        return [o for o in self.options if o.key == key]


def ascii_lower(text: str) -> str:
    """``text`` with ASCII letters lowered and nothing else changed (as C's strcasecmp)."""
    return text.translate(_ASCII_LOWER)


def unescape(text: str) -> str:
    """Percent-decode ``text`` as libxml2's ``xmlURIUnescapeString`` does (``+`` stays),
    then cut it at the first decoded NUL, as a C string would end there. Bytes that are not
    UTF-8 are kept as surrogate escapes."""
    raw = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and i + 2 < len(text) and _is_hex(text[i + 1 : i + 3]):
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw += text[i].encode("utf-8", "surrogateescape")
            i += 1
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _is_hex(pair: str) -> bool:
    return len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair)


def parse_options(query: str) -> list[Option]:
    """The options of a URI's query (the text between ``?`` and ``#``), split, decoded and
    skipped exactly as libvirt 9.0's ``virURIParseParams`` does. Pure."""
    out: list[Option] = []
    rest = query
    while rest:
        end = rest.find("&")
        if end < 0:
            end = rest.find(";")
        if end < 0:
            end = len(rest)
        option = _option(rest[:end], rest)
        if option is not None:
            out.append(option)
        rest = rest[end + 1 :]
    return out


def _option(section: str, rest: str) -> Option | None:
    """One section of the query; ``rest`` is the query from this section on."""
    eq = section.find("=")
    if not section:
        return None  # an empty section ("&&")
    if eq < 0:
        return Option(section, unescape(section), "")  # "name" alone: the value is ""
    if eq + 1 == len(section):
        # "name=". For a bare "=" libxml2 is asked to decode 0 bytes, which it takes as "the
        # whole string": the name is the rest of the query (it begins with "=", so it can
        # never be an option libvirt knows).
        return Option(section[:eq] or rest, unescape(section[:eq] or rest), "")
    if eq == 0:
        return None  # "=value" is ignored
    return Option(section[:eq], unescape(section[:eq]), unescape(section[eq + 1 :]))


def parse(uri: str) -> ParsedUri:
    """Take ``uri`` apart as libvirt does. Pure.

    Raises:
        SpecError: not text, no scheme, or a character RFC 3986 does not allow in a URI
            (libvirt's parser, libxml2, refuses those too).
    """
    if not isinstance(uri, str):
        raise SpecError("uri", "must be a string", uri)
    if not _URI_TEXT.fullmatch(uri) or uri.count("#") > 1:
        raise SpecError(
            "uri",
            "not a valid URI: spaces, control characters, non-ASCII characters, a stray % "
            "or a second # must be percent-encoded",
            uri,
        )
    scheme, colon, _ = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise SpecError("uri", "needs a scheme such as qemu:///system", uri)
    driver, plus, transport = scheme.partition("+")
    before_fragment = uri.partition("#")[0]
    query = before_fragment.partition("?")[2]
    return ParsedUri(
        scheme,
        ascii_lower(driver),
        ascii_lower(transport) if plus else None,
        tuple(parse_options(query)),
    )


def check_uri(uri: str, allow: Iterable[str] = ()) -> str:
    """Return ``uri`` if it is safe to open, else raise.

    ``allow`` names options to accept whatever their value (matched without regard to
    case). Every occurrence of every option is checked (see the module's docstring).

    Raises:
        SpecError: a risky or unknown option not in ``allow`` (the message names it and
            why), a ``known_hosts`` pin on the plain ``+ssh`` transport, a driver or
            transport hvlib does not drive, or a malformed URI (``field`` is ``"uri"``);
            ``allow`` is not a collection of names (``field`` is ``"allow_uri_options"``).
    """
    allowed = allowed_names(allow)
    parsed = parse(uri)
    _check_scheme(parsed, uri)
    for option in parsed.options:
        if ignorable(option) or option.key in allowed:
            continue
        if not harmless(option):
            raise SpecError("uri", _refusal(option), uri)
    if parsed.transport == "ssh" and parsed.named("known_hosts"):
        raise SpecError(
            "uri",
            "libvirt 9.0's +ssh transport ignores known_hosts (it would not "
            "check the pinned key): use the +libssh transport",
            uri,
        )
    return uri


def allowed_names(allow: Iterable[str]) -> frozenset[str]:
    """The option names of ``allow``, ASCII-lowered.

    Raises:
        SpecError: ``allow`` is a single string, not iterable, or holds a non-string.
    """
    if isinstance(allow, str | bytes):
        raise SpecError(
            "allow_uri_options", "must be a list of option names, not one string", allow
        )
    try:
        names = list(allow)
    except TypeError:
        raise SpecError("allow_uri_options", "must be a list of option names", allow) from None
    for name in names:
        if not isinstance(name, str):
            raise SpecError("allow_uri_options", "must hold option names (strings)", name)
    return frozenset(ascii_lower(n) for n in names)


def _check_scheme(parsed: ParsedUri, uri: str) -> None:
    if parsed.driver not in DRIVERS:
        raise SpecError(
            "uri",
            f"driver {parsed.driver!r}: hvlib drives {', '.join(sorted(DRIVERS))} only",
            uri,
        )
    if parsed.transport is not None and parsed.transport not in TRANSPORTS:
        raise SpecError(
            "uri",
            f"transport {parsed.transport!r}: libvirt has {', '.join(sorted(TRANSPORTS))}",
            uri,
        )


def ignorable(option: Option) -> bool:
    """An option no driver can take for one of its own: an empty name (``%00=x``), or one
    that begins with ``=`` (what libvirt makes of a bare ``=`` section: the rest of the
    query); libvirt's drivers compare whole names, and none is empty or begins so."""
    return option.key[:1] in ("", "=")


def harmless(option: Option) -> bool:
    """Whether libvirt 9.0 reading ``option`` can neither run a program nor weaken a check."""
    key, value = option.key, option.value
    if key in HARMLESS_OPTIONS:
        return True
    if key == "no_verify":
        return _strtol_zero(value)
    if key == "known_hosts_verify":
        return ascii_lower(value) == "normal"
    if key == "sshauth":
        return all(ascii_lower(m) == "privkey" for m in value.split(","))
    return False


def _strtol_zero(value: str) -> bool:
    """libvirt reads ``no_verify`` with ``virStrToLong_i`` (strtol, base 10, the whole
    string): leading white space and a sign are allowed, nothing may follow the digits."""
    return bool(_STRTOL_INT.fullmatch(value)) and int(value) == 0


def _refusal(option: Option) -> str:
    key = option.key
    spelled = "" if option.written == key else f" (written {option.written!r})"
    why = RISKY_OPTIONS.get(
        key, "is not an option hvlib knows to be harmless (libvirt passes it on to the driver)"
    )
    return f"option {key}={spelled} {why}; pass allow_uri_options=[{key!r}] to allow it"


def is_remote(uri: str) -> bool:
    """True when the URI names a transport or a host (libvirt connects over the network)."""
    parts = urlsplit(uri)
    return "+" in uri.partition(":")[0] or bool(parts.hostname)


def transport_of(uri: str) -> str | None:
    """The transport of ``uri``, ASCII-lowered as libvirt matches it (``"ssh"`` for
    ``qemu+SSH://``), or None (``qemu:///``)."""
    scheme = uri.partition(":")[0]
    _, plus, transport = scheme.partition("+")
    return ascii_lower(transport) if plus else None


def format_options(options: Iterable[tuple[str, str]]) -> str:
    """A query that libvirt reads back as exactly ``options`` (names and values
    percent-encoded but for letters, digits, ``-._~`` and ``/``; joined by ``&``). Pure."""
    from urllib.parse import quote

    def enc(text: str) -> str:
        return quote(text, safe="/", errors="surrogateescape")

    return "&".join(f"{enc(k)}={enc(v)}" for k, v in options)
