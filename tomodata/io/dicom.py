"""DICOM series (a folder of single-frame files, or one multi-frame file) → (n, rows, cols) float32
after RescaleSlope/RescaleIntercept, slices sorted by position along the slice normal; clinical
geometry (gantry tilt, uneven gaps) corrected as dcm2niix does; a gap of missing slices and mixed
PixelSpacing refused. Spacing (dz, dy, dx) in mm: z from the positions, (y, x) = PixelSpacing.
Files are read through :mod:`tomodata.image_files`, the project's one DICOM path."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

import numpy as np
from scipy import ndimage

from ..image_files import dicom_pixels, read_dicom
from .common import (
    DICOM_SUFFIXES,
    Spacing,
    _few,
    _file_spacing,
    _folder_files,
    _has_dicom_preamble,
    _refuse_text,
    _warn_skipped,
)


class _Slice:
    __slots__ = ("source", "pos", "iop", "slope", "inter", "instance", "rows", "cols", "pixel_spacing", "get")

    def __init__(self, source, pos, iop, slope, inter, instance, rows, cols, pixel_spacing, get):
        self.source, self.pos, self.iop = source, pos, iop
        self.slope, self.inter, self.instance = slope, inter, instance
        self.rows, self.cols, self.pixel_spacing, self.get = rows, cols, pixel_spacing, get


def _floats(v, n: int):
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(x) for x in out) else None


def _seq_item(ds, *names):
    """ds.<names[0]>[0].<names[1]>[0]… or None."""
    cur = ds
    for name in names:
        seq = getattr(cur, name, None)
        if not seq:
            return None
        cur = seq[0]
    return cur


def _dicom_series_key(ds) -> str:
    return str(getattr(ds, "SeriesInstanceUID", "") or "")


def _read_dicom(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """DICOM series folder (or one multi-frame file) → (n, rows, cols) float32 after rescale."""
    members = _dicom_series(p)
    slices = [s for f, ds in members for s in _file_slices(f, ds)]
    if p.is_file() and len(slices) == 1:
        raise ValueError(f"{p}: a single-frame DICOM file is one slice; pass the folder that holds the series")
    s0 = slices[0]  # taken before sorting: its size, orientation and PixelSpacing stand for the series
    _check_slices(p, slices)
    ds0 = members[0][1]
    dz, geometry = None, None
    if all(s.pos is not None for s in slices) and s0.iop is not None:
        slices, dz, geometry = _order_by_position(p, slices, s0.iop)
    else:
        dz = _order_by_instance(p, slices, ds0)
    if len(slices) == 1 and dz is None:
        v = getattr(ds0, "SpacingBetweenSlices", None) or getattr(ds0, "SliceThickness", None)
        dz = float(v) if v is not None else None
    vol = _stack_slices(slices, s0.rows, s0.cols)
    spacing = None
    if geometry is not None and dz is not None:  # dz is set wherever geometry is
        vol = _regrid_dicom(vol, geometry, dz, s0.pixel_spacing, p)
    if dz is not None and s0.pixel_spacing is not None:
        spacing = _file_spacing((dz, s0.pixel_spacing[0], s0.pixel_spacing[1]), p, "DICOM")
    return vol, spacing


def _dicom_headers(p: Path) -> tuple[list[tuple[Path, Any]], list[str]]:
    """(file, header without pixels) of every DICOM image at ``p``, and the names of the files skipped."""
    files = [p] if p.is_file() else _folder_files(p)
    headers = []
    skipped = []
    for f in files:
        if f.name.upper() == "DICOMDIR":
            skipped.append(f.name)
            continue
        try:
            ds = read_dicom(
                f,
                pixels=False,
                force=_has_dicom_preamble(f) is False and (f.suffix.lower() in DICOM_SUFFIXES or f.suffix == ""),
            )
        except ValueError:
            ds = None
        if ds is None or "Rows" not in ds or "Columns" not in ds:
            skipped.append(f.name)
            continue
        headers.append((f, ds))
    return headers, skipped


def _dicom_series(p: Path) -> list[tuple[Path, Any]]:
    """The (file, header) pairs of the one series at ``p``: non-DICOM files (and sub-folders, hidden
    files) skipped with a warning; no DICOM image, or several SeriesInstanceUIDs (listed), is a ValueError."""
    headers, skipped = _dicom_headers(p)
    if not headers:
        if p.is_file():
            _refuse_text(p, "DICOM file")
        raise ValueError(f"{p}: no DICOM images found{' (skipped: ' + ', '.join(skipped[:5]) + ')' if skipped else ''}")
    _warn_skipped(p, skipped, "DICOM images", stacklevel=4)  # the caller of read_volume
    series: dict[str, list] = {}
    for f, ds in headers:
        series.setdefault(_dicom_series_key(ds), []).append((f, ds))
    if len(series) > 1:
        lines = []
        for uid, members in series.items():
            ds = members[0][1]
            lines.append(
                f"  SeriesInstanceUID {uid or '(none)'}: {len(members)} file(s), SeriesNumber "
                f"{getattr(ds, 'SeriesNumber', '?')}, {getattr(ds, 'Modality', '?')} "
                f"{str(getattr(ds, 'SeriesDescription', '')).strip()!r}, e.g. {members[0][0].name}"
            )
        raise ValueError(
            f"{p}: the folder mixes {len(series)} DICOM series; put each series in a folder of its own:\n"
            + "\n".join(lines)
        )
    return next(iter(series.values()))


def _file_slices(f: Path, ds) -> list[_Slice]:
    """The slices of one file (one, or one per frame of a multi-frame file; frames are read now,
    single slices when stacked), with geometry and rescale from the header or its functional groups."""
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise ValueError(f"{f}: colour DICOM images (SamplesPerPixel {ds.SamplesPerPixel}) are not supported")
    shared = _seq_item(ds, "SharedFunctionalGroupsSequence")
    ps = _floats(getattr(ds, "PixelSpacing", None), 2)
    if ps is None and shared is not None:
        ps = _floats(getattr(_seq_item(shared, "PixelMeasuresSequence"), "PixelSpacing", None), 2)
    iop = _floats(getattr(ds, "ImageOrientationPatient", None), 6)
    if iop is None and shared is not None:
        iop = _floats(getattr(_seq_item(shared, "PlaneOrientationSequence"), "ImageOrientationPatient", None), 6)
    slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
    inter = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if shared is not None and "RescaleSlope" not in ds:
        pvt = _seq_item(shared, "PixelValueTransformationSequence")
        if pvt is not None:
            slope = float(getattr(pvt, "RescaleSlope", 1.0) or 1.0)
            inter = float(getattr(pvt, "RescaleIntercept", 0.0) or 0.0)
    instance = int(getattr(ds, "InstanceNumber", 0) or 0)
    if nframes == 1:
        pos = _floats(getattr(ds, "ImagePositionPatient", None), 3)
        return [_Slice(f, pos, iop, slope, inter, instance, rows, cols, ps, _dicom_pixels(f, None))]
    per = getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []
    frames = _dicom_pixels(f, nframes)
    out = []
    for k in range(nframes):
        pos = None
        if k < len(per):
            pos = _floats(getattr(_seq_item(per[k], "PlanePositionSequence"), "ImagePositionPatient", None), 3)
        out.append(_Slice(f"{f} frame {k}", pos, iop, slope, inter, k, rows, cols, ps, _frame_getter(frames, k)))
    return out


def _check_slices(p: Path, slices: list[_Slice]) -> None:
    """One slice size, one orientation (direction cosines within 1e-3) and one PixelSpacing (mm,
    within a relative 1e-4) in the series, else a ValueError."""
    _check_pixel_spacing(p, slices)
    s0 = slices[0]
    for s in slices[1:]:
        if (s.rows, s.cols) != (s0.rows, s0.cols):
            raise ValueError(
                f"{s.source}: {s.cols}×{s.rows} pixels but {s0.source} has {s0.cols}×{s0.rows}; one series "
                "must have one slice size"
            )
        if s.iop is not None and s0.iop is not None and not np.allclose(s.iop, s0.iop, atol=1e-3):
            raise ValueError(
                f"{s.source}: ImageOrientationPatient {s.iop} differs from {s0.source} ({s0.iop}); "
                "the series mixes orientations (e.g. a localizer)"
            )


#: Relative tolerance on PixelSpacing (mm) within a series: float noise in the decimal strings, not
#: a second spacing (0.6 vs 0.6000001 agree; 0.488 vs 0.4883 do not).
PIXEL_SPACING_RTOL = 1e-4


def _check_pixel_spacing(p: Path, slices: list[_Slice]) -> None:
    """A ValueError listing the PixelSpacing values (row, column mm) of the series and the files
    holding each where they differ by more than ``PIXEL_SPACING_RTOL`` (or some slices have none):
    the stack would be read at the first slice's spacing."""
    groups: list[tuple[Any, list[_Slice]]] = []
    for s in slices:
        for ps, members in groups:
            same = ps is None and s.pixel_spacing is None
            if ps is not None and s.pixel_spacing is not None:
                same = bool(np.allclose(s.pixel_spacing, ps, rtol=PIXEL_SPACING_RTOL, atol=0.0))
            if same:
                members.append(s)
                break
        else:
            groups.append((s.pixel_spacing, [s]))
    if len(groups) > 1:
        lines = [
            f"  {'none' if ps is None else ' × '.join(f'{v:g}' for v in ps) + ' mm'}: {len(members)} slice(s), "
            + _few([Path(str(m.source)).name for m in members], 3)
            for ps, members in groups
        ]
        raise ValueError(
            f"{p}: the series mixes {len(groups)} PixelSpacing values "
            "(row × column); one series must have one pixel size (a mixed or edited export?):\n" + "\n".join(lines)
        )


