"""The species table a store is created with (:func:`tomodata.store.create_store`'s ``species``): one
dict per species, in the order given.

* :func:`demo_species`: the procedural species of ``tomo build-demo`` (the source of a procedural
  species is its parameter vector; its checksum, sha256 of the sorted-key JSON, identifies it).
* :func:`cube_species`: the specimens of ``tomo store-create``, from the manifests' rows and the cubes'
  records (``tomo cube``), with each cube's volume checksum (:func:`tomodata.store.array_sha256` of
  the float32 volume) for ``create_store(update=True)``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .aligned_files import alignment_summary
from .demo import demo_name, demo_splits
from .fetch.common import is_archive_source
from .files import json_sha256
from .ingest import load_cube
from .manifest import load_manifest, split_sources
from .phantoms import species_params
from .specimens import local_source
from .store import array_sha256

__all__ = ["demo_species", "cube_species", "cube_differences", "check_cube_identity"]


def demo_species(n_species: int, *, val: int, test: int, seed: int, volume_size: int) -> tuple[list, list, list]:
    """``(names, params, table)`` of ``n_species`` procedural species: their names, their
    :func:`~tomodata.phantoms.species_params` and their species-table entries (1 mm spacing,
    ``volume_size``³ voxels)."""
    names = [demo_name(i) for i in range(n_species)]
    splits = demo_splits(n_species, val=val, test=test)
    params = [species_params(i, seed=seed) for i in range(n_species)]
    table = [
        dict(
            name=n,
            split=s,
            source=f"tomodata.phantoms species {i} seed {seed}",
            source_checksum=json_sha256(p.as_dict()),
            original_shape=[volume_size] * 3,
            spacing_mm=[1.0, 1.0, 1.0],
        )
        for i, (n, s, p) in enumerate(zip(names, splits, params))
    ]
    return names, params, table


def _manifest_rows(manifests: list[str]) -> tuple[dict, dict]:
    """``(row by id, resolved source by id)`` of every specimen of ``manifests`` (ids unique across
    them, else ValueError); a local source resolves to its path, a URL to itself."""
    by_id, resolved = {}, {}
    for manifest in manifests:
        table = load_manifest(manifest)
        for _, row in table.iterrows():
            if row["id"] in by_id:
                raise ValueError(f"specimen {row['id']!r} is in more than one manifest ({', '.join(manifests)})")
            by_id[row["id"]] = row
            local = local_source(dict(row, _base=table.attrs["base_dir"]))
            resolved[row["id"]] = str(local) if local is not None and "://" not in row["source"] else row["source"]
    return by_id, resolved


def _cube_fields(meta: dict) -> dict:
    """The species-table fields that come from a cube's record ``meta`` (``tomo cube``)."""
    return dict(
        original_shape=meta["original_shape"],
        spacing_mm=meta["spacing_mm"],
        slice_axis=meta["slice_axis"],
        fit=meta["fit"],
        window=meta.get("window"),
        background=meta.get("background"),
        orientation=meta.get("orientation", "z,y,x"),
        crop=meta.get("crop", "none"),
        content_key=meta.get("content_key"),
        specimen_reach=meta.get("specimen_reach"),
        ingest=meta.get("ingest"),
        alignment=alignment_summary(meta.get("alignment")),
    )


def _cube_entry(sid: str, row, meta: dict, resolved: str) -> dict:
    """The species-table entry of specimen ``sid``: its manifest ``row`` and its cube's record ``meta``."""
    fields = _cube_fields(meta)
    return dict(
        name=sid,
        split=row["split"],
        species=row["species"],
        source=row["source"],
        source_kind=row["source_kind"],
        source_checksum=row["sha256"] or meta["source_sha256"],
        licence=row["licence"],
        **({"attribution": row["attribution"]} if row["attribution"] else {}),  # tables before it lack the key
        **{k: fields[k] for k in list(fields)[:-2]},  # original_shape ... specimen_reach
        source_resolved=resolved,  # the key order of the tables written before
        ingest=fields["ingest"],
        alignment=fields["alignment"],
    )


def cube_differences(entry: dict, meta: dict) -> list[str]:
    """How the cube whose record is ``meta`` differs from the one a store's species-table ``entry`` was
    made from (``tomo store-create``): one line per field; empty for the same cube. Not compared: fields
    the entry lacks (a procedural species), and every field where ``meta`` lacks those every
    ``tomo cube`` record has (a volume saved by hand)."""
    if any(k not in meta for k in ("original_shape", "spacing_mm", "slice_axis", "fit")):
        return []
    ours = json.loads(json.dumps(_cube_fields(meta), default=str))
    return [
        f"{k}: {ours[k]!r} in the cube, {entry[k]!r} in the store's table"
        for k in ours
        if k in entry and ours[k] != entry[k]
    ]


