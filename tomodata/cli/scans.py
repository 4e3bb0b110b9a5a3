"""Specimens and scans: ``tomo manifest-folder``, ``tomo fetch``, ``tomo cube``, ``tomo align``,
``tomo align-sheet``, and the scan options they share (:func:`scan_from_args`, resolved by
:mod:`tomodata.scan_source`; a ``tomo fetch`` record read by :func:`_fetched_path`)."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_manifest_folder(a) -> int:
    """``tomo manifest-folder``: a manifest of every scan in a folder, seeded splits."""
    from ..manifest_folder import manifest_from_folder

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
        spacing=a.spacing,
        attribution=a.attribution,
        ingest={k: getattr(a, k) for k in ("window", "background", "orientation", "crop")},
    )
    print(f"wrote {out}")
    return 0


def cmd_fetch(a) -> int:
    """``tomo fetch``: the sources a manifest names; one line ``id how sha256 path`` each (exit 1 on failure)."""
    from ..fetch import FetchError, FetchManifestError, fetch_manifest

    if a.check:
        return _check_sources(a.manifest, a.only)
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
    except FetchManifestError as e:  # --keep-going: the record of those fetched, then the failures
        status = _print_fetch_records(e.results)
        for sid, err in e.failures.items():
            print(f"error: {sid}: {err}", file=sys.stderr)
        print(f"{len(e.results)} fetched, {len(e.failures)} failed", file=sys.stderr)
        return 1 if status == 0 else status
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return _print_fetch_records(results)


def _check_sources(manifest: str, only) -> int:
    """``tomo fetch --check``: every local source of the manifest (or of ``only``) there, readable and
    of its kind, else ValueError listing every problem (rows with a remote alternative are left to the
    fetch, which tries them in order)."""
    from ..specimens import collect_rows, source_problems

    rows = collect_rows(demo=None, demo_dir=".", manifest=manifest)
    ids = list(only) if only else list(rows)
    unknown = [i for i in ids if i not in rows]
    if unknown:
        raise ValueError(f"--only {unknown[0]!r} is not a specimen of {manifest}")
    problems = source_problems(rows, ids)
    if problems:
        listed = "\n  ".join(problems)
        raise ValueError(f"specimens whose local source cannot be read ({manifest}):\n  {listed}")
    print(f"{len(ids)} specimens: every local source is there and of its kind", file=sys.stderr)
    return 0


def _print_fetch_records(results) -> int:
    """One line ``id how sha256 path`` per fetched specimen on stdout (the fetch record,
    :func:`tomodata.fetch_markers.fetch_record_line`); 1 where a path cannot be written in it, else 0."""
    from ..fetch_markers import fetch_record_line

    try:
        lines = [fetch_record_line(r) for r in results]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def _fetched_path(record: str, specimen_id: str, field: int = 3) -> str:
    """Field ``field`` (3: the path, 2: the sha256, 1: how) of ``specimen_id``'s line in a fetch record
    (:func:`tomodata.fetch_markers.fetched_entry`)."""
    from ..fetch_markers import fetched_entry

    return fetched_entry(record, specimen_id)[field]


def cmd_cube(a) -> int:
    """``tomo cube``: read a scan and resample it to the canonical cube (.npz with its record)."""
    from ..ingest import cube_specimen, save_cube
    from ..scan_source import ingest_options

    scan = scan_from_args(a)
    window, background = ingest_options(scan.row, a.window, a.background)
    crop = a.crop or scan.row.get("crop") or "none"
    alignment = None
    if a.align_record:  # read before the work: a wrong file is found at once
        from ..aligned_files import read_alignment_record

        alignment = read_alignment_record(a.align_record)
    try:
        cube, meta = cube_specimen(
            scan.path,
            spacing=scan.spacing,
            slice_axis=scan.slice_axis,
            size=a.size,
            window=window,
            background=background,
            allow_default_spacing=a.allow_default_spacing,
            orientation=scan.orientation,
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
    if alignment is not None:
        meta["alignment"] = alignment
        if alignment.get("source_sha256"):  # the source's checksum, not the aligned file's
            meta["source_sha256"] = meta["alignment"]["source_sha256"]
    out = save_cube(a.output, cube, meta)
    print(
        f"wrote {out}: {cube.shape} from {tuple(meta['original_shape'])} at "
        f"{', '.join(f'{v:.6g}' for v in meta['spacing_mm'])} mm (z, y, x after orientation), "
        f"{meta['fit']['voxel_mm']:.4g} mm per voxel"
    )
    return 0


def scan_from_args(a):
    """The scan named by SCAN / --fetched and --manifest/--id (:func:`tomodata.scan_source.resolve_scan`)."""
    from ..scan_source import resolve_scan

    return resolve_scan(
        a.input,
        fetched=a.fetched,
        manifest=a.manifest,
        specimen_id=a.id,
        spacing=a.spacing,
        slice_axis=a.slice_axis,
        orientation=a.orientation,
    )


def cmd_align(a) -> int:
    """``tomo align``: a scan rotated into the canonical pose (.nii.gz and its .json record)."""
    from ..align_scan import align_scan, describe_alignment
    from ..scan_source import ingest_options

    scan = scan_from_args(a)
    window, background = ingest_options(scan.row, a.window, a.background)  # as tomo cube takes them
    out, shape, source_shape, record = align_scan(
        scan.path,
        a.output,
        specimen_id=a.id,
        spacing=scan.spacing,
        slice_axis=scan.slice_axis,
        orientation=scan.orientation,
        allow_default_spacing=a.allow_default_spacing,
        window=window,
        background=background,
        reference=a.reference,
        replay=a.replay,
        threads=a.threads,
        source_sha256=_fetched_path(a.fetched, a.id, field=2) if a.fetched else None,
        record_params=a.record_params,
    )
    took = "" if a.replay else f", {record['runtime_s']:.1f} s"
    print(f"wrote {out}: {shape} from {source_shape}, {describe_alignment(record)}{took}")
    return 0


def cmd_align_sheet(a) -> int:
    """``tomo align-sheet``: three projections of each aligned volume (or cube .npz: the pose check
    of docs/pose.md), one PNG."""
    from ..align import aligned_name, contact_sheet, load_aligned
    from ..ingest import load_cube

    volumes: dict[str, tuple] = {}
    paths: dict[str, str] = {}
    for path in a.aligned:
        if str(path).endswith(".npz"):  # a cube: canonical axes, isotropic voxels
            cube, meta = load_cube(path)
            name, entry = meta.get("id") or Path(path).stem, (cube, (1.0, 1.0, 1.0))
        else:
            vol, sp, rec = load_aligned(path)
            name, entry = rec.get("id") or aligned_name(path), (vol, sp)
        if name in volumes:  # a tile per name: the later one would replace the earlier in silence
            raise ValueError(f"{path} and {paths[name]} are both specimen {name!r}: give each specimen once")
        volumes[name], paths[name] = entry, path
    out = contact_sheet(volumes, a.output)
    print(f"wrote {out}: {len(volumes)} specimens")
    return 0
