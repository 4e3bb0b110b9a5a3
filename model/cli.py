"""The ``tomo`` command line (entry point :func:`main`): the dataset's commands from
:func:`tomodata.cli.register` and the model's commands here, thin wrappers over the packages.

    tomo model-info --preset paper              parameters and FLOPs of the network
    tomo train STORE -o RUN --preset demo       train (resumable; torchrun for several GPUs)
    tomo evaluate STORE --checkpoint C -o EVAL  ours vs NN, Oracle and mean on the test species
    tomo cv-summary EVAL0 ... EVALk -o CV       the K cross-validation folds' evaluations pooled
    tomo cv-report CV                           that result as a page of tables (CV/report.md)
    tomo examples STORE --checkpoint C --eval EVAL -o EX.npz   predictions on chosen held-out samples
    tomo figures --eval EVAL -o FIGS            the paper's figures (PNG)
    tomo apps STORE --checkpoint C --eval EVAL -o DIR   novel views, cut-away, stereo, colour
    tomo explorer RUN                           a web page of held-out samples in 3D (RUN/explorer/)
    tomo infer XRAY --checkpoint C -o OUT.nrrd  a volume from a real radiograph
    tomo bench infer|nn|evaluate|train          inference, the NN search, the evaluation's phases, a training step

and the dataset's (tomodata/cli/: phantom, render, build-demo, validate, demo-movies,
manifest-folder, fetch, align, align-sheet, cube, store-create, store-settings, render-species,
finalize, previews, export, cv-view, bench render|dataset|cube|rules). Every subcommand has ``--help``.

The model's modules are imported inside the commands: the same ``tomo`` serves the workflow's data
rules, whose environment (envs/tomodata.yaml) has no torch.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

from tomodata import __version__
from tomodata import cli as data_cli

from . import cli_parsers as P

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
        compile=a.compile,
        memory_format=a.memory_format,
    ).validate()
    summary = train(
        a.store,
        a.output,
        net=net,
        cfg=cfg,
        resume=not a.no_resume,
        max_steps=a.max_steps,
        restart_if_changed=a.restart_if_changed,
        device=a.device,
    )
    print(json.dumps(summary))
    return 130 if summary.get("stopped") else 0  # stopped by a signal: not a finished run


def cmd_evaluate(a) -> int:
    from .evaluate import EvalConfig, evaluate_run, summary_text

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
    print(summary_text(summary))
    print(f"tables in {a.output}")
    return 0


def cmd_cv_summary(a) -> int:
    from .cross_validation import pool_folds, pooled_text

    print(pooled_text(pool_folds(a.evals, a.output)))
    print(f"tables in {a.output}")
    return 0


def cmd_cv_report(a) -> int:
    from .cv_report import write_cv_report

    print(write_cv_report(a.cv, a.output))
    return 0


def cmd_cv_compare(a) -> int:
    from .cv_compare import compare_cv, comparison_text

    res = compare_cv(a.a, a.b, a.output, labels=(a.labels[0], a.labels[1]), species_set=a.species_set)
    print(comparison_text(res))
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
    from tomodata.folder_contents import record_contents

    from .applications import write_applications
    from .examples import examples_for

    if a.examples_file is not None and a.eval is not None:
        raise ValueError("tomo apps: give --examples-file or --eval (with STORE and --checkpoint), not both")
    ex = examples_for(a.examples_file, a.store, a.checkpoint, a.eval, n=a.examples, device=a.device)
    if ex is None:
        raise ValueError("tomo apps needs --examples-file, or STORE with --checkpoint and --eval")
    out = Path(a.output)
    for row, ours_full in zip(ex["rows"], ex["ours_full"]):  # ours fused at the x-ray's resolution
        name = row["title"].replace(" ", "_")
        for p in write_applications(ours_full, out, xray=row["xray"], name=name, n_turntable=a.frames):
            print(p)
    if out.is_dir():
        record_contents(out)  # last: the workflow re-runs the job where a file of it is gone
    return 0


def cmd_explorer(a) -> int:
    from .explorer import run_paths, write_explorer

    paths = run_paths(a.run, store=a.store, checkpoint=a.checkpoint, eval_dir=a.eval, out=a.output)
    print(write_explorer(paths, n=a.samples, indices=a.index, max_size=a.max_size, device=a.device, sheet=a.sheet))
    return 0


def _infer_one(a, xray: Path, output: Path, apps: Path | None) -> None:
    from .infer_batch import infer_with_apps

    record, app_paths = infer_with_apps(
        xray,
        a.checkpoint,
        output,
        apps,
        gamma=a.gamma,
        air=a.air,
        fusion=not a.no_fusion,
        beta=a.beta,
        polarity=a.polarity,
        square=a.square,
        previews=not a.no_previews,
        device=a.device,
        max_size=a.max_size,
        pixel_spacing=a.pixel_spacing,
    )
    for p in app_paths:
        print(f"application {p}")
    o = record["output"]
    read = record.get("input") or {}
    inverted_on_read = "monochrome1" in read or "presentation_lut" in read  # DICOM: applied by the reader
    on_read = " (the file's display inversion applied on reading)" if inverted_on_read else ""
    print(
        f"wrote {o['path']}: {tuple(o['shape_zyx'])} (z, y, x), spacing {tuple(o['spacing_zyx'])} "
        f"({o['spacing_unit']}); polarity {'inverted' if record['polarity']['inverted'] else 'kept'}{on_read}; "
        f"record {record['record']}"
    )


def cmd_infer(a) -> int:
    """One radiograph (a file, not a glob): -o is the volume file, as always. Several (or a glob): -o is
    a folder, each radiograph goes to OUT/STEM/STEM.<--format> (applications to APPS/STEM/); every
    input is checked and the network loaded once before any work."""
    from .infer import cached_model
    from .infer_batch import infer_many

    apps = Path(a.apps) if a.apps else None
    if len(a.xray) == 1 and (Path(a.xray[0]).is_file() or not glob.has_magic(a.xray[0])):
        if a.format and not str(a.output).lower().endswith("." + a.format):
            raise ValueError(
                f"--format {a.format} with one radiograph: the suffix of -o ({a.output}) decides its format"
            )
        cached_model(a.checkpoint, a.device)  # a missing or bad checkpoint first, before the film's checks
        _infer_one(a, Path(a.xray[0]), Path(a.output), apps)
        return 0
    n, skipped, run_failed = infer_many(
        a.xray,
        Path(a.output),
        a.format or "nrrd",
        apps,
        load=lambda: cached_model(a.checkpoint, a.device),
        run_one=lambda x, output, apps: _infer_one(a, x, output, apps),
        keep_going=a.keep_going,
    )
    failed = skipped + run_failed
    if failed:
        print(
            f"{len(failed)} of {n + len(skipped)} inputs failed ({len(skipped)} skipped before the run: "
            f"unusable files or patterns that matched none; {len(run_failed)} of the {n} run):\n  "
            + "\n  ".join(failed),
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


def bench_train_cmd(a) -> int:
    from .bench_train import bench_train

    r = bench_train(
        a.preset,
        batch=a.batch_size,
        repeats=a.repeats,
        threads=a.threads,
        device=a.device,
        amp=a.amp,
        cudnn_benchmark=a.cudnn_benchmark,
        compile=a.compile or a.compile_mode is not None,
        compile_mode=a.compile_mode or "default",
        memory_format=a.memory_format,
        profile=a.profile,
    )
    compiled = f", compiled ({r['compile_mode']})" if r["compile"] else ""
    print(
        f"train {r['preset']} network, batch {r['batch']}, {r['device']}, amp {r['amp']}"
        f"{', cudnn benchmark' if r['cudnn_benchmark'] else ''}{compiled}"
        f", {r['memory_format'].upper()}, "
        f"{r['threads']} threads: "
        f"{r['seconds_per_step']:.3f} s "
        f"per step ({r['samples_per_s']:.1f} samples/s; per step CPU {r['user_s_per_step']:.2f} s user, "
        f"{r['system_s_per_step']:.2f} s system, {r['minor_faults_per_step']:.0f} minor page faults; "
        f"median of {a.repeats})"
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
    r = bench_nn(a.store, queries=a.queries, coarse=a.nn_coarse, device=a.device)
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
    "train": ("one training step of a network preset (--preset, --batch-size, --threads)", bench_train_cmd),
    "evaluate": (
        "tomo evaluate's phases per sample and its peak memory (needs --store and --checkpoint)",
        bench_evaluate_cmd,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``tomo`` parser: the dataset's commands, then the model's."""
    p = data_cli.OneLineErrors(
        prog="tomo",
        description="Single-image tomography: dataset, network, evaluation.",
        epilog=__doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tomo {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    q = data_cli.register(sub, benches=BENCHES)
    P.bench_options(q)
    P.add_model_info(sub, cmd_model_info)
    P.add_train(sub, cmd_train)
    P.add_evaluate(sub, cmd_evaluate)
    P.add_cv_summary(sub, cmd_cv_summary)
    P.add_cv_compare(sub, cmd_cv_compare)
    P.add_cv_report(sub, cmd_cv_report)
    P.add_examples(sub, cmd_examples)
    P.add_figures(sub, cmd_figures)
    P.add_apps(sub, cmd_apps)
    P.add_explorer(sub, cmd_explorer)
    P.add_infer(sub, cmd_infer)
    return p


def main(argv: list[str] | None = None) -> int:
    """``tomo``: parse and run (exit status 0, 1 for a failed check, 2 for bad input, 3 for a full disk)."""
    return data_cli.run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
