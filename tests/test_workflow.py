"""The Snakemake workflow (Snakefile, workflow/): lint, dry runs of the shipped configs, and real runs
of tiny configs in temporary folders: a full build, nothing to do on a second run, the report,
editing one manifest row re-running only that specimen's chain, options that re-run nothing, and
recovery after the run is killed while species are rendering.

Snakemake runs as a subprocess (`python -m snakemake --snakefile <repo>/Snakefile --directory TMP`),
so the working folder, its .snakemake/ metadata and all outputs live in pytest's tmp folders.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import yaml

from model.explorer import run_paths
from model.names import EVAL_SUMMARY, TRAIN_BEST
from model.names import PREVIEWS as NAMED_PREVIEWS
from model.volume_io import PREVIEWS
from tomodata.ingest import load_cube
from tomodata.manifest import load_manifest
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import render_xrays
from tomodata.run_layout import EVAL_DIR, MODEL_DIR, STORE_NAME
from tomodata.store import open_store, validate_store
from tomodata.views import hemisphere_views

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
BIN = Path(sys.executable).parent
NOSLURM = Path(__file__).resolve().parent / "noslurm"  # a failing `scontrol`: see the file

pytestmark = pytest.mark.timeout(600)  # hang guards; on 2 workers a test may get half the machine


def _env(blocked: Path | None = None) -> dict:
    """The environment of the tests' local Snakemake runs: `tomo` beside this python, no profile, and
    tests/noslurm first (the SLURM plugin's probe, about 10 s per start where no controller runs).
    ``blocked``: a folder (:func:`package_blocker`) put first on PYTHONPATH, where importing the
    packages that Snakemake's conda environment (envs/workflow.yaml) lacks fails: torch and the rest
    of the model's (envs/model.yaml), none of which the data rules' envs/tomodata.yaml has either
    but scikit-image (with Pillow)."""
    env = dict(os.environ)
    env["PATH"] = f"{NOSLURM}{os.pathsep}{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SNAKEMAKE_PROFILE", None)
    if blocked is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocked), env.get("PYTHONPATH")]))
    return env


#: the packages of envs/model.yaml that envs/workflow.yaml lacks (import names)
MODEL_ONLY_PACKAGES = ("torch", "tensorboard", "matplotlib", "skimage", "PIL")


def package_blocker(folder: Path, packages=MODEL_ONLY_PACKAGES) -> Path:
    """``folder`` holding packages ``packages`` whose import raises ImportError (for :func:`_env`)."""
    for name in packages:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(f'raise ImportError("{name} is not installed here (test)")\n')
    return folder


def smk(
    workdir: Path, *args: str, check: bool = True, timeout: float = 240, blocked: Path | None = None
) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile in ``workdir``; stdout and stderr together
    (``blocked``: see :func:`_env`)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--workflow-profile",
        "none",
        *args,
    ]
    env = _env(blocked)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def copy_manifests(workdir: Path) -> None:
    """The repository's manifests/ into ``workdir``, without hidden files: tests/test_mice.py may be
    writing (and deleting) one there on the other worker."""
    shutil.copytree(ROOT / "manifests", workdir / "manifests", ignore=shutil.ignore_patterns(".*"))


def planned_jobs(workdir: Path, *args: str, blocked: Path | None = None) -> list[tuple[str, str | None]]:
    """(rule, id) of every job a dry run would run, without `all`, sorted (``blocked``: :func:`_env`)."""
    out = smk(workdir, "-n", *args, blocked=blocked).stdout
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n)", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not m or m.group(1) == "all":
            continue
        w = re.search(r"^\s+wildcards: (?:id|name)=(\S+)", block, re.M)
        jobs.append((m.group(1), w.group(1) if w else None))
    return sorted(jobs, key=lambda j: (j[0], j[1] or ""))


#: the model settings of the tiny runs that train: 2 steps, 4 evaluated samples, one example
TINY_MODEL = {
    "preset": "demo",
    "train": {"steps": 2, "batch_size": 4, "warmup": 0, "val_every": 2, "val_samples": 4, "ckpt_every": 2},
    "evaluate": {"max_samples": 4, "examples": 1},
    "apps": {"examples": 1, "frames": 4},
}


def tiny_config(run: str, data: dict, model: dict | None = None, **dataset) -> dict:
    """A run's config at tiny sizes (4 views of 32², 32 steps, 32³ cubes, 1 thread): ``data`` as given,
    ``model`` (e.g. :data:`TINY_MODEL` and more) or the data part only (model disabled)."""
    return {
        "run": run,
        "data": data,
        "dataset": {
            "n_views": 4,
            "view_seed": 0,
            "image_size": 32,
            "steps": 32,
            "chi": 10.0,
            "volume_size": 32,
            "encoding": "uint16",
            **dataset,
        },
        "render": {"backend": "cpu", "batch": 64},
        "resources": {"default": {"threads": 1, "mem_mb": 500, "runtime": 5}},
        "model": model if model is not None else {"enabled": False},
    }


def write_config(workdir: Path, run: str, data: dict, **dataset) -> Path:
    """The data part's tiny config in ``workdir/config.yaml`` (test_full_pipeline_tiny runs the model rules)."""
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(run, data, **dataset), sort_keys=False))
    return path


