"""Writing one species into a store (:func:`write_species`); jobs for different species may run at
the same time, each writes only inside ``species/<name>/``."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .. import __version__
from ..code_version import code_version
from ..store_settings import StoreSettings
from ..views import SampleIndex, check_rotations, mirror
from .create import _create_species_group
from .layout import (
    ARRAY_NAMES,
    HASH_DEFINITION,
    ROTATION_SCHEME_ATOL,
    ZSTD_LEVEL,
    _expected_arrays,
    _expected_mirrored_views,
    _hash_update,
    _open_array,
    _open_species_group,
    _open_store_root,
    array_sha256,
    encode_images,
    volume_pyramid,
)


def _store_attrs(path) -> dict:
    return _open_store_root(path, write=True)[1]


def _species_entry(attrs: dict, name: str) -> dict:
    names = [e["name"] for e in attrs["species"]]
    if name not in names:
        raise ValueError(f"unknown species {name!r}; the store's species are {names}")
    return attrs["species"][names.index(name)]


def _check_float_array(a, name: str, shape: tuple, *, lo: float, hi: float, tol: float = 0.0) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has NaN or inf values")
    mn, mx = float(a.min()), float(a.max())
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(f"{name} values must lie in [{lo}, {hi}], got [{mn:.6g}, {mx:.6g}]")
    return a


def _encode_block(images: np.ndarray, v0: int, v1: int, encoding: str) -> np.ndarray:
    """Interleaved stored values of views v0..v1-1: (2 (v1 - v0), S, S), mirrors at odd rows."""
    enc = encode_images(images[v0:v1], encoding)
    return SampleIndex.interleave(enc, mirror(enc))


def _checked_inputs(attrs: dict, st: StoreSettings, name: str, volume, rotations, images):
    """``write_species``' inputs checked against the store: (float32 volume, float64 rotations, images)."""
    n, s, v = st.n_views, st.image_size, st.volume_size
    volume = _check_float_array(volume, "volume", (v, v, v), lo=0.0, hi=1.0)
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if not (np.all(volume >= 0) and np.all(volume <= 1)):  # after the float32 cast
        raise ValueError("volume values must lie in [0, 1] in float32")
    r = np.asarray(rotations)
    if r.shape != (n, 3, 3):
        raise ValueError(f"rotations must have shape ({n}, 3, 3), got {r.shape}")
    r = check_rotations(r, hemisphere=True)
    dev = float(np.abs(r - st.species_rotations(name)).max())
    if dev > ROTATION_SCHEME_ATOL:
        raise ValueError(
            f"rotations do not follow the store's view scheme {attrs['view_scheme']['name']!r} "
            f"(species_views({n}, seed={st.view_seed}, name={name!r}, view_sets={st.view_sets!r})): "
            f"max deviation {dev:.3g}"
        )
    images = _check_float_array(images, "images", (n, s, s), lo=0.0, hi=1.0, tol=1e-6)
    return volume, r, images


def _species_arrays(path, name: str, attrs: dict) -> dict:
    """A species' arrays opened for writing, each checked against the layout in ``attrs``."""
    expected = _expected_arrays(attrs)
    arrays = {}
    for arr in ARRAY_NAMES:
        a = _open_array(path, name, arr, "r+")
        want_shape, want_dtype = expected[arr]
        if a.shape != want_shape or str(a.dtype) != want_dtype:
            raise ValueError(
                f"store array species/{name}/{arr} has shape {a.shape} dtype {a.dtype}, "
                f"expected {want_shape} {want_dtype}: the store is inconsistent"
            )
        arrays[arr] = a
    return arrays


