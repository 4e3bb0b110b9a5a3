"""Fusion (paper §4.2, Eq. 2): model.fusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.fusion import (
    OPACITY_TOL,
    fuse,
    fuse_slabs,
    fuse_to_file,
    opacity_max,
    render_view,
    rerender_error,
    upsample_lateral,
    xray_at,
)

SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _random_coarse(rng, shape, *, sparsity=0.3, lo=-0.05, hi=1.05):
    """Densities like a raw prediction: some slightly negative / above 1, a fraction exactly 0."""
    c = rng.uniform(lo, hi, size=shape) * rng.uniform(0, 1, size=shape) ** 2
    c[rng.random(shape) < sparsity] = 0.0
    return c.astype(np.float32)


def _random_xray(rng, shape, *, p_zero=0.1, p_one=0.05):
    x = rng.random(shape)
    x[rng.random(shape) < p_zero] = 0.0
    x[rng.random(shape) < p_one] = 1.0
    return x.astype(np.float32)


def _budget(xray, D, chi):
    """Column sum T = −(D/chi)·log(1 − opacity) that the docstring derives (opacity clamped)."""
    op = np.minimum(np.asarray(xray, np.float64), opacity_max(chi))
    return -(D / chi) * np.log1p(-op)


case = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**32 - 1),
        "D": st.integers(1, 16),
        "h": st.integers(1, 9),
        "w": st.integers(1, 9),
        "H": st.integers(1, 24),
        "W": st.integers(1, 24),
        "beta": st.sampled_from([0.5, 1.0, 2.0, 3.0]),
        "chi": st.sampled_from([1.0, 4.0, 10.0, 20.0]),
        "sparsity": st.sampled_from([0.0, 0.3, 0.9, 1.0]),
    }
)


# --------------------------------------------------------------------------------------------
# the defining properties


@SETTINGS
@given(case)
def test_rerenders_to_the_input_xray(p):
    rng = np.random.default_rng(p["seed"])
    coarse = _random_coarse(rng, (p["D"], p["h"], p["w"]), sparsity=p["sparsity"])
    xray = _random_xray(rng, (p["H"], p["W"]))
    f = fuse(coarse, xray, beta=p["beta"], chi=p["chi"])
    assert f.shape == (p["D"], p["H"], p["W"]) and f.dtype == np.float32
    assert f.min() >= 0.0 and f.max() <= 1.0
    want = np.minimum(xray.astype(np.float64), opacity_max(p["chi"]))
    np.testing.assert_allclose(render_view(f, chi=p["chi"]), want, rtol=0, atol=1e-4)
    # the column sums hit the budget T of the derivation
    np.testing.assert_allclose(f.astype(np.float64).sum(0), _budget(xray, p["D"], p["chi"]), rtol=1e-5, atol=1e-4)


def test_rerenders_with_different_resolutions_default_parameters():
    rng = np.random.default_rng(1)
    coarse = _random_coarse(rng, (16, 8, 8))
    for shape in [(24, 20), (8, 8), (5, 3), (64, 64)]:
        xray = _random_xray(rng, shape)
        f = fuse(coarse, xray)
        np.testing.assert_allclose(render_view(f), np.minimum(xray, opacity_max(10.0)), atol=1e-4)
        assert f.min() >= 0.0


@SETTINGS
@given(case)
def test_zero_opacity_columns_stay_empty(p):
    rng = np.random.default_rng(p["seed"])
    coarse = _random_coarse(rng, (p["D"], p["h"], p["w"]), sparsity=p["sparsity"])
    xray = _random_xray(rng, (p["H"], p["W"]), p_zero=0.4)
    f = fuse(coarse, xray, beta=p["beta"], chi=p["chi"])
    assert np.all(f[:, xray == 0.0] == 0.0)


@SETTINGS
@given(case)
def test_consistent_prediction_is_unchanged(p):
    rng = np.random.default_rng(p["seed"])
    coarse = np.clip(_random_coarse(rng, (p["D"], p["h"], p["w"]), sparsity=p["sparsity"]), 0, 1)
    # same resolution: the prediction itself
    f = fuse(coarse, render_view(coarse, chi=p["chi"]), beta=p["beta"], chi=p["chi"])
    np.testing.assert_allclose(f, coarse, rtol=0, atol=1e-5)
    # other resolution: the upsampled prediction
    up = upsample_lateral(coarse, (p["H"], p["W"]))
    f = fuse(coarse, render_view(up, chi=p["chi"]), beta=p["beta"], chi=p["chi"])
    np.testing.assert_allclose(f, up, rtol=0, atol=1e-5)


def test_prediction_is_clamped_to_unit_range_first():
    rng = np.random.default_rng(2)
    coarse = rng.uniform(-0.5, 1.5, size=(8, 4, 4)).astype(np.float32)
    clamped = np.clip(coarse, 0, 1)
    f = fuse(coarse, render_view(clamped))
    np.testing.assert_allclose(f, clamped, atol=1e-5)


# --------------------------------------------------------------------------------------------
# step 1: upsampling


@pytest.mark.parametrize(
    "hw,HW", [((8, 8), (24, 20)), ((5, 7), (5, 7)), ((9, 6), (4, 3)), ((1, 1), (3, 5)), ((3, 4), (17, 1))]
)
def test_upsampling_is_bilinear_align_corners_false(hw, HW):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    coarse = rng.random((6, *hw)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(coarse)[None], size=HW, mode="bilinear", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(upsample_lateral(coarse, HW), ref, atol=1e-6)


def test_fusion_uses_the_upsampled_prediction():
    # small correction everywhere: the fused volume stays close to the bilinear upsampling
    rng = np.random.default_rng(4)
    coarse = rng.uniform(0.2, 0.8, size=(8, 4, 4))
    up = upsample_lateral(coarse, (12, 12)).astype(np.float64)
    xray = render_view(up * 1.01)
    f = fuse(coarse, xray)
    assert np.abs(f - up).max() < 0.02


# --------------------------------------------------------------------------------------------
# Eq. 2 and its derivation


def test_small_error_is_eq2_verbatim():
    rng = np.random.default_rng(5)
    D, chi, beta = 12, 10.0, 2.0
    mu = rng.uniform(0.05, 0.6, size=(D, 1, 1))
    for factor in (0.97, 1.03):
        abar = math.exp(-chi * mu.mean())  # predicted transparency ᾱ
        alpha = math.exp(-chi * factor * mu.mean())  # input transparency α
        d_alpha = abar - alpha  # the paper's ∆α
        delta = (D / chi) * math.log(1.0 - d_alpha / abar)  # derivation in the module docstring
        assert delta == pytest.approx(mu.sum() - (-(D / chi) * math.log(alpha)))
        expected = mu - delta * mu**beta / (mu**beta).sum()
        f = fuse(mu, np.array([[1.0 - alpha]]), beta=beta, chi=chi)
        np.testing.assert_allclose(f, expected, atol=1e-6)


def test_removal_that_would_go_negative_is_water_filled():
    D, chi, beta = 8, 10.0, 2.0
    mu = np.array([1.0, 0.9, 0.5, 0.3, 0.2, 0.1, 0.05, 0.0]).reshape(D, 1, 1)
    T = 0.8  # much less than Σµ̄ = 3.05
    alpha = math.exp(-chi * T / D)
    xray = np.array([[1.0 - alpha]])
    delta = mu.sum() - T
    verbatim = mu - delta * mu**beta / (mu**beta).sum()
    assert verbatim.min() < 0  # the case is exercised: Eq. 2 alone would go negative
    f = fuse(mu, xray, beta=beta, chi=chi).astype(np.float64).ravel()
    assert f.min() >= 0.0
    assert f.sum() == pytest.approx(T, abs=1e-5)
    assert render_view(f.reshape(D, 1, 1), chi=chi)[0, 0] == pytest.approx(1 - alpha, abs=1e-6)
    # form max(0, µ̄ − λ·µ̄^β): one λ for all entries that stay positive, clamped ones have µ̄^{1−β} < λ
    m = mu.ravel()
    pos = f > 1e-7
    lam = (m[pos] - f[pos]) / m[pos] ** beta
    assert np.ptp(lam) < 1e-4
    assert np.all(m[~pos & (m > 0)] ** (1 - beta) <= lam.mean() + 1e-4)
    assert f[-1] == 0.0  # an empty voxel stays empty


def test_addition_is_capped_at_one_and_water_filled():
    D, chi, beta = 6, 10.0, 2.0
    mu = np.array([0.9, 0.8, 0.3, 0.2, 0.1, 0.0]).reshape(D, 1, 1)
    T = 3.0  # Σµ̄ = 2.3
    xray = np.array([[-math.expm1(-chi * T / D)]])
    verbatim = mu - (mu.sum() - T) * mu**beta / (mu**beta).sum()
    assert verbatim.max() > 1  # Eq. 2 alone would exceed the density range
    f = fuse(mu, xray, beta=beta, chi=chi).astype(np.float64).ravel()
    assert f.max() <= 1.0
    assert f.sum() == pytest.approx(T, abs=1e-5)
    m = mu.ravel()
    inner = (f < 1 - 1e-7) & (m > 0)
    lam = (f[inner] - m[inner]) / m[inner] ** beta
    assert inner.sum() >= 2 and np.ptp(lam) < 1e-4
    assert f[-1] == 0.0  # support has room left: the empty voxel gets nothing


# --------------------------------------------------------------------------------------------
# edge cases


def test_opacity_one_is_clamped_to_the_reachable_maximum():
    rng = np.random.default_rng(6)
    coarse = _random_coarse(rng, (10, 4, 4))
    for chi in (2.0, 10.0):
        xray = np.ones((6, 6), np.float32)
        xray[0, 0] = 0.5
        f = fuse(coarse, xray, chi=chi)
        assert np.all(np.isfinite(f))
        assert np.all(f[:, 1:, :] == 1.0) and np.all(f[:, 0, 1:] == 1.0)
        r = render_view(f, chi=chi)
        assert r[3, 3] == pytest.approx(1 - math.exp(-chi), abs=1e-6)
        assert abs(r[3, 3] - 1.0) <= math.exp(-chi) + 1e-6  # matched to within the clamp
        assert r[0, 0] == pytest.approx(0.5, abs=1e-5)


def test_empty_column_takes_the_depth_profile_of_its_neighbours():
    D = 16
    coarse = np.zeros((D, 8, 8))
    coarse[4:8, :, :4] = 0.5  # left half of the object at depths 4..7,
    coarse[10:13, :, 4:] = 0.5  # right half at depths 10..12,
    coarse[:, 3, 1] = 0.0  # one column the network left empty
    xray = render_view(coarse)
    xray[3, 1] = 0.6
    f = fuse(coarse, xray)
    col = f[:, 3, 1]
    assert render_view(f)[3, 1] == pytest.approx(0.6, abs=1e-5)
    assert np.all(col[:4] == 0) and np.all(col[8:] == 0)  # no wall in front or behind
    assert np.ptp(col[4:8]) < 1e-6 and col[4] > 0  # spread evenly over the neighbours' slab


def test_empty_neighbourhood_takes_the_objects_depth_slab():
    D = 16
    coarse = np.zeros((D, 8, 8))
    coarse[10:13, 6:, 6:] = 0.7  # object only in one corner, at depths 10..12
    xray = render_view(coarse)
    xray[0, 0] = 0.3  # far from it, no neighbour has density
    f = fuse(coarse, xray)
    col = f[:, 0, 0]
    assert render_view(f)[0, 0] == pytest.approx(0.3, abs=1e-5)
    assert np.all(col[:10] == 0) and np.all(col[13:] == 0) and np.all(col[10:13] > 0)


def test_empty_prediction_is_filled_uniformly():
    rng = np.random.default_rng(7)
    xray = _random_xray(rng, (9, 11))
    f = fuse(np.zeros((12, 3, 3), np.float32), xray)
    np.testing.assert_allclose(render_view(f), np.minimum(xray, opacity_max()), atol=1e-5)
    assert np.ptp(f, axis=0).max() < 1e-6  # every column constant over depth


def test_overflowing_support_spills_into_the_fallback():
    # the prediction's voxels cannot hold the budget even at density 1
    D = 8
    coarse = np.zeros((D, 1, 1))
    coarse[3, 0, 0] = 0.4
    xray = np.array([[-math.expm1(-10.0 * 2.5 / D)]])  # budget 2.5 > 1
    f = fuse(coarse, xray).ravel()
    assert f[3] == 1.0 and f.sum() == pytest.approx(2.5, abs=1e-5)


# --------------------------------------------------------------------------------------------
# the paper's intuition: β = 2 puts the correction into dense voxels


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.9, 1.2, 1.5]))
def test_beta2_keeps_empty_voxels_empty_and_prefers_dense_ones(seed, factor):
    rng = np.random.default_rng(seed)
    D = 32
    coarse = np.zeros((D, 6, 6))
    depth = rng.integers(4, 28, size=(6, 6))
    for i in range(6):
        for j in range(6):
            k = depth[i, j]
            coarse[k - 3 : k + 4, i, j] = [0.05, 0.1, 0.3, 0.6, 0.3, 0.1, 0.05]  # a blob per column
    xray = render_view(coarse * factor)
    f2 = fuse(coarse, xray, beta=2.0).astype(np.float64)
    f1 = fuse(coarse, xray, beta=1.0).astype(np.float64)
    assert np.all(f2[coarse == 0] == 0)  # void stays void
    dense = coarse >= 0.3
    share2 = np.abs(f2 - coarse)[dense].sum() / np.abs(f2 - coarse).sum()
    share1 = np.abs(f1 - coarse)[dense].sum() / np.abs(f1 - coarse).sum()
    assert share2 > share1 and share2 > 0.9


# --------------------------------------------------------------------------------------------
# streaming


@pytest.mark.parametrize("rows", [1, 3, 7, 20, 64])
def test_slabs_equal_one_call(rows):
    rng = np.random.default_rng(8)
    coarse = _random_coarse(rng, (16, 8, 8))
    xray = _random_xray(rng, (20, 24))
    full = fuse(coarse, xray)
    starts = []
    parts = []
    for r0, slab in fuse_slabs(coarse, xray, rows_per_slab=rows):
        assert slab.shape == (16, min(rows, 20 - r0), 24) and slab.dtype == np.float32
        starts.append(r0)
        parts.append(slab)
    assert starts == list(range(0, 20, rows))
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), full)
    np.testing.assert_array_equal(fuse(coarse, xray, rows_per_slab=rows), full)


def test_fuse_to_file_equals_fuse(tmp_path):
    rng = np.random.default_rng(9)
    coarse = _random_coarse(rng, (16, 8, 8))
    xray = _random_xray(rng, (30, 17))
    out = fuse_to_file(coarse, xray, tmp_path / "fused.npy", beta=3.0, chi=5.0, rows_per_slab=4)
    assert out == tmp_path / "fused.npy"
    np.testing.assert_array_equal(np.load(out), fuse(coarse, xray, beta=3.0, chi=5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.npy"]


# --------------------------------------------------------------------------------------------
# validation


def test_tiny_excursions_of_the_xray_are_accepted():
    coarse = np.full((4, 2, 2), 0.5)
    xray = np.array([[-OPACITY_TOL / 2, 0.5], [0.2, 1 + OPACITY_TOL / 2]])
    f = fuse(coarse, xray)
    assert np.all(f[:, 0, 0] == 0) and np.all(f[:, 1, 1] == 1)


@pytest.mark.parametrize(
    "coarse,xray,kw,match",
    [
        (np.zeros((4, 4)), np.zeros((4, 4)), {}, "3D"),
        (np.zeros((2, 4, 4, 1)), np.zeros((4, 4)), {}, "3D"),
        (np.zeros((0, 4, 4)), np.zeros((4, 4)), {}, "empty"),
        (np.full((2, 4, 4), np.nan), np.zeros((4, 4)), {}, "NaN"),
        (np.full((2, 4, 4), np.inf), np.zeros((4, 4)), {}, "NaN or inf"),
        (np.zeros((2, 4, 4), bool), np.zeros((4, 4)), {}, "dtype"),
        (np.zeros((2, 4, 4), complex), np.zeros((4, 4)), {}, "dtype"),
        (np.zeros((2, 4, 4)), np.zeros((1, 4, 4)), {}, "2D"),
        (np.zeros((2, 4, 4)), np.zeros((4, 0)), {}, "empty"),
        (np.zeros((2, 4, 4)), np.full((4, 4), np.nan), {}, "NaN"),
        (np.zeros((2, 4, 4)), np.full((4, 4), 1.1), {}, r"\[0, 1\]"),
        (np.zeros((2, 4, 4)), np.full((4, 4), -0.01), {}, r"\[0, 1\]"),
        (np.zeros((2, 4, 4)), np.full((4, 4), 255.0), {}, r"\[0, 1\]"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), {"beta": 0.0}, "beta"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), {"beta": -2.0}, "beta"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), {"beta": float("nan")}, "beta"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), {"beta": "two"}, "beta"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), {"chi": 0.0}, "chi"),
        (np.zeros((2, 4, 4)), np.zeros((4, 4)), {"chi": float("inf")}, "chi"),
    ],
)
def test_bad_inputs_raise(coarse, xray, kw, match):
    with pytest.raises(ValueError, match=match):
        fuse(coarse, xray, **kw)


@pytest.mark.parametrize("rows", [0, -1, 2.5, True, None])
def test_bad_rows_per_slab_raise(rows, tmp_path):
    coarse, xray = np.zeros((2, 4, 4)), np.zeros((4, 4))
    with pytest.raises(ValueError, match="rows_per_slab"):
        fuse_slabs(coarse, xray, rows_per_slab=rows)
    with pytest.raises(ValueError, match="rows_per_slab"):
        fuse_to_file(coarse, xray, tmp_path / "x.npy", rows_per_slab=rows)
    if rows is not None:
        with pytest.raises(ValueError, match="rows_per_slab"):
            fuse(coarse, xray, rows_per_slab=rows)
    assert not list(tmp_path.iterdir())


def test_xray_at_averages_optical_depth_over_exact_areas():
    rng = np.random.default_rng(3)
    x = rng.random((3, 6)) * 0.99
    x[0, 0] = 1.0  # beyond what a volume renders: clamped at 1 − e^−χ first
    tau = -np.log1p(-np.minimum(x, opacity_max(4.0)))
    rows = np.array([[2, 1, 0], [0, 1, 2]]) / 3.0  # 3 → 2 pixels: each coarse pixel covers 1.5 fine ones
    cols = np.kron(np.eye(3), [[0.5, 0.5]])  # 6 → 3: whole pairs
    want = -np.expm1(-(rows @ tau @ cols.T))
    # cv2's area weights are single precision: 1e-8 here
    np.testing.assert_allclose(xray_at(x, (2, 3), chi=4.0), want, rtol=0, atol=1e-7)
    # a view volume averaged the same way renders to it: Beer–Lambert kept per coarse pixel
    v = rng.random((5, 3, 6))
    v_coarse = np.stack([rows @ s @ cols.T for s in v])
    got = xray_at(render_view(v, chi=4.0), (2, 3), chi=4.0)
    np.testing.assert_allclose(got, render_view(v_coarse, chi=4.0), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(xray_at(x, (3, 6)), np.clip(x, 0, 1))  # its own size: unchanged
    with pytest.raises(ValueError, match="coarser"):
        xray_at(x, (4, 6))
    with pytest.raises(ValueError, match="opacities"):
        xray_at(x * 2, (2, 3))


def test_rerender_error_is_zero_for_fusions_output_and_measures_against_the_clamped_xray():
    rng = np.random.default_rng(4)
    coarse = rng.random((8, 4, 4)) * 0.5
    x = rng.random((12, 12)) * 0.95
    x[0, 0] = 1.0
    fused = fuse(coarse, x, chi=10.0)
    assert rerender_error(fused, x, chi=10.0) < 1e-6
    assert rerender_error(np.zeros((8, 12, 12)), x, chi=10.0) == pytest.approx(opacity_max(10.0))
