# Shared settings, specimen ids and helper functions of the workflow (no rules here, so that the
# rule files stay declarative). Everything is computed at parse time from the validated config.
#
# Paths (RUN = config["run"]):
#   resources/RUN/   decoded and downloaded inputs: the demo's movies + manifest, fetched sources
#                    (fetched/<id>/...) with their fetch records (fetched/<id>.tsv), cubes/<id>.npz
#   results/RUN/     dataset.zarr (the store), its markers dataset.settings.json,
#                    dataset.created.json, species/<id>.done.json, dataset.final.json;
#                    previews/<id>_*.png (render_species, previews); report.html (snakemake --report)
#   logs/RUN/<rule>/, benchmarks/RUN/<rule>/    one file per job
#
# Rerun policy (docs/workflow.md, "Incremental runs"): a specimen's jobs re-run when its source's
# content or its own settings change, never because of how its source is spelled. Every specimen has
# a content key (tomodata.specimens.content_key: the sha256 of a local source, the declared sha256, or
# the URL of a remote source without one) computed at parse time. The fetch job takes the source's
# location (re-runs when it is spelled otherwise: cheap, the copy is reused); every later job takes
# the fetch record as `ancient()` and the content key and the specimen's settings as tracked
# `params`, so a re-fetch of the same content stops there. Options that do not change an output
# (download rate, retries, renderer backend, batch size, the config file's name) are `Untracked`.
# Nothing is skipped silently: a row whose local source is missing, unreadable or of another kind
# stops the run at parse time with every such row listed (with --keep-going only their own jobs fail);
# one gone after its cube was made (archived) is named in a warning and re-runs nothing.

import importlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml
from model.names import EXAMPLES_FILE, FIGURES, PREVIEWS  # torch-free: the file names the model's commands write
from model.names import CV_FOLDS_CSV, CV_REPORT, EVAL_METRICS, EVAL_SPECIES, EVAL_SUMMARY, EVAL_SUMMARY_CSV, EVAL_TABLES, EVAL_TESTS
from model.names import TRAIN_BEST, TRAIN_VAL_LOG
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from tomodata.demo import MOVIE_CODECS, demo_name, demo_splits
from tomodata.config_check import gpu_problems, rule_names
from tomodata.manifest import manifest_schema
from tomodata.run_layout import (CREATED_MARKER, EVAL_DIR as EVAL_DIR_NAME, EXPLORER_DIR, FINAL_MARKER,
                                 MODEL_DIR as MODEL_DIR_NAME, STORE_NAME, species_marker)
from tomodata.splits import SPLITS as SPLIT_NAMES
from tomodata.store_settings import StoreSettings
from tomodata.workflow_logs import job_failures, job_warnings
from tomodata.specimens import (ShaCache, collect_rows, content_key, declared_mismatches, demo_manifest_edits,
                                local_source, overlay_paths, row_settings, source_problems, gone_but_built)

RUN = config["run"]
RESOURCES = f"resources/{RUN}"
RESULTS = f"results/{RUN}"
LOGS = f"logs/{RUN}"
BENCHMARKS = f"benchmarks/{RUN}"
STORE = f"{RESULTS}/{STORE_NAME}"  # tomodata.run_layout: the run folder's names
CREATED = f"{RESULTS}/{CREATED_MARKER}"  # the workflow's markers (tomodata.store_markers)
FINAL = f"{RESULTS}/{FINAL_MARKER}"
SPECIES_DONE = f"{RESULTS}/{species_marker('{id}')}"  # a wildcard pattern; .format(id=...) for one
PREVIEWS_DIR = f"{RESULTS}/previews"  # the previews rule writes NAME_000.png ... NAME_sheet.png here

DATA = config["data"]
DATASET = config["dataset"]
RENDER = config["render"]
DEMO = DATA["source"] == "demo"

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
# The demo's rows (known before its job writes the movies: tomodata.demo.demo_rows), or those of
# data.manifest, plus those of every overlay manifest in data.add (docs/manifest.md, "Adding scans").
if DEMO:
    _d = DATA["demo"]
    try:
        demo_splits(_d["species"], val=_d["val"], test=_d["test"])
    except ValueError as e:
        raise WorkflowError(f"data.demo: {e}") from None
    DEMO_SUFFIX = MOVIE_CODECS[DATA["demo"]["codec"]][1]
