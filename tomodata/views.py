"""Camera views on the positive z hemisphere, and the sample index <-> (view, mirrored) map.

Conventions (``docs/geometry.md``): a view is a rotation ``R`` (3×3, det +1) that maps
camera coordinates (u, v, w) to volume coordinates (x, y, z), ``p = R @ (u, v, w)``. Its third column
is the ray direction ``d`` with ``d_z >= 0``.

Scheme ``"fibonacci-jitter-v1"`` (what :func:`hemisphere_views` makes):

* Directions: a spherical Fibonacci lattice on the hemisphere. Cell ``i`` of ``n`` is the band
  ``z ∈ [(n-1-i)/n, (n-i)/n]`` (equal areas, since area on a sphere is uniform in z); its direction has
  ``z_i = 1 - (i + 0.5 + j_i)/n`` with a seeded jitter ``j_i ~ U(-0.25, 0.25)`` and azimuth
  ``phi_i = phi_0 + 2π i / golden_ratio²`` with a seeded offset ``phi_0 ~ U(0, 2π)``. The bands are
  disjoint, so no two directions repeat; the directions are area-uniform; the seed makes it reproducible.
* Roll (the in-image orientation): the spherical frame at ``d``: ``u = e_theta``, ``v = e_phi``,
  ``w = e_r = d`` with ``theta = arccos(z)``. This frame is right-handed (``u × v = d``) and defined
  everywhere on the hemisphere, the pole included (there it is a rotation by ``phi`` about z).

View sets (:func:`species_views`, the store's ``view_scheme.sets``): ``"shared"`` (the default, every
species is rendered from ``hemisphere_views(n, seed=seed)``) or ``"per_species"``: species ``name``
from ``hemisphere_views(n, seed=species_view_seed(seed, name))``, so that a held-out species is also
seen from poses no training species was rendered from.

Samples (this module is their convention's one home): a species with ``n`` views has ``2n`` samples,
interleaved: sample ``2i`` is view ``i`` and sample ``2i + 1`` is view ``i`` mirrored (:func:`mirror`:
image rows reversed, v → −v; view-volume rows reversed). :class:`SampleIndex` maps between them;
:func:`sample_to_view` and :func:`view_to_sample` are its one-call forms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "cell_centres",
    "VIEW_SCHEME",
    "VIEW_SCHEME_RECIPE",
    "SampleIndex",
    "mirror",
    "hemisphere_views",
    "species_view_seed",
    "species_views",
    "VIEW_SETS",
    "DEFAULT_VIEW_SETS",
    "view_sets_of",
    "SPECIES_SEED_RECIPE",
    "rotation_from_direction",
    "sample_to_view",
    "view_to_sample",
    "check_rotations",
    "view_directions",
]

VIEW_SCHEME = "fibonacci-jitter-v1"
# the scheme's draws and formulas, enough to re-derive the rotations without this code (the dataset card
# quotes it; the rotations are stored, so a user never needs to)
VIEW_SCHEME_RECIPE = (
    "rng = numpy.random.default_rng(seed); phi_0 = rng.uniform(0, 2 pi), then j = rng.uniform(-0.25, 0.25, "
    "size=n); for i = 0..n-1: z_i = 1 - (i + 0.5 + j_i)/n, phi_i = phi_0 + 2 pi i / g^2 (g the golden ratio), "
    "s_i = sqrt(max(0, 1 - z_i^2)), d_i = (s_i cos phi_i, s_i sin phi_i, z_i); R_i = [e_theta | e_phi | d_i] "
    "with theta = arccos(z_i), phi = atan2(d_y, d_x), e_theta = (cos theta cos phi, cos theta sin phi, "
    "-sin theta), e_phi = (-sin phi, cos phi, 0)"
)
_GOLDEN = (1.0 + 5.0**0.5) / 2.0


def cell_centres(n: int) -> np.ndarray:
    """(n,) float64: the normalised coordinates ``(2i + 1)/n − 1`` of the centres of ``n`` equal cells
    spanning [−1, 1] (docs/geometry.md): voxel centres along a cube axis, pixel centres along an
    image axis, a ray's sample midpoints ``w_k``."""
    return (2.0 * np.arange(n) + 1.0) / n - 1.0


