"""tomodata.io.dicom: the geometry of a DICOM series as read, beyond tests/test_io.py.

Slice order without ImagePositionPatient, which header gives the slice step, the de-shear of a tilted
gantry along both in-plane axes (non-square pixels), its fill value, the tilt and uneven-gap
thresholds, the number of resampled slices and the interpolation. Synthetic series of tiny slices,
made in tmp_path with pydicom.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid
from test_io import _dicom_slice

from tomodata.io import read_volume


def _slice(path: Path, pixels: np.ndarray, *, slope: float = 1.0, intercept: float = 0.0, **kw) -> None:
    """One CT slice (tests/test_io.py's writer) with no rescale and no SliceThickness unless given: ``z``
    None writes no ImagePositionPatient/ImageOrientationPatient (axial: rows along +x (r), columns
    along +y (c), normal +z), else the slice sits at ``z`` mm, shifted by ``shift`` = (mm along c,
    mm along r)."""
    _dicom_slice(path, pixels, slope=slope, intercept=intercept, **{"slice_thickness": None, **kw})


def _series(folder: Path, stack: np.ndarray, zs, *, shifts=None, names=None, **kw) -> Path:
    """Slice k of ``stack`` at zs[k] (InstanceNumber k + 1) shifted by shifts[k], in file names[k]."""
    folder.mkdir()
    uid = generate_uid()
    names = names or [f"s{k:02d}.dcm" for k in range(len(stack))]
    shifts = shifts if shifts is not None else [(0.0, 0.0)] * len(stack)
    for k, (img, z, sh, name) in enumerate(zip(stack, zs, shifts, names)):
        _slice(folder / name, img, instance=k + 1, series_uid=uid, z=z, shift=sh, **kw)
    return folder


def _read(folder: Path) -> tuple[np.ndarray, tuple[float, float, float], list[str]]:
    """read_volume, with the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vol, sp = read_volume(folder)
    return vol, sp, [str(w.message) for w in caught]


def _blob(shape, row: float, col: float, sigma=1.5, peak=1000.0) -> np.ndarray:
    """A Gaussian blob centred at the fractional (row, col), rounded to integers."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    return np.rint(peak * np.exp(-((y - row) ** 2 + (x - col) ** 2) / (2 * sigma**2)))


def _centroid(img: np.ndarray) -> tuple[float, float]:
    y, x = np.mgrid[: img.shape[0], : img.shape[1]]
    w = img - img.min()
    return float((w * y).sum() / w.sum()), float((w * x).sum() / w.sum())


def _tilted_blob_series(folder: Path, zs, shifts, pixel_spacing=(0.75, 0.5), shape=(32, 32)) -> tuple[float, float]:
    """A blob fixed in patient space, seen by slices shifted in-plane by ``shifts`` (mm along c, r);
    returns its (row, col) in the first slice's pixel grid."""
    dr, dc = pixel_spacing
    at_c, at_r = 12.0, 8.0  # mm from the first slice's origin along c and r
    stack = np.stack([_blob(shape, (at_c - b) / dr, (at_r - a) / dc) for b, a in shifts])
    _series(folder, stack, zs, shifts=shifts, pixel_spacing=pixel_spacing)
    return at_c / dr, at_r / dc


def test_series_without_positions_is_ordered_by_instance_number(tmp_path):
    """Without ImagePositionPatient a user would get the slices upside down (z flipped)."""
    values = [100, 200, 300, 400, 500]  # InstanceNumber 1 … 5
    stack = np.stack([np.full((4, 6), v) for v in values])
    names = ["c.dcm", "e.dcm", "a.dcm", "d.dcm", "b.dcm"]  # neither instance order nor its reverse
    folder = _series(tmp_path / "s", stack, [None] * 5, names=names, headers={"SliceThickness": 2.0})
    with pytest.warns(UserWarning, match="slices ordered by InstanceNumber"):
        vol, sp = read_volume(folder)
    assert vol[:, 0, 0].tolist() == values
    assert sp == (2.0, 0.75, 0.5)


def test_spacing_between_slices_wins_over_slice_thickness(tmp_path):
    """Without positions, a user would get the slice thickness as the slice step (overlapping slices squashed)."""
    stack = np.stack([np.full((4, 6), 10 * k) for k in range(4)])
    headers = {"SliceThickness": 2.5, "SpacingBetweenSlices": 1.25}
    folder = _series(tmp_path / "s", stack, [None] * 4, headers=headers)
    with pytest.warns(UserWarning, match="slices ordered by InstanceNumber"):
        _, sp = read_volume(folder)
    assert sp == (1.25, 0.75, 0.5)


def test_shear_along_both_in_plane_axes_with_non_square_pixels(tmp_path):
    """A tilt with a column component, on non-square pixels, would leave a fixed blob drifting across slices."""
    zs = 2.0 * np.arange(5)
    shifts = [(0.3 * z, 0.2 * z) for z in zs]  # mm along c (rows) and along r (columns)
    row, col = _tilted_blob_series(tmp_path / "s", zs, shifts, pixel_spacing=(0.75, 0.5))
    vol, _, msgs = _read(tmp_path / "s")
    for k in range(len(zs)):
        assert _centroid(vol[k]) == pytest.approx((row, col), abs=0.05), k
    assert any("de-sheared (gantry tilt" in m for m in msgs)


def test_desheared_air_stays_air(tmp_path):
    """An all-air tilted CT would get a 0 HU (water) border where the slices were shifted."""
    zs = 2.5 * np.arange(5)
    shifts = [(0.4 * z, 0.3 * z) for z in zs]
    folder = _series(tmp_path / "s", np.zeros((5, 12, 10)), zs, shifts=shifts, intercept=-1024.0)
    vol, _, msgs = _read(folder)
    assert vol.min() == -1024.0 and vol.max() == -1024.0
    assert any("de-sheared (gantry tilt" in m for m in msgs)


def test_small_gantry_tilt_is_corrected(tmp_path):
    """A 4.6° gantry tilt would go unnoticed and the specimen come out sheared."""
    zs = 5.0 * np.arange(6)
    shifts = [(0.08 * z, 0.0) for z in zs]  # tan 4.6° ≈ 0.08: 2 mm (2.7 rows) over 25 mm
    row, col = _tilted_blob_series(tmp_path / "s", zs, shifts)
    vol, _, msgs = _read(tmp_path / "s")
    for k in range(len(zs)):
        assert _centroid(vol[k]) == pytest.approx((row, col), abs=0.05), k
    assert any("de-sheared (gantry tilt" in m for m in msgs)


def test_resampled_uneven_series_keeps_its_last_slice(tmp_path):
    """Float round-down in the slice count would drop the last slice of an uneven series."""
    zs = [0.0, 0.2, 0.3, 0.4]  # median gap 0.1 mm: 0.4 / 0.1 is just under 4 in floating point
    stack = np.stack([np.full((4, 6), 100 + 1000 * z) for z in zs])  # value = 100 + 1000 z
    vol, sp, msgs = _read(_series(tmp_path / "s", stack, zs))
    assert vol.shape == (5, 4, 6) and sp[0] == pytest.approx(0.1)
    np.testing.assert_allclose(vol[:, 0, 0], [100, 200, 300, 400, 500], rtol=1e-5)
    assert any("resampled to 0.1000 mm (5 slices)" in m for m in msgs)


def test_deshear_interpolates_linearly(tmp_path):
    """Nearest-neighbour de-shear would leave a staircase error of up to half a pixel in a smooth ramp."""
    dr, dc = 0.75, 0.5
    zs = 2.0 * np.arange(5)
    shifts = [(0.3 * z, 0.2 * z) for z in zs]  # 0.8 rows and 0.8 columns per slice: fractional
    gy, gx = 100.0, 50.0  # value per mm along c and along r: whole numbers at every pixel of every slice
    shape = (16, 14)
    y, x = np.mgrid[: shape[0], : shape[1]]
    stack = np.stack([1000 + gy * (b + dr * y) + gx * (a + dc * x) for b, a in shifts])
    vol, _, msgs = _read(_series(tmp_path / "s", stack, zs, shifts=shifts, pixel_spacing=(dr, dc)))
    assert any("de-sheared (gantry tilt" in m for m in msgs)
    expect = 1000 + gy * dr * y + gx * dc * x  # the ramp in the first slice's grid
    scale = float(np.ptp(expect))
    for k, (b, a) in enumerate(shifts):  # the interior: rows and columns that had a source pixel
        r0, c0 = int(np.ceil(b / dr)), int(np.ceil(a / dc))
        err = np.abs(vol[k, r0:, c0:] - expect[r0:, c0:]).max()
        assert err < 1e-3 * scale, (k, err)


def test_gap_eight_percent_longer_is_resampled(tmp_path):
    """A gap 8 % longer than the others would be averaged into the slice step, stretching part of the specimen."""
    zs = [0.0, 2.5, 5.0, 7.7, 10.2]  # one 2.7 mm gap among 2.5 mm ones
    stack = np.stack([np.full((4, 6), 100 + 10 * z) for z in zs])
    vol, sp, msgs = _read(_series(tmp_path / "s", stack, zs))
    assert sp[0] == pytest.approx(2.5)  # the median gap, not (10.2 mm / 4) = 2.55 mm
    np.testing.assert_allclose(vol[:, 0, 0], 100 + 10 * 2.5 * np.arange(5), rtol=1e-5)
    assert any("slice gaps 2.500 … 2.700 mm resampled to 2.5000 mm (5 slices)" in m for m in msgs)