def _order_by_position(p: Path, slices: list[_Slice], iop) -> tuple[list[_Slice], float | None, dict | None]:
    """Slices sorted by position along the normal (row × column cosines of ``iop``), the slice step dz
    in mm (None for one slice) and the geometry to correct (None when the stack is regular)."""
    r, c = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(r, c)
    proj = np.array([float(np.dot(s.pos, normal)) for s in slices])
    order = np.argsort(proj, kind="stable")
    slices = [slices[i] for i in order]
    proj = proj[order]
    if len(slices) == 1:
        return slices, None, None
    gaps = np.diff(proj)
    if np.any(gaps <= 1e-4):
        i = int(np.argmax(gaps <= 1e-4))
        raise ValueError(
            f"{p}: {slices[i].source} and {slices[i + 1].source} lie at the same position "
            f"({proj[i]:.4f} mm along the slice normal); duplicate slices or several acquisitions in one series"
        )
    _check_missing_slices(p, slices, proj)
    med = float(np.median(gaps))
    tol = max(0.01 * med, 0.01)
    uneven = bool(np.any(np.abs(gaps - med) > tol))
    dz = med if uneven else float((proj[-1] - proj[0]) / (len(slices) - 1))
    offsets = np.array(
        [
            [np.dot(np.asarray(sl.pos) - slices[0].pos, c), np.dot(np.asarray(sl.pos) - slices[0].pos, r)]
            for sl in slices
        ]
    )
    tilted = bool(np.abs(offsets).max() > 0.01 * abs(proj[-1] - proj[0]) + 1e-3)
    geometry = None
    if uneven or tilted:
        geometry = dict(
            positions_mm=(proj - proj[0]).tolist(),
            inplane_offsets_mm=offsets.tolist(),
            uneven=uneven,
            tilted=tilted,
        )
    return slices, dz, geometry