def validate(store: Path):
    return validate_store(store)


def copy_workdir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


# ---------------------------------------------------------------------------------------- static
def test_config_files_match_the_schema():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for name in (
        "config.yaml",
        "workflow/configs/paper.yaml",
        "workflow/configs/micro-ct.yaml",
        "workflow/configs/paper-smoke.yaml",
    ):
        cfg = yaml.safe_load((ROOT / name).read_text())
        errors = [e.message for e in validator.iter_errors(cfg)]
        assert not errors, f"{name}: {errors}"
    bad = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad["render"]["backend"] = "gpu"
    assert list(validator.iter_errors(bad))


def test_real_xrays_overlay():
    """The overlay merges into the demo's config (schema-valid); its placeholder files stop a dry run
    with the entry's name; bad entries are refused by the schema."""
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    overlay = yaml.safe_load((ROOT / "workflow/configs/real-xrays.yaml").read_text())
    cfg["model"]["real_xrays"] = overlay["model"]["real_xrays"]
    assert not [e.message for e in validator.iter_errors(cfg)]
    for bad in (
        {"a b": "x.png"},
        {"a": {"gamma": 2.2}},
        {"a": {"path": "x.png", "polarity": "up"}},
        {"a": {"path": "x.png", "sharpen": True}},
        {"a": ""},
    ):
        cfg["model"]["real_xrays"] = bad
        assert list(validator.iter_errors(cfg)), bad


def test_real_xray_rule_lists_the_previews_infer_writes(tmp_path):
    """The real_xray job's outputs are the previews tomo infer writes (model.names.PREVIEWS, which
    model.volume_io writes), no more and no fewer: read from the planned job, not from the rule's text."""
    assert tuple(NAMED_PREVIEWS) == PREVIEWS
    film = tmp_path / "film.png"
    cv2.imwrite(str(film), np.zeros((8, 8), np.uint8))  # only planned: never read
    cfg = tiny_config(
        "plan",
        {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}},
        {**TINY_MODEL, "real_xrays": {"film": str(film)}},
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = smk(tmp_path, "-n", "--forceall", "--configfile", str(config)).stdout
    (block,) = [b for b in re.split(r"\n(?=\[[^\]]+\]\n)", out) if re.search(r"^(?:local)?rule real_xray:", b, re.M)]
    outputs = re.search(r"^\s*output: (.*)$", block, re.M).group(1).split(", ")
    pngs = {Path(o).name for o in outputs if o.endswith(".png")}
    assert pngs == {f"film_{view}.png" for view in PREVIEWS}, outputs


def test_real_xrays_placeholder_stops_with_its_name(tmp_path):
    proc = smk(
        tmp_path,
        "-n",
        "--configfile",
        str(ROOT / "config.yaml"),
        str(ROOT / "workflow/configs/real-xrays.yaml"),
        check=False,
    )
    assert proc.returncode != 0
    assert "model.real_xrays.fox_lateral: /data/xrays/fox_lateral.png is not a file" in proc.stdout, proc.stdout[-3000:]
    assert "model.real_xrays.cat_dorsal:" in proc.stdout  # every missing file, not only the first
    off = tmp_path / "off.yaml"  # without the model part they are not needed, nor looked at
    off.write_text("model:\n  enabled: false\n")
    smk(
        tmp_path,
        "-n",
        "--configfile",
        str(ROOT / "config.yaml"),
        str(ROOT / "workflow/configs/real-xrays.yaml"),
        str(off),
    )


