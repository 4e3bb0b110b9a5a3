"""The argparse options of ``tomo``'s model commands (:mod:`model.cli` builds the parser and runs
them): one function per command, each adding that command's subparser with its help text."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from tomodata.cli import non_negative_int, positive_float, positive_int

from .names import CV_SPECIES_SETS as SPECIES_SETS
from .names import NETWORK_PRESETS as PRESETS

__all__ = [
    "bench_options",
    "network_options",
    "add_model_info",
    "add_train",
    "add_evaluate",
    "add_cv_summary",
    "add_cv_compare",
    "add_cv_report",
    "add_examples",
    "add_figures",
    "add_apps",
    "add_explorer",
    "add_infer",
]


def bench_options(q: argparse.ArgumentParser) -> None:
    """The model benchmarks' options of ``tomo bench`` (infer, nn, evaluate)."""
    q.add_argument("--store", help="dataset store of the nn and evaluate benchmarks")
    q.add_argument("--checkpoint", help="checkpoint of the evaluate benchmark")
    q.add_argument(
        "--samples",
        type=positive_int,
        default=100,
        help="held-out samples of the evaluate benchmark (default %(default)s)",
    )
    q.add_argument(
        "--device", default="cpu", help="torch device of the evaluate, nn and train benchmarks (default %(default)s)"
    )
    q.add_argument("--queries", type=positive_int, default=256, help="held-out queries of the nn benchmark")
    q.add_argument("--nn-coarse", type=positive_int, default=16, help="cells per axis of the nn benchmark's bound")
    q.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="paper",
        help="network of the infer and train benchmarks",
    )
    q.add_argument("--batch-size", type=positive_int, default=16, help="batch of the train benchmark (default 16)")
    q.add_argument(
        "--amp", choices=["none", "bf16"], default="none", help="autocast of the train benchmark (default %(default)s)"
    )
    q.add_argument(
        "--cudnn-benchmark", action="store_true", help="train benchmark: let cuDNN pick its fastest convolutions"
    )
    q.add_argument("--compile", action="store_true", help="train benchmark: torch.compile the network")
    q.add_argument(
        "--compile-mode",
        metavar="MODE",
        help="train benchmark: torch.compile's mode, implies --compile (model.bench_train.COMPILE_MODES: "
        "default, reduce-overhead for CUDA graphs, max-autotune-no-cudagraphs)",
    )
    q.add_argument(
        "--memory-format",
        choices=("nhwc", "nchw"),
        default="nhwc",
        help="train benchmark: the order of the network's weights and activations (default %(default)s, "
        "every network's; nchw for comparison)",
    )
    q.add_argument("--profile", metavar="FILE", help="train benchmark: write torch.profiler's operator table to FILE")
    q.add_argument("--fuse-to", type=positive_int, default=512, help="fusion resolution of the infer benchmark")


def network_options(q: argparse.ArgumentParser) -> None:
    """The network size: a preset and overrides of its dimensions (``tomo model-info``, ``tomo train``)."""
    q.add_argument("--preset", choices=list(PRESETS), default="paper", help="network size (default %(default)s)")
    for name, what in (
        ("input-size", "input x-ray side"),
        ("out-depth", "output depth slices"),
        ("out-size", "output side"),
        ("width", "trunk channels"),
        ("stem-channels", "stem channels"),
        ("hourglass-levels", "hourglass levels"),
    ):
        q.add_argument(f"--{name}", type=positive_int, help=f"override the preset's {what}")


def add_model_info(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo model-info``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "model-info",
        help="parameters and FLOPs of the network",
        description=(
            "Print the network's layer sizes, parameter count and FLOPs per sample for a preset (and overrides)."
        ),
    )
    network_options(q)
    q.set_defaults(func=func)


