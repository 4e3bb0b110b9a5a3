"""Files and pictures of aligned volumes (:mod:`tomodata.align`): NIfTI + JSON record, the species
table's summary of a record, and a contact sheet of max projections.

An aligned volume ``NAME.nii.gz`` (or ``.nii``) holds ``aligned[z, y, x]`` in nibabel's (x, y, z) order
with zooms = spacing in mm; its alignment record is ``NAME.json`` beside it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np

from .files import atomic_write, read_json_object, write_text
from .io import read_volume
from .previews import to_png, write_png
from .volume_files import nifti_image

__all__ = [
    "ALIGNMENT_KEYS",
    "SUMMARY_KEYS",
    "aligned_name",
    "alignment_summary",
    "check_volume",
    "contact_sheet",
    "load_aligned",
    "read_alignment_record",
    "save_aligned",
]


def check_volume(volume, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """``(volume, spacing)`` as arrays after checking a real, finite 3-D ``volume[z, y, x]`` (>= 2
    voxels per axis) and 3 positive finite spacings (mm, z, y, x); ``ValueError`` otherwise."""
    vol = np.asarray(volume)
    if vol.ndim != 3 or min(vol.shape) < 2:
        raise ValueError(f"volume must be a 3-D array [z, y, x] with >= 2 voxels per axis, got shape {vol.shape}")
    if not (np.issubdtype(vol.dtype, np.integer) or np.issubdtype(vol.dtype, np.floating)):
        raise ValueError(f"volume must hold real numbers, got dtype {vol.dtype}")
    if np.issubdtype(vol.dtype, np.floating) and not np.isfinite(vol).all():
        raise ValueError("volume contains NaN or inf")
    try:
        sp = np.asarray(spacing_zyx, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_zyx must be 3 positive numbers (mm, z, y, x), got {spacing_zyx!r}") from None
    if sp.size != 3 or not np.all(np.isfinite(sp)) or not np.all(sp > 0):
        raise ValueError(f"spacing_zyx must be 3 positive finite numbers (mm, z, y, x), got {spacing_zyx!r}")
    return vol, sp


def _stem(path: Path) -> Path:
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            return path.with_name(name[: -len(suf)])
    raise ValueError(f"{path}: the aligned volume is written as NIfTI; give a .nii.gz or .nii path")


def aligned_name(path) -> str:
    """The specimen name of an aligned file: ``A_J.nii.gz`` → ``A_J`` (ids may hold dots)."""
    return _stem(Path(path)).name


#: The keys an alignment record needs to be replayed (:func:`tomodata.align.apply_alignment`).
ALIGNMENT_KEYS = ("rotation_zyx", "centre_mm_zyx", "output_shape", "output_spacing_zyx", "background")

#: The keys of an alignment record that the store's species table keeps.
SUMMARY_KEYS = (
    "reference",
    "rotation_zyx",
    "translation_mm_zyx",
    "euler_xyz_deg",
    "candidate",
    "ncc_before",
    "ncc_after",
    "weak_match",
    "rms_before",
    "rms_after",
    "convention",
    "centre_mm_zyx",
    "output_shape",
    "output_spacing_zyx",
    "background",
    "scan",
)


def alignment_summary(record: Mapping | None) -> dict | None:
    """The species table's copy of an alignment record (None: the specimen was not aligned)."""
    if not record:
        return None
    return {k: record[k] for k in SUMMARY_KEYS if k in record}


def save_aligned(path, aligned: np.ndarray, spacing_zyx, record: Mapping | None = None) -> Path:
    """Write ``aligned[z, y, x]`` as NIfTI (nibabel (x, y, z) array, zooms = spacing in mm, dtype
    kept, affine = diag(spacing) with the grid centre at 0 mm) and ``record`` as ``<stem>.json``.

    Both files are written atomically; ``tomodata.io.read_volume`` returns the same array and spacing.
    """
    path = Path(path)
    json_path = _stem(path).with_name(_stem(path).name + ".json")
    vol, sp = check_volume(aligned, spacing_zyx)
    data = np.asarray(vol).transpose(2, 1, 0)
    affine = np.diag([*sp[::-1], 1.0])
    affine[:3, 3] = -(np.array(data.shape) - 1) / 2.0 * sp[::-1]
    img = nifti_image(data, affine)  # zooms = spacing: the affine's diagonal
    img.header.set_data_dtype(vol.dtype)
    atomic_write(path, lambda tmp: nib.save(img, tmp))
    text = json.dumps(dict(record or {}), indent=1, sort_keys=True)
    write_text(json_path, text + "\n")
    return path


