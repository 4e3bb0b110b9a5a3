"""The rebuild recipe of an export: a complete manifest and a shell script that make the store again.

``recipe/specimens.tsv`` has one row per species with every setting its cube was made with (from the
store's species table: the ``ingest`` record of ``tomo cube``): spacing as given, slice axis,
orientation, window (numbers, also where a preset name was given), background, crop, and the source's
checksum. ``recipe/rebuild.sh`` checks that every local source is there, runs ``tomo fetch`` on it
(sha256 checked), one ``tomo cube`` per species with all those options, the cube size and the
content key, ``tomo store-create`` with the store's settings and the merged workflow config it
recorded (``recipe/workflow_config.json``, via ``--config-json``), ``tomo render-species`` per species
and ``tomo finalize``; :func:`tomodata.export.verify_rebuild` then compares the result with the
recorded checksums (tests/test_export.py rebuilds a store bit-identically this way).

Stores older than the ``ingest`` record: the settings come from the table's own fields, missing ones
at their defaults (orientation ``z,y,x``, crop ``none``, no default spacing); the spacing is the
recorded one taken back through the orientation (the spacing a manifest states).

Sources: URLs are written as recorded. A local source is written as its absolute path on the machine
that built the store (the species table's ``source_resolved``), its row's ``notes`` say ``local: ...``
and :func:`recipe_files` returns a warning for each (the export's report, card and stderr): whoever
rebuilds must supply those files at that path or edit the row; ``rebuild.sh`` names every missing one
before it starts. Aligned specimens (``data.align.enabled``): the store keeps each alignment's
transform, grid and scan settings; the recipe writes them to ``recipe/alignment/<id>.json`` and
replays them with ``tomo align --replay`` (no registration), then cubes the aligned volume as the
workflow did.
"""

from __future__ import annotations

import json
import shlex

from .ingest_settings import parse_orientation
from .manifest import COLUMNS, split_sources
from .store_settings import StoreSettings, float_text

__all__ = ["recipe_files", "cube_settings", "is_local"]

LOCAL_NOTE = "local: supply this file at this path (or edit this row); tomo fetch checks its sha256"


def _nums(values) -> str:
    return "" if values is None else ",".join(float_text(v) for v in values)


def _given_spacing(entry: dict, orientation: str):
    """The spacing a manifest states (before the orientation) from an old entry's recorded spacing."""
    sp = entry.get("spacing_mm")
    if sp is None:
        return None
    perm, _ = parse_orientation(orientation)
    given = [0.0, 0.0, 0.0]
    for i, a in enumerate(perm):
        given[a] = float(sp[i])
    return given


def cube_settings(entry: dict, volume_size: int) -> dict:
    """A species' ``tomo cube`` settings: its ``ingest`` record, missing keys from the table's own
    fields or at their defaults (stores made before a setting existed)."""
    ing = dict(entry.get("ingest") or {})
    ing.setdefault("size", volume_size)
    ing.setdefault("slice_axis", entry.get("slice_axis") or "z")
    ing.setdefault("orientation", entry.get("orientation") or "z,y,x")
    if "spacing" not in ing:
        ing["spacing"] = _given_spacing(entry, ing["orientation"])
    ing.setdefault("window", entry.get("window"))
    ing.setdefault("background", entry.get("background"))
    ing.setdefault("crop", entry.get("crop") or "none")
    ing.setdefault("allow_default_spacing", False)
    ing.setdefault("content_key", entry.get("content_key"))
    return ing


def is_local(entry: dict) -> bool:
    """Every alternative of the source is a path or a file:// URL (nothing the rebuild can download)."""
    return all("://" not in a or a.lower().startswith("file://") for a in split_sources(_source(entry)))


def _source(entry: dict) -> str:
    return entry.get("source_resolved") or entry["source"]


