"""The guest kit boots for real: QEMU (TCG) straight from the command line, no libvirt.

QEMU runs with ``-nic none`` (no network backend at all), its serial console on stdout (read
from a file) and its human monitor on a unix socket in the test's temporary directory. Every
wait has a deadline and every QEMU is killed in a ``finally``. The LXC root is checked by
running its init under ``chroot`` (root only), since no libvirt host is used here.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from hvlib.testkit import guestkit as gk

QEMU = "qemu-system-x86_64"
BOOT_DEADLINE = 60.0
STALL_AFTER = 20.0
"""Seconds without a new console byte before a boot counts as stalled (a normal boot prints
something at least every few seconds even on a loaded host)."""


class Stalled(Exception):
    """The guest's console went silent mid-boot (see :func:`boot_to`)."""


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} not installed"),
]


@pytest.fixture(scope="module")
def kit() -> gk.GuestKit:
    """The cached kit (built on first use: needs apt package lists and the Debian registry)."""
    started = time.monotonic()
    built = gk.ensure_guest_kit()
    print(f"ensure_guest_kit took {time.monotonic() - started:.2f} s")
    return built


class Guest:
    """One QEMU process booting the kit; console in ``console.log``, monitor on a unix socket."""

    def __init__(self, kit: gk.GuestKit, workdir: Path, flags: Sequence[str], extra: Sequence[str]):
        self.console = workdir / "console.log"
        self.monitor = workdir / "monitor.sock"
        cmd = [
            QEMU, "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-nic", "none",
            "-kernel", str(kit.kernel), "-initrd", str(kit.initrd),
            "-append", gk.kernel_cmdline("ttyS0", *flags),
            "-monitor", f"unix:{self.monitor},server=on,wait=off", *extra,
        ]  # fmt: skip
        self.started = time.monotonic()
        with self.console.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def text(self) -> str:
        """The console output so far (CRs dropped)."""
        return self.console.read_bytes().decode(errors="replace").replace("\r", "")

    def wait_for(self, line: str, timeout: float = BOOT_DEADLINE) -> float:
        """Wait until ``line`` is a whole console line; return seconds since QEMU started.

        Raises Stalled when the console stays silent for STALL_AFTER seconds; fails the test
        when QEMU exits or ``timeout`` passes.
        """
        deadline = time.monotonic() + timeout
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            text = self.text()
            if line in text.splitlines():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                pytest.fail(f"QEMU exited ({self.proc.returncode}) before {line!r}:\n{self.tail()}")
            if len(text) != seen:
                seen, quiet_since = len(text), time.monotonic()
            elif time.monotonic() - quiet_since > STALL_AFTER:
                raise Stalled(f"console silent for {STALL_AFTER:.0f} s before {line!r}")
            time.sleep(0.05)
        pytest.fail(f"no {line!r} within {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.text().splitlines()[-40:])

    def monitor_command(self, command: str, timeout: float = 5.0) -> str:
        """Send one human-monitor command and return its output (QEMU creates the socket)."""
        deadline = time.monotonic() + timeout
        while not self.monitor.exists():
            if time.monotonic() > deadline:
                pytest.fail("QEMU monitor socket never appeared")
            time.sleep(0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.monitor))
            _read_until_prompt(sock)  # banner
            sock.sendall(command.encode() + b"\n")
            out = _read_until_prompt(sock).decode(errors="replace")  # ran; QEMU prompts again
        return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out).partition("\n")[2]  # no echo

    def exited_within(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _read_until_prompt(sock: socket.socket) -> bytes:
    """Read monitor output up to its next ``(qemu)`` prompt (the socket's timeout bounds it)."""
    data = b""
    while not data.rstrip().endswith(b"(qemu)"):
        chunk = sock.recv(4096)
        if not chunk:
            pytest.fail(f"QEMU monitor closed the connection after {data!r}")
        data += chunk
    return data


class Boot(Protocol):
    def __call__(self, *flags: str, extra: Sequence[str] = ()) -> Guest: ...


@pytest.fixture
def boot(kit: gk.GuestKit, tmp_path: Path) -> Iterator[Boot]:
    """``boot(*flags, extra=[...])`` starts a guest; all guests are killed at teardown."""
    guests: list[Guest] = []

    def start(*flags: str, extra: Sequence[str] = ()) -> Guest:
        workdir = tmp_path / f"guest{len(guests)}"
        workdir.mkdir()
        guests.append(Guest(kit, workdir, flags, extra))
        return guests[-1]

    try:
        yield start
    finally:
        for guest in guests:
            guest.kill()


def boot_to(boot: Boot, line: str, *flags: str) -> Guest:
    """Boot a guest and wait for ``line``; boot a second guest once if the first one stalls.

    Why a second boot: in 1 of ~7 full runs of the suite on this 2-core machine, a kit kernel
    under QEMU/TCG went silent right after "registered taskstats" and never printed again,
    while the same kernel and initramfs booted in every other run and in 28 concurrent boots
    under a CPU hog. That is QEMU's software emulation on a loaded host, not the kit; the
    stall is reported as a warning with the vCPU registers, and a second stall fails the test.
    """
    guest = boot(*flags)
    try:
        guest.wait_for(line)
    except Stalled as stall:
        registers = guest.monitor_command("info registers")
        warnings.warn(
            f"{stall}; booting again. Last console lines:\n{guest.tail()}\n{registers}",
            pytest.PytestWarning,
            stacklevel=2,
        )
        guest.kill()
        guest = boot(*flags)
        guest.wait_for(line)
    return guest


@pytest.mark.timeout(150)
def test_boots_to_ready_with_ssh(boot: Boot) -> None:
    guest = boot_to(boot, gk.SSH_LINE)
    ready_at = guest.wait_for(gk.READY_LINE)
    print(f"ready line after {ready_at:.2f} s")
    lines = guest.text().splitlines()
    assert lines.index(gk.SSH_LINE) < lines.index(gk.READY_LINE)
    assert gk.SSH_FAILED_LINE not in guest.text()


@pytest.mark.timeout(150)
def test_acpi_power_button_powers_off(boot: Boot) -> None:
    guest = boot_to(boot, gk.READY_LINE)
    sent = time.monotonic()
    guest.monitor_command("system_powerdown")
    assert guest.exited_within(10.0), f"QEMU still running 10 s after powerdown:\n{guest.tail()}"
    print(f"QEMU exited {time.monotonic() - sent:.2f} s after system_powerdown")
    assert gk.POWEROFF_LINE in guest.text().splitlines()


@pytest.mark.timeout(150)
def test_noacpi_guest_ignores_power_button(boot: Boot) -> None:
    guest = boot_to(boot, gk.READY_LINE, gk.FLAG_NOACPI)
    guest.monitor_command("system_powerdown")
    assert not guest.exited_within(5.0), "a hvlib.noacpi guest obeyed the power button"
    assert gk.POWEROFF_LINE not in guest.text()


@pytest.mark.timeout(150)
def test_nossh_cpuinfo_and_counter_flags(boot: Boot) -> None:
    guest = boot_to(boot, gk.READY_LINE, gk.FLAG_NOSSH, gk.FLAG_CPUINFO, gk.FLAG_COUNTER)
    guest.wait_for(gk.COUNTER_PREFIX + "3", timeout=10.0)
    lines = guest.text().splitlines()
    assert gk.SSH_LINE not in lines
    flags = [line for line in lines if line.startswith(gk.CPU_FLAGS_PREFIX)]
    assert len(flags) == 1 and " fpu " in f" {flags[0][len(gk.CPU_FLAGS_PREFIX) :]} "
    counts = [int(line.split()[-1]) for line in lines if line.startswith(gk.COUNTER_PREFIX)]
    assert counts[:3] == [1, 2, 3]


def make_seed_iso(path: Path, user_data: bytes, meta_data: bytes) -> None:
    """Write a NoCloud seed: iso9660 labelled cidata, with Joliet and Rock Ridge names."""
    pycdlib = pytest.importorskip("pycdlib")
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=gk.SEED_LABEL)
    for iso_name, name, data in (
        ("USERDATA.;1", "user-data", user_data),
        ("METADATA.;1", "meta-data", meta_data),
    ):
        iso.add_fp(
            io.BytesIO(data), len(data), f"/{iso_name}", rr_name=name, joliet_path=f"/{name}"
        )
    iso.write(str(path))
    iso.close()


