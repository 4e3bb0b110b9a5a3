"""Fusion (paper §4.2, Eq. 2): a coarse predicted view volume + a high-resolution x-ray -> a
full-resolution view volume that re-renders exactly to the x-ray.

Public API
----------
``fuse(coarse, xray, *, beta=2.0, chi=10.0, rows_per_slab=None) -> (D, H, W) float32``
``fuse_slabs(coarse, xray, *, beta=2.0, chi=10.0, rows_per_slab=64)``
    -> iterator of ``(row_start, slab)`` with ``slab`` of shape (D, rows, W) float32
``fuse_to_file(coarse, xray, out_path, *, beta=2.0, chi=10.0, rows_per_slab=64) -> Path``
    writes a ``.npy`` through ``np.lib.format.open_memmap`` slab by slab (memory O(D · rows · W))
``upsample_lateral(coarse, size_hw) -> (D, H, W) float32``   (step 1 alone)
``as_density(pred) -> same type and shape``   (a raw prediction clamped to [0, 1]: every use's rule)
``bilinear_taps(n_in, n_out) -> (i0, i1, f)``   (the lateral resize's taps, shared with model.predict)
``render_view(volume, *, chi=10.0) -> (H, W) opacity``        (docs/geometry.md: 1 − exp(−chi · mean_k µ_k))
``rerender_error(volume, xray, *, chi=10.0) -> float``   (max |render_view − min(xray, opacity_max)|)
``xray_at(xray, size_hw, *, chi=10.0) -> (h, w) opacity``   (a coarser x-ray: optical depth area-averaged)

Image formation (docs/geometry.md)
------------------------------
A view volume ``v`` of depth D renders to ``opacity = 1 − exp(−chi · (1/D) · Σ_k v[k])``, i.e. to the
transparency ``α = exp(−(chi/D) · S)`` with the column sum ``S = Σ_k v[k]``.

Derivation of the density error
-------------------------------
Per pixel, the prediction (after upsampling) µ̄_k has column sum ``S = Σ_k µ̄_k`` and transparency
``ᾱ = exp(−(chi/D) · S)``; the input x-ray says ``α = 1 − opacity``. Inverting Beer–Lambert, the
column sum the input asks for (the column's "density budget") is

    T = −(D/chi) · log α          (T >= 0 because α <= 1)

and the density error is

    Δ = S − T = (D/chi) · (log α − log ᾱ) = (D/chi) · log(α/ᾱ) = (D/chi) · log(1 − Δα/ᾱ),
    Δα = ᾱ − α  (the paper's transparency error).

The paper writes ``∆ = log(1 − ∆α)``: the same quantity in units where chi/D = 1 and to first order
around ᾱ ≈ 1 (the exact Beer–Lambert form divides ∆α by ᾱ). Sign: Δ > 0 when the prediction is too
opaque (density must be removed), Δ < 0 when it is too transparent. Eq. 2 then distributes the error

    µ̂_k = µ̄_k − Δ · µ̄_k^β / Σ_j µ̄_j^β          (β = 2 in the paper)

so that ``Σ_k µ̂_k = S − Δ = T`` and ``1 − exp(−chi · mean_k µ̂_k) = 1 − α`` = the input x-ray. Since
the weights are ``µ̄^β``, voxels the network predicts empty (µ̄ = 0) get no density and dense voxels
take most of the correction.

Rules this implementation adds (the paper leaves them open)
-----------------------------------------------------------
* **Input densities**: the prediction is clamped to [0, 1] (the density range of docs/geometry.md) before anything
  else; a raw network output can be slightly negative or above 1.
* **Upsampling** (step 1): bilinear per depth slice with the pixel-centre convention of docs/geometry.md
  (centres at (2i + 1)/N − 1), i.e. ``torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False)``, including its edge rule: source coordinates outside the outermost centres
  are clamped to them (edge replication, no fade to 0 at the image border). Depth is unchanged.
  Any output size works, also smaller than or equal to the coarse one.
* **Density range [0, 1] is kept** (both bounds). With µ <= 1 the most opaque reachable pixel is
  ``1 − exp(−chi)``; x-ray opacities are therefore clamped to ``[0, OPACITY_MAX(chi)]`` with
  ``OPACITY_MAX(chi) = 1 − exp(−chi)`` (4.54e-5 below 1 at chi = 10), so that ``T <= D``. An opacity of
  1.0 (α = 0, T = ∞) becomes a column full of 1 and re-renders to ``1 − exp(−chi)``: every x-ray is
  reproduced exactly up to that clamp, i.e. to ``min(opacity, 1 − exp(−chi))``.
* **Removing density (Δ > 0) never goes below 0**: the solution is ``µ̂_k = max(0, µ̄_k − λ·µ̄_k^β)``
  with the λ >= 0 for which the column sums to T. It is found by water-filling: apply Eq. 2, clamp the
  entries that went negative to 0, redistribute what they could not give over the remaining positive
  entries with renormalised weights, repeat (at most D rounds, usually one). Without clamping this is
  Eq. 2 verbatim. (Should µ̄^β underflow to 0 for all remaining entries, a second round with weights
  µ̄, plain proportional scaling, takes over.) A column with zero opacity (T = 0) becomes all zeros.
* **Adding density (Δ < 0) never goes above 1**: ``µ̂_k = min(1, µ̄_k + λ·w_k)`` found by the same
  water-filling from above, in tiers that are used only when the previous tier is full (all its
  voxels at 1):
    1. ``w = µ̄^β`` on the voxels the prediction fills (Eq. 2);
    2. ``w = p^β`` with ``p`` the 3×3 lateral box mean of the coarse prediction (in coarse pixels,
       edge-replicated), bilinearly upsampled like the prediction: the depth profile of the
       neighbouring columns. This is the fallback for a column the network predicts empty but the
       x-ray does not (typically at a silhouette the network drew slightly too narrow): density
       appears at the depths where the neighbours have it;
    3. ``w = g^β`` with ``g[k]`` the mean of the coarse prediction over its whole slice k: the depth
       slab that the object occupies;
    4. uniform over the column (only when the whole prediction is empty, or every other tier is
       full).
  Since T <= D the four tiers together always reach T.

The result is computed in float64 per column and stored as float32; it re-renders to the clamped
x-ray to about chi · 1e-7.

Memory: the work is done in slabs of output rows; ``fuse_slabs`` and ``fuse_to_file`` hold one slab
(D · rows · W float32) besides the small coarse volume and the x-ray.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numba as nb
import numpy as np

from tomodata import numba_cache
from tomodata.files import atomic_write

numba_cache.install()  # before the first compile: concurrent jobs must not mix up cached code

__all__ = [
    "OPACITY_TOL",
    "as_density",
    "bilinear_taps",
    "fuse",
    "fuse_slabs",
    "fuse_to_file",
    "opacity_max",
    "render_view",
    "rerender_error",
    "upsample_lateral",
    "xray_at",
]

#: x-ray values within this distance outside [0, 1] are accepted (and clipped); further out: ValueError.
OPACITY_TOL = 1e-5

#: numba options of the fusion kernels: no fast-math flags at all (unlike the dataset's kernels,
#: :data:`tomodata.numba_cache.KERNEL_OPTIONS`, which allow FMA contraction), so LLVM keeps every float
#: operation as written and the fused volume has the same bits on AVX2 and AVX-512 CPUs
#: (tests/test_cpu_targets.py)
_JIT: dict[str, Any] = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy")


def opacity_max(chi: float = 10.0) -> float:
    """The most opaque pixel a view volume with densities in [0, 1] can render: ``1 − exp(−chi)``."""
    return -math.expm1(-float(chi))


def render_view(volume, *, chi: float = 10.0) -> np.ndarray:
    """X-ray (opacity, float64) of a view volume (D, H, W) along its depth axis (docs/geometry.md)."""
    v = np.asarray(volume, dtype=np.float64)
    return -np.expm1(-float(chi) * v.mean(axis=0))


def rerender_error(volume, xray, *, chi: float = 10.0) -> float:
    """``max |render_view(volume) − min(xray, opacity_max(chi))|``: how far a view volume (D, H, W)
    is from re-rendering the x-ray (H, W) it was fused with (rounding only, for :func:`fuse`'s
    output; ``opacity_max`` is the most a volume with densities in [0, 1] can render)."""
    x = np.minimum(np.asarray(xray, dtype=np.float64), opacity_max(chi))
    return float(np.abs(render_view(volume, chi=chi) - x).max())


def xray_at(xray, size_hw, *, chi: float = 10.0) -> np.ndarray:
    """An x-ray (H, W) of opacities on a coarser grid ``size_hw = (h, w)``, h <= H and w <= W
    (float64): the optical depth ``τ = −ln(1 − min(x, opacity_max(chi)))`` averaged over each coarse
    pixel's area (``cv2.INTER_AREA``: exact fractional areas, also where the ratio is not whole),
    then ``1 − exp(−τ̄)``. Averaging density, not opacity, keeps Beer–Lambert exact: a view volume
    averaged the same way per depth slice renders to this image. At the x-ray's own size it is
    returned as it is (clipped to [0, 1], not to ``opacity_max``: :func:`fuse` clamps its input). The
    rule of ``tomo evaluate --fusion-at target`` and of ``tomo infer --max-size``."""
    x = _check_xray(xray)
    h, w = (_check_rows(s, "size") for s in size_hw)
    if h > x.shape[0] or w > x.shape[1]:
        raise ValueError(f"xray_at makes an x-ray coarser: size {(h, w)} is larger than the x-ray's {x.shape}")
    if (h, w) == x.shape:
        return np.clip(x, 0.0, 1.0)
    tau = -np.log1p(-np.clip(x, 0.0, opacity_max(chi)))
    return -np.expm1(-cv2.resize(tau, (w, h), interpolation=cv2.INTER_AREA))


# --------------------------------------------------------------------------------------------
# validation


def _check_positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _check_rows(value, name: str = "rows_per_slab") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _real_array(a, name: str, ndim: int, shape_text: str, dtype_text: str) -> np.ndarray:
    """``a`` as a finite float64 array of ``ndim`` dimensions, none empty, from a real (not bool)
    dtype; ``ValueError`` naming ``name`` otherwise."""
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {shape_text}, got shape {a.shape}")
    if min(a.shape) < 1:
        raise ValueError(f"{name} has an empty axis: shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == bool:
        raise ValueError(f"{name} must hold {dtype_text}, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def as_density(pred: Any) -> Any:
    """A raw network prediction (numpy array or torch tensor, any shape) as densities: clamped to
    [0, 1], the density range of docs/geometry.md. The one rule for every use of a prediction:
    fusion's input, the evaluation's ``ours_nofusion``, the figures and ``tomo infer --no-fusion``.
    Training's loss and the validation MSE (``best.pt``'s choice) use the raw output."""
    return pred.clip(0.0, 1.0)


def _check_coarse(coarse) -> np.ndarray:
    c = _real_array(coarse, "coarse", 3, "a 3D view volume (D, h, w)", "real-valued densities")
    return as_density(c)


def _check_xray(xray) -> np.ndarray:
    x = _real_array(xray, "xray", 2, "a 2D opacity image (H, W)", "opacities in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < -OPACITY_TOL or hi > 1.0 + OPACITY_TOL:
        raise ValueError(
            f"xray must hold opacities in [0, 1] (linear, 1 − transparency); got values in [{lo:.6g}, {hi:.6g}]"
        )
    return x


# --------------------------------------------------------------------------------------------
# geometry helpers


def bilinear_taps(n_in: int, n_out: int):
    """Bilinear taps of an axis resized from n_in to n_out pixels, align_corners=False semantics
    (torch.nn.functional.interpolate): i0, i1 (int64) and the weight f of i1 (float64)."""
    scale = n_in / n_out
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = src - i0
    return i0, i1, f


def upsample_lateral(coarse, size_hw) -> np.ndarray:
    """Step 1 of fusion alone: the prediction clamped to [0, 1] and resized laterally to
    ``size_hw = (H, W)`` per depth slice (bilinear, align_corners=False, edge clamp), float32."""
    c = _check_coarse(coarse)
    H, W = (_check_rows(s, "size") for s in size_hw)
    yi0, yi1, yf = bilinear_taps(c.shape[1], H)
    xi0, xi1, xf = bilinear_taps(c.shape[2], W)
    rows = c[:, yi0, :] * (1.0 - yf)[None, :, None] + c[:, yi1, :] * yf[None, :, None]
    out = rows[:, :, xi0] * (1.0 - xf) + rows[:, :, xi1] * xf
    return out.astype(np.float32)


def _box3(c: np.ndarray) -> np.ndarray:
    """3×3 lateral box mean of a (D, h, w) array with edge replication."""
    p = np.pad(c, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = c.shape[1:]
    acc = np.zeros_like(c)
    for dy in range(3):
        for dx in range(3):
            acc += p[:, dy : dy + h, dx : dx + w]
    return acc / 9.0


# --------------------------------------------------------------------------------------------
# numba kernels


@nb.njit(**_JIT)
def _fill_down(v, w, target, active):
    """Water-filling from above: lower the entries with v > 0 and w > 0 as v − λ·w (clamped at 0)
    until Σ v == target. Returns True when reached, False when these entries could not give enough
    (they are all 0 then)."""
    D = v.shape[0]
    fixed = 0.0
    n_active = 0
    for k in range(D):
        if v[k] > 0.0 and w[k] > 0.0:
            n_active += 1
        else:
            fixed += v[k]
    need = target - fixed  # what the active entries must sum to
    if need <= 0.0:
        for k in range(D):
            if v[k] > 0.0 and w[k] > 0.0:
                v[k] = 0.0
        return need == 0.0
    if n_active == 0:
        return False
    for k in range(D):
        active[k] = v[k] > 0.0 and w[k] > 0.0
    for _ in range(D + 1):
        s = 0.0
        ws = 0.0
        for k in range(D):
            if active[k]:
                s += v[k]
                ws += w[k]
        lam = (s - need) / ws
        clamped = False
        for k in range(D):
            if active[k] and v[k] - lam * w[k] < 0.0:
                v[k] = 0.0
                active[k] = False
                clamped = True
        if not clamped:
            for k in range(D):
                if active[k]:
                    v[k] = v[k] - lam * w[k]
            return True
    return True


@nb.njit(**_JIT)
def _fill_up(v, w, target, active):
    """Water-filling from below: raise the entries with v < 1 and w > 0 as v + λ·w (clamped at 1)
    until Σ v == target. Returns True when reached, False when these entries are all full (1)."""
    D = v.shape[0]
    fixed = 0.0
    n_active = 0
    for k in range(D):
        if v[k] < 1.0 and w[k] > 0.0:
            n_active += 1
        else:
            fixed += v[k]
    need = target - fixed
    if need >= n_active:  # not enough room: fill them all
        for k in range(D):
            if v[k] < 1.0 and w[k] > 0.0:
                v[k] = 1.0
        return need == n_active
    for k in range(D):
        active[k] = v[k] < 1.0 and w[k] > 0.0
    for _ in range(D + 1):
        s = 0.0
        ws = 0.0
        for k in range(D):
            if active[k]:
                s += v[k]
                ws += w[k]
        lam = (need - s) / ws
        clamped = False
        for k in range(D):
            if active[k] and v[k] + lam * w[k] > 1.0:
                v[k] = 1.0
                active[k] = False
                need -= 1.0
                clamped = True
        if not clamped:
            for k in range(D):
                if active[k]:
                    v[k] = v[k] + lam * w[k]
            return True
    return True


@nb.njit(inline="always", **_JIT)
def _power(x, beta):
    if beta == 2.0:
        return x * x
    if beta == 1.0:
        return x
    return x**beta


@nb.njit(parallel=True, **_JIT)
def _fuse_rows(ct, nbt, gw, yi0, yi1, yf, xi0, xi1, xf, T, beta, out):
    """Fuse output rows: ``ct``/``nbt`` (h, w, D) prediction and neighbourhood profile (channel
    last), ``gw`` (D,) global profile^β, the bilinear taps of the rows (len rows) and columns (len W),
    ``T`` (rows, W) column targets, ``out`` (D, rows, W) float32 written in place."""
    rows = T.shape[0]
    W = T.shape[1]
    wc = ct.shape[1]
    D = ct.shape[2]
    for r in nb.prange(rows):
        v = np.empty(D, np.float64)
        w = np.empty(D, np.float64)
        act = np.empty(D, np.bool_)
        line = np.empty((wc, D), np.float64)  # the prediction interpolated to this row
        buf = np.empty((D, W), np.float32)  # this output row, depth first
        a0 = yi0[r]
        a1 = yi1[r]
        fy = yf[r]
        for b in range(wc):
            for k in range(D):
                line[b, k] = (1.0 - fy) * ct[a0, b, k] + fy * ct[a1, b, k]
        for c in range(W):
            b0 = xi0[c]
            b1 = xi1[c]
            fx = xf[c]
            gx = 1.0 - fx
            s = 0.0
            for k in range(D):
                m = gx * line[b0, k] + fx * line[b1, k]
                v[k] = m
                s += m
            t = T[r, c]
            if t <= 0.0:
                for k in range(D):
                    v[k] = 0.0
            elif s > t:
                for k in range(D):
                    w[k] = _power(v[k], beta)
                if not _fill_down(v, w, t, act):
                    for k in range(D):  # µ̄^β underflowed: plain proportional scaling
                        w[k] = v[k]
                    _fill_down(v, w, t, act)
            elif s < t:
                for k in range(D):
                    w[k] = _power(v[k], beta)
                done = _fill_up(v, w, t, act)
                if not done:  # tier 2: neighbourhood depth profile
                    w00 = (1.0 - fy) * gx
                    w01 = (1.0 - fy) * fx
                    w10 = fy * gx
                    w11 = fy * fx
                    for k in range(D):
                        p = w00 * nbt[a0, b0, k] + w01 * nbt[a0, b1, k] + w10 * nbt[a1, b0, k] + w11 * nbt[a1, b1, k]
                        w[k] = _power(p, beta)
                    done = _fill_up(v, w, t, act)
                if not done:  # tier 3: the object's depth slab
                    done = _fill_up(v, gw, t, act)
                if not done:  # tier 4: uniform
                    for k in range(D):
                        w[k] = 1.0
                    _fill_up(v, w, t, act)
            for k in range(D):
                x = v[k]
                if x < 0.0:
                    x = 0.0
                elif x > 1.0:
                    x = 1.0
                buf[k, c] = x
        for k in range(D):
            for c in range(W):
                out[k, r, c] = buf[k, c]


# --------------------------------------------------------------------------------------------
# public functions


class _Plan:
    """Validated inputs and everything per-call that the row kernel needs."""

    def __init__(self, coarse, xray, beta, chi):
        self.beta = _check_positive(beta, "beta")
        self.chi = _check_positive(chi, "chi")
        c = _check_coarse(coarse)
        x = _check_xray(xray)
        D, h, w = c.shape
        H, W = x.shape
        self.D, self.H, self.W = D, H, W
        self.ct = np.ascontiguousarray(c.transpose(1, 2, 0))
        self.nbt = np.ascontiguousarray(_box3(c).transpose(1, 2, 0))
        g = c.mean(axis=(1, 2))
        self.gw = np.ascontiguousarray(g**self.beta)
        self.yi0, self.yi1, self.yf = bilinear_taps(h, H)
        self.xi0, self.xi1, self.xf = bilinear_taps(w, W)
        self.xray = x
        self.op_max = opacity_max(self.chi)

    def targets(self, r0: int, r1: int) -> np.ndarray:
        """Column budgets T = −(D/chi) · log(1 − opacity) of rows r0:r1, opacity clamped."""
        op = np.clip(self.xray[r0:r1], 0.0, self.op_max)
        T = -(self.D / self.chi) * np.log1p(-op)
        return np.ascontiguousarray(np.clip(T, 0.0, float(self.D)))

    def run(self, r0: int, r1: int, out: np.ndarray) -> None:
        _fuse_rows(
            self.ct,
            self.nbt,
            self.gw,
            self.yi0[r0:r1],
            self.yi1[r0:r1],
            self.yf[r0:r1],
            self.xi0,
            self.xi1,
            self.xf,
            self.targets(r0, r1),
            self.beta,
            out,
        )


def fuse_slabs(
    coarse, xray, *, beta: float = 2.0, chi: float = 10.0, rows_per_slab: int = 64
) -> Iterator[tuple[int, np.ndarray]]:
    """Fuse slab by slab: yields ``(row_start, slab)`` with ``slab`` the (D, rows, W) float32 block
    of output rows ``row_start : row_start + rows`` (the last slab may be shorter).

    Inputs are validated on the call (not lazily at the first ``next``). See the module docstring
    for the rules; ``fuse`` is the concatenation of the slabs along axis 1.
    """
    plan = _Plan(coarse, xray, beta, chi)
    step = _check_rows(rows_per_slab)

    def gen():
        for r0 in range(0, plan.H, step):
            r1 = min(r0 + step, plan.H)
            out = np.empty((plan.D, r1 - r0, plan.W), np.float32)
            plan.run(r0, r1, out)
            yield r0, out

    return gen()


def fuse(coarse, xray, *, beta: float = 2.0, chi: float = 10.0, rows_per_slab: int | None = None) -> np.ndarray:
    """Fuse a coarse predicted view volume with a high-resolution x-ray (paper Eq. 2).

    Args:
        coarse: (D, h, w) predicted view volume (depth first); clamped to [0, 1].
        xray: (H, W) opacity in [0, 1] at any resolution.
        beta: sharpness of the error distribution (weights µ̄^β), > 0.
        chi: Beer–Lambert scale of the image formation, > 0.
        rows_per_slab: None (default) computes all rows in one pass; an integer assembles the
            result from :func:`fuse_slabs` blocks of that many rows (same values).

    Returns:
        (D, H, W) float32 densities in [0, 1] with ``1 − exp(−chi · result.mean(0))`` equal to
        ``min(xray, 1 − exp(−chi))`` (to float32 rounding).
    """
    if rows_per_slab is not None:
        slabs = fuse_slabs(coarse, xray, beta=beta, chi=chi, rows_per_slab=rows_per_slab)
        first: np.ndarray | None = None
        for r0, slab in slabs:
            if first is None:
                first = np.empty((slab.shape[0], np.asarray(xray).shape[0], slab.shape[2]), np.float32)
            first[:, r0 : r0 + slab.shape[1]] = slab
        assert first is not None  # fuse_slabs yields at least one slab
        return first
    plan = _Plan(coarse, xray, beta, chi)
    out = np.empty((plan.D, plan.H, plan.W), np.float32)
    plan.run(0, plan.H, out)
    return out


def fuse_to_file(coarse, xray, out_path, *, beta: float = 2.0, chi: float = 10.0, rows_per_slab: int = 64) -> Path:
    """Fuse and write the (D, H, W) float32 result to the ``.npy`` file ``out_path``, slab by slab
    through ``np.lib.format.open_memmap`` (memory O(D · rows_per_slab · W)). The file is written
    under a temporary name and renamed when complete. Returns the path."""
    out_path = Path(out_path)
    slabs = fuse_slabs(coarse, xray, beta=beta, chi=chi, rows_per_slab=rows_per_slab)
    D = np.asarray(coarse).shape[0]
    H, W = np.asarray(xray).shape

    def write(tmp: Path) -> None:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(D, H, W))
        for r0, slab in slabs:
            mm[:, r0 : r0 + slab.shape[1]] = slab
        mm.flush()
        del mm

    atomic_write(out_path, write)
    return out_path
