"""Alignment against a reference: the candidate rotations, the coarse candidate search by normalised
cross-correlation, and SimpleITK's rigid refinement (steps 3, 4 and 6 of :mod:`tomodata.align`).

SimpleITK uses (x, y, z) order; the matrices here are in (z, y, x) order and conjugated by ``_P``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from .align_values import _background, _bone_otsu, align_values, bone_mask
from .aligned_files import check_volume as _check

__all__ = ["Reference", "prepare_reference", "candidate_rotations"]

_P = np.eye(3)[::-1]  # (z, y, x) <-> (x, y, z)


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


def prepare_reference(
    volume: np.ndarray, spacing_zyx, *, bone_threshold: float | None = None, window=None, background=None
) -> Reference:
    """:class:`Reference` from a canonical ``volume[z, y, x]`` (spacing mm); bone as in step 1, on the
    values of :func:`align_values` (``window``, ``background``: the reference's own settings, e.g.
    ``**intensity_settings(its record)``; none: its raw values)."""
    raw, sp = _check(volume, spacing_zyx)
    mu, intensity = align_values(raw, window, background)
    vol = raw if mu is None else mu
    t = _bone_otsu(vol, intensity) if bone_threshold is None else float(bone_threshold)
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
    to scan p = R^T q + t): NCC and RMS difference (working value units) inside the metric mask
    (``ncc``, ``rms``) and over the whole grid (``ncc_grid``)."""
    f = sitk.BinShrink(ref.fixed, [2, 2, 2])
    inside = sitk.GetArrayFromImage(sitk.BinShrink(sitk.Cast(ref.mask, sitk.sitkFloat32), [2, 2, 2])) > 0
    tr = _transform(rot_zyx, t_zyx)
    m = sitk.GetArrayFromImage(sitk.Resample(moving, f, tr, sitk.sitkLinear, default, sitk.sitkFloat32))
    a = sitk.GetArrayFromImage(f)
    rms = float(np.sqrt(np.mean((a[inside] - m[inside]) ** 2.0)))
    return {"ncc": round(_ncc(a[inside], m[inside]), 5), "rms": round(rms, 4), "ncc_grid": round(_ncc(a, m), 5)}


def _best_candidate(mov_img, c, r0, ref: Reference, default: float) -> tuple[int, list[float]]:
    """Index of the candidate G R0 whose coarse resampling best correlates (NCC) with the reference."""
    size = ref.coarse.shape
    scores = [
        _ncc(ref.coarse, _grid_resample(mov_img, _transform(g @ r0, c), size, ref.h_coarse, default))
        for g in _CANDIDATES
    ]
    return int(np.argmax(scores)), scores


#: Below this masked NCC between the kept pose and the reference the match is called weak (a warning
#: and ``weak_match`` in the record). Measured (2026-12-05): the 51 mouse heads registered to the
#: reference strain 0.235–0.792; human heads aligned to the demo's procedural reference, whose poses
#: came out wrong, -0.046 (``invesalius-cranium``) and 0.095 (``cthead-8bit``). A match above it is
#: no proof: the cranium registered to 56³ procedural skulls reaches 0.24–0.34 in poses as wrong.
WEAK_MATCH_NCC = 0.2


def _with_reference(vol, spacing, img, c, r0, bg, reference, refine, **reg) -> tuple[np.ndarray, dict]:
    """:func:`_pose_with_reference`, warning where the kept pose matches the reference weakly."""
    rot, more = _pose_with_reference(vol, spacing, img, c, r0, bg, reference, refine, **reg)
    if more["ncc_after"] < WEAK_MATCH_NCC:
        more["weak_match"] = True
        warnings.warn(
            f"the aligned pose matches the reference weakly (masked NCC {more['ncc_after']:.3f} < {WEAK_MATCH_NCC}): "
            "the reference may be of another anatomy (e.g. a human head against the demo's procedural "
            "reference) or of other intensity settings; check the pose (tomo align-sheet) before using it",
            stacklevel=3,
        )
    return rot, more


def _pose_with_reference(vol, spacing, img, c, r0, bg, reference, refine, **reg) -> tuple[np.ndarray, dict]:
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
    if not refine:
        more.update(
            ncc_after=before["ncc"], rms_after=before["rms"], ncc_grid_after=before["ncc_grid"], pose_source="candidate"
        )
        return rot, more
    rot_reg, t, metric, stop = _register(ref, img, rot, c, **reg)
    after = _residual(ref, img, rot_reg, t, bg)
    more.update(
        sitk_metric=metric,
        sitk_stop=stop,
        registration={k2: (list(v) if isinstance(v, tuple) else v) for k2, v in reg.items()},
    )
    if after["ncc"] < before["ncc"]:  # worse than where it started: keep the candidate's pose
        msg = (
            f"the rigid registration lowered the NCC with the reference ({before['ncc']:.4f} -> {after['ncc']:.4f}): "
            f"kept the pose before it (moments frame, candidate {k}); check this specimen's pose and its "
            "intensity settings (window, background) against the reference's"
        )
        warnings.warn(msg, stacklevel=4)
        more.update(
            ncc_after=before["ncc"],
            rms_after=before["rms"],
            ncc_grid_after=before["ncc_grid"],
            pose_source="candidate",
            registration_rejected={
                "reason": msg,
                "ncc": after["ncc"],
                "rms": after["rms"],
                "ncc_grid": after["ncc_grid"],
                "rotation_zyx": np.round(rot_reg, 8).tolist(),
            },
        )
        return rot, more
    more.update(
        ncc_after=after["ncc"], rms_after=after["rms"], ncc_grid_after=after["ncc_grid"], pose_source="registration"
    )
    return rot_reg, more
