"""The store's state is the truth: markers that outlive the store are found before the DAG is built.

Deleting the store rebuilds it (bit-identical checksums); deleting one species' shards re-renders only
that species; a marker whose checksums are not the store's is redone (tomodata.store_markers); a
corrupt shard is named by `tomo validate`, whose --forget-markers makes the rerun repair it. Unit tests
on tiny stores: a store of other settings or another species table, a deleted species group or array,
one missing or truncated shard of several, a re-render over a damaged shard, fetch records of a
missing file (tomodata.fetch_markers).
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import shutil
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import test_store_update as tu
import yaml
import zarr
from test_workflow import planned_jobs, smk, write_config
from test_workflow_extend import movies, write_manifest

from model.cli import main
from tomodata.cli import run as tomo_run
from tomodata.cli.stores import cmd_render_species
from tomodata.fetch_markers import in_place_record_line, stale_fetch_records
from tomodata.run_layout import FINAL_MARKER, species_marker
from tomodata.store import SPEC_VERSION, open_store, validate_store, write_species
from tomodata.store import write as store_write
from tomodata.store_markers import (
    forget_markers,
    stale_markers,
    store_fingerprint,
    sync_settings_file,
    unreadable_store,
    write_species_marker,
)
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("state")
    header, rows = movies(base / "src")
    for r in rows:  # absolute: a test's copy of the workspace finds the same sources (nothing to fetch again)
        r["source"] = str(base / "src" / r["source"])
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
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == []  # a copy: nothing to do
    store = work / "results/st/dataset.zarr"
    before = _checksums(store)
    shutil.rmtree(store)
    jobs = planned_jobs(work, "--configfile", str(work / "config.yaml"))
    assert jobs == sorted(
        [("render_species", i) for i in ids] + [("previews", None), ("store_create", None), ("store_finalize", None)]
    )
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert _checksums(store) == before
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == []


def test_a_store_not_mounted_here_keeps_its_markers_in_a_dry_run_and_unlock(built, tmp_path):
    """The store behind a link that points nowhere (scratch not mounted on a login node): -n and
    --unlock warn and keep every marker; with the store back nothing is to be done."""
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    store = work / "results/st/dataset.zarr"
    moved = tmp_path / "scratch.zarr"
    store.rename(moved)
    store.symlink_to(tmp_path / "not-mounted" / "dataset.zarr")
    cfg = ("--configfile", str(work / "config.yaml"))
    out = smk(work, "-n", *cfg).stdout
    assert "the store is not readable here" in out and "Its markers are kept" in out, out[-3000:]
    smk(work, "--unlock", *cfg)
    assert len(list((work / "results/st/species").glob("*.done.json"))) == len(ids)
    store.unlink()
    moved.rename(store)
    assert planned_jobs(work, *cfg) == []


def test_one_species_shards_deleted_rerenders_only_it(built, tmp_path):
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    store = work / "results/st/dataset.zarr"
    before = _checksums(store)
    shutil.rmtree(store / "species" / ids[1] / "images" / "c")
    out = smk(work, "-n", "--configfile", str(work / "config.yaml")).stdout
    assert f"species {ids[1]}: array images lacks its data file c/0/0/0" in out
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == [
        ("previews", None),
        ("render_species", ids[1]),
        ("store_finalize", None),
    ]
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert _checksums(store) == before


def test_removed_done_marker_renders_that_species_again(built, tmp_path):
    """Deleting a species' done marker by hand re-renders that species (the final marker is stale)."""
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    (work / f"results/st/species/{ids[1]}.done.json").unlink()
    text = smk(work, "-n", "--configfile", str(work / "config.yaml")).stdout
    assert f"species {ids[1]} is in the store without its done marker" in text, text[-2000:]
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == [
        ("previews", None),
        ("render_species", ids[1]),
        ("store_finalize", None),
    ]


