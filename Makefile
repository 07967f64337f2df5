# hvlib: the two commands are `make demo` and `make test` (both install what they need).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: deps demo demo-debian test unit integration xen lint type goldens fixtures apidoc bench \
	clean-cache collection ansible-sanity

deps:
	bash scripts/install-deps.sh

demo: deps
	$(PY) -m hvlib demo

# The demo, then a second act on real distributions: a Debian 12 cloud VM booted with a seed
# that cloud-init applies, and a Debian 12 container whose init is systemd (images built from
# Debian packages on first use: ~3 min cold, cached).
demo-debian: deps
	$(PY) -m hvlib demo --debian

test: deps
	bash scripts/run-tests.sh tests integration $(PYTEST_ARGS)

unit: deps
	bash scripts/run-tests.sh tests $(PYTEST_ARGS)

integration: deps
	bash scripts/run-tests.sh integration $(PYTEST_ARGS)

# The real-Xen tests alone: a nested Xen host booted on a sandbox, PV, PVH and HVM guests
# driven through hvlib (~2 min with a cached host image).
xen: deps
	$(PY) -m pytest -s integration/test_xen.py $(PYTEST_ARGS)

lint: deps
	$(VENV)/bin/ruff check hvlib tests integration scripts conftest.py bench
	$(VENV)/bin/ruff format --check hvlib tests integration scripts conftest.py bench

type: deps
	$(VENV)/bin/mypy --strict hvlib

# Rewrite tests/golden/*.xml from tests/golden_specs.py (tests only ever read them).
goldens: deps
	$(PY) scripts/regen-goldens.py

# Capture live XMLDesc() fixtures for the round-trip tests from a sandboxed libvirt host.
fixtures: deps
	$(PY) scripts/capture-fixtures.py

# API reference from the docstrings, into docs/api/.
apidoc: deps
	$(PY) scripts/apidoc.py docs/api

# Benchmarks (issue 8): hvlib side by side with raw libvirt-python on a sandboxed libvirtd and
# on test:///; prints one table (figure, target, pass/fail) and exits 1 if a target is missed.
bench: deps
	$(PY) -m bench

# The Ansible collection hvlib.libvirt: built with ansible-galaxy into build/collections/ and
# installed into the venv (make deps does this too; again only when its files changed).
collection: deps
	bash scripts/install-collection.sh

# ansible-test sanity on the collection (all its tests but pslint and shellcheck: no pwsh,
# no shellcheck here), offline; tests/test_ansible_sanity.py runs it within make test.
ansible-sanity: deps
	bash scripts/ansible-sanity.sh

# Forget everything built by the test kit (a cold run rebuilds it) and the virtualenv.
clean-cache:
	rm -rf "$${HVLIB_CACHE:-/var/cache/hvlib-testkit}" $(VENV) build/collections build/ansible-test-home