def check_cube_identity(store, name: str, cube, meta: dict) -> None:
    """``ValueError`` unless the cube file ``cube`` (record ``meta``) is specimen ``name`` as the species
    table of ``store`` (a :class:`tomodata.store.DatasetStore`) has it: the same id, and the same cube
    fields as when the store was created (a cube of another specimen would put its data under this
    one's name and split)."""
    if meta.get("id") not in (None, name):
        raise ValueError(f"cube {cube} is specimen {meta['id']!r}, not {name!r}: refusing to render it as {name!r}")
    diffs = cube_differences(store.species_info(name), meta)
    if diffs:
        raise ValueError(
            f"cube {cube} is not the cube species {name!r} of {store.path} was created from:\n  "
            + "\n  ".join(diffs)
            + "\nMake the store's table again from this cube first (tomo store-create --update)"
        )


def cube_species(
    manifests: list[str], cubes: list[str], *, volume_size: int | None = None
) -> tuple[list[dict], dict[str, str]]:
    """``(table, volume_sha256 by name)`` of the specimens whose cube .npz files are ``cubes`` (a
    cube's id, else its file stem, must be a row of ``manifests``, and with ``volume_size`` the cube
    must be that size: ValueError otherwise)."""
    by_id, resolved = _manifest_rows(manifests)
    species = []
    volume_sha256 = {}
    for cube_path in cubes:
        vol, meta = load_cube(cube_path)
        sid = meta.get("id") or Path(cube_path).stem
        if sid not in by_id:
            raise ValueError(f"cube {cube_path} is specimen {sid!r}, which is not in {', '.join(manifests)}")
        if volume_size is not None and vol.shape != (volume_size,) * 3:
            raise ValueError(
                f"cube {cube_path} is {vol.shape[0]}x{vol.shape[1]}x{vol.shape[2]}, the store's volumes "
                f"{volume_size}³: make the cubes with tomo cube --size {volume_size}, or pick --volume-size"
            )
        _check_source(cube_path, sid, by_id[sid], meta)
        species.append(_cube_entry(sid, by_id[sid], meta, resolved[sid]))
        volume_sha256[sid] = array_sha256(np.ascontiguousarray(vol, dtype=np.float32))
    _warn_split_species(species)
    return species, volume_sha256


def _check_source(cube_path, sid: str, row, meta: dict) -> None:
    """``ValueError`` if the cube was made from another scan than its manifest row's: the source
    checksum in its record (the scan read, or the alignment record's source) is not the row's sha256.
    Not checked where the row has none, or the cube's record names no source (an aligned file whose
    record lacks it: its own checksum is not the source's), or the row's source is an archive (its
    sha256 is the archive's; a cube made straight from the extracted folder hashes the folder)."""
    expected = str(row["sha256"] or "").lower()
    if any(is_archive_source(src, sid, row.get("source_kind") or "") for src in split_sources(row["source"])):
        return
    alignment = meta.get("alignment")
    made_from = meta.get("source_sha256") if not alignment or alignment.get("source_sha256") else None
    if expected and made_from and str(made_from).lower() != expected:
        raise ValueError(
            f"cube {cube_path} (specimen {sid!r}) was made from a source with sha256 {made_from}, but the "
            f"manifest's {sid!r} has sha256 {expected}: the cube is of another scan (tomo cube --id names the "
            "specimen the scan belongs to) or the source changed since it was fetched"
        )


def _warn_split_species(table: list[dict]) -> None:
    """Warn where one species (the manifests' ``species``, compared case-insensitively) has specimens
    in more than one split: for it the held-out unit is the specimen, not the species. That is the
    paper's mouse experiment (15 individuals of one species), but a leak where species are meant to be
    held out, as for the UTCT mammals."""
    splits: dict[str, dict[str, list[str]]] = {}
    for e in table:
        splits.setdefault(e["species"].strip().casefold(), {}).setdefault(e["split"], []).append(e["name"])
    for by_split in splits.values():
        if len(by_split) > 1:
            where = "; ".join(f"{split}: {', '.join(names)}" for split, names in sorted(by_split.items()))
            first = next(e for e in table if e["name"] == next(iter(by_split.values()))[0])
            warnings.warn(
                f"species {first['species']!r} has specimens in {len(by_split)} splits ({where}): its "
                "specimens, not the species, are held out, and the evaluation's species level is the "
                "specimen level for it. Give each species one split where species are meant to be held "
                "out (docs/manifest.md)",
                stacklevel=2,
            )
