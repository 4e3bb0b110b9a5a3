"""A static web explorer of the held-out results (the paper's supplementary web application).

``write_explorer(paths, n=24)`` writes ``OUT/`` (by default ``results/RUN/explorer/``)::

    index.html          the page: opens from the file system (file://), no server, no network
    explorer.js/.css    the page's code (model/explorer_assets/)
    niivue.umd.js       the volume renderer, @niivue/niivue's UMD bundle (vendored, BSD-2-Clause:
                        LICENSE-niivue.txt; what it bundles: THIRD_PARTY.md, LICENSE-*.txt)
    manifest.js         ``window.EXPLORER``: the samples' titles, metrics, χ, grid sizes, notes
    samples/sNNN.js     per sample ``window.EXPLORER_DATA[NNN] = {volumes: {ours, truth, nn, oracle}}``,
                        each a base64 NIfTI-1 file (uint8, ``scl_slope`` = densities per step), loaded
                        only when the sample is shown (file:// forbids fetch(); a <script> works)
    samples/sNNN_xray.png   the input x-ray (opacity 0..1 as 0..255)

Volumes are the network's output grid (D, s, s) as :func:`model.examples.qualitative_examples`
returns them (ours fused with the x-ray as the evaluation fused it, ground truth, NN and Oracle view
volumes; the store, checkpoint and eval folder must belong together: :func:`model.eval_source.check_source`),
downsampled by area averaging where ``max(D, s) > max_size`` (default 64; said on the page and in the log). NIfTI
axes: x = image columns (right), y = depth (index 0, the front w = −1 of docs/geometry.md, nearest the
viewer of the frontal view: niivue's camera at azimuth 0, elevation 0 looks along +y), z = image rows reversed (up);
spacing 1 per lateral output pixel and s / D in depth, so that the volume spans a cube like the view volume
(docs/geometry.md). With that, niivue's render at azimuth 0, elevation 0 looks along the x-ray's rays
from the front, columns right and rows down, as the image is seen (until session 33 the depth was
reversed: the render showed the volume from the back, mirrored, and the anaglyph's depth disagreed
with the render's occlusion).

The page renders the x-ray of every volume from the current view in JavaScript (not niivue):
``1 − exp(−χ · mean)`` of the trilinearly sampled densities along the view direction, over a path as
long as the cube's side, on a square detector as wide as the cube (the store's renderer, parallel
beam). At the frontal view it reproduces ``1 − exp(−χ · vol.mean(depth))``.
"""

from __future__ import annotations

import base64
import csv
import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from tomodata.folder_contents import record_contents
from tomodata.previews import tile, to_png, write_png
from tomodata.run_layout import EVAL_DIR, EXPLORER_DIR, MODEL_DIR, STORE_NAME
from tomodata.store import open_store
from tomodata.volume_files import nifti_image

from .examples import qualitative_examples
from .names import EVAL_MATCHES, EVAL_METRICS, EVAL_SUMMARY, TRAIN_BEST

__all__ = [
    "ASSETS",
    "DEFAULT_MAX_SIZE",
    "DEFAULT_SAMPLES",
    "MAX_BROWSER_SIZE",
    "METHODS",
    "RunPaths",
    "choose_samples",
    "fit_size",
    "nifti_base64",
    "run_paths",
    "write_explorer",
    "write_sheet",
]

#: the page's files (copied into every explorer folder)
ASSETS = Path(__file__).with_name("explorer_assets")
#: the volumes of a sample, in the page's order
METHODS = ("ours", "truth", "nn", "oracle")
LABELS = {"ours": "ours", "truth": "ground truth", "nn": "NN", "oracle": "Oracle"}
DEFAULT_SAMPLES = 24
#: volumes larger than this per axis are downsampled (4 volumes of 64³ uint8: 1 MiB a sample)
DEFAULT_MAX_SIZE = 64
#: above this per axis a sample (4 × 128³ = 8 MiB, 11 MiB as base64) is too large for a browser
MAX_BROWSER_SIZE = 128


@dataclass(frozen=True)
class RunPaths:
    """Inputs and output of the explorer of one run."""

    store: Path
    checkpoint: Path
    eval_dir: Path
    out: Path


def run_paths(run_dir=None, *, store=None, checkpoint=None, eval_dir=None, out=None) -> RunPaths:
    """The workflow's layout under ``run_dir`` (results/RUN: dataset.zarr, model/best.pt, eval/,
    explorer/; :mod:`tomodata.run_layout`), each overridable; ValueError when a path is neither given
    nor derivable."""
    run = Path(run_dir) if run_dir else None
    missing = [
        name
        for name, v in (("--store", store), ("--checkpoint", checkpoint), ("--eval", eval_dir), ("-o", out))
        if v is None and run is None
    ]
    if missing:
        raise ValueError(f"give a run folder (results/RUN) or all of {', '.join(missing)}")

    def under_run(*parts: str) -> Path:
        assert run is not None  # a path not given needs the run folder (checked above)
        return run.joinpath(*parts)

    return RunPaths(
        store=Path(store) if store else under_run(STORE_NAME),
        checkpoint=Path(checkpoint) if checkpoint else under_run(MODEL_DIR, TRAIN_BEST),
        eval_dir=Path(eval_dir) if eval_dir else under_run(EVAL_DIR),
        out=Path(out) if out else under_run(EXPLORER_DIR),
    )


