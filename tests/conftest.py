"""Fixtures for the fast tests: libvirt's own in-process test:/// driver (no daemon)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

import hvlib
from hvlib.virt.host import Host

_counter = itertools.count()


@pytest.fixture
def host() -> Iterator[Host]:
    """A Host on test:///default with polling disabled, so waits rely on events alone."""
    with hvlib.connect("test:///default", poll_interval=None) as h:
        yield h


@pytest.fixture
def unique() -> str:
    """A domain name no other test uses (the test driver's state is shared per process)."""
    return f"t{next(_counter)}"
