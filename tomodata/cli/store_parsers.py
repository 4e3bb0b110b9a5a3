"""The options of the store commands of ``tomo`` (store-create, store-settings, render-species,
previews, finalize, export, validate, cv-view): one ``add_<command>`` each, calling its ``cmd_*`` function in
:mod:`.stores`; :func:`tomodata.cli.parsers.register` adds them in the order ``tomo --help`` lists them."""

from __future__ import annotations

from .options import image_opts, non_negative_int, positive_int, render_opts, view_set_opts
from .stores import (
    cmd_cv_view,
    cmd_export,
    cmd_finalize,
    cmd_previews,
    cmd_render_species,
    cmd_store_create,
    cmd_store_settings,
    cmd_validate,
)

__all__ = ["add_store_parsers"]


def _add_store_create(sub) -> None:
    """The ``tomo store-create`` parser."""
    q = sub.add_parser(
        "store-create",
        help="create an empty dataset store for a set of cubes",
        description=(
            "Create the dataset store (all metadata, empty arrays) for the specimens whose cubes are given; "
            "the species table comes from the manifest and the cubes' records. Run once, before the "
            "per-species render jobs."
        ),
    )
    q.add_argument("store", help="the .zarr store to create")
    q.add_argument(
        "--manifest", required=True, nargs="+", help="the manifests the cubes come from (ids unique across them)"
    )
    q.add_argument("--cubes", nargs="+", required=True, help="cube .npz files (from tomo cube)")
    view_set_opts(q)
    q.add_argument("--config", help="YAML config to record as provenance")
    q.add_argument(
        "--config-json", help="the merged workflow config as JSON text, recorded as provenance (over --config)"
    )
    q.add_argument("--overwrite", action="store_true", help="replace an existing store")
    q.add_argument(
        "--update",
        action="store_true",
        help=(
            "update an existing store in place: keep each complete species whose stored volume equals its "
            "cube, reset the others, drop species no longer given; recreate a store with other settings"
        ),
    )
    q.add_argument("--done", metavar="FILE", help="write this marker file (JSON: what was created, kept, reset)")
    render_opts(q)
    q.set_defaults(func=cmd_store_create)


def _add_store_settings(sub) -> None:
    """The ``tomo store-settings`` parser."""
    q = sub.add_parser(
        "store-settings",
        help="write the settings of a dataset store as JSON",
        description=(
            "Check the settings that decide every species' data (views, view seed, image and volume size, "
            "steps, chi, image encoding) and write them as JSON, without a store: the workflow's record of "
            "them (every species is rendered again when it changes)."
        ),
    )
    q.add_argument("-o", "--output", required=True, help="the JSON file to write")
    view_set_opts(q)
    image_opts(q)
    q.set_defaults(func=cmd_store_settings)


def _add_render_species(sub) -> None:
    """The ``tomo render-species`` parser."""
    q = sub.add_parser(
        "render-species",
        help="render one species' views into the store",
        description=(
            "Render every view of one species (from its cube) with the store's settings and write the species "
            "into its own shards; safe to run for several species at once."
        ),
    )
    q.add_argument("store", help="the .zarr store (from tomo store-create)")
    q.add_argument("--cube", required=True, help="the species' cube .npz")
    q.add_argument("--name", help="species name (default: the cube's id)")
    q.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto", help="renderer backend")
    q.add_argument("--batch", type=positive_int, default=64, help="views per render call (default %(default)s)")
    q.add_argument("--previews", metavar="DIR", help="also write 9 PNG previews here (- for none)")
    q.add_argument("--done", metavar="FILE", help="write this marker file (JSON) when the species is complete")
    q.add_argument(
        "--settings",
        metavar="FILE",
        help="the settings file (tomo store-settings) the store must have: refuse to render into another",
    )
    q.set_defaults(func=cmd_render_species)


def _add_previews(sub) -> None:
    """The ``tomo previews`` parser."""
    q = sub.add_parser(
        "previews",
        help="PNG previews of species' x-rays, read from the store",
        description=(
            "Write the PNG previews that render-species --previews writes (NAME_000.png ... and the contact "
            "sheet NAME_sheet.png of the first views, unmirrored) from the x-rays stored, without rendering: "
            "the workflow's preview_sheet job, so that a lost preview is made again without a re-render."
        ),
    )
    q.add_argument("store", help="the .zarr store")
    q.add_argument("--species", nargs="+", required=True, metavar="NAME", help="the species (each complete)")
    q.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write into (created)")
    q.add_argument("--count", type=positive_int, default=9, help="views shown (default %(default)s, as render-species)")
    q.set_defaults(func=cmd_previews)


def _add_finalize(sub) -> None:
    """The ``tomo finalize`` parser."""
    q = sub.add_parser(
        "finalize",
        help="validate a store and record its completion",
        description=(
            "Validate every species of a store and, if all are complete, write the root 'completion' "
            "attribute (once, after the per-species jobs). Exit 1 and the species to rebuild otherwise."
        ),
    )
    q.add_argument("store", help="the .zarr store")
    q.add_argument(
        "--done", metavar="FILE", help="write this marker file (JSON: the completion record) when the store is complete"
    )
    q.add_argument(
        "--forget-markers",
        metavar="RESULTS",
        help=(
            "where species fail validation, remove their workflow markers (RESULTS/species/ID.done.json, "
            "RESULTS/dataset.final.json), so that the next snakemake run re-renders exactly them (default with "
            "--done, the workflow's mode: the folder of that file)"
        ),
    )
    q.set_defaults(func=cmd_finalize)