elif not DATA["manifest"]:
    raise WorkflowError("data.source is 'manifest' but data.manifest (the manifest TSV) is not set")
DEMO_MANIFEST = f"{RESOURCES}/manifest.tsv"
try:  # a broken manifest stops here, every error listed
    ROWS = collect_rows(demo=DATA["demo"] if DEMO else None, demo_dir=RESOURCES,
                        manifest=None if DEMO else DATA["manifest"], overlays=overlay_paths(DATA["add"]))
except ValueError as e:
    raise WorkflowError(f"data.manifest / data.add: {e}") from None
if DEMO and (edits := demo_manifest_edits(ROWS, DEMO_MANIFEST, DATA["demo"])):
    raise WorkflowError(
        f"{DEMO_MANIFEST} was edited by hand ({len(edits)} differences from data.demo):\n  " + "\n  ".join(edits[:10])
        + "\nIt is the demo's output, made from data.demo, not an input. To change specimens, copy it, name the copy"
        " in data.manifest with data.source: manifest (docs/manifest.md), and put the demo's file back (delete it:"
        " the next run makes it again).")
IDS = list(ROWS)
SPLITS = {sid: row["split"] for sid, row in ROWS.items()}
MANIFESTS = sorted({row["_manifest"] for row in ROWS.values()})
MANIFEST = DEMO_MANIFEST if DEMO else DATA["manifest"]  # the main one (messages)


def is_demo(sid):
    return ROWS[sid]["_origin"].startswith("the demo")


def check_sources():
    """Every row's local source must exist, be readable and be of its kind: list every bad row at
    once and stop, or with --keep-going warn and let only their own fetch jobs fail."""
    if not workflow.is_main_process:
        return  # a job's own process (cluster, subprocess): the main process has checked
    # a local source changed against its manifest's sha256: its key (the declared sha256) would not
    # change and nothing re-run; stat-based, hashes only what changed (tomodata.specimens)
    cache = ShaCache(f"{RESOURCES}/.source-sha256.json")
    changed = declared_mismatches(ROWS, IDS, cache=cache, fetched_dir=f"{RESOURCES}/fetched")
    cache.save()
    if changed:
        raise WorkflowError(f"{len(changed)} of {len(IDS)} sources changed since they were fetched:\n  "
                            + "\n  ".join(changed))
    built = [sid for sid in IDS if gone_but_built(ROWS[sid], f"{RESOURCES}/cubes/{sid}.npz")]
    if built:  # archived after the build: nothing needs them until their cube is made again
        logger.warning(f"{len(built)} local source(s) are gone but their cubes are there ({', '.join(built[:5])}"
                       f"{' …' if len(built) > 5 else ''}): kept, as is everything made from them; a job that needs "
                       "the source again (a changed cube setting, a deleted cube or fetched copy) fails until it is "
                       "back")
    problems = source_problems(ROWS, [sid for sid in IDS if sid not in built])
    if not problems:
        return
    bad = sum(1 for sid in IDS if sid not in built and _source_bad(sid))
    listed = "\n  ".join(problems)
    text = f"{bad} of {len(IDS)} specimens cannot be read:\n  {listed}"
    # the execution settings are not known while the Snakefile is parsed: the command line tells
    if any(arg == "--keep-going" or (arg.startswith("-") and not arg.startswith("--") and "k" in arg)
           for arg in sys.argv[1:]):
        logger.warning(f"{text}\n(--keep-going: their jobs fail, every other specimen runs)")
        return
    others = len(IDS) - bad
    raise WorkflowError(text if not others else f"{text}\nor run with --keep-going to build the other {others}")


def _source_bad(sid):
    return bool(source_problems(ROWS, [sid]))


check_sources()
_SHA_CACHE = ShaCache(f"{RESOURCES}/.source-sha256.json")
KEYS = {sid: content_key(ROWS[sid], demo=DATA["demo"], cache=_SHA_CACHE, cube_path=f"{RESOURCES}/cubes/{sid}.npz")
        for sid in IDS}
