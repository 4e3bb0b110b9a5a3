"""Single-image tomography of a real radiograph (paper §4, §5.4): file in, view volume out.

Pipeline of :func:`infer_file`::

    read_xray  ->  polarity  ->  gamma  ->  alpha mask  ->  square  ->  resize (network input)
        -> network (D, n, n)  ->  fusion at the x-ray's resolution (or lateral upsampling)
        -> NRRD / NIfTI volume + preview PNGs + JSON record

Public API
----------
``read_xray(path) -> (image (H, W) float64 in [0, 1], info)``
``detect_polarity(image, mask=None) -> dict``
``prepare_xray(image, *, mask=None, polarity="auto", gamma=None, square="crop") -> (square image, record)``
``xray_file_problem(path) -> str | None``   (cheap pre-check of an input file: why it cannot be read)
``load_model(checkpoint, *, device="cpu", optimize=True) -> (model, state, record)``
``cached_model(checkpoint, device="cpu") -> (model, state, record)``   (load_model, kept for the next call)
``fold_batchnorm(model) -> model``   (a copy with every BatchNorm folded into its convolution)
``optimize_for_inference(model) -> model``   (eval + BN folded + channels_last, a copy)
``predict_volume(model, image, *, device="cpu", threads="auto") -> (D, n, n) float32``
``infer_file(xray_path, checkpoint, out_path, *, gamma=None, fusion=True, beta=2.0, chi=None,
             polarity="auto", square="crop", previews=True, device="cpu", max_size=None,
             pixel_spacing=None, threads="auto") -> dict``   (the record that is also written as JSON)
``bench_infer(*, net="paper", size=256, fuse_to=512, repeats=3, compare=False, threads="auto")
    -> dict(seconds=..., network_s=..., fusion_s=..., first_call_s=..., [options])``

Rules (every decision is written to the JSON record)
----------------------------------------------------
**Reading** (``read_xray``). The file type is sniffed from its content (DICOM: ``DICM`` at byte 128 or
a ``.dcm``/``.dicom`` suffix; TIFF: the ``II*``/``MM*`` magic), everything else goes to OpenCV
(``cv2.imdecode(..., IMREAD_UNCHANGED)``: PNG, JPEG, BMP, PNM, WebP …; the EXIF orientation of a
JPEG is not applied). Values become float64 in [0, 1] *as displayed* (bright = bright):

* unsigned 8-bit: ``v / 255``;
* unsigned 16-bit: ``v / (2**b − 1)`` with ``b`` the smallest of 10, 12, 14, 16 bits that holds the
  image's maximum (10/12/14-bit detector data is commonly stored in 16-bit containers);
* other integers, and floats outside [0, 1]: min–max to [0, 1]; floats inside [0, 1]: unchanged;
* DICOM: the Modality LUT (``RescaleSlope``/``RescaleIntercept``) is applied, then the value is
  scaled by the range that ``BitsStored`` (signed or not) spans through that rescale; windowing (VOI
  LUT) is not applied. ``PhotometricInterpretation`` ``MONOCHROME1`` (low value = white) is inverted
  (``1 − v``) so that the image is as displayed. Pixel spacing: ``PixelSpacing`` (row, column mm),
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

**Polarity** (``detect_polarity``). Our x-rays are opacity: air ≈ 0 (dark), dense bone bright.
A DICOM file says how it is displayed (``PhotometricInterpretation``; MONOCHROME1 is inverted on
reading): ``"auto"`` trusts it, unless the image cues below say the opposite at high confidence,
which is an error. For other files the rule works on the *exposed field*: bands of uniform
rows/columns at each edge that end in a straight step (collimator shutters, bright or dark; padding)
are removed (:func:`exposed_field`). Three cues, each antisymmetric under ``1 − v``: (1) the air at
the field's border is dark (the rank of the border ring's median among the field's pixels), (2) flat
regions are darker than textured ones (inside the field), (3) the brightest pixels are more textured
than the darkest. Each is scaled by its no-information level, clipped to ±3 and summed; the sign
decides. **No guess** (a ``ValueError`` that asks for ``--polarity keep`` or ``invert``) when
|sum| ≤ 1, or when the border cue (the one that holds for any anatomy) says the opposite of the sum
with ≥ 0.4 units: chest films, whose dark lungs are textured and bright abdomen smooth, end here.
Confidence: ``high`` when the three agree clearly, ``normal`` when the flat cue agrees, else
``low`` (with a warning). On 300 synthetic films from real head CTs (tests/test_polarity.py, a seed
not used for tuning): 93 % right, 6.7 % refused, none wrong at high or normal confidence.
``polarity="keep"`` / ``"invert"`` override it (the statistics are recorded anyway).

**Gamma**. ``gamma=g`` undoes a display gamma on the polarity-corrected image: ``value = value ** g``
(``g > 1`` darkens the mid-tones, e.g. ``g = 2.2`` undoes an sRGB-like ``v ** (1/2.2)`` encoding;
``g < 1`` brightens them; 0 and 1 are fixed points). ``None`` (default) is the same as 1: no change.
The paper (§5.4) notes that display gamma can only be undone partially.

**Background value** = the median of the border band after polarity and gamma (unmasked pixels).
Alpha-masked pixels and padding take this value.

**Square**. The network and the view volume are square. ``square="crop"``: centre crop to the short
side (offset ``(long − short) // 2``); ``square="pad"``: pad to the long side with the background
value (``(long − short) // 2`` before, the rest after). The box / pad widths are recorded.

**Resize for the network**: area averaging down to the network's ``input_size`` (bilinear up if the
x-ray is smaller), ``model.data.resize_xrays``.

**Output resolution**: the square side ``S`` of the prepared x-ray, or ``max_size`` when given and
smaller (the x-ray is then area-averaged to ``max_size`` before fusion). With ``fusion=True`` the
network's (D, n, n) view volume is fused with the x-ray at that resolution (``model.fusion``, paper
Eq. 2); the result re-renders (``1 − exp(−chi · mean over depth)``) to the prepared x-ray. With
``fusion=False`` the prediction, clamped to [0, 1], is upsampled laterally (bilinear per depth slice,
``align_corners=False`` with edge clamp, the same as fusion's first step) to the same resolution, so
that outputs with and without fusion share one grid and one spacing. Depth stays D.

**Output file and spacing**. ``.nrrd`` (raw float32, little endian, attached header), ``.nii`` or
``.nii.gz`` (NIfTI-1, float32), chosen by the suffix of ``out_path``. The written array is the view
volume ``vol[z, y, x]`` of shape (D, N, N): **z = depth** (the ray direction of the x-ray; its sign is
ambiguous, DESIGN §1), **y = image rows** (down), **x = image columns** (right). The file axes are
therefore (x, y, z) = (columns, rows, depth) with sizes (N, N, D). Lateral spacing: the x-ray's pixel
spacing (DICOM, or ``pixel_spacing=`` given by the caller) times ``S / N``; else 1.0 per *input*
pixel ("unit: pixel", recorded as unknown). Depth spacing: the lateral extent / D, because the view
volume spans the same [−1, 1] in depth as laterally (DESIGN §1). The volume is centred at the origin
(voxel centres at ``((2i + 1)/N − 1) · extent / 2``). NRRD: ``space directions`` diagonal,
``space origin``, ``space units`` (mm, only when known), ``kinds: domain domain domain``, labels and
``key:=value`` lines saying the axis order; NIfTI: diagonal qform/sform (code 1), ``pixdim``, units mm
when known, ``descrip``.

**Memory**. The volume is never held whole: fusion (``fuse_slabs``) or upsampling runs in slabs of
output rows (≈ 64 MiB each) that are written at their offsets into the (pre-sized) output file, one
contiguous block per depth slice; ``.nii.gz`` is gzip-streamed from a temporary ``.nii``. A 2048² x-ray with D = 128 thus needs about 2 GB of disk,
not of RAM; ``max_size`` caps the resolution when that is too much.

**Files**. Next to ``OUT`` (stem = name without ``.nrrd``/``.nii``/``.nii.gz``): ``STEM.json`` (the
record), and with ``previews=True`` PNGs ``STEM_xray.png`` (the prepared square x-ray),
``STEM_coronal.png`` (central depth slice, the plane of the x-ray: coronal for a frontal
radiograph), ``STEM_axial.png`` (central row: depth vertical × columns), ``STEM_sagittal.png``
(central column: rows × depth horizontal), ``STEM_mip_depth.png`` (maximum along depth) and
``STEM_mip_side.png`` (maximum along the columns: rows × depth). Depth axes are drawn at the same
physical scale as the lateral ones. Densities are shown linearly on [0, max of the volume] (recorded).
Everything is written under temporary names and renamed at the end; on any error nothing is left.

**Speed** (CPU; ``optimize_for_inference``). The model is put in eval mode, every BatchNorm is folded
into the preceding convolution / transposed convolution (``fold_batchnorm``; exact up to float
rounding), its weights are converted to ``channels_last`` (oneDNN's native NHWC layout: no reorders
between layers), and the forward pass runs under ``torch.inference_mode``. Measured on this
project's shared 2-core AMD EPYC (AVX2, no AVX-512/AMX; other jobs running, load 2–7), paper network,
one 256² input, interleaved warm runs, 1 thread (the stable figures; medians): eval 1.38 s, + BN
folding 1.26 s, + channels_last 1.32 s, both 1.11 s (−20 %); with 2 threads the minima were 0.72–0.90 s
but the medians 2–4 s under load, ≈ 0.65–0.8 s at load ≈ 2. bf16 autocast: 193 s (~50x *slower*: no
native bf16 on this CPU). TorchScript trace + freeze / ``torch.jit.optimize_for_inference``: no gain
over folding, 4–8 s of preparation. ``torch.utils.mkldnn.to_mkldnn``: no gain. The first call costs
1.5–3 s more (oneDNN primitive creation). ``bench_infer(compare=True)`` re-measures the options.
**Threads**: ``threads="auto"`` (default, :func:`auto_threads`) uses torch's default thread count
``n`` (= cores) unless the machine is oversubscribed (1-minute load average above the core count),
then its fair share ``round(n · cores / load)``, at least 1. On the 2-core machine with other jobs
running at load 5–7, 2 OpenMP threads were 1.5–2x *slower* than 1 (every layer's parallel region
waits at a barrier for a thread the OS has descheduled); at load ≈ 2.5, 2 threads were still faster.
The thread count is set for the forward pass only and restored afterwards; it is recorded.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .fusion import _check_positive

__all__ = [
    "VOLUME_SUFFIXES",
    "bench_infer",
    "cached_model",
    "detect_polarity",
    "fold_batchnorm",
    "infer_file",
    "auto_threads",
    "load_model",
    "optimize_for_inference",
    "predict_volume",
    "prepare_xray",
    "read_xray",
    "volume_suffix",
    "xray_file_problem",
]

#: output formats by suffix
VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz")
#: border band (fraction of the short side) used by the polarity rule and the background value
BORDER_FRACTION = 0.05
#: polarity rule: rows/columns with an 85th−15th percentile spread below this are uniform (bands)
POLARITY_FLAT = 0.1
#: polarity rule: a change of the row median above this ends a shutter or padding band
POLARITY_STEP = 0.12
#: polarity rule: working resolution (long side, pixels)
POLARITY_SIDE = 160
#: polarity rule: the border cue (in units) at which its disagreement with the sum refuses a guess
POLARITY_BORDER_VOTE = 0.4
#: colour images whose 99th-percentile channel spread is at most this fraction of full scale are grey
GREY_SPREAD = 0.02
#: smallest accepted side of an x-ray (pixels)
MIN_SIDE = 8
#: bytes per fused / upsampled slab of output rows
SLAB_BYTES = 64 * 2**20
#: preview images are at most this many pixels on a side
PREVIEW_MAX = 1024
#: the preview PNGs written next to the output volume as STEM_<name>.png
PREVIEWS = ("xray", "coronal", "axial", "sagittal", "mip_depth", "mip_side")

_DICOM_SUFFIXES = (".dcm", ".dicom")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


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
            info["alpha"] = (f"masks {int(mask.sum())} fully transparent pixels (alpha 0): they take the "
                             "background value")
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
    warnings.warn(f"{p}: the channels differ (99th-percentile spread {100 * p99:.1f} % of full scale): "
                  "converted to grey by BT.601 luma", UserWarning, stacklevel=3)
    return rgb @ w, mask


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
        bits = next(b for b in (10, 12, 14, 16) if hi <= 2**b - 1)
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
    import pydicom

    try:
        ds = pydicom.dcmread(str(p), force=head[128:132] != b"DICM")
        if "PixelData" not in ds:
            raise ValueError("no pixel data")
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - anything pydicom raises means unreadable
        raise _undecodable(p, head, "DICOM", f"{type(exc).__name__}: {exc}") from None
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
    lo, hi = sorted((s_lo * slope + intercept, s_hi * slope + intercept))
    v = g.astype(np.float64) * slope + intercept
    if not np.isfinite(v).all():
        raise ValueError(f"{p}: the image contains NaN or infinite values")
    img = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    info["scale"] = (f"DICOM: v * {slope:g} + {intercept:g} (Modality LUT), scaled by the {bits}-bit "
                     f"{'signed' if signed else 'unsigned'} range [{lo:g}, {hi:g}] -> [0, 1]; no VOI LUT")
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
    import tifffile

    try:
        with tifffile.TiffFile(str(p)) as tf:
            s = tf.series[0]
            arr = s.asarray()
            axes = s.axes
    except Exception as exc:  # noqa: BLE001 - try OpenCV's libtiff (e.g. compression w/o imagecodecs)
        arr = _read_cv2(p, head, info, why=f"{type(exc).__name__}: {exc}")
        return arr, arr.dtype, "bgr"
    info["format"] = "TIFF"
    keep = [i for i, a in enumerate(axes) if arr.shape[i] != 1]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
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
    import cv2

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
        raise ValueError(f"{p}: the image is constant ({float(sel.flat[0]) if sel.size else 'no pixels'}); "
                         "there is nothing to reconstruct")
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


def _edge_band(med: np.ndarray, spread: np.ndarray, limit: int) -> int:
    """Width of a shutter or padding band at the start of a row (or column) profile: uniform rows
    (spread < POLARITY_FLAT) before a step of the row median (> POLARITY_STEP within 2 rows)."""
    n = len(med)
    i = 0
    while i < limit and spread[i] < POLARITY_FLAT:
        if i >= 1 and abs(med[i] - med[max(0, i - 2)]) > POLARITY_STEP and spread[i - 1] < POLARITY_FLAT:
            return i
        i += 1
    if 0 < i < limit and i + 1 < n and abs(med[i + 1] - np.median(med[:i])) > POLARITY_STEP:
        return i  # the band ends straight onto the anatomy
    return 0


def exposed_field(x: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) widths of the collimator shutters and padding on each edge: bands
    of uniform rows/columns that end in a straight step, found one after another (padding, then a
    shutter), at most 35 % of the side each."""
    H, W = x.shape
    out = []
    for prof_axis, n in ((1, H), (1, H), (0, W), (0, W)):
        med = np.median(x, axis=prof_axis)
        spread = np.percentile(x, 85, axis=prof_axis) - np.percentile(x, 15, axis=prof_axis)
        if len(out) % 2:  # bottom / right: from the far edge
            med, spread = med[::-1], spread[::-1]
        total, limit = 0, int(0.35 * n)
        for _ in range(3):
            k = _edge_band(med[total:], spread[total:], limit - total)
            if k == 0:
                break
            total += k
        out.append(total)
    return tuple(out)  # type: ignore[return-value]


