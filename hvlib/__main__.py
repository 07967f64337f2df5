"""The ``hvlib`` command line (``python -m hvlib``). Needs the ``cli`` extra (click)."""

from __future__ import annotations

import logging
import sys

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs on stderr.")
def cli(verbose: bool) -> None:
    """hvlib: one Domain API over KVM, QEMU, Xen PV/HVM and LXC, through libvirt."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.option(
    "--uri",
    envvar="HVLIB_URI",
    default=None,
    help="Use this libvirt instead of a sandboxed one (test:/// runs the lifecycle part only).",
)
def demo(uri: str | None) -> None:
    """Boot a QEMU VM and an LXC container, use them, shut them down, remove them."""
    from hvlib import demo as demo_mod

    sys.exit(demo_mod.run(uri))


def main() -> None:
    """Entry point of the ``hvlib`` console script."""
    cli()


if __name__ == "__main__":
    main()
