"""The export's Croissant 1.1 JSON-LD (http://mlcommons.org/croissant/1.1): the dataset's description,
its files (FileObjects with sha256; one FileSet per species' Zarr group) and three record sets backed by
the CSV tables: ``splits`` (cr:Split values), ``species`` and ``samples``.

Croissant has no native Zarr support: the array layout is written into the descriptions.
"""

from __future__ import annotations

from ..run_layout import STORE_NAME
from ..views import view_sets_of
from .common import _ARRAYS, CITATION_BIBTEX, SPLIT_NAMES, volume_levels

CROISSANT_VERSION = "http://mlcommons.org/croissant/1.1"
URL_PLACEHOLDER = "https://example.org/REPLACE-WITH-THE-DATASET-URL"
ZARR_V3_FORMAT = "https://zarr-specs.readthedocs.io/en/latest/v3/core/index.html"
_SPLIT_URLS = {"train": "cr:TrainingSplit", "val": "cr:ValidationSplit", "test": "cr:TestSplit"}

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


def _field(rs: str, name: str, dtype: str, desc: str, file_id: str, *, references: str | None = None) -> dict:
    """A cr:Field ``<rs>/<name>`` read from column ``name`` of the CSV FileObject ``file_id``."""
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
    """Each array's shape, dtype, chunks (shards) and quantity, as one line of text."""
    lay = attrs["layout"]["arrays"]
    parts = []
    for a in _ARRAYS:
        d = lay[a]
        shards = f", shards {d['shards']}" if d.get("shards") else ""
        ome = ""
        if d.get("ome_zarr"):
            two = volume_levels(attrs) == 2
            ome = "level 0 of the OME-Zarr 0.5 image volume" + (", level 1 its 2x2x2 mean" if two else "") + "; "
        parts.append(
            f"{d.get('path', a)} {tuple(d['shape'])} {d['dtype']} ({ome}chunks {d['chunks']}{shards}; "
            f"{attrs['encoding'][a]['quantity']})"
        )
    return "; ".join(parts)


def _description(attrs: dict, *, recipe_only: bool, species_names: list[str], n_samples_total: int) -> str:
    """The dataset's description: rendering settings, sample counts, the arrays' layout, image decoding."""
    enc = attrs["encoding"]["images"]
    layout = _array_layout_text(attrs)
    data_note = (
        "This is a recipe-only export: no image or volume data are included (the sources' terms do not "
        "clear redistribution); the recipe files let you rebuild the Zarr store with the tomodata code "
        "and check it against recipe/checksums.json. The samples table lists the samples the rebuilt "
        "store holds, at the array paths given."
        if recipe_only
        else f"The data are in the Zarr v3 store {STORE_NAME} (sharded, zstd), described below as one FileSet "
        "per species."
    )
    return (
        f"{attrs.get('title', 'Single-image tomography dataset')}. Orthographic Beer-Lambert x-rays of "
        f"{len(species_names)} skull volumes (chi = {attrs['chi']}, {attrs['steps']} samples per ray, "
        f"{attrs['image_size']}x{attrs['image_size']} pixels) from {attrs['n_views']} views per species on the "
        f"+z hemisphere ({attrs['view_scheme']['name']}, seed {attrs['view_scheme']['seed']}"
        f"{'; each species its own views' if view_sets_of(attrs['view_scheme']) == 'per_species' else ''}), "
        "each also mirrored: "
        f"{attrs['samples_per_species']} samples per species, {n_samples_total} in all, with the "
        f"{attrs['volume_size']}^3 density volume of each species. Splits hold out whole species. "
        f"{data_note} Per species the store holds species/<name>/ with the arrays: {layout}. Sample 2i is "
        f"view i, sample 2i+1 its mirror (image rows reversed). Image values: {enc['decode']}. View-aligned "
        "volumes are not stored; they are derived from volume and rotations (tomodata.render.view_volumes). "
        "Geometry conventions are in the store's root attributes (geometry) and recipe/store_attrs.json."
    )


def _file_object(files: dict[str, str], path: str, fmt: str, desc: str) -> dict:
    """A cr:FileObject for an export file; ``files`` maps each path to its sha256."""
    return {
        "@type": "cr:FileObject",
        "@id": path,
        "name": path,
        "description": desc,
        "contentUrl": path,
        "encodingFormat": fmt,
        "sha256": files[path],
    }


def _recipe_file_objects(files: dict[str, str]) -> list[dict]:
    """The FileObjects of ``recipe/*``, sorted by path; the format follows the file's suffix."""
    out = []
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
        what = {
            "recipe/checksums.json": "per-species sha256 of every array (completion markers) and source checksums",
            "recipe/store_attrs.json": (
                "the store's root attributes (rendering constants, view scheme, species table)"
            ),
            "recipe/manifest.tsv": "the specimen manifest (sources, spacing, split, licence, sha256)",
            "recipe/specimens.tsv": "every species with every setting its cube was made with",
            "recipe/rebuild.sh": "the commands that rebuild the store (fetch, cube, store, render, finalize)",
            "recipe/workflow_config.json": "the merged workflow config the store recorded",
        }.get(path)
        if what is None:
            what = (
                "the transform of an aligned specimen (replayed by rebuild.sh)"
                if path.startswith("recipe/alignment/")
                else "the build configuration"
            )
        out.append(_file_object(files, path, fmt, "Recipe file: " + what))
    return out