_SHA_CACHE.save()
SETTINGS = {sid: row_settings(ROWS[sid], DATA["cube"]) for sid in IDS}


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
    """'--key value' for every pair whose value is not None; True gives a bare flag. A value that
    starts with '-' (a window '-1000,400', an orientation '-x,z,y') takes the '--key=value' form,
    which argparse needs (it reads '--key -1000,400' as two options); others keep the space form, so
    that existing jobs' tracked params stay as they were."""
    out = []
    for key, value in pairs:
        if value is None or value is False:
            continue
        text = str(value)
        out.append(key if value is True else f"{key}{'=' if text.startswith('-') else ' '}{shlex.quote(text)}")
    return " ".join(out)


#: the rules defined in workflow/rules/*.smk: the names res() and config resources accept
RESOURCE_RULES = rule_names(Path(workflow.basedir) / "workflow/rules")


def res(rule_name, key):
    """threads, mem_mb or runtime (minutes) of a rule: config resources.<rule>, else .default."""
    if rule_name not in RESOURCE_RULES:  # a misspelt name in a rule file would silently take `default`
        raise ValueError(f"res({rule_name!r}): not a rule of this workflow ({', '.join(RESOURCE_RULES)})")
    spec = dict(config["resources"]["default"])
    spec.update(config["resources"].get(rule_name) or {})
    return spec[key]


def demo_params():
    """What the demo movies depend on (the species count and split only add or relabel species)."""
    d = DATA["demo"]
    return {"movie_size": d["movie_size"], "codec": d["codec"], "seed": d["seed"]}


def fetch_inputs(wildcards):
    """The demo's rows: their movie (ancient). A manifest is read, not an input: its name, or edits
    of other rows, re-run nothing (the row's own fields are the tracked params)."""
    if is_demo(wildcards.id):
        return {"movie": ancient(f"{RESOURCES}/movies/{wildcards.id}{DEMO_SUFFIX}"),
                "manifest": ancient(DEMO_MANIFEST)}
    return {}


def fetch_manifest(wildcards):
    return Untracked(shlex.quote(ROWS[wildcards.id]["_manifest"]))


def fetch_row(wildcards):
    """Tracked: where the source is (spelled absolute where local) and what it is."""
    row = ROWS[wildcards.id]
    local = local_source(row)
    return {"source": str(local) if local is not None else row["source"], "source_kind": row["source_kind"],
            "key": KEYS[wildcards.id], "in_place": bool(DATA["fetch"]["in_place"]) and local is not None}


def fetch_options(wildcards):
    f = DATA["fetch"]
    in_place = bool(f["in_place"]) and local_source(ROWS[wildcards.id]) is not None
    return Untracked(_opts([("--rate", f["rate"]), ("--retries", f["retries"]), ("--timeout", f["timeout"]),
                            ("--mirror", f["mirror"]), ("--in-place", in_place)]))


FETCHED = f"{RESOURCES}/fetched"


def fetched_record(wildcards, made_by=None):
    """The fetch record, `ancient()` where the job reading it (``made_by``: the output file whose
    record holds the params it was made with) is up to date, so a re-fetch of the same content
    re-runs nothing after it. Snakemake does not look at the params of a job whose only inputs from
    a re-running job are ancient, so where the params changed the record stays a plain input."""
    record = f"{FETCHED}/{wildcards.id}.tsv"
    return ancient(record) if made_by and _made_with(made_by, wildcards) else record


def _made_with(kind, wildcards):
    """Whether the existing cube (or aligned volume) records the params it would get now."""
    from tomodata.specimens import recorded_params

    if kind == "cube":
        return recorded_params(f"{RESOURCES}/cubes/{wildcards.id}.npz") == params_text(cube_row(wildcards))
    return recorded_params(f"{ALIGNED}/{wildcards.id}.json") == params_text(align_row(wildcards))


def params_text(params):
    """A job's tracked params as the canonical JSON text its output records (--record-params)."""
    return json.dumps(params, sort_keys=True, default=str)


def scan_options(sid):
    """tomo cube / tomo align options of the scan as read: spacing, slice axis, orientation."""
    st = SETTINGS[sid]
    return _opts([("--spacing", st["spacing"]), ("--slice-axis", st["slice_axis"]), ("--orientation", st["orientation"]),
                  ("--allow-default-spacing", DATA["cube"]["allow_default_spacing"])])


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


def align_value_options(sid):
    """tomo align's value options: the specimen's window and background (as for its cube), so that bone
    is found on densities (CT in Hounsfield units needs a window); empty where neither is set."""
    st = SETTINGS[sid]
    return _opts([("--window", st["window"]), ("--background", st["background"])])


