# Shared settings, specimen ids and helper functions of the workflow (no rules here, so that the
# rule files stay declarative). Everything is computed at parse time from the validated config.
#
# Paths (RUN = config["run"]):
#   resources/RUN/   decoded and downloaded inputs: the demo's movies + manifest, fetched sources
#                    (fetched/<id>/...) with their fetch records (fetched/<id>.tsv), cubes/<id>.npz
#   results/RUN/     dataset.zarr (the store), its markers dataset.settings.json,
#                    dataset.created.json, species/<id>.done.json, dataset.final.json;
#                    previews/<id>_*.png; report.html (snakemake --report)
#   logs/RUN/<rule>/, benchmarks/RUN/<rule>/    one file per job
#
# Rerun policy (docs/workflow.md, "Incremental runs"). Snakemake re-runs a job when an input is
# newer than its outputs, when the set of its input files, its shell command or one of its `params`
# changed. The params hold exactly what determines a job's output: the manifest row's fields for
# that specimen, the cube and dataset settings. Options that do not change an output (download
# rate, retries, renderer backend, batch size) are passed as `Untracked` values, which Snakemake
# does not record, so changing them re-runs nothing. The manifest is an `ancient()` input: editing
# one row re-runs only the jobs whose params changed, i.e. that specimen's chain.

import os
import shlex
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml
from snakemake.exceptions import WorkflowError
from tomodata.demo import MOVIE_CODECS, demo_name, demo_splits
from tomodata.manifest import load_manifest, manifest_schema, split_sources

RUN = config["run"]
RESOURCES = f"resources/{RUN}"
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
BENCHMARKS = f"benchmarks/{RUN}"
STORE = f"{RESULTS}/dataset.zarr"

DATA = config["data"]
DATASET = config["dataset"]
RENDER = config["render"]
DEMO = DATA["source"] == "demo"
IN_PLACE = bool(DATA["fetch"]["in_place"]) and not DEMO

# conda environments (paths relative to the rule files in workflow/rules/); the post-deploy
# scripts beside them install this project into the environment (docs/workflow.md)
ENV_TOMODATA = "../../envs/tomodata.yaml"
ENV_RENDER = "../../envs/tomodata-gpu.yaml" if RENDER["backend"] == "cuda" else ENV_TOMODATA
GPU_RENDER = 1 if RENDER["backend"] == "cuda" else 0

# the post-deploy scripts of the conda environments find the project through this variable
os.environ.setdefault("TOMO_PROJECT_DIR", str(Path(workflow.basedir).resolve()))

# specimen ids as the manifest schema allows them; they name folders, files and store species
ID_PATTERN = manifest_schema()["properties"]["id"]["pattern"].lstrip("^").rstrip("$")


wildcard_constraints:
    id=ID_PATTERN,


# ------------------------------------------------------------------------------ specimens
if DEMO:
    # The demo's manifest is made by a job (demo_movies), so it cannot be read at parse time; its
    # ids and splits are fixed by the config through tomodata.demo (demo_name, demo_splits: the
    # last `test` species are the test split, the `val` before them the val split).
    _d = DATA["demo"]
    try:
        _splits = demo_splits(_d["species"], val=_d["val"], test=_d["test"])
    except ValueError as e:
        raise WorkflowError(f"data.demo: {e}") from None
    MANIFEST = f"{RESOURCES}/manifest.tsv"
    DEMO_SUFFIX = MOVIE_CODECS[DATA["demo"]["codec"]][1]
    IDS = [demo_name(k) for k in range(_d["species"])]
    SPLITS = dict(zip(IDS, _splits))
    ROWS = {}
else:
    MANIFEST = DATA["manifest"]
    if not MANIFEST:
        raise WorkflowError("data.source is 'manifest' but data.manifest (the manifest TSV) is not set")
    if not Path(MANIFEST).is_file():
        raise WorkflowError(f"data.manifest: {MANIFEST} does not exist (relative to {Path.cwd()})")
    TABLE = load_manifest(MANIFEST)  # validated: a broken manifest stops here, every error listed
    IDS = list(TABLE["id"])
    ROWS = {row["id"]: row for row in TABLE.to_dict(orient="records")}
    SPLITS = {sid: row["split"] for sid, row in ROWS.items()}


