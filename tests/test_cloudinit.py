"""cloud-init NoCloud seeds: label, file names for Rock Ridge, Joliet and plain ISO 9660
readers, contents, input checks (read back with pycdlib, and with blkid when installed)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import pycdlib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvlib import SpecError
from hvlib.model.cloudinit import LABEL, SEED_MAX, seed

USER = "#cloud-config\n#hvlib-marker: hello\n"
META = "instance-id: i-1\nlocal-hostname: vm-1\n"
NET = "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"


def read_back(image: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    return iso


def names(iso: pycdlib.PyCdlib, **where: str) -> list[str]:
    out = []
    for rec in iso.list_children(**where):
        if rec.is_dot() or rec.is_dotdot():
            continue
        if "rr_path" in where:
            out.append(rec.rock_ridge.name().decode())
        elif "joliet_path" in where:
            out.append(rec.file_identifier().decode("utf-16-be"))
        else:
            out.append(rec.file_identifier().decode())
    return sorted(out)


def content(iso: pycdlib.PyCdlib, **where: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **where)
    return out.getvalue()


def test_label_and_names_for_every_reader() -> None:
    iso = read_back(seed(USER, META, NET))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == LABEL
        assert iso.joliet_vd is not None and iso.has_rock_ridge()
        expected = ["meta-data", "network-config", "user-data"]
        assert names(iso, rr_path="/") == expected
        assert names(iso, joliet_path="/") == expected
        plain = names(iso, iso_path="/")
        assert plain == ["METADATA.;1", "NETCONF.;1", "USERDATA.;1"]
        for name in plain:  # ISO 9660 level 1: 8.3 d-characters
            stem, ext = name.split(";")[0].split(".")
            assert len(stem) <= 8 and len(ext) <= 3 and stem.isupper()
    finally:
        iso.close()


def test_contents_are_the_same_whichever_name_is_read() -> None:
    iso = read_back(seed(USER, META.encode(), NET))
    try:
        for name, data in (("user-data", USER), ("meta-data", META), ("network-config", NET)):
            assert content(iso, rr_path=f"/{name}") == data.encode()
            assert content(iso, joliet_path=f"/{name}") == data.encode()
    finally:
        iso.close()


def test_network_config_is_left_out_when_not_given() -> None:
    iso = read_back(seed(USER, META))
    try:
        assert names(iso, rr_path="/") == ["meta-data", "user-data"]
    finally:
        iso.close()


def test_mappings_become_json_and_user_data_gets_its_header() -> None:
    iso = read_back(seed({"packages": ["x"]}, {"instance-id": "i-2"}, {"version": 2}))
    try:
        user = content(iso, rr_path="/user-data").decode()
        assert user.startswith("#cloud-config\n")
        assert json.loads(user.split("\n", 1)[1]) == {"packages": ["x"]}
        assert json.loads(content(iso, rr_path="/meta-data")) == {"instance-id": "i-2"}
        assert json.loads(content(iso, rr_path="/network-config")) == {"version": 2}
    finally:
        iso.close()


@pytest.mark.parametrize("bad", [42, None, ["list"], 1.5])
def test_other_types_are_refused(bad: object) -> None:
    with pytest.raises(SpecError, match="user_data"):
        seed(bad, META)  # type: ignore[arg-type]


def test_oversized_seeds_are_refused() -> None:
    with pytest.raises(SpecError, match="at most"):
        seed(b"x" * SEED_MAX, b"y")


def test_build_time() -> None:
    started = time.perf_counter()
    for _ in range(20):
        seed(USER, META, NET)
    per_seed = (time.perf_counter() - started) / 20
    print(f"seed(): {per_seed * 1000:.1f} ms per image")
    assert per_seed < 1.0


@pytest.mark.skipif(shutil.which("blkid") is None, reason="blkid is not installed")
def test_blkid_reads_the_label(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    path.write_bytes(seed(USER, META))
    out = subprocess.run(
        ["blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert fields["TYPE"] == "iso9660" and fields["LABEL"] == LABEL


# -- a seed is deterministic (item 17): same inputs, same bytes, at any time, in any zone --


def later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """The clock everyone reads jumps ``seconds`` ahead (as if the build ran later)."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + seconds)


def test_the_same_inputs_built_later_and_elsewhere_give_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = seed(USER, {"instance-id": "i-1", "b": 1, "a": 2}, NET)
    later(monkeypatch, 86400 * 400 + 3.7)
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # +05:30: a different local date and offset
    time.tzset()
    try:
        again = seed(USER, {"a": 2, "b": 1, "instance-id": "i-1"}, NET)  # keys in other order
    finally:
        monkeypatch.undo()
        time.tzset()
    assert again == first


def test_seeds_repeat_across_a_real_second() -> None:
    first = seed(USER, META)
    time.sleep(1.1)
    assert seed(USER, META) == first


def test_every_date_in_the_image_is_the_seed_time() -> None:
    iso = read_back(seed(USER, META, NET))
    try:
        for vd in (iso.pvd, iso.joliet_vd):
            assert vd.volume_creation_date.record().startswith(b"2000010100000000")
        for rec in iso.list_children(rr_path="/"):
            assert (rec.date.years_since_1900, rec.date.month, rec.date.day_of_month) == (
                100,
                1,
                1,
            )
            assert rec.date.gmtoffset == 0
    finally:
        iso.close()


@given(
    user=st.text(max_size=40) | st.binary(max_size=40),
    meta=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
    other=st.text(min_size=1, max_size=8),
)
@settings(max_examples=25, deadline=None, derandomize=True)
def test_seed_is_a_function_of_its_inputs(
    user: str | bytes, meta: dict[str, object], other: str
) -> None:
    assert seed(user, meta) == seed(user, dict(reversed(list(meta.items()))))
    changed = {**meta, "instance-id": f"{meta.get('instance-id', '')}{other}"}
    assert seed(user, changed) != seed(user, meta)


def test_pycdlib_outside_a_seed_still_reads_the_real_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    seed(USER, META)  # the seed clock is installed now
    from pycdlib import dates

    later(monkeypatch, 86400 * 365 * 10)
    d = dates.VolumeDescriptorDate()
    d.new(dates.time.time())
    assert d.year >= 2030
