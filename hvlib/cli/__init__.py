"""The ``hvlib`` command line, for people and CI runners (``python -m hvlib``, extra ``cli``).

Commands: ``up`` (ensure the networks, volumes and domains of spec files,
:mod:`hvlib.specfile`), ``down``, ``rm`` (``--volumes``: also the storage volumes of the
domain's disks), ``ls``, ``exec``, ``console``, ``image pull`` (import a base image into a
pool volume), ``render`` and ``demo``. Every command is a thin layer over hvlib's public API:
parse arguments, call the library, print what it did.
``up`` reports a pool's or a volume's changes from the library's own reports (``plan_dir``;
``Volumes.ensure``, with ``check=True`` under ``--check``), so that ``--check`` says the same
as a real run.

Exit status (the same for every command; ``exec`` passes its command's status through)::

    0  all is as declared / done
    1  something failed (libvirt, a guest, a timeout)
    2  bad input: a spec file (FILE:LINE: FIELD: RULE), an option, or something not supported
    3  changes are pending: ``up --check`` found drift, or ``up`` left changes that need
       --allow-restart / --allow-recreate
    124, 125  ``exec`` only: the command timed out / hvlib could not run it (as env(1) does)

Results go to stdout, progress lines and errors to stderr. Hosts are named with ``--uri``
(repeatable where a fleet makes sense) or ``HVLIB_URI`` (space-separated).

Modules: :mod:`._base` (exit statuses, output, options, hosts, the click group),
:mod:`._up` (with its plan, :mod:`._upplan`, and its report, :mod:`._upreport`),
:mod:`._remove` (down, rm), :mod:`._guests` (ls, exec, console), :mod:`._render` (render,
demo) and :mod:`._image` (image pull); importing this package registers every command.

Must not: define anything before every input is checked (``up`` parses all files, routes
every document to a host and checks the networks, pools and volumes they name first), delete
a file that is not a libvirt volume or a volume another domain uses, send anything to a
guest's console, read stdin unless asked (``exec --stdin``), or import libvirt itself.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from hvlib.cli import _guests, _image, _remove, _render, _up
from hvlib.cli._base import EXIT_OK, cli

__all__ = ["cli", "main"]
_COMMANDS = (_up, _remove, _guests, _render, _image)
"""The modules whose ``@cli.command`` definitions make up the command line."""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``hvlib`` console script and of ``python -m hvlib``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if hasattr(signal, "SIGPIPE"):  # `hvlib ls | head` ends quietly, like other tools
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cli.main(args=list(argv) if argv is not None else None, prog_name="hvlib")
    sys.exit(EXIT_OK)
