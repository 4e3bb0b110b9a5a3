"""The dataset's commands of ``tomo`` (thin wrappers over the package's functions): :func:`register`
adds them to the ``tomo`` parser that :mod:`model.cli` builds (the model depends on the dataset,
never the reverse; the ``tomo`` entry point is :func:`model.cli.main`).

    tomo phantom OUT.npy --species 3            a procedural skull volume (+ previews)
    tomo render VOLUME.npy -o DIR --views 16    x-rays of a volume (+ PNG previews)
    tomo build-demo -o DIR                      a small dataset store of procedural species
    tomo validate STORE                         check a dataset store; exit 1 if it is not complete
    tomo demo-movies -o DIR                     procedural species as slice movies + manifest.tsv
    tomo manifest-folder DIR -o M.tsv ...       a manifest of every scan in a folder, seeded splits
    tomo fetch MANIFEST -d DEST                 download/copy the sources a manifest names
    tomo align SCAN -o OUT.nii.gz --reference R  rotate a scan into the canonical pose (+ record)
    tomo align-sheet A.nii.gz ... -o SHEET.png   projections of aligned volumes, one PNG
    tomo cube SCAN -o CUBE.npz --spacing z,y,x  read a scan, resample it to the 128³ cube
    tomo store-create STORE --manifest M --cubes C...   an empty store for these specimens
    tomo store-settings -o FILE.json --views N ...       the settings of a store, as JSON
    tomo render-species STORE --cube C          render one species into its own shards
    tomo finalize STORE                         validate all species, record completion
    tomo export STORE OUT                       publishable folder: card, Croissant, SHA256SUMS, recipe
    tomo bench render|cube|rules                the renderer, the resampling, a workflow run's rules

Every subcommand has ``--help``. Progress bars appear only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .files import write_json

__all__ = ["register", "run", "positive_int", "positive_float"]


def _progress(iterable, **kw):
    from .progress import progress

    return progress(iterable, **kw)


def _load_volume(path: Path) -> np.ndarray:
    """A density volume: .npy/.npz as stored (key ``volume``, or the only array); any other scan
    format through the ingest path (``read_volume`` + ``to_cube``, 128³)."""
    if not path.exists():
        raise SystemExit(f"error: volume file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "volume" in keys:
                return z["volume"]
            if len(keys) == 1:
                return z[keys[0]]
            raise SystemExit(f"error: {path} holds arrays {keys}; name the volume 'volume'")
    from .ingest import (
        cube_specimen,  # movies, image folders, TIFF, DICOM, NRRD, NIfTI → the canonical cube
    )

    return cube_specimen(path, allow_default_spacing=True)[0]


def _to_png(img: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] → 8-bit grey (linear, no gamma: bone is bright)."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_previews(images: np.ndarray, out_dir: Path, *, prefix: str = "xray", limit: int = 16) -> list[Path]:
    """PNG files of the first ``limit`` images and a contact sheet ``<prefix>_sheet.png``."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    shown = images[:limit]
    for i, img in enumerate(shown):
        p = out_dir / f"{prefix}_{i:03d}.png"
        cv2.imwrite(str(p), _to_png(img))
        paths.append(p)
    cols = int(np.ceil(np.sqrt(len(shown))))
    rows = int(np.ceil(len(shown) / cols))
    s = shown.shape[1:]
    sheet = np.zeros((rows * s[0], cols * s[1]), np.uint8)
    for i, img in enumerate(shown):
        r, c = divmod(i, cols)
        sheet[r * s[0] : (r + 1) * s[0], c * s[1] : (c + 1) * s[1]] = _to_png(img)
    p = out_dir / f"{prefix}_sheet.png"
    cv2.imwrite(str(p), sheet)
    paths.append(p)
    return paths


def _render_batched(vol, rots, *, size, steps, chi, backend, batch=64, desc="render"):
    from .render import render_xrays

    out = np.empty((len(rots), size, size), np.float32)
    for s in _progress(range(0, len(rots), batch), desc=desc, unit="batch"):
        out[s : s + batch] = render_xrays(vol, rots[s : s + batch], size=size, steps=steps, chi=chi, backend=backend)
    return out


# ------------------------------------------------------------------------------------------ commands
def cmd_phantom(a) -> int:
    from .phantoms import skull_volume, species_params, specimen_params
    from .views import hemisphere_views

    params = species_params(a.species, seed=a.seed)
    if a.specimen is not None:
        params = specimen_params(params, a.specimen)
    vol = skull_volume(params, size=a.size, seed=a.seed)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".npz":
        np.savez_compressed(out, volume=vol)
    else:
        np.save(out if out.suffix else out.with_suffix(".npy"), vol)
    print(f"wrote {out}: {vol.shape} float32, density {vol.min():.3f}…{vol.max():.3f}")
    if a.preview:
        from .render import render_xrays

        imgs = render_xrays(vol, hemisphere_views(8, seed=0), size=256, steps=128, backend=a.backend)
        for p in write_previews(imgs, Path(a.preview), prefix=out.stem):
            print(f"preview {p}")
    return 0


