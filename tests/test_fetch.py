"""Fetching against a real HTTP server on 127.0.0.1 (in this process): resume, retries, errors, mirror."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest

from model.cli import main
from tomodata.cli.scans import _fetched_path
from tomodata.fetch import (
    ChecksumMismatch,
    FetchConnectionError,
    FetchError,
    FetchManifestError,
    FetchTimeout,
    HtmlPageError,
    HTTPStatusError,
    RateLimiter,
    SourcesExhausted,
    fetch_manifest,
    fetch_one,
    source_sha256,
    tree_sha256,
)
from tomodata.fetch_markers import fetch_record_line, fetched_entry
from tomodata.files import sha256_file as file_sha256
from tomodata.io import read_volume
from tomodata.manifest import COLUMNS, load_manifest

FAST = dict(retries=2, backoff=0.01, timeout=2.0, rate=None)
BODY = bytes(range(256)) * 1200 + b"tail"  # ~300 KiB, not HTML
SHA = hashlib.sha256(BODY).hexdigest()
HTML = b"<!DOCTYPE html>\n<html><body>Specimen not found</body></html>\n"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status, body=b"", ctype="application/octet-stream", extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _serve(self, body: bytes, *, ranges=True):
        rng = self.headers.get("Range")
        if rng and ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                return self._send(416, extra={"Content-Range": f"bytes */{len(body)}"})
            part = body[start:]
            return self._send(206, part, extra={"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
        return self._send(200, body)

    def do_GET(self):
        srv = self.server
        path = self.path
        with srv.lock:
            srv.log.append((path, self.headers.get("Range")))
            srv.counts[path] = srv.counts.get(path, 0) + 1
            n = srv.counts[path]
        if path.startswith("/files/"):
            name = path[len("/files/") :]
            if name not in srv.files:
                return self._send(404, b"not found", "text/plain")
            return self._serve(srv.files[name])
        if path.startswith("/drop/"):  # first answer breaks off halfway, later ones are fine
            body = srv.files[path[len("/drop/") :]]
            if n == 1:
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            return self._serve(body)
        if path.startswith("/norange/"):
            return self._serve(srv.files[path[len("/norange/") :]], ranges=False)
        if path == "/page.mp4":  # only the Content-Type tells (the body does not start like a page)
            return self._send(200, b"<head><title>Log in</title></head><body>login</body>", "text/html; charset=utf-8")
        if path == "/sniff.mp4":
            return self._send(200, HTML, "application/octet-stream")
        if path == "/slow.mp4":
            time.sleep(1.0)
            return self._send(200, BODY)
        if path.startswith("/flaky/"):
            if n == 1:
                return self._send(503, b"busy", "text/plain")
            return self._serve(srv.files[path[len("/flaky/") :]])
        return self._send(404, b"not found", "text/plain")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients that time out leave broken pipes
        pass


@contextlib.contextmanager
def serving(handler=Handler):
    """A Server with ``handler`` on 127.0.0.1 (a free port), in a thread of this process."""
    srv = Server(("127.0.0.1", 0), handler)
    srv.lock = threading.Lock()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def server():
    with serving() as srv:
        yield srv


@pytest.fixture
def srv(server):
    server.log, server.counts = [], {}
    server.files = {
        "skull.mp4": BODY,
        "other.mp4": BODY[::-1],
        "slices.zip": _zip(
            {"slices/s000.png": b"\x89PNG0", "slices/s001.png": b"\x89PNG1", "slices/sub/s002.png": b"2"}
        ),
        "single.zip": _zip({"vol.nrrd": b"NRRD0004 fake"}),
        "evil.zip": _zip({"../evil.txt": b"x"}),
    }
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    return server


def spec(url, ident="sp1", kind="movie", sha=""):
    return {"id": ident, "source": url, "source_kind": kind, "sha256": sha}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".part"))


def test_download_plain(srv, tmp_path):
    res = fetch_one(spec(f"{srv.url}/files/skull.mp4"), tmp_path, **FAST)
    assert res.path == tmp_path / "sp1" / "skull.mp4"
    assert res.path.read_bytes() == BODY
    assert (res.sha256, res.bytes, res.resumed, res.from_mirror, res.reused) == (SHA, len(BODY), False, False, False)
    assert res.url == f"{srv.url}/files/skull.mp4"
    assert leftovers(tmp_path / "sp1") == []


def test_dropped_connection_resumes_with_range(srv, tmp_path):
    url = f"{srv.url}/drop/skull.mp4"
    res = fetch_one(spec(url, sha=SHA), tmp_path, **FAST)
    assert res.path.read_bytes() == BODY
    assert res.resumed
    ranges = [r for p, r in srv.log if p == "/drop/skull.mp4"]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == f"bytes={len(BODY) // 2}-"


def test_failure_mid_download_leaves_no_final_file_then_resumes(srv, tmp_path):
    url = f"{srv.url}/drop/skull.mp4"
    with pytest.raises(FetchConnectionError) as ei:
        fetch_one(spec(url), tmp_path, **{**FAST, "retries": 0})
    assert "'sp1'" in str(ei.value) and url in str(ei.value)
    final = tmp_path / "sp1" / "skull.mp4"
    part = tmp_path / "sp1" / "skull.mp4.part"
    assert not final.exists()
    assert part.stat().st_size == len(BODY) // 2
    res = fetch_one(spec(url), tmp_path, **FAST)  # a later run continues the .part
    assert res.resumed and final.read_bytes() == BODY and not part.exists()
    assert srv.log[-1] == ("/drop/skull.mp4", f"bytes={len(BODY) // 2}-")


def test_resume_from_existing_part(srv, tmp_path):
    (tmp_path / "sp1").mkdir()
    (tmp_path / "sp1" / "skull.mp4.part").write_bytes(BODY[:1000])
    res = fetch_one(spec(f"{srv.url}/files/skull.mp4", sha=SHA), tmp_path, **FAST)
    assert res.resumed and res.path.read_bytes() == BODY
    assert srv.log == [("/files/skull.mp4", "bytes=1000-")]


def test_server_ignoring_range_restarts_from_zero(srv, tmp_path):
    (tmp_path / "sp1").mkdir()
    (tmp_path / "sp1" / "skull.mp4.part").write_bytes(b"garbage that is not the start of the file")
    res = fetch_one(spec(f"{srv.url}/norange/skull.mp4"), tmp_path, **FAST)
    assert not res.resumed
    assert res.path.read_bytes() == BODY and res.sha256 == SHA
    assert srv.log == [("/norange/skull.mp4", "bytes=41-")]


def test_416_with_complete_part_counts_as_done(srv, tmp_path):
    (tmp_path / "sp1").mkdir()
    (tmp_path / "sp1" / "skull.mp4.part").write_bytes(BODY)
    res = fetch_one(spec(f"{srv.url}/files/skull.mp4"), tmp_path, **FAST)
    assert res.path.read_bytes() == BODY
    assert srv.counts == {"/files/skull.mp4": 1}


def test_416_with_oversized_part_restarts(srv, tmp_path):
    (tmp_path / "sp1").mkdir()
    (tmp_path / "sp1" / "skull.mp4.part").write_bytes(BODY + b"extra bytes")
    res = fetch_one(spec(f"{srv.url}/files/skull.mp4"), tmp_path, **FAST)
    assert res.path.read_bytes() == BODY and not res.resumed
    assert [r for _, r in srv.log] == [f"bytes={len(BODY) + 11}-", None]


def test_404_is_not_retried(srv, tmp_path):
    url = f"{srv.url}/files/absent.mp4"
    with pytest.raises(HTTPStatusError) as ei:
        fetch_one(spec(url, ident="Absent_species"), tmp_path, **FAST)
    assert ei.value.status == 404
    assert "'Absent_species'" in str(ei.value) and url in str(ei.value) and "404" in str(ei.value)
    assert srv.counts == {"/files/absent.mp4": 1}
    assert not (tmp_path / "Absent_species" / "absent.mp4").exists()


@pytest.mark.parametrize("path", ["/page.mp4", "/sniff.mp4"])
def test_html_page_instead_of_movie(srv, tmp_path, path):
    url = srv.url + path
    with pytest.raises(HtmlPageError) as ei:
        fetch_one(spec(url, ident="Html_case"), tmp_path, **FAST)
    msg = str(ei.value)
    assert "got an HTML page instead of a movie" in msg and "'Html_case'" in msg and url in msg
    assert srv.counts == {path: 1}
    assert os.listdir(tmp_path / "Html_case") == []


def test_timeout_after_retries(srv, tmp_path):
    url = f"{srv.url}/slow.mp4"
    t0 = time.monotonic()
    with pytest.raises(FetchTimeout) as ei:
        fetch_one(spec(url), tmp_path, retries=2, backoff=0.01, timeout=0.2, rate=None)
    elapsed = time.monotonic() - t0
    assert "timed out" in str(ei.value) and url in str(ei.value) and "'sp1'" in str(ei.value)
    deadline = time.monotonic() + 10  # the server's thread counts the last request when it is scheduled
    while srv.counts.get("/slow.mp4", 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.counts == {"/slow.mp4": 3}  # 1 + 2 retries
    assert 0.6 <= elapsed < 10  # 3 x 0.2 s; the server answers after 1 s, which no attempt waited for


def test_refused_connection_is_not_called_a_timeout(tmp_path):
    """urllib3's NewConnectionError subclasses its ConnectTimeoutError: a refused connection said "timed
    out" (a user audit). A port nothing listens on refuses at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    url = f"http://127.0.0.1:{port}/skull.mp4"
    with pytest.raises(FetchConnectionError) as ei:
        fetch_one(spec(url), tmp_path, **{**FAST, "retries": 0})
    assert not isinstance(ei.value, FetchTimeout)
    assert "connection failed" in str(ei.value) and "timed out" not in str(ei.value) and url in str(ei.value)