def test_lost_settings_file_is_written_back_unless_the_settings_changed(built, tmp_path):
    """A deleted dataset.settings.json made its job write it anew and every species render again; now
    the Snakefile writes it back (the same bytes, dated before the markers) where the store has the
    run's settings: nothing to do. With other settings nothing is written back: every species renders."""
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    config = work / "config.yaml"
    settings = work / "results/st/dataset.settings.json"
    before = settings.read_bytes()
    settings.unlink()
    text = smk(work, "-n", "--configfile", str(config)).stdout
    assert "dataset.settings.json was gone: written again from the store's settings" in text, text[-2000:]
    assert settings.read_bytes() == before and planned_jobs(work, "--configfile", str(config)) == []
    cfg = yaml.safe_load(config.read_text())
    assert isinstance(cfg["dataset"]["chi"], float) and cfg["dataset"]["chi"].is_integer()
    cfg["dataset"]["chi"] = int(cfg["dataset"]["chi"])  # `chi: 10` for `chi: 10.0`: one setting, no re-render
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(work, "--configfile", str(config)) == []
    settings.unlink()
    cfg["dataset"]["n_views"] += 1
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(work, "--configfile", str(config))
    assert not settings.exists()
    assert jobs == sorted(
        [("render_species", i) for i in ids]
        + [("previews", None), ("store_create", None), ("store_finalize", None), ("store_settings", None)]
    )


def test_changed_setting_remakes_the_store_without_snakemakes_records(built, tmp_path):
    """With .snakemake/ deleted a changed dataset setting re-ran nothing ("Nothing to be done": the params
    trigger reads Snakemake's records). Now the settings file is written with the config's settings and
    dated after the markers: the store and every species are made again. Dry runs remove nothing, and a
    config changed back has nothing to do; the real run makes the store with the new setting."""
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    config = work / "config.yaml"
    shutil.rmtree(work / ".snakemake")
    cfg = yaml.safe_load(config.read_text())
    chi = float(cfg["dataset"]["chi"])
    cfg["dataset"]["chi"] = chi / 2
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rerun = sorted(
        [("render_species", i) for i in ids] + [("previews", None), ("store_create", None), ("store_finalize", None)]
    )
    text = smk(work, "-n", "--configfile", str(config)).stdout
    assert f"dataset.settings.json held other settings than the config (chi: file {chi}, config {chi / 2})" in text
    for _ in range(2):  # a second dry run: the same jobs, no marker removed
        assert planned_jobs(work, "--configfile", str(config)) == rerun
    assert len(list((work / "results/st/species").glob("*.done.json"))) == len(ids)
    cfg["dataset"]["chi"] = chi  # changed back: nothing to do
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert "but the store holds the config's" in smk(work, "-n", "--configfile", str(config)).stdout
    assert planned_jobs(work, "--configfile", str(config)) == []
    cfg["dataset"]["chi"] = chi / 2
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # while a running Snakemake of this workspace lists the file in its locks, it is left as it is
    settings = work / "results/st/dataset.settings.json"
    before = settings.read_bytes()
    locks = work / ".snakemake/locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.input.lock").write_text("resources/st/cubes/x.npz\nresults/st/dataset.settings.json\n")
    assert "left as it is" in smk(work, "-n", "--configfile", str(config)).stdout
    assert settings.read_bytes() == before
    shutil.rmtree(locks)
    smk(work, "--cores", "2", "--configfile", str(config))
    assert json.loads((work / "results/st/dataset.zarr/zarr.json").read_text())["attributes"]["chi"] == chi / 2
    assert planned_jobs(work, "--configfile", str(config)) == []


def test_per_species_views_are_a_dataset_setting(built, tmp_path):
    """dataset.view_sets: shared written out is the default (nothing to do: the jobs' commands and the
    settings file are as before the setting existed); per_species re-makes the store, each species
    rendered from its own views (tomodata.views.species_views), and validates; shared again re-renders."""
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    config = work / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["dataset"]["view_sets"] = "shared"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(work, "--configfile", str(config)) == []
    cfg["dataset"]["view_sets"] = "per_species"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    rerun = sorted(
        [("render_species", i) for i in ids]
        + [("previews", None), ("store_create", None), ("store_finalize", None), ("store_settings", None)]
    )
    assert planned_jobs(work, "--configfile", str(config)) == rerun
    smk(work, "--cores", "2", "--configfile", str(config))
    store = work / "results/st/dataset.zarr"
    ds = open_store(store)
    assert ds.attrs["view_scheme"]["sets"] == "per_species" and validate_store(store).ok
    rots = {i: ds.rotations(i) for i in ids}
    for i in ids:
        assert np.array_equal(rots[i], ds.settings.species_rotations(i))
    assert np.abs(rots[ids[0]] - rots[ids[1]]).max() > 0.1
    assert json.loads((work / "results/st/dataset.settings.json").read_text())["view_sets"] == "per_species"
    assert planned_jobs(work, "--configfile", str(config)) == []
    cfg["dataset"]["view_sets"] = "shared"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(work, "--configfile", str(config)) == rerun


