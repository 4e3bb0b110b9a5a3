"""The one TIFF path and the one DICOM path of the project: slice stacks and volumes
(:mod:`tomodata.io`) and radiographs (:mod:`model.xray`) read their TIFF and DICOM files here, so a
file that one reader takes the other takes too, with the same fallbacks and the same errors.

* :func:`read_tiff`: the first series through tifffile (any sample format, OME/ImageJ metadata),
  length-1 axes dropped; where tifffile cannot decode the pixels (LZW or JPEG compression without the
  optional ``imagecodecs``) OpenCV's libtiff reads every page instead (colour pages as RGB, like
  tifffile).
* :func:`read_dicom` / :func:`dicom_pixels`: pydicom's dataset (``force`` for files without the
  128-byte preamble) and its pixel data, with an error that names the transfer syntax and the decoder
  plugins (pylibjpeg, gdcm) where the pixels cannot be decoded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import tifffile

__all__ = ["read_tiff", "read_dicom", "dicom_frames", "dicom_pixels"]


def _cv2_pages(p: Path, why: Exception) -> np.ndarray:
    """All pages of a TIFF through OpenCV (BGR colour pages become RGB to match tifffile)."""
    ok, pages = cv2.imreadmulti(str(p), flags=cv2.IMREAD_UNCHANGED)
    if not ok or not pages:
        raise ValueError(f"{p}: cannot decode this TIFF (tifffile: {why}; OpenCV failed too)")
    if len({(pg.shape, pg.dtype) for pg in pages}) != 1:
        raise ValueError(f"{p}: the TIFF pages differ in size or data type")
    arr = np.stack(pages)
    return arr[..., 2::-1] if arr.ndim == 4 and arr.shape[-1] >= 3 else arr


def read_tiff(path, meta: Callable[[Any], Any] | None = None) -> tuple[np.ndarray, str, Any, str]:
    """``(array, axes, meta(tf), reader)`` of a TIFF: its first series in the file's dtype with the
    length-1 axes dropped (``axes`` in tifffile's letters, e.g. "QYX", "YXS"; "S" = colour samples,
    last), ``meta`` evaluated on the open ``tifffile.TiffFile`` (e.g. spacing tags; None when not
    given), ``reader`` "tifffile" or "OpenCV". ValueError where neither can read it."""
    p = Path(path)
    extra, reader = None, "tifffile"
    try:
        with tifffile.TiffFile(p) as tf:
            s = tf.series[0]
            axes = s.axes
            extra = meta(tf) if meta is not None else None
            try:
                arr = s.asarray()
            except Exception as exc:  # noqa: BLE001 - e.g. LZW/JPEG without imagecodecs: OpenCV's libtiff
                arr, reader = _cv2_pages(p, exc), "OpenCV"
                axes = "QYXS" if arr.ndim == 4 else "QYX"
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile cannot parse it at all: OpenCV may
        arr, reader = _cv2_pages(p, exc), "OpenCV"
        axes = "QYXS" if arr.ndim == 4 else "QYX"
    keep = [i for i in range(arr.ndim) if arr.shape[i] != 1]
    arr = arr.reshape([arr.shape[i] for i in keep])
    return arr, "".join(axes[i] for i in keep), extra, reader


def read_dicom(path, *, force: bool = False, pixels: bool = True):
    """pydicom's dataset of ``path`` (``pixels=False``: header only). ``force`` reads a file without
    the DICM preamble. ValueError (with pydicom's reason) where it is not DICOM."""
    try:
        return pydicom.dcmread(str(path), force=force, stop_before_pixels=not pixels)
    except Exception as exc:  # noqa: BLE001 - anything pydicom raises means unreadable
        raise ValueError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def dicom_frames(path) -> int:
    """NumberOfFrames of a DICOM file, from its header (1 where absent); ValueError where not DICOM."""
    return int(read_dicom(path, force=True, pixels=False).get("NumberOfFrames", 1) or 1)


#: the Image Pixel module's attributes pydicom needs to read pixels
_PIXEL_MODULE = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation", "SamplesPerPixel")


def dicom_pixels(ds, path) -> np.ndarray:
    """The pixel array of a dataset read by :func:`read_dicom` (frames first for multi-frame data).
    ValueError naming the transfer syntax (and the decoder plugins) where it cannot be decoded."""
    if "PixelData" not in ds:
        raise ValueError(f"{path}: the DICOM file has no pixel data")
    missing = [k for k in _PIXEL_MODULE if k not in ds]
    if missing:  # pydicom would fail with a KeyError-like message that reads like a decoder problem
        raise ValueError(
            f"{path}: the DICOM file lacks {', '.join(missing)} (Image Pixel module): its pixels cannot be read"
        )
    try:
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - missing decoders, damaged pixel data …
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        try:
            compressed = bool(getattr(ts, "is_compressed", True))
        except ValueError:  # a UID pydicom does not know as a transfer syntax (private): treat as compressed
            compressed = True
        raise ValueError(
            f"{path}: cannot decode the pixel data (transfer syntax {ts}): {exc}"
            + (
                ". Compressed DICOM may need a decoder plugin (pylibjpeg, gdcm) or conversion to uncompressed"
                if compressed
                else " (an uncompressed transfer syntax: the pixel data or its description is damaged)"
            )
        ) from None
