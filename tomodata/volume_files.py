"""A species' canonical volume as a standard file: NIfTI-1 (nibabel) or NRRD (pynrrd), oriented so that
3D Slicer, ITK-SNAP or any RAS viewer shows the specimen upright with the right spacing.

The cube ``vol[z, y, x]`` is in the canonical pose (docs/pose.md): ``x`` grows towards the snout
(anterior), ``y`` towards the underside (inferior), ``z`` across (left–right; the dataset mirrors every
view, so handedness carries no meaning). In patient/world RAS coordinates (mm) the file axes are

    i (fastest, the cube's x) → +A,   j (the cube's y) → −S (inferior),   k (the cube's z) → −R (left)

(a proper rotation: determinant +1), each step one voxel: ``voxel_mm`` where ingest recorded the
specimen's scale (the species entry's ``fit.voxel_mm``), else 1 (NIfTI units "unknown", NRRD without
``space units``). The cube's centre is at the world origin. Values are float32 linear density in [0, 1].
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

__all__ = ["VOLUME_FORMATS", "canonical_affine", "nifti_image", "stable_nrrd_header", "write_canonical_volume"]

#: format name → file suffix
VOLUME_FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd"}
_DIRECTIONS = np.array(
    [
        [0.0, 0.0, -1.0],  # R: the k axis (cube z) points left
        [1.0, 0.0, 0.0],  # A: the i axis (cube x) points anterior
        [0.0, -1.0, 0.0],
    ]
)  # S: the j axis (cube y) points inferior


def nifti_image(
    data_xyz: np.ndarray, affine: np.ndarray, *, unit_mm: bool = True, descrip: str = ""
) -> nib.Nifti1Image:
    """The project's NIfTI-1 image of ``data_xyz`` (nibabel's (x, y, z) order): qform and sform both
    ``affine`` ((4, 4) voxel → mm, code 1 "scanner": viewers differ in which one they read), units mm
    (else "unknown": pixels) and ``descrip`` (ASCII, cut to NIfTI's 79 characters)."""
    img = nib.Nifti1Image(data_xyz, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm" if unit_mm else "unknown")
    img.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    return img


def stable_nrrd_header(path) -> None:
    """Make a pynrrd file byte-reproducible: pynrrd writes the wall-clock time into a comment line
    (``# on YYYY-MM-DD HH:MM:SS(GMT).``); it is overwritten in place with a fixed time of the same length."""
    with open(path, "r+b") as fh:
        head = fh.read(512)
        m = re.search(rb"\n# on (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\(GMT\)", head)
        if m:
            fh.seek(m.start(1))
            fh.write(b"1970-01-01 00:00:00")


def canonical_affine(size: int, voxel_mm: float | None) -> np.ndarray:
    """(4, 4) voxel (i, j, k) = (x, y, z) → RAS mm affine of a ``size``³ cube, centred at the origin."""
    h = float(voxel_mm) if voxel_mm else 1.0
    a = np.eye(4)
    a[:3, :3] = _DIRECTIONS * h
    a[:3, 3] = -a[:3, :3] @ np.full(3, (size - 1) / 2.0)
    return a


def write_canonical_volume(path, volume, voxel_mm: float | None, *, description: str = "") -> Path:
    """Write a (V, V, V) ``vol[z, y, x]`` to ``path`` (suffix ``.nii``, ``.nii.gz`` or ``.nrrd``) with
    :func:`canonical_affine`; returns the path. ValueError for another suffix or a non-cubic array."""
    p = Path(path)
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim != 3 or len(set(v.shape)) != 1:
        raise ValueError(f"a canonical volume is (V, V, V), got shape {v.shape}")
    aff = canonical_affine(v.shape[0], voxel_mm)
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        data = np.ascontiguousarray(v.transpose(2, 1, 0))  # (i, j, k) = (x, y, z)
        nib.save(nifti_image(data, aff, unit_mm=bool(voxel_mm), descrip=description), str(p))
    elif name.endswith(".nrrd"):
        header = {
            "space": "right-anterior-superior",
            "space directions": aff[:3, :3].T,
            "space origin": aff[:3, 3],
            "kinds": ["domain"] * 3,
            "encoding": "gzip",
            "labels": ["x (anterior)", "y (inferior)", "z (left)"],
            "content": description or "density",
            **({"space units": ["mm"] * 3} if voxel_mm else {}),
        }
        nrrd.write(str(p), np.ascontiguousarray(v), header, index_order="C")  # C order: x fastest, as (i, j, k)
        stable_nrrd_header(p)
    else:
        raise ValueError(f"{p}: the suffix must be .nii, .nii.gz or .nrrd")
    return p
