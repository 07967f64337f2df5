"""The URI guard (hvlib.model.uri): options read exactly as libvirt 9.0 reads them, every risky
option refused in any spelling unless allowed by name, harmless URIs always accepted, and
every path that opens a URI going through the guard.

The spellings are properties over the whole class (hypothesis): ASCII case, ``&`` and ``;``
separators (``;`` separates only where no ``&`` follows, as in libvirt), percent-encoding of
any character of a name or value, a decoded NUL cutting a name, order, repetition, blank
values, empty sections, ``=value`` sections, fragments, every transport and driver. One
property checks the parser against libvirt itself: the ``ext`` transport runs its
``command=``, so whether a marker script ran tells which command libvirt read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hvlib
from hvlib import DomainSpec, VirtType
from hvlib.model.uri import check_uri, is_remote, parse, parse_options
from hvlib.virt import _virt

REPO = Path(__file__).resolve().parent.parent

# libvirt 9.0's own list (src/remote/remote_driver.c, doRemoteOpen, and "authfile" from
# src/util/virauth.c), written out here independently of hvlib.model.uri.
LIBVIRT_OPTIONS = {
    "name",
    "command",
    "socket",
    "auth",
    "sshauth",
    "netcat",
    "keyfile",
    "pkipath",
    "known_hosts",
    "known_hosts_verify",
    "tls_priority",
    "mode",
    "proxy",
    "no_sanity",
    "no_verify",
    "no_tty",
    "authfile",
}
ALWAYS_RISKY = ["command", "netcat", "proxy", "name", "tls_priority"]
DRIVERS = ["qemu", "lxc", "xen", "test"]
TRANSPORTS = [None, "ssh", "libssh", "libssh2", "ext", "tcp", "tls", "unix"]
UNRESERVED = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- spellings ------------------------------------------------------------------------------


def _pct(char: str, upper: bool) -> str:
    return "".join(f"%{b:02X}" if upper else f"%{b:02x}" for b in char.encode())


@st.composite
def spelled(draw: st.DrawFn, name: str) -> str:
    """``name`` as libvirt still reads it: any ASCII case, any character percent-encoded,
    and sometimes a decoded NUL followed by junk."""
    out = []
    for char in name:
        char = draw(st.sampled_from([char.lower(), char.upper()]))
        if draw(st.integers(0, 3)) == 0:
            char = _pct(char, draw(st.booleans()))
        out.append(char)
    if draw(st.integers(0, 5)) == 0:
        out.append("%00" + draw(st.text("abcXYZ_-", max_size=4)))
    return "".join(out)


@st.composite
def encoded(draw: st.DrawFn, value: str) -> str:
    """``value`` in a URI: what must be encoded is, what may be sometimes is."""
    out = []
    for char in value:
        if char not in UNRESERVED or draw(st.integers(0, 4)) == 0:
            char = _pct(char, draw(st.booleans()))
        out.append(char)
    return "".join(out)


def case_of(draw: st.DrawFn, text: str) -> str:
    return "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in text)


PATHS = st.from_regex(r"/[a-z0-9._-]{1,12}(/[a-z0-9 ._-]{1,12}){0,2}", fullmatch=True)


@st.composite
def harmless_option(draw: st.DrawFn, ssh: bool) -> tuple[str, str]:
    """(name, value) that libvirt reads as harmless (``known_hosts`` not on plain +ssh)."""
    kinds = ["socket", "mode", "keyfile", "pkipath", "auth", "authfile", "no_tty", "no_sanity"]
    kinds += ["no_verify", "known_hosts_verify", "sshauth"] + ([] if ssh else ["known_hosts"])
    name = draw(st.sampled_from(kinds))
    if name == "no_verify":
        value = draw(st.from_regex(r"[ \t]{0,2}[+-]?0{1,3}", fullmatch=True))
    elif name == "known_hosts_verify":
        value = case_of(draw, "normal")
    elif name == "sshauth":
        value = ",".join(case_of(draw, "privkey") for _ in range(draw(st.integers(1, 3))))
    elif name in ("mode", "auth", "no_tty", "no_sanity"):
        value = draw(st.sampled_from(["auto", "direct", "legacy", "sasl", "0", "1", ""]))
    else:
        value = draw(PATHS)
    return name, value


@st.composite
def risky_option(draw: st.DrawFn) -> tuple[str, str]:
    """(name, value) that can run a program or weaken a check, or that libvirt does not
    define."""
    kind = draw(st.sampled_from([*ALWAYS_RISKY, "no_verify", "khv", "sshauth", "unknown"]))
    if kind in ALWAYS_RISKY:
        return kind, draw(st.one_of(PATHS, st.sampled_from(["", "native", "NORMAL:+NULL"])))
    if kind == "no_verify":
        nonzero = st.integers(-(2**40), 2**40).filter(bool).map(str)
        return kind, draw(nonzero | st.sampled_from(["", "yes", "0x0", "0 ", "1 ", "true"]))
    if kind == "khv":
        return "known_hosts_verify", case_of(draw, draw(st.sampled_from(["auto", "ignore"])))
    if kind == "sshauth":
        methods = [case_of(draw, "privkey")] * draw(st.integers(0, 2))
        methods.insert(
            draw(st.integers(0, len(methods))),
            draw(st.sampled_from(["agent", "password", "keyboard-interactive", ""])),
        )
        return kind, ",".join(methods)
    name = draw(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True))
    return (name, "1") if name not in LIBVIRT_OPTIONS else ("root", "/srv")


@st.composite
def query_of(draw: st.DrawFn, options: list[tuple[str, str]]) -> str:
    """A query libvirt splits into exactly ``options`` (plus sections it ignores): some
    joined by ``&``, the rest (after the last ``&``) by ``;``, empty and ``=value``
    sections mixed in."""
    sections = [f"{draw(spelled(n))}={draw(encoded(v))}" for n, v in options]
    for _ in range(draw(st.integers(0, 2))):
        junk = draw(st.sampled_from(["", "=junk", "=", "==x"]))
        sections.insert(draw(st.integers(0, len(sections))), junk)
    cut = draw(st.integers(0, len(sections)))
    head, tail = sections[:cut], sections[cut:]
    query = "&".join(head)
    if tail:
        query = (query + "&" if head else "") + ";".join(tail)
    return query


@st.composite
def base_uri(draw: st.DrawFn) -> tuple[str, str | None]:
    driver = case_of(draw, draw(st.sampled_from(DRIVERS)))
    transport = draw(st.sampled_from(TRANSPORTS))
    scheme = driver if transport is None else f"{driver}+{case_of(draw, transport)}"
    server = draw(st.sampled_from(["", "h", "root@h:2222", "[2001:db8::1]"]))
    if transport == "unix":
        server = ""
    path = draw(st.sampled_from(["/system", "/session", "/default", "/"]))
    return f"{scheme}://{server}{path}", transport


def fragment(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "", "#frag", "#a?b=c&command=x"]))


@st.composite
def harmless_uris(draw: st.DrawFn) -> str:
    base, transport = draw(base_uri())
    options = draw(st.lists(harmless_option(transport == "ssh"), max_size=6))
    return f"{base}?{draw(query_of(options))}{fragment(draw)}"


@st.composite
def risky_uris(draw: st.DrawFn) -> tuple[str, str]:
    """(uri, the risky option's name) with the risky option anywhere among harmless ones,
    possibly repeated with a harmless value (libvirt's remote driver takes the last one,
    ``virURIGetParam`` the first: either way it is there)."""
    base, transport = draw(base_uri())
    options = draw(st.lists(harmless_option(transport == "ssh"), max_size=5))
    risky = draw(risky_option())
    options.insert(draw(st.integers(0, len(options))), risky)
    if draw(st.booleans()):
        options.insert(draw(st.integers(0, len(options))), (risky[0], ""))
    return f"{base}?{draw(query_of(options))}{fragment(draw)}", risky[0]


# -- properties -------------------------------------------------------------------------------


@SETTINGS
@given(risky_uris())
def test_a_risky_option_is_refused_in_every_spelling(case: tuple[str, str]) -> None:
    uri, name = case
    with pytest.raises(hvlib.SpecError) as info:
        check_uri(uri)
    assert info.value.field == "uri"
    assert f"option {name}=" in info.value.rule
    assert f"allow_uri_options=[{name!r}]" in info.value.rule


@SETTINGS
@given(risky_uris(), st.data())
def test_a_risky_option_allowed_by_name_in_any_case_passes(
    case: tuple[str, str], data: st.DataObject
) -> None:
    uri, name = case
    allow = ["keyfile", "".join(data.draw(st.sampled_from([c, c.upper()])) for c in name)]
    assert check_uri(uri, allow=allow) == uri


@SETTINGS
@given(harmless_uris())
def test_harmless_uris_are_always_accepted(uri: str) -> None:
    assert check_uri(uri) == uri


@SETTINGS
@given(st.data())
def test_known_hosts_on_plain_ssh_is_refused_in_every_spelling(data: st.DataObject) -> None:
    driver = case_of(data.draw, data.draw(st.sampled_from(DRIVERS)))
    options = data.draw(st.lists(harmless_option(True), max_size=4))
    options.insert(data.draw(st.integers(0, len(options))), ("known_hosts", "/kh"))
    uri = f"{driver}+{case_of(data.draw, 'ssh')}://h/system?{data.draw(query_of(options))}"
    with pytest.raises(hvlib.SpecError, match=r"\+ssh transport ignores known_hosts"):
        check_uri(uri, allow=["known_hosts"])


SCRIPT_NAME = "hvlib-uri-marker.sh"


@pytest.fixture(scope="module")
def marker_script(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A script that leaves a marker file when something runs it: (script, marker)."""
    folder = tmp_path_factory.mktemp("uri")
    script, marker = folder / SCRIPT_NAME, folder / "ran"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    return script, marker


@st.composite
def command_queries(draw: st.DrawFn, script: str) -> str:
    """Queries with zero or more ``command`` options (the script, or a path that does not
    exist) among fillers, joined by any mix of ``&`` and ``;``: whatever libvirt makes of
    them, the parser must make the same."""
    fillers = st.sampled_from([("x", "1"), ("socket", "/s"), ("keyfile", "/k"), ("a", "b;c")])
    commands = st.sampled_from([("command", script), ("command", "/nonexistent")])
    commands = commands | commands.map(lambda o: (o[0], o[1] + "\0junk"))
    options = draw(st.lists(fillers | commands, max_size=5))
    sections = [f"{draw(spelled(n))}={draw(encoded(v))}" for n, v in options]
    sections += draw(st.lists(st.sampled_from(["", "=x", "command", "="]), max_size=2))
    sections = draw(st.permutations(sections))
    query = ""
    for i, section in enumerate(sections):
        query += (draw(st.sampled_from("&;")) if i else "") + section
    return query


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_the_parser_reads_command_as_libvirt_does(
    marker_script: tuple[Path, Path], data: st.DataObject
) -> None:
    """Differential, against the real libvirt client library: ``qemu+ext:///`` runs the last
    ``command=`` it reads. The URI is opened with ``_virt.open_connection`` (under the guard)
    on purpose; the script only touches a marker and exits."""
    script, marker = marker_script
    query = data.draw(command_queries(str(script)))
    marker.unlink(missing_ok=True)
    with pytest.raises(hvlib.HostError):
        _virt.open_connection(f"qemu+ext:///system?{query}")
    commands = [o for o in parse_options(query) if o.key == "command"]
    assert marker.exists() == (bool(commands) and commands[-1].value == str(script)), query


# -- examples of libvirt's parser, and of the rules -----------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("x=1;command=/s", [("x", "1"), ("command", "/s")]),
        ("x=1;command=/s&y=2", [("x", "1;command=/s"), ("y", "2")]),
        ("command=/s;x=1&y=2", [("command", "/s;x=1"), ("y", "2")]),
        ("%63oMMand=/s", [("command", "/s")]),
        ("command%00junk=/s%00junk", [("command", "/s")]),
        ("command+=/s", [("command+", "/s")]),
        ("command", [("command", "")]),
        ("=x&&;command=", [("command", "")]),
        ("a=b?c=d", [("a", "b?c=d")]),
        ("=&command=/x", [("=&command=/x", ""), ("command", "/x")]),
    ],
)
def test_options_are_split_and_decoded_as_libvirt_does(
    query: str, expected: list[tuple[str, str]]
) -> None:
    assert [(o.key, o.value) for o in parse_options(query)] == expected


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("qemu+ssh://h/system?COMMAND=/tmp/x.sh", "option command= (written 'COMMAND')"),
        ("qemu+ssh://h/system?keyfile=/k;command=/tmp/x.sh", "option command="),
        ("qemu+ext:///system?command=/tmp/x.sh", "option command="),
        ("qemu+tls://h/system?NO_VERIFY=1", "option no_verify="),
        ("qemu+libssh://h/system?Known_Hosts_Verify=ignore", "option known_hosts_verify="),
        ("qemu+libssh://h/system?known_hosts_verify=auto", "option known_hosts_verify="),
        ("qemu+ssh://h/system?name=qemu%2Bext:///system%3Fcommand%3D/x", "option name="),
        ("qemu+tls://h/system?tls_priority=NONE", "option tls_priority="),
        ("qemu:///embed?root=/srv", "option root= is not an option hvlib knows"),
        ("vbox:///session", "driver 'vbox'"),
        ("qemu+sshcmd://h/system", "transport 'sshcmd'"),
        ("qemu:///system?a=b c", "not a valid URI"),
        ("qemu:///system?a=%zz", "not a valid URI"),
        ("///system", "needs a scheme"),
    ],
)
def test_refusals_say_why(uri: str, why: str) -> None:
    with pytest.raises(hvlib.SpecError) as info:
        check_uri(uri)
    assert why in str(info.value)


