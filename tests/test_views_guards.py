"""tomodata.views against its documented conventions (docs/geometry.md), computed here independently:
the sample <-> (view, mirrored) interleaving and its helpers, which axis a mirror reverses, the
`fibonacci-jitter-v1` recipe, cell centres, view directions and the hemisphere check."""

from __future__ import annotations

import numpy as np
import pytest

from tomodata import views
from tomodata.views import SampleIndex


def _recipe(n: int, seed: int) -> np.ndarray:
    """The rotations of docs/geometry.md's recipe (VIEW_SCHEME_RECIPE), written out from the text."""
    g = (1.0 + np.sqrt(5.0)) / 2.0
    rng = np.random.default_rng(seed)
    phi0 = rng.uniform(0, 2 * np.pi)
    j = rng.uniform(-0.25, 0.25, size=n)
    out = np.empty((n, 3, 3))
    for i in range(n):
        z = 1.0 - (i + 0.5 + j[i]) / n
        ph = phi0 + 2 * np.pi * i / g**2
        s = np.sqrt(max(0.0, 1.0 - z * z))
        d = np.array([s * np.cos(ph), s * np.sin(ph), z])
        th, p = np.arccos(d[2]), np.arctan2(d[1], d[0])
        e_th = np.array([np.cos(th) * np.cos(p), np.cos(th) * np.sin(p), -np.sin(th)])
        e_ph = np.array([-np.sin(p), np.cos(p), 0.0])
        out[i] = np.stack([e_th, e_ph, d], axis=1)
    return out


@pytest.mark.parametrize("n, seed", [(1, 0), (7, 3), (200, 11)])
def test_hemisphere_views_follow_the_written_recipe(n, seed):
    """hemisphere_views(n, seed) equals the recipe of docs/geometry.md re-derived from its words
    (draw order phi_0 then jitter, jitter in ±1/4 of a band, azimuth step 2π/g², spherical frame)."""
    got = views.hemisphere_views(n, seed=seed)
    want = _recipe(n, seed)
    err = float(np.abs(got - want).max())
    assert err < 1e-12, f"hemisphere_views({n}, seed={seed}) differs from the documented recipe by {err:.3g}"


def test_each_direction_lies_inside_its_own_band():
    """Direction i has z in the inner half of band i, [(n-1-i)/n, (n-i)/n] (jitter ±1/4 of a band)."""
    n = 300
    z = views.view_directions(views.hemisphere_views(n, seed=2))[:, 2]
    i = np.arange(n)
    lo, hi = (n - 1 - i + 0.25) / n, (n - i - 0.25) / n
    bad = np.flatnonzero((z < lo - 1e-12) | (z > hi + 1e-12))
    assert bad.size == 0, f"views {bad[:5].tolist()} leave the inner half of their band: z = {z[bad[:5]]}"


def test_view_directions_are_the_third_columns():
    """view_directions returns each rotation's third column (the ray d), not its third row."""
    r = views.hemisphere_views(9, seed=4)
    d = views.view_directions(r)
    for k in range(9):
        assert np.array_equal(d[k], r[k][:, 2]), f"direction {k} is not column 2 of its rotation"
        assert np.array_equal(d[k], r[k] @ np.array([0.0, 0.0, 1.0])), "d must be R @ (0, 0, 1)"


def test_cell_centres_are_the_documented_voxel_centres():
    """cell_centres(n)[i] = (2i + 1)/n - 1: symmetric about 0, half a cell in from each face."""
    np.testing.assert_allclose(views.cell_centres(4), [-0.75, -0.25, 0.25, 0.75], atol=0, rtol=0)
    np.testing.assert_allclose(views.cell_centres(1), [0.0], atol=0)
    c = views.cell_centres(7)
    np.testing.assert_allclose(c + c[::-1], 0.0, atol=1e-15, err_msg="cell centres must be symmetric about 0")
    assert c[0] == pytest.approx(-1 + 1 / 7), "the first centre sits half a cell (1/n) inside the face -1"


def test_mirror_reverses_rows_not_columns():
    """mirror reverses axis -2 (image rows, v -> -v; a view volume's rows), leaving columns and depth."""
    img = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(views.mirror(img), img[::-1, :]), "mirror of an image must be img[::-1, :]"
    vv = np.arange(60.0).reshape(5, 3, 4)  # (steps, rows, cols)
    assert np.array_equal(views.mirror(vv), vv[:, ::-1, :]), "mirror of a view volume must be vv[:, ::-1, :]"
    torch = pytest.importorskip("torch")
    t = torch.arange(60.0).reshape(5, 3, 4)
    assert np.array_equal(views.mirror(t).numpy(), vv[:, ::-1, :]), "a tensor's mirror must flip its rows too"


def test_sample_index_table_is_interleaved():
    """SampleIndex(n): sample 2i is view i plain, 2i + 1 view i mirrored; the last sample 2n - 1 is
    valid and 2n is refused."""
    n = 5
    idx = SampleIndex(n)
    v, m = idx.table()
    assert v.tolist() == [s // 2 for s in range(2 * n)] and m.tolist() == [s % 2 == 1 for s in range(2 * n)]
    assert idx.to_view(2 * n - 1) == (n - 1, True)
    with pytest.raises(ValueError, match="out of range"):
        idx.to_view(2 * n)
    with pytest.raises(ValueError, match="out of range"):
        idx.to_view(np.array([0, 2 * n]))


def test_interleave_and_split_put_plain_at_even_samples():
    """interleave(plain, mirrored) puts view i at sample 2i and its mirror at 2i + 1; split undoes it."""
    plain = np.arange(3)[:, None] * np.ones((3, 2))
    mirrored = -1 - plain
    out = SampleIndex.interleave(plain, mirrored)
    assert np.array_equal(out[0::2], plain) and np.array_equal(out[1::2], mirrored), out[:, 0]
    p, q = SampleIndex.split(out)
    assert np.array_equal(p, plain) and np.array_equal(q, mirrored), "split must return (plain, mirrored)"
    v, m = SampleIndex(3).table()
    expect = np.where(m, -1 - v, v)
    assert np.array_equal(out[:, 0], expect), "interleave must agree with to_view's table"


def test_view_slice_covers_exactly_the_views_of_whole_pairs():
    """view_slice(start, stop) for even bounds is views start/2 .. stop/2 - 1; odd bounds are refused."""
    assert SampleIndex.view_slice(2, 6) == slice(1, 3)
    assert list(range(10))[SampleIndex.view_slice(0, 4)] == [0, 1]
    for a, b in ((1, 4), (2, 5)):
        with pytest.raises(ValueError, match="whole view pairs"):
            SampleIndex.view_slice(a, b)


def test_hemisphere_check_refuses_a_view_below_the_equator():
    """check_rotations(hemisphere=True) refuses d_z clearly below 0 (here -0.1), within atol it accepts."""
    below = views.rotation_from_direction(np.array([1.0, 0.0, -0.1]))
    views.check_rotations(below)  # a proper rotation
    with pytest.raises(ValueError, match="negative z"):
        views.check_rotations(below, hemisphere=True)
    views.check_rotations(views.rotation_from_direction(np.array([1.0, 0.0, -1e-7])), hemisphere=True)


def test_view_sets_default_to_shared():
    """A record without a view-set key (every store before per-species sets) reads as "shared"."""
    assert views.view_sets_of({}) == "shared" == views.DEFAULT_VIEW_SETS
    assert views.view_sets_of({"view_sets": "per_species"}, key="view_sets") == "per_species"
    with pytest.raises(ValueError, match="sets must be one of"):
        views.view_sets_of({"sets": None})
