"""Shared pieces of the volume readers: the suffix lists, spacing checks, the first-bytes checks on
files (empty, HTML, text, Git LFS pointer), folder listing in natural order and the colour → grey
conversion (BT.601 luma). Spacing is (dz, dy, dx) in mm; images are (h, w) or (h, w, c)."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

MOVIE_SUFFIXES = (".mp4", ".mov", ".avi", ".m4v", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NPY_SUFFIXES = (".npy", ".npz")
#: the first four bytes of a TIFF (little/big endian) and a BigTIFF
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def has_dicom_magic(head: bytes) -> bool:
    """``head`` (a file's first ≥ 132 bytes) holds DICOM's 128-byte preamble and "DICM"."""
    return head[128:132] == b"DICM"


#: Mean per-pixel channel spread (max − min over R, G, B) above which colour content is reported,
#: as a fraction of full scale (8 % ≈ 20 levels in 8 bits; lossy YUV 4:2:0 round trips of grey
#: content stay well below).
GREY_TOLERANCE = 0.08

_UNIT_TO_MM = {
    "mm": 1.0,
    "millimeter": 1.0,
    "millimetre": 1.0,
    "millimeters": 1.0,
    "millimetres": 1.0,
    "um": 1e-3,
    "µm": 1e-3,
    "μm": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "micrometer": 1e-3,
    "micrometre": 1e-3,
    "\\u00b5m": 1e-3,
    "nm": 1e-6,
    "nanometer": 1e-6,
    "cm": 10.0,
    "centimeter": 10.0,
    "centimetre": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
    "metre": 1000.0,
    "in": 25.4,
    "inch": 25.4,
}

Spacing = tuple[float, float, float]


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``slice2 < slice10`` (case-insensitive)."""
    parts = re.split(r"(\d+)", name.lower())
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def check_spacing(spacing: float | Sequence[float]) -> Spacing:
    """``spacing`` as 3 positive finite floats (z, y, x) in mm; one number means isotropic."""
    if isinstance(spacing, (bool, np.bool_)):
        raise ValueError(f"spacing must be a positive number or 3 positive numbers (z, y, x) in mm, not {spacing!r}")
    values: list[Any]
    if np.ndim(spacing) == 0:
        values = [spacing] * 3
    else:
        values = list(np.asarray(spacing, dtype=object).ravel())
        if len(values) != 3:
            raise ValueError(f"spacing must be one number or 3 numbers (z, y, x) in mm, got {len(values)}: {spacing!r}")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"spacing values must be numbers (mm), got {spacing!r}") from None
        if not math.isfinite(f) or f <= 0.0:
            raise ValueError(f"spacing values must be positive and finite (mm), got {spacing!r}")
        out.append(f)
    return (out[0], out[1], out[2])


def _no_spacing_error(p: Path, kind: str) -> ValueError:
    return ValueError(
        f"{p}: the {kind} gives no voxel spacing; give it in mm, z,y,x (or one number for isotropic "
        "voxels): `tomo cube/align --spacing`, the manifest's spacing_mm column, or spacing= in Python; or "
        "accept 1.0 mm with a warning: `--allow-default-spacing`, data.cube.allow_default_spacing, "
        "allow_default_spacing=True"
    )


def _file_spacing(values, p: Path, what: str) -> Spacing | None:
    """Validated file spacing (z, y, x) or None with a warning when the file's values are unusable."""
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        vals = []
    if len(vals) == 3 and all(math.isfinite(v) and v > 0 for v in vals):
        return (vals[0], vals[1], vals[2])
    warnings.warn(f"{p}: ignoring unusable {what} spacing {values!r}", UserWarning, stacklevel=3)
    return None