def test_lost_fetched_scan_loses_its_record_and_is_fetched_when_asked(built, tmp_path):
    """The fetched scan is a cache: with the cube up to date nothing re-fetches it (Snakemake does not
    re-make a missing input of an up-to-date job); the warning says how to fetch it now."""
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
    record = f"resources/st/fetched/{ids[0]}.tsv"
    fetched = work / (work / record).read_text().split("\t")[3].strip()
    fetched.unlink()
    text = smk(work, "-n", "--configfile", str(work / "config.yaml")).stdout
    assert "is gone; removing the record" in text and f"to fetch it now: snakemake {record}" in text, text[-2000:]
    assert not (work / record).exists()
    assert planned_jobs(work, "--configfile", str(work / "config.yaml")) == []
    smk(work, record, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert fetched.exists() and planned_jobs(work, "--configfile", str(work / "config.yaml")) == []


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
    # there but unreadable (no species group): nothing is proven, every marker is kept (helper-77: a
    # dry run or --unlock where the store could not be read removed them all, and the store re-rendered)
    assert unreadable_store(store) == f"{store}/species/zarr.json is missing"
    assert stale_markers(store, created=tmp_path / "created.json", final=final, done={"a": done}) == []
    (store / "species").mkdir()
    (store / "species" / "zarr.json").write_text(json.dumps({"node_type": "group"}))
    # a species the store neither holds nor lists (a run of another config removed it): its marker is
    # stale, the final marker vouches for the store as it is (helper-85: a dry run of the other config
    # removed it, and this config's evaluation ran again)
    got = dict(stale_markers(store, created=tmp_path / "created.json", final=final, done={"a": done}))
    assert got == {str(done): "species a is not in the store"}
    # listed in the store's table but gone from it: the store is not what final vouched for
    (store / "zarr.json").write_text(json.dumps({"attributes": {"species": [{"name": "a", "split": "train"}]}}))
    got = dict(stale_markers(store, created=tmp_path / "created.json", final=final, done={"a": done}))
    assert got[str(done)] == "species a is not in the store" and str(final) in got
    assert stale_markers(store, created=tmp_path / "c.json", final=tmp_path / "f.json", done={}) == []


def test_a_store_that_cannot_be_read_here_keeps_its_markers(tmp_path):
    """A dangling link (scratch not mounted on a login node) or a damaged root zarr.json: no marker is
    removed; a store that is gone (no such path) makes them all stale."""
    store, m = _built(tmp_path)
    moved = tmp_path / "elsewhere.zarr"
    store.rename(moved)
    store.symlink_to(tmp_path / "not-mounted" / "dataset.zarr")
    assert "is a symbolic link to" in unreadable_store(store) and stale_markers(store, **m) == []
    store.unlink()
    assert unreadable_store(store) is None and len(stale_markers(store, **m)) == 2 + len(m["done"])  # deleted
    moved.rename(store)
    text = (store / "zarr.json").read_text()
    (store / "zarr.json").write_text(text[: len(text) // 2])
    assert "zarr.json is missing, unreadable" in unreadable_store(store) and stale_markers(store, **m) == []
    (store / "zarr.json").write_text(text)
    assert unreadable_store(store) is None and stale_markers(store, **m) == []


def test_corrupt_shard_named_by_validate_and_repaired_by_the_rerun(built, tmp_path):
    base, ids = built
    work = tmp_path / "w"
    shutil.copytree(base / "w", work, symlinks=True)
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
        ("previews", None),
        ("render_species", ids[2]),
        ("store_finalize", None),
    ]
    smk(work, "--cores", "2", "--configfile", str(work / "config.yaml"))
    assert _checksums(store) == before
    assert subprocess.run([tomo, "validate", str(store)], capture_output=True).returncode == 0


# ----------------------------------------------------------------------------------------------
# unit tests on tiny stores (no workflow run): what the parse-time check sees, what a re-render repairs


def _settings_file(path, n_views):
    """A settings file as ``tomo store-settings`` writes it, for the tiny stores of test_store_update."""
    record = StoreSettings(image_size=tu.S, volume_size=tu.V, steps=8, n_views=n_views).to_json()
    path.write_text(json.dumps({"spec_version": SPEC_VERSION, **record}))
    return path


def _markers(tmp_path, store, names):
    """The workflow's markers of a store just built: created (with its fingerprint), done, final."""
    created, final = tmp_path / "created.json", tmp_path / "final.json"
    created.write_text(json.dumps({"store": str(store), "n_views": tu.N, **store_fingerprint(store)}))
    final.write_text("{}")
    done = {}
    for n in names:
        complete = json.loads((store / "species" / n / "zarr.json").read_text())["attributes"]["complete"]
        done[n] = tmp_path / f"{n}.done.json"
        done[n].write_text(json.dumps({"species": n, "complete": complete}))
    return dict(created=created, final=final, done=done)


def _built(tmp_path, names=("sp0", "sp1"), **kw):
    store = tmp_path / "d.zarr"
    tu.make(store, list(names), **kw)
    for n in names:
        tu.fill(store, n, int(n[-1]))
    return store, _markers(tmp_path, store, names)


def test_store_with_other_settings_makes_every_marker_stale(tmp_path):
    store, m = _built(tmp_path)
    settings = _settings_file(tmp_path / "settings.json", tu.N)
    assert stale_markers(store, settings=settings, **m) == []
    shutil.rmtree(store)  # replaced by an older build with more views (and its species complete)
    tu.make(store, ["sp0", "sp1"], n_views=tu.N + 1)
    for with_file in (settings, None):  # against the settings file, else against what created recorded
        got = dict(stale_markers(store, settings=with_file, **m))
        assert set(got) == {str(m["created"]), str(m["final"]), *map(str, m["done"].values())}
        assert f"n_views: store {tu.N + 1}, settings {tu.N}" in got[str(m["created"])]


def test_a_failed_finalize_removes_the_markers_of_the_damaged_species(tmp_path, capsys):
    """tomo finalize --done RESULTS/dataset.final.json (the workflow's call): a species that fails
    validation loses its done marker (and the final one), with one error line saying so, so the next
    run re-renders it (helper-77: the failure repeated on every run and its reason stood only in the log)."""
    store, m = _built(tmp_path)
    shard = sorted(p for p in (store / "species/sp1/images/c").rglob("*") if p.is_file())[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # the index stays sound: only reading the data finds it
    shard.write_bytes(bytes(data))
    results = tmp_path / "results"
    (results / "species").mkdir(parents=True)
    done = {n: results / "species" / f"{n}.done.json" for n in ("sp0", "sp1")}
    for n, path in done.items():
        shutil.copy(m["done"][n], path)
    assert main(["finalize", str(store), "--done", str(results / "dataset.final.json")]) == 1
    err = capsys.readouterr().err
    assert f"error: species sp1 of {store} failed validation: their markers are removed" in err, err
    assert done["sp0"].exists() and not done["sp1"].exists() and not (results / "dataset.final.json").exists()


def test_a_damaged_volume_or_rotations_chunk_is_named_when_read(tmp_path):
    """A chunk cut short (helper-77: a volume chunk passed the cheap checks and training failed with
    zarr's bare 'Zstd decompression error'): the read names the store, the species and the array."""
    store, _ = _built(tmp_path)
    for array, what in (("volume", "its volume"), ("rotations", "its rotations")):
        chunk = sorted(p for p in (store / "species/sp1" / array).rglob("*") if p.is_file() and "c" in p.parts)[0]
        chunk.write_bytes(chunk.read_bytes()[: max(1, chunk.stat().st_size // 2)])
        read = open_store(store).volume if array == "volume" else open_store(store).rotations
        with pytest.raises(RuntimeError, match=rf"species sp1, {what}: cannot be read .* tomo validate"):
            read("sp1")


def test_a_data_file_cut_short_or_replaced_is_noticed_by_its_recorded_size(tmp_path):
    """Done markers record each data file's size (write_species_marker): a non-shard chunk cut short
    (which passes the 1-byte minimum) or a file of another size makes the marker stale before any job
    (helper-77: a truncated volume chunk passed every cheap check and training failed on it)."""
    store, m = _built(tmp_path)
    for n in ("sp0", "sp1"):
        complete = json.loads((store / "species" / n / "zarr.json").read_text())["attributes"]["complete"]
        write_species_marker(m["done"][n], store, n, complete)
    assert stale_markers(store, **m) == []
    chunk = store / "species/sp1/volume/0/c/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[:-1])
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["done"]["sp1"]), str(m["final"])}
    assert "volume/0/c/0/0/0 of " in got[str(m["done"]["sp1"])] and "when it was rendered" in got[str(m["done"]["sp1"])]


def test_sync_settings_file_unit(tmp_path):
    """sync_settings_file makes the file hold the config's record; dated 1 s before the oldest marker
    where the store holds that record (gone, or changed back), now where it does not (changed)."""
    store, m = _built(tmp_path)
    path = tmp_path / "settings.json"
    record = json.loads(_settings_file(path, tu.N).read_text())
    other = record | {"n_views": tu.N + 1}
    markers = [m["created"], *m["done"].values()]
    oldest = min(p.stat().st_mtime for p in markers)
    assert sync_settings_file(path, store, record, markers) is None  # the same settings: nothing
    path.unlink()
    assert sync_settings_file(path, store, other, markers) is None  # gone, store of others: its job writes it
    assert sync_settings_file(path, store, record, [tmp_path / "none.json"]) is None  # no marker
    assert not path.exists()
    assert "written again" in sync_settings_file(path, store, record, markers)
    assert json.loads(path.read_text()) == record and path.stat().st_mtime == pytest.approx(oldest - 1, abs=0.5)
    # (abs: approx's default relative tolerance is half an hour at today's dates: it passed any date)
    # the config changed (Snakemake's records may be lost): written, newer than every marker
    message = sync_settings_file(path, store, other, markers)
    assert f"n_views: file {tu.N}, config {tu.N + 1}" in message and "made again" in message
    assert json.loads(path.read_text()) == other and path.stat().st_mtime > max(p.stat().st_mtime for p in markers)
    assert sync_settings_file(path, store, other, markers) is None  # a second look: nothing more
    # changed back: the store's own settings again, dated as before (nothing re-renders)
    assert "the store holds the config's" in sync_settings_file(path, store, record, markers)
    assert json.loads(path.read_text()) == record and path.stat().st_mtime == pytest.approx(oldest - 1, abs=0.5)
    # the config's settings dated before the markers of a store of others (replaced by hand): dated now
    path.write_text(json.dumps(other))
    os.utime(path, (oldest - 5, oldest - 5))
    assert "dated now" in sync_settings_file(path, store, other, markers)
    assert path.stat().st_mtime > max(p.stat().st_mtime for p in markers)
    # a malformed view set in the file (null): a difference, repaired from the config, not an error
    path.write_text(json.dumps(record | {"view_sets": None}))
    assert "view_sets: file None, config 'shared'" in sync_settings_file(path, store, record, markers)
    assert json.loads(path.read_text()) == record


def test_store_with_another_species_table_makes_created_stale(tmp_path):
    store, m = _built(tmp_path)
    tu.make(store, ["sp0", "sp1"], splits={"sp1": "val"})  # same settings, other splits: species kept
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["created"]), str(m["final"])} and "species table" in got[str(m["created"])]


def test_render_species_refuses_a_store_of_other_settings(tmp_path):
    store = tmp_path / "d.zarr"
    tu.make(store, ["sp0"], n_views=tu.N + 1)
    a = Namespace(
        store=str(store),
        cube=str(tmp_path / "no.npz"),
        name="sp0",
        backend="cpu",
        batch=8,
        previews=None,
        done=None,
        settings=str(_settings_file(tmp_path / "s.json", tu.N)),
    )
    with pytest.raises(ValueError, match=rf"other settings than .*n_views: store {tu.N + 1}, settings {tu.N}"):
        cmd_render_species(a)


@pytest.mark.parametrize(
    "gone", ["species/sp1", "species/sp1/rotations/zarr.json", "species/sp1/volume", "species/sp1/volume/zarr.json"]
)
def test_deleted_group_or_array_is_noticed_and_rerendered(tmp_path, gone):
    store, m = _built(tmp_path)
    target = store / gone
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["done"]["sp1"]), str(m["final"])}, got
    tu.fill(store, "sp1", 1)  # the re-render recreates its group and arrays from the layout
    assert validate_store(store).ok
    assert stale_markers(store, **_markers(tmp_path, store, ["sp0", "sp1"])) == []


