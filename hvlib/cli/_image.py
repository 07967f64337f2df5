"""``hvlib image pull``: import a base image into a pool volume (``host.images.ensure``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from hvlib.cli._base import (
    POSITIVE_SECONDS,
    PROGRESS_EVERY,
    cli,
    hosts,
    hosts_options,
    note,
    say,
    uri_list,
    verbose_option,
)

if TYPE_CHECKING:
    from hvlib.virt.images import ImageResult, Progress


@cli.group("image")
def image() -> None:
    """Base images as pool volumes."""


@image.command("pull")
@click.argument("name")
@click.argument("source")
@click.option("--pool", required=True, metavar="POOL", help="The pool the volume goes into.")
@click.option("--sha256", "sha256", metavar="HEX", help="The image's SHA-256 (verified).")
@click.option(
    "--checksum",
    metavar="CHECKSUM",
    help="sha256:HEX, sha512:HEX, or the path/URL of a SHA256SUMS-style listing.",
)
@click.option(
    "--timeout",
    type=POSITIVE_SECONDS,
    default=60.0,
    show_default=True,
    help="Seconds a stalled source may send nothing before the pull fails.",
)
@hosts_options
@verbose_option
def pull(
    name: str,
    source: str,
    pool: str,
    sha256: str | None,
    checksum: str | None,
    timeout: float,
    uris: tuple[str, ...],
    netns: str | None,
) -> None:
    """Import the image at SOURCE (a path, file:// or http(s):// URL) as volume NAME.

    The bytes are streamed into the pool and checked against --sha256 (or --checksum);
    a failed pull leaves no volume. A second pull of the same source and checksum
    transfers nothing. With several --uri, the image is pulled into the pool of each host.
    """
    from hvlib.errors import SpecError

    if sha256 is not None and checksum is not None:
        raise SpecError("--sha256", "give --sha256 or --checksum, not both")
    wanted = f"sha256:{sha256}" if sha256 is not None else checksum
    with hosts(uri_list(uris), netns) as hs:
        for host in hs:
            with _progress(f"pulling {name} into {host.uri}") as progress:
                result = host.images.ensure(
                    name, source, pool=pool, checksum=wanted, timeout=timeout, progress=progress
                )
            _report(result)


def _report(result: ImageResult) -> None:
    vol = result.volume
    if result.changed:
        say(f"+ {vol.pool.name}/{vol.name}: {result.format}, {result.transferred} bytes")
    else:
        say(f"= {vol.pool.name}/{vol.name}: unchanged ({result.format})")
    say(f"  {result.checksum} from {result.source}")


@contextmanager
def _progress(label: str) -> Iterator[Progress]:
    """A progress callback: a rich bar on a terminal, a line every PROGRESS_EVERY s else."""
    if not sys.stderr.isatty():
        yield _logged(label)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _logged(label: str) -> Callable[[int, int | None], None]:
    last = [time.monotonic()]

    def update(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY or (total is not None and done == total):
            last[0] = now
            of = f" of {total}" if total is not None else ""
            note(f"  ... {label}: {done}{of} bytes")

    return update
