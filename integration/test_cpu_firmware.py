"""CPUs, firmware and acceleration on the sandboxed host: what the guest actually gets.

- a QEMU guest with a named CPU model, a required and a disabled feature prints (``hvlib.cpuinfo``)
  its CPU flags: the requested ones present, the disabled ones absent; ``nested=True`` gives it
  svm and npt; the host's checks refuse what it cannot provide;
- a q35 UEFI guest boots systemd-boot from a FAT EFI system partition built here (dosfstools,
  mtools, systemd-boot-efi: scripts/install-deps.sh) to the kit's ready line; with secure boot
  on, the firmware refuses the unsigned loader on the console; undefine leaves no NVRAM file;
- a microvm boots the kit's kernel;
- ``host.acceleration()`` boots the kit's kernel under ``<domain type='kvm'>`` and names why
  KVM is (not) used; a kvm spec then runs as qemu only with ``allow_emulation``.

Boot times (start to ready line) are printed (``pytest -s``). Until ``Domains.define`` and
``Domains.ensure`` fit specs to the host themselves, these tests call :func:`hvlib.virt.hostfit.fit`
first (fitting a fitted spec changes nothing, so they stay valid afterwards).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hvlib
from hvlib import Disk, DomainSpec, SpecError, State, Unsupported, VirtType
from hvlib.model.cpuspec import Cpu
from hvlib.testkit import guestkit
from hvlib.testkit.guestkit import GuestKit
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt.accel import Acceleration
from hvlib.virt.domain import Domain
from hvlib.virt.host import Host
from hvlib.virt.hostfit import fit
from integration.conftest import MakeDomain

READY = guestkit.READY_LINE
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
BOOT_TIMEOUT = 120.0


def kit_spec(
    kit: GuestKit, name: str, *flags: str, virt: VirtType = VirtType.QEMU, **kw: object
) -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=virt,
        memory_mib=256,
        kernel=str(kit.kernel),
        initrd=str(kit.initrd),
        cmdline=guestkit.kernel_cmdline("ttyS0", guestkit.FLAG_NOSSH, *flags),
        rng=True,
        **kw,
    )  # type: ignore[arg-type]


def define(make_domain: MakeDomain, host: Host, spec: DomainSpec) -> Domain:
    return make_domain(host, fit(host, spec).spec)


def boot(dom: Domain, pattern: str = READY) -> tuple[str, float]:
    """Start ``dom`` and wait for a console line matching ``pattern``: (line, seconds)."""
    started = time.monotonic()
    dom.start()
    line = dom.wait_for_console(pattern, timeout=BOOT_TIMEOUT)
    took = time.monotonic() - started
    print(f"\n{dom.name}: {line.strip()!r} {took:.2f} s after start")
    return line, took


def cpu_flags(dom: Domain) -> set[str]:
    line = dom.wait_for_console(guestkit.CPU_FLAGS_PREFIX, timeout=BOOT_TIMEOUT)
    return set(line.split(guestkit.CPU_FLAGS_PREFIX, 1)[1].split())


def nvram_dir(sandbox: SandboxHost) -> Path:
    return sandbox.root / "var/lib/libvirt/qemu/nvram"


# -- CPU ----------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.qemu
def test_custom_cpu_model_with_required_and_disabled_features(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    cpu = Cpu.model("Nehalem", require=["aes"], disable=["popcnt"])
    dom = define(make_domain, qemu_host, kit_spec(kit, "it-cpu-model", "hvlib.cpuinfo", cpu=cpu))
    boot(dom)
    flags = cpu_flags(dom)
    assert "aes" in flags, "required on top of Nehalem"
    assert "popcnt" not in flags, "Nehalem has it, the spec disabled it"
    assert {"sse4_1", "sse4_2", "ssse3"} <= flags, "the rest of Nehalem"
    assert "avx" not in flags, "Nehalem has no AVX"


@pytest.mark.integration
@pytest.mark.qemu
def test_nested_under_emulation_gives_the_guest_svm_and_npt(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    dom = define(make_domain, qemu_host, kit_spec(kit, "it-nested", "hvlib.cpuinfo", nested=True))
    boot(dom)
    assert {"svm", "npt"} <= cpu_flags(dom)


@pytest.mark.integration
@pytest.mark.qemu
def test_the_hosts_cpu_checks(
    qemu_host: Host, kit: GuestKit, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SpecError) as unknown:
        fit(qemu_host, kit_spec(kit, "x", cpu=Cpu.model("Pentium9")))
    assert unknown.value.field == "cpu.model" and unknown.value.value == "Pentium9"
    with pytest.raises(SpecError) as missing:
        fit(qemu_host, kit_spec(kit, "x", cpu=Cpu.model("Nehalem", require=["avx512f"])))
    assert missing.value.field == "cpu.require" and missing.value.value == ["avx512f"]
    with pytest.raises(Unsupported, match="cannot pass the host CPU through"):
        fit(qemu_host, kit_spec(kit, "x", cpu=Cpu.host_passthrough()))
    with caplog.at_level(logging.WARNING, "hvlib"):
        notes = fit(qemu_host, kit_spec(kit, "x", cpu=Cpu.model("EPYC"))).notes
    assert "CPU model EPYC is not fully usable" in notes[0] and "vme" in notes[0]
    assert "EPYC is not fully usable" in caplog.text


@pytest.mark.integration
@pytest.mark.qemu
def test_ensure_keeps_cpu_machine_and_firmware_in_sync_on_a_running_guest(
    qemu_host: Host, kit: GuestKit
) -> None:
    spec = kit_spec(
        kit,
        "it-cpu-sync",
        vcpus=2,
        machine="q35",
        firmware="efi",
        cpu=Cpu.host_model(require=["aes"], cores=2),
    )
    fitted = fit(qemu_host, spec).spec
    try:
        first = qemu_host.domains.ensure(fitted)
        assert first.changed and first.domain is not None
        assert first.domain.state is State.RUNNING
        again = qemu_host.domains.ensure(fit(qemu_host, spec).spec)
        assert not again.changed and again.pending == [], again.diff()
        other = fit(qemu_host, kit_spec(kit, "it-cpu-sync", vcpus=2, machine="q35")).spec
        change = qemu_host.domains.ensure(other, allow_restart=True)
        assert {c.field for c in change.changes} >= {"cpu", "firmware"}
        settled = qemu_host.domains.ensure(other)
        assert not settled.changed and settled.pending == [], settled.diff()
    finally:
        qemu_host.domains.ensure(fitted, state=State.ABSENT)


# -- machines and firmware ----------------------------------------------------------------------


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} not found: scripts/install-deps.sh installs {package}")
    return path


def make_esp(directory: Path, kit: GuestKit, options: str) -> Path:
    """A FAT EFI system partition image (no partition table: OVMF boots it as a whole-disk
    file system) holding systemd-boot as the removable-media loader and one entry that loads
    the kit's kernel and initramfs."""
    mkfs, mmd, mcopy = (
        _need("mkfs.vfat", "dosfstools"),
        _need("mmd", "mtools"),
        _need("mcopy", "mtools"),
    )
    if not SYSTEMD_BOOT.exists():
        pytest.skip(f"{SYSTEMD_BOOT} not found: scripts/install-deps.sh installs systemd-boot-efi")
    image = directory / "esp.img"
    with open(image, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, env=env, timeout=60)

    run(mkfs, "-F", "32", "-n", "HVLIB-ESP", str(image))
    run(mmd, "-i", str(image), "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries")
    (directory / "loader.conf").write_text("timeout 0\ndefault hvlib.conf\n")
    (directory / "hvlib.conf").write_text(
        f"title hvlib test guest\nlinux /vmlinuz\ninitrd /initrd.img\noptions {options}\n"
    )
    for src, dst in (
        (SYSTEMD_BOOT, "::/EFI/BOOT/BOOTX64.EFI"),
        (kit.kernel, "::/vmlinuz"),
        (kit.initrd, "::/initrd.img"),
        (directory / "loader.conf", "::/loader/loader.conf"),
        (directory / "hvlib.conf", "::/loader/entries/hvlib.conf"),
    ):
        run(mcopy, "-i", str(image), str(src), dst)
    return image


