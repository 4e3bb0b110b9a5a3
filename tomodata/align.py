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
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import warnings
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
from .ingest_settings import WINDOW_PRESETS, check_density, parse_window, preset_background
from .resample import value_map

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
    "HU_LIKE_MIN",
    "align_values",
    "intensity_settings",
]

_P = np.eye(3)[::-1]  # (z, y, x) <-> (x, y, z)
_SUPPORT_FRACTION = 0.35
_DENSE_QUANTILES = (0.5, 0.8, 0.9)  # see _canonical_signs
#: A scan whose minimum is at or below this, given no window, looks like CT in Hounsfield units (air
#: −1000 HU): align refuses it (Otsu of raw HU separates air from soft tissue, not bone from it).
HU_LIKE_MIN = -500.0
#: On densities, voxels at or below this (or the background) take no part in the bone threshold:
#: air and its noise (σ 10 HU is 0.003 of a 3000 HU window) would otherwise be a class of their own.
DENSITY_FLOOR = 0.01


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


def _density(values: np.ndarray, scale: float, offset: float, floor: float) -> np.ndarray:
    """float32 density clip(v · scale + offset, 0, 1) with every density ≤ ``floor`` set to 0 (the
    value rule of :mod:`tomodata.resample`, as ``tomo cube`` applies it)."""
    mu = np.clip(values.astype(np.float32) * np.float32(scale) + np.float32(offset), 0.0, 1.0)
    if floor > 0.0:
        mu[mu <= floor] = 0.0
    return mu


def intensity_settings(record: Mapping | None) -> dict:
    """``{"window": …, "background": …}`` of an alignment record's ``intensity`` (empty for a record
    made on raw values, or by an older tomo align): the keywords that turn its aligned volume into
    the values it was aligned on (:func:`prepare_reference`, :func:`align_values`)."""
    it = (record or {}).get("intensity") or {}
    if it.get("values") != "density":
        return {}
    return {"window": it.get("window"), "background": it.get("background")}


def align_values(vol: np.ndarray, window=None, background=None) -> tuple[np.ndarray | None, dict]:
    """The values :func:`align_to_canonical` finds bone in and registers: ``(density or None, record)``.

    * No ``window`` and no ``background``: ``None``, i.e. the raw values, exactly as before (uint8
      micro-CT, 8-bit windowed CT, raw CT numbers); but a scan whose minimum is ≤ :data:`HU_LIKE_MIN`
      looks like Hounsfield units and is refused (ValueError naming ``--window hu-bone`` /
      ``hu-head``): Otsu's threshold of raw HU lies between air and soft tissue.
    * Else the density of ``tomo cube`` (:mod:`tomodata.ingest_settings`, the same parsing, checks
      and preset background): ``clip((v − lo)/(hi − lo), 0, 1)`` (without a window the dtype's rule,
      uint8 /255 …), densities ≤ ``background`` set to 0; ``background`` defaults to the preset's
      (hu-head: −500 HU).

    The record (``record["intensity"]``): ``values`` ("raw" or "density"), ``window`` [lo, hi] or
    None, ``background`` (density) or None, ``preset`` (the window's name, if one).
    """
    preset = window.strip().lower() if isinstance(window, str) and window.strip().lower() in WINDOW_PRESETS else None
    if background is None:
        background = preset_background(window)
    win = parse_window(window)
    lo_v = float(np.min(vol))
    if win is None and lo_v <= HU_LIKE_MIN:
        raise ValueError(
            f"the scan's values span {lo_v:g} … {float(np.max(vol)):g}: it looks like CT in Hounsfield units, "
            "and bone cannot be told from soft tissue on raw HU (Otsu's threshold lands between air and "
            "soft tissue); give its window: --window hu-bone (0…2000 HU: bone only) or --window hu-head "
            "(−1000…2000 HU, background −500 HU), or --window lo,hi (tomo align; in the workflow the "
            "manifest column `window` or config data.cube.window, as for the cube)"
        )
    if win is None and background is None:
        return None, {"values": "raw", "window": None, "background": None, "preset": None}
    check_density(vol, win, background)
    scale, offset = value_map(vol, win)
    floor = 0.0 if background is None else float(background)
    rec = {
        "values": "density",
        "window": None if win is None else [float(w) for w in win],
        "background": None if background is None else float(background),
        "preset": preset,
    }
    return _density(vol, scale, offset, floor), rec


def _bone_otsu(work: np.ndarray, intensity: Mapping) -> float:
    """The default bone threshold: Otsu's threshold of all voxels (raw values: unchanged), or, on
    densities, of the voxels above max(background, :data:`DENSITY_FLOOR`), so that air and its noise
    form no class: on hu-head the classes left are soft tissue ≈ 0.33 and bone ≥ 0.45 (threshold
    ≈ 0.49, 470 HU on invesalius-cranium); on hu-bone soft tissue (≈ 0.02) and bone (≈ 0.25)."""
    if intensity.get("values") != "density":
        return _otsu(work)
    floor = max(float(intensity.get("background") or 0.0), DENSITY_FLOOR)
    above = work[work > floor]
    if above.size < 2 or float(above.min()) == float(above.max()):
        return _otsu(work)
    return float(threshold_otsu(above))


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
        warnings.warn(msg, stacklevel=3)
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


def _work_value(vol: np.ndarray, value: float, intensity: Mapping) -> float:
    """The density (:func:`align_values`' rule for ``vol``) of one raw ``value``: the fill value
    outside the input, in the units bone and registration work in."""
    scale, offset = value_map(vol, intensity["window"])
    return float(_density(np.array([value]), scale, offset, float(intensity["background"] or 0.0))[0])


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
