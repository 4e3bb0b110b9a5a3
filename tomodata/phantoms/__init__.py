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

Modules: :mod:`.params` (the parameter vector, species and specimen sampling, species names),
:mod:`.sdf` (signed-distance primitives), :mod:`.fields` (the model's op list), :mod:`.cranium` and
:mod:`.jaw` (the anatomical parts), :mod:`.skull` (the recipe, grid evaluation, fit and volumes).
"""

from __future__ import annotations

from .params import PARAM_RANGES, SpeciesParams, make_species_table, species_name, species_params, specimen_params
from .skull import BONE_MAX, FIT_RADIUS, PETROUS_DENSITY, TEETH_DENSITY, skull_landmarks, skull_parts, skull_volume

__all__ = [
    "SpeciesParams",
    "PARAM_RANGES",
    "species_params",
    "specimen_params",
    "species_name",
    "skull_volume",
    "skull_parts",
    "skull_landmarks",
    "make_species_table",
    "FIT_RADIUS",
    "BONE_MAX",
    "PETROUS_DENSITY",
    "TEETH_DENSITY",
]
