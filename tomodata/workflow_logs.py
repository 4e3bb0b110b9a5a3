"""What a workflow run's job logs say, for the run's own output (``workflow/rules/common.smk``'s
``onerror`` and ``onsuccess``): the ``tomo`` error of each failed job (:func:`job_failures`) and the
``tomo`` warnings of every job (:func:`job_warnings`), so that they stand in the run's output, not
only in ``LOGS/RULE/ID.log``.

Only logs written in this run count: those modified at or after ``since`` (the time the Snakefile
was parsed); a job's log is ``LOGS/RULE/ID.log`` (``LOGS/cv/train_fold0.log`` ...). Imports nothing
heavy: the workflow imports it at parse time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

__all__ = ["job_failures", "job_warnings", "WARNINGS_SHOWN", "WARNING_CHARS"]

#: job_warnings: at most this many listed, each cut to WARNING_CHARS characters
WARNINGS_SHOWN, WARNING_CHARS = 20, 400

#: real_xray errors: the `tomo infer` options they suggest, as config keys of model.real_xrays.NAME
_INFER_KEYS = {
    "--polarity": "polarity",
    "--gamma": "gamma",
    "--square": "square",
    "--air": "air",
    "--max-size": "max_size",
}


def _run_logs(logs, since: float) -> Iterator[tuple[Path, list[str]]]:
    """Every job log under ``logs`` modified at or after ``since`` (seconds since the epoch), with its lines."""
    for log in sorted(Path(logs).rglob("*.log")):
        try:
            if log.stat().st_mtime >= since:
                yield log, log.read_text(errors="replace").splitlines()
        except OSError:
            continue


def _job(log: Path, logs) -> str:
    """A log's job: RULE/ID, RULE/RULE, cv/train_fold0."""
    return log.relative_to(logs).with_suffix("").as_posix()


def job_failures(logs, since: float) -> list[str]:
    """For each job's log written in this run that holds a `tomo` error (its `error: ` line, the
    last): the job, the log and that error, so that the reason of a failed cube, render, training
    ... stands in the run's output, not only in the log (Snakemake itself names the log and the
    command); a real x-ray's with the config key for each `tomo infer` option it suggests (the job's
    log speaks the CLI's language)."""
    out = []
    for log, lines in _run_logs(logs, since):
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if not errors:
            continue
        error = errors[-1].removeprefix("error: ")
        if log.parent.name == "real_xray":
            name = log.stem
            hints = [
                f"model.real_xrays.{name}.{_INFER_KEYS[opt]}: {value}"
                for opt, value in re.findall(r"(--[a-z-]+) ([a-z0-9.]+)", error)
                if opt in _INFER_KEYS
            ]
            out.append(f"real x-ray {name}: {error}" + (f"\n  in the config: {' or '.join(hints)}" if hints else ""))
        else:
            out.append(f"{_job(log, logs)} failed ({log}): {error}")
    return out


def job_warnings(logs, since: float) -> str | None:
    """The `tomo` warnings (`warning: ` lines) of this run's job logs, one line each with its job, at
    most :data:`WARNINGS_SHOWN` (None where there are none): a spacing that overrides the file's, faint
    material setting a cube's scale, a registration kept from before, a radiograph far from the
    training x-rays ... would otherwise stay in the logs of a run that succeeded."""
    found = [
        (_job(log, logs), ln.removeprefix("warning: "))
        for log, lines in _run_logs(logs, since)
        for ln in lines
        if ln.startswith("warning: ")
    ]
    if not found:
        return None
    shown = [
        f"  {job}: {text if len(text) <= WARNING_CHARS else text[:WARNING_CHARS] + ' …'}"
        for job, text in found[:WARNINGS_SHOWN]
    ]
    more = len(found) - len(shown)
    rules = Counter(job.split("/")[0] for job, _ in found)
    by_rule = ", ".join(f"{rule} {n}" for rule, n in sorted(rules.items()))
    return "\n".join(
        [f"{len(found)} warning(s) in this run's job logs ({logs}/; {by_rule}):"]
        + shown
        + ([f"  and {more} more: grep -r '^warning: ' {logs}"] if more else [])
    )
