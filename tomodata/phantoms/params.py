"""Species parameters: the :class:`SpeciesParams` vector, its ranges, and seeded sampling of
species (blends of archetypes) and of specimens within a species.

Lengths are in units of the skull length L (occiput to snout tip), ratios are marked "rel.";
``skull_length_mm`` is the physical length in mm (metadata). All draws are deterministic given the
ids and seeds (``numpy.random.default_rng``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import zlib
from typing import Any

import numpy as np


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


def species_name(species_id: int) -> str:
    """The id of procedural species ``species_id`` in tables, manifests and stores: ``procedural_07``."""
    return f"procedural_{species_id:02d}"


def make_species_table(n_species: int, *, seed: int = 0) -> list[tuple[str, SpeciesParams]]:
    """``[("procedural_00", params), ...]`` for species 0 … n_species−1 (names: :func:`species_name`)."""
    n_species = _check_int("n_species", n_species, minimum=1)
    return [(species_name(i), species_params(i, seed=seed)) for i in range(n_species)]
