"""Specimens and scans: ``tomo manifest-folder``, ``tomo fetch``, ``tomo cube``, ``tomo align``,
``tomo align-sheet``, and the scan options they share (:func:`scan_from_args`; a ``tomo fetch``
record read by :func:`_fetched_path`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


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


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    """``n`` comma-separated numbers of option ``what`` (one number: all three when ``n`` is 3)."""
    try:
        vals = tuple(float(t) for t in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(vals) == 1 and n == 3:
        vals = vals * 3
    if len(vals) != n:
        raise ValueError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return vals


def _fetched_path(record: str, specimen_id: str, field: int = 3) -> str:
    """Field ``field`` (3: the path, 2: the sha256, 1: how) of ``specimen_id``'s line in a fetch record
    (:func:`tomodata.fetch_markers.fetched_entry`)."""
    from ..fetch_markers import fetched_entry

    return fetched_entry(record, specimen_id)[field]


def _check_in_place(path: str, fetched_sha256: str) -> None:
    """A source fetched in place is read where it is, outside the fetch's control: it must still be
    what was fetched (and verified against a declared sha256), or the output would record a false
    checksum. Raises ValueError naming the file and both hashes."""
    from ..fetch import source_sha256

    try:
        now = source_sha256(path)
    except FileNotFoundError as e:
        raise ValueError(f"{path}, fetched in place, is gone ({e}): restore it or fetch again") from None
    if now != fetched_sha256:
        raise ValueError(
            f"{path} does not match the sha256 it was fetched with, {fetched_sha256} (now {now}): it changed "
            "after tomo fetch; fetch it again (with a declared sha256: update the manifest's sha256 or restore "
            "the file)"
        )


def cmd_cube(a) -> int:
    """``tomo cube``: read a scan and resample it to the canonical cube (.npz with its record)."""
    from ..ingest import cube_specimen, save_cube

    a.input, spacing, slice_axis, row = scan_from_args(a)
    window = a.window if a.window is not None else row.get("window") or None
    background = (
        a.background if a.background is not None else (float(row["background"]) if row.get("background") else None)
    )
    crop = a.crop or row.get("crop") or "none"
    alignment = None
    if a.align_record:  # read before the work: a wrong file is found at once
        from ..aligned_files import read_alignment_record

        alignment = read_alignment_record(a.align_record)
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


def scan_from_args(a) -> tuple[str, Any, str, dict]:
    """(path, spacing or None, slice_axis, manifest row or {}) of the scan named by SCAN / --fetched
    and --manifest/--id; sets ``a.orientation`` from the row where the option is not given."""
    if a.fetched:
        if a.input:
            raise ValueError("give the scan or --fetched, not both")
        if not a.id:
            raise ValueError("--fetched needs --id")
        a.input = _fetched_path(a.fetched, a.id)
        if _fetched_path(a.fetched, a.id, field=1) == "in-place":
            _check_in_place(a.input, _fetched_path(a.fetched, a.id, field=2))
    elif not a.input and not (a.manifest and a.id):
        raise ValueError("give the scan (file or folder), --fetched RECORD --id ID, or --manifest M --id ID")
    spacing = _floats(a.spacing, 3, "--spacing") if a.spacing else None
    slice_axis = a.slice_axis
    row: dict = {}
    if a.manifest:
        from ..manifest import load_manifest, parse_spacing

        if not a.id:
            raise ValueError("--manifest needs --id")
        table = load_manifest(a.manifest)
        rows = table[table["id"] == a.id]
        if rows.empty:
            raise ValueError(f"specimen {a.id!r} is not in {a.manifest}; known: {', '.join(table['id'])}")
        row = rows.iloc[0].to_dict()
        if not a.input:  # the row's own source, where it is local
            from ..specimens import local_source

            src = local_source({**row, "_base": table.attrs["base_dir"]})
            if src is None:
                raise ValueError(
                    f"specimen {a.id!r}: its source {row['source']} is remote: fetch it first "
                    f"(tomo fetch {a.manifest} -d DIR > RECORD) and give --fetched RECORD"
                )
            a.input = str(src)
        spacing = spacing or parse_spacing(row["spacing_mm"])
        slice_axis = row["slice_axis"] or slice_axis
    if a.orientation is None:
        a.orientation = row.get("orientation") or None
    return a.input, spacing, slice_axis, row


def cmd_align(a) -> int:
    """``tomo align``: a scan rotated into the canonical pose (.nii.gz and its .json record)."""
    from ..align_scan import align_scan, describe_alignment

    path, spacing, slice_axis, row = scan_from_args(a)
    window = a.window if a.window is not None else row.get("window") or None  # as tomo cube takes them
    background = (
        a.background if a.background is not None else (float(row["background"]) if row.get("background") else None)
    )
    out, shape, source_shape, record = align_scan(
        path,
        a.output,
        specimen_id=a.id,
        spacing=spacing,
        slice_axis=slice_axis,
        orientation=a.orientation,
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
