"""tomodata.resample.to_cube: value rules, isotropic fit inside the unit ball, Gaussian resampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from tomodata import resample as R
from tomodata.resample import CubeFit, fit_cube, min_ball, to_cube


def _centres(n: int) -> np.ndarray:
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def _radius(n: int) -> np.ndarray:
    c = _centres(n)
    return np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)


def _moments(mu: np.ndarray, grids) -> tuple[float, np.ndarray, np.ndarray]:
    """Mass, mean (z, y, x) and 3x3 covariance of density ``mu`` on per-axis coordinate ``grids`` (mm)."""
    mu = mu.astype(np.float64)
    w = mu.sum()
    marg = [mu.sum((1, 2)), mu.sum((0, 2)), mu.sum((0, 1))]
    mean = np.array([g @ m / w for g, m in zip(grids, marg)])
    g = [gr - m for gr, m in zip(grids, mean)]
    cov = np.zeros((3, 3))
    for a in range(3):
        cov[a, a] = (g[a] ** 2) @ marg[a] / w
    cov[0, 1] = cov[1, 0] = g[0] @ mu.sum(2) @ g[1] / w
    cov[0, 2] = cov[2, 0] = g[0] @ mu.sum(1) @ g[2] / w
    cov[1, 2] = cov[2, 1] = g[1] @ mu.sum(0) @ g[2] / w
    return w, mean, cov


def _input_moments(mu, spacing):
    w, mean, cov = _moments(mu, [np.arange(n) * s for n, s in zip(mu.shape, spacing)])
    return w * float(np.prod(spacing)), mean, cov


def _output_moments(vol, fit: CubeFit):
    u = _centres(fit.size)
    grids = [fit.centre_mm[a] + fit.rho_mm * u for a in range(3)]
    w, mean, cov = _moments(vol, grids)
    return w * fit.voxel_mm**3, mean, cov


def _principal_sd(cov):
    return np.sqrt(np.sort(np.linalg.eigvalsh(cov)))


def _ellipsoid(shape, spacing, centre_mm, semi_mm, value=200, soft=1.0):
    """uint8 ellipsoid with an anti-aliased edge (about ``soft`` mm wide)."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    p = [z * spacing[0], y * spacing[1], x * spacing[2]]
    r = np.sqrt(sum(((pa - c) / s) ** 2 for pa, c, s in zip(p, centre_mm, semi_mm)))
    edge = np.clip((1.0 - r) * min(semi_mm) / soft + 0.5, 0.0, 1.0)
    return np.rint(value * edge).astype(np.uint8)


# ----------------------------------------------------------------------------------- basics


def test_shape_dtype_range_and_fit_record():
    a = _ellipsoid((30, 40, 50), (1.0, 1.0, 1.0), (14, 20, 25), (12, 15, 20), value=255)
    for n in (16, 33, 64):
        vol, fit = to_cube(a, (1.0, 1.0, 1.0), size=n, return_fit=True)
        assert vol.shape == (n, n, n) and vol.dtype == np.float32
        assert vol.min() >= 0.0 and vol.max() <= 1.0
        assert vol.max() > 0.9  # the ellipsoid's interior is 1.0
        assert fit.size == n and fit.exact_support
        assert fit.voxel_mm == pytest.approx(2 * fit.rho_mm / n)
        assert fit.margin == pytest.approx(2 * np.sqrt(3) / n)
    assert isinstance(to_cube(a, (1, 1, 1), size=16), np.ndarray)
    json.dumps(fit.as_dict())
    assert fit == fit_cube(a, (1.0, 1.0, 1.0), size=64)