def test_503_is_retried(srv, tmp_path):
    res = fetch_one(spec(f"{srv.url}/flaky/skull.mp4", sha=SHA), tmp_path, **FAST)
    assert res.path.read_bytes() == BODY
    assert srv.counts == {"/flaky/skull.mp4": 2}


def test_503_without_retries_fails(srv, tmp_path):
    with pytest.raises(HTTPStatusError, match="503"):
        fetch_one(spec(f"{srv.url}/flaky/skull.mp4"), tmp_path, **{**FAST, "retries": 0})


def test_checksum_mismatch(srv, tmp_path):
    wrong = "0" * 64
    url = f"{srv.url}/files/skull.mp4"
    with pytest.raises(ChecksumMismatch) as ei:
        fetch_one(spec(url, sha=wrong), tmp_path, **FAST)
    msg = str(ei.value)
    assert wrong in msg and SHA in msg and url in msg and "'sp1'" in msg
    assert os.listdir(tmp_path / "sp1") == []  # neither final file nor .part


def test_existing_file_is_not_downloaded_again(srv, tmp_path):
    url = f"{srv.url}/files/skull.mp4"
    first = fetch_one(spec(url), tmp_path, **FAST)
    again = fetch_one(spec(url), tmp_path, **FAST)  # no sha256 in the manifest: trusted, hashed
    checked = fetch_one(spec(url, sha=SHA), tmp_path, **FAST)
    assert srv.counts == {"/files/skull.mp4": 1}
    assert again.reused and checked.reused and again.sha256 == first.sha256 == SHA
    first.path.write_bytes(b"corrupted")  # a stale file that fails the manifest's checksum
    with pytest.warns(UserWarning, match="fetching again"):
        fixed = fetch_one(spec(url, sha=SHA), tmp_path, **FAST)
    assert not fixed.reused and fixed.path.read_bytes() == BODY
    assert srv.counts == {"/files/skull.mp4": 2}


