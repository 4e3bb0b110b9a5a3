"""The values and the bone :mod:`tomodata.align` works on: working values (raw or ``tomo cube``'s
densities), the bone threshold and mask, the background, and the moments frame of the bone.

Conventions as in :mod:`tomodata.align` (volumes ``[z, y, x]``, spacing mm in (z, y, x) order).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from .ingest_settings import WINDOW_PRESETS, check_density, parse_window, preset_background
from .resample import value_map

__all__ = ["align_values", "bone_mask", "intensity_settings", "principal_frame", "HU_LIKE_MIN", "DENSITY_FLOOR"]

#: A scan whose minimum is at or below this, given no window, looks like CT in Hounsfield units (air
#: −1000 HU): align refuses it (Otsu of raw HU separates air from soft tissue, not bone from it).
HU_LIKE_MIN = -500.0
#: On densities, voxels at or below this (or the background) take no part in the bone threshold:
#: air and its noise (σ 10 HU is 0.003 of a 3000 HU window) would otherwise be a class of their own.
DENSITY_FLOOR = 0.01


def _otsu(vol: np.ndarray) -> float:
    """Otsu's threshold (skimage, 256 bins) of all voxels; ValueError for a constant volume."""
    lo, hi = float(vol.min()), float(vol.max())
    if lo == hi:
        raise ValueError(f"the volume is constant ({lo:g}): no bone to find")
    return float(threshold_otsu(vol))


def _background(vol: np.ndarray) -> float:
    """Median of the six faces of the array (the air around the specimen)."""
    faces = [vol[0], vol[-1], vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1]]
    return float(np.median(np.concatenate([f.ravel() for f in faces])))