def test_fit_maps():
    a = np.zeros((20, 30, 40), np.uint8)
    a[3:9, 5:25, 10:13] = 255
    sp = (2.0, 0.5, 1.5)
    fit = fit_cube(a, sp, size=32)
    lo, hi = np.array([3, 5, 10]) * sp, np.array([8, 24, 12]) * sp
    assert fit.bbox_lo_mm == pytest.approx(lo) and fit.bbox_hi_mm == pytest.approx(hi)
    assert fit.centre_mm == pytest.approx((lo + hi) / 2)
    assert fit.index_to_cube([5.5, 14.5, 11]) == pytest.approx([0, 0, 0], abs=1e-12)
    p = np.random.default_rng(0).normal(size=(5, 3)) * 20
    assert fit.cube_to_mm(fit.mm_to_cube(p)) == pytest.approx(p)
    # the farthest voxel centre (a box corner) lies at specimen_radius_mm
    assert fit.specimen_radius_mm == pytest.approx(np.linalg.norm((hi - lo) / 2))
    assert fit.specimen_radius_mm / fit.rho_mm < fit.support_radius <= 1 - fit.margin + 1e-12


def test_matches_scipy_gaussian_then_trilinear():
    """The separable banded operator = zero-padded Gaussian (sigma rule, 3-sigma taps) + trilinear."""
    rng = np.random.default_rng(1)
    a = (rng.random((60, 34, 80)) * 255).astype(np.uint8)
    a[:4] = 0
    for sp, n in [((1.3, 2.5, 0.7), 24), ((1.3, 2.5, 0.7), 80), ((1.0, 1.0, 1.0), 64)]:
        vol, fit = to_cube(a, sp, size=n, return_fit=True)
        for ax in range(3):
            f = fit.voxel_mm / sp[ax]
            assert fit.sigma_vox[ax] == pytest.approx(0.5 * np.sqrt(max(f * f - 1, 0)))
        pad = 40
        sm = np.pad(a.astype(np.float64) / 255, pad)
        for ax in range(3):
            if fit.sigma_vox[ax] > 0:
                sm = ndi.gaussian_filter1d(sm, fit.sigma_vox[ax], axis=ax, mode="constant", truncate=3.0)
        u = _centres(n)
        pts = np.meshgrid(*[(fit.centre_mm[ax] + fit.rho_mm * u) / sp[ax] + pad for ax in range(3)], indexing="ij")
        ref = ndi.map_coordinates(sm, pts, order=1, mode="grid-constant", cval=0.0)
        assert np.abs(vol - ref).max() < 1e-5
        # the fit holds the exact support: the unmasked reference is 0 beyond 1 - margin as well
        assert np.all(ref[_radius(n) > 1 - fit.margin] == 0.0)


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "shape, spacing",
    [((40, 40, 40), (1.0, 1.0, 1.0)), ((20, 60, 45), (3.0, 0.7, 1.1)), ((64, 12, 64), (0.5, 4.0, 0.5))],
)
def test_zero_outside_ball_and_fit_is_tight(shape, spacing):
    """A full box (corners included: the worst case for a ball) lands inside radius 1 - margin."""
    a = np.full(shape, 255, np.uint8)
    n = 48
    x, fit, mapper = R._prepare(a, spacing, n, None, None, None)
    raw = R._resample(x, fit, mapper, ball_mask=False)  # without the safety mask
    vol = to_cube(a, spacing, size=n)
    r = _radius(n)
    assert np.all(vol[r > 1.0] == 0.0)
    assert np.all(raw[r > 1.0 - fit.margin] == 0.0)  # the fit itself keeps the support inside
    assert np.array_equal(raw, vol)  # the mask cut nothing
    assert r[vol > 0].max() > 1.0 - fit.margin - 3.0 * 2 / n  # and is not needlessly loose
    assert fit.specimen_radius_mm / fit.rho_mm > 0.75


def test_anisotropic_ellipsoid_keeps_physical_proportions():
    semi = np.array([30.0, 18.0, 45.0])  # z, y, x (mm)
    sp = (2.5, 0.8, 1.2)
    shape = tuple(int(np.ceil((2 * s + 12) / d)) for s, d in zip(semi, sp))
    centre = np.array(shape) * sp / 2
    a = _ellipsoid(shape, sp, centre, semi, value=200)
    vol, fit = to_cube(a, sp, size=64, return_fit=True)
    m_in, _, cov_in = _input_moments(a / 255.0, sp)
    m_out, mean_out, cov_out = _output_moments(vol, fit)
    sd_in, sd_out = np.sqrt(np.diag(cov_in)), np.sqrt(np.diag(cov_out))
    assert sd_in == pytest.approx(semi / np.sqrt(5), rel=0.03)  # uniform ellipsoid: a / sqrt(5)
    assert sd_out == pytest.approx(sd_in, rel=0.02)
    assert sd_out / sd_out[2] == pytest.approx(semi / semi[2], rel=0.03)
    assert m_out == pytest.approx(m_in, rel=0.02)
    assert abs(cov_out[0, 1]) + abs(cov_out[0, 2]) + abs(cov_out[1, 2]) < 0.01 * cov_out.trace()
    # the ellipsoid's long axis (x) spans most of the ball
    assert fit.specimen_radius_mm / fit.rho_mm > 0.88