def load_aligned(path) -> tuple[np.ndarray, tuple[float, float, float], dict]:
    """``(aligned[z, y, x], spacing_zyx mm, record)`` as written by :func:`save_aligned`."""
    path = Path(path)
    vol, sp = read_volume(path)
    json_path = _stem(path).with_name(_stem(path).name + ".json")
    record = read_json_object(json_path, "alignment record") if json_path.exists() else {}
    return vol, sp, record


def read_alignment_record(path) -> dict:
    """The alignment record in ``path`` (``tomo align``'s JSON), checked to hold :data:`ALIGNMENT_KEYS`;
    ``ValueError`` naming the file otherwise (not JSON, not an object, another kind of JSON file)."""
    return read_json_object(path, "alignment record", keys=ALIGNMENT_KEYS)


def _projections(vol: np.ndarray, spacing, px_per_mm: float) -> list[np.ndarray]:
    """Max-intensity projections, canonical orientation: side (along z; rows y, cols x: dorsal up,
    snout right), top (along y; rows z, cols x), front (along x; rows y, cols z); each resized (area
    average) to ``px_per_mm`` and scaled to [0, 1] between its own median and 99.5th percentile."""
    sp = np.asarray(spacing, float)
    views = ((vol.max(axis=0), 1, 2), (vol.max(axis=1), 0, 2), (vol.max(axis=2).T, 1, 0))
    out = []
    for img, r, col in views:
        rows, cols = (max(1, round(vol.shape[a] * sp[a] * px_per_mm)) for a in (r, col))
        img = cv2.resize(img.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
        lo, hi = np.percentile(img, [50.0, 99.5])
        out.append(np.clip((img - lo) / max(hi - lo, 1e-12), 0.0, 1.0))
    return out


_VIEWS = ("side", "top", "front")  # the panels of a tile, in :func:`_projections`' order


def contact_sheet(volumes: Mapping[str, Any], out_png, *, cols: int = 4, panel_px: int = 96) -> Path:
    """PNG grid of specimens (``name -> volume[z, y, x]`` or ``(volume, spacing_zyx)``), ``cols`` per
    row (fewer where there are fewer specimens); each tile is the name above the side | top | front
    max projections (:func:`_projections`), each labelled in its corner, all at one scale (mm per
    pixel) so that the largest specimen fills ``panel_px`` (a small one beside a large one stays
    small: sizes compare). Grey, uint8; the image is ``c·(3·panel_px + 16) + 4`` wide (c = min(cols,
    n)) and ``rows·(panel_px + 22) + 4`` high.
    """
    if Path(out_png).suffix.lower() != ".png":  # OpenCV picks its writer by the suffix
        raise ValueError(f"{out_png}: the sheet is a PNG; give the output a .png name")
    items = [(str(k), *(v if isinstance(v, tuple) else (v, (1.0, 1.0, 1.0)))) for k, v in volumes.items()]
    if not items or cols < 1 or panel_px < 8:
        raise ValueError("contact_sheet needs at least one volume, cols >= 1 and panel_px >= 8")
    items = [(k, *check_volume(v, s)) for k, v, s in items]
    extent = max(float(np.max(np.array(v.shape) * s)) for _, v, s in items)
    px_per_mm = panel_px / extent
    cols = min(cols, len(items))
    rows = -(-len(items) // cols)
    tile_w, tile_h, label_h = 3 * panel_px + 16, panel_px + 22, 18
    sheet = np.zeros((rows * tile_h + 4, cols * tile_w + 4), np.uint8)
    for i, (name, vol, sp) in enumerate(items):
        y0, x0 = 4 + (i // cols) * tile_h, 4 + (i % cols) * tile_w
        cv2.putText(sheet, name[:32], (x0 + 2, y0 + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 255, 1, cv2.LINE_AA)
        for j, img in enumerate(_projections(vol, sp, px_per_mm)):
            img = to_png(img[:panel_px, :panel_px])
            oy = y0 + label_h + (panel_px - img.shape[0]) // 2
            ox = x0 + j * (panel_px + 4) + (panel_px - img.shape[1]) // 2
            sheet[oy : oy + img.shape[0], ox : ox + img.shape[1]] = img
            corner = (x0 + j * (panel_px + 4) + 2, y0 + label_h + panel_px - 3)
            cv2.putText(sheet, _VIEWS[j], corner, cv2.FONT_HERSHEY_SIMPLEX, 0.3, 160, 1, cv2.LINE_AA)
    return write_png(out_png, sheet)
