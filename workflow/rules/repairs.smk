# Parse-time repairs of the workspace (no rules): before the DAG is built, what a file on disk claims
# is checked against what it stands for, and mended so that exactly the work that is gone is redone
# and nothing else (docs/workflow.md, "The store's state is the truth", "Folder outputs", "Report
# files"). Each repair says what it did in a warning, also under --dry-run.
#
#   forget_stale_markers()       markers whose store state is gone, fetch records whose file is gone:
#                                removed (here, after common.smk)
#   forget_unreadable_summary()  an eval/summary.json that is not JSON: removed (here)
#   restore_lost_settings()      a deleted dataset.settings.json of a store with the run's settings:
#                                written back, dated before the markers (here)
#   forget_incomplete_folders()  folder outputs that lost a file: removed (Snakefile, after every rule file)
#   restore_lost_val_log()       a finished run's deleted val_log.csv: written back from last.pt (Snakefile)

import json
import os
import shlex
import shutil
from pathlib import Path

from tomodata.fetch_markers import stale_fetch_records
from tomodata.folder_contents import contents_problem
from tomodata.store import SPEC_VERSION
from tomodata.store_markers import restore_settings_file, settings_record, stale_markers
from tomodata.store_settings import StoreSettings


def forget_stale_markers():
    """Markers whose store state is gone (a deleted store, a species' shards removed, a store of other
    settings) and fetch records whose file is gone are removed before the DAG is built, so that
    exactly that part is redone (tomodata.store_markers, tomodata.fetch_markers)."""
    if not workflow.is_main_process:
        return
    stale = stale_markers(STORE, created=f"{RESULTS}/dataset.created.json", final=f"{RESULTS}/dataset.final.json",
                          done={sid: f"{RESULTS}/species/{sid}.done.json" for sid in IDS},
                          settings=f"{RESULTS}/dataset.settings.json")
    for path, why in stale:
        # also under --dry-run: the marker vouches for state that is gone, and only its removal lets the
        # dry run list the jobs that redo it (docs/workflow.md, "The store's state is the truth")
        logger.warning(f"{path}: {why}; removing the marker so that it is redone (also under --dry-run)")
        Path(path).unlink(missing_ok=True)
    for path, why in stale_fetch_records(f"{FETCHED}/{sid}.tsv" for sid in IDS):
        # a fetched scan is a cache: Snakemake fetches it again only for a job that reads it (a cube
        # whose settings changed), not while the cube made from it is up to date
        logger.warning(f"{path}: {why}; removing the record (also under --dry-run). The specimen is fetched "
                       f"again when a job reads it; to fetch it now: snakemake {path} --cores 1{_run_options()}")
        Path(path).unlink(missing_ok=True)


def _run_options():
    """This run's --configfile and --config options, as a command line would give them again."""
    files = " ".join(shlex.quote(str(f)) for f in workflow.overwrite_configfiles)
    given = workflow.config_settings.config or {}
    pairs = " ".join(shlex.quote(f"{k}={v if isinstance(v, str) else json.dumps(v)}") for k, v in given.items())
    return (f" --configfile {files}" if files else "") + (f" --config {pairs}" if pairs else "")


forget_stale_markers()


def forget_unreadable_summary():
    """An evaluation summary (results/RUN/eval/summary.json) that is not a JSON object (emptied, cut
    short) is removed, so that the evaluation runs again; else Snakemake counts it as present, every
    job that reads it fails, and each failure deletes that job's outputs too."""
    path = Path(f"{RESULTS}/eval/summary.json")
    if not workflow.is_main_process or not path.is_file():
        return
    try:
        ok = isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        ok = False
    if not ok:
        logger.warning(f"{path}: not a JSON object (emptied or cut short?); removing it so that the evaluation "
                       "runs again (also under --dry-run)")
        path.unlink()


forget_unreadable_summary()

def restore_lost_settings():
    """A deleted dataset.settings.json is written back where the store holds the run's settings: the
    store_settings job would write it anew, and its new date would re-render every species (hours at
    the paper's size) and re-run everything after them. Another store (settings changed): nothing is
    written, the job runs and every species is rendered again, as it must."""
    if not workflow.is_main_process:
        return
    settings = StoreSettings(chi=float(DATASET["chi"]), steps=DATASET["steps"], image_size=DATASET["image_size"],
                             volume_size=DATASET["volume_size"], n_views=DATASET["n_views"],
                             view_seed=DATASET["view_seed"], image_encoding=DATASET["encoding"])
    markers = [f"{RESULTS}/dataset.created.json", *[f"{RESULTS}/species/{sid}.done.json" for sid in IDS]]
    message = restore_settings_file(f"{RESULTS}/dataset.settings.json", STORE, settings_record(settings, SPEC_VERSION),
                                    markers)
    if message:
        logger.warning(message)


restore_lost_settings()


def forget_incomplete_folders():
    """Folder outputs (`directory()`: apps, explorer, real/NAME/apps) that no longer hold what their
    command recorded (tomodata.folder_contents) are removed before the DAG is built, so that their job
    runs again; Snakemake itself counts a folder as present while it exists. Called by the Snakefile
    after every rule file has added its targets."""
    if not workflow.is_main_process:
        return
    for target in _TARGETS:
        why = contents_problem(target) if os.path.isdir(target) else None
        if why:
            # also under --dry-run, as for the markers: the folder is a derived result that vouches for
            # files that are gone, and only its removal lets the dry run list the job that redoes it
            logger.warning(f"{target}: {why}; removing the folder so that it is made again (also under --dry-run)")
            shutil.rmtree(target)


def restore_lost_val_log():
    """A finished run's deleted val_log.csv (a report file: `snakemake --report` failed while the run
    had nothing to do) is written again from last.pt before the DAG is built; Snakemake would re-run
    `train` for it, deleting best.pt first, and every job after it. Also under --dry-run."""
    if workflow.is_main_process and MODEL.get("enabled", True):
        from model.train_logs import restore_lost_val_log as restore

        if message := restore(Path(f"{RESULTS}/model")):
            logger.warning(message)
