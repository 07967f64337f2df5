"""Checks of libvirt connection URIs before they are opened.

Some URI query options make libvirt's client run commands or skip host-key checks
(``command=``, ``netcat=``, ``no_verify=1``, ``known_hosts_verify=ignore``...). hvlib refuses
them unless the caller allows them by name, so a URI that came from a config file cannot
quietly execute something or accept any server. libvirt 9.0's plain ``+ssh`` transport ignores
``known_hosts`` (FIELD-NOTES): a URI that pins host keys with it is refused with the advice to
use ``+libssh``. Pure string handling; no libvirt here.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

from hvlib.errors import SpecError

RISKY_OPTIONS = {
    "command": "makes libvirt run this command instead of the remote daemon",
    "netcat": "makes libvirt run this command on the remote host",
    "proxy": "chooses the remote proxy command",
    "no_verify": "skips the server certificate check (TLS)",
    "known_hosts_verify": "can turn off SSH host-key checks",
    "sshauth": "can allow agent or password logins",
}


def check_uri(uri: str, allow: Iterable[str] = ()) -> str:
    """Return ``uri`` if it is safe to open, else raise.

    Raises:
        SpecError: a risky option not in ``allow`` (the message names it and why), a
            ``known_hosts`` pin on the plain ``+ssh`` transport, or a malformed URI.
    """
    allowed = set(allow)
    try:
        parts = urlsplit(uri)
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError as e:
        raise SpecError("uri", f"not a valid URI: {e}", uri) from None
    if not parts.scheme:
        raise SpecError("uri", "needs a scheme such as qemu:///system", uri)
    for name, value in options.items():
        if name in RISKY_OPTIONS and name not in allowed and not _harmless(name, value):
            raise SpecError(
                "uri",
                f"option {name}= {RISKY_OPTIONS[name]}; pass "
                f"allow_uri_options=[{name!r}] to allow it",
                uri,
            )
    if parts.scheme.endswith("+ssh") and "known_hosts" in options:
        raise SpecError(
            "uri",
            "libvirt 9.0's +ssh transport ignores known_hosts (it would not "
            "check the pinned key): use the +libssh transport",
            uri,
        )
    return uri


def _harmless(name: str, value: str) -> bool:
    if name == "no_verify":
        return value in ("", "0")
    if name == "known_hosts_verify":
        return value in ("normal", "auto")
    return name == "sshauth" and value == "privkey"


def is_remote(uri: str) -> bool:
    """True when the URI names a transport or a host (libvirt connects over the network)."""
    parts = urlsplit(uri)
    return "+" in parts.scheme or bool(parts.hostname)