def test_alternatives_in_order(srv, tmp_path):
    bad, good = f"{srv.url}/files/absent.mp4", f"{srv.url}/files/skull.mp4"
    res = fetch_one(spec(f"{bad} | {good}"), tmp_path, **FAST)
    assert res.url == good and res.path.read_bytes() == BODY
    with pytest.raises(SourcesExhausted) as ei:
        fetch_one(spec(f"{bad}|{srv.url}/page.mp4", ident="sp2"), tmp_path, **FAST)
    assert [type(e) for e in ei.value.errors] == [HTTPStatusError, HtmlPageError]
    assert "'sp2'" in str(ei.value) and bad in str(ei.value)


def test_file_url_and_local_paths(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    (src_dir / "vol.nrrd").write_bytes(BODY)
    dest = tmp_path / "dest"
    a = fetch_one(spec((src_dir / "vol.nrrd").as_uri(), ident="a", kind="nrrd", sha=SHA), dest, **FAST)
    b = fetch_one(spec("src/vol.nrrd", ident="b", kind="nrrd"), dest, base_dir=tmp_path, **FAST)
    for r, ident in ((a, "a"), (b, "b")):
        assert r.path == dest / ident / "vol.nrrd" and r.path.read_bytes() == BODY and r.sha256 == SHA
        assert leftovers(dest / ident) == []
    with pytest.raises(ChecksumMismatch):
        fetch_one(spec("src/vol.nrrd", ident="c", kind="nrrd", sha="1" * 64), dest, base_dir=tmp_path, **FAST)
    assert os.listdir(dest / "c") == []
    with pytest.raises(FetchError, match="does not exist"):
        fetch_one(spec("src/none.nrrd", ident="d", kind="nrrd"), dest, base_dir=tmp_path, **FAST)
    (src_dir / "saved.mp4").write_bytes(HTML)
    with pytest.raises(HtmlPageError, match="instead of a movie"):
        fetch_one(spec(str(src_dir / "saved.mp4"), ident="e"), dest, **FAST)


def test_local_folder_is_copied_with_tree_checksum(tmp_path):
    folder = tmp_path / "slices"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        (folder / f"s{i:03d}.png").write_bytes(bytes([i]) * 10)
    (folder / "sub" / "x.png").write_bytes(b"x")
    digest = tree_sha256(folder)
    res = fetch_one(spec(str(folder), kind="image_folder", sha=digest), tmp_path / "dest", **FAST)
    assert res.path == tmp_path / "dest" / "sp1" / "slices" and res.path.is_dir()
    assert res.sha256 == digest == tree_sha256(res.path) and res.bytes == 31
    assert leftovers(tmp_path / "dest" / "sp1") == []
    (folder / "s000.png").write_bytes(b"changed")
    assert tree_sha256(folder) != digest
    with pytest.raises(ChecksumMismatch):
        fetch_one(spec(str(folder), ident="sp2", kind="image_folder", sha=digest), tmp_path / "dest", **FAST)
    assert os.listdir(tmp_path / "dest" / "sp2") == []


def test_mirror_is_used_instead_of_network(srv, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "sp1").mkdir(parents=True)
    (mirror / "sp1" / "never.mp4").write_bytes(BODY)
    (mirror / "flat.mp4").write_bytes(BODY[::-1])
    r1 = fetch_one(spec(f"{srv.url}/files/never.mp4", sha=SHA), tmp_path / "d", mirror=mirror, **FAST)
    r2 = fetch_one(spec(f"{srv.url}/files/flat.mp4", ident="sp2"), tmp_path / "d", mirror=mirror, **FAST)
    assert r1.from_mirror and r1.path.read_bytes() == BODY
    assert r2.from_mirror and r2.path.read_bytes() == BODY[::-1]
    assert srv.log == []  # no request at all
    # a mirror file that fails the checksum is skipped: the network is used
    (mirror / "skull.mp4").write_bytes(b"wrong")
    with pytest.warns(UserWarning, match="mirror file skipped"):
        r3 = fetch_one(spec(f"{srv.url}/files/skull.mp4", ident="sp3", sha=SHA), tmp_path / "d", mirror=mirror, **FAST)
    assert not r3.from_mirror and r3.path.read_bytes() == BODY and srv.counts == {"/files/skull.mp4": 1}


def test_zip_archive_is_extracted(srv, tmp_path):
    res = fetch_one(spec(f"{srv.url}/files/slices.zip", kind="image_folder"), tmp_path, **FAST)
    folder = tmp_path / "sp1" / "slices"
    assert res.path == folder
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "s000.png",
        "s001.png",
        "sub/s002.png",
    ]
    assert res.sha256 == hashlib.sha256(srv.files["slices.zip"]).hexdigest()
    assert (tmp_path / "sp1" / "slices.zip").is_file() and leftovers(tmp_path / "sp1") == []
    again = fetch_one(spec(f"{srv.url}/files/slices.zip", kind="image_folder"), tmp_path, **FAST)
    assert again.reused and again.path == folder and srv.counts == {"/files/slices.zip": 1}
    single = fetch_one(spec(f"{srv.url}/files/single.zip", ident="sp2", kind="nrrd"), tmp_path, **FAST)
    assert single.path == tmp_path / "sp2" / "single" / "vol.nrrd"


