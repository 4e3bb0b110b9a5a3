"""Dataset stores: ``tomo store-create``, ``tomo store-settings``, ``tomo render-species``,
``tomo finalize``, ``tomo export``, ``tomo validate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..files import write_json


def cmd_store_create(a) -> int:
    """``tomo store-create``: an empty store (or an update of one) for the specimens of these cubes."""
    from ..files import read_config_mapping
    from ..species_table import cube_species
    from ..store import create_store
    from ..store_settings import StoreSettings

    settings = StoreSettings.from_cli(a)
    config = read_config_mapping(a.config, a.config_json)  # a wrong file is found before the cubes are read
    species, volume_sha256 = cube_species(a.manifest, a.cubes, volume_size=settings.volume_size)
    summary = create_store(
        a.store,
        settings,
        species=species,
        overwrite=a.overwrite,
        update=a.update,
        volume_sha256=volume_sha256,
        provenance=dict(
            manifest=a.manifest[0] if len(a.manifest) == 1 else list(a.manifest),
            config=config,
            command="tomo store-create",
        ),
    )
    print(f"{summary['mode']} {a.store}: {len(species)} species, {a.views} views each")
    for what, label in (("kept", "kept"), ("reset", "to render (new or changed)"), ("removed", "removed")):
        if summary[what]:
            print(f"{label}: " + " ".join(summary[what]))
    if a.done:  # with the store's settings and species table, to notice a store replaced later
        from ..store_markers import write_created_marker

        write_created_marker(a.done, a.store, summary, n_species=len(species), n_views=a.views)
    return 0


def cmd_store_settings(a) -> int:
    """``tomo store-settings``: the settings that decide every species' data, as JSON."""
    from ..store import SPEC_VERSION
    from ..store_markers import settings_record
    from ..store_settings import StoreSettings

    record = settings_record(StoreSettings.from_cli(a), SPEC_VERSION)  # ValueError if unusable
    write_json(a.output, record)
    print(f"wrote {a.output}: " + ", ".join(f"{k}={v}" for k, v in record.items()))
    return 0


def cmd_render_species(a) -> int:
    """``tomo render-species``: every view of one species into its own shards of the store (refused if
    ``--settings FILE`` is given and the store's settings are not that file's)."""
    from ..ingest import load_cube
    from ..previews import write_previews
    from ..render_jobs import render_species
    from ..species_table import check_cube_identity
    from ..store import check_store, open_store
    from ..store_markers import check_settings_file

    check_store(a.store, write=True)  # a store of another spec or a fold view: refused before rendering
    store = open_store(a.store)
    if getattr(a, "settings", None):
        check_settings_file(store.attrs, a.store, a.settings)
    vol, meta = load_cube(a.cube)
    name = a.name or meta.get("id") or Path(a.cube).stem
    check_cube_identity(store, name, a.cube, meta)
    imgs, marker = render_species(a.store, name, vol, backend=a.backend, batch=a.batch)
    if a.previews and a.previews != "-":  # "-": none (the workflow's previews job writes them from the store)
        write_previews(imgs, Path(a.previews), prefix=name, limit=9)
    if a.done:
        from ..store_markers import write_species_marker

        write_species_marker(a.done, a.store, name, marker)
    print(f"wrote species {name}: {store.settings.samples_per_species} samples into {a.store}")
    return 0


def cmd_previews(a) -> int:
    """``tomo previews``: the PNG previews of ``render-species --previews`` (the first ``--count`` views,
    unmirrored) for each of ``--species``, from the images stored (each species complete)."""
    import numpy as np

    from ..previews import write_previews
    from ..store import open_store

    store = open_store(a.store)
    store.require_complete(list(a.species))
    st = store.settings
    views = np.arange(min(a.count, st.n_views))
    for name in a.species:
        imgs = store.images(name, st.sample_index.to_sample(views, False))
        paths = write_previews(imgs, Path(a.output), prefix=name, limit=len(views))
        print(f"{name}: {len(paths)} previews in {a.output} ({paths[-1].name})")
    return 0


