"""Rigid alignment of a scanned head into the canonical pose (snout +x, dorsal −y, z left–right).

    align_to_canonical(volume, spacing_zyx, *, reference=None, ...) -> (aligned, record)

**Frames.** Scan voxel ``[i_z, i_y, i_x]`` sits at ``p = i · spacing`` mm (order z, y, x). The
canonical frame has its origin at the bone's centre of mass ``c`` (mm, scan frame) and

    q = R (p − c)          R: 3×3 proper rotation (det +1), canonical ← scan, both in (z, y, x) order

(``record["rotation_zyx"]``; equivalently ``q = R p + t`` with ``t = −R c`` = ``record["translation_mm_zyx"]``).
Its rows are the canonical z, y, x axes written in scan coordinates. The output ``aligned[z, y, x]``
is isotropic with voxel ``h`` = the input's finest spacing; output voxel ``j`` sits at
``q = (j − (n − 1)/2) · h`` (so ``c`` is the centre of the output grid; each size ``n`` is odd).

**Values.** Steps 1–5 work on the specimen's *working values* (:func:`align_values`): its raw values
where no intensity setting is given (uint8 micro-CT, 8-bit CT: exactly as before), else the densities
``tomo cube`` makes with the same ``window`` (``"lo,hi"`` or a preset: ``hu-bone``, ``hu-head``) and
``background`` (:mod:`tomodata.ingest_settings`). A scan whose minimum is ≤ :data:`HU_LIKE_MIN`
(−500) without a window looks like Hounsfield units and is refused: Otsu's threshold of raw HU falls
between air and soft tissue. The aligned volume always holds the input's **raw** values (resampled,
dtype kept), so the cube step applies its own window to it unchanged; the record's ``intensity``
says which values the pose was found on.

**Steps.**

1. *Bone*: ``values > bone_threshold`` (default: Otsu's threshold (skimage) of the whole volume on raw
   values: on the mouse scans 37–43 of 255, above the air noise (≈ 8 ± 3) and the soft tissue
   (≈ 15–35); on densities, of the voxels above max(background, 0.01), so that air and its noise
   form no class: 0.49 on hu-head, 0.25 on hu-bone, i.e. about 500 HU), keeping connected components of at least
   ``min_component`` × the largest one (drops specks and loose bits).
2. *Moments*: centre of mass ``c`` and covariance of the bone voxels (mm, unweighted); eigenvectors
   sorted by eigenvalue give the frame ``R0`` (longest axis → x). The 64 corrections ``G``
   of :func:`candidate_rotations` (the 24 signed axis permutations with det +1, then rotations about
   z in 15° steps) give the candidates ``R = G R0``.
3. *Candidate*: first the reference-free heuristic of :func:`_heuristic_frame` (z = the normal of
   the bone's best mirror plane through the long axis; signs of x and y from where the densest
   voxels, the teeth, lie relative to ``c``: anterior (+x) and ventral (+y)). With a reference (a
   canonical volume, e.g. one aligned without reference), all 64 candidates of the
   moments frame are then resampled coarsely and the one with the highest normalised
   cross-correlation (NCC) to the reference wins.
4. *Refinement* (reference only): SimpleITK rigid registration (``VersorRigid3DTransform``, centred on
   the reference's bone centre of mass, initialised from step 3; correlation metric on a random
   ``sampling`` fraction of voxels, regular-step gradient descent, shrink factors ``shrink``).
5. *Resampling*: linear interpolation (SimpleITK) into a grid holding the whole rotated *support*
   (voxels whose Gaussian-smoothed (σ = 1 voxel) value exceeds ``support_threshold``, default
   ``background + 0.35 · (bone_threshold − background)``, in components of ≥ 64 voxels), plus 2 voxels;
   outside the input the value is ``background`` (default: median of the input's border voxels, raw
   units; the support threshold is in working units). The raw volume is resampled: integer data are
   rounded and clipped to their dtype, the dtype is kept (uint8 stays uint8, int16 HU stay HU).
6. *Check* (reference only): where the refined pose correlates worse with the reference than the
   candidate of step 3 (``ncc_after < ncc_before``), the refinement is rejected with a warning: the
   candidate's pose is kept, ``pose_source`` is "candidate" and ``registration_rejected`` holds the
   reason and the refined pose's NCC/RMS (``ncc_after``/``rms_after`` are then the kept pose's).

Only the rotation of the registration is applied: the output stays centred on the specimen's own
bone centre of mass (the cube is re-centred and scaled to the unit ball anyway, so a translation
would change nothing downstream); ``ncc_after``/``rms_after`` are those of the registered rigid
transform, its translation included (RMS in working units). ``pose_source`` names where the applied
rotation comes from: "moments" (no reference), "candidate" (step 3) or "registration" (step 4).

Reliability of the heuristic: see the notes at :func:`_heuristic_frame`.

**Modules.** This one holds the reference-free frame (step 3's heuristic), the output grid (step 5)
and the public calls; :mod:`tomodata.align_values` the working values, bone and moments (steps 1–2);
:mod:`tomodata.align_register` the candidates, the reference and the refinement (steps 3–4, 6);
:mod:`tomodata.aligned_files` the files of aligned volumes. The public names are importable from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation

from .align_register import (  # reference and refinement; re-exported
    _CANDIDATES,
    _P,
    Reference,
    _grid_resample,
    _image,
    _ncc,
    _transform,
    _with_reference,
    candidate_rotations,
    prepare_reference,
)
from .align_values import (  # working values, bone, moments; re-exported
    HU_LIKE_MIN,
    _background,
    _bone_otsu,
    _components,
    _work_value,
    align_values,
    bone_mask,
    intensity_settings,
    principal_frame,
)
from .aligned_files import (  # the files of aligned volumes; re-exported: align's public API
    ALIGNMENT_KEYS,
    SUMMARY_KEYS,
    aligned_name,
    alignment_summary,
    contact_sheet,
    load_aligned,
    read_alignment_record,
    save_aligned,
)
from .aligned_files import check_volume as _check

__all__ = [
    "align_to_canonical",
    "candidate_rotations",
    "principal_frame",
    "bone_mask",
    "prepare_reference",
    "Reference",
    "save_aligned",
    "load_aligned",
    "read_alignment_record",
    "aligned_name",
    "alignment_summary",
    "apply_alignment",
    "contact_sheet",
    "SUMMARY_KEYS",
    "ALIGNMENT_KEYS",
    "HU_LIKE_MIN",
    "align_values",
    "intensity_settings",
]

_SUPPORT_FRACTION = 0.35
_DENSE_QUANTILES = (0.5, 0.8, 0.9)  # see _canonical_signs


# --------------------------------------------------------------------------------------------
# the reference-free frame


def _roll(deg: float) -> np.ndarray:
    """Rotation by ``deg`` about x, (z, y, x) order: z' = cos·z + sin·y, y' = −sin·z + cos·y."""
    co, si = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[co, si, 0.0], [-si, co, 0.0], [0.0, 0.0, 1.0]])


def _mirror_ncc(q: np.ndarray, bin_mm: float) -> float:
    """NCC of the (σ = 1 bin smoothed) histogram of points ``q`` (z, y, x mm) with its mirror in z."""
    r = float(np.abs(q).max()) + bin_mm
    edges = np.arange(0.5 * bin_mm, r + bin_mm, bin_mm)
    edges = np.concatenate([-edges[::-1], edges])  # symmetric about 0
    hist = ndi.gaussian_filter(np.histogramdd(q, bins=[edges] * 3)[0], 1.0)
    return _ncc(hist, hist[::-1])


def _symmetry_roll(q0: np.ndarray, bin_mm: float) -> tuple[float, float]:
    """Roll about x (deg, [0, 180)) that makes z the normal of the best mirror plane; (roll, NCC)."""
    q0 = q0[:: max(1, len(q0) // 40000)]
    score = lambda d: _mirror_ncc(q0 @ _roll(d).T, bin_mm)  # noqa: E731
    coarse = max(np.arange(0.0, 180.0, 6.0), key=score)
    best = max(coarse + np.arange(-5.0, 6.0), key=score)
    return float(best % 180.0), score(best)


def _canonical_signs(q: np.ndarray, vals: np.ndarray) -> tuple[float, float]:
    """(d_x, d_y): where the denser bone lies relative to the centre of mass (frame q, z y x mm).

    d = mean over f in (50 %, 20 %, 10 %) of the centroid of the densest fraction f of the bone
    voxels, per axis in units of the bone's standard deviation. Snout at +x where d_x > 0 (teeth,
    incisors, thick snout and jaw bone; the braincase is thin), ventral at +y where d_y > 0.
    """
    sd = q.std(axis=0)
    d = np.mean([q[vals >= np.quantile(vals, f)].mean(axis=0) for f in _DENSE_QUANTILES], axis=0) / sd
    return float(d[2]), float(d[1])


def _heuristic_frame(vol, mask, spacing, c, r0) -> tuple[np.ndarray, dict]:
    """Rotation (canonical ← scan, z y x) snout +x, dorsal −y from the principal frame ``r0``, no reference.

    * z (left–right): the normal of the bone's best mirror plane containing the long axis (roll about
      x searched in 6° then 1° steps; histogram of the bone voxels, bins σx/10, NCC with its mirror).
    * x and y signs: :func:`_canonical_signs`; z sign: det +1.
    """
    q0 = (np.argwhere(mask) * spacing - c) @ r0.T
    bin_mm = max(float(np.sqrt(np.mean(q0[:, 2] ** 2))) / 10.0, float(spacing.min()))
    roll, mirror = _symmetry_roll(q0, bin_mm)
    r1 = _roll(roll) @ r0
    sx, sy = _canonical_signs(q0 @ _roll(roll).T, vol[mask])
    g = np.diag([1.0, 1.0 if sy >= 0 else -1.0, 1.0 if sx >= 0 else -1.0])
    g[0, 0] = np.linalg.det(g)
    info = {"roll_deg": round(roll, 2), "mirror_ncc": round(mirror, 4), "s_x": round(sx, 4), "s_y": round(sy, 4)}
    return g @ r1, info


def _support_points(vol, spacing, threshold: float) -> np.ndarray:
    """Convex-hull vertices (mm, z y x) of the support: smoothed (σ = 1 voxel) value > threshold, in
    6-connected components of >= 64 voxels (drops isolated noise)."""
    sm = ndi.gaussian_filter(vol.astype(np.float32), 1.0)
    mask = _components(sm > threshold, lambda s: s >= 64)
    if not mask.any():
        mask = sm > threshold
    edge = mask & ~ndi.binary_erosion(mask)
    pts = np.argwhere(edge if edge.any() else mask) * spacing
    try:
        return pts[ConvexHull(pts).vertices]
    except Exception:  # noqa: BLE001  (flat or tiny support: all points are extreme enough)
        return pts


def _grid_size(hull_pts, rot, c, spacing, h: float, pad: int = 2) -> np.ndarray:
    """Odd per-axis sizes (z, y, x) of the output grid centred on c holding the rotated support."""
    ext = np.abs((hull_pts - c) @ rot.T).max(axis=0) + float(np.max(spacing))
    return 2 * (np.ceil(ext / h).astype(int) + pad) + 1


# --------------------------------------------------------------------------------------------
# public API


def align_to_canonical(
    volume: np.ndarray,
    spacing_zyx,
    *,
    reference: tuple[np.ndarray, Any] | Reference | None = None,
    window=None,
    density_background: float | None = None,
    bone_threshold: float | None = None,
    support_threshold: float | None = None,
    background: float | None = None,
    min_component: float = 0.3,
    refine: bool = True,
    shrink: tuple[int, ...] = (4, 2, 1),
    iterations: int = 80,
    sampling: tuple[float, ...] = (0.2, 0.1, 0.05),
    learning_rate: float = 0.3,
    threads: int = 1,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Rotate ``volume[z, y, x]`` (spacing mm) into the canonical pose; see the module docstring.

    ``reference``: ``(canonical_volume[z, y, x], spacing_zyx)`` (its raw values) or a
    :class:`Reference` (:func:`prepare_reference`, which takes the reference's own window) or None.
    ``window`` / ``density_background``: the specimen's intensity settings as ``tomo cube`` takes
    them (``window`` "lo,hi", a preset such as "hu-bone" / "hu-head", or a pair; ``density_background``
    in density units, default the preset's): bone, support and registration then work on those
    densities (:func:`align_values`); with neither, on the raw values, and a scan that looks like
    Hounsfield units is refused. ``bone_threshold`` / ``support_threshold`` are in those working
    units; ``background`` (the fill value outside the input) is in the input's own units: the
    aligned volume always holds the input's raw values.

    Returns ``(aligned, record)``: ``aligned`` has the input's dtype, isotropic voxels of the finest
    input spacing, odd sizes, the bone's centre of mass at its centre; ``record`` is JSON-ready (keys
    documented in the code below). ``threads`` sets SimpleITK's global default thread count for the
    call (restored afterwards). Raises ``ValueError`` for a non-3-D volume, bad spacing, a scan in
    Hounsfield units without a window, or no bone above the threshold.
    """
    t_start = time.perf_counter()
    vol, spacing = _check(volume, spacing_zyx)
    mu, intensity = align_values(vol, window, density_background)
    work = vol if mu is None else mu  # bone, support, registration: raw values or densities
    old_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        bg = _background(vol) if background is None else float(background)  # fill value, input units
        bg_work = bg if mu is None else _work_value(vol, bg, intensity)
        t_bone = _bone_otsu(work, intensity) if bone_threshold is None else float(bone_threshold)
        mask = bone_mask(work, t_bone, min_component)
        c, eig, r0 = principal_frame(mask, spacing)
        img = _image(work, spacing)
        rec: dict[str, Any] = {"reference_used": reference is not None}
        rot, info = _heuristic_frame(work, mask, spacing, c, r0)
        rec["heuristic"] = info
        if reference is None:
            rec.update(
                candidate=0, ncc_before=None, ncc_after=None, rms_before=None, rms_after=None, pose_source="moments"
            )
        else:
            reg = dict(shrink=shrink, iterations=iterations, sampling=sampling, learning_rate=learning_rate, seed=seed)
            rot, more = _with_reference(work, spacing, img, c, rot, bg_work, reference, refine, **reg)
            rec.update(more)
        h = float(spacing.min())
        t_sup = (
            bg_work + _SUPPORT_FRACTION * (t_bone - bg_work) if support_threshold is None else float(support_threshold)
        )
        size = _grid_size(_support_points(work, spacing, t_sup), rot, c, spacing, h)
        rot, c = np.round(rot, 8), np.round(c, 5)  # resample with the values the record keeps: replayable
        out = _grid_resample(img if mu is None else _image(vol, spacing), _transform(rot, c), size, h, bg)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_threads)
    out = _cast_like(out, vol.dtype)
    rec.update(
        _pose_record(rot, c, eig, rec["candidate"]),
        intensity=intensity,
        bone_threshold=t_bone,
        support_threshold=float(t_sup),
        background=bg,
        bone_voxels=int(mask.sum()),
        input_shape=list(vol.shape),
        input_spacing_zyx=spacing.tolist(),
        output_shape=list(out.shape),
        output_spacing_zyx=[h] * 3,
        dtype=str(out.dtype),
        runtime_s=round(time.perf_counter() - t_start, 3),
        threads=int(threads),
        simpleitk_version=sitk.Version_VersionString(),
    )
    return out, rec


