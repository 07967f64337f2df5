"""Image import without a real pool: the pure parts (sources, checksums, SHA256SUMS listings,
format detection, the provenance record) and ``host.images.ensure``'s checks and failures on
libvirt's in-process test:/// driver (which has no volume upload: an import that gets that far
ends in Unsupported with no volume left). The transfers themselves run on a sandboxed libvirtd
in integration/test_images.py.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import hvlib
from hvlib import ImageError, ImageResult, SpecError, Unsupported
from hvlib.model.imagesrc import (
    Checksum,
    ImageRecord,
    SourceKind,
    checksum_from_sums,
    detect_format,
    is_digest,
    parse_checksum,
    parse_source,
)
from hvlib.virt.host import Host
from hvlib.virt.pools import Pool, Pools
from hvlib.virt.storage import Volumes
from hvlib.virt.streams import Payload

SHA = "ab" * 32
SHA512 = "cd" * 64


def qcow2_header(virtual: int) -> bytes:
    return b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", virtual) + bytes(32)


@pytest.mark.parametrize(
    ("source", "kind", "location"),
    [
        ("/var/img/a.qcow2", SourceKind.FILE, "/var/img/a.qcow2"),
        (Path("/var/img/../img/a.raw"), SourceKind.FILE, "/var/img/a.raw"),
        ("file:///var/img/a%20b.raw", SourceKind.FILE, "/var/img/a b.raw"),
        ("file://localhost/x.raw", SourceKind.FILE, "/x.raw"),
        ("http://127.0.0.1:8000/d/a.qcow2", SourceKind.HTTP, "http://127.0.0.1:8000/d/a.qcow2"),
        ("https://example.org/a.img", SourceKind.HTTP, "https://example.org/a.img"),
    ],
)
def test_sources_parse(source: object, kind: SourceKind, location: str) -> None:
    parsed = parse_source(source)
    assert (parsed.kind, parsed.location) == (kind, location)


def test_a_source_knows_its_file_name() -> None:
    assert parse_source("http://h/d/disk%201.qcow2?x=1").filename == "disk 1.qcow2"
    assert parse_source("/a/b/c.raw").filename == "c.raw"


@pytest.mark.parametrize(
    "source", ["", "relative/a.raw", "ftp://h/a", "http:///a", "file://other/a", 3, None, "/a\0"]
)
def test_bad_sources_name_the_field(source: object) -> None:
    with pytest.raises(SpecError) as caught:
        parse_source(source)
    assert caught.value.field == "source"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (f"sha256:{SHA}", Checksum("sha256", SHA)),
        (f"SHA256:{SHA.upper()}", Checksum("sha256", SHA)),
        (SHA, Checksum("sha256", SHA)),
        (f"sha512:{SHA512}", Checksum("sha512", SHA512)),
        (SHA512, Checksum("sha512", SHA512)),
    ],
)
def test_checksums_parse(text: str, want: Checksum) -> None:
    assert parse_checksum(text) == want
    assert str(want) == f"{want.algorithm}:{want.hexdigest}" and is_digest(text)


@pytest.mark.parametrize(
    "text", ["md5:" + "a" * 32, "sha256:" + "a" * 63, "sha256:" + "g" * 64, "a" * 40, 42]
)
def test_bad_checksums_name_the_field(text: object) -> None:
    with pytest.raises(SpecError) as caught:
        parse_checksum(text)
    assert caught.value.field == "checksum"


def test_a_listing_is_no_digest() -> None:
    assert not is_digest("http://h/SHA256SUMS") and not is_digest("/srv/SHA256SUMS")


def test_sums_listings_gnu_and_bsd() -> None:
    other = "ef" * 32
    listing = f"{other}  other.qcow2\n{SHA} *./disk.qcow2\n\n# comment\n"
    assert checksum_from_sums(listing, "disk.qcow2") == Checksum("sha256", SHA)
    bsd = f"SHA512 (disk.raw) = {SHA512}\nSHA256 (x) = {SHA}\n"
    assert checksum_from_sums(bsd, "disk.raw") == Checksum("sha512", SHA512)
    with pytest.raises(SpecError, match=r"no entry for 'missing\.raw'"):
        checksum_from_sums(listing, "missing.raw")
    with pytest.raises(SpecError, match="disagrees"):
        checksum_from_sums(f"{SHA}  a\n{other}  a\n", "a")


def test_formats_are_detected_from_the_first_bytes() -> None:
    qcow2 = detect_format(qcow2_header(2 * 1024**3))
    assert (qcow2.format, qcow2.virtual_size) == ("qcow2", 2 * 1024**3)
    assert detect_format(b"\0" * 512).format == "raw"
    iso = bytes(0x8001) + b"CD001"
    assert detect_format(iso).format == "raw"
    for head, word in [
        (b"KDMV" + bytes(60), "vmdk"),
        (b"\xfd7zXZ\x00" + bytes(10), "xz"),
        (b"\x1f\x8b\x08" + bytes(10), "gzip"),
        (b"vhdxfile" + bytes(10), "vhdx"),
    ]:
        with pytest.raises(SpecError, match=word):
            detect_format(head)
    with pytest.raises(SpecError, match="empty"):
        detect_format(b"")
    with pytest.raises(SpecError, match="truncated"):
        detect_format(b"QFI\xfb\0\0")


def test_the_record_round_trips_and_a_damaged_one_is_ignored() -> None:
    record = ImageRecord("http://h/a.qcow2", "qcow2", 1234, {"sha256": SHA})
    assert ImageRecord.from_json(record.to_json()) == record
    assert record.matches(None) and record.matches(Checksum("sha256", SHA))
    assert not record.matches(Checksum("sha512", SHA512))
    for damaged in (b"", b"{", b'{"source": 1}', b"[]", b"\xff"):
        assert ImageRecord.from_json(damaged) is None


# -- host.images on the test driver ---------------------------------------------------------


@pytest.fixture
def host() -> Iterator[Host]:
    with hvlib.connect("test:///default", poll_interval=None) as h:
        yield h


@pytest.fixture
def pool(host: Host, unique: str) -> Iterator[Pool]:
    made = Pools(host).ensure_dir(f"img{unique}", f"/srv/hvlib-test/{unique}")
    yield made
    for vol in made.volumes():
        vol.delete()
    made.delete()


def test_image_result_is_exported() -> None:
    assert hvlib.ImageResult is ImageResult


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "a/b"}, "volume.name"),
        ({"source": "relative.raw"}, "source"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"progress": 3}, "progress"),
        ({"checksum": "sha256:1234"}, "checksum"),
        ({"checksum": "relative/SHA256SUMS"}, "checksum"),
    ],
)
def test_bad_arguments_change_nothing(
    host: Host, pool: Pool, tmp_path: Path, kwargs: dict[str, object], field: str
) -> None:
    image = tmp_path / "a.raw"
    image.write_bytes(b"x" * 1000)
    args: dict[str, object] = {"name": "a.raw", "source": str(image), "pool": pool} | kwargs
    with pytest.raises(SpecError) as caught:
        host.images.ensure(**args)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert pool.volumes() == []


def test_a_missing_file_is_an_image_error_with_nothing_made(host: Host, pool: Pool) -> None:
    with pytest.raises(ImageError, match=r"cannot open /no/such/image\.raw"):
        host.images.ensure("a.raw", "/no/such/image.raw", pool=pool)
    assert pool.volumes() == []


@pytest.mark.parametrize(
    ("content", "why"), [(b"", "empty"), (b"\xfd7zXZ\x00" + bytes(100), "xz file: unpack")]
)
def test_an_unusable_image_is_an_image_error_with_nothing_made(
    host: Host, pool: Pool, tmp_path: Path, content: bytes, why: str
) -> None:
    image = tmp_path / "a.img"
    image.write_bytes(content)
    with pytest.raises(ImageError, match=why):
        host.images.ensure("a.img", image, pool=pool)
    assert pool.volumes() == []


def test_a_listing_without_the_file_is_an_image_error(
    host: Host, pool: Pool, tmp_path: Path
) -> None:
    image = tmp_path / "a.raw"
    image.write_bytes(b"x" * 1000)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{SHA}  other.raw\n")
    with pytest.raises(ImageError, match=r"no entry for 'a\.raw'"):
        host.images.ensure("a.raw", str(image), pool=pool, checksum=str(sums))
    assert pool.volumes() == []


def test_without_upload_the_import_fails_and_leaves_no_volume(
    host: Host, pool: Pool, tmp_path: Path
) -> None:
    image = tmp_path / "a.qcow2"
    image.write_bytes(qcow2_header(8 * 1024 * 1024) + bytes(1000))
    with pytest.raises(Unsupported):
        host.images.ensure("a.qcow2", image, pool=pool)  # a Path is a source too
    assert pool.volumes() == []
    assert host.images.record(pool, "a.qcow2") is None


def test_volume_data_may_be_a_file_path_hashed_in_chunks(
    host: Host, pool: Pool, tmp_path: Path
) -> None:
    """Issue 18 item 2: ``data`` may name a file; it is planned from the file's size and
    streamed digest, never read whole."""
    image = tmp_path / "seed.iso"
    content = bytes(range(256)) * 4096 + b"tail"
    image.write_bytes(content)
    payload = Payload.of(image)
    assert payload.size == len(content) and payload.head == content[: Payload.HEAD]
    assert payload.sha256 == hashlib.sha256(content).hexdigest()
    planned = Volumes(host).ensure(pool, "seed.iso", data=image, check=True)
    assert planned.changed and planned.volume is None
    assert f"data sha256:{payload.sha256}" in str(planned.changes[0].after)
    with pytest.raises(Unsupported):  # the test driver has no upload
        Volumes(host).create(pool, "seed.iso", data=image)
    assert Volumes(host).find(pool, "seed.iso") is None
    with pytest.raises(SpecError, match="cannot read"):
        Volumes(host).ensure(pool, "x.iso", data=tmp_path / "missing", check=True)
    with pytest.raises(SpecError, match="bytes or a file path"):
        Volumes(host).ensure(pool, "x.iso", data="a string is no path", check=True)  # type: ignore[arg-type]
