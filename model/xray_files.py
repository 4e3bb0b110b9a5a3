"""Radiographs in, as files: any image file read as displayed (bright = bright), values in [0, 1]
(:func:`read_xray`), and the cheap check of a file before any work (:func:`xray_file_problem`).
Preparation for the network (polarity, gamma, air, square) is :mod:`model.xray`.

**Reading** (``read_xray``). The file type is sniffed from its content (DICOM: ``DICM`` at byte 128,
a data set without that preamble, or a ``.dcm``/``.dicom``/``.ima`` suffix,
``tomodata.io.common.DICOM_SUFFIXES``; TIFF: the ``II*``/``MM*`` magic), everything else goes to
OpenCV (``cv2.imdecode(..., IMREAD_UNCHANGED)``: PNG, JPEG, BMP, PNM, WebP …).
The image is turned as a viewer shows it: a TIFF's ``Orientation`` tag, or the EXIF orientation of
a JPEG, PNG or WebP (read with Pillow), 2–8, is applied (rotation, mirror; recorded as
``info["orientation"]``). Values become float64 in [0, 1] *as displayed* (bright = bright):

* unsigned 8-bit: ``v / 255``;
* unsigned 16-bit: ``v / (2**b − 1)`` with ``b`` the smallest of 8, 10, 12, 14, 16 bits that holds
  the image's maximum (8-bit images saved as 16-bit and 10/12/14-bit detector data are commonly
  stored in 16-bit containers);
* other integers, and floats outside [0, 1]: min–max to [0, 1]; floats inside [0, 1]: unchanged;
* DICOM: the Modality LUT (``RescaleSlope``/``RescaleIntercept``) is applied, then the value is
  scaled by the range that ``BitsStored`` (signed or not) spans through that rescale; windowing (VOI
  LUT) is not applied. Unsigned data without a rescale under ``BitsStored`` 16 whose maximum uses
  less than 1/8 of that range (12-bit data) are scaled by the 16-bit rule above instead, with a
  warning (as read, the film would be dark). ``PhotometricInterpretation`` ``MONOCHROME1`` (low value
  = white) is inverted (``1 − v``) so that the image is as displayed, and so is ``MONOCHROME2`` with
  ``PresentationLUTShape`` ``INVERSE`` (with MONOCHROME1, INVERSE is the same inversion, not applied
  twice). Pixel spacing: ``PixelSpacing`` (row, column mm, in the patient), else
  ``ImagerPixelSpacing`` (at the detector) divided by ``EstimatedRadiographicMagnificationFactor``
  where given (without it the spacing is the detector's, the record says so: the anatomy, magnified by
  the beam's divergence, comes out that much too large); a multi-frame file gives its first frame
  (with a warning). The window (VOI LUT: ``WindowCenter``/``WindowWidth``) is *not* applied: a film
  whose stored values fill only part of their range reads with grey air (``--air subtract``).
* TIFF ``PhotometricInterpretation`` MinIsWhite (low value = white) is inverted (``1 − v``).
* Colour (3 or 4 channels, also DICOM RGB): the image is grey when the 99th percentile of the
  per-pixel channel spread (max − min channel) is at most 2 % of full scale (tolerates JPEG chroma
  noise); it then becomes the mean of the channels. Otherwise a ``UserWarning`` is issued and it is
  converted by BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B``.
* Alpha (2nd channel of grey+alpha, 4th of RGBA): ignored unless it masks, i.e. unless some pixels
  are fully transparent (alpha 0) while others are not; those pixels are returned in
  ``info["alpha_mask"]`` and later take the background value (:mod:`model.xray`). Partial transparency is
  ignored (the grey value is kept).
* A TIFF or PNG resolution tag is not used as pixel spacing (it is usually a display DPI).
* Refused with ``ValueError``: a missing, empty (0-byte) or undecodable file (text, HTML …), NaN or
  infinite values, a constant image, fewer than 8 pixels on a side, a fully transparent image.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL.Image

from tomodata.image_files import dicom_pixels, read_dicom, read_tiff
from tomodata.io.common import DICOM_SUFFIXES, TIFF_MAGIC, has_dicom_magic

from .polarity import MIN_SIDE

__all__ = ["polarity_header", "read_xray", "xray_file_problem"]

#: colour images whose 99th-percentile channel spread is at most this fraction of full scale are grey
GREY_SPREAD = 0.02


def _looks_like_text(head: bytes) -> str | None:
    """'HTML' / 'text' when the first bytes look like markup or plain text, else None."""
    h = head.lstrip().lower()
    if h.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body", b"<svg")):
        return "an HTML/XML document"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:512]):
        return "a text file"
    return None


def _undecodable(p: Path, head: bytes, what: str, why: str = "") -> ValueError:
    kind = _looks_like_text(head)
    msg = f"{p}: cannot read this as an x-ray image"
    if kind:
        msg += f" (it looks like {kind}, not an image)"
    elif why:
        msg += f" ({what}: {why})"
    else:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        msg += f" (not {article} {what} OpenCV can decode, or truncated)"
    return ValueError(msg)


def _sniff(p: Path, head: bytes) -> str:
    if has_dicom_magic(head) or p.suffix.lower() in DICOM_SUFFIXES or _bare_dicom(p, head):
        return "dicom"
    if head[:4] in TIFF_MAGIC:
        return "tiff"
    return "image"


def _bare_dicom(p: Path, head: bytes) -> bool:
    """A DICOM data set without the 128-byte preamble and "DICM" (older files, some exports): it starts
    with a group 0002 or 0008 element (no image format starts with those bytes) and pydicom reads an
    image's Rows and Columns from its header."""
    if head[:2] not in (b"\x02\x00", b"\x08\x00") or head[3] != 0:
        return False
    try:
        ds = read_dicom(p, force=True, pixels=False)
    except ValueError:
        return False
    return "Rows" in ds and "Columns" in ds