def _check_volume(arr: np.ndarray, p: Path) -> np.ndarray:
    """The check every volume passes (each reader's array, before spacing is applied): 3-D, at least 2
    voxels along every axis (a single slice is no volume: resampled, it became a flat slab), a numeric
    dtype; returned C-contiguous in native byte order (the values unchanged: the numba kernels of
    :mod:`tomodata.resample` take no big-endian arrays)."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"{p}: expected a 3-D volume, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{p}: the volume is empty (shape {arr.shape})")
    if min(arr.shape) < 2:
        raise ValueError(
            f"{p}: a volume needs at least 2 voxels along every axis, got shape {arr.shape} (a single slice?)"
        )
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise ValueError(f"{p}: unsupported data type {arr.dtype}")
    if not arr.dtype.isnative:  # e.g. '>i2' from an NRRD with `endian: big`, a .npy saved as '>f4'
        arr = arr.astype(arr.dtype.newbyteorder("="), order="C")
    if isinstance(arr, np.memmap) or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C")
    return arr


def _head(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise ValueError(f"{p}: cannot read ({exc})") from None


def _refuse_empty(p: Path, what: str) -> None:
    """``ValueError`` if the file ``p`` is empty (0 bytes): a copy cut off, a placeholder."""
    if p.stat().st_size == 0:
        raise ValueError(f"{p}: the file is empty (0 bytes), not a {what}")


def _refuse_text(p: Path, what: str) -> None:
    """``ValueError`` if the binary file ``p`` is empty or is really HTML / text (a failed download)."""
    _refuse_empty(p, what)
    head = _head(p, 2048)
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if body.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in body[:1024]:
        raise ValueError(
            f"{p}: this looks like an HTML page, not a {what} (a download that returned an error or login page?)"
        )
    if body.startswith(b"version https://git-lfs"):
        raise ValueError(f"{p}: this is a Git LFS pointer file, not a {what} (run `git lfs pull`)")
    if body.startswith(b"<?xml"):
        raise ValueError(f"{p}: this looks like an XML document, not a {what}")
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return
        printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
        if printable >= 0.95 * len(text):
            raise ValueError(f"{p}: this looks like a text file, not a {what}: {text[:80].strip()!r}")


def _folder_files(p: Path) -> list[Path]:
    return sorted(
        (q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")), key=lambda q: natural_key(q.name)
    )


def _warn_skipped(p: Path, skipped: Sequence[str], what: str, stacklevel: int) -> None:
    """One ``UserWarning`` naming what a folder reader left out: ``skipped`` (files that are not
    ``what``, e.g. "DICOM images"), the sub-folders of ``p`` (never read) and its hidden entries
    (``.DS_Store``, ``._*``: counted, a few named); nothing when all three are empty. ``stacklevel``
    points at the caller of ``read_volume``. The CLI prints it; ``tomo cube`` keeps it in the record's
    ``read_notes``."""
    entries = sorted(p.iterdir(), key=lambda q: natural_key(q.name)) if p.is_dir() else []
    subs = [q.name for q in entries if q.is_dir() and not q.name.startswith(".")]
    hidden = [q.name for q in entries if q.name.startswith(".")]
    parts = []
    if skipped:
        parts.append(f"{len(skipped)} file(s) that are not {what}: {_few(skipped)}")
    if subs:
        parts.append(f"{len(subs)} sub-folder(s), not read: {_few([s + '/' for s in subs])}")
    if hidden:
        parts.append(f"{len(hidden)} hidden file(s) or folder(s): {_few(hidden, 3)}")
    if parts:
        warnings.warn(f"{p}: skipped " + "; ".join(parts), UserWarning, stacklevel=stacklevel + 1)


def _few(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` names, comma-separated, with " …" where there are more."""
    return ", ".join(names[:n]) + (" …" if len(names) > n else "")


def _has_dicom_preamble(f: Path) -> bool:
    try:
        with open(f, "rb") as fh:
            return has_dicom_magic(fh.read(132))
    except OSError:
        return False


def _is_dicom_file(f: Path) -> bool:
    s = f.suffix.lower()
    if s in DICOM_SUFFIXES or f.name.upper() == "DICOMDIR":
        return True
    if s in IMAGE_SUFFIXES or s in MOVIE_SUFFIXES:
        return False
    return _has_dicom_preamble(f)


def _full_scale(img: np.ndarray) -> float:
    if img.dtype.kind in "ui":
        return float(np.iinfo(img.dtype).max)
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    return max(hi - lo, 1e-12)


def _colour_spread(img: np.ndarray) -> float:
    """Mean channel spread (max − min over the first 3 channels) as a fraction of full scale."""
    c = img[..., :3]
    return float((c.max(axis=-1).astype(np.float64) - c.min(axis=-1)).mean()) / _full_scale(img)


def _to_grey(img: np.ndarray, order: str) -> np.ndarray:
    """(h, w, c) colour image → (h, w) BT.601 luma in the same dtype; ``order`` 'bgr' or 'rgb'."""
    c = img.shape[-1]
    if c == 1:
        return img[..., 0]
    if c == 2:  # grey + alpha
        return np.ascontiguousarray(img[..., 0])
    rgb = np.ascontiguousarray(img[..., :3])
    if rgb.dtype in (np.uint8, np.uint16, np.float32):
        return cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY if order == "bgr" else cv2.COLOR_RGB2GRAY)
    w = np.array([0.114, 0.587, 0.299] if order == "bgr" else [0.299, 0.587, 0.114])
    y = rgb.astype(np.float64) @ w
    if rgb.dtype.kind in "ui":
        info = np.iinfo(rgb.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    return y.astype(rgb.dtype)


def _warn_colour(p: Path, spread: float) -> None:
    if spread > GREY_TOLERANCE:
        warnings.warn(
            f"{p}: colour content (mean channel spread {100 * spread:.1f} % of full scale); converted to "
            "grey by BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B",
            UserWarning,
            stacklevel=4,
        )


def _to_mm(unit: str | None) -> float | None:
    if unit is None:
        return None
    u = str(unit).strip().lower()
    return _UNIT_TO_MM.get(u)