def test_truncated_shard_is_never_read_by_the_rerender(tmp_path):
    store, m = _built(tmp_path, images_per_shard=4)  # 2 N = 6 samples: 2 shards, the last partial
    shard = store / "species/sp1/images/c/1/0/0"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    tu.fill(store, "sp1", 1)
    assert validate_store(store).ok


def test_a_failing_shard_write_names_the_file_and_the_species(tmp_path, monkeypatch):
    store, _ = _built(tmp_path, images_per_shard=4)
    monkeypatch.setattr(store_write, "_encode_block", lambda *a: np.zeros((1, 1, 1), np.uint16))
    with pytest.raises(RuntimeError, match=r"species sp1: writing .*species/sp1/images/c/0/0/0 failed.*render"):
        tu.fill(store, "sp1", 1)


def test_a_full_disk_names_the_file_and_the_species(tmp_path, monkeypatch, capsys):
    """zarr's OSError names no file (a full disk, a file-size limit): the write names the array of the
    species, and tomo reports it as a disk problem (exit status 3) with that path."""

    store, _ = _built(tmp_path, images_per_shard=4)

    def full(*a):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(zarr.Array, "__setitem__", full)  # the first write: the volume
    with pytest.raises(OSError) as e:
        tu.fill(store, "sp1", 1)
    assert e.value.errno == errno.EFBIG and e.value.filename == str(store / "species" / "sp1" / "volume" / "0")
    parser = argparse.ArgumentParser(prog="tomo")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fill").set_defaults(func=lambda a: tu.fill(store, "sp1", 1))
    assert tomo_run(parser, ["fill"]) == 3
    assert f"error: File too large ({store / 'species' / 'sp1' / 'volume' / '0'})" in capsys.readouterr().err


