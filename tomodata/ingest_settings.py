"""Per-specimen ingest settings: window (or HU preset), background, orientation, crop.

One home for how a scan's values and axes are brought to the canonical cube's convention, used by
the manifest (optional columns ``window``, ``background``, ``orientation``, ``crop``), ``tomo cube``
and the workflow (a manifest cell overrides ``data.cube.*`` of the config). docs/pose.md states the
canonical pose these settings bring a scan to.

    window       "lo,hi" in the file's units: density = clip((v − lo)/(hi − lo), 0, 1); or a preset
                 name (:data:`WINDOW_PRESETS`, Hounsfield units). Empty: uint8 /255, uint16 /65535,
                 float data already in [0, 1]; anything else needs a window.
    background   densities ≤ this become 0 (codec noise, scanner background); empty = 0, or the
                 preset's own (hu-head: −500 HU, i.e. 1/6; :data:`PRESET_BACKGROUND_HU`).
    orientation  three comma-separated axis names with optional "-": canonical axis i (z, y, x)
                 takes the read volume's named axis, reversed with "-". "z,y,x" keeps the volume as
                 read; "z,-y,x" turns it upside down; "y,z,x" swaps z and y. Applied after
                 ``slice_axis`` (which says how the file's slices map to z, y, x).
    crop         "none" or "largest": keep the largest connected part of the support (density above
                 max(background, :data:`CROP_THRESHOLD`)), grown by :data:`CROP_GROW` voxels, and
                 set the rest to zero density: removes scanner tables, head holders and labels that
                 do not touch the specimen.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage

from .resample import value_map

__all__ = [
    "WINDOW_PRESETS",
    "PRESET_BACKGROUND_HU",
    "preset_background",
    "ORIENTATION_DEFAULT",
    "CROPS",
    "CROP_THRESHOLD",
    "CROP_GROW",
    "FAINT_MAX",
    "parse_window",
    "parse_orientation",
    "orient",
    "check_density",
    "crop_largest",
]

# Hounsfield-unit windows: hu-bone keeps soft tissue near 0 (40 HU → 0.02) and bone high (1000 HU → 0.5),
# like the paper's skull x-rays; hu-head keeps soft tissue visible (0 HU → 0.33).
WINDOW_PRESETS = {"hu-bone": (0.0, 2000.0), "hu-head": (-1000.0, 2000.0)}
# A preset's background where none is given (Hounsfield units): hu-head maps air to 0 but leaves
# pillows, foam, blankets, partial-volume air and noise (about −950 … −500 HU) a faint density that
# would set the cube's scale (the specimen then fills 0.76 of the ball); −500 HU is the usual
# body-mask threshold (fat is about −100 HU). hu-bone needs none: everything ≤ 0 HU is already 0.
PRESET_BACKGROUND_HU = {"hu-head": -500.0}
ORIENTATION_DEFAULT = "z,y,x"
CROPS = ("none", "largest")
CROP_THRESHOLD = 0.1  # density (of 1) above which a voxel is support, for crop = "largest"
CROP_GROW = 2  # voxels the kept part is grown by before the rest is cleared
#: without a window, uint8/uint16 data whose densest voxel maps below this warns (nearly blank x-rays)
FAINT_MAX = 0.1
_AXES = "zyx"
WHERE = "(manifest column `window`, config data.cube.window, tomo cube --window)"


def _blank(text) -> bool:
    return text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == ""


def parse_window(text) -> tuple[float, float] | None:
    """``"lo,hi"``, a preset name or a (lo, hi) pair → (lo, hi); empty → None. ValueError otherwise."""
    if _blank(text):
        return None
    if isinstance(text, (list, tuple)):
        parts = list(text)
    else:
        s = str(text).strip()
        if s.lower() in WINDOW_PRESETS:
            return WINDOW_PRESETS[s.lower()]
        parts = s.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"window must be 'lo,hi' (two numbers) or one of {sorted(WINDOW_PRESETS)}, got {text!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"window must be two finite numbers lo < hi, got {text!r}")
    return lo, hi


def preset_background(window_text) -> float | None:
    """The default background (density units) of a window preset given by name (see
    :data:`PRESET_BACKGROUND_HU`), else None."""
    if (
        _blank(window_text)
        or not isinstance(window_text, str)
        or window_text.strip().lower() not in PRESET_BACKGROUND_HU
    ):
        return None
    lo, hi = WINDOW_PRESETS[window_text.strip().lower()]
    return (PRESET_BACKGROUND_HU[window_text.strip().lower()] - lo) / (hi - lo)


def parse_orientation(text) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """``"z,-y,x"`` → (source axis per canonical axis, reversed per canonical axis); empty = identity."""
    if _blank(text):
        text = ORIENTATION_DEFAULT
    parts = [p.strip().lower() for p in str(text).split(",")]
    names = [p.lstrip("+-") for p in parts]
    if len(parts) != 3 or sorted(names) != sorted(_AXES):
        raise ValueError(
            f"orientation must name z, y and x once each, with an optional '-' to reverse (e.g. 'z,-y,x'), got {text!r}"
        )
    return (tuple(_AXES.index(n) for n in names), tuple(p.startswith("-") for p in parts))  # type: ignore[return-value]


def orient(vol: np.ndarray, spacing_zyx, orientation) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Apply an orientation (see module docstring) to ``vol[z, y, x]`` and its spacing (mm)."""
    perm, flips = parse_orientation(orientation)
    if perm == (0, 1, 2) and not any(flips):
        return vol, tuple(float(s) for s in spacing_zyx)  # type: ignore[return-value]
    out = np.transpose(vol, perm)
    out = out[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    return np.ascontiguousarray(out), tuple(float(spacing_zyx[a]) for a in perm)  # type: ignore[return-value]


def _density(vol: np.ndarray, scale: float, offset: float) -> np.ndarray:
    return np.clip(vol.astype(np.float32) * np.float32(scale) + np.float32(offset), 0.0, 1.0)


def _density_stats(vol: np.ndarray, window, background: float) -> tuple[float, float, float, bool]:
    """(min, max, fraction at 1, any above ``background``) of the density, a few slices at a time (a
    UTCT stack of 1000 × 500 × 500 would otherwise need 2 GB of float copies)."""
    scale, offset = value_map(vol, window)  # the whole scan's rule (its range in any error), not a slab's
    lo: float | None = None
    hi: float | None = None
    full, above = 0, False
    step = max(1, (16 * 2**20) // max(1, vol[0].size * 4))
    for z in range(0, vol.shape[0], step):
        mu = _density(vol[z : z + step], scale, offset)
        lo = float(mu.min()) if lo is None else min(lo, float(mu.min()))
        hi = float(mu.max()) if hi is None else max(hi, float(mu.max()))
        full += int(np.count_nonzero(mu >= 1.0))
        above = above or bool((mu > background).any())
    assert lo is not None and hi is not None  # vol has at least one slice
    return lo, hi, full / max(1, vol.size), above


def check_density(vol: np.ndarray, window, background=None) -> None:
    """Refuse a value rule that makes the scan constant (or needs a window it lacks), naming the setting.

    Raises ValueError when every voxel maps to one density, when ≥ 99 % of the voxels saturate at 1
    (a window below the data: a solid block), when no voxel is above the background, or when every
    voxel is (air too: a window below the data, e.g. a Hounsfield preset on 8-bit data; the cube would
    be the scan's box, its x-rays filled rectangles). Warns when,
    without a window, uint8/uint16 data's densest voxel maps below :data:`FAINT_MAX` (a 0/1 label mask
    is 1/255: x-rays nearly blank; 12-bit CT in uint16 reaches 0.0625).
    """
    lo_v, hi_v = float(np.min(vol)), float(np.max(vol))
    bg = 0.0 if background is None else float(background)
    try:
        mu_lo, mu_hi, full, above = _density_stats(vol, window, bg)
    except ValueError as e:
        hint = (  # Hounsfield units (air at -1000): the presets; other raw numbers: the message's own example
            "; for CT in Hounsfield units try the preset 'hu-bone' or 'hu-head'" if lo_v <= -500.0 else ""
        )
        raise ValueError(f"{e} {WHERE}{hint}") from None
    shown = "no window" if window is None else f"window {window[0]:g},{window[1]:g}"
    if mu_hi - mu_lo == 0.0 or full >= 0.99:
        raise ValueError(
            f"{shown} maps the scan (values {lo_v:g} … {hi_v:g}) to a constant density "
            f"({100 * full:.1f} % of voxels at 1): choose a window inside the data's range {WHERE}"
        )
    if mu_lo > bg:
        raise ValueError(
            f"{shown} with background {bg:g} puts every voxel above the background (the lowest value, {lo_v:g}, "
            f"air, maps to density {mu_lo:.3g}): the window lies below the data, and the cube would be the "
            f"scan's box with filled-rectangle x-rays; choose a window whose low end is at or above air's value "
            f"(the data span {lo_v:g} … {hi_v:g}; Hounsfield presets are for data in HU) or a higher background "
            f"{WHERE}"
        )
    if not above:
        raise ValueError(
            f"{shown} with background {bg:g} leaves no voxel with density above the background "
            f"(values {lo_v:g} … {hi_v:g}) {WHERE}; the manifest column `background` / "
            "config data.cube.background sets the background"
        )
    if window is None and vol.dtype in (np.uint8, np.uint16) and mu_hi < FAINT_MAX:
        warnings.warn(
            f"the densest voxel has density {mu_hi:.3g} under the {vol.dtype} rule (/{np.iinfo(vol.dtype).max}; "
            f"values {lo_v:g} … {hi_v:g}): its x-rays will be nearly blank. Labels (a 0/1 mask) or data "
            f"of fewer bits (12-bit CT in uint16) need a window, e.g. {lo_v:g},{hi_v:g} {WHERE}",
            UserWarning,
            stacklevel=2,
        )


def crop_largest(vol: np.ndarray, window, background=None) -> tuple[np.ndarray, dict]:
    """Keep the largest connected part of the support (see module docstring); the rest → density 0.

    Returns the cropped copy and a record: threshold, parts found, voxels kept and cleared.
    """
    scale, offset = value_map(vol, window)
    mu = _density(vol, scale, offset)
    thr = max(CROP_THRESHOLD, 0.0 if background is None else float(background))
    labels, n = ndimage.label(mu > thr)
    if n == 0:
        raise ValueError(f"crop 'largest': no voxel has density above {thr:g} {WHERE}")
    sizes = np.bincount(labels.ravel())[1:]
    keep = ndimage.binary_dilation(labels == int(np.argmax(sizes)) + 1, iterations=CROP_GROW)
    zero = (0.0 - offset) / scale  # the value that maps to density 0
    fill = zero if np.issubdtype(vol.dtype, np.floating) else math.floor(zero)
    if np.issubdtype(vol.dtype, np.integer) and not np.iinfo(vol.dtype).min <= fill <= np.iinfo(vol.dtype).max:
        out, fill = vol.astype(np.float32), zero  # density 0 lies outside the type (a window below 0 on uint8)
    else:
        out = vol.copy()
    out[~keep] = fill
    cleared = int(((mu > thr) & ~keep).sum())
    return out, dict(
        rule="largest",
        threshold=thr,
        grow_voxels=CROP_GROW,
        parts=int(n),
        kept_voxels=int(sizes.max()),
        cleared_support_voxels=cleared,
    )