def _add_export(sub) -> None:
    """The ``tomo export`` parser."""
    q = sub.add_parser(
        "export",
        help="write a publishable dataset folder",
        description=(
            "Export a validated store as a publishable folder: dataset card (README.md with licence front "
            "matter), Croissant 1.1 croissant.json, SHA256SUMS, split lists, provenance, per-species checksums "
            "and, unless the sources forbid redistribution (UTCT/DigiMorph: recipe-only is the default), the data."
        ),
    )
    q.add_argument("store", help="the dataset store (.zarr) or a folder holding dataset.zarr")
    q.add_argument("output", help="the export folder (must not exist or be empty)")
    g = q.add_mutually_exclusive_group()
    g.add_argument(
        "--recipe-only",
        action="store_true",
        help="no data: the recipe (recipe/specimens.tsv, recipe/rebuild.sh), checksums, config, code version",
    )
    g.add_argument("--with-data", action="store_true", help="include the store even if the default is recipe-only")
    q.add_argument("--manifest", help="the manifest the store was built from (goes into the recipe)")
    q.add_argument("--config", help="the workflow config (YAML/JSON) to record")
    q.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUTPUT")
    q.add_argument(
        "--volumes",
        choices=["nifti", "nrrd"],
        help=(
            "also write each species' canonical volume as volumes/NAME.nii.gz or .nrrd (RAS orientation, mm "
            "spacing where ingest recorded it) for 3D Slicer and other viewers"
        ),
    )
    q.add_argument(
        "--url",
        help="where the export will be published (https://...): croissant.json's url, the card, provenance.json "
        "(without it croissant.json has a placeholder; croissant.json is in SHA256SUMS, so set it here)",
    )
    q.add_argument("--code-url", help="where the tomodata code is published (its repository): the card, provenance")
    q.add_argument(
        "--creator",
        action="append",
        metavar="NAME",
        help="a person who made the dataset (repeat for several): croissant.json's creator, which Croissant 1.1 "
        "requires, the card, provenance.json",
    )
    q.add_argument(
        "--organization", action="append", metavar="NAME", help="an organisation that made the dataset (as --creator)"
    )
    q.add_argument(
        "--dataset-version",
        default="1.0.0",
        metavar="X.Y.Z",
        help="the dataset's version (croissant.json's version, the card, provenance.json; default 1.0.0): raise it "
        "when a changed dataset is published again (the code's version is recorded apart)",
    )
    q.set_defaults(func=cmd_export)


def _add_validate(sub) -> None:
    """The ``tomo validate`` parser."""
    q = sub.add_parser(
        "validate",
        help="validate a dataset store",
        description=(
            "Check a dataset store: attributes, every species complete, shapes, checksums. "
            "Exit status 1 and the species to rebuild when it is not valid."
        ),
    )
    q.add_argument("store", help="path of the .zarr dataset group")
    q.add_argument(
        "--quick",
        action="store_true",
        help="read no array data (no checksums): metadata, chunk file sizes and shard indexes only",
    )
    q.add_argument(
        "--forget-markers",
        metavar="RESULTS",
        help=(
            "remove the workflow's markers (RESULTS/species/ID.done.json, RESULTS/dataset.final.json) of the "
            "species to rebuild, so that the next snakemake run re-renders exactly them"
        ),
    )
    q.set_defaults(func=cmd_validate)


def _add_cv_view(sub) -> None:
    """The ``tomo cv-view`` parser."""
    q = sub.add_parser(
        "cv-view",
        help="a read-only view of a store with the splits of one cross-validation fold",
        description=(
            "Write a fold view of a finalised store: a folder with the store's root metadata, every species "
            "relabelled train/val/test for fold --fold of --folds (species grouped by their species label, "
            "shuffled with --seed, dealt into --folds parts: the fold tests part k and chooses its checkpoint "
            "on part k+1), and a link to the store's species data (nothing is copied). Train and evaluate on "
            "the view as on a store; over the folds every species is tested once (tomodata.store.folds)."
        ),
    )
    q.add_argument("store", help="the finalised .zarr store")
    q.add_argument("-o", "--output", required=True, help="the view folder to write (replaced if it is a view)")
    q.add_argument("--folds", type=positive_int, required=True, help="number of folds K (>= 3)")
    q.add_argument("--fold", type=non_negative_int, required=True, help="this fold, 0 ... K-1")
    q.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the species' shuffle (default %(default)s)"
    )
    q.set_defaults(func=cmd_cv_view)


def add_store_parsers(sub) -> None:
    """Add the store commands to the ``tomo`` subparsers ``sub``, in the order ``tomo --help`` lists them."""
    for add in (
        _add_store_create,
        _add_store_settings,
        _add_render_species,
        _add_previews,
        _add_finalize,
        _add_export,
        _add_validate,
        _add_cv_view,
    ):
        add(sub)
