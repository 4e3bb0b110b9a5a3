"""A source that changes under the workflow is never built from stale data or recorded with a false
checksum (audit: changed demo settings built cubes from the old movies; an in-place source with a
declared sha256 changed unnoticed and its cube recorded the old file's hash)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_workflow import BIN, _env, planned_jobs, smk, write_config, write_manifest
from test_workflow_extend import manifest_workspace, movies

from tomodata.specimens import _meta

pytestmark = pytest.mark.timeout(600)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_demo_seed_refetches_and_cubes_the_new_movies(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    demo = {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}}
    config = write_config(work, "sd", demo)
    smk(work, "--cores", "2", "--configfile", str(config), "--until", "cube")
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["demo"]["seed"] = 1
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(work, "--configfile", str(config), "--until", "cube")
    assert ("demo_movies", None) in jobs and sum(1 for r, _ in jobs if r == "fetch") == 3, jobs
    smk(work, "--cores", "2", "--configfile", str(config), "--until", "cube")
    res = work / "resources/sd"
    for movie in sorted((res / "movies").iterdir()):
        sid = movie.name.split(".")[0]
        fetched = [p for p in (res / "fetched" / sid).iterdir() if p.is_file()]
        assert [_sha(p) for p in fetched] == [_sha(movie)], sid  # the new movie, not the seed-0 copy
        meta = _meta(res / "cubes" / f"{sid}.npz")
        assert meta["source_sha256"] == _sha(movie) and meta["content_key"].startswith("demo:1:"), meta
    assert planned_jobs(work, "--configfile", str(config), "--until", "cube") == []


@pytest.fixture
def declared(tmp_path):
    """2 movies in place with their sha256 declared in the manifest, cubed."""
    header, rows = movies(tmp_path / "src", n=2)
    for r in rows:
        r["source"] = f"../src/{r['source']}"
    work = tmp_path / "w"
    work.mkdir()
    for r in rows:
        r["sha256"] = _sha((work / r["source"]).resolve())
    if "sha256" not in header:
        header = [*header, "sha256"]
    write_manifest(work / "m.tsv", header, rows)
    config = write_config(work, "dc", {"source": "manifest", "manifest": "m.tsv", "fetch": {"in_place": True}})
    smk(work, "--cores", "2", "--configfile", str(config), "--until", "cube")
    return work, config, rows


def _replace(src: Path, other: Path) -> None:
    src.unlink()
    shutil.copy(other, src)


def test_in_place_source_changed_against_its_declared_sha256_stops_before_jobs(declared):
    work, config, rows = declared
    src, other = ((work / r["source"]).resolve() for r in rows)
    _replace(src, other)
    out = smk(work, "-n", "--configfile", str(config), "--until", "cube", check=False)
    assert out.returncode != 0, out.stdout[-3000:]
    text = " ".join(out.stdout.split())
    assert f"{src} does not match its declared sha256 {rows[0]['sha256']} (now {_sha(other)})" in text, text[-3000:]
    assert "update the manifest's sha256 or restore the file" in text

    # the manifest updated: that specimen's chain re-runs and its cube records the new file's hash
    rows[0]["sha256"] = _sha(other)
    write_manifest(work / "m.tsv", list(rows[0]), rows)
    jobs = planned_jobs(work, "--configfile", str(config), "--until", "cube")
    assert jobs == [("cube", rows[0]["id"]), ("fetch", rows[0]["id"])], jobs
    smk(work, "--cores", "2", "--configfile", str(config), "--until", "cube")
    assert _meta(work / "resources/dc/cubes" / f"{rows[0]['id']}.npz")["source_sha256"] == _sha(other)


def test_cube_refuses_an_in_place_source_changed_since_its_fetch(declared):
    work, _, rows = declared
    res = work / "resources/dc"
    src, other = ((work / r["source"]).resolve() for r in rows)
    _replace(src, other)
    record = res / "fetched" / f"{rows[0]['id']}.tsv"
    out = subprocess.run(
        [str(BIN / "tomo"), "cube", "--fetched", str(record), "--id", rows[0]["id"], "-o", str(work / "x.npz")],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert out.returncode != 0
    err = " ".join(out.stderr.split())
    spelled = record.read_text().split("\t")[3].strip()  # the source as the record names it
    want = f"{spelled} does not match the sha256 it was fetched with, {rows[0]['sha256']} (now {_sha(other)})"
    assert want in err, err
    assert not (work / "x.npz").exists()
    assert np.load(res / "cubes" / f"{rows[0]['id']}.npz")  # the old cube is untouched


@pytest.mark.parametrize("in_place", [False, True], ids=["copy", "in_place"])
def test_a_source_archived_after_the_build_re_runs_nothing(tmp_path, in_place):
    """A local source moved away once its cube exists (no declared sha256; fetched as a copy, or read
    in place, where the fetch record names the source itself): a warning, nothing planned, nothing
    re-made (helper-77: every invocation stopped, and with --keep-going the content key changed and
    the whole chain was planned)."""
    work, config, _, rows = manifest_workspace(tmp_path, "ar", "m.tsv", n=2)
    if in_place:
        cfg = yaml.safe_load(config.read_text())
        cfg["data"]["fetch"] = {"in_place": True}
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    smk(work, "--cores", "2", "--configfile", str(config), "--until", "cube")
    src = (work / rows[0]["source"]).resolve()
    src.rename(tmp_path / "archived")
    out = smk(work, "-n", "--configfile", str(config), "--until", "cube")
    assert "local source(s) are gone but their cubes are there" in out.stdout, out.stdout[-3000:]
    assert ("read in place, is gone" in out.stdout) == in_place, out.stdout[-3000:]  # its fetch record: removed
    assert planned_jobs(work, "--configfile", str(config), "--until", "cube") == []
