#!/usr/bin/env bash
# Builds the Ansible collection hvlib.libvirt (ansible_collections/hvlib/libvirt) with
# `ansible-galaxy collection build` into build/ and installs that artifact into the venv's
# site-packages/ansible_collections, where the venv's ansible-playbook finds it (ansible-core
# scans sys.path for collections), so nothing lands in ~/.ansible. Rebuilt only when a file of
# the collection is newer than the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SRC=ansible_collections/hvlib/libvirt
OUT=build/collections
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
stamp="$VENV/.hvlib-collection-installed"
if [ -f "$stamp" ] && [ -d "$site/ansible_collections/hvlib/libvirt" ] \
  && [ -z "$(find "$SRC" -path "$SRC/tests/output" -prune -o -newer "$stamp" -print -quit)" ]; then
  exit 0
fi
mkdir -p "$OUT"
# ansible-galaxy's cache and temporary files stay in build/, not in the user's ~/.ansible
export ANSIBLE_HOME="$PWD/build/ansible-home"
version=$(sed -n 's/^version: *//p' "$SRC/galaxy.yml")
artifact="$OUT/hvlib-libvirt-$version.tar.gz"
rm -f "$artifact"
"$VENV/bin/ansible-galaxy" collection build "$SRC" --output-path "$OUT" --force >/dev/null
"$VENV/bin/ansible-galaxy" collection install "$artifact" -p "$site" --force >/dev/null 2>&1 \
  || "$VENV/bin/ansible-galaxy" collection install "$artifact" -p "$site" --force
touch "$stamp"
echo "install-collection: $artifact installed into $site/ansible_collections"