def _split_channels(arr: np.ndarray, order: str, p: Path, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W[, C]) -> grey (H, W) in the same numeric range (float64 for colour) and the alpha mask."""
    if arr.ndim == 2:
        info["channels"] = 1
        return arr, None
    if arr.ndim != 3:
        raise ValueError(f"{p}: expected a 2-D image, got an array of shape {arr.shape}")
    c = arr.shape[-1]
    info["channels"] = int(c)
    if c == 1:
        return arr[..., 0], None
    if c not in (2, 3, 4):
        raise ValueError(f"{p}: an image with {c} channels is not an x-ray (expected 1-4)")
    mask = None
    if c in (2, 4):
        alpha = arr[..., -1]
        a_min, a_max = alpha.min(), alpha.max()
        if a_min == a_max:
            if a_max == 0:
                raise ValueError(f"{p}: the image is fully transparent (alpha 0 everywhere)")
            info["alpha"] = "constant: ignored"
        elif a_min == 0:
            mask = alpha == 0
            info["alpha"] = (
                f"masks {int(mask.sum())} fully transparent pixels (alpha 0): they take the background value"
            )
        else:
            info["alpha"] = "varies but is nowhere 0 (no pixel fully transparent): ignored"
        arr = arr[..., :-1]
    if arr.shape[-1] == 1:
        return arr[..., 0], mask
    rgb = arr.astype(np.float64)
    full = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" else max(float(rgb.max() - rgb.min()), 1e-12)
    spread = rgb.max(axis=-1) - rgb.min(axis=-1)
    sel = spread if mask is None else spread[~mask]
    p99 = float(np.percentile(sel, 99)) / full if sel.size else 0.0
    info["colour_spread_p99"] = p99
    if p99 <= GREY_SPREAD:
        info["grey_rule"] = f"channels equal within {100 * GREY_SPREAD:g} % (p99 spread): mean of the channels"
        return rgb.mean(axis=-1), mask
    w = np.array([0.299, 0.587, 0.114]) if order == "rgb" else np.array([0.114, 0.587, 0.299])
    info["grey_rule"] = "colour: BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B"
    warnings.warn(
        f"{p}: the channels differ (99th-percentile spread {100 * p99:.1f} % of full scale): "
        "converted to grey by BT.601 luma",
        UserWarning,
        stacklevel=3,
    )
    return rgb @ w, mask


def _bits_holding(hi: float) -> int:
    """The smallest of 8, 10, 12, 14, 16 bits whose unsigned range holds ``hi``."""
    return next(b for b in (8, 10, 12, 14, 16) if hi <= 2**b - 1)


def _to_unit(g: np.ndarray, dtype: np.dtype, p: Path, info: dict, valid: np.ndarray | None) -> np.ndarray:
    """Scale to [0, 1] by the rules of the module docstring (non-DICOM)."""
    x = g.astype(np.float64)
    sel = x if valid is None else x[valid]
    if not np.isfinite(sel).all():
        raise ValueError(f"{p}: the image contains NaN or infinite values")
    if dtype == np.uint8:
        info["scale"] = "uint8: v / 255"
        return x / 255.0
    if dtype == np.uint16:
        hi = float(sel.max()) if sel.size else 0.0
        bits = _bits_holding(hi)
        info["bits_used"] = bits
        info["scale"] = f"uint16 holding {bits}-bit data: v / {2**bits - 1}"
        return x / (2**bits - 1)
    lo, hi = float(sel.min()), float(sel.max())
    if dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        info["scale"] = "float in [0, 1]: unchanged"
        return x
    info["scale"] = f"{dtype}: min-max [{lo:.6g}, {hi:.6g}] -> [0, 1]"
    return (x - lo) / (hi - lo) if hi > lo else x - lo


#: DICOM modalities whose images are cross-sections or not x-ray projections at all
_NOT_PROJECTIONS = {
    "CT": "a CT slice (a cross-section)",
    "MR": "an MR image",
    "PT": "a PET image",
    "NM": "a nuclear-medicine image",
    "US": "an ultrasound image",
    "SEG": "a segmentation",
}


def _check_modality(ds, p: Path) -> None:
    """ValueError for a DICOM whose Modality says it is no radiograph (a CT slice, MR, PET, ultrasound …):
    the network reconstructs from x-ray projections (CR, DX, RF, XA, MG, IO, PX, RG, and OT or none)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in _NOT_PROJECTIONS:
        raise ValueError(
            f"{p}: DICOM Modality {modality}: {_NOT_PROJECTIONS[modality]}, not a radiograph (an x-ray projection, "
            "e.g. Modality CR or DX); tomo infer reconstructs a volume from one radiograph. A CT series is a "
            "volume already: `tomo cube` reads it, and the store's renderer makes x-rays of it"
        )


