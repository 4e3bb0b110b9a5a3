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
  Apache-2.0, Unlicense: docs/export.md); its terms travel with the data, and non-commercial and
  no-derivatives conditions are stated in the card.
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
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml
import zarr

from . import __version__
from .files import sha256_file
from .manifest import load_manifest
from .recipe import recipe_files
from .store import _voxel_mm, open_store, validate_store
from .store_settings import StoreSettings
from .views import sample_to_view
from .volume_files import VOLUME_FORMATS, write_canonical_volume

__all__ = [
    "EXPORT_SPEC",
    "RedistributionWarning",
    "classify_licence",
    "export_dataset",
    "verify_export",
    "verify_rebuild",
    "UnknownLicenceWarning",
    "CITATION_BIBTEX",
]

EXPORT_SPEC = "tomo-export/1"
CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
URL_PLACEHOLDER = "https://example.org/REPLACE-WITH-THE-DATASET-URL"
ZARR_V3_FORMAT = "https://zarr-specs.readthedocs.io/en/latest/v3/core/index.html"
SPLIT_NAMES = ("train", "val", "test")
_SPLIT_URLS = {"train": "cr:TrainingSplit", "val": "cr:ValidationSplit", "test": "cr:TestSplit"}
_ARRAYS = ("volume", "rotations", "mirrored", "views", "images")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
_CHUNK = 4 << 20

CITATION_BIBTEX = """@article{henzler2018singleimage,
  title     = {Single-image Tomography: 3D Volumes from 2D Cranial X-Rays},
  author    = {Henzler, Philipp and Rasche, Volker and Ropinski, Timo and Ritschel, Tobias},
  journal   = {Computer Graphics Forum},
  volume    = {37},
  number    = {2},
  pages     = {377--388},
  year      = {2018},
  publisher = {The Eurographics Association and John Wiley \\& Sons Ltd.},
  doi       = {10.1111/cgf.13369}
}"""

# licence classes
FREE, OPEN, RESTRICTED, UNKNOWN = "free", "open", "restricted", "unknown"
_CLEARED = (FREE, OPEN)

# Hugging Face's licence ids for Creative Commons licences (others: "other")
_HF_CC = {
    "by-2.0",
    "by-2.5",
    "by-3.0",
    "by-4.0",
    "by-sa-3.0",
    "by-sa-4.0",
    "by-nc-2.0",
    "by-nc-3.0",
    "by-nc-4.0",
    "by-nd-4.0",
    "by-nc-nd-3.0",
    "by-nc-nd-4.0",
    "by-nc-sa-2.0",
    "by-nc-sa-3.0",
    "by-nc-sa-4.0",
}
# long forms → the short words the patterns match (applied to the lower-cased text, in order)
_LICENCE_WORDS = [
    (r"creative[- _]commons", "cc"),
    (r"open[- _]data[- _]commons", "odc"),
    (r"attribution", "by"),
    (r"non[- _]?commercial", "nc"),
    (r"share[- _]?alike", "sa"),
    (r"no[- _]?deriv(ative)?s?", "nd"),
]


def _cc_licences() -> list[tuple[str, str, str, str]]:
    """CC BY(-NC)(-SA|-ND) 2.0/2.5/3.0/4.0: most specific variant first; "4" means 4.0."""
    out = []
    for variant in ("by-nc-sa", "by-nc-nd", "by-nc", "by-sa", "by-nd", "by"):
        for ver in ("4.0", "3.0", "2.5", "2.0"):
            v = ver.replace(".", r"\.") if ver == "2.5" else ver[0] + r"(\.0)?(?![.\d])"
            pattern = r"\bcc[- _]?" + r"[- _]?".join(variant.split("-")) + r"[- _,]*(v(ersion)?[- _]?)?" + v
            hf = f"cc-{variant}-{ver}" if f"{variant}-{ver}" in _HF_CC else "other"
            out.append(
                (pattern, f"CC-{variant.upper()}-{ver}", hf, f"https://creativecommons.org/licenses/{variant}/{ver}/")
            )
    return out


_GNU = "https://www.gnu.org/licenses/"
# (pattern on the normalised lower-cased licence text, SPDX id, Hugging Face id, URL); most specific first.
# A GNU licence without "+"/"or later" is the -only id (SPDX's reading of a bare version).
_OPEN_LICENCES = _cc_licences() + [
    (r"\bcc0\b|cc0[- _]?1", "CC0-1.0", "cc0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/"),
    (r"\bpddl\b", "PDDL-1.0", "pddl", "https://opendatacommons.org/licenses/pddl/1-0/"),
    (r"\bodc[- _]?by\b", "ODC-By-1.0", "odc-by", "https://opendatacommons.org/licenses/by/1-0/"),
    (r"\bodbl\b", "ODbL-1.0", "odbl", "https://opendatacommons.org/licenses/odbl/1-0/"),
    (r"public[- _]?domain", "LicenseRef-PublicDomain", "other", "https://creativecommons.org/publicdomain/mark/1.0/"),
    (r"\bunlicen[sc]e\b", "Unlicense", "unlicense", "https://unlicense.org/"),
    (r"\blgpl[- _]?v?2\.1(\+|[- _]or[- _]later)", "LGPL-2.1-or-later", "lgpl-2.1", _GNU + "old-licenses/lgpl-2.1.html"),
    (r"\blgpl[- _]?v?2\.1", "LGPL-2.1-only", "lgpl-2.1", _GNU + "old-licenses/lgpl-2.1.html"),
    (r"\blgpl[- _]?v?3(\.0)?(\+|[- _]or[- _]later)", "LGPL-3.0-or-later", "lgpl-3.0", _GNU + "lgpl-3.0.html"),
    (r"\blgpl[- _]?v?3\b|\blgpl[- _]?v?3\.0", "LGPL-3.0-only", "lgpl-3.0", _GNU + "lgpl-3.0.html"),
    (r"\bagpl[- _]?v?3(\.0)?(\+|[- _]or[- _]later)", "AGPL-3.0-or-later", "agpl-3.0", _GNU + "agpl-3.0.html"),
    (r"\bagpl[- _]?v?3\b|\bagpl[- _]?v?3\.0", "AGPL-3.0-only", "agpl-3.0", _GNU + "agpl-3.0.html"),
    (
        r"\bgpl[- _]?v?2(\.0)?(\+|[- _]or[- _]later)|gnu general public licen[sc]e,? v(ersion)? ?2(\.0)?,? or later"
        r"|\bgnu gpl[- _]?v?2(\.0)?(\+|[- _]or[- _]later)",
        "GPL-2.0-or-later",
        "gpl-2.0",
        _GNU + "old-licenses/gpl-2.0.html",
    ),
    (
        r"\bgpl[- _]?v?2\b|\bgpl[- _]?v?2\.0|gnu general public licen[sc]e,? v(ersion)? ?2",
        "GPL-2.0-only",
        "gpl-2.0",
        _GNU + "old-licenses/gpl-2.0.html",
    ),
    (
        r"\bgpl[- _]?v?3(\.0)?(\+|[- _]or[- _]later)|gnu general public licen[sc]e,? v(ersion)? ?3(\.0)?,? or later",
        "GPL-3.0-or-later",
        "gpl-3.0",
        _GNU + "gpl-3.0.html",
    ),
    (
        r"\bgpl[- _]?v?3\b|\bgpl[- _]?v?3\.0|gnu general public licen[sc]e,? v(ersion)? ?3",
        "GPL-3.0-only",
        "gpl-3.0",
        _GNU + "gpl-3.0.html",
    ),
    (r"\bmit\b", "MIT", "mit", "https://opensource.org/license/mit"),
    (
        r"bsd[- _]?3|3[- _]clause bsd|bsd 3-clause",
        "BSD-3-Clause",
        "bsd-3-clause",
        "https://opensource.org/license/bsd-3-clause",
    ),
    (
        r"bsd[- _]?2|2[- _]clause bsd|bsd 2-clause",
        "BSD-2-Clause",
        "bsd-2-clause",
        "https://opensource.org/license/bsd-2-clause",
    ),
    (
        r"apache[- _]?(licen[sc]e[- _,]*)?(v(ersion)?[- _]?)?2",
        "Apache-2.0",
        "apache-2.0",
        "https://www.apache.org/licenses/LICENSE-2.0",
    ),
]
# conditions of an open licence that the card states (by the SPDX id's parts)
_CONDITIONS = [
    ("NC", "non-commercial use only"),
    ("ND", "no derivatives: adaptations (the cubes and x-rays are derived from the scan) may not be shared"),
]
_CC0 = ("CC0-1.0", "cc0-1.0", "https://creativecommons.org/publicdomain/zero/1.0/")
_RESTRICTED_RE = re.compile(
    r"no[- ]redistribution|not? (be )?(for |to be )?redistribut|do not redistribute|"
    r"redistribution (is )?(not|prohibited|forbidden)|without redistribution|\butct\b|digimorph"
)
_PROCEDURAL_LICENCE = "procedural (tomodata.phantoms)"

