"""Base images imported into a real pool on a sandboxed libvirtd: ``host.images.ensure``.

Images are served by a loopback HTTP server this module starts (127.0.0.1 only, a port the
kernel picks) or read from local files. Checked: a local file and HTTP import with good and
bad checksums and a SHA256SUMS listing; a truncated body and a server that stalls each end in
a clear error with no volume (nor record) left in the pool; a second import transfers and
writes nothing (every libvirt call counted); the format is detected (a qcow2 gets the virtual
size its header says); the importing process's peak RSS grows by less than 64 MiB for a
400 MiB image (measured with ``resource.getrusage`` in a fresh subprocess). Volumes given
content (``Volumes.ensure(data=...)``, a qcow2 image or a file path) are compared by checksum
and not re-uploaded (issue 18 items 1 and 2).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

import hvlib
from hvlib import ChecksumMismatch, ImageError, ImageTimeout
from hvlib.model.volplan import MIB
from hvlib.testkit.sandbox import SandboxHost
from hvlib.virt import _virt
from hvlib.virt.host import Host
from hvlib.virt.pools import Pool, Pools
from tests.counting import WRITE_CALLS, CountingLibvirt

pytestmark = [pytest.mark.integration, pytest.mark.qemu]

POOL = "hvlib-it-img"
WRITES = WRITE_CALLS | {"storagePoolDefineXML", "build", "delete", "upload", "resize"}
STALL_TIMEOUT = 1.5
"""The import's timeout against the stalling server: the error must come within a few
seconds of it (the server would hold the connection for STALL_HOLD)."""
STALL_HOLD = 30.0
RSS_IMAGE_MIB = 400
RSS_LIMIT_MIB = 64


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files of ``server.root``: ``/NAME`` whole; ``/truncated/NAME`` announces the
    full length and closes half-way; ``/stall/NAME`` sends 1 MiB, then nothing."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        mode, _, name = self.path.lstrip("/").rpartition("/")
        path = self.server.root / name
        if not path.is_file():
            self.send_error(404)
            return
        self.server.requests.append(self.path)
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with path.open("rb") as f:
            if mode == "truncated":
                self.wfile.write(f.read(size // 2))
            elif mode == "stall":
                self.wfile.write(f.read(MIB))
                self.wfile.flush()
                self.server.release.wait(STALL_HOLD)
            else:
                while block := f.read(MIB):
                    self.wfile.write(block)
        self.close_connection = True


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[str] = []
        self.release = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "disk.raw").write_bytes(os.urandom(3 * MIB))
    qcow2 = root / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow2), "64M"], check=True)
    sums = [f"{_sha256(root / n)}  {n}" for n in ("disk.raw", "disk.qcow2")]
    (root / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return root


@pytest.fixture(scope="module")
def server(files: Path) -> Iterator[_Server]:
    srv = _Server(files)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def pool(qemu_host: Host, sandbox: SandboxHost) -> Iterator[Pool]:
    made = Pools(qemu_host).ensure_dir(POOL, str(sandbox.root / "it-img"))
    yield made
    for vol in made.volumes():
        vol.delete()
    made.delete()


@pytest.fixture
def counted(
    sandbox: SandboxHost, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Host, CountingLibvirt]]:
    proxy = CountingLibvirt(libvirt)
    monkeypatch.setattr(_virt, "libvirt", proxy)
    with hvlib.connect(sandbox.qemu_uri, netns=sandbox.netns, poll_interval=None) as host:
        yield host, proxy


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(pool: Pool) -> set[str]:
    pool.refresh()
    return {v.name for v in pool.volumes()}


def test_local_file_imports_with_its_checksum_and_a_second_import_does_nothing(
    qemu_host: Host, pool: Pool, files: Path, counted: tuple[Host, CountingLibvirt]
) -> None:
    src = files / "disk.raw"
    seen: list[tuple[int, int | None]] = []
    got = qemu_host.images.ensure(
        "it-local.raw",
        str(src),
        pool=pool,
        checksum=f"sha256:{_sha256(src)}",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert got.changed and got.transferred == src.stat().st_size
    assert (got.format, got.checksum, got.source) == ("raw", f"sha256:{_sha256(src)}", str(src))
    assert got.volume.sha256() == _sha256(src) and got.volume.capacity == src.stat().st_size
    assert seen[-1] == (src.stat().st_size, src.stat().st_size) and len(seen) > 1
    record = qemu_host.images.record(pool, "it-local.raw")
    assert record is not None and record.source == str(src)
    assert record.digests["sha256"] == _sha256(src)
    host, proxy = counted
    again = host.images.ensure(
        "it-local.raw", f"file://{src}", pool=POOL, checksum=f"sha256:{_sha256(src)}"
    )
    assert not again.changed and again.transferred == 0
    writes = {k: v for k, v in proxy.calls.items() if k in WRITES}
    assert writes == {}, proxy.calls
    assert proxy.calls.get("download", 0) == 1  # the record, not the image


def test_http_qcow2_with_a_sums_listing_gets_its_virtual_size(
    qemu_host: Host, pool: Pool, server: _Server
) -> None:
    got = qemu_host.images.ensure(
        "it-http.qcow2", server.url("disk.qcow2"), pool=pool, checksum=server.url("SHA256SUMS")
    )
    assert got.changed and got.format == "qcow2"
    assert got.volume.format == "qcow2" and got.volume.capacity == 64 * MIB
    before = len(server.requests)
    again = qemu_host.images.ensure("it-http.qcow2", server.url("disk.qcow2"), pool=pool)
    assert not again.changed and again.transferred == 0
    assert server.requests[before:] == []  # no checksum given, same source: nothing fetched


def test_bad_checksum_fails_and_leaves_nothing(
    qemu_host: Host, pool: Pool, server: _Server
) -> None:
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ChecksumMismatch) as caught:
        qemu_host.images.ensure("it-bad.raw", server.url("disk.raw"), pool=pool, checksum=wrong)
    print(f"bad checksum: {caught.value}")
    assert caught.value.expected == wrong and "mismatch" in str(caught.value)
    assert not {"it-bad.raw", "it-bad.raw.hvlib-image"} & _names(pool)


def test_truncated_download_fails_and_leaves_nothing(
    qemu_host: Host, pool: Pool, server: _Server
) -> None:
    with pytest.raises(ImageError) as caught:
        qemu_host.images.ensure("it-trunc.raw", server.url("truncated/disk.raw"), pool=pool)
    print(f"truncated: {caught.value}")
    assert "truncated" in str(caught.value) or "closed the connection" in str(caught.value)
    assert not {"it-trunc.raw", "it-trunc.raw.hvlib-image"} & _names(pool)


def test_stalled_server_times_out_and_leaves_nothing(
    qemu_host: Host, pool: Pool, server: _Server
) -> None:
    started = time.monotonic()
    with pytest.raises(ImageTimeout) as caught:
        qemu_host.images.ensure(
            "it-stall.raw", server.url("stall/disk.raw"), pool=pool, timeout=STALL_TIMEOUT
        )
    took = time.monotonic() - started
    print(f"stalled: {caught.value} after {took:.1f} s")
    assert took < STALL_TIMEOUT + 10, took
    assert "stalled" in str(caught.value)
    assert not {"it-stall.raw", "it-stall.raw.hvlib-image"} & _names(pool)


def test_replaced_source_is_imported_again(qemu_host: Host, pool: Pool, files: Path) -> None:
    first = files / "v1.raw"
    second = files / "v2.raw"
    first.write_bytes(b"one" * 100000)
    second.write_bytes(b"two" * 200000)
    made = qemu_host.images.ensure("it-swap.raw", str(first), pool=pool)
    swapped = qemu_host.images.ensure("it-swap.raw", str(second), pool=pool)
    assert made.changed and swapped.changed and swapped.transferred == second.stat().st_size
    assert swapped.volume.sha256() == _sha256(second)
    assert swapped.volume.capacity == second.stat().st_size


_RSS_SCRIPT = """
import json, sys, hvlib
uri, pool, url, path = sys.argv[1:]
def peak():  # VmHWM, the peak RSS since the reset below (ru_maxrss keeps the parent's peak
    # across fork and exec: a large pytest process made it 416 MiB before anything ran)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
