"""What ``tomo render``, ``tomo build-demo`` and ``tomo render-species`` render: a density volume read
from a file (:func:`load_volume`) and its x-rays, rendered in batches of views with a progress bar
(:func:`render_batched`); one species' x-rays rendered into a store (:func:`render_species`: the
workflow's job, ``tomo build-demo`` and ``tomo bench dataset`` share it).

Volumes are float32 density ``vol[z, y, x]`` in [0, 1]; rotations (n, 3, 3); images (n, size, size)
float32 opacity (:func:`tomodata.render.render_xrays`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import atomic_write, write_json
from .ingest import cube_specimen
from .io import read_array
from .progress import progress
from .render import render_xrays, resolve_backend
from .store import open_store, write_species

__all__ = ["VolumeFileError", "load_volume", "save_volume", "render_batched", "render_species", "save_render"]


class VolumeFileError(ValueError):
    """A volume file that is missing, or an .npz whose volume cannot be told apart."""


def load_volume(path: Path) -> np.ndarray:
    """A density volume: .npy/.npz as stored (key ``volume``, or the only array); any other scan
    format through the ingest path (``read_volume`` + ``to_cube``, 128³). :class:`VolumeFileError`
    where the file is missing or an .npz holds several arrays and none named ``volume``."""
    if not path.exists():
        raise VolumeFileError(f"volume file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":  # with read_volume's checks: 3-D, ≥ 2 voxels per axis, not empty, native order
        return read_array(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "volume" in keys:
                return z["volume"]
            if len(keys) == 1:
                return z[keys[0]]
            raise VolumeFileError(f"{path} holds arrays {keys}; name the volume 'volume'")
    # movies, image folders, TIFF, DICOM, NRRD, NIfTI → the canonical cube
    return cube_specimen(path, allow_default_spacing=True)[0]


def save_volume(path, vol: np.ndarray) -> Path:
    """Write ``vol`` to ``path`` (suffix ``.npy``: as it is; ``.npz``: compressed, key ``volume``, as
    :func:`load_volume` reads it) atomically; ValueError for another suffix (``np.save`` would append
    ``.npy``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: the output must be a .npy or .npz file")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: the temporary name's suffix is not numpy's
            np.savez_compressed(fh, volume=vol) if suffix == ".npz" else np.save(fh, vol)

    return atomic_write(path, write)


def save_render(out, imgs: np.ndarray, rots: np.ndarray, meta: dict) -> None:
    """``tomo render``'s folder ``out``: ``images.npy`` (n, S, S) float32, ``rotations.npy`` (n, 3, 3)
    and ``render.json`` (``meta``), each atomic; ``render.json`` last, as the mark of a complete render
    (an earlier one is removed first, so that a failure between the files, a full disk or Ctrl-C,
    leaves no record describing arrays it did not write)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "render.json").unlink(missing_ok=True)
    atomic_write(out / "images.npy", lambda tmp: np.save(tmp, imgs))
    atomic_write(out / "rotations.npy", lambda tmp: np.save(tmp, rots))
    write_json(out / "render.json", meta)


def render_batched(vol, rots, *, size, steps, chi, backend, batch=64, desc="render") -> np.ndarray:
    """The (len(rots), size, size) float32 x-rays of ``vol`` from rotations ``rots`` (n, 3, 3),
    ``batch`` views per :func:`~tomodata.render.render_xrays` call, a progress bar named ``desc``."""
    out = np.empty((len(rots), size, size), np.float32)
    for s in progress(range(0, len(rots), batch), desc=desc, unit="batch"):
        out[s : s + batch] = render_xrays(vol, rots[s : s + batch], size=size, steps=steps, chi=chi, backend=backend)
    return out


def render_species(store, name: str, vol: np.ndarray, *, backend: str, batch: int = 64) -> tuple[np.ndarray, dict]:
    """Render species ``name``'s views (the store's ``species_rotations(name)``, its image size, steps and
    χ) of its cube ``vol`` (float32 (s, s, s)) and write volume, rotations and x-rays into ``store``
    (:func:`tomodata.store.write_species`, recording the backend that rendered them). Returns the
    (n_views, size, size) float32 x-rays and the species' completion marker."""
    settings = open_store(store).settings
    rots = settings.species_rotations(name)
    imgs = render_batched(
        vol,
        rots,
        size=settings.image_size,
        steps=settings.steps,
        chi=settings.chi,
        backend=backend,
        batch=batch,
        desc=name,
    )
    marker = write_species(store, name, volume=vol, rotations=rots, images=imgs, renderer=resolve_backend(backend))
    return imgs, marker
