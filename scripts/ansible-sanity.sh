#!/usr/bin/env bash
# `ansible-test sanity` on the collection hvlib.libvirt, offline, on the venv's Python: every
# sanity test ansible-test has but two (or the tests given as arguments). Not run: pslint
# (PowerShell's linter: no pwsh here, and the collection has no PowerShell) and shellcheck (no
# shellcheck here, and the collection has no shell scripts).
#
# ansible-test installs each test's pinned requirements (from the package index, as pip is set
# up here) into venvs of its own, which it starts with pip's get-pip.py bootstrap script
# downloaded from a host of Ansible's: that download is not possible here. The stand-in below
# does what that script does (pip install --upgrade --force-reinstall ARGS) with the pip the
# venv already has, put on sys.path alone. HOME points into build/ so that ansible-test's
# venvs and cache never land in the user's ~/.ansible.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
repo=$PWD
home="$repo/build/ansible-test-home"
cache="$home/.ansible/test/cache"
mkdir -p "$cache" "$home/pip-only"
pipdir=$("$VENV/bin/python" -c 'import os, pip; print(os.path.dirname(os.path.dirname(pip.__file__)))')
ln -sfn "$pipdir/pip" "$home/pip-only/pip"
pyver=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# the pip version ansible-test bootstraps its venvs with (get_venv_packages in ansible-test)
pip_versions=$(sed -n "s/^ *pip='\([0-9.]*\)',$/\1/p" \
  "$("$VENV/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py")
for v in ${pip_versions//./_}; do
  cat > "$cache/get_pip_$v.py" <<PY
# Stand-in for get-pip.py (see scripts/ansible-sanity.sh): pip install with the venv's own pip.
import sys
sys.path.insert(0, "$home/pip-only")
from pip._internal.cli.main import main
# get-pip.py's own flags (--no-setuptools, --no-wheel: install neither) are not pip's
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
PY
done
args=()
for t in "$@"; do args+=(--test "$t"); done
[ $# -gt 0 ] || args=(--skip-test pslint --skip-test shellcheck)
cd ansible_collections/hvlib/libvirt
HOME="$home" PYTHONWARNINGS=ignore "$VENV/bin/ansible-test" sanity --local --python "$pyver" \
  --color no "${args[@]}"
