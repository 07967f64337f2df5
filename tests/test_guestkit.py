"""Pure tests of hvlib.testkit.guestkit: the newc writer, the ELF readers, the guest scripts,
the cache key and the cache's build/repair logic. Nothing here downloads or boots anything."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from hvlib.testkit import debs, newc
from hvlib.testkit import elfmods as em
from hvlib.testkit import guestinit as gi
from hvlib.testkit import guestkit as gk
from hvlib.testkit import kitlayout as kl

FIELD_NOTES_ORDER = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "evdev",
    "button",
    "virtio_console",
]
# depends= strings as the 6.1 cloud kernel's .ko files carry them
CLOUD_DEPENDS: dict[str, list[str]] = {
    "virtio_ring": [],
    "virtio": ["virtio_ring"],
    "virtio_pci_modern_dev": [],
    "virtio_pci_legacy_dev": [],
    "virtio_pci": ["virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"],
    "failover": [],
    "net_failover": ["failover"],
    "virtio_net": ["virtio_ring", "virtio", "net_failover"],
    "virtio_blk": ["virtio", "virtio_ring"],
    "evdev": [],
    "button": [],
    "virtio_console": ["virtio", "virtio_ring"],
    "virtio_balloon": ["virtio", "virtio_ring"],
    "isofs": ["cdrom"],
    "cdrom": [],
}


# --- a small, independent newc reader ---------------------------------------------------------
@dataclass
class Entry:
    name: str
    mode: int
    nlink: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(blob: bytes) -> Iterator[Entry]:
    """Parse a newc archive, checking magic, 4-byte alignment and the trailer."""
    pos = 0
    while True:
        assert pos % 4 == 0
        assert blob[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_end = pos + 110 + namesize
        name = blob[pos + 110 : name_end - 1].decode()
        assert blob[name_end - 1] == 0
        data_at = name_end + (-name_end % 4)
        data = blob[data_at : data_at + filesize]
        pos = data_at + filesize + (-(data_at + filesize) % 4)
        if name == "TRAILER!!!":
            assert pos == len(blob)
            return
        yield Entry(name, fields[1], fields[4], (fields[9], fields[10]), data)


def sample_archive() -> bytes:
    buffer = io.BytesIO()
    writer = gk.NewcWriter(buffer)
    writer.add_dir("etc", 0o750)
    writer.add_file("etc/motd", b"hello\n")
    writer.add_file("/usr/local/bin/tool", b"#!/bin/sh\necho x\n", 0o755)
    writer.add_symlink("bin/sh", "/bin/busybox")
    writer.add_chardev("dev/console", 5, 1)
    writer.add_file("odd", b"12345")
    writer.close()
    return buffer.getvalue()


def test_newc_parses_back_in_python() -> None:
    entries = {e.name: e for e in read_newc(sample_archive())}
    assert list(entries)[:2] == ["etc", "etc/motd"]
    assert entries["etc"].mode == stat.S_IFDIR | 0o750
    assert entries["usr"].mode == stat.S_IFDIR | 0o755  # parent added automatically
    assert entries["usr/local/bin/tool"].data == b"#!/bin/sh\necho x\n"
    assert entries["usr/local/bin/tool"].mode == stat.S_IFREG | 0o755
    assert entries["bin/sh"].mode == stat.S_IFLNK | 0o777
    assert entries["bin/sh"].data == b"/bin/busybox"
    assert entries["dev/console"].mode == stat.S_IFCHR | 0o600
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["odd"].data == b"12345"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="cpio tool not installed")
def test_newc_read_by_gnu_cpio(tmp_path: Path) -> None:
    blob = sample_archive()
    listing = subprocess.run(
        ["cpio", "-itv"], input=blob, capture_output=True, check=True
    ).stdout.decode()
    lines = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
    }
    assert lines["dev/console"].startswith("crw-------")
    assert lines["bin/sh"].startswith("lrwxrwxrwx") and lines["bin/sh"].endswith("-> /bin/busybox")
    assert lines["usr/local/bin/tool"].startswith("-rwxr-xr-x")
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(
        ["cpio", "-id", "--no-absolute-filenames", "--nonmatching", "dev/*"],
        input=blob,
        cwd=out,
        capture_output=True,
        check=True,
    )
    assert (out / "etc/motd").read_bytes() == b"hello\n"
    assert (out / "odd").read_bytes() == b"12345"
    assert os.readlink(out / "bin/sh") == "/bin/busybox"


def test_newc_rejects_bad_and_duplicate_names() -> None:
    writer = gk.NewcWriter(io.BytesIO())
    writer.add_file("a", b"")
    with pytest.raises(ValueError, match="duplicate"):
        writer.add_file("/a", b"")
    for bad in ("", "/", "..", "../x"):
        with pytest.raises(ValueError):
            writer.add_file(bad, b"")
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.add_file("b", b"")


def test_gzip_archive_is_reproducible_and_concatenable() -> None:
    def build(text: bytes) -> bytes:
        buffer = io.BytesIO()
        writer = gk.NewcWriter(buffer)
        writer.add_file("f", text)
        return newc.finish_gzip(writer, buffer)

    assert build(b"x") == build(b"x")
    joined = gzip.decompress(build(b"one") + build(b"two"))  # what the kernel sees: two archives
    assert joined.count(b"TRAILER!!!") == 2


# --- ELF readers ------------------------------------------------------------------------------
def synthetic_elf(sections: Sequence[tuple[str, bytes]]) -> bytes:
    """Build a minimal little-endian ELF64 file holding ``sections`` (plus .shstrtab)."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n, _ in sections) + b".shstrtab\0"
    body = b"".join(d for _, d in sections) + names
    shoff = 64 + len(body)
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack(
            "<HHIQQQIHHHHHH",
            1,
            62,
            1,
            0,
            0,
            shoff,
            0,
            64,
            0,
            0,
            64,
            len(sections) + 2,
            len(sections) + 1,
        )
    )
    table = b"\0" * 64
    offset, name_at = 64, 1
    for name, data in [*sections, (".shstrtab", names)]:
        table += struct.pack("<IIQQQQIIQQ", name_at, 1, 0, 0, offset, len(data), 0, 0, 1, 0)
        offset += len(data)
        name_at += len(name) + 1
    return header + body + table


