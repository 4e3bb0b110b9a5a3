"""Training data over the dataset store: x-rays from the store, view volumes made on the fly.

* :class:`StoreSamples` — a torch ``Dataset`` of one split's samples. An item is the x-ray
  (1, S, S) float32 opacity plus what is needed to make its target: the species index, the view's
  rotation and the mirror flag. Workers open the store themselves (the store handle pickles by path),
  so DataLoader workers are safe with zarr under any start method; ``spawn``/``forkserver`` is used.
* :func:`torch_view_volumes` — the targets, batched with ``grid_sample`` on the training device from
  the species' canonical volumes (equal to :func:`tomodata.render.view_volumes` within 1e-5).
* :func:`batch_indices` — the deterministic, resumable sample order: batch ``s`` of a run depends only
  on (seed, s), so a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from tomodata.store import DatasetStore, open_store
from tomodata.views import cell_centres, mirror

from ._sample_cpu import sample_views

__all__ = [
    "GlobalIndex",
    "StoreSamples",
    "torch_view_volumes",
    "VIEW_VOXEL_BYTES",
    "batch_indices",
    "SpeciesVolumes",
    "resize_xrays",
]


def torch_view_volumes(
    volumes: torch.Tensor,
    rotations: torch.Tensor,
    *,
    size: int,
    steps: int,
    mirrored: torch.Tensor | None = None,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """View-aligned volumes of a batch, as :func:`tomodata.render.view_volumes` (docs/geometry.md).

    Args:
        volumes: (B, 1, Z, Y, X) float densities, one volume per sample (expand a species' volume);
            with ``index``, (N, 1, Z, Y, X): the volumes the samples pick from.
        rotations: (B, 3, 3) camera → volume rotations.
        size: output side S' (rows = v, columns = u).
        steps: depth slices (w midpoints, front to back).
        mirrored: optional (B,) bool; mirrored samples get their rows reversed after sampling
            (:func:`tomodata.views.mirror`, v → −v), exactly as the store's mirrored x-rays are (at
            sizes whose float64 pixel centres are not exactly symmetric, sampling at −v instead could
            differ in the last bit).
        index: optional (B,) integer: sample ``b`` is of ``volumes[index[b]]`` (on the CPU read in
            place: the batch's volumes are not copied; on a GPU gathered, which is cheap there).

    Returns:
        (B, steps, S', S') float32: ``out[b, k, r, c] = µ_b(R_b @ (u_c, v_r, w_k))``, trilinear with zero
        padding (``grid_sample(align_corners=False, padding_mode="zeros")``), 0 outside the cube.
    """
    if volumes.ndim != 5 or volumes.shape[1] != 1:
        raise ValueError(f"volumes must be (B, 1, Z, Y, X), got {tuple(volumes.shape)}")
    n = volumes.shape[0] if index is None else index.shape[0]
    if rotations.shape != (n, 3, 3):
        raise ValueError(f"rotations must be (B, 3, 3) with B = {n}, got {tuple(rotations.shape)}")
    which = None  # sample b of volume b
    if index is not None:
        which = index.to(device="cpu", dtype=torch.int64)
        if index.ndim != 1 or (n and not 0 <= int(which.min()) <= int(which.max()) < volumes.shape[0]):
            raise ValueError(f"index must be (B,) in [0, {volumes.shape[0]}), got {which.tolist()}")
    rot = rotations.to(device=volumes.device, dtype=torch.float64)
    out = _sample_views(volumes, which, rot, size, steps)
    if mirrored is not None:
        m = mirrored.to(dtype=torch.bool)
        if bool(m.any()):  # on the flags' own device: the loader's CPU tensor, so no wait for a GPU
            m = m.to(out.device)
            out[m] = mirror(out[m])
    return out


def _sample_views(
    volumes: torch.Tensor, which: torch.Tensor | None, rot: torch.Tensor, size: int, steps: int
) -> torch.Tensor:
    """(B, steps, S', S') float32 view volumes of (N, 1, Z, Y, X) ``volumes``, sample ``b`` of volume
    ``which[b]`` ((B,) int64 on the CPU; None: of volume ``b``), at (B, 3, 3) float64 ``rot``."""
    dev = volumes.device
    pts = torch.einsum("bij,kmnj->bkmni", rot, _camera_grid(size, steps, str(dev)))  # (B, steps, S, S, 3) x, y, z
    if dev.type == "cpu":  # the same bits as grid_sample below, several threads per view (model/_sample_cpu.py)
        vols = volumes[:, 0].float()
        if vols.stride(0) == 0:  # an expanded volume: read the one, not B copies
            vols, which = vols[:1], torch.zeros(rot.shape[0], dtype=torch.int64)
        elif which is None:
            which = torch.arange(rot.shape[0])
        out = torch.empty((rot.shape[0], steps, size, size), dtype=torch.float32)
        sample_views(
            vols.contiguous().numpy(),
            which.contiguous().numpy(),
            pts.permute(0, 4, 1, 2, 3).contiguous().numpy(),
            out.numpy(),
        )
        return out
    if which is not None:
        volumes = volumes[which.to(dev)]  # grid_sample takes one volume per item
    grid = pts.float()
    inside = pts.abs_().amax(dim=-1) <= 1.0  # in float64, as the renderer decides; pts is spent
    del pts
    out = F.grid_sample(volumes.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].mul_(inside)


@dataclass(frozen=True)
class GlobalIndex:
    """The samples of a list of species in one index: ``g = s · samples_per_species + j`` for sample
    ``j`` (:class:`tomodata.views.SampleIndex`) of the ``s``-th species of the list."""

    n_species: int
    samples_per_species: int

    def __len__(self) -> int:
        return self.n_species * self.samples_per_species

    def locate(self, g) -> tuple[np.ndarray, np.ndarray]:
        """Global indices (an int or an integer array) → (species index, sample index), int64 arrays
        of ``g``'s shape; IndexError outside [0, len)."""
        g = np.asarray(g, dtype=np.int64)
        if g.size and (g.min() < 0 or g.max() >= len(self)):
            bad = int(g.min()) if g.min() < 0 else int(g.max())
            raise IndexError(f"sample index {bad} out of range [0, {len(self)})")
        return g // self.samples_per_species, g % self.samples_per_species

    def of(self, species: int, sample: int) -> int:
        """The global index of sample ``sample`` of the ``species``-th species."""
        if not (0 <= species < self.n_species and 0 <= sample < self.samples_per_species):
            raise IndexError(
                f"species {species} / sample {sample} out of range ({self.n_species} species, "
                f"{self.samples_per_species} samples each)"
            )
        return int(species) * self.samples_per_species + int(sample)


#: bytes per output voxel of one :func:`torch_view_volumes` call at its peak (float64 points, float32
#: grid, mask, output): callers size their batches with it
VIEW_VOXEL_BYTES = 48


@lru_cache(maxsize=4)
def _camera_grid(size: int, steps: int, device: str) -> torch.Tensor:
    """(steps, S, S, 3) float64 camera coordinates (u, v, w) of the voxel midpoints in [−1, 1]
    (read-only: shared between calls)."""
    uv = torch.from_numpy(cell_centres(size)).to(device)
    w = torch.from_numpy(cell_centres(steps)).to(device)
    ww, vv, uu = torch.meshgrid(w, uv, uv, indexing="ij")
    return torch.stack([uu, vv, ww], dim=-1)


def resize_xrays(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, S, S) → (B, C, size, size): area averaging down, bilinear (pixel centres) up.

    Used for x-rays (C = 1) and, laterally, for view volumes (C = depth slices)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def batch_indices(step: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Sample indices of global batch ``step``: consecutive slices of seeded per-epoch permutations.

    Position ``p = step · batch + j`` is sample ``perm(seed, p // n)[p % n]``; a run resumed at any
    step therefore sees exactly the batches an uninterrupted run sees.
    """
    if n <= 0:
        raise ValueError("the split has no samples")
    pos = step * batch + np.arange(batch, dtype=np.int64)
    epochs = pos // n
    out = np.empty(batch, dtype=np.int64)
    for e in np.unique(epochs):
        sel = epochs == e
        out[sel] = _permutation(seed, int(e), n)[pos[sel] % n]
    return out


@lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class StoreSamples(torch.utils.data.Dataset):
    """One split of a dataset store as a map-style dataset.

    Item ``i`` → dict with ``xray`` (1, S, S) float32 opacity, ``species`` (int, index into
    :attr:`species`), ``view`` (int), ``mirrored`` (bool), ``rotation`` (3, 3) float64 and ``index``.
    """

    def __init__(self, store, split: str = "train", *, species: list[str] | None = None):

        self.store_path = str(store)
        ds = open_store(store)
        self.attrs = ds.attrs
        names = species if species is not None else ds.species_names(split=split)
        if not names:
            raise ValueError(f"the store {store} has no species in split {split!r}")
        ds.require_complete(names)
        self.split = split
        self.species = list(names)
        self.samples_per_species = ds.settings.samples_per_species
        self.index = ds.settings.sample_index  # sample <-> (view, mirrored) within a species
        self.gindex = GlobalIndex(len(self.species), self.samples_per_species)  # item <-> (species, sample)
        self.rotations = np.stack([ds.rotations(n) for n in self.species])  # (n_species, n_views, 3, 3)
        self._ds: DatasetStore | None = None

    def __len__(self) -> int:
        return len(self.gindex)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None  # each worker opens the store itself
        return state

    def _store(self):
        if self._ds is None:
            self._ds = open_store(self.store_path)
        return self._ds

    def locate(self, i: int) -> tuple[int, int]:
        """Index → (species index, sample index within the species)."""
        s, j = self.gindex.locate(int(i))
        return int(s), int(j)

    def __getitem__(self, i: int) -> dict:
        s, j = self.locate(i)
        img = self._store().images(self.species[s], j)
        view, mirrored = self.index.to_view(int(j))
        return dict(
            xray=torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None],
            species=s,
            view=view,
            mirrored=mirrored,
            rotation=torch.from_numpy(self.rotations[s, view]),
            index=int(i),
        )

    def volumes(self) -> torch.Tensor:
        """All species' canonical volumes, (n_species, 1, V, V, V) float32 (CPU)."""
        ds = self._store()
        return torch.from_numpy(np.stack([ds.volume(n) for n in self.species]))[:, None]


class SpeciesVolumes:
    """The species' volumes on the training device, and the targets of a batch from them."""

    def __init__(self, dataset: StoreSamples, device, *, size: int, steps: int):
        self.volumes = dataset.volumes().to(device)
        self.size, self.steps = size, steps

    def targets(self, batch: dict) -> torch.Tensor:
        """(B, steps, size, size) view volumes of a collated batch."""
        return torch_view_volumes(
            self.volumes,
            batch["rotation"],
            size=self.size,
            steps=self.steps,
            mirrored=batch["mirrored"],
            index=batch["species"],
        )


def loader_workers_context(num_workers: int):
    """The multiprocessing context for DataLoader workers: forkserver where available, else spawn."""
    if num_workers <= 0:
        return None

    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


def bench_loader(store, *, split: str = "train", batch: int = 16, batches: int = 20, num_workers: int = 0) -> float:
    """Samples per second that a DataLoader over the store delivers (x-rays only; targets are made on
    the training device)."""

    ds = StoreSamples(store, split)
    sampler = [batch_indices(s, batch, len(ds), 0).tolist() for s in range(batches)]
    dl = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, num_workers=num_workers, multiprocessing_context=loader_workers_context(num_workers)
    )
    it = iter(dl)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for b in it:
        n += b["xray"].shape[0]
    return n / max(time.perf_counter() - t0, 1e-9) if n else math.nan