@pytest.mark.timeout(120)
def test_seed_marker_from_virtio_disk(boot: Boot, tmp_path: Path) -> None:
    seed = tmp_path / "seed.iso"
    user_data = b"#cloud-config\n" + gk.SEED_MARKER_DIRECTIVE.encode() + b"hello-seed\n"
    make_seed_iso(seed, user_data, b"instance-id: hvlib-test\n")
    drive = ["-drive", f"file={seed},if=virtio,format=raw,readonly=on"]
    guest = boot(gk.FLAG_NOSSH, extra=drive)
    guest.wait_for(gk.READY_LINE)
    lines = guest.text().splitlines()
    assert gk.SEED_FILES_PREFIX + "meta-data user-data" in lines
    assert gk.SEED_MARKER_PREFIX + "hello-seed" in lines


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_lxc_rootfs_init_runs_under_chroot(kit: gk.GuestKit) -> None:
    """The container's busybox and /sbin/hvlib-init work inside the root directory itself."""
    assert os.access(kit.lxc_rootfs / gk.LXC_INIT.lstrip("/"), os.X_OK)
    proc = subprocess.Popen(
        ["chroot", str(kit.lxc_rootfs), gk.LXC_INIT],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().strip() == gk.READY_LINE
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read().decode().strip() == gk.TERM_LINE
    finally:
        with contextlib.suppress(ProcessLookupError):  # the init's whole session
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.timeout(60)
def test_kit_files(kit: gk.GuestKit, tmp_path: Path) -> None:
    """The initrd is base + keys archives; the keys match the kit; the files the guest needs."""
    paramiko = pytest.importorskip("paramiko")
    assert stat.S_IMODE(kit.client_key.stat().st_mode) == 0o600
    client = paramiko.Ed25519Key.from_private_key_file(str(kit.client_key))
    assert kit.client_key_pub == f"ssh-ed25519 {client.get_base64()}"
    assert kit.host_key_pub.startswith("ssh-ed25519 AAAA")
    base = (kit.directory / "initramfs-base.cpio.gz").read_bytes()
    keys = (kit.directory / "initramfs-keys.cpio.gz").read_bytes()
    assert kit.initrd.read_bytes() == base + keys
    key_files = _cpio_extract(gzip.decompress(keys), tmp_path / "keys")
    assert (key_files / "root/.ssh/authorized_keys").read_text().strip() == kit.client_key_pub
    assert (key_files / "etc/dropbear/dropbear_ed25519_host_key").stat().st_size > 0
    root = _cpio_extract(gzip.decompress(base), tmp_path / "base")
    for name in ("init", "bin/busybox", "etc/udhcpc/default.script", "etc/acpi/PWRF/00000080"):
        assert os.access(root / name, os.X_OK), name
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert list(kit.modules[:5]) == [
        "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci"
    ]  # fmt: skip
    for module in kit.modules:
        assert (root / f"lib/modules/hvlib/{module}.ko").is_file()
    if os.geteuid() == 0:  # every library dropbear needs is in the archive: run it there
        version = subprocess.run(
            ["chroot", str(root), "/usr/sbin/dropbear", "-V"], capture_output=True, timeout=10
        )
        assert b"Dropbear" in version.stderr + version.stdout, version


def _cpio_extract(archive: bytes, dest: Path) -> Path:
    """Unpack a newc archive with GNU cpio (devices skipped) and return ``dest``."""
    if shutil.which("cpio") is None:
        pytest.skip("cpio tool not installed")
    dest.mkdir()
    subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames", "--nonmatching", "dev/*"],
        input=archive,
        cwd=dest,
        check=True,
        timeout=30,
    )
    return dest