def test_paper_and_micro_ct_configs():
    paper = yaml.safe_load((ROOT / "workflow/configs/paper.yaml").read_text())
    assert paper["dataset"] == {
        "n_views": 1332,
        "view_seed": 0,
        "image_size": 256,
        "steps": 128,
        "chi": 10.0,
        "volume_size": 128,
        "encoding": "uint16",
    }
    assert paper["model"]["preset"] == "release"
    assert (ROOT / paper["data"]["manifest"]).is_file()
    micro = yaml.safe_load((ROOT / "workflow/configs/micro-ct.yaml").read_text())
    table = load_manifest(ROOT / micro["data"]["manifest"])
    assert len(table) == 15 and list(table["split"]).count("train") == 10 and list(table["split"]).count("test") == 3
    assert list(table["split"]).count("val") == 2  # model choice needs a val split (the workflow requires one)
    assert set(table["source_kind"]) <= {"dicom", "tiff", "image_folder", "nrrd", "nifti"}
    assert micro["data"]["fetch"]["in_place"] is True


def test_lint_is_clean(tmp_path):
    out = smk(tmp_path, "--lint", "--configfile", str(ROOT / "config.yaml")).stdout
    assert "Congratulations, your workflow is in a good condition!" in out, out


def test_paper_dry_run_offline(tmp_path):
    """The paper's config with the template manifest (placeholder URLs): a dry run plans one chain
    per specimen and touches nothing (no fetch, no output folders); planned by a Snakemake that
    cannot import the model's packages, as in its conda environment (envs/workflow.yaml)."""
    copy_manifests(tmp_path)
    blocker = package_blocker(tmp_path / "blocked")
    jobs = planned_jobs(tmp_path, "--configfile", str(ROOT / "workflow/configs/paper.yaml"), blocked=blocker)
    ids = ["Didelphis_virginiana", "Ornithorhynchus_anatinus", "Tamandua_tetradactyla"]
    expected = sorted(
        [(r, i) for r in ("cube", "fetch", "render_species") for i in ids]
        + [("previews", None), ("store_create", None), ("store_finalize", None), ("store_settings", None)]
        + [(r, None) for r in ("apps", "evaluate", "examples", "explorer", "figures", "train")],
        key=lambda j: (j[0], j[1] or ""),
    )
    assert jobs == expected
    for folder in ("resources", "results", "logs", "benchmarks"):
        assert not (tmp_path / folder).exists()


def test_train_compile_and_amp_reach_tomo_train(tmp_path):
    """model.train.compile: true adds --compile to the train job's command, model.train.device gives
    its --device (untracked options: the shell text Snakemake tracks, and so existing workspaces, stay
    as they were); model.train.amp: bf16 adds --amp bf16 (tracked: it changes the training), and the
    default (auto) adds nothing."""
    copy_manifests(tmp_path)
    overlay = tmp_path / "compile.yaml"
    overlay.write_text("model:\n  train:\n    compile: true\n    amp: bf16\n")
    paper = str(ROOT / "workflow/configs/paper.yaml")
    train_lines = [
        ln
        for ln in smk(tmp_path, "-n", "-p", "--configfile", paper, str(overlay)).stdout.splitlines()
        if "tomo train" in ln
    ]
    assert train_lines and all("--restart-if-changed --device cuda --compile" in ln for ln in train_lines)
    assert all("--seed 0 --amp bf16 --workers" in ln for ln in train_lines)
    plain = [ln for ln in smk(tmp_path, "-n", "-p", "--configfile", paper).stdout.splitlines() if "tomo train" in ln]
    assert plain and not any("--compile" in ln or "--amp" in ln for ln in plain)


def test_micro_ct_reads_local_folders_in_place(tmp_path):
    """micro-ct.yaml reads each scan folder where it is: a dry run with the placeholder manifest
    stops before any job, naming every missing source at once (not only the first)."""
    copy_manifests(tmp_path)
    proc = smk(tmp_path, "-n", "--configfile", str(ROOT / "workflow/configs/micro-ct.yaml"), check=False)
    assert proc.returncode != 0
    out = proc.stdout + (proc.stderr or "")
    assert "15 of 15 specimens cannot be read" in out and "/data/mice/mouse_" in out


