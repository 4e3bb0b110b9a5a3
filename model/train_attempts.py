"""The history of a training folder's attempts: ``train_attempts.jsonl``, appended, never rewritten.

Each ``tomo train`` call that trains writes one JSON line when it starts (``event: start``: UTC time,
host, pid, the step it starts from, the last step of the call, device, processes) and one when it
ends (``event: end``: ``status`` finished, stopped (by SIGINT/SIGTERM, ``last.pt`` written) or failed
(``error``: the exception), and ``step``, the last step done). A workflow deletes a job's log before
it runs the job again (Snakemake does), so after a resume this file is what says that an earlier
attempt ended and how; a start without an end is a process that was killed (out of memory, a time
limit's SIGKILL, a lost node), which no handler can record. The next attempt prints a note naming an
earlier attempt that failed or was killed. Written by rank 0 only; a re-run of a finished run, which
trains nothing, writes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from .names import TRAIN_ATTEMPTS

__all__ = ["last_attempt_note", "read_attempts", "recorded_attempt"]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _append(out: Path, record: dict) -> None:
    """One line; on a line of its own where a kill cut the last one short."""
    with open(Path(out) / TRAIN_ATTEMPTS, "a+b") as fh:
        cut = False
        if fh.seek(0, os.SEEK_END):  # not empty: does its last line end? (writes go to the end anyway)
            fh.seek(-1, os.SEEK_END)
            cut = fh.read(1) != b"\n"
        fh.write((("\n" if cut else "") + json.dumps(record, sort_keys=True) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())  # the line is on disk before a kill can lose it


def read_attempts(out) -> list[dict]:
    """The records of ``out/train_attempts.jsonl`` in order ([] where there is none); a line that is
    not a JSON object (a write cut short by a kill) is skipped."""
    path = Path(out) / TRAIN_ATTEMPTS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("event") in ("start", "end"):
            records.append(r)
    return records


def last_attempt_note(out) -> str | None:
    """A note on the folder's last attempt where it did not finish cleanly: failed (with its error),
    or started and never ended (killed); None where it finished or stopped on a signal, or none ran."""
    records = read_attempts(out)
    if not records:
        return None
    last = records[-1]
    if last["event"] == "start":
        return (
            f"the previous attempt (started {last.get('utc')} on {last.get('host')}, pid {last.get('pid')}, "
            f"from step {last.get('from_step')}) recorded no end: it was killed (out of memory, a time "
            "limit's SIGKILL or a lost node; its log may say more where it is kept)"
        )
    if last.get("status") == "failed":
        return f"the previous attempt failed after step {last.get('step')} at {last.get('utc')}: {last.get('error')}"
    return None


@contextlib.contextmanager
def recorded_attempt(
    out, *, enabled: bool, from_step: int, to_step: int, device: str, world: int, reached: Callable[[], int]
):
    """Record the block as one attempt in ``out/train_attempts.jsonl`` (module docstring): its start
    now, its end when the block leaves: ``failed`` with the exception (re-raised), else the status
    the block sets with ``yield``'s setter (``finished`` unless it says ``stopped: SIGTERM`` etc.).
    ``reached()``: the last step done. A note on an earlier attempt that failed or was killed goes
    to stderr first. ``enabled``: False (a rank other than 0) records nothing."""
    if not enabled:
        yield lambda status: None
        return
    note = last_attempt_note(out)
    if note:
        print(f"note: {note}", file=sys.stderr)
    _append(
        out,
        dict(
            event="start",
            utc=_now(),
            host=socket.gethostname(),
            pid=os.getpid(),
            from_step=int(from_step),
            to_step=int(to_step),
            device=device,
            world=int(world),
        ),
    )
    status = ["finished"]
    try:
        yield lambda s: status.__setitem__(0, s)
    except BaseException as e:
        error = " ".join(f"{type(e).__name__}: {e}".split())
        _append(out, dict(event="end", utc=_now(), status="failed", step=int(reached()), error=error[:2000]))
        raise
    _append(out, dict(event="end", utc=_now(), status=status[0], step=int(reached())))
