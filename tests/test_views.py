import hashlib

import numpy as np
import pytest

import tomodata.views as views
from tomodata.views import (
    VIEW_SCHEME,
    check_rotations,
    hemisphere_views,
    rotation_from_direction,
    sample_to_view,
    view_to_sample,
)


@pytest.mark.parametrize("n", [1, 2, 7, 1332])
def test_rotations_are_proper_and_on_hemisphere(n):
    r = hemisphere_views(n, seed=3)
    assert r.shape == (n, 3, 3) and r.dtype == np.float64
    np.testing.assert_allclose(np.einsum("nji,njk->nik", r, r), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    assert np.all(r[:, 2, 2] > 0)
    # u x v = d (right-handed camera frame)
    np.testing.assert_allclose(np.cross(r[:, :, 0], r[:, :, 1]), r[:, :, 2], atol=1e-12)
    check_rotations(r, hemisphere=True)


def test_reproducible_and_seeded():
    a = hemisphere_views(500, seed=0)
    assert np.array_equal(a, hemisphere_views(500, seed=0))
    assert not np.allclose(a, hemisphere_views(500, seed=1))


def test_no_repeated_directions_and_even_spacing():
    n = 1332
    d = hemisphere_views(n, seed=0)[:, :, 2]
    cos = d @ d.T
    np.fill_diagonal(cos, -1.0)
    min_angle = np.arccos(np.clip(cos.max(), -1, 1))
    # a hemisphere of area 2π shared by n points: typical spacing sqrt(2π/n) rad
    spacing = np.sqrt(2 * np.pi / n)
    assert min_angle > 0.3 * spacing


def test_area_uniform():
    # area on the sphere is uniform in z, and azimuth is uniform: compare with counts
    n = 4000
    d = hemisphere_views(n, seed=5)[:, :, 2]
    z_counts = np.histogram(d[:, 2], bins=10, range=(0, 1))[0]
    assert np.all(np.abs(z_counts - n / 10) <= 2), z_counts  # lattice: equal bands up to jitter
    phi = np.arctan2(d[:, 1], d[:, 0])
    phi_counts = np.histogram(phi, bins=8, range=(-np.pi, np.pi))[0]
    assert np.all(np.abs(phi_counts - n / 8) < 0.05 * n / 8), phi_counts
    # equal-area cells: the caps above z = 0.5 and below hold half each
    assert abs((d[:, 2] > 0.5).sum() - n / 2) <= 1


def test_rotation_from_direction_pole_and_equator():
    r = rotation_from_direction(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(r[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(r[1][:, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0)


def test_sample_index_map():
    assert sample_to_view(0, 3) == (0, False)
    assert sample_to_view(5, 3) == (2, True)
    v, m = sample_to_view(np.arange(6), 3)
    assert v.tolist() == [0, 0, 1, 1, 2, 2] and m.tolist() == [False, True] * 3
    assert view_to_sample(2, True) == 5
    assert np.array_equal(view_to_sample(v, m), np.arange(6))
    with pytest.raises(ValueError, match="out of range"):
        sample_to_view(6, 3)
    with pytest.raises(ValueError, match="integers"):
        sample_to_view(1.5, 3)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_bad_view_counts(bad):
    with pytest.raises(ValueError, match="n must"):
        hemisphere_views(bad)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        hemisphere_views(4, seed=-1)


def test_check_rotations_rejects_bad_matrices():
    good = hemisphere_views(3)
    with pytest.raises(ValueError, match="shape"):
        check_rotations(np.zeros((3, 3, 2)))
    with pytest.raises(ValueError, match="orthonormal"):
        check_rotations(good * 1.1)
    refl = good.copy()
    refl[1, :, 0] *= -1
    with pytest.raises(ValueError, match="rotation 1 .*reflection"):
        check_rotations(refl)
    nan = good.copy()
    nan[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="rotation 2 has NaN"):
        check_rotations(nan)
    down = rotation_from_direction(np.array([0.0, 0.0, -1.0]))
    check_rotations(down)  # a valid rotation ...
    with pytest.raises(ValueError, match="negative z"):
        check_rotations(down, hemisphere=True)  # ... but not a hemisphere view
    with pytest.raises(ValueError, match="empty"):
        check_rotations(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="numeric"):
        check_rotations(np.array([["a"] * 3] * 3))


def test_scheme_name_is_documented():
    assert VIEW_SCHEME in views.__doc__


def test_per_species_view_sets_follow_the_documented_seed():
    """species_views: shared = hemisphere_views(n, seed); per_species = hemisphere_views with the seed
    SPECIES_SEED_RECIPE states (sha256 of "seed:name", first 8 bytes little-endian), which depends on the
    name and the store's seed only; every species' views stay on the hemisphere."""
    assert np.array_equal(views.species_views(40, seed=3, name="a"), views.hemisphere_views(40, seed=3))
    want = int.from_bytes(hashlib.sha256(b"3:a").digest()[:8], "little")
    assert views.species_view_seed(3, "a") == want and "sha256" in views.SPECIES_SEED_RECIPE
    a = views.species_views(40, seed=3, name="a", view_sets="per_species")
    assert np.array_equal(a, views.hemisphere_views(40, seed=want))
    assert np.array_equal(a, views.species_views(40, seed=3, name="a", view_sets="per_species"))
    assert not np.allclose(a, views.species_views(40, seed=3, name="b", view_sets="per_species"))
    assert not np.allclose(a, views.species_views(40, seed=4, name="a", view_sets="per_species"))
    views.check_rotations(a, hemisphere=True)
    with pytest.raises(ValueError, match="view_sets must be one of"):
        views.species_views(4, seed=0, name="a", view_sets="each")
    with pytest.raises(ValueError, match="species name"):
        views.species_view_seed(0, "")