def test_negative_window_and_orientation_reach_tomo_cube(tmp_path):
    """A manifest row's window '-1000,400' (Hounsfield units) and orientation '-x,z,y' reach the cube
    job in the '--key=value' form (helper-105: '--window -1000,400' made argparse fail the job)."""
    z, y, x = np.mgrid[:12, :12, :12]
    head = np.where((z - 6) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 < 16, 300.0, -1000.0).astype(np.float32)
    np.save(tmp_path / "head.npy", head)
    header = ["id", "species", "source", "source_kind", "spacing_mm", "split", "licence", "window", "orientation"]
    rows = [
        dict(id=f"h{i}", species=f"s{i}", source=str(tmp_path / "head.npy"), source_kind="npy", spacing_mm="1,1,1")
        | dict(split=split, licence="CC0", window="-1000,400", orientation="-x,z,y")
        for i, split in enumerate(["train", "val"])
    ]
    write_manifest(tmp_path / "m.tsv", header, rows)
    config = write_config(tmp_path, "neg", {"source": "manifest", "manifest": "m.tsv"})
    out = smk(tmp_path, "--cores", "1", "--configfile", str(config), "-p", "resources/neg/cubes/h0.npz").stdout
    assert "--window=-1000,400" in out and "--orientation=-x,z,y" in out
    cube, meta = load_cube(tmp_path / "resources/neg/cubes/h0.npz")
    assert cube.max() > 0.5 and meta["window"] == [-1000.0, 400.0], meta.get("window")


# ---------------------------------------------------------------------------------------- the demo
@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    """The demo path (tomo demo-movies -> fetch -> cube -> store -> render -> finalize) at tiny size:
    4 species (2 train + 1 val + 1 test), 32³ movies and cubes, 4 views of 32² with 32 steps; run
    where torch, matplotlib, scikit-image, ... cannot be imported, as in Snakemake's and the data
    rules' conda environments (envs/workflow.yaml, envs/tomodata.yaml; :func:`package_blocker`)."""
    work = tmp_path_factory.mktemp("demo")
    config = write_config(
        work, "tiny", {"source": "demo", "demo": {"species": 4, "val": 1, "test": 1, "movie_size": 32}}
    )
    blocker = package_blocker(tmp_path_factory.mktemp("blocked"))
    t0 = time.monotonic()
    proc = smk(work, "--cores", "2", "--configfile", str(config), blocked=blocker)
    return work, config, proc, time.monotonic() - t0


def test_demo_builds_a_valid_store(demo_build):
    work, _, proc, seconds = demo_build
    results = work / "results/tiny"
    report = validate(results / "dataset.zarr")
    assert report.ok, report.summary()
    store = open_store(results / "dataset.zarr")
    assert store.attrs["splits"]["train"] == ["procedural_00", "procedural_01"]
    assert store.attrs["splits"]["val"] == ["procedural_02"]
    assert store.attrs["splits"]["test"] == ["procedural_03"]
    assert store.attrs["n_views"] == 4 and store.attrs["image_size"] == 32 and store.attrs["volume_size"] == 32
    assert store.attrs["completion"]["ok"] is True
    for sid in ("procedural_00", "procedural_01", "procedural_02"):
        assert (results / "species" / f"{sid}.done.json").is_file()
        assert (results / "previews" / f"{sid}_sheet.png").is_file()
        assert (work / "logs/tiny/render_species" / f"{sid}.log").is_file()
        assert (work / "benchmarks/tiny/cube" / f"{sid}.tsv").is_file()
        assert (work / "resources/tiny/cubes" / f"{sid}.npz").is_file()
    assert (work / "resources/tiny/manifest.tsv").is_file()
    assert (results / "dataset.final.json").is_file()
    print(f"tiny demo build: {seconds:.1f} s")


def test_second_run_has_nothing_to_do(demo_build):
    work, config, _, _ = demo_build
    out = smk(work, "--cores", "2", "--configfile", str(config)).stdout
    assert "Nothing to be done" in out, out