def cmd_render(a) -> int:
    from .views import hemisphere_views

    vol = _load_volume(Path(a.volume))
    rots = hemisphere_views(a.views, seed=a.seed)
    imgs = _render_batched(vol, rots, size=a.size, steps=a.steps, chi=a.chi, backend=a.backend)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", imgs)
    np.save(out / "rotations.npy", rots)
    meta = dict(
        volume=str(a.volume),
        views=a.views,
        seed=a.seed,
        size=a.size,
        steps=a.steps,
        chi=a.chi,
        encoding="float32 opacity = 1 - exp(-chi/steps * sum of densities)",
        code_version=__version__,
    )
    write_json(out / "render.json", meta)
    paths = write_previews(imgs, out, limit=a.previews) if a.previews else []
    print(f"wrote {out / 'images.npy'} ({imgs.shape}), rotations.npy, render.json and {len(paths)} PNGs")
    return 0


def cmd_build_demo(a) -> int:
    from .demo import demo_name, demo_splits
    from .phantoms import skull_volume, species_params
    from .store import create_store, finalize_store, write_species
    from .store_settings import StoreSettings
    from .views import hemisphere_views

    out = Path(a.output)
    store = out / "dataset.zarr"
    names = [demo_name(i) for i in range(a.species)]
    splits = demo_splits(a.species, val=a.val, test=a.test)
    params = [species_params(i, seed=a.seed) for i in range(a.species)]
    # the "source" of a procedural species is its parameter vector: its checksum identifies it
    table = [
        dict(
            name=n,
            split=s,
            source=f"tomodata.phantoms species {i} seed {a.seed}",
            source_checksum=hashlib.sha256(json.dumps(p.as_dict(), sort_keys=True).encode()).hexdigest(),
            original_shape=[a.volume_size] * 3,
            spacing_mm=[1.0, 1.0, 1.0],
        )
        for i, (n, s, p) in enumerate(zip(names, splits, params))
    ]
    create_store(
        store,
        StoreSettings(
            chi=a.chi, steps=a.steps, image_size=a.size, volume_size=a.volume_size, n_views=a.views, view_seed=a.seed
        ),
        species=table,
        provenance=dict(command="tomo build-demo", args=vars(a) | {"func": None}),
        overwrite=a.overwrite,
    )
    rots = hemisphere_views(a.views, seed=a.seed)
    for i, name in enumerate(_progress(names, desc="species", unit="species")):
        vol = skull_volume(params[i], size=a.volume_size, seed=a.seed)
        imgs = _render_batched(vol, rots, size=a.size, steps=a.steps, chi=a.chi, backend=a.backend, desc=name)
        write_species(store, name, volume=vol, rotations=rots, images=imgs)
        write_previews(imgs, out / "previews", prefix=name, limit=9)
    report = finalize_store(store)
    print(report.summary())
    print(f"store {store}, previews in {out / 'previews'}")
    return 0 if report.ok else 1


def cmd_demo_movies(a) -> int:
    from .demo import write_demo_movies

    manifest = write_demo_movies(
        a.output, n_species=a.species, val=a.val, test=a.test, movie_size=a.movie_size, codec=a.codec, seed=a.seed
    )
    print(f"wrote {a.species} slice movies and {manifest}")
    return 0


def cmd_manifest_folder(a) -> int:
    from .manifest_folder import manifest_from_folder

    out = manifest_from_folder(
        a.folder,
        a.output,
        pattern=a.pattern,
        source_kind=a.kind,
        species=a.species,
        licence=a.licence,
        val=a.val,
        test=a.test,
        seed=a.seed,
        checksums=not a.no_checksums,
        notes=a.notes,
    )
    print(f"wrote {out}")
    return 0


