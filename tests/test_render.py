"""The renderer against closed-form projections, an independent reference and its own invariants."""

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from tomodata.render import available_backends, render_xrays, view_volumes
from tomodata.views import hemisphere_views, rotation_from_direction

CHI = 10.0


# ---------------------------------------------------------------------------------------------
# analytic phantoms: a sum of anisotropic Gaussians has a closed-form line integral
def _random_blobs(rng, k):
    blobs = []
    for _ in range(k):
        mean = rng.uniform(-0.45, 0.45, size=3)
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        sig = rng.uniform(0.06, 0.15, size=3)  # 4-10 voxels at 128³
        prec = q @ np.diag(1.0 / sig**2) @ q.T  # A = Σ⁻¹
        amp = rng.uniform(0.5, 0.9)
        blobs.append((amp, mean, prec))
    return blobs


def _bounded(blobs, n):
    """The voxelized blobs, amplitudes scaled down if overlaps would exceed density 1."""
    vol = _voxelize(blobs, n)
    peak = vol.max()
    if peak > 1.0:
        blobs = [(a / peak, m, p) for a, m, p in blobs]
        vol = vol / peak
    return blobs, vol


def _voxelize(blobs, n):
    c = (2.0 * np.arange(n) + 1.0) / n - 1.0
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    p = np.stack([x, y, z], axis=-1)
    vol = np.zeros((n, n, n))
    for amp, mean, prec in blobs:
        q = p - mean
        vol += amp * np.exp(-0.5 * np.einsum("...i,ij,...j->...", q, prec, q))
    return vol


def _exact_opacity(blobs, rot, size):
    """1 − exp(−χ · ½ ∫ µ dw) over w ∈ ℝ (the blobs vanish well inside the cube)."""
    u = (2.0 * np.arange(size) + 1.0) / size - 1.0
    vv, uu = np.meshgrid(u, u, indexing="ij")
    o = uu[..., None] * rot[:, 0] + vv[..., None] * rot[:, 1]
    d = rot[:, 2]
    integral = np.zeros((size, size))
    for amp, mean, prec in blobs:
        q = o - mean
        a = d @ prec @ d
        b = q @ (prec @ d)
        g = np.einsum("...i,ij,...j->...", q, prec, q)
        integral += amp * np.sqrt(2.0 * np.pi / a) * np.exp(-0.5 * (g - b * b / a))
    return 1.0 - np.exp(-CHI * 0.5 * integral)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analytic_gaussian_phantoms(seed):
    rng = np.random.default_rng(seed)
    blobs, vol = _bounded(_random_blobs(rng, 4), 128)
    # the blobs must be negligible at the cube's faces for the closed form over ℝ to apply
    assert (
        max(vol[0].max(), vol[-1].max(), vol[:, 0].max(), vol[:, -1].max(), vol[..., 0].max(), vol[..., -1].max())
        < 1e-4
    )
    rots = hemisphere_views(2000, seed=seed)[rng.choice(2000, size=4, replace=False)]
    imgs = render_xrays(vol.astype(np.float32), rots, size=256, steps=128, chi=CHI, backend="cpu")
    errs = []
    for img, rot in zip(imgs, rots):
        exact = _exact_opacity(blobs, rot, 256)
        assert exact.max() > 0.5  # the test sees real contrast
        err = np.abs(img - exact).max()
        assert err <= 5e-3, err
        errs.append(err)
    print("max opacity error", max(errs))


# ---------------------------------------------------------------------------------------------
# an independent reference: scipy's trilinear map_coordinates, zero padding, zero outside the cube
def _reference_view_volume(vol, rot, size, steps):
    u = (2.0 * np.arange(size) + 1.0) / size - 1.0
    w = (2.0 * np.arange(steps) + 1.0) / steps - 1.0
    ww, vv, uu = np.meshgrid(w, u, u, indexing="ij")
    p = np.stack([uu, vv, ww], axis=-1) @ rot.T  # (steps, size, size, 3) as x, y, z
    n_xyz = np.array(vol.shape[::-1], dtype=np.float64)
    g = ((p + 1.0) * n_xyz - 1.0) / 2.0  # voxel coordinates x, y, z
    coords = np.stack([g[..., 2], g[..., 1], g[..., 0]]) + 1.0
    padded = np.pad(vol.astype(np.float64), 1)
    val = map_coordinates(padded, coords.reshape(3, -1), order=1, mode="constant", cval=0.0, prefilter=False)
    val = val.reshape(p.shape[:-1])
    return np.where(np.all(np.abs(p) <= 1.0, axis=-1), val, 0.0)