def write_species(path, name: str, *, volume, rotations, images, renderer: str | None = None) -> dict:
    """Write one species' data into an existing store; safe to run concurrently for other species.

    Args:
        path: the store (made by :func:`create_store`).
        name: a species of the store's table.
        volume: (V, V, V) floating densities in [0, 1], ``vol[z, y, x]``; stored as float32.
        rotations: (n_views, 3, 3) rotations; must be the store's view scheme
            (``StoreSettings.species_rotations(name)`` within 1e-6); stored as float64.
        images: (n_views, S, S) floating opacity in [0, 1] of the *unmirrored* views, in view order.
            The writer stores 2 n_views interleaved samples (2i: view i, 2i+1: ``images[i][::-1]``).
        renderer: the backend that rendered ``images`` ("cpu", "cuda"), recorded in the marker
            (``complete.renderer``; the backends agree within 1 uint16 step, not bit for bit).

    Only ``species/<name>/`` is written. Once the inputs are checked, that folder is deleted and
    created again, empty, from the store's layout (:func:`_reset_species`): old data (a damaged
    shard, a deleted array or group) is never read. Then ``status = "writing"`` without marker, the
    arrays (images in shard-aligned blocks; every chunk file written, also one of fill values, so
    that a complete species has every file its shapes imply), and ``status = "complete"`` with the
    marker ``complete = {"sha256": {array: hex}, ...}`` last. Returns the marker. Raises
    ``ValueError`` for bad inputs or an unknown species, ``RuntimeError`` naming the file and the
    species if zarr fails to write it.
    """
    attrs = _store_attrs(path)
    entry = _species_entry(attrs, name)
    st = StoreSettings.from_attrs(attrs)
    volume, r, images = _checked_inputs(attrs, st, name, volume, rotations, images)
    mirrored, views = _expected_mirrored_views(st.n_views)

    group = _reset_species(path, entry, attrs)
    base = {"species": name, "split": entry["split"]}
    group.attrs.put({**base, "status": "writing"})
    with zarr.config.set({"array.write_empty_chunks": True}):  # bound when an array is opened
        arrays = _species_arrays(path, name, attrs)
        sha = {}
        with _naming_failures(path, name, "volume/0"):
            arrays["volume"][...] = volume
        sha["volume"] = array_sha256(volume)
        for k, level in enumerate(volume_pyramid(volume)[1:], start=1):  # the OME-Zarr levels beside level 0
            with _naming_failures(path, name, f"volume/{k}"):
                zarr.open_array(str(path), path=f"species/{name}/volume/{k}", mode="r+", zarr_format=3)[...] = level
        for arr, values in (("rotations", r), ("mirrored", mirrored), ("views", views)):
            with _naming_failures(path, name, arr):
                arrays[arr][...] = values
            sha[arr] = array_sha256(values)
        sha["images"] = _write_images(arrays["images"], images, st, path=path, name=name)

    marker = {
        "sha256": sha,
        "hashed": HASH_DEFINITION,
        "n_views": st.n_views,
        "samples": st.samples_per_species,
        "image_encoding": st.image_encoding,
        "code_version": __version__,
        "code": code_version(),  # the commit that rendered this species
        **({"renderer": renderer} if renderer else {}),
    }
    group.attrs.put({**base, "status": "complete", "complete": marker})
    return marker


def _reset_species(path, entry: dict, attrs: dict):
    """Delete ``species/<name>/`` (whatever is left of it) and create it again, empty and
    ``pending``, from the layout in the root attributes ``attrs``; its group, opened for writing.
    ``ValueError`` if the store's ``species`` group itself is gone (the store must be recreated)."""
    name = entry["name"]
    folder = Path(path) / "species" / name
    if not (Path(path) / "species" / "zarr.json").is_file():
        raise ValueError(
            f"{path} has no species group: recreate the store (tomo store-create --update; the "
            "workflow: rerun snakemake, which removes dataset.created.json and creates it again)"
        )
    if folder.exists():
        shutil.rmtree(folder)
    sp = zarr.open_group(str(path), path="species", mode="r+", zarr_format=3)
    _create_species_group(sp, entry, attrs, ZstdCodec(level=ZSTD_LEVEL, checksum=True))
    return _open_species_group(path, name, "r+")


@contextlib.contextmanager
def _naming_failures(path, name: str, where: str):
    """Turn zarr's failure to write ``species/<name>/<where>`` (e.g. "Stored and computed checksum do
    not match" from a damaged shard) into a ``RuntimeError`` that names the file, the species and
    what to do. An ``OSError`` (a full or read-only disk: tomo reports it as such, exit status 3) is
    raised again with that file as its ``filename`` where zarr's had none."""
    try:
        yield
    except OSError as e:
        if e.filename:
            raise
        raise OSError(e.errno, e.strerror or str(e), str(Path(path) / "species" / name / where)) from e
    except Exception as e:  # noqa: BLE001 - any zarr/codec failure, reported with where it happened
        raise RuntimeError(
            f"species {name}: writing {Path(path) / 'species' / name / where} failed: {type(e).__name__}: {e}. "
            f"Delete {Path(path) / 'species' / name} and render the species again (the workflow: "
            "rerun snakemake)"
        ) from e


def _write_images(array, images: np.ndarray, st: StoreSettings, *, path, name: str) -> str:
    """Encode and store all samples' images in shard-aligned blocks; the sha256 of the stored values.

    ``images``: (n_views, S, S) opacity of the unmirrored views; ``path``, ``name``: the store and
    the species, to name a shard that fails to write."""
    n_samples = st.samples_per_species
    shard_n = int(array.shards[0])
    h = hashlib.sha256()
    for start in range(0, n_samples, shard_n):
        stop = min(start + shard_n, n_samples)
        views = SampleIndex.view_slice(start, stop)
        block = _encode_block(images, views.start, views.stop, st.image_encoding)
        with _naming_failures(path, name, f"images/c/{start // shard_n}/0/0"):
            array[start:stop] = block
        _hash_update(h, block)
    return h.hexdigest()
