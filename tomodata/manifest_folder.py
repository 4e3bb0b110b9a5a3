"""A manifest generated from a folder of scans, with seeded train/val/test splits by specimen.

``tomo manifest-folder DIR -o MANIFEST.tsv --pattern '*.nii.gz' --kind nifti --val 5 --test 8``
lists every matching file of ``DIR`` as one specimen (its own "species": the unit held out), so a
collection such as the 51 inbred mouse strains of ``../shared/data/real/mouse-ct-atlas`` becomes a
manifest without a hand-typed list. The rule (:func:`seeded_splits`) is fixed and documented:

1. ids are sorted (Python string order);
2. ``numpy.random.default_rng(seed).permutation`` orders them;
3. the first ``test`` ids of that order are the ``test`` split (only ever used for the reported
   result), the next ``val`` the ``val`` split (model choice, early stopping, tuning), the rest
   ``train``.

The same folder, counts and seed give the same manifest byte for byte (``tests/test_mice.py``
regenerates ``manifests/mice.tsv`` and compares). Sources are written relative to the manifest's
folder, so the manifest and the data folder can move together.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from .fetch.checksums import nrrd_data_files, source_sha256
from .fetch.common import ARCHIVE_SUFFIXES
from .files import atomic_write
from .image_files import dicom_frames
from .io import sniff_kind
from .manifest import (
    COLUMNS,
    INGEST_COLUMNS,
    KINDS_NEEDING_SPACING,
    SOURCE_KINDS,
    ManifestError,
    load_manifest,
    manifest_schema,
    parse_spacing,
    validate_manifest,
)

__all__ = ["seeded_splits", "specimen_id", "manifest_from_folder"]

#: File suffixes stripped from a file name to make its id (longest first).
SUFFIXES = (
    ".nii.gz", ".nii", ".nrrd", ".nhdr", ".tiff", ".tif", ".npy", ".npz", ".mp4", ".avi", ".mkv", ".mov", ".dcm",
    *ARCHIVE_SUFFIXES,
)  # fmt: skip

#: kinds whose source is a folder (a DICOM series may also be one multi-frame file)
_FOLDER_KINDS = ("dicom", "image_folder")


# the columns a folder's manifest has (ingest settings and attribution only where given: else the
# config's defaults apply)
_COLUMNS = tuple(c for c in COLUMNS if c not in INGEST_COLUMNS and c != "attribution")


def seeded_splits(ids, *, val: int, test: int, seed: int = 0) -> dict[str, str]:
    """{id: split} by the module's rule: sort, seeded permutation, first ``test`` test, next ``val`` val.

    ValueError where the ids repeat or where the counts leave no training specimen.
    """
    ids = sorted(str(i) for i in ids)
    if len(set(ids)) != len(ids):
        raise ValueError("specimen ids repeat: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
    if val < 0 or test < 0 or val + test >= len(ids):
        raise ValueError(
            f"{len(ids)} specimens cannot give {test} test + {val} val and at least one train (each count >= 0)"
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    splits = {}
    for rank, k in enumerate(order):
        splits[ids[int(k)]] = "test" if rank < test else "val" if rank < test + val else "train"
    return {i: splits[i] for i in ids}


def _checked_ingest(given) -> dict[str, str]:
    """The ingest settings given (empty ones dropped) in the manifest's column order; ValueError for
    another name, or naming each option (``--window: ...``) whose value a manifest cell would refuse."""
    ingest = {k: str(v) for k, v in (given or {}).items() if v not in (None, "")}
    if set(ingest) - set(INGEST_COLUMNS):
        raise ValueError(f"ingest settings are {INGEST_COLUMNS}, got {sorted(set(ingest) - set(INGEST_COLUMNS))}")
    ingest = {k: ingest[k] for k in INGEST_COLUMNS if k in ingest}
    if not ingest:
        return ingest
    probe = dict(id="probe", species="probe", source="probe.nii.gz", source_kind="nifti", split="train", licence="x")
    try:
        validate_manifest(pd.DataFrame([{**probe, **ingest}]), origin="options")
    except ManifestError as e:
        raise ValueError("; ".join(re.sub(r"^row 1, column '(\w+)': ", r"--\1: ", m) for m in e.errors)) from None
    return ingest


def specimen_id(path: Path) -> str:
    """The id of a scan file: its name without the format suffix and trailing ``_ . -``."""
    name = path.name
    for suf in SUFFIXES:
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
            break
    name = name.rstrip("_.-")
    pattern = manifest_schema()["properties"]["id"]["pattern"]
    if not re.match(pattern, name):
        raise ValueError(f"{path}: the id {name!r} made from the file name does not match {pattern}")
    return name


def _scans(folder: Path, pattern: str, kind: str) -> list[Path]:
    """The entries of ``folder`` matching ``pattern`` that are scans of ``kind``: files (and for
    ``dicom``/``image_folder`` folders), without the data files of detached NRRD headers among them.
    ValueError where none matches, or listing every match that is not of ``kind`` (its kind as
    :func:`tomodata.io.sniff_kind` reads it; a single-frame DICOM file is one slice, not a scan)."""
    matched = sorted(folder.glob(pattern))
    found = [p for p in matched if p.is_file() or (p.is_dir() and kind in _FOLDER_KINDS)]
    if not found:
        dirs = [p.name for p in matched if p.is_dir()]
        hint = (
            f" (only folders: {', '.join(dirs[:5])}; folders are scans of --kind dicom or image_folder)" if dirs else ""
        )
        raise ValueError(
            f"no {'file or folder' if kind in _FOLDER_KINDS else 'file'} in {folder} matches {pattern!r}{hint}"
        )
    data = {f.resolve() for p in found for f in nrrd_data_files(p)}
    scans = [p for p in found if p.resolve() not in data]
    problems: dict[str, list[str]] = {}
    for p in scans:
        if why := _kind_problem(p, kind):
            problems.setdefault(why, []).append(p.name)
    if problems:
        n = sum(len(v) for v in problems.values())
        lines = [
            ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") + f": {why}"
            for why, names in problems.items()
        ]
        raise ValueError(
            f"{n} of {len(scans)} matches of {pattern!r} in {folder} are not {kind} scans "
            "(narrow --pattern or give the right --kind):\n  " + "\n  ".join(lines)
        )
    return scans


def _kind_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` is not one scan of ``kind`` (None where it is; an archive of a folder kind is
    unpacked and checked by ``tomo fetch``)."""
    if kind in _FOLDER_KINDS and path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return None
    try:
        got = sniff_kind(path)
    except ValueError as e:
        return str(e).removeprefix(f"{path}: ")
    if got != kind:
        return f"holds {got} data, not {kind}"
    if kind == "dicom" and path.is_file() and dicom_frames(path) <= 1:
        return "a single-frame DICOM file is one slice; match the series' folders instead"
    return None