# ------------------------------------------------------------------------------ targets
_TARGETS = []


def add_targets(*paths):
    """Add final outputs to `rule all` (rule files call this at parse time, in any order)."""
    _TARGETS.extend(str(p) for p in paths)


def all_targets(wildcards):
    return list(_TARGETS)


# ------------------------------------------------------------------------------ parameters
class Untracked:
    """A parameter that reaches the shell command but is not recorded by Snakemake.

    Snakemake records a job's params only when they are plain Python values (str, numbers, lists,
    dicts, ...), so an instance of this class never makes a job re-run when it changes. Use it for
    options that do not change a job's output.
    """

    def __init__(self, text):
        self.text = str(text)

    def __str__(self):
        return self.text

    def __format__(self, spec):
        return format(self.text, spec)

    def __repr__(self):
        return f"Untracked({self.text!r})"


def _opts(pairs):
    """'--key value' for every pair whose value is not None; True gives a bare flag."""
    out = []
    for key, value in pairs:
        if value is None or value is False:
            continue
        out.append(key if value is True else f"{key} {shlex.quote(str(value))}")
    return " ".join(out)


def res(rule_name, key):
    """threads, mem_mb or runtime (minutes) of a rule: config resources.<rule>, else .default."""
    spec = dict(config["resources"]["default"])
    spec.update(config["resources"].get(rule_name) or {})
    return spec[key]


def split_of(wildcards):
    return SPLITS[wildcards.id]


def demo_params():
    """What the demo movies depend on (the species count and split only add or relabel species)."""
    d = DATA["demo"]
    return {"movie_size": d["movie_size"], "codec": d["codec"], "seed": d["seed"]}


def demo_movie(wildcards):
    return ancient(f"{RESOURCES}/movies/{wildcards.id}{DEMO_SUFFIX}") if DEMO else []


def fetch_row(wildcards):
    """Tracked: what is fetched for this specimen."""
    if DEMO:
        return demo_params()
    row = ROWS[wildcards.id]
    return {"source": row["source"], "source_kind": row["source_kind"]}


def fetch_options():
    f = DATA["fetch"]
    return Untracked(_opts([("--rate", f["rate"]), ("--retries", f["retries"]),
                            ("--timeout", f["timeout"]), ("--mirror", f["mirror"])]))


def _local_source(sid):
    """The first local alternative (path or file:// URL) of a specimen's source, as a path."""
    base = Path(TABLE.attrs["base_dir"])
    for alt in split_sources(ROWS[sid]["source"]):
        url = urlparse(alt)
        if url.scheme == "file":
            path = Path(unquote(url.path))
        elif "://" in alt:
            continue
        else:
            path = Path(alt)
        return str(path if path.is_absolute() else base / path)
    raise WorkflowError(f"data.fetch.in_place is set but specimen {sid!r} has no local source "
                        f"(a path or file:// URL): {ROWS[sid]['source']!r}")


def check_local_sources():
    """With data.fetch.in_place every row's local source must exist: stop at parse time, one line,
    naming the missing folder (every row of an absent folder at once) or the missing files."""
    missing = [(sid, Path(_local_source(sid))) for sid in IDS]
    missing = [(sid, p) for sid, p in missing if not p.exists()]
    if not missing:
        return
    folders = sorted({str(p.parent) for _, p in missing if not p.parent.exists()})
    if folders:
        what = (f"the folder {', '.join(folders)} (resolved: {Path(folders[0]).resolve()}) does not exist "
                f"(first row: {missing[0][0]}, {missing[0][1]})")
    else:
        what = "these sources do not exist: " + ", ".join(f"{sid} ({p})" for sid, p in missing[:10])
        what += f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    raise WorkflowError(f"data.manifest {MANIFEST}: {len(missing)} of {len(IDS)} rows cannot be read in place: "
                        f"{what}; put the data there or fix the manifest's source column")