_CROISSANT_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}


class RedistributionWarning(UserWarning):
    """A data export of species whose terms do not clear redistribution (explicit ``recipe_only=False``)."""


class UnknownLicenceWarning(UserWarning):
    """A species' licence text matches no recognised licence (it is treated as not cleared)."""


# ----------------------------------------------------------------------------------------------
# licences


def classify_licence(entry: dict) -> dict:
    """Classify a species' terms from its table entry (``licence`` or ``license``, and ``source``).

    Returns ``{"class": "free" | "open" | "restricted" | "unknown", "spdx": id or None,
    "hf": Hugging Face licence id or None, "url": licence URL or None, "text": the licence text,
    "redistribution": bool, "conditions": [...]}`` (open licences' conditions: "non-commercial use
    only", "no derivatives: ..."). Restricted wins over everything (a licence that forbids
    redistribution, UTCT/DigiMorph named in it, or a digimorph.org source); then procedural species
    (free, CC0-1.0); then a recognised open licence; else unknown (treated as not cleared). The text
    is lower-cased and long forms shortened ("Creative Commons Attribution-NonCommercial" → "cc
    by-nc") before matching; docs/export.md lists what is recognised.
    """
    text = str(entry.get("licence") or entry.get("license") or "").strip()
    source = str(entry.get("source") or "").strip()
    low, src = text.lower(), source.lower()
    out = {"text": text, "spdx": None, "hf": None, "url": None}
    if _RESTRICTED_RE.search(low) or "digimorph.org" in src:
        return out | {
            "class": RESTRICTED,
            "redistribution": False,
            "label": text or "source under digimorph.org: no redistribution",
        }
    if _PROCEDURAL_LICENCE in low or src.startswith("tomodata.phantoms"):
        spdx, hf, url = _CC0
        label = text or "CC0-1.0 (procedural species, tomodata.phantoms)"
        return out | {"class": FREE, "spdx": spdx, "hf": hf, "url": url, "redistribution": True, "label": label}
    norm = low
    for long, short in _LICENCE_WORDS:
        norm = re.sub(long, short, norm)
    for pattern, spdx, hf, url in _OPEN_LICENCES:
        if re.search(pattern, norm):
            return out | {
                "class": OPEN,
                "spdx": spdx,
                "hf": hf,
                "url": url,
                "redistribution": True,
                "label": text,
                "conditions": [c for tag, c in _CONDITIONS if tag in spdx.split("-")],
            }
    return out | {"class": UNKNOWN, "redistribution": False, "label": text or "(no licence given)"}


def _licence_notes(classes: dict[str, dict], recipe_only: bool | None) -> tuple[bool, list[str]]:
    """The export's mode and its licence warnings (also issued as Python warnings, so on stderr): an
    unknown licence (UnknownLicenceWarning); data of species not cleared, or under a no-derivatives
    licence (RedistributionWarning)."""
    stack = 3  # the caller of export_dataset
    notes = [
        f"species {n}: licence {c['label']!r} is not a recognised licence (docs/export.md lists them): "
        "treated as not cleared for redistribution, so the export is recipe-only unless recipe_only=False"
        for n, c in classes.items()
        if c["class"] == UNKNOWN
    ]
    for note in notes:
        warnings.warn(note, UnknownLicenceWarning, stacklevel=stack)
    blocked = [n for n, c in classes.items() if c["class"] not in _CLEARED]
    recipe_only = bool(blocked) if recipe_only is None else bool(recipe_only)
    loud = []
    if not recipe_only and blocked:
        loud.append(
            "exporting the data of species whose terms do not clear redistribution: "
            + ", ".join(f"{n} ({classes[n]['class']}: {classes[n]['label']})" for n in blocked)
            + ". The export is marked NOT FOR REDISTRIBUTION; do not publish it."
        )
    if not recipe_only:
        loud += [
            f"species {n}: licence {c['spdx']} forbids sharing adaptations, and the export holds data derived "
            "from its scan: check the terms before publishing"
            for n, c in classes.items()
            if any(cond.startswith("no derivatives") for cond in c.get("conditions") or [])
        ]
    for msg in loud:
        warnings.warn(msg, RedistributionWarning, stacklevel=stack)
    return recipe_only, notes + loud


# ----------------------------------------------------------------------------------------------
# small helpers


def _copy_hashed(src: Path, dst: Path) -> str:
    """Copy a file and return the sha256 of the bytes copied (one read of the source)."""
    h = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while True:
            block = fi.read(_CHUNK)
            if not block:
                break
            h.update(block)
            fo.write(block)
    return h.hexdigest()


