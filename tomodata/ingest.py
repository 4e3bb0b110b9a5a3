"""One specimen from its fetched source to its canonical cube: read → reorient → to_cube.

Plain functions over :mod:`tomodata.io` and :mod:`tomodata.resample`; the ``tomo cube`` command and
the workflow's per-specimen job call :func:`cube_specimen` and :func:`save_cube`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import __version__
from .io import read_volume
from .manifest import slice_axis_transpose
from .resample import to_cube


def read_specimen(path, *, spacing=None, slice_axis: str = "z", allow_default_spacing: bool = False):
    """Read a source and reorient it so the slices run along ``slice_axis``.

    Args:
        path: the fetched source (movie, folder, TIFF, DICOM folder, NRRD, NIfTI, npy).
        spacing: (z, y, x) mm of the *reoriented* volume (as a manifest states it), or None to use
            the file's own spacing (then reoriented along with the array).
        slice_axis: the volume axis the source's slices step along: "z", "y" or "x".

    Returns:
        (array[z, y, x], spacing_zyx_mm)
    """
    t = slice_axis_transpose(slice_axis)
    stack_spacing = None
    if spacing is not None:
        sp = tuple(float(s) for s in spacing)
        if len(sp) != 3:
            raise ValueError(f"spacing must be 3 values (z, y, x) in mm, got {spacing!r}")
        stack_spacing = [0.0, 0.0, 0.0]
        for i in range(3):
            stack_spacing[t[i]] = sp[i]
    stack, sp_stack = read_volume(path, spacing=stack_spacing, allow_default_spacing=allow_default_spacing)
    vol = np.ascontiguousarray(np.transpose(stack, t)) if t != (0, 1, 2) else stack
    return vol, tuple(float(sp_stack[t[i]]) for i in range(3))


def cube_specimen(path, *, spacing=None, slice_axis: str = "z", size: int = 128, window=None,
                  background=None, allow_default_spacing: bool = False):
    """The canonical (size³ float32, [0, 1]) cube of a source, and a JSON-ready record of how it
    was made: original shape and spacing (z, y, x, after reorientation), the fit, the value rule,
    and ``specimen_reach``: the normalised radius its voxel centres reach (1 = the unit ball's
    surface; how tightly the cube holds the specimen)."""
    from .fetch import file_sha256, tree_sha256

    vol, sp = read_specimen(path, spacing=spacing, slice_axis=slice_axis, allow_default_spacing=allow_default_spacing)
    cube, fit = to_cube(vol, sp, size=size, window=window, background=background, return_fit=True)
    source_sha256 = tree_sha256(path) if Path(path).is_dir() else file_sha256(path)
    meta = dict(source_path=str(path), source_sha256=source_sha256, original_shape=[int(n) for n in vol.shape], original_dtype=str(vol.dtype),
                spacing_mm=list(sp), slice_axis=slice_axis, size=size,
                window=None if window is None else [float(w) for w in window],
                background=None if background is None else float(background),
                fit=fit.as_dict(), specimen_reach=fit.specimen_radius_mm / fit.rho_mm, code_version=__version__)
    return cube, meta


def save_cube(path, cube: np.ndarray, meta: dict) -> Path:
    """Write ``cube`` and ``meta`` to an .npz (keys ``volume``, ``meta`` as JSON), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"cube files are .npz, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(tmp, volume=np.asarray(cube, dtype=np.float32), meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)
    return path


def load_cube(path) -> tuple[np.ndarray, dict]:
    """Read a cube written by :func:`save_cube`: (volume, meta)."""
    with np.load(path, allow_pickle=False) as z:
        if "volume" not in z or "meta" not in z:
            raise ValueError(f"{path} is not a cube file (needs arrays 'volume' and 'meta')")
        return z["volume"], json.loads(str(z["meta"]))
