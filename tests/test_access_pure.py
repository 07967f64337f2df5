"""Guest access, the parts that need no guest: quoting, results, errors, host-key rules.

The remote command line is checked by running it under the local ``/bin/sh`` (the same role
the guest's login shell plays): whatever the arguments, the program receives exactly them.
"""

from __future__ import annotations

import base64
import hashlib
import io
import ipaddress
import json
import logging
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from hvlib import errors
from hvlib.errors import (
    CommandTimeout,
    GuestAccessError,
    HostKeyError,
    HvlibError,
    RemoteCommandError,
    SpecError,
)
from hvlib.guest import io as gio
from hvlib.guest import ssh
from hvlib.guest.config import CommandResult, SshConfig
from hvlib.guest.io import OutputSink
from hvlib.guest.sshtransport import pick_address

ARGV_DUMP = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def new_key_line() -> tuple[paramiko.PKey, str]:
    """A fresh ed25519 public key as a paramiko key and an OpenSSH line."""
    public = Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    kind, blob = line.decode().split()
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob)), f"{kind} {blob}"


def run_wrapped(command: str | tuple[str, ...]) -> tuple[int, bytes, bytes]:
    """Run hvlib's remote command line under the local /bin/sh, as a login shell would."""
    proc = subprocess.run(
        ["/bin/sh", "-c", ssh.wrap_command(command)], capture_output=True, timeout=30
    )
    return proc.returncode, proc.stdout, proc.stderr


# -- quoting and the remote command line --------------------------------------------------

argv_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30
)


@settings(max_examples=60, deadline=None)
@given(st.lists(argv_text, max_size=6))
def test_argv_reaches_the_program_unchanged(args: list[str]) -> None:
    code, out, err = run_wrapped((*ARGV_DUMP, *args))
    assert code == 0, err
    assert json.loads(out) == args
    assert err.startswith(ssh.PID_MARKER)


def test_string_command_goes_through_sh() -> None:
    code, out, _ = run_wrapped("echo $((6 * 7)) | tr 4 X; exit 5")
    assert (code, out) == (5, b"X2\n")


def test_argv_is_not_interpreted_by_a_shell() -> None:
    code, out, _ = run_wrapped(("echo", "$HOME", "`id`", ";", "|", "*", "'", '"'))
    assert code == 0
    assert out == b"$HOME `id` ; | * ' \"\n"


def test_command_runs_in_its_own_process_group() -> None:
    stat = "import os; print(os.getpid(), os.getpgrp(), os.getsid(0))"
    code, out, err = run_wrapped((sys.executable, "-c", stat))
    pid, pgid, sid = (int(x) for x in out.split())
    marker_pid = int(err.split(b"\n")[0][len(ssh.PID_MARKER) :])
    assert code == 0
    assert pid == pgid == sid == marker_pid


def test_exit_status_and_missing_program() -> None:
    assert run_wrapped(("sh", "-c", "exit 7"))[0] == 7
    assert run_wrapped(("no-such-program-hvlib",))[0] == 127


def test_kill_command() -> None:
    assert ssh.kill_command(1234) == "kill -9 -1234 2>/dev/null || kill -9 1234"
    for bad in (0, 1, -5):
        with pytest.raises(ValueError):
            ssh.kill_command(bad)


@pytest.mark.parametrize(
    "command",
    ["", "   ", "a\0b", [], [""], ["ls", "a\0"], ["ls", 3], b"ls"],
)
def test_malformed_commands_are_refused(command: object) -> None:
    with pytest.raises(SpecError):
        gio.normalize_command(command)  # type: ignore[arg-type]


def test_commands_are_normalized() -> None:
    assert gio.normalize_command(["a", "b c"]) == ("a", "b c")
    assert gio.normalize_command(("x",)) == ("x",)
    assert gio.normalize_command("ls -l") == "ls -l"
    assert gio.shell_argv("ls -l") == ["/bin/sh", "-c", "ls -l"]
    assert gio.shell_argv(("ls", "-l")) == ["ls", "-l"]