def _now() -> _dt.datetime:
    """Export time (UTC); ``SOURCE_DATE_EPOCH`` pins it for reproducible exports."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), tz=_dt.UTC)
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def _json_text(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


def code_version() -> dict:
    """tomodata's version and, when run from a git checkout, its commit and whether it is dirty."""
    info: dict[str, Any] = {"tomodata": __version__, "git_commit": None, "git_dirty": None}
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return info
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        info["git_commit"] = commit or None
        info["git_dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def _resolve_store(store) -> Path:
    """The store's folder: ``store`` itself, or ``store/dataset.zarr`` (a ``build-demo`` output folder)."""
    p = Path(store)
    if (p / "zarr.json").is_file():
        return p
    if (p / "dataset.zarr" / "zarr.json").is_file():
        return p / "dataset.zarr"
    raise FileNotFoundError(f"{store} is not a dataset store (no zarr.json in it or in {p / 'dataset.zarr'})")


def _is_export(path: Path) -> bool:
    try:
        prov = json.loads((path / "provenance.json").read_text())
        return prov.get("export", {}).get("spec") == EXPORT_SPEC
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path, src: Path, overwrite: bool) -> None:
    ro, rs = out.resolve(), src.resolve()
    if ro == rs or rs in ro.parents or ro in rs.parents:
        raise ValueError(f"the export folder {out} and the store {src} must not contain one another")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{out} exists and is not empty; pass overwrite=True to replace an earlier export"
                )
            if not _is_export(out):
                raise FileExistsError(f"{out} is not empty and is not an earlier export: refusing to replace it")


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["true" if v is True else "false" if v is False else ("" if v is None else v) for v in r])
    return buf.getvalue()


def _size_category(n: int) -> str:
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for b, name in bounds:
        if n < b:
            return name
    return "n>1B"


def _species_markers(src: Path, names: list[str]) -> dict[str, dict]:
    out = {}
    for name in names:
        meta = json.loads((src / "species" / name / "zarr.json").read_text())
        out[name] = meta.get("attributes", {}).get("complete") or {}
    return out


# ----------------------------------------------------------------------------------------------
# licence summary for card / croissant


def _licence_summary(table: list[dict], classes: dict[str, dict], recipe_only: bool) -> dict:
    """The export's licence: Hugging Face id, Croissant licence list, prose, flags."""
    blocked = [n for n, c in classes.items() if c["class"] not in _CLEARED]
    restricted = [n for n, c in classes.items() if c["class"] == RESTRICTED]
    spdx = sorted({c["spdx"] for c in classes.values() if c["spdx"]})
    texts = sorted({c["label"] for c in classes.values() if c["class"] not in _CLEARED})
    cc0_spdx, cc0_hf, cc0_url = _CC0
    if recipe_only:
        not_for_redistribution = False
        if blocked:
            hf = "other"
            name = "recipe-only: CC0-1.0 recipe, source data under their own terms"
            cr = (
                [cc0_url]
                + [f"Source data (not included): {t}" for t in texts]
                + (
                    ["Source data without a recognised licence (not included): terms unknown"]
                    if any(classes[n]["class"] == UNKNOWN for n in blocked)
                    else []
                )
            )
        else:
            hf, name = cc0_hf, None
            cr = [cc0_url] + sorted({c["url"] for c in classes.values()} - {cc0_url})
    else:
        not_for_redistribution = bool(blocked)
        if blocked:
            hf = "other"
            name = "NOT FOR REDISTRIBUTION: includes data whose terms do not permit redistribution"
            cr = ["NOT FOR REDISTRIBUTION"] + texts + sorted({c["url"] for c in classes.values() if c["url"]})
        elif len(spdx) == 1:
            c0 = next(iter(classes.values()))
            hf, name, cr = c0["hf"], None, [c0["url"]]
        else:
            hf = "other"
            name = "mixed open licences: " + ", ".join(spdx)
            cr = sorted({c["url"] for c in classes.values()})
    return {
        "hf": hf,
        "name": name,
        "croissant": cr,
        "not_for_redistribution": not_for_redistribution,
        "blocked": blocked,
        "restricted": restricted,
        "spdx": spdx,
    }


# ----------------------------------------------------------------------------------------------
# tables


def _species_rows(attrs: dict, markers: dict, classes: dict) -> tuple[list[str], list[list]]:
    header = [
        "name",
        "split",
        "taxon",
        "source",
        "source_checksum",
        "licence",
        "licence_class",
        "redistribution",
        "original_shape_zyx",
        "spacing_mm_zyx",
        "n_samples",
        "group",
    ] + [f"{a}_sha256" for a in _ARRAYS]
    rows = []
    for e in attrs["species"]:
        n = e["name"]
        c = classes[n]
        sha = markers[n].get("sha256", {})
        rows.append(
            [
                n,
                e["split"],
                e.get("species", ""),
                e["source"],
                e["source_checksum"],
                c["label"],
                c["class"],
                c["redistribution"],
                " ".join(str(int(s)) for s in e["original_shape"]),
                " ".join(repr(float(s)) for s in e["spacing_mm"]),
                StoreSettings.from_attrs(attrs).samples_per_species,
                f"dataset.zarr/species/{n}",
            ]
            + [sha.get(a, "") for a in _ARRAYS]
        )
    return header, rows