def _zarr_file_sets(species_names: list[str], layout: str) -> list[dict]:
    """One cr:FileSet per species: the files of its Zarr group ``dataset.zarr/species/<name>/**``."""
    return [
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
            "includes": f"{STORE_NAME}/species/{n}/**",
        }
        for n in species_names
    ]


def _volume_file_set(files: dict[str, str]) -> list[dict]:
    """A cr:FileSet of the canonical volume files ``volumes/<name>.nii.gz`` or ``.nrrd`` (tomo export
    --volumes), where the export has them."""
    vols = sorted(p for p in files if p.startswith("volumes/"))
    if not vols:
        return []
    nifti = vols[0].endswith(".nii.gz")
    return [
        {
            "@type": "cr:FileSet",
            "@id": "volumes",
            "name": "volumes",
            "description": (
                f"Each species' canonical density volume as {'NIfTI-1 (gzip)' if nifti else 'NRRD (gzip)'}, one "
                "file per species (volumes/<name>): the store's volume/0, vol[z, y, x] with the cube's z to the "
                "left, y inferior and x anterior in the RAS+ space, centred at 0; voxel size in mm where the "
                "species records it (species.csv voxel_mm), else unitless (tomodata.volume_files). sha256: SHA256SUMS."
            ),
            "encodingFormat": "application/gzip" if nifti else "application/octet-stream",
            "includes": "volumes/*.nii.gz" if nifti else "volumes/*.nrrd",
        }
    ]


def _distribution(
    files: dict[str, str], *, attrs: dict, recipe_only: bool, species_names: list[str], layout: str
) -> list[dict]:
    """The export's files: tables, provenance, recipe, split lists, (data exports) the Zarr store and
    the volume files."""
    dist = [
        _file_object(
            files,
            "species.csv",
            "text/csv",
            "One row per species: split, source, licence, per-array sha256 of the data.",
        ),
        _file_object(
            files,
            "samples.csv",
            "text/csv",
            "One row per sample: species, split, sample index, view, mirrored, image array.",
        ),
        _file_object(
            files, "provenance.json", "application/json", "Code version, build config, store provenance, export time."
        ),
    ]
    dist += _recipe_file_objects(files)
    for s in SPLIT_NAMES:
        desc = f"Species of the {s} split, one name per line."
        dist.append(_file_object(files, f"splits/{s}.txt", "text/plain", desc))
    if not recipe_only:
        dist.append(
            _file_object(
                files,
                f"{STORE_NAME}/zarr.json",
                "application/json",
                f"Root metadata of the Zarr v3 store: all dataset attributes (spec_version {attrs['spec_version']}).",
            )
        )
        if f"{STORE_NAME}/species/zarr.json" in files:  # the group of the species: zarr lists them through it
            dist.append(
                _file_object(
                    files,
                    f"{STORE_NAME}/species/zarr.json",
                    "application/json",
                    "Metadata of the Zarr v3 group species (one subgroup per species; needed to list them).",
                )
            )
        dist += _zarr_file_sets(species_names, layout)
    return dist + _volume_file_set(files)