# -- the pid line on stderr ---------------------------------------------------------------


def feed(chunks: list[bytes]) -> tuple[int | None, bytes]:
    sink = OutputSink()
    pid_filter = ssh.PidFilter(sink)
    for chunk in chunks:
        pid_filter.stderr(chunk)
    pid_filter.finish()
    return pid_filter.pid, sink.collected[1]


def test_pid_line_removed_even_when_split() -> None:
    assert feed([b"hvlib-ex", b"ec-pid=42", b"\nreal error\n"]) == (42, b"real error\n")


def test_lines_before_the_pid_line_are_kept() -> None:
    assert feed([b"motd\nhvlib-exec-pid=7\nx"]) == (7, b"motd\nx")


def test_without_pid_line_everything_is_kept() -> None:
    assert feed([b"no newline here"]) == (None, b"no newline here")
    big = b"y" * 10000
    assert feed([big, b"\nhvlib-exec-pid=3\n"]) == (None, big + b"\nhvlib-exec-pid=3\n")


# -- results and errors -------------------------------------------------------------------


def test_result_text_replaces_bad_utf8() -> None:
    result = CommandResult(0, b"caf\xc3\xa9 \xff", b"\xfe", 0.1, ("x",))
    assert result.text == "café \ufffd"
    assert result.stderr_text == "\ufffd"
    assert result.ok


def test_check_raises_with_status_and_stderr() -> None:
    result = CommandResult(3, b"out", b"boom\n", 0.1, ("cat", "/etc/x"))
    with pytest.raises(RemoteCommandError) as info:
        result.check("vm1")
    err = info.value
    assert (err.exit_status, err.stderr, err.stdout) == (3, b"boom\n", b"out")
    assert str(err) == "vm1: 'cat /etc/x' exited with status 3: boom"
    assert isinstance(err, HvlibError)
    assert CommandResult(0, b"", b"", 0.0).check() is not None


def test_timeout_error_is_a_remote_command_error_and_a_timeout() -> None:
    err = CommandTimeout("sleep 9", 2.0, stdout=b"part", killed=True, name="vm")
    assert isinstance(err, RemoteCommandError)
    assert isinstance(err, TimeoutError)
    assert err.exit_status is None and err.stdout == b"part" and err.killed
    assert str(err) == "vm: 'sleep 9' did not finish within 2 s (killed)"


def test_output_sink_buffers_or_streams() -> None:
    seen: list[bytes] = []
    sink = OutputSink(on_stderr=seen.append)
    sink.stdout(b"a")
    sink.stdout(b"b")
    sink.stderr(b"e")
    assert sink.collected == (b"ab", b"")
    assert seen == [b"e"]


def test_decode_lines() -> None:
    lines: list[str] = []
    take = gio.decode_lines(lines.append)
    for piece in (b"one\ntw", b"o\xc3", b"\xa9\nthree"):
        take(piece)
    assert lines == ["one", "two\u00e9"]