def _samples_rows(attrs: dict) -> tuple[list[str], list[list]]:
    header = ["sample_id", "species", "split", "sample", "view", "mirrored", "images_array"]
    rows = []
    n_samples = StoreSettings.from_attrs(attrs).samples_per_species
    for e in attrs["species"]:
        n = e["name"]
        arr = f"dataset.zarr/species/{n}/images"
        views, mirrored = sample_to_view(np.arange(n_samples), n_samples // 2)
        for i in range(n_samples):
            rows.append([f"{n}/{i}", n, e["split"], i, int(views[i]), bool(mirrored[i]), arr])
    return header, rows


# ----------------------------------------------------------------------------------------------
# Croissant


def _field(rs: str, name: str, dtype: str, desc: str, file_id: str, *, references: str | None = None) -> dict:
    f = {
        "@type": "cr:Field",
        "@id": f"{rs}/{name}",
        "name": name,
        "description": desc,
        "dataType": dtype,
        "source": {"fileObject": {"@id": file_id}, "extract": {"column": name}},
    }
    if references:
        f["references"] = {"field": {"@id": references}}
    return f


def _array_layout_text(attrs: dict) -> str:
    lay = attrs["layout"]["arrays"]
    parts = []
    for a in _ARRAYS:
        d = lay[a]
        shards = f", shards {d['shards']}" if d.get("shards") else ""
        parts.append(
            f"{a} {tuple(d['shape'])} {d['dtype']} (chunks {d['chunks']}{shards}; {attrs['encoding'][a]['quantity']})"
        )
    return "; ".join(parts)


def _croissant(
    attrs: dict,
    files: dict[str, str],
    *,
    recipe_only: bool,
    lic: dict,
    species_names: list[str],
    date: str,
    n_samples_total: int,
) -> dict:
    enc = attrs["encoding"]["images"]
    layout = _array_layout_text(attrs)
    data_note = (
        "This is a recipe-only export: no image or volume data are included (the sources' terms do not "
        "clear redistribution); the recipe files let you rebuild the Zarr store with the tomodata code "
        "and check it against recipe/checksums.json. The samples table lists the samples the rebuilt "
        "store holds, at the array paths given."
        if recipe_only
        else "The data are in the Zarr v3 store dataset.zarr (sharded, zstd), described below as one FileSet "
        "per species."
    )
    description = (
        f"{attrs.get('title', 'Single-image tomography dataset')}. Orthographic Beer-Lambert x-rays of "
        f"{len(species_names)} skull volumes (chi = {attrs['chi']}, {attrs['steps']} samples per ray, "
        f"{attrs['image_size']}x{attrs['image_size']} pixels) from {attrs['n_views']} views per species on the "
        f"+z hemisphere ({attrs['view_scheme']['name']}, seed {attrs['view_scheme']['seed']}), each also mirrored: "
        f"{attrs['samples_per_species']} samples per species, {n_samples_total} in all, with the "
        f"{attrs['volume_size']}^3 density volume of each species. Splits hold out whole species. "
        f"{data_note} Per species the store holds species/<name>/ with the arrays: {layout}. Sample 2i is "
        f"view i, sample 2i+1 its mirror (image rows reversed). Image values: {enc['decode']}. View-aligned "
        "volumes are not stored; they are derived from volume and rotations (tomodata.render.view_volumes). "
        "Geometry conventions are in the store's root attributes (geometry) and recipe/store_attrs.json."
    )
    dist: list[dict] = []

    def fobj(path: str, fmt: str, desc: str) -> None:
        dist.append(
            {
                "@type": "cr:FileObject",
                "@id": path,
                "name": path,
                "description": desc,
                "contentUrl": path,
                "encodingFormat": fmt,
                "sha256": files[path],
            }
        )

    fobj("species.csv", "text/csv", "One row per species: split, source, licence, per-array sha256 of the data.")
    fobj("samples.csv", "text/csv", "One row per sample: species, split, sample index, view, mirrored, image array.")
    fobj("provenance.json", "application/json", "Code version, build config, store provenance, export time.")
    for path in sorted(p for p in files if p.startswith("recipe/")):
        fmt = (
            "text/tab-separated-values"
            if path.endswith(".tsv")
            else "application/json"
            if path.endswith(".json")
            else "application/yaml"
            if path.endswith((".yaml", ".yml"))
            else "text/plain"
        )
        fobj(
            path,
            fmt,
            "Recipe file: "
            + {
                "recipe/checksums.json": "per-species sha256 of every array (completion markers) and source checksums",
                "recipe/store_attrs.json": (
                    "the store's root attributes (rendering constants, view scheme, species table)"
                ),
                "recipe/manifest.tsv": "the specimen manifest (sources, spacing, split, licence, sha256)",
            }.get(path, "the build configuration"),
        )
    for s in SPLIT_NAMES:
        fobj(f"splits/{s}.txt", "text/plain", f"Species of the {s} split, one name per line.")
    if not recipe_only:
        fobj(
            "dataset.zarr/zarr.json",
            "application/json",
            "Root metadata of the Zarr v3 store: all dataset attributes (spec_version tomo-dataset/1).",
        )
        for n in species_names:
            dist.append(
                {
                    "@type": "cr:FileSet",
                    "@id": f"zarr/{n}",
                    "name": f"zarr/{n}",
                    "description": (
                        f"Zarr v3 group species/{n} (metadata zarr.json files, chunk and shard files) with the "
                        f"arrays {layout}. sha256 of every file: SHA256SUMS; of every decoded array: "
                        "species.csv."
                    ),
                    "encodingFormat": ZARR_V3_FORMAT,
                    "includes": f"dataset.zarr/species/{n}/**",
                }
            )

    split_rs = {
        "@type": "cr:RecordSet",
        "@id": "splits",
        "name": "splits",
        "description": "The dataset's splits (whole species are held out).",
        "dataType": "cr:Split",
        "key": {"@id": "splits/name"},
        "field": [
            {
                "@type": "cr:Field",
                "@id": "splits/name",
                "name": "name",
                "dataType": "sc:Text",
                "description": "Split name as used in the tables.",
            },
            {
                "@type": "cr:Field",
                "@id": "splits/url",
                "name": "url",
                "dataType": "sc:URL",
                "description": "Croissant split type.",
            },
        ],
        "data": [{"splits/name": s, "splits/url": _SPLIT_URLS[s]} for s in SPLIT_NAMES],
    }
    sp = "species"
    species_rs = {
        "@type": "cr:RecordSet",
        "@id": sp,
        "name": sp,
        "description": "The species table: one record per species (one specimen each).",
        "key": {"@id": f"{sp}/name"},
        "field": [
            _field(sp, "name", "sc:Text", "Species name in the store (species/<name>).", "species.csv"),
            _field(sp, "split", "sc:Text", "train, val or test.", "species.csv", references="splits/name"),
            _field(sp, "taxon", "sc:Text", "Species name as text, where known.", "species.csv"),
            _field(sp, "source", "sc:Text", "Where the CT scan (or generator) comes from.", "species.csv"),
            _field(sp, "source_checksum", "sc:Text", "Checksum of the source.", "species.csv"),
            _field(sp, "licence", "sc:Text", "Terms of use of the source.", "species.csv"),
            _field(
                sp, "licence_class", "sc:Text", "free, open, restricted or unknown (tomodata.export).", "species.csv"
            ),
            _field(
                sp, "redistribution", "sc:Boolean", "Whether the source's terms permit redistribution.", "species.csv"
            ),
            _field(sp, "original_shape_zyx", "sc:Text", "Shape of the source scan, z y x.", "species.csv"),
            _field(sp, "spacing_mm_zyx", "sc:Text", "Voxel spacing of the source scan in mm, z y x.", "species.csv"),
            _field(sp, "n_samples", "sc:Integer", "Samples of the species (2 per view).", "species.csv"),
            _field(sp, "group", "sc:Text", "Path of the species' Zarr group in the export.", "species.csv"),
        ]
        + [
            _field(
                sp,
                f"{a}_sha256",
                "sc:Text",
                f"sha256 of the decoded array {a} (see store attribute checksums).",
                "species.csv",
            )
            for a in _ARRAYS
        ],
    }
    sm = "samples"
    samples_rs = {
        "@type": "cr:RecordSet",
        "@id": sm,
        "name": sm,
        "description": (
            "One record per sample (an x-ray and its view). The image is images_array[sample] of the Zarr store: "
            f"({attrs['image_size']}, {attrs['image_size']}) {enc['dtype']}, {enc['decode']}; the camera rotation "
            "is rotations[view] of the same species group, the density volume its volume array."
        ),
        "key": {"@id": f"{sm}/sample_id"},
        "field": [
            _field(sm, "sample_id", "sc:Text", "<species>/<sample>.", "samples.csv"),
            _field(sm, "species", "sc:Text", "Species name.", "samples.csv", references=f"{sp}/name"),
            _field(
                sm,
                "split",
                "sc:Text",
                "train, val or test (the species' split).",
                "samples.csv",
                references="splits/name",
            ),
            _field(
                sm,
                "sample",
                "sc:Integer",
                "Sample index within the species: index along axis 0 of images.",
                "samples.csv",
            ),
            _field(sm, "view", "sc:Integer", "View index (= sample // 2): index into rotations.", "samples.csv"),
            _field(
                sm, "mirrored", "sc:Boolean", "The sample is its view mirrored (image rows reversed).", "samples.csv"
            ),
            _field(
                sm,
                "images_array",
                "sc:Text",
                "Path of the Zarr array that holds the image, relative to the export.",
                "samples.csv",
            ),
        ],
    }
    keywords = [
        "x-ray",
        "computed tomography",
        "single-image tomography",
        "skull",
        "mammals",
        "volume reconstruction",
        "zarr",
    ]
    return {
        "@context": _CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CROISSANT_VERSION,
        "name": "single-image-tomography-skull-xrays",
        "alternateName": attrs.get("title", ""),
        "description": description,
        "license": lic["croissant"],
        "url": URL_PLACEHOLDER,
        "version": __version__,
        "datePublished": date,
        "citeAs": CITATION_BIBTEX,
        "keywords": keywords,
        "isAccessibleForFree": True,
        "distribution": dist,
        "recordSet": [split_rs, species_rs, samples_rs],
    }


# ----------------------------------------------------------------------------------------------
# dataset card


def _conditions_text(table: list[dict], classes: dict) -> list[str]:
    """Card lines for the conditions of open licences (non-commercial, no derivatives), one per condition."""
    lines = []
    for _, cond in _CONDITIONS:
        names = [e["name"] for e in table if cond in (classes[e["name"]].get("conditions") or [])]
        if names:
            ids = ", ".join(sorted({classes[n]["spdx"] for n in names}))
            lines += [
                f"> **{cond.split(':')[0].capitalize()}** ({ids}): {', '.join(names)}. "
                + (
                    "Data of these species, and anything made from them, may not be used commercially."
                    if cond.startswith("non-commercial")
                    else "The licence forbids sharing adaptations; check its terms before publishing data of "
                    "these species."
                ),
                "",
            ]
    return lines


def _card(
    attrs: dict,
    *,
    recipe_only: bool,
    lic: dict,
    classes: dict,
    files: list[str],
    prov: dict,
    n_samples_total: int,
    has_manifest: bool,
) -> str:
    table = attrs["species"]
    all_free = all(c["class"] == FREE for c in classes.values())
    front: dict[str, Any] = {"license": lic["hf"]}
    if lic["name"]:
        front["license_name"] = lic["name"]
        front["license_details"] = (
            "Recipe files: CC0-1.0. The data they rebuild are under each source's terms (see species.csv)."
            if recipe_only
            else (
                "Contains data whose source terms do not permit redistribution. Do not publish or share this folder."
                if lic["not_for_redistribution"]
                else "Per-species licences in species.csv."
            )
        )
    front |= {
        "pretty_name": "Single-image tomography: mammal skull x-rays (rebuild of Henzler et al., EG 2018)",
        "task_categories": ["image-to-3d"],
        "size_categories": [_size_category(n_samples_total)],
        "tags": [
            "x-ray",
            "computed-tomography",
            "tomography",
            "skull",
            "mammals",
            "3d-reconstruction",
            "single-image-tomography",
            "zarr",
            "croissant",
        ]
        + (["synthetic"] if all_free else [])
        + (["recipe-only"] if recipe_only else []),
        "source_datasets": ["original"] if all_free else ["extended"],
        "annotations_creators": ["machine-generated"],
        "viewer": False,
    }
    fm = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
    splits = attrs.get("splits") or {}
    mode = "recipe-only" if recipe_only else "data"
    L = ["---", fm.rstrip("\n"), "---", "", "# Single-image tomography: x-rays of mammal skulls", ""]
    if lic["not_for_redistribution"]:
        L += [
            "> **NOT FOR REDISTRIBUTION.** This folder contains data from sources whose terms do not permit "
            "redistribution (" + ", ".join(lic["blocked"]) + "). It was exported with an explicit "
            "`recipe_only=False` for people who already hold the rights. Do not publish or share it.",
            "",
        ]
    notes = (prov.get("export") or {}).get("warnings") or []
    if notes:
        L += ["## Warnings", ""] + [f"- {n}" for n in notes] + [""]
    if recipe_only and lic["restricted"]:
        L += [
            "> **Redistribution is not allowed** for the source scans of "
            + ", ".join(lic["restricted"])
            + " (terms: "
            + "; ".join(sorted({classes[n]["label"] for n in lic["restricted"]}))
            + "). This export therefore holds no data: "
            "it is a recipe to rebuild the dataset from the original sources, which you must obtain "
            "yourself under their terms.",
            "",
        ]
    L += [
        f"A dataset in the style of Henzler et al., *Single-image Tomography: 3D Volumes from 2D Cranial X-Rays* "
        f"(Computer Graphics Forum 37(2), Eurographics 2018), built with the `tomodata` code "
        f"(version {prov['code_version']['tomodata']}"
        + (f", commit {prov['code_version']['git_commit'][:12]}" if prov["code_version"].get("git_commit") else "")
        + ").",
        "",
        f"* export mode: **{mode}**",
        f"* species: {len(table)} ({', '.join(f'{s}: {len(splits.get(s, []))}' for s in SPLIT_NAMES)}); "
        "splits hold out whole species",
        f"* samples: {attrs['samples_per_species']} per species ({attrs['n_views']} views, each also mirrored), "
        f"{n_samples_total} in all",
        f"* images: {attrs['image_size']}×{attrs['image_size']}, {attrs['encoding']['images']['dtype']} "
        f"({attrs['encoding']['images']['decode']}); orthographic Beer–Lambert x-rays, χ = {attrs['chi']}, "
        f"{attrs['steps']} samples per ray",
        f"* volumes: {attrs['volume_size']}³ float32 linear density in [0, 1], one per species",
        f"* views: `{attrs['view_scheme']['name']}` seed {attrs['view_scheme']['seed']} "
        f"(`{attrs['view_scheme'].get('function', 'tomodata.views.hemisphere_views')}`)",
        "",
        "## Licence and terms",
        "",
    ]
    if recipe_only and lic["blocked"]:
        L += [
            "The recipe files in this folder (tables, checksums, configuration) are released under CC0-1.0. "
            "They contain no data from the sources. The data you rebuild from them stay under each source's "
            "terms, listed below; where a source does not permit redistribution, neither does the rebuilt "
            "dataset.",
            "",
        ]
    elif recipe_only:
        L += ["The recipe files are released under CC0-1.0; the data they rebuild are under the licences below.", ""]
    elif all_free:
        L += [
            "All species are procedural (generated by `tomodata.phantoms`, no scanned specimen): the data are "
            "released under **CC0-1.0** (public domain dedication). The code that made them is BSD-3-Clause.",
            "",
        ]
    elif not lic["blocked"]:
        L += ["The data of each species are under the licence of its source, listed below.", ""]
    L += ["| species | split | licence | class | redistribution |", "|---|---|---|---|---|"]
    for e in table:
        c = classes[e["name"]]
        allowed = "allowed" if c["redistribution"] else "NOT allowed" if c["class"] == RESTRICTED else "not cleared"
        L.append(f"| {e['name']} | {e['split']} | {c['label']} | {c['class']} | {allowed} |")
    L += [""] + _conditions_text(table, classes) + ["## Contents", ""]
    L += [
        "| path | what |",
        "|---|---|",
        "| `README.md` | this card |",
        "| `croissant.json` | Croissant 1.1 metadata (record sets backed by the CSV tables) |",
        "| `SHA256SUMS` | sha256 of every other file (`sha256sum -c SHA256SUMS`) |",
        "| `provenance.json` | code version, configuration, the store's provenance, export time |",
        "| `species.csv` | one row per species, with the sha256 of each of its arrays |",
        "| `samples.csv` | one row per sample: species, split, sample, view, mirrored, image array |",
        "| `splits/*.txt` | species per split |",
        "| `recipe/checksums.json` | per-species array sha256 (completion markers) and source checksums |",
        "| `recipe/store_attrs.json` | the store's root attributes (all rendering settings, species table) |",
    ]
    if has_manifest:
        L.append("| `recipe/manifest.tsv` | the specimen manifest (`docs/manifest.md`) |")
    cfg = [f for f in files if f.startswith("recipe/config")]
    if cfg:
        L.append(f"| `{cfg[0]}` | the build configuration |")
    recipe_rows = {
        "recipe/specimens.tsv": "every species with every setting its cube was made with",
        "recipe/rebuild.sh": "the commands that rebuild the store (section Rebuild)",
        "recipe/workflow_config.json": "the merged workflow config the store recorded",
    }
    L += [f"| `{f}` | {what} |" for f, what in recipe_rows.items() if f in files]
    if any(f.startswith("recipe/alignment/") for f in files):
        L.append("| `recipe/alignment/*.json` | each aligned specimen's transform (replayed by rebuild.sh) |")
    if not recipe_only:
        L.append("| `dataset.zarr/` | the Zarr v3 store (layout below) |")
    L += [
        "",
        "## Layout" + (" (of the store you rebuild)" if recipe_only else ""),
        "",
        "```",
        "dataset.zarr/zarr.json                  root attributes: everything needed to use the data",
        "dataset.zarr/species/<name>/zarr.json   status + completion marker (sha256 of every array)",
        "dataset.zarr/species/<name>/volume/    OME-Zarr 0.5 image (multiscales: z, y, x; mm or the cube's units)",
        f"dataset.zarr/species/<name>/volume/0   ({', '.join([str(attrs['volume_size'])] * 3)}) float32  "
        "density, vol[z, y, x]; volume/1 its 2x2x2 mean",
        f"dataset.zarr/species/<name>/rotations  ({attrs['n_views']}, 3, 3) float64    R, camera -> volume",
        f"dataset.zarr/species/<name>/mirrored   ({attrs['samples_per_species']},) bool     sample 2i+1 is mirrored",
        f"dataset.zarr/species/<name>/views      ({attrs['samples_per_species']},) int32    view of each sample",
        f"dataset.zarr/species/<name>/images     ({attrs['samples_per_species']}, {attrs['image_size']}, "
        f"{attrs['image_size']}) {attrs['encoding']['images']['dtype']}",
        "```",
        "",
        "```python",
        "import zarr",
        'g = zarr.open_group("dataset.zarr", mode="r", use_consolidated=False)',
        f'img = g["species/{table[0]["name"]}/images"][5] / 65535.0   # sample 5 = view 2, mirrored',
        f'R = g["species/{table[0]["name"]}/rotations"][2]            # camera -> volume',
        "```",
        "",
    ]
    L += [
        "## Verify",
        "",
        "```bash",
        "sha256sum -c SHA256SUMS                 # every file",
        "python -c 'from tomodata.export import verify_export; print(verify_export(\".\"))'",
    ]
    if not recipe_only:
        L.append("tomo validate dataset.zarr               # every array against its completion marker")
    L += ["```", "", "## Rebuild", ""]
    cmd = (attrs.get("provenance", {}).get("config") or {}).get("command")
    L += [
        "Install the `tomodata` code at the version in `provenance.json` (`code_version`), then:",
        "",
    ]
    rebuilt = "rebuilt" if cmd == "tomo build-demo" else "rebuilt.zarr"
    if cmd == "tomo build-demo":
        args = attrs["provenance"]["config"].get("args", {})
        opts = " ".join(
            f"--{k.replace('_', '-')} {args[k]}"
            for k in ("species", "held_out", "views", "size", "steps", "volume_size", "chi", "seed")
            if k in args
        )
        L += ["```bash", f"tomo build-demo -o rebuilt {opts} --backend cpu", "```", ""]
    else:
        L += [
            "`recipe/specimens.tsv` lists every species with every setting its cube was made with (spacing, "
            "slice axis, orientation, window, background, crop, source checksum); `recipe/rebuild.sh` fetches "
            "the sources (checking their sha256), makes each cube with those settings, cube size and content "
            "key, and the store with the recorded settings and workflow config. Local sources (rows whose "
            "`notes` say `local:`) must be supplied at the path given, or the row edited; the script names every "
            "missing one before it starts. `BACKEND=cuda` renders on the GPU (default: cpu).",
            "",
            "```bash",
            "bash recipe/rebuild.sh rebuilt.zarr      "
            "# tomo fetch, tomo cube per species, store-create, render, finalize",
            "```",
            "",
        ]
    L += [
        "Then compare with the recorded checksums: "
        f'`python -c \'from tomodata.export import verify_rebuild; print(verify_rebuild("{rebuilt}", "."))\'`. '
        "Volumes, rotations, mirror flags and view indices must match bit for bit. Images match bit for bit "
        "when rendered with the same backend on the same kind of machine; the CUDA and CPU renderers agree "
        "within 1 uint16 step (float32 rounding), so a build on the other backend can differ in "
        "`images_sha256` only.",
        "",
    ]
    L += ["## Citation", "", "```bibtex", CITATION_BIBTEX, "```", ""]
    L += [
        "## Provenance",
        "",
        f"Exported {prov['exported_at']} by `tomodata.export.export_dataset` ({EXPORT_SPEC}); store built by "
        f"`{attrs.get('provenance', {}).get('generator', 'tomodata')}` "
        f"(code {attrs.get('provenance', {}).get('code_version')})."
        " See `provenance.json`.",
        "",
    ]
    return "\n".join(L)


# ----------------------------------------------------------------------------------------------
# export


def export_dataset(
    store,
    out_dir,
    *,
    manifest=None,
    config=None,
    recipe_only: bool | None = None,
    overwrite: bool = False,
    volumes: str | None = None,
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

    Returns:
        a summary dict: ``out``, ``mode`` ("data" / "recipe-only"), ``recipe_only``, ``licence`` (the
        card's), ``licence_classes`` ({species: class}), ``not_for_redistribution``, ``species``,
        ``samples``, ``files`` (count), ``bytes``, ``warnings``.
    """
    src = _resolve_store(store)
    out = Path(out_dir)
    _check_out(out, src, overwrite)

    attrs: dict[str, Any] = zarr.open_group(str(src), mode="r", use_consolidated=False, zarr_format=3).attrs.asdict()
    report = validate_store(src)
    if not report.ok:
        raise ValueError(
            f"store {src} does not validate; rebuild species {report.species_to_rebuild} first:\n" + report.summary()
        )
    table = attrs["species"]
    names = [e["name"] for e in table]
    for n in names:
        if not _SAFE_PATH.match(n):
            raise ValueError(f"species name {n!r} cannot be used in file paths")
    markers = _species_markers(src, names)
    for n in names:
        if markers[n].get("sha256") != report.checksums.get(n):
            raise ValueError(f"species {n!r}: completion marker changed while exporting; run again")
    classes = {e["name"]: classify_licence(e) for e in table}
    recipe_only, notes = _licence_notes(classes, recipe_only)
    if volumes is not None and volumes not in VOLUME_FORMATS:
        raise ValueError(f"volumes must be one of {sorted(VOLUME_FORMATS)}, got {volumes!r}")
    if volumes is not None and recipe_only:
        raise ValueError(
            "--volumes writes the species' volumes, which a recipe-only export leaves out "
            "(their terms do not clear redistribution); pass --with-data to include them anyway"
        )

    manifest_bytes = None
    if manifest is not None:
        df = load_manifest(manifest)
        missing = sorted(set(names) - set(df["id"]))
        if missing:
            raise ValueError(f"manifest {manifest} lacks the store's species {missing}")
        manifest_bytes = Path(manifest).read_bytes()

    if config is None:
        config_obj = (attrs.get("provenance") or {}).get("config")
        config_name, config_bytes = "recipe/config.json", _json_text(config_obj).encode()
    elif isinstance(config, dict):
        config_obj = json.loads(json.dumps(config, allow_nan=False))
        config_name, config_bytes = "recipe/config.json", _json_text(config_obj).encode()
    else:
        cpath = Path(config)
        config_bytes = cpath.read_bytes()
        suffix = cpath.suffix.lower() if cpath.suffix.lower() in (".yaml", ".yml", ".json", ".toml") else ".txt"
        config_name = f"recipe/config{suffix}"
        try:
            config_obj = yaml.safe_load(config_bytes.decode()) if suffix != ".toml" else None
        except yaml.YAMLError as exc:
            raise ValueError(f"config {cpath} is not valid YAML/JSON: {exc}") from None

    when = _now()
    lic = _licence_summary(table, classes, recipe_only)
    n_total = StoreSettings.from_attrs(attrs).samples_per_species * len(names)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    files: dict[str, str] = {}
    try:

        def put(rel: str, data: bytes | str) -> None:
            b = data.encode() if isinstance(data, str) else data
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b)
            files[rel] = hashlib.sha256(b).hexdigest()

        n_bytes = 0
        if not recipe_only:
            for p in sorted(src.rglob("*")):
                if p.is_symlink():
                    raise ValueError(f"the store holds a symbolic link ({p}): refusing to export it")
                if not p.is_file():
                    continue
                rel = "dataset.zarr/" + p.relative_to(src).as_posix()
                files[rel] = _copy_hashed(p, tmp / rel)
                n_bytes += p.stat().st_size

        if volumes is not None:
            ds = open_store(src, volume_cache=0)
            for e in table:
                rel = f"volumes/{e['name']}{VOLUME_FORMATS[volumes]}"
                (tmp / "volumes").mkdir(exist_ok=True)
                write_canonical_volume(
                    tmp / rel, ds.volume(e["name"]), _voxel_mm(e), description=f"tomo canonical volume {e['name']}"
                )
                files[rel] = sha256_file(tmp / rel)
                n_bytes += (tmp / rel).stat().st_size
        put("species.csv", _csv_text(*_species_rows(attrs, markers, classes)))
        put("samples.csv", _csv_text(*_samples_rows(attrs)))
        for s in SPLIT_NAMES:
            members = [e["name"] for e in table if e["split"] == s]
            put(f"splits/{s}.txt", "".join(m + "\n" for m in members))
        checksums = {
            "spec": EXPORT_SPEC,
            "hashed": attrs.get("checksums", {}).get("hashed"),
            "note": (
                "arrays_sha256 must be reproduced by a rebuild (images: with the same renderer backend and "
                "machine kind); source_checksum identifies each source file"
            ),
            "species": {
                n: {
                    "split": e["split"],
                    "source": e["source"],
                    "source_checksum": e["source_checksum"],
                    "licence": classes[n]["label"],
                    "licence_class": classes[n]["class"],
                    "arrays_sha256": markers[n].get("sha256"),
                    "marker_code_version": markers[n].get("code_version"),
                }
                for n, e in zip(names, table)
            },
        }
        if manifest_bytes is not None:
            checksums["manifest_sha256"] = hashlib.sha256(manifest_bytes).hexdigest()
        put("recipe/checksums.json", _json_text(checksums))
        put("recipe/store_attrs.json", _json_text(attrs))
        if manifest_bytes is not None:
            put("recipe/manifest.tsv", manifest_bytes)
        put(config_name, config_bytes)
        recipe, local_notes = recipe_files(attrs)
        for rel, text in recipe.items():
            put(rel, text)
        notes.extend(local_notes)

        prov = {
            "export": {
                "spec": EXPORT_SPEC,
                "mode": "recipe-only" if recipe_only else "data",
                "tool": "tomodata.export.export_dataset",
                "exported_at": when.isoformat(),
                "source_store": str(src),
                "licence": lic["hf"],
                "licence_name": lic["name"],
                "not_for_redistribution": lic["not_for_redistribution"],
                "licence_classes": {n: c["class"] for n, c in classes.items()},
                "warnings": notes,
            },
            "code_version": code_version(),
            "exported_at": when.isoformat(),
            "config": config_obj,
            "config_file": config_name,
            "manifest_file": "recipe/manifest.tsv" if manifest_bytes is not None else None,
            "store": {
                "spec_version": attrs.get("spec_version"),
                "provenance": attrs.get("provenance"),
                "timestamps": attrs.get("timestamps"),
                "completion": attrs.get("completion"),
                "finalized": isinstance(attrs.get("completion"), dict),
            },
        }
        put("provenance.json", _json_text(prov))
        put(
            "croissant.json",
            _json_text(
                _croissant(
                    attrs,
                    files,
                    recipe_only=recipe_only,
                    lic=lic,
                    species_names=names,
                    date=when.date().isoformat(),
                    n_samples_total=n_total,
                )
            ),
        )
        put(
            "README.md",
            _card(
                attrs,
                recipe_only=recipe_only,
                lic=lic,
                classes=classes,
                files=sorted(files),
                prov=prov,
                n_samples_total=n_total,
                has_manifest=manifest_bytes is not None,
            ),
        )
        for rel in files:
            if not _SAFE_PATH.match(rel) or ".." in rel.split("/"):
                raise ValueError(f"unsafe file name in the export: {rel!r}")
        sums = "".join(f"{files[rel]}  {rel}\n" for rel in sorted(files))
        (tmp / "SHA256SUMS").write_text(sums)

        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if old is not None:
                old.rename(out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    n_bytes += sum((out / rel).stat().st_size for rel in files if not rel.startswith("dataset.zarr/"))
    return {
        "out": str(out),
        "mode": "recipe-only" if recipe_only else "data",
        "recipe_only": recipe_only,
        "licence": lic["hf"],
        "licence_classes": {n: c["class"] for n, c in classes.items()},
        "not_for_redistribution": lic["not_for_redistribution"],
        "species": len(names),
        "samples": n_total,
        "files": len(files) + 1,
        "bytes": n_bytes,
        "warnings": notes,
    }


# ----------------------------------------------------------------------------------------------
# verify


def _read_sums(path: Path) -> tuple[dict[str, str], list[str]]:
    sums, problems = {}, []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            problems.append(f"SHA256SUMS line {k} is malformed: {line[:80]!r}")
            continue
        rel = m.group(2)
        if rel.startswith("/") or ".." in rel.split("/") or "\\" in rel:
            problems.append(f"SHA256SUMS line {k} names an unsafe path {rel!r}")
            continue
        sums[rel] = m.group(1)
    return sums, problems


def verify_export(out_dir) -> list[str]:
    """Problems with an export (empty list: it is intact).

    Checks that ``SHA256SUMS`` lists every file and each file's sha256, that ``provenance.json`` and
    ``croissant.json`` parse and agree with the files, and, for a data export, validates
    ``dataset.zarr`` with :func:`tomodata.store.validate_store` and compares its array checksums with
    ``recipe/checksums.json``.
    """
    root = Path(out_dir)
    if not root.is_dir():
        return [f"{root} is not a folder"]
    sums_path = root / "SHA256SUMS"
    if not sums_path.is_file():
        return [f"{root} has no SHA256SUMS"]
    sums, problems = _read_sums(sums_path)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    on_disk.discard("SHA256SUMS")
    for rel in sorted(set(sums) - on_disk):
        problems.append(f"{rel}: listed in SHA256SUMS but missing")
    for rel in sorted(on_disk - set(sums)):
        problems.append(f"{rel}: not listed in SHA256SUMS")
    for rel in sorted(set(sums) & on_disk):
        p = root / rel
        if p.is_symlink():
            problems.append(f"{rel}: is a symbolic link")
        elif sha256_file(p) != sums[rel]:
            problems.append(f"{rel}: sha256 does not match SHA256SUMS (modified or corrupt)")
    try:
        prov = json.loads((root / "provenance.json").read_text())
        mode = prov["export"]["mode"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return problems + [f"provenance.json is missing or unreadable ({type(e).__name__}: {e})"]
    try:
        cr = json.loads((root / "croissant.json").read_text())
        for d in cr.get("distribution", []):
            if d.get("@type") == "cr:FileObject" and sums.get(d.get("contentUrl")) not in (None, d.get("sha256")):
                problems.append(f"croissant.json: sha256 of {d.get('contentUrl')} disagrees with SHA256SUMS")
    except (OSError, ValueError) as e:
        problems.append(f"croissant.json is missing or not JSON ({type(e).__name__}: {e})")
    if mode == "data":
        store = root / "dataset.zarr"
        report = validate_store(store)
        problems += [f"dataset.zarr: {e}" for e in report.errors]
        if report.species_to_rebuild:
            problems.append(f"dataset.zarr: species to rebuild: {report.species_to_rebuild}")
        try:
            recorded = json.loads((root / "recipe" / "checksums.json").read_text())["species"]
            for n, sums_n in report.checksums.items():
                if recorded.get(n, {}).get("arrays_sha256") != sums_n:
                    problems.append(f"dataset.zarr: species {n!r} arrays disagree with recipe/checksums.json")
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"recipe/checksums.json is missing or unreadable ({type(e).__name__}: {e})")
    elif mode != "recipe-only":
        problems.append(f"provenance.json: unknown export mode {mode!r}")
    return problems


def verify_rebuild(store, out_dir, *, images: str = "exact") -> list[str]:
    """Compare a rebuilt store with an export's ``recipe/checksums.json`` (empty list: it matches).

    The rebuilt store must validate and hold the same species with the same splits; every array's
    sha256 must equal the recorded one. ``images="skip"`` leaves out the images' sha256 (for a build
    with the other renderer backend, whose images may differ by 1 uint16 step).
    """
    if images not in ("exact", "skip"):
        raise ValueError(f"images must be 'exact' or 'skip', got {images!r}")
    root = Path(out_dir)
    recorded = json.loads((root / "recipe" / "checksums.json").read_text())["species"]
    src = _resolve_store(store)
    report = validate_store(src)
    problems = [f"rebuilt store: {e}" for e in report.errors]
    attrs: dict[str, Any] = zarr.open_group(str(src), mode="r", use_consolidated=False, zarr_format=3).attrs.asdict()
    splits = {e["name"]: e["split"] for e in attrs.get("species", [])}
    for n in sorted(set(recorded) - set(splits)):
        problems.append(f"species {n!r} is missing from the rebuilt store")
    for n in sorted(set(splits) - set(recorded)):
        problems.append(f"species {n!r} is not in the recipe")
    for n in sorted(set(recorded) & set(splits)):
        if splits[n] != recorded[n]["split"]:
            problems.append(f"species {n!r}: split {splits[n]!r}, the recipe says {recorded[n]['split']!r}")
        got = report.checksums.get(n)
        if got is None:
            continue
        for a, want in (recorded[n].get("arrays_sha256") or {}).items():
            if a == "images" and images == "skip":
                continue
            if got.get(a) != want:
                problems.append(f"species {n!r}: array {a} sha256 differs from the recipe")
    return problems
