"""The dataset store: one Zarr v3 group per build, one subgroup of sharded arrays per species.

Layout (``spec_version = "tomo-dataset/2"``; docs/store.md)::

    <store>/zarr.json                      root group; its attributes describe everything (below)
    <store>/species/zarr.json              plain group
    <store>/species/<name>/zarr.json       per-species attributes: status, completion marker
    <store>/species/<name>/volume/         OME-Zarr 0.5 image group ("ome" attribute: multiscales, axes z y x)
    <store>/species/<name>/volume/0        (V, V, V)        float32  density in [0, 1], vol[z, y, x]
    <store>/species/<name>/volume/1        (V/2, V/2, V/2)  float32  its 2×2×2 mean (even V >= 8)
    <store>/species/<name>/rotations       (n_views, 3, 3)  float64  R (camera -> volume), p = R @ (u, v, w)
    <store>/species/<name>/mirrored        (2 n_views,)     bool     sample 2i+1 is mirrored
    <store>/species/<name>/views           (2 n_views,)     int32    view index of each sample (= i // 2)
    <store>/species/<name>/images          (2 n_views, S, S) uint16 (opacity = value / 65535) or float16

The volume group is an OME-Zarr (NGFF 0.5) image (:func:`ome_multiscales`): axes z, y, x in
millimetre where ingest recorded the specimen's voxel size (the species entry's ``fit.voxel_mm``),
else in the normalised cube's units (voxel 2/V), so napari, neuroglancer, niivue or any OME-Zarr
reader opens it. Spec ``tomo-dataset/1`` (the volume a plain array ``volume``) is still read and
validated (with a warning); stores are written as ``tomo-dataset/2``.

``images`` is sharded: chunks of one image ``(1, S, S)`` (one chunk per training read) inside shards of
``images_per_shard`` images (default 256, cut to ``2 n_views``); the other arrays are one chunk each.
All arrays use the ``bytes`` codec (little endian) and ``zstd`` (level 3, with its content checksum);
the shard index has zarr's default ``crc32c``. Samples are interleaved: sample ``2i`` is view ``i``,
sample ``2i + 1`` is view ``i`` mirrored (image rows reversed, ``img[::-1, :]``; the view volume's
rows reversed, ``vv[:, ::-1, :]``).

Write protocol: :func:`create_store` writes every piece of metadata (root attributes, all subgroups,
all arrays) once, before any species is written. :func:`write_species` (one job per species, jobs may
run at the same time) writes only inside ``species/<name>/``: its arrays' chunks/shards and that
subgroup's ``zarr.json``. It first sets ``status = "writing"`` and drops the completion marker, writes
the data, and last writes ``status = "complete"`` with the marker ``complete`` that holds the sha256
of every array. :func:`finalize_store` validates everything, then writes the root attribute
``completion`` once, after all species jobs.

Checksums: ``sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())`` of each
array *as stored* (the decoded zarr array with its stored dtype and shape, C order, little endian:
uint16/float16 image values, not opacities), see :func:`array_sha256`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import platform
import re
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numcodecs
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from . import __version__
from .progress import progress as progress_bar
from .render import view_volumes
from .store_settings import IMAGE_ENCODINGS, StoreSettings, number_problems
from .views import VIEW_SCHEME, check_rotations, hemisphere_views, sample_to_view

__all__ = [
    "SPEC_VERSION",
    "SPLITS",
    "SPLIT_ROLES",
    "IMAGE_ENCODINGS",
    "SPECIES_REQUIRED_KEYS",
    "ARRAY_NAMES",
    "create_store",
    "write_species",
    "open_store",
    "validate_store",
    "finalize_store",
    "array_sha256",
    "encode_images",
    "decode_images",
    "DatasetStore",
    "Sample",
    "ValidationReport",
    "StoreValidationError",
]

SPEC_VERSION = "tomo-dataset/2"
#: specs this code reads (tomo-dataset/1: the volume a plain array, before OME-Zarr); it writes SPEC_VERSION
READ_SPECS = ("tomo-dataset/1", SPEC_VERSION)
#: where a logical array lives inside species/<name>/, per spec (default: its own name)
_ARRAY_PATHS = {"tomo-dataset/1": {}, "tomo-dataset/2": {"volume": "volume/0"}}
#: OME-Zarr (NGFF) version of the volumes
OME_VERSION = "0.5"
SPLITS = ("train", "val", "test")
#: What each split is for (recorded in the store's attributes as ``split_roles``).
SPLIT_ROLES = {
    "train": "training, and the database of the NN, Oracle and mean baselines",
    "val": "model choice, early stopping and every tuning decision; never the reported result",
    "test": "the reported result only; never looked at for any decision",
}
SPECIES_REQUIRED_KEYS = ("name", "split", "source", "source_checksum", "original_shape", "spacing_mm")
ARRAY_NAMES = ("volume", "rotations", "mirrored", "views", "images")
SAMPLE_ORDER = "interleaved-mirror"
DEFAULT_IMAGES_PER_SHARD = 256
ZSTD_LEVEL = 3
ROTATION_SCHEME_ATOL = 1e-6  # stored rotations must equal hemisphere_views(n_views, seed) this closely
_UINT16_MAX = 65535
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

HASH_DEFINITION = (
    "sha256 of np.ascontiguousarray(a, dtype=a.dtype.newbyteorder('<')).tobytes(), where a is the "
    "whole array as stored and decoded by zarr (stored dtype and shape, C order, little endian; "
    "images as their stored uint16/float16 values, bool as one byte 0/1)"
)

GEOMETRY = {
    "volume": (
        "vol[z, y, x], C order, float32 linear density mu in [0, 1] (0 = air). Along an axis of N "
        "voxels, voxel centre i sits at c(i) = (2i + 1)/N - 1, so the volume fills the cube [-1, 1]^3 "
        "in (x, y, z); trilinear between centres, falling linearly to 0 between the outermost centres and "
        "the faces (zero padding, as torch grid_sample with align_corners=False, padding_mode='zeros'), "
        "mu = 0 outside the cube. The specimen is scaled "
        "isotropically (physical spacing honoured) and centred inside the ball of radius 1."
    ),
    "camera": (
        "orthographic. A view is a rotation R (3x3, det +1) mapping camera coordinates (u, v, w) to "
        "volume coordinates (x, y, z): p = R @ (u, v, w); rotations[i][a, b] = R_ab (row a: volume "
        "axis x/y/z, column b: camera axis u/v/w). Third column = ray direction d, d_z >= 0."
    ),
    "pixels": "pixel [r, c] of an S x S image sits at u = (2c + 1)/S - 1, v = (2r + 1)/S - 1",
    "image_formation": (
        "Beer-Lambert, absorption only: samples at w_k = (2k + 1)/steps - 1, k = 0..steps-1; "
        "opacity = 1 - exp(-chi * (1/steps) * sum_k mu(R @ (u, v, w_k))); linear, no gamma"
    ),
    "view_volume": (
        "view[k, r, c] = mu(R @ (u_c, v_r, w_k)), shape (steps, S', S'); derived on the fly from "
        "volume + rotation (tomodata.render.view_volumes), not stored"
    ),
    "mirroring": (
        "sample 2i = view i; sample 2i + 1 = view i mirrored: image rows reversed (v -> -v), "
        "img[::-1, :], and view-volume rows reversed, view[:, ::-1, :]. Stored images include the "
        "mirrored ones."
    ),
}


class StoreValidationError(RuntimeError):
    """Raised by :func:`finalize_store` when the store does not validate; ``.report`` holds details."""

    def __init__(self, report: ValidationReport):
        self.report = report
        shown = report.errors[:20]
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        super().__init__(
            "dataset store does not validate; species to rebuild: "
            f"{report.species_to_rebuild}\n  " + "\n  ".join(shown) + more
        )


# ----------------------------------------------------------------------------------------------
# small helpers


def array_sha256(a) -> str:
    """Hex sha256 of an array's bytes: C order, little endian, its own dtype (see module docstring)."""
    a = np.asarray(a)
    return hashlib.sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _hash_update(h, a: np.ndarray) -> None:
    h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())