#: A gap between neighbouring slices larger than this many times the local slice step (the larger
#: of the median gaps just before and just after it) is missing slices: a ValueError, not resampled.
#: Between 2 and 3: a gap of twice the step (one dropped slice: one interpolated slice, like any
#: uneven gap) is still resampled with the clinical-geometry warning; two or more consecutive missing
#: slices (≥ 3 steps) are refused. A change of slice thickness (2.5 mm, then 10 mm) is no gap: the
#: local step after it is the thick one. The real GE head series (gaps 1.1 … 7.0 mm, a 4 mm part
#: then a 7 mm part) stays at 1.0 × its local step, and below 1.75 × even its overall median gap.
MISSING_GAP_FACTOR = 2.5
#: How many gaps on each side of a gap give its local step (their median).
_LOCAL_GAPS = 3


def _check_missing_slices(p: Path, slices: list[_Slice], proj: np.ndarray) -> None:
    """ValueError at the first gap (mm along the normal, ``proj`` sorted) larger than
    ``MISSING_GAP_FACTOR`` × its local step, naming the two slices, the gap and how many slices
    seem missing; a series of 2 slices has no step to compare with."""
    gaps = np.diff(proj)
    for i, g in enumerate(gaps):
        sides = {"before": gaps[max(0, i - _LOCAL_GAPS) : i], "after": gaps[i + 1 : i + 1 + _LOCAL_GAPS]}
        steps = {side: float(np.median(x)) for side, x in sides.items() if len(x)}
        if steps and g > MISSING_GAP_FACTOR * max(steps.values()):
            raise ValueError(_missing_slices_message(p, slices[i], slices[i + 1], proj[i : i + 2] - proj[0], steps))


def _missing_slices_message(p: Path, a: _Slice, b: _Slice, at: np.ndarray, steps: dict[str, float]) -> str:
    """The error for a gap between slices ``a`` and ``b`` at ``at`` (mm from the first slice), whose
    local steps (mm, median of the gaps "before" and "after" it) are ``steps``."""
    g = float(at[1] - at[0])
    big, small = max(steps.values()), min(steps.values())
    lo, hi = (max(1, round(g / st) - 1) for st in (big, small))
    local = ", ".join(f"{v:.2f} mm {side}" for side, v in steps.items())
    numbers = ""
    if a.instance and b.instance and abs(b.instance - a.instance) > 1:
        numbers = f"; InstanceNumber jumps from {a.instance} to {b.instance}"
    return (
        f"{p}: slices seem to be missing between {Path(str(a.source)).name} and {Path(str(b.source)).name} "
        f"({at[0]:.2f} and {at[1]:.2f} mm from the first slice along the slice normal): a {g:.2f} mm gap, "
        f"{g / big:.1f}× the local slice step ({local}), about {lo if lo == hi else f'{lo} to {hi}'} "
        f"slice(s) missing{numbers}. Gaps up to {MISSING_GAP_FACTOR:g}× the local step are resampled; "
        "this one would be filled by interpolation. Add the missing files, or, where the gap is real (two "
        "separate slabs), put each part in a folder of its own and read them separately"
    )