def test_one_missing_or_truncated_shard_of_several_is_noticed(tmp_path):
    store, m = _built(tmp_path, images_per_shard=4)
    shard = store / "species/sp0/images/c/1/0/0"
    data = shard.read_bytes()
    shard.unlink()
    got = dict(stale_markers(store, **m))
    assert "array images lacks its data file c/1/0/0 (2 expected)" in got[str(m["done"]["sp0"])]
    shard.write_bytes(data[:10])  # shorter than its index: 4 inner chunks × 16 bytes + crc32c
    got = dict(stale_markers(store, **m))
    assert "truncated data file c/1/0/0 (10 bytes, at least 68 expected)" in got[str(m["done"]["sp0"])]
    # cut short but longer than its index (an interrupted copy): the last bytes are no index
    shard.write_bytes(data[:-3])
    got = dict(stale_markers(store, **m))
    assert "damaged data file c/1/0/0: its shard index fails its checksum" in got[str(m["done"]["sp0"])]
    # data cut out, the index kept whole: it points past the data that is left
    shard.write_bytes(data[:8] + data[-68:])
    got = dict(stale_markers(store, **m))
    assert "damaged data file c/1/0/0: its shard index points past its data" in got[str(m["done"]["sp0"])]
    with pytest.raises(ValueError, match="lack data files .read as zeros. or have damaged ones"):
        open_store(store).require_complete(["sp0"])  # what train and evaluate check first
    shard.write_bytes(data)
    assert stale_markers(store, **m) == []


