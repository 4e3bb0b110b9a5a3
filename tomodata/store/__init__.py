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
else without a unit in voxels of level 0 (scale 1, level 1 2: OME-NGFF's rule where no physical
size is known), centred at 0, so napari, neuroglancer, niivue or any OME-Zarr reader opens it; stores
written before that rule gave the normalised cube's 2/V (still validated, with a warning). Spec
``tomo-dataset/1`` (the volume a plain array ``volume``) is still read and validated (with a
warning); stores are written as ``tomo-dataset/2``.

``images`` is sharded: chunks of one image ``(1, S, S)`` (one chunk per training read) inside shards of
``images_per_shard`` images (default 256, cut to ``2 n_views``); the other arrays are one chunk each.
All arrays use the ``bytes`` codec (little endian) and ``zstd`` (level 3, with its content checksum);
the shard index has zarr's default ``crc32c``. Samples are interleaved: sample ``2i`` is view ``i``,
sample ``2i + 1`` is view ``i`` mirrored (image rows reversed, ``img[::-1, :]``; the view volume's
rows reversed, ``vv[:, ::-1, :]``).

Write protocol: :func:`create_store` writes every piece of metadata (root attributes, all subgroups,
all arrays) once, before any species is written. :func:`write_species` (one job per species, jobs may
run at the same time) writes only inside ``species/<name>/``: its arrays' chunks/shards and that
subgroup's ``zarr.json``. It first deletes the species' folder and creates its group and arrays again
from the layout (old shards are never read), sets ``status = "writing"``, writes the data (every chunk
file, also one of fill values only), and last writes ``status = "complete"`` with the marker
``complete`` that holds the sha256 of every array. :func:`finalize_store` validates everything, then
writes the root attribute ``completion`` once, after all species jobs.

Modules: :mod:`.layout` (names, geometry, checksums, image encoding, OME-Zarr pyramid, opening),
:mod:`.schema` (species table, root attributes), :mod:`.create`, :mod:`.write`, :mod:`.read`,
:mod:`.validate`, :mod:`.folds` (cross-validation: fold splits, read-only fold views); every
public name is importable from ``tomodata.store``. The sample ↔ (view,
mirrored) map and mirroring live in :mod:`tomodata.views` (``SampleIndex``, ``mirror``).

Checksums: ``sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())`` of each
array *as stored* (the decoded zarr array with its stored dtype and shape, C order, little endian:
uint16/float16 image values, not opacities), see :func:`array_sha256`.
"""

from __future__ import annotations

from ..splits import SPLIT_ROLES, SPLITS
from ..store_settings import IMAGE_ENCODINGS, StoreSettings
from .create import create_store
from .layout import (
    ARRAY_NAMES,
    DEFAULT_IMAGES_PER_SHARD,
    GEOMETRY,
    HASH_DEFINITION,
    OME_VERSION,
    READ_SPECS,
    ROTATION_SCHEME_ATOL,
    SAMPLE_ORDER,
    SPEC_VERSION,
    SPECIES_REQUIRED_KEYS,
    ZSTD_LEVEL,
    array_sha256,
    check_store,
    decode_images,
    encode_images,
    ome_multiscales,
    volume_pyramid,
)
from .layout import _voxel_mm as _voxel_mm  # used by tomodata.export
from .read import DatasetStore, Sample, open_store
from .validate import StoreValidationError, ValidationReport, finalize_store, validate_store
from .write import write_species

__all__ = [
    "StoreSettings",
    "SPEC_VERSION",
    "READ_SPECS",
    "SPLITS",
    "SPLIT_ROLES",
    "IMAGE_ENCODINGS",
    "SPECIES_REQUIRED_KEYS",
    "ARRAY_NAMES",
    "SAMPLE_ORDER",
    "OME_VERSION",
    "GEOMETRY",
    "HASH_DEFINITION",
    "DEFAULT_IMAGES_PER_SHARD",
    "ZSTD_LEVEL",
    "ROTATION_SCHEME_ATOL",
    "check_store",
    "create_store",
    "write_species",
    "open_store",
    "validate_store",
    "finalize_store",
    "array_sha256",
    "encode_images",
    "decode_images",
    "volume_pyramid",
    "ome_multiscales",
    "DatasetStore",
    "Sample",
    "ValidationReport",
    "StoreValidationError",
]
