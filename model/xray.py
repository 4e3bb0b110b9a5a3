"""Radiographs in: reading any image file as displayed, then polarity, gamma, background and square
for the network (:func:`prepare_xray`). Polarity itself is :mod:`model.polarity`.

**Reading** (``read_xray``). The file type is sniffed from its content (DICOM: ``DICM`` at byte 128 or
a ``.dcm``/``.dicom`` suffix; TIFF: the ``II*``/``MM*`` magic), everything else goes to OpenCV
(``cv2.imdecode(..., IMREAD_UNCHANGED)``: PNG, JPEG, BMP, PNM, WebP …; the EXIF orientation of a
JPEG is not applied). Values become float64 in [0, 1] *as displayed* (bright = bright):

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
  = white) is inverted (``1 − v``) so that the image is as displayed. Pixel spacing: ``PixelSpacing`` (row, column mm),
  else ``ImagerPixelSpacing``; a multi-frame file gives its first frame (with a warning).
* Colour (3 or 4 channels, also DICOM RGB): the image is grey when the 99th percentile of the
  per-pixel channel spread (max − min channel) is at most 2 % of full scale (tolerates JPEG chroma
  noise); it then becomes the mean of the channels. Otherwise a ``UserWarning`` is issued and it is
  converted by BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B``.
* Alpha (2nd channel of grey+alpha, 4th of RGBA): ignored unless it masks, i.e. unless some pixels
  are fully transparent (alpha 0) while others are not; those pixels are returned in
  ``info["alpha_mask"]`` and later take the background value (see below). Partial transparency is
  ignored (the grey value is kept).
* A TIFF or PNG resolution tag is not used as pixel spacing (it is usually a display DPI).
* Refused with ``ValueError``: a missing, empty (0-byte) or undecodable file (text, HTML …), NaN or
  infinite values, a constant image, fewer than 8 pixels on a side, a fully transparent image.


**Gamma**. ``gamma=g`` undoes a display gamma on the polarity-corrected image: ``value = value ** g``
(``g > 1`` darkens the mid-tones, e.g. ``g = 2.2`` undoes an sRGB-like ``v ** (1/2.2)`` encoding;
``g < 1`` brightens them; 0 and 1 are fixed points). ``None`` (default) is the same as 1: no change.
The paper (§5.4) notes that display gamma can only be undone partially.

**Background value** = the median of the border band of the exposed field (inside collimator
shutters and padding, :func:`model.polarity.exposed_field`) after polarity and gamma (unmasked
pixels). Alpha-masked pixels, shutters (``square="field"``) and padding take this value.

**Air** (``air="subtract"``). A film whose air is grey (a display offset, a window that lifts the
black) is unlike the training x-rays, whose air is 0: the background value is subtracted and the
rest stretched back to 1, ``(v − bg) / (1 − bg)`` clipped at 0, after which the background value is
0. ``"keep"`` (default) leaves the values as they are; both record the level.

**Square**. The network and the view volume are square. ``square="field"`` (default): the anatomy
is found inside the exposed field (:func:`anatomy_box`: the smoothed field split by Otsu's threshold
into air and body, opened, its largest part and every part at least a fifth as large; the whole
field where the air does not reach most of the field's border, i.e. the body fills the film: then
the field's centre square, as ``crop`` does), and the square is centred on it with side ``long side
of the anatomy / FIELD_FILL`` (0.75: the specimens of the
training x-rays span 0.65–0.81 of the image, measured on the real CTs' cubes); shutters become the
background value and the square is padded with it where it leaves the image. Nothing is stretched:
portrait and landscape films both keep their aspect. ``square="crop"``: centre crop to the short
side (offset ``(long − short) // 2``); ``square="pad"``: pad to the long side with the background
value (``(long − short) // 2`` before, the rest after). The field, the anatomy's box, the square's
box (top, left, height, width in input pixels; negative or beyond the image where padded) and the
pad widths are recorded.

**Resize for the network**: area averaging down to the network's ``input_size`` (bilinear up if the
x-ray is smaller), ``model.data.resize_xrays``.

"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from tomodata.image_files import dicom_pixels, read_dicom, read_tiff

from .fusion import _check_positive
from .polarity import BORDER_FRACTION, MIN_SIDE, detect_polarity, exposed_field

__all__ = ["prepare_xray", "read_xray", "xray_file_problem"]

#: square="field": the anatomy's long side spans this fraction of the square (module docstring)
FIELD_FILL = 0.75
#: anatomy_box: the body is brighter than air by this fraction of (90th percentile − air)
ANATOMY_LEVEL = 0.3
#: square modes of prepare_xray
SQUARE_MODES = ("field", "crop", "pad")
#: colour images whose 99th-percentile channel spread is at most this fraction of full scale are grey
GREY_SPREAD = 0.02

_DICOM_SUFFIXES = (".dcm", ".dicom")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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
        msg += f" (not a {what} OpenCV can decode, or truncated)"
    return ValueError(msg)


def _sniff(p: Path, head: bytes) -> str:
    if head[128:132] == b"DICM" or p.suffix.lower() in _DICOM_SUFFIXES:
        return "dicom"
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    return "image"


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


def _read_dicom(p: Path, head: bytes, info: dict) -> tuple[np.ndarray, np.ndarray | None]:
    try:  # the project's one DICOM path (tomodata.image_files)
        ds = read_dicom(p, force=head[128:132] != b"DICM")
        arr = dicom_pixels(ds, p)
    except ValueError as exc:
        raise _undecodable(p, head, "DICOM", str(exc).removeprefix(f"{p}: ")) from None
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
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        sp = ds.get(key)
        if sp is not None:
            try:
                vals = [float(s) for s in sp]
            except (TypeError, ValueError):
                continue
            if len(vals) == 2 and all(math.isfinite(s) and s > 0 for s in vals):
                info["pixel_spacing_mm"] = vals  # (row, column)
                info["pixel_spacing_source"] = f"DICOM {key}"
                break
    return img, mask


def _read_tiff(p: Path, head: bytes, info: dict) -> tuple[np.ndarray, np.dtype, str]:
    try:  # the project's one TIFF path (tomodata.image_files): tifffile, else OpenCV's libtiff
        arr, axes, _, reader = read_tiff(p)
    except ValueError as exc:
        raise _undecodable(p, head, "TIFF", str(exc).removeprefix(f"{p}: ")) from None
    info["format"] = "TIFF" if reader == "tifffile" else f"TIFF (read by {reader})"
    if arr.ndim == 3 and not axes.endswith("S"):
        warnings.warn(f"{p}: {arr.shape[0]} pages; the first is used", UserWarning, stacklevel=3)
        info["pages"] = f"{arr.shape[0]} pages: the first is used"
        arr = arr[0]
    elif arr.ndim == 4 and axes.endswith("S"):
        warnings.warn(f"{p}: {arr.shape[0]} pages; the first is used", UserWarning, stacklevel=3)
        info["pages"] = f"{arr.shape[0]} pages: the first is used"
        arr = arr[0]
    return arr, arr.dtype, "rgb"


def _read_cv2(p: Path, head: bytes, info: dict, why: str = "") -> np.ndarray:
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise _undecodable(p, head, "TIFF" if why else "image format", why)
    info["format"] = "OpenCV (" + (p.suffix.lower().lstrip(".") or "no suffix") + ")"
    return img


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


# --------------------------------------------------------------------------------------------------
# preparation: polarity, gamma, background, square
# --------------------------------------------------------------------------------------------------


def _border_band(shape: tuple[int, int], fraction: float = BORDER_FRACTION) -> np.ndarray:
    H, W = shape
    b = max(1, int(round(fraction * min(H, W))))
    m = np.zeros((H, W), bool)
    m[:b] = m[-b:] = True
    m[:, :b] = m[:, -b:] = True
    return m


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_gamma(gamma) -> float | None:
    return None if gamma is None else _check_positive(gamma, "gamma")


def anatomy_box(
    x: np.ndarray, field_tblr=(0, 0, 0, 0), air: float | None = None
) -> tuple[tuple[int, int, int, int], bool]:
    """``((top, left, height, width), found)``: the anatomy's box in an (H, W) image in [0, 1] with bone
    bright (after polarity), inside the exposed field ``field_tblr`` (band widths top, bottom, left, right).
    ``air``: the air's value (default: the median of the field's border band; the field's 5th percentile where that
    is lower). The smoothed field above ``air + ANATOMY_LEVEL · (90th percentile − air)``, opened (text, thin
    lines), its largest connected part and every part at least a fifth as large. ``found`` is False where no air
    reaches the field's border or nothing stands out (the box is then the field)."""
    H, W = x.shape
    t, b, l, r = (int(v) for v in field_tblr)
    f = x[t : H - b, l : W - r]
    whole = (t, l, f.shape[0], f.shape[1])
    if min(f.shape) < MIN_SIDE:
        return whole, False
    scale = min(1.0, 256 / max(f.shape))
    small: np.ndarray = f.astype(np.float32)
    if scale < 1:
        small = cv2.resize(
            small,
            (max(MIN_SIDE, round(f.shape[1] * scale)), max(MIN_SIDE, round(f.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    sm = cv2.GaussianBlur(small, (0, 0), max(1.0, 0.01 * max(small.shape)))
    # air: the border band's median, or the 5th percentile where lower (a body that reaches the
    # border, e.g. a chest film, would otherwise be taken for air)
    air = min(float(np.median(sm[_border_band(sm.shape)])) if air is None else air, float(np.percentile(sm, 5)))
    top = float(np.percentile(sm, 90))
    if top - air < 0.02:
        return whole, False
    body: np.ndarray = (sm > air + ANATOMY_LEVEL * (top - air)).astype(np.uint8)
    k = max(3, int(0.06 * min(small.shape)) | 1)  # removes text, rulers, wires; the box gets a margin anyway
    body = cv2.morphologyEx(body, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    ring = _border_band(body.shape, 0.02)
    if body[ring].mean() > 0.5 or not body.any():  # the body fills the film: no air around it
        return whole, False
    n, lab, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= 0.2 * areas.max())
    x0 = stats[keep, cv2.CC_STAT_LEFT].min()
    y0 = stats[keep, cv2.CC_STAT_TOP].min()
    x1 = (stats[keep, cv2.CC_STAT_LEFT] + stats[keep, cv2.CC_STAT_WIDTH]).max()
    y1 = (stats[keep, cv2.CC_STAT_TOP] + stats[keep, cv2.CC_STAT_HEIGHT]).max()
    sy, sx = f.shape[0] / body.shape[0], f.shape[1] / body.shape[1]
    ay, ax = t + int(np.floor(y0 * sy)), l + int(np.floor(x0 * sx))
    return (
        ay,
        ax,
        min(t + f.shape[0], t + int(np.ceil(y1 * sy))) - ay,
        min(l + f.shape[1], l + int(np.ceil(x1 * sx))) - ax,
    ), True


def _field_bands(x: np.ndarray) -> tuple[int, int, int, int]:
    """:func:`~model.polarity.exposed_field` on a copy of at most 512 pixels a side, band widths
    scaled back up (rounded up: a shutter's edge is never kept)."""
    s = min(1.0, 512 / max(x.shape))
    if s == 1.0:
        return tuple(int(v) for v in exposed_field(x))  # type: ignore[return-value]
    small = cv2.resize(
        x.astype(np.float32),
        (max(MIN_SIDE, round(x.shape[1] * s)), max(MIN_SIDE, round(x.shape[0] * s))),
        interpolation=cv2.INTER_AREA,
    )
    t, b, l, r = exposed_field(small.astype(np.float64))
    fy, fx = x.shape[0] / small.shape[0], x.shape[1] / small.shape[1]
    return (
        int(np.ceil(t * fy)) if t else 0,
        int(np.ceil(b * fy)) if b else 0,
        int(np.ceil(l * fx)) if l else 0,
        int(np.ceil(r * fx)) if r else 0,
    )


def _field_square(x: np.ndarray, field_tblr, bg: float) -> tuple[np.ndarray, dict]:
    """The square="field" rule (module docstring): (S, S) image and its record."""
    H, W = x.shape
    t, b, l, r = field_tblr
    (at, al, ah, aw), found = anatomy_box(x, field_tblr, air=bg)
    if found:
        S = max(MIN_SIDE, int(np.ceil(max(ah, aw) / FIELD_FILL)))
        top, left = int(round(at + ah / 2 - S / 2)), int(round(al + aw / 2 - S / 2))
    else:  # the body fills the field: its centre square (nothing invented around a cut-off body)
        S = min(ah, aw)
        top, left = at + (ah - S) // 2, al + (aw - S) // 2
    g = np.full((H, W), bg)
    g[t : H - b, l : W - r] = x[t : H - b, l : W - r]  # shutters and padding bands take the background value
    out = np.full((S, S), bg)
    y0, y1, x0, x1 = max(top, 0), min(top + S, H), max(left, 0), min(left + S, W)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = g[y0:y1, x0:x1]
    return out, {
        "mode": "field",
        "applied": (
            "square around the anatomy, its long side at FIELD_FILL of the square"
            if found
            else "centre square of the exposed field (the body fills it)"
        ),
        "field_bands_tblr": [int(v) for v in field_tblr],
        "anatomy_box": [at, al, ah, aw],
        "anatomy_found": bool(found),
        "fill": FIELD_FILL,
        "box": [top, left, S, S],
        "padded": bool(top < 0 or left < 0 or top + S > H or left + S > W),
        "value": bg,
    }


def prepare_xray(
    image,
    *,
    mask=None,
    polarity: str = "auto",
    gamma: float | None = None,
    square: str = "field",
    header: str | None = None,
    air: str = "keep",
) -> tuple[np.ndarray, dict]:
    """Polarity, gamma, air, alpha mask and square (module docstring) -> ``(S, S) float64`` and a
    record. ``header``: the file's own polarity statement (DICOM PhotometricInterpretation), used by
    "auto". ``air``: "keep", or "subtract" the background value (the air's grey level, a display
    offset): ``(v - bg) / (1 - bg)`` clipped at 0, so that air is black as in the training x-rays."""
    air = _check_choice(air, "air", AIR_MODES)
    polarity = _check_choice(polarity, "polarity", ("auto", "keep", "invert"))
    square = _check_choice(square, "square", SQUARE_MODES)
    g = _check_gamma(gamma)
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < MIN_SIDE:
        raise ValueError(f"expected an (H, W) image with sides >= {MIN_SIDE}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the image contains NaN or infinite values")
    x = np.clip(x, 0.0, 1.0)
    rec: dict[str, Any] = {"polarity": _decide_polarity(x, mask, polarity, header)}
    if rec["polarity"]["inverted"]:
        x = 1.0 - x
    if g is not None:
        x = x**g
    rec["gamma"] = {"gamma": g, "rule": "value = value ** gamma after polarity (None: unchanged)"}
    bg, field = _background(x, mask)
    rec["background"] = {"value": bg, "rule": "median of the exposed field's border band after polarity and gamma"}
    rec["air"] = {"mode": air, "level": bg}
    if air == "subtract" and bg < 1.0:
        x = np.clip((x - bg) / (1.0 - bg), 0.0, 1.0)
        bg = rec["background"]["value"] = 0.0  # what shutters and padding take from here on
        rec["air"]["rule"] = "(v - level) / (1 - level), clipped at 0: air black; shutters and padding take 0"
    if mask is not None:
        x = np.where(np.asarray(mask, bool), bg, x)
    x, rec["square"] = _make_square(x, square, field, bg)
    rec["square"]["size"] = int(x.shape[0])
    return np.ascontiguousarray(x), rec


#: what ``air`` may be: keep the air's level, or subtract it (prepare_xray)
AIR_MODES = ("keep", "subtract")


def _decide_polarity(x: np.ndarray, mask, polarity: str, header: str | None) -> dict:
    """The polarity record of the (H, W) image ``x`` in [0, 1] (``inverted``: bone was dark): the
    mode's choice, or for "auto" the header's (unless the image clearly disagrees: ValueError) or
    the detector's (:func:`model.polarity.detect_polarity`; ValueError when undecided, a warning
    when uncertain)."""
    stats = detect_polarity(x, mask)
    if polarity != "auto":
        invert = polarity == "invert"
    elif header is not None:  # the file says how it is displayed (DICOM): trust it unless the image clearly disagrees
        invert = False
        if stats["invert"] and stats["confidence"] == "high":
            raise ValueError(
                f"polarity: the file's header ({header}) and the image disagree (the image looks "
                f"inverted, score {stats['margin']:+.2f}); pass --polarity keep or --polarity invert"
            )
        if stats["invert"] is not False:  # the image does not confirm the header: say that the header decided
            looks = "looks inverted" if stats["invert"] else "does not show which way it is"
            warnings.warn(
                f"polarity: kept as the file's header says ({header}), but the image {looks} (score "
                f"{stats['margin']:+.2f}); check the result, or pass --polarity keep or --polarity invert",
                UserWarning,
                stacklevel=3,
            )
    elif stats["invert"] is None:
        raise ValueError(
            f"polarity cannot be decided from this image (score {stats['margin']:+.2f}; cues "
            f"{stats['air_at_field_border']:+.3f}, {stats['flat_regions_dark']:+.3f}, "
            f"{stats['texture_bright']:+.3f}); pass --polarity keep (bone is bright as it is) or "
            "--polarity invert"
        )
    else:
        invert = stats["invert"]
        if stats["confidence"] == "low":
            warnings.warn(
                f"polarity detection is uncertain (score {stats['margin']:+.2f}); "
                f"{'inverting' if invert else 'keeping'}; pass polarity='keep' or 'invert' to decide",
                UserWarning,
                stacklevel=3,  # prepare_xray's caller
            )
    return {
        "mode": polarity,
        "inverted": bool(invert),
        "detected": stats,
        "decided_by": polarity if polarity != "auto" else ("header: " + header if header else "image"),
    }


def _background(x: np.ndarray, mask) -> tuple[float, tuple[int, int, int, int]]:
    """``(background value, exposed field's bands (top, bottom, left, right) in pixels)``: the median
    of the field's border band, alpha-masked pixels left out (the whole image's border band when the
    field is too small; every unmasked pixel when the band is empty)."""
    field = _field_bands(x)
    band = np.zeros(x.shape, bool)
    t, b, l, r = field
    if min(x.shape[0] - t - b, x.shape[1] - l - r) >= MIN_SIDE:
        band[t : x.shape[0] - b, l : x.shape[1] - r] = _border_band((x.shape[0] - t - b, x.shape[1] - l - r))
    else:
        band, field = _border_band(x.shape), (0, 0, 0, 0)
    sel = band if mask is None else band & ~np.asarray(mask, bool)
    if not sel.any():
        sel = np.ones(x.shape, bool) if mask is None else ~np.asarray(mask, bool)
    return float(np.median(x[sel])), field


def _make_square(x: np.ndarray, square: str, field, bg: float) -> tuple[np.ndarray, dict]:
    """The (H, W) image made square by ``square`` ("field", "crop" or "pad" with ``bg``) and the
    square's record (``box``: top, left, height, width in input pixels)."""
    H, W = x.shape
    S_short, S_long = min(H, W), max(H, W)
    if square == "field":
        return _field_square(x, field, bg)
    if H == W:
        return x, {"mode": square, "applied": "none (already square)", "box": [0, 0, H, W]}
    if square == "crop":
        top, left = (H - S_short) // 2, (W - S_short) // 2
        x = x[top : top + S_short, left : left + S_short]
        return x, {"mode": "crop", "applied": "centre crop to the short side", "box": [top, left, S_short, S_short]}
    dh, dw = S_long - H, S_long - W
    pads = [dh // 2, dh - dh // 2, dw // 2, dw - dw // 2]  # top, bottom, left, right
    x = np.pad(x, ((pads[0], pads[1]), (pads[2], pads[3])), mode="constant", constant_values=bg)
    return x, {
        "mode": "pad",
        "applied": "pad to the long side with the background value",
        "pad_top_bottom_left_right": pads,
        "value": bg,
        "box": [-pads[0], -pads[2], S_long, S_long],
    }
