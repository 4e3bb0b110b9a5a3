"""A scan file rotated into the canonical pose and written with its record: the work of ``tomo align``.

:func:`align_scan` reads a source (any format :func:`tomodata.ingest.read_specimen` reads), aligns it
(:func:`tomodata.align.align_to_canonical`, optionally registered to a reference aligned before) or
replays a recorded transform (an exported recipe: no registration), and writes ``NAME.nii.gz`` with
its record ``NAME.json`` (:func:`tomodata.aligned_files.save_aligned`). :func:`describe_alignment`
is the one line the command prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .align import align_to_canonical, apply_alignment, intensity_settings, prepare_reference
from .aligned_files import load_aligned, read_alignment_record, save_aligned
from .ingest import read_specimen

__all__ = ["align_scan", "describe_alignment"]


def align_scan(
    source,
    output,
    *,
    specimen_id: str | None = None,
    spacing=None,
    slice_axis: str = "z",
    orientation: str | None = None,
    allow_default_spacing: bool = False,
    window=None,
    background: float | None = None,
    reference=None,
    replay=None,
    threads: int | None = None,
    source_sha256: str | None = None,
    record_params: str | None = None,
) -> tuple[Path, tuple[int, ...], tuple[int, ...], dict]:
    """Align the scan ``source`` and write it to ``output`` (.nii.gz) with its record beside it.

    ``spacing`` (z, y, x mm), ``slice_axis``, ``orientation`` and ``allow_default_spacing`` are read as
    :func:`~tomodata.ingest.read_specimen` reads them; ``window`` and ``background`` are the
    specimen's intensity settings (as ``tomo cube`` takes them); ``reference``: an aligned volume
    (.nii.gz with its record) to register to, on the values it was aligned on; ``replay``: an alignment
    record (.json) whose transform is applied instead of aligning. ``source_sha256`` (the fetched
    source's) and ``record_params`` (the workflow's settings) go into the record.

    Returns ``(written path, aligned shape, source shape, record)``. ValueError names the specimen.
    """
    replay_record = read_alignment_record(replay) if replay else None  # before the work: a wrong file fails at once
    vol, sp = read_specimen(
        source,
        spacing=spacing,
        slice_axis=slice_axis,
        allow_default_spacing=allow_default_spacing,
        orientation=orientation,
    )
    scan = dict(
        spacing=None if spacing is None else [float(v) for v in spacing],
        slice_axis=slice_axis,
        orientation=orientation or "z,y,x",
        allow_default_spacing=bool(allow_default_spacing),
    )
    if replay_record is not None:
        record = replay_record
        aligned = apply_alignment(vol, sp, record)
        record.update(id=specimen_id, source_path=str(source), replayed_from=str(replay), scan=scan)
        record.pop("source_sha256", None)  # the recorded one is the replayed file's source, not this one's
    else:
        aligned, record = _align(vol, sp, specimen_id, reference, window, background, threads)
        record.update(
            id=specimen_id,
            source_path=str(source),
            reference=str(reference) if reference else None,
            slice_axis=slice_axis,
            orientation=orientation,
            scan=scan,
        )
        if record_params:
            record["workflow_params"] = record_params
    if source_sha256:  # the source as fetched, for the cube's record (it reads the aligned file)
        record["source_sha256"] = source_sha256
    out = save_aligned(output, aligned, record["output_spacing_zyx"], record)
    return out, tuple(aligned.shape), tuple(vol.shape), record


def _align(vol, sp, specimen_id, reference, window, background, threads) -> tuple[Any, dict]:
    """:func:`align_to_canonical` of ``vol``, registered to ``reference`` (a path) where given."""
    ref = None
    if reference:  # on the values it was aligned on (its record's window and background)
        ref_vol, ref_sp, ref_rec = load_aligned(reference)
        try:
            ref = prepare_reference(ref_vol, ref_sp, **intensity_settings(ref_rec))
        except ValueError as e:
            raise ValueError(f"reference {reference}: {e}") from None
    try:
        return align_to_canonical(vol, sp, reference=ref, window=window, density_background=background, threads=threads)
    except ValueError as e:
        raise ValueError(f"specimen {specimen_id}: {e}" if specimen_id else str(e)) from None


def describe_alignment(record: Mapping) -> str:
    """How a record's pose was found, for the command's line: the registration's NCC (or moments
    alone), a rejected registration, and the bone threshold on density values."""
    if record.get("replayed_from"):
        return "the recorded transform"
    how = (
        f"NCC with the reference {record['ncc_before']:.3f} -> {record['ncc_after']:.3f}"
        if record.get("reference")
        else "moments alone (the reference)"
    )
    if record.get("registration_rejected"):
        how += f" (registration rejected: it gave {record['registration_rejected']['ncc']:.3f}; candidate pose kept)"
    it = record["intensity"]
    if it["values"] == "density":
        how += f", bone > {record['bone_threshold']:.3g} in density" + (
            f" (window {it['window'][0]:g},{it['window'][1]:g})" if it["window"] else ""
        )
    return how
