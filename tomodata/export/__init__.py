"""Publishable exports of a dataset store: the data, or a recipe to rebuild it, with a dataset card,
Croissant metadata, checksums, split lists and provenance.

:func:`export_dataset` writes one folder (``OUT``)::

    OUT/README.md              dataset card: YAML front matter (Hugging Face style) + text
    OUT/croissant.json         Croissant 1.1 JSON-LD (http://mlcommons.org/croissant/1.1)
    OUT/SHA256SUMS             sha256 of every other file, ``<hex>  <path>``, sorted (``sha256sum -c``)
    OUT/provenance.json        code version, config, the store's provenance, export time and mode
    OUT/species.csv            one row per species: split, source, licence, per-array sha256
    OUT/samples.csv            one row per sample: species, split, sample, view, mirrored, array path
    OUT/splits/{train,val,test}.txt   species names per split, one per line
    OUT/recipe/checksums.json  per-species array sha256 (the completion markers) + source checksums
    OUT/recipe/store_attrs.json the store's root attributes (everything create_store recorded)
    OUT/recipe/manifest.tsv    the specimen manifest, when one is given
    OUT/recipe/specimens.tsv   every species with every setting its cube was made with (tomodata.recipe)
    OUT/recipe/rebuild.sh      fetch → cube (per species, all settings) → store → render → finalize
    OUT/recipe/config.<ext>    the build config (the file given, else the store's recorded config)
    OUT/recipe/workflow_config.json  the merged workflow config the store recorded (rebuild.sh passes it on)
    OUT/recipe/alignment/<id>.json   each aligned specimen's transform (replayed by rebuild.sh)
    OUT/dataset.zarr/          the store, byte for byte (data exports only)

Two modes:

* **data** (``recipe_only=False``): everything above, with ``dataset.zarr`` copied.
* **recipe-only** (``recipe_only=True``): no image or volume data; the recipe (manifest, config,
  store attributes, code version) lets others rebuild the store with ``tomo`` and check their build
  against ``recipe/checksums.json`` (:func:`verify_rebuild`).

Licence rules (see :func:`classify_licence`), per species of the store's table (``licence`` /
``source``):

* ``restricted``: the licence says redistribution is not allowed ("no redistribution", "do not
  redistribute", ...), or names UTCT/DigiMorph, or the source is under digimorph.org. The UTCT
  "Mammalia" scans of the paper are such data.
* ``free``: procedural species (``tomodata.phantoms``: licence "procedural (tomodata.phantoms) ..." or
  a source that starts with "tomodata.phantoms"). Their data are released under **CC0-1.0**.
* ``open``: a licence text naming a recognised open licence, matched to its SPDX id (CC0, CC BY
  (-SA/-NC/-ND/-NC-SA/-NC-ND) 2.0-4.0, PDDL, ODC-By, ODbL, public domain, GNU GPL/LGPL/AGPL, MIT, BSD,
  Apache-2.0, Unlicense: docs/export.md); its terms travel with the data, and attribution,
  non-commercial and no-derivatives conditions are stated in the card (the species' ``attribution``,
  the manifest's column, is its credit line; a data export of a CC BY or ODC-By species without one
  warns: :class:`AttributionWarning`).
* ``unknown``: anything else, including a missing licence: a warning (UnknownLicenceWarning, the
  card's *Warnings*, ``provenance.json``), never a silent switch to recipe-only.

``recipe_only=None`` (the default) means recipe-only as soon as one species is ``restricted`` or
``unknown``, and a data export otherwise. A data export of such a store needs an explicit
``recipe_only=False``: it goes ahead with a :class:`RedistributionWarning`, and the card and the
Croissant licence then say in capitals that the folder is NOT FOR REDISTRIBUTION (an internal copy
for people who hold the rights, e.g. a group's own cluster). Recipe files contain no source data;
they are released under CC0-1.0, the data they rebuild stay under each source's terms.

The export is written into a hidden temporary folder beside ``OUT`` and renamed into place at the
end, so ``OUT`` is either absent or complete. An existing non-empty ``OUT`` is refused unless
``overwrite``; even then only an empty folder or an earlier export is replaced.

Croissant has no native Zarr support. The record sets are backed by the CSV tables (``species``,
``samples``, with a ``splits`` enumeration of ``cr:Split`` values); the store is described as one
FileObject (its root ``zarr.json``, with sha256) plus one FileSet per species
(``dataset.zarr/species/<name>/**``, encodingFormat the Zarr v3 specification's URL), and the array
layout is written into the descriptions. Per-file sha256 of every file are in ``SHA256SUMS``.

The package's parts: :mod:`.licence` (classification, warnings, the export's licence), :mod:`.tables`
(species.csv, samples.csv), :mod:`.croissant`, :mod:`.card` (README.md), :mod:`.write` (target checks,
staging folder, recipe and provenance records), :mod:`.check` (:func:`verify_export`,
:func:`verify_rebuild`), :mod:`.common` (spec id, split names, citation, time, code version).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from ..store_settings import StoreSettings
from .card import _card, _species_code, _species_renderer
from .check import verify_export, verify_rebuild
from .common import CITATION_BIBTEX, EXPORT_SPEC, _check_url, _json_text, _now, _resolve_store
from .common import SPLIT_NAMES as SPLIT_NAMES
from .common import code_version as code_version
from .croissant import CROISSANT_VERSION as CROISSANT_VERSION
from .croissant import URL_PLACEHOLDER as URL_PLACEHOLDER
from .croissant import ZARR_V3_FORMAT as ZARR_V3_FORMAT
from .croissant import _croissant
from .licence import FREE as FREE
from .licence import OPEN as OPEN
from .licence import RESTRICTED as RESTRICTED
from .licence import UNKNOWN as UNKNOWN
from .licence import (
    AttributionWarning,
    NotFinalisedWarning,
    RedistributionWarning,
    UnknownLicenceWarning,
    _licence_notes,
    _licence_summary,
    classify_licence,
)
from .write import (
    _check_out,
    _check_volumes,
    _config_file,
    _manifest_bytes,
    _provenance,
    _put_files,
    _read_store,
    _Staging,
    _summary,
)


def _check_version(version: str) -> str:
    """``version`` if it is ``MAJOR.MINOR.PATCH`` (Croissant's recommended form), else ValueError."""
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version.strip()):
        raise ValueError(f"dataset_version (--dataset-version) must be MAJOR.MINOR.PATCH, e.g. 1.0.0 (got {version!r})")
    return version.strip()


