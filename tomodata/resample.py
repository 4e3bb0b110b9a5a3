"""Resample a scanned slice stack into the canonical density cube (docs/geometry.md, paper §3.1).

:func:`to_cube` turns ``array[z, y, x]`` (any real dtype) with voxel spacing ``spacing_zyx`` (mm) into
a ``(size, size, size)`` float32 volume of linear density in [0, 1], axes still (z, y, x).

**Value rule** (input value ``v`` → density µ):

* ``window=(lo, hi)`` given (any dtype): ``µ = clip((v − lo) / (hi − lo), 0, 1)``.
* otherwise ``uint8``: ``µ = v / 255`` (the paper: 8-bit slice videos are taken as linear density);
  ``uint16``: ``µ = v / 65535``; ``bool``: 0 / 1;
* any other dtype (int8/16/32/64, float: e.g. CT numbers or HU) must already lie in [0, 1] and is
  then taken as is; otherwise a ``ValueError`` asks for a ``window``.
* ``background=t`` (optional, in density units): after the above, every µ ≤ t is set to 0
  (clamps codec noise or scanner background, so the specimen's extent is not the whole stack).
  Without it only exact zeros are background. µ and t are compared in float32, as µ is computed
  (``float32(v)·float32(scale) + float32(offset)``): a raw value whose exact density equals t can
  land one float32 step on either side (uint8 6 with t = 6/255 is kept; −500 HU with ``hu-head``'s
  t = 1/6 is dropped).
NaN or ±inf anywhere is a ``ValueError``.

**Fit** (:class:`CubeFit`). Input voxel ``[i_z, i_y, i_x]`` has its centre at ``p = i · spacing`` mm. The specimen
is the set of input voxels with µ > 0. Its centre ``c`` is the centre of the smallest ball that holds their centres
(:func:`min_ball`; not the bounding box's centre, which wastes up to a quarter of the radius on a lopsided specimen;
the two agree for a box). The specimen is scaled isotropically — ``rho`` mm per normalised unit along every axis,
one output voxel = ``2 · rho / size`` mm — by the map

    u = (p − c) / rho        (per axis; normalised cube coordinates, order z, y, x like the array;
                              docs/geometry.md's (x, y, z) is the same map with the order reversed)

and output voxel centre ``j`` on every axis sits at ``u = (2j + 1)/size − 1``. ``rho`` is chosen
so that the exact support of the filtered, resampled specimen (the sphere around ``c`` holding all
its voxels, each grown by the resampling stencil's half-width per axis) has radius ``1 − margin``;
the default ``margin = min(2·sqrt(3)/size, 0.25)`` (one output voxel diagonal) keeps even the
trilinear reconstruction µ(p) of the output at exactly 0 for |p| ≥ 1. Output voxels whose centre
lies outside radius ``1 − margin`` are additionally zeroed (a safety net; by construction they are
already 0, except for tiny sizes (< ~12) where no exact fit exists, ``CubeFit.exact_support`` is
False, the voxel centres alone are fitted and the mask cuts the filter's tails).

**Filter.** A Gaussian reconstruction filter, separable and sized per axis: with output voxel size
``h`` mm and input spacing ``s_a``, the down-sampling factor is ``f_a = h / s_a`` and axis ``a``
is smoothed with ``sigma_a = 0.5 · sqrt(max(f_a² − 1, 0))`` input voxels (total blur half an output
voxel, assuming the input already carries half an input voxel; no smoothing on up-sampled axes),
truncated at ``3 sigma_a`` (scipy's tap radius rule ``int(3 sigma + 0.5)``) and normalised, with zero
density outside the input array; the smoothed input is then sampled trilinearly at the output voxel
centres. Both steps are linear and separable, so they are applied as one banded weight matrix per
axis, axis by axis (z, then y, then x), in float32 with numba; the value rule is applied on the fly
to the raw input, so no full-size float copy of the input is made.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numba as nb
import numpy as np
from scipy.optimize import minimize
from scipy.spatial import ConvexHull, QhullError
from threadpoolctl import threadpool_limits

from . import numba_cache
from .views import cell_centres

numba_cache.install()  # before the first compile: concurrent jobs must not mix up cached code

__all__ = [
    "CubeFit",
    "to_cube",
    "fit_cube",
    "min_ball",
    "dense_reach",
    "DENSE_FRACTION",
    "value_map",
    "bench_to_cube",
    "SIGMA_FACTOR",
    "TRUNCATE",
]

SIGMA_FACTOR = 0.5  # sigma_a = SIGMA_FACTOR * sqrt(f_a^2 - 1) input voxels
TRUNCATE = 3.0  # Gaussian taps out to TRUNCATE * sigma (scipy's rounding of the radius)
_JIT = numba_cache.KERNEL_OPTIONS
_BLOCK = 4096  # inner-loop block (elements) of the band kernel


# --------------------------------------------------------------------------------------------
# value rule


def value_map(array: np.ndarray, window: tuple[float, float] | None = None) -> tuple[float, float]:
    """(scale, offset) of the value rule: µ = clip(v · scale + offset, 0, 1) (before background).

    Raises ``ValueError`` for non-finite data, a bad window, or data that needs a window.
    """
    dt = array.dtype
    if not (np.issubdtype(dt, np.number) or dt == np.bool_) or np.issubdtype(dt, np.complexfloating):
        raise ValueError(f"array must be real-valued numbers, got dtype {dt}")
    lo_v: float | None = None
    hi_v: float | None = None
    if np.issubdtype(dt, np.floating):
        lo_v, hi_v = float(np.min(array)), float(np.max(array))  # NaN propagates, inf shows
        if not (math.isfinite(lo_v) and math.isfinite(hi_v)):
            raise ValueError("array contains NaN or inf")
    if window is not None:
        lo, hi = (float(w) for w in window)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValueError(f"window must be two finite numbers lo < hi, got {window!r}")
        return 1.0 / (hi - lo), -lo / (hi - lo)
    if dt == np.uint8:
        return 1.0 / 255.0, 0.0
    if dt == np.uint16:
        return 1.0 / 65535.0, 0.0
    if dt == np.bool_:
        return 1.0, 0.0
    if lo_v is None or hi_v is None:  # both or neither are set
        lo_v, hi_v = float(np.min(array)), float(np.max(array))
    if lo_v < 0.0 or hi_v > 1.0:
        example = (
            "a HU window such as -1000,2000"  # air at -1000: Hounsfield units
            if lo_v <= -500.0
            else f"the data's range {lo_v:g},{hi_v:g}: not Hounsfield units, whose air is -1000"
        )
        raise ValueError(
            f"{dt} data spans [{lo_v:g}, {hi_v:g}], not [0, 1]: it needs a window lo,hi that maps its values "
            f"to density (e.g. {example}); only uint8 (/255) and uint16 (/65535) have an implicit rule"
        )
    return 1.0, 0.0


# --------------------------------------------------------------------------------------------
# numba kernels


@nb.njit(inline="always", **_JIT)
def _mu(v, scale, offset, bg):
    """Density of raw value ``v``: clip(v·scale + offset, 0, 1), then 0 where ≤ bg (float32)."""
    m = min(max(np.float32(v) * scale + offset, np.float32(0.0)), np.float32(1.0))
    return m if m > bg else np.float32(0.0)


@nb.njit(parallel=True, **_JIT)
def _row_extents(x, scale, offset, bg):
    """First and last x index with µ > 0 of every (z, y) row of ``x`` (-1, -2 for an empty row)."""
    nz, ny, nx = x.shape
    first = np.full((nz, ny), -1, np.int64)
    last = np.full((nz, ny), -2, np.int64)
    for z in nb.prange(nz):
        for y in range(ny):
            for i in range(nx):
                if _mu(x[z, y, i], scale, offset, bg) > 0.0:
                    first[z, y] = i
                    break
            if first[z, y] < 0:
                continue
            for i in range(nx - 1, -1, -1):
                if _mu(x[z, y, i], scale, offset, bg) > 0.0:
                    last[z, y] = i
                    break
    return first, last


@nb.njit(parallel=True, **_JIT)
def _band_mid(x, out, starts, weights, scale, offset, bg):
    """out[a, j, b] = Σ_k weights[j, k] · µ(x[a, starts[j] + k, b]) over in-range indices.

    x: (A, n, B) raw input (any real dtype) or float32; out: (A, N, B) float32, zero on entry.
    """
    na, n, nb_ = x.shape
    nout = out.shape[1]
    ntap = weights.shape[1]
    nblk = (nb_ + _BLOCK - 1) // _BLOCK
    for task in nb.prange(na * nout * nblk):
        a = task // (nout * nblk)
        r = task - a * (nout * nblk)
        j = r // nblk
        b0 = (r - j * nblk) * _BLOCK
        b1 = min(b0 + _BLOCK, nb_)
        o = out[a, j, b0:b1]
        for k in range(ntap):
            i = starts[j] + k
            w = weights[j, k]
            if i < 0 or i >= n or w == 0.0:
                continue
            xi = x[a, i, b0:b1]
            for b in range(b1 - b0):
                o[b] += w * _mu(xi[b], scale, offset, bg)


@nb.njit(parallel=True, **_JIT)
def _band_last(x, out, starts, weights):
    """out[a, j] = Σ_k weights[j, k] · x[a, starts[j] + k] over in-range indices (float32, 2-D)."""
    na, n = x.shape
    nout = out.shape[1]
    ntap = weights.shape[1]
    for a in nb.prange(na):
        for j in range(nout):
            acc = np.float32(0.0)
            for k in range(ntap):
                i = starts[j] + k
                if i >= 0 and i < n:
                    acc += weights[j, k] * x[a, i]
            out[a, j] = acc


# --------------------------------------------------------------------------------------------
# fit


def _triple(values) -> tuple[float, float, float]:
    """Three numbers (z, y, x) as floats."""
    z, y, x = (float(v) for v in values)
    return z, y, x


def _sigma(h: float, s: float) -> float:
    f = h / s
    return SIGMA_FACTOR * math.sqrt(max(f * f - 1.0, 0.0))


def _tap_radius(sigma: float) -> int:
    return int(TRUNCATE * sigma + 0.5)


@dataclasses.dataclass(frozen=True)
class CubeFit:
    """The map from input millimetres to the normalised cube, and how values were mapped.

    Normalised coordinate of an input point ``p_mm`` (z, y, x order): ``u = (p_mm − centre_mm) / rho_mm``;
    input voxel ``[i_z, i_y, i_x]`` is at ``p_mm = i · spacing_zyx``. Output voxel ``j`` (any axis) is at
    ``u = (2j + 1)/size − 1``, i.e. ``p_mm = centre_mm + rho_mm · u``.
    """

    size: int
    shape_zyx: tuple[int, int, int]  # input array shape
    spacing_zyx: tuple[float, float, float]  # input spacing (mm)
    centre_mm: tuple[float, float, float]  # centre of the specimen's smallest enclosing ball (mm, z y x), u = 0 there
    rho_mm: float  # mm per normalised unit (cube half-width)
    voxel_mm: float  # output voxel size, 2 · rho_mm / size (mm, every axis)
    specimen_radius_mm: float  # smallest ball of the specimen's voxel centres (about centre_mm)
    support_radius: float  # normalised radius that holds the resampled specimen's exact support
    margin: float  # normalised gap kept: support_radius <= 1 − margin
    exact_support: bool  # False only for tiny sizes: the ball mask then cuts the filter's tails
    sigma_vox: tuple[float, float, float]  # Gaussian sigma per axis (input voxels)
    scale: float  # value rule µ = clip(v · scale + offset, 0, 1) ...
    offset: float
    background: float | None  # ... then µ <= background → 0
    bbox_lo_mm: tuple[float, float, float]  # specimen voxel-centre bounding box (mm)
    bbox_hi_mm: tuple[float, float, float]

    def mm_to_cube(self, p_mm: Any) -> np.ndarray:
        """(..., 3) mm (z, y, x) → normalised cube coordinates (z, y, x)."""
        return (np.asarray(p_mm, np.float64) - np.asarray(self.centre_mm)) / self.rho_mm

    def cube_to_mm(self, u: Any) -> np.ndarray:
        """(..., 3) normalised (z, y, x) → mm (z, y, x) in the input's frame."""
        return np.asarray(u, np.float64) * self.rho_mm + np.asarray(self.centre_mm)

    def index_to_cube(self, idx: Any) -> np.ndarray:
        """(..., 3) input voxel indices (z, y, x) → normalised (z, y, x)."""
        return self.mm_to_cube(np.asarray(idx, np.float64) * np.asarray(self.spacing_zyx))

    def as_dict(self) -> dict:
        """JSON-ready dict (for dataset attributes)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _check_inputs(array, spacing_zyx, size, margin):
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"array must be 3-D [z, y, x], got shape {array.shape}")
    if min(array.shape) < 1:
        raise ValueError(f"array is empty: shape {array.shape}")
    try:
        sp = tuple(float(s) for s in spacing_zyx)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_zyx must be 3 positive numbers (mm), got {spacing_zyx!r}") from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_zyx must be 3 positive finite numbers (mm), got {spacing_zyx!r}")
    if int(size) != size or size < 4:
        raise ValueError(f"size must be an integer >= 4, got {size!r}")
    size = int(size)
    if margin is None:
        margin = min(2.0 * math.sqrt(3.0) / size, 0.25)
    margin = float(margin)
    if not (0.0 <= margin < 0.5):
        raise ValueError(f"margin must lie in [0, 0.5), got {margin!r}")
    return array, sp, size, margin


def _prepare(array, spacing_zyx, size, window, background, margin):
    """Validate, build the value rule and fit; returns (x, fit, mapper) for the kernels."""
    array, sp, size, margin = _check_inputs(array, spacing_zyx, size, margin)
    scale, offset = value_map(array, window)
    if array.dtype == np.bool_:
        array = array.view(np.uint8)
    if background is not None:
        bg = float(background)
        if not math.isfinite(bg):
            raise ValueError(f"background must be a finite number, got {background!r}")
    else:
        bg = 0.0  # µ <= 0 is background in any case
    x = np.ascontiguousarray(array)
    mapper = (np.float32(scale), np.float32(offset), np.float32(bg))
    first, last = _row_extents(x, *mapper)
    zz, yy = np.nonzero(first >= 0)
    if zz.size == 0:
        raise ValueError("no specimen found: no voxel has density > 0 (after window/background)")
    x0, x1 = first[zz, yy], last[zz, yy]
    s = np.asarray(sp)
    lo = np.array([zz.min(), yy.min(), x0.min()]) * s
    hi = np.array([zz.max(), yy.max(), x1.max()]) * s
    # every support voxel lies on a row segment between two end points: the ball of the end points holds it
    ends = np.concatenate([np.stack([zz, yy, x0], 1), np.stack([zz, yy, x1], 1)]).astype(np.float64) * s
    c, _ = min_ball(ends)
    dz = np.abs(zz * s[0] - c[0])
    dy = np.abs(yy * s[1] - c[1])
    dx = np.maximum(np.abs(x0 * s[2] - c[2]), np.abs(x1 * s[2] - c[2]))

    def radius(e):
        return float(np.sqrt(((dz + e[0]) ** 2 + (dy + e[1]) ** 2 + (dx + e[2]) ** 2).max()))

    r_spec = radius((0.0, 0.0, 0.0))
    # Fixed point: rho must hold the support grown by the stencil, whose width grows with rho. The
    # sequence is non-decreasing; it converges in a few steps unless size is tiny (< ~12), where no
    # exact fit exists: then the voxel centres alone are fitted and the ball mask cuts filter tails.
    rho = max(r_spec, 1e-12) / (1.0 - margin)
    exact = False
    for _ in range(100):
        h = 2.0 * rho / size
        e = [(_tap_radius(_sigma(h, sa)) + 1) * sa for sa in sp]
        rho_new = radius(e) / (1.0 - margin)
        if rho_new <= rho:
            exact = True
            break
        rho = rho_new
    if not exact:
        rho = max(r_spec, 0.5 * min(sp)) / (1.0 - margin)
        h = 2.0 * rho / size
        e = [(_tap_radius(_sigma(h, sa)) + 1) * sa for sa in sp]
    h = 2.0 * rho / size
    fit = CubeFit(
        size=size,
        shape_zyx=(int(x.shape[0]), int(x.shape[1]), int(x.shape[2])),
        spacing_zyx=sp,
        centre_mm=_triple(c),
        rho_mm=float(rho),
        voxel_mm=float(h),
        specimen_radius_mm=r_spec,
        support_radius=radius(e) / rho,
        margin=margin,
        exact_support=exact,
        sigma_vox=_triple(_sigma(h, sa) for sa in sp),
        scale=float(scale),
        offset=float(offset),
        background=None if background is None else bg,
        bbox_lo_mm=_triple(lo),
        bbox_hi_mm=_triple(hi),
    )
    return x, fit, mapper


def _slsqp_ball(q: np.ndarray):
    """SLSQP for the smallest ball of ``q`` (n, 3): minimise r² over (centre, r²) subject to
    |q − c|² ≤ r², started at the origin with r² = 1."""
    return minimize(
        lambda v: v[3],
        np.array([0.0, 0.0, 0.0, 1.0]),
        jac=lambda v: np.array([0.0, 0.0, 0.0, 1.0]),
        method="SLSQP",
        options={"maxiter": 200, "ftol": 1e-14},
        constraints=[
            {
                "type": "ineq",
                "fun": lambda v: v[3] - ((q - v[:3]) ** 2).sum(1),
                "jac": lambda v: np.hstack([2.0 * (q - v[:3]), np.ones((len(q), 1))]),
            }
        ],
    )


def min_ball(points) -> tuple[np.ndarray, float]:
    """Centre (3,) and radius of the smallest ball that holds ``points`` (n, 3): SLSQP on the vertices
    of their convex hull (minimise r² subject to |p − c|² ≤ r²), started at the bounding-box centre.
    The radius returned is the exact max distance about the centre returned, so the ball always
    holds every point; where the optimum is the bounding-box centre (within 1e-9: boxes, symmetric
    shapes) that centre is returned exactly."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    c0 = 0.5 * (p.min(0) + p.max(0))
    r0 = float(np.sqrt(((p - c0) ** 2).sum(1).max()))
    if r0 == 0.0 or len(p) < 3:
        return c0, r0
    q = (p - c0) / r0  # unit scale for the optimiser
    try:
        q = q[ConvexHull(q).vertices]
    except (QhullError, ValueError):  # flat or degenerate: every point is a candidate
        pass
    # one BLAS thread: SLSQP's BLAS reductions split over threads change the centre's last bits and,
    # through it, the cube's values: a cube must not depend on OPENBLAS_NUM_THREADS (Snakemake's
    # 1-thread job and a plain `tomo cube` in recipe/rebuild.sh must agree bit for bit)
    with threadpool_limits(limits=1, user_api="blas"):
        res = _slsqp_ball(q)
    c = c0 + r0 * res.x[:3]
    r = float(np.sqrt(((p - c) ** 2).sum(1).max()))
    if not (math.isfinite(r) and r < r0 * (1.0 - 1e-9)):
        return c0, r0
    return c, r