def _components(mask: np.ndarray, keep) -> np.ndarray:
    """``mask`` restricted to its (6-connected) components whose voxel count passes ``keep(sizes)``."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    ok = keep(sizes)
    ok[0] = False
    return ok[lab]


def bone_mask(vol: np.ndarray, threshold: float, min_component: float = 0.3) -> np.ndarray:
    """Voxels > ``threshold`` in components of >= ``min_component`` × the largest; ValueError if none."""
    mask = vol > threshold
    if not mask.any():
        raise ValueError(f"no voxel above the bone threshold {threshold:g} (max {float(vol.max()):g})")
    return _components(mask, lambda s: s >= min_component * s.max())


def _density(values: np.ndarray, scale: float, offset: float, floor: float) -> np.ndarray:
    """float32 density clip(v · scale + offset, 0, 1) with every density ≤ ``floor`` set to 0 (the
    value rule of :mod:`tomodata.resample`, as ``tomo cube`` applies it)."""
    mu = np.clip(values.astype(np.float32) * np.float32(scale) + np.float32(offset), 0.0, 1.0)
    if floor > 0.0:
        mu[mu <= floor] = 0.0
    return mu


def intensity_settings(record: Mapping | None) -> dict:
    """``{"window": …, "background": …}`` of an alignment record's ``intensity`` (empty for a record
    made on raw values, or by an older tomo align): the keywords that turn its aligned volume into
    the values it was aligned on (:func:`prepare_reference`, :func:`align_values`)."""
    it = (record or {}).get("intensity") or {}
    if it.get("values") != "density":
        return {}
    return {"window": it.get("window"), "background": it.get("background")}


def align_values(vol: np.ndarray, window=None, background=None) -> tuple[np.ndarray | None, dict]:
    """The values :func:`align_to_canonical` finds bone in and registers: ``(density or None, record)``.

    * No ``window`` and no ``background``: ``None``, i.e. the raw values, exactly as before (uint8
      micro-CT, 8-bit windowed CT, raw CT numbers); but a scan whose minimum is ≤ :data:`HU_LIKE_MIN`
      looks like Hounsfield units and is refused (ValueError naming ``--window hu-bone`` /
      ``hu-head``): Otsu's threshold of raw HU lies between air and soft tissue.
    * Else the density of ``tomo cube`` (:mod:`tomodata.ingest_settings`, the same parsing, checks
      and preset background): ``clip((v − lo)/(hi − lo), 0, 1)`` (without a window the dtype's rule,
      uint8 /255 …), densities ≤ ``background`` set to 0; ``background`` defaults to the preset's
      (hu-head: −500 HU).

    The record (``record["intensity"]``): ``values`` ("raw" or "density"), ``window`` [lo, hi] or
    None, ``background`` (density) or None, ``preset`` (the window's name, if one).
    """
    preset = window.strip().lower() if isinstance(window, str) and window.strip().lower() in WINDOW_PRESETS else None
    if background is None:
        background = preset_background(window)
    win = parse_window(window)
    lo_v = float(np.min(vol))
    if win is None and lo_v <= HU_LIKE_MIN:
        raise ValueError(
            f"the scan's values span {lo_v:g} … {float(np.max(vol)):g}: it looks like CT in Hounsfield units, "
            "and bone cannot be told from soft tissue on raw HU (Otsu's threshold lands between air and "
            "soft tissue); give its window: --window hu-bone (0…2000 HU: bone only) or --window hu-head "
            "(−1000…2000 HU, background −500 HU), or --window lo,hi (tomo align; in the workflow the "
            "manifest column `window` or config data.cube.window, as for the cube)"
        )
    if win is None and background is None:
        return None, {"values": "raw", "window": None, "background": None, "preset": None}
    check_density(vol, win, background)
    scale, offset = value_map(vol, win)
    floor = 0.0 if background is None else float(background)
    rec = {
        "values": "density",
        "window": None if win is None else [float(w) for w in win],
        "background": None if background is None else float(background),
        "preset": preset,
    }
    return _density(vol, scale, offset, floor), rec


def _bone_otsu(work: np.ndarray, intensity: Mapping) -> float:
    """The default bone threshold: Otsu's threshold of all voxels (raw values: unchanged), or, on
    densities, of the voxels above max(background, :data:`DENSITY_FLOOR`), so that air and its noise
    form no class: on hu-head the classes left are soft tissue ≈ 0.33 and bone ≥ 0.45 (threshold
    ≈ 0.49, 470 HU on invesalius-cranium); on hu-bone soft tissue (≈ 0.02) and bone (≈ 0.25)."""
    if intensity.get("values") != "density":
        return _otsu(work)
    floor = max(float(intensity.get("background") or 0.0), DENSITY_FLOOR)
    above = work[work > floor]
    if above.size < 2 or float(above.min()) == float(above.max()):
        return _otsu(work)
    return float(threshold_otsu(above))


def principal_frame(mask: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre c mm (z, y, x), eigenvalues mm² (x, y, z: descending), R0) of the voxels of ``mask``.

    ``R0`` (3×3, det +1, (z, y, x) order) has rows = unit eigenvectors: row 2 (x) the longest axis,
    row 1 (y) the middle one, row 0 (z) the shortest. Signs are arbitrary (made deterministic).
    """
    pts = np.argwhere(mask) * np.asarray(spacing_zyx, float)
    if len(pts) < 4:
        raise ValueError(f"only {len(pts)} bone voxels: too few for moments")
    c = pts.mean(axis=0)
    w, v = np.linalg.eigh(np.cov((pts - c).T))  # ascending: z, y, x
    r0 = v.T.copy()
    for k in range(3):  # deterministic signs: largest component positive
        if r0[k, np.argmax(np.abs(r0[k]))] < 0:
            r0[k] = -r0[k]
    if np.linalg.det(r0) < 0:
        r0[0] = -r0[0]
    return c, w[::-1].copy(), r0


def _work_value(vol: np.ndarray, value: float, intensity: Mapping) -> float:
    """The density (:func:`align_values`' rule for ``vol``) of one raw ``value``: the fill value
    outside the input, in the units bone and registration work in."""
    scale, offset = value_map(vol, intensity["window"])
    return float(_density(np.array([value]), scale, offset, float(intensity["background"] or 0.0))[0])