def _creators(people: list[str] | None, organizations: list[str] | None) -> list[dict]:
    """Croissant ``creator`` entries: ``sc:Person`` for each name in ``people``, ``sc:Organization`` for
    each in ``organizations`` (names stripped; an empty one is a ValueError)."""
    out = []
    for kind, names in (("sc:Person", people or []), ("sc:Organization", organizations or [])):
        for n in names:
            if not str(n).strip():
                raise ValueError("a creator's name is empty")
            out.append({"@type": kind, "name": str(n).strip()})
    return out


__all__ = [
    "AttributionWarning",
    "EXPORT_SPEC",
    "NotFinalisedWarning",
    "RedistributionWarning",
    "classify_licence",
    "export_dataset",
    "verify_export",
    "verify_rebuild",
    "UnknownLicenceWarning",
    "CITATION_BIBTEX",
]
# also importable from here, as from the former single module (the "X as X" imports above): SPLIT_NAMES,
# code_version, CROISSANT_VERSION, URL_PLACEHOLDER, ZARR_V3_FORMAT, FREE, OPEN, RESTRICTED, UNKNOWN


def _config_notes(config, config_file: tuple, attrs: dict) -> list[str]:
    """A note where the configuration given to the export (``config``; ``config_file``: its
    :func:`_config_file`) is not the one the store recorded, which the rebuild uses."""
    recorded = (attrs.get("provenance") or {}).get("config")
    # the store records the workflow's merged config inside a wrapper ({manifest, config, command}):
    # a given file may be either
    inner = recorded.get("config") if isinstance(recorded, dict) else None
    if config is None or config_file[2] in (recorded, inner):
        return []
    given = "a dict" if isinstance(config, dict) else str(config)
    how = "could not be compared with" if config_file[2] is None else "differs from"
    return [
        f"{config_file[0]} is the configuration given to the export ({given}); it {how} the one the store "
        "recorded (provenance.json: store.provenance.config), which the rebuild uses"
    ]