def encode_images(opacity, encoding: str = "uint16") -> np.ndarray:
    """Opacity (..., S, S) in [0, 1] -> stored values.

    ``uint16``: ``round(clip(x, 0, 1) * 65535)`` (computed in float64, round half to even);
    ``float16``: ``clip(x, 0, 1)`` cast to float16.
    """
    if encoding == "uint16":
        x = np.clip(np.asarray(opacity, dtype=np.float64), 0.0, 1.0)
        return np.round(x * _UINT16_MAX).astype(np.uint16)
    if encoding == "float16":
        return np.clip(np.asarray(opacity), 0.0, 1.0).astype(np.float16)
    raise ValueError(f"image encoding must be one of {IMAGE_ENCODINGS}, got {encoding!r}")


def decode_images(values) -> np.ndarray:
    """Stored image values -> float32 opacity: uint16 / 65535, or float16 cast to float32."""
    v = np.asarray(values)
    if v.dtype == np.uint16:
        return v.astype(np.float32) / np.float32(_UINT16_MAX)
    if v.dtype == np.float16:
        return v.astype(np.float32)
    raise ValueError(f"stored images must be uint16 or float16, got {v.dtype}")


def _pos_int(value, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_json(value, name: str):
    """Round-trip through strict JSON (no NaN/inf); returns the plain-JSON copy."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, default=_json_default))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serialisable (no NaN/inf): {e}") from None


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def _validate_species_table(species) -> list[dict]:
    """Check the species table (see :func:`create_store`) and return plain-JSON copies."""
    if not isinstance(species, (list, tuple)) or len(species) == 0:
        raise ValueError("species must be a non-empty list of dicts")
    out: list[dict] = []
    seen: dict[str, str] = {}
    for k, entry in enumerate(species):
        if not isinstance(entry, dict):
            raise ValueError(f"species[{k}] must be a dict, got {type(entry).__name__}")
        missing = [key for key in SPECIES_REQUIRED_KEYS if key not in entry]
        if missing:
            raise ValueError(f"species[{k}] lacks required keys {missing} (need {list(SPECIES_REQUIRED_KEYS)})")
        name = entry["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                f"species[{k}] name {name!r} is not safe: use 1-100 characters from [A-Za-z0-9_.-], "
                "starting with a letter or digit"
            )
        low = name.lower()
        if low in seen:
            raise ValueError(f"species name {name!r} is not unique (clashes with {seen[low]!r}, case-insensitive)")
        seen[low] = name
        if entry["split"] not in SPLITS:
            raise ValueError(f"species {name!r}: split must be one of {SPLITS}, got {entry['split']!r}")
        for key in ("source", "source_checksum"):
            if not isinstance(entry[key], str) or not entry[key]:
                raise ValueError(f"species {name!r}: {key} must be a non-empty string, got {entry[key]!r}")
        shape = entry["original_shape"]
        if (
            not isinstance(shape, (list, tuple, np.ndarray))
            or len(shape) != 3
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape)
        ):
            raise ValueError(f"species {name!r}: original_shape must be 3 positive ints (z, y, x), got {shape!r}")
        spacing = entry["spacing_mm"]
        if (
            not isinstance(spacing, (list, tuple, np.ndarray))
            or len(spacing) != 3
            or not all(
                isinstance(s, (int, float, np.integer, np.floating))
                and not isinstance(s, bool)
                and math.isfinite(float(s))
                and float(s) > 0
                for s in spacing
            )
        ):
            raise ValueError(
                f"species {name!r}: spacing_mm must be 3 positive finite numbers (z, y, x) in mm, got {spacing!r}"
            )
        clean = _check_json(dict(entry), f"species {name!r}")
        clean["original_shape"] = [int(s) for s in shape]
        clean["spacing_mm"] = [float(s) for s in spacing]
        out.append(clean)
    return out


def _images_per_shard(attrs: dict) -> int:
    return int(attrs["layout"]["arrays"]["images"]["shards"][0])


def _expected_arrays(attrs: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    st = StoreSettings.from_attrs(attrs)
    n, s, v = st.n_views, st.image_size, st.volume_size
    return {
        "volume": ((v, v, v), "float32"),
        "rotations": ((n, 3, 3), "float64"),
        "mirrored": ((2 * n,), "bool"),
        "views": ((2 * n,), "int32"),
        "images": ((2 * n, s, s), st.image_encoding),
    }


def _expected_mirrored_views(n_views: int) -> tuple[np.ndarray, np.ndarray]:
    view, mirrored = sample_to_view(np.arange(2 * n_views), n_views)  # the convention's one home
    return mirrored, view.astype(np.int32)


def _zarr():
    return zarr


def _open_root(path, mode: str = "r"):
    return _zarr().open_group(str(path), mode=mode, use_consolidated=False, zarr_format=3)


def _open_store_root(path, *, write: bool = False):
    """The root group of a dataset store with the store's attributes checked; ValueError naming the
    path and what to do where it is missing, is not a store, or is of a spec this code does not read
    (``write``: not the one it writes)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(
            f"{p}: no such dataset store (the workflow's store_create rule or `tomo build-demo` makes one)"
        )
    if not (p / "zarr.json").is_file():
        raise ValueError(
            f"{p} exists but is not a dataset store (no zarr.json in it; a store is the folder that "
            "holds zarr.json and species/, e.g. results/RUN/dataset.zarr)"
        )
    try:
        root = _open_root(p, "r")
        attrs = root.attrs.asdict()
    except Exception as e:  # noqa: BLE001 - report any failure to open as a clear error
        raise ValueError(f"{p} is not a readable dataset store: {type(e).__name__}: {e}") from None
    if attrs.get("spec_version") not in ((SPEC_VERSION,) if write else READ_SPECS):
        sw = attrs.get("software") if isinstance(attrs.get("software"), dict) else {}
        made = sw.get("tomodata", "an unknown version")
        raise ValueError(
            f"{p}: a store of spec {attrs.get('spec_version')!r} (written by tomodata {made}); this code "
            f"{'writes' if write else 'reads'} {SPEC_VERSION if write else ' and '.join(map(repr, READ_SPECS))}: "
            "rebuild it (delete it and rerun snakemake, which renders it again) "
            "or read it with the version that wrote it"
        )
    return root, attrs


def _open_array(path, name: str, array: str, mode: str = "r", spec: str = SPEC_VERSION):
    sub = _ARRAY_PATHS[spec].get(array, array)
    return _zarr().open_array(str(path), path=f"species/{name}/{sub}", mode=mode, zarr_format=3)


def volume_pyramid(volume: np.ndarray) -> list[np.ndarray]:
    """The OME-Zarr levels of a (V, V, V) float32 volume: itself and, for even V >= 8, its 2×2×2 mean
    (float64 sum of the eight, then float32)."""
    v = np.asarray(volume, np.float32)
    V = v.shape[0]
    if V % 2 or V < 8:
        return [v]
    h = V // 2
    return [v, v.astype(np.float64).reshape(h, 2, h, 2, h, 2).mean(axis=(1, 3, 5)).astype(np.float32)]


def ome_multiscales(name: str, volume_size: int, voxel_mm: float | None) -> dict:
    """The ``ome`` attribute (OME-Zarr 0.5 ``multiscales``) of a species' volume group: axes z, y, x
    of type space; unit millimetre with the specimen's voxel size where ingest recorded it, else no
    unit and the normalised cube's voxel size 2/V (the cube spans [-1, 1]); translations put the cube's
    centre at 0 (voxel centre i of a level with voxel size h at (i + 1/2)·h − V·h0/2)."""
    h0 = float(voxel_mm) if voxel_mm else 2.0 / volume_size
    half = volume_size * h0 / 2.0
    axes = [{"name": a, "type": "space", **({"unit": "millimeter"} if voxel_mm else {})} for a in "zyx"]
    levels = 2 if volume_size % 2 == 0 and volume_size >= 8 else 1
    datasets = []
    for k in range(levels):
        h = h0 * 2**k
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [h] * 3},
                    {"type": "translation", "translation": [h / 2 - half] * 3},
                ],
            }
        )
    return {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axes,
                "datasets": datasets,
                "type": "mean",
                "metadata": {
                    "description": "linear density mu in [0, 1], vol[z, y, x]; level 1 = 2x2x2 mean of level 0",
                    "unit": "millimetre (the specimen's scale at ingest)"
                    if voxel_mm
                    else "normalised: the cube [-1, 1]^3 (no physical scale recorded)",
                },
            }
        ],
    }