def _read_dicom(p: Path, head: bytes, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
    try:  # the project's one DICOM path (tomodata.image_files)
        ds = read_dicom(p, force=not has_dicom_magic(head))
        arr = dicom_pixels(ds, p)
    except ValueError as exc:
        raise _undecodable(p, head, "DICOM", str(exc).removeprefix(f"{p}: ")) from None
    _check_modality(ds, p)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    info["format"] = "DICOM"
    info["photometric"] = photometric
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        warnings.warn(f"{p}: {frames} frames; the first is used", UserWarning, stacklevel=3)
        info["frames"] = f"{frames} frames: the first is used"
        arr = arr[0]
    info["dtype"] = str(arr.dtype)
    info["shape"] = list(arr.shape)
    bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if spp > 1:  # colour DICOM: pixel_array is RGB
        g, mask = _split_channels(arr, "rgb", p, info)
    else:
        g, mask = arr, None
        info["channels"] = 1
    s_lo, s_hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    top = float(g.max()) if g.size else 0.0
    if bits >= 16 and not signed and slope == 1.0 and intercept == 0.0 and 0 < top < 2 ** (bits - 3):
        used = _bits_holding(top)
        warnings.warn(
            f"{p}: BitsStored is {bits} but the values reach {top:g} (fit in {used} bits): scaled as {used}-bit "
            f"data (by the {bits}-bit range the film would be dark)",
            UserWarning,
            stacklevel=3,
        )
        info["bits_stored_not_used"] = f"BitsStored {bits}, values fit in {used} bits: scaled as {used}-bit"
        bits, s_hi = used, 2**used - 1
    lo, hi = sorted((s_lo * slope + intercept, s_hi * slope + intercept))
    v = g.astype(np.float64) * slope + intercept
    if not np.isfinite(v).all():
        raise ValueError(f"{p}: the image contains NaN or infinite values")
    img = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    info["scale"] = (
        f"DICOM: v * {slope:g} + {intercept:g} (Modality LUT), scaled by the {bits}-bit "
        f"{'signed' if signed else 'unsigned'} range [{lo:g}, {hi:g}] -> [0, 1]; no VOI LUT"
    )
    if photometric == "MONOCHROME1":
        img = 1.0 - img
        info["monochrome1"] = "inverted (1 - v): low stored values are white in MONOCHROME1"
    elif photometric == "MONOCHROME2" and str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE":
        # (with MONOCHROME1, INVERSE names the same inversion, as the DX IOD requires: not applied twice)
        img = 1.0 - img
        info["presentation_lut"] = "inverted (1 - v): MONOCHROME2 with PresentationLUTShape INVERSE"
    _dicom_spacing(ds, info)
    return img, mask


def _dicom_spacing(ds, info: dict) -> None:
    """``info["pixel_spacing_mm"]`` (row, column) from ``PixelSpacing`` (in the patient; an enhanced
    multi-frame object's in its shared, else first frame's, Pixel Measures), else ``ImagerPixelSpacing``
    (at the detector) divided by ``EstimatedRadiographicMagnificationFactor`` where given (else at the
    detector plane: objects appear larger by the magnification, said so)."""
    for key, sp in _spacing_attributes(ds):
        try:
            given = [_positive(s) for s in sp]
        except TypeError:  # a single value
            continue
        vals = [v for v in given if v is not None]
        if len(given) != 2 or len(vals) != 2:
            continue
        source = f"DICOM {key}"
        if key == "ImagerPixelSpacing":
            mag = _positive(ds.get("EstimatedRadiographicMagnificationFactor"))
            if mag is not None and mag >= 1.0:  # a projection magnifies: below 1 is not a factor
                vals = [s / mag for s in vals]
                source += f" / EstimatedRadiographicMagnificationFactor {mag:g}"
            else:
                source += " (at the detector: the anatomy is magnified by the beam's divergence)"
        info["pixel_spacing_mm"] = vals  # (row, column)
        info["pixel_spacing_source"] = source
        return


def _spacing_attributes(ds):
    """(name, value) of the spacing attributes present, most specific first: ``PixelSpacing``, an
    enhanced object's Pixel Measures (shared functional groups, else the first frame's), ``ImagerPixelSpacing``."""
    if ds.get("PixelSpacing") is not None:
        yield "PixelSpacing", ds.get("PixelSpacing")
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        try:
            sp = ds[group][0].PixelMeasuresSequence[0].PixelSpacing
        except (KeyError, IndexError, AttributeError, TypeError):
            continue
        yield f"PixelSpacing ({group} > PixelMeasuresSequence)", sp
    if ds.get("ImagerPixelSpacing") is not None:
        yield "ImagerPixelSpacing", ds.get("ImagerPixelSpacing")


def _positive(v) -> float | None:
    """``v`` as a finite positive float, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _tiff_tags(tf) -> tuple[str | None, int]:
    """The first page's PhotometricInterpretation name (tifffile; e.g. "MINISBLACK", "MINISWHITE") and
    Orientation (1–8; 1 where absent), read while :func:`tomodata.image_files.read_tiff` has it open."""
    page = tf.pages[0]
    ph = page.photometric
    tag = getattr(page, "tags", {}).get("Orientation")
    return (getattr(ph, "name", None) if ph is not None else None), int(tag.value) if tag is not None else 1


def _read_tiff(p: Path, head: bytes, info: dict) -> tuple[np.ndarray, np.dtype, str]:
    try:  # the project's one TIFF path (tomodata.image_files): tifffile, else OpenCV's libtiff
        arr, axes, tags, reader = read_tiff(p, meta=_tiff_tags)
    except ValueError as exc:
        raise _undecodable(p, head, "TIFF", str(exc).removeprefix(f"{p}: ")) from None
    info["format"] = "TIFF" if reader == "tifffile" else f"TIFF (read by {reader})"
    photometric, orientation = tags or (None, 1)  # None: tifffile could not parse it (OpenCV read it)
    info["tiff_orientation"] = orientation  # applied by read_xray (_orient)
    if photometric:
        info["tiff_photometric"] = photometric
    if photometric == "MINISWHITE" and reader != "tifffile" and arr.dtype == np.uint8:
        info["tiff_photometric"] = "MINISWHITE (inverted by OpenCV on reading)"  # 8-bit only: not again
    if arr.ndim == 3 and not axes.endswith("S"):
        warnings.warn(f"{p}: {arr.shape[0]} pages; the first is used", UserWarning, stacklevel=3)
        info["pages"] = f"{arr.shape[0]} pages: the first is used"
        arr = arr[0]
    elif arr.ndim == 4 and axes.endswith("S"):
        warnings.warn(f"{p}: {arr.shape[0]} pages; the first is used", UserWarning, stacklevel=3)
        info["pages"] = f"{arr.shape[0]} pages: the first is used"
        arr = arr[0]
    return arr, arr.dtype, "rgb"


#: EXIF/TIFF Orientation 2–8 → (what a viewer does, the array operation on (H, W)); 1 is as stored
_ORIENTATIONS = {
    2: ("mirrored left-right", lambda a: a[:, ::-1]),
    3: ("rotated 180°", lambda a: a[::-1, ::-1]),
    4: ("mirrored top-bottom", lambda a: a[::-1]),
    5: ("transposed (mirrored about the main diagonal)", lambda a: a.swapaxes(0, 1)),
    6: ("rotated 90° clockwise", lambda a: np.rot90(a, -1)),
    7: ("transversed (mirrored about the other diagonal)", lambda a: a[::-1, ::-1].swapaxes(0, 1)),
    8: ("rotated 90° counter-clockwise", lambda a: np.rot90(a, 1)),
}


def _orientation_tag(p: Path, info: dict) -> int:
    """The file's Orientation (1–8; 1 where absent or unreadable): a TIFF's tag 274 (read with its
    pixels, ``info["tiff_orientation"]``), else the EXIF orientation Pillow finds (JPEG, PNG eXIf, WebP)."""
    if "tiff_orientation" in info:
        return int(info.pop("tiff_orientation"))
    try:
        with PIL.Image.open(p) as im:
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - no readable tag: as stored
        return 1


def _orient(img: np.ndarray, mask, tag: int, info: dict):
    """``img`` (H, W) and its alpha mask turned as the Orientation ``tag`` says a viewer shows them."""
    if tag not in _ORIENTATIONS:
        return img, mask
    what, op = _ORIENTATIONS[tag]
    info["orientation"] = f"Orientation {tag}: {what} to show as a viewer does"
    return np.ascontiguousarray(op(img)), None if mask is None else np.ascontiguousarray(op(mask))


def _read_cv2(p: Path, head: bytes, info: dict, why: str = "") -> np.ndarray:
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise _undecodable(p, head, "TIFF" if why else "image format", why)
    info["format"] = "OpenCV (" + (p.suffix.lower().lstrip(".") or "no suffix") + ")"
    return img


def polarity_header(info: dict) -> str | None:
    """What the file says about its polarity, for :func:`model.xray.prepare_xray`'s ``header``: a grey
    DICOM's ``PhotometricInterpretation`` (MONOCHROME1 or 2: how it is displayed, already applied by
    :func:`read_xray`), else None. RGB or YBR (a scanned film, a secondary capture) and other formats
    state nothing about polarity: the image decides."""
    photometric = info.get("photometric")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    lut = " with PresentationLUTShape INVERSE" if "presentation_lut" in info else ""
    return f"PhotometricInterpretation {photometric}{lut}"


def xray_file_problem(path) -> str | None:
    """Why ``path`` cannot be a radiograph, from cheap checks only (no decoding), or None: missing,
    not a file, unreadable, empty, or text/HTML (plain PNM ``P1``–``P3`` excepted). ``tomo infer``
    checks every input with it before any work; :func:`read_xray` still refuses what decodes badly."""
    p = Path(path)
    if not p.exists():
        return "no such file"
    if not p.is_file():
        return "not a file (a folder?)"
    try:
        with open(p, "rb") as fh:
            head = fh.read(512)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not head:
        return "empty (0 bytes)"
    kind = _looks_like_text(head)
    if kind and not (head[:1] == b"P" and head[1:2] in b"123" and head[2:3].isspace()):
        return f"not an image (it looks like {kind})"
    return None


def read_xray(path) -> tuple[np.ndarray, dict]:
    """Read a radiograph (PNG, JPEG, TIFF, DICOM, … any size) as ``(H, W)`` float64 in [0, 1].

    Returns ``(image, info)``: the image as displayed (bright = bright; DICOM MONOCHROME1 already
    inverted) and a dict of what was read and decided (format, dtype, channels, scale rule, grey
    rule, alpha, pixel spacing …). ``info["alpha_mask"]`` is a bool (H, W) array of fully
    transparent pixels or None; every other entry is JSON-serialisable. Rules: module docstring.
    Raises ValueError for anything that is not a usable image.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"x-ray {p} does not exist")
    if not p.is_file():
        raise ValueError(f"x-ray {p} is not a file")
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"x-ray {p} is empty (0 bytes)")
    with open(p, "rb") as fh:
        head = fh.read(512)
    info: dict[str, Any] = {"path": str(p), "bytes": int(size)}
    kind = _sniff(p, head)
    if kind == "dicom":
        img, mask = _read_dicom(p, head, info)
    else:
        if kind == "tiff":
            arr, dtype, order = _read_tiff(p, head, info)
        else:
            arr = _read_cv2(p, head, info)
            dtype, order = arr.dtype, "bgr"
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
            dtype = np.dtype(np.uint8)
        if arr.dtype.kind not in "uif":
            raise ValueError(f"{p}: pixel type {arr.dtype} is not a grey-value image")
        info["dtype"] = str(dtype)
        info["shape"] = list(arr.shape)
        grey, mask = _split_channels(arr, order, p, info)
        valid = None if mask is None else ~mask
        img = _to_unit(grey, np.dtype(dtype), p, info, valid)
        if info.get("tiff_photometric") == "MINISWHITE":
            img = 1.0 - img
            info["miniswhite"] = "inverted (1 - v): TIFF PhotometricInterpretation MinIsWhite (low values are white)"
        img, mask = _orient(img, mask, _orientation_tag(p, info), info)
    if img.ndim != 2:
        raise ValueError(f"{p}: expected a 2-D image, got shape {img.shape}")
    if min(img.shape) < MIN_SIDE:
        raise ValueError(f"{p}: image of {img.shape[0]}x{img.shape[1]} pixels is too small (< {MIN_SIDE})")
    sel = img if mask is None else img[~mask]
    if not np.isfinite(sel).all():
        raise ValueError(f"{p}: the image contains NaN or infinite values")
    if sel.size == 0 or float(sel.max() - sel.min()) <= 1e-12:
        raise ValueError(
            f"{p}: the image is constant ({float(sel.flat[0]) if sel.size else 'no pixels'}); "
            "there is nothing to reconstruct"
        )
    if mask is not None:
        img = np.where(mask, 0.0, img)
    info.setdefault("pixel_spacing_mm", None)
    info["height"], info["width"] = int(img.shape[0]), int(img.shape[1])
    info["alpha_mask"] = mask
    return np.clip(img, 0.0, 1.0), info