def align_row(wildcards):
    """Tracked: what the aligned volume of this specimen depends on (the value options only where set:
    the records of specimens without them stay current)."""
    row = {"key": KEYS[wildcards.id], "scan": scan_options(wildcards.id), "reference": ALIGN_REFERENCE}
    values = align_value_options(wildcards.id)
    if values:
        row["values"] = values
    return row


def cube_input(wildcards):
    """The cube's input: the aligned volume (and its record), else the fetch record."""
    if ALIGN:
        return {"scan": f"{ALIGNED}/{wildcards.id}.nii.gz", "record": f"{ALIGNED}/{wildcards.id}.json",
                "fetched": fetched_record(wildcards, "cube")}
    return {"fetched": fetched_record(wildcards, "cube")}


def cube_source_arg(wildcards, input):
    """What `tomo cube` reads: the aligned file as it is (canonical axes, spacing from its header,
    its alignment record kept in the cube's record), else the fetched scan with its settings."""
    if ALIGN:
        return f"{shlex.quote(str(input.scan))} --align-record {shlex.quote(str(input.record))}"
    return f"--fetched {shlex.quote(str(input.fetched))} {scan_options(wildcards.id)}"


def cube_row(wildcards):
    """Tracked: everything the cube of this specimen depends on (its content key and settings)."""
    st = SETTINGS[wildcards.id]
    out = {"key": KEYS[wildcards.id], "scan": scan_options(wildcards.id), "size": DATASET["volume_size"],
           "window": st["window"], "background": st["background"], "crop": st["crop"]}
    if ALIGN:
        out["align_reference"] = ALIGN_REFERENCE
    return out


def cube_options(wildcards):
    st = SETTINGS[wildcards.id]
    return _opts([("--size", DATASET["volume_size"]), ("--background", st["background"]), ("--window", st["window"]),
                  ("--crop", st["crop"]), ("--content-key", KEYS[wildcards.id]),
                  ("--record-params", params_text(cube_row(wildcards)))])


def run_settings():
    """The config's dataset settings (dataset.*) as a StoreSettings (which checks them)."""
    d = DATASET
    return StoreSettings(chi=float(d["chi"]), steps=d["steps"], image_size=d["image_size"],
                         volume_size=d["volume_size"], n_views=d["n_views"], view_seed=d["view_seed"],
                         image_encoding=d["encoding"], view_sets=d["view_sets"])


def dataset_options():
    """Tracked: the store's settings (every species' data depends on them): StoreSettings.cli_options(),
    but chi written as a float ("10.0"): `chi: 10` and `chi: 10.0` are one setting, and that text is
    what every existing workspace's jobs were run with (another text would re-render them)."""
    opts = run_settings().cli_options()
    at = opts.index("--chi") + 1
    opts[at] = str(float(opts[at]))
    return " ".join(shlex.quote(o) for o in opts)


def species_table():
    """Tracked: what the store's species table takes from the rows (besides the cubes' records): the
    content key instead of the source's spelling; the attribution only where a row gives one (so
    that the params of every workspace without one stay as they were: no store update for them)."""
    keys = ("species", "split", "licence")

    def entry(row, key):
        credit = {"attribution": row["attribution"]} if row.get("attribution") else {}
        return {**{k: row[k] for k in keys}, "key": key, **credit}

    return {sid: entry(ROWS[sid], KEYS[sid]) for sid in IDS}


def manifest_args():
    """Untracked: the manifests the store's species table reads (the demo's, data.manifest, data.add)."""
    return Untracked(" ".join(shlex.quote(m) for m in MANIFESTS))


def config_json():
    """Untracked: the merged config (every --configfile and --config over config.yaml), recorded in
    the store's provenance and in its exported recipe."""
    return Untracked(shlex.quote(json.dumps(config, sort_keys=True, default=str)))


def render_options():
    """Untracked: the backend and batch, and the settings file the store must have (render-species
    refuses a store of other settings)."""
    return Untracked(_opts([("--backend", RENDER["backend"]), ("--batch", RENDER["batch"]),
                            ("--settings", f"{RESULTS}/dataset.settings.json")]))


