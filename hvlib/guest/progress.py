"""How far a readiness wait got: the stages reached, and the not-yet that makes it try again.

:class:`_NotReady` is control flow inside the guest layer (a try that may pass later); it never
reaches a caller: the wait that retries it ends in :class:`hvlib.WaitTimeout`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

from hvlib.errors import GuestAccessError, HostKeyError, RemoteCommandError

log = logging.getLogger("hvlib")


class _NotReady(Exception):
    """One readiness attempt failed at ``stage`` (retried until the deadline)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


class Progress:
    """The furthest stage a readiness wait reached, the last reason it stopped there, and how
    many tries stopped at each stage."""

    def __init__(self, stages: Sequence[str], name: str = "") -> None:
        self.stages = tuple(stages)
        self.best = -1
        self.last: _NotReady | None = None
        self.failures: dict[str, int] = {}
        self.name = name
        self.started = time.monotonic()

    def reach(self, stage: str) -> None:
        """Note that this try got as far as ``stage``."""
        index = self.stages.index(stage)
        if index > self.best:
            self.best = index
            log.debug(
                "%s: readiness reached %r after %.3f s",
                self.name,
                stage,
                time.monotonic() - self.started,
            )

    def failed(self, e: _NotReady) -> None:
        """Note a try that stopped at ``e.stage``."""
        self.last = e
        self.failures[e.stage] = self.failures.get(e.stage, 0) + 1

    @property
    def furthest(self) -> str:
        """The furthest stage reached (``"none"`` before any)."""
        return self.stages[self.best] if self.best >= 0 else "none"


@contextlib.contextmanager
def not_ready(stage: str) -> Iterator[None]:
    """Turn a failure that may pass on a later try into ``_NotReady(stage)``; HostKeyError and
    anything else propagate."""
    try:
        yield
    except HostKeyError:
        raise
    except (GuestAccessError, RemoteCommandError, OSError) as e:
        raise _NotReady(stage, f"{type(e).__name__}: {e}") from e
