"""The colour transfer function of :func:`model.applications.colour_render`: a table of rows
``(density, r, g, b, sigma)``, interpolated piecewise linearly in density, and front-to-back
emission–absorption compositing of a (D, H, W) view volume along depth (axis 0, k = 0 in front).
Colours are RGB in [0, 1]; ``sigma`` is extinction per unit depth (the volume's depth is 1).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_TRANSFER", "check_background", "check_transfer", "composite"]

#: Default transfer function, rows ``(density, r, g, b, sigma)``, piecewise linear in density.
#: ``sigma`` is the extinction per unit depth (the cube's depth is 1, as ``chi`` for x-rays): a slab of
#: thickness t (fraction of the depth) at that density lets ``exp(−sigma · t)`` through. Air (< 0.03)
#: is invisible, soft tissue (0.03–0.2; the phantoms' haze is 0.03–0.07) a faint blue haze, bone (0.3–0.8) orange to
#: ivory and nearly opaque after a few voxels, petrous bone and teeth (0.9–1) near white and opaque (the paper's
#: Fig. 14 colours: skin blue, bone orange).
DEFAULT_TRANSFER = np.array(
    [
        # density   r      g      b     sigma
        [0.00, 0.00, 0.00, 0.00, 0.0],
        [0.03, 0.20, 0.40, 0.90, 0.0],
        [0.08, 0.25, 0.45, 0.90, 1.5],
        [0.20, 0.35, 0.55, 0.95, 2.5],
        [0.30, 0.85, 0.45, 0.15, 12.0],
        [0.45, 0.95, 0.70, 0.40, 60.0],
        [0.80, 1.00, 0.90, 0.75, 120.0],
        [1.00, 1.00, 0.98, 0.92, 200.0],
    ],
    dtype=np.float64,
)


def check_transfer(transfer) -> np.ndarray:
    """``transfer`` (None: :data:`DEFAULT_TRANSFER`) as a checked (N, 5) float64 table; ``ValueError`` otherwise."""
    t = DEFAULT_TRANSFER if transfer is None else np.asarray(transfer, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 5 or t.shape[0] < 2:
        raise ValueError(f"transfer must be a table of at least 2 rows (density, r, g, b, sigma), got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("transfer contains NaN or inf")
    if np.any(np.diff(t[:, 0]) <= 0):
        raise ValueError("transfer densities (first column) must be strictly increasing")
    if np.any(t[:, 1:4] < 0) or np.any(t[:, 1:4] > 1):
        raise ValueError("transfer colours (columns 1-3) must be in [0, 1]")
    if np.any(t[:, 4] < 0):
        raise ValueError("transfer extinctions sigma (column 4) must be >= 0")
    return t


def check_background(bg) -> np.ndarray:
    """``bg`` as a checked RGB triple (3,) float64 in [0, 1]; ``ValueError`` otherwise."""
    b = np.asarray(bg, dtype=np.float64)
    if b.shape != (3,) or not np.isfinite(b).all() or np.any(b < 0) or np.any(b > 1):
        raise ValueError(f"background must be an RGB triple in [0, 1], got {bg!r}")
    return b


def composite(v: np.ndarray, tf: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Front-to-back emission–absorption compositing of (D, H, W) along depth → (H, W, 3) float32."""
    d = v.shape[0]
    dens = tf[:, 0]
    colour = np.zeros(v.shape[1:] + (3,), dtype=np.float64)
    trans = np.ones(v.shape[1:], dtype=np.float64)
    for k in range(d):
        mu = v[k].astype(np.float64)
        sigma = np.interp(mu, dens, tf[:, 4])
        alpha = -np.expm1(-sigma / d)  # slab of thickness 1/d
        if not alpha.any():
            continue
        wgt = trans * alpha
        for ch in range(3):
            colour[..., ch] += wgt * np.interp(mu, dens, tf[:, 1 + ch])
        trans *= 1.0 - alpha
    colour += trans[..., None] * bg
    return np.clip(colour, 0.0, 1.0).astype(np.float32)