# ------------------------------------------------------------------------------ model (model.smk)
MODEL = config["model"]
TRAIN = MODEL["train"]
EVAL = MODEL["evaluate"]
APPS = MODEL["apps"]
GPU_TRAIN = 1 if str(TRAIN["device"]).startswith("cuda") else 0
ENV_MODEL = "../../envs/model.yaml"
# the qualitative examples (made by the examples rule) hold enough rows for the figures and the
# applications, which take the first ones (model/examples.py: the first n rows of a file made for
# more are those a run for n makes)
EXAMPLES = f"{RESULTS}/examples/{EXAMPLES_FILE}"
# the training's folder and checkpoint (tomo train; model.names: the file names)
MODEL_DIR = f"{RESULTS}/{MODEL_DIR_NAME}"
BEST_PT = f"{MODEL_DIR}/{TRAIN_BEST}"
# the evaluation's folder and record (tomo evaluate; model.names: the file names)
EVAL_DIR = f"{RESULTS}/{EVAL_DIR_NAME}"
EVAL_JSON = f"{EVAL_DIR}/{EVAL_SUMMARY}"
N_EXAMPLES = max(EVAL["examples"], APPS["examples"])


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
        # only where set: the default ("auto") leaves the tracked text, and so existing workspaces, as they were
        ("--amp", None if TRAIN["amp"] == "auto" else TRAIN["amp"]),
    ])


# ------------------------------------------------------------------------------ cross-validation (cv.smk)
# model.cv.folds = K >= 3: K folds over species (tomodata.store.folds); 0: off
CV = MODEL["cv"]
CV_FOLDS = int(CV["folds"]) if MODEL.get("enabled", True) else 0
CV_DIR = f"{RESULTS}/cv"
if CV_FOLDS:
    from tomodata.store.folds import fold_groups

    _n_units = len(fold_groups([{"name": sid, "species": row["species"]} for sid, row in ROWS.items()]))
    if CV_FOLDS > _n_units:
        raise WorkflowError(f"model.cv.folds: {CV_FOLDS} folds, but the run has {_n_units} species to hold out")
CV_TABLES = [f"{CV_DIR}/{t}" for t in (EVAL_SUMMARY_CSV, EVAL_TESTS, EVAL_SPECIES, CV_FOLDS_CSV, CV_REPORT)]


def cv_res(rule_name, like, key):
    """Resources of a cross-validation job: config resources.<rule_name>, else those of ``like``'s jobs
    (``like`` None: the default)."""
    return (config["resources"].get(rule_name) or {}).get(key, res(like, key) if like else config["resources"]["default"][key])


def fold_store(wildcards, input):
    """The fold view's folder (the input ``view`` is its zarr.json)."""
    return os.path.dirname(input.view)


# ------------------------------------------------------------------------------ real radiographs
# config model.real_xrays: NAME -> a radiograph file, or {path, gamma, polarity, square, max_size};
# one `tomo infer --apps` job each (rule real_xray), into results/RUN/real/NAME/.
# names as the config schema allows them (they name folders and files)
with open(Path(workflow.basedir) / "workflow/schemas/config.schema.yaml") as _fh:
    REAL_NAME_PATTERN = yaml.safe_load(_fh)["properties"]["model"]["properties"]["real_xrays"][
        "propertyNames"]["pattern"].lstrip("^").rstrip("$")
REAL_PREVIEWS = PREVIEWS  # the preview PNGs tomo infer writes (model.names)


def _real_xrays():
    """model.real_xrays as {name: spec}; every entry whose file is missing listed at once (WorkflowError)."""
    out = {}
    if not MODEL.get("enabled", True):
        return out  # no model, no real x-rays (their files are not looked at)
    for name, spec in (MODEL.get("real_xrays") or {}).items():
        out[name] = {"path": spec} if isinstance(spec, str) else dict(spec)
    bad = [f"model.real_xrays.{name}: {spec['path']} is not a file" for name, spec in out.items()
           if not Path(spec["path"]).is_file()]
    if bad:
        raise WorkflowError("\n".join(bad) + f"\n(paths relative to {Path.cwd()})")
    return out


REAL_XRAYS = _real_xrays()


def real_xray_path(wildcards):
    return REAL_XRAYS[wildcards.name]["path"]


def real_xray_options(wildcards):
    """What determines a real x-ray's volume besides the file and the checkpoint (tracked)."""
    spec = REAL_XRAYS[wildcards.name]
    air = spec.get("air", "keep")  # given only where not the default: the options of earlier runs stay the same
    return _opts([("--gamma", spec.get("gamma")), ("--polarity", spec.get("polarity", "auto")),
                  ("--square", spec.get("square", "field")), ("--max-size", spec.get("max_size")),
                  ("--air", None if air == "keep" else air)])