def cmd_fetch(a) -> int:
    from .fetch import FetchError, FetchManifestError, fetch_manifest

    try:
        results = fetch_manifest(
            a.manifest,
            a.dest,
            mirror=a.mirror,
            rate=a.rate,
            retries=a.retries,
            timeout=a.timeout,
            only=a.only or None,
            progress=True,
            keep_going=a.keep_going,
            record=a.record,
            in_place=a.in_place,
        )
    except FetchManifestError as e:
        for sid, err in e.failures.items():
            print(f"error: {sid}: {err}", file=sys.stderr)
        print(f"{len(e.results)} fetched, {len(e.failures)} failed", file=sys.stderr)
        return 1
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    bad = [r for r in results if any(c in str(r.path) for c in "\t\r\n")]
    if bad:  # the record is one tab-separated line per specimen (read by `tomo cube --fetched`)
        print(
            f"error: {bad[0].id}: the path {str(bad[0].path)!r} holds a tab or line break, which the fetch "
            "record cannot hold; rename the source (or fetch without --in-place)",
            file=sys.stderr,
        )
        return 1
    for r in results:
        how = (
            "in-place"
            if r.in_place
            else "mirror"
            if r.from_mirror
            else "kept"
            if r.reused
            else "resumed"
            if r.resumed
            else "fetched"
        )
        print(f"{r.id}\t{how}\t{r.sha256}\t{r.path}")
    return 0


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(t) for t in text.replace(" ", "").split(","))
    except ValueError:
        raise SystemExit(f"error: {what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) == 1 and n == 3:
        vals = vals * 3
    if len(vals) != n:
        raise SystemExit(f"error: {what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def _fetched_path(record: str, specimen_id: str, field: int = 3) -> str:
    """The path (``field`` 3; 2: the sha256) of ``specimen_id`` in a record written by ``tomo fetch``
    (its stdout: one line ``id<TAB>how<TAB>sha256<TAB>path`` per specimen)."""
    rec = Path(record)
    if not rec.is_file():
        raise SystemExit(f"error: fetch record {rec} does not exist")
    for line in rec.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0] == specimen_id:
            return fields[field]
    raise SystemExit(f"error: fetch record {rec} has no line for specimen {specimen_id!r}")


def cmd_cube(a) -> int:
    from .ingest import cube_specimen, save_cube

    a.input, spacing, slice_axis, row = _scan_from_args(a)
    window = a.window if a.window is not None else row.get("window") or None
    background = (
        a.background if a.background is not None else (float(row["background"]) if row.get("background") else None)
    )
    crop = a.crop or row.get("crop") or "none"
    try:
        cube, meta = cube_specimen(
            a.input,
            spacing=spacing,
            slice_axis=slice_axis,
            size=a.size,
            window=window,
            background=background,
            allow_default_spacing=a.allow_default_spacing,
            orientation=a.orientation,
            crop=crop,
        )
    except ValueError as e:
        raise ValueError(f"specimen {a.id}: {e}" if a.id else str(e)) from None
    if a.id:
        meta["id"] = a.id
    if a.content_key:
        meta["content_key"] = a.content_key
    if a.record_params:
        meta["workflow_params"] = a.record_params
    if a.fetched:  # the source as fetched, hashed whole (a detached header with its data files)
        meta["source_sha256"] = _fetched_path(a.fetched, a.id, field=2)
    if a.align_record:
        meta["alignment"] = json.loads(Path(a.align_record).read_text())
        if meta["alignment"].get("source_sha256"):  # the source's checksum, not the aligned file's
            meta["source_sha256"] = meta["alignment"]["source_sha256"]
    out = save_cube(a.output, cube, meta)
    print(
        f"wrote {out}: {cube.shape} from {tuple(meta['original_shape'])} at {tuple(meta['spacing_mm'])} mm, "
        f"{meta['fit']['voxel_mm']:.4g} mm per voxel"
    )
    return 0


def _scan_from_args(a) -> tuple[str, Any, str, dict]:
    """(path, spacing or None, slice_axis, manifest row or {}) of the scan named by SCAN / --fetched
    and --manifest/--id; sets ``a.orientation`` from the row where the option is not given."""
    if a.fetched:
        if a.input:
            raise SystemExit("error: give the scan or --fetched, not both")
        if not a.id:
            raise SystemExit("error: --fetched needs --id")
        a.input = _fetched_path(a.fetched, a.id)
    elif not a.input:
        raise SystemExit("error: give the scan (file or folder), or --fetched RECORD --id ID")
    spacing = _floats(a.spacing, 3, "--spacing") if a.spacing else None
    slice_axis = a.slice_axis
    row: dict = {}
    if a.manifest:
        from .manifest import load_manifest, parse_spacing

        if not a.id:
            raise SystemExit("error: --manifest needs --id")
        table = load_manifest(a.manifest)
        rows = table[table["id"] == a.id]
        if rows.empty:
            raise SystemExit(f"error: specimen {a.id!r} is not in {a.manifest}; known: {', '.join(table['id'])}")
        row = rows.iloc[0].to_dict()
        spacing = spacing or parse_spacing(row["spacing_mm"])
        slice_axis = row["slice_axis"] or slice_axis
    if a.orientation is None:
        a.orientation = row.get("orientation") or None
    return a.input, spacing, slice_axis, row


def cmd_align(a) -> int:
    from .align import align_to_canonical, apply_alignment, load_aligned, save_aligned
    from .ingest import read_specimen

    path, spacing, slice_axis, _ = _scan_from_args(a)
    vol, sp = read_specimen(
        path,
        spacing=spacing,
        slice_axis=slice_axis,
        allow_default_spacing=a.allow_default_spacing,
        orientation=a.orientation,
    )
    scan = dict(
        spacing=None if spacing is None else [float(v) for v in spacing],
        slice_axis=slice_axis,
        orientation=a.orientation or "z,y,x",
        allow_default_spacing=bool(a.allow_default_spacing),
    )
    if a.replay:  # the recorded transform, no registration (an exported recipe)
        record = json.loads(Path(a.replay).read_text())
        aligned = apply_alignment(vol, sp, record)
        record.update(id=a.id, source_path=str(path), replayed_from=str(a.replay), scan=scan)
        if a.fetched:
            record["source_sha256"] = _fetched_path(a.fetched, a.id, field=2)
        out = save_aligned(a.output, aligned, record["output_spacing_zyx"], record)
        print(f"wrote {out}: {tuple(aligned.shape)} from {tuple(vol.shape)}, the recorded transform")
        return 0
    reference = None
    if a.reference:
        ref_vol, ref_sp, _ = load_aligned(a.reference)
        reference = (ref_vol, ref_sp)
    aligned, record = align_to_canonical(vol, sp, reference=reference, threads=a.threads)
    record.update(
        id=a.id,
        source_path=str(path),
        reference=str(a.reference) if a.reference else None,
        slice_axis=slice_axis,
        orientation=a.orientation,
        scan=scan,
    )
    if a.fetched:  # the source as fetched, for the cube's record (it reads the aligned file)
        record["source_sha256"] = _fetched_path(a.fetched, a.id, field=2)
    if a.record_params:
        record["workflow_params"] = a.record_params
    out = save_aligned(a.output, aligned, record["output_spacing_zyx"], record)
    how = (
        f"NCC with the reference {record['ncc_before']:.3f} -> {record['ncc_after']:.3f}"
        if reference is not None
        else "moments alone (the reference)"
    )
    print(f"wrote {out}: {tuple(aligned.shape)} from {tuple(vol.shape)}, {how}, {record['runtime_s']:.1f} s")
    return 0


def cmd_align_sheet(a) -> int:
    from .align import aligned_name, contact_sheet, load_aligned

    volumes = {}
    for path in a.aligned:
        vol, sp, rec = load_aligned(path)
        volumes[rec.get("id") or aligned_name(path)] = (vol, sp)
    out = contact_sheet(volumes, a.output)
    print(f"wrote {out}: {len(volumes)} specimens")
    return 0


def cmd_store_create(a) -> int:
    from .align import alignment_summary
    from .ingest import load_cube
    from .manifest import load_manifest
    from .specimens import local_source
    from .store import array_sha256, create_store
    from .store_settings import StoreSettings

    by_id, resolved = {}, {}
    for manifest in a.manifest:
        table = load_manifest(manifest)
        for _, row in table.iterrows():
            if row["id"] in by_id:
                raise ValueError(f"specimen {row['id']!r} is in more than one manifest ({', '.join(a.manifest)})")
            by_id[row["id"]] = row
            local = local_source(dict(row, _base=table.attrs["base_dir"]))
            resolved[row["id"]] = str(local) if local is not None and "://" not in row["source"] else row["source"]
    species = []
    volume_sha256 = {}
    for cube_path in a.cubes:
        vol, meta = load_cube(cube_path)
        sid = meta.get("id") or Path(cube_path).stem
        if sid not in by_id:
            raise ValueError(f"cube {cube_path} is specimen {sid!r}, which is not in {', '.join(a.manifest)}")
        row = by_id[sid]
        species.append(
            dict(
                name=sid,
                split=row["split"],
                species=row["species"],
                source=row["source"],
                source_kind=row["source_kind"],
                source_checksum=row["sha256"] or meta["source_sha256"],
                licence=row["licence"],
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
                source_resolved=resolved[sid],
                ingest=meta.get("ingest"),
                alignment=alignment_summary(meta.get("alignment")),
            )
        )
        volume_sha256[sid] = array_sha256(np.ascontiguousarray(vol, dtype=np.float32))
    config = None
    if a.config:
        import yaml

        config = yaml.safe_load(Path(a.config).read_text())
    if a.config_json:
        config = json.loads(a.config_json)
    settings = StoreSettings(
        chi=a.chi,
        steps=a.steps,
        image_size=a.size,
        volume_size=a.volume_size,
        n_views=a.views,
        view_seed=a.seed,
        image_encoding=a.encoding,
    )
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
    for what in ("kept", "reset", "removed"):
        if summary[what]:
            print(f"{what}: " + " ".join(summary[what]))
    if a.done:
        write_json(a.done, dict(store=str(a.store), n_species=len(species), n_views=a.views, **summary))
    return 0


def cmd_store_settings(a) -> int:
    from .store import SPEC_VERSION
    from .store_settings import StoreSettings

    settings = StoreSettings(
        chi=float(a.chi),
        steps=a.steps,
        image_size=a.size,
        volume_size=a.volume_size,
        n_views=a.views,
        view_seed=a.seed,
        image_encoding=a.encoding,
    )  # ValueError if unusable
    s = settings.to_json()
    record = dict(
        spec_version=SPEC_VERSION,
        n_views=s["n_views"],
        view_seed=s["view_seed"],
        image_size=s["image_size"],
        steps=s["steps"],
        chi=s["chi"],
        volume_size=s["volume_size"],
        image_encoding=s["image_encoding"],
    )  # the key order of the files written before
    write_json(a.output, record)
    print(f"wrote {a.output}: " + ", ".join(f"{k}={v}" for k, v in record.items()))
    return 0


def cmd_render_species(a) -> int:
    from .ingest import load_cube
    from .store import open_store, write_species
    from .views import hemisphere_views

    settings = open_store(a.store).settings
    vol, meta = load_cube(a.cube)
    name = a.name or meta.get("id") or Path(a.cube).stem
    rots = hemisphere_views(settings.n_views, seed=settings.view_seed)
    imgs = _render_batched(
        vol,
        rots,
        size=settings.image_size,
        steps=settings.steps,
        chi=settings.chi,
        backend=a.backend,
        batch=a.batch,
        desc=name,
    )
    marker = write_species(a.store, name, volume=vol, rotations=rots, images=imgs)
    if a.previews:
        write_previews(imgs, Path(a.previews), prefix=name, limit=9)
    if a.done:
        done = Path(a.done)
        done.parent.mkdir(parents=True, exist_ok=True)
        write_json(
            done, dict(species=name, store=str(a.store), complete=marker)
        )  # atomically: a marker is whole or absent
    print(f"wrote species {name}: {2 * len(rots)} samples into {a.store}")
    return 0


def cmd_finalize(a) -> int:
    from .store import StoreValidationError, finalize_store

    try:
        report = finalize_store(a.store, progress=True)
    except StoreValidationError as e:
        print(e.report.summary())
        if e.report.species_to_rebuild:
            print("rebuild: " + " ".join(e.report.species_to_rebuild))
        return 1
    print(report.summary())
    if a.done:
        from .store import open_store

        attrs = open_store(a.store).attrs
        write_json(
            a.done,
            dict(
                store=str(a.store),
                ok=report.ok,
                n_species=len(attrs["species"]),
                splits=attrs.get("splits"),
                warnings=report.warnings,
                completion=attrs.get("completion"),
            ),
        )
    return 0


def cmd_export(a) -> int:
    import warnings

    from .export import RedistributionWarning, UnknownLicenceWarning, export_dataset

    recipe_only = True if a.recipe_only else (False if a.with_data else None)
    with warnings.catch_warnings():  # these are in summary["warnings"]: printed once each below
        warnings.simplefilter("ignore", UnknownLicenceWarning)
        warnings.simplefilter("ignore", RedistributionWarning)
        summary = export_dataset(
            a.store,
            a.output,
            manifest=a.manifest,
            config=a.config,
            recipe_only=recipe_only,
            overwrite=a.overwrite,
            volumes=a.volumes,
        )
    for note in summary["warnings"]:
        print(f"WARNING: {note}", file=sys.stderr)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_validate(a) -> int:
    from .store import validate_store

    report = validate_store(a.store, check_data=not a.quick, progress=True)
    print(report.summary())
    if report.species_to_rebuild:
        print("rebuild: " + " ".join(report.species_to_rebuild))
        if a.forget_markers:  # the workflow's markers of those species: the next run redoes them
            folder = Path(a.forget_markers)
            for path in [folder / "species" / f"{n}.done.json" for n in report.species_to_rebuild] + [
                folder / "dataset.final.json"
            ]:
                if path.exists():
                    path.unlink()
                    print(f"removed {path}")
    return 0 if report.ok else 1


def cmd_bench(a) -> int:
    import numba

    from .bench import bench_render, format_rows, machine_summary

    if a.threads:
        numba.set_num_threads(a.threads)
    print(machine_summary())
    extra = getattr(a, "bench_handlers", None) or {}
    if a.what in extra:
        return extra[a.what][1](a)
    if a.what == "rules":
        from .bench import format_rule_rows, rule_benchmarks, suggest_resources

        if not a.run:
            raise ValueError("tomo bench rules needs --run (the run name: results/RUN, benchmarks/RUN)")
        rows = rule_benchmarks(a.workdir, a.run)
        print(format_rule_rows(rows))
        print("\nrequests with a margin of 1.5 (config `resources:`):")
        for rule, req in suggest_resources(rows).items():
            print(f"  {rule + ':':16} {{mem_mb: {req['mem_mb']}, runtime: {req['runtime']}}}")
        return 0
    if a.what == "cube":
        from .resample import bench_to_cube

        r = bench_to_cube(shape=tuple(a.cube_shape), size=a.volume_size, repeats=a.repeats)
        print(
            f"to_cube uint8 {'×'.join(map(str, r['shape']))} → {r['size']}³: {r['seconds']:.2f} s (best of {a.repeats})"
        )
        return 0
    rows = bench_render(
        volume=a.volume,
        n_views=a.views,
        image_size=a.size,
        steps=a.steps,
        volume_size=a.volume_size,
        repeats=a.repeats,
        backends=a.backend or None,
    )
    print(format_rows(rows))
    return 0


# ------------------------------------------------------------------------------------------ parser
def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {v}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def register(sub, *, benches: dict | None = None) -> argparse.ArgumentParser:
    """Add the dataset's commands to the ``tomo`` subparsers ``sub``. ``benches``: more ``tomo bench
    WHAT`` benchmarks, name → (help, function(args) → exit status). Returns the ``bench`` parser, for
    the options of those benchmarks."""
    benches = dict(benches or {})

    def scan_opts(q, output_help):
        """The scan a command reads (`tomo cube`, `tomo align`; read back by _scan_from_args)."""
        q.add_argument("input", nargs="?", help="the scan (file or folder); or give --fetched and --id")
        q.add_argument("-o", "--output", required=True, help=output_help)
        q.add_argument(
            "--fetched",
            metavar="RECORD",
            help=(
                "take the scan's path from this record of `tomo fetch` (its stdout: id, how, sha256, path), "
                "the line of specimen --id"
            ),
        )
        q.add_argument("--spacing", help="z,y,x voxel spacing in mm (one number = isotropic); default: from the file")
        q.add_argument("--slice-axis", choices=["z", "y", "x"], default="z", help="axis the slices step along")
        q.add_argument(
            "--orientation",
            help=(
                "canonical z,y,x take these axes of the volume as read, '-' reverses one: e.g. z,-y,x "
                "(docs/pose.md; default z,y,x or the manifest row's)"
            ),
        )
        q.add_argument(
            "--manifest",
            help=(
                "take spacing, slice axis and the ingest settings (window, background, orientation, crop) "
                "not given as options from this manifest's row --id"
            ),
        )
        q.add_argument("--id", help="specimen id (with --manifest / --fetched)")
        q.add_argument(
            "--allow-default-spacing", action="store_true", help="use 1.0 mm (with a warning) when no spacing is known"
        )
        q.add_argument(
            "--record-params",
            metavar="TEXT",
            help=("the workflow's params of this job, kept in the output's record (the workflow compares them)"),
        )

    def render_opts(q, size=256):
        q.add_argument("--size", type=positive_int, default=size, help="image side in pixels (default %(default)s)")
        q.add_argument("--steps", type=positive_int, default=128, help="samples per ray (default %(default)s)")
        q.add_argument("--chi", type=float, default=10.0, help="extinction coefficient χ (default %(default)s)")
        q.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto", help="renderer backend")

    q = sub.add_parser(
        "phantom",
        help="write a procedural skull volume (.npy/.npz)",
        description="Write a procedural skull density volume (float32, z y x, [0, 1]).",
    )
    q.add_argument("out", help="output file, .npy or .npz")
    q.add_argument("--species", type=int, default=0, help="species number (default %(default)s)")
    q.add_argument("--specimen", type=int, default=None, help="specimen seed: small within-species variation")
    q.add_argument("--size", type=positive_int, default=128, help="volume side in voxels (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of the species table (default %(default)s)")
    q.add_argument("--preview", metavar="DIR", help="also write 8 x-ray PNGs and a contact sheet here")
    q.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto", help="renderer for previews")
    q.set_defaults(func=cmd_phantom)

    q = sub.add_parser(
        "render",
        help="render x-rays of a volume",
        description=(
            "Render orthographic Beer–Lambert x-rays of a volume from hemisphere views; writes images.npy "
            "(n, S, S) float32 opacity, rotations.npy (n, 3, 3), render.json and PNG previews."
        ),
    )
    q.add_argument("volume", help="volume file (.npy, .npz)")
    q.add_argument("-o", "--output", required=True, help="output folder")
    q.add_argument("--views", type=positive_int, default=16, help="number of views (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="view seed (default %(default)s)")
    q.add_argument("--previews", type=int, default=16, help="PNG previews to write (default %(default)s, 0 = none)")
    render_opts(q)
    q.set_defaults(func=cmd_render)

    q = sub.add_parser(
        "build-demo",
        help="build a small dataset store of procedural species",
        description=(
            "Make procedural skull species, render their views and write them into a sharded Zarr v3 "
            "dataset store, then validate and finalise it."
        ),
    )
    q.add_argument("-o", "--output", default="results/core-demo", help="output folder (default %(default)s)")
    q.add_argument("--species", type=positive_int, default=6, help="number of species (default %(default)s)")
    q.add_argument(
        "--val",
        "--held-out",
        dest="val",
        type=int,
        default=2,
        help="species of split 'val' (model choice, tuning; default %(default)s)",
    )
    q.add_argument(
        "--test",
        type=int,
        default=0,
        help="species of split 'test' (the reported result only), the last ones (default %(default)s)",
    )
    q.add_argument("--views", type=positive_int, default=24, help="views per species (default %(default)s)")
    q.add_argument("--volume-size", type=positive_int, default=128, help="volume side (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="seed of species and views (default %(default)s)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing store")
    render_opts(q)
    q.set_defaults(func=cmd_build_demo)

    q = sub.add_parser(
        "demo-movies",
        help="write procedural species as slice movies + a manifest",
        description=(
            "Write procedural skull species as UTCT-like 8-bit slice movies and a manifest (manifest.tsv) "
            "whose sources are the movies: the embedded demo data."
        ),
    )
    q.add_argument("-o", "--output", default="resources/demo", help="output folder (default %(default)s)")
    q.add_argument("--species", type=positive_int, default=24, help="number of species (default %(default)s)")
    q.add_argument(
        "--val",
        "--held-out",
        dest="val",
        type=int,
        default=4,
        help="species of split 'val' (model choice, tuning; default %(default)s)",
    )
    q.add_argument(
        "--test",
        type=int,
        default=0,
        help="species of split 'test' (the reported result only), the last ones (default %(default)s)",
    )
    q.add_argument("--movie-size", type=positive_int, default=160, help="voxels per side (default %(default)s)")
    q.add_argument(
        "--codec", choices=["mp4v", "mjpg", "ffv1"], default="mp4v", help="movie codec (default %(default)s)"
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the species table (default %(default)s)")
    q.set_defaults(func=cmd_demo_movies)

    q = sub.add_parser(
        "manifest-folder",
        help="a manifest of every scan in a folder, seeded splits",
        description=(
            "List every file of FOLDER matching --pattern as one specimen (its own species: the unit held "
            "out) in a manifest, with train/val/test splits by a seeded rule: ids sorted, permuted by "
            "numpy default_rng(SEED), the first --test ids test, the next --val val, the rest train "
            "(tomodata.manifest_folder). Sources are relative to the manifest's folder."
        ),
    )
    q.add_argument("folder", help="folder of scans")
    q.add_argument("-o", "--output", required=True, help="manifest TSV to write")
    q.add_argument("--pattern", default="*.nii.gz", help="glob of the scan files (default %(default)s)")
    q.add_argument("--kind", default="nifti", help="source_kind of every file (default %(default)s)")
    q.add_argument("--species", default="{id}", help="species column, {id} = the file's id (default %(default)s)")
    q.add_argument("--licence", required=True, help="terms of use of the files")
    q.add_argument("--val", type=int, required=True, help="specimens of split val (model choice, tuning)")
    q.add_argument("--test", type=int, required=True, help="specimens of split test (the reported result only)")
    q.add_argument("--seed", type=int, default=0, help="seed of the split permutation (default %(default)s)")
    q.add_argument("--notes", default="", help="notes column of every row")
    q.add_argument("--no-checksums", action="store_true", help="leave the sha256 column empty")
    q.set_defaults(func=cmd_manifest_folder)

    q = sub.add_parser(
        "fetch",
        help="download the sources a manifest names",
        description=(
            "Fetch every specimen of a manifest into DEST/<id>/: HTTP(S) with resume, retries and a rate "
            "limit, file:// and local paths, a local mirror; sha256 checked (and with --record, written "
            "into the manifest on first fetch). Exit status 1 if any specimen failed."
        ),
    )
    q.add_argument("manifest", help="manifest .tsv")
    q.add_argument("-d", "--dest", required=True, help="download folder")
    q.add_argument(
        "--mirror", help="local mirror folder tried before the network (MIRROR/<id>/<file> or MIRROR/<file>)"
    )
    q.add_argument("--rate", type=float, default=1.0, help="max requests per second per host (default %(default)s)")
    q.add_argument("--retries", type=int, default=3, help="retries per request (default %(default)s)")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)")
    q.add_argument("--only", action="append", metavar="ID", help="fetch only this specimen (repeatable)")
    q.add_argument("--keep-going", action="store_true", help="fetch the others when one fails")
    q.add_argument("--record", action="store_true", help="write first-fetch sha256 values into the manifest")
    q.add_argument(
        "--in-place",
        action="store_true",
        help=("local sources: check and hash them where they are, no copy (the record points at the source)"),
    )
    q.set_defaults(func=cmd_fetch)

    q = sub.add_parser(
        "cube",
        help="read a scan and resample it to the canonical cube",
        description=(
            "Read a scan (slice movie, image folder, TIFF, DICOM, NRRD, NIfTI, npy), reorient it by its slice "
            "axis and resample it with Gaussian filtering to an isotropic SIZE³ density cube inside the unit "
            "ball; writes OUT.npz with 'volume' and 'meta' (shape, spacing, fit, value rule)."
        ),
    )
    scan_opts(q, "output .npz")
    q.add_argument(
        "--align-record",
        metavar="JSON",
        help=("the record of `tomo align` for this scan (an aligned volume): kept in the cube's record"),
    )
    q.add_argument("--size", type=positive_int, default=128, help="cube side (default %(default)s)")
    q.add_argument(
        "--window",
        help=(
            "lo,hi: density = clip((v - lo)/(hi - lo), 0, 1) (for HU or raw CT numbers), or a preset: "
            "hu-bone (0,2000), hu-head (-1000,2000; background -500 HU unless --background is given)"
        ),
    )
    q.add_argument("--background", type=float, help="densities <= this become 0 (codec noise, scanner background)")
    q.add_argument(
        "--crop",
        choices=["none", "largest"],
        help=("largest: keep the largest connected part of the specimen (drops scanner tables, holders); default none"),
    )
    q.add_argument("--content-key", help="the workflow's identity of the source's content (recorded in the cube)")
    q.set_defaults(func=cmd_cube)

    q = sub.add_parser(
        "align",
        help="rotate a scan into the canonical pose (moments + rigid registration)",
        description=(
            "Read a scan like `tomo cube` does and bring it to the canonical pose (snout +x, dorsal -y, z "
            "left-right): moments of the bone, then (with --reference) the best of the 24 axis "
            "permutations and a rigid SimpleITK registration to the reference (an aligned volume). Writes "
            "OUT.nii.gz (isotropic, the input's dtype, nothing clipped) and its record OUT.json "
            "(rotation, translation, residual NCC/RMS before and after). tomodata.align."
        ),
    )
    scan_opts(q, "output .nii.gz (record beside it as .json)")
    q.add_argument(
        "--reference", metavar="ALIGNED.nii.gz", help="an aligned volume to register to (none: moments alone)"
    )
    q.add_argument(
        "--replay",
        metavar="RECORD.json",
        help=("apply the transform of an alignment record (or a store's alignment summary) instead of registering"),
    )
    q.add_argument("--threads", type=positive_int, default=1, help="SimpleITK threads (default %(default)s)")
    q.set_defaults(func=cmd_align)

    q = sub.add_parser(
        "align-sheet",
        help="a contact sheet of aligned volumes (three projections each)",
        description="Projections of every aligned volume along z (side), y (top) and x (front) in one PNG.",
    )
    q.add_argument("aligned", nargs="+", help="aligned volumes (.nii.gz written by tomo align)")
    q.add_argument("-o", "--output", required=True, help="output PNG")
    q.set_defaults(func=cmd_align_sheet)

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
    q.add_argument("--views", type=positive_int, default=1332, help="views per species (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="view seed (default %(default)s)")
    q.add_argument("--volume-size", type=positive_int, default=128, help="cube side (default %(default)s)")
    q.add_argument("--encoding", choices=["uint16", "float16"], default="uint16", help="image encoding")
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
    q.add_argument("--views", type=positive_int, default=1332, help="views per species (default %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="view seed (default %(default)s)")
    q.add_argument("--volume-size", type=positive_int, default=128, help="cube side (default %(default)s)")
    q.add_argument("--encoding", choices=["uint16", "float16"], default="uint16", help="image encoding")
    q.add_argument("--size", type=positive_int, default=256, help="image side in pixels (default %(default)s)")
    q.add_argument("--steps", type=positive_int, default=128, help="samples per ray (default %(default)s)")
    q.add_argument("--chi", type=float, default=10.0, help="extinction coefficient χ (default %(default)s)")
    q.set_defaults(func=cmd_store_settings)

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
    q.add_argument("--previews", metavar="DIR", help="also write 9 PNG previews here")
    q.add_argument("--done", metavar="FILE", help="write this marker file (JSON) when the species is complete")
    q.set_defaults(func=cmd_render_species)

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
    q.set_defaults(func=cmd_finalize)

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
    q.set_defaults(func=cmd_export)

    q = sub.add_parser(
        "validate",
        help="validate a dataset store",
        description=(
            "Check a dataset store: attributes, every species complete, shapes, checksums. "
            "Exit status 1 and the species to rebuild when it is not valid."
        ),
    )
    q.add_argument("store", help="path of the .zarr dataset group")
    q.add_argument("--quick", action="store_true", help="skip reading the arrays (no checksums)")
    q.add_argument(
        "--forget-markers",
        metavar="RESULTS",
        help=(
            "remove the workflow's markers (RESULTS/species/ID.done.json, RESULTS/dataset.final.json) of the "
            "species to rebuild, so that the next snakemake run re-renders exactly them"
        ),
    )
    q.set_defaults(func=cmd_validate)

    q = sub.add_parser(
        "bench",
        help="benchmarks (" + ", ".join(["render", "cube", "rules", *benches]) + ")",
        description=(
            "Time the renderer (ms per view of render_xrays and view_volumes per available backend), the "
            "resampling of a uint8 stack to the cube, a workflow run's rules, or what the model adds."
        ),
    )
    q.add_argument(
        "what",
        choices=["render", "cube", "rules", *benches],
        help="what to benchmark: the renderer, to_cube resampling, a workflow run's per-rule time and "
        "peak memory from its Snakemake benchmark files (rules: --workdir, --run)"
        + "".join(f", {name}: {text}" for name, (text, _) in benches.items()),
    )
    q.add_argument("--workdir", default=".", help="the workflow's working folder of the rules report (default .)")
    q.add_argument("--run", help="the run name of the rules report (config `run`)")
    q.add_argument(
        "--cube-shape",
        type=positive_int,
        nargs=3,
        default=[1000, 500, 500],
        metavar=("Z", "Y", "X"),
        help="input stack of the cube benchmark (default %(default)s)",
    )
    q.add_argument("--volume", choices=["skull", "dense"], default="skull", help="benchmark volume")
    q.add_argument("--views", type=positive_int, default=32, help="views per call (default %(default)s)")
    q.add_argument("--volume-size", type=positive_int, default=128, help="volume side (default %(default)s)")
    q.add_argument("--repeats", type=positive_int, default=3, help="timed repeats (default %(default)s)")
    q.add_argument("--threads", type=int, default=0, help="numba threads (default: all cores)")
    q.add_argument("--size", type=positive_int, default=256, help="image side (default %(default)s)")
    q.add_argument("--steps", type=positive_int, default=128, help="samples per ray (default %(default)s)")
    q.add_argument(
        "--backend", action="append", choices=["cpu", "cuda"], help="backend(s) to time (default: all available)"
    )
    q.set_defaults(func=cmd_bench, bench_handlers=benches)
    return q


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command: a heartbeat line every 30 s while it runs; exit status 2 with
    ``error: ...`` for bad input, 3 for a full or unwritable disk (no traceback)."""
    from .progress import heartbeat

    args = parser.parse_args(argv)
    try:
        with heartbeat(f"tomo {args.command}"):  # a log line every 30 s while a long call runs
            return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only or unreadable path: say which, no traceback
        import errno

        what = {
            errno.ENOSPC: "no space left on the device",
            errno.EACCES: "permission denied",
            errno.EROFS: "read-only file system",
            errno.EDQUOT: "disk quota exceeded",
        }.get(e.errno or 0, e.strerror or str(e))
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(
            f"error: {what}{where}: {e}. Work that was complete before is untouched; free space "
            "and run the command again.",
            file=sys.stderr,
        )
        return 3