def _voxel_mm(entry: dict) -> float | None:
    fit = entry.get("fit")
    v = fit.get("voxel_mm") if isinstance(fit, dict) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None


def _software() -> dict:
    zarr = _zarr()
    return {
        "tomodata": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# create


def create_store(
    path,
    *,
    species: list[dict],
    chi: float = 10.0,
    steps: int = 128,
    image_size: int = 256,
    volume_size: int = 128,
    n_views: int = 1332,
    view_seed: int = 0,
    image_encoding: str = "uint16",
    provenance: dict | None = None,
    overwrite: bool = False,
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD,
    update: bool = False,
    volume_sha256: dict[str, str] | None = None,
) -> dict:
    """Create an empty dataset store (a Zarr v3 group at ``path``) with all its metadata and arrays.

    Args:
        path: directory of the store (created). An existing one raises ``FileExistsError`` unless
            ``overwrite`` (which only deletes a directory that is empty or holds a ``zarr.json``).
        species: the species table, one dict per species with at least ``name`` (1-100 chars of
            ``[A-Za-z0-9_.-]``, starting alphanumeric, unique case-insensitively), ``split``
            (``"train"``, ``"val"`` or ``"test"``), ``source`` (str: file, URL or generator),
            ``source_checksum`` (str, e.g. ``"sha256:..."``), ``original_shape`` (3 ints, z y x) and
            ``spacing_mm`` (3 positive floats, z y x, mm). Extra JSON-serialisable keys are kept.
        chi, steps, image_size, volume_size: rendering constants (docs/geometry.md), recorded.
        n_views, view_seed: views per species, from ``hemisphere_views(n_views, seed=view_seed)``;
            each species has ``2 * n_views`` samples.
        image_encoding: ``"uint16"`` (opacity = value / 65535) or ``"float16"`` (opacity).
        provenance: the build's config (JSON); recorded with the code version under ``provenance``.
        images_per_shard: images per shard of ``images`` (even; cut to ``2 * n_views``).
        update: update an existing store in place instead of refusing (the workflow's mode; run it
            only while no species writer runs). If the store at ``path`` has the same settings (chi,
            steps, sizes, views, view seed, encoding, layout), the root attributes are rewritten
            (new species table, splits and provenance; ``completion`` dropped; ``timestamps.created``
            kept, ``timestamps.updated`` set), every species whose subgroup is complete and whose
            stored volume's sha256 equals ``volume_sha256[name]`` is kept (its ``split`` attribute
            updated), every other species of the table gets a fresh empty subgroup (``pending``),
            and subgroups of species no longer in the table are deleted. A store with other
            settings, or one that cannot be read, is recreated as with ``overwrite``; a missing
            one is created.
        volume_sha256: name -> :func:`array_sha256` of the species' float32 volume, for ``update``.

    Timestamps go only to the root attribute ``timestamps`` (ignore it when comparing builds).
    Returns ``{"mode": "created" | "recreated" | "updated", "kept": [...], "reset": [...],
    "removed": [...]}`` (species names; ``reset`` lists the species that now need their writer).
    """
    zarr = _zarr()
    given: dict[str, Any] = dict(
        chi=chi, steps=steps, image_size=image_size, volume_size=volume_size, n_views=n_views, view_seed=view_seed
    )
    settings = StoreSettings(  # ValueError naming every problem; numpy scalars taken as Python numbers
        **{k: v.item() if isinstance(v, np.generic) else v for k, v in given.items()}, image_encoding=image_encoding
    )
    chi, steps, image_size, volume_size, n_views, view_seed = (
        float(settings.chi),
        settings.steps,
        settings.image_size,
        settings.volume_size,
        settings.n_views,
        settings.view_seed,
    )
    images_per_shard = _pos_int(images_per_shard, "images_per_shard", minimum=2)
    if images_per_shard % 2:
        raise ValueError(f"images_per_shard must be even (a view and its mirror share a shard), got {images_per_shard}")
    table = _validate_species_table(species)
    config = _check_json({} if provenance is None else provenance, "provenance")
    if not isinstance(config, dict):
        raise ValueError(f"provenance must be a dict, got {type(provenance).__name__}")

    p = Path(path)
    if p.exists():
        if not (overwrite or update):
            raise FileExistsError(f"{p} exists; pass overwrite=True to replace it")
        if not p.is_dir() or (any(p.iterdir()) and not (p / "zarr.json").exists()):
            raise FileExistsError(f"{p} exists and is not a zarr store: refusing to overwrite it")

    n_samples = 2 * n_views
    shard_n = min(images_per_shard, n_samples)
    img_dtype = image_encoding
    compressor = ZstdCodec(level=ZSTD_LEVEL, checksum=True)
    arrays_layout = {
        "volume": {
            "shape": [volume_size] * 3,
            "dtype": "float32",
            "chunks": [volume_size] * 3,
            "shards": None,
            "dimension_names": ["z", "y", "x"],
            "path": "volume/0",
            "ome_zarr": f"species/<name>/volume is an OME-Zarr {OME_VERSION} image: level 0 = this array, "
            "level 1 (even V >= 8) its 2x2x2 mean; multiscales metadata in its 'ome' attribute",
        },
        "rotations": {
            "shape": [n_views, 3, 3],
            "dtype": "float64",
            "chunks": [n_views, 3, 3],
            "shards": None,
            "dimension_names": ["view", "volume_axis", "camera_axis"],
        },
        "mirrored": {
            "shape": [n_samples],
            "dtype": "bool",
            "chunks": [n_samples],
            "shards": None,
            "dimension_names": ["sample"],
        },
        "views": {
            "shape": [n_samples],
            "dtype": "int32",
            "chunks": [n_samples],
            "shards": None,
            "dimension_names": ["sample"],
        },
        "images": {
            "shape": [n_samples, image_size, image_size],
            "dtype": img_dtype,
            "chunks": [1, image_size, image_size],
            "shards": [shard_n, image_size, image_size],
            "dimension_names": ["sample", "row", "col"],
        },
    }
    image_enc = (
        {
            "dtype": "uint16",
            "quantity": "opacity",
            "decode": "opacity = value / 65535",
            "encode": "value = round(clip(opacity, 0, 1) * 65535)",
        }
        if image_encoding == "uint16"
        else {
            "dtype": "float16",
            "quantity": "opacity",
            "decode": "opacity = float(value)",
            "encode": "value = float16(clip(opacity, 0, 1))",
        }
    )
    attrs = {
        "spec_version": SPEC_VERSION,
        "title": "Single-image tomography dataset (rebuild of Henzler et al., EG 2018)",
        "chi": chi,
        "steps": steps,
        "image_size": image_size,
        "volume_size": volume_size,
        "n_views": n_views,
        "samples_per_species": n_samples,
        "view_scheme": {
            "name": VIEW_SCHEME,
            "seed": view_seed,
            "function": "tomodata.views.hemisphere_views(n_views, seed=seed)",
            "rotations_atol": ROTATION_SCHEME_ATOL,
        },
        "sample_order": {
            "name": SAMPLE_ORDER,
            "description": "sample 2i = view i; sample 2i + 1 = view i mirrored (rows reversed)",
        },
        "geometry": GEOMETRY,
        "encoding": {
            "images": image_enc,
            "volume": {"dtype": "float32", "quantity": "linear density mu", "range": [0.0, 1.0]},
            "rotations": {"dtype": "float64", "quantity": "R, camera -> volume, p = R @ (u, v, w)"},
            "mirrored": {"dtype": "bool", "quantity": "sample is the mirror (rows reversed) of its view"},
            "views": {"dtype": "int32", "quantity": "view index of the sample (= sample // 2)"},
        },
        "layout": {
            "species_group": "species/{name}",
            "arrays": arrays_layout,
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": True}},
            ],
            "shard_index_codecs": ["bytes (little endian)", "crc32c"],
            "completion": (
                "species/<name> attribute 'complete' (written last by the species writer): "
                "{'sha256': {array: hex}, ...}; attribute 'status' is 'pending', 'writing' or "
                "'complete'. A species without 'complete' is unfinished."
            ),
        },
        "checksums": {"algorithm": "sha256", "hashed": HASH_DEFINITION},
        "species": table,
        "splits": {s: [e["name"] for e in table if e["split"] == s] for s in SPLITS},
        "split_roles": SPLIT_ROLES,
        "provenance": {
            "code_version": __version__,
            "generator": "tomodata.store.create_store",
            "config": config,
            "software": _software(),
        },
        "timestamps": {"created": _now()},
    }
    existed = p.exists() and (p / "zarr.json").exists()
    if update and existed and not overwrite:
        summary = _update_in_place(p, attrs, table, compressor, volume_sha256 or {})
        if summary is not None:
            return summary
    root = zarr.open_group(str(p), mode="w" if (overwrite or update) else "w-", zarr_format=3, attributes=attrs)
    sp = root.create_group("species", attributes={"description": "one subgroup per species, see root attrs"})
    for entry in table:
        _create_species_group(sp, entry, attrs, compressor)
    return {
        "mode": "recreated" if existed else "created",
        "kept": [],
        "reset": [e["name"] for e in table],
        "removed": [],
    }


