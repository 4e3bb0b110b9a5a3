"""Read a CT volume from the formats users bring: slice movies, slice-image folders, multi-page TIFF,
DICOM series, NRRD, NIfTI and NumPy files.

    read_volume(path, *, spacing=None, allow_default_spacing=True) -> (vol, (dz, dy, dx))

``vol`` is a C-contiguous numpy array indexed ``vol[z, y, x]``; spacing is in millimetres, z first.
Arrays keep the file's voxel order (no reorientation, no flips, no resampling): z is the slice /
slowest storage axis, y the image rows, x the image columns. DICOM slices are the exception only in
that they are sorted by position (see below). Values are returned as stored except where noted, so
callers normalise (``tomodata.resample.to_cube``).

Rules (each one is tested in ``tests/test_io.py``):

* **Spacing.** ``spacing=`` (three positive finite mm values z, y, x, or one number for isotropic)
  always overrides the file. Without it the file's spacing is used: DICOM (slice positions and
  PixelSpacing), NRRD (``spacings`` or ``space directions``), NIfTI (header zooms), TIFF (ImageJ
  ``spacing``/``unit`` with the resolution tags, OME PhysicalSize*, or resolution tags in inch/cm
  plus ImageJ z), ``.npz`` (an optional ``spacing`` array of 3 values). Spacing is all or nothing:
  a file that gives only some axes counts as giving none. Movies, image folders and ``.npy`` carry
  no spacing. When no spacing is known: 1.0 mm per axis with a ``UserWarning`` (the public contract,
  docs/manifest.md), or, with ``allow_default_spacing=False`` (what the workflow passes: a manifest row
  must state the spacing of a movie), a ``ValueError`` asking for ``spacing=``.
* **Colour.** Colour frames/slices become grey by the ITU-R BT.601 luma
  ``Y = 0.299 R + 0.587 G + 0.114 B`` (OpenCV's ``COLOR_BGR2GRAY``); an alpha channel is dropped.
  For a grey slice movie encoded as YUV this recovers the decoded luma exactly (the chroma terms
  cancel). If the channels differ by more than ``GREY_TOLERANCE`` of full scale on average, a
  ``UserWarning`` says the content is really coloured and was converted.
* **Bit depth.** Slices keep their dtype: 16-bit PNG/TIFF slices stay ``uint16`` (never truncated to
  8 bits), float TIFF stays float. All slices of a folder must share shape and dtype.
* **Movies** (.mp4 .mov .avi .m4v .mkv .webm .mpg .mpeg .wmv; any codec this FFmpeg decodes): one
  frame = one z slice, ``uint8``. Frames are counted by decoding until ``read()`` fails; the
  container's frame count is only a size hint. If the container announces N > 0 frames and fewer
  decode, the file is truncated or corrupt: ``ValueError`` (no tolerance: AVI/MP4/MOV store exact
  counts; MKV/WebM estimate from duration × fps, exact for video-only files). More frames than
  announced is accepted. Known limit: OpenCV's FFmpeg backend rescales frames whose size changes
  mid-stream to the first frame's size, so such a change cannot always be detected; where a backend
  does return a different size, it is a ``ValueError``.
* **DICOM**: all files of the folder (not sub-folders) are read; non-DICOM files and DICOMDIR are
  skipped with a warning; more than one SeriesInstanceUID is a ``ValueError`` listing them. Slices
  are sorted by ImagePositionPatient projected on the slice normal (row × column direction cosines
  of ImageOrientationPatient), ascending; no two slices may share a position. Clinical geometry is
  corrected as dcm2niix does, with a ``UserWarning`` holding the original slice positions: slices
  whose positions drift within the slice plane (a tilted gantry) are shifted back onto the first
  slice's grid (linear), and gaps that differ by more than 1 % (or 0.01 mm) are resampled linearly
  along the normal to uniform steps of the median gap. RescaleSlope/RescaleIntercept are applied per
  slice → ``float32``. Spacing: z from the positions, (y, x) = PixelSpacing (row, column spacing).
* **NRRD**: attached or detached headers, including multi-file ``data file: <fmt> <min> <max>
  <step> [<subdim>]`` and ``data file: LIST`` (which pynrrd does not read). Values as stored (e.g.
  VTK's ``headsq`` 15-bit data still needs the caller's ``& 0x7fff``).
* **NIfTI**: nibabel's (x, y, z) array is transposed to (z, y, x); scaled data become ``float32``;
  zooms in mm (``unknown`` spatial units count as mm, micron and metre are converted).
* **Bad input** raises ``ValueError`` naming the path: missing path, empty file or folder, unknown
  extension, HTML/text saved under a binary extension, undecodable movie, zero frames, truncated
  movie, mixed slice sizes or dtypes, two DICOM series. ``read_volume`` never writes a file.
"""

