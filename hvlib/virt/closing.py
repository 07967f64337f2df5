"""Closing: the context-manager half of every object that holds connections open.

:class:`Closing` gives a class with a ``close()`` its ``with`` statement: entering returns
the object, leaving closes it (whether the block raised or not; nothing is swallowed). The
:class:`~hvlib.virt.host.Host`, the :class:`~hvlib.fleet.Fleet` and the
:class:`~hvlib.parallel.HostPool` use it, so do the testkit's forwarders. Here, in the lowest
layer that holds a connection, so that all of them can import it.
"""

from __future__ import annotations

from typing import Self


class Closing:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what the object holds (subclasses; idempotent)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