def test_modinfo_depends_from_synthetic_module() -> None:
    info = b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0"
    assert em.modinfo_depends(synthetic_elf([(".text", b"\x90"), (".modinfo", info)])) == [
        "virtio",
        "virtio_ring",
    ]
    assert em.modinfo_depends(synthetic_elf([(".modinfo", b"depends=\0")])) == []
    with pytest.raises(gk.GuestKitError):
        em.modinfo_depends(b"not an elf file at all")


def test_elf_needed_and_interpreter_of_the_running_python() -> None:
    exe = Path(os.path.realpath(sys.executable)).read_bytes()
    ldd = subprocess.run(["ldd", sys.executable], capture_output=True, text=True, check=False)
    needed = em.elf_needed(exe)
    assert "libc.so.6" in needed or "libpython" in "".join(needed)
    for soname in needed:
        assert soname in ldd.stdout
    interp = em.elf_interpreter(exe)
    assert interp is not None and interp in ldd.stdout


def test_resolve_in_tree_follows_relative_and_absolute_links(tmp_path: Path) -> None:
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libx.so.1.2").write_bytes(b"x")
    (tmp_path / "usr/lib/libx.so.1").symlink_to("libx.so.1.2")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64/ld.so").symlink_to("/usr/lib/libx.so.1")
    assert debs._resolve_in_tree(tmp_path, "/lib64/ld.so") == tmp_path / "usr/lib/libx.so.1.2"
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(gk.GuestKitError, match="loop"):
        debs._resolve_in_tree(tmp_path, "loop")
    with pytest.raises(gk.GuestKitError, match="not found"):
        debs._resolve_in_tree(tmp_path, "missing")


