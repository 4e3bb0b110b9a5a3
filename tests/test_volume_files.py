"""The project's NIfTI header (tomodata.volume_files.nifti_image), shared by every NIfTI it writes."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from tomodata.aligned_files import save_aligned
from tomodata.volume_files import nifti_image, write_canonical_volume


def _check(img, affine, units, descrip):
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), affine)
    np.testing.assert_allclose(img.get_sform(), affine)
    assert img.header.get_xyzt_units()[0] == units
    assert img.header["descrip"].item() == descrip


def test_nifti_image_both_forms_units_and_ascii_description(tmp_path):
    aff = np.diag([0.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = (1.0, -2.0, 4.0)
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    img = nifti_image(data, aff, descrip="é" + "x" * 100)
    _check(img, aff, "mm", b"?" + b"x" * 78)
    nib.save(img, tmp_path / "a.nii.gz")
    back = nib.load(tmp_path / "a.nii.gz")
    _check(back, aff, "mm", b"?" + b"x" * 78)
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.header.get_zooms(), (0.5, 2.0, 3.0))
    _check(nifti_image(data, aff, unit_mm=False), aff, "unknown", b"")


def test_every_nifti_writer_uses_it(tmp_path):
    v = np.zeros((4, 4, 4), np.float32)
    write_canonical_volume(tmp_path / "c.nii.gz", v, 0.25, description="cube")
    img = nib.load(tmp_path / "c.nii.gz")
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    save_aligned(tmp_path / "a.nii.gz", np.zeros((3, 4, 5), np.uint8), (1.0, 2.0, 3.0))
    img = nib.load(tmp_path / "a.nii.gz")
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 1
    assert img.get_data_dtype() == np.uint8 and img.header.get_zooms() == (3.0, 2.0, 1.0)
