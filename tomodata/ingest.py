"""One specimen from its fetched source to its canonical cube: read → reorient → check → crop → to_cube.

Plain functions over :mod:`tomodata.io` and :mod:`tomodata.resample`; the ``tomo cube`` command and
the workflow's per-specimen job call :func:`cube_specimen` and :func:`save_cube`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from . import __version__
from .fetch import source_sha256 as fetch_source_sha256
from .files import atomic_write, load_npz
from .ingest_settings import (
    CROPS,
    check_density,
    crop_largest,
    orient,
    parse_orientation,
    parse_window,
    preset_background,
)
from .io import check_spacing, read_volume
from .manifest import slice_axis_transpose
from .resample import DENSE_FRACTION, dense_reach, to_cube


def read_specimen(path, *, spacing=None, slice_axis: str = "z", allow_default_spacing: bool = False, orientation=None):
    """Read a source and reorient it: slices along ``slice_axis``, then ``orientation``.

    Args:
        path: the fetched source (movie, folder, TIFF, DICOM folder, NRRD, NIfTI, npy).
        spacing: (z, y, x) mm of the volume after ``slice_axis`` (as a manifest states it), or None
            to use the file's own spacing (then reoriented along with the array). Where the file
            has a spacing too, a given spacing in the reverse (x, y, z) order is an error.
        slice_axis: the volume axis the source's slices step along: "z", "y" or "x".
        orientation: axis order and flips applied last (:func:`tomodata.ingest_settings.orient`).

    Returns:
        (array[z, y, x], spacing_zyx_mm)
    """
    t = slice_axis_transpose(slice_axis)
    if spacing is None:
        # the file's own spacing, or the reader's error (or warning) where it has none
        stack, sp_stack = read_volume(path, allow_default_spacing=allow_default_spacing)
    else:
        sp = tuple(float(s) for s in spacing)
        if len(sp) != 3:
            raise ValueError(f"spacing must be 3 values (z, y, x) in mm, got {spacing!r}")
        sp = check_spacing(sp)
        per_axis = [0.0, 0.0, 0.0]
        for i in range(3):
            per_axis[t[i]] = sp[i]
        sp_stack = (per_axis[0], per_axis[1], per_axis[2])
        stack, file_sp, regridded = _read_with_file_spacing(path)
        _check_given_spacing(path, sp_stack, file_sp, regridded)
    vol = np.ascontiguousarray(np.transpose(stack, t)) if t != (0, 1, 2) else stack
    return orient(vol, tuple(float(sp_stack[t[i]]) for i in range(3)), orientation)


def _read_with_file_spacing(path):
    """(stack, the file's own (z, y, x) spacing or None where the format has none, whether the reader
    resampled the scan onto its own grid: a DICOM series whose geometry it corrected)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stack, sp = read_volume(path, allow_default_spacing=True)
    defaulted = any("gives no voxel spacing" in str(w.message) for w in caught)
    regridded = any("clinical geometry corrected" in str(w.message) for w in caught)
    for w in caught:
        if "gives no voxel spacing" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return stack, (None if defaulted else tuple(float(v) for v in sp)), regridded


def _check_given_spacing(path, given_zyx, file_zyx, regridded: bool = False) -> None:
    """A given spacing against the file's own: refused where it is the file's read backwards (x, y, z
    order) or where the reader resampled the scan (its grid is the file's spacing); a warning where
    it differs otherwise (the specimen's proportions change by their ratio)."""
    if file_zyx is None:
        return
    close = lambda a, b: all(abs(x - y) <= 1e-3 * max(abs(x), abs(y)) for x, y in zip(a, b))  # noqa: E731
    g = ",".join(f"{v:g}" for v in given_zyx)
    f = ",".join(f"{v:g}" for v in file_zyx)
    if close(given_zyx, file_zyx):
        return
    if close(given_zyx, tuple(reversed(file_zyx))):
        raise ValueError(
            f"{path}: spacing_mm {g} is the file's own spacing in x,y,z order; spacing is z,y,x "
            f"(slices, rows, columns) and the file says z,y,x = {f}: write {f} or leave spacing_mm "
            "empty to use the file's"
        )
    if regridded:
        raise ValueError(
            f"{path}: the series was resampled onto a regular grid of {f} mm (z,y,x) to correct its "
            f"geometry; spacing_mm {g} would not match that grid: leave spacing_mm empty"
        )
    warnings.warn(
        f"{path}: spacing_mm {g} overrides the file's own {f} (z,y,x): the specimen's proportions change "
        "by their ratio; leave spacing_mm empty to use the file's",
        UserWarning,
        stacklevel=3,
    )