# --- modules ----------------------------------------------------------------------------------
def test_module_order_matches_field_notes() -> None:
    assert gk.module_load_order(FIELD_NOTES_ORDER, CLOUD_DEPENDS) == FIELD_NOTES_ORDER


def test_module_order_puts_dependencies_first_and_skips_builtins() -> None:
    order = gk.module_load_order(["isofs", "virtio_net", "xen_netfront"], CLOUD_DEPENDS)
    assert order == [
        "cdrom",
        "isofs",
        "virtio_ring",
        "virtio",
        "failover",
        "net_failover",
        "virtio_net",
    ]
    with pytest.raises(gk.GuestKitError, match="cycle"):
        gk.module_load_order(["a"], {"a": ["b"], "b": ["a"]})


def test_guest_modules_reads_depends_from_ko_files(tmp_path: Path) -> None:
    def ko(path: str, depends: str) -> None:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(
            synthetic_elf([(".modinfo", f"depends={depends}\0".encode())])
        )

    ko("kernel/fs/isofs/isofs.ko", "cdrom")
    ko("kernel/drivers/cdrom/cdrom.ko", "")
    ko("kernel/drivers/net/xen-netfront.ko", "")
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    found = em.guest_modules(tmp_path, ["isofs", "xen-netfront", "virtio"])
    assert [name for name, _ in found] == ["cdrom", "isofs", "xen_netfront"]
    with pytest.raises(gk.GuestKitError, match="neither"):
        em.guest_modules(tmp_path, ["nosuch"])


# --- scripts ----------------------------------------------------------------------------------
def shell_syntax_ok(script: str) -> None:
    shell = shutil.which("busybox")
    cmd = [shell, "sh", "-n"] if shell else ["sh", "-n"]
    subprocess.run(cmd, input=script.encode(), check=True)


def test_init_script_has_documented_lines_and_parses() -> None:
    script = gk.render_init_script(FIELD_NOTES_ORDER)
    assert script.startswith("#!/bin/sh\n")
    for text in (
        gk.READY_LINE,
        gk.SSH_LINE,
        gk.SEED_FILES_PREFIX,
        gk.SEED_MARKER_PREFIX,
        gk.CPU_FLAGS_PREFIX,
        gk.COUNTER_PREFIX,
        gk.FLAG_NOACPI,
        gk.FLAG_NOSSH,
        gk.FLAG_CPUINFO,
        gk.FLAG_DISKS,
        gk.DISK_PREFIX,
        gk.FLAG_NICS,
        gk.NIC_PREFIX,
        gk.FLAG_COUNTER,
        "LABEL=" + gk.SEED_LABEL,
        "acpid -f -c /etc/acpi -l ",
        "dropbear -r /etc/dropbear/dropbear_ed25519_host_key -s",
        "insmod",
        "virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci",
    ):
        assert text in script
    assert script.index(gk.SSH_LINE) < script.index(gk.READY_LINE)
    shell_syntax_ok(script)


def test_helper_scripts_parse() -> None:
    for script in (gi.udhcpc_script(), gi.acpi_power_script(), gk.lxc_init_script()):
        assert script.startswith("#!/bin/sh\n")
        shell_syntax_ok(script)
    assert "poweroff -f" in gi.acpi_power_script()
    assert gk.LEASE_PREFIX in gi.udhcpc_script()