def check_run(paths: RunPaths) -> list[dict]:
    """The evaluated samples (rows of ``eval/matches.csv``); FileNotFoundError naming the missing
    path and what to run when the run has no store, checkpoint or evaluation."""
    run = paths.eval_dir.parent
    if not paths.store.is_dir():
        raise FileNotFoundError(
            f"no dataset store at {paths.store}: build it first "
            f"(snakemake {run}/dataset.final.json, or tomo build-demo)"
        )
    if not paths.checkpoint.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {paths.checkpoint}: train first "
            f"(snakemake {run}/{MODEL_DIR}/{TRAIN_BEST}, or tomo train)"
        )
    matches = paths.eval_dir / EVAL_MATCHES
    if not matches.is_file():
        raise FileNotFoundError(
            f"no evaluation at {paths.eval_dir} ({matches.name} missing): evaluate first "
            f"(snakemake {run}/{EVAL_DIR}/{EVAL_SUMMARY}, or tomo evaluate {paths.store} "
            f"--checkpoint {paths.checkpoint} -o {paths.eval_dir})"
        )
    with open(matches, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{matches} has no evaluated samples: re-run tomo evaluate")
    return rows


def choose_samples(n_evaluated: int, n: int = DEFAULT_SAMPLES, indices=None) -> list[int]:
    """Positions (in :func:`model.examples.qualitative_examples`' order: the first sample of each
    species, then the others) of the samples to show: ``indices`` or the first ``n``, at most as many
    as were evaluated; ValueError for an index out of range."""
    if indices:
        bad = [i for i in indices if not 0 <= int(i) < n_evaluated]
        if bad:
            raise ValueError(
                f"sample index {bad[0]} out of range: the evaluation has {n_evaluated} samples "
                f"(0..{n_evaluated - 1}); evaluate more with tomo evaluate --max-samples"
            )
        return list(dict.fromkeys(int(i) for i in indices))
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    return list(range(min(n, n_evaluated)))


def fit_size(vol: np.ndarray, max_size: int) -> np.ndarray:
    """``vol`` (D, s, s) area-averaged so that no axis exceeds ``max_size`` (aspect kept); as is if
    it fits."""
    D, H, W = vol.shape
    f = max_size / max(D, H, W)
    if f >= 1:
        return vol
    shape = tuple(max(2, round(n * f)) for n in (D, H, W))
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=shape, mode="area")[0, 0].numpy()


def nifti_base64(vol: np.ndarray, vmax: float, depth_spacing: float, descrip: str = "") -> str:
    """A NIfTI-1 file (uint8, densities = value · vmax / 255) of the view volume ``vol`` (D, s, s)
    in the page's axes (module docstring), as base64."""
    D, H, W = vol.shape
    q = to_png(vol / vmax)
    arr = np.ascontiguousarray(q[:, ::-1, :].transpose(2, 0, 1))  # (x=col, y=depth, z=row rev)
    affine = np.diag([1.0, depth_spacing, 1.0, 1.0])
    affine[:3, 3] = -0.5 * (np.array([W, D * depth_spacing, H]) - np.array([1.0, depth_spacing, 1.0]))
    img = nifti_image(arr, affine, unit_mm=False, descrip=descrip)  # units: pixels
    hdr = img.header
    hdr.set_data_dtype(np.uint8)
    hdr.set_slope_inter(vmax / 255.0, 0.0)
    hdr["cal_min"], hdr["cal_max"] = 0.0, vmax
    return base64.b64encode(img.to_bytes()).decode("ascii")


def sample_metrics(eval_dir: Path) -> dict:
    """{(species, sample): {method: {"mse": ..., "dssim": ...}}}: each sample's row of ``metrics.csv``
    (one x-ray, so one view; a key given twice is averaged; absent file: {})."""
    path = Path(eval_dir) / EVAL_METRICS
    if not path.is_file():
        return {}
    sums: dict = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            m = sums.setdefault((r["species"], str(r["sample"])), {}).setdefault(r["method"], [0.0, 0.0, 0])
            m[0] += float(r.get("mse") or "nan")
            m[1] += float(r.get("dssim") or "nan")
            m[2] += 1
    return {k: {meth: {"mse": s[0] / s[2], "dssim": s[1] / s[2]} for meth, s in v.items()} for k, v in sums.items()}