from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast, overload

import cv2
import nibabel as nib
import nrrd
import numpy as np
from scipy import ndimage

from .image_files import dicom_pixels, read_dicom, read_tiff

__all__ = ["SOURCE_KINDS", "read_volume", "sniff_kind", "natural_key", "MOVIE_SUFFIXES", "IMAGE_SUFFIXES"]

SOURCE_KINDS = ("movie", "image_folder", "tiff", "dicom", "nrrd", "nifti", "npy")

MOVIE_SUFFIXES = (".mp4", ".mov", ".avi", ".m4v", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv")
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
NPY_SUFFIXES = (".npy", ".npz")

#: Mean per-pixel channel spread (max − min over R, G, B) above which colour content is reported,
#: as a fraction of full scale (8 % ≈ 20 levels in 8 bits; lossy YUV 4:2:0 round trips of grey
#: content stay well below).
GREY_TOLERANCE = 0.08

_IMAGE_FAMILIES = {".png": "png", ".bmp": "bmp", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}
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
_MAX_HINT = 100_000  # frame-count hints above this are not trusted for preallocation

Spacing = tuple[float, float, float]


# --------------------------------------------------------------------------------------------------
# public helpers


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers by value: ``slice2 < slice10`` (case-insensitive)."""
    parts = re.split(r"(\d+)", name.lower())
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]


def sniff_kind(path: str | Path) -> str:
    """The kind of volume source at ``path``: one of :data:`SOURCE_KINDS`.

    Decided by the suffix, then by the first bytes (DICOM preamble, NRRD / NumPy / TIFF / NIfTI
    magic, AVI / MP4 / Matroska signatures) for files without a known suffix. A folder is
    ``"dicom"`` if it holds DICOM files (by suffix or preamble), else ``"image_folder"`` if it holds
    slice images. Raises ``ValueError`` for a missing path, an empty folder, a single 2-D image or an
    unknown type.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or folder")
    if p.is_dir():
        files = _folder_files(p)
        if not files:
            subs = sorted(q.name for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
            hint = ""
            if subs:
                more = " …" if len(subs) > 5 else ""
                hint = f" (only sub-folders: {', '.join(subs[:5])}{more}; pass the folder that holds the slices)"
            raise ValueError(f"{p}: empty folder, no slice files{hint}")
        if any(_is_dicom_file(f) for f in files):
            return "dicom"
        if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files):
            return "image_folder"
        raise ValueError(
            f"{p}: folder holds no slice images ({', '.join(IMAGE_SUFFIXES)}) and no DICOM files; "
            f"found e.g. {', '.join(f.name for f in files[:5])}"
        )
    name = p.name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else p.suffix.lower()
    if suffix in MOVIE_SUFFIXES:
        return "movie"
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in DICOM_SUFFIXES or name == "dicomdir":
        return "dicom"
    if suffix in NRRD_SUFFIXES:
        return "nrrd"
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in NPY_SUFFIXES:
        return "npy"
    if suffix in IMAGE_SUFFIXES:
        raise ValueError(
            f"{p}: a single 2-D image is not a volume; pass the folder of slice images (or a movie, "
            "multi-page TIFF, DICOM folder, NRRD, NIfTI, .npy/.npz)"
        )
    head = _head(p, 512)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "nifti"
    if (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[4:8] == b"ftyp" or head[:4] == b"\x1aE\xdf\xa3":
        return "movie"
    raise ValueError(
        f"{p}: unknown file type {suffix or '(no suffix)'!r}. read_volume reads slice movies "
        f"({' '.join(MOVIE_SUFFIXES)}), folders of slice images ({' '.join(IMAGE_SUFFIXES)}), multi-page "
        "TIFF, DICOM series folders, NRRD (.nrrd/.nhdr), NIfTI (.nii/.nii.gz) and .npy/.npz"
    )


def read_volume(
    path: str | Path, *, spacing: float | Sequence[float] | None = None, allow_default_spacing: bool = True
) -> tuple[np.ndarray, Spacing]:
    """Read a volume as ``(array[z, y, x], (dz, dy, dx) in mm)``; see the module docstring for rules.

    ``spacing`` overrides the file (3 positive values z, y, x in mm, or one for isotropic). Where
    neither gives a spacing: 1.0 mm with a ``UserWarning``, or a ``ValueError`` if
    ``allow_default_spacing=False``.
    """
    p = Path(path)
    override = None if spacing is None else check_spacing(spacing)
    kind = sniff_kind(p)
    never = kind in ("movie", "image_folder") or (kind == "npy" and p.suffix.lower() == ".npy")
    if never and override is None and not allow_default_spacing:
        raise _no_spacing_error(p, kind)
    arr, file_spacing = _READERS[kind](p)
    arr = _check_volume(arr, p)
    if override is not None:
        return arr, override
    if file_spacing is not None:
        return arr, file_spacing
    if not allow_default_spacing:
        raise _no_spacing_error(p, kind)
    warnings.warn(
        f"{p}: the {kind} gives no voxel spacing; using 1.0 mm on every axis (pass spacing=(z, y, x) in mm)",
        UserWarning,
        stacklevel=2,
    )
    return arr, (1.0, 1.0, 1.0)


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


# --------------------------------------------------------------------------------------------------
# shared internals


def _no_spacing_error(p: Path, kind: str) -> ValueError:
    return ValueError(
        f"{p}: the {kind} gives no voxel spacing; pass spacing=(z, y, x) in mm (or one number for "
        "isotropic voxels), or allow_default_spacing=True to use 1.0 mm with a warning"
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
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"{p}: expected a 3-D volume, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{p}: the volume is empty (shape {arr.shape})")
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise ValueError(f"{p}: unsupported data type {arr.dtype}")
    if isinstance(arr, np.memmap) or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C")
    return arr


def _head(p: Path, n: int) -> bytes:
    try:
        with open(p, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise ValueError(f"{p}: cannot read ({exc})") from None


def _refuse_text(p: Path, what: str) -> None:
    """``ValueError`` if the binary file ``p`` is empty or is really HTML / text (a failed download)."""
    head = _head(p, 2048)
    if not head:
        raise ValueError(f"{p}: the file is empty (0 bytes), not a {what}")
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


def _has_dicom_preamble(f: Path) -> bool:
    try:
        with open(f, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
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


# --------------------------------------------------------------------------------------------------
# movies


def _read_movie(p: Path) -> tuple[np.ndarray, None]:
    """Slice movie → (n, h, w) uint8 grey; frames counted by decoding (module docstring)."""
    _refuse_text(p, "movie")
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise ValueError(
                f"{p}: OpenCV/FFmpeg cannot open this movie (truncated or corrupt file, or a codec/container "
                "this build does not decode)"
            )
        announced = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        announced = int(announced) if math.isfinite(announced) and 0 < announced <= 1e9 else 0
        buf: np.ndarray | None = None
        frame = None
        n = 0
        spread = 0.0
        while True:
            ok, frame = cap.read(frame)
            if not ok or frame is None or frame.size == 0:
                break
            if buf is None:
                shape0 = frame.shape
                # the announced count (capped at 2 GiB of frames) sizes the buffer; it grows if short
                cap_frames = max(64, (2 << 30) // max(1, frame.shape[0] * frame.shape[1] * frame.itemsize))
                hint = min(announced, cap_frames) if 0 < announced <= _MAX_HINT else 64
                buf = np.empty((hint,) + shape0[:2], dtype=frame.dtype)
            elif frame.shape != shape0:
                raise ValueError(
                    f"{p}: frame {n} has size {frame.shape[1]}×{frame.shape[0]} but frame 0 has "
                    f"{shape0[1]}×{shape0[0]}; every slice of a movie must have the same size"
                )
            if n == buf.shape[0]:  # grow in place (realloc), 1.5× at a time
                buf.resize((n + max(16, n // 2),) + buf.shape[1:], refcheck=False)
            if frame.ndim == 2:
                buf[n] = frame
            else:
                if n % 8 == 0:
                    spread = max(spread, _colour_spread(frame))
                buf[n] = _to_grey(frame, "bgr")
            n += 1
    finally:
        cap.release()
    if buf is None or n == 0:
        raise ValueError(f"{p}: the movie holds no decodable frames (zero frames, or a truncated/corrupt file)")
    if announced and n < announced:
        raise ValueError(
            f"{p}: only {n} of the {announced} frames the container announces could be decoded; the movie "
            "is truncated or corrupt (re-export or re-download it)"
        )
    if n != buf.shape[0]:
        buf.resize((n,) + buf.shape[1:], refcheck=False)
    _warn_colour(p, spread)
    return buf, None


# --------------------------------------------------------------------------------------------------
# image folders and TIFF


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
    """Folder of slice images, natural file-name order → (n, h, w) in the slices' dtype."""
    files = [f for f in _folder_files(p) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{p}: the folder holds no slice images ({' '.join(IMAGE_SUFFIXES)})")
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


def _to_mm(unit: str | None) -> float | None:
    if unit is None:
        return None
    u = str(unit).strip().lower()
    return _UNIT_TO_MM.get(u)


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


# --------------------------------------------------------------------------------------------------
# DICOM


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
    if not headers:
        if p.is_file():
            _refuse_text(p, "DICOM file")
        raise ValueError(f"{p}: no DICOM images found{' (skipped: ' + ', '.join(skipped[:5]) + ')' if skipped else ''}")
    if skipped:
        warnings.warn(
            f"{p}: skipped {len(skipped)} file(s) that are not DICOM images: {', '.join(skipped[:5])}"
            f"{' …' if len(skipped) > 5 else ''}",
            UserWarning,
            stacklevel=3,
        )
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
    members = next(iter(series.values()))

    slices: list[_Slice] = []
    for f, ds in members:
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
            slices.append(_Slice(f, pos, iop, slope, inter, instance, rows, cols, ps, _dicom_pixels(f, None)))
        else:
            per = getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []
            frames = _dicom_pixels(f, nframes)
            for k in range(nframes):
                pos = None
                if k < len(per):
                    pos = _floats(getattr(_seq_item(per[k], "PlanePositionSequence"), "ImagePositionPatient", None), 3)
                slices.append(
                    _Slice(f"{f} frame {k}", pos, iop, slope, inter, k, rows, cols, ps, _frame_getter(frames, k))
                )
    if p.is_file() and len(slices) == 1:
        raise ValueError(f"{p}: a single-frame DICOM file is one slice; pass the folder that holds the series")

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

    dz, geometry = None, None
    if all(s.pos is not None for s in slices) and s0.iop is not None:
        r, c = np.array(s0.iop[:3]), np.array(s0.iop[3:])
        normal = np.cross(r, c)
        proj = np.array([float(np.dot(s.pos, normal)) for s in slices])
        order = np.argsort(proj, kind="stable")
        slices = [slices[i] for i in order]
        proj = proj[order]
        if len(slices) > 1:
            gaps = np.diff(proj)
            if np.any(gaps <= 1e-4):
                i = int(np.argmax(gaps <= 1e-4))
                raise ValueError(
                    f"{p}: {slices[i].source} and {slices[i + 1].source} lie at the same position "
                    f"({proj[i]:.4f} mm along the slice normal); duplicate slices or several acquisitions in one series"
                )
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
            if uneven or tilted:
                geometry = dict(
                    positions_mm=(proj - proj[0]).tolist(),
                    inplane_offsets_mm=offsets.tolist(),
                    uneven=uneven,
                    tilted=tilted,
                )
    else:
        slices.sort(key=lambda s: s.instance)
        warnings.warn(
            f"{p}: no ImagePositionPatient/ImageOrientationPatient; slices ordered by InstanceNumber",
            UserWarning,
            stacklevel=3,
        )
        ds0 = members[0][1]
        for name in ("SpacingBetweenSlices", "SliceThickness"):
            v = getattr(ds0, name, None)
            if v is not None:
                dz = float(v)
                break
    if len(slices) == 1 and dz is None:
        v = getattr(members[0][1], "SpacingBetweenSlices", None) or getattr(members[0][1], "SliceThickness", None)
        dz = float(v) if v is not None else None

    vol = np.empty((len(slices), s0.rows, s0.cols), dtype=np.float32)
    for i, s in enumerate(slices):
        px = s.get()
        if px.shape != (s0.rows, s0.cols):
            raise ValueError(f"{s.source}: pixel data of shape {px.shape}, expected {(s0.rows, s0.cols)}")
        np.multiply(px, s.slope, out=vol[i], casting="unsafe")
        vol[i] += s.inter
    spacing = None
    if geometry is not None and dz is not None:  # dz is set wherever geometry is
        vol = _regrid_dicom(vol, geometry, dz, s0.pixel_spacing, p)
    if dz is not None and s0.pixel_spacing is not None:
        spacing = _file_spacing((dz, s0.pixel_spacing[0], s0.pixel_spacing[1]), p, "DICOM")
    return vol, spacing


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


# --------------------------------------------------------------------------------------------------
# NRRD


def _nrrd_header_lines(p: Path) -> tuple[list[str], list[str]]:
    """Header lines up to the blank line (text), and for ``data file: LIST`` the file names after it."""
    lines: list[str] = []
    listed: list[str] = []
    in_list = False
    with open(p, "rb") as fh:
        for _ in range(100_000):
            raw = fh.readline()
            if not raw:
                break
            line = raw.decode("latin-1").rstrip("\r\n")
            if in_list:
                if line.strip():
                    listed.append(line.strip())
                continue
            if not line.strip():
                break
            lines.append(line)
            m = re.match(r"\s*data ?file\s*:=?\s*(.*)$", line, flags=re.IGNORECASE)
            if m and m.group(1).split()[:1] == ["LIST"]:
                in_list = True
    return lines, listed


def nrrd_data_names(p: Path) -> list[str]:
    """The data files a detached NRRD header (.nhdr) names, as written (relative to its folder, or
    absolute): ``data file: NAME``, a ``%d`` pattern with min max step, or ``LIST``; [] for an NRRD
    with attached data."""
    lines, listed = _nrrd_header_lines(Path(p))
    line = next((ln for ln in lines if re.match(r"\s*data ?file\s*:", ln, flags=re.IGNORECASE)), None)
    if line is None:
        return []
    value = re.split(r":=?", line, maxsplit=1)[1].split()
    if value[:1] == ["LIST"]:
        return list(listed)
    if _nrrd_multi(line):
        fmt, lo, hi, step = value[0], int(value[1]), int(value[2]), int(value[3])
        if step == 0:
            raise ValueError(f"{p}: data file step 0")
        return [fmt % i for i in range(lo, hi + (1 if step > 0 else -1), step)]
    return [re.split(r":=?", line, maxsplit=1)[1].strip()]


def _read_nrrd(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """NRRD (.nrrd attached, .nhdr detached; single, pattern or LIST data files) → C-order z, y, x."""
    head = _head(p, 8)
    if not head.startswith(b"NRRD000"):
        _refuse_text(p, "NRRD file")
        raise ValueError(f"{p}: not an NRRD file (no 'NRRD000x' magic line)")
    lines, listed = _nrrd_header_lines(p)
    data_line = next((ln for ln in lines if re.match(r"\s*data ?file\s*:", ln, flags=re.IGNORECASE)), None)
    try:
        if data_line is None or not _nrrd_multi(data_line):
            arr, header = nrrd.read(str(p), index_order="C")
        else:
            header_lines = [ln for ln in lines if ln is not data_line]
            header = nrrd.read_header(header_lines)
            arr = _nrrd_multi_read(p, header, data_line, listed)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - NRRDError, missing data file, size mismatch …
        raise ValueError(f"{p}: cannot read this NRRD ({type(exc).__name__}: {exc})") from None
    return _nrrd_squeeze(arr, header, p)


def _nrrd_multi(data_line: str) -> bool:
    value = re.split(r":=?", data_line, maxsplit=1)[1].split()
    if value[:1] == ["LIST"]:
        return True
    return len(value) in (4, 5) and all(re.fullmatch(r"-?\d+", v) for v in value[1:])


def _nrrd_multi_read(p: Path, header: dict, data_line: str, listed: list[str]) -> np.ndarray:
    value = re.split(r":=?", data_line, maxsplit=1)[1].split()
    dim = int(header["dimension"])
    sizes = [int(s) for s in header["sizes"]]
    if value[0] == "LIST":
        names = listed
        subdim = int(value[1]) if len(value) > 1 else dim - 1
    else:
        fmt, lo, hi, step = value[0], int(value[1]), int(value[2]), int(value[3])
        subdim = int(value[4]) if len(value) > 4 else dim - 1
        if step == 0:
            raise ValueError(f"{p}: data file step 0")
        stop = hi + (1 if step > 0 else -1)
        names = [fmt % i for i in range(lo, stop, step)]
    if not names:
        raise ValueError(f"{p}: the header lists no data files")
    if subdim not in (dim - 1, dim):
        raise ValueError(f"{p}: data files of dimension {subdim} (of {dim}) are not supported")
    if subdim == dim - 1 and len(names) != sizes[-1]:
        raise ValueError(f"{p}: {len(names)} data files for {sizes[-1]} slices")
    if sizes[-1] % len(names):
        raise ValueError(f"{p}: {sizes[-1]} slices do not split evenly over {len(names)} data files")
    slab = sizes[-1] // len(names)
    out = None
    for i, name in enumerate(names):
        sub = dict(header)
        sub["sizes"] = np.array(sizes[:-1] + [slab])
        sub["data file"] = name
        sub.pop("datafile", None)
        f = Path(name) if Path(name).is_absolute() else p.parent / name
        if not f.is_file():
            raise ValueError(f"{p}: data file {f} is missing")
        part = nrrd.read_data(sub, filename=str(p), index_order="C")
        if out is None:
            out = np.empty((sizes[-1],) + part.shape[1:], dtype=part.dtype)
        out[i * slab : (i + 1) * slab] = part
    assert out is not None  # names is not empty
    return out


def _nrrd_squeeze(arr: np.ndarray, header: dict, p: Path) -> tuple[np.ndarray, Spacing | None]:
    """Drop size-1 non-spatial axes; spacing (z, y, x) mm from spacings / space directions."""
    dim = int(header["dimension"])
    per_axis: list[float | None] = [None] * dim  # NRRD axis order: fastest first
    sd = header.get("space directions")
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        for i in range(dim):
            row = sd[i]
            per_axis[i] = None if not np.all(np.isfinite(row)) else float(np.linalg.norm(row))
        units = header.get("space units")
    else:
        sp = header.get("spacings")
        if sp is not None:
            for i, v in enumerate(np.asarray(sp, dtype=float)[:dim]):
                per_axis[i] = float(v) if math.isfinite(v) else None
        units = header.get("units")
    sizes = [int(s) for s in header["sizes"]]
    keep = list(range(dim)) if dim == 3 else [i for i in range(dim) if sizes[i] != 1]
    if len(keep) != 3:
        raise ValueError(f"{p}: the NRRD holds a {dim}-D array of sizes {sizes}; expected a 3-D volume")
    arr = arr.reshape([sizes[i] for i in reversed(keep)])  # C order: slowest (last NRRD axis) first
    vals = [per_axis[i] for i in keep]
    if any(v is None for v in vals):
        return arr, None
    scale = [1.0] * 3
    if units is not None:
        ulist = [str(u) for u in units]
        if sd is not None:
            ulist = ulist * 3 if len(ulist) == 1 else ulist
            conv = [_to_mm(u) if u.strip() else 1.0 for u in ulist]
            if any(c is None for c in conv) or len(set(conv)) != 1:
                warnings.warn(f"{p}: unknown space units {ulist}; spacing ignored", UserWarning, stacklevel=3)
                return arr, None
            scale = [cast(float, conv[0])] * 3
        else:
            conv = []
            for i in keep:
                u = ulist[i].strip() if i < len(ulist) else ""
                conv.append(_to_mm(u) if u else 1.0)
            if any(c is None for c in conv):
                warnings.warn(f"{p}: unknown units {ulist}; spacing ignored", UserWarning, stacklevel=3)
                return arr, None
            scale = cast(list[float], conv)  # no None left
    mm = [cast(float, v) * s for v, s in zip(vals, scale)]  # no None in vals (returned above)
    return arr, _file_spacing(mm[::-1], p, "NRRD")


# --------------------------------------------------------------------------------------------------
# NIfTI and NumPy


def _read_nifti(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """NIfTI-1/2 → (z, y, x) = transposed nibabel (x, y, z); zooms → mm."""
    _refuse_text(p, "NIfTI file")
    try:
        img = cast(nib.Nifti1Image, nib.load(str(p), mmap=False))  # NIfTI-2 images are Nifti1Image subclasses
        proxy = img.dataobj
        raw_dtype = img.get_data_dtype()
        arr = np.asarray(proxy)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{p}: cannot read this NIfTI ({type(exc).__name__}: {exc})") from None
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{p}: the NIfTI holds an array of shape {arr.shape}; expected a 3-D volume")
    if arr.dtype == np.float64 and raw_dtype != np.float64:
        arr = arr.astype(np.float32)
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0))
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    unit = img.header.get_xyzt_units()[0]
    scale = {"mm": 1.0, "unknown": 1.0, "micron": 1e-3, "meter": 1000.0}.get(unit)
    if scale is None:
        return arr, None
    return arr, _file_spacing([z * scale for z in zooms[::-1]], p, "NIfTI")


def _read_npy(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """.npy (no spacing) or .npz (key ``volume`` or the only array; optional ``spacing`` of 3 mm values)."""
    _refuse_text(p, f"{p.suffix} file")
    try:
        if p.suffix.lower() != ".npz":
            return np.load(p, allow_pickle=False), None
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            arrays = [k for k in keys if k != "spacing"]
            if "volume" in keys:
                key = "volume"
            elif len(arrays) == 1:
                key = arrays[0]
            else:
                raise ValueError(f"{p}: holds arrays {keys}; name the volume 'volume'")
            arr = z[key]
            sp = _file_spacing(np.asarray(z["spacing"]).ravel(), p, ".npz") if "spacing" in keys else None
        return arr, sp
    except ValueError as exc:
        if str(p) in str(exc):
            raise
        raise ValueError(f"{p}: cannot read ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{p}: cannot read ({exc})") from None


_READERS: dict[str, Callable[[Path], tuple[np.ndarray, Spacing | None]]] = {
    "movie": _read_movie,
    "image_folder": _read_image_folder,
    "tiff": _read_tiff,
    "dicom": _read_dicom,
    "nrrd": _read_nrrd,
    "nifti": _read_nifti,
    "npy": _read_npy,
}
