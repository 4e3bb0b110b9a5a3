# Parse-time repairs of the workspace (no rules): before the DAG is built, what a file on disk claims
# is checked against what it stands for, and mended so that exactly the work that is gone is redone
# and nothing else (docs/workflow.md, "The store's state is the truth", "Folder outputs", "Report
# files"). Each repair says what it did in a warning, also under --dry-run.
#
#   forget_stale_markers()       markers whose store state is gone, fetch records whose file is gone:
#                                removed (a deleted copy whose source is read in place now: the record
#                                rewritten as the in-place one) (here, after common.smk)
#   forget_unreadable_summary()  an eval/summary.json that is not JSON: removed (here)
#   sync_settings()              dataset.settings.json made to hold the config's settings: dated before
#                                the markers where the store holds them, else now (here)
#   forget_incomplete_folders()  folder outputs that lost a file: removed (Snakefile, after every rule file)
#   restore_lost_val_log()       a finished run's deleted val_log.csv: written back from last.pt (Snakefile)

import json
import os
import shlex
import shutil
from pathlib import Path

from tomodata.fetch_markers import in_place_record_line, stale_fetch_records
from tomodata.files import write_text
from tomodata.folder_contents import contents_problem
from tomodata.store import SPEC_VERSION
from tomodata.store_markers import (settings_file_changes, settings_record, stale_markers, sync_settings_file,
                                    unreadable_store)


def forget_stale_markers():
    """Markers whose store state is gone (a deleted store, a species' shards removed, a store of other
    settings) and fetch records whose file is gone are removed before the DAG is built, so that
    exactly that part is redone (tomodata.store_markers, tomodata.fetch_markers); the record of a deleted
    copy whose source is read in place now becomes the in-place record instead."""
    if not workflow.is_main_process:
        return
    # the store's settings are compared with those dataset.created.json recorded, not with the settings
    # file: the file holds the config's (sync_settings), and a store of other settings than the config's
    # is still what its markers say; the file's date re-makes it (a dry run after a config change must
    # not remove the markers that changing the config back would need)
    if why := unreadable_store(STORE):
        # nothing is proven about its state: its markers are kept (a store on a file system not mounted
        # here, a dangling link on a login node, a dry run or --unlock must not cost a rebuild)
        logger.warning(f"the store is not readable here: {why}. Its markers are kept and not checked; jobs "
                       f"that read it fail where it cannot be read. If it is damaged, remove it (rm -r {STORE}) "
                       "and run again to rebuild it (docs/workflow.md, \"The store's state is the truth\")")
    stale = stale_markers(STORE, created=CREATED, final=FINAL,
                          done={sid: SPECIES_DONE.format(id=sid) for sid in IDS})
    for path, why in stale:
        # also under --dry-run: the marker vouches for state that is gone, and only its removal lets the
        # dry run list the jobs that redo it (docs/workflow.md, "The store's state is the truth")
        logger.warning(f"{path}: {why}; removing the marker so that it is redone (also under --dry-run)")
        Path(path).unlink(missing_ok=True)
    ids = {f"{FETCHED}/{sid}.tsv": sid for sid in IDS}
    records = {path: local_source(ROWS[sid]) for path, sid in ids.items()}
    for path, why in stale_fetch_records(records, sources=records):
        if line := _in_place_record(path, ids[path], records[path]):
            # the copy is gone but the source, read in place now, holds what was copied: the record an
            # in-place fetch would write (a removed record made the re-run fetch new input of the cube)
            logger.warning(f"{path}: {why}; data.fetch.in_place reads the source where it is, which holds what "
                           "was copied: the record now points there (also under --dry-run)")
            write_text(path, f"{line}\n")
            continue
        # a fetched scan is a cache: Snakemake fetches it again only for a job that reads it (a cube
        # whose settings changed), not while the cube made from it is up to date
        logger.warning(f"{path}: {why}; removing the record (also under --dry-run). The specimen is fetched "
                       f"again when a job reads it; to fetch it now: snakemake {path} --cores 1{_run_options()}")
        Path(path).unlink(missing_ok=True)


def _in_place_record(path, sid, source):
    """The in-place record line for the stale record ``path`` of specimen ``sid``'s copy, where this run
    reads its local ``source`` in place (tomodata.fetch_markers); None otherwise."""
    if not DATA["fetch"]["in_place"] or source is None or not source.exists():
        return None
    try:
        digest = _SHA_CACHE.sha256(source)
    except (OSError, ValueError):  # unreadable (a detached header without its data file): the record goes
        return None
    _SHA_CACHE.save()
    return in_place_record_line(path, sid, source, digest, kind=ROWS[sid]["source_kind"])


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
    path = Path(EVAL_JSON)
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

def sync_settings():
    """dataset.settings.json is made to hold the config's dataset settings before the DAG is built
    (tomodata.store_markers.sync_settings_file), dated so that exactly the work a change needs is
    redone: deleted, or changed back to what the store holds: written, dated before the markers
    (nothing re-renders; before, its job wrote it anew and every species rendered again); other
    settings than the store's: written now, so that the store and everything after it are made again
    by date. Snakemake sees a changed setting through its params records under .snakemake/ alone, so
    where those were lost a changed setting re-ran nothing ("Nothing to be done") and the results kept
    settings the config no longer stated. Also under --dry-run: the file is a function of the config
    and the store, so a config changed back leaves it as it was. Left alone while a Snakemake run holds
    the file (it lists it in .snakemake/locks): that run's jobs read it."""
    if not workflow.is_main_process:
        return
    path = f"{RESULTS}/dataset.settings.json"
    if _held_by_a_run(path):
        if settings_file_changes(path, _run_settings_record()):
            logger.warning(f"{path} holds other dataset settings than the config, but a Snakemake run of this "
                           "workspace holds it (.snakemake/locks): left as it is; run again once that run has "
                           "ended (after a killed run: snakemake --unlock)")
        return
    markers = [CREATED, *[SPECIES_DONE.format(id=sid) for sid in IDS]]
    message = sync_settings_file(path, STORE, _run_settings_record(), markers)
    if message:
        logger.warning(f"{message} (also under --dry-run)")


def _held_by_a_run(path):
    """Whether a running Snakemake of this workspace lists ``path`` among its files (its lock files,
    .snakemake/locks/N.input.lock and N.output.lock, one path per line; runs of other targets may
    share the workspace)."""
    names = {path, os.path.abspath(path)}
    for lock in Path(".snakemake/locks").glob("*.lock"):
        try:
            if names & set(lock.read_text(encoding="utf-8").splitlines()):
                return True
        except (OSError, UnicodeDecodeError):
            continue
    return False


def _run_settings_record():
    """The config's dataset settings as tomo store-settings writes them (dataset.settings.json)."""
    return settings_record(run_settings(), SPEC_VERSION)


sync_settings()


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

        if message := restore(Path(MODEL_DIR)):
            logger.warning(message)
