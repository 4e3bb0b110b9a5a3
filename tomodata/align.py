"""Rigid alignment of a scanned head into the canonical pose (snout +x, dorsal −y, z left–right).

    align_to_canonical(volume, spacing_zyx, *, reference=None, ...) -> (aligned, record)

**Frames.** Scan voxel ``[i_z, i_y, i_x]`` sits at ``p = i · spacing`` mm (order z, y, x). The
canonical frame has its origin at the bone's centre of mass ``c`` (mm, scan frame) and

    q = R (p − c)          R: 3×3 proper rotation (det +1), canonical ← scan, both in (z, y, x) order

(``record["rotation_zyx"]``; equivalently ``q = R p + t`` with ``t = −R c`` = ``record["translation_mm_zyx"]``).
Its rows are the canonical z, y, x axes written in scan coordinates. The output ``aligned[z, y, x]``
is isotropic with voxel ``h`` = the input's finest spacing; output voxel ``j`` sits at
``q = (j − (n − 1)/2) · h`` (so ``c`` is the centre of the output grid; each size ``n`` is odd).

**Steps.**

1. *Bone*: ``volume > bone_threshold`` (default: Otsu's threshold of the whole volume, skimage; on the
   mouse scans 37–43 of 255, above the air noise (≈ 8 ± 3) and the soft tissue (≈ 15–35)), keeping
   connected components of at least ``min_component`` × the largest one (drops specks and loose bits).
2. *Moments*: centre of mass ``c`` and covariance of the bone voxels (mm, unweighted); eigenvectors
   sorted by eigenvalue give the frame ``R0`` (longest axis → x). The 24 signed axis permutations
   ``G`` with det +1 (:func:`candidate_rotations`) give the candidates ``R = G R0``.
3. *Candidate*: first the reference-free heuristic of :func:`_heuristic_frame` (z = the normal of
   the bone's best mirror plane through the long axis; signs of x and y from where the densest
   voxels, the teeth, lie relative to ``c``: anterior (+x) and ventral (+y)). With a reference (a
   canonical volume, e.g. one aligned without reference), all 24 signed axis permutations of the
   moments frame are then resampled coarsely and the one with the highest normalised
   cross-correlation (NCC) to the reference wins.
4. *Refinement* (reference only): SimpleITK rigid registration (``VersorRigid3DTransform``, centred on
   the reference's bone centre of mass, initialised from step 3; correlation metric on a random
   ``sampling`` fraction of voxels, regular-step gradient descent, shrink factors ``shrink``).
5. *Resampling*: linear interpolation (SimpleITK) into a grid holding the whole rotated *support*
   (voxels whose Gaussian-smoothed (σ = 1 voxel) value exceeds ``support_threshold``, default
   ``background + 0.35 · (bone_threshold − background)``, in components of ≥ 64 voxels), plus 2 voxels;
   outside the input the value is ``background`` (default: median of the input's border voxels).
   Integer data are rounded and clipped to their dtype: the dtype is kept (uint8 stays uint8).

Only the rotation of the registration is applied: the output stays centred on the specimen's own
bone centre of mass (the cube is re-centred and scaled to the unit ball anyway, so a translation
would change nothing downstream); ``ncc_after``/``rms_after`` are those of the registered rigid
transform, its translation included.

Reliability of the heuristic: see the notes at :func:`_heuristic_frame`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation
from skimage.filters import threshold_otsu

from .aligned_files import (  # the files of aligned volumes; re-exported: align's public API
    SUMMARY_KEYS,
    aligned_name,
    alignment_summary,
    contact_sheet,
    load_aligned,
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
    "aligned_name",
    "alignment_summary",
    "apply_alignment",
    "contact_sheet",
    "SUMMARY_KEYS",
]

_P = np.eye(3)[::-1]  # (z, y, x) <-> (x, y, z)
_SUPPORT_FRACTION = 0.35
_DENSE_QUANTILES = (0.5, 0.8, 0.9)  # see _canonical_signs


# --------------------------------------------------------------------------------------------
# checks, bone, moments


def _otsu(vol: np.ndarray) -> float:
    """Otsu's threshold (skimage, 256 bins) of all voxels; ValueError for a constant volume."""
    lo, hi = float(vol.min()), float(vol.max())
    if lo == hi:
        raise ValueError(f"the volume is constant ({lo:g}): no bone to find")
    return float(threshold_otsu(vol))


def _background(vol: np.ndarray) -> float:
    """Median of the six faces of the array (the air around the specimen)."""
    faces = [vol[0], vol[-1], vol[:, 0], vol[:, -1], vol[:, :, 0], vol[:, :, -1]]
    return float(np.median(np.concatenate([f.ravel() for f in faces])))