def test_udhcpc_script_applies_a_lease(tmp_path: Path) -> None:
    """Run the lease script with a fake ``ip`` first on PATH and check what it asked for."""
    (tmp_path / "ip").write_text(f'#!/bin/sh\necho "$*" >>{tmp_path}/calls\n')
    (tmp_path / "ip").chmod(0o755)
    script = gi.udhcpc_script().replace("/etc/resolv.conf", str(tmp_path / "resolv"))
    script = script.replace(">/dev/console", f">>{tmp_path}/console")
    script = script.replace(kl._DHCP_STATE_DIR, str(tmp_path))
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "interface": "eth0",
        "ip": "192.0.2.7",
        "mask": "24",
        "router": "192.0.2.1 192.0.2.254",
        "dns": "192.0.2.53",
    }
    subprocess.run(["sh", "-c", script, "udhcpc", "bound"], env=env, check=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert "addr replace 192.0.2.7/24 dev eth0" in calls
    assert "route replace default via 192.0.2.1 dev eth0" in calls
    assert (tmp_path / "resolv").read_text() == "nameserver 192.0.2.53\n"
    assert (tmp_path / "console").read_text() == f"{gk.LEASE_PREFIX}eth0 192.0.2.7\n"
    assert (tmp_path / "eth0.bound").exists(), "/init learns of the lease"


def run_lxc_init(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    init = tmp_path / "hvlib-init"
    init.write_text(gk.lxc_init_script())
    init.chmod(0o755)
    proc = subprocess.Popen(
        [str(init), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().decode().strip() == gk.READY_LINE
    return proc


def session_gone(pgid: int, timeout: float) -> bool:
    """Wait until no process is left in process group ``pgid``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the init and anything it left in its session (it runs in a new session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def test_lxc_init_exits_zero_on_term(tmp_path: Path) -> None:
    proc = run_lxc_init(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert session_gone(proc.pid, timeout=5), "init left its sleep running"
        assert proc.stdout is not None
        assert proc.stdout.read().decode().strip() == gk.TERM_LINE
    finally:
        kill_group(proc)


def test_lxc_init_can_ignore_term(tmp_path: Path) -> None:
    proc = run_lxc_init(tmp_path, gk.LXC_IGNORE_TERM_ARG)
    try:
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.5)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL


# --- apt / key parsing --------------------------------------------------------------------------
POLICY = """\
busybox-static:
  Installed: 1:1.35.0-4+deb12u1+b1
  Candidate: 1:1.35.0-4+deb12u1+b1
  Version table:
 *** 1:1.35.0-4+deb12u1+b1 500
        500 http://deb.example/debian bookworm/main amd64 Packages
libnothing:
  Installed: (none)
  Candidate: (none)
linux-image-6.1.0-57-cloud-amd64:
  Installed: (none)
  Candidate: 6.1.192-3
"""


def test_parse_apt_policy() -> None:
    assert debs.parse_apt_policy(POLICY) == {
        "busybox-static": "1:1.35.0-4+deb12u1+b1",
        "linux-image-6.1.0-57-cloud-amd64": "6.1.192-3",
    }


def test_parse_kernel_dependency() -> None:
    text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n"
    assert debs.parse_kernel_dependency(text) == "linux-image-6.1.0-57-cloud-amd64"
    with pytest.raises(gk.GuestKitError, match="apt-get update"):
        debs.parse_kernel_dependency(
            "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-amd64\n"
        )


def test_parse_dropbear_public() -> None:
    out = (
        "Public key portion is:\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIX root@box\n"
        "Fingerprint: sha256:abc\n"
    )
    assert gk.parse_dropbear_public(out) == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIX"
    with pytest.raises(gk.GuestKitError):
        gk.parse_dropbear_public("Public key portion is:\n")


def test_client_key_is_private_and_loads_in_paramiko(tmp_path: Path) -> None:
    key_file = tmp_path / "client"
    public = gk.make_client_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = paramiko.Ed25519Key.from_private_key_file(str(key_file))
    assert public == f"ssh-ed25519 {key.get_base64()}"


def test_known_hosts_line_and_cmdline() -> None:
    kit = fake_kit(Path("/nonexistent"))
    assert kit.known_hosts_line("192.0.2.5") == "192.0.2.5 ssh-ed25519 AAAAhost"
    assert kit.known_hosts_line("127.0.0.1", 2222) == "[127.0.0.1]:2222 ssh-ed25519 AAAAhost"
    with pytest.raises(ValueError):
        kit.known_hosts_line("a b")
    with pytest.raises(ValueError):
        kit.known_hosts_line("h", 0)
    assert gk.kernel_cmdline() == "console=ttyS0"
    assert gk.kernel_cmdline("hvc0", gk.FLAG_NOACPI, gk.FLAG_COUNTER) == (
        "console=hvc0 hvlib.noacpi hvlib.counter"
    )
    for bad in (("",), ("ttyS0", "a b"), ("ttyS0", "")):
        with pytest.raises(ValueError):
            gk.kernel_cmdline(*bad)


def fake_kit(directory: Path) -> gk.GuestKit:
    return gk.GuestKit(
        directory=directory,
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        lxc_rootfs=directory / "lxc-rootfs",
        host_key_pub="ssh-ed25519 AAAAhost",
        client_key=directory / "client_ed25519",
        client_key_pub="ssh-ed25519 AAAAclient",
        kernel_version="6.1.0-1-cloud-amd64",
        packages=(("p", "1"),),
        modules=("virtio",),
    )


# --- cache key and cache logic ----------------------------------------------------------------
PACKAGES = (("busybox-static", "1:1.35.0-4"), ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-3"))


def test_cache_key_changes_with_inputs() -> None:
    key = gk.kit_cache_key(PACKAGES, "source-a")
    assert key == gk.kit_cache_key(tuple(reversed(PACKAGES)), "source-a")
    assert len(key) == 16 and int(key, 16) >= 0
    bumped = (PACKAGES[0], ("linux-image-6.1.0-57-cloud-amd64", "6.1.192-4"))
    assert gk.kit_cache_key(bumped, "source-a") != key
    assert gk.kit_cache_key(PACKAGES, "source-b") != key
    assert len(gk.source_digest()) == 64


class FakeBuild:
    """Stands in for the real build: records calls, can fail, writes a complete-looking kit."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self, dest: Path, debs: object, key: str, packages: object) -> None:
        self.calls += 1
        (dest / "vmlinuz").write_bytes(b"k")
        if self.fail:
            raise gk.GuestKitError("boom")
        (dest / "initrd.img").write_bytes(b"i")
        (dest / "client_ed25519").write_bytes(b"c")
        (dest / "lxc-rootfs/sbin").mkdir(parents=True)
        (dest / "lxc-rootfs/sbin/hvlib-init").write_text("#!/bin/sh\n")
        manifest = {
            "key": key,
            "kernel_version": "6.1.0-57-cloud-amd64",
            "packages": [list(p) for p in PACKAGES],
            "modules": ["virtio"],
            "host_key_pub": "ssh-ed25519 AAAAhost",
            "client_key_pub": "ssh-ed25519 AAAAclient",
        }
        (dest / "kit.json").write_text(json.dumps(manifest))


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    build = FakeBuild()
    monkeypatch.setattr(gk, "resolve_packages", lambda: PACKAGES)
    monkeypatch.setattr(gk, "fetch_debs", lambda packages, debdir: [])
    monkeypatch.setattr(gk, "_build_kit", build)
    return build


def test_ensure_builds_once_then_reuses(tmp_path: Path, fake_build: FakeBuild) -> None:
    kit = gk.ensure_guest_kit(tmp_path)
    assert fake_build.calls == 1
    assert kit.directory.name == "guestkit-" + gk.kit_cache_key(PACKAGES, gk.source_digest())
    assert stat.S_IMODE(kit.directory.stat().st_mode) == 0o755
    assert gk.ensure_guest_kit(tmp_path) == kit
    assert fake_build.calls == 1


def test_ensure_repairs_a_half_built_kit(tmp_path: Path, fake_build: FakeBuild) -> None:
    kit = gk.ensure_guest_kit(tmp_path)
    (kit.directory / "initrd.img").unlink()
    assert gk.ensure_guest_kit(tmp_path) == kit
    assert fake_build.calls == 2
    (kit.directory / "kit.json").write_text("[]")
    assert gk.ensure_guest_kit(tmp_path) == kit
    assert fake_build.calls == 3
    (kit.directory / "kit.json").write_text("{not json")
    (tmp_path / ".guestkit-build-leftover").mkdir()
    assert gk.ensure_guest_kit(tmp_path) == kit
    assert fake_build.calls == 4
    assert not list(tmp_path.glob(".guestkit-build-*"))


def test_failed_build_leaves_nothing_behind(tmp_path: Path, fake_build: FakeBuild) -> None:
    fake_build.fail = True
    with pytest.raises(gk.GuestKitError, match="boom"):
        gk.ensure_guest_kit(tmp_path)
    assert not list(tmp_path.glob("guestkit-*"))
    assert not list(tmp_path.glob(".guestkit-build-*"))


def test_source_change_rebuilds(
    tmp_path: Path, fake_build: FakeBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = gk.ensure_guest_kit(tmp_path)
    monkeypatch.setattr(gk, "source_digest", lambda: "edited")
    second = gk.ensure_guest_kit(tmp_path)
    assert fake_build.calls == 2 and first.directory != second.directory


def test_building_prunes_kits_unused_for_a_day(tmp_path: Path, fake_build: FakeBuild) -> None:
    old, recent = tmp_path / "guestkit-0000000000000000", tmp_path / "guestkit-1111111111111111"
    old.mkdir()
    recent.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    kit = gk.ensure_guest_kit(tmp_path)
    assert not old.exists() and recent.exists()
    os.utime(kit.directory, (two_days_ago, two_days_ago))
    gk.ensure_guest_kit(tmp_path)  # a cache hit marks the kit as used
    assert kit.directory.stat().st_mtime > two_days_ago + 3600


def test_udhcpc_script_tells_init_about_leases_and_failures(tmp_path: Path) -> None:
    (tmp_path / "ip").write_text("#!/bin/sh\n")
    (tmp_path / "ip").chmod(0o755)
    state = tmp_path / "dhcp"
    state.mkdir()
    script = gi.udhcpc_script().replace(kl._DHCP_STATE_DIR, str(state))
    script = script.replace("/etc/resolv.conf", str(tmp_path / "resolv"))
    script = script.replace(">/dev/console", f">>{tmp_path}/console")
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "interface": "eth1", "ip": "192.0.2.8"}
    subprocess.run(["sh", "-c", script, "udhcpc", "leasefail"], env=env, check=True)
    assert sorted(p.name for p in state.iterdir()) == ["eth1.failed"]
    subprocess.run(["sh", "-c", script, "udhcpc", "bound"], env=env, check=True)
    assert sorted(p.name for p in state.iterdir()) == ["eth1.bound", "eth1.failed"]
    assert (tmp_path / "console").read_text() == f"{gk.LEASE_PREFIX}eth1 192.0.2.8\n"


@pytest.mark.parametrize(
    ("nics", "markers", "waits"),
    [
        (0, [], False),  # no interface: nothing to wait for
        (1, ["eth0.bound"], False),
        (2, ["eth1.bound"], False),  # the first lease is enough
        (2, ["eth0.failed", "eth1.failed"], False),  # DHCP gave up everywhere
        (1, [], True),
        (2, ["eth0.failed"], True),  # the other interface may still get a lease
    ],
)
def test_init_waits_for_a_lease_before_the_ssh_line(
    tmp_path: Path, nics: int, markers: list[str], waits: bool
) -> None:
    """Run /init's ``wait_reachable`` with the lease script's markers in a scratch directory."""
    for name in markers:
        (tmp_path / name).touch()
    script = gi._init_reachable().replace(kl._DHCP_STATE_DIR, str(tmp_path))
    script += f"nics={nics}\nwait_reachable\necho reachable\n"
    shell = shutil.which("busybox")
    cmd = [shell, "sh", "-c", script] if shell else ["sh", "-c", script]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1.0, check=True).stdout
    except subprocess.TimeoutExpired:
        assert waits, "wait_reachable kept waiting"
    else:
        assert not waits and out == "reachable\n"


def test_init_loads_virtio_rng_and_waits_for_the_lease_before_the_ssh_line() -> None:
    assert "virtio_rng" in gk.GUEST_MODULES
    script = gk.render_init_script(FIELD_NOTES_ORDER)
    assert script.index("nics=$((nics + 1))") < script.index("wait_reachable; echo")
    assert script.index("wait_reachable; echo") < script.index(gk.SSH_LINE)