def _polarity_cues(x: np.ndarray) -> dict:
    """The three image cues of the polarity rule (positive: bone bright as it is), on the exposed field."""
    from scipy import ndimage

    t, b, l, r = exposed_field(x)
    f = x[t:x.shape[0] - b, l:x.shape[1] - r]
    if min(f.shape) < MIN_SIDE:
        f, (t, b, l, r) = x, (0, 0, 0, 0)
    h, w = f.shape
    bw = max(1, int(0.06 * min(h, w)))
    ring = np.zeros(f.shape, bool)
    ring[:bw] = ring[-bw:] = True
    ring[:, :bw] = ring[:, -bw:] = True
    rm = np.median(f[ring])
    field_air = 0.5 - float(np.mean(f < rm)) - 0.5 * float(np.mean(f == rm))
    mu = ndimage.uniform_filter(f, 5)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(f * f, 5) - mu * mu, 0.0))
    ins = max(1, int(0.12 * min(h, w)))
    fi, si = f[ins:h - ins, ins:w - ins], sd[ins:h - ins, ins:w - ins]
    if fi.size < 16:
        fi, si = f, sd
    lo, hi = np.percentile(si, [30, 70])
    flat_side = float(np.median(fi[si >= hi]) - np.median(fi[si <= lo]))
    qlo, qhi = np.percentile(fi, [15, 85])
    s_lo, s_hi = float(si[fi <= qlo].mean()), float(si[fi >= qhi].mean())
    texture = (s_hi - s_lo) / max(s_hi + s_lo, 1e-12)
    return {"field_bands_tblr": [int(t), int(b), int(l), int(r)], "air_at_field_border": field_air,
            "flat_regions_dark": flat_side, "texture_bright": texture}