@pytest.mark.parametrize(
    "uri",
    [
        "qemu:///system",
        "test:///default",
        "test:/default",
        "qemu+libssh://root@h:2222/system?keyfile=/k&known_hosts=/kh&sshauth=privkey",
        "qemu+tls://h/system?no_verify=0",
        "qemu+unix:///system?socket=/var/tmp/s/libvirt-sock;mode=direct",
        "xen+tcp://127.0.0.1:16509/system",
        "lxc+unix:///system?socket=%2Fa%20b%2Fsock",
    ],
)
def test_safe_uris_pass(uri: str) -> None:
    assert check_uri(uri) == uri


def test_allow_must_be_a_list_of_names() -> None:
    with pytest.raises(hvlib.SpecError) as info:
        check_uri("qemu+ssh://h/system?command=x", allow="command")
    assert info.value.field == "allow_uri_options"
    with pytest.raises(hvlib.SpecError, match="allow_uri_options"):
        check_uri("qemu:///system", allow=[1])  # type: ignore[list-item]


def test_parse_keeps_driver_and_transport_lowered() -> None:
    parsed = parse("QEMU+LibSSH://h/system?a=1")
    assert (parsed.driver, parsed.transport) == ("qemu", "libssh")


def test_is_remote() -> None:
    assert is_remote("qemu+ssh://h/system") and is_remote("qemu://h/system")
    assert not is_remote("qemu:///system") and not is_remote("test:///default")


