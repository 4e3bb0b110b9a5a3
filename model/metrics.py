"""Per-sample metrics of the evaluation (:mod:`model.evaluate`, paper §5): volume L2 / MSE, image
DSSIM, the view class of a rotation and the slice-count resampling.

Conventions: view volumes are (D, H, W) or batches (B, D, H, W) of densities in [0, 1] on the
network's output grid; images are (H, W) in [0, 1]; rotations are camera → volume (3, 3) with the
ray direction ``R[:, 2]``. The definitions are those of :mod:`model.evaluate`'s docstring.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from tomodata.views import view_directions

from .search import _row_chunks
from .surface import DEFAULT_ISO, render_isosurface

__all__ = [
    "HOLM_METRICS",
    "METRICS",
    "SSIM_DATA_RANGE",
    "SSIM_WINDOWS",
    "VIEW_CLASSES",
    "VIEW_CLASS_ANGLE",
    "depth_resample",
    "dssim",
    "view_class",
    "volume_dssim",
    "volume_errors",
]

#: The per-sample metrics (columns of metrics.csv). ``dssim``: SSIM with a 7×7 uniform window (skimage's
#: default, the project's DSSIM since its first evaluation); ``dssim_gauss``: with the 11×11 Gaussian window
#: (σ 1.5) of Wang et al. 2004, the SSIM reference the paper cites: both are reported, results depend on it.
METRICS = ("l2", "mse", "dssim", "dssim_gauss")
#: The metrics of the claims: one Holm family per level and test holds the reported method's comparisons in
#: all of them (mse, l2 squared, is no claim of its own: its comparisons form their own family).
HOLM_METRICS = ("l2", "dssim", "dssim_gauss")
#: SSIM's windows: structural_similarity keywords of each (``dssim``'s ``window``).
SSIM_WINDOWS = {
    "uniform": {},  # 7×7 uniform, sample covariance (skimage's defaults)
    "gaussian": {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False},  # 11×11 (Wang et al.)
}
#: SSIM's data range: images in [0, 1].
SSIM_DATA_RANGE = 1.0
VIEW_CLASSES = ("top", "front", "side", "other")
#: Half-angle of the view-class cones around the volume axes (degrees).
VIEW_CLASS_ANGLE = 30.0


def view_class(rotation, *, angle: float = VIEW_CLASS_ANGLE) -> str:
    """``top`` / ``front`` / ``side`` / ``other`` of a camera → volume rotation (module docstring)."""
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {R.shape}")
    d = np.abs(view_directions(R)) / max(np.linalg.norm(view_directions(R)), 1e-12)
    c = math.cos(math.radians(angle))
    if d[1] >= c:
        return "top"
    if d[0] >= c:
        return "front"
    if d[2] >= c:
        return "side"
    return "other"


def volume_errors(pred, true, *, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (l2, mse) of (B, ...) or single volumes: mse = mean of squared differences (float64),
    l2 = sqrt(mse). ``rows``: samples per float64 pass (None: all at once; the same numbers either
    way, see :func:`_row_chunks`), to bound the float64 temporaries."""
    p = torch.as_tensor(pred)
    t = torch.as_tensor(true)
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and truth {tuple(t.shape)} differ in shape")
    single = p.ndim == 3
    if single:
        p, t = p[None], t[None]
    mse = np.empty(p.shape[0], dtype=np.float64)
    for a, b in _row_chunks(p.shape[0], rows):
        mse[a:b] = ((p[a:b].double() - t[a:b].double()) ** 2).flatten(1).mean(1).cpu().numpy()
    l2 = np.sqrt(mse)
    return (l2[0], mse[0]) if single else (l2, mse)


def dssim(img_a, img_b, *, window: str = "uniform") -> float:
    """(1 − SSIM)/2 of two images in [0, 1] (skimage, data_range=1.0, K1 .01, K2 .03). ``window``:
    ``"uniform"`` 7×7 with sample covariance (skimage's default; metric ``dssim``) or ``"gaussian"``
    11×11, σ 1.5, population covariance (Wang et al. 2004; metric ``dssim_gauss``)."""

    if window not in SSIM_WINDOWS:
        raise ValueError(f"window must be one of {sorted(SSIM_WINDOWS)}, got {window!r}")
    a = np.asarray(img_a, dtype=np.float64)
    b = np.asarray(img_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"dssim needs two images of the same 2D shape, got {a.shape} and {b.shape}")
    side = 7 if window == "uniform" else 11
    if min(a.shape) < side:
        raise ValueError(f"dssim needs images of at least {side}x{side} pixels (SSIM's {window} window), got {a.shape}")
    ssim = structural_similarity(a, b, data_range=SSIM_DATA_RANGE, **SSIM_WINDOWS[window])
    return float((1.0 - ssim) / 2.0)


def volume_dssim(pred, true, *, iso: float = DEFAULT_ISO) -> float:
    """DSSIM of the iso-surface renders of two (D, H, W) view volumes."""

    return dssim(render_isosurface(pred, iso=iso), render_isosurface(true, iso=iso))


def depth_resample(vol: torch.Tensor, slices: int) -> torch.Tensor:
    """(B, D, H, W) → box-averaged along depth to ``slices``, linearly up-sampled back to D."""
    B, D, H, W = vol.shape
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    x = vol[:, None].float()
    down = F.adaptive_avg_pool3d(x, (slices, H, W))
    up = F.interpolate(down, size=(D, H, W), mode="trilinear", align_corners=False)
    return up[:, 0]
