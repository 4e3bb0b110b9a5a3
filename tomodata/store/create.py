"""Making a store: :func:`create_store` writes all metadata once (root attributes, every species
subgroup and array), before any species is written; its ``update`` mode keeps unchanged species."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import zarr
from zarr.codecs import ZstdCodec

from ..store_settings import StoreSettings
from .layout import DEFAULT_IMAGES_PER_SHARD, ZSTD_LEVEL, _now, _settings, _voxel_mm, ome_multiscales
from .schema import _check_json, _pos_int, _root_attributes, _validate_species_table


def create_store(
    path,
    settings: StoreSettings,
    *,
    species: list[dict],
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
        settings: the rendering constants (chi, steps, image_size, volume_size; docs/geometry.md),
            the views (``hemisphere_views(n_views, seed=view_seed)``; each species has ``2 * n_views``
            samples) and the image encoding (``"uint16"``: opacity = value / 65535, or ``"float16"``),
            all recorded; :class:`tomodata.store_settings.StoreSettings` has checked them.
        species: the species table, one dict per species with at least ``name`` (1-100 chars of
            ``[A-Za-z0-9_.-]``, starting alphanumeric, unique case-insensitively), ``split``
            (``"train"``, ``"val"`` or ``"test"``), ``source`` (str: file, URL or generator),
            ``source_checksum`` (str, e.g. ``"sha256:..."``), ``original_shape`` (3 ints, z y x) and
            ``spacing_mm`` (3 positive floats, z y x, mm). Extra JSON-serialisable keys are kept.
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
    Raises ``TypeError`` if ``settings`` is not a ``StoreSettings``, ``ValueError`` for bad arguments.
    """
    if not isinstance(settings, StoreSettings):
        raise TypeError(f"settings must be a tomodata.store_settings.StoreSettings, got {type(settings).__name__}")
    if settings.problems():  # constructed checked; this catches one changed behind the frozen dataclass
        raise ValueError("store settings: " + "; ".join(settings.problems()))
    images_per_shard = _pos_int(images_per_shard, "images_per_shard", minimum=2)
    if images_per_shard % 2:
        raise ValueError(f"images_per_shard must be even (a view and its mirror share a shard), got {images_per_shard}")
    table = _validate_species_table(species)
    config = _check_json({} if provenance is None else provenance, "provenance")
    if not isinstance(config, dict):
        raise ValueError(f"provenance must be a dict, got {type(provenance).__name__}")
    p = Path(path)
    _check_target(p, overwrite=overwrite, update=update)

    compressor = ZstdCodec(level=ZSTD_LEVEL, checksum=True)
    attrs = _root_attributes(settings, table, config, images_per_shard)
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


def _check_target(p: Path, *, overwrite: bool, update: bool) -> None:
    """``FileExistsError`` if ``p`` exists and may not be replaced (not ``overwrite``/``update``, or not a store)."""
    if p.exists():
        if not (overwrite or update):
            raise FileExistsError(f"{p} exists; pass overwrite=True (tomo: --overwrite) to replace it")
        if not p.is_dir() or (any(p.iterdir()) and not (p / "zarr.json").exists()):
            raise FileExistsError(f"{p} exists and is not a zarr store: refusing to overwrite it")
        if (p / "species").is_symlink():  # a fold view (.folds): an update would write into its base store
            raise FileExistsError(f"{p} is a fold view of another store (tomo cv-view): not replaced or updated")


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


def _update_in_place(p: Path, attrs: dict, table: list[dict], compressor, volume_sha256: dict) -> dict | None:
    """The ``update`` mode of :func:`create_store`; None if the store must be recreated instead."""
    try:
        root = zarr.open_group(str(p), mode="r+", zarr_format=3)
        old: dict[str, Any] = root.attrs.asdict()
        sp = root["species"]
        if not isinstance(sp, zarr.Group):
            return None
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
        keep = name in on_disk and _keep_species(sp[name], entry, volume_sha256.get(name))
        if name in on_disk and not keep:
            shutil.rmtree(p / "species" / name)
        if not keep:
            _create_species_group(sp, entry, attrs, compressor)
        (kept if keep else reset).append(name)
    removed = sorted(on_disk - {e["name"] for e in table})
    for name in removed:
        shutil.rmtree(p / "species" / name)
    return {"mode": "updated", "kept": kept, "reset": reset, "removed": removed}


def _keep_species(group, entry: dict, want: str | None) -> bool:
    """Whether an existing species subgroup is kept by an update: complete, and its volume's sha256
    is ``want``; a kept one gets the table's split and its volume group the layout's OME metadata
    (a store written before the OME scale rule had another scale for species without a voxel size)."""
    gattrs = group.attrs.asdict()
    marker = gattrs.get("complete")
    keep = (
        gattrs.get("status") == "complete"
        and isinstance(marker, dict)
        and want is not None
        and isinstance(marker.get("sha256"), dict)
        and marker["sha256"].get("volume") == want
    )
    if keep and gattrs.get("split") != entry["split"]:
        group.attrs.put({**gattrs, "split": entry["split"]})
    if keep and isinstance(vg := group.get("volume"), zarr.Group) and isinstance(level0 := vg.get("0"), zarr.Array):
        ome = ome_multiscales(entry["name"], int(level0.shape[0]), _voxel_mm(entry))
        if vg.attrs.asdict().get("ome") != ome:
            vg.attrs.put({**vg.attrs.asdict(), "ome": ome})
    return keep
