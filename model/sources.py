"""Where the evaluation's volumes and images come from: the samples of some species, as view volumes
made on the fly from the store's canonical volumes (:class:`ViewSource`) or as the store's x-rays
(:class:`ImageSource`), both indexed globally: ``g = species index · samples_per_species + sample``
(as :class:`model.data.StoreSamples`; sample ↔ (view, mirrored) by :class:`tomodata.views.SampleIndex`).
Also the mean training volume (:func:`mean_volume`) and the evenly spaced evaluation subset.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from tomodata.progress import progress as progress_bar
from tomodata.views import mirror

from .data import VIEW_VOXEL_BYTES, GlobalIndex, torch_view_volumes

__all__ = [
    "ImageSource",
    "ViewSource",
    "mean_volume",
    "release_freed_memory",
    "select_evenly",
    "store_image_blocks",
    "VIEW_BATCH_BYTES",
]


def release_freed_memory() -> None:
    """Hand freed heap blocks back to the system (glibc ``malloc_trim``; elsewhere nothing). The
    evaluation allocates and frees view volumes (8–250 MB) thousands of times; glibc's heap then
    fragments and the resident set creeps up (measured: +0.8 GB over 3,000 training samples of the
    Oracle's scan, 4.3 GB peak at the paper's sizes); trimming between phases and every few blocks
    keeps it flat."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def select_evenly(n_total: int, max_samples: int | None) -> np.ndarray:
    """``max_samples`` indices evenly spaced over ``range(n_total)`` (all of them when None or enough)."""
    if max_samples is None or max_samples >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return np.unique(np.round(np.linspace(0, n_total - 1, max_samples)).astype(np.int64))


def mean_volume(ds, species: Sequence[str]) -> np.ndarray:
    """(Z, Y, X) float32 mean of the canonical volumes of ``species`` (summed in float64, one at a time).

    Its view volume at a sample's view is the ``mean`` baseline: view sampling (trilinear, zero outside)
    is linear in the volume, so this equals the average of the species' view volumes at that view."""
    if not species:
        raise ValueError("no species to average")
    acc: np.ndarray | None = None
    for name in species:
        v = np.asarray(ds.volume(name), dtype=np.float64)
        acc = v.copy() if acc is None else acc + v
    assert acc is not None  # species is not empty
    return (acc / len(species)).astype(np.float32)


#: memory for one torch_view_volumes call of :class:`ViewSource` (its float64 points and temporaries)
VIEW_BATCH_BYTES = 256 << 20