def export_dataset(
    store,
    out_dir,
    *,
    manifest=None,
    config=None,
    recipe_only: bool | None = None,
    overwrite: bool = False,
    volumes: str | None = None,
    url: str | None = None,
    code_url: str | None = None,
    creators: list[str] | None = None,
    organizations: list[str] | None = None,
    dataset_version: str = "1.0.0",
    progress: bool = False,
) -> dict:
    """Write a publishable folder for a dataset store (see the module docstring for the layout).

    Args:
        store: the store (``dataset.zarr``) or a folder holding ``dataset.zarr``. It must validate
            (:func:`tomodata.store.validate_store`); otherwise ``ValueError`` names the species to rebuild.
        out_dir: the export folder; written atomically (temporary folder + rename).
        manifest: optional specimen manifest (.tsv) the store was built from; checked with
            :func:`tomodata.manifest.load_manifest` (every species of the store must be in it) and copied
            to ``recipe/manifest.tsv``.
        config: optional build configuration: a YAML/JSON file (copied as ``recipe/config<suffix>``) or a
            dict (written as ``recipe/config.json``). Default: the config recorded in the store.
        recipe_only: ``None``: recipe-only if any species' terms do not clear redistribution, else data;
            ``True``: recipe-only; ``False``: data (with a :class:`RedistributionWarning` for such species).
        overwrite: replace an existing non-empty ``out_dir`` (only an earlier export or an empty folder).
        volumes: ``"nifti"`` or ``"nrrd"``: also each species' canonical volume as ``volumes/<name>.nii.gz``
            or ``.nrrd`` (:mod:`tomodata.volume_files`: RAS orientation, mm spacing where recorded), for
            3D Slicer and other viewers; data exports only.
        url: where the export will be published (``http(s)://...``): Croissant's ``url``, the card,
            ``provenance.json``. Without it Croissant's ``url`` is :data:`URL_PLACEHOLDER` (set it here,
            not by editing the file: croissant.json is in SHA256SUMS).
        code_url: where the ``tomodata`` code is published (its repository): the card and ``provenance.json``.
        creators, organizations: who made the dataset (people; organisations): Croissant's ``creator``
            (``sc:Person`` / ``sc:Organization``), which Croissant 1.1 requires, the card and
            ``provenance.json``. Without either, a note says that croissant.json lacks it.
        dataset_version: the dataset's version, ``MAJOR.MINOR.PATCH`` (Croissant's ``version``, the card,
            ``provenance.json``): raise it when a changed dataset is published again. The code's version is
            ``provenance.json``'s ``code_version``, apart.
        progress: progress lines (count, rate, ETA) on stderr while the store and volumes are copied.

    Returns:
        a summary dict: ``out``, ``mode`` ("data" / "recipe-only"), ``recipe_only``, ``licence`` (the
        card's), ``licence_classes`` ({species: class}), ``not_for_redistribution``, ``species``,
        ``samples``, ``files`` (count), ``bytes``, ``warnings``.
    """
    urls = {"dataset_url": _check_url(url, "url (--url)"), "code_url": _check_url(code_url, "code_url (--code-url)")}
    makers = _creators(creators, organizations)
    dataset_version = _check_version(dataset_version)
    src = _resolve_store(store)
    out = Path(out_dir)
    _check_out(out, src, overwrite)
    attrs, markers = _read_store(src)
    table = attrs["species"]
    names = [e["name"] for e in table]
    classes = {e["name"]: classify_licence(e) for e in table}
    asked = recipe_only
    recipe_only, notes = _licence_notes(classes, recipe_only)  # called here: its warnings name our caller
    if not isinstance(attrs.get("completion"), dict):
        notes.append(
            f"the store {src} is not finalised (tomo finalize): its species validate, but it records no completion"
        )
        warnings.warn(notes[-1], NotFinalisedWarning, stacklevel=2)
    _check_volumes(volumes, recipe_only, asked=asked)
    manifest_bytes = _manifest_bytes(manifest, table)
    config_file = _config_file(config, attrs)
    notes += _config_notes(config, config_file, attrs)
    when = _now()
    lic = _licence_summary(table, classes, recipe_only)
    n_total = StoreSettings.from_attrs(attrs).samples_per_species * len(names)
    mode, has_manifest = ("recipe-only" if recipe_only else "data"), manifest_bytes is not None
    same: dict[str, Any] = {"recipe_only": recipe_only, "lic": lic, "n_samples_total": n_total}

    stage = _Staging(out, progress=progress)
    try:
        notes += _put_files(stage, src, attrs, markers, classes, recipe_only, volumes, manifest_bytes, config_file)
        prov = _provenance(attrs, src, when.isoformat(), mode, lic, classes, notes, config_file, has_manifest, urls)
        prov["store"] |= {"species_code": _species_code(markers), "species_renderer": _species_renderer(markers)}
        prov["export"] |= {"creators": makers, "dataset_version": dataset_version}
        stage.put("provenance.json", _json_text(prov))
        date = when.date().isoformat()
        all_free = all(c["class"] == FREE for c in classes.values())
        doc = _croissant(
            attrs,
            stage.files,
            species_names=names,
            date=date,
            url=urls["dataset_url"],
            all_free=all_free,
            creators=makers,
            version=dataset_version,
            **same,
        )
        stage.put("croissant.json", _json_text(doc))
        # _card is looked up in this module at call time (tests replace tomodata.export._card)
        card = _card(attrs, classes=classes, files=sorted(stage.files), prov=prov, has_manifest=has_manifest, **same)
        stage.put("README.md", card)
        stage.commit(out)
    except BaseException:
        stage.discard()
        raise
    counts = {"n_species": len(names), "n_samples": n_total}
    return _summary(out, stage, recipe_only=recipe_only, lic=lic, classes=classes, notes=notes, **counts)
