#!/usr/bin/env bash
# Installs what hvlib's demo and tests need on a Debian 12 machine, as root, idempotently:
# the Debian packages (libvirt 9.0, QEMU 7.2, the test guest kit's sources) and a virtualenv
# holding hvlib (editable) with its test and dev extras. A second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PKGS=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-lxc libvirt-daemon-system
  libvirt-clients libvirt-dev pkg-config gcc qemu-system-x86 qemu-utils dnsmasq-base iptables
  iproute2 cpio busybox-static dropbear-bin ovmf python3-venv python3-dev procps
  # the nested Xen host and the Debian guests (hvlib/testkit/xenimage.py, debian.py):
  # debootstrap, mkfs.ext4 -d, qemu-img convert (qemu-utils, above)
  debootstrap e2fsprogs
  # UEFI tests (integration/test_cpu_firmware.py): a FAT EFI system partition with systemd-boot
  dosfstools mtools systemd-boot-efi
  # the sandbox (hvlib/testkit/sandbox.py): nsenter, unshare, taskset, mountpoint; mount
  util-linux mount
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Remote-host tests (integration/test_remote.py, test_migration.py) run OpenSSH's sshd inside a
# sandbox's network namespace only: install it without letting Debian start its ssh service
# (a policy-rc.d that refuses, made only if there is none, removed after).
if ! dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q 'install ok installed'; then
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
  fi
  echo "install-deps: apt-get install openssh-server (its service is not started)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
fi
# The guest kit downloads .debs with apt-get download: it needs package lists.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 && ! ls /var/lib/apt/lists/*Packages.lz4 >/dev/null 2>&1; then
  apt-get update -qq
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.hvlib-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e '.[test,dev,cli,ansible]'
  touch "$stamp"
fi
# The Ansible collection hvlib.libvirt, built into an artifact and installed into the venv.
bash scripts/install-collection.sh