@pytest.mark.parametrize("shape", [(16, 16, 16), (12, 18, 22)])
def test_view_volumes_match_reference(shape):
    rng = np.random.default_rng(7)
    vol = rng.random(shape).astype(np.float32)  # dense: non-zero up to the faces
    rots = np.concatenate([hemisphere_views(9, seed=2), rotation_from_direction(np.eye(3))])
    out = view_volumes(vol, rots, size=20, steps=14, backend="cpu")
    assert out.shape == (12, 14, 20, 20) and out.dtype == np.float32
    for o, r in zip(out, rots):
        np.testing.assert_allclose(o, _reference_view_volume(vol, r, 20, 14), atol=1e-5)


def test_sparse_support_clipping_is_exact():
    """A small off-centre object: the box/ball clipping must not drop a single sample."""
    rng = np.random.default_rng(3)
    vol = np.zeros((24, 24, 24), np.float32)
    vol[3:9, 14:21, 15:22] = rng.random((6, 7, 7))
    rots = hemisphere_views(16, seed=9)
    out = view_volumes(vol, rots, size=24, steps=24, backend="cpu")
    for o, r in zip(out, rots):
        np.testing.assert_allclose(o, _reference_view_volume(vol, r, 24, 24), atol=1e-5)


@pytest.mark.parametrize("n", [32, 64])
def test_render_equals_mean_of_view_volume(n):
    rng = np.random.default_rng(n)
    vol = _bounded(_random_blobs(rng, 3), n)[1].astype(np.float32)
    rots = hemisphere_views(6, seed=1)
    img = render_xrays(vol, rots, size=n, steps=n, chi=CHI, backend="cpu")
    vv = view_volumes(vol, rots, size=n, steps=n, backend="cpu")
    np.testing.assert_allclose(img, 1.0 - np.exp(-CHI * vv.mean(axis=1)), atol=1e-5)


def test_axes_and_pixel_convention():
    """Identity view: rows go with y, columns with x, the ray along +z; voxel (z, y, x) → pixel (y, x)."""
    n = 16
    vol = np.zeros((n, n, n), np.float32)
    vol[5, 3, 11] = 1.0
    img = render_xrays(vol, np.eye(3), size=n, steps=n, chi=CHI, backend="cpu")[0]
    assert np.unravel_index(np.argmax(img), img.shape) == (3, 11)
    np.testing.assert_allclose(img[3, 11], 1.0 - np.exp(-CHI / n), rtol=1e-5)
    vv = view_volumes(vol, np.eye(3), size=n, steps=n, backend="cpu")[0]
    assert np.unravel_index(np.argmax(vv), vv.shape) == (5, 3, 11)
    # looking along +x (d = x): the image is (v, u) = (−... ) frame of rotation_from_direction
    r = rotation_from_direction(np.array([1.0, 0.0, 0.0]))
    vv = view_volumes(vol, r, size=n, steps=n, backend="cpu")[0]
    k, row, col = np.unravel_index(np.argmax(vv), vv.shape)
    p = r @ np.array([(2 * col + 1) / n - 1, (2 * row + 1) / n - 1, (2 * k + 1) / n - 1])
    np.testing.assert_allclose(p, [(2 * 11 + 1) / n - 1, (2 * 3 + 1) / n - 1, (2 * 5 + 1) / n - 1], atol=1e-9)


def test_mirrored_view_is_row_flip():
    """Rotating the camera by π about u maps (u, v, w) → (u, −v, −w): the x-ray's rows flip (the
    mirrored sample's image) and the view volume flips in rows and depth."""
    rng = np.random.default_rng(4)
    vol = _bounded(_random_blobs(rng, 3), 32)[1].astype(np.float32)
    rots = hemisphere_views(5, seed=4)
    flipped = rots @ np.diag([1.0, -1.0, -1.0])
    a = render_xrays(vol, rots, size=40, steps=32, backend="cpu")
    b = render_xrays(vol, flipped, size=40, steps=32, backend="cpu")
    np.testing.assert_allclose(b, a[:, ::-1, :], atol=1e-5)
    va = view_volumes(vol, rots, size=32, steps=32, backend="cpu")
    vb = view_volumes(vol, flipped, size=32, steps=32, backend="cpu")
    np.testing.assert_allclose(vb, va[:, ::-1, ::-1, :], atol=1e-5)


