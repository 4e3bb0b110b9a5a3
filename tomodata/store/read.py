"""Reading a store: :class:`DatasetStore` (read-only, picklable) and its :class:`Sample`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import numpy as np

from ..files import json_sha256
from ..render import view_volumes
from ..splits import SPLITS
from ..store_markers import species_file_problem
from ..store_settings import StoreSettings
from ..views import mirror
from .layout import _open_array, _open_species_group, _open_store_root, decode_images
from .schema import _pos_int


class Sample(NamedTuple):
    """One training sample.

    image: (S, S) float32 opacity (already mirrored for odd samples); view_volume: (steps, S', S')
    float32 density (rows reversed when mirrored) or None; species, split; sample: index in
    [0, 2 n_views); view: view index; mirrored: bool.
    """

    image: np.ndarray
    view_volume: np.ndarray | None
    species: str
    split: str
    sample: int
    view: int
    mirrored: bool


class DatasetStore:
    """Read-only handle on a store (see :mod:`tomodata.store`). Picklable (re-opens by path)."""

    def __init__(self, path, *, volume_cache: int = 2):
        self.path = str(path)
        self._volume_cache_size = int(volume_cache)
        self._open()

    def _open(self) -> None:
        self._root, self.attrs = _open_store_root(self.path)
        self._table = {e["name"]: e for e in self.attrs["species"]}
        self._arrays: dict[tuple[str, str], Any] = {}
        self._rotations: dict[str, np.ndarray] = {}
        self._volumes: OrderedDict[str, np.ndarray] = OrderedDict()

    def __getstate__(self):
        return {"path": self.path, "volume_cache": self._volume_cache_size}

    def __setstate__(self, state):
        self.path = state["path"]
        self._volume_cache_size = state["volume_cache"]
        self._open()

    def __repr__(self) -> str:
        return f"DatasetStore({self.path!r}, species={len(self._table)}, n_views={self.attrs['n_views']})"

    def _array(self, name: str, arr: str):
        self._check_name(name)
        key = (name, arr)
        if key not in self._arrays:
            self._arrays[key] = _open_array(self.path, name, arr, "r", self.attrs["spec_version"])
        return self._arrays[key]

    def _check_name(self, name: str) -> None:
        if name not in self._table:
            raise ValueError(f"unknown species {name!r}; the store's species are {list(self._table)}")

    @property
    def settings(self) -> StoreSettings:
        """The store's rendering constants and view set, typed (:class:`tomodata.store_settings.StoreSettings`)."""
        return StoreSettings.from_attrs(self.attrs)

    def species_names(self, split: str | None = None, *, complete_only: bool = False) -> list[str]:
        """Species in table order, optionally of one split and/or only those marked complete."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        names = [n for n, e in self._table.items() if split is None or e["split"] == split]
        if complete_only:
            names = [n for n in names if self.is_complete(n)]
        return names

    def species_info(self, name: str) -> dict:
        """The species' row of the table (name, split, source, source_checksum, original_shape, spacing_mm, ...)."""
        self._check_name(name)
        return dict(self._table[name])

    def species_attrs(self, name: str) -> dict:
        """The species group's attributes, read fresh: ``status`` and, once complete, ``complete``
        (with ``sha256``: array name → hex digest of its stored values)."""
        self._check_name(name)
        return _open_species_group(self.path, name).attrs.asdict()

    def content_id(self, names: list[str] | None = None) -> str:
        """A content id of species ``names`` (default: every species): the sha256 of the canonical JSON
        of their stored checksums (``complete.sha256``; None for a species not complete)."""
        names = self.species_names() if names is None else names
        return json_sha256({n: self.species_attrs(n).get("complete", {}).get("sha256") for n in names})

    def status(self, name: str) -> str:
        """``"pending"``, ``"writing"`` or ``"complete"`` (read fresh from the species' zarr.json)."""
        self._check_name(name)
        a = self.species_attrs(name)
        return "complete" if a.get("status") == "complete" and "complete" in a else a.get("status", "unknown")

    def is_complete(self, name: str) -> bool:
        return self.status(name) == "complete"

    def require_complete(self, names: list[str]) -> None:
        """``ValueError`` naming the species of ``names`` that are not complete, or whose files are not
        all there or have a damaged shard index (:func:`tomodata.store_markers.species_file_problem`:
        zarr would read a missing chunk file as fill values, and fail on a damaged shard in the middle
        of a run). File sizes and shard indexes only; damaged contents are ``tomo validate``'s to find."""
        incomplete = [n for n in names if not self.is_complete(n)]
        if incomplete:
            raise ValueError(f"species not complete in {self.path}: {incomplete} (run tomo validate)")
        damaged = {n: p for n in names if (p := species_file_problem(self.path, n, self.attrs))}
        if damaged:
            raise ValueError(
                f"species of {self.path} lack data files (read as zeros) or have damaged ones: "
                + "; ".join(f"{n}: {p}" for n, p in damaged.items())
                + ". Render them again (tomo render-species, or rerun the workflow)"
            )

    def n_samples(self, name: str) -> int:
        """Samples of a species: 2 n_views."""
        self._check_name(name)
        return self.settings.samples_per_species

    def volume(self, name: str) -> np.ndarray:
        """(V, V, V) float32 density in [0, 1], vol[z, y, x] (cached, do not modify in place)."""
        if name in self._volumes:
            self._volumes.move_to_end(name)
            return self._volumes[name]
        vol = np.asarray(self._read(name, "volume", "its volume"), dtype=np.float32)
        if self._volume_cache_size > 0:
            self._volumes[name] = vol
            while len(self._volumes) > self._volume_cache_size:
                self._volumes.popitem(last=False)
        return vol

    def rotations(self, name: str) -> np.ndarray:
        """(n_views, 3, 3) float64 rotations, camera -> volume."""
        if name not in self._rotations:
            self._rotations[name] = np.asarray(self._read(name, "rotations", "its rotations"), dtype=np.float64)
        return self._rotations[name]

    def images(self, name: str, indices) -> np.ndarray:
        """Float32 opacity of samples: an int gives (S, S); a slice or int sequence gives (k, S, S).
        A shard that cannot be decoded raises RuntimeError naming the store, species and samples."""
        a = self._array(name, "images")
        if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            i = int(indices)
            if not 0 <= i < a.shape[0]:
                raise IndexError(f"sample {i} out of range [0, {a.shape[0]})")
            return self._decoded(name, i, lambda: a[i])
        if isinstance(indices, slice):
            return self._decoded(name, indices, lambda: a[indices])
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("indices must be an int, a slice or a 1-D sequence of ints")
        if idx.size and (idx.min() < 0 or idx.max() >= a.shape[0]):
            raise IndexError(f"sample indices out of range [0, {a.shape[0]})")
        if idx.size == 0:
            return np.zeros((0,) + a.shape[1:], dtype=np.float32)
        return self._decoded(name, idx.tolist(), lambda: a.oindex[idx])

    def _decoded(self, name: str, which, read) -> np.ndarray:
        return decode_images(self._guarded(name, f"samples {which}", read))

    def _read(self, name: str, array: str, what: str) -> np.ndarray:
        """The whole array ``array`` of species ``name``, read with :meth:`_guarded`."""
        a = self._array(name, array)
        return self._guarded(name, what, lambda: a[...])

    def _guarded(self, name: str, what: str, read):
        """``read()``; a chunk that cannot be decoded raises RuntimeError naming the store, the species
        and ``what`` was read, and the command that names the species to render again."""
        try:
            return read()
        except Exception as e:  # noqa: BLE001 - zarr's codecs raise many kinds on a damaged chunk or shard
            raise RuntimeError(
                f"{self.path}: species {name}, {what}: cannot be read ({type(e).__name__}: {e}); "
                f"a damaged shard or chunk? tomo validate {self.path} names the species to render again"
            ) from e

    def sample(
        self, name: str, i: int, *, with_volume: bool = True, view_size: int | None = None, backend: str = "auto"
    ) -> Sample:
        """Sample ``i`` of a species: its image and (``with_volume``) its view volume.

        The view volume is ``tomodata.render.view_volumes(volume, R[None], size=view_size or
        volume_size, steps=attrs["steps"])[0]``, rows reversed for mirrored samples:
        (steps, size, size) float32.
        """
        self._check_name(name)
        st = self.settings
        view, mirrored = st.sample_index.to_view(int(i) if isinstance(i, (int, np.integer)) else i)
        image = self.images(name, int(i))
        vv = None
        if with_volume:
            size = st.volume_size if view_size is None else _pos_int(view_size, "view_size")
            rot = self.rotations(name)[view][None]
            vv = view_volumes(self.volume(name), rot, size=size, steps=st.steps, backend=backend)[0]
            if mirrored:
                vv = mirror(vv)
            vv = np.ascontiguousarray(vv, dtype=np.float32)
        return Sample(image, vv, name, self._table[name]["split"], int(i), view, mirrored)


def open_store(path, *, volume_cache: int = 2) -> DatasetStore:
    """Open a store read-only; see :class:`DatasetStore`."""
    return DatasetStore(path, volume_cache=volume_cache)
