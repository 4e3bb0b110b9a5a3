"""The options of the dataset's ``tomo`` commands: :func:`register` adds one subparser per command
(``_add_<command>``, in the order ``tomo --help`` lists them), each calling its ``cmd_*`` function;
the store commands' parsers are in :mod:`.store_parsers`, the option types in :mod:`.options`."""

from __future__ import annotations

import argparse

from ..views import DEFAULT_VIEW_SETS, VIEW_SETS
from .benchmarks import cmd_bench
from .options import finite_float, non_negative_int, positive_float, positive_int, render_opts
from .scans import cmd_align, cmd_align_sheet, cmd_cube, cmd_fetch, cmd_manifest_folder
from .store_parsers import add_store_parsers
from .volumes import cmd_build_demo, cmd_demo_movies, cmd_phantom, cmd_render

__all__ = ["register", "positive_int", "non_negative_int", "positive_float", "finite_float"]


def _scan_opts(q, output_help):
    """The scan a command reads (`tomo cube`, `tomo align`; read back by scans.scan_from_args)."""
    q.add_argument(
        "input",
        nargs="?",
        help="the scan (file or folder); or --fetched and --id, or --manifest and --id (the row's local source)",
    )
    q.add_argument("-o", "--output", required=True, help=output_help)
    q.add_argument(
        "--fetched",
        metavar="RECORD",
        help=(
            "take the scan's path from this record of `tomo fetch` (its stdout: id, how, sha256, path), "
            "the line of specimen --id"
        ),
    )
    q.add_argument("--spacing", help="z,y,x voxel spacing in mm (one number = isotropic); default: from the file")
    q.add_argument("--slice-axis", choices=["z", "y", "x"], default="z", help="axis the slices step along")
    q.add_argument(
        "--orientation",
        help=(
            "canonical z,y,x take these axes of the volume as read, '-' reverses one: e.g. z,-y,x; "
            "a value that starts with '-' needs the = form, --orientation=-z,y,x "
            "(docs/pose.md; default z,y,x or the manifest row's)"
        ),
    )
    q.add_argument(
        "--manifest",
        help=(
            "take spacing, slice axis and the ingest settings (window, background, orientation, crop) "
            "not given as options from this manifest's row --id (and the scan itself, where none is given "
            "and the row's source is local)"
        ),
    )
    q.add_argument("--id", help="specimen id (with --manifest / --fetched)")
    q.add_argument(
        "--allow-default-spacing", action="store_true", help="use 1.0 mm (with a warning) when no spacing is known"
    )
    q.add_argument(
        "--record-params",
        metavar="TEXT",
        help=("the workflow's params of this job, kept in the output's record (the workflow compares them)"),
    )


def _demo_split_opts(q, *, val: int) -> None:
    """The demo's splits: how many species are ``val`` and ``test`` (:func:`tomodata.demo.demo_splits`)."""
    q.add_argument(
        "--val",
        "--held-out",
        dest="val",
        type=non_negative_int,
        default=val,
        help="species of split 'val' (model choice, tuning; default %(default)s)",
    )
    q.add_argument(
        "--test",
        type=non_negative_int,
        default=0,
        help="species of split 'test' (the reported result only), the last ones (default %(default)s)",
    )


def _add_phantom(sub) -> None:
    """The ``tomo phantom`` parser."""
    q = sub.add_parser(
        "phantom",
        help="write a procedural skull volume (.npy/.npz)",
        description="Write a procedural skull density volume (float32, z y x, [0, 1]).",
    )
    q.add_argument("out", help="output file, .npy or .npz")
    q.add_argument("--species", type=int, default=0, help="species number (default %(default)s)")
    q.add_argument("--specimen", type=int, default=None, help="specimen seed: small within-species variation")
    q.add_argument("--size", type=positive_int, default=128, help="volume side in voxels (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of the species table (default %(default)s)")
    q.add_argument("--preview", metavar="DIR", help="also write 8 x-ray PNGs and a contact sheet here")
    q.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto", help="renderer for previews")
    q.set_defaults(func=cmd_phantom)


