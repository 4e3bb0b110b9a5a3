"""The CSV and TensorBoard logs of a training run (:func:`model.train.train`), resumable."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

__all__ = ["TrainLogs"]


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
        self.train = self._csv(out / "train_log.csv", ["step", "loss", "lr", "samples_per_s"], resume_step)
        self.val = self._csv(out / "val_log.csv", ["step", "val_loss"], resume_step, val_rows)
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 - tensorboard is optional at run time

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step or None)
        except Exception as e:  # noqa: BLE001 - tensorboard is optional at run time
            print(f"note: no TensorBoard logs ({e})", file=sys.stderr)

    @staticmethod
    def _csv(path: Path, header: list[str], resume_step: int, fallback: list | None = None):
        rows = list(fallback or []) if resume_step else []
        if resume_step and path.exists():  # keep what was logged up to the resumed step
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
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