# -- every path that opens a URI goes through the guard ---------------------------------------


def _openers(uri: str) -> dict[str, Callable[[], object]]:
    from hvlib.fleet import Fleet
    from hvlib.parallel import HostPool, ensure_all, start_all
    from hvlib.virt.host import Host

    spec = DomainSpec(name="never", virt=VirtType.QEMU, kernel="/boot/vmlinuz")
    return {
        "hvlib.connect": lambda: hvlib.connect(uri),
        "hvlib.virt.host.connect": lambda: hvlib.virt.host.connect(uri),
        "Host": lambda: Host(uri),
        "HostPool": lambda: HostPool(uri),
        "Fleet": lambda: Fleet([uri]),
        "ensure_all": lambda: ensure_all(uri, [spec]),
        "start_all": lambda: start_all(uri, [spec]),
    }


@pytest.mark.parametrize("opener", list(_openers("test:///default")))
@pytest.mark.parametrize("spelling", ["COMMAND", "keyfile=/k;command", "%63ommand", "Command%00x"])
def test_a_refused_uri_never_reaches_libvirt(
    marker_script: tuple[Path, Path], opener: str, spelling: str
) -> None:
    script, marker = marker_script
    marker.unlink(missing_ok=True)
    uri = f"qemu+ext:///system?{spelling}={script}"
    with pytest.raises(hvlib.SpecError, match="option command="):
        _openers(uri)[opener]()
    assert not marker.exists()