@pytest.fixture
def esp(tmp_path: Path, kit: GuestKit) -> Iterator[Path]:
    yield make_esp(tmp_path, kit, guestkit.kernel_cmdline("ttyS0", guestkit.FLAG_NOSSH))


def uefi_spec(name: str, image: Path, secure_boot: bool) -> DomainSpec:
    return DomainSpec(
        name=name,
        virt=VirtType.QEMU,
        memory_mib=256,
        machine="q35",
        firmware="efi",
        secure_boot=secure_boot,
        disks=[Disk.file(str(image), format="raw")],
        rng=True,
    )


@pytest.mark.integration
@pytest.mark.qemu
def test_q35_uefi_boots_systemd_boot_from_an_esp_and_undefine_removes_the_nvram(
    qemu_host: Host, sandbox: SandboxHost, esp: Path, make_domain: MakeDomain
) -> None:
    dom = define(make_domain, qemu_host, uefi_spec("it-uefi", esp, secure_boot=False))
    boot(dom)
    log = dom.console_log()
    assert b"BdsDxe: starting Boot" in log, "OVMF booted the disk"
    assert b"Linux version" in log
    nvram = nvram_dir(sandbox) / "it-uefi_VARS.fd"
    assert nvram.exists(), "libvirt made the per-domain NVRAM"
    dom.destroy()
    dom.undefine()
    assert not nvram.exists()
    dom.undefine()  # absent is success