#: dense_reach below this (the support itself reaches about 0.93): warn that faint material sets the scale
DENSE_WARN = 0.8
#: ... if it is also below this fraction of the support's reach: 0.8 / 0.93 ≈ 0.86, the rule at the default
#: size 128, where the support reaches about 0.93. In smaller cubes the margin (one output voxel diagonal)
#: and the resampling stencil take a larger share of the ball, so the support reaches less (about 0.72 at
#: size 32, 0.45 at 16) and so does the denser part of the same scan: their ratio carries over (cthead with
#: its scanner table: 0.79–0.81 at sizes 16–128), DENSE_WARN alone does not (it fired on every small cube).
#: A specimen without faint material has a ratio near 1 or above (the stencil spreads its dense edge out;
#: ≥ 0.96 for solid, hollow and graded synthetic shapes at sizes 12–128).
DENSE_RATIO = DENSE_WARN / 0.93


def cube_specimen(
    path,
    *,
    spacing=None,
    slice_axis: str = "z",
    size: int = 128,
    window=None,
    background=None,
    allow_default_spacing: bool = False,
    orientation=None,
    crop: str = "none",
):
    """The canonical (size³ float32, [0, 1]) cube of a source, and a JSON-ready record of how it
    was made: every ingest setting (window as numbers, background, slice_axis, orientation, crop),
    original shape and spacing (z, y, x, after reorientation), the fit, ``specimen_reach``: the
    normalised radius its voxel centres reach (1 = the unit ball's surface), and ``dense_reach``
    (:func:`~tomodata.resample.dense_reach`): the same for its denser part; where that is below
    :data:`DENSE_WARN` and below :data:`DENSE_RATIO` of ``specimen_reach``, faint material sets the
    scale: a warning (kept in ``read_notes``) says which setting to change. ``background`` defaults to
    the window preset's own (:func:`~tomodata.ingest_settings.preset_background`).

    ``window`` may be "lo,hi", a preset name or a pair (:mod:`tomodata.ingest_settings`); a window
    that makes the scan constant is a ValueError naming the setting."""
    if background is None:
        background = preset_background(window)  # hu-head: −500 HU
    window = parse_window(window)
    crop = crop or "none"
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    with warnings.catch_warnings(record=True) as caught:  # kept in the record (e.g. a de-sheared DICOM)
        warnings.simplefilter("always")
        failure = None
        try:
            vol, sp = read_specimen(
                path,
                spacing=spacing,
                slice_axis=slice_axis,
                allow_default_spacing=allow_default_spacing,
                orientation=orientation,
            )
            check_density(vol, window, background)
        except Exception as e:  # noqa: BLE001 - raised again below, once the warnings are shown
            failure = e
    for w in caught:  # shown also where the scan is refused (e.g. "no voxel spacing" before "constant")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if failure is not None:
        raise failure
    crop_record, original_dtype = None, str(vol.dtype)  # the scan's type (a crop may make it float32)
    if crop == "largest":
        vol, crop_record = crop_largest(vol, window, background)
    cube, fit = to_cube(vol, sp, size=size, window=window, background=background, return_fit=True)
    reach, dense = fit.specimen_radius_mm / fit.rho_mm, dense_reach(cube)
    _warn_if_faint(path, fit, reach, dense, caught)
    source_sha256 = fetch_source_sha256(path)  # a folder, a file, or a detached .nhdr with its data files
    meta = dict(
        source_path=str(path),
        source_sha256=source_sha256,
        original_shape=[int(n) for n in vol.shape],
        original_dtype=original_dtype,
        spacing_mm=list(sp),
        slice_axis=slice_axis or "z",
        orientation=",".join(f"{'-' if f else ''}{'zyx'[a]}" for a, f in zip(*parse_orientation(orientation))),
        crop=crop,
        crop_record=crop_record,
        size=size,
        allow_default_spacing=bool(allow_default_spacing),
        window=None if window is None else [float(w) for w in window],
        background=None if background is None else float(background),
        fit=fit.as_dict(),
        specimen_reach=reach,
        dense_reach=dense,
        code_version=__version__,
        read_notes=[str(w.message) for w in caught],
    )
    # the settings as given (tomo cube's options): what an exported recipe needs to make this cube again
    meta["ingest"] = dict(
        size=size,
        spacing=None if spacing is None else [float(v) for v in spacing],
        slice_axis=slice_axis or "z",
        orientation=meta["orientation"],
        window=meta["window"],
        background=meta["background"],
        crop=crop,
        allow_default_spacing=bool(allow_default_spacing),
    )
    return cube, meta


