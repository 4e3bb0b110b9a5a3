"""The CSV and TensorBoard logs of a training run (:func:`model.train.train`), resumable, and what a
re-run of a finished run keeps of them (:func:`restore_val_log`, :func:`kept_summary`, :func:`rerun_note`);
:func:`restore_lost_val_log`: the workflow's repair of a deleted ``val_log.csv`` of a finished run."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from tomodata.files import json_safe

from .names import TRAIN_BEST, TRAIN_LAST, TRAIN_LOG, TRAIN_VAL_LOG

__all__ = ["VAL_FIELDS", "TrainLogs", "kept_summary", "rerun_note", "restore_lost_val_log", "restore_val_log"]

VAL_FIELDS = ["step", "val_loss"]  # val_log.csv's columns: global step, mean voxel MSE


class TrainLogs:
    """A training run's logs: ``train_log.csv`` (step, loss, lr, samples_per_s), ``val_log.csv`` (step,
    val_loss) and TensorBoard scalars where tensorboard imports; written by rank 0 only (``enabled``)."""

    def __init__(self, out: Path, enabled: bool, resume_step: int, val_rows: list | None = None):
        """Resumed at ``resume_step`` (rows after it dropped), the val log from ``val_rows`` (carried
        in ``last.pt``) where its file was deleted."""
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        self.train = self._csv(out / TRAIN_LOG, ["step", "loss", "lr", "samples_per_s"], resume_step)
        self.val = self._csv(out / TRAIN_VAL_LOG, VAL_FIELDS, resume_step, val_rows)
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - tensorboard is optional at run time

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step or None)
        except Exception as e:  # noqa: BLE001 - tensorboard is optional at run time
            print(f"note: no TensorBoard logs ({e})", file=sys.stderr)

    @staticmethod
    def _csv(path: Path, header: list[str], resume_step: int, fallback: list | None = None):
        rows = list(fallback or []) if resume_step else []
        if resume_step and path.exists():  # keep what was logged up to the resumed step
            rows = _rows_upto(path, resume_step)
        fh = open(path, "w", newline="")
        w = csv.DictWriter(fh, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
        fh.flush()
        return fh, w

    def log(self, which: str, row: dict) -> None:
        if not self.enabled:
            return
        fh, w = getattr(self, which)
        w.writerow(row)
        fh.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(f"{which}/{k}", v, row["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        for fh, _ in (self.train, self.val):
            fh.close()
        if self.tb is not None:
            self.tb.close()


def _rows_upto(path: Path, step: int) -> list[dict]:
    """The rows of the log ``path`` up to ``step``; ValueError in one line naming the file, the first
    unreadable line and what to do where one is not a row of it (NUL bytes of two trainers, a crash)."""
    with open(path, newline="", errors="replace") as fh:
        reader = csv.DictReader(fh)
        rows = []
        try:
            for r in reader:
                if int(r["step"]) <= step:
                    rows.append(r)
        except (ValueError, TypeError, KeyError, csv.Error) as e:
            line = reader.line_num
            raise ValueError(
                f"{path} is corrupt at line {line} ({type(e).__name__}: {_shown(e)}), cannot resume its log: "
                f"delete it and run again (resuming writes it anew from step {step + 1}"
                f"{f'; its earlier rows come back from {TRAIN_LAST}' if path.name == TRAIN_VAL_LOG else ''}), "
                "or train afresh with --no-resume"
            ) from None
    return rows


def _shown(e: Exception) -> str:
    """``e``'s message without NUL or control bytes, cut short."""
    text = "".join(c if c.isprintable() else "?" for c in str(e))
    return text if len(text) <= 60 else text[:57] + "..."


def restore_val_log(out: Path, rows: list) -> bool:
    """Write ``out/val_log.csv`` from ``rows`` (step, val_loss: carried in ``last.pt``) where it is
    missing (a workflow deletes a job's outputs before it re-runs it); whether it was written."""
    path = out / TRAIN_VAL_LOG
    if path.exists():
        return False
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=VAL_FIELDS)
        w.writeheader()
        w.writerows(rows)
    return True


def restore_lost_val_log(out: Path) -> str | None:
    """Where ``out/val_log.csv`` is gone but ``out/best.pt`` is there (a finished run, its log deleted),
    write it again from the validation history ``out/last.pt`` carries; a message saying what was done
    or why it could not be, None where nothing is missing. The workflow calls it before planning: its
    ``train`` job is not re-run for a lost log (that would re-run every job after it)."""
    out = Path(out)
    path, last = out / TRAIN_VAL_LOG, out / TRAIN_LAST
    if path.exists() or not (out / TRAIN_BEST).is_file():
        return None
    redo = f"to write it again, train again in {out} (tomo train --no-resume, or snakemake --forcerun train)"
    if not last.is_file():
        return f"{path} is gone and {last} with it, which carries its rows: {redo}"
    from .checkpoint import load_checkpoint  # noqa: PLC0415 - torch only where a log is lost

    try:
        rows = load_checkpoint(last).get("val_history")
    except ValueError as e:
        return f"{path} is gone and cannot be written again: {e}"
    if rows is None:
        return f"{path} is gone; {last} was written before checkpoints carried the validation history: {redo}"
    restore_val_log(out, rows)
    return f"{path} was gone: written again from {last} ({len(rows)} rows)"


def kept_summary(path: Path, expect: dict) -> dict | None:
    """The ``summary.json`` at ``path`` where it holds ``expect``'s values (e.g. step, val_loss,
    best_step of ``last.pt``; NaN as null), else None: missing, unreadable or of another state."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or any(summary.get(k) != v for k, v in json_safe(expect).items()):
        return None
    return summary


def rerun_note(last: Path, step: int, end: int, *, kept: bool, restored: list[str]) -> str:
    """What a re-run of a finished run did: ``last`` (``last.pt``) is at global ``step``, at or past
    ``end`` (this call's last step); ``summary.json`` ``kept`` or written again; ``restored``: the
    outputs written back from ``last``."""
    done = "left as it was" if kept else f"written from {last.name}"
    back = f"; {', '.join(restored)} restored from {last.name}" if restored else ""
    where = f"{last} is already at step {step} (this call ends at step {end})"
    return f"[train] {where}: nothing to train; summary.json {done}{back}"