@pytest.mark.integration
@pytest.mark.qemu
def test_secure_boot_refuses_the_unsigned_loader(
    qemu_host: Host, sandbox: SandboxHost, esp: Path, make_domain: MakeDomain
) -> None:
    dom = define(make_domain, qemu_host, uefi_spec("it-uefi-sb", esp, secure_boot=True))
    line, _ = boot(dom, r"BdsDxe: failed to load Boot\d+ .*: Access Denied")
    assert "Access Denied" in line
    assert b"Linux version" not in dom.console_log(), "the unsigned loader never ran"
    live = dom.xml()
    assert "secure='yes'" in live or 'secure="yes"' in live
    nvram = nvram_dir(sandbox) / "it-uefi-sb_VARS.fd"
    assert nvram.exists()
    dom.destroy()
    dom.undefine()
    assert not nvram.exists()


@pytest.mark.integration
@pytest.mark.qemu
def test_microvm_boots_the_kit_kernel(
    qemu_host: Host, kit: GuestKit, make_domain: MakeDomain
) -> None:
    # A microvm has no PIT or HPET (and libvirt 9.0 has no XML for QEMU's microvm pit/pic
    # options): without a TSC frequency on the command line the kernel stops, at random, right
    # after "tsc: Marking TSC unstable due to could not calculate TSC khz" (seen with
    # no_timer_check alone in 1 of 2 boots; with both, 5 of 5 booted).
    spec = kit_spec(kit, "it-microvm", "tsc_early_khz=2600000", "no_timer_check", machine="microvm")
    dom = define(make_domain, qemu_host, spec)
    boot(dom)
    assert "machine='microvm'" in dom.xml() or 'machine="microvm"' in dom.xml()


# -- acceleration -------------------------------------------------------------------------------


def probe(host: Host, kit: GuestKit) -> Acceleration:
    started = time.monotonic()
    report = host.acceleration(
        probe_kernel=str(kit.kernel),
        probe_initrd=str(kit.initrd),
        probe_cmdline=guestkit.kernel_cmdline("ttyS0", guestkit.FLAG_NOSSH),
    )
    print(f"\n{report}\n(report ready {time.monotonic() - started:.1f} s after the call)")
    return report


@pytest.mark.integration
@pytest.mark.qemu
@pytest.mark.kvm
def test_acceleration_report_names_why_kvm_is_or_is_not_used(
    qemu_host: Host, kit: GuestKit
) -> None:
    report = probe(qemu_host, kit)
    assert report.probed, report
    assert report.kvm_present.ok is not None
    assert probe(qemu_host, kit) is report, "cached per host"
    if report.works:
        assert report.summary.startswith("KVM works: ")
        return
    assert report.works is False
    for finding in (report.kvm_present, report.kvm_openable, report.kvm_runs_guests):
        if finding.ok is False:
            assert finding.detail in report.summary
    if report.kvm_present.ok and report.kvm_openable.ok:
        assert report.summary.startswith("KVM is present but does not run stock guest kernels")
        assert "<domain type='kvm'>" in report.kvm_runs_guests.detail
        assert "console" in report.kvm_runs_guests.detail, "what the guest printed is quoted"


@pytest.mark.integration
@pytest.mark.qemu
def test_a_kvm_spec_runs_as_qemu_only_when_emulation_is_allowed(
    sandbox: SandboxHost, qemu_host: Host, kit: GuestKit
) -> None:
    report = probe(qemu_host, kit)
    if report.works is not False:
        pytest.skip(f"KVM is not known to fail here, nothing to fall back from: {report.summary}")
    spec = kit_spec(kit, "it-kvm-emulated", virt=VirtType.KVM)
    with pytest.raises(Unsupported) as refused:
        fit(qemu_host, spec)
    assert report.summary in str(refused.value) and "allow_emulation" in str(refused.value)
    with hvlib.connect(sandbox.qemu_uri, poll_interval=None, allow_emulation=True) as host:
        dom = host.domains.define(fit(host, spec).spec)
        try:
            assert dom.virt is VirtType.QEMU
            assert host.domains.get("it-kvm-emulated").virt is VirtType.QEMU
            boot(dom)
            again = host.domains.ensure(fit(host, spec).spec)
            assert not again.changed and again.pending == [], again.diff()
        finally:
            dom.destroy()
            dom.undefine()