class ViewSource:
    """The samples of some species as view volumes made on the fly (optionally all cached).

    Global sample index ``g = species_index · samples_per_species + sample`` (as
    :class:`model.data.StoreSamples`); sample ``2i`` is view ``i``, ``2i + 1`` its mirror. A view
    volume is :func:`model.data.torch_view_volumes` of the species' canonical volume and the view's
    rotation (the training target); a mirrored sample's is the same array with its rows reversed
    (made once per view, flipped for the mirror).
    """

    def __init__(
        self,
        ds,
        species: Sequence[str],
        *,
        device="cpu",
        block: int = 64,
        view_batch: int | None = None,
        max_volumes: int = 4,
    ):
        if not species:
            raise ValueError("no species to take view volumes from")
        if (view_batch is not None and view_batch < 1) or max_volumes < 1:
            raise ValueError(f"view_batch and max_volumes must be >= 1, got {view_batch}, {max_volumes}")
        self.ds = ds
        self.species = list(species)
        self.device = torch.device(device)
        self.block = int(block)
        self.view_batch = None if view_batch is None else int(view_batch)
        self.max_volumes = int(max_volumes)
        self.samples_per_species = ds.settings.samples_per_species
        self.index = ds.settings.sample_index  # sample <-> (view, mirrored) within a species
        self.gindex = GlobalIndex(len(self.species), self.samples_per_species)
        self._volumes: dict[int, torch.Tensor] = {}  # species index -> canonical volume (LRU, max_volumes)
        self.volume_reads = 0
        self.rotations = torch.from_numpy(np.stack([ds.rotations(n) for n in self.species])).to(self.device)
        self._cache: tuple[int, int, torch.Tensor] | None = None

    def volume(self, s: int) -> torch.Tensor:
        """The canonical (Z, Y, X) volume of species index ``s``, read from the store on first use; at
        most ``max_volumes`` are kept (least recently used dropped), so memory does not grow with the
        number of species."""
        s = int(s)
        v = self._volumes.pop(s, None)
        if v is None:
            v = torch.from_numpy(np.asarray(self.ds.volume(self.species[s]), dtype=np.float32)).to(self.device)
            self.volume_reads += 1
            while len(self._volumes) >= self.max_volumes:
                self._volumes.pop(next(iter(self._volumes)))
        self._volumes[s] = v  # most recently used last
        return v

    def __len__(self) -> int:
        return len(self.gindex)

    def locate(self, g) -> tuple[np.ndarray, np.ndarray]:
        """Global indices → (species index, sample index) (:class:`model.data.GlobalIndex`)."""
        return self.gindex.locate(g)

    def at(self, species: str, sample: int) -> int:
        """The global index of sample ``sample`` of the species named ``species``."""
        return self.gindex.of(self.species.index(species), sample)

    def rotation(self, g: int) -> np.ndarray:
        s, j = self.locate([g])
        view, _ = self.index.to_view(int(j[0]))
        return self.rotations[int(s[0]), view].cpu().numpy()

    def cache(self, *, size: int, depth: int, budget_bytes: int = 1 << 30, progress: str | None = None) -> bool:
        """Make and keep every sample's view volume if they fit ``budget_bytes``; True if cached.
        ``progress``: the name of progress lines in a log, none where None."""
        if self._cache is not None and self._cache[:2] == (size, depth):
            return True
        if len(self) * depth * size * size * 4 > budget_bytes:
            return False
        self._cache = None
        allv = torch.empty((len(self), depth, size, size), dtype=torch.float32, device=self.device)
        starts = range(0, len(self), self.block)
        for a in progress_bar(starts, enabled=progress is not None, desc=progress or "", unit="block"):
            g = np.arange(a, min(len(self), a + self.block))
            allv[a : a + g.size] = self.views(g, size=size, depth=depth)
        self._cache = (size, depth, allv)
        return True

    def views(self, g, *, size: int, depth: int, volume: torch.Tensor | None = None) -> torch.Tensor:
        """(len(g), depth, size, size) float32 view volumes on ``device``, in the order of ``g``.

        ``volume``: a (Z, Y, X) canonical volume to take instead of each sample's species volume, at
        the sample's view and mirror flag (the ``mean`` baseline; never cached)."""
        g = np.asarray(g, dtype=np.int64).reshape(-1)
        if volume is None and self._cache is not None and self._cache[:2] == (size, depth):
            self.locate(g)
            return self._cache[2][torch.from_numpy(g).to(self.device)]
        out = torch.empty((g.size, depth, size, size), dtype=torch.float32, device=self.device)
        if g.size == 0:
            return out
        s, j = self.locate(g)
        view, mirrored = self.index.to_view(j)
        if volume is not None:
            volume = torch.as_tensor(volume, dtype=torch.float32, device=self.device)
        for sp in np.unique(s):
            sel = np.nonzero(s == sp)[0]
            vol = self.volume(int(sp)) if volume is None else volume
            uniq, inv = np.unique(view[sel], return_inverse=True)
            # at most view_batch views per torch_view_volumes call (default: VIEW_BATCH_BYTES of its
            # points and temporaries, VIEW_VOXEL_BYTES per voxel: 5 views at 128³, ~330 at 32³);
            # a view's volume does not depend on what it is batched with
            per = self.view_batch or max(1, VIEW_BATCH_BYTES // (VIEW_VOXEL_BYTES * depth * size * size))
            for u0 in range(0, uniq.size, per):
                u1 = min(uniq.size, u0 + per)
                made = torch_view_volumes(
                    vol[None, None].expand(u1 - u0, 1, *vol.shape),
                    self.rotations[int(sp)][torch.from_numpy(uniq[u0:u1]).to(self.device)],
                    size=size,
                    steps=depth,
                )
                for m in (False, True):
                    part = np.nonzero((mirrored[sel] == m) & (inv >= u0) & (inv < u1))[0]
                    if part.size:
                        v = made[torch.from_numpy(inv[part] - u0).to(self.device)]
                        out[torch.from_numpy(sel[part]).to(self.device)] = mirror(v) if m else v
        return out


def store_image_blocks(
    ds, species: Sequence[str], *, block: int = 256
) -> Callable[[], Iterator[tuple[int, np.ndarray]]]:
    """A factory of iterators over all samples' x-rays of ``species``: ``(first global index, (b, S·S)
    float32)`` blocks of at most ``block`` images (shard-aligned reads), in global index order."""
    n = ds.settings.samples_per_species
    gindex = GlobalIndex(len(species), n)

    def gen():
        for s, name in enumerate(species):
            for a in range(0, n, block):
                b = min(block, n - a)
                imgs = ds.images(name, slice(a, a + b))
                yield gindex.of(s, a), imgs.reshape(b, -1)

    return gen


class ImageSource:
    """The x-rays of some species' samples, in :class:`ViewSource`'s global index order, with the
    interface :func:`model.search.bounded_search` takes (``len``, ``views(g, size=S, depth=1)`` → (len(g), 1, S, S)),
    so that the exact lower-bound search serves the NN baseline. Images are read from
    the store on demand, or all kept (``cache``) when they fit."""

    def __init__(self, ds, species: Sequence[str], *, device="cpu"):
        if not species:
            raise ValueError("no species to take x-rays from")
        self.ds = ds
        self.species = list(species)
        self.device = torch.device(device)
        self.samples_per_species = ds.settings.samples_per_species
        self.gindex = GlobalIndex(len(self.species), self.samples_per_species)
        self.image_size = ds.settings.image_size
        self._all: torch.Tensor | None = None
        self.images_read = 0  # images read from the store by views() (a counter for tests and benchmarks)

    def __len__(self) -> int:
        return len(self.gindex)

    def cache(self, *, budget_bytes: int = 1 << 30, block: int = 256) -> bool:
        """Read and keep every image (float32) if they fit ``budget_bytes``; True if cached."""
        if self._all is not None:
            return True
        S = self.image_size
        if len(self) * S * S * 4 > budget_bytes:
            return False
        allx = torch.empty((len(self), 1, S, S), dtype=torch.float32, device=self.device)
        for a, imgs in store_image_blocks(self.ds, self.species, block=block)():
            allx[a : a + len(imgs), 0] = torch.from_numpy(imgs.reshape(-1, S, S)).to(self.device)
        self._all = allx
        return True

    def views(self, g, *, size: int, depth: int) -> torch.Tensor:
        """(len(g), 1, S, S) float32 x-rays on ``device`` in the order of ``g`` (``size`` must be
        the store's image size and ``depth`` 1: images have no depth)."""
        S = self.image_size
        if size != S or depth != 1:
            raise ValueError(f"x-rays are (1, {S}, {S}); asked for ({depth}, {size}, {size})")
        g = np.asarray(g, dtype=np.int64).reshape(-1)
        s, j = self.gindex.locate(g)
        if self._all is not None:
            return self._all[torch.from_numpy(g).to(self.device)]
        out = torch.empty((g.size, 1, S, S), dtype=torch.float32, device=self.device)
        for sp in np.unique(s):
            m = np.nonzero(s == sp)[0]
            uniq, inv = np.unique(j[m], return_inverse=True)  # sorted, unique reads
            name = self.species[int(sp)]
            if uniq[-1] - uniq[0] + 1 == uniq.size:  # a contiguous run: one slice read (shard-aligned, fast)
                imgs = self.ds.images(name, slice(int(uniq[0]), int(uniq[-1]) + 1))
            else:
                imgs = self.ds.images(name, uniq)
            self.images_read += uniq.size
            imgs = torch.from_numpy(np.asarray(imgs)).to(self.device)
            out[torch.from_numpy(m).to(self.device), 0] = imgs[torch.from_numpy(inv).to(self.device)]
        return out