def test_the_marker_shows_when_libvirt_runs_the_command(marker_script: tuple[Path, Path]) -> None:
    """The other side of the test above: allowed by name, the command does run (so a missing
    marker there means the guard stopped it, not that the script could not run)."""
    script, marker = marker_script
    marker.unlink(missing_ok=True)
    with pytest.raises(hvlib.HostError):
        hvlib.connect(f"qemu+ext:///system?COMMAND={script}", allow_uri_options=["command"])
    assert marker.exists()


@pytest.mark.parametrize("command", ["ls", "up", "down", "console"])
def test_the_cli_refuses_a_risky_uri_before_connecting(
    marker_script: tuple[Path, Path], tmp_path: Path, command: str
) -> None:
    script, marker = marker_script
    marker.unlink(missing_ok=True)
    spec = tmp_path / "vm.yaml"
    spec.write_text(
        textwrap.dedent("""\
            name: never
            virt: qemu
            kernel: /boot/vmlinuz
        """)
    )
    args = {"ls": [], "up": [str(spec)], "down": ["never"], "console": ["never"]}[command]
    uri = f"test:///default qemu+ext:///system?socket=/s;Command={script}"
    for how in (["--uri", uri.split()[-1]], []):  # --uri, and $HVLIB_URI with several
        env = dict(os.environ, HVLIB_URI=uri)
        done = subprocess.run(
            [sys.executable, "-m", "hvlib", command, *how, *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "hvlib: uri: option command=" in done.stderr
        assert not marker.exists()


# -- URIs hvlib builds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("qemu+ssh://h/system?KNOWN_HOSTS=/other", "already sets known_hosts=/other"),
        ("qemu+ssh://h/system?x=1;Known_Hosts_Verify=ignore", "known_hosts_verify turns off"),
        ("qemu+ssh://h/system?known_hosts_verify=AUTO", "known_hosts_verify turns off"),
        ("qemu+tcp://h/system", "apply to SSH transports only"),
    ],
)
def test_pinning_reads_the_uri_as_libvirt_does(uri: str, message: str) -> None:
    from hvlib.virt.remote import pin_host_keys

    with pytest.raises(hvlib.SpecError, match=message):
        pin_host_keys(uri, known_hosts="/kh", keyfile="/k")