def rotation_from_direction(d: np.ndarray) -> np.ndarray:
    """Rotations whose third column is the unit direction ``d`` (..., 3), in the spherical frame.

    Returns (..., 3, 3) float64 with columns ``(e_theta, e_phi, d)``. ``d`` is normalised first.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.shape[-1] != 3:
        raise ValueError(f"directions must have a last axis of 3, got shape {d.shape}")
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norm)) or np.any(norm == 0):
        raise ValueError("directions must be finite and non-zero")
    d = d / norm
    z = np.clip(d[..., 2], -1.0, 1.0)
    theta = np.arccos(z)
    phi = np.arctan2(d[..., 1], d[..., 0])
    ct, st, cp, sp = np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
    e_theta = np.stack([ct * cp, ct * sp, -st], axis=-1)
    e_phi = np.stack([-sp, cp, np.zeros_like(sp)], axis=-1)
    e_r = np.stack([st * cp, st * sp, ct], axis=-1)
    return np.stack([e_theta, e_phi, e_r], axis=-1)


def hemisphere_views(n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` camera rotations with area-uniform directions on the positive z hemisphere.

    Args:
        n: number of views (> 0); the paper uses 1,332.
        seed: seed of the lattice's azimuth offset and jitter; the same (n, seed) always gives the
            same rotations, bit for bit.

    Returns:
        (n, 3, 3) float64 rotations (camera → volume, det +1), third column ``d`` with ``d_z > 0``.
        Scheme: :data:`VIEW_SCHEME` (see the module docstring).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be an integer number of views, got {n!r}")
    n = int(n)
    if n <= 0:
        raise ValueError(f"n must be > 0 views, got {n}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    phi0 = rng.uniform(0.0, 2.0 * np.pi)
    jitter = rng.uniform(-0.25, 0.25, size=n)
    i = np.arange(n, dtype=np.float64)
    z = 1.0 - (i + 0.5 + jitter) / n
    phi = phi0 + 2.0 * np.pi * i / _GOLDEN**2
    s = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    d = np.stack([s * np.cos(phi), s * np.sin(phi), z], axis=-1)
    return rotation_from_direction(d)


#: how a store's species share their views (``view_scheme.sets``): one set for all, or one per species
VIEW_SETS = ("shared", "per_species")
#: the default of :data:`VIEW_SETS`, which records and attributes leave out (every store before per-species
#: views has no ``sets``): read them with :func:`view_sets_of`
DEFAULT_VIEW_SETS = "shared"
#: the per-species seed in words (the dataset card quotes it)
SPECIES_SEED_RECIPE = (
    'seed of species NAME = int.from_bytes(sha256(f"{seed}:{NAME}".encode("utf-8")).digest()[:8], "little")'
)


def view_sets_of(record: Mapping[str, Any], key: str = "sets") -> str:
    """The view sets ``record`` names: a store's ``view_scheme`` attribute (``key="sets"``) or a settings
    record (``key="view_sets"``); absent is :data:`DEFAULT_VIEW_SETS`. ValueError naming the value where
    it is not one of :data:`VIEW_SETS` (``None`` included: a malformed ``sets: null`` is refused as such)."""
    sets = record.get(key, DEFAULT_VIEW_SETS)
    if not isinstance(sets, str) or sets not in VIEW_SETS:
        raise ValueError(f"{key} must be one of {list(VIEW_SETS)}, got {sets!r}")
    return sets


def species_view_seed(seed: int, name: str) -> int:
    """The view seed of species ``name`` in a store with per-species view sets (:data:`SPECIES_SEED_RECIPE`):
    an integer in [0, 2⁶⁴) that depends only on the store's ``seed`` and the species' name (not on the
    order or number of species, so adding a species changes no other species' views)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a species name is needed for its view seed, got {name!r}")
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def species_views(n: int, *, seed: int, name: str, view_sets: str = DEFAULT_VIEW_SETS) -> np.ndarray:
    """(n, 3, 3) float64: the rotations of species ``name`` in a store of ``view_sets`` (:data:`VIEW_SETS`)
    and view ``seed``: ``hemisphere_views(n, seed=seed)`` for ``"shared"``, with
    :func:`species_view_seed` for ``"per_species"``."""
    if view_sets == DEFAULT_VIEW_SETS:
        return hemisphere_views(n, seed=seed)
    if view_sets == "per_species":
        return hemisphere_views(n, seed=species_view_seed(seed, name))
    raise ValueError(f"view_sets must be one of {list(VIEW_SETS)}, got {view_sets!r}")


def view_directions(rotations: np.ndarray) -> np.ndarray:
    """Ray directions (n, 3) of rotations (n, 3, 3): their third columns."""
    return np.asarray(rotations)[..., :, 2]


def mirror(x):
    """The mirrored sample of an image or view volume: axis −2 reversed (rows, v → −v).

    Images (..., S, S): ``img[..., ::-1, :]``; view volumes (..., steps, S', S'): ``vv[..., ::-1, :]``.
    A numpy array gives a reversed view of itself (no copy); anything else with a ``flip`` method (a
    torch tensor; tomodata does not import torch) gives ``x.flip(-2)`` (a copy, same device and dtype).
    """
    if not isinstance(x, np.ndarray) and hasattr(x, "flip"):
        return x.flip(-2)
    a = np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"mirror needs an array of at least 2 dimensions (..., rows, cols), got shape {a.shape}")
    return a[..., ::-1, :]


