"""How hvlib logs in to a guest over SSH (:class:`SshConfig`), and what a command did
(:class:`CommandResult`). Pure data with their checks: no sockets, no paramiko, no libvirt.
"""

from __future__ import annotations

import dataclasses
import re

from hvlib.errors import Command, RemoteCommandError, SpecError
from hvlib.model.checks import PathArg

_KEY_TYPE = re.compile(r"[a-z][a-z0-9@.+-]*")


@dataclasses.dataclass(frozen=True)
class SshConfig:
    """How hvlib logs in to VM guests over SSH.

    Given to ``hvlib.connect(..., ssh=SshConfig(...))`` as the host's default, set per domain
    (``dom.ssh = SshConfig(...)``) or per call (``dom.exec(..., ssh=...)``).

    Host keys are checked strictly: the key the guest offers must be ``host_key`` (an OpenSSH
    public key line, ``"ssh-ed25519 AAAA..."``) or listed for the guest's address in
    ``known_hosts``. Accepting an unknown key is an explicit opt-in
    (``accept_unknown_host_key=True``, logged as a warning); a key that differs from a known
    one is always refused.

    ``address`` overrides the address API (e.g. a forwarded loopback port).

    Raises:
        SpecError: on construction, for a bad port, timeout or host key line.
    """

    user: str = "root"
    key: PathArg | None = None
    known_hosts: PathArg | None = None
    host_key: str | None = None
    port: int = 22
    accept_unknown_host_key: bool = False
    connect_timeout: float = 10.0
    address: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise SpecError("ssh.port", "must be an integer", self.port)
        if not 0 < self.port < 65536:
            raise SpecError("ssh.port", "must be between 1 and 65535", self.port)
        if not self.user:
            raise SpecError("ssh.user", "must not be empty")
        if self.connect_timeout <= 0:
            raise SpecError("ssh.connect_timeout", "must be positive", self.connect_timeout)
        if self.host_key is not None:
            check_key_line(self.host_key)

    @property
    def host_key_line(self) -> str | None:
        """``host_key`` reduced to ``"TYPE BASE64"`` (any comment dropped)."""
        if self.host_key is None:
            return None
        kind, blob = self.host_key.split()[:2]
        return f"{kind} {blob}"


def check_key_line(line: str) -> None:
    """Check an OpenSSH public key line (``TYPE BASE64 [comment]``).

    Raises:
        SpecError: it is not one.
    """
    import base64

    fields = line.split()
    if len(fields) < 2 or not _KEY_TYPE.fullmatch(fields[0]):
        raise SpecError("ssh.host_key", "must be an OpenSSH public key line 'TYPE BASE64'", line)
    try:
        base64.b64decode(fields[1], validate=True)
    except ValueError:
        raise SpecError("ssh.host_key", "the key is not valid base64", line) from None


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a command did: exit status, output (bytes, exactly as produced) and duration.

    A stream that was handed to an ``on_stdout``/``on_stderr`` callback is not kept here
    (its field is ``b""``). ``transport`` says which way the command ran: ``"ssh"``,
    ``"container"`` or ``"agent"``.
    """

    exit_status: int
    stdout: bytes
    stderr: bytes
    elapsed: float
    command: Command = ""
    transport: str = ""

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def stderr_text(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """True if the exit status is 0."""
        return self.exit_status == 0

    def check(self, name: str | None = None) -> CommandResult:
        """Return self if the command succeeded.

        Raises:
            RemoteCommandError: the exit status is not 0.
        """
        if self.exit_status != 0:
            raise RemoteCommandError(
                self.command, self.exit_status, self.stderr, stdout=self.stdout, name=name
            )
        return self


def check_ssh_config(field: str, value: object) -> None:
    """``value`` is None or an :class:`hvlib.SshConfig`.

    Raises:
        SpecError: naming ``field``.
    """
    if value is None:
        return
    if not isinstance(value, SshConfig):
        raise SpecError(field, "must be an hvlib.SshConfig or None", value)