def add_train(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo train``: its options; ``func`` runs it."""
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
    network_options(q)
    q.add_argument(
        "--steps",
        type=positive_int,
        default=150_000,
        help="global steps, the learning-rate schedule's length: OUT/last.pt resumes only with its own (default "
        "%(default)s)",
    )
    q.add_argument("--batch-size", type=positive_int, default=16, help="global batch (default %(default)s)")
    q.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default %(default)s)")
    q.add_argument("--warmup", type=non_negative_int, default=500, help="linear warm-up steps (default %(default)s)")
    q.add_argument("--val-every", type=positive_int, default=1000, help="validate every N steps")
    q.add_argument("--val-samples", type=positive_int, default=512, help="held-out samples per validation")
    q.add_argument("--ckpt-every", type=positive_int, default=1000, help="checkpoint every N steps")
    q.add_argument("--keep-checkpoints", action="store_true", help="also keep step_XXXXXXX.pt files")
    q.add_argument("--log-every", type=positive_int, default=10, help="log every N steps")
    q.add_argument("--seed", type=int, default=0, help="seed of initialisation and sample order")
    q.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader worker processes (forkserver/spawn)")
    q.add_argument(
        "--device",
        default="auto",
        help="torch device: auto (CUDA where present, default), cpu, cuda or cuda:N (cuda with torchrun: each "
        "process its local rank's GPU)",
    )
    q.add_argument(
        "--amp",
        choices=["auto", "bf16", "none"],
        default="auto",
        help="autocast (auto: bf16 on CUDA, none on the CPU; bf16 also speeds up a CPU with AMX-BF16, "
        "docs/benchmarks.md)",
    )
    q.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network for training (GPU: 1.3x the samples/s of the paper network, "
        "docs/benchmarks.md; compiles for about a minute first)",
    )
    q.add_argument(
        "--memory-format",
        choices=("nhwc", "nchw"),
        default="nhwc",
        help="the order of the network's weights and activations in memory: nhwc (the default, "
        "torch.channels_last, faster on 2 CPU cores: docs/benchmarks.md) or nchw, for comparison; "
        "the same values, and a checkpoint resumes in either",
    )
    q.add_argument("--max-steps", type=positive_int, help="stop after this step (the schedule still uses --steps)")
    q.add_argument("--no-resume", action="store_true", help="start afresh even if OUT/last.pt exists")
    q.add_argument(
        "--restart-if-changed",
        action="store_true",
        help="resume only from an OUT/last.pt of exactly these settings (--steps included) and data, else start "
        "afresh instead of refusing (the workflow's mode: a re-run job continues an interrupted one)",
    )
    q.set_defaults(func=func)


def add_evaluate(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo evaluate``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on the held-out species",
        description=(
            "Evaluate ours (fused and raw) against the NN, Oracle and mean baselines on one split of the store's "
            "held-out species (--split; the train split is the baselines' database): volume L2 (RMSE) and DSSIM of "
            "iso-surface renders (dssim: 7x7 uniform SSIM window; dssim_gauss: 11x11 Gaussian, Wang et al.); "
            "species-level means with t-intervals, paired t (Holm-adjusted over ours' comparisons in l2 and both "
            "DSSIMs) and Wilcoxon "
            "tests on species means, and the paper's per-sample protocol (mirrored pairs averaged); view classes, "
            "slice counts. "
            "Writes metrics.csv, summary.csv, tests.csv, species.csv, view_classes.csv, slice_counts.csv, "
            "matches.csv, summary.json."
        ),
    )
    q.add_argument("store", help="the dataset store (.zarr)")
    q.add_argument("--checkpoint", required=True, help="the trained checkpoint (the run's best.pt: chosen on val)")
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
    q.set_defaults(func=func)


def add_examples(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo examples``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "examples",
        help="the qualitative examples: predictions on chosen held-out samples (npz)",
        description=(
            "Run the network on held-out samples of an evaluation (the first of each species, then further ones) "
            "and save the inputs, ours, ground truth, NN, Oracle and mean volumes to one .npz, which "
            "tomo figures and tomo apps read with --examples-file (model/examples.py). Ours is fused as the "
            "evaluation fused it (its --beta and --fusion-at, recorded in the file); the store and checkpoint "
            "must be those the evaluation was made from."
        ),
    )
    q.add_argument("store", help="the dataset store (.zarr)")
    q.add_argument("--checkpoint", required=True, help="the checkpoint")
    q.add_argument(
        "--eval",
        required=True,
        help="evaluation folder of this store and checkpoint (its matches.csv picks the samples, its summary.json "
        "gives the fusion)",
    )
    q.add_argument("-o", "--output", required=True, help="the examples file (.npz)")
    q.add_argument("--examples", type=positive_int, default=4, help="samples (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=func)


def add_figures(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo figures``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "figures",
        help="draw the paper's figures from an evaluation",
        description=(
            "Figures 5/17 and 7 (qualitative and slice counts as renders, need --store and --checkpoint), "
            "6 (methods), 8a (slice counts), 8b (view classes) and 9 (fusion) as PNGs. The examples (computed, or "
            "--examples-file) must come from this evaluation's store and checkpoint, fused as it fused."
        ),
    )
    q.add_argument("--eval", required=True, help="evaluation folder (from tomo evaluate)")
    q.add_argument("-o", "--output", required=True, help="figure folder")
    q.add_argument("--store", help="the dataset store (for the qualitative figure)")
    q.add_argument("--checkpoint", help="the checkpoint (for the qualitative figure)")
    q.add_argument("--examples-file", help="instead of --store/--checkpoint: the examples of tomo examples (.npz)")
    q.add_argument("--examples", type=positive_int, default=4, help="qualitative rows (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=func)


def add_cv_compare(sub, func: Callable[[argparse.Namespace], int]) -> None:
    """``tomo cv-compare``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "cv-compare",
        help="compare two cross-validations over the same species, species by species",
        description=(
            "Pair two tomo cv-summary outputs by species (two recipes or two datasets of the same species): "
            "each method's change with its t-interval and paired t, and the change of the first method's margin "
            "over each other, Holm-adjusted; methods.csv and margins.csv in -o (model.cv_compare)."
        ),
    )
    q.add_argument("a", help="the first tomo cv-summary folder (species.csv)")
    q.add_argument("b", help="the second, compared with the first (differences are b − a)")
    q.add_argument("-o", "--output", required=True, help="the folder of the tables")
    q.add_argument("--labels", nargs=2, default=["A", "B"], metavar=("LA", "LB"), help="names of a and b in the output")
    q.add_argument(
        "--species-set",
        choices=SPECIES_SETS,
        default="all",
        help="compare on every species (default) or on one of summary.json's species sets, which both runs must "
        "name alike: base_train_only (the store's own train species), without_base_val",
    )
    q.set_defaults(func=func)