DENSE_FRACTION = 0.05  # dense_reach: densities >= this fraction of the cube's 99.9th percentile


def dense_reach(cube, fraction: float = DENSE_FRACTION) -> float:
    """Normalised radius (1 = the unit ball's surface) reached by the centres of the voxels of a
    ``(n, n, n)`` cube whose density is at least ``fraction`` × the 99.9th percentile of its non-zero
    densities: how much of the ball the specimen itself fills, as opposed to faint material (foam,
    pillows, noise) that can set the fit's scale. 0.0 for an empty cube."""
    v = np.asarray(cube)
    nz = v[v > 0]
    if nz.size == 0:
        return 0.0
    n = v.shape[0]
    c = cell_centres(n)
    idx = np.argwhere(v >= fraction * float(np.percentile(nz, 99.9)))
    return float(np.sqrt((c[idx] ** 2).sum(1).max()))


def fit_cube(array, spacing_zyx, *, size=128, window=None, background=None, margin=None) -> CubeFit:
    """The :class:`CubeFit` that :func:`to_cube` would use (same arguments), without resampling."""
    return _prepare(array, spacing_zyx, size, window, background, margin)[1]


def _axis_weights(fit: CubeFit, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Banded (Gaussian ∘ trilinear) weights of one axis: out[j] = Σ_k w[j, k] · in[start[j] + k]."""
    s = fit.spacing_zyx[axis]
    n_out = fit.size
    sigma = fit.sigma_vox[axis]
    r = _tap_radius(sigma)
    if r > 0:
        g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        g /= g.sum()
    else:
        g = np.ones(1)
    u = cell_centres(n_out)
    pos = (fit.centre_mm[axis] + fit.rho_mm * u) / s  # input index units
    i0 = np.floor(pos)
    t = (pos - i0)[:, None]
    w = np.zeros((n_out, 2 * r + 2))
    w[:, :-1] += (1.0 - t) * g
    w[:, 1:] += t * g
    return (i0.astype(np.int64) - r), w.astype(np.float32)


def _resample(x, fit: CubeFit, mapper, *, ball_mask: bool = True) -> np.ndarray:
    """Apply the three axis operators (z on the raw input, then y, then x) and the ball mask."""
    n = fit.size
    nz, ny, nx = x.shape
    (s0, w0), (s1, w1), (s2, w2) = (_axis_weights(fit, a) for a in range(3))
    t0 = np.zeros((1, n, ny * nx), np.float32)
    _band_mid(x.reshape(1, nz, ny * nx), t0, s0, w0, *mapper)
    t1 = np.zeros((n, n, nx), np.float32)
    ident = (np.float32(1.0), np.float32(0.0), np.float32(-1.0))
    _band_mid(t0.reshape(n, ny, nx), t1, s1, w1, *ident)
    del t0
    rows = np.empty((n * n, n), np.float32)
    _band_last(t1.reshape(n * n, nx), rows, s2, w2)
    vol = rows.reshape(n, n, n)
    np.clip(vol, 0.0, 1.0, out=vol)
    if ball_mask:
        c = cell_centres(n)
        r2 = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2
        vol[r2 > (1.0 - fit.margin) ** 2] = 0.0
    return vol


def to_cube(
    array,
    spacing_zyx,
    *,
    size: int = 128,
    window: tuple[float, float] | None = None,
    background: float | None = None,
    margin: float | None = None,
    return_fit: bool = False,
):
    """Resample ``array[z, y, x]`` (spacing ``spacing_zyx`` mm) to a ``(size,)*3`` float32 density cube.

    Values follow the module's value rule (``window``, ``background``); the specimen (voxels with
    µ > 0) is scaled isotropically and centred (centre of its smallest enclosing ball) so that it lies inside the ball
    of radius ``1 − margin`` (normalised units; default one output voxel diagonal, min(2·sqrt(3)/size, 0.25));
    every output voxel whose centre has radius > 1 − margin is exactly 0. Axes stay (z, y, x), no
    flips. With ``return_fit=True`` returns ``(cube, CubeFit)``. Raises ``ValueError`` on bad input
    or when no specimen is found.
    """
    x, fit, mapper = _prepare(array, spacing_zyx, size, window, background, margin)
    vol = _resample(x, fit, mapper)
    return (vol, fit) if return_fit else vol


def bench_to_cube(shape=(1000, 500, 500), spacing=(1.0, 1.0, 1.0), size=128, repeats=2, seed=0) -> dict:
    """Time :func:`to_cube` on a synthetic uint8 stack (an ellipsoid with noise); seconds per call."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    a = np.empty(shape, np.uint8)
    yy, xx = np.mgrid[:ny, :nx]
    for z in range(nz):
        r2 = ((z - nz / 2) / (0.45 * nz)) ** 2 + ((yy - ny / 2) / (0.4 * ny)) ** 2 + ((xx - nx / 2) / (0.45 * nx)) ** 2
        a[z] = np.where(r2 < 1, 200, 0).astype(np.uint8)
    a |= rng.integers(0, 4, size=(1, ny, nx), dtype=np.uint8)  # codec-like noise floor
    to_cube(a[:8, :8, :8], (1.0, 1.0, 1.0), size=size)  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        to_cube(a, spacing, size=size, background=4 / 255)
        times.append(time.perf_counter() - t0)
    return {"shape": shape, "size": size, "seconds": min(times), "all": times}