def test_species_of_fill_values_has_every_file(tmp_path):
    store = tmp_path / "d.zarr"
    tu.make(store, ["sp0"], images_per_shard=4)
    zeros = np.zeros((tu.V, tu.V, tu.V), np.float32)
    write_species(
        store,
        "sp0",
        volume=zeros,
        rotations=hemisphere_views(tu.N, seed=0),
        images=np.zeros((tu.N, tu.S, tu.S), np.float32),
    )
    assert stale_markers(store, **_markers(tmp_path, store, ["sp0"])) == []


def test_a_data_file_that_grew_is_noticed_by_its_recorded_size(tmp_path):
    """A chunk file longer than when it was rendered (overwritten by another build's, bytes appended
    by a bad copy): its done marker is stale. Without this a store whose files only grew kept every
    marker and training read chunks that were not the ones rendered."""
    store, m = _built(tmp_path)
    complete = json.loads((store / "species/sp1/zarr.json").read_text())["attributes"]["complete"]
    write_species_marker(m["done"]["sp1"], store, "sp1", complete)
    chunk = store / "species/sp1/volume/0/c/0/0/0"
    size = chunk.stat().st_size
    with open(chunk, "ab") as fh:
        fh.write(b"\0" * 7)
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["done"]["sp1"]), str(m["final"])}, got
    assert f"volume/0/c/0/0/0 of {size + 7} bytes, {size} when it was rendered" in got[str(m["done"]["sp1"])]