def test_unsafe_archive_is_refused(srv, tmp_path):
    with pytest.raises(FetchError, match="unsafe member"):
        fetch_one(spec(f"{srv.url}/files/evil.zip", kind="dicom"), tmp_path / "d", **FAST)
    assert not (tmp_path / "d" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "d" / "sp1" / "evil").exists() and leftovers(tmp_path / "d" / "sp1") == []


def test_local_tar_gz_archive(tmp_path):
    arc = tmp_path / "series.tar.gz"
    with tarfile.open(arc, "w:gz") as t:
        for i in range(2):
            data = f"dicom{i}".encode()
            info = tarfile.TarInfo(f"IM{i:04d}.dcm")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    res = fetch_one(spec(arc.as_uri(), kind="dicom", sha=file_sha256(arc)), tmp_path / "d", **FAST)
    assert res.path == tmp_path / "d" / "sp1" / "series"
    assert sorted(p.name for p in res.path.iterdir()) == ["IM0000.dcm", "IM0001.dcm"]


def test_rate_limit_per_host(srv, tmp_path):
    rate, n = 10.0, 4
    # n specimens from one host, one request each, plus one retry (the flaky path answers 503 once)
    rows = [
        {
            "id": f"s{i}",
            "species": f"S {i}",
            "source": f"{srv.url}/flaky/other.mp4",
            "source_kind": "movie",
            "spacing_mm": "1,1,1",
            "split": "train",
            "licence": "test",
        }
        for i in range(n)
    ]
    df = pd.DataFrame(rows)
    t0 = time.monotonic()
    results = fetch_manifest(df, tmp_path, rate=rate, retries=1, backoff=0.0, timeout=2.0)
    elapsed = time.monotonic() - t0
    requests_made = sum(srv.counts.values())
    assert requests_made == n + 1
    assert elapsed >= (requests_made - 1) / rate - 0.01
    assert [r.path.read_bytes() for r in results] == [BODY[::-1]] * n
    limiter, t0 = RateLimiter(None), time.monotonic()
    for _ in range(5):
        limiter.wait("h")
    assert time.monotonic() - t0 < 0.5  # no limit: no wait (a limit of 1/s would take 4 s)


