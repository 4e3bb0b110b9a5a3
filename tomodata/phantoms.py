"""Procedural mammal-skull density volumes: the project's embedded demo and test data.

A species is a :class:`SpeciesParams` vector of proportions; :func:`skull_volume` turns one into a
density volume built from signed distance functions (ellipsoids, tapered capsules, torus arcs, flat
plates, smooth unions, shells and subtractions) evaluated with numpy on the voxel grid (each primitive only in
its bounding box; a 128³ volume takes about 1 s on one CPU core).

Anatomy: a cranium that is a bony shell of varying thickness around a hollow braincase, a sagittal
and a nuchal crest, foramen magnum and occipital condyles; a snout with an open nasal cavity holding
low-density turbinate scrolls, and a frontal sinus; orbits (sockets opening sideways to forwards)
with a bony rim and a postorbital bar of varying closure; zygomatic arches flaring out on both
sides; petrous bones and hollow tympanic bullae; a two-part mandible (body, ramus, coronoid process,
condyle under the jaw joint, symphysis) kept clear of the cranium by a small gap; upper and lower
cheek teeth with roots, incisors (small, or one big curved rodent incisor) and canines; a soft-tissue
haze around it all.

Conventions (docs/geometry.md):

* Volume ``vol[z, y, x]``, float32, linear density in [0, 1] (0 = air). Voxel centre ``i`` of ``N``
  sits at the normalised coordinate ``(2i + 1)/N - 1``; the cube spans [-1, 1]³ in (x, y, z).
* Orientation: the skull's long axis is x with the **snout at +x** (occiput at -x); **dorsal (top of
  the head) is -y**, so an image ``vol.mean(axis=0)`` (rows = y, columns = x) shows the skull upright
  in side view, snout to the right; z is left-right, the skull is bilaterally symmetric about the
  plane z = 0 apart from small seeded asymmetries.
* Fit: like ``to_cube`` for scanned specimens, each specimen is scaled isotropically and centred (its
  bounding box in x and y; its mid-sagittal plane at z = 0) so that the whole specimen, soft tissue
  included, lies in the ball of radius 0.93 (plus the anti-aliasing fringe); every voxel whose centre
  lies at radius > 0.975 is exactly 0. The fit does not depend on ``size``.
* Densities: soft-tissue haze 0–0.15 (``species_params`` draws 0.03–0.07, below the evaluation's
  iso-value 0.1), bone 0.45–0.80 (± 6 % texture), petrous bone 0.90, teeth 0.96.
  Edges are anti-aliased with a smooth step about 1.5 voxels wide (band-limited, no hard thresholds).

Lengths inside the model are in units of the skull length L (occiput to snout tip ≈ 1); the physical
length ``skull_length_mm`` is metadata (it gives the voxel spacing of the normalised volume).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "SpeciesParams",
    "PARAM_RANGES",
    "species_params",
    "specimen_params",
    "skull_volume",
    "skull_parts",
    "skull_landmarks",
    "make_species_table",
    "FIT_RADIUS",
    "BONE_MAX",
    "PETROUS_DENSITY",
    "TEETH_DENSITY",
]

FIT_RADIUS = 0.93  # the specimen's bounding ball (normalised cube units)
_FADE_R0, _FADE_R1 = 0.955, 0.975  # safety fade: density is exactly 0 beyond _FADE_R1
PETROUS_DENSITY = 0.90
TEETH_DENSITY = 0.96
_BONE_TEXTURE = 0.06  # relative amplitude of the bone density texture
BONE_MAX = 0.80 * (1.0 + _BONE_TEXTURE)  # highest density of ordinary bone


def _p(lo: float, hi: float, unit: str, default: float, doc: str):
    return dataclasses.field(default=default, metadata={"range": (lo, hi), "unit": unit, "doc": doc})


@dataclasses.dataclass(frozen=True)
class SpeciesParams:
    """Proportions of one species' (or specimen's) skull. Frozen; validated on construction.

    Lengths are fractions of the skull length L (occiput to snout tip) unless a unit says otherwise;
    "rel." marks ratios. Every field has a documented range (``PARAM_RANGES``, also in each field's
    ``metadata``); a value outside it, a non-finite value or a wrong type raises ``ValueError``.

    ============================  ===============  ==================================================
    field                         range            meaning
    ============================  ===============  ==================================================
    skull_length_mm               15 – 600 mm      physical skull length (metadata: voxel spacing)
    braincase_length              0.55 – 1.20 rel. braincase length / (occiput → orbit centre)
    braincase_width               0.22 – 0.70      braincase breadth
    braincase_aspect              0.55 – 1.20 rel. braincase height / breadth
    rostrum_length                0.12 – 0.65      orbit centre → snout tip
    rostrum_width                 0.10 – 0.45      snout breadth at its base
    rostrum_taper                 0.30 – 1.00 rel. snout breadth at the tip / at the base
    rostrum_height                0.60 – 1.60 rel. snout height / breadth
    rostrum_tilt                  -25 – 10 deg     snout axis pitch (negative = snout points down)
    orbit_radius                  0.05 – 0.17      radius of the orbit (eye socket)
    orbit_height                  -0.30 – 0.60 rel vertical orbit centre / braincase half height
    orbit_frontality              0 – 1 rel.       0 = eyes face sideways (dog), 1 = forward (primate)
    postorbital_bar               0 – 1 rel.       closure of the bony ring behind the orbit
    zygomatic_width               0.30 – 0.90      bizygomatic breadth (arches' widest span)
    zygomatic_thickness           0.010 – 0.050    radius of the zygomatic arch bar
    shell_thickness               0.010 – 0.060    mean cranial wall thickness
    shell_thickness_variation     0 – 0.60 rel.    relative thickness variation over the vault
    sagittal_crest                0 – 0.060        height of the sagittal crest
    jaw_depth                     0.04 – 0.20      depth of the mandible body
    jaw_length                    0.80 – 1.05 rel. mandible length / (jaw joint → snout tip)
    coronoid_size                 0 – 1 rel.       height of the coronoid process
    teeth_count                   1 – 12 (int)     cheek teeth per quadrant
    tooth_size                    0.010 – 0.050    cheek tooth crown radius
    incisor_size                  0.005 – 0.060    incisor radius (>= 0.025: one big rodent incisor)
    canine_size                   0 – 0.070        canine length scale (0: no canine)
    diastema                      0 – 0.50 rel.    toothless gap behind the incisors / tooth row
    petrous_size                  0.020 – 0.080    petrous bone half length
    bulla_size                    0 – 0.120        tympanic bulla radius (hollow bony capsule)
    nasal_cavity                  0.30 – 0.90 rel. nasal cavity breadth / snout breadth
    turbinate_density             0 – 0.40         density of the nasal turbinate scrolls
    soft_tissue_density           0 – 0.15         density of the soft-tissue haze
    soft_tissue_thickness         0.010 – 0.120    thickness of the soft-tissue envelope
    bone_density                  0.45 – 0.80      mean density of bone
    asymmetry                     0 – 0.05 rel.    amplitude of seeded left/right differences
    ============================  ===============  ==================================================
    """

    skull_length_mm: float = _p(15.0, 600.0, "mm", 180.0, "physical skull length")
    braincase_length: float = _p(0.55, 1.20, "rel.", 0.85, "braincase length / postorbital length")
    braincase_width: float = _p(0.22, 0.70, "L", 0.34, "braincase breadth")
    braincase_aspect: float = _p(0.55, 1.20, "rel.", 0.85, "braincase height / breadth")
    rostrum_length: float = _p(0.12, 0.65, "L", 0.50, "orbit centre to snout tip")
    rostrum_width: float = _p(0.10, 0.45, "L", 0.22, "snout breadth at the base")
    rostrum_taper: float = _p(0.30, 1.00, "rel.", 0.55, "snout tip / base breadth")
    rostrum_height: float = _p(0.60, 1.60, "rel.", 0.90, "snout height / breadth")
    rostrum_tilt: float = _p(-25.0, 10.0, "deg", 0.0, "snout pitch, negative = down")
    orbit_radius: float = _p(0.05, 0.17, "L", 0.085, "orbit radius")
    orbit_height: float = _p(-0.30, 0.60, "rel.", 0.35, "orbit centre / braincase half height")
    orbit_frontality: float = _p(0.0, 1.0, "rel.", 0.25, "0 lateral, 1 forward-facing orbits")
    postorbital_bar: float = _p(0.0, 1.0, "rel.", 0.4, "closure of the postorbital bar")
    zygomatic_width: float = _p(0.30, 0.90, "L", 0.56, "bizygomatic breadth")
    zygomatic_thickness: float = _p(0.010, 0.050, "L", 0.022, "zygomatic arch radius")
    shell_thickness: float = _p(0.010, 0.060, "L", 0.022, "cranial wall thickness")
    shell_thickness_variation: float = _p(0.0, 0.60, "rel.", 0.3, "wall thickness variation")
    sagittal_crest: float = _p(0.0, 0.060, "L", 0.03, "sagittal crest height")
    jaw_depth: float = _p(0.04, 0.20, "L", 0.09, "mandible body depth")
    jaw_length: float = _p(0.80, 1.05, "rel.", 0.97, "mandible length / (joint to snout tip)")
    coronoid_size: float = _p(0.0, 1.0, "rel.", 0.6, "coronoid process height")
    teeth_count: int = _p(1, 12, "count", 7, "cheek teeth per quadrant")
    tooth_size: float = _p(0.010, 0.050, "L", 0.025, "cheek tooth crown radius")
    incisor_size: float = _p(0.005, 0.060, "L", 0.012, "incisor radius")
    canine_size: float = _p(0.0, 0.070, "L", 0.030, "canine size (0 = none)")
    diastema: float = _p(0.0, 0.50, "rel.", 0.08, "gap behind incisors / tooth row length")
    petrous_size: float = _p(0.020, 0.080, "L", 0.040, "petrous bone half length")
    bulla_size: float = _p(0.0, 0.120, "L", 0.05, "tympanic bulla radius")
    nasal_cavity: float = _p(0.30, 0.90, "rel.", 0.70, "nasal cavity / snout breadth")
    turbinate_density: float = _p(0.0, 0.40, "density", 0.20, "turbinate density")
    soft_tissue_density: float = _p(0.0, 0.15, "density", 0.08, "soft tissue haze density")
    soft_tissue_thickness: float = _p(0.010, 0.120, "L", 0.04, "soft tissue envelope thickness")
    bone_density: float = _p(0.45, 0.80, "density", 0.65, "mean bone density")
    asymmetry: float = _p(0.0, 0.05, "rel.", 0.01, "left/right asymmetry amplitude")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            lo, hi = f.metadata["range"]
            v = getattr(self, f.name)
            if f.name == "teeth_count":
                if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                    raise ValueError(f"teeth_count must be an int, got {v!r}")
                object.__setattr__(self, f.name, int(v))
            else:
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise ValueError(f"{f.name} must be a real number, got {v!r}")
                v = float(v)
                if not math.isfinite(v):
                    raise ValueError(f"{f.name} must be finite, got {v!r}")
                object.__setattr__(self, f.name, v)
            v = getattr(self, f.name)
            if not lo <= v <= hi:
                raise ValueError(f"{f.name}={v!r} is outside its range [{lo}, {hi}] ({f.metadata['unit']})")

    def as_dict(self) -> dict:
        """The parameters as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


PARAM_RANGES: dict[str, tuple[float, float]] = {f.name: f.metadata["range"] for f in dataclasses.fields(SpeciesParams)}

# ---------------------------------------------------------------------------------------------
# Species distribution: blends of archetypes (values are the archetype means).

_ARCHETYPES: dict[str, dict[str, float]] = {
    "canid": dict(
        braincase_length=0.85,
        braincase_width=0.34,
        braincase_aspect=0.85,
        rostrum_length=0.50,
        rostrum_width=0.22,
        rostrum_taper=0.55,
        rostrum_height=0.90,
        rostrum_tilt=0.0,
        orbit_radius=0.085,
        orbit_height=0.35,
        orbit_frontality=0.25,
        postorbital_bar=0.4,
        zygomatic_width=0.56,
        zygomatic_thickness=0.022,
        shell_thickness=0.022,
        shell_thickness_variation=0.3,
        sagittal_crest=0.03,
        jaw_depth=0.09,
        jaw_length=0.97,
        coronoid_size=0.7,
        teeth_count=7,
        tooth_size=0.024,
        incisor_size=0.012,
        canine_size=0.032,
        diastema=0.08,
        petrous_size=0.040,
        bulla_size=0.050,
        nasal_cavity=0.70,
        turbinate_density=0.22,
        skull_length_mm=200.0,
    ),
    "felid": dict(
        braincase_length=1.0,
        braincase_width=0.48,
        braincase_aspect=0.80,
        rostrum_length=0.26,
        rostrum_width=0.32,
        rostrum_taper=0.75,
        rostrum_height=0.85,
        rostrum_tilt=-5.0,
        orbit_radius=0.13,
        orbit_height=0.25,
        orbit_frontality=0.55,
        postorbital_bar=0.85,
        zygomatic_width=0.78,
        zygomatic_thickness=0.030,
        shell_thickness=0.020,
        shell_thickness_variation=0.3,
        sagittal_crest=0.015,
        jaw_depth=0.10,
        jaw_length=0.95,
        coronoid_size=0.8,
        teeth_count=4,
        tooth_size=0.034,
        incisor_size=0.010,
        canine_size=0.045,
        diastema=0.12,
        petrous_size=0.045,
        bulla_size=0.090,
        nasal_cavity=0.65,
        turbinate_density=0.18,
        skull_length_mm=95.0,
    ),
    "rodent": dict(
        braincase_length=0.95,
        braincase_width=0.38,
        braincase_aspect=0.75,
        rostrum_length=0.45,
        rostrum_width=0.18,
        rostrum_taper=0.62,
        rostrum_height=1.0,
        rostrum_tilt=-5.0,
        orbit_radius=0.10,
        orbit_height=0.25,
        orbit_frontality=0.1,
        postorbital_bar=0.0,
        zygomatic_width=0.52,
        zygomatic_thickness=0.018,
        shell_thickness=0.016,
        shell_thickness_variation=0.2,
        sagittal_crest=0.0,
        jaw_depth=0.10,
        jaw_length=0.92,
        coronoid_size=0.3,
        teeth_count=3,
        tooth_size=0.022,
        incisor_size=0.034,
        canine_size=0.0,
        diastema=0.45,
        petrous_size=0.035,
        bulla_size=0.080,
        nasal_cavity=0.70,
        turbinate_density=0.15,
        skull_length_mm=42.0,
    ),
    "primate": dict(
        braincase_length=1.0,
        braincase_width=0.58,
        braincase_aspect=0.95,
        rostrum_length=0.20,
        rostrum_width=0.36,
        rostrum_taper=0.80,
        rostrum_height=1.20,
        rostrum_tilt=-15.0,
        orbit_radius=0.12,
        orbit_height=-0.25,
        orbit_frontality=1.0,
        postorbital_bar=1.0,
        zygomatic_width=0.68,
        zygomatic_thickness=0.028,
        shell_thickness=0.026,
        shell_thickness_variation=0.35,
        sagittal_crest=0.0,
        jaw_depth=0.14,
        jaw_length=0.95,
        coronoid_size=0.5,
        teeth_count=5,
        tooth_size=0.030,
        incisor_size=0.018,
        canine_size=0.030,
        diastema=0.05,
        petrous_size=0.050,
        bulla_size=0.020,
        nasal_cavity=0.55,
        turbinate_density=0.10,
        skull_length_mm=110.0,
    ),
    "ungulate": dict(
        braincase_length=0.80,
        braincase_width=0.33,
        braincase_aspect=0.90,
        rostrum_length=0.62,
        rostrum_width=0.20,
        rostrum_taper=0.50,
        rostrum_height=1.10,
        rostrum_tilt=-12.0,
        orbit_radius=0.09,
        orbit_height=0.40,
        orbit_frontality=0.15,
        postorbital_bar=1.0,
        zygomatic_width=0.45,
        zygomatic_thickness=0.024,
        shell_thickness=0.024,
        shell_thickness_variation=0.3,
        sagittal_crest=0.0,
        jaw_depth=0.15,
        jaw_length=0.97,
        coronoid_size=0.6,
        teeth_count=6,
        tooth_size=0.030,
        incisor_size=0.012,
        canine_size=0.0,
        diastema=0.40,
        petrous_size=0.035,
        bulla_size=0.040,
        nasal_cavity=0.75,
        turbinate_density=0.25,
        skull_length_mm=420.0,
    ),
    "mustelid": dict(
        braincase_length=1.05,
        braincase_width=0.42,
        braincase_aspect=0.62,
        rostrum_length=0.22,
        rostrum_width=0.25,
        rostrum_taper=0.80,
        rostrum_height=0.75,
        rostrum_tilt=0.0,
        orbit_radius=0.07,
        orbit_height=0.20,
        orbit_frontality=0.3,
        postorbital_bar=0.2,
        zygomatic_width=0.52,
        zygomatic_thickness=0.018,
        shell_thickness=0.016,
        shell_thickness_variation=0.25,
        sagittal_crest=0.012,
        jaw_depth=0.08,
        jaw_length=0.96,
        coronoid_size=0.8,
        teeth_count=4,
        tooth_size=0.025,
        incisor_size=0.009,
        canine_size=0.030,
        diastema=0.05,
        petrous_size=0.035,
        bulla_size=0.070,
        nasal_cavity=0.60,
        turbinate_density=0.15,
        skull_length_mm=65.0,
    ),
    "lagomorph": dict(
        braincase_length=0.85,
        braincase_width=0.36,
        braincase_aspect=0.80,
        rostrum_length=0.42,
        rostrum_width=0.20,
        rostrum_taper=0.75,
        rostrum_height=1.30,
        rostrum_tilt=-10.0,
        orbit_radius=0.13,
        orbit_height=0.45,
        orbit_frontality=0.0,
        postorbital_bar=0.3,
        zygomatic_width=0.46,
        zygomatic_thickness=0.018,
        shell_thickness=0.014,
        shell_thickness_variation=0.2,
        sagittal_crest=0.0,
        jaw_depth=0.14,
        jaw_length=0.93,
        coronoid_size=0.2,
        teeth_count=6,
        tooth_size=0.020,
        incisor_size=0.030,
        canine_size=0.0,
        diastema=0.40,
        petrous_size=0.035,
        bulla_size=0.060,
        nasal_cavity=0.80,
        turbinate_density=0.20,
        skull_length_mm=80.0,
    ),
}
_ARCHETYPE_NAMES = tuple(_ARCHETYPES)
_COMMON = dict(soft_tissue_density=0.08, soft_tissue_thickness=0.04, bone_density=0.65, asymmetry=0.012)
_LOG_PARAMS = {"skull_length_mm"}
_BLEND_MAX = 0.5  # weight of the second archetype: uniform in [0, _BLEND_MAX]
_JITTER = 0.15  # relative jitter (sd) of every proportion of a species
_JITTER_SIGNED = 0.10  # jitter (sd) of signed parameters, as a fraction of their range
_SIGNED_PARAMS = {"rostrum_tilt", "orbit_height"}


def _clip_to_range(name: str, v: float) -> float:
    lo, hi = PARAM_RANGES[name]
    return float(min(max(v, lo), hi))


def _check_int(name: str, v, *, minimum: int | None = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v!r}")
    return int(v)


def species_params(species_id: int, *, seed: int = 0) -> SpeciesParams:
    """Deterministic parameters of procedural species number ``species_id`` (>= 0).

    Each species blends a main archetype (canid, felid, rodent, primate, ungulate, mustelid,
    lagomorph; cycled by ``species_id``) with a randomly drawn second one (weight 0–0.5) and jitters
    every proportion by about 15 % (signed parameters by 10 % of their range), about the spread of
    related real species (fox, wolf, dog), so species differ clearly and a held-out species is new
    but related to the training ones, not a near copy of a training sibling. The soft-tissue haze
    is 0.03–0.07, below the evaluation's iso-value 0.1 (the iso-surface is the bone's, as for the
    dry skulls of the UTCT collection); bone 0.62–0.78. ``seed`` selects another draw of the family.
    """
    species_id = _check_int("species_id", species_id)
    seed = _check_int("seed", seed)
    rng = np.random.default_rng([seed, species_id, 0x5EED])
    main = _ARCHETYPE_NAMES[species_id % len(_ARCHETYPE_NAMES)]
    other = _ARCHETYPE_NAMES[int(rng.integers(len(_ARCHETYPE_NAMES)))]
    w = float(rng.uniform(0.0, _BLEND_MAX))
    a, b = {**_COMMON, **_ARCHETYPES[main]}, {**_COMMON, **_ARCHETYPES[other]}
    values: dict[str, Any] = {}  # floats, and the int teeth_count
    for f in dataclasses.fields(SpeciesParams):
        name = f.name
        lo, hi = f.metadata["range"]
        if name in _LOG_PARAMS:
            v = math.exp((1 - w) * math.log(a[name]) + w * math.log(b[name]))
            v *= math.exp(rng.normal(0.0, 0.25))
        else:
            v = (1 - w) * a[name] + w * b[name]
            if name in _SIGNED_PARAMS:
                v += rng.normal(0.0, _JITTER_SIGNED * (hi - lo))
            else:
                v *= 1.0 + rng.normal(0.0, _JITTER)
        if name == "teeth_count":
            v = int(round(v + rng.integers(-1, 2)))
            values[name] = int(min(max(v, lo), hi))
        else:
            values[name] = _clip_to_range(name, v)
    # below the evaluation's iso-value 0.1 (model/evaluate.py), not a haze at the threshold
    values["soft_tissue_density"] = _clip_to_range("soft_tissue_density", rng.uniform(0.03, 0.07))
    values["bone_density"] = _clip_to_range("bone_density", rng.uniform(0.62, 0.78))
    return SpeciesParams(**values)


def _params_key(p: SpeciesParams) -> int:
    return zlib.crc32(repr(tuple(dataclasses.astuple(p))).encode())


def specimen_params(species: SpeciesParams, specimen_seed: int) -> SpeciesParams:
    """One specimen of ``species``: every proportion varied by about 3 % (seeded, deterministic).

    ``teeth_count`` is kept; values stay inside their ranges. ``specimen_seed`` >= 0.
    """
    if not isinstance(species, SpeciesParams):
        raise ValueError(f"species must be a SpeciesParams, got {type(species).__name__}")
    specimen_seed = _check_int("specimen_seed", specimen_seed)
    rng = np.random.default_rng([specimen_seed, _params_key(species), 0x5BEC])
    values = {}
    for f in dataclasses.fields(SpeciesParams):
        v = getattr(species, f.name)
        if f.name == "teeth_count":
            values[f.name] = v
            continue
        lo, hi = f.metadata["range"]
        if f.name in _SIGNED_PARAMS:
            v = v + rng.normal(0.0, 0.02 * (hi - lo))
        else:
            v = v * (1.0 + rng.normal(0.0, 0.03))
        values[f.name] = _clip_to_range(f.name, v)
    return SpeciesParams(**values)


def make_species_table(n_species: int, *, seed: int = 0) -> list[tuple[str, SpeciesParams]]:
    """``[("procedural_00", params), ...]`` for species 0 … n_species−1."""
    n_species = _check_int("n_species", n_species, minimum=1)
    return [(f"procedural_{i:02d}", species_params(i, seed=seed)) for i in range(n_species)]


# ---------------------------------------------------------------------------------------------
# Signed distance primitives. Arguments X, U, Z are broadcastable float32 arrays of the anatomical
# frame (X anterior, U dorsal, Z lateral; units L). Points are (x, u, z) tuples.

_F = np.float32


def _smin(a, b, k):
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _ellipsoid(c, r):
    cx, cu, cz = (float(v) for v in c)
    rx, ru, rz = (float(v) for v in r)

    def f(X, U, Z):
        px, pu, pz = (X - cx) / rx, (U - cu) / ru, (Z - cz) / rz
        k0 = np.sqrt(px * px + pu * pu + pz * pz)
        k1 = np.sqrt((px / rx) ** 2 + (pu / ru) ** 2 + (pz / rz) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    lo = np.array([cx - rx, cu - ru, cz - rz])
    hi = np.array([cx + rx, cu + ru, cz + rz])
    return f, lo, hi, min(max(rx, ru, rz) / min(rx, ru, rz), 4.0)


def _round_cone(a, b, ra, rb, scale=(1.0, 1.0, 1.0)):
    """Tapered capsule from a (radius ra) to b (radius rb); ``scale`` stretches it per axis."""
    s = np.asarray(scale, float)
    a_ = np.asarray(a, float) / s
    b_ = np.asarray(b, float) / s
    ba = b_ - a_
    l2 = float(ba @ ba)
    rr = float(ra - rb)
    if l2 <= rr * rr + 1e-12:  # degenerate: the larger sphere contains the cone
        big = (a_, ra) if ra >= rb else (b_, rb)
        c = big[0] * s
        return _ellipsoid(c, big[1] * s)
    a2 = l2 - rr * rr
    il2 = 1.0 / l2
    smin_ = float(s.min())
    sx, su, sz = (float(v) for v in s)

    def f(X, U, Z):
        px, pu, pz = X / sx - a_[0], U / su - a_[1], Z / sz - a_[2]
        y = px * ba[0] + pu * ba[1] + pz * ba[2]
        z = y - l2
        qx, qu, qz = px * l2 - ba[0] * y, pu * l2 - ba[1] * y, pz * l2 - ba[2] * y
        x2 = qx * qx + qu * qu + qz * qz
        y2 = y * y * l2
        z2 = z * z * l2
        k = math.copysign(1.0, rr) * rr * rr * x2
        d_mid = (np.sqrt(x2 * a2 * il2) + y * rr) * il2 - ra
        d_b = np.sqrt(x2 + z2) * il2 - rb
        d_a = np.sqrt(x2 + y2) * il2 - ra
        d = np.where(np.sign(y) * a2 * y2 < k, d_a, d_mid)
        d = np.where(np.sign(z) * a2 * z2 > k, d_b, d)
        return d * smin_

    pa, pb = np.asarray(a, float), np.asarray(b, float)
    lo = np.minimum(pa - ra * s, pb - rb * s)
    hi = np.maximum(pa + ra * s, pb + rb * s)
    return f, lo, hi, float(s.max() / s.min())


def _bezier(p0, p1, p2, t):
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _bezier_tube(p0, p1, p2, r0, r1, nseg=6, scale=(1.0, 1.0, 1.0)):
    """A tube of radius r0 → r1 along a quadratic Bezier curve (union of tapered capsules)."""
    ts = np.linspace(0.0, 1.0, nseg + 1)
    pts = [_bezier(p0, p1, p2, t) for t in ts]
    rs = [r0 + (r1 - r0) * t for t in ts]
    return [_round_cone(pts[i], pts[i + 1], rs[i], rs[i + 1], scale) for i in range(nseg)]


def _plate(a, b, ra, rb, half_thickness):
    """A flat bony plate: a stadium in the (x, u) plane from a (radius ra) to b (radius rb), of
    half thickness ``half_thickness`` along z, its mid plane z moving linearly from a_z to b_z."""
    ax, au, az = (float(v) for v in a)
    bx, bu, bz = (float(v) for v in b)
    dx, du = bx - ax, bu - au
    l2 = max(dx * dx + du * du, 1e-12)
    t_ = float(half_thickness)

    def f(X, U, Z):
        t = np.clip(((X - ax) * dx + (U - au) * du) / l2, 0.0, 1.0)
        ex, eu = X - ax - t * dx, U - au - t * du
        d2 = np.sqrt(ex * ex + eu * eu) - (ra + (rb - ra) * t - t_)
        w = Z - (az + (bz - az) * t)
        return np.sqrt(np.maximum(d2, 0.0) ** 2 + w * w) + np.minimum(d2, 0.0) - t_

    r = max(ra, rb)
    lo = np.array([min(ax, bx) - r, min(au, bu) - r, min(az, bz) - t_])
    hi = np.array([max(ax, bx) + r, max(au, bu) + r, max(az, bz) + t_])
    return f, lo, hi, 1.0


def _hull2d(pts: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of 2D points, monotone chain."""
    order = sorted(map(tuple, np.asarray(pts, float)))

    def half(seq):
        out: list = []
        for q in seq:
            while (
                len(out) >= 2
                and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0]))
                <= 0
            ):
                out.pop()
            out.append(q)
        return out

    lower, upper = half(order), half(order[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _poly_plate(vertices, half_thickness, rounding=0.0):
    """A flat plate: the convex hull of 3D ``vertices`` projected on the (x, u) plane (corners
    rounded by ``rounding``), of half thickness ``half_thickness`` about the mid surface
    z = a + b x + c u fitted through them."""
    v = np.asarray(vertices, float)
    hull = _hull2d(v[:, :2])
    if rounding > 0:  # pull the corners in, then grow the outline back by ``rounding``
        cen = hull.mean(axis=0)
        dist = np.linalg.norm(hull - cen, axis=1, keepdims=True)
        hull = cen + (hull - cen) * np.clip(1.0 - rounding / np.maximum(dist, 1e-9), 0.2, 1.0)
    A = np.c_[np.ones(len(v)), v[:, 0], v[:, 1]]
    za, zb, zc = np.linalg.lstsq(A, v[:, 2], rcond=None)[0]
    e = np.roll(hull, -1, axis=0) - hull
    nrm = np.c_[e[:, 1], -e[:, 0]] / np.linalg.norm(e, axis=1)[:, None]  # outward for CCW
    off = (nrm * hull).sum(axis=1)
    t_ = float(half_thickness)

    def f(X, U, Z):
        inner: np.ndarray | None = None  # inside a convex polygon: the largest half-plane distance (exact)
        outer: np.ndarray | None = None  # outside: the distance to the nearest edge
        for (nx, nu), o, (ax, au), (ex, eu) in zip(nrm, off, hull, e):
            di = nx * X + nu * U - o
            inner = di if inner is None else np.maximum(inner, di)
            t = np.clip(((X - ax) * ex + (U - au) * eu) / (ex * ex + eu * eu), 0.0, 1.0)
            dd = (X - ax - t * ex) ** 2 + (U - au - t * eu) ** 2
            outer = dd if outer is None else np.minimum(outer, dd)
        assert inner is not None and outer is not None  # the hull has edges
        d2 = np.where(inner > 0, np.sqrt(outer), inner) - rounding
        w = Z - (za + zb * X + zc * U)
        return np.sqrt(np.maximum(d2, 0.0) ** 2 + w * w) + np.minimum(d2, 0.0) - t_

    lo = v.min(axis=0) - t_
    hi = v.max(axis=0) + t_
    return f, lo, hi, 1.0


def _arc(c, e1, e2, radius, r, theta0, theta1):
    """Part of a torus: the circle of ``radius`` around c in the plane (e1, e2), angles θ0 → θ1
    (from e1 towards e2), swept by a ball of radius r."""
    c = np.asarray(c, float)
    e1 = np.asarray(e1, float)
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.asarray(e2, float)
    e2 = e2 - (e2 @ e1) * e1
    e2 = e2 / np.linalg.norm(e2)
    n = np.cross(e1, e2)
    tm, half = 0.5 * (theta0 + theta1), 0.5 * abs(theta1 - theta0)

    def f(X, U, Z):
        qx, qu, qz = X - c[0], U - c[1], Z - c[2]
        a = qx * e1[0] + qu * e1[1] + qz * e1[2]
        b = qx * e2[0] + qu * e2[1] + qz * e2[2]
        w = qx * n[0] + qu * n[1] + qz * n[2]
        th = np.arctan2(b, a) - tm
        th = (th + np.pi) % (2 * np.pi) - np.pi
        th = np.clip(th, -half, half) + tm
        da, db = a - radius * np.cos(th), b - radius * np.sin(th)
        return np.sqrt(da * da + db * db + w * w) - r

    ext = radius + r
    return f, c - ext, c + ext, 1.0


# ---------------------------------------------------------------------------------------------
# The anatomical model: a list of operations on named fields.

_FIELDS = ("outer", "cavity", "orbit", "struts", "mandible", "teeth", "petrous", "turb")


class _Op:
    __slots__ = ("field", "fn", "lo", "hi", "k", "slack")

    def __init__(self, field, prim, k=0.0, offset: Callable | None = None):
        fn, lo, hi, self.slack = prim  # slack: how much the SDF may underestimate the distance
        self.field = field
        self.fn = fn if offset is None else (lambda X, U, Z, _f=fn, _o=offset: _f(X, U, Z) + _o(X, U, Z))
        self.lo = np.asarray(lo, float)
        self.hi = np.asarray(hi, float)
        self.k = float(k)


class _Model:
    """Ops plus landmarks (anatomical frame), built once per (params, seed)."""

    def __init__(self, p: SpeciesParams, seed: int):
        rng = np.random.default_rng([seed, _params_key(p), 0xB0E])
        self.p = p
        self.ops: list[_Op] = []
        self.landmarks: dict[str, np.ndarray] = {}
        self.noise = [(rng.uniform(12, 30, 3) * rng.choice([-1, 1], 3), rng.uniform(0, 2 * np.pi, 3)) for _ in range(3)]
        self.clamp = p.soft_tissue_thickness + 0.08
        self._build(p, rng)

    def add(self, field, prim, k=0.0, offset=None):
        self.ops.append(_Op(field, prim, k, offset))

    def add_all(self, field, prims, k=0.0):
        for prim in prims:
            self.add(field, prim, k)

    # -- the anatomy --------------------------------------------------------------------------
    def _build(self, p: SpeciesParams, rng) -> None:  # noqa: C901  (one long recipe)
        asym = p.asymmetry

        def jit(shape=None):
            return 1.0 + asym * rng.normal(0.0, 1.0, shape)

        f = p.orbit_frontality
        r_o = p.orbit_radius
        x_o = 0.5 - p.rostrum_length
        bw = p.braincase_width
        bh = bw * p.braincase_aspect
        bl = p.braincase_length * (x_o + 0.5)
        # forward-facing orbits (primates) sit below the front of a raised braincase
        bc = np.array([-0.5 + bl / 2, 0.3 * f * bh / 2, 0.0])
        br = np.array([bl / 2, bh / 2, bw / 2])
        u_o = p.orbit_height * br[1]
        t0 = p.shell_thickness
        self.landmarks["braincase_centre"] = bc.copy()

        # Braincase: outer ellipsoid, hollow inside with a wall of varying thickness.
        # (``outer`` is the solid outline; _combine turns it into a bony shell of thickness ``wall``)
        self.add("outer", _ellipsoid(bc, br))
        tv = p.shell_thickness_variation
        ph = rng.uniform(0, 2 * np.pi, 2)

        def wall(X, U, Z):
            """Bone wall thickness: thicker at the vault's top, base and back, thin at the temples."""
            xn = np.clip((X - bc[0]) / br[0], -1.2, 1.2)
            un = np.clip((U - bc[1]) / br[1], -1.2, 1.2)
            zn = np.clip(Z / br[2], -1.2, 1.2)
            g = un * un - zn * zn - 0.5 * xn + 0.3 * np.sin(7 * xn + ph[0]) * np.cos(5 * un + ph[1])
            return t0 * (1.0 + tv * np.clip(g, -1.0, 1.0))

        self.wall = wall

        shell_sdf = _ellipsoid(bc, br)[0]
        # Sagittal crest and nuchal (occipital) crest.
        if p.sagittal_crest > 0.002:
            cu = br[1] * 0.75
            self.add(
                "outer",
                _plate(
                    (bc[0] - 0.6 * br[0], cu, 0.0),
                    (bc[0] + 0.2 * br[0], cu, 0.0),
                    0.2 * br[1] + p.sagittal_crest,
                    0.12 * br[1],
                    0.35 * t0 + 0.004,
                ),
                k=0.015,
            )
        self.add(
            "outer",
            _arc(
                (bc[0] - 0.8 * br[0], bc[1] + 0.05 * br[1], 0.0),
                (0, 1, 0),
                (0, 0, 1),
                0.62 * br[1],
                0.35 * t0 + 0.4 * p.sagittal_crest,
                -1.2,
                1.2,
            ),
            k=0.02,
        )

        # Foramen magnum and occipital condyles.
        fm_r = 0.09 * bw
        pf = np.array([bc[0] - 0.93 * br[0], bc[1] - 0.45 * br[1], 0.0])
        self.add(
            "cavity",
            _round_cone(
                (bc[0] - 0.5 * br[0], bc[1] - 0.2 * br[1], 0.0), pf + np.array([-0.08, -0.04, 0.0]), fm_r, fm_r
            ),
        )
        for s in (-1, 1):
            self.add(
                "outer",
                _ellipsoid(pf + np.array([-0.01, -0.5 * fm_r, s * 1.25 * fm_r]), (0.7 * fm_r, 0.9 * fm_r, 0.55 * fm_r)),
                k=0.015,
            )

        # Snout (rostrum): a tapered capsule, taller than wide by rostrum_height.
        ra = p.rostrum_width / 2
        rb = ra * p.rostrum_taper
        h = p.rostrum_height
        ua = u_o - r_o * (0.3 + 0.9 * f)
        a = np.array([x_o, ua, 0.0])
        bx = max(0.5 - rb, x_o + 0.03 + abs(ra - rb))
        b = np.array([bx, ua + math.tan(math.radians(p.rostrum_tilt)) * (bx - x_o), 0.0])
        self.add("outer", _round_cone(a, b, ra, rb, (1.0, h, 1.0)), k=0.03)
        self.landmarks["snout_tip"] = b + np.array([rb, 0.0, 0.0])

        def rost(x):
            """Half width, centre height and bottom height of the snout at x (clamped)."""
            t = np.clip((x - a[0]) / (b[0] - a[0]), 0.0, 1.0)
            r = ra + (rb - ra) * t
            uc = a[1] + (b[1] - a[1]) * t
            return r, uc, uc - 0.9 * r * h

        # Forehead (frontal) bridge between braincase and snout, with a sinus inside.
        iow = max(0.45 * ra, 0.25 * r_o)
        f0 = np.array([bc[0] + 0.3 * br[0], bc[1] + 0.1 * br[1], 0.0])
        f1 = np.array([x_o + 0.3 * r_o, u_o + 0.1 * r_o, 0.0])
        rf0 = 0.7 * min(br[1], br[2])
        rf1 = iow + 0.35 * r_o
        self.add("outer", _round_cone(f0, f1, rf0, rf1), k=0.04)
        # Palate / skull base: ties the snout to the braincase floor.
        _, _, ubot_a = rost(a[0])
        self.add(
            "outer",
            _round_cone(
                (a[0], ubot_a + 0.4 * ra * h, 0.0),
                (bc[0] - 0.1 * br[0], bc[1] - 0.55 * br[1], 0.0),
                0.8 * ra,
                0.3 * bw,
                (1.0, 0.45, 1.0),
            ),
            k=0.04,
        )

        # Nasal cavity (open at the front) continuing back as the ethmoid / frontal sinus.
        nc = p.nasal_cavity
        up = (1 - nc) * ra * h * 0.3
        na = a + np.array([0.02 + 0.3 * r_o, up, 0.0])
        nb = b + (b - a) * (0.3 / (b[0] - a[0])) + np.array([0.0, up, 0.0])
        rna, rnb = max(ra * nc, 0.02), max(rb * nc, 0.015)
        protect = [shell_sdf]
        if nb[0] - na[0] > abs(rna - rnb) + 0.02:
            nasal = _round_cone(na, nb, rna, rnb, (1.0, h, 1.0))
            self.add("cavity", nasal)
            protect.append(nasal[0])
            if p.turbinate_density > 0:
                self.add("turb", _round_cone(na + np.array([0.03, 0, 0]), b, rna * 0.85, rnb * 0.7, (1.0, h, 1.0)))
        self.turb_axis = (na, b, h)
        s0_ = f0 + np.array([0.35 * br[0], 0.0, 0.0])
        rs0, rs1 = max(rf0 - 1.5 * t0, 0.01), max(min(rf1, ra * h) * nc - t0, 0.01)
        if np.linalg.norm(na - s0_) > abs(rs0 - rs1) + 0.01:
            sinus = _round_cone(s0_, na, rs0, rs1)
            self.add("cavity", sinus)
            protect.append(sinus[0])

        def protect_sdf(X, U, Z):
            d = protect[0](X, U, Z)
            for g in protect[1:]:
                d = np.minimum(d, g(X, U, Z))
            return d

        # Ear region: petrous bone (dense) and tympanic bulla (hollow capsule).
        x_ear = -0.5 + 0.33 * bl
        u_ear = bc[1] - 0.5 * br[1]
        for s in (-1, 1):
            ps = p.petrous_size * jit()
            c = np.array([x_ear, u_ear + 0.12 * br[1], s * 0.55 * br[2]])
            self.add("petrous", _ellipsoid(c, (1.2 * ps, 0.6 * ps, 0.75 * ps)))
            self.landmarks["petrous_left" if s > 0 else "petrous_right"] = c
            if p.bulla_size > 0.012:
                rbu = p.bulla_size * jit()
                cb = np.array([x_ear - 0.2 * rbu, bc[1] - 0.85 * br[1] - 0.2 * rbu, s * 0.42 * br[2]])
                self.add("outer", _ellipsoid(cb, (rbu * 1.1, rbu * 0.85, rbu)), k=0.02)

        # Orbits: a socket carved into the face, opening sideways (f=0) to forward (f=1).
        rim_t = 0.75 * p.zygomatic_thickness
        pb = p.postorbital_bar

        def orbit_guard(X, U, Z):  # keeps a wall of t0 around braincase, sinus and nasal cavity
            return np.maximum(0.0, t0 - protect_sdf(X, U, Z)) * 3.0

        for s in (-1, 1):
            ro = r_o * jit()
            zo = ((1 - f) * (iow + 0.55 * ro) + f * 1.12 * ro) * jit()
            o = np.array([x_o + 0.3 * f * ro, u_o, s * zo])
            d = np.array([0.2 + 1.6 * f, 0.25, s * (1.0 - f) * 1.6 + s * 0.15])
            d /= np.linalg.norm(d)
            self.landmarks["orbit_left" if s > 0 else "orbit_right"] = o
            self.add("orbit", _ellipsoid(o, (ro, ro, ro)), offset=orbit_guard)
            self.add("orbit", _round_cone(o, o + 0.35 * d, 0.92 * ro, 0.92 * ro), offset=orbit_guard)
            # The bony rim: front half always, postorbital processes growing with postorbital_bar.
            back = np.array([-1.0, 0.0, 0.0]) - (np.array([-1.0, 0, 0]) @ d) * d
            upv = np.cross(d, back) * s
            rc = o + 0.55 * ro * d
            rr = 0.88 * ro
            self.add("struts", _arc(rc, back, upv, rr, rim_t, 0.5 * np.pi, 1.5 * np.pi), k=0.01)
            if pb > 0.05:
                span = pb * 0.5 * np.pi
                self.add("struts", _arc(rc, back, upv, rr, rim_t * 0.9, 0.5 * np.pi - span, 0.5 * np.pi), k=0.01)
                self.add("struts", _arc(rc, back, upv, rr, rim_t * 0.9, -0.5 * np.pi, -0.5 * np.pi + span), k=0.01)

        # Zygomatic arches: from the maxilla below the orbit back to the squamosal above the ear.
        zt = p.zygomatic_thickness
        zw = p.zygomatic_width / 2
        arches = {}
        for s in (-1, 1):
            zws = zw * jit()
            r_at_o = rost(x_o)[0]
            p0 = np.array([x_o + 0.45 * r_o, u_o - 1.0 * r_o, s * max(0.85 * r_at_o, 0.6 * zws)])
            p2 = np.array([x_ear + 0.05, u_ear + 0.3 * br[1], s * 0.88 * br[2]])
            p1 = np.array([0.5 * (p0[0] + p2[0]) - 0.2 * r_o, 0.5 * (p0[1] + p2[1]) - 0.3 * r_o, 0.0])
            p1[2] = 2 * s * max(zws, abs(p0[2]) + 0.01, abs(p2[2]) + 0.01) - 0.5 * (p0[2] + p2[2])
            arches[s] = (p0, p1, p2)
            self.add_all("struts", _bezier_tube(p0, p1, p2, zt * 1.3, zt, 8, (1.0, 1.7, 1.0)), k=0.015)
            # the maxillary root and the squamosal root blend into the skull
            self.add(
                "struts",
                _round_cone(
                    p0, p0 + np.array([0.3 * r_o, 0.3 * r_o, -s * 0.5 * r_at_o]), zt * 1.3, zt * 0.9, (1.0, 1.7, 1.0)
                ),
                k=0.02,
            )
            self.add(
                "struts",
                _round_cone(
                    p2, p2 * np.array([1, 1, 0.6]) + np.array([0.03, 0.0, 0]), zt * 1.2, zt * 1.4, (1.0, 1.6, 1.0)
                ),
                k=0.02,
            )

        # Tooth rows (upper row along the snout's floor), jaw joint and mandible.
        ts = p.tooth_size
        crown = 1.1 * ts
        x_front = b[0] + 0.25 * rb
        x_back = x_o - 0.35 * r_o

        def z_row(x):
            return float(np.maximum(0.72 * rost(x)[0], 0.6 * ts))

        def u_row(x):
            return float(rost(x)[2])

        def u_occ(x):  # occlusal plane
            return u_row(x) - crown

        def u_alv(x):  # top of the mandible body
            return u_occ(max(x, x_back)) - crown

        gap = 0.016
        jd = p.jaw_depth
        rcond = max(0.2 * jd, 0.018)
        cond_lm = {}
        for s in (-1, 1):
            g = _bezier(*arches[s], 0.9)
            cond = np.array([g[0], g[1] - 1.7 * zt - gap - rcond, g[2] * 0.93])
            cond_lm[s] = cond
            self.landmarks["condyle_left" if s > 0 else "condyle_right"] = cond
        tip = x_front - 0.35 * jd
        x_chin = cond_lm[1][0] + (tip - cond_lm[1][0]) * p.jaw_length
        x_r = min(x_back - 0.4 * jd, x_chin - 0.05)  # where the body turns into the ramus

        def z_mand(x, s):
            zc = abs(cond_lm[s][2])
            w = float(np.clip((x - x_r) / max(x_back - x_r, 1e-3), 0.0, 1.0))
            zr = z_row(max(x, x_back))
            if x < x_r:
                w2 = float(np.clip((x_r - x) / max(x_r - cond_lm[s][0], 1e-3), 0.0, 1.0))
                return s * (zr + (zc - zr) * w2)
            return s * zr * (0.85 + 0.15 * w)

        rz = 0.1 * jd + 0.005
        for s in (-1, 1):
            cond = cond_lm[s]
            xs = np.linspace(x_chin, x_r, 6)
            pts, rads = [], []
            for j, x in enumerate(xs):
                t = j / (len(xs) - 1)
                dep = jd * (0.8 + 0.2 * t)
                pts.append(np.array([x, u_alv(x) - 0.5 * dep + 0.2 * crown, z_mand(x, s)]))
                rads.append(0.5 * dep)
            for i in range(len(pts) - 1):
                self.add("mandible", _plate(pts[i], pts[i + 1], rads[i], rads[i + 1], rz), k=0.02)
            base = pts[-1]
            top = base + np.array([0.2 * jd, rads[-1] * 0.9, 0.0])
            bot = base + np.array([0.0, -rads[-1] * 0.9, 0.0])
            ang = np.array([cond[0] - 0.25 * jd, bot[1] - 0.1 * jd, 0.0])
            ang[2] = base[2] + (cond[2] - base[2]) * 0.9
            c_back = cond + np.array([-0.8 * rcond, -0.5 * rcond, 0.0])
            c_front = cond + np.array([0.9 * rcond, -1.2 * rcond, 0.0])
            self.add("mandible", _poly_plate([top, bot, ang, c_back, c_front], 0.75 * rz, 0.25 * jd), k=0.03)
            self.add("mandible", _ellipsoid(cond, (rcond, rcond, rcond * 1.8)), k=0.01)
            # coronoid process: a plate up into the temporal fossa, medial to the arch
            if p.coronoid_size > 0.05:
                xt = cond[0] + 0.25 * (x_back - cond[0])
                ut = float(_bezier(*arches[s], 0.7)[1]) + p.coronoid_size * r_o * 0.7
                xn, un = (xt - bc[0]) / br[0], (ut - bc[1]) / br[1]
                z_brain = br[2] * math.sqrt(max(0.0, 1 - xn * xn - un * un))
                tt = np.linspace(0, 1, 201)
                arc_pts = _bezier(*arches[s], tt[:, None])
                z_arch = abs(arc_pts[np.argmin(np.abs(arc_pts[:, 0] - xt)), 2])
                zt_ = s * (0.4 * z_brain + 0.6 * z_arch) if z_arch > z_brain + 0.02 else cond[2]
                notch = c_front + 0.35 * (top - c_front)
                self.add(
                    "mandible",
                    _poly_plate(
                        [
                            top,
                            notch,
                            np.array([xt + 0.1 * jd, ut, zt_]),
                            np.array([xt - 0.15 * jd, ut - 0.05 * jd, zt_]),
                        ],
                        0.7 * rz,
                        0.1 * jd,
                    ),
                    k=0.03,
                )
        # the symphysis joins the two halves at the chin
        zc = abs(z_mand(x_chin, 1))
        uc = u_alv(x_chin) - 0.4 * jd
        self.add(
            "mandible",
            _round_cone((x_chin - 0.3 * jd, uc, -zc), (x_chin - 0.3 * jd, uc, zc), 0.3 * jd, 0.3 * jd, (0.5, 1.0, 1.0)),
            k=0.03,
        )

        # Teeth: upper and lower cheek teeth (crown + root), incisors, canines.
        row_len = x_front - x_back
        n = p.teeth_count
        s0 = min(0.12 + p.diastema, 0.8)
        spacing = (1 - s0) * row_len / n
        for s in (-1, 1):
            for i in range(n):
                x = x_front - (s0 + (i + 0.5) * (1 - s0) / n) * row_len
                grow = 0.75 + 0.45 * (i / max(n - 1, 1))  # premolars small, molars large
                sz = min(ts * grow, 0.8 * spacing + 0.3 * ts) * jit()
                rxs = 0.5 * spacing * 0.97
                zr = s * z_row(x)
                self.add("teeth", _ellipsoid((x, u_row(x) - 0.3 * crown, zr), (rxs, 0.8 * crown, sz)))
                self.add(
                    "teeth",
                    _round_cone(
                        (x, u_row(x) - 0.3 * crown, zr),
                        (x, u_row(x) + 1.1 * crown, zr),
                        0.6 * min(rxs, sz),
                        0.3 * min(rxs, sz),
                    ),
                )
                if x_chin - 0.01 >= x:
                    zl = z_mand(x, s)
                    uo = u_occ(x)
                    self.add("teeth", _ellipsoid((x, uo - 0.7 * crown, zl), (rxs, 0.8 * crown, 0.95 * sz)))
                    self.add(
                        "teeth",
                        _round_cone(
                            (x, uo - 0.7 * crown, zl), (x, uo - 2.1 * crown, zl), 0.6 * min(rxs, sz), 0.3 * min(rxs, sz)
                        ),
                    )
            inc = p.incisor_size
            if inc >= 0.025:  # one big curved (rodent / lagomorph) incisor per quadrant
                zi = s * 0.7 * inc
                r0p = (x_front - 0.15 - 2 * inc, rost(x_front - 0.15)[1], zi)
                tipp = (x_front - 0.5 * inc, u_occ(x_front) - 0.3 * inc, zi)
                ctrl = (x_front + 1.5 * inc, rost(x_front)[1] - 0.2 * rb * h, zi)
                self.add_all("teeth", _bezier_tube(r0p, ctrl, tipp, 0.55 * inc, 0.4 * inc, 5))
                lroot = (x_chin - 0.18, u_alv(x_chin) - 0.55 * jd, zi)
                ltip = (x_front - 1.3 * inc, u_occ(x_front) + 0.2 * inc, zi)
                lctrl = (x_chin + 0.5 * inc, u_alv(x_chin) - 0.6 * jd, zi)
                self.add_all("teeth", _bezier_tube(lroot, lctrl, ltip, 0.5 * inc, 0.38 * inc, 5))
            else:
                for j in range(3):
                    x = x_front - 0.02 * j - 0.2 * inc
                    zi = s * (j + 0.5) * 1.9 * inc
                    self.add(
                        "teeth", _round_cone((x - 0.01, u_row(x) + 1.5 * inc, zi), (x, u_occ(x), zi), inc, 0.7 * inc)
                    )
                    xl = x - 1.5 * inc
                    if x_chin + 0.02 >= xl:
                        self.add(
                            "teeth",
                            _round_cone(
                                (xl - 0.02, u_alv(xl) - 2 * inc, zi * 0.85),
                                (xl, u_occ(xl) + 0.2 * inc, zi * 0.85),
                                inc,
                                0.7 * inc,
                            ),
                        )
            cs = p.canine_size
            if cs > 0.006:
                xc = x_front - 0.1 * row_len - 0.5 * cs
                zc_ = s * (z_row(xc) + 0.2 * cs)
                self.add(
                    "teeth",
                    _round_cone(
                        (xc + 0.3 * cs, u_row(xc) + 1.6 * cs, zc_),
                        (xc - 0.1 * cs, u_occ(xc) - 1.3 * cs, zc_),
                        0.6 * cs,
                        0.15 * cs,
                    ),
                )
                xl = xc + 1.0 * cs
                if x_chin + 0.02 >= xl:
                    zl = z_mand(xl, s) + s * 0.15 * cs
                    self.add(
                        "teeth",
                        _round_cone(
                            (xl - 0.3 * cs, u_alv(xl) - 1.5 * cs, zl),
                            (xl + 0.1 * cs, u_occ(xl) + 1.1 * cs, zl),
                            0.55 * cs,
                            0.13 * cs,
                        ),
                    )


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


_JAW_GAP = 0.012


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
        c = (2.0 * np.arange(size) + 1.0) / size - 1.0
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
    model = _Model(params, seed)
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
    c1 = (2.0 * np.arange(size) + 1.0) / size - 1.0
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