def _pose_record(rot: np.ndarray, c: np.ndarray, eig: np.ndarray, candidate: int) -> dict:
    """The record's pose keys: rotation (z, y, x and x, y, z order), translation, centre (mm), Euler
    angles, the candidate's matrix and the moments' eigenvalues (mm², x, y, z)."""
    rot_xyz = _P @ rot @ _P
    return dict(
        convention="q = R (p - c) = R p + t; p = scan voxel index * spacing (mm), q = canonical mm about the "
        "output grid centre; R canonical <- scan; rotation_zyx acts on (z, y, x) vectors, "
        "rotation_xyz on (x, y, z); euler: scipy 'xyz' (extrinsic) angles of rotation_xyz",
        rotation_zyx=np.round(rot, 8).tolist(),
        rotation_xyz=np.round(rot_xyz, 8).tolist(),
        translation_mm_zyx=np.round(-rot @ c, 5).tolist(),
        centre_mm_zyx=np.round(c, 5).tolist(),
        euler_xyz_deg=np.round(Rotation.from_matrix(rot_xyz).as_euler("xyz", degrees=True), 4).tolist(),
        candidate_matrix=np.round(_CANDIDATES[candidate], 6).tolist(),
        eigenvalues_mm2_xyz=np.round(eig, 5).tolist(),
    )


def _cast_like(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype, copy=False)


def apply_alignment(volume: np.ndarray, spacing_zyx, record: Mapping) -> np.ndarray:
    """The aligned volume of :func:`align_to_canonical` made again from its record (or the species
    table's summary of it): the recorded rotation, centre, grid and background, no registration.
    Equal, bit for bit, to the aligned volume the record came from (same SimpleITK)."""
    vol, spacing = _check(volume, spacing_zyx)
    missing = [k for k in ALIGNMENT_KEYS if k not in record]
    if missing:
        raise ValueError(f"the alignment record lacks {missing} (made by an older tomo align: align again)")
    out = _grid_resample(
        _image(vol, spacing),
        _transform(np.asarray(record["rotation_zyx"], float), np.asarray(record["centre_mm_zyx"], float)),
        record["output_shape"],
        float(record["output_spacing_zyx"][0]),
        float(record["background"]),
    )
    return _cast_like(out, vol.dtype)