def _components(mask: np.ndarray, keep) -> np.ndarray:
    """``mask`` restricted to its (6-connected) components whose voxel count passes ``keep(sizes)``."""
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    ok = keep(sizes)
    ok[0] = False
    return ok[lab]


def bone_mask(vol: np.ndarray, threshold: float, min_component: float = 0.3) -> np.ndarray:
    """Voxels > ``threshold`` in components of >= ``min_component`` × the largest; ValueError if none."""
    mask = vol > threshold
    if not mask.any():
        raise ValueError(f"no voxel above the bone threshold {threshold:g} (max {float(vol.max()):g})")
    return _components(mask, lambda s: s >= min_component * s.max())


def principal_frame(mask: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centre c mm (z, y, x), eigenvalues mm² (x, y, z: descending), R0) of the voxels of ``mask``.

    ``R0`` (3×3, det +1, (z, y, x) order) has rows = unit eigenvectors: row 2 (x) the longest axis,
    row 1 (y) the middle one, row 0 (z) the shortest. Signs are arbitrary (made deterministic).
    """
    pts = np.argwhere(mask) * np.asarray(spacing_zyx, float)
    if len(pts) < 4:
        raise ValueError(f"only {len(pts)} bone voxels: too few for moments")
    c = pts.mean(axis=0)
    w, v = np.linalg.eigh(np.cov((pts - c).T))  # ascending: z, y, x
    r0 = v.T.copy()
    for k in range(3):  # deterministic signs: largest component positive
        if r0[k, np.argmax(np.abs(r0[k]))] < 0:
            r0[k] = -r0[k]
    if np.linalg.det(r0) < 0:
        r0[0] = -r0[0]
    return c, w[::-1].copy(), r0


def candidate_rotations(step_deg: float = 15.0) -> np.ndarray:
    """Candidate corrections G (applied as G R), shape (N, 3, 3), (z, y, x) order, det +1.

    First the 24 signed axis permutations (index 0 = identity), then the rotations about z (the
    mirror-plane normal) in ``step_deg`` steps, with z kept or flipped, that are not among them
    (72 − 8 = 64 in all for 15°): the pitch of the moments frame is its least certain angle.
    """
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            g = np.zeros((3, 3))
            g[np.arange(3), perm] = signs
            if np.linalg.det(g) > 0:
                out.append(g)
    for flip in (np.eye(3), np.diag([-1.0, -1.0, 1.0])):
        for deg in np.arange(0.0, 360.0, step_deg):
            co, si = math.cos(math.radians(deg)), math.sin(math.radians(deg))
            g = np.array([[1.0, 0.0, 0.0], [0.0, co, si], [0.0, -si, co]]) @ flip
            if min(np.abs(g - o).max() for o in out) > 1e-9:
                out.append(g)
    return np.array(out)


_CANDIDATES = candidate_rotations()


# --------------------------------------------------------------------------------------------
# SimpleITK helpers (sitk uses (x, y, z) order: matrices are conjugated by _P)


def _image(vol: np.ndarray, spacing_zyx, origin_zyx=(0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(vol, dtype=np.float32))
    img.SetSpacing([float(s) for s in np.asarray(spacing_zyx)[::-1]])
    img.SetOrigin([float(o) for o in np.asarray(origin_zyx)[::-1]])
    return img


def _transform(rot_zyx: np.ndarray, centre_zyx) -> sitk.AffineTransform:
    """canonical q -> scan p = R^T q + c, as a SimpleITK transform (x, y, z)."""
    t = sitk.AffineTransform(3)
    t.SetMatrix((_P @ rot_zyx.T @ _P).ravel().tolist())
    t.SetTranslation([float(v) for v in np.asarray(centre_zyx)[::-1]])
    return t


def _grid_resample(img: sitk.Image, transform, size_zyx, h: float, default: float) -> np.ndarray:
    """Sample ``img`` (linear) at q = (j − (n−1)/2) h mapped by ``transform``; float32 [z, y, x]."""
    size = [int(n) for n in size_zyx[::-1]]
    origin = [-(n - 1) / 2.0 * h for n in size]
    out = sitk.Resample(
        img,
        size,
        transform,
        sitk.sitkLinear,
        origin,
        [h] * 3,
        np.eye(3).ravel().tolist(),
        float(default),
        sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(out)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    d = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / d) if d > 0 else 0.0


def _shrunk(vol: np.ndarray, spacing: np.ndarray, coarse_mm: float) -> sitk.Image:
    """Block-averaged (sitk.BinShrink, same factor per axis) image with voxels of about ``coarse_mm``."""
    f = max(1, int(round(coarse_mm / float(spacing.min()))))
    img = _image(vol, spacing)
    return sitk.BinShrink(img, [f] * 3) if f > 1 else img


# --------------------------------------------------------------------------------------------
# candidate choice


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


def _best_candidate(mov_img, c, r0, ref: Reference, default: float) -> tuple[int, list[float]]:
    """Index of the candidate G R0 whose coarse resampling best correlates (NCC) with the reference."""
    size = ref.coarse.shape
    scores = [
        _ncc(ref.coarse, _grid_resample(mov_img, _transform(g @ r0, c), size, ref.h_coarse, default))
        for g in _CANDIDATES
    ]
    return int(np.argmax(scores)), scores


# --------------------------------------------------------------------------------------------
# reference and refinement


@dataclasses.dataclass(frozen=True)
class Reference:
    """A canonical volume prepared once for many :func:`align_to_canonical` calls."""

    fixed: sitk.Image  # float32 volume; physical point = q, mm about the bone centre of mass
    mask: sitk.Image  # uint8 bone mask dilated by 5 % of ``radius``: the registration metric's region
    coarse: np.ndarray  # (41, 41, 41) float32, block-averaged, voxel h_coarse, centred on the bone
    h_coarse: float  # mm; 20 h_coarse = radius
    radius: float  # mm; 1.15 × the largest distance of a bone voxel from the centre of mass
    centre_mm_zyx: tuple[float, float, float]
    threshold: float


def prepare_reference(volume: np.ndarray, spacing_zyx, *, bone_threshold: float | None = None) -> Reference:
    """:class:`Reference` from a canonical ``volume[z, y, x]`` (spacing mm); bone as in step 1."""
    vol, sp = _check(volume, spacing_zyx)
    t = _otsu(vol) if bone_threshold is None else float(bone_threshold)
    mask = bone_mask(vol, t)
    pts = np.argwhere(mask) * sp
    c = pts.mean(axis=0)
    radius = 1.15 * float(np.linalg.norm(pts - c, axis=1).max())
    h_c = radius / 20.0
    coarse = _grid_resample(_shrunk(vol, sp, h_c), _transform(np.eye(3), c), (41, 41, 41), h_c, _background(vol))
    grow = max(2, int(round(0.05 * radius / float(sp.min()))))
    fixed = _image(vol, sp, -c)
    m = sitk.GetImageFromArray(ndi.binary_dilation(mask, iterations=grow).astype(np.uint8))
    m.CopyInformation(fixed)
    return Reference(fixed, m, coarse, h_c, radius, (float(c[0]), float(c[1]), float(c[2])), t)


def _register(
    ref: Reference,
    moving: sitk.Image,
    rot_zyx,
    c,
    *,
    shrink,
    iterations: int,
    sampling,
    learning_rate: float,
    seed: int,
    scale: float | None = None,
    pad: float = 0.0,
    default: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Rigid registration reference (q) -> scan (p). Returns (R zyx, T(0) mm zyx, metric, stop reason)."""
    tr = sitk.VersorRigid3DTransform() if scale is None else sitk.Similarity3DTransform()
    tr.SetCenter((0.0, 0.0, 0.0))
    u, _, vt = np.linalg.svd(_P @ np.asarray(rot_zyx).T @ _P)
    tr.SetMatrix((u @ vt).ravel().tolist())
    if scale is not None:
        assert isinstance(tr, sitk.Similarity3DTransform)
        tr.SetScale(float(scale))
    tr.SetTranslation([float(v) for v in np.asarray(c)[::-1]])
    if pad > 0:
        n = [int(math.ceil(pad * k)) for k in moving.GetSize()]
        moving = sitk.ConstantPad(moving, n, n, float(default))
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsCorrelation()
    reg.SetMetricFixedMask(ref.mask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(list(sampling), int(seed) + 1)  # sitk: seed 0 = wall clock
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel([0.5 * (f - 1) for f in shrink])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(tr, inPlace=True)
    reg.Execute(ref.fixed, moving)
    m = np.array(tr.GetMatrix()).reshape(3, 3)
    if isinstance(tr, sitk.Similarity3DTransform):  # scale is not None
        m = m / tr.GetScale()
    return (
        _P @ m.T @ _P,
        np.array(tr.GetTranslation())[::-1],
        float(reg.GetMetricValue()),
        reg.GetOptimizerStopConditionDescription(),
    )


def _residual(ref: Reference, moving: sitk.Image, rot_zyx, t_zyx, default: float) -> dict:
    """Moved scan vs reference on the reference grid block-averaged ×2 (the transform maps reference q
    to scan p = R^T q + t): NCC and RMS difference (input value units) inside the metric mask
    (``ncc``, ``rms``) and over the whole grid (``ncc_grid``)."""
    f = sitk.BinShrink(ref.fixed, [2, 2, 2])
    inside = sitk.GetArrayFromImage(sitk.BinShrink(sitk.Cast(ref.mask, sitk.sitkFloat32), [2, 2, 2])) > 0
    tr = _transform(rot_zyx, t_zyx)
    m = sitk.GetArrayFromImage(sitk.Resample(moving, f, tr, sitk.sitkLinear, default, sitk.sitkFloat32))
    a = sitk.GetArrayFromImage(f)
    rms = float(np.sqrt(np.mean((a[inside] - m[inside]) ** 2.0)))
    return {"ncc": round(_ncc(a[inside], m[inside]), 5), "rms": round(rms, 4), "ncc_grid": round(_ncc(a, m), 5)}


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

    ``reference``: ``(canonical_volume[z, y, x], spacing_zyx)`` or None. Returns ``(aligned, record)``:
    ``aligned`` has the input's dtype, isotropic voxels of the finest input spacing, odd sizes, the
    bone's centre of mass at its centre; ``record`` is JSON-ready (keys documented in the code below).
    ``threads`` sets SimpleITK's global default thread count for the call (restored afterwards).
    Raises ``ValueError`` for a non-3-D volume, bad spacing, or no bone above the threshold.
    """
    t_start = time.perf_counter()
    vol, spacing = _check(volume, spacing_zyx)
    old_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        bg = _background(vol) if background is None else float(background)
        t_bone = _otsu(vol) if bone_threshold is None else float(bone_threshold)
        mask = bone_mask(vol, t_bone, min_component)
        c, eig, r0 = principal_frame(mask, spacing)
        img = _image(vol, spacing)
        rec: dict[str, Any] = {"reference_used": reference is not None}
        rot, info = _heuristic_frame(vol, mask, spacing, c, r0)
        rec["heuristic"] = info
        if reference is None:
            rec.update(candidate=0, ncc_before=None, ncc_after=None, rms_before=None, rms_after=None)
        else:
            reg = dict(shrink=shrink, iterations=iterations, sampling=sampling, learning_rate=learning_rate, seed=seed)
            rot, more = _with_reference(vol, spacing, img, c, rot, bg, reference, refine, **reg)
            rec.update(more)
        h = float(spacing.min())
        t_sup = bg + _SUPPORT_FRACTION * (t_bone - bg) if support_threshold is None else float(support_threshold)
        size = _grid_size(_support_points(vol, spacing, t_sup), rot, c, spacing, h)
        rot, c = np.round(rot, 8), np.round(c, 5)  # resample with the values the record keeps: replayable
        out = _grid_resample(img, _transform(rot, c), size, h, bg)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old_threads)
    out = _cast_like(out, vol.dtype)
    rec.update(
        _pose_record(rot, c, eig, rec["candidate"]),
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


def _with_reference(vol, spacing, img, c, r0, bg, reference, refine, **reg) -> tuple[np.ndarray, dict]:
    """Candidate search against the reference, then (``refine``) SimpleITK rigid refinement."""
    ref = reference if isinstance(reference, Reference) else None
    if ref is None:
        if not (isinstance(reference, (tuple, list)) and len(reference) == 2):
            raise ValueError("reference must be (canonical_volume[z, y, x], spacing_zyx) or a Reference")
        ref = prepare_reference(*reference)
    k, scores = _best_candidate(_shrunk(vol, spacing, ref.h_coarse), c, r0, ref, bg)
    rot = _CANDIDATES[k] @ r0
    before = _residual(ref, img, rot, c, bg)
    more = {
        "candidate": k,
        "candidate_ncc": [round(s, 4) for s in scores],
        "ncc_before": before["ncc"],
        "rms_before": before["rms"],
        "ncc_grid_before": before["ncc_grid"],
        "reference_centre_mm_zyx": list(ref.centre_mm_zyx),
    }
    if refine:
        rot, t, metric, stop = _register(ref, img, rot, c, **reg)
        after = _residual(ref, img, rot, t, bg)
        more.update(
            ncc_after=after["ncc"],
            rms_after=after["rms"],
            ncc_grid_after=after["ncc_grid"],
            sitk_metric=metric,
            sitk_stop=stop,
            registration={k2: (list(v) if isinstance(v, tuple) else v) for k2, v in reg.items()},
        )
    else:
        more.update(ncc_after=before["ncc"], rms_after=before["rms"], ncc_grid_after=before["ncc_grid"])
    return rot, more


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
    missing = [
        k
        for k in ("rotation_zyx", "centre_mm_zyx", "output_shape", "output_spacing_zyx", "background")
        if k not in record
    ]
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
