"""``python -m hvlib``: the command line of :mod:`hvlib.cli` (needs the ``cli`` extra).

Must not: do anything but hand over to :func:`hvlib.cli.main`, or say so when the extra's
packages are missing.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Entry point of the ``hvlib`` console script (setup.cfg) and of ``python -m hvlib``."""
    try:
        from hvlib.cli import main as cli_main
    except ImportError as e:  # click, PyYAML or rich not installed
        sys.exit(f"hvlib: the command line needs the cli extra (pip install 'hvlib[cli]'): {e}")
    cli_main()


if __name__ == "__main__":
    main()