def _splits_record_set() -> dict:
    """Record set ``splits``: the split names and their cr:Split types (inline data)."""
    return {
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


def _where(recipe_only: bool) -> str:
    """Where the tables' dataset.zarr/... paths point: the export's store, or the one the recipe rebuilds."""
    if not recipe_only:
        return "relative to the export"
    return (
        f"as in a data export: {STORE_NAME}/ stands for the store that the card's Rebuild section makes "
        f"(recipe/rebuild.sh, or a tomo build-demo line; this recipe-only export holds no {STORE_NAME})"
    )


def _species_record_set(recipe_only: bool = False) -> dict:
    """Record set ``species``: one record per row of species.csv."""
    sp = "species"
    return {
        "@type": "cr:RecordSet",
        "@id": sp,
        "name": sp,
        "description": "The species table: one record per species (one specimen each).",
        "key": {"@id": f"{sp}/name"},
        "field": [
            _field(sp, "name", "sc:Text", "Species name in the store (species/<name>).", "species.csv"),
            _field(sp, "split", "sc:Text", "train, val or test.", "species.csv", references="splits/name"),
            _field(sp, "taxon", "sc:Text", "Species name as text, where known.", "species.csv"),
            _field(sp, "source", "sc:Text", "Where the volume comes from: a CT scan or the generator.", "species.csv"),
            _field(sp, "source_checksum", "sc:Text", "Checksum of the source.", "species.csv"),
            _field(sp, "licence", "sc:Text", "Terms of use of the source.", "species.csv"),
            _field(
                sp,
                "attribution",
                "sc:Text",
                "The credit the source's licence asks for (creator, title, link), as the manifest gives it; empty "
                "where none was given.",
                "species.csv",
            ),
            _field(
                sp, "licence_class", "sc:Text", "free, open, restricted or unknown (tomodata.export).", "species.csv"
            ),
            _field(
                sp, "redistribution", "sc:Boolean", "Whether the source's terms permit redistribution.", "species.csv"
            ),
            _field(sp, "original_shape_zyx", "sc:Text", "Shape of the source scan, z y x.", "species.csv"),
            _field(
                sp,
                "spacing_mm_zyx",
                "sc:Text",
                "Voxel spacing of the source volume, z y x, as the species table records it (mm for scans; "
                "procedural species have no physical scale: 1).",
                "species.csv",
            ),
            _field(
                sp,
                "voxel_mm",
                "sc:Float",
                "Voxel size of the species' cube (volume/0) in mm, where ingest recorded the scan's scale; empty "
                "otherwise (then the volume is unitless).",
                "species.csv",
            ),
            _field(sp, "n_samples", "sc:Integer", "Samples of the species (2 per view).", "species.csv"),
            _field(sp, "group", "sc:Text", f"Path of the species' Zarr group, {_where(recipe_only)}.", "species.csv"),
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


def _samples_record_set(attrs: dict, recipe_only: bool = False) -> dict:
    """Record set ``samples``: one record per row of samples.csv (an x-ray and its view)."""
    enc = attrs["encoding"]["images"]
    sm = "samples"
    vol = attrs["layout"]["arrays"]["volume"]
    level_1 = vol.get("ome_zarr") and volume_levels(attrs) == 2
    volume_text = f"the array {vol.get('path', 'volume')} of that group" + (
        " (an OME-Zarr multiscale: volume/1 is its 2×2×2 mean)" if level_1 else ""
    )
    return {
        "@type": "cr:RecordSet",
        "@id": sm,
        "name": sm,
        "description": (
            "One record per sample (an x-ray and its view). The image is images_array[sample] of the Zarr store: "
            f"({attrs['image_size']}, {attrs['image_size']}) {enc['dtype']}, {enc['decode']}; the camera rotation "
            f"is rotations[view] of the same species group, the density volume {volume_text}."
        ),
        "key": {"@id": f"{sm}/sample_id"},
        "field": [
            _field(sm, "sample_id", "sc:Text", "<species>/<sample>.", "samples.csv"),
            _field(sm, "species", "sc:Text", "Species name.", "samples.csv", references="species/name"),
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
                f"Path of the Zarr array that holds the image, {_where(recipe_only)}.",
                "samples.csv",
            ),
        ],
    }


_KEYWORDS = [
    "x-ray",
    "computed tomography",
    "single-image tomography",
    "skull",
    "mammals",
    "volume reconstruction",
    "zarr",
]


def _licence_entry(text: str) -> str | dict:
    """A Croissant ``license`` item: a licence URL as it is; prose (a restriction, source terms) as an
    ``sc:CreativeWork`` with that name (Croissant 1.1 allows URL or CreativeWork there, not text)."""
    return text if text.startswith(("https://", "http://")) else {"@type": "sc:CreativeWork", "name": text}


def _croissant(
    attrs: dict,
    files: dict[str, str],
    *,
    recipe_only: bool,
    lic: dict,
    species_names: list[str],
    date: str,
    n_samples_total: int,
    url: str | None = None,
    all_free: bool = False,
    creators: list[dict] | None = None,
    version: str = "1.0.0",
) -> dict:
    """The Croissant document (a JSON-LD dict); ``files`` maps each export path written so far to its sha256,
    ``lic`` is :func:`tomodata.export.licence._licence_summary`'s, ``date`` the ISO export date, ``url`` where
    the export is published (None: :data:`URL_PLACEHOLDER`), ``all_free`` whether every species is procedural
    (no CT, no mammal: the keywords say so), ``version`` the dataset's (not the code's: provenance.json)."""
    description = _description(
        attrs, recipe_only=recipe_only, species_names=species_names, n_samples_total=n_samples_total
    )
    layout = _array_layout_text(attrs)
    return {
        "@context": _CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CROISSANT_VERSION,
        "name": "single-image-tomography-skull-xrays",
        "alternateName": attrs.get("title", ""),
        "description": description,
        "license": [_licence_entry(x) for x in lic["croissant"]],
        "url": url or URL_PLACEHOLDER,
        **({"creator": creators} if creators else {}),
        "version": version,
        "datePublished": date,
        "citeAs": CITATION_BIBTEX,
        "keywords": [k for k in _KEYWORDS if not (all_free and k in ("computed tomography", "mammals"))]
        + (["synthetic"] if all_free else []),
        "isAccessibleForFree": True,
        "distribution": _distribution(
            files, attrs=attrs, recipe_only=recipe_only, species_names=species_names, layout=layout
        ),
        "recordSet": [_splits_record_set(), _species_record_set(recipe_only), _samples_record_set(attrs, recipe_only)],
    }