def _row(entry: dict, ing: dict) -> list[str]:
    def clean(text) -> str:
        return " ".join(str(text or "").split())

    bg = ing["background"]
    return [
        entry["name"],
        clean(entry.get("species")),
        _source(entry),
        entry.get("source_kind") or "",
        _nums(ing["spacing"]),
        ing["slice_axis"],
        entry["split"],
        clean(entry.get("licence")),
        entry.get("source_checksum") or "",
        LOCAL_NOTE if is_local(entry) else "",
        _nums(ing["window"]),
        "" if bg is None else float_text(bg),
        ing["orientation"],
        ing["crop"],
        clean(entry.get("attribution")),
    ]


def _scan_row(ing: dict, alignment: dict | None) -> dict:
    """The settings a manifest row states: for an aligned specimen its scan's (the cube read the
    aligned volume as it is), from the alignment record."""
    if not alignment or not alignment.get("scan"):
        return ing
    scan = alignment["scan"]
    return {
        **ing,
        "spacing": scan.get("spacing"),
        "slice_axis": scan.get("slice_axis", "z"),
        "orientation": scan.get("orientation", "z,y,x"),
    }


def _scan_opts(ing: dict) -> list[str]:
    opts = [f"--slice-axis {ing['slice_axis']}", f"--orientation {shlex.quote(ing['orientation'])}"]
    if ing["spacing"] is not None:
        opts.append("--spacing " + _nums(ing["spacing"]))
    if ing.get("allow_default_spacing"):
        opts.append("--allow-default-spacing")
    return opts


def _cube_opts(ing: dict) -> list[str]:
    opts = [f"--size {int(ing['size'])}", f"--crop {ing['crop']}"]
    if ing["window"] is not None:
        opts.append("--window=" + _nums(ing["window"]))
    if ing["background"] is not None:
        opts.append(f"--background={float_text(ing['background'])}")
    if ing.get("content_key"):
        opts.append(f"--content-key {shlex.quote(str(ing['content_key']))}")
    return opts


def _species_lines(name: str, ing: dict, alignment: dict | None) -> list[str]:
    """tomo cube (after tomo align --replay for an aligned specimen) with every recorded setting."""
    q = shlex.quote
    out = f'-o "$CUBES/{name}.npz" --id {q(name)}'
    if not alignment:
        return [f'tomo cube --fetched "$RAW/records.tsv" {out} {" ".join(_scan_opts(ing) + _cube_opts(ing))}']
    scan = alignment.get("scan") or {}
    scan_ing = dict(
        spacing=scan.get("spacing"),
        slice_axis=scan.get("slice_axis", "z"),
        orientation=scan.get("orientation", "z,y,x"),
        allow_default_spacing=scan.get("allow_default_spacing"),
    )
    return [
        f'tomo align --fetched "$RAW/records.tsv" --id {q(name)} {" ".join(_scan_opts(scan_ing))} '
        f'-o "$ALIGNED/{name}.nii.gz" --replay "$HERE/alignment/{name}.json"',
        f'tomo cube "$ALIGNED/{name}.nii.gz" --align-record "$ALIGNED/{name}.json" {out} ' + " ".join(_cube_opts(ing)),
    ]


def _head() -> list[str]:
    return [
        "#!/usr/bin/env bash",
        "# Rebuild the dataset store from the sources: bash recipe/rebuild.sh [OUT.zarr] (run in the export folder",
        "# EXPORT; the store and the scratch folder go beside it by default, ../EXPORT-rebuilt.zarr and",
        "# ../EXPORT-rebuild-work, so that the export stays as published and two exports in one folder do not share",
        "# them). Every setting each cube was made with is below. BACKEND=cuda renders on the GPU (default cpu; the",
        "# two agree within 1 uint16 step). Compare the result with the recorded checksums:",
        "#   python -c 'from tomodata.export import verify_rebuild; "
        'print(verify_rebuild("../EXPORT-rebuilt.zarr", "."))\'',
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'EXPORT="$(dirname "$HERE")"',
        'OUT="${1:-$(dirname "$EXPORT")/$(basename "$EXPORT")-rebuilt.zarr}"',
        'BACKEND="${BACKEND:-cpu}"',
        'WORK="${REBUILD_WORK:-$(dirname "$EXPORT")/$(basename "$EXPORT")-rebuild-work}"',
        'RAW="$WORK/raw"; CUBES="$WORK/cubes"; ALIGNED="$WORK/aligned"',
    ]


