"""Folders of slice images (PNG, BMP, JPEG, TIFF; natural file-name order) and multi-page TIFF, read
into (z, y, x) arrays in the slices' own dtype (16-bit stays uint16, float stays float; colour becomes
BT.601 luma). TIFF goes through :func:`tomodata.image_files.read_tiff`, the project's one TIFF path;
TIFF spacing (mm) from OME PhysicalSize*, ImageJ spacing/unit or the resolution tags."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from ..image_files import read_tiff
from .common import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    Spacing,
    _colour_spread,
    _file_spacing,
    _folder_files,
    _refuse_text,
    _to_grey,
    _to_mm,
    _warn_colour,
    _warn_skipped,
)

_IMAGE_FAMILIES = {".png": "png", ".bmp": "bmp", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}


def _read_slice(f: Path) -> tuple[np.ndarray, float]:
    """One slice file → (2-D array in its own dtype, colour spread).

    TIFF goes through :func:`tomodata.image_files.read_tiff` (tifffile, OpenCV's libtiff where
    tifffile cannot decode it); other images through OpenCV."""
    if f.suffix.lower() in TIFF_SUFFIXES:
        img, axes, _, _ = read_tiff(f)
        if img.ndim == 3 and axes.endswith("S"):
            return _to_grey(img, "rgb"), _colour_spread(img)
        if img.ndim != 2:
            raise ValueError(f"{f}: a slice must be one 2-D image, this TIFF holds shape {img.shape} ({axes})")
        return img, 0.0
    try:
        data = np.fromfile(f, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"{f}: cannot read ({exc})") from None
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise ValueError(f"{f}: cannot decode this image (empty, truncated or not a {f.suffix} file)")
    if decoded.ndim == 3:
        return _to_grey(decoded, "bgr"), _colour_spread(decoded) if decoded.shape[-1] >= 3 else 0.0
    return decoded, 0.0


def _read_image_folder(p: Path) -> tuple[np.ndarray, None]:
    """Folder of slice images, natural file-name order → (n, h, w) in the slices' dtype. Other files,
    sub-folders and hidden files are skipped with a warning, as a DICOM folder's are."""
    listed = _folder_files(p)
    files = [f for f in listed if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{p}: the folder holds no slice images ({' '.join(IMAGE_SUFFIXES)})")
    others = [f.name for f in listed if f.suffix.lower() not in IMAGE_SUFFIXES]
    _warn_skipped(p, others, f"slice images ({' '.join(IMAGE_SUFFIXES)})", stacklevel=3)
    families: dict[str, int] = {}
    for f in files:
        fam = _IMAGE_FAMILIES[f.suffix.lower()]
        families[fam] = families.get(fam, 0) + 1
    if len(families) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sorted(families.items()))
        raise ValueError(f"{p}: the folder mixes image formats ({listing}); keep only the slices")
    first, spread = _read_slice(files[0])
    vol = np.empty((len(files),) + first.shape, dtype=first.dtype)
    vol[0] = first
    for i, f in enumerate(files[1:], start=1):
        img, s = _read_slice(f)
        if img.shape != first.shape:
            raise ValueError(
                f"{f}: slice size {img.shape[1]}×{img.shape[0]} differs from {files[0].name} "
                f"({first.shape[1]}×{first.shape[0]}); all slices must have the same size"
            )
        if img.dtype != first.dtype:
            raise ValueError(
                f"{f}: slice data type {img.dtype} differs from {files[0].name} ({first.dtype}); all "
                "slices must have the same bit depth"
            )
        vol[i] = img
        spread = max(spread, s)
    _warn_colour(p, spread)
    return vol, None


def _tiff_spacing(tf, p: Path) -> Spacing | None:
    """Spacing (z, y, x) mm from OME, ImageJ or resolution tags; None unless all three are known."""
    page = tf.pages[0]
    if tf.is_ome and tf.ome_metadata:
        try:
            root = ET.fromstring(tf.ome_metadata)
            px = next(e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels")
            vals = []
            for ax in ("Z", "Y", "X"):
                v = px.get(f"PhysicalSize{ax}")
                scale = _to_mm(px.get(f"PhysicalSize{ax}Unit", "µm"))
                vals.append(None if v is None or scale is None else float(v) * scale)
            if all(v is not None for v in vals):
                return _file_spacing(vals, p, "OME-TIFF")
        except (ET.ParseError, StopIteration, ValueError):
            pass
    try:
        xres, yres = (float(r) for r in page.resolution)
        unit = int(page.resolutionunit)
    except (TypeError, ValueError, AttributeError):
        return None
    ij = tf.imagej_metadata or {}
    if unit == 1:  # RESUNIT.NONE: ImageJ writes its own unit in the description
        scale = _to_mm(ij.get("unit"))
    else:
        scale = {2: 25.4, 3: 10.0}.get(unit)
    z = ij.get("spacing")
    if scale is None or z is None or xres <= 0 or yres <= 0:
        return None
    return _file_spacing((float(z) * scale, scale / yres, scale / xres), p, "TIFF")


def _read_tiff(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """Multi-page TIFF → (pages, h, w) in the file's dtype; colour samples become luma."""
    _refuse_text(p, "TIFF file")
    try:
        arr, axes, sp, _ = read_tiff(p, meta=lambda tf: _tiff_spacing(tf, p))
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{p}: cannot read this TIFF ({exc})") from None
    if axes.endswith("S") and arr.ndim == 4:
        spread = _colour_spread(arr[:: max(1, arr.shape[0] // 8)])
        arr = np.stack([_to_grey(a, "rgb") for a in arr])
        _warn_colour(p, spread)
        axes = axes[:-1]
    if arr.ndim == 2:
        raise ValueError(f"{p}: the TIFF holds one 2-D image (shape {arr.shape}); a volume needs several pages")
    if arr.ndim != 3:
        raise ValueError(
            f"{p}: the TIFF holds an array of shape {arr.shape} (axes {axes}); expected pages × rows × columns"
        )
    return arr, sp
