"""tomodata.ingest_settings / tomodata.ingest and tomodata.align_values / tomodata.align against their
documented rules (module docstrings, docs/pose.md), with the expected values computed here by hand:
orientation strings that are not a plain swap, "above the background" being strict, crop's part
choice, growth, fill value and record, the saturation and grey-air refusals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tomodata.align import align_to_canonical, apply_alignment, bone_mask
from tomodata.align_values import align_values
from tomodata.ingest import cube_specimen
from tomodata.ingest_settings import CROP_GROW, check_density, crop_largest, orient, parse_orientation
from tomodata.phantoms import skull_volume, species_params

# --------------------------------------------------------------------------------------------
# orientation


def test_cyclic_orientation_maps_axes_and_spacing_as_documented():
    """ "x,z,-y" (docs/pose.md's axial CT example, a cyclic permutation): canonical z takes the read x,
    canonical y the read z, canonical x the read y reversed; the spacing follows the same axes."""
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # read (z, y, x) sizes 2, 3, 4
    assert parse_orientation("x,z,-y") == ((2, 0, 1), (False, False, True))
    out, sp = orient(vol, (1.0, 2.0, 3.0), "x,z,-y")
    assert out.shape == (4, 2, 3), out.shape
    want = np.empty((4, 2, 3), vol.dtype)
    for a in range(4):
        for b in range(2):
            for c in range(3):
                want[a, b, c] = vol[b, 2 - c, a]
    assert np.array_equal(out, want), "out[a, b, c] must be vol[b, ny - 1 - c, a] for x,z,-y"
    assert sp == (3.0, 1.0, 2.0), f"spacing must be the read (x, z, y) spacings, got {sp}"


# --------------------------------------------------------------------------------------------
# the density checks


def test_no_voxel_strictly_above_the_background_is_refused():
    """check_density: a scan whose densest voxel equals the background has nothing above it (the rule
    is "densities ≤ background become 0"), and is refused."""
    vol = np.zeros((6, 6, 6), np.float32)
    vol[2:4, 2:4, 2:4] = 0.5
    vol[0, 0, 0] = 0.25
    with pytest.raises(ValueError, match="leaves no voxel with density above the background"):
        check_density(vol, None, 0.5)
    check_density(vol, None, 0.49)


def test_nearly_all_saturated_is_refused_as_constant():
    """≥ 99 % of voxels at density 1 (a window below the data, a few air voxels left) is refused."""
    vol = np.full((20, 20, 20), 200, np.uint8)
    vol[0, 0, :10] = 0  # 10 of 8000 voxels below the window: 99.9 % saturate
    with pytest.raises(ValueError, match="constant density"):
        check_density(vol, (0.0, 100.0))
    vol[:2] = 0  # 10 % air: fine
    check_density(vol, (0.0, 100.0))


def test_grey_air_just_above_the_background_is_refused():
    """Air at 20/255 (0.078) over a background of 0.06 puts every voxel above the background: refused."""
    vol = np.full((10, 10, 10), 20, np.uint8)
    vol[3:7, 3:7, 3:7] = 200
    with pytest.raises(ValueError, match="puts every voxel above the background"):
        check_density(vol, None, 0.06)
    check_density(vol, None, 0.08)


def test_faint_uint8_data_without_a_window_warns_below_a_tenth():
    """Without a window, uint8 data whose densest voxel maps below FAINT_MAX (0.1) warns (nearly blank
    x-rays): 20/255 = 0.078 warns, 30/255 = 0.118 does not."""
    vol = np.zeros((8, 8, 8), np.uint8)
    vol[2:6, 2:6, 2:6] = 20
    with pytest.warns(UserWarning, match="nearly blank"):
        check_density(vol, None)
    vol[2:6, 2:6, 2:6] = 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_density(vol, None)


# --------------------------------------------------------------------------------------------
# crop: largest


def test_crop_support_is_strictly_above_the_background():
    """crop 'largest' counts as support only densities above max(background, 0.1): a table lying
    exactly at the background is no part, so the (smaller) head is the part kept, not the table."""
    vol = np.zeros((20, 20, 20), np.float32)
    vol[3:8, 3:8, 3:8] = 0.9  # head, 125 voxels
    vol[12:19, 2:18, 2:18] = 0.5  # table at exactly the background, 1792 voxels, not touching
    out, rec = crop_largest(vol, None, 0.5)
    assert rec["threshold"] == 0.5 and rec["parts"] == 1, rec
    assert out[5, 5, 5] == pytest.approx(0.9), "the head must be kept"
    assert out[15].max() == 0.0, "the table (at the background) lies outside the kept part"


def test_crop_threshold_is_the_background_when_higher():
    """Above a background of 0.3 a faint bridge (0.2) joins nothing: the table is its own part and
    cleared; the record states the threshold used."""
    vol = np.zeros((20, 20, 20), np.float32)
    vol[2:10, 2:10, 2:10] = 0.9  # head, 512 voxels
    vol[14:17, 2:10, 2:10] = 0.9  # a holder, 192 voxels
    vol[10:14, 5, 5] = 0.2  # faint bridge between them
    out, rec = crop_largest(vol, None, 0.3)
    assert rec["threshold"] == pytest.approx(0.3), rec
    assert rec["parts"] == 2 and out[15].max() == 0.0, f"the holder must be a part of its own and cleared: {rec}"
    assert rec["kept_voxels"] == 512 and rec["cleared_support_voxels"] == 192, rec


def test_crop_grows_the_kept_part_by_crop_grow_voxels():
    """Voxels within CROP_GROW (2) steps of the largest part are kept, farther ones cleared."""
    assert CROP_GROW == 2
    vol = np.zeros((16, 16, 16), np.uint8)
    vol[4:10, 4:10, 4:10] = 200  # head: x 4..9
    vol[7, 7, 11] = 120  # two steps from the head along x: kept
    vol[7, 7, 13] = 120  # four steps: cleared
    out, rec = crop_largest(vol, None)
    assert out[7, 7, 11] == 120, "a voxel 2 steps from the largest part must be kept (grown by CROP_GROW)"
    assert out[7, 7, 13] == 0, "a voxel 4 steps away must be cleared"
    assert rec["grow_voxels"] == 2 and rec["parts"] == 3 and rec["kept_voxels"] == 216, rec
    assert rec["cleared_support_voxels"] == 1, rec


@pytest.mark.parametrize("window", [(-1000.0, 2000.0), (-999.5, 2000.5)])
def test_crop_fills_with_the_value_of_density_zero(window):
    """Cleared voxels of an int16 HU scan get a value the window maps to density 0 (air): for
    -1000,2000 exactly -1000 HU; never a positive density (which would become support again)."""
    vol = np.full((16, 16, 16), -1000, np.int16)
    vol[2:9, 2:9, 2:9] = 1000  # head
    vol[12:14, 2:14, 2:14] = 300  # a table of soft-tissue density, smaller
    out, rec = crop_largest(vol, window)
    lo, hi = window
    cleared = out[12:14, 2:14, 2:14]
    density = np.clip((cleared.astype(np.float64) - lo) / (hi - lo), 0, 1)
    assert np.all(density == 0.0), f"cleared voxels hold {np.unique(cleared)} HU, density {density.max():.3g} > 0"
    if window == (-1000.0, 2000.0):
        assert np.all(cleared == -1000), np.unique(cleared)
    assert out[5, 5, 5] == 1000 and rec["parts"] == 2


def test_crop_fill_outside_the_integer_type_keeps_density_zero():
    """A uint8 scan with a window below 0 (-10,255): density 0 is the value -10, which uint8 cannot
    hold; it wrapped to 246 (density 0.97), so every cleared voxel and the air became support
    (helper-99). The cleared voxels now have density 0, the kept part its values."""
    vol = np.zeros((16, 16, 16), np.uint8)
    vol[2:9, 2:9, 2:9] = 200  # head
    vol[12:14, 2:14, 2:14] = 120  # a table, smaller
    out, rec = crop_largest(vol, (-10.0, 255.0), background=0.05)
    density = np.clip((out.astype(np.float64) + 10.0) / 265.0, 0, 1)
    assert np.all(density[12:14, 2:14, 2:14] == 0.0), np.unique(out[12:14])
    assert np.all(density[15] == 0.0)  # the air beyond the kept part: cleared too, no support
    assert out[5, 5, 5] == 200 and rec["parts"] == 2


def test_the_cube_record_keeps_the_scans_type_after_such_a_crop(tmp_path):
    """The crop above works in float32; the cube's record still names the scan's own type (uint8)."""
    vol = np.zeros((16, 16, 16), np.uint8)
    vol[2:9, 2:9, 2:9] = 200
    vol[12:14, 2:14, 2:14] = 120
    np.save(tmp_path / "s.npy", vol)
    kw = dict(spacing=(1.0, 1.0, 1.0), size=16, window=(-10.0, 255.0), background=0.05, crop="largest")
    _, meta = cube_specimen(tmp_path / "s.npy", **kw)
    assert meta["original_dtype"] == "uint8", meta["original_dtype"]


# --------------------------------------------------------------------------------------------
# align: working values, bone, fill value, output values


def test_align_refuses_a_minimum_of_exactly_minus_500_without_a_window():
    """docs/pose.md: a scan whose minimum is ≤ −500 looks like Hounsfield units and needs a window."""
    vol = np.zeros((6, 6, 6), np.float32)
    vol[0, 0, 0] = -500.0
    vol[3, 3, 3] = 900.0
    with pytest.raises(ValueError, match="Hounsfield"):
        align_values(vol)
    vol[0, 0, 0] = -499.0
    assert align_values(vol)[0] is None  # raw values


def test_align_with_a_background_alone_works_on_the_dtype_densities():
    """A background without a window: densities by the dtype's rule (uint8 /255), those ≤ the
    background set to 0 (docs/pose.md: e.g. cthead-8bit with background 0.15); not the raw values."""
    vol = np.zeros((8, 8, 8), np.uint8)
    vol[2:6, 2:6, 2:6] = 30  # soft tissue 0.118: at or below the background
    vol[3:5, 3:5, 3:5] = 200  # bone
    mu, rec = align_values(vol, None, 0.15)
    assert rec == {"values": "density", "window": None, "background": 0.15, "preset": None}, rec
    assert mu is not None, "a background alone must give densities, not the raw values"
    want = vol.astype(np.float64) / 255.0
    want[want <= 0.15] = 0.0
    np.testing.assert_allclose(mu, want, atol=1e-6)


def test_align_density_at_the_background_is_zero():
    """Densities equal to the background become 0 (the rule is "≤ background"), as in the cube."""
    vol = np.zeros((8, 8, 8), np.float32)
    vol[1:7, 1:7, 1:7] = 0.25
    vol[3:5, 3:5, 3:5] = 0.75
    mu, _ = align_values(vol, "0,1", 0.25)
    assert mu[2, 2, 2] == 0.0, f"a density equal to the background must be 0, got {mu[2, 2, 2]}"
    assert mu[4, 4, 4] == pytest.approx(0.75)


def test_align_hu_head_preset_background_and_record():
    """hu-head (case and blanks ignored) windows −1000…2000 HU with its background −500 HU (1/6):
    foam at −600 HU becomes 0, soft tissue 40 HU keeps 1040/3000; the record names the preset."""
    vol = np.full((10, 10, 10), -1000, np.int16)
    vol[1:9, 1:9, 1:9] = -600
    vol[3:7, 3:7, 3:7] = 40
    vol[4:6, 4:6, 4:6] = 1000
    mu, rec = align_values(vol, " HU-Head ")
    assert rec["preset"] == "hu-head" and rec["window"] == [-1000.0, 2000.0], rec
    assert rec["background"] == pytest.approx(1 / 6), rec
    assert mu[2, 2, 2] == 0.0 and mu[3, 3, 3] == pytest.approx(1040 / 3000, abs=1e-6)


def test_bone_mask_keeps_components_of_at_least_min_component_of_the_largest():
    """bone_mask: voxels above the threshold in components ≥ 0.3 × the largest (125 voxels): one of
    48 voxels (38 %) stays, one of 27 (22 %) goes."""
    vol = np.zeros((20, 20, 20), np.float32)
    vol[1:6, 1:6, 1:6] = 1.0  # 125
    vol[10:14, 10:14, 10:13] = 1.0  # 48
    vol[15:18, 1:4, 15:18] = 1.0  # 27
    m = bone_mask(vol, 0.5)
    assert m[3, 3, 3] and m[11, 11, 11], "the largest part and one of 38 % of it must stay"
    assert not m[16, 2, 16], "a part of 22 % of the largest must be dropped (min_component 0.3)"
    assert int(m.sum()) == 125 + 48


def test_apply_alignment_rounds_integer_output_to_nearest():
    """An integer scan's aligned values are the linear interpolation rounded to the nearest integer:
    identity pose shifted by a quarter voxel along x on a ramp 3·x gives 3·x + 0.75 → 3·x + 1."""
    n = 9
    vol = np.broadcast_to((3 * np.arange(n)).astype(np.uint8), (n, n, n)).copy()
    rec = {
        "rotation_zyx": np.eye(3).tolist(),
        "centre_mm_zyx": [4.0, 4.0, 4.25],  # output voxel j sits at scan x = j - 4 + 4.25
        "output_shape": [n, n, n],
        "output_spacing_zyx": [1.0, 1.0, 1.0],
        "background": 0.0,
    }
    out = apply_alignment(vol, (1.0, 1.0, 1.0), rec)
    assert out.dtype == np.uint8
    got = out[4, 4, : n - 1].tolist()
    assert got == [3 * j + 1 for j in range(n - 1)], f"expected 3j + 0.75 rounded to 3j + 1, got {got}"


def test_align_fill_value_is_the_median_of_the_border():
    """The fill value outside the input (record "background") is the median of the six faces: a
    bright strip on a sixth of the border leaves it at the air's 0."""
    vol = skull_volume(species_params(9), size=40).astype(np.float32)
    vol[:, :, 0] = 0.3  # one face bright
    _, rec = align_to_canonical(vol, (0.5, 0.5, 0.5))
    assert rec["background"] == 0.0, f"the fill value must be the border's median 0, got {rec['background']}"


def test_cube_record_states_the_orientation_and_the_given_settings(tmp_path):
    """cube_specimen's record: the orientation as canonical "x,z,-y" (lower case, the axes of the read
    volume), shape and spacing after it; the ingest settings as given (spacing z,y,x of the file)."""
    vol = np.zeros((12, 10, 8), np.uint8)
    vol[3:9, 2:8, 2:6] = 200
    np.save(tmp_path / "s.npy", vol)
    _, meta = cube_specimen(tmp_path / "s.npy", spacing=(1.0, 2.0, 3.0), size=16, orientation=" X,z,-Y")
    assert meta["orientation"] == "x,z,-y" == meta["ingest"]["orientation"], meta["orientation"]
    assert meta["original_shape"] == [8, 12, 10], meta["original_shape"]
    assert meta["spacing_mm"] == [3.0, 1.0, 2.0], meta["spacing_mm"]
    assert meta["ingest"]["spacing"] == [1.0, 2.0, 3.0], meta["ingest"]


def test_align_support_threshold_is_in_working_units_on_hu_scans():
    """On densities (hu-head) the support threshold is background + 0.35 · (bone − background) in
    density units, the fill value's −1000 HU counting as density 0 (module docstring, step 5); a
    threshold in raw HU (≈ −650) would make the whole scan box the support."""
    dens = skull_volume(species_params(9), size=40)
    hu = np.rint(dens * 3000.0 - 1000.0).astype(np.int16)  # hu-head maps it back to dens
    _, rec = align_to_canonical(hu, (0.5, 0.5, 0.5), window="hu-head")
    assert rec["background"] == -1000.0, rec["background"]
    t_bone = rec["bone_threshold"]
    assert 1 / 6 < t_bone < 1.0, t_bone
    assert rec["support_threshold"] == pytest.approx(0.35 * t_bone, rel=1e-6), (rec["support_threshold"], t_bone)