def test_a_shard_whose_last_inner_chunk_is_cut_is_stale(tmp_path):
    """A shard that lost the last bytes of its data but kept its index whole (5 bytes: an interrupted
    copy that wrote the index first): the last inner chunk ends past the data, its marker is stale.
    Without the end check (offset + length) only chunks that start past the data were noticed, and
    the render job of the species was skipped while zarr failed on the read in the middle of training."""
    store, m = _built(tmp_path, images_per_shard=4)  # index: 4 inner chunks x 16 bytes + crc32c = 68 bytes
    shard = store / "species/sp0/images/c/0/0/0"
    data = shard.read_bytes()
    shard.write_bytes(data[: -68 - 5] + data[-68:])
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["done"]["sp0"]), str(m["final"])}, got
    assert "damaged data file c/0/0/0: its shard index points past its data" in got[str(m["done"]["sp0"])]


def test_a_marker_of_other_checksums_is_stale(tmp_path):
    """A done marker whose recorded sha256 is not the store's (the species was rendered again by
    another run, or the marker copied from another store): stale, and the final marker with it.
    Without the comparison the workflow kept a marker that vouches for data the store does not hold."""
    store, m = _built(tmp_path)
    record = json.loads(m["done"]["sp1"].read_text())
    record["complete"]["sha256"]["images"] = "0" * 64
    m["done"]["sp1"].write_text(json.dumps(record))
    got = dict(stale_markers(store, **m))
    assert got == {
        str(m["done"]["sp1"]): "species sp1: the marker's checksums are not the store's",
        str(m["final"]): "a marker it depends on is stale",
    }


def test_a_missing_chunk_of_volume_level_1_is_noticed(tmp_path):
    """Level 1 of the OME-Zarr volume (not in the store's layout, listed by the volume group's
    multiscales) is checked like level 0: a deleted chunk makes the marker stale. Without it OME
    viewers and exports read fill values where the species' marker said it was complete."""
    store, m = _built(tmp_path)
    (store / "species/sp1/volume/1/c/0/0/0").unlink()
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["done"]["sp1"]), str(m["final"])}, got
    assert "array volume/1 lacks its data file c/0/0/0" in got[str(m["done"]["sp1"])]


def test_an_array_of_another_shape_is_stale(tmp_path):
    """An array whose zarr.json says another shape than the store's layout (written by a build of
    other settings, edited by hand), with the same chunk files: stale. Without the shape check its
    marker was kept and readers got arrays of the wrong size."""
    store, m = _built(tmp_path)
    meta_path = store / "species/sp1/rotations/zarr.json"
    meta = json.loads(meta_path.read_text())
    assert meta["shape"] == [tu.N, 3, 3]
    meta["shape"] = [tu.N - 1, 3, 3]  # still one chunk: only the shape differs
    meta_path.write_text(json.dumps(meta))
    got = dict(stale_markers(store, **m))
    assert set(got) == {str(m["done"]["sp1"]), str(m["final"])}, got
    assert (
        f"array rotations has shape [{tu.N - 1}, 3, 3], the store's layout says [{tu.N}, 3, 3]"
        in got[str(m["done"]["sp1"])]
    )


def test_a_settings_file_other_than_the_store_makes_every_marker_stale(tmp_path):
    """The run's settings file (dataset.settings.json) is what the store is compared with when given,
    not what dataset.created.json recorded: the config changed after the store was made (created.json
    still matches the store), so every marker is stale. Without it the store of the old settings was
    kept and species rendered for the new ones went into it."""
    store, m = _built(tmp_path)
    settings = _settings_file(tmp_path / "settings.json", tu.N + 1)
    assert stale_markers(store, **m) == []  # created.json holds the store's settings
    got = dict(stale_markers(store, settings=settings, **m))
    assert set(got) == {str(m["created"]), str(m["final"]), *map(str, m["done"].values())}
    assert set(got.values()) == {
        f"the store has other settings than {settings}: n_views: store {tu.N}, settings {tu.N + 1}"
    }