def _order_by_instance(p: Path, slices: list[_Slice], ds0) -> float | None:
    """Without positions: sort ``slices`` in place by InstanceNumber (with a warning); dz in mm from
    the first header's SpacingBetweenSlices or SliceThickness, else None."""
    slices.sort(key=lambda s: s.instance)
    warnings.warn(
        f"{p}: no ImagePositionPatient/ImageOrientationPatient; slices ordered by InstanceNumber",
        UserWarning,
        stacklevel=4,  # the caller of read_volume
    )
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        v = getattr(ds0, name, None)
        if v is not None:
            return float(v)
    return None


def _stack_slices(slices: list[_Slice], rows: int, cols: int) -> np.ndarray:
    """(n, rows, cols) float32 of the slices' pixels × RescaleSlope + RescaleIntercept."""
    vol = np.empty((len(slices), rows, cols), dtype=np.float32)
    for i, s in enumerate(slices):
        px = s.get()
        if px.shape != (rows, cols):
            raise ValueError(f"{s.source}: pixel data of shape {px.shape}, expected {(rows, cols)}")
        np.multiply(px, s.slope, out=vol[i], casting="unsafe")
        vol[i] += s.inter
    return vol


def _regrid_dicom(vol: np.ndarray, geometry: dict, dz: float, pixel_spacing, p: Path) -> np.ndarray:
    """A clinical series as dcm2niix reads it: each slice shifted back by its in-plane offset from the
    first (gantry tilt: the slices were sheared), then the stack resampled linearly along the slice
    normal to uniform steps of the median gap. The original geometry goes into a UserWarning (the
    cube's record keeps it)."""
    pos = np.asarray(geometry["positions_mm"])
    if geometry["tilted"]:
        if pixel_spacing is None:
            raise ValueError(f"{p}: the slices are sheared (gantry tilt) but PixelSpacing is missing")
        dr, dc = (float(v) for v in pixel_spacing)
        for k, (b, a) in enumerate(geometry["inplane_offsets_mm"]):
            if abs(a) > 1e-6 or abs(b) > 1e-6:
                vol[k] = ndimage.shift(vol[k], (b / dr, a / dc), order=1, mode="constant", cval=float(vol[k].min()))
    if geometry["uneven"]:
        n = int(np.floor(pos[-1] / dz + 1e-6)) + 1
        z = dz * np.arange(n)
        hi = np.clip(np.searchsorted(pos, z, side="right"), 1, len(pos) - 1)
        w = ((z - pos[hi - 1]) / (pos[hi] - pos[hi - 1])).astype(np.float32)[:, None, None]
        vol = (1 - w) * vol[hi - 1] + w * vol[hi]
    gaps = np.diff(pos)
    shear = np.abs(np.asarray(geometry["inplane_offsets_mm"])).max(axis=0)
    warnings.warn(
        f"{p}: clinical geometry corrected: "
        + (
            f"slice gaps {gaps.min():.3f} … {gaps.max():.3f} mm resampled to {dz:.4f} mm ({len(vol)} slices); "
            if geometry["uneven"]
            else ""
        )
        + (
            f"slices de-sheared (gantry tilt: up to {shear[0]:.2f} mm along rows, {shear[1]:.2f} mm along columns "
            f"over {pos[-1]:.1f} mm, tilt {np.degrees(np.arctan2(np.hypot(*shear), pos[-1])):.1f}°); "
            if geometry["tilted"]
            else ""
        )
        + f"original slice positions (mm from the first): {', '.join(f'{v:.2f}' for v in pos)}",
        UserWarning,
        stacklevel=3,
    )
    return np.ascontiguousarray(vol, dtype=np.float32)


@overload
def _dicom_pixels(f, nframes: None) -> Callable[[], np.ndarray]: ...
@overload
def _dicom_pixels(f, nframes: int) -> np.ndarray: ...
def _dicom_pixels(f, nframes: int | None) -> Callable[[], np.ndarray] | np.ndarray:
    """A loader for one slice's pixels, or (multi-frame) the frames array itself."""

    def load():
        return dicom_pixels(read_dicom(f), f)

    if nframes is None:
        return load
    arr = load()
    if arr.ndim != 3 or arr.shape[0] != nframes:
        raise ValueError(f"{f}: expected {nframes} frames, got pixel data of shape {arr.shape}")
    return arr


def _frame_getter(frames: np.ndarray, k: int) -> Callable[[], np.ndarray]:
    return lambda: frames[k]
