"""One ``tomo train`` at a time per output folder: an exclusive ``flock`` on ``RUN/.train.lock``.

A second trainer of the same folder (an orphaned ``tomo train`` still running after its Snakemake was
killed, and the job started again) would interleave its writes with the first one's: its logs get
NUL bytes, its checkpoints another run's steps. The lock is the kernel's: it goes with the process
that holds it (a killed trainer leaves no stale lock), and the file keeps the holder's pid for the
refusal. Under torchrun only rank 0 writes, so only rank 0 locks. (``flock`` on a network file
system locks on the machine only where the file system does not forward it.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "train_lock"]

LOCK_NAME = ".train.lock"


@contextlib.contextmanager
def train_lock(out: Path, *, enabled: bool = True):
    """Hold ``out/.train.lock`` (folder made where missing; removed again if the block wrote nothing
    into it, e.g. a command refused for bad input) while the block runs; ValueError in one
    line naming ``out`` and the holder's pid where another process holds it. ``enabled``: False (a
    torchrun rank other than 0) takes no lock."""
    if not enabled:
        yield
        return
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fh = open(out / LOCK_NAME, "a+")  # noqa: SIM115 - held until the block ends
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip()
            who = f"another tomo train (pid {pid})" if pid.isdigit() else "another tomo train"
            raise ValueError(
                f"{who} is writing {out}: wait for it or stop it (two trainers of one folder garble its logs "
                "and checkpoints)"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing the file releases the lock
        if made and [p.name for p in out.iterdir()] == [LOCK_NAME]:  # refused before writing: leave nothing
            (out / LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                out.rmdir()