def _warn_if_faint(path, fit, reach: float, dense: float, caught: list) -> None:
    """Warn (and keep the warning in ``caught``, the record's ``read_notes``) when the specimen's dense
    part reaches less than :data:`DENSE_WARN` of the ball and less than :data:`DENSE_RATIO` of the
    support's ``reach``: faint material then sets the scale. (``dense < DENSE_WARN`` alone fired on
    every small cube, whose support itself reaches less than 0.8: size 32 about 0.72.)"""
    if dense < DENSE_WARN and dense < DENSE_RATIO * reach:
        msg = (
            f"{path}: faint material sets this cube's scale: the support (density > {fit.background or 0:g}) "
            f"reaches {reach:.2f} of the ball but the specimen's denser part (≥ {DENSE_FRACTION:g} of its "
            f"99.9th percentile) only {dense:.2f}; raise `background` (a table, pillow or noise floor) or "
            "set `crop: largest` (a separate table or holder) (manifest columns background/crop, "
            "config data.cube.*, tomo cube --background/--crop)"
        )
        warnings.warn(msg, UserWarning, stacklevel=3)
        caught.append(warnings.WarningMessage(msg, UserWarning, __file__, 0))


def save_cube(path, cube: np.ndarray, meta: dict) -> Path:
    """Write ``cube`` and ``meta`` to an .npz (keys ``volume``, ``meta`` as JSON), atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"cube files are .npz, got {path.name}")
    return atomic_write(
        path,
        lambda tmp: np.savez_compressed(
            tmp, volume=np.asarray(cube, dtype=np.float32), meta=np.array(json.dumps(meta))
        ),
    )


def load_cube(path) -> tuple[np.ndarray, dict]:
    """Read a cube written by :func:`save_cube`: (volume, meta). ValueError naming the path where the
    file is no such cube: a plain .npy array, an .npz without ``volume`` and ``meta``, an empty,
    damaged or text file (a missing file stays FileNotFoundError)."""
    what = "a cube file (.npz written by tomo cube)"
    z = load_npz(path, what)
    if "volume" not in z or "meta" not in z:
        raise ValueError(f"{path} is not {what}: it holds arrays {list(z)}, not 'volume' and 'meta'")
    try:
        return z["volume"], json.loads(str(z["meta"]))
    except ValueError as exc:  # meta that is not JSON
        raise ValueError(f"{path} is not {what}: cannot read it ({type(exc).__name__}: {exc})") from None