def cmd_finalize(a) -> int:
    """``tomo finalize``: validate every species, record the completion (exit status 1 if incomplete)."""
    from ..store import StoreValidationError, finalize_store

    try:
        report = finalize_store(a.store, progress=True)
    except StoreValidationError as e:
        print(e.report.summary())
        bad = e.report.species_to_rebuild
        if bad:
            print("rebuild: " + " ".join(bad))
            _forget_or_say(a.store, bad, a.forget_markers or (Path(a.done).parent if a.done else None))
        return 1
    print(report.summary())
    if a.done:
        from ..store import open_store
        from ..store_markers import write_final_marker

        write_final_marker(a.done, a.store, report, open_store(a.store).attrs)
    return 0


def _forget_or_say(store, species: list[str], results) -> None:
    """After a failed finalize: remove the markers of ``species`` under the run folder ``results`` (so
    the next workflow run re-renders them), or say how; one ``error:`` line either way (the workflow
    quotes it in the run's output)."""
    names = ", ".join(species)
    if results:
        from ..store_markers import forget_markers

        for path in forget_markers(results, species):
            print(f"removed {path}")
        print(
            f"error: species {names} of {store} failed validation: their markers are removed, run the "
            "workflow again to render them anew",
            file=sys.stderr,
        )
    else:
        print(
            f"error: species {names} of {store} failed validation: render them anew (the workflow: tomo "
            f"validate {store} --forget-markers results/RUN, then run it again)",
            file=sys.stderr,
        )


def cmd_export(a) -> int:
    """``tomo export``: a publishable folder (card, Croissant, SHA256SUMS, recipe, data)."""
    import warnings

    from ..export import (
        AttributionWarning,
        NotFinalisedWarning,
        RedistributionWarning,
        UnknownLicenceWarning,
        export_dataset,
    )

    recipe_only = True if a.recipe_only else (False if a.with_data else None)
    with warnings.catch_warnings():  # these are in summary["warnings"]: printed once each below
        warnings.simplefilter("ignore", UnknownLicenceWarning)
        warnings.simplefilter("ignore", RedistributionWarning)
        warnings.simplefilter("ignore", NotFinalisedWarning)
        warnings.simplefilter("ignore", AttributionWarning)
        summary = export_dataset(
            a.store,
            a.output,
            manifest=a.manifest,
            config=a.config,
            recipe_only=recipe_only,
            overwrite=a.overwrite,
            volumes=a.volumes,
            url=a.url,
            code_url=a.code_url,
            creators=a.creator,
            organizations=a.organization,
            dataset_version=a.dataset_version,
            progress=True,
        )
    for note in summary["warnings"]:
        print(f"WARNING: {note}", file=sys.stderr)
    if a.url is None:
        print("note: croissant.json's url is a placeholder: give --url (where it will be published)", file=sys.stderr)
    if not (a.creator or a.organization):
        print(
            "note: croissant.json has no creator, which Croissant 1.1 requires: give --creator NAME or "
            "--organization NAME",
            file=sys.stderr,
        )
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_validate(a) -> int:
    """``tomo validate``: check a store (exit status 1 and the species to rebuild if it is not valid)."""
    from ..store import check_store, validate_store

    if not (Path(a.store) / "zarr.json").is_file():  # no store at all: bad input (exit 2), not a failed check
        check_store(a.store)
    report = validate_store(a.store, check_data=not a.quick, progress=True)
    print(report.summary())
    if report.species_to_rebuild:
        print("rebuild: " + " ".join(report.species_to_rebuild))
        if a.forget_markers:  # the workflow's markers of those species: the next run redoes them
            from ..store_markers import forget_markers

            for path in forget_markers(a.forget_markers, report.species_to_rebuild):
                print(f"removed {path}")
    return 0 if report.ok else 1


def cmd_cv_view(a) -> int:
    """``tomo cv-view``: the read-only view of one cross-validation fold of a store."""
    from ..store import SPLITS, open_store
    from ..store.folds import make_fold_view

    view = make_fold_view(a.store, a.output, folds=a.folds, fold=a.fold, seed=a.seed)
    ds = open_store(view)
    n = {s: len(ds.species_names(s)) for s in SPLITS}
    print(f"fold {a.fold} of {a.folds}: {n['train']} train, {n['val']} val, {n['test']} test species in {view}")
    print("test: " + " ".join(ds.species_names("test")))
    return 0
