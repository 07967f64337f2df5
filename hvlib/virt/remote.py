"""Remote libvirt hosts over SSH with pinned host keys: the URI hvlib opens.

libvirt 9.0's plain ``+ssh`` transport (it runs the ``ssh`` binary) ignores ``known_hosts``,
``known_hosts_verify`` and ``sshauth`` (FIELD-NOTES): a URI that pins host keys with it would
not check them. ``+libssh`` honours them. So when a caller pins host keys (a ``known_hosts``
file, or an :class:`hvlib.SshConfig` with ``known_hosts`` or ``host_key``), hvlib:

- rewrites ``DRIVER+ssh://`` to ``DRIVER+libssh://`` (and says so in an INFO log line);
- adds ``known_hosts=PATH`` (libvirt then refuses a server whose key is not listed there);
- with a private key, adds ``keyfile=PATH`` and ``sshauth=privkey`` (only that key is tried:
  no agent, no password prompt).

:func:`pin_host_keys` is that rewrite, pure. :func:`remote_uri` is what :func:`hvlib.connect`
calls: it also turns an ``SshConfig.host_key`` line into a known_hosts file (libvirt reads
host keys from a file only), written once per key under ``~/.cache/hvlib/known_hosts/``.
Options are read as libvirt reads them (:func:`hvlib.model.uri.parse`: any case, ``;`` as well as
``&``, percent-decoding), and a rewritten URI's query is written in one unambiguous form
(:func:`hvlib.model.uri.format_options`) that libvirt reads back as the same options. No libvirt
here; :mod:`hvlib.model.uri` then checks the result like any other URI.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from hvlib.errors import SpecError
from hvlib.guest.config import SshConfig, check_ssh_config
from hvlib.model import uri as urimod
from hvlib.model.checks import PathArg, check_path
from hvlib.model.uri import SSH_TRANSPORTS, transport_of

log = logging.getLogger("hvlib")

__all__ = [
    "SSH_TRANSPORTS",
    "check_path_arg",
    "display_uri",
    "known_hosts_line",
    "pin_host_keys",
    "remote_uri",
    "transport_of",
    "write_known_hosts",
]
_PINS = ("known_hosts", "keyfile", "sshauth")
PINNING_TRANSPORT = "libssh"
"""The transport hvlib uses when host keys are pinned: it checks ``known_hosts``."""


def check_path_arg(fieldname: str, path: object) -> None:
    """``path`` is None, a str or an ``os.PathLike`` of str.

    Raises:
        SpecError: naming ``fieldname``.
    """
    if path is None:
        return
    if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
        raise SpecError(fieldname, "must be a path (str or os.PathLike)", path)


def pin_host_keys(
    uri: str, *, known_hosts: PathArg | None = None, keyfile: PathArg | None = None
) -> str:
    """``uri`` rewritten so that libvirt checks the SSH host key against ``known_hosts`` and
    logs in with ``keyfile`` only. Pure: nothing is read or opened.

    Without either argument the URI is returned unchanged. With ``known_hosts``, ``+ssh``
    becomes ``+libssh`` (``+libssh`` and ``+libssh2`` stay). With ``keyfile``,
    ``keyfile=`` is set and, on the libssh transports, ``sshauth=privkey``. Options are
    matched as libvirt matches them (any case, any separator); the rewritten query has each
    option once per occurrence, lower-cased, percent-encoded and joined by ``&``. Calling it
    again with the same arguments gives the same URI.

    Raises:
        SpecError: a relative path; a pin on a URI that is not an SSH transport; the URI
            already pins another known_hosts file or key file, or turns host-key checks off
            (``known_hosts_verify`` other than ``normal``) while keys are pinned.
    """
    if known_hosts is None and keyfile is None:
        return uri
    check_path_arg("known_hosts", known_hosts)
    check_path_arg("keyfile", keyfile)
    parsed = urimod.parse(uri)
    transport = parsed.transport
    if transport not in SSH_TRANSPORTS:
        raise SpecError(
            "uri", "known_hosts and keyfile apply to SSH transports only (qemu+ssh://...)", uri
        )
    options = [(o.key, o.value) for o in parsed.options if not urimod.ignorable(o)]
    if known_hosts is not None:
        _set_option(options, "known_hosts", _absolute("known_hosts", known_hosts), uri)
        verify = [v for k, v in options if k == "known_hosts_verify"]
        if any(urimod.ascii_lower(v) != "normal" for v in verify):
            raise SpecError("uri", "known_hosts_verify turns off the check of pinned keys", uri)
        if transport == "ssh":
            transport = PINNING_TRANSPORT
    if keyfile is not None:
        _set_option(options, "keyfile", _absolute("keyfile", keyfile), uri)
        if transport != "ssh" and not any(k == "sshauth" for k, _ in options):
            options.append(("sshauth", "privkey"))
    return _rebuilt(uri, f"{parsed.driver}+{transport}", options)


def _rebuilt(uri: str, scheme: str, options: list[tuple[str, str]]) -> str:
    """``uri`` with ``scheme`` and a query of exactly ``options``; the fragment kept."""
    rest, hash_, fragment = uri.partition(":")[2].partition("#")
    base = rest.partition("?")[0]
    query = urimod.format_options(options)
    return f"{scheme}:{base}" + (f"?{query}" if query else "") + f"{hash_}{fragment}"


def _absolute(fieldname: str, path: PathArg) -> str:
    text = check_path(fieldname, os.fspath(path))
    return os.path.normpath(text)


def _set_option(options: list[tuple[str, str]], name: str, value: str, uri: str) -> None:
    """Set ``name`` to ``value``; every occurrence already there must say the same."""
    for key, current in options:
        if key == name and os.path.normpath(current) != value:
            raise SpecError("uri", f"already sets {name}={current}, not {value}", uri)
    if not any(key == name for key, _ in options):
        options.append((name, value))


def remote_uri(
    uri: str,
    *,
    known_hosts: PathArg | None = None,
    keyfile: PathArg | None = None,
    ssh: SshConfig | None = None,
) -> str:
    """The URI :func:`hvlib.connect` opens for ``uri`` given the caller's SSH pins.

    ``ssh`` (an :class:`hvlib.SshConfig` for the *libvirt host*, not its guests) supplies
    ``known_hosts``, ``key`` and ``host_key`` where the arguments do not; a ``host_key`` line
    is written to a known_hosts file for the URI's host and port (``~/.cache/hvlib/
    known_hosts/``, one file per key, mode 0600). When the URI changes, one INFO line says
    which transport and which known_hosts file are used.

    Raises:
        SpecError: see :func:`pin_host_keys`; also ``host_key`` without a host in the URI,
            or both ``host_key`` and ``known_hosts`` given.
        OSError: the known_hosts file for ``host_key`` cannot be written.
    """
    if ssh is not None:
        check_ssh_config("host_ssh", ssh)
        keyfile = keyfile if keyfile is not None else ssh.key
        if ssh.host_key_line is not None:
            if known_hosts is not None or ssh.known_hosts is not None:
                raise SpecError("ssh.host_key", "give host_key or known_hosts, not both")
            known_hosts = write_known_hosts(uri, ssh.host_key_line)
        elif known_hosts is None:
            known_hosts = ssh.known_hosts
    result = pin_host_keys(uri, known_hosts=known_hosts, keyfile=keyfile)
    if result != uri:
        log.info(
            "%s: SSH host keys pinned (known_hosts=%s): using libvirt's +%s transport, which "
            "checks them (libvirt 9.0's +ssh does not)",
            display_uri(uri),
            known_hosts,
            transport_of(result),
        )
    return result


def display_uri(uri: str) -> str:
    """``uri`` without the SSH pin options (known_hosts, keyfile, sshauth): for log lines and
    messages. Pure."""
    base, sep, _ = uri.partition("#")[0].partition("?")
    try:
        options = urimod.parse(uri).options
    except SpecError:
        return base  # not a URI libvirt would open: show no query at all
    kept = [(o.name, o.value) for o in options if o.key not in _PINS]
    if not sep or not kept:
        return base
    return base + "?" + urimod.format_options(kept)


def known_hosts_line(uri: str, key_line: str) -> str:
    """The known_hosts line pinning ``key_line`` (``"TYPE BASE64"``) for the URI's host and
    port, as libssh looks it up (``host`` on port 22, else ``[host]:port``). Pure.

    Raises:
        SpecError: the URI names no host.
    """
    parts = urlsplit(uri)
    if not parts.hostname:
        raise SpecError("uri", "names no host to pin a key for", uri)
    try:
        port = parts.port or 22
    except ValueError:
        raise SpecError("uri", "has a port that is not a number from 0 to 65535", uri) from None
    name = parts.hostname if port == 22 else f"[{parts.hostname}]:{port}"
    return f"{name} {key_line}"


def write_known_hosts(uri: str, key_line: str, directory: Path | None = None) -> Path:
    """A known_hosts file holding only :func:`known_hosts_line` (made once per content, in
    ``directory``, default ``~/.cache/hvlib/known_hosts``, mode 0700, file mode 0600).

    Raises:
        SpecError: the URI names no host. OSError: it cannot be written.
    """
    line = known_hosts_line(uri, key_line) + "\n"
    folder = directory or Path.home() / ".cache" / "hvlib" / "known_hosts"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / hashlib.sha256(line.encode()).hexdigest()[:24]
    if not path.exists() or path.read_text() != line:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(line)
        os.replace(tmp, path)
    return path
