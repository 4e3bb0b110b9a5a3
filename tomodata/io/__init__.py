"""Read a CT volume from the formats users bring: slice movies, slice-image folders, multi-page TIFF,
DICOM series, NRRD, NIfTI and NumPy files.

    read_volume(path, *, spacing=None, allow_default_spacing=True) -> (vol, (dz, dy, dx))

``vol`` is a C-contiguous numpy array indexed ``vol[z, y, x]``; spacing is in millimetres, z first.
Arrays keep the file's voxel order (no reorientation, no flips, no resampling): z is the slice /
slowest storage axis, y the image rows, x the image columns. DICOM slices are the exception only in
that they are sorted by position (see below). Values are returned as stored except where noted, so
callers normalise (``tomodata.resample.to_cube``); big-endian data come back in native byte order.

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
* **Folders** (image slices, DICOM): only the folder's own files are read; files of other types,
  sub-folders and hidden files (``.DS_Store``) are skipped with one ``UserWarning`` naming them.
* **DICOM**: all files of the folder (not sub-folders) are read; non-DICOM files and DICOMDIR are
  skipped with a warning; more than one SeriesInstanceUID is a ``ValueError`` listing them. All
  slices share one size, one orientation and one PixelSpacing (relative 1e-4), else a
  ``ValueError`` listing the values and files. Slices are sorted by ImagePositionPatient projected
  on the slice normal (row × column direction cosines of ImageOrientationPatient), ascending; no
  two slices may share a position. Clinical geometry is corrected as dcm2niix does, with a
  ``UserWarning`` holding the original slice positions: slices whose positions drift within the
  slice plane (a tilted gantry) are shifted back onto the first slice's grid (linear), and gaps
  that differ by more than 1 % (or 0.01 mm) are resampled linearly along the normal to uniform
  steps of the median gap. A gap larger than 2.5 × the local step (the
  larger of the median gaps just before and after it) is missing slices: a ``ValueError`` naming the
  two slices, the gap in mm and about how many slices are missing (``dicom.MISSING_GAP_FACTOR``).
  RescaleSlope/RescaleIntercept are applied per slice → ``float32``. Spacing: z from the positions,
  (y, x) = PixelSpacing (row, column spacing).
* **NRRD**: attached or detached headers, including multi-file ``data file: <fmt> <min> <max>
  <step> [<subdim>]`` and ``data file: LIST`` (which pynrrd does not read). Values as stored (e.g.
  VTK's ``headsq`` 15-bit data still needs the caller's ``& 0x7fff``).
* **NIfTI**: nibabel's (x, y, z) array is transposed to (z, y, x); scaled data become ``float32``;
  zooms in mm (``unknown`` spatial units count as mm, micron and metre are converted). A zero,
  negative or non-finite zoom (as written; nibabel's loader turns it into 1 or its absolute value)
  counts as no spacing, like NRRD's.
* **Bad input** raises ``ValueError`` naming the path: missing path, empty file or folder, unknown
  extension, HTML/text saved under a binary extension, undecodable movie, zero frames, truncated
  movie, mixed slice sizes or dtypes, two DICOM series, mixed PixelSpacing, missing DICOM slices,
  a volume with fewer than 2 voxels along an axis (a single slice, of any format). ``read_volume``
  never writes a file.

Layout: this module holds the dispatcher (:func:`sniff_kind`, :func:`read_volume`); the readers live
by format family in :mod:`.movie`, :mod:`.images` (folders + TIFF), :mod:`.dicom` and :mod:`.volumes`
(NRRD, NIfTI, NumPy), their shared checks in :mod:`.common`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .common import (
    DICOM_SUFFIXES,
    GREY_TOLERANCE,
    IMAGE_SUFFIXES,
    MOVIE_SUFFIXES,
    NIFTI_SUFFIXES,
    NPY_SUFFIXES,
    NRRD_SUFFIXES,
    TIFF_MAGIC,
    TIFF_SUFFIXES,
    Spacing,
    _check_volume,
    _folder_files,
    _head,
    _is_dicom_file,
    _no_spacing_error,
    _refuse_empty,
    check_spacing,
    has_dicom_magic,
    natural_key,
)
from .dicom import _read_dicom
from .images import _read_image_folder, _read_tiff
from .movie import _read_movie
from .volumes import _read_nifti, _read_npy, _read_nrrd, nrrd_data_names

__all__ = [
    "SOURCE_KINDS",
    "read_volume",
    "read_array",
    "sniff_kind",
    "natural_key",
    "check_spacing",
    "nrrd_data_names",
    "Spacing",
    "GREY_TOLERANCE",
    "MOVIE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
    "DICOM_SUFFIXES",
    "NRRD_SUFFIXES",
    "NIFTI_SUFFIXES",
    "NPY_SUFFIXES",
]

SOURCE_KINDS = ("movie", "image_folder", "tiff", "dicom", "nrrd", "nifti", "npy")


def sniff_kind(path: str | Path) -> str:
    """The kind of volume source at ``path``: one of :data:`SOURCE_KINDS`.

    Decided by the suffix, then by the first bytes (DICOM preamble, NRRD / NumPy / TIFF / NIfTI
    magic, AVI / MP4 / Matroska signatures) for files without a known suffix. A folder is
    ``"dicom"`` if it holds DICOM files (by suffix or preamble), else ``"image_folder"`` if it holds
    slice images. Raises ``ValueError`` for a missing path, an empty folder or file, a single 2-D image or
    an unknown type.
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
    _refuse_empty(p, "volume")  # whatever its suffix says: named before any job reads it
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
    if has_dicom_magic(head):
        return "dicom"
    if head.startswith(b"NRRD000"):
        return "nrrd"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:4] in TIFF_MAGIC:
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
        f"{p}: the {kind} gives no voxel spacing; using 1.0 mm on every axis "
        "(give it: --spacing Z,Y,X in mm, spacing=(z, y, x) in Python)",
        UserWarning,
        stacklevel=2,
    )
    return arr, (1.0, 1.0, 1.0)


def read_array(path: str | Path) -> np.ndarray:
    """The volume array of a NumPy file as stored (.npy; .npz: key ``volume`` or the only array besides
    ``spacing``), without spacing (what ``tomo render`` renders), with :func:`read_volume`'s checks:
    ``ValueError`` naming the path for a missing, empty (0 bytes) or text file, an array that is not
    3-D or has fewer than 2 voxels along an axis (a single slice), or a non-numeric dtype; big-endian
    data come back in native byte order, values unchanged."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such file" if not p.exists() else f"{p}: a folder, not a .npy/.npz file")
    if p.suffix.lower() not in NPY_SUFFIXES:
        raise ValueError(f"{p}: not a NumPy file (.npy or .npz)")
    return _check_volume(_read_npy(p)[0], p)


_READERS: dict[str, Callable[[Path], tuple[np.ndarray, Spacing | None]]] = {
    "movie": _read_movie,
    "image_folder": _read_image_folder,
    "tiff": _read_tiff,
    "dicom": _read_dicom,
    "nrrd": _read_nrrd,
    "nifti": _read_nifti,
    "npy": _read_npy,
}