def _local_check(table: list[dict]) -> list[str]:
    """Stop before any work, naming every local source that is not where recipe/specimens.tsv says
    (read when the script runs: an edited row counts)."""
    if not any(is_local(e) for e in table):
        return []
    return ['tomo fetch "$HERE/specimens.tsv" -d "$RAW" --check']


def _store_lines(attrs: dict, table: list[dict], config_opt: str) -> list[str]:
    names = " ".join(shlex.quote(e["name"]) for e in table)
    cubes = " ".join(f'"$CUBES/{e["name"]}.npz"' for e in table)
    settings = " ".join(StoreSettings.from_attrs(attrs).cli_options())
    return [
        f'tomo store-create "$OUT" --manifest "$HERE/specimens.tsv" --cubes {cubes} {settings}{config_opt}',
        f"for name in {names}; do",
        '  tomo render-species "$OUT" --cube "$CUBES/$name.npz" --name "$name" --backend "$BACKEND"',
        "done",
        'tomo finalize "$OUT"',
        "",
    ]


def _workflow_config(attrs: dict):
    """The merged workflow config the store recorded (``tomo store-create --config-json``/``--config``), or None."""
    recorded = (attrs.get("provenance") or {}).get("config") or {}
    cfg = recorded.get("config") if isinstance(recorded, dict) else None
    return cfg if isinstance(cfg, dict) and cfg else None


def recipe_files(attrs: dict) -> tuple[dict[str, str], list[str]]:
    """{relative path: text} of ``recipe/specimens.tsv``, ``recipe/rebuild.sh``, the alignment records
    and ``recipe/workflow_config.json``, and the warnings (one per local source). A store of
    ``tomo build-demo`` (procedural volumes, no source files) has its own one-line rebuild (in the
    card): no files then."""
    if ((attrs.get("provenance") or {}).get("config") or {}).get("command") == "tomo build-demo":
        return {}, []
    table = attrs["species"]
    side = StoreSettings.from_attrs(attrs).volume_size  # of the settings, only the cube side is needed
    ings = {e["name"]: cube_settings(e, side) for e in table}
    rows = ["\t".join(COLUMNS)] + ["\t".join(_row(e, _scan_row(ings[e["name"]], e.get("alignment")))) for e in table]
    warnings = [
        f"species {e['name']}: local source {_source(e)}: the rebuild needs this file at this path, or "
        "its row in recipe/specimens.tsv edited to where it is; supply it yourself"
        for e in table
        if is_local(e)
    ]
    aligned = {e["name"]: e["alignment"] for e in table if e.get("alignment")}
    files: dict[str, str] = {}
    lines = _head() + _local_check(table) + ['mkdir -p "$RAW" "$CUBES" "$ALIGNED"']
    for name, summary in aligned.items():
        if "scan" not in summary or "centre_mm_zyx" not in summary:
            lines += [
                f"echo 'species {name} was aligned by an older tomo align whose record cannot be replayed: "
                "rebuild with the workflow and recipe/config.json' >&2",
                "exit 2",
            ]
        files[f"recipe/alignment/{name}.json"] = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    lines += ['tomo fetch "$HERE/specimens.tsv" -d "$RAW" > "$RAW/records.tsv"']
    for e in table:
        lines += _species_lines(e["name"], ings[e["name"]], aligned.get(e["name"]))
    config_opt = ""
    if _workflow_config(attrs) is not None:
        files["recipe/workflow_config.json"] = json.dumps(_workflow_config(attrs), sort_keys=True) + "\n"
        config_opt = ' --config-json "$(cat "$HERE/workflow_config.json")"'
    lines += _store_lines(attrs, table, config_opt)
    files.update({"recipe/specimens.tsv": "\n".join(rows) + "\n", "recipe/rebuild.sh": "\n".join(lines)})
    return files, warnings