def test_orientation_kept():
    """Blobs at +x, +y and -z of the input stay at +x, +y, -z (axes z, y, x, no flips)."""
    shape, sp = (30, 40, 50), (2.0, 1.0, 0.8)
    frame = np.zeros(shape, np.uint8)
    for corner in np.ndindex(2, 2, 2):  # fixes the bounding box, so all three share one fit
        frame[tuple(c * (n - 1) for c, n in zip(corner, shape))] = 30
    mid = np.array(shape) // 2
    cases = {"+x": (mid[0], mid[1], 42), "+y": (mid[0], 34, mid[2]), "-z": (4, mid[1], mid[2])}
    fits = []
    for name, pos in cases.items():
        a = frame.copy()
        a[tuple(slice(p - 2, p + 3) for p in pos)] = 255
        vol, fit = to_cube(a, sp, size=40, return_fit=True)
        fits.append(fit)
        blob = vol > 0.5 * vol.max()
        idx = np.argwhere(blob).mean(axis=0)
        u = (2 * idx + 1) / fit.size - 1  # observed (z, y, x), normalised
        expect = fit.index_to_cube(pos)
        assert u == pytest.approx(expect, abs=2.0 / fit.size)
        axis = {"z": 0, "y": 1, "x": 2}[name[1]]
        sign = 1 if name[0] == "+" else -1
        assert sign * u[axis] > 0.15
        assert np.all(np.abs(np.delete(u, axis)) < 0.1)
    assert fits[0] == fits[1] == fits[2]


def test_centred_bounding_box():
    a = np.zeros((50, 60, 70), np.uint8)
    a[2:20, 30:58, 40:68] = 255  # off-centre in the array
    vol, fit = to_cube(a, (1.0, 1.0, 1.0), size=48, return_fit=True)
    _, mean, _ = _output_moments(vol, fit)
    u = fit.mm_to_cube(mean)  # a box's centroid is its centre
    assert np.abs(u).max() < 0.5 * 2 / 48
    assert fit.centre_mm == pytest.approx((10.5, 43.5, 53.5))


# -------------------------------------------------------------------------- value rules