def add_cv_report(sub, func: Callable[[argparse.Namespace], int]) -> None:
    """``tomo cv-report``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "cv-report",
        help="a cross-validation's result as a page of tables (markdown)",
        description=(
            "The tables of a tomo cv-summary folder as one markdown page: per species set (every species, the "
            "store's own train species only, without its val species) each method's mean with its t-interval "
            "over the species, ours against each method (species where ours is lower, paired t and Wilcoxon "
            "with Holm), the fold level's t and corrected t, and the procedure (model.cv_report). Figures are "
            "quoted from summary.json and species.csv (the counts are worked out from species.csv); tomo "
            "cv-summary writes the same page."
        ),
    )
    q.add_argument("cv", help="the tomo cv-summary folder (summary.json, species.csv)")
    q.add_argument("-o", "--output", help="the page (default: CV/report.md)")
    q.set_defaults(func=func)


def add_cv_summary(sub, func: Callable[[argparse.Namespace], int]) -> None:
    """``tomo cv-summary``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "cv-summary",
        help="pool the evaluations of every cross-validation fold into one result",
        description=(
            "Check that the evaluations (tomo evaluate on each fold view of tomo cv-view) are the K folds of one "
            "store, each species tested once, and pool them: summary.csv, tests.csv (species, fold and sample "
            "levels), species.csv, folds.csv, summary.json and report.md in -o (model.cross_validation)."
        ),
    )
    q.add_argument("evals", nargs="+", help="the folds' evaluation folders (each with summary.json, metrics.csv)")
    q.add_argument("-o", "--output", required=True, help="the folder of the pooled tables")
    q.set_defaults(func=func)