@SETTINGS
@given(harmless_uris())
def test_a_pinned_uri_keeps_every_option_libvirt_read(uri: str) -> None:
    """The rewrite keeps each option libvirt reads from the original, once per occurrence,
    in order, in a form it reads back the same (every value percent-encoded, & only)."""
    from hvlib.virt.remote import pin_host_keys

    parsed = parse(uri)
    if parsed.transport not in ("ssh", "libssh", "libssh2") or parsed.named("known_hosts"):
        return
    if parsed.named("keyfile") or parsed.named("known_hosts_verify"):
        return
    pinned = pin_host_keys(uri, known_hosts="/p/kh", keyfile="/p/k")
    again = [(o.key, o.value) for o in parse(pinned).options]
    kept = [(o.key, o.value) for o in parsed.options if o.key and o.key[0] != "="]
    assert again[: len(kept)] == kept
    assert ("known_hosts", "/p/kh") in again and ("keyfile", "/p/k") in again
    assert check_uri(pinned) == pinned


@SETTINGS
@given(st.text(max_size=40) | st.from_regex(r"[a-z0-9.:\[\]/?#@%-]{1,30}", fullmatch=True))
def test_a_migration_address_is_a_host_or_refused(address: str) -> None:
    """``dest_address`` becomes the migration URI ``tcp://ADDRESS``: whatever is accepted
    adds nothing to that URI but its host."""
    from urllib.parse import urlsplit

    from hvlib.virt.migration import _check_dest_address

    try:
        _check_dest_address(address)
    except hvlib.SpecError as e:
        assert e.field == "dest_address"
        return
    host = f"[{address}]" if ":" in address else address
    parts = urlsplit(f"tcp://{host}")
    assert (parts.path, parts.query, parts.fragment, parts.port) == ("", "", "", None)
    assert parts.hostname is not None


def test_migrate_checks_its_destination_before_asking_libvirt() -> None:
    with hvlib.connect("test:///default") as src, hvlib.connect("test:///default") as dest:
        dom = src.domains.get("test")
        with pytest.raises(hvlib.SpecError) as info:
            dom.migrate(dest, dest_address="10.0.0.2/x?y")
        assert info.value.field == "dest_address"
        with pytest.raises(hvlib.SpecError) as info:
            dom.migrate("test:///default")  # type: ignore[arg-type]
        assert info.value.field == "dest"