def _interior(vol):
    n = vol.shape[0]
    return vol[n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1, n // 2 - 1 : n // 2 + 1]


def _block(dtype, value, fill=0):
    a = np.full((40, 40, 40), fill, dtype)
    a[8:32, 8:32, 8:32] = value
    return a


def test_value_rules():
    sp = (1.0, 1.0, 1.0)
    assert _interior(to_cube(_block(np.uint8, 51), sp, size=32)) == pytest.approx(0.2, abs=1e-6)
    assert _interior(to_cube(_block(np.uint8, 255), sp, size=32)) == pytest.approx(1.0, abs=1e-6)
    assert _interior(to_cube(_block(np.uint16, 13107), sp, size=32)) == pytest.approx(0.2, abs=1e-6)
    # uint16 with a window: raw CT numbers
    v = to_cube(_block(np.uint16, 3000), sp, size=32, window=(0, 4000))
    assert _interior(v) == pytest.approx(0.75, abs=1e-6)
    # HU (int16 and float) need a window; values are clipped to it
    hu = _block(np.int16, 0, fill=-1000)
    with pytest.raises(ValueError, match="window"):
        to_cube(hu, sp, size=32)
    assert _interior(to_cube(hu, sp, size=32, window=(-1000, 1000))) == pytest.approx(0.5, abs=1e-6)
    assert _interior(to_cube(hu.astype(np.float32), sp, size=32, window=(-1000, 1000))) == pytest.approx(0.5, abs=1e-6)
    assert _interior(to_cube(_block(np.int16, 3000, -1000), sp, size=32, window=(-1000, 1000))) == pytest.approx(1.0)
    # float data in [0, 1] is taken as is; outside needs a window
    assert _interior(to_cube(_block(np.float32, 0.3), sp, size=32)) == pytest.approx(0.3, abs=1e-6)
    with pytest.raises(ValueError, match="window"):
        to_cube(_block(np.float32, 1.5), sp, size=32)
    assert _interior(to_cube(_block(bool, True), sp, size=32)) == pytest.approx(1.0, abs=1e-6)
    assert R.value_map(np.zeros(3, np.uint8)) == pytest.approx((1 / 255, 0.0))


def test_background_clamps_noise():
    rng = np.random.default_rng(2)
    a = rng.integers(1, 6, size=(40, 40, 40)).astype(np.uint8)  # codec noise, nowhere exactly 0
    a[25:35, 5:15, 20:30] = 200
    fit_noisy = fit_cube(a, (1, 1, 1), size=32)
    assert fit_noisy.bbox_lo_mm == (0, 0, 0) and fit_noisy.bbox_hi_mm == (39, 39, 39)
    vol, fit = to_cube(a, (1, 1, 1), size=32, background=6 / 255, return_fit=True)
    assert fit.bbox_lo_mm == (25, 5, 20) and fit.bbox_hi_mm == (34, 14, 29)
    assert fit.background == pytest.approx(6 / 255)
    # noise gone: everything a few output voxels outside the block is exactly 0
    outside = np.abs(np.stack(np.meshgrid(*[_centres(32)] * 3, indexing="ij"))).max(axis=0) > 0.75
    assert np.all(vol[outside] == 0.0)
    assert _interior(vol) == pytest.approx(200 / 255, abs=1e-6)
    # values above the threshold are kept unchanged (not re-scaled)
    a2 = _block(np.uint8, 100)
    assert _interior(to_cube(a2, (1, 1, 1), size=32, background=0.2)) == pytest.approx(100 / 255, abs=1e-6)


def test_background_is_inclusive_and_values_stay_within_one():
    """µ equal to the background is background (``µ ≤ t``; helper-84: ``<`` passed every test): a floor
    exactly at the threshold must not make the whole stack the specimen; and a full-scale box never
    exceeds 1 after the filters (their weights sum to 1 only up to rounding)."""
    a = np.full((40, 40, 40), 0.25, np.float32)  # a floor at exactly the threshold
    a[10:30, 12:28, 14:26] = 0.8
    fit = fit_cube(a, (1, 1, 1), size=32, background=0.25)
    assert fit.bbox_lo_mm == (10, 12, 14) and fit.bbox_hi_mm == (29, 27, 25)
    hu = np.full((40, 40, 40), -500, np.int16)  # hu-head's background, -500 HU, on a window -1000..2000
    hu[10:30, 12:28, 14:26] = 400
    fit = fit_cube(hu, (1, 1, 1), size=32, window=(-1000, 2000), background=1 / 6)
    assert fit.bbox_lo_mm == (10, 12, 14) and fit.bbox_hi_mm == (29, 27, 25)
    full = to_cube(np.full((40, 40, 40), 255, np.uint8), (1.3, 0.7, 1.0), size=32)
    assert full.max() == 1.0  # clipped: without it 1.0000001


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs():
    ok = _block(np.uint8, 9)
    with pytest.raises(ValueError, match="no specimen found"):
        to_cube(np.zeros((8, 8, 8), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match="no specimen found"):
        to_cube(ok, (1, 1, 1), background=10 / 255)
    with pytest.raises(ValueError, match="no specimen found"):
        to_cube(np.full((8, 8, 8), -5.0), (1, 1, 1), window=(0, 1))
    for bad in (np.nan, np.inf, -np.inf):
        f = ok.astype(np.float32) / 255
        f[3, 4, 5] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            to_cube(f, (1, 1, 1), window=(0, 1))
    with pytest.raises(ValueError, match="3-D"):
        to_cube(np.ones((8, 8), np.uint8), (1, 1))
    with pytest.raises(ValueError, match="3-D"):
        to_cube(np.ones((2, 8, 8, 8), np.uint8), (1, 1, 1))
    for sp in [(1, 1), (1, 0, 1), (1, -1, 1), (1, np.nan, 1), (1, np.inf, 1), "abc", None]:
        with pytest.raises(ValueError, match="spacing"):
            to_cube(ok, sp)
    for n in (3, 0, -4, 16.5):
        with pytest.raises(ValueError, match="size"):
            to_cube(ok, (1, 1, 1), size=n)
    for w in [(1, 1), (2, 1), (0, np.nan)]:
        with pytest.raises(ValueError, match="window"):
            to_cube(ok, (1, 1, 1), window=w)
    with pytest.raises(ValueError):
        to_cube(ok.astype(np.complex64), (1, 1, 1))
    with pytest.raises(ValueError, match="margin"):
        to_cube(ok, (1, 1, 1), margin=0.7)
    tiny, fit = to_cube(np.full((8, 8, 8), 255, np.uint8), (1, 1, 1), size=4, return_fit=True)
    assert tiny.shape == (4, 4, 4) and tiny.max() > 0  # tiny, but allowed
    assert np.all(tiny[_radius(4) > 1.0 - fit.margin] == 0.0)  # the ball mask holds at every size (helper-84)


@pytest.mark.parametrize("size", [4, 5, 6])
def test_tiny_sizes_keep_the_specimen_inside_the_kept_ball(size):
    """Below about 8 voxels no fit holds the filter's whole support (``exact_support`` False); the
    fallback still fits the specimen's voxel centres within radius ``1 − margin``, so the ball mask
    cuts only filter tails, not the specimen (a fit to radius 1 masks its outer voxels)."""
    a = np.zeros((20, 20, 20), np.float32)
    a[2:18, 3:17, 4:16] = 1.0
    for spacing in ((1.0, 1.0, 1.0), (3.0, 1.0, 1.0)):
        fit = fit_cube(a, spacing, size=size)
        assert not fit.exact_support
        assert fit.specimen_radius_mm / fit.rho_mm <= 1.0 - fit.margin + 1e-9, (size, spacing)


_BALL = """
import numpy as np
from tomodata.resample import min_ball
rng = np.random.default_rng(0)
p = rng.normal(size=(20000, 3)) * [3, 2, 1]
c, r = min_ball(p[(p**2 / np.array([9.0, 4.0, 1.0])).sum(1) < 4])
print(repr(c.tolist()), repr(r))
"""


def test_min_ball_bits_do_not_depend_on_blas_threads():
    """The ball fit (and through it every cube value) is the same bit for bit with 1 and 2 BLAS
    threads: Snakemake runs the cube job with one thread, recipe/rebuild.sh runs `tomo cube` with the
    machine's default, and the rebuilt store must match the published checksums (found by a
    walkthrough of docs/export.md: 3 of 28 demo species differed; SLSQP's BLAS sums split over threads)."""
    out = []
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, "-c", _BALL], env=env, capture_output=True, text=True, check=True)
        out.append(run.stdout.strip())
    assert out[0] == out[1], out


