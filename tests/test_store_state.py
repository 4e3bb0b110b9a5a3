"""The store's state is the truth: markers that outlive the store are found before the DAG is built.

Deleting the store rebuilds it (bit-identical checksums); deleting one species' shards re-renders only
that species; a marker whose checksums are not the store's is redone (tomodata.store_markers); a
corrupt shard is named by `tomo validate`, whose --forget-markers makes the rerun repair it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_workflow import planned_jobs, smk, write_config
from test_workflow_extend import movies, write_manifest

from tomodata.store_markers import stale_markers

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("state")
    header, rows = movies(base / "src")
    for r in rows:
        r["source"] = f"../src/{r['source']}"
    work = base / "w"
    work.mkdir()
    write_manifest(work / "m.tsv", header, rows)
    config = write_config(work, "st", {"source": "manifest", "manifest": "m.tsv"})
    smk(work, "--cores", "2", "--configfile", str(config))
    return base, [r["id"] for r in rows]


def _checksums(store):
    out = {}
    for g in sorted(p for p in (store / "species").iterdir() if p.is_dir()):
        out[g.name] = json.loads((g / "zarr.json").read_text())["attributes"]["complete"]["sha256"]
    return out


def test_deleted_store_is_rebuilt_bit_identical(built, tmp_path):
    base, ids = built
    shutil.copytree(base, tmp_path / "c", symlinks=True)
    work = tmp_path / "c" / "w"
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))  # the copy moved the sources: re-fetch
    store = work / "results/st/dataset.zarr"
    before = _checksums(store)
    shutil.rmtree(store)
    jobs = planned_jobs(work, "--configfile", str(work / "config.yaml"))
    assert jobs == sorted([("render_species", i) for i in ids] + [("store_create", None), ("store_finalize", None)])
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert _checksums(store) == before
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == []


def test_one_species_shards_deleted_rerenders_only_it(built, tmp_path):
    base, ids = built
    shutil.copytree(base, tmp_path / "c", symlinks=True)
    work = tmp_path / "c" / "w"
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))  # the copy moved the sources: re-fetch
    store = work / "results/st/dataset.zarr"
    before = _checksums(store)
    shutil.rmtree(store / "species" / ids[1] / "images" / "c")
    out = smk(work, "-n", "--configfile", str(work / "config.yaml")).stdout
    assert f"species {ids[1]}: array images has no data files" in out
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == [
        ("render_species", ids[1]),
        ("store_finalize", None),
    ]
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert _checksums(store) == before


def test_stale_markers_unit(tmp_path):
    store = tmp_path / "d.zarr"
    done = tmp_path / "a.done.json"
    done.write_text(json.dumps({"complete": {"sha256": {"images": "x"}}}))
    final = tmp_path / "final.json"
    final.write_text("{}")
    got = stale_markers(store, created=tmp_path / "created.json", final=final, done={"a": done})
    assert {p for p, _ in got} == {str(done), str(final)} and "is gone" in got[0][1]
    store.mkdir()
    (store / "zarr.json").write_text(json.dumps({"attributes": {}}))
    got = dict(stale_markers(store, created=tmp_path / "created.json", final=final, done={"a": done}))
    assert got[str(done)] == "species a is not in the store" and str(final) in got
    assert stale_markers(store, created=tmp_path / "c.json", final=tmp_path / "f.json", done={}) == []


def test_corrupt_shard_named_by_validate_and_repaired_by_the_rerun(built, tmp_path):
    base, ids = built
    shutil.copytree(base, tmp_path / "c", symlinks=True)
    work = tmp_path / "c" / "w"
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))  # the copy moved the sources: re-fetch
    store = work / "results/st/dataset.zarr"
    before = _checksums(store)
    shard = sorted(p for p in (store / "species" / ids[2] / "images" / "c").rglob("*") if p.is_file())[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    tomo = str(Path(sys.executable).parent / "tomo")
    proc = subprocess.run(
        [tomo, "validate", str(store), "--forget-markers", str(work / "results/st")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and f"rebuild: {ids[2]}" in proc.stdout, proc.stdout[-2000:]
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == [
        ("render_species", ids[2]),
        ("store_finalize", None),
    ]
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert _checksums(store) == before
    assert subprocess.run([tomo, "validate", str(store)], capture_output=True).returncode == 0