def _create_species_group(sp, entry: dict, attrs: dict, compressor) -> None:
    """An empty (``pending``) species subgroup with all its arrays, as the layout in ``attrs`` says."""
    name = entry["name"]
    g = sp.create_group(name, attributes={"species": name, "split": entry["split"], "status": "pending"})
    for arr, lay in attrs["layout"]["arrays"].items():
        where = g
        if arr == "volume":  # an OME-Zarr image group: level 0 here, level 1 (if any) beside it
            where = g.create_group(
                "volume", attributes={"ome": ome_multiscales(name, lay["shape"][0], _voxel_mm(entry))}
            )
            if len(where.attrs["ome"]["multiscales"][0]["datasets"]) > 1:
                where.create_array(
                    "1",
                    shape=tuple(n // 2 for n in lay["shape"]),
                    dtype="float32",
                    chunks=tuple(n // 2 for n in lay["shape"]),
                    compressors=compressor,
                    fill_value=0,
                    dimension_names=("z", "y", "x"),
                    attributes={"description": "2x2x2 mean of level 0"},
                )
        where.create_array(
            "0" if arr == "volume" else arr,
            shape=tuple(lay["shape"]),
            dtype=lay["dtype"],
            chunks=tuple(lay["chunks"]),
            shards=None if lay["shards"] is None else tuple(lay["shards"]),
            compressors=compressor,
            fill_value=False if lay["dtype"] == "bool" else 0,
            dimension_names=tuple(lay["dimension_names"]),
            attributes={"description": attrs["encoding"][arr]["quantity"]},
        )


# root attributes that fix the data of every species: a store whose settings differ is recreated
_SETTINGS_KEYS = (
    "spec_version",
    "chi",
    "steps",
    "image_size",
    "volume_size",
    "n_views",
    "samples_per_species",
    "view_scheme",
    "sample_order",
    "geometry",
    "encoding",
    "layout",
    "checksums",
)


def _settings(attrs: dict) -> str:
    return json.dumps({k: attrs.get(k) for k in _SETTINGS_KEYS}, sort_keys=True, default=str)


def _update_in_place(p: Path, attrs: dict, table: list[dict], compressor, volume_sha256: dict) -> dict | None:
    """The ``update`` mode of :func:`create_store`; None if the store must be recreated instead."""
    zarr = _zarr()
    try:
        root = zarr.open_group(str(p), mode="r+", zarr_format=3)
        old = root.attrs.asdict()
        sp = root["species"]
        on_disk = set(sp.group_keys())
    except Exception:  # noqa: BLE001  (unreadable: recreate)
        return None
    if _settings(old) != _settings(attrs):
        return None
    created = (old.get("timestamps") or {}).get("created")
    attrs["timestamps"] = {"created": created or attrs["timestamps"]["created"], "updated": _now()}
    root.attrs.put(attrs)  # replaces all root attributes: the new table, no 'completion'
    kept: list[str] = []
    reset: list[str] = []
    for entry in table:
        name = entry["name"]
        keep = False
        if name in on_disk:
            group = sp[name]
            gattrs = group.attrs.asdict()
            marker = gattrs.get("complete")
            want = volume_sha256.get(name)
            keep = (
                gattrs.get("status") == "complete"
                and isinstance(marker, dict)
                and want is not None
                and isinstance(marker.get("sha256"), dict)
                and marker["sha256"].get("volume") == want
            )
            if keep and gattrs.get("split") != entry["split"]:
                group.attrs.put({**gattrs, "split": entry["split"]})
            if not keep:
                shutil.rmtree(p / "species" / name)
        if not keep:
            _create_species_group(sp, entry, attrs, compressor)
        (kept if keep else reset).append(name)
    removed = sorted(on_disk - {e["name"] for e in table})
    for name in removed:
        shutil.rmtree(p / "species" / name)
    return {"mode": "updated", "kept": kept, "reset": reset, "removed": removed}


# ----------------------------------------------------------------------------------------------
# write


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
    out = np.empty((2 * enc.shape[0],) + enc.shape[1:], dtype=enc.dtype)
    out[0::2] = enc
    out[1::2] = enc[:, ::-1, :]
    return out


def write_species(path, name: str, *, volume, rotations, images) -> dict:
    """Write one species' data into an existing store; safe to run concurrently for other species.

    Args:
        path: the store (made by :func:`create_store`).
        name: a species of the store's table.
        volume: (V, V, V) floating densities in [0, 1], ``vol[z, y, x]``; stored as float32.
        rotations: (n_views, 3, 3) rotations; must be the store's view scheme
            (``hemisphere_views(n_views, seed=view_seed)`` within 1e-6); stored as float64.
        images: (n_views, S, S) floating opacity in [0, 1] of the *unmirrored* views, in view order.
            The writer stores 2 n_views interleaved samples (2i: view i, 2i+1: ``images[i][::-1]``).

    Only ``species/<name>/`` is written: ``status = "writing"`` without marker first, then the
    arrays (images in shard-aligned blocks), then ``status = "complete"`` and the marker
    ``complete = {"sha256": {array: hex}, ...}`` last. Returns the marker. Raises ``ValueError``
    for bad inputs or an unknown species.
    """
    attrs = _store_attrs(path)
    entry = _species_entry(attrs, name)
    st = StoreSettings.from_attrs(attrs)
    n, s, v, encoding = st.n_views, st.image_size, st.volume_size, st.image_encoding

    volume = _check_float_array(volume, "volume", (v, v, v), lo=0.0, hi=1.0)
    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if not (np.all(volume >= 0) and np.all(volume <= 1)):  # after the float32 cast
        raise ValueError("volume values must lie in [0, 1] in float32")
    r = np.asarray(rotations)
    if r.shape != (n, 3, 3):
        raise ValueError(f"rotations must have shape ({n}, 3, 3), got {r.shape}")
    r = check_rotations(r, hemisphere=True)
    scheme = hemisphere_views(n, seed=st.view_seed)
    dev = float(np.abs(r - scheme).max())
    if dev > ROTATION_SCHEME_ATOL:
        raise ValueError(
            f"rotations do not follow the store's view scheme {attrs['view_scheme']['name']!r} "
            f"(hemisphere_views({n}, seed={attrs['view_scheme']['seed']})): max deviation {dev:.3g}"
        )
    images = _check_float_array(images, "images", (n, s, s), lo=0.0, hi=1.0, tol=1e-6)
    mirrored, views = _expected_mirrored_views(n)

    zarr = _zarr()
    group = zarr.open_group(str(path), path=f"species/{name}", mode="r+", zarr_format=3)
    base = {"species": name, "split": entry["split"]}
    group.attrs.put({**base, "status": "writing"})  # drops any old completion marker first

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

    sha = {}
    arrays["volume"][...] = volume
    sha["volume"] = array_sha256(volume)
    for k, level in enumerate(volume_pyramid(volume)[1:], start=1):  # the OME-Zarr levels beside level 0
        zarr.open_array(str(path), path=f"species/{name}/volume/{k}", mode="r+", zarr_format=3)[...] = level
    arrays["rotations"][...] = r
    sha["rotations"] = array_sha256(r)
    arrays["mirrored"][...] = mirrored
    sha["mirrored"] = array_sha256(mirrored)
    arrays["views"][...] = views
    sha["views"] = array_sha256(views)

    shard_n = int(arrays["images"].shards[0])
    h = hashlib.sha256()
    for start in range(0, 2 * n, shard_n):
        stop = min(start + shard_n, 2 * n)
        block = _encode_block(images, start // 2, stop // 2, encoding)
        arrays["images"][start:stop] = block
        _hash_update(h, block)
    sha["images"] = h.hexdigest()

    marker = {
        "sha256": sha,
        "hashed": HASH_DEFINITION,
        "n_views": n,
        "samples": 2 * n,
        "image_encoding": encoding,
        "code_version": __version__,
    }
    group.attrs.put({**base, "status": "complete", "complete": marker})
    return marker


# ----------------------------------------------------------------------------------------------
# read


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
    """Read-only handle on a store (see the module docstring). Picklable (re-opens by path)."""

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

    def status(self, name: str) -> str:
        """``"pending"``, ``"writing"`` or ``"complete"`` (read fresh from the species' zarr.json)."""
        self._check_name(name)
        g = _zarr().open_group(self.path, path=f"species/{name}", mode="r", zarr_format=3)
        a = g.attrs.asdict()
        return "complete" if a.get("status") == "complete" and "complete" in a else a.get("status", "unknown")

    def is_complete(self, name: str) -> bool:
        return self.status(name) == "complete"

    def n_samples(self, name: str) -> int:
        """Samples of a species: 2 n_views."""
        self._check_name(name)
        return self.settings.samples_per_species

    def volume(self, name: str) -> np.ndarray:
        """(V, V, V) float32 density in [0, 1], vol[z, y, x] (cached, do not modify in place)."""
        if name in self._volumes:
            self._volumes.move_to_end(name)
            return self._volumes[name]
        vol = np.asarray(self._array(name, "volume")[...], dtype=np.float32)
        if self._volume_cache_size > 0:
            self._volumes[name] = vol
            while len(self._volumes) > self._volume_cache_size:
                self._volumes.popitem(last=False)
        return vol

    def rotations(self, name: str) -> np.ndarray:
        """(n_views, 3, 3) float64 rotations, camera -> volume."""
        if name not in self._rotations:
            self._rotations[name] = np.asarray(self._array(name, "rotations")[...], dtype=np.float64)
        return self._rotations[name]

    def images(self, name: str, indices) -> np.ndarray:
        """Float32 opacity of samples: an int gives (S, S); a slice or int sequence gives (k, S, S)."""
        a = self._array(name, "images")
        if isinstance(indices, (int, np.integer)) and not isinstance(indices, bool):
            i = int(indices)
            if not 0 <= i < a.shape[0]:
                raise IndexError(f"sample {i} out of range [0, {a.shape[0]})")
            return decode_images(a[i])
        if isinstance(indices, slice):
            return decode_images(a[indices])
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError("indices must be an int, a slice or a 1-D sequence of ints")
        if idx.size and (idx.min() < 0 or idx.max() >= a.shape[0]):
            raise IndexError(f"sample indices out of range [0, {a.shape[0]})")
        if idx.size == 0:
            return np.zeros((0,) + a.shape[1:], dtype=np.float32)
        return decode_images(a.oindex[idx])

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
        n = st.n_views
        view, mirrored = sample_to_view(int(i) if isinstance(i, (int, np.integer)) else i, n)
        image = self.images(name, int(i))
        vv = None
        if with_volume:
            size = st.volume_size if view_size is None else _pos_int(view_size, "view_size")
            rot = self.rotations(name)[view][None]
            vv = view_volumes(self.volume(name), rot, size=size, steps=st.steps, backend=backend)[0]
            if mirrored:
                vv = vv[:, ::-1, :]
            vv = np.ascontiguousarray(vv, dtype=np.float32)
        return Sample(image, vv, name, self._table[name]["split"], int(i), view, mirrored)


def open_store(path, *, volume_cache: int = 2) -> DatasetStore:
    """Open a store read-only; see :class:`DatasetStore`."""
    return DatasetStore(path, volume_cache=volume_cache)


# ----------------------------------------------------------------------------------------------
# validate / finalize


@dataclass
class ValidationReport:
    """Result of :func:`validate_store`.

    ok: no errors. errors: messages, per-species ones start with ``species 'name':``.
    species_to_rebuild: species with any error (rerun their writer). warnings: non-fatal notes.
    checksums: the verified per-species, per-array sha256.
    """

    ok: bool
    errors: list[str] = field(default_factory=list)
    species_to_rebuild: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checksums: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary(self) -> str:
        head = "OK" if self.ok else f"{len(self.errors)} error(s); rebuild: {self.species_to_rebuild}"
        return "\n".join([head] + [f"  error: {e}" for e in self.errors] + [f"  warning: {w}" for w in self.warnings])


def _check_root_attrs(attrs: dict) -> list[str]:
    errs = []
    need = [*_SETTINGS_KEYS, "species", "provenance"]
    missing = [k for k in need if k not in attrs]
    if missing:
        return [f"store: missing root attributes {missing}"]
    if attrs["spec_version"] not in READ_SPECS:
        errs.append(f"store: spec_version {attrs['spec_version']!r} is not one of {list(READ_SPECS)}")
    errs += [f"store: {p}" for p in number_problems(attrs)]  # the settings' own checks (store_settings)
    if errs:
        return errs
    if attrs["samples_per_species"] != 2 * attrs["n_views"]:
        errs.append("store: samples_per_species != 2 * n_views")
    vs = attrs["view_scheme"]
    if not isinstance(vs, dict) or vs.get("name") != VIEW_SCHEME or not isinstance(vs.get("seed"), int):
        errs.append(f"store: view_scheme must be {{'name': {VIEW_SCHEME!r}, 'seed': int}}, got {vs!r}")
    if not isinstance(attrs["sample_order"], dict) or attrs["sample_order"].get("name") != SAMPLE_ORDER:
        errs.append(f"store: sample_order name must be {SAMPLE_ORDER!r}")
    try:
        if attrs["encoding"]["images"]["dtype"] not in IMAGE_ENCODINGS:
            errs.append(f"store: image encoding must be one of {IMAGE_ENCODINGS}")
        _images_per_shard(attrs)
    except (KeyError, TypeError, IndexError, ValueError):
        errs.append("store: encoding/layout attributes are malformed")
    if not isinstance(attrs["provenance"], dict) or "code_version" not in attrs["provenance"]:
        errs.append("store: provenance lacks code_version")
    try:
        _validate_species_table(attrs["species"])
    except ValueError as e:
        errs.append(f"store: species table: {e}")
    return errs


def _check_ome_volume(path, name: str, entry: dict, vol: np.ndarray) -> list[str]:
    """Errors of a species' OME-Zarr volume group: its multiscales metadata and its level 1."""
    try:
        g = _zarr().open_group(str(path), path=f"species/{name}/volume", mode="r", zarr_format=3)
        ome = g.attrs.asdict().get("ome")
    except Exception as e:  # noqa: BLE001
        return [f"volume group is unreadable ({type(e).__name__}: {e})"]
    if ome != ome_multiscales(name, vol.shape[0], _voxel_mm(entry)):
        return ["volume group's OME-Zarr multiscales metadata is missing or differs from the layout"]
    levels = volume_pyramid(vol)
    for k in range(1, len(levels)):
        try:
            got = g[str(k)][...]
        except Exception as e:  # noqa: BLE001
            return [f"volume level {k} cannot be read/decoded: {type(e).__name__}: {e}"]
        if not np.array_equal(got, levels[k]):
            return [f"volume level {k} is not the 2x2x2 mean of level 0 (rerun this species' writer)"]
    return []


def _validate_one_species(path, attrs: dict, entry: dict, check_data: bool) -> tuple[list[str], dict | None]:
    zarr = _zarr()
    name = entry["name"]
    errs: list[str] = []
    try:
        group = zarr.open_group(str(path), path=f"species/{name}", mode="r", zarr_format=3)
        sattrs = group.attrs.asdict()
    except Exception as e:  # noqa: BLE001
        return [f"subgroup species/{name} is missing or unreadable ({type(e).__name__}: {e})"], None
    marker = sattrs.get("complete")
    if sattrs.get("status") != "complete" or not isinstance(marker, dict):
        errs.append(f"no completion marker: the writer did not finish (status={sattrs.get('status')!r})")
        marker = None
    elif not isinstance(marker.get("sha256"), dict) or set(marker["sha256"]) != set(ARRAY_NAMES):
        errs.append(f"completion marker lacks sha256 of the arrays {list(ARRAY_NAMES)}")
        marker = None
    elif (
        marker.get("n_views") != attrs["n_views"]
        or marker.get("image_encoding") != attrs["encoding"]["images"]["dtype"]
    ):
        errs.append("completion marker disagrees with the store's n_views or image encoding")

    arrays = {}
    for arr, (shape, dtype) in _expected_arrays(attrs).items():
        try:
            a = _open_array(path, name, arr, "r", attrs["spec_version"])
        except Exception as e:  # noqa: BLE001
            errs.append(f"array {arr} is missing or unreadable ({type(e).__name__}: {e})")
            continue
        if a.shape != shape or str(a.dtype) != dtype:
            errs.append(f"array {arr} has shape {a.shape} dtype {a.dtype}, expected {shape} {dtype}")
            continue
        arrays[arr] = a
    if marker is None or not check_data or len(arrays) != len(ARRAY_NAMES):
        return errs, None

    st = StoreSettings.from_attrs(attrs)
    n = st.n_views
    expected_mirrored, expected_views = _expected_mirrored_views(n)
    got: dict[str, str] = {}

    def read(arr):
        try:
            return arrays[arr][...]
        except Exception as e:  # noqa: BLE001
            errs.append(f"array {arr}: cannot be read/decoded (corrupt or truncated chunk?): {type(e).__name__}: {e}")
            return None

    vol = read("volume")
    if vol is not None and attrs["spec_version"] != "tomo-dataset/1":
        errs.extend(_check_ome_volume(path, name, entry, vol))
    if vol is not None:
        got["volume"] = array_sha256(vol)
        if not np.all(np.isfinite(vol)):
            errs.append("volume has NaN or inf")
        elif vol.size and (vol.min() < 0 or vol.max() > 1):
            errs.append(f"volume values outside [0, 1]: [{vol.min():.6g}, {vol.max():.6g}]")
    rot = read("rotations")
    if rot is not None:
        got["rotations"] = array_sha256(rot)
        try:
            check_rotations(rot, hemisphere=True)
            dev = float(np.abs(rot - hemisphere_views(n, seed=st.view_seed)).max())
            if dev > ROTATION_SCHEME_ATOL:
                errs.append(f"rotations deviate from the view scheme by {dev:.3g}")
        except ValueError as e:
            errs.append(f"rotations invalid: {e}")
    for arr, want in (("mirrored", expected_mirrored), ("views", expected_views)):
        a = read(arr)
        if a is not None:
            got[arr] = array_sha256(a)
            if not np.array_equal(a, want):
                errs.append(f"array {arr} does not follow the interleaved-mirror sample order")

    img = arrays["images"]
    shard_n = int(img.shards[0]) if img.shards is not None else 2
    h = hashlib.sha256()
    ok_images = True
    for start in range(0, 2 * n, shard_n):
        stop = min(start + shard_n, 2 * n)
        try:
            block = img[start:stop]
        except Exception as e:  # noqa: BLE001
            errs.append(
                f"array images: samples {start}:{stop} cannot be read/decoded (corrupt or truncated "
                f"shard?): {type(e).__name__}: {e}"
            )
            ok_images = False
            break
        _hash_update(h, block)
        if block.dtype == np.float16:
            if not np.all(np.isfinite(block)) or block.min() < 0 or block.max() > 1:
                errs.append(f"images {start}:{stop} hold values outside [0, 1] or NaN")
        if (stop - start) % 2 == 0 and not np.array_equal(block[1::2], block[0::2, ::-1, :]):
            bad = start + 1 + 2 * int(np.argmax(~np.all(block[1::2] == block[0::2, ::-1, :], axis=(1, 2))))
            errs.append(f"image of sample {bad} is not the row-reversed image of sample {bad - 1}")
    if ok_images:
        got["images"] = h.hexdigest()

    for arr, hexd in got.items():
        if hexd != marker["sha256"].get(arr):
            errs.append(f"array {arr}: sha256 of stored data does not match the completion marker")
    return errs, (dict(marker["sha256"]) if not errs else None)


def validate_store(
    path, *, species: list[str] | None = None, check_data: bool = True, progress: bool = False
) -> ValidationReport:
    """Check a store thoroughly; never raises for a broken store (errors go to the report).

    Checks the root attributes; for every species of the table (or of ``species``): its subgroup,
    arrays (shapes, dtypes), completion marker, and with ``check_data`` every array's data: decoded
    without error (corrupt/truncated shards are reported), sha256 equal to the marker's, volume
    finite in [0, 1], rotations valid and equal to the view scheme, mirrored/views interleaved,
    float16 images in [0, 1], odd images the row-reversed even ones.
    """
    report = ValidationReport(ok=False)
    if not Path(path).is_dir() or not (Path(path) / "zarr.json").is_file():
        try:
            _open_store_root(path)
        except ValueError as e:
            report.errors.append(f"store: {e}")
        return report
    try:
        root = _open_root(path, "r")
        attrs = root.attrs.asdict()
    except Exception as e:  # noqa: BLE001
        report.errors.append(f"store: cannot open {path}: {type(e).__name__}: {e}")
        return report
    root_errs = _check_root_attrs(attrs)
    if root_errs:
        report.errors.extend(root_errs)
        return report
    if attrs["spec_version"] != SPEC_VERSION:
        report.warnings.append(
            f"store of the older spec {attrs['spec_version']!r} (volumes are plain arrays, not "
            f"OME-Zarr): readable; rebuild it to get {SPEC_VERSION!r}"
        )
    table = attrs["species"]
    names = [e["name"] for e in table]
    if species is not None:
        unknown = [s for s in species if s not in names]
        if unknown:
            report.errors.append(f"store: unknown species {unknown}; the store's species are {names}")
        table = [e for e in table if e["name"] in species]
    for entry in progress_bar(table, enabled=progress, desc="validate", unit="species"):
        errs, sums = _validate_one_species(path, attrs, entry, check_data)
        if errs:
            report.errors.extend(f"species {entry['name']!r}: {m}" for m in errs)
            report.species_to_rebuild.append(entry["name"])
        elif sums is not None:
            report.checksums[entry["name"]] = sums
    try:
        on_disk = sorted(root["species"].group_keys())
        extra = sorted(set(on_disk) - set(names))
        if extra:
            report.warnings.append(f"subgroups not in the species table (ignored): {extra}")
    except Exception as e:  # noqa: BLE001
        report.errors.append(f"store: cannot list species/: {type(e).__name__}: {e}")
    done = attrs.get("completion")
    if isinstance(done, dict) and isinstance(done.get("species_sha256"), dict):
        stale = [n for n, s in report.checksums.items() if done["species_sha256"].get(n) not in (None, s)]
        if stale:
            report.warnings.append(f"root 'completion' summary is stale for {stale} (rewritten after finalize)")
    report.ok = not report.errors
    return report


def finalize_store(path, *, require_ok: bool = True, progress: bool = False) -> ValidationReport:
    """Validate the store, then write the root attribute ``completion`` (run once, after all writers).

    ``completion = {"ok", "spec_version", "n_species", "complete_species", "species_to_rebuild",
    "errors", "species_sha256": {name: {array: hex}}}``; the time goes to ``timestamps.finalized``.
    With ``require_ok`` (default) a failing store raises :class:`StoreValidationError` and nothing
    is written.
    """
    report = validate_store(path, progress=progress)
    if not report.ok and require_ok:
        raise StoreValidationError(report)
    root = _open_root(path, "r+")
    attrs = root.attrs.asdict()
    attrs["completion"] = {
        "ok": report.ok,
        "spec_version": attrs.get("spec_version"),
        "n_species": len(attrs.get("species", [])),
        "complete_species": sorted(report.checksums),
        "species_to_rebuild": list(report.species_to_rebuild),
        "errors": list(report.errors),
        "species_sha256": report.checksums,
        "validated_by": f"tomodata {__version__}",
    }
    ts = dict(attrs.get("timestamps") or {})
    ts["finalized"] = _now()
    attrs["timestamps"] = ts
    root.attrs.put(attrs)
    return report