def write_sheet(path: Path, xrays: list, cols: int = 8, panel: int = 96) -> Path:
    """A contact sheet (PNG) of the samples' input x-rays (each (S, S), opacity 0..1), ``cols`` a row,
    ``panel`` pixels each, in the page's order: the explorer's entry in the Snakemake report."""
    small = [cv2.resize(np.asarray(x, np.float32), (panel, panel), interpolation=cv2.INTER_AREA) for x in xrays]
    return write_png(path, tile(small, cols, pad=4, border=4))


def _js(name: str, value) -> str:
    return f"{name} = {json.dumps(value, separators=(',', ':'))};\n"


def _copy_assets(out: Path) -> None:
    """The page's files; ``*.gz`` (the 2.2 MB niivue bundle, kept compressed in the repository) unpacked."""
    for f in ASSETS.iterdir():
        if f.is_file() and f.suffix == ".gz":
            (out / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
        elif f.is_file():
            shutil.copyfile(f, out / f.name)


def write_explorer(
    paths: RunPaths,
    *,
    n: int = DEFAULT_SAMPLES,
    indices=None,
    max_size: int = DEFAULT_MAX_SIZE,
    device: str = "cpu",
    sheet=None,
    log=print,
) -> Path:
    """Write the explorer of an evaluated run into ``paths.out`` (module docstring), and with
    ``sheet`` a contact sheet of its input x-rays there (:func:`write_sheet`); returns
    ``paths.out / "index.html"``. Errors (nothing written): no store, checkpoint or evaluation, a
    sample index out of range, ``max_size`` above :data:`MAX_BROWSER_SIZE`."""
    if not 8 <= max_size <= MAX_BROWSER_SIZE:
        raise ValueError(
            f"--max-size {max_size}: volumes must be 8..{MAX_BROWSER_SIZE} voxels per axis in the "
            f"browser (fewer show nothing; {MAX_BROWSER_SIZE}³ × 4 volumes is 8 MiB a sample): choose one in "
            "that range"
        )
    matches = check_run(paths)
    chosen = choose_samples(len(matches), n, indices)
    chi = open_store(paths.store).settings.chi
    log(f"explorer: {len(chosen)} of {len(matches)} evaluated samples of {paths.eval_dir}")
    rows = qualitative_examples(paths.store, paths.checkpoint, paths.eval_dir, n=max(chosen) + 1, device=device)["rows"]
    metrics = sample_metrics(paths.eval_dir)
    out = paths.out
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for old in (out / "samples").glob("s*"):
        old.unlink()
    samples, grid, shown = [], None, None
    for k, pos in enumerate(chosen):
        row = rows[pos]
        grid = row["ours"].shape
        vols = {m: fit_size(row[m], max_size) for m in METHODS if row.get(m) is not None}
        shown = vols["ours"].shape
        vmax = max(1.0, *(float(v.max()) for v in vols.values()))
        dsp = shown[1] / shown[0]
        data = {m: nifti_base64(v, vmax, dsp, f"{row['title']} {m}") for m, v in vols.items()}
        name = f"s{k:03d}"
        script = _js(f"window.EXPLORER_DATA[{k}]", {"volumes": data})
        (out / "samples" / f"{name}.js").write_text("window.EXPLORER_DATA = window.EXPLORER_DATA || {};\n" + script)
        write_png(out / "samples" / f"{name}_xray.png", row["xray"])
        species, sample = row["title"].rsplit(" sample ", 1)
        samples.append(
            dict(
                title=row["title"],
                species=species,
                sample=int(sample),
                vmax=vmax,
                methods=list(vols),
                script=f"samples/{name}.js",
                xray=f"samples/{name}_xray.png",
                metrics=metrics.get((species, sample), {}),
            )
        )
    note = ""
    assert grid is not None and shown is not None  # chosen is not empty
    if shown != grid:
        note = (
            f"volumes downsampled for the browser from {'×'.join(map(str, grid))} to "
            f"{'×'.join(map(str, shown))} (depth × rows × columns; --max-size {max_size})"
        )
        log(f"explorer: {note}")
    manifest = dict(
        run=Path(paths.eval_dir).resolve().parent.name,  # the run folder (a bare "eval" given: its parent)
        chi=chi,
        grid=list(grid),
        shown=list(shown),
        note=note,
        labels=LABELS,
        n_evaluated=len(matches),
        samples=samples,
    )
    (out / "manifest.js").write_text(_js("window.EXPLORER", manifest))
    _copy_assets(out)
    record_contents(out)  # last: the workflow re-runs the job where a file of it is gone
    if sheet:
        log(f"explorer: the input x-rays in {write_sheet(sheet, [rows[p]['xray'] for p in chosen])}")
    log(f"explorer: wrote {out / 'index.html'} ({len(samples)} samples, volumes {'×'.join(map(str, shown))})")
    return out / "index.html"
