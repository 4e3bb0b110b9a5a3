"""The anatomical model's container: signed-distance ops on named fields, plus landmarks.

Each op smooth-unions one primitive of :mod:`.sdf` (``(f, lo, hi, slack)``) into one field of
``_FIELDS`` (float32, in the order the ops were added: the order is part of the output). The parts
of :mod:`.cranium` and :mod:`.jaw` add the ops; :func:`.skull._skull_model` runs them in order.
Anatomical frame: x anterior, u dorsal, z lateral ("left" is +z); lengths in skull lengths L.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .params import SpeciesParams

_FIELDS = ("outer", "cavity", "orbit", "struts", "mandible", "teeth", "petrous", "turb")

Sdf = Callable[..., np.ndarray]  # f(X, U, Z) -> signed distance (skull units)


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
    """Ops plus landmarks (anatomical frame), built once per (params, seed) by ``_skull_model``.

    ``rng`` is the model's seeded generator: the bone texture's waves (``noise``) are its first draws.
    """

    wall: Sdf  # bone wall thickness of the braincase at (X, U, Z), skull units
    turb_axis: tuple  # (nasal cavity start (x, u, z), snout end (x, u, z), snout height / breadth)

    def __init__(self, p: SpeciesParams, rng: np.random.Generator):
        self.p = p
        self.ops: list[_Op] = []
        self.landmarks: dict[str, np.ndarray] = {}
        self.noise = [(rng.uniform(12, 30, 3) * rng.choice([-1, 1], 3), rng.uniform(0, 2 * np.pi, 3)) for _ in range(3)]
        self.clamp = p.soft_tissue_thickness + 0.08

    def add(self, field, prim, k=0.0, offset=None):
        self.ops.append(_Op(field, prim, k, offset))

    def add_all(self, field, prims, k=0.0):
        for prim in prims:
            self.add(field, prim, k)