def detect_polarity(image, mask=None) -> dict:
    """The polarity rule (module docstring) on an (H, W) image in [0, 1].

    Returns ``invert`` (bool, or None where the rule refuses to guess), ``confidence`` ("high",
    "normal", "low", "none"), ``margin`` (the combined score: > 0 bone bright as it is, antisymmetric
    under ``1 − image``), the three cues and the exposed field, and ``rule``.
    """
    import cv2

    x = np.asarray(image, dtype=np.float64)
    if mask is not None:  # masked pixels take the image median: no cue
        x = np.where(np.asarray(mask, bool), float(np.median(x[~np.asarray(mask, bool)])), x)
    scale = min(1.0, POLARITY_SIDE / max(x.shape))
    small = x if scale == 1 else cv2.resize(x, (max(MIN_SIDE, round(x.shape[1] * scale)),
                                                max(MIN_SIDE, round(x.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    cues = _polarity_cues(small)
    units = np.array([cues["air_at_field_border"] / 0.05, cues["flat_regions_dark"] / 0.01,
                      cues["texture_bright"] / 0.1])
    units = np.clip(units, -3, 3)
    score = float(units.sum())
    d = np.sign(score)
    # air at the field's border is the cue that holds for any anatomy; where it has something to say
    # (>= POLARITY_BORDER_VOTE units) and says the opposite of the sum, the cues disagree: no guess
    conflict = np.sign(units[0]) != d and abs(units[0]) >= POLARITY_BORDER_VOTE
    if abs(score) <= 1 or conflict:
        invert, conf = None, "none"
    else:
        invert = bool(d < 0)
        if (np.sign(units) == d).all() and (np.abs(units) > 1).all():
            conf = "high"
        elif np.sign(units[1]) == d and abs(score) > 2:
            conf = "normal"
        else:
            conf = "low"
    return {"invert": invert, "confidence": conf, "margin": score, **cues,
            "rule": ("on the exposed field (collimator shutters and padding removed): air at the field's border is "
                     "dark, flat regions are darker than textured ones, the brightest pixels are more textured "
                     "than the darkest; each cue in units of its no-information level, clipped to ±3, summed; "
                     "|sum| <= 1, or the border cue (>= 0.4 units) against the sum: no decision")}


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_gamma(gamma) -> float | None:
    return None if gamma is None else _check_positive(gamma, "gamma")


def prepare_xray(image, *, mask=None, polarity: str = "auto", gamma: float | None = None,
                 square: str = "crop", header: str | None = None) -> tuple[np.ndarray, dict]:
    """Polarity, gamma, alpha mask and square (module docstring) -> ``(S, S) float64`` and a record.
    ``header``: the file's own polarity statement (DICOM PhotometricInterpretation), used by "auto"."""
    polarity = _check_choice(polarity, "polarity", ("auto", "keep", "invert"))
    square = _check_choice(square, "square", ("crop", "pad"))
    g = _check_gamma(gamma)
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < MIN_SIDE:
        raise ValueError(f"expected an (H, W) image with sides >= {MIN_SIDE}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the image contains NaN or infinite values")
    x = np.clip(x, 0.0, 1.0)
    rec: dict[str, Any] = {}
    stats = detect_polarity(x, mask)
    if polarity != "auto":
        invert = polarity == "invert"
    elif header is not None:  # the file says how it is displayed (DICOM): trust it unless the image clearly disagrees
        invert = False
        if stats["invert"] and stats["confidence"] == "high":
            raise ValueError(f"polarity: the file's header ({header}) and the image disagree (the image looks "
                             f"inverted, score {stats['margin']:+.2f}); pass --polarity keep or --polarity invert")
    elif stats["invert"] is None:
        raise ValueError(f"polarity cannot be decided from this image (score {stats['margin']:+.2f}; cues "
                         f"{stats['air_at_field_border']:+.3f}, {stats['flat_regions_dark']:+.3f}, "
                         f"{stats['texture_bright']:+.3f}); pass --polarity keep (bone is bright as it is) or "
                         "--polarity invert")
    else:
        invert = stats["invert"]
        if stats["confidence"] == "low":
            warnings.warn(f"polarity detection is uncertain (score {stats['margin']:+.2f}); "
                          f"{'inverting' if invert else 'keeping'}; pass polarity='keep' or 'invert' to decide",
                          UserWarning, stacklevel=2)
    rec["polarity"] = {"mode": polarity, "inverted": bool(invert), "detected": stats,
                       "decided_by": polarity if polarity != "auto" else ("header: " + header if header else "image")}
    if invert:
        x = 1.0 - x
    if g is not None:
        x = x**g
    rec["gamma"] = {"gamma": g, "rule": "value = value ** gamma after polarity (None: unchanged)"}
    band = _border_band(x.shape)
    sel = band if mask is None else band & ~np.asarray(mask, bool)
    if not sel.any():
        sel = np.ones(x.shape, bool) if mask is None else ~np.asarray(mask, bool)
    bg = float(np.median(x[sel]))
    rec["background"] = {"value": bg, "rule": "median of the border band after polarity and gamma"}
    if mask is not None:
        x = np.where(np.asarray(mask, bool), bg, x)
    H, W = x.shape
    S_short, S_long = min(H, W), max(H, W)
    if H == W:
        rec["square"] = {"mode": square, "applied": "none (already square)", "box": [0, 0, H, W]}
    elif square == "crop":
        top, left = (H - S_short) // 2, (W - S_short) // 2
        x = x[top:top + S_short, left:left + S_short]
        rec["square"] = {"mode": "crop", "applied": "centre crop to the short side",
                         "box": [top, left, S_short, S_short]}  # top, left, height, width in input pixels
    else:
        dh, dw = S_long - H, S_long - W
        pads = [dh // 2, dh - dh // 2, dw // 2, dw - dw // 2]  # top, bottom, left, right
        x = np.pad(x, ((pads[0], pads[1]), (pads[2], pads[3])), mode="constant", constant_values=bg)
        rec["square"] = {"mode": "pad", "applied": "pad to the long side with the background value",
                         "pad_top_bottom_left_right": pads, "value": bg,
                         "box": [-pads[0], -pads[2], S_long, S_long]}
    rec["square"]["size"] = int(x.shape[0])
    return np.ascontiguousarray(x), rec


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every ``BatchNorm2d`` that directly follows a ``Conv2d``
    or ``ConvTranspose2d`` inside an ``nn.Sequential`` folded into that convolution (weights scaled by
    ``gamma / sqrt(var + eps)``, bias ``beta − mean · scale``) and replaced by ``nn.Identity``. This is
    the whole BN cost of :class:`~model.network.TomographyNet`; the original model is not changed."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = mod._modules[a], mod._modules[b]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d) \
                    and bn.track_running_stats and bn.running_mean is not None:
                mod._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                mod._modules[b] = nn.Identity()
    return m


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded (:func:`fold_batchnorm`) and
    weights in ``channels_last`` memory format. Same outputs to float rounding."""
    return fold_batchnorm(model).to(memory_format=torch.channels_last)


def auto_threads() -> int:
    """The ``threads="auto"`` rule: torch's default thread count ``n`` (= cores) while the 1-minute load
    average is at most the number of cores, else the fair share ``round(n · cores / load)``, at
    least 1 (an oversubscribed machine: see the module docstring)."""
    default = max(1, torch.get_num_threads())
    cores = os.cpu_count() or default
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return default
    return int(min(default, max(1, round(default * cores / max(load, cores, 1e-9)))))


def _resolve_threads(threads) -> int:
    if isinstance(threads, str) and threads == "auto":
        return auto_threads()
    if isinstance(threads, (int, np.integer)) and not isinstance(threads, bool) and threads >= 1:
        return int(threads)
    raise ValueError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")


class _Threads:
    """Set torch's intra-op thread count for a block and restore it afterwards."""

    def __init__(self, threads):
        self.n = _resolve_threads(threads)

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n != self.old:
            torch.set_num_threads(self.n)
        return self.n

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)
        return False


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def load_model(checkpoint, *, device="cpu", optimize: bool = True) -> tuple[nn.Module, dict, dict]:
    """Load a training checkpoint for inference: ``(model, state, record)``.

    The model is in eval mode on ``device``, through :func:`optimize_for_inference` when ``optimize``
    (BN folded, channels_last). ValueError for a file that
    is not a checkpoint, a network config that is invalid or does not take a 1-channel x-ray, weights
    that do not fit the config, or non-finite weights."""
    from .network import NetworkConfig, TomographyNet
    from .train import load_checkpoint

    dev = _device(device)
    p = Path(checkpoint)
    state = load_checkpoint(p)
    if not isinstance(state.get("network"), dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{p}: the checkpoint lacks its network config or weights")
    try:
        cfg = NetworkConfig.from_dict(state["network"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: unusable network config {state['network']}: {exc}") from None
    if cfg.in_channels != 1:
        raise ValueError(f"{p}: the network takes {cfg.in_channels}-channel input; an x-ray (opacity) "
                         "has 1 channel")
    model = TomographyNet(cfg)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(f"{p}: the weights do not match the checkpoint's network config: "
                         f"{str(exc).splitlines()[0]}") from None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{p}: non-finite values in the weights ({name})")
    model.eval()
    if optimize:
        model = optimize_for_inference(model)
    model = model.to(dev)
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    rec = {
        "path": str(p),
        "step": state.get("step"),
        "code_version": state.get("code_version"),
        "network": cfg.to_dict(),
        "data": {k: data[k] for k in ("spec_version", "chi", "steps", "image_size", "volume_size", "n_views")
                 if k in data},
        "batchnorm_folded": bool(optimize),
        "channels_last": bool(optimize),
        "device": str(dev),
    }
    return model, state, rec


def _network_config(model: nn.Module):
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError("model has no .config (expected a TomographyNet)")
    return cfg


def predict_volume(model: nn.Module, image, *, device="cpu", threads="auto") -> np.ndarray:
    """Run the network on a square (S, S) opacity image: resized to ``input_size`` (area averaging
    down, bilinear up), forward under ``torch.inference_mode`` with ``threads`` torch threads
    ("auto": :func:`auto_threads`); returns the (D, n, n) float32 view volume (raw, not clamped)."""
    from .data import resize_xrays

    cfg = _network_config(model)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expected a square (S, S) image, got shape {x.shape}")
    dev = _device(device)
    with _Threads(threads), torch.inference_mode():
        t = resize_xrays(torch.from_numpy(np.ascontiguousarray(x))[None, None], cfg.input_size)
        y = model(t.to(dev))
    return np.ascontiguousarray(y[0].float().cpu().numpy())


# --------------------------------------------------------------------------------------------------
# slabs: fusion or lateral upsampling, row block by row block
# --------------------------------------------------------------------------------------------------


def _axis_taps(n_in: int, n_out: int):
    """Bilinear taps, align_corners=False with edge clamp (the same rule as model.fusion)."""
    src = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _upsample_slabs(coarse: np.ndarray, N: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    c = np.clip(np.asarray(coarse, np.float64), 0.0, 1.0)
    yi0, yi1, yf = _axis_taps(c.shape[1], N)
    xi0, xi1, xf = _axis_taps(c.shape[2], N)
    cx = c[:, :, xi0] * (1.0 - xf) + c[:, :, xi1] * xf  # (D, h, N): columns first (small)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        f = yf[r0:r1][None, :, None]
        yield r0, (cx[:, yi0[r0:r1]] * (1.0 - f) + cx[:, yi1[r0:r1]] * f).astype(np.float32)


def _rows_per_slab(D: int, N: int) -> int:
    return int(max(1, min(N, SLAB_BYTES // max(1, D * N * 4))))


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def volume_suffix(path) -> str:
    """'.nrrd', '.nii' or '.nii.gz' from the name of ``path``; ValueError otherwise."""
    name = Path(path).name.lower()
    for s in (".nii.gz", ".nrrd", ".nii"):
        if name.endswith(s) and len(name) > len(s):
            return s
    raise ValueError(f"output {path}: the suffix must be one of {list(VOLUME_SUFFIXES)}")


def _stem(path: Path, suffix: str) -> str:
    return path.name[: len(path.name) - len(suffix)]


def _nrrd_header(shape_dhw, spacing_zyx, origin_xyz, unit_mm: bool, extra: dict) -> bytes:
    D, H, W = shape_dhw
    sz, sy, sx = spacing_zyx
    f = lambda v: repr(float(v))  # noqa: E731 - full precision
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        "content: single-image tomography view volume",
        "type: float",
        "dimension: 3",
        "space dimension: 3",
        f"sizes: {W} {H} {D}",
        f"space directions: ({f(sx)},0,0) (0,{f(sy)},0) (0,0,{f(sz)})",
        f"space origin: ({f(origin_xyz[0])},{f(origin_xyz[1])},{f(origin_xyz[2])})",
        'kinds: domain domain domain',
        'labels: "x (image columns)" "y (image rows)" "z (depth, ray direction)"',
    ]
    if unit_mm:
        lines.append('space units: "mm" "mm" "mm"')
    lines += ["endian: little", "encoding: raw"]
    for k, v in extra.items():
        lines.append(f"{k}:={v}")
    return ("\n".join(lines) + "\n\n").encode("ascii")


def _nifti_header(shape_dhw, spacing_zyx, origin_xyz, unit_mm: bool, descrip: str) -> bytes:
    import io

    import nibabel as nib

    D, H, W = shape_dhw
    sz, sy, sx = spacing_zyx
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape((W, H, D))
    aff = np.diag([sx, sy, sz, 1.0])
    aff[:3, 3] = origin_xyz
    hdr.set_qform(aff, code=1)
    hdr.set_sform(aff, code=1)
    hdr.set_zooms((sx, sy, sz))
    hdr.set_xyzt_units("mm" if unit_mm else "unknown")
    hdr["descrip"] = descrip[:79].encode("ascii", "replace")
    hdr["vox_offset"] = 352
    buf = io.BytesIO()
    hdr.write_to(buf)
    b = buf.getvalue()
    if len(b) == 348:
        b += b"\x00\x00\x00\x00"  # extension flag: none
    if len(b) != 352:  # pragma: no cover - nibabel contract
        raise RuntimeError(f"unexpected NIfTI header length {len(b)}")
    return b


def _u8(a: np.ndarray, vmax: float) -> np.ndarray:
    return np.clip(np.rint(np.asarray(a, np.float64) / vmax * 255.0), 0, 255).astype(np.uint8)


def _fit(img: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Resize a float image to (h, w) (area down, linear up), limited to PREVIEW_MAX."""
    import cv2

    h, w = shape_hw
    s = min(1.0, PREVIEW_MAX / max(h, w))
    h, w = max(1, int(round(h * s))), max(1, int(round(w * s)))
    if (h, w) == img.shape:
        return img
    down = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(np.ascontiguousarray(img, dtype=np.float32), (w, h),
                      interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)


class _Outputs:
    """Files written under temporary names in the output folder, renamed on commit, removed on abort."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.token = uuid.uuid4().hex[:8]
        self.pending: list[tuple[Path, Path]] = []
        self.done: list[Path] = []

    def temp(self, final: Path) -> Path:
        t = final.with_name(f".{final.name}.{self.token}.part")
        self.pending.append((t, final))
        return t

    def scratch(self, name: str) -> Path:
        t = self.folder / f".{name}.{self.token}.part"
        self.pending.append((t, None))
        return t

    def commit(self) -> None:
        for t, final in self.pending:
            if final is not None:
                os.replace(t, final)
                self.done.append(final)
            elif t.exists():
                t.unlink()
        self.pending = []

    def abort(self) -> None:
        for t, _ in self.pending:
            try:
                t.unlink()
            except FileNotFoundError:
                pass
        for f in self.done:
            try:
                f.unlink()
            except FileNotFoundError:
                pass


def _write_png(path: Path, img_u8: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", img_u8)
    if not ok:  # pragma: no cover
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


# --------------------------------------------------------------------------------------------------
# the whole pipeline
# --------------------------------------------------------------------------------------------------


def _json_safe(o):
    if isinstance(o, dict):
        return {str(k): _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, (np.floating, float)):
        return float(o) if math.isfinite(float(o)) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    return o


def _resolve_chi(chi, state: dict) -> tuple[float, str]:
    if chi is not None:
        return _check_positive(chi, "chi"), "argument"
    data = state.get("data") if isinstance(state.get("data"), dict) else {}
    c = data.get("chi")
    try:
        c = float(c)
        if math.isfinite(c) and c > 0:
            return c, "checkpoint data"
    except (TypeError, ValueError):
        pass
    return 10.0, "default (the checkpoint does not say)"


def _check_spacing(pixel_spacing):
    if pixel_spacing is None:
        return None
    vals = [pixel_spacing, pixel_spacing] if np.isscalar(pixel_spacing) else list(pixel_spacing)
    try:
        vals = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise ValueError(f"pixel_spacing must be a positive number or (row, column), got {pixel_spacing!r}") from None
    if len(vals) != 2 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"pixel_spacing must be a positive number or (row, column), got {pixel_spacing!r}")
    return vals


_MODELS: dict = {}


def cached_model(checkpoint, device="cpu") -> tuple[nn.Module, dict, dict]:
    """``load_model(checkpoint, device=device, optimize=True)``, kept for the next radiograph (a call
    with several inputs builds the network once; :func:`infer_file` uses it). Keyed by the file's
    path, size and modification time, so a rewritten checkpoint reloads; one network at a time."""
    try:
        st = os.stat(checkpoint)
    except OSError:
        return load_model(checkpoint, device=device, optimize=True)  # its own error message
    key = (os.path.abspath(checkpoint), st.st_size, st.st_mtime_ns, str(device))
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(checkpoint, device=device, optimize=True)
    return _MODELS[key]


def infer_file(xray_path, checkpoint, out_path, *, gamma: float | None = None, fusion: bool = True,
               beta: float = 2.0, chi: float | None = None, polarity: str = "auto", square: str = "crop",
               previews: bool = True, device="cpu", max_size: int | None = None,
               pixel_spacing=None, threads="auto") -> dict:
    """Reconstruct the view volume of a real radiograph and write it (rules: module docstring).

    Args:
        xray_path: PNG / JPEG / TIFF / DICOM … file.
        checkpoint: a training checkpoint (``model.train``).
        out_path: ``.nrrd``, ``.nii`` or ``.nii.gz``; previews and ``STEM.json`` go next to it.
        gamma: undo a display gamma: ``value ** gamma`` after polarity (None: no change).
        fusion: fuse with the x-ray at its resolution (paper §4.2); False: upsample laterally.
        beta: fusion sharpness (Eq. 2).
        chi: Beer–Lambert scale; None: the checkpoint's data ``chi``, else 10.
        polarity: "auto" (detect; module docstring), "keep" or "invert".
        square: "crop" (centre crop to the short side) or "pad" (to the long side, background value).
        previews: write the preview PNGs.
        device: torch device of the network ("cpu", "cuda").
        max_size: cap on the output's lateral resolution (None: the prepared x-ray's side).
        pixel_spacing: (row, column) mm of the x-ray's pixels, overriding the file's (None: DICOM's
            if any, else unknown = 1.0 per input pixel).
        threads: torch threads for the forward pass: "auto" (module docstring) or an integer >= 1.

    Returns the record (also written to ``STEM.json``). ValueError for bad input; nothing is left
    behind on any error.
    """
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    out = Path(out_path)
    suffix = volume_suffix(out)
    polarity = _check_choice(polarity, "polarity", ("auto", "keep", "invert"))
    square = _check_choice(square, "square", ("crop", "pad"))
    gamma = _check_gamma(gamma)
    if fusion:
        beta = _check_positive(beta, "beta")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer))
                                 or max_size < MIN_SIDE):
        raise ValueError(f"max_size must be an integer >= {MIN_SIDE} or None, got {max_size!r}")
    spacing_arg = _check_spacing(pixel_spacing)
    n_threads = _resolve_threads(threads)
    if chi is not None:
        chi = _check_positive(chi, "chi")
    _device(device)
    if out.exists() and out.is_dir():
        raise ValueError(f"output {out} is a folder")
    warn_list: list[str] = []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 1. read + prepare (nothing written yet)
        t = time.perf_counter()
        img, info = read_xray(xray_path)
        mask = info.pop("alpha_mask")
        timing["read_s"] = time.perf_counter() - t
        t = time.perf_counter()
        header = f"PhotometricInterpretation {info['photometric']}" if info.get("photometric") else None
        sq, prep = prepare_xray(img, mask=mask, polarity=polarity, gamma=gamma, square=square, header=header)
        timing["prepare_s"] = time.perf_counter() - t
        # 2. model
        t = time.perf_counter()
        model, state, ck = cached_model(checkpoint, device)
        chi_v, chi_src = _resolve_chi(chi, state)
        timing["load_model_s"] = time.perf_counter() - t
        t = time.perf_counter()
        coarse = predict_volume(model, sq, device=device, threads=n_threads)
        timing["network_s"] = time.perf_counter() - t
        ck["threads"] = n_threads
        try:
            ck["loadavg_1min"] = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover
            pass
    warn_list += [str(w.message) for w in caught]
    for w in caught:  # pass them on to the caller too
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    cfg = model.config
    D = int(coarse.shape[0])
    S = int(sq.shape[0])
    N = S if max_size is None else min(S, int(max_size))
    import cv2

    xr = sq if N == S else cv2.resize(sq, (N, N), interpolation=cv2.INTER_AREA)
    xr = np.clip(xr, 0.0, 1.0)

    # spacing
    px = spacing_arg or info.get("pixel_spacing_mm")
    sp_src = "argument pixel_spacing" if spacing_arg else info.get("pixel_spacing_source")
    unit_mm = px is not None
    if px is None:
        px = [1.0, 1.0]
        sp_src = "unknown: 1.0 per input pixel"
    if unit_mm and abs(px[0] - px[1]) > 1e-6 * max(px):
        warn_list.append(f"anisotropic pixel spacing {px} (row, column): the network assumes square pixels")
        warnings.warn(warn_list[-1], UserWarning, stacklevel=2)
    sy, sx = px[0] * S / N, px[1] * S / N
    extent_y, extent_x = sy * N, sx * N
    sz = 0.5 * (extent_y + extent_x) / D
    spacing_zyx = (sz, sy, sx)
    origin_xyz = (-extent_x / 2 + sx / 2, -extent_y / 2 + sy / 2, -sz * D / 2 + sz / 2)

    folder = out.parent
    created: list[Path] = []
    d = folder
    while not d.exists():
        created.append(d)
        d = d.parent
    folder.mkdir(parents=True, exist_ok=True)
    outs = _Outputs(folder)
    fh = None
    stem = _stem(out, suffix)
    record_path = folder / f"{stem}.json"
    preview_paths: dict[str, str] = {}
    try:
        # 3. volume, slab by slab, into a memory map of the output file
        t = time.perf_counter()
        rows = _rows_per_slab(D, N)
        if fusion:
            from .fusion import fuse_slabs, opacity_max

            slabs = fuse_slabs(coarse, xr, beta=beta, chi=chi_v, rows_per_slab=rows)
        else:
            slabs = _upsample_slabs(coarse, N, rows)
        extra = {"tomo_array_axes": "z y x = depth, image rows, image columns (C order (D, H, W))",
                 "tomo_spacing_source": sp_src, "tomo_fusion": str(bool(fusion))}
        descrip = f"tomo view volume zyx=depth,rows,cols fused={int(bool(fusion))}"
        if suffix == ".nrrd":
            header = _nrrd_header((D, N, N), spacing_zyx, origin_xyz, unit_mm, extra)
            raw_path = outs.temp(out)
        else:
            header = _nifti_header((D, N, N), spacing_zyx, origin_xyz, unit_mm, descrip)
            raw_path = outs.scratch(out.name + ".raw") if suffix == ".nii.gz" else outs.temp(out)
        nbytes = D * N * N * 4
        fh = open(raw_path, "w+b")
        fh.write(header)
        fh.truncate(len(header) + nbytes)
        c_mid, r_mid, k_mid = N // 2, N // 2, D // 2
        coronal = np.zeros((N, N), np.float32)
        axial = np.zeros((D, N), np.float32)
        sagittal = np.zeros((D, N), np.float32)
        mip_depth = np.zeros((N, N), np.float32)
        mip_side = np.zeros((D, N), np.float32)
        rerender_err = 0.0
        vmin, vmax = math.inf, -math.inf
        for r0, slab in slabs:
            r1 = r0 + slab.shape[1]
            slab = np.ascontiguousarray(slab, dtype="<f4")
            for k in range(D):  # rows r0:r1 of depth slice k are contiguous in the (D, N, N) file
                fh.seek(len(header) + 4 * (k * N * N + r0 * N))
                fh.write(memoryview(slab[k]).cast("B"))
            coronal[r0:r1] = slab[k_mid]
            if r0 <= r_mid < r1:
                axial[:] = slab[:, r_mid - r0]
            sagittal[:, r0:r1] = slab[:, :, c_mid]
            mip_depth[r0:r1] = slab.max(axis=0)
            mip_side[:, r0:r1] = slab.max(axis=2)
            vmin, vmax = min(vmin, float(slab.min())), max(vmax, float(slab.max()))
            if fusion:
                rr = -np.expm1(-chi_v * slab.mean(axis=0, dtype=np.float64))
                target = np.minimum(xr[r0:r1], opacity_max(chi_v))
                rerender_err = max(rerender_err, float(np.abs(rr - target).max()))
        fh.close()
        if suffix == ".nii.gz":
            with open(raw_path, "rb") as src, open(outs.temp(out), "wb") as raw_dst, \
                    gzip.GzipFile(fileobj=raw_dst, mode="wb", compresslevel=1, mtime=0) as dst:
                shutil.copyfileobj(src, dst, 16 * 2**20)
            raw_path.unlink()
        timing["volume_s"] = time.perf_counter() - t

        # 4. previews
        t = time.perf_counter()
        scale = vmax if vmax > 0 else 1.0
        if previews:
            Np = min(N, PREVIEW_MAX)
            imgs = {
                "xray": _u8(_fit(sq, (S, S)), 1.0),
                "coronal": _u8(_fit(coronal, (N, N)), scale),
                "axial": _u8(_fit(axial, (Np, Np)), scale),
                "sagittal": _u8(_fit(sagittal.T, (Np, Np)), scale),
                "mip_depth": _u8(_fit(mip_depth, (N, N)), scale),
                "mip_side": _u8(_fit(mip_side.T, (Np, Np)), scale),
            }
            for name in PREVIEWS:
                im = imgs[name]
                final = folder / f"{stem}_{name}.png"
                _write_png(outs.temp(final), im)
                preview_paths[name] = str(final)
        timing["previews_s"] = time.perf_counter() - t
        timing["total_s"] = time.perf_counter() - t_start

        record = {
            "input": info,
            **prep,
            "sizes": {
                "input_hw": [info["height"], info["width"]],
                "square": S,
                "network_input": int(cfg.input_size),
                "network_output_dhw": [D, int(coarse.shape[1]), int(coarse.shape[2])],
                "output_dhw": [D, N, N],
                "max_size": None if max_size is None else int(max_size),
                "resize_rule": "area averaging down to the network input (model.data.resize_xrays); "
                               "the fused x-ray area-averaged to max_size when given",
            },
            "checkpoint": ck,
            "fusion": {
                "enabled": bool(fusion),
                "beta": float(beta) if fusion else None,
                "chi": chi_v,
                "chi_source": chi_src,
                "rows_per_slab": rows,
                "rerender_max_abs_error": rerender_err if fusion else None,
                "no_fusion_rule": None if fusion else
                "prediction clamped to [0, 1], bilinear lateral upsampling to the output resolution",
            },
            "output": {
                "path": str(out),
                "format": suffix,
                "dtype": "float32",
                "array_axes": "z, y, x = depth, image rows, image columns; file axes (x, y, z)",
                "shape_zyx": [D, N, N],
                "spacing_zyx": list(spacing_zyx),
                "spacing_unit": "mm" if unit_mm else "input pixel (unknown physical size)",
                "spacing_source": sp_src,
                "depth_spacing_rule": "lateral extent / D (the view volume spans [-1, 1] in depth as laterally)",
                "origin_xyz": list(origin_xyz),
                "value_range": [vmin, vmax],
            },
            "previews": {"files": preview_paths, "display_range": [0.0, scale]} if previews else None,
            "timing": timing,
            "warnings": warn_list,
            "record": str(record_path),
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
        }
        record = _json_safe(record)
        outs.temp(record_path).write_text(json.dumps(record, indent=2))
        outs.commit()
    except BaseException:
        if fh is not None:
            fh.close()
        outs.abort()
        for dd in created:  # folders this call made, innermost first, if left empty
            try:
                dd.rmdir()
            except OSError:
                break
        raise
    return record


# --------------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------------


def _bench_xray(n: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic opacity image (n, n): a few Gaussian blobs on air, values in [0, 0.95]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n * 2 - 1
    img = np.zeros((n, n))
    for _ in range(12):
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        s = rng.uniform(0.05, 0.3)
        img += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return 0.95 * (1 - np.exp(-img))


def _median(v) -> float:
    v = sorted(v)
    n = len(v)
    return float(v[n // 2]) if n % 2 else float(0.5 * (v[n // 2 - 1] + v[n // 2]))


def bench_infer(*, net: str = "paper", size: int = 256, fuse_to: int = 512, repeats: int = 3,
                compare: bool = False, threads="auto", seed: int = 0) -> dict:
    """Time one x-ray through the network plus fusion to ``fuse_to``² on the CPU, as
    :func:`infer_file` runs them (random weights; no reading or writing of files).

    The network is the ``net`` preset with ``input_size = size`` (random weights, through
    :func:`optimize_for_inference`); a synthetic ``fuse_to``² opacity image is area-averaged to
    ``size`` for the network, and the prediction is fused with it at ``fuse_to``² (``fuse_slabs``,
    the slabs that ``infer_file`` would write). One cold run (the first call: oneDNN primitive
    creation, numba cache load) is timed apart, then ``repeats`` warm runs.

    Returns ``seconds`` (median warm total), ``network_s`` / ``fusion_s`` (their medians),
    ``first_call_s``, ``runs_s``, ``threads`` (torch threads used), ``loadavg_1min`` (before and
    after) and the sizes; with ``compare=True`` also ``options``: for each of eval / + BN folding /
    + channels_last / both, and 1 thread / torch's default, the warm median and minimum of the
    forward pass over ``repeats`` runs, interleaved so that a change of machine load hits all alike.
    """
    import dataclasses

    from .data import resize_xrays
    from .fusion import fuse_slabs
    from .network import NetworkConfig, TomographyNet

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    for name, v in (("size", size), ("fuse_to", fuse_to)):
        if isinstance(v, bool) or not isinstance(v, int) or v < MIN_SIDE:
            raise ValueError(f"{name} must be an integer >= {MIN_SIDE}, got {v!r}")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n_threads = _resolve_threads(threads)
    base = NetworkConfig.preset(net)
    cfg = dataclasses.replace(base, input_size=size, out_size=size // 2).validate()
    torch.manual_seed(seed)
    model = TomographyNet(cfg).eval()
    fast = optimize_for_inference(model)
    xray = _bench_xray(fuse_to, seed)

    def once() -> tuple[float, float]:
        t0 = time.perf_counter()
        coarse = predict_volume(fast, xray, threads=n_threads)
        t1 = time.perf_counter()
        for _r0, _slab in fuse_slabs(coarse, xray, rows_per_slab=_rows_per_slab(coarse.shape[0], fuse_to)):
            pass
        return t1 - t0, time.perf_counter() - t1

    first = once()
    runs = [once() for _ in range(repeats)]
    res: dict[str, Any] = {
        "seconds": _median([a + b for a, b in runs]),
        "network_s": _median([a for a, _ in runs]),
        "fusion_s": _median([b for _, b in runs]),
        "first_call_s": float(sum(first)),
        "runs_s": [float(a + b) for a, b in runs],
        "net": net,
        "network": cfg.to_dict(),
        "size": size,
        "fuse_to": fuse_to,
        "repeats": repeats,
        "threads": n_threads,
        "settings": "eval, BatchNorm folded, channels_last, torch.inference_mode, float32",
    }
    if compare:
        x = resize_xrays(torch.from_numpy(xray.astype(np.float32))[None, None], cfg.input_size)
        cl = torch.channels_last
        variants = {
            "eval": model,
            "eval+fold_bn": fold_batchnorm(model),
            "eval+channels_last": copy.deepcopy(model).to(memory_format=cl),
            "eval+fold_bn+channels_last": fast,
        }
        counts = sorted({1, max(1, torch.get_num_threads())})
        times: dict[tuple[str, int], list[float]] = {}
        with torch.inference_mode():
            for n in counts:  # warm every variant once per thread count
                with _Threads(n):
                    for m in variants.values():
                        m(x)
            for _ in range(repeats):
                for n in counts:
                    with _Threads(n):
                        for name, m in variants.items():
                            t = time.perf_counter()
                            m(x)
                            times.setdefault((name, n), []).append(time.perf_counter() - t)
        res["options"] = {f"{name}, {n} thread{'s' if n > 1 else ''}": {"median_s": _median(v), "min_s": min(v)}
                          for (name, n), v in times.items()}
    res["loadavg_1min"] = [load0, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    return res