def test_report(demo_build):
    work, config, _, _ = demo_build
    smk(work, "--configfile", str(config), "--report", "results/tiny/report.html")
    html = (work / "results/tiny/report.html").read_text(encoding="utf-8", errors="replace")
    assert "procedural_02_sheet.png" in html and "dataset.final.json" in html
    assert "Single-image tomography: run" in html


def test_default_profile(demo_build):
    work, config, _, _ = demo_build
    out = smk(
        work, "-n", "--configfile", str(config), "--workflow-profile", str(ROOT / "workflow/profiles/default")
    ).stdout
    assert "Nothing to be done" in out, out


# ---------------------------------------------------------------------------------------- a manifest
@pytest.fixture(scope="module")
def manifest_build(tmp_path_factory):
    """The manifest path: slice movies made by `tomo demo-movies`, listed by file path in a
    manifest of the test's own (3 species: 2 train + 1 val), built once."""
    src = tmp_path_factory.mktemp("movies")
    subprocess.run(
        [str(BIN / "tomo"), "demo-movies", "-o", str(src), "--species", "3", "--val", "1", "--movie-size", "32"],
        check=True,
        capture_output=True,
        env=_env(),
    )
    lines = [ln for ln in (src / "manifest.tsv").read_text().splitlines() if not ln.startswith("#")]
    header = lines[0].split("\t")
    rows = []
    for line in lines[1:]:
        cells = dict(zip(header, line.split("\t")))
        cells["source"] = str(src / cells["source"])  # an absolute file path
        rows.append(cells)
    work = tmp_path_factory.mktemp("manifest")
    write_manifest(work / "specimens.tsv", header, rows)
    config = write_config(work, "mf", {"source": "manifest", "manifest": "specimens.tsv"})
    smk(work, "--cores", "2", "--configfile", str(config))
    return work, header, rows


def write_manifest(path: Path, header: list[str], rows: list[dict]) -> None:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r[c] for c in header) + "\n" for r in rows))


def test_manifest_build_is_valid(manifest_build):
    work, _, rows = manifest_build
    report = validate(work / "results/mf/dataset.zarr")
    assert report.ok, report.summary()
    for r in rows:
        assert (work / "resources/mf/fetched" / r["id"] / Path(r["source"]).name).is_file()


def test_editing_one_row_reruns_only_its_chain(manifest_build, tmp_path):
    src, header, rows = manifest_build
    work = copy_workdir(src, tmp_path / "w")
    config = work / "config.yaml"
    done = {r["id"]: (work / "results/mf/species" / f"{r['id']}.done.json").stat().st_mtime_ns for r in rows}

    # transport and renderer options are not part of any output: nothing to do
    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["fetch"] = {"rate": 5.0, "retries": 7}
    cfg["render"]["batch"] = 2
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(work, "--configfile", str(config)) == []

    # another slice spacing for one specimen (anisotropic: its cube changes): its cube and render,
    # the store update (which resets that species only) and finalize
    edited = [dict(r) for r in rows]
    target = edited[1]["id"]
    z, y, x = (float(v) for v in edited[1]["spacing_mm"].split(","))
    edited[1]["spacing_mm"] = f"{1.5 * z:.6g},{y:.6g},{x:.6g}"
    write_manifest(work / "specimens.tsv", header, edited)
    jobs = planned_jobs(work, "--configfile", str(config))
    assert jobs == [
        ("cube", target),
        ("previews", None),
        ("render_species", target),
        ("store_create", None),
        ("store_finalize", None),
    ]

    smk(work, "--cores", "2", "--configfile", str(config))
    report = validate(work / "results/mf/dataset.zarr")
    assert report.ok, report.summary()
    created = json.loads((work / "results/mf/dataset.created.json").read_text())
    assert created["mode"] == "updated" and created["reset"] == [target]
    assert sorted(created["kept"]) == sorted(r["id"] for r in rows if r["id"] != target)
    for sid, mtime in done.items():
        now = (work / "results/mf/species" / f"{sid}.done.json").stat().st_mtime_ns
        assert (now != mtime) == (sid == target), sid
    entry = open_store(work / "results/mf/dataset.zarr").species_info(target)
    assert entry["spacing_mm"] == pytest.approx([1.5 * z, y, x], rel=1e-5)

    # a new split for one specimen changes the table only: store update and finalize, no render
    edited[0]["split"] = "test"
    write_manifest(work / "specimens.tsv", header, edited)
    assert planned_jobs(work, "--configfile", str(config)) == [("store_create", None), ("store_finalize", None)]


