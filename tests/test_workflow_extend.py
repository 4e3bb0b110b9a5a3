"""Extending the dataset through the workflow: nothing skipped silently, incremental by content.

* a manifest row whose local source is missing or of the wrong kind stops the run at parse time with
  every such row listed; with --keep-going the valid rows still run and the bad ones fail in their
  own job;
* renaming the manifest or spelling its paths otherwise re-runs nothing; moving the data (the whole
  workspace, or one in-place source with its row), toggling data.fetch.in_place or switching the
  demo to its own manifest re-runs only the (cheap) fetch jobs,
  and work pending for other reasons in the same run is not skipped (snakemake#4166);
* an overlay (data.add) of two real scans on the demo re-renders exactly those two species and
  retrains once, and then leaves nothing to do.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from test_workflow import BIN, ROOT, TINY_MODEL, _env, planned_jobs, smk, tiny_config, write_config, write_manifest

from tomodata.store import open_store

pytestmark = pytest.mark.timeout(900)
REAL = ROOT.parent / "shared" / "data" / "real"


def movies(folder: Path, n: int = 3) -> tuple[list[str], list[dict]]:
    """n demo species as slice movies (tomo demo-movies) and their manifest rows."""
    subprocess.run(
        [str(BIN / "tomo"), "demo-movies", "-o", str(folder), "--species", str(n), "--val", "1", "--movie-size", "32"],
        check=True,
        capture_output=True,
        env=_env(),
    )
    lines = [ln for ln in (folder / "manifest.tsv").read_text().splitlines() if not ln.startswith("#")]
    header = lines[0].split("\t")
    return header, [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]


def test_bad_rows_listed_at_once_and_keep_going_runs_the_rest(tmp_path):
    header, rows = movies(tmp_path / "src")
    for r in rows:
        r["source"] = f"../src/{r['source']}"
    bad = [
        dict(rows[0], id="gone", source="../src/movies/nope.mp4"),
        dict(rows[0], id="wrongkind", source="../src/movies", source_kind="movie"),
    ]
    work = tmp_path / "w"
    work.mkdir()
    write_manifest(work / "m.tsv", header, rows + bad)
    config = write_config(work, "bad", {"source": "manifest", "manifest": "m.tsv", "fetch": {"in_place": True}})
    out = smk(work, "-n", "--configfile", str(config), check=False)
    assert out.returncode != 0
    assert "2 of 5 specimens cannot be read" in out.stdout, out.stdout[-3000:]
    assert "gone (m.tsv):" in out.stdout and "nope.mp4 does not exist" in out.stdout
    assert "wrongkind (m.tsv):" in out.stdout and "is a folder but source_kind movie needs a file" in out.stdout
    assert "or run with --keep-going to build the other 3" in out.stdout
    assert not (work / "resources").exists() or not list((work / "resources").rglob("*.npz"))

    run = smk(work, "--cores", "2", "--keep-going", "--configfile", str(config), check=False)
    assert run.returncode != 0
    for r in rows:  # every valid specimen was fetched and cubed
        assert (work / "resources/bad/cubes" / f"{r['id']}.npz").is_file(), run.stdout[-3000:]
    log = (work / "logs/bad/fetch/gone.log").read_text()
    assert "nope.mp4" in log
    # the run's output names each failed job with its error, not only its log (onerror: job_failures)
    error = next(ln for ln in log.splitlines() if ln.startswith("error: ")).removeprefix("error: ")
    assert f"fetch/gone failed (logs/bad/fetch/gone.log): {error}" in run.stdout, run.stdout[-3000:]
    assert "fetch/wrongkind failed (logs/bad/fetch/wrongkind.log): " in run.stdout
    assert not (work / "resources/bad/cubes/gone.npz").exists()

    # fixed (the bad rows dropped), a run after the failure settles: one more run has nothing to do
    write_manifest(work / "m.tsv", header, rows)
    smk(work, "--cores", "2", "--configfile", str(config))
    assert planned_jobs(work, "--configfile", str(config)) == []


def manifest_workspace(base: Path, run: str, manifest: str, n: int = 3) -> tuple[Path, Path, list[str], list[dict]]:
    """``(work, config, header, rows)``: ``n`` demo movies in ``base/src`` listed by relative path in
    ``base/w/<manifest>``, and a config of run ``run`` that reads that manifest (nothing built)."""
    header, rows = movies(base / "src", n=n)
    for r in rows:
        r["source"] = f"../src/{r['source']}"
    work = base / "w"
    work.mkdir()
    write_manifest(work / manifest, header, rows)
    return work, write_config(work, run, {"source": "manifest", "manifest": manifest}), header, rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """3 species listed by relative path in a manifest, built once (data part)."""
    base = tmp_path_factory.mktemp("incr")
    work, config, header, rows = manifest_workspace(base, "inc", "specimens.tsv")
    smk(work, "--cores", "2", "--configfile", str(config))
    assert planned_jobs(work, "--configfile", str(config)) == []
    return base, header, rows


def test_spelling_renaming_and_in_place_rerun_nothing_after_fetch(built, tmp_path):
    base, header, rows = built
    copy = tmp_path / "incr"
    shutil.copytree(base, copy, symlinks=True)
    work = copy / "w"
    config = work / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    # the copy moved the data: the fetch records point at the new place, nothing after them re-runs
    assert planned_jobs(work, "--configfile", str(config)) == [("fetch", r["id"]) for r in rows]
    smk(work, "--cores", "2", "--configfile", str(config))

    # the same rows under another file name, sources written as absolute paths and file:// URLs
    spelled = [dict(r) for r in rows]
    spelled[0]["source"] = str((work / rows[0]["source"]).resolve())
    spelled[1]["source"] = (work / rows[1]["source"]).resolve().as_uri()
    write_manifest(work / "renamed.tsv", header, spelled)
    cfg["data"]["manifest"] = "renamed.tsv"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(work, "--configfile", str(config)) == []

    # in_place changes how the fetch job keeps the source, nothing after it; work pending for other
    # reasons in the same run (a lost species marker and final marker) is still planned: Snakemake 9
    # skipped it in silence behind the ancient fetch records (snakemake#4166, workflow/rules/snakemake_fixes.smk)
    cfg["data"]["fetch"] = {"in_place": True}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # a fetched copy deleted to save space (docs/workflow.md) changes nothing either: its record is made
    # the in-place one (helper-103: removed, the re-run fetch made the cube, the store and the model again)
    copy_of = work / (work / f"resources/inc/fetched/{rows[2]['id']}.tsv").read_text().split("\t")[3].strip()
    assert copy_of.parent.name == rows[2]["id"] and copy_of.is_file()
    shutil.rmtree(copy_of.parent)
    (work / "results/inc/dataset.final.json").unlink()
    (work / f"results/inc/species/{rows[0]['id']}.done.json").unlink()
    assert planned_jobs(work, "--configfile", str(config)) == [
        *[("fetch", r["id"]) for r in rows],
        ("previews", None),
        ("render_species", rows[0]["id"]),
        ("store_finalize", None),
    ]
    smk(work, "--cores", "2", "--configfile", str(config))
    assert planned_jobs(work, "--configfile", str(config)) == []

    # an attribution (the credit CC BY asks for) added to a row reaches the store's species table: a
    # store update, nothing rendered (helper-85: it changed nothing until another change re-made the table)
    credited = [dict(r, attribution="") for r in spelled]
    credited[1]["attribution"] = "Maga et al. 2017, mouse_CT_atlas"
    write_manifest(work / "renamed.tsv", [*header, "attribution"], credited)
    assert planned_jobs(work, "--configfile", str(config)) == [("store_create", None), ("store_finalize", None)]
    smk(work, "--cores", "2", "--configfile", str(config))
    table = {e["name"]: e for e in open_store(work / "results/inc/dataset.zarr").attrs["species"]}
    assert table[rows[1]["id"]]["attribution"] == "Maga et al. 2017, mouse_CT_atlas"
    assert "attribution" not in table[rows[0]["id"]]
    assert planned_jobs(work, "--configfile", str(config)) == []

    # an in-place source moved and its row pointed at the new place: only its fetch re-runs (helper-85:
    # the parse-time repair removed the record of the gone place, and its whole chain ran again)
    moved = work / "elsewhere" / Path(rows[1]["source"]).name
    moved.parent.mkdir()
    (work / rows[1]["source"]).resolve().rename(moved)
    credited[1]["source"] = str(moved)
    write_manifest(work / "renamed.tsv", [*header, "attribution"], credited)
    assert planned_jobs(work, "--configfile", str(config)) == [("fetch", rows[1]["id"])]
    smk(work, "--cores", "2", "--configfile", str(config))
    record = (work / f"resources/inc/fetched/{rows[1]['id']}.tsv").read_text()
    assert str(moved) in record and "in-place" in record
    assert planned_jobs(work, "--configfile", str(config)) == []

    # new content under the same name: that specimen's chain
    target = rows[2]
    src = (work / target["source"]).resolve()
    other = (work / rows[0]["source"]).resolve()
    src.unlink()
    shutil.copy(other, src)
    jobs = planned_jobs(work, "--configfile", str(config))
    assert jobs == [
        ("cube", target["id"]),
        ("fetch", target["id"]),
        ("previews", None),
        ("render_species", target["id"]),
        ("store_create", None),
        ("store_finalize", None),
    ]


def test_demo_switched_to_its_own_manifest_recubes_nothing(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    demo = {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}}
    config = write_config(work, "sw", demo)
    (work / "more.yaml").write_text(yaml.safe_dump({"render": {"batch": 7}}))
    smk(work, "--cores", "2", "--configfile", str(config), str(work / "more.yaml"))
    prov = zarr.open_group(str(work / "results/sw/dataset.zarr"), mode="r").attrs["provenance"]["config"]
    assert prov["config"]["render"]["batch"] == 7 and prov["config"]["dataset"]["n_views"] == 4  # the merged config
    cfg = yaml.safe_load(config.read_text())
    cfg["data"] = {"source": "manifest", "manifest": "resources/sw/manifest.tsv"}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(work, "--configfile", str(config))
    assert {rule for rule, _ in jobs} <= {"fetch"}, jobs  # the cubes, renders and store stay
    smk(work, "--cores", "2", "--configfile", str(config))
    assert planned_jobs(work, "--configfile", str(config)) == []


@pytest.mark.skipif(
    not (REAL / "cthead-8bit").is_dir() or not (REAL / "invesalius-cranium").is_dir(),
    reason="needs ../shared/data/real (cthead-8bit, invesalius-cranium) beside the clone",
)
def test_overlay_of_two_real_scans_renders_two_species_and_retrains_once(tmp_path):
    demo = {
        "source": "demo",
        "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32},
        "fetch": {"in_place": True},
    }
    cfg = tiny_config("ext", demo, TINY_MODEL)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # up to the network: the evaluation and what follows it never see the overlay's train species
    # (tests/test_workflow.py::test_full_pipeline_tiny runs them)
    upto = ("--omit-from", "evaluate")
    smk(tmp_path, "--cores", "2", "--configfile", str(config), *upto, timeout=900)

    header = [
        "id",
        "species",
        "source",
        "source_kind",
        "spacing_mm",
        "split",
        "licence",
        "window",
        "orientation",
        "crop",
    ]
    rows = [
        {
            "id": "cthead",
            "species": "Homo sapiens",
            "source": str(REAL / "cthead-8bit"),
            "source_kind": "image_folder",
            "spacing_mm": "2,1,1",
            "split": "train",
            "licence": "public domain (UNC CThead)",
            "window": "",
            "orientation": "x,z,-y",
            "crop": "largest",
        },
        {
            "id": "cranium",
            "species": "Homo sapiens",
            "source": str(REAL / "invesalius-cranium/cranium.nhdr"),
            "source_kind": "nrrd",
            "spacing_mm": "1.5,0.96,0.96",  # the file says 1.5,0.957,0.957: a warning the run's output shows
            "split": "train",
            "licence": "GPL-2",
            "window": "hu-bone",
            "orientation": "x,-z,y",
            "crop": "largest",
        },
    ]
    write_manifest(tmp_path / "add.tsv", header, rows)
    cfg["data"]["add"] = ["add.tsv"]
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(tmp_path, "--configfile", str(config), *upto)
    renders = sorted(sid for rule, sid in jobs if rule == "render_species")
    assert renders == ["cranium", "cthead"], jobs
    assert sorted(sid for rule, sid in jobs if rule in ("fetch", "cube")) == ["cranium", "cranium", "cthead", "cthead"]
    assert [rule for rule, _ in jobs].count("train") == 1
    started = time.time()
    out = smk(tmp_path, "--cores", "2", "--configfile", str(config), *upto, timeout=900).stdout
    # the jobs' warnings stand in the run's output, each with its job (onsuccess: job_warnings)
    warned = [
        (f"{log.parent.name}/{log.stem}", ln.removeprefix("warning: "))
        for log in sorted((tmp_path / "logs/ext").rglob("*.log"))
        if log.stat().st_mtime >= started  # this run's logs
        for ln in log.read_text().splitlines()
        if ln.startswith("warning: ")
    ]
    assert any(job == "cube/cranium" and "overrides the file's own" in text for job, text in warned), warned
    rules = sorted({job.split("/")[0] for job, _ in warned})
    counts = ", ".join(f"{r} {sum(job.startswith(r + '/') for job, _ in warned)}" for r in rules)
    assert f"{len(warned)} warning(s) in this run's job logs (logs/ext/; {counts}):" in out, out[-3000:]
    assert all(f"{job}: {text[:200]}" in out for job, text in warned), (warned, out[-3000:])
    # the previews are written once, by the previews job (render_species wrote them too, and Snakemake warned)
    assert "were not present when the DAG was created" not in out, out[-3000:]
    assert not (tmp_path / "-").exists()  # `--previews -` is none, not a folder
    assert planned_jobs(tmp_path, "--configfile", str(config), *upto) == []
    store = open_store(tmp_path / "results/ext/dataset.zarr")
    for sid in ("cthead", "cranium"):
        info = store.species_info(sid)
        assert info["crop"] == "largest" and info["specimen_reach"] > 0.5
    assert (tmp_path / "results/ext/previews/cthead_sheet.png").is_file()


def test_demo_movies_made_afresh_with_an_overlay_present(tmp_path):
    """The demo's movies made for the first time (or again) while data.add lists scans: the rule
    promises the demo's movies only, not the overlay's (it failed with MissingOutputException)."""
    np.save(tmp_path / "scan.npy", np.zeros((8, 8, 8), np.float32))
    (tmp_path / "add.tsv").write_text(
        "id\tspecies\tsource\tsource_kind\tspacing_mm\tsplit\tlicence\n"
        "mine\tMus musculus\tscan.npy\tnpy\t1,1,1\ttrain\tCC0\n"
    )
    cfg = {
        "run": "fresh",
        "data": {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}, "add": ["add.tsv"]},
        "dataset": {"n_views": 4, "image_size": 32, "steps": 32, "chi": 10.0, "volume_size": 32},
        "render": {"backend": "cpu", "batch": 64},
        "resources": {"default": {"threads": 1, "mem_mb": 500, "runtime": 5}},
        "model": {"enabled": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    smk(tmp_path, "--cores", "1", "--configfile", str(tmp_path / "c.yaml"), "--until", "demo_movies")
    assert sorted(p.name for p in (tmp_path / "resources/fresh/movies").iterdir())[:3] == [
        "procedural_00.mp4",
        "procedural_01.mp4",
        "procedural_02.mp4",
    ]


def test_two_overlay_files_each_add_their_scans(tmp_path):
    """Two overlay config files, each naming its manifest in data.add: as mappings both sets of scans are
    planned (Snakemake merges mappings); as lists the run stops, saying that the first file's scans would
    leave the store (Snakemake replaces a list: they were dropped in silence; helper-72)."""
    np.save(tmp_path / "scan.npy", np.zeros((8, 8, 8), np.float32))
    for k in (1, 2):
        (tmp_path / f"add{k}.tsv").write_text(
            "id\tspecies\tsource\tsource_kind\tspacing_mm\tsplit\tlicence\n"
            f"mine{k}\tMus musculus\tscan.npy\tnpy\t1,1,1\ttrain\tCC0\n"
        )
    cfg = {
        "run": "two",
        "data": {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}},
        "dataset": {"n_views": 4, "image_size": 32, "steps": 32, "chi": 10.0, "volume_size": 32},
        "render": {"backend": "cpu", "batch": 64},
        "resources": {"default": {"threads": 1, "mem_mb": 500, "runtime": 5}},
        "model": {"enabled": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    for k in (1, 2):
        (tmp_path / f"m{k}.yaml").write_text(yaml.safe_dump({"data": {"add": {f"set{k}": f"add{k}.tsv"}}}))
        (tmp_path / f"l{k}.yaml").write_text(yaml.safe_dump({"data": {"add": [f"add{k}.tsv"]}}))
    files = [str(tmp_path / n) for n in ("c.yaml", "m1.yaml", "m2.yaml")]
    out = smk(tmp_path, "-n", "--cores", "1", "--configfile", *files).stdout
    assert "mine1" in out and "mine2" in out, out[-2000:]
    files = [str(tmp_path / n) for n in ("c.yaml", "l1.yaml", "l2.yaml")]
    out = smk(tmp_path, "-n", "--cores", "1", "--configfile", *files, check=False)
    assert out.returncode != 0 and "data.add is given in 2 config files" in out.stdout, out.stdout[-2000:]
