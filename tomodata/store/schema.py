"""What :func:`tomodata.store.create_store` records: the checked species table and the store's root
attributes (settings, sample order, geometry, encodings, array layout, provenance)."""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path

import numcodecs
import numpy as np
import zarr

from .. import __version__
from ..code_version import code_version
from ..splits import SPLIT_ROLES, SPLITS
from ..store_settings import StoreSettings
from ..views import DEFAULT_VIEW_SETS, VIEW_SCHEME
from .layout import (
    GEOMETRY,
    HASH_DEFINITION,
    OME_VERSION,
    ROTATION_SCHEME_ATOL,
    SAMPLE_ORDER,
    SPEC_VERSION,
    SPECIES_REQUIRED_KEYS,
    ZSTD_LEVEL,
    _now,
    array_subpath,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


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


# ----------------------------------------------------------------------------------------------
# the species table


def _validate_species_table(species) -> list[dict]:
    """Check the species table (see :func:`tomodata.store.create_store`) and return plain-JSON copies."""
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
        out.append(_checked_entry(entry, name))
    return out


def _checked_entry(entry: dict, name: str) -> dict:
    """One species entry's split, source, shape and spacing checked; its plain-JSON copy."""
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
    return clean


# ----------------------------------------------------------------------------------------------
# root attributes


def _software() -> dict:
    return {
        "tomodata": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
    }


def _arrays_layout(st: StoreSettings, images_per_shard: int) -> dict:
    """The root attribute ``layout.arrays``: shape, dtype, chunks, shards and axes of every species array."""
    n_samples, size, vol = st.samples_per_species, st.image_size, st.volume_size
    shard_n = min(images_per_shard, n_samples)
    return {
        "volume": {
            "shape": [vol] * 3,
            "dtype": "float32",
            "chunks": [vol] * 3,
            "shards": None,
            "dimension_names": ["z", "y", "x"],
            "path": array_subpath(SPEC_VERSION, "volume"),
            "ome_zarr": f"species/<name>/volume is an OME-Zarr {OME_VERSION} image: level 0 = this array, "
            "level 1 (even V >= 8) its 2x2x2 mean; multiscales metadata in its 'ome' attribute",
        },
        "rotations": {
            "shape": [st.n_views, 3, 3],
            "dtype": "float64",
            "chunks": [st.n_views, 3, 3],
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
            "shape": [n_samples, size, size],
            "dtype": st.image_encoding,
            "chunks": [1, size, size],
            "shards": [shard_n, size, size],
            "dimension_names": ["sample", "row", "col"],
        },
    }


def _image_encoding(encoding: str) -> dict:
    """The root attribute ``encoding.images`` of an image encoding (``uint16`` or ``float16``)."""
    if encoding == "uint16":
        return {
            "dtype": "uint16",
            "quantity": "opacity",
            "decode": "opacity = value / 65535",
            "encode": "value = round(clip(opacity, 0, 1) * 65535)",
        }
    return {
        "dtype": "float16",
        "quantity": "opacity",
        "decode": "opacity = float(value)",
        "encode": "value = float16(clip(opacity, 0, 1))",
    }


def _layout(st: StoreSettings, images_per_shard: int) -> dict:
    """The root attribute ``layout``: species group, arrays, codecs and the completion protocol."""
    return {
        "species_group": "species/{name}",
        "arrays": _arrays_layout(st, images_per_shard),
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
    }


def _view_scheme(st: StoreSettings) -> dict:
    """The root attribute ``view_scheme``; ``sets`` only for per-species views (absent: shared, as in every
    store before session 30, so that a shared store's attributes are those an older store has)."""
    if st.view_sets == DEFAULT_VIEW_SETS:
        return {
            "name": VIEW_SCHEME,
            "seed": st.view_seed,
            "function": "tomodata.views.hemisphere_views(n_views, seed=seed)",
            "rotations_atol": ROTATION_SCHEME_ATOL,
        }
    return {
        "name": VIEW_SCHEME,
        "seed": st.view_seed,
        "sets": st.view_sets,
        "function": "tomodata.views.hemisphere_views(n_views, seed=tomodata.views.species_view_seed(seed, name))",
        "rotations_atol": ROTATION_SCHEME_ATOL,
    }


def _root_attributes(st: StoreSettings, table: list[dict], config: dict, images_per_shard: int) -> dict:
    """Every root attribute of a new store (docs/store.md), in the order they are written."""
    return {
        "spec_version": SPEC_VERSION,
        "title": "Single-image tomography dataset (rebuild of Henzler et al., EG 2018)",
        "chi": float(st.chi),
        "steps": st.steps,
        "image_size": st.image_size,
        "volume_size": st.volume_size,
        "n_views": st.n_views,
        "samples_per_species": st.samples_per_species,
        "view_scheme": _view_scheme(st),
        "sample_order": {
            "name": SAMPLE_ORDER,
            "description": "sample 2i = view i; sample 2i + 1 = view i mirrored (rows reversed)",
        },
        "geometry": GEOMETRY,
        "encoding": {
            "images": _image_encoding(st.image_encoding),
            "volume": {"dtype": "float32", "quantity": "linear density mu", "range": [0.0, 1.0]},
            "rotations": {"dtype": "float64", "quantity": "R, camera -> volume, p = R @ (u, v, w)"},
            "mirrored": {"dtype": "bool", "quantity": "sample is the mirror (rows reversed) of its view"},
            "views": {"dtype": "int32", "quantity": "view index of the sample (= sample // 2)"},
        },
        "layout": _layout(st, images_per_shard),
        "checksums": {"algorithm": "sha256", "hashed": HASH_DEFINITION},
        "species": table,
        "splits": {s: [e["name"] for e in table if e["split"] == s] for s in SPLITS},
        "split_roles": SPLIT_ROLES,
        "provenance": {
            "code_version": __version__,
            "code": code_version(),  # the commit that created or last updated the store (each species: its own)
            "generator": "tomodata.store.create_store",
            "config": config,
            "software": _software(),
        },
        "timestamps": {"created": _now()},
    }