def test_killed_while_rendering_then_rerun_incomplete(manifest_build, tmp_path, kill_tree):
    """New dataset settings re-render every species; SIGKILL snakemake and its jobs as soon as a
    render job runs; --rerun-incomplete then finishes with a valid store."""
    src, _, rows = manifest_build
    work = copy_workdir(src, tmp_path / "w")
    config = work / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["dataset"]["n_views"] = 6
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(work, "--configfile", str(config))
    assert jobs == sorted(
        [("render_species", r["id"]) for r in rows]
        + [("previews", None), ("store_create", None), ("store_finalize", None), ("store_settings", None)]
    )
    shutil.rmtree(work / "logs")
    logs = work / "logs/mf/render_species"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(work),
        "--workflow-profile",
        "none",
        "--cores",
        "2",
        "--configfile",
        str(config),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        incomplete = work / ".snakemake/incomplete"
        # a render job's log, and Snakemake's record that it started (written just after the log folder:
        # on a loaded machine a kill between the two left no record, CI of 9a77825)
        while not (logs.is_dir() and any(logs.iterdir()) and incomplete.is_dir() and any(incomplete.iterdir())):
            assert proc.poll() is None, "snakemake ended before any render job started"
            assert time.monotonic() < deadline, "no render job started within 120 s"
            time.sleep(0.02)
    finally:
        kill_tree(proc.pid)
    proc.wait(timeout=10)
    assert not validate(work / "results/mf/dataset.zarr").ok  # killed mid-way: species missing
    assert any((work / ".snakemake/incomplete").iterdir())  # Snakemake's record of the killed jobs

    smk(work, "--unlock", "--configfile", str(config))
    smk(work, "--cores", "2", "--rerun-incomplete", "--configfile", str(config))
    report = validate(work / "results/mf/dataset.zarr")
    assert report.ok, report.summary()
    assert open_store(work / "results/mf/dataset.zarr").attrs["n_views"] == 6
    assert "Nothing to be done" in smk(work, "-n", "--configfile", str(config)).stdout


def _radiograph_png(path: Path) -> Path:
    """A radiograph-like 8-bit PNG: a procedural skull's x-ray, bone dark (as on film), display gamma."""
    img = render_xrays(skull_volume(species_params(5), size=48), hemisphere_views(1, seed=3), size=96, steps=48)[0]
    cv2.imwrite(str(path), np.round(255 * (1 - img ** (1 / 2.2))).astype(np.uint8))
    return path


