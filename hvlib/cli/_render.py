"""``hvlib render`` and ``hvlib demo``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from hvlib.cli._base import EXIT_BAD_INPUT, Exit, cli, say, verbose_option
from hvlib.cli._up import load_domains
from hvlib.errors import SpecError

if TYPE_CHECKING:
    pass


# -- render, demo --------------------------------------------------------------------------


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--name", "only", metavar="NAME", help="Only the domain NAME.")
@verbose_option
def render(files: tuple[str, ...], only: str | None) -> None:
    """Print the libvirt XML of the domains the spec FILES describe (no host needed).

    Network and volume documents are checked too, but not printed.
    """
    import hvlib

    docs = [d for d in load_domains(files) if only is None or d.spec.name == only]
    if not docs:
        raise Exit(EXIT_BAD_INPUT, f"hvlib: no domain named {only} in {', '.join(files)}")
    for doc in docs:
        if len(docs) > 1:
            say(f"<!-- {doc.location}: {doc.spec.name} -->")
        try:
            say(hvlib.render(doc.spec).rstrip("\n"))
        except SpecError as e:
            raise doc.error(e) from None


@cli.command()
@click.option(
    "--uri",
    envvar="HVLIB_URI",
    default=None,
    help="Use this libvirt instead of a sandboxed one (test:/// runs the lifecycle part only).",
)
@verbose_option
def demo(uri: str | None) -> None:
    """Boot a QEMU VM and an LXC container, use them, shut them down, remove them."""
    from hvlib import demo as demo_mod

    sys.exit(demo_mod.run(uri))
