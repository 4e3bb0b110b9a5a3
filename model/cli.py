"""The ``tomo`` command line (entry point :func:`main`): the dataset's commands from
:func:`tomodata.cli.register` and the model's commands here, thin wrappers over the packages.

    tomo model-info --preset paper              parameters and FLOPs of the network
    tomo train STORE -o RUN --preset demo       train (resumable; torchrun for several GPUs)
    tomo evaluate STORE --checkpoint C -o EVAL  ours vs NN, Oracle and mean on the test species
    tomo examples STORE --checkpoint C --eval EVAL -o EX.npz   predictions on chosen held-out samples
    tomo figures --eval EVAL -o FIGS            the paper's figures (PNG)
    tomo apps STORE --checkpoint C --eval EVAL -o DIR   novel views, cut-away, stereo, colour
    tomo explorer ... -o PAGE.html              a web page to explore held-out samples in 3D
    tomo infer XRAY --checkpoint C -o OUT.nrrd  a volume from a real radiograph
    tomo bench infer|nn|evaluate                inference, the NN search, the evaluation's phases

and the dataset's (tomodata/cli.py: phantom, render, build-demo, validate, demo-movies,
manifest-folder, fetch, align, align-sheet, cube, store-create, store-settings, render-species,
finalize, export, bench render|cube|rules). Every subcommand has ``--help``.

The model's modules are imported inside the commands: the same ``tomo`` serves the workflow's data
rules, whose environment (envs/tomodata.yaml) has no torch.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from tomodata import __version__
from tomodata import cli as data_cli
from tomodata.cli import positive_float, positive_int

__all__ = ["build_parser", "main"]


def _network_config(a):
    from .network import NetworkConfig

    net = NetworkConfig.preset(a.preset)
    over = {
        k: getattr(a, k)
        for k in ("input_size", "out_depth", "out_size", "width", "stem_channels", "hourglass_levels")
        if getattr(a, k, None) is not None
    }
    return net if not over else NetworkConfig.from_dict(net.to_dict() | over)


def cmd_model_info(a) -> int:
    from .network import model_info_text

    print(model_info_text(_network_config(a), name=a.preset))
    return 0


def cmd_train(a) -> int:
    from .train import TrainConfig, train

    net = _network_config(a)
    cfg = TrainConfig(
        steps=a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        warmup_steps=a.warmup,
        val_every=a.val_every,
        val_samples=a.val_samples,
        ckpt_every=a.ckpt_every,
        keep_checkpoints=a.keep_checkpoints,
        log_every=a.log_every,
        seed=a.seed,
        num_workers=a.workers,
        amp=a.amp,
    ).validate()
    summary = train(a.store, a.output, net=net, cfg=cfg, resume=not a.no_resume, max_steps=a.max_steps)
    print(json.dumps(summary))
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate import EvalConfig, evaluate_run

    cfg = EvalConfig(
        a.store,
        a.checkpoint,
        a.output,
        max_samples=a.max_samples,
        batch=a.batch,
        device=a.device,
        oracle_bytes=int(a.oracle_memory_gb * 2**30),
        nn_search=a.nn_search,
        beta=a.beta,
        fusion_at=a.fusion_at,
        split=a.split,
        progress=True,
    )
    summary = evaluate_run(cfg)
    print(
        f"{summary['n_samples']} held-out samples of {summary['n_species']} {summary['eval_split']!r} species "
        f"({summary['n_views_evaluated']} distinct views)"
    )
    head = {
        "species": "mean of species means, 95% cluster-bootstrap CI over species (n = species)",
        "sample": "paper protocol: mirrored pairs averaged, 95% t-interval (n = pairs)",
    }
    for level, what in head.items():
        print(f"{what}:")
        for m, vals in summary["means"][level].items():
            print(
                f"  {m:14} "
                + "  ".join(
                    f"{k} {v['mean']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}] n={v['n']}" for k, v in vals.items()
                )
            )
    print(f"tables in {a.output}")
    return 0


def cmd_examples(a) -> int:
    from .examples import write_examples

    print(write_examples(a.store, a.checkpoint, a.eval, a.output, n=a.examples, device=a.device))
    return 0


def cmd_figures(a) -> int:
    from .examples import examples_for
    from .figures import write_all_figures

    ex = examples_for(a.examples_file, a.store, a.checkpoint, a.eval, n=a.examples, device=a.device)
    paths = write_all_figures(
        a.eval, a.output, qualitative_rows=ex["rows"] if ex else None, fusion_example=ex["fusion"] if ex else None
    )
    for p in paths:
        print(p)
    return 0


def cmd_apps(a) -> int:
    from .applications import write_applications
    from .examples import examples_for

    ex = examples_for(a.examples_file, a.store, a.checkpoint, a.eval, n=a.examples, device=a.device)
    if ex is None:
        raise ValueError("tomo apps needs --examples-file, or STORE with --checkpoint and --eval")
    out = Path(a.output)
    for row, ours_full in zip(ex["rows"], ex["ours_full"]):  # ours fused at the x-ray's resolution
        name = row["title"].replace(" ", "_")
        for p in write_applications(ours_full, out, xray=row["xray"], name=name, n_turntable=a.frames):
            print(p)
    return 0


def cmd_explorer(a) -> int:
    from .explorer import run_paths, write_explorer

    paths = run_paths(a.run, store=a.store, checkpoint=a.checkpoint, eval_dir=a.eval, out=a.output)
    print(write_explorer(paths, n=a.samples, indices=a.index, max_size=a.max_size, device=a.device, sheet=a.sheet))
    return 0


def _infer_expand(pattern: str) -> tuple[list[Path], list[str]]:
    """One XRAY argument of `tomo infer`: a file (taken as named, even with glob characters in it) or a
    glob pattern (expanded here, so quoted globs work; natural order). Returns (files, problems)."""
    from tomodata.io import natural_key

    from .infer import xray_file_problem

    pat = os.path.expanduser(pattern)
    if Path(pat).is_file() or not glob.has_magic(pat):
        hits = [pat]
    else:
        hits = [h for h in sorted(glob.glob(pat, recursive=True), key=natural_key) if not Path(h).is_dir()]
        if not hits:
            return [], [f"{pattern}: no file matches"]
    problems = [(h, xray_file_problem(h)) for h in hits]
    return [Path(h) for h, why in problems if why is None], [f"{h}: {why}" for h, why in problems if why]


def _infer_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """All radiographs of the call, in the order given (each glob in natural order), each file once,
    and the problems (missing, unreadable, empty, not an image, a glob without a match)."""
    files, problems, seen = [], [], set()
    for pat in patterns:
        hits, probs = _infer_expand(pat)
        problems += [q for q in probs if q not in problems]
        for h in hits:
            if h.resolve() not in seen:
                seen.add(h.resolve())
                files.append(h)
    return files, problems


def _infer_jobs(a, xrays: list[Path]) -> tuple[list[tuple[Path, Path, Path | None]], list[str]]:
    """(radiograph, OUT/STEM/STEM.FORMAT, APPS/STEM) of each of several radiographs, and the name
    clashes: two with the same STEM (the name without its last suffix, case-insensitive)."""
    out = Path(a.output)
    if out.suffix.lower() in (".nrrd", ".nii", ".gz") or (out.exists() and not out.is_dir()):
        raise ValueError(f"with several radiographs -o is a folder (OUT/STEM/STEM.{a.format} each), got {out}")
    stems: dict[str, list[Path]] = {}
    for x in xrays:
        stems.setdefault(x.stem.casefold(), []).append(x)
    clashes = [
        f"same name, same output {out / v[0].stem}: " + ", ".join(map(str, v)) for v in stems.values() if len(v) > 1
    ]
    jobs = [(x, out / x.stem / f"{x.stem}.{a.format}", Path(a.apps) / x.stem if a.apps else None) for x in xrays]
    return jobs, clashes


def _infer_one(a, xray: Path, output: Path, apps: Path | None) -> None:
    from .infer import infer_file, volume_suffix

    record = infer_file(
        xray,
        a.checkpoint,
        output,
        gamma=a.gamma,
        fusion=not a.no_fusion,
        beta=a.beta,
        polarity=a.polarity,
        square=a.square,
        previews=not a.no_previews,
        device=a.device,
        max_size=a.max_size,
    )
    o = record["output"]
    if apps is not None:
        from .applications import read_view_volume_file, write_applications

        vol = read_view_volume_file(o["path"], max_side=128)
        xr = None
        name = Path(o["path"]).name
        stem = name[: len(name) - len(volume_suffix(name))]  # the applications are named like the volume
        xr_png = Path(o["path"]).parent / f"{stem}_xray.png"
        if xr_png.is_file():
            import cv2

            grey = cv2.imread(str(xr_png), cv2.IMREAD_GRAYSCALE)
            if grey is None:
                raise ValueError(f"{xr_png}: cannot read this PNG")
            xr = grey.astype(np.float32) / 255.0
        for p in write_applications(vol, apps, xray=xr, name=stem, n_turntable=24):
            print(f"application {p}")
    print(
        f"wrote {o['path']}: {tuple(o['shape_zyx'])} (z, y, x), spacing {tuple(o['spacing_zyx'])} "
        f"({o['spacing_unit']}); polarity {'inverted' if record['polarity']['inverted'] else 'kept'}; "
        f"record {record['record']}"
    )


def _infer_run(a, jobs) -> list[str]:
    """Run the jobs with one progress line each on stderr; the failures (with --keep-going; without,
    the first failure is raised)."""
    failed = []
    for k, (x, output, apps) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        try:
            _infer_one(a, x, output, apps)
        except Exception as e:  # noqa: BLE001 - any failure of one radiograph (Ctrl-C still stops)
            print(f"[{k}/{len(jobs)}] {x.name}: FAILED after {time.perf_counter() - t0:.1f} s: {e}", file=sys.stderr)
            if not a.keep_going:
                raise
            failed.append(f"{x}: {e}")
            continue
        print(f"[{k}/{len(jobs)}] {x.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return failed


def cmd_infer(a) -> int:
    """One radiograph (a file, not a glob): -o is the volume file, as always. Several (or a glob): -o is
    a folder, each radiograph goes to OUT/STEM/STEM.<--format> (applications to APPS/STEM/); every
    input is checked and the network loaded once before any work."""
    from .infer import cached_model

    if len(a.xray) == 1 and (Path(a.xray[0]).is_file() or not glob.has_magic(a.xray[0])):
        _infer_one(a, Path(a.xray[0]), Path(a.output), Path(a.apps) if a.apps else None)
        return 0
    xrays, problems = _infer_inputs(a.xray)
    jobs, clashes = _infer_jobs(a, xrays)
    errors = clashes + ([] if a.keep_going else problems)
    if errors:
        hint = "\n(--keep-going skips the unusable files and runs the others)" if problems else ""
        raise ValueError("nothing was run:\n  " + "\n  ".join(errors) + hint)
    for q in problems:
        print(f"skipped {q}", file=sys.stderr)
    if jobs:
        cached_model(a.checkpoint, a.device)  # the network, once; a bad checkpoint stops here
    failed = problems + _infer_run(a, jobs)
    if failed:
        print(
            f"{len(failed)} of {len(jobs) + len(problems)} radiographs failed:\n  " + "\n  ".join(failed),
            file=sys.stderr,
        )
        return 1
    return 0


def bench_infer_cmd(a) -> int:
    from .infer import bench_infer

    r = bench_infer(net=a.preset, size=a.size, fuse_to=a.fuse_to, repeats=a.repeats)
    print(
        f"infer {a.preset} network {a.size}² + fusion to {a.fuse_to}²: {r['seconds']:.2f} s "
        f"(network {r['network_s']:.2f} s, fusion {r['fusion_s']:.2f} s, {r['threads']} threads, "
        f"1-min load {max(np.atleast_1d(r['loadavg_1min'])):.1f}, median of {a.repeats})"
    )
    return 0


def bench_evaluate_cmd(a) -> int:
    from .bench_evaluate import bench_evaluate, format_bench_evaluate

    if not a.store or not a.checkpoint:
        raise ValueError("tomo bench evaluate needs --store and --checkpoint")
    print(format_bench_evaluate(bench_evaluate(a.store, a.checkpoint, samples=a.samples, device=a.device)))
    return 0


def bench_nn_cmd(a) -> int:
    from .search import bench_nn

    if not a.store:
        raise ValueError("tomo bench nn needs --store (a dataset store with train and held-out species)")
    r = bench_nn(a.store, queries=a.queries, coarse=a.nn_coarse)
    est = r["paper_estimate_s"]
    print(
        f"NN over {r['n_train']} training x-rays ({r['image_size']}²), {r['n_queries']} queries, "
        f"{r['threads']} threads:\n"
        f"  brute force  {r['brute_s']:.2f} s\n"
        f"  bound        {r['features_s']:.2f} s features (once) + {r['bound_s']:.2f} s search "
        f"({r['bound_timings']['bound_s']:.2f} s bounds, {r['bound_timings']['exact_s']:.2f} s exact), "
        f"{r['evaluated_mean']:.1f} exact comparisons per query (max {r['evaluated_max']}), "
        f"{r['cells']} cells; same neighbours: {r['same']}\n"
        f"  paper scale ({r['paper_scale']['n_train']} x {r['paper_scale']['n_queries']}, 256²), estimated: "
        f"brute force {est['brute'] / 3600:.1f} h, bound {est['bound'] / 3600:.1f} h (features "
        f"{est['features'] / 3600:.1f} h, bounds {est['bounds'] / 3600:.1f} h, exact {est['exact'] / 3600:.1f} h)"
    )
    return 0 if r["same"] else 1


#: ``tomo bench WHAT`` benchmarks of the model (added to tomodata.cli's)
BENCHES = {
    "infer": ("inference (network + fusion)", bench_infer_cmd),
    "nn": ("the NN baseline's search (needs --store)", bench_nn_cmd),
    "evaluate": (
        "tomo evaluate's phases per sample and its peak memory (needs --store and --checkpoint)",
        bench_evaluate_cmd,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``tomo`` parser: the dataset's commands, then the model's."""
    p = argparse.ArgumentParser(
        prog="tomo",
        description="Single-image tomography: dataset, network, evaluation.",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tomo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    q = data_cli.register(sub, benches=BENCHES)
    q.add_argument("--store", help="dataset store of the nn and evaluate benchmarks")
    q.add_argument("--checkpoint", help="checkpoint of the evaluate benchmark")
    q.add_argument(
        "--samples",
        type=positive_int,
        default=100,
        help="held-out samples of the evaluate benchmark (default %(default)s)",
    )
    q.add_argument("--device", default="cpu", help="torch device of the evaluate benchmark (default %(default)s)")
    q.add_argument("--queries", type=positive_int, default=256, help="held-out queries of the nn benchmark")
    q.add_argument("--nn-coarse", type=positive_int, default=16, help="cells per axis of the nn benchmark's bound")
    q.add_argument(
        "--preset", choices=["paper", "medium", "demo"], default="paper", help="network of the infer benchmark"
    )
    q.add_argument("--fuse-to", type=positive_int, default=512, help="fusion resolution of the infer benchmark")

    def net_opts(q):
        q.add_argument(
            "--preset", choices=["paper", "medium", "demo"], default="paper", help="network size (default %(default)s)"
        )
        for name, what in (
            ("input-size", "input x-ray side"),
            ("out-depth", "output depth slices"),
            ("out-size", "output side"),
            ("width", "trunk channels"),
            ("stem-channels", "stem channels"),
            ("hourglass-levels", "hourglass levels"),
        ):
            q.add_argument(f"--{name}", type=positive_int, help=f"override the preset's {what}")

    q = sub.add_parser(
        "model-info",
        help="parameters and FLOPs of the network",
        description=(
            "Print the network's layer sizes, parameter count and FLOPs per sample for a preset (and overrides)."
        ),
    )
    net_opts(q)
    q.set_defaults(func=cmd_model_info)

    q = sub.add_parser(
        "train",
        help="train the network on a dataset store",
        description=(
            "Train the 2D→3D network on the store's train split (L2 on view volumes made on the fly, Adam, "
            "warm-up + cosine schedule), validating on the held-out species. Resumes exactly from OUT/last.pt. "
            "For several GPUs: torchrun --nproc_per_node N -m model.cli train ..."
        ),
    )
    q.add_argument("store", help="the dataset store (.zarr)")
    q.add_argument("-o", "--output", required=True, help="run folder: checkpoints, CSV and TensorBoard logs")
    net_opts(q)
    q.add_argument("--steps", type=positive_int, default=150_000, help="global steps (default %(default)s)")
    q.add_argument("--batch-size", type=positive_int, default=16, help="global batch (default %(default)s)")
    q.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    q.add_argument("--warmup", type=int, default=500, help="linear warm-up steps (default %(default)s)")
    q.add_argument("--val-every", type=positive_int, default=1000, help="validate every N steps")
    q.add_argument("--val-samples", type=positive_int, default=512, help="held-out samples per validation")
    q.add_argument("--ckpt-every", type=positive_int, default=1000, help="checkpoint every N steps")
    q.add_argument("--keep-checkpoints", action="store_true", help="also keep step_XXXXXXX.pt files")
    q.add_argument("--log-every", type=positive_int, default=10, help="log every N steps")
    q.add_argument("--seed", type=int, default=0, help="seed of initialisation and sample order")
    q.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (forkserver/spawn)")
    q.add_argument("--amp", choices=["auto", "bf16", "none"], default="auto", help="autocast (auto: bf16 on CUDA)")
    q.add_argument("--max-steps", type=positive_int, help="stop after this step (the schedule still uses --steps)")
    q.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/last.pt exists")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on the held-out species",
        description=(
            "Evaluate ours (fused and raw) against the NN, Oracle and mean baselines on one split of the store's "
            "held-out species (--split; the train split is the baselines' database): volume L2 (RMSE) and DSSIM of "
            "iso-surface renders; species-level means with cluster-bootstrap CIs, paired t and Wilcoxon tests on "
            "species means, and the paper's per-sample protocol (mirrored pairs averaged); view classes, slice counts. "
            "Writes metrics.csv, summary.csv, tests.csv, species.csv, view_classes.csv, slice_counts.csv, "
            "matches.csv, summary.json."
        ),
    )
    q.add_argument("store", help="the dataset store (.zarr)")
    q.add_argument("--checkpoint", required=True, help="the trained checkpoint (last.pt)")
    q.add_argument("-o", "--output", required=True, help="evaluation folder")
    q.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="the evaluated species: 'test' (the reported result) or 'val' (the model-choice set) "
        "(default %(default)s)",
    )
    q.add_argument("--max-samples", type=positive_int, help="evaluate at most this many held-out samples")
    q.add_argument("--batch", type=positive_int, default=16, help="samples per batch (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.add_argument(
        "--oracle-memory-gb",
        type=positive_float,
        default=1.0,
        help="memory in GiB for the held-out view volumes the exact Oracle compares per pass over "
        "the training view volumes; fewer per pass means more passes, never another result "
        "(default %(default)s)",
    )
    q.add_argument(
        "--beta",
        type=positive_float,
        default=2.0,
        help="fusion sharpness β of 'ours' (paper Eq. 2; default %(default)s)",
    )
    q.add_argument(
        "--fusion-at",
        choices=["xray", "target"],
        default="xray",
        help="fuse at the x-ray's resolution (the paper) or on the network's grid (default %(default)s)",
    )
    q.add_argument(
        "--nn-search",
        choices=["bound", "brute"],
        default="bound",
        help="NN baseline search, both exact: 'bound' (lower-bound pre-filter, exact re-rank) or "
        "'brute' (every pair by matrix products) (default %(default)s)",
    )
    q.set_defaults(func=cmd_evaluate)

    q = sub.add_parser(
        "examples",
        help="the qualitative examples: predictions on chosen held-out samples (npz)",
        description=(
            "Run the network on held-out samples of an evaluation (the first of each species, then further ones) "
            "and save the inputs, ours, ground truth, NN, Oracle and mean volumes to one .npz, which "
            "tomo figures and tomo apps read with --examples-file (model/examples.py)."
        ),
    )
    q.add_argument("store", help="the dataset store (.zarr)")
    q.add_argument("--checkpoint", required=True, help="the checkpoint")
    q.add_argument("--eval", required=True, help="evaluation folder (its matches.csv picks the samples)")
    q.add_argument("-o", "--output", required=True, help="the examples file (.npz)")
    q.add_argument("--examples", type=positive_int, default=4, help="samples (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=cmd_examples)

    q = sub.add_parser(
        "figures",
        help="draw the paper's figures from an evaluation",
        description=(
            "Figures 5/17 and 7 (qualitative and slice counts as renders, need --store and --checkpoint), "
            "6 (methods), 8a (slice counts), 8b (view classes) and 9 (fusion) as PNGs."
        ),
    )
    q.add_argument("--eval", required=True, help="evaluation folder (from tomo evaluate)")
    q.add_argument("-o", "--output", required=True, help="figure folder")
    q.add_argument("--store", help="the dataset store (for the qualitative figure)")
    q.add_argument("--checkpoint", help="the checkpoint (for the qualitative figure)")
    q.add_argument("--examples-file", help="instead of --store/--checkpoint: the examples of tomo examples (.npz)")
    q.add_argument("--examples", type=positive_int, default=4, help="qualitative rows (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=cmd_figures)

    q = sub.add_parser(
        "apps",
        help="applications: novel views, cut-away, stereo, colour",
        description=(
            "For held-out samples of an evaluation: turntable GIF, novel views, cut-away, red-cyan anaglyph, "
            "wiggle stereo GIF and a colour transfer-function render of the predicted volume."
        ),
    )
    q.add_argument("store", nargs="?", help="the dataset store (.zarr; not with --examples-file)")
    q.add_argument("--checkpoint", help="the checkpoint (not with --examples-file)")
    q.add_argument("--eval", help="evaluation folder (its matches.csv picks the samples)")
    q.add_argument("--examples-file", help="instead of STORE/--checkpoint/--eval: the examples of tomo examples")
    q.add_argument("-o", "--output", required=True, help="output folder")
    q.add_argument("--examples", type=positive_int, default=2, help="samples (default %(default)s)")
    q.add_argument("--frames", type=positive_int, default=36, help="turntable frames (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=cmd_apps)

    q = sub.add_parser(
        "explorer",
        help="a web page to explore held-out samples in 3D",
        description=(
            "A static page (index.html, opens from the file system, no server or network) of held-out samples of an "
            "evaluated run: the input x-ray and ours, ground truth, NN and Oracle rendered live (niivue): orbit, clip "
            "plane, transfer functions, red-cyan anaglyph, the x-ray re-rendered from the view. docs/explorer.md."
        ),
    )
    q.add_argument(
        "run",
        nargs="?",
        help=(
            "the run folder (results/RUN: dataset.zarr, model/best.pt, eval/; writes RUN/explorer/); "
            "or give --store, --checkpoint, --eval and -o"
        ),
    )
    q.add_argument("--store", help="the dataset store (default RUN/dataset.zarr)")
    q.add_argument("--checkpoint", help="the checkpoint (default RUN/model/best.pt)")
    q.add_argument("--eval", help="evaluation folder from tomo evaluate (default RUN/eval)")
    q.add_argument("-o", "--output", help="output folder (default RUN/explorer)")
    q.add_argument(
        "--samples",
        type=positive_int,
        default=24,
        help=("the first N evaluated samples, fewer if fewer were evaluated (default %(default)s)"),
    )
    q.add_argument("--index", type=int, nargs="+", help="instead: these samples (0-based, order of --samples)")
    q.add_argument(
        "--max-size",
        type=positive_int,
        default=64,
        help=("downsample volumes larger than this per axis for the browser (8..128, default %(default)s)"),
    )
    q.add_argument(
        "--sheet", metavar="PNG", help="also a contact sheet of the samples' input x-rays (the report's entry)"
    )
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=cmd_explorer)

    q = sub.add_parser(
        "infer",
        help="a 3D volume from each real x-ray",
        description=(
            "Reconstruct a view volume from a radiograph (PNG/TIFF/JPEG 8/16-bit, grey/RGB/RGBA, DICOM): polarity "
            "fixed (bone dense), optional gamma undo, cropped or padded to square, the network, fusion at the "
            "input's resolution; writes OUT (.nrrd, .nii or .nii.gz, with spacing), preview PNGs and a JSON record. "
            "Several radiographs or globs: OUT is a folder (OUT/STEM/STEM.FORMAT each); every input is checked "
            "before any work and the network is built once."
        ),
    )
    q.add_argument(
        "xray",
        nargs="+",
        help=("the radiograph(s): files and glob patterns (quoted globs are expanded too); several: -o is a folder"),
    )
    q.add_argument("--checkpoint", required=True, help="the trained checkpoint")
    q.add_argument(
        "-o",
        "--output",
        required=True,
        help=("output volume: .nrrd, .nii or .nii.gz; with several radiographs a folder (OUT/STEM/STEM.FORMAT each)"),
    )
    q.add_argument(
        "--format",
        choices=["nrrd", "nii", "nii.gz"],
        default="nrrd",
        help=("volume format with several radiographs (default %(default)s)"),
    )
    q.add_argument(
        "--keep-going",
        action="store_true",
        help=("with several radiographs: skip unusable files and go on after a failure; exit 1 with the list"),
    )
    q.add_argument("--gamma", type=float, help="undo a display curve: value = value ** GAMMA (2.2 undoes v**(1/2.2))")
    q.add_argument("--no-fusion", action="store_true", help="the network's volume upsampled, without fusion")
    q.add_argument("--beta", type=float, default=2.0, help="fusion sharpness β (default %(default)s)")
    q.add_argument("--polarity", choices=["auto", "keep", "invert"], default="auto", help="bone bright (default auto)")
    q.add_argument(
        "--square",
        choices=["field", "crop", "pad"],
        default="field",
        help=(
            "make the image square: field = around the anatomy inside the exposed field "
            "(shutters removed, aspect kept), crop = centre crop to the short side, "
            "pad = pad to the long side (default %(default)s)"
        ),
    )
    q.add_argument("--max-size", type=positive_int, help="cap the output's lateral resolution")
    q.add_argument("--no-previews", action="store_true", help="skip the preview PNGs")
    q.add_argument(
        "--apps",
        metavar="DIR",
        help="also write the applications (novel views, turntable, cut-away, "
        "stereo, colour) of the volume, at up to 128² laterally, into DIR, named like OUT",
    )
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=cmd_infer)

    return p


def main(argv: list[str] | None = None) -> int:
    """``tomo``: parse and run (exit status 0, 1 for a failed check, 2 for bad input, 3 for a full disk)."""
    return data_cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