# ---------------------------------------------------------------------------- real data


def _check_real(mu_in, a, spacing, **kw):
    vol, fit = to_cube(a, spacing, size=128, return_fit=True, **kw)
    assert vol.shape == (128,) * 3 and 0.0 <= vol.min() and vol.max() <= 1.0
    assert np.all(vol[_radius(128) > 1.0] == 0.0)
    assert fit.exact_support and fit.support_radius <= 1 - fit.margin + 1e-12
    m_in, mean_in, cov_in = _input_moments(mu_in, spacing)
    m_out, mean_out, cov_out = _output_moments(vol, fit)
    sd_in, sd_out = _principal_sd(cov_in), _principal_sd(cov_out)
    assert sd_out == pytest.approx(sd_in, rel=0.05)
    assert sd_out / sd_out[-1] == pytest.approx(sd_in / sd_in[-1], rel=0.05)
    assert mean_out == pytest.approx(mean_in, abs=0.5 * fit.voxel_mm)
    assert m_out == pytest.approx(m_in, rel=0.03)
    return sd_in, sd_out, fit


def test_real_cthead_8bit(shared_data):
    cv2 = pytest.importorskip("cv2")
    files = sorted((shared_data / "real" / "cthead-8bit").glob("cthead-8bit*.bmp"))
    assert len(files) == 99
    a = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files])
    assert a.shape == (99, 256, 256) and a.dtype == np.uint8
    spacing = (2.0, 1.0, 1.0)
    _check_real(a / 255.0, a, spacing)
    bg = 12 / 255  # scanner noise floor
    mu = a / 255.0
    mu[mu <= bg] = 0.0
    _, _, fit = _check_real(mu, a, spacing, background=bg)
    assert fit.bbox_hi_mm[1] - fit.bbox_lo_mm[1] < 255  # the noise floor no longer spans the stack