def test_opposite_direction_gives_same_xray():
    """docs/geometry.md: the x-ray from −d equals the one from d (with the image frame kept)."""
    rng = np.random.default_rng(5)
    vol = _bounded(_random_blobs(rng, 3), 32)[1].astype(np.float32)
    rots = hemisphere_views(4, seed=5)
    back = np.stack([np.stack([r[:, 0], -r[:, 1], -r[:, 2]], axis=1) for r in rots])  # det +1, d → −d
    a = render_xrays(vol, rots, size=32, steps=32, backend="cpu")
    b = render_xrays(vol, back, size=32, steps=32, backend="cpu")
    np.testing.assert_allclose(b[:, ::-1], a, atol=1e-5)


def test_empty_and_full_volumes():
    rots = hemisphere_views(3)
    assert not render_xrays(np.zeros((8, 8, 8), np.float32), rots, size=8, steps=8).any()
    assert not view_volumes(np.zeros((8, 8, 8)), rots, size=8, steps=8).any()
    full = render_xrays(np.ones((8, 8, 8), np.float32), np.eye(3), size=8, steps=8, backend="cpu")
    np.testing.assert_allclose(full, 1.0 - np.exp(-CHI), rtol=1e-6)
    assert render_xrays(np.ones((4, 4, 4)), np.eye(3), size=4, steps=4, chi=0.0).max() == 0.0


def test_float64_input_and_single_rotation():
    vol = np.random.default_rng(0).random((10, 10, 10))
    a = render_xrays(vol, np.eye(3), size=10, steps=10, backend="cpu")
    b = render_xrays(vol.astype(np.float32), np.eye(3)[None], size=10, steps=10, backend="cpu")
    assert a.shape == (1, 10, 10) and np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# bad input: a ValueError that names the problem
@pytest.mark.parametrize(
    "volume, match",
    [
        (np.zeros((8, 8)), "3D"),
        (np.zeros((8, 0, 8)), "empty axis"),
        (np.zeros((8, 8, 8), np.uint8), "floating-point"),
        (np.full((4, 4, 4), np.nan, np.float32), "NaN"),
        (np.full((4, 4, 4), -0.1, np.float32), "negative"),
        (np.full((4, 4, 4), 2.0, np.float32), "above 1"),
        (np.full((4, 4, 4), np.inf), "inf"),
    ],
)
def test_bad_volumes(volume, match):
    with pytest.raises(ValueError, match=match):
        render_xrays(volume, np.eye(3), size=8, steps=8)
    with pytest.raises(ValueError, match=match):
        view_volumes(volume, np.eye(3), size=8, steps=8)


def test_bad_rotations_and_parameters():
    vol = np.zeros((4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="orthonormal"):
        render_xrays(vol, 2 * np.eye(3))
    with pytest.raises(ValueError, match="reflection"):
        render_xrays(vol, np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="shape"):
        render_xrays(vol, np.eye(4))
    for kw, match in [
        ({"size": 0}, "size"),
        ({"steps": -1}, "steps"),
        ({"size": 2.5}, "size"),
        ({"chi": -1.0}, "chi"),
        ({"chi": float("nan")}, "chi"),
        ({"backend": "gpu"}, "backend"),
    ]:
        with pytest.raises(ValueError, match=match):
            render_xrays(vol, np.eye(3), **kw)


def test_cuda_backend_without_device_is_a_clear_error():
    if "cuda" in available_backends():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="CuPy and a CUDA device"):
        render_xrays(np.zeros((4, 4, 4), np.float32), np.eye(3), backend="cuda")


# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_matches_cpu():
    rng = np.random.default_rng(11)
    vol = _bounded(_random_blobs(rng, 5), 64)[1].astype(np.float32)
    vol[rng.random(vol.shape) < 0.01] = 0.7  # sharp features too
    rots = np.concatenate([hemisphere_views(40, seed=11), rotation_from_direction(np.eye(3))])
    cpu = render_xrays(vol, rots, size=96, steps=64, backend="cpu")
    gpu = render_xrays(vol, rots, size=96, steps=64, backend="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)
    vc = view_volumes(vol, rots[:6], size=48, steps=64, backend="cpu")
    vg = view_volumes(vol, rots[:6], size=48, steps=64, backend="cuda")
    np.testing.assert_allclose(vg, vc, atol=1e-5)
