"""Fusion (paper §4.2, Eq. 2): the exact weights of each tier of model.fusion.fuse against numpy references.

tests/test_fusion.py checks the defining properties (re-rendering, water-filling, where density goes);
these tests pin the numbers: Eq. 2 for every β, the neighbours' depth profile of tier 2 (3×3 box mean,
edge-replicated, bilinearly upsampled, ^β), the object's depth slab of tier 3 (slice mean ^β), and the
x-ray range check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.fusion import OPACITY_TOL, fuse, render_view

CHI = 10.0


def _budget(opacity, D, chi=CHI):
    """Column sum T = −(D/chi)·log(1 − opacity) that the module docstring derives."""
    return -(D / chi) * np.log1p(-np.asarray(opacity, np.float64))


def _taps(n_in, n_out):
    """Bilinear taps, align_corners=False with edge clamp (torch.nn.functional.interpolate)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _upsample(c, H, W):
    """(D, h, w) -> (D, H, W), bilinear per depth slice."""
    yi0, yi1, fy = _taps(c.shape[1], H)
    xi0, xi1, fx = _taps(c.shape[2], W)
    rows = c[:, yi0] * (1 - fy)[None, :, None] + c[:, yi1] * fy[None, :, None]
    return rows[:, :, xi0] * (1 - fx) + rows[:, :, xi1] * fx


def _box3_edge(c):
    """3×3 lateral box mean, centred, the border replicated."""
    p = np.pad(c, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = c.shape[1:]
    return sum(p[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("factor", [0.97, 1.03])
def test_eq2_distributes_the_error_with_weights_mu_to_the_beta(beta, factor):
    """Without it a β other than 1 or 2 could silently act as another power (e.g. β = 3 used as 2)."""
    rng = np.random.default_rng(11)
    D = 12
    mu = rng.uniform(0.05, 0.6, size=(D, 1, 1))
    opacity = -math.expm1(-CHI * factor * mu.mean())
    delta = mu.sum() - _budget(opacity, D)
    expected = mu - delta * mu**beta / (mu**beta).sum()
    assert 0 < expected.min() and expected.max() < 1  # Eq. 2 verbatim: no clamping in this case
    f = fuse(mu, np.array([[opacity]]), beta=beta, chi=CHI)
    np.testing.assert_allclose(f, expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_empty_columns_take_the_bilinear_box_mean_of_the_neighbours_profiles(beta):
    """Without it an empty column at a silhouette could get density at the wrong depths (wrong neighbours,
    wrong interpolation weights, wrong border rule, or the profile without ^β)."""
    rng = np.random.default_rng(3)
    D, h, w, H, W = 8, 8, 8, 20, 20  # non-integer upsampling 8 -> 20
    coarse = rng.uniform(0.05, 1.0, size=(D, h, w))  # every column its own depth profile, differing in x and y
    coarse[:, :2, :2] = 0.0  # the network left the top-left corner empty
    up = _upsample(coarse, H, W)
    empty = np.zeros((H, W), bool)
    empty[:4, :4] = True  # output rows/columns 0..3 interpolate only coarse rows/columns 0..1
    assert np.all(up[:, empty] == 0) and np.all(up.sum(0)[~empty] > 0)
    xray = render_view(up, chi=CHI)
    xray[empty] = rng.uniform(0.2, 0.5, size=int(empty.sum()))  # the x-ray sees the object there

    p = _upsample(_box3_edge(coarse), H, W) ** beta  # tier 2's weights
    tier2 = empty & (p.sum(0) > 0)  # all but (0, 0): its taps' neighbourhoods are the empty block itself
    assert tier2.sum() == 15
    T = _budget(xray, D)
    expected = T[tier2] * p[:, tier2] / p[:, tier2].sum(0)
    assert expected.max() < 1  # no clamping: the column is exactly proportional to p^β

    f = fuse(coarse, xray, beta=beta, chi=CHI).astype(np.float64)
    # the corner columns next to the border, among them ones with all four taps weighted and fx != fy: (1, 3), (3, 1)
    np.testing.assert_allclose(f[:, tier2], expected, rtol=0, atol=2e-6)


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_empty_neighbourhood_takes_the_slice_mean_profile_to_the_beta(beta):
    """Without it a column far from the object could get density over the wrong depth slab or in the wrong
    proportions (slice maximum instead of mean, profile without ^β)."""
    D, h, w, H, W = 16, 8, 8, 20, 20
    coarse = np.zeros((D, h, w))
    coarse[9:13, 5:8, 5:8] = np.array([0.3, 0.8, 0.5, 0.2])[:, None, None]  # a wide object, non-uniform in depth
    coarse[2:5, 4, 7] = [0.9, 0.6, 0.95]  # a one-pixel object in front
    g = coarse.mean(axis=(1, 2))
    assert not np.allclose(g / g.max(), coarse.max(axis=(1, 2)) / coarse.max())  # mean and max differ in shape
    up = _upsample(coarse, H, W)
    empty = np.zeros((H, W), bool)
    empty[:4, :4] = True  # coarse rows/columns 0..1 and their 3×3 neighbourhood (0..2) are empty
    assert np.all(up[:, empty] == 0) and np.all(_upsample(_box3_edge(coarse), H, W)[:, empty] == 0)
    xray = render_view(up, chi=CHI)
    xray[empty] = np.linspace(0.1, 0.6, int(empty.sum()))

    gb = g**beta
    T = _budget(xray, D)
    expected = T[None] * (gb / gb.sum())[:, None, None]
    assert expected[:, empty].max() < 1  # no clamping

    f = fuse(coarse, xray, beta=beta, chi=CHI).astype(np.float64)
    np.testing.assert_allclose(f[:, empty], expected[:, empty], rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    "value",
    # twice the tolerance out, and 2e-5 out: a literal, since a larger OPACITY_TOL would move the first pair along
    [1 + 2 * OPACITY_TOL, -2 * OPACITY_TOL, 1 + 2e-5, -2e-5],
    ids=["above-2tol", "below-2tol", "above-2e-5", "below-2e-5"],
)
def test_xray_out_of_range_beyond_rounding_raises(value):
    """Without it an x-ray with wrong scaling (values a little above 1 or below 0) could be clipped silently."""
    xray = np.array([[0.5, value]])
    with pytest.raises(ValueError, match="opacities in"):
        fuse(np.full((4, 2, 2), 0.5), xray)
