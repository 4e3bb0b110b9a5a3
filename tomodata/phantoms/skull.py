"""Procedural skull volumes: the anatomical recipe, its evaluation on the voxel grid, the fit into
the cube, and the public :func:`skull_volume`, :func:`skull_parts` and :func:`skull_landmarks`.

Volumes are ``vol[z, y, x]`` float32 in [0, 1]; voxel centre ``i`` of ``N`` at ``(2i + 1)/N - 1``;
snout at +x, dorsal at -y (the package docstring has the conventions). The model's anatomical
frame (x anterior, u dorsal = -y, z lateral; units of the skull length L) is mapped to the cube by
:class:`_Fit`. Float32 arithmetic order is part of the output: the demo data are built from these
volumes bit for bit.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..views import cell_centres
from .cranium import _arches, _braincase, _crests, _ears, _foramen, _head, _nasal, _orbits, _snout
from .fields import _FIELDS, _Model
from .jaw import _canines, _cheek_teeth, _incisors, _Jaw, _mandible_half, _Rows, _symphysis
from .params import SpeciesParams, _check_int, _params_key
from .sdf import _F, _smin

FIT_RADIUS = 0.93  # the specimen's bounding ball (normalised cube units)
_FADE_R0, _FADE_R1 = 0.955, 0.975  # safety fade: density is exactly 0 beyond _FADE_R1
PETROUS_DENSITY = 0.90
TEETH_DENSITY = 0.96
_BONE_TEXTURE = 0.06  # relative amplitude of the bone density texture
BONE_MAX = 0.80 * (1.0 + _BONE_TEXTURE)  # highest density of ordinary bone
_JAW_GAP = 0.012  # least gap between mandible and cranium (skull lengths)


def _skull_model(p: SpeciesParams, seed: int) -> _Model:
    """The anatomical model of (params, seed): every part in its fixed order. The order is part of
    the output: the parts draw from one seeded generator in turn (the bone texture's waves first),
    and the ops on one field are smooth-unioned in order (float32)."""
    rng = np.random.default_rng([seed, _params_key(p), 0xB0E])
    m = _Model(p, rng)
    asym = p.asymmetry

    def jit(shape=None):
        return 1.0 + asym * rng.normal(0.0, 1.0, shape)

    hd = _head(p)
    m.landmarks["braincase_centre"] = hd.bc.copy()
    m.wall, shell_sdf = _braincase(m, p, hd, rng)
    _crests(m, p, hd)
    _foramen(m, hd)
    sn = _snout(m, p, hd)
    protect_sdf, m.turb_axis = _nasal(m, p, hd, sn, shell_sdf)
    x_ear, u_ear = _ears(m, p, hd, jit)
    _orbits(m, p, hd, sn, protect_sdf, jit)
    arches = _arches(m, p, hd, sn, x_ear, u_ear, jit)
    rows = _Rows(p, hd, sn)
    jaw = _Jaw(m, p, rows, arches)
    for s in (-1, 1):
        _mandible_half(m, p, hd, rows, jaw, arches[s], s)
    _symphysis(m, rows, jaw)
    for s in (-1, 1):
        _cheek_teeth(m, p, rows, jaw, s, jit)
        _incisors(m, p, sn, rows, jaw, s)
        _canines(m, p, rows, jaw, s)
    return m


# ---------------------------------------------------------------------------------------------
# Evaluation on a grid.


def _span(coord: np.ndarray, lo: float, hi: float) -> slice | None:
    idx = np.nonzero((coord >= lo) & (coord <= hi))[0]
    if idx.size == 0:
        return None
    return slice(int(idx[0]), int(idx[-1]) + 1)


def _eval_fields(model: _Model, xa, ua, za) -> dict[str, np.ndarray]:
    """All fields of ``model`` on the grid with anatomical axes xa (x index), ua (y), za (z)."""
    shape = (za.size, ua.size, xa.size)
    T = _F(model.clamp)
    fields = {name: np.full(shape, T, dtype=_F) for name in _FIELDS}
    for op in model.ops:
        m = (model.clamp + op.k) * op.slack
        sx = _span(xa, op.lo[0] - m, op.hi[0] + m)
        su = _span(ua, op.lo[1] - m, op.hi[1] + m)
        sz = _span(za, op.lo[2] - m, op.hi[2] + m)
        if sx is None or su is None or sz is None:
            continue
        X = xa[sx][None, None, :]
        U = ua[su][None, :, None]
        Z = za[sz][:, None, None]
        d = np.broadcast_to(op.fn(X, U, Z), (Z.shape[0], U.shape[1], X.shape[2])).astype(_F, copy=False)
        sub = fields[op.field][sz, su, sx]
        fields[op.field][sz, su, sx] = _smin(sub, d, _F(op.k)) if op.k > 0 else np.minimum(sub, d)
    return fields


def _cover(sdf: np.ndarray, width: float) -> np.ndarray:
    """Coverage in [0, 1] of the inside of ``sdf``: a smooth step over ``2 * width``."""
    t = np.clip(_F(0.5) - sdf * _F(0.5 / width), 0.0, 1.0)
    return t * t * (_F(3.0) - _F(2.0) * t)


def _combine(model: _Model, fields: dict[str, np.ndarray], xa, ua, za) -> dict[str, np.ndarray]:
    """Signed distances of the tissue boundaries (skull units) from the evaluated fields."""
    p = model.p
    wall = model.wall(xa[None, None, :], ua[None, :, None], za[:, None, None]).astype(_F)
    outer = fields["outer"]
    skull_solid = np.minimum(outer, fields["struts"])
    # the mandible keeps clear of the cranium: a gap of at least _JAW_GAP (skull lengths)
    mandible = np.maximum(fields["mandible"], _F(_JAW_GAP) - skull_solid)
    solid = np.minimum(np.minimum(skull_solid, mandible), fields["teeth"])
    return dict(
        outer=outer,
        inner=outer + wall,
        cavity=fields["cavity"],
        orbit=fields["orbit"],
        struts=fields["struts"],
        mandible=mandible,
        teeth=fields["teeth"],
        petrous=fields["petrous"],
        envelope=solid - _F(p.soft_tissue_thickness),
        turb=fields["turb"],
    )


def _coverages(sdf: dict[str, np.ndarray], w: float) -> dict[str, np.ndarray]:
    """Anti-aliased coverage of each tissue. The cranium is the shell between the outline and its
    inward offset (a difference of coverages, so thin walls keep their mass at any resolution)
    minus openings and orbits, plus the struts (arches, orbit rims)."""
    c = {k: _cover(v, w) for k, v in sdf.items()}
    keep = (_F(1.0) - c["cavity"]) * (_F(1.0) - c["orbit"])
    shell = np.clip(c["outer"] - c["inner"], 0.0, 1.0) * keep
    cranium = np.maximum(shell, c["struts"])
    air = _F(1.0) - (_F(1.0) - c["inner"] * (_F(1.0) - c["orbit"])) * (_F(1.0) - c["cavity"])
    return dict(
        cranium=cranium,
        mandible=c["mandible"],
        teeth=c["teeth"],
        petrous=c["petrous"],
        envelope=c["envelope"],
        cavity=air,
        turb=c["turb"],
    )


class _Fit:
    """Isotropic scale and centre that put the specimen into the ball of radius FIT_RADIUS."""

    N = 56

    def __init__(self, model: _Model):
        lo = np.min([op.lo for op in model.ops], axis=0) - model.clamp
        hi = np.max([op.hi for op in model.ops], axis=0) + model.clamp
        hi[2] = max(hi[2], -lo[2])
        lo[2] = -hi[2]  # a grid symmetric about z = 0
        axes = [np.linspace(lo[i], hi[i], self.N) for i in range(3)]
        cell = float(np.sqrt(sum(((hi[i] - lo[i]) / (self.N - 1)) ** 2 for i in range(3))))
        fields = _eval_fields(model, axes[0], axes[1], axes[2])
        env = _combine(model, fields, *axes)["envelope"]
        zi, ui, xi = np.nonzero(env < 0.5 * cell)
        pts = np.stack([axes[0][xi], axes[1][ui], axes[2][zi]], axis=1)
        self.centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
        self.centre[2] = 0.0  # keep the mid-sagittal plane at z = 0
        radius = float(np.sqrt(((pts - self.centre) ** 2).sum(axis=1)).max()) + 0.5 * cell
        self.scale = FIT_RADIUS / radius  # cube units per skull length

    def to_cube(self, pt) -> np.ndarray:
        """Anatomical point (x, u, z) → normalised cube coordinates (x, y, z)."""
        q = (np.asarray(pt, float) - self.centre) * self.scale
        return np.array([q[0], -q[1], q[2]])

    def axes(self, size: int):
        c = cell_centres(size)
        xa = (c / self.scale + self.centre[0]).astype(_F)
        ua = (-c / self.scale + self.centre[1]).astype(_F)
        za = (c / self.scale + self.centre[2]).astype(_F)
        return xa, ua, za


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise ValueError(f"size must be an int, got {size!r}")
    if size <= 3:
        raise ValueError(f"size must be > 3, got {size}")
    return int(size)


def _prepare(params, size, seed):
    if not isinstance(params, SpeciesParams):
        raise ValueError(f"params must be a SpeciesParams, got {type(params).__name__}")
    size = _check_size(size)
    seed = _check_int("seed", seed)
    model = _skull_model(params, seed)
    return model, _Fit(model), size


def _build(params: SpeciesParams, size: int, seed: int):
    model, fit, size = _prepare(params, size, seed)
    xa, ua, za = fit.axes(size)
    sdf = _combine(model, _eval_fields(model, xa, ua, za), xa, ua, za)
    w = 0.75 * (2.0 / size) / fit.scale  # half width of the anti-aliasing step, in skull units
    return model, fit, (xa, ua, za), _coverages(sdf, w)


def skull_parts(params: SpeciesParams, *, size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Coverage (0–1, float32, ``[z, y, x]``) of each tissue: ``cranium``, ``mandible``, ``teeth``,
    ``petrous``, ``envelope`` (soft tissue outline), ``cavity`` (braincase, nasal, bulla air spaces),
    ``turb`` (nasal turbinate region). Same grid and fit as :func:`skull_volume`."""
    return _build(params, size, seed)[3]


def skull_volume(params: SpeciesParams, *, size: int = 128, seed: int = 0) -> np.ndarray:
    """The density volume of a skull: ``(size, size, size)`` float32 ``vol[z, y, x]`` in [0, 1].

    ``size`` > 3 (int); ``seed`` (int >= 0) drives the bone texture and the small left/right
    asymmetries. Same params, size and seed give bit-identical output. Snout at +x, dorsal at -y
    (module docstring); the specimen lies inside the ball of radius 0.93 (0 beyond 0.975).
    """
    model, fit, (xa, ua, za), cov = _build(params, size, seed)
    p = params
    X, U, Z = xa[None, None, :], ua[None, :, None], za[:, None, None]
    # soft-tissue haze: the envelope minus the air spaces, gently modulated
    haze = cov["envelope"] * (_F(1.0) - cov["cavity"])
    vol = haze * _F(p.soft_tissue_density) * (_F(0.85) + _F(0.15) * np.cos(_F(9.0) * U + _F(0.5)))
    # turbinates: scroll-like sheets inside the nasal cavity
    if p.turbinate_density > 0:
        na, b, h = model.turb_axis
        rad = np.sqrt(((U - na[1]) / h) ** 2 + Z * Z)
        pattern = _F(0.5) + _F(0.5) * np.cos(_F(60.0) * rad + _F(8.0) * X)
        c = cov["turb"]
        vol = vol * (1 - c) + c * pattern * _F(p.turbinate_density)
    # bone with a low-frequency texture (seeded)
    tex = np.zeros((za.size, ua.size, xa.size), _F)
    for k, ph in model.noise:
        tex += np.cos(_F(k[0]) * X + _F(ph[0])) * np.cos(_F(k[1]) * U + _F(ph[1])) * np.cos(_F(k[2]) * Z + _F(ph[2]))
    bone = _F(p.bone_density) * (_F(1.0) + _F(_BONE_TEXTURE / 3.0) * tex)
    for part in ("cranium", "mandible"):
        c = cov[part]
        vol = vol * (1 - c) + c * bone
    c = cov["petrous"]
    vol = vol * (1 - c) + c * _F(PETROUS_DENSITY)
    c = cov["teeth"]
    vol = vol * (1 - c) + c * _F(TEETH_DENSITY)
    # safety fade: nothing beyond radius _FADE_R1
    c1 = cell_centres(size)
    rr = np.sqrt(c1[None, None, :] ** 2 + c1[None, :, None] ** 2 + c1[:, None, None] ** 2)
    fade = np.clip((_FADE_R1 - rr) / (_FADE_R1 - _FADE_R0), 0.0, 1.0).astype(_F)
    vol = np.clip(vol * fade, 0.0, 1.0).astype(_F, copy=False)
    return np.ascontiguousarray(vol)


def skull_landmarks(params: SpeciesParams, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Named anatomical points in normalised cube coordinates ``(x, y, z)`` (as in the volume):
    ``braincase_centre``, ``snout_tip``, ``petrous_left/right``, ``orbit_left/right``,
    ``condyle_left/right``. "left" is +z. Independent of the volume size."""
    model, fit, _ = _prepare(params, 8, seed)
    return {k: fit.to_cube(v) for k, v in model.landmarks.items()}
