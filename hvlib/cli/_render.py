"""``hvlib render`` and ``hvlib demo``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import click

from hvlib import specfile
from hvlib.cli._base import EXIT_BAD_INPUT, Exit, cli, say, verbose_option
from hvlib.errors import Location, SpecError, Unsupported

# -- render --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """What ``render`` prints for one document: a label (``network lan``), where it is
    declared, and its libvirt XML (None for a volume: see :func:`render_files`)."""

    label: str
    names: tuple[str, ...]
    """The names ``--name`` matches."""
    location: Location
    xml: str | None
    note: str = ""


def render_files(files: Sequence[str]) -> list[Rendered]:
    """The libvirt XML of everything the spec ``files`` declare, in the order ``hvlib up``
    makes it: networks, directory pools, volumes, domains. Needs no host.

    A network's XML is what ``host.networks.ensure`` defines for it, a directory pool's what
    ``host.pools.ensure_dir`` defines, a domain's what ``hvlib.render`` gives. A volume has
    no XML without its host (an overlay's backing path, format and size are read from the
    backing volume there): it gets a one-line description instead (``hvlib up --check``
    shows what would be made).

    Raises:
        SpecFileError: a file is invalid, or a domain does not render (with its line).
    """
    files_ = specfile.load_all(files)
    out = [_network(doc) for sf in files_ for doc in sf.networks]
    out += _pools([doc for sf in files_ for doc in sf.volumes])
    out += [_volume(doc) for sf in files_ for doc in sf.volumes]
    out += [_domain(doc) for sf in files_ for doc in sf.domains]
    return out


def _network(doc: specfile.NetworkDocument) -> Rendered:
    name = doc.spec.name
    return Rendered(f"network {name}", (name,), doc.location, doc.spec.doc().to_xml())


def _pools(docs: Sequence[specfile.VolumeDocument]) -> list[Rendered]:
    from hvlib.model.storxml import dir_pool_doc  # imports lxml only: no host

    seen: dict[str, Rendered] = {}
    for doc in docs:
        if doc.pool_dir is not None and doc.pool not in seen:
            xml = dir_pool_doc(doc.pool, doc.pool_dir).to_xml()
            where = doc.locate("pool")
            seen[doc.pool] = Rendered(f"pool {doc.pool}", (doc.pool,), where, xml)
    return list(seen.values())


def _volume(doc: specfile.VolumeDocument) -> Rendered:
    from hvlib.model.volplan import describe_volume

    what = describe_volume(doc.image_format, doc.backing, doc.size_mib)
    note = f"{what}; its XML depends on its host (hvlib up --check shows it)"
    return Rendered(f"volume {doc.key}", (doc.key, doc.name), doc.location, None, note)


def _domain(doc: specfile.DomainDocument) -> Rendered:
    import hvlib

    try:
        xml = hvlib.render(doc.spec)
    except (SpecError, Unsupported) as e:
        raise doc.error(e) from None
    return Rendered(doc.spec.name, (doc.spec.name,), doc.location, xml)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--name", "only", metavar="NAME", help="Only the domain, network, pool or volume NAME."
)
@verbose_option
def render(files: tuple[str, ...], only: str | None) -> None:
    """Print the libvirt XML of what the spec FILES declare (no host needed): networks,
    directory pools and domains, in the order `hvlib up` makes them. A volume is described
    in an XML comment (its XML depends on the host). With several documents, each is
    headed by a comment naming its file and line.
    """
    docs = [d for d in render_files(files) if only is None or only in d.names]
    if not docs:
        raise Exit(
            EXIT_BAD_INPUT,
            f"hvlib: no domain, network, pool or volume named {only} in {', '.join(files)}",
        )
    for doc in docs:
        if doc.xml is None:
            say(f"<!-- {doc.location}: {doc.label}: {doc.note} -->")
            continue
        if len(docs) > 1:
            say(f"<!-- {doc.location}: {doc.label} -->")
        say(doc.xml.rstrip("\n"))


# -- demo ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--uri",
    envvar="HVLIB_URI",
    default=None,
    help="Use this libvirt instead of a sandboxed one (test:/// runs the lifecycle part only).",
)
@click.option(
    "--debian",
    is_flag=True,
    help="Then a second act: a Debian 12 cloud VM (cloud-init) and a systemd container.",
)
@verbose_option
def demo(uri: str | None, debian: bool) -> None:
    """Boot a QEMU VM and an LXC container, use them, shut them down, remove them."""
    from hvlib import demo as demo_mod

    sys.exit(demo_mod.run(uri, debian=debian))