def _add_render(sub) -> None:
    """The ``tomo render`` parser."""
    q = sub.add_parser(
        "render",
        help="render x-rays of a volume",
        description=(
            "Render orthographic Beer–Lambert x-rays of a volume from hemisphere views; writes images.npy "
            "(n, S, S) float32 opacity, rotations.npy (n, 3, 3), render.json and PNG previews into the "
            "folder -o (an earlier render's files there are replaced, its xray_*.png previews removed)."
        ),
    )
    q.add_argument(
        "volume",
        help="densities in [0, 1] (.npy, .npz), or any scan tomo cube reads, made a 128³ cube (1 mm voxels, "
        "with a warning, where the scan gives no spacing: tomo cube --spacing sets it)",
    )
    q.add_argument("-o", "--output", required=True, help="output folder")
    q.add_argument("--views", type=positive_int, default=16, help="number of views (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="view seed (default %(default)s)")
    q.add_argument(
        "--previews", type=non_negative_int, default=16, help="PNG previews to write (default %(default)s, 0 = none)"
    )
    render_opts(q)
    q.set_defaults(func=cmd_render)


def _add_build_demo(sub) -> None:
    """The ``tomo build-demo`` parser."""
    q = sub.add_parser(
        "build-demo",
        help="build a small dataset store of procedural species",
        description=(
            "Make procedural skull species, render their views and write them into a sharded Zarr v3 "
            "dataset store, then validate and finalise it."
        ),
    )
    q.add_argument("-o", "--output", default="results/core-demo", help="output folder (default %(default)s)")
    q.add_argument("--species", type=positive_int, default=6, help="number of species (default %(default)s)")
    _demo_split_opts(q, val=2)
    q.add_argument("--views", type=positive_int, default=24, help="views per species (default %(default)s)")
    q.add_argument("--volume-size", type=positive_int, default=128, help="volume side (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of species and views (default %(default)s)")
    q.add_argument(
        "--view-sets",
        choices=list(VIEW_SETS),
        default=DEFAULT_VIEW_SETS,
        help="one view set for all species, or one each",
    )
    q.add_argument("--overwrite", action="store_true", help="replace an existing store")
    render_opts(q)
    q.set_defaults(func=cmd_build_demo)


def _add_demo_movies(sub) -> None:
    """The ``tomo demo-movies`` parser."""
    q = sub.add_parser(
        "demo-movies",
        help="write procedural species as slice movies + a manifest",
        description=(
            "Write procedural skull species as UTCT-like 8-bit slice movies and a manifest (manifest.tsv) "
            "whose sources are the movies: the embedded demo data."
        ),
    )
    q.add_argument("-o", "--output", default="resources/demo", help="output folder (default %(default)s)")
    q.add_argument("--species", type=positive_int, default=24, help="number of species (default %(default)s)")
    _demo_split_opts(q, val=4)
    q.add_argument("--movie-size", type=positive_int, default=160, help="voxels per side (default %(default)s)")
    q.add_argument(
        "--codec", choices=["mp4v", "mjpg", "ffv1"], default="mp4v", help="movie codec (default %(default)s)"
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the species table (default %(default)s)")
    q.set_defaults(func=cmd_demo_movies)


def _add_manifest_folder(sub) -> None:
    """The ``tomo manifest-folder`` parser."""
    q = sub.add_parser(
        "manifest-folder",
        help="a manifest of every scan in a folder, seeded splits",
        description=(
            "List every file of FOLDER matching --pattern as one specimen (its own species: the unit held "
            "out) in a manifest, with train/val/test splits by a seeded rule: ids sorted, permuted by "
            "numpy default_rng(SEED), the first --test ids test, the next --val val, the rest train "
            "(tomodata.manifest_folder). Sources are relative to the manifest's folder."
        ),
    )
    q.add_argument("folder", help="folder of scans")
    q.add_argument("-o", "--output", required=True, help="manifest TSV to write")
    q.add_argument(
        "--pattern", default="*.nii.gz", help="glob of the scans: files, or folders of slices (default %(default)s)"
    )
    q.add_argument("--kind", default="nifti", help="source_kind of every scan (default %(default)s)")
    q.add_argument("--species", default="{id}", help="species column, {id} = the file's id (default %(default)s)")
    q.add_argument("--licence", required=True, help="terms of use of the files")
    q.add_argument("--val", type=non_negative_int, required=True, help="specimens of split val (model choice, tuning)")
    q.add_argument(
        "--test", type=non_negative_int, required=True, help="specimens of split test (the reported result only)"
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the split permutation (default %(default)s)")
    q.add_argument("--notes", default="", help="notes column of every row")
    q.add_argument(
        "--attribution",
        default="",
        help="attribution column of every row: the credit the licence asks for (creator, title, link; CC BY)",
    )
    q.add_argument(
        "--spacing",
        default="",
        metavar="Z,Y,X",
        help="spacing_mm of every row (mm; needed by movie, image_folder, npy)",
    )
    q.add_argument("--no-checksums", action="store_true", help="leave the sha256 column empty")
    for name, what in (
        ("window", "lo,hi or a preset (hu-bone, hu-head)"),
        ("background", "density at or below which is air"),
        ("orientation", "the volume's axes the canonical z,y,x take, e.g. x,-z,y (leading '-': --orientation=-z,y,x)"),
        ("crop", "none or largest"),
    ):
        q.add_argument(f"--{name}", default="", help=f"{name} column of every row: {what} (docs/manifest.md)")
    q.set_defaults(func=cmd_manifest_folder)


def _add_fetch(sub) -> None:
    """The ``tomo fetch`` parser."""
    q = sub.add_parser(
        "fetch",
        help="download the sources a manifest names",
        description=(
            "Fetch every specimen of a manifest into DEST/<id>/: HTTP(S) with resume, retries and a rate "
            "limit, file:// and local paths, a local mirror; sha256 checked (and with --record, written "
            "into the manifest on first fetch). Exit status 1 if any specimen failed."
        ),
    )
    q.add_argument("manifest", help="manifest .tsv")
    q.add_argument("-d", "--dest", required=True, help="download folder")
    q.add_argument(
        "--mirror", help="local mirror folder tried before the network (MIRROR/<id>/<file> or MIRROR/<file>)"
    )
    q.add_argument("--rate", type=float, default=1.0, help="max requests per second per host (default %(default)s)")
    q.add_argument("--retries", type=non_negative_int, default=3, help="retries per request (default %(default)s)")
    q.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request (default %(default)s)")
    q.add_argument("--only", action="append", metavar="ID", help="fetch only this specimen (repeatable)")
    q.add_argument("--keep-going", action="store_true", help="fetch the others when one fails")
    q.add_argument("--record", action="store_true", help="write first-fetch sha256 values into the manifest")
    q.add_argument(
        "--in-place",
        action="store_true",
        help=("local sources: check and hash them where they are, no copy (the record points at the source)"),
    )
    q.add_argument(
        "--check",
        action="store_true",
        help="fetch nothing: list every row whose local source is missing, unreadable or of another kind (exit 2)",
    )
    q.set_defaults(func=cmd_fetch)


def _add_cube(sub) -> None:
    """The ``tomo cube`` parser."""
    q = sub.add_parser(
        "cube",
        help="read a scan and resample it to the canonical cube",
        description=(
            "Read a scan (slice movie, image folder, TIFF, DICOM, NRRD, NIfTI, npy), reorient it by its slice "
            "axis and resample it with Gaussian filtering to an isotropic SIZE³ density cube inside the unit "
            "ball; writes OUT.npz with 'volume' and 'meta' (shape, spacing, fit, value rule)."
        ),
    )
    _scan_opts(q, "output .npz")
    q.add_argument(
        "--align-record",
        metavar="JSON",
        help=("the record of `tomo align` for this scan (an aligned volume): kept in the cube's record"),
    )
    q.add_argument("--size", type=positive_int, default=128, help="cube side (default %(default)s)")
    q.add_argument(
        "--window",
        help=(
            "lo,hi: density = clip((v - lo)/(hi - lo), 0, 1) (for HU or raw CT numbers), or a preset: "
            "hu-bone (0,2000), hu-head (-1000,2000; background -500 HU unless --background is given)"
        ),
    )
    q.add_argument(
        "--background", type=finite_float, help="densities <= this become 0 (codec noise, scanner background)"
    )
    q.add_argument(
        "--crop",
        choices=["none", "largest"],
        help=("largest: keep the largest connected part of the specimen (drops scanner tables, holders); default none"),
    )
    q.add_argument("--content-key", help="the workflow's identity of the source's content (recorded in the cube)")
    q.set_defaults(func=cmd_cube)


def _add_align(sub) -> None:
    """The ``tomo align`` parser."""
    q = sub.add_parser(
        "align",
        help="rotate a scan into the canonical pose (moments + rigid registration)",
        description=(
            "Read a scan like `tomo cube` does and bring it to the canonical pose (snout +x, dorsal -y, z "
            "left-right): moments of the bone, then (with --reference) the best of 64 candidate rotations "
            "(the 24 axis permutations and rotations about z) and a rigid SimpleITK registration to the "
            "reference (an aligned volume). Writes "
            "OUT.nii.gz (isotropic, the input's dtype and raw values, nothing clipped) and its record "
            "OUT.json (rotation, translation, residual NCC/RMS before and after, the values used). CT in "
            "Hounsfield units needs --window (docs/pose.md). tomodata.align."
        ),
    )
    _scan_opts(q, "output .nii.gz (record beside it as .json)")
    q.add_argument(
        "--reference", metavar="ALIGNED.nii.gz", help="an aligned volume to register to (none: moments alone)"
    )
    q.add_argument(
        "--replay",
        metavar="RECORD.json",
        help=("apply the transform of an alignment record (or a store's alignment summary) instead of registering"),
    )
    q.add_argument(
        "--window",
        help=(
            "as for tomo cube: find bone and register on the densities of this window (lo,hi or hu-bone, "
            "hu-head); needed for CT in Hounsfield units; the aligned file keeps the raw values"
        ),
    )
    q.add_argument(
        "--background",
        type=finite_float,
        help="as for tomo cube: densities <= this become 0 (default: the preset's; hu-head -500 HU)",
    )
    q.add_argument("--threads", type=positive_int, default=1, help="SimpleITK threads (default %(default)s)")
    q.set_defaults(func=cmd_align)


def _add_align_sheet(sub) -> None:
    """The ``tomo align-sheet`` parser."""
    q = sub.add_parser(
        "align-sheet",
        help="a contact sheet of aligned volumes or cubes (three projections each)",
        description="Projections of every aligned volume (or cube .npz: the pose check of docs/pose.md) along z "
        "(side: dorsal up, snout right), y (top) and x (front) in one PNG. Aligned volumes are drawn at one scale "
        "in mm (sizes compare); cubes by voxel, not mm (every cube fills its ball, whatever its mm per voxel).",
    )
    q.add_argument("aligned", nargs="+", help="aligned volumes (.nii.gz written by tomo align) or cubes (.npz)")
    q.add_argument("-o", "--output", required=True, help="output PNG")
    q.set_defaults(func=cmd_align_sheet)


def _add_bench(sub, benches: dict) -> argparse.ArgumentParser:
    """The ``tomo bench`` parser (``benches``: the extra benchmarks, see :func:`register`)."""
    q = sub.add_parser(
        "bench",
        help="benchmarks (" + ", ".join(["render", "dataset", "cube", "rules", *benches]) + ")",
        description=(
            "Time the renderer (ms per view of render_xrays and view_volumes per available backend; on "
            "CUDA also the kernel alone per launch layout), the whole dataset's x-rays rendered alone and "
            "rendered into a store, the resampling of a uint8 stack to the cube, a workflow run's rules, "
            "or what the model adds."
        ),
    )
    q.add_argument(
        "what",
        choices=["render", "dataset", "cube", "rules", *benches],
        help="what to benchmark: the renderer, dataset: all species' x-rays at the paper's settings "
        "(--species, --workers, --render-batch, --max-seconds, --out), to_cube resampling, a workflow "
        "run's per-rule time and "
        "peak memory from its Snakemake benchmark files (rules: --workdir, --run)"
        + "".join(f", {name}: {text}" for name, (text, _) in benches.items()),
    )
    q.add_argument("--workdir", default=".", help="the workflow's working folder of the rules report (default .)")
    q.add_argument("--run", help="the run name of the rules report (config `run`)")
    q.add_argument(
        "--cube-shape",
        type=positive_int,
        nargs=3,
        default=[1000, 500, 500],
        metavar=("Z", "Y", "X"),
        help="input stack of the cube benchmark (default %(default)s)",
    )
    q.add_argument("--volume", choices=["skull", "dense"], default="skull", help="benchmark volume")
    q.add_argument("--views", type=positive_int, default=32, help="views per call (default %(default)s)")
    q.add_argument("--volume-size", type=positive_int, default=128, help="volume side (default %(default)s)")
    q.add_argument("--repeats", type=positive_int, default=3, help="timed repeats (default %(default)s)")
    q.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="numba threads; torch's for bench train (default: all cores)",
    )
    q.add_argument("--size", type=positive_int, default=256, help="image side (default %(default)s)")
    q.add_argument("--steps", type=positive_int, default=128, help="samples per ray (default %(default)s)")
    q.add_argument(
        "--backend", action="append", choices=["cpu", "cuda"], help="backend(s) to time (default: all available)"
    )
    q.add_argument(
        "--species", type=positive_int, default=175, help="species of the dataset benchmark (default %(default)s)"
    )
    q.add_argument(
        "--workers",
        type=positive_int,
        default=8,
        help="render-species jobs at a time in the dataset benchmark (default %(default)s)",
    )
    q.add_argument(
        "--render-batch",
        type=positive_int,
        default=64,
        help="views per render call of those jobs (default %(default)s)",
    )
    q.add_argument(
        "--max-seconds",
        type=positive_float,
        default=600.0,
        help="time limit of each dataset timing: species not begun by then are left out (default %(default)s)",
    )
    q.add_argument(
        "--out", default="bench-dataset", help="scratch folder of the dataset benchmark (default %(default)s)"
    )
    q.set_defaults(func=cmd_bench, bench_handlers=benches)
    return q


def register(sub, *, benches: dict | None = None) -> argparse.ArgumentParser:
    """Add the dataset's commands to the ``tomo`` subparsers ``sub``. ``benches``: more ``tomo bench
    WHAT`` benchmarks, name → (help, function(args) → exit status). Returns the ``bench`` parser, for
    the options of those benchmarks."""
    benches = dict(benches or {})
    _add_phantom(sub)
    _add_render(sub)
    _add_build_demo(sub)
    _add_demo_movies(sub)
    _add_manifest_folder(sub)
    _add_fetch(sub)
    _add_cube(sub)
    _add_align(sub)
    _add_align_sheet(sub)
    add_store_parsers(sub)
    return _add_bench(sub, benches)