def manifest_from_folder(
    folder,
    out,
    *,
    pattern: str = "*.nii.gz",
    source_kind: str = "nifti",
    species: str = "{id}",
    licence: str,
    val: int,
    test: int,
    seed: int = 0,
    checksums: bool = True,
    notes: str = "",
    spacing: str = "",
    attribution: str = "",
    ingest: dict[str, str] | None = None,
) -> Path:
    """Write a manifest of every file in ``folder`` matching ``pattern``; returns its path.

    ``species`` is a template with ``{id}`` (e.g. ``"Mus musculus {id}"``); ``checksums`` records
    each file's sha256 (checked when fetched); ``attribution`` (the credit a CC BY licence asks for)
    adds that column to every row, and so does each of ``ingest`` (``window``, ``background``,
    ``orientation``, ``crop``: the manifest's text, e.g. ``{"window": "hu-bone", "crop": "largest"}``)
    that is given: settings every scan of the folder shares, kept with its rows (an overlay of them
    on another run re-cubes none of that run's species, as ``data.cube`` would). The written file is validated by
    :func:`tomodata.manifest.load_manifest` before it replaces ``out`` (atomic).
    """

    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ValueError(f"scan folder {folder} does not exist (resolved: {folder.resolve()})")
    if source_kind not in SOURCE_KINDS:
        raise ValueError(f"source_kind must be one of {SOURCE_KINDS}, got {source_kind!r}")
    if source_kind in KINDS_NEEDING_SPACING and not spacing:
        raise ValueError(f"{source_kind} scans carry no voxel spacing: give it (--spacing z,y,x in mm)")
    if spacing:
        parse_spacing(spacing)  # ValueError for a bad one
    ingest = _checked_ingest(ingest)
    files = _scans(folder, pattern, source_kind)
    ids = {specimen_id(p): p for p in files}
    if len(ids) != len(files):
        raise ValueError(f"two files of {folder} give the same id; rename them")
    splits = seeded_splits(ids, val=val, test=test, seed=seed)
    base = Path(os.path.abspath(out)).parent  # not resolve(): a symlinked data folder keeps its path
    words = ["tomo", "manifest-folder", os.path.relpath(os.path.abspath(folder), base), "-o", out.name]
    words += ["--pattern", pattern, "--kind", source_kind, "--species", species, "--licence", licence]
    words += ["--val", str(val), "--test", str(test), "--seed", str(seed)]
    words += (["--notes", notes] if notes else []) + ([] if checksums else ["--no-checksums"])
    words += ["--spacing", spacing] if spacing else []
    words += ["--attribution", attribution] if attribution else []
    words += [f"--{k}={v}" for k, v in ingest.items()]  # the = form: an orientation may start with '-'
    columns = _COLUMNS + tuple(ingest) + (("attribution",) if attribution else ())
    command = shlex.join(words)
    lines = [
        f"# generated in this file's folder by `{command}` (tomodata.manifest_folder): do not edit by hand",
        f"# {len(ids)} specimens of {Path(os.path.abspath(folder)).name}/{pattern}; splits by "
        f"seeded_splits(seed={seed}): "
        f"{test} test, {val} val, {len(ids) - val - test} train (docs/manifest.md)",
        "\t".join(columns),
    ]
    for sid in sorted(ids):
        path = ids[sid]
        row = dict(
            id=sid,
            species=species.format(id=sid),
            source=os.path.relpath(os.path.abspath(path), base),
            source_kind=source_kind,
            spacing_mm=spacing,
            slice_axis="z",
            split=splits[sid],
            licence=licence,
            sha256=source_sha256(path) if checksums else "",
            notes=notes,
            attribution=attribution,
            **ingest,
        )
        lines.append("\t".join(str(row[c]) for c in columns))

    def write(tmp: Path) -> None:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        load_manifest(tmp)  # a manifest that would not load is never put in place

    return atomic_write(out, write)