def cube_scan(wildcards):
    """The cube's input: the fetch record, or with data.fetch.in_place the local source itself."""
    if IN_PLACE:
        return _local_source(wildcards.id)
    return f"{RESOURCES}/fetched/{wildcards.id}.tsv"


def cube_scan_arg(wildcards, input):
    if IN_PLACE:
        return shlex.quote(str(input.scan))
    return f"--fetched {shlex.quote(str(input.scan))}"


# ------------------------------------------------------------------------------ alignment (rule align)
# data.align.enabled: every specimen is brought to the canonical pose (snout +x, dorsal -y, z
# left-right) before its cube: the reference specimen by moments alone, every other one by moments
# and then rigid registration to the aligned reference. Outputs resources/RUN/aligned/ID.nii.gz and
# its record ID.json; the cube then reads the aligned file (canonical z, spacing from its header).
ALIGN = bool(DATA["align"]["enabled"])
ALIGNED = f"{RESOURCES}/aligned"


def _align_reference():
    ref = DATA["align"]["reference"]
    if ref is None:
        train = [sid for sid in IDS if SPLITS[sid] == "train"]
        if not train:
            raise WorkflowError("data.align.reference is not set and there is no train specimen to take")
        return train[0]
    if ref not in IDS:
        raise WorkflowError(f"data.align.reference {ref!r} is not a specimen id of {MANIFEST}")
    return ref


ALIGN_REFERENCE = _align_reference() if ALIGN else None


def align_reference_input(wildcards):
    """The aligned reference, for every specimen but the reference itself."""
    return [] if wildcards.id == ALIGN_REFERENCE else f"{ALIGNED}/{ALIGN_REFERENCE}.nii.gz"


def align_reference_arg(wildcards, input):
    return f"--reference {shlex.quote(str(input.reference))}" if input.reference else ""


def cube_input(wildcards):
    """The cube's input: the aligned volume (and its record), or the scan as fetched / in place."""
    if ALIGN:
        return {"scan": f"{ALIGNED}/{wildcards.id}.nii.gz", "record": f"{ALIGNED}/{wildcards.id}.json"}
    return {"scan": cube_scan(wildcards)}


def cube_source_arg(wildcards, input):
    """What `tomo cube` reads: the aligned file as it is (canonical axes, spacing from its header,
    its alignment record kept in the cube's record), else the scan with its manifest row."""
    if ALIGN:
        return f"{shlex.quote(str(input.scan))} --align-record {shlex.quote(str(input.record))}"
    return f"{cube_scan_arg(wildcards, input)} --manifest {shlex.quote(str(MANIFEST))}"


def cube_row(wildcards):
    """Tracked: the manifest fields that the cube of this specimen depends on."""
    if DEMO:
        return demo_params()
    row = ROWS[wildcards.id]
    out = {"spacing_mm": row["spacing_mm"], "slice_axis": row["slice_axis"]}
    if ALIGN:
        out["align_reference"] = ALIGN_REFERENCE
    return out


def cube_options():
    c = DATA["cube"]
    window = None if c["window"] is None else ",".join(str(v) for v in c["window"])
    return _opts([("--size", DATASET["volume_size"]), ("--background", c["background"]),
                  ("--window", window), ("--allow-default-spacing", c["allow_default_spacing"])])


def dataset_options():
    """Tracked: the store's settings (every species' data depends on them)."""
    d = DATASET
    return _opts([("--views", d["n_views"]), ("--seed", d["view_seed"]), ("--size", d["image_size"]),
                  ("--steps", d["steps"]), ("--chi", d["chi"]), ("--volume-size", d["volume_size"]),
                  ("--encoding", d["encoding"])])


def species_table():
    """Tracked: the manifest fields the store's species table takes (besides the cubes' records)."""
    if DEMO:
        return {sid: SPLITS[sid] for sid in IDS}
    keys = ("species", "split", "source", "source_kind", "sha256", "licence")
    return {sid: {k: ROWS[sid][k] for k in keys} for sid in IDS}


