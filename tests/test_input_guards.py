"""Guards on what users hand the workflow: manifest rows and files, fetched sources, config values.

Each test pins one refusal (or one documented checksum) that a mutation review found no other test
would notice losing: a header-only manifest, ids that are not safe folder names, bad window,
orientation, URL and spacing cells, ``record_checksums`` on a broken manifest, the folder checksum's
documented formula, a wrong sha256 of a local detached NRRD, a remote NRRD header pointing outside
its folder, ``file://`` URLs with a host and two cross-validation folds.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from test_manifest import good_row

from tomodata.config_check import value_errors
from tomodata.fetch import ChecksumMismatch, FetchError, fetch_one, source_sha256, tree_sha256
from tomodata.manifest import ManifestError, load_manifest, record_checksums

HEADER = ["id", "species", "source", "source_kind", "spacing_mm", "split", "licence", "sha256"]


def _manifest(path: Path, rows: list[dict], columns=None) -> Path:
    """A manifest file: a comment line, the header (line 2), then one line per row (lines 3, 4, …)."""
    columns = list(columns or (rows[0].keys() if rows else HEADER))
    lines = ["# specimens", "\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ manifest


def test_header_only_manifest_is_refused(tmp_path):
    """Without it a manifest whose rows were all deleted (or commented out) would load as an empty
    table, and the workflow would fetch and train on nothing instead of saying the manifest is empty."""
    m = _manifest(tmp_path / "m.tsv", [], columns=HEADER)
    with open(m, "a", encoding="utf-8") as f:
        f.write("# Didelphis_virginiana\tDidelphis virginiana\t...\n\n")
    with pytest.raises(ManifestError, match="the manifest has a header but no rows"):
        load_manifest(m)


@pytest.mark.parametrize("ident", ["..", ".x", "-x", "_x"])
def test_ids_that_are_no_safe_folder_name_are_refused(tmp_path, ident):
    """The id names the download folder ``<dest>/<id>``: without it an id ``..`` would fetch into the
    folder above the destination, and ``.x`` (hidden) or ``-x`` (read as an option) would be accepted."""
    m = _manifest(tmp_path / "m.tsv", [good_row(id=ident)])
    with pytest.raises(ManifestError) as e:
        load_manifest(m)
    assert f"row 1 (line 3), column 'id': {ident!r} is not valid" in str(e.value)
    assert load_manifest(_manifest(tmp_path / "ok.tsv", [good_row(id="a.b-c_1")]))["id"].tolist() == ["a.b-c_1"]


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("window", "5,2", "window must be two finite numbers lo < hi"),
        ("orientation", "z,z,x", "orientation must name z, y and x once each"),
        ("source", "https://", "has nothing after the scheme"),
        ("spacing_mm", "1e999,1,1", "spacing values must be finite and positive"),
    ],
)
def test_bad_cells_are_refused_naming_row_and_column(tmp_path, column, value, says):
    """Without it a window with lo > hi, an orientation naming an axis twice, a URL with nothing after
    ``https://`` or an infinite spacing would pass the manifest check and fail (or give nonsense) hours
    later in a fetch or cube job, far from the row that caused it."""
    rows = [good_row(), good_row(id="Tamandua_tetradactyla", **{column: value})]
    m = _manifest(tmp_path / "m.tsv", rows, columns=[*HEADER, "window", "orientation"])
    with pytest.raises(ManifestError) as e:
        load_manifest(m)
    msg = str(e.value)
    assert f"row 2 (line 4), column {column!r}: " in msg and says in msg, msg
    assert "row 1" not in msg


def test_record_checksums_does_not_touch_an_invalid_manifest(tmp_path):
    """Without it recording checksums into a manifest with a duplicated id would write the digest into
    both rows (and rewrite the file) instead of refusing the broken manifest and leaving it as it was."""
    m = _manifest(tmp_path / "m.tsv", [good_row(), good_row(id="didelphis_VIRGINIANA")])
    before = m.read_bytes()
    with pytest.raises(ManifestError, match="is not unique"):
        record_checksums(m, {"Didelphis_virginiana": "a" * 64})
    assert m.read_bytes() == before


# ------------------------------------------------------------------ fetch: checksums


def test_folder_checksum_is_the_documented_formula(tmp_path):
    """``docs/manifest.md`` tells users to check a fetched folder with ``find | sort | xargs sha256sum |
    sha256sum``; without it the checksum could drop the file names, so two folders holding the same
    bytes under other names (other slices order, other files) would pass as the same source."""
    folder = tmp_path / "slices"
    files = {"s001.png": b"bottom", "s000.png": b"top", "sub/s002.png": b"deep", "sub.png": b"beside"}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    lines = "".join(
        f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n" for rel in sorted(files, key=lambda s: s.encode())
    )
    assert tree_sha256(folder) == hashlib.sha256(lines.encode()).hexdigest()
    if shutil.which("sha256sum"):  # the documented command itself
        cmd = "find . -type f | sed 's#^./##' | LC_ALL=C sort | xargs sha256sum | sha256sum"
        out = subprocess.run(cmd, shell=True, cwd=folder, capture_output=True, text=True, check=True).stdout
        assert out.split()[0] == tree_sha256(folder)
    renamed = tmp_path / "renamed"
    shutil.copytree(folder, renamed)
    (renamed / "s000.png").rename(renamed / "s999.png")
    assert tree_sha256(renamed) != tree_sha256(folder)


def _detached(folder: Path, data_line: str = "v.raw") -> Path:
    """A 2×3×4 uint8 volume as a detached NRRD header ``v.nhdr`` and its data file ``v.raw``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "v.raw").write_bytes(np.arange(24, dtype=np.uint8).tobytes())
    header = folder / "v.nhdr"
    header.write_text(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 3 2\nencoding: raw\ndata file: {data_line}\n")
    return header


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in-place"])
def test_local_detached_nrrd_with_a_wrong_sha256_is_refused(tmp_path, in_place):
    """Without it a local ``.nhdr`` whose data changed since its checksum was recorded would be copied
    (or used in place) and ingested as if it were the verified scan."""
    header = _detached(tmp_path / "src")
    good = source_sha256(header)
    row = {"id": "h", "source": str(header), "source_kind": "nrrd", "sha256": "0" * 64}
    with pytest.raises(ChecksumMismatch):
        fetch_one(row, tmp_path / "dest", in_place=in_place)
    assert not (tmp_path / "dest/h/v.nhdr").exists()
    res = fetch_one({**row, "sha256": good}, tmp_path / "dest", in_place=in_place)
    assert res.sha256 == good


class _Files(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        body = self.server.files.get(self.path.lstrip("/"))
        status = 200 if body is not None else 404
        body = body if body is not None else b"not found"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_files():
    """An HTTP server on 127.0.0.1 serving ``srv.files`` (path → bytes); ``srv.url`` is its root."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.daemon_threads = True
    srv.files = {}
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_remote_nrrd_header_naming_a_file_outside_its_folder_is_refused(http_files, tmp_path):
    """Without it a downloaded header saying ``data file: ../../outside.raw`` would make fetch download
    that file and write it outside the specimen's folder (above the destination), wherever the
    server's header points."""
    http_files.files["a/b/v.nhdr"] = _detached(tmp_path / "src", "../../outside.raw").read_bytes()
    http_files.files["outside.raw"] = bytes(range(24))
    work = tmp_path / "work"
    row = {"id": "r", "source": f"{http_files.url}/a/b/v.nhdr", "source_kind": "nrrd"}
    with pytest.raises(FetchError, match="outside the header's folder"):
        fetch_one(row, work / "dest", rate=None, retries=0, backoff=0, timeout=5)
    assert [p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("in_place", [False, True], ids=["copied", "in-place"])
def test_file_url_with_a_host_is_refused(tmp_path, in_place):
    """``file://fileserver/scans/v.npy`` names a file on another machine; without it fetch would
    silently read ``/scans/v.npy`` from this machine instead (here an existing file of that path)."""
    np.save(tmp_path / "v.npy", np.zeros((2, 2, 2), np.uint8))
    row = {"id": "u", "source": f"file://fileserver{(tmp_path / 'v.npy').as_posix()}", "source_kind": "npy"}
    with pytest.raises(FetchError, match="file:// URL with a host is not supported"):
        fetch_one(row, tmp_path / "dest", in_place=in_place)
    local = fetch_one({**row, "source": (tmp_path / "v.npy").as_uri()}, tmp_path / "dest", in_place=in_place)
    assert local.sha256 == source_sha256(tmp_path / "v.npy")


# ------------------------------------------------------------------ config values


@pytest.mark.parametrize(("folds", "bad"), [(0, False), (1, True), (2, True), (3, False)])
def test_one_or_two_cv_folds_are_refused(folds, bad):
    """Two folds cannot give each fold its own train, val and test species; without it a config with
    ``model.cv.folds: 2`` would start a cross-validation that fails (or leaks test species) later."""
    errors = value_errors({"model": {"cv": {"folds": folds}}})
    assert any(e.startswith(f"model.cv.folds: {folds} folds cannot") for e in errors) == bad, errors