@dataclass(frozen=True)
class SampleIndex:
    """The ``2 n_views`` samples of a species with ``n_views`` views, interleaved: sample ``2i`` is
    view ``i`` and sample ``2i + 1`` is view ``i`` mirrored (:func:`mirror`). Methods take ints or
    integer arrays (vectorised)."""

    n_views: int

    @property
    def n_samples(self) -> int:
        """Samples of the species: every view and its mirror."""
        return 2 * self.n_views

    def to_view(self, sample):
        """Sample index/indices in ``[0, 2 n_views)`` → ``(view, mirrored)``: ``(int, bool)`` for an
        int, two arrays (int, bool) for an integer array; ``ValueError`` when out of range or not integers."""
        s = np.asarray(sample)
        if not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"sample indices must be integers, got dtype {s.dtype}")
        if np.any(s < 0) or np.any(s >= self.n_samples):
            raise ValueError(f"sample index out of range [0, {self.n_samples}) for {self.n_views} views")
        view, mirrored = s // 2, (s % 2).astype(bool)
        if s.ndim == 0:
            return int(view), bool(mirrored)
        return view, mirrored

    @staticmethod
    def to_sample(view, mirrored) -> np.ndarray | int:
        """``(view, mirrored)`` → sample index ``2 · view + mirrored`` (int or integer array)."""
        out = 2 * np.asarray(view) + np.asarray(mirrored).astype(np.int64)
        return int(out) if np.ndim(out) == 0 else out

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(view, mirrored)`` of every sample in order: (2 n_views,) int64 and bool arrays."""
        return self.to_view(np.arange(self.n_samples))

    @staticmethod
    def view_slice(start: int, stop: int) -> slice:
        """The views of samples ``start .. stop - 1``, a run of whole pairs (``start``, ``stop`` even)."""
        if start % 2 or stop % 2:
            raise ValueError(f"samples {start}:{stop} are not whole view pairs (start and stop must be even)")
        return slice(start // 2, stop // 2)

    @staticmethod
    def interleave(plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        """Samples of views (k, ...) and of their mirrors (k, ...) → (2k, ...) in sample order."""
        out = np.empty((2 * plain.shape[0],) + plain.shape[1:], dtype=plain.dtype)
        out[0::2] = plain
        out[1::2] = mirrored
        return out

    @staticmethod
    def split(samples):
        """Inverse of :meth:`interleave`: samples (2k, ...) → (plain, mirrored), each (k, ...) (views, no copy)."""
        return samples[0::2], samples[1::2]


def sample_to_view(sample, n_views: int):
    """Map sample index/indices in ``[0, 2 n_views)`` to ``(view, mirrored)`` (:meth:`SampleIndex.to_view`).

    Interleaved: sample ``2i`` is view ``i``, sample ``2i + 1`` is view ``i`` mirrored.
    Works on ints (returns ``(int, bool)``) and integer arrays (returns two arrays).
    """
    return SampleIndex(n_views).to_view(sample)


def view_to_sample(view, mirrored) -> np.ndarray | int:
    """Inverse of :func:`sample_to_view`: ``2 * view + mirrored`` (:meth:`SampleIndex.to_sample`)."""
    return SampleIndex.to_sample(view, mirrored)


def check_rotations(rotations, *, atol: float = 1e-5, hemisphere: bool = False) -> np.ndarray:
    """Validate and return rotations as a (n, 3, 3) float64 array.

    Accepts one (3, 3) matrix or a stack (n, 3, 3). Raises ``ValueError`` naming the first bad matrix
    if a matrix is not finite, not orthonormal (``|RᵀR − I| > atol``), has det −1 (a reflection), or,
    with ``hemisphere=True``, looks along negative z.
    """
    r = np.asarray(rotations)
    if r.dtype == object or not (np.issubdtype(r.dtype, np.floating) or np.issubdtype(r.dtype, np.integer)):
        raise ValueError(f"rotations must be a real numeric array, got dtype {r.dtype}")
    r = r.astype(np.float64)
    if r.shape == (3, 3):
        r = r[None]
    if r.ndim != 3 or r.shape[1:] != (3, 3):
        raise ValueError(f"rotations must have shape (n, 3, 3) or (3, 3), got {np.shape(rotations)}")
    if r.shape[0] == 0:
        raise ValueError("rotations is empty: need at least one view")
    if not np.all(np.isfinite(r)):
        bad = int(np.argmax(~np.all(np.isfinite(r), axis=(1, 2))))
        raise ValueError(f"rotation {bad} has NaN or inf entries")
    err = np.abs(np.einsum("nji,njk->nik", r, r) - np.eye(3)).max(axis=(1, 2))
    if np.any(err > atol):
        bad = int(np.argmax(err > atol))
        raise ValueError(f"rotation {bad} is not orthonormal (max |RᵀR − I| = {err[bad]:.3g})")
    det = np.linalg.det(r)
    if np.any(det < 0):
        bad = int(np.argmax(det < 0))
        raise ValueError(f"rotation {bad} has det {det[bad]:.3f}: a reflection, not a rotation")
    if hemisphere and np.any(r[:, 2, 2] < -atol):
        bad = int(np.argmax(r[:, 2, 2] < -atol))
        raise ValueError(f"rotation {bad} looks along negative z (d_z = {r[bad, 2, 2]:.3f})")
    return r