def test_fetch_manifest_records_and_then_enforces_checksums(srv, tmp_path, capsys):
    m = tmp_path / "m.tsv"
    rows = [
        ["a", "A a", f"{srv.url}/files/skull.mp4", "movie", "1,1,1", "", "train", "test", "", ""],
        ["b", "B b", f"{srv.url}/files/other.mp4", "movie", "1,1,1", "", "val", "test", "", ""],
    ]
    m.write_text("\t".join(COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    dest = tmp_path / "dest"
    res = fetch_manifest(m, dest, only=["b"], record=True, progress=True, **FAST)
    assert [r.id for r in res] == ["b"]
    assert f"[1/1] b: fetched {len(BODY)} bytes" in capsys.readouterr().err
    assert list(load_manifest(m)["sha256"]) == ["", hashlib.sha256(BODY[::-1]).hexdigest()]
    res = fetch_manifest(m, dest, record=True, **FAST)
    assert list(load_manifest(m)["sha256"]) == [SHA, hashlib.sha256(BODY[::-1]).hexdigest()]
    assert [r.reused for r in res] == [False, True]
    # the server's file changes: a fresh download must now fail the recorded checksum
    srv.files["skull.mp4"] = b"new content"
    (dest / "a" / "skull.mp4").unlink()
    with pytest.raises(ChecksumMismatch):
        fetch_manifest(m, dest, only=["a"], **FAST)
    with pytest.raises(FetchManifestError) as ei:
        fetch_manifest(m, dest, keep_going=True, **FAST)
    assert list(ei.value.failures) == ["a"] and [r.id for r in ei.value.results] == ["b"]
    with pytest.raises(ValueError, match="not in the manifest"):
        fetch_manifest(m, dest, only=["zzz"], **FAST)


# ------------------------------------------------------------------ in place, detached NRRD headers
def _detached(folder: Path, form: str) -> Path:
    """A 4×3×2 uint8 volume as a detached NRRD header naming its data as one file, a pattern or a LIST."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    head = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 3 4\nspacings: 1 1 2\nencoding: raw\n"
    if form == "single":
        (folder / "v.raw").write_bytes(vol.tobytes())
        head += "data file: v.raw\n"
    elif form == "pattern":
        for k in range(4):
            (folder / f"s{k:02d}.raw").write_bytes(vol[k].tobytes())
        head += "data file: s%02d.raw 0 3 1 2\n"
    else:
        (folder / "data").mkdir(exist_ok=True)
        for k in range(4):
            (folder / "data" / f"{k}.raw").write_bytes(vol[k].tobytes())
        head += "data file: LIST 2\n" + "".join(f"data/{k}.raw\n" for k in range(4))
    (folder / "v.nhdr").write_text(head)
    return folder / "v.nhdr"


@pytest.mark.parametrize("form", ["single", "pattern", "list"])
def test_detached_nrrd_is_fetched_and_hashed_whole(tmp_path, form):
    header = _detached(tmp_path / "src", form)
    digest = source_sha256(header)
    res = fetch_one({"id": "h", "source": str(header), "source_kind": "nrrd"}, tmp_path / "dest")
    assert res.sha256 == digest and res.path == tmp_path / "dest/h/v.nhdr"
    vol, sp = read_volume(res.path)
    assert np.array_equal(vol, np.arange(24, dtype=np.uint8).reshape(4, 3, 2)) and sp == (2.0, 1.0, 1.0)
    again = fetch_one({"id": "h", "source": str(header), "source_kind": "nrrd", "sha256": digest}, tmp_path / "dest")
    assert again.reused and again.sha256 == digest  # a re-run is cheap: nothing copied
    here = fetch_one({"id": "h", "source": str(header), "source_kind": "nrrd"}, tmp_path / "d2", in_place=True)
    assert here.in_place and here.path == header and here.sha256 == digest
    assert not (tmp_path / "d2/h/v.nhdr").exists()
    data = sorted(p for p in (tmp_path / "src").rglob("*.raw"))
    data[-1].write_bytes(b"\0" * len(data[-1].read_bytes()))  # other content: another checksum
    assert source_sha256(header) != digest
    data[0].unlink()
    with pytest.raises(FetchError, match=r"v.nhdr names the data file .*\.raw, which does not exist"):
        fetch_one({"id": "x", "source": str(header), "source_kind": "nrrd"}, tmp_path / "d3")
    with pytest.raises(FetchError, match=r"data file .* is missing"):
        fetch_one({"id": "x", "source": str(header), "source_kind": "nrrd"}, tmp_path / "d3", in_place=True)


def test_in_place_checks_existence_and_kind(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((3, 3, 3), np.uint8))
    (tmp_path / "slices").mkdir()
    res = fetch_one(
        {"id": "a", "source": "v.npy", "source_kind": "npy"}, tmp_path / "d", base_dir=tmp_path, in_place=True
    )
    assert res.path == tmp_path / "v.npy" and res.sha256 == file_sha256(tmp_path / "v.npy") and res.in_place
    with pytest.raises(FetchError, match=r"nope.npy does not exist; fix the manifest's source column"):
        fetch_one(
            {"id": "b", "source": "nope.npy", "source_kind": "npy"}, tmp_path / "d", base_dir=tmp_path, in_place=True
        )
    with pytest.raises(FetchError, match="holds npy data but source_kind says nrrd"):
        fetch_one(
            {"id": "c", "source": "v.npy", "source_kind": "nrrd"}, tmp_path / "d", base_dir=tmp_path, in_place=True
        )
    with pytest.raises(FetchError, match="is a folder but source_kind movie needs a file"):
        fetch_one(
            {"id": "e", "source": "slices", "source_kind": "movie"}, tmp_path / "d", base_dir=tmp_path, in_place=True
        )
    for k in range(3):
        cv2.imwrite(str(tmp_path / "slices" / f"{k:02d}.png"), np.full((4, 4), 40 * k, np.uint8))
    folder = fetch_one(
        {"id": "f", "source": "slices", "source_kind": "image_folder"}, tmp_path / "d", base_dir=tmp_path, in_place=True
    )
    copied = fetch_one(
        {"id": "f", "source": "slices", "source_kind": "image_folder"}, tmp_path / "d", base_dir=tmp_path
    )
    assert folder.sha256 == copied.sha256 == tree_sha256(tmp_path / "slices")  # the same checksum either way
    assert not (tmp_path / "d/a").exists() or not any((tmp_path / "d/a").iterdir())


def _data_names(form: str) -> list[str]:
    return {
        "single": ["v.raw"],
        "pattern": [f"s{k:02d}.raw" for k in range(4)],
        "list": [f"data/{k}.raw" for k in range(4)],
    }[form]


@pytest.mark.parametrize("form", ["single", "pattern", "list"])
def test_remote_detached_nrrd_fetches_its_data_files(srv, tmp_path, form):
    header = _detached(tmp_path / "src", form)
    digest = source_sha256(header)
    srv.files["vol/v.nhdr"] = header.read_bytes()
    for n in _data_names(form):
        srv.files[f"vol/{n}"] = (header.parent / n).read_bytes()
    url = f"{srv.url}/files/vol/v.nhdr"
    res = fetch_one(spec(url, ident="r", kind="nrrd"), tmp_path / "d", **FAST)
    assert res.path == tmp_path / "d/r/v.nhdr" and res.sha256 == digest  # the same as the local source's
    assert res.bytes == header.stat().st_size + sum((header.parent / n).stat().st_size for n in _data_names(form))
    vol, _ = read_volume(res.path)
    assert np.array_equal(vol, np.arange(24, dtype=np.uint8).reshape(4, 3, 2))
    assert sorted(srv.counts) == sorted(f"/files/vol/{n}" for n in ["v.nhdr"] + _data_names(form))
    assert not [p for p in (tmp_path / "d/r").rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]
    n_requests = sum(srv.counts.values())
    again = fetch_one(spec(url, ident="r", kind="nrrd", sha=digest), tmp_path / "d", **FAST)
    assert again.reused and again.sha256 == digest and sum(srv.counts.values()) == n_requests  # no request
    # a data file the server lacks: an error naming header and data file; no header under its final name
    del srv.files[f"vol/{_data_names(form)[-1]}"]
    with pytest.raises(FetchError) as ei:
        fetch_one(spec(url, ident="m", kind="nrrd"), tmp_path / "d", **FAST)
    msg = str(ei.value)
    assert "v.nhdr names the data file" in msg and _data_names(form)[-1] in msg and "404" in msg and "'m'" in msg
    assert not (tmp_path / "d/m/v.nhdr").exists()
    # a wrong checksum: nothing is left under a final name
    srv.files[f"vol/{_data_names(form)[-1]}"] = (header.parent / _data_names(form)[-1]).read_bytes()
    with pytest.raises(ChecksumMismatch):
        fetch_one(spec(url, ident="w", kind="nrrd", sha="2" * 64), tmp_path / "d", **FAST)
    assert not [p for p in (tmp_path / "d/w").rglob("*") if p.is_file()]


def test_detached_nrrd_from_the_mirror_comes_with_its_data_files(srv, tmp_path):
    header = _detached(tmp_path / "mirror" / "mx", "list")
    digest = source_sha256(header)
    res = fetch_one(
        spec(f"{srv.url}/files/v.nhdr", ident="mx", kind="nrrd", sha=digest),
        tmp_path / "d",
        mirror=tmp_path / "mirror",
        **FAST,
    )
    assert res.from_mirror and res.sha256 == digest and srv.log == []
    assert sorted(p.relative_to(tmp_path / "d/mx").as_posix() for p in (tmp_path / "d/mx").rglob("*.raw")) == [
        f"data/{k}.raw" for k in range(4)
    ]


def test_detached_nrrd_with_absolute_data_file_is_fetched_in_place_only(tmp_path):
    raw = tmp_path / "elsewhere" / "v.raw"
    raw.parent.mkdir()
    raw.write_bytes(bytes(range(24)))
    (tmp_path / "h").mkdir()
    header = tmp_path / "h" / "v.nhdr"
    header.write_text(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 3 4\nencoding: raw\ndata file: {raw}\n")
    with pytest.raises(FetchError, match="absolute path or outside its folder"):
        fetch_one({"id": "a", "source": str(header), "source_kind": "nrrd"}, tmp_path / "d")
    here = fetch_one({"id": "a", "source": str(header), "source_kind": "nrrd"}, tmp_path / "d", in_place=True)
    assert here.in_place and here.path == header and here.sha256 == source_sha256(header)
    assert here.bytes == header.stat().st_size + 24


def test_in_place_paths_alternatives_and_checksums(srv, tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((3, 3, 3), np.uint8))
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "v.npy").symlink_to(tmp_path / "v.npy")
    digest = file_sha256(tmp_path / "v.npy")
    dest = tmp_path / "d"
    via_link = fetch_one(
        spec("link/v.npy", ident="a", kind="npy", sha=digest), dest, base_dir=tmp_path, in_place=True, **FAST
    )
    assert via_link.path == tmp_path / "link" / "v.npy" and via_link.path.is_symlink()  # not resolved
    assert via_link.in_place and via_link.sha256 == digest and via_link.bytes == (tmp_path / "v.npy").stat().st_size
    assert not (dest / "a").exists()  # nothing copied, no folder made
    uri = fetch_one(spec((tmp_path / "v.npy").as_uri(), ident="b", kind="npy"), dest, in_place=True, **FAST)
    copied = fetch_one(spec((tmp_path / "v.npy").as_uri(), ident="b", kind="npy"), dest, **FAST)
    assert uri.path == tmp_path / "v.npy" and uri.sha256 == copied.sha256 == digest and not copied.in_place
    with pytest.raises(ChecksumMismatch) as ei:
        fetch_one(spec("v.npy", ident="c", kind="npy", sha="3" * 64), dest, base_dir=tmp_path, in_place=True, **FAST)
    assert "'c'" in str(ei.value) and digest in str(ei.value)
    # the first existing local alternative is used; a missing one is skipped
    first = fetch_one(
        spec(f"gone.npy | v.npy | {srv.url}/files/skull.mp4", ident="e", kind="npy"),
        dest,
        base_dir=tmp_path,
        in_place=True,
        **FAST,
    )
    assert first.in_place and first.path == tmp_path / "v.npy" and srv.log == []
    # a remote source is fetched (copied) as usual, also when the local alternatives are missing
    remote = fetch_one(
        spec(f"gone.mp4 | {srv.url}/files/skull.mp4", ident="f"), dest, base_dir=tmp_path, in_place=True, **FAST
    )
    assert not remote.in_place and remote.path == dest / "f" / "skull.mp4" and remote.sha256 == SHA
    # only local sources, none there: the error names id, path and what to do
    with pytest.raises(SourcesExhausted) as ei:
        fetch_one(spec("gone.npy | gone2.npy", ident="g", kind="npy"), dest, base_dir=tmp_path, in_place=True)
    msg = str(ei.value)
    assert "'g'" in msg and str(tmp_path / "gone2.npy") in msg and "fix the manifest's source column" in msg


def test_in_place_dicom_folder_and_archive(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(2):
        (folder / f"IM{i:04d}.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes([i]) * 20)
    res = fetch_one(spec(str(folder), kind="dicom"), tmp_path / "d", in_place=True)
    copy = fetch_one(spec(str(folder), kind="dicom"), tmp_path / "d")
    assert res.in_place and res.path == folder and res.sha256 == copy.sha256 == tree_sha256(folder)
    assert copy.path == tmp_path / "d/sp1/series" and res.bytes == copy.bytes == 2 * 152
    # an archive cannot be read where it is: it is copied and extracted, hashed as downloaded
    arc = tmp_path / "slices.zip"
    arc.write_bytes(_zip({"slices/s000.png": b"\x89PNG0", "slices/s001.png": b"\x89PNG1"}))
    z = fetch_one(spec(str(arc), ident="z", kind="image_folder"), tmp_path / "d", in_place=True)
    assert not z.in_place and z.path == tmp_path / "d/z/slices" and z.sha256 == file_sha256(arc)
    assert sorted(p.name for p in z.path.iterdir()) == ["s000.png", "s001.png"]


def test_rerun_reuses_local_copies_without_copying(tmp_path):
    (tmp_path / "f.nrrd").write_bytes(BODY)
    folder = tmp_path / "slices"
    folder.mkdir()
    (folder / "s0.png").write_bytes(b"\x89PNG0")
    header = _detached(tmp_path / "h", "pattern")
    sources = [("f", "f.nrrd", "nrrd"), ("s", "slices", "image_folder"), ("h", "h/v.nhdr", "nrrd")]
    first = {i: fetch_one(spec(src, ident=i, kind=k), tmp_path / "d", base_dir=tmp_path) for i, src, k in sources}
    stamps = {p: p.stat().st_ino for p in (tmp_path / "d").rglob("*")}
    for with_sha in (False, True):
        for i, src, k in sources:
            r = fetch_one(
                spec(src, ident=i, kind=k, sha=first[i].sha256 if with_sha else ""), tmp_path / "d", base_dir=tmp_path
            )
            assert r.reused and r.path == first[i].path and r.sha256 == first[i].sha256
    assert {p: p.stat().st_ino for p in (tmp_path / "d").rglob("*")} == stamps  # nothing copied again
    assert first["h"].sha256 == source_sha256(header)


def test_cli_fetch_in_place_record_is_read_by_cube(tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((3, 3, 3), np.uint8))
    header = _detached(tmp_path / "h", "list")
    m = tmp_path / "m.tsv"
    rows = [
        ["a", "A a", "v.npy", "npy", "1,1,1", "", "train", "test", "", ""],
        ["b", "B b", "h/v.nhdr", "nrrd", "", "", "val", "test", "", ""],
    ]
    m.write_text("\t".join(COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    assert main(["fetch", str(m), "-d", str(tmp_path / "d"), "--in-place"]) == 0
    record = tmp_path / "rec.tsv"
    record.write_text(capsys.readouterr().out)
    lines = [ln.split("\t") for ln in record.read_text().splitlines()]
    assert [ln[:2] for ln in lines] == [["a", "in-place"], ["b", "in-place"]]
    assert _fetched_path(str(record), "a") == str(tmp_path / "v.npy")
    assert _fetched_path(str(record), "b") == str(header)
    assert _fetched_path(str(record), "b", field=2) == source_sha256(header)
    assert main(["fetch", str(m), "-d", str(tmp_path / "d")]) == 0  # copied: the same checksums
    copied = [ln.split("\t") for ln in capsys.readouterr().out.splitlines()]
    assert [ln[1] for ln in copied] == ["fetched", "fetched"] and [ln[2] for ln in copied] == [ln[2] for ln in lines]
    assert main(["fetch", str(m), "-d", str(tmp_path / "d")]) == 0  # a re-run keeps them
    assert [ln.split("\t")[1] for ln in capsys.readouterr().out.splitlines()] == ["kept", "kept"]


def test_remote_nhdr_with_attached_data_is_one_file(srv, tmp_path):
    srv.files["att.nhdr"] = b"NRRD0004\ntype: uint8\ndimension: 1\nsizes: 3\nencoding: raw\n\n\x01\x02\x03"
    res = fetch_one(spec(f"{srv.url}/files/att.nhdr", kind="nrrd"), tmp_path, **FAST)
    again = fetch_one(spec(f"{srv.url}/files/att.nhdr", kind="nrrd"), tmp_path, **FAST)
    assert res.sha256 == again.sha256 == hashlib.sha256(srv.files["att.nhdr"]).hexdigest() and again.reused


def test_fetch_record_line_round_trips_and_refuses_a_tab_in_the_path(tmp_path):
    """The record's one format (tomodata.fetch_markers): written by fetch_record_line, read by fetched_entry."""
    flags = dict(in_place=False, from_mirror=False, reused=True, resumed=False)
    r = SimpleNamespace(id="a", sha256="f" * 64, path=tmp_path / "a b.nii.gz", **flags)
    (tmp_path / "rec.tsv").write_text(fetch_record_line(r) + "\n")
    assert fetched_entry(tmp_path / "rec.tsv", "a") == ("a", "kept", "f" * 64, str(tmp_path / "a b.nii.gz"))
    with pytest.raises(ValueError, match="has no line for specimen 'b'"):
        fetched_entry(tmp_path / "rec.tsv", "b")
    with pytest.raises(ValueError, match="holds a tab or line break"):
        fetch_record_line(SimpleNamespace(id="t", sha256="0" * 64, path=tmp_path / "x\ty", **flags))
