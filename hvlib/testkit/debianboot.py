"""Booting the testkit's Debian guests: the cloud VM with a NoCloud seed, the systemd container.

:func:`vm_seed` is the seed hvlib gives the VM (a user with a key, a pinned host key, a
hostname, a file, a command, a network-config v2 matching the NIC by MAC); :func:`vm_spec`
the VM on a qcow2 overlay of :func:`hvlib.testkit.debian.ensure_debian_vm_image`'s disk;
:func:`ct_spec` the container on a private copy of the systemd root. Used by the pytest
plugin (:mod:`hvlib.testkit.pytest_plugin`) and integration/. Touches only the directory it
is given and the pool it is told to upload the seed to.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from hvlib.enums import VirtType
from hvlib.guest.config import SshConfig
from hvlib.model.cloudinit import seed
from hvlib.model.devices import Disk, Filesystem, Nic
from hvlib.model.idmap import IdMap
from hvlib.model.spec import DomainSpec
from hvlib.testkit import debian

USER = "hvtest"
"""The user cloud-init creates (sudo without password, the client key authorized)."""
HOSTNAME = "hvlib-debian"
MAC = "52:54:00:de:b1:01"
"""The VM's NIC (the network-config matches it and names it eth0)."""
WRITTEN_FILE = ("/etc/hvlib-test", "written by cloud-init\n")
RUNCMD_FILE = ("/run/hvlib-runcmd", "ran\n")


@dataclass(frozen=True)
class Keys:
    """An SSH client key (a file) and the VM's host key (both halves, for the seed)."""

    client_path: Path
    client_pub: str
    host_private: str
    host_pub: str

    def ssh_config(self) -> SshConfig:
        """How to log in to the VM: USER with the client key, the host key pinned."""
        return SshConfig(user=USER, key=self.client_path, host_key=self.host_pub)


def make_keys(directory: Path) -> Keys:
    """New ed25519 keys; the client's private half is written to ``directory/client``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def pair() -> tuple[str, str]:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return private, public.decode()

    client_private, client_pub = pair()
    host_private, host_pub = pair()
    client_path = directory / "client"
    client_path.write_text(client_private)
    client_path.chmod(0o600)
    return Keys(client_path, client_pub, host_private, host_pub)


def vm_seed(keys: Keys, instance_id: str) -> bytes:
    """The NoCloud seed ISO for the VM."""
    user_data = {
        "hostname": HOSTNAME,
        "users": [
            {
                "name": USER,
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "ssh_authorized_keys": [keys.client_pub],
            }
        ],
        "ssh_keys": {"ed25519_private": keys.host_private, "ed25519_public": keys.host_pub},
        "ssh_genkeytypes": [],
        "write_files": [{"path": WRITTEN_FILE[0], "content": WRITTEN_FILE[1]}],
        "runcmd": [["sh", "-c", f"echo ran > {RUNCMD_FILE[0]}"]],
    }
    meta_data = {"instance-id": instance_id, "local-hostname": HOSTNAME}
    network = {
        "version": 2,
        "ethernets": {"nic0": {"match": {"macaddress": MAC}, "set-name": "eth0", "dhcp4": True}},
    }
    return seed(user_data, meta_data, network)


def overlay(image: debian.DebianImage, dest: Path) -> Path:
    """A qcow2 overlay of the cached (read-only) image at ``dest``."""
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            str(image.disk),
            str(dest),
        ],
        check=True,
        timeout=60,
    )
    return dest


def vm_spec(
    name: str, image: debian.DebianImage, disk: Path, pool: str, seed_volume: str
) -> DomainSpec:
    """The Debian VM: 2 vCPUs, 1 GiB, direct kernel boot, the overlay, the seed (a raw
    volume), a NIC on the pool's host's ``default`` network, a virtio RNG and the agent."""
    return DomainSpec(
        name=name,
        virt=VirtType.QEMU,
        vcpus=2,
        memory_mib=1024,
        kernel=str(image.kernel),
        initrd=str(image.initrd),
        cmdline=image.cmdline,
        disks=[Disk.file(disk, format="qcow2"), Disk.volume(pool, seed_volume, format="raw")],
        nics=[Nic.network("default", mac=MAC)],
        rng=True,
        guest_agent=True,
    )


def ct_spec(name: str, root: Path, idmap: IdMap | None = None) -> DomainSpec:
    """The Debian systemd container on ``root`` (a private copy), a NIC on ``default``."""
    return DomainSpec(
        name=name,
        virt=VirtType.LXC,
        memory_mib=256,
        init=[debian.CT_INIT],
        filesystems=[Filesystem.mount(str(root), "/")],
        nics=[Nic.network("default")],
        idmap=idmap,
    )
