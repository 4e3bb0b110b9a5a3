"""``tomo infer`` on several radiographs: the inputs (files and globs) checked before any work, one
output folder per radiograph, and each volume's applications written beside it.

    expand_xrays(patterns) -> (files, problems)
    batch_jobs(xrays, out, fmt, apps) -> ([(xray, OUT/STEM/STEM.FMT, APPS/STEM | None)], clashes)
    run_jobs(jobs, run_one, keep_going) -> failures
    infer_many(patterns, out, fmt, apps, load=, run_one=, keep_going=) -> (n run, skipped, failed)
    infer_with_apps(xray, checkpoint, output, apps, **infer_file options) -> (record, application paths)
"""

from __future__ import annotations

import glob
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from tomodata.folder_contents import record_contents
from tomodata.io import natural_key

from .applications import read_view_volume_file, write_applications
from .infer import infer_file, volume_suffix, xray_file_problem

__all__ = ["batch_jobs", "expand_xrays", "infer_many", "infer_with_apps", "run_jobs"]

Job = tuple[Path, Path, Path | None]


def _expand(pattern: str) -> tuple[list[Path], list[str]]:
    """One XRAY argument: a file (taken as named, even with glob characters in it) or a glob pattern
    (expanded here, so quoted globs work; natural order). Returns (files, problems)."""
    pat = os.path.expanduser(pattern)
    if Path(pat).is_file() or not glob.has_magic(pat):
        hits = [pat]
    else:
        hits = [h for h in sorted(glob.glob(pat, recursive=True), key=natural_key) if not Path(h).is_dir()]
        if not hits:
            return [], [f"{pattern}: no file matches"]
    problems = [(h, xray_file_problem(h)) for h in hits]
    return [Path(h) for h, why in problems if why is None], [f"{h}: {why}" for h, why in problems if why]


def expand_xrays(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """All radiographs of the call, in the order given (each glob in natural order), each file once,
    and the problems (missing, unreadable, empty, not an image, a glob without a match)."""
    files: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for pat in patterns:
        hits, probs = _expand(pat)
        problems += [q for q in probs if q not in problems]
        for h in hits:
            if h.resolve() not in seen:
                seen.add(h.resolve())
                files.append(h)
    return files, problems


def batch_jobs(xrays: list[Path], out: Path, fmt: str, apps: Path | None) -> tuple[list[Job], list[str]]:
    """(radiograph, OUT/STEM/STEM.FMT, APPS/STEM) of each of several radiographs, and the name
    clashes: two with the same STEM (the name without its last suffix, case-insensitive)."""
    if out.suffix.lower() in (".nrrd", ".nii", ".gz") or (out.exists() and not out.is_dir()):
        raise ValueError(f"with a glob or several radiographs -o is a folder (OUT/STEM/STEM.{fmt} each), got {out}")
    stems: dict[str, list[Path]] = {}
    for x in xrays:
        stems.setdefault(x.stem.casefold(), []).append(x)
    clashes = [
        f"same name, same output {out / v[0].stem}: " + ", ".join(map(str, v)) for v in stems.values() if len(v) > 1
    ]
    jobs = [(x, out / x.stem / f"{x.stem}.{fmt}", apps / x.stem if apps else None) for x in xrays]
    return jobs, clashes


def run_jobs(jobs: list[Job], run_one: Callable[[Path, Path, Path | None], None], keep_going: bool) -> list[str]:
    """Run ``run_one(xray, output, apps)`` for each job with one progress line each on stderr; the
    failures (with ``keep_going``; without, the first failure is raised)."""
    failed = []
    for k, (x, output, apps) in enumerate(jobs, 1):
        t0 = time.perf_counter()
        try:
            run_one(x, output, apps)
        except Exception as e:  # noqa: BLE001 - any failure of one radiograph (Ctrl-C still stops)
            took = f"[{k}/{len(jobs)}] {x.name}: FAILED after {time.perf_counter() - t0:.1f} s"
            if not keep_going:  # the error is printed once, by the caller
                rest = len(jobs) - k
                left = f"; {rest} not run (--keep-going goes on past a failure)" if rest else ""
                print(f"{took}{left}", file=sys.stderr)
                raise
            print(f"{took}: {e}", file=sys.stderr)
            text = str(e)
            failed.append(text if text.startswith(f"{x}: ") else f"{x}: {text}")  # errors that name the file already
            continue
        print(f"[{k}/{len(jobs)}] {x.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return failed


def infer_many(
    patterns: list[str],
    out: Path,
    fmt: str,
    apps: Path | None,
    *,
    load: Callable[[], object],
    run_one: Callable[[Path, Path, Path | None], None],
    keep_going: bool,
) -> tuple[int, list[str], list[str]]:
    """Several radiographs (files or globs) into ``out/STEM/STEM.fmt``: every input and output name is
    checked first (a ValueError, nothing run, where one is unusable; with ``keep_going`` unusable files
    are skipped, named on stderr), then ``load()`` (the network, once), then :func:`run_jobs`.
    Returns (radiographs run, problems of the files skipped before the run, failures of the runs)."""
    xrays, problems = expand_xrays(patterns)
    jobs, clashes = batch_jobs(xrays, out, fmt, apps)
    errors = clashes + ([] if keep_going else problems)
    if errors:
        hint = "\n(--keep-going skips the unusable files and runs the others)" if problems and not keep_going else ""
        raise ValueError("nothing was run:\n  " + "\n  ".join(errors) + hint)
    for q in problems:
        print(f"skipped {q}", file=sys.stderr)
    if jobs:
        load()  # a bad checkpoint stops here, before any radiograph
    return len(jobs), problems, run_jobs(jobs, run_one, keep_going)


def infer_with_apps(xray: Path, checkpoint, output: Path, apps: Path | None, **options) -> tuple[dict, list[Path]]:
    """:func:`model.infer.infer_file` (``options``: its keywords), then, with ``apps``, the
    applications of the volume at up to 128² laterally, named like the volume, with the input x-ray
    preview (``STEM_xray.png``, grey 8 bit) where it was written. Returns (record, application paths)."""
    record = infer_file(xray, checkpoint, output, **options)
    if apps is None:
        return record, []
    o = record["output"]
    vol = read_view_volume_file(o["path"], max_side=128)
    name = Path(o["path"]).name
    stem = name[: len(name) - len(volume_suffix(name))]  # the applications are named like the volume
    xr_png = Path(o["path"]).parent / f"{stem}_xray.png"
    xr = None
    if xr_png.is_file():
        grey = cv2.imread(str(xr_png), cv2.IMREAD_GRAYSCALE)
        if grey is None:
            raise ValueError(f"{xr_png}: cannot read this PNG")
        xr = grey.astype(np.float32) / 255.0
    paths = list(write_applications(vol, apps, xray=xr, name=stem, n_turntable=24))
    record_contents(apps)  # last: the workflow re-runs the job where a file of it is gone
    return record, paths