_PARSED_AT = time.time()  # logs older than this run are an earlier run's


def _cuda_seen(package):
    """Whether ``package`` (torch or cupy) in Snakemake's own Python sees a CUDA device; None where it
    cannot be imported here (gpu_problems says which)."""
    try:
        mod = importlib.import_module(package)
    except ImportError:
        return None
    except Exception:  # noqa: BLE001 - installed but broken (a CuPy without its CUDA libraries): no GPU here
        return False
    if package == "torch":
        return mod.cuda.is_available()
    from tomodata.render import cuda_available

    return cuda_available()


def check_before_jobs():
    """Before a run's first job (onstart: not for dry runs, --report, --unlock, --dag, ...), where the
    jobs run on this machine (not on a cluster, where the jobs' machines differ; not --touch): stop
    where fetch jobs would run with a data.fetch.mirror that is no folder (every fetch would go to the
    network in silence), or jobs that need a GPU (render.backend: cuda, model.train.device: cuda;
    resource gpu) on a machine without one (or without CuPy/torch), naming the settings; warn instead
    where the jobs run in environments of their own (--sdm conda: Snakemake's Python cannot judge
    them; tomodata.config_check.gpu_problems). A run whose jobs need neither is not stopped."""
    if not workflow.is_main_process or not workflow.local_exec or workflow.touch:
        return
    jobs = list(workflow.dag.needrun_jobs())
    mirror = DATA["fetch"]["mirror"]
    if mirror and not Path(mirror).is_dir() and any(job.rule.name == "fetch" for job in jobs):
        raise WorkflowError(f"data.fetch.mirror: {mirror} is not a folder (relative to {Path.cwd()})")
    rules = {job.rule.name for job in jobs if int(job.resources.get("gpu", 0) or 0) > 0}
    render, model_rules = "render_species" in rules, rules - {"render_species"}
    envs = ", ".join(sorted(m.name.lower() for m in workflow.deployment_settings.deployment_method))
    missing, unchecked = gpu_problems(
        render, model_rules, TRAIN["device"], job_environments=envs,
        cupy_cuda=_cuda_seen("cupy") if render and not envs else None,
        torch_cuda=_cuda_seen("torch") if model_rules and not envs else None,
    )
    if unchecked:
        logger.warning("jobs of this run need a GPU, not checked before they start:\n  " + "\n  ".join(unchecked)
                       + "\na job that gets no GPU fails")
    if missing:
        raise WorkflowError(
            "jobs of this run need a GPU and run on this machine (local execution), where they cannot have one:\n  "
            + "\n  ".join(missing) + "\nset render.backend: auto and model.train.device: cpu, or run where the jobs "
            "get a GPU (docs/workflow.md, \"Profiles\")")


onstart:
    check_before_jobs()


onsuccess:  # the jobs' warnings and errors in the run's output, not only in their logs (tomodata.workflow_logs)
    if _warned := job_warnings(LOGS, _PARSED_AT):
        logger.warning(_warned)


onerror:
    if _warned := job_warnings(LOGS, _PARSED_AT):
        logger.warning(_warned)
    for _failure in job_failures(LOGS, _PARSED_AT):
        logger.error(_failure)


def check_splits():
    """The model part needs a train split, a val split (model choice) and the evaluated split: stop at
    parse time, naming the empty split, before anything is computed."""
    counts = {sp: sum(1 for sid in IDS if SPLITS[sid] == sp) for sp in SPLIT_NAMES}
    needed = {"train": "training", "val": "model choice (best.pt)",
              MODEL["evaluate"]["split"]: "the evaluation (model.evaluate.split)"}
    empty = [f"{sp!r} ({why})" for sp, why in needed.items() if counts[sp] == 0]
    if empty:
        where = "data.demo" if DEMO else f"the split column of {', '.join(MANIFESTS)}"
        raise WorkflowError(f"split {', '.join(empty)} has no species ({counts['train']} train, {counts['val']} "
                            f"val, {counts['test']} test in {where}); give it species or set model.enabled: false")


if MODEL.get("enabled", True):
    check_splits()