def add_apps(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo apps``: its options; ``func`` runs it."""
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
    q.add_argument("--eval", help="evaluation folder of STORE and --checkpoint (picks the samples, gives the fusion)")
    q.add_argument("--examples-file", help="instead of STORE/--checkpoint/--eval: the examples of tomo examples")
    q.add_argument("-o", "--output", required=True, help="output folder")
    q.add_argument("--examples", type=positive_int, default=2, help="samples (default %(default)s)")
    q.add_argument("--frames", type=positive_int, default=36, help="turntable frames (default %(default)s)")
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=func)


def add_explorer(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo explorer``: its options; ``func`` runs it."""
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
    q.set_defaults(func=func)


def pixel_spacing(text: str) -> list[float]:
    """``--pixel-spacing``: "0.1" or "0.1,0.12" (row, column mm), checked by the rule of
    :func:`model.infer.infer_file` (positive, finite; one value for both)."""
    from .infer import _check_spacing  # noqa: PLC0415 - start-up: tomo builds every parser, runs one command

    parts = text.split(",")
    try:
        return _check_spacing(parts[0] if len(parts) == 1 else parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MM or ROW,COL in mm (positive), got {text!r}") from None


def add_infer(sub, func: Callable[[argparse.Namespace], int]) -> None:  # argparse options: a flat table
    """``tomo infer``: its options; ``func`` runs it."""
    q = sub.add_parser(
        "infer",
        help="a 3D volume from each real x-ray",
        description=(
            "Reconstruct a view volume from a radiograph (PNG/TIFF/JPEG 8/16-bit, grey/RGB/RGBA, DICOM): polarity "
            "fixed (bone dense), optional gamma undo, made square (around the anatomy in the exposed field by "
            "default, or cropped or padded), the network, fusion at the "
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
        default=None,
        help="volume format with several radiographs (default nrrd; with one, -o's suffix decides)",
    )
    q.add_argument(
        "--keep-going",
        action="store_true",
        help=("with several radiographs: skip unusable files and go on after a failure; exit 1 with the list"),
    )
    q.add_argument("--gamma", type=float, help="undo a display curve: value = value ** GAMMA (2.2 undoes v**(1/2.2))")
    q.add_argument(
        "--air",
        choices=["keep", "subtract"],
        default="keep",
        help="subtract the air's grey level (a display offset) so that air is black as in training (default keep)",
    )
    q.add_argument("--no-fusion", action="store_true", help="the network's volume upsampled, without fusion")
    q.add_argument("--beta", type=float, default=2.0, help="fusion sharpness β (default %(default)s)")
    q.add_argument("--polarity", choices=["auto", "keep", "invert"], default="auto", help="bone bright (default auto)")
    q.add_argument(
        "--square",
        choices=["field", "crop", "pad"],
        default="field",
        help=(
            "make the image square: field = around the anatomy inside the exposed field "
            "(shutters removed, aspect kept; scaled as the checkpoint's training x-rays are), "
            "crop = centre crop to the short side, "
            "pad = pad to the long side (default %(default)s)"
        ),
    )
    q.add_argument("--max-size", type=positive_int, help="cap the output's lateral resolution")
    q.add_argument(
        "--pixel-spacing",
        type=pixel_spacing,
        metavar="MM[,MM]",
        help="the film's pixel spacing in mm (one value, or row,column), instead of the file's: a PNG or TIFF "
        "has none (the volume is then in pixels), a DICOM's ImagerPixelSpacing is the detector's",
    )
    q.add_argument("--no-previews", action="store_true", help="skip the preview PNGs")
    q.add_argument(
        "--apps",
        metavar="DIR",
        help="also write the applications (novel views, turntable, cut-away, "
        "stereo, colour) of the volume, at up to 128² laterally, into DIR, named like OUT",
    )
    q.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    q.set_defaults(func=func)