def test_forget_markers_removes_the_final_marker(tmp_path):
    """tomo validate --forget-markers: the done markers of the species named and dataset.final.json
    go, so that the next run re-renders them and finalizes again. Without the final marker removed
    the workflow would not validate the repaired store (store_finalize was up to date)."""
    final = tmp_path / FINAL_MARKER
    final.write_text("{}")
    done = {n: tmp_path / species_marker(n) for n in ("sp0", "sp1")}
    for path in done.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    assert forget_markers(tmp_path, ["sp1"]) == [done["sp1"], final]
    assert not final.exists() and not done["sp1"].exists() and done["sp0"].exists()
    assert forget_markers(tmp_path, ["sp1"]) == []  # nothing left to remove


def test_fetch_record_of_a_missing_file_is_stale(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f/a.mp4").write_bytes(b"x")
    recs = {}
    for sid, path in (("a", "f/a.mp4"), ("b", "f/b.mp4"), ("c", str(tmp_path / "f/a.mp4"))):
        recs[sid] = tmp_path / f"{sid}.tsv"
        recs[sid].write_text(f"{sid}\tdownloaded\t{'0' * 64}\t{path}\n")
    (tmp_path / "e.tsv").write_text("")
    recs["d"] = tmp_path / "d.tsv"  # read in place: the record names the source, which only its owner can put back
    recs["d"].write_text(f"d\tin-place\t{'0' * 64}\tsrc/d.mp4\n")
    got = dict(stale_fetch_records([*recs.values(), tmp_path / "e.tsv", tmp_path / "none.tsv"], base=tmp_path))
    assert got == {
        str(recs["b"]): "the fetched file f/b.mp4 is gone",
        str(recs["d"]): "the source src/d.mp4, read in place, is gone (fetching needs it back there)",
        str(tmp_path / "e.tsv"): "the fetch record has no 'id<TAB>how<TAB>sha256<TAB>path' line",
    }
    # an in-place source moved, its row pointing at the new place: the record stays (the fetch job
    # re-runs for the new location); pointing at the old place, or a new place that is not there: stale
    sources = {str(recs["d"]): tmp_path / "f/a.mp4", str(recs["b"]): tmp_path / "f/a.mp4"}
    got = dict(stale_fetch_records(recs.values(), base=tmp_path, sources=sources))
    assert set(got) == {str(recs["b"])}  # a copy (not in place) that is gone stays stale
    for now in (tmp_path / "src/d.mp4", tmp_path / "f/nope.mp4", None):
        got = dict(stale_fetch_records([recs["d"]], base=tmp_path, sources={str(recs["d"]): now}))
        assert set(got) == {str(recs["d"])}, now


def test_record_of_a_deleted_copy_becomes_the_in_place_one(tmp_path):
    """A copy deleted while the source, read in place, holds what was copied: the line an in-place fetch
    writes (same sha256, the source's absolute path); anything else: None (the record is removed)."""
    line = functools.partial(in_place_record_line, kind="movie", base=tmp_path)
    src = tmp_path / "src/a.mp4"
    src.parent.mkdir()
    src.write_bytes(b"x")
    rec = tmp_path / "a.tsv"
    rec.write_text(f"a\tfetched\t{'1' * 64}\tf/a.mp4\n")
    assert line(rec, "a", src, "1" * 64) == f"a\tin-place\t{'1' * 64}\t{src}"
    assert line(rec, "a", src, "2" * 64) is None  # the source changed since
    assert line(rec, "a", None, "1" * 64) is None  # a remote source
    assert line(rec, "a", tmp_path / "gone.mp4", "1" * 64) is None
    assert line(rec, "b", src, "1" * 64) is None  # no line for the specimen
    (tmp_path / "f").mkdir()
    (tmp_path / "f/a.mp4").write_bytes(b"x")
    assert line(rec, "a", src, "1" * 64) is None  # the copy is there: not stale
    rec.write_text(f"a\tin-place\t{'1' * 64}\tsrc/old.mp4\n")
    assert line(rec, "a", src, "1" * 64) is None  # in place already
    # an archive is copied and extracted even in place: its record names the extracted file (helper-105)
    (tmp_path / "src/a.zip").write_bytes(b"x")
    rec.write_text(f"a\tfetched\t{'1' * 64}\tf/a/vol.nii.gz\n")
    assert in_place_record_line(rec, "a", tmp_path / "src/a.zip", "1" * 64, kind="nifti", base=tmp_path) is None