def test_input_chunks() -> None:
    data = bytes(range(256)) * 1000
    assert b"".join(gio.input_chunks(data, 1000)) == data
    assert max(len(c) for c in gio.input_chunks(io.BytesIO(data), 4096)) == 4096
    assert b"".join(gio.input_chunks(io.BytesIO(data))) == data
    assert list(gio.input_chunks(None)) == []
    assert list(gio.input_chunks(memoryview(b"xy"))) == [b"xy"]


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 0}, "ssh.port"),
        ({"port": 70000}, "ssh.port"),
        ({"port": True}, "ssh.port"),
        ({"user": ""}, "ssh.user"),
        ({"host_key": "AAAA"}, "ssh.host_key"),
        ({"host_key": "ssh-ed25519 not*base64"}, "ssh.host_key"),
        ({"connect_timeout": 0}, "ssh.connect_timeout"),
    ],
)
def test_bad_ssh_config(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        SshConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_host_key_line_drops_the_comment() -> None:
    _, line = new_key_line()
    assert SshConfig(host_key=line + " root@guest").host_key_line == line


def test_pick_address_prefers_ipv4_and_skips_link_local() -> None:
    iface = ipaddress.ip_interface
    found = {
        "52:54:00:00:00:01": [iface("fe80::1/64"), iface("2001:db8::5/64")],
        "52:54:00:00:00:02": [iface("127.0.0.1/8"), iface("192.0.2.7/24")],
    }
    assert pick_address(found) == "192.0.2.7"
    assert pick_address({"m": [iface("2001:db8::5/64")]}) == "2001:db8::5"
    assert pick_address({"m": [iface("169.254.1.1/16")], "n": []}) is None


# -- host keys ----------------------------------------------------------------------------


def test_fingerprint_is_openssh_sha256() -> None:
    key, line = new_key_line()
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    assert errors.key_fingerprint(line) == f"ssh-ed25519 SHA256:{digest}"


def test_unknown_host_key_message() -> None:
    _, offered = new_key_line()
    err = HostKeyError("192.0.2.2:22", offered, [], name="vm")
    text = str(err)
    assert errors.key_fingerprint(offered) in text
    assert "unknown" in text and "accept_unknown_host_key=True" in text
    assert err.expected == () and err.offered == offered


def test_changed_host_key_message_names_both_keys() -> None:
    _, offered = new_key_line()
    _, pinned = new_key_line()
    text = str(HostKeyError("[fd00::2]:2222", offered, [pinned]))
    assert errors.key_fingerprint(offered) in text
    assert errors.key_fingerprint(pinned) in text
    assert "CHANGED" in text and "[fd00::2]:2222" in text


def test_check_host_key_rules(caplog: pytest.LogCaptureFixture) -> None:
    good, good_line = new_key_line()
    other, _ = new_key_line()
    pinned = SshConfig(host_key=good_line)
    ssh.check_host_key(good, [good], pinned, "h:22")
    with pytest.raises(HostKeyError, match="CHANGED"):
        ssh.check_host_key(other, [good], pinned, "h:22")
    with pytest.raises(HostKeyError, match="unknown"):
        ssh.check_host_key(other, [], SshConfig(), "h:22")
    # the opt-in accepts an unknown key (with a warning) but never a changed one
    opt_in = SshConfig(accept_unknown_host_key=True)
    with caplog.at_level(logging.WARNING, logger="hvlib"):
        ssh.check_host_key(other, [], opt_in, "h:22")
    assert "accepting unknown SSH host key" in caplog.text
    with pytest.raises(HostKeyError):
        ssh.check_host_key(other, [good], opt_in, "h:22")


def test_expected_keys_from_pin_and_known_hosts(tmp_path: Path) -> None:
    k1, line1 = new_key_line()
    k2, line2 = new_key_line()
    k3, line3 = new_key_line()
    known = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("192.0.2.9")
    known.write_text(f"192.0.2.9 {line2}\n[192.0.2.9]:2222 {line3}\n{hashed} {line3}\n")
    both = ssh.expected_host_keys(SshConfig(host_key=line1, known_hosts=known), "192.0.2.9")
    assert [k.asbytes() for k in both] == [k1.asbytes(), k2.asbytes(), k3.asbytes()]
    on_port = ssh.expected_host_keys(SshConfig(known_hosts=known, port=2222), "192.0.2.9")
    assert [k.asbytes() for k in on_port] == [k3.asbytes()]
    assert ssh.expected_host_keys(SshConfig(known_hosts=known), "192.0.2.8") == []


def test_unreadable_known_hosts_is_an_access_error(tmp_path: Path) -> None:
    with pytest.raises(GuestAccessError, match="known_hosts"):
        ssh.expected_host_keys(SshConfig(known_hosts=tmp_path / "missing"), "192.0.2.1")


def test_missing_client_key_is_an_access_error(tmp_path: Path) -> None:
    with pytest.raises(GuestAccessError, match="not set"):
        ssh.load_client_key(SshConfig())
    with pytest.raises(GuestAccessError, match="cannot load"):
        ssh.load_client_key(SshConfig(key=tmp_path / "nope"))