def test_real_vtk_headsq(shared_data):
    folder = shared_data / "real" / "vtk-headsq"
    a = np.stack([np.fromfile(folder / f"quarter.{i}", "<u2").reshape(64, 64) & 0x7FFF for i in range(1, 94)])
    spacing = (1.5, 3.2, 3.2)  # anisotropic: z down-sampled, y and x up-sampled at 128
    window = (0.0, 4000.0)  # raw CT numbers -> linear density
    mu = np.clip(a / 4000.0, 0, 1)
    _, _, fit = _check_real(mu, a, spacing, window=window)
    assert fit.sigma_vox[1] == fit.sigma_vox[2] == 0.0 and fit.sigma_vox[0] > 0.0


# -------------------------------------------------------------------------- the smallest ball


def test_min_ball_is_the_smallest_and_holds_every_point():
    rng = np.random.default_rng(3)
    u = rng.normal(size=(3000, 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    # a half sphere of radius 10: the smallest ball is the sphere's own (centre on the flat face),
    # the bounding box's centre lies 5 off it (radius 11.2)
    half = u[u[:, 0] > 0] * 10 + [1, 2, 3]
    c, r = min_ball(half)
    assert r <= 10 + 1e-6 and np.linalg.norm(c - [1, 2, 3]) < 0.05
    assert (np.linalg.norm(half - c, axis=1) <= r + 1e-9).all()
    # random clouds: holds everything, never larger than the bounding-box centre's ball, and no
    # random perturbation of the centre gives a smaller ball (local = global: the problem is convex)
    for _ in range(5):
        p = rng.normal(size=(500, 3)) * rng.uniform(0.5, 3, 3) + rng.normal(size=3) * 10
        c, r = min_ball(p)
        d = np.linalg.norm(p - c, axis=1)
        assert d.max() == pytest.approx(r, rel=1e-12)
        c0 = 0.5 * (p.min(0) + p.max(0))
        assert r <= np.linalg.norm(p - c0, axis=1).max() + 1e-12
        for _ in range(50):
            q = c + rng.normal(size=3) * 1e-3 * r
            assert np.linalg.norm(p - q, axis=1).max() >= r * (1 - 1e-7)


def test_a_lopsided_specimen_is_fitted_by_its_ball_not_its_box():
    """A half ball (a skull cap): the bounding-box centre would waste radius; the ball's centre is the
    flat face's centre and the specimen fills the cube's ball to 1 − margin."""
    n = 60
    z, y, x = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    a = (((z - 10) ** 2 + (y - 30) ** 2 + (x - 30) ** 2 <= 28**2) & (z >= 10)).astype(np.uint8) * 255
    vol, fit = to_cube(a, (1.0, 1.0, 1.0), size=96, return_fit=True)
    assert fit.centre_mm[0] == pytest.approx(10, abs=0.5)  # the box's centre would be z = 24
    box_radius = np.linalg.norm([19, 28, 28])  # about the bounding-box centre (z 10..38, y/x 2..58)
    assert fit.specimen_radius_mm < 0.85 * box_radius
    assert fit.specimen_radius_mm / fit.rho_mm > 0.9