def config_file():
    """Untracked: the config file recorded in the store's provenance (the last --configfile)."""
    files = list(workflow.overwrite_configfiles or []) or ["config.yaml"]
    return Untracked(shlex.quote(str(files[-1])))


def render_options():
    return Untracked(_opts([("--backend", RENDER["backend"]), ("--batch", RENDER["batch"])]))


# ------------------------------------------------------------------------------ model (model.smk)
MODEL = config["model"]
TRAIN = MODEL["train"]
EVAL = MODEL["evaluate"]
APPS = MODEL["apps"]
GPU_TRAIN = 1 if str(TRAIN["device"]).startswith("cuda") else 0
ENV_MODEL = "../../envs/model.yaml"
FIGURES = ["fig6_methods", "fig7_slice_views", "fig8a_slice_counts", "fig8b_view_classes", "fig9_fusion",
           "fig17_qualitative"]


def train_options():
    return _opts([
        ("--preset", MODEL["preset"]),
        ("--steps", TRAIN["steps"]),
        ("--batch-size", TRAIN["batch_size"]),
        ("--lr", TRAIN["lr"]),
        ("--warmup", TRAIN["warmup"]),
        ("--val-every", TRAIN["val_every"]),
        ("--val-samples", TRAIN["val_samples"]),
        ("--ckpt-every", TRAIN["ckpt_every"]),
        ("--seed", TRAIN["seed"]),
    ])


# ------------------------------------------------------------------------------ real radiographs
# config model.real_xrays: NAME -> a radiograph file, or {path, gamma, polarity, square, max_size};
# one `tomo infer --apps` job each (rule real_xray), into results/RUN/real/NAME/.
# names as the config schema allows them (they name folders and files)
with open(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml") as _fh:
    REAL_NAME_PATTERN = yaml.safe_load(_fh)["properties"]["model"]["properties"]["real_xrays"][
        "propertyNames"]["pattern"].lstrip("^").rstrip("$")
REAL_PREVIEWS = ["xray", "coronal", "axial", "sagittal", "mip_depth", "mip_side"]  # model.infer.PREVIEWS


def _real_xrays():
    out = {}
    if not MODEL.get("enabled", True):
        return out  # no model, no real x-rays (their files are not looked at)
    for name, spec in (MODEL.get("real_xrays") or {}).items():
        spec = {"path": spec} if isinstance(spec, str) else dict(spec)
        if not Path(spec["path"]).is_file():
            raise WorkflowError(f"model.real_xrays.{name}: {spec['path']} is not a file (relative to {Path.cwd()})")
        out[name] = spec
    return out


REAL_XRAYS = _real_xrays()


def real_xray_path(wildcards):
    return REAL_XRAYS[wildcards.name]["path"]


def real_xray_options(wildcards):
    """What determines a real x-ray's volume besides the file and the checkpoint (tracked)."""
    spec = REAL_XRAYS[wildcards.name]
    return _opts([("--gamma", spec.get("gamma")), ("--polarity", spec.get("polarity", "auto")),
                  ("--square", spec.get("square", "crop")), ("--max-size", spec.get("max_size"))])


def check_splits():
    """The model part needs a train split, a val split (model choice) and the evaluated split: stop at
    parse time, naming the empty split, before anything is computed."""
    counts = {sp: sum(1 for sid in IDS if SPLITS[sid] == sp) for sp in ("train", "val", "test")}
    needed = {"train": "training", "val": "model choice (best.pt)",
              MODEL["evaluate"]["split"]: "the evaluation (model.evaluate.split)"}
    empty = [f"{sp!r} ({why})" for sp, why in needed.items() if counts[sp] == 0]
    if empty:
        where = "data.demo" if DEMO else f"the split column of {MANIFEST}"
        raise WorkflowError(f"split {', '.join(empty)} has no species ({counts['train']} train, {counts['val']} "
                            f"val, {counts['test']} test in {where}); give it species or set model.enabled: false")


if IN_PLACE:
    check_local_sources()
if MODEL.get("enabled", True):
    check_splits()