@pytest.mark.timeout(900)
def test_full_pipeline_tiny(tmp_path):
    """Data → train → evaluate → figures → apps → real x-rays → report, tiny sizes: every rule runs."""
    real = {"film": {"path": str(_radiograph_png(tmp_path / "film.png")), "gamma": 2.2}}
    chest = ROOT.parent / "shared" / "data" / "real" / "xray" / "00000001_000.png"
    if chest.is_file():  # a real radiograph too, where ../shared/data is beside the clone
        real["chest"] = {"path": str(chest), "max_size": 128, "polarity": "keep"}  # chest films: not guessed
    demo = {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}}
    cfg = tiny_config("full", demo, {**TINY_MODEL, "real_xrays": real, "cv": {"folds": 3, "seed": 0}})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    smk(tmp_path, "--cores", "2", "--configfile", str(config), timeout=900)
    res = tmp_path / "results/full"
    assert (res / "model/last.pt").is_file() and (res / "model/val_log.csv").is_file()
    with open(res / "eval/metrics.csv", newline="") as fh:
        methods = {r["method"] for r in csv.DictReader(fh)}
    assert methods == {"ours", "ours_nofusion", "nn", "oracle", "mean"}
    for name in (
        "fig6_methods",
        "fig7_slice_views",
        "fig8a_slice_counts",
        "fig8b_view_classes",
        "fig9_fusion",
        "fig17_qualitative",
    ):
        assert (res / "figures" / f"{name}.png").stat().st_size > 5000
    assert list((res / "apps").glob("*_turntable.gif"))
    # cross-validation (model.cv, workflow/rules/cv.smk): 3 folds, each species tested once, on views
    pooled = json.loads((res / "cv/summary.json").read_text())
    assert pooled["folds"] == 3 and pooled["n_species"] == 3
    assert (res / "cv/report.md").read_text().startswith("# Cross-validation: 3 folds over 3 species")
    for k in range(3):
        view = open_store(res / f"cv/fold{k}/dataset.zarr")
        ev = json.loads((res / f"cv/fold{k}/eval/summary.json").read_text())
        assert ev["eval_species"] == view.species_names("test") and ev["train_species"] == view.species_names("train")
    assert "tables in" in (tmp_path / "logs/full/cv/summary.log").read_text()
    for name in real:
        out = res / "real" / name
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["fusion"]["rerender_max_abs_error"] < 1e-3
        for view in ("xray", "coronal", "axial", "sagittal", "mip_depth", "mip_side"):
            assert (out / f"{name}_{view}.png").stat().st_size > 100
        assert list((out / "apps").glob("*_turntable.gif")) and list((out / "apps").glob("*_anaglyph.png"))
    film = json.loads((res / "real/film/film.json").read_text())
    assert film["polarity"]["inverted"] is True  # bone dark on the film: detected and flipped
    smk(tmp_path, "--configfile", str(config), "--report", "results/full/report.html")
    html = (res / "report.html").read_text(encoding="utf-8", errors="replace")
    assert "fig6_methods.png" in html and "fig7_slice_views.png" in html and "summary.csv" in html
    assert "film_coronal.png" in html and "Real x-rays" in html
    # a real x-ray's options are tracked: another gamma re-runs its job and nothing else
    assert planned_jobs(tmp_path, "--configfile", str(config)) == []
    # report files: a lost preview sheet is made again from the store (no re-render, nothing after it);
    # a lost val_log.csv is written again from last.pt before planning (no job: a re-run of train would
    # delete best.pt and re-run everything after it)
    sheet, val_log = res / "previews" / "procedural_00_sheet.png", res / "model" / "val_log.csv"
    kept = {p: p.read_bytes() for p in (sheet, val_log)}
    sheet.unlink()
    val_log.unlink()
    assert planned_jobs(tmp_path, "--configfile", str(config)) == [("previews", None)]
    assert val_log.read_bytes() == kept[val_log]
    smk(tmp_path, "--cores", "1", "--configfile", str(config))
    again, rendered = (
        cv2.imread(str(sheet), cv2.IMREAD_UNCHANGED),
        cv2.imdecode(np.frombuffer(kept[sheet], np.uint8), -1),
    )
    assert np.array_equal(again, rendered)  # the stored x-rays' previews are the rendered ones
    assert planned_jobs(tmp_path, "--configfile", str(config)) == []
    # every table of the evaluation is an output: one deleted re-runs the evaluation (and what reads it);
    # so are the report's tables and the explorer's sheet
    for name in ("eval/metrics.csv", "eval/summary.csv", "explorer_samples.png"):
        (res / name).unlink()
    jobs = planned_jobs(tmp_path, "--configfile", str(config))
    assert ("evaluate", None) in jobs and ("explorer", None) in jobs
    # an emptied summary.json is removed, so the evaluation runs again (its readers failed, for ever)
    summary = (res / "eval" / "summary.json").read_bytes()
    (res / "eval" / "summary.json").write_text("")
    out = smk(tmp_path, "-n", "--configfile", str(config)).stdout
    assert "summary.json: not a JSON object" in out and not (res / "eval" / "summary.json").exists()
    (res / "eval" / "summary.json").write_bytes(summary)
    for name in ("eval/metrics.csv", "eval/summary.csv", "explorer_samples.png"):
        (res / name).write_text("")  # put back for the dry runs below: only their presence counts
    smk(tmp_path, "--configfile", str(config), "--touch")
    assert planned_jobs(tmp_path, "--configfile", str(config)) == []
    # another fold seed re-runs the folds and nothing else; cross-validation off plans nothing
    for cv, want in (
        ({"folds": 3, "seed": 1}, {"cv_view", "cv_train", "cv_evaluate", "cv_summary"}),
        ({"folds": 0}, set()),
    ):
        config.write_text(yaml.safe_dump({**cfg, "model": {**cfg["model"], "cv": cv}}, sort_keys=False))
        assert {rule for rule, _ in planned_jobs(tmp_path, "--configfile", str(config))} == want
    cfg["model"]["real_xrays"]["film"]["gamma"] = 2.0
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(tmp_path, "--configfile", str(config)) == [("real_xray", "film")]
    cfg["model"]["real_xrays"]["film"]["gamma"] = 2.2  # as the film was made: only the next change counts
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(tmp_path, "--configfile", str(config)) == []
    cfg["model"]["real_xrays"]["film"]["air"] = "subtract"  # tracked too
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert planned_jobs(tmp_path, "--configfile", str(config)) == [("real_xray", "film")]
    # a film whose polarity cannot be decided: the run's error names the config key, not only the option
    flat = np.clip(128 + np.random.default_rng(0).normal(0, 5, (64, 64)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "flat.png"), flat)
    cfg["model"]["real_xrays"] = {"flat": str(tmp_path / "flat.png")}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = smk(tmp_path, "results/full/real/flat/flat.nrrd", "--configfile", str(config), "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "real x-ray flat: " in proc.stdout and "polarity cannot be decided" in proc.stdout, proc.stdout[-3000:]
    assert "in the config: model.real_xrays.flat.polarity: keep or model.real_xrays.flat.polarity: invert" in (
        proc.stdout
    )
    # a file deleted inside a folder output (apps/), or edited by hand without changing its size
    # (explorer/): the folder is removed and its job planned (Snakemake alone counts a folder present
    # while it exists: "Nothing to be done")
    gif = next((res / "apps").glob("*_turntable.gif"))
    gif.unlink()
    manifest = res / "explorer" / "manifest.js"
    text = manifest.read_bytes()
    manifest.write_bytes(text[:-2] + (b"#" if text[-2:-1] != b"#" else b"%") + text[-1:])
    proc = smk(tmp_path, "-n", "--configfile", str(config))
    assert gif.name in proc.stdout, proc.stdout[-3000:]
    assert "1 of its files changed content (manifest.js)" in proc.stdout, proc.stdout[-3000:]
    assert "removing the folder so that it is made again" in proc.stdout
    assert not (res / "apps").exists() and not (res / "explorer").exists()
    planned = planned_jobs(tmp_path, "--configfile", str(config))
    assert ("apps", None) in planned and ("explorer", None) in planned


def test_run_folder_layout_has_one_home(tmp_path):
    """The workflow's run folder and a cross-validation fold's are laid out as tomodata.run_layout names
    them, which is also what tomo explorer assumes for a run folder (model.explorer.run_paths): read
    from the planned jobs' commands, not from the rules' text."""
    cfg = tiny_config(
        "plan",
        {"source": "demo", "demo": {"species": 6, "val": 1, "test": 1, "movie_size": 32}},
        {**TINY_MODEL, "cv": {"folds": 3}},
    )
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = smk(tmp_path, "-n", "-p", "--forceall", "--configfile", str(config)).stdout
    blocks = re.split(r"\n(?=\[[^\]]+\]\n)", out)

    def block(rule: str, wildcards: str = "") -> str:
        (b,) = [b for b in blocks if re.search(rf"^(?:local)?rule {rule}:", b, re.M) and wildcards in b]
        return b

    explorer = block("explorer")
    paths = run_paths("results/plan", out=re.search(r" -o (\S+)", explorer).group(1))
    assert f"--store {paths.store} " in explorer, explorer
    assert f"--checkpoint {paths.checkpoint} " in explorer, explorer
    assert f"--eval {paths.eval_dir} " in explorer, explorer
    assert paths.out == Path("results/plan/explorer"), explorer
    fold = Path("results/plan/cv/fold1")
    train = block("cv_train", "fold=1")
    assert f"{fold / MODEL_DIR / TRAIN_BEST}" in train and f"{fold / STORE_NAME}" in train, train
    assert f"{fold / EVAL_DIR / EVAL_SUMMARY}" in block("cv_evaluate", "fold=1")
