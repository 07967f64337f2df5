"""``hvlib render`` of files holding networks, pools and volumes (issue 16, item 12): it
printed "no domain named None" for README's own networks.yaml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

import hvlib
from hvlib.cli._render import render_files
from hvlib.model.netplan import NetworkSpec
from tests.test_cli import hvlib as run

CORPUS = Path(__file__).parent / "fuzz-corpus"
README = Path(__file__).resolve().parent.parent / "README.md"


def readme_file(name: str, tmp_path: Path) -> Path:
    """README's example file ``name`` (its first line is ``# NAME: ...``), written out."""
    section = README.read_text().split("## Command line and spec files", 1)[1]
    block = next(
        b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if b.startswith(f"# {name}")
    )
    path = tmp_path / name
    path.write_text(block)
    return path


def test_render_prints_the_networks_of_readmes_networks_yaml(tmp_path: Path) -> None:
    path = readme_file("networks.yaml", tmp_path)
    res = run("render", str(path))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert f"<!-- {path}:2: network lan -->" in res.stdout
    assert f"<!-- {path}:15: network backend -->" in res.stdout
    xmls = re.findall(r"<network>.*?</network>", res.stdout, re.S)
    assert len(xmls) == 2
    for xml in xmls:
        hvlib.validate(xml, schema="network")
    lan = etree.fromstring(xmls[0].encode())
    assert lan.findtext("name") == "lan" and lan.find("bridge").get("name") == "virbr-lan"
    assert [h.get("name") for h in lan.iterfind("ip/dhcp/host")] == ["web-1", None]


def test_a_network_renders_as_networks_ensure_defines_it(tmp_path: Path) -> None:
    path = readme_file("networks.yaml", tmp_path)
    (lan, backend) = render_files([str(path)])
    spec = NetworkSpec("backend", "198.51.100.1/24", mode="isolated")
    assert backend.xml == spec.doc().to_xml()
    assert (lan.label, lan.location.line) == ("network lan", 2)


def test_render_of_volumes_yaml_prints_pool_domain_and_describes_volumes(tmp_path: Path) -> None:
    path = readme_file("volumes.yaml", tmp_path)
    res = run("render", str(path))
    assert res.returncode == 0, res.stderr
    assert '<pool type="dir">' in res.stdout and "<path>/var/lib/hvlib/images</path>" in res.stdout
    assert (
        f"<!-- {path}:9: volume images/web-1.qcow2: qcow2, overlay on images/debian-12.img, "
        "4096 MiB; its XML depends on its host (hvlib up --check shows it) -->"
    ) in res.stdout
    assert res.stdout.count("<!-- ") == 5  # pool, 3 volumes, 1 domain
    assert '<domain type="kvm">' in res.stdout


@pytest.mark.parametrize(
    ("name", "start"),
    [("lan", "<network>"), ("backend", "<network>")],
)
def test_render_name_picks_a_network(tmp_path: Path, name: str, start: str) -> None:
    path = readme_file("networks.yaml", tmp_path)
    res = run("render", "--name", name, str(path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(start) and f"<name>{name}</name>" in res.stdout
    assert "<!--" not in res.stdout  # one document: no header


def test_render_name_that_nothing_has_says_so(tmp_path: Path) -> None:
    path = readme_file("networks.yaml", tmp_path)
    res = run("render", "--name", "zz", str(path))
    assert res.returncode == 2
    assert res.stderr == f"hvlib: no domain, network, pool or volume named zz in {path}\n"


def test_render_of_an_empty_file_says_it_holds_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    res = run("render", str(path))
    assert res.returncode == 2
    assert (
        res.stderr
        == f"hvlib: {path}:1: file: holds no document (it is empty, or only comments and ---)\n"
    )