with hvlib.connect(uri, poll_interval=None) as host:
    host.pools.get(pool).refresh()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current RSS (Linux >= 4.0)
    before = peak()
    got = host.images.ensure("it-rss.raw", url, pool=pool, timeout=30)
    after = peak()
    got.volume.delete()
held = open(path, "rb").read()  # the control: what holding the image in memory costs
print(json.dumps({"before_kib": before, "after_kib": after, "held_kib": peak(),
                  "bytes": got.transferred, "held": len(held)}))
"""


def test_peak_rss_stays_flat_for_a_400_mib_image(
    sandbox: SandboxHost, pool: Pool, files: Path, server: _Server
) -> None:
    big = files / "big.raw"
    with big.open("wb") as f:
        f.truncate(RSS_IMAGE_MIB * MIB)  # sparse: zeros cost nothing to serve
    started = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _RSS_SCRIPT,
            sandbox.qemu_uri,
            POOL,
            server.url("big.raw"),
            str(big),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    grew_mib = (figures["after_kib"] - figures["before_kib"]) / 1024
    control_mib = (figures["held_kib"] - figures["after_kib"]) / 1024
    took = time.monotonic() - started
    print(
        f"400 MiB over HTTP: peak RSS grew {grew_mib:.1f} MiB (from {figures['before_kib']} KiB),"
        f" {took:.1f} s; reading the file into memory afterwards grew it {control_mib:.0f} MiB"
    )
    assert figures["bytes"] == figures["held"] == RSS_IMAGE_MIB * MIB
    assert grew_mib < RSS_LIMIT_MIB, figures
    assert control_mib > RSS_IMAGE_MIB - RSS_LIMIT_MIB, figures  # the measure does see it
    big.unlink()


def test_qcow2_data_and_file_data_are_not_uploaded_again(
    qemu_host: Host, pool: Pool, files: Path, counted: tuple[Host, CountingLibvirt]
) -> None:
    """Issue 18 items 1 and 2: ``Volumes.ensure(data=<qcow2 bytes>)`` compares content by
    checksum (libvirt reports the qcow2's virtual size, never ``len(data)``), and ``data``
    may be a file path (streamed): a second ensure of either makes no write call."""
    qcow2 = (files / "disk.qcow2").read_bytes()
    made = qemu_host.volumes.ensure(pool, "it-data.qcow2", data=qcow2, format="qcow2")
    assert made.changed and made.volume is not None
    assert made.volume.capacity == 64 * MIB != len(qcow2)
    by_path = qemu_host.volumes.ensure(pool, "it-path.raw", data=files / "disk.raw")
    assert by_path.changed and by_path.volume is not None
    assert by_path.volume.sha256() == _sha256(files / "disk.raw")
    guessed = qemu_host.volumes.ensure(pool, "it-guess.qcow2", data=qcow2)  # no format given
    assert guessed.volume is not None and guessed.volume.format == "qcow2"
    host, proxy = counted
    again = host.volumes.ensure(POOL, "it-data.qcow2", data=qcow2, format="qcow2")
    assert not again.changed, again.changes
    again_guessed = host.volumes.ensure(POOL, "it-guess.qcow2", data=qcow2)
    assert not again_guessed.changed, again_guessed.changes
    again_path = host.volumes.ensure(POOL, "it-path.raw", data=files / "disk.raw")
    assert not again_path.changed, again_path.changes
    assert {k: v for k, v in proxy.calls.items() if k in WRITES} == {}, proxy.calls


def _hvlib(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HVLIB_")}
    res = subprocess.run(
        [sys.executable, "-m", "hvlib", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    print(f"$ hvlib {' '.join(args)}  -> exit {res.returncode}\n{res.stdout}{res.stderr}")
    return res


def test_cli_image_pull(sandbox: SandboxHost, pool: Pool, files: Path, server: _Server) -> None:
    src = files / "disk.raw"
    digest = _sha256(src)
    args = ("image", "pull", "it-cli.raw", server.url("disk.raw"), "--pool", POOL)
    first = _hvlib(*args, "--sha256", digest, "--uri", sandbox.qemu_uri)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        f"+ {POOL}/it-cli.raw: raw, {src.stat().st_size} bytes",
        f"  sha256:{digest} from {server.url('disk.raw')}",
    ]
    assert "bytes" in first.stderr  # the progress lines (stderr is no terminal here)
    again = _hvlib(*args, "--sha256", digest, "--uri", sandbox.qemu_uri)
    assert again.returncode == 0 and again.stdout.startswith(f"= {POOL}/it-cli.raw: unchanged")
    bad = _hvlib("image", "pull", "it-cli-bad.raw", str(src), "--pool", POOL, "--sha256", "0" * 64,
                 "--uri", sandbox.qemu_uri)  # fmt: skip
    assert bad.returncode == 1 and "checksum mismatch" in bad.stderr
    assert [ln for ln in bad.stderr.splitlines() if ln.startswith("hvlib:")] == [
        bad.stderr.strip().splitlines()[-1]
    ]  # one error line, after the progress lines
    malformed = _hvlib(*args, "--sha256", "xyz", "--uri", sandbox.qemu_uri)
    assert malformed.returncode == 2 and "checksum" in malformed.stderr
    assert "it-cli-bad.raw" not in _names(pool)
