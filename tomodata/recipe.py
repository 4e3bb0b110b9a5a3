"""The rebuild recipe of an export: a complete manifest and a shell script that make the store again.

``recipe/specimens.tsv`` has one row per species with every setting its cube was made with (from the
store's species table: the ``ingest`` record of ``tomo cube``): spacing as given, slice axis,
orientation, window, background, crop, and the source's checksum. ``recipe/rebuild.sh`` runs
``tomo fetch`` on it, one ``tomo cube`` per species with all those options and the cube size,
``tomo store-create`` with the store's settings, ``tomo render-species`` per species and ``tomo
finalize``; :func:`tomodata.export.verify_rebuild` then compares the result with the recorded
checksums (tests/test_export.py rebuilds a store bit-identically this way).

Sources: URLs are written as recorded; a local source is written as its absolute path on the machine
that built the store (the species table's ``source_resolved``), and :func:`recipe_files` returns a
warning for each, since whoever rebuilds must supply those files at that path (or edit the row).
Aligned specimens (``data.align.enabled``): the store keeps each alignment's transform, grid and scan
settings; the recipe writes them to ``recipe/alignment/<id>.json`` and replays them with ``tomo align
--replay`` (no registration), then cubes the aligned volume as the workflow did.
"""

from __future__ import annotations

import json
import shlex

__all__ = ["recipe_files"]

_COLUMNS = ("id", "species", "source", "source_kind", "spacing_mm", "slice_axis", "split", "licence", "sha256",
            "notes", "window", "background", "orientation", "crop")


def _num(v) -> str:
    """The shortest text that reads back as the same float (repr), without a trailing ".0"."""
    r = repr(float(v))
    return r[:-2] if r.endswith(".0") else r


def _ingest(entry: dict, volume_size: int) -> dict:
    """A species' cube settings; older stores (no ``ingest`` record) from the table's own fields."""
    ing = dict(entry.get("ingest") or {})
    ing.setdefault("size", volume_size)
    ing.setdefault("spacing", entry.get("spacing_mm"))
    ing.setdefault("slice_axis", entry.get("slice_axis") or "z")
    ing.setdefault("orientation", entry.get("orientation") or "z,y,x")
    ing.setdefault("window", entry.get("window"))
    ing.setdefault("background", entry.get("background"))
    ing.setdefault("crop", entry.get("crop") or "none")
    ing.setdefault("allow_default_spacing", False)
    return ing


def _row(entry: dict, ing: dict) -> list[str]:
    def clean(text) -> str:
        return " ".join(str(text or "").split())

    w, bg, sp = ing["window"], ing["background"], ing["spacing"]
    return [entry["name"], clean(entry.get("species")), entry.get("source_resolved") or entry["source"],
            entry.get("source_kind") or "", "" if sp is None else ",".join(_num(v) for v in sp), ing["slice_axis"],
            entry["split"], clean(entry.get("licence")), entry.get("source_checksum") or "", "",
            "" if w is None else ",".join(_num(v) for v in w), "" if bg is None else _num(bg),
            ing["orientation"], ing["crop"]]


def _scan_row(ing: dict, alignment: dict | None) -> dict:
    """The settings a manifest row states: for an aligned specimen its scan's (the cube read the
    aligned volume as it is), from the alignment record."""
    if not alignment or not alignment.get("scan"):
        return ing
    scan = alignment["scan"]
    return {**ing, "spacing": scan.get("spacing"), "slice_axis": scan.get("slice_axis", "z"),
            "orientation": scan.get("orientation", "z,y,x")}


def _scan_opts(ing: dict) -> list[str]:
    opts = [f"--slice-axis {ing['slice_axis']}", f"--orientation {shlex.quote(ing['orientation'])}"]
    if ing["spacing"] is not None:
        opts.append("--spacing " + ",".join(_num(v) for v in ing["spacing"]))
    if ing.get("allow_default_spacing"):
        opts.append("--allow-default-spacing")
    return opts


def _species_lines(name: str, ing: dict, alignment: dict | None) -> list[str]:
    """tomo cube (after tomo align --replay for an aligned specimen) with every recorded setting."""
    q = shlex.quote
    opts = [f"--size {int(ing['size'])}", f"--crop {ing['crop']}"]
    if ing["window"] is not None:
        opts.append("--window=" + ",".join(_num(v) for v in ing["window"]))
    if ing["background"] is not None:
        opts.append(f"--background={_num(ing['background'])}")
    out = f'-o "$CUBES/{name}.npz" --id {q(name)}'
    if not alignment:
        return [f'tomo cube --fetched "$RAW/records.tsv" {out} {" ".join(_scan_opts(ing) + opts)}']
    scan = alignment.get("scan") or {}
    scan_ing = dict(spacing=scan.get("spacing"), slice_axis=scan.get("slice_axis", "z"),
                    orientation=scan.get("orientation", "z,y,x"), allow_default_spacing=scan.get("allow_default_spacing"))
    return [f'tomo align --fetched "$RAW/records.tsv" --id {q(name)} {" ".join(_scan_opts(scan_ing))} '
            f'-o "$ALIGNED/{name}.nii.gz" --replay "$HERE/alignment/{name}.json"',
            f'tomo cube "$ALIGNED/{name}.nii.gz" --align-record "$ALIGNED/{name}.json" {out} {" ".join(opts)}']


def recipe_files(attrs: dict) -> tuple[dict[str, str], list[str]]:
    """{relative path: text} of ``recipe/specimens.tsv`` and ``recipe/rebuild.sh``, and the warnings.
    A store of ``tomo build-demo`` (procedural volumes, no source files) has its own one-line rebuild
    (in the card): no files then."""
    if ((attrs.get("provenance") or {}).get("config") or {}).get("command") == "tomo build-demo":
        return {}, []
    table = attrs["species"]
    vs = int(attrs["volume_size"])
    ings = {e["name"]: _ingest(e, vs) for e in table}
    rows = ["\t".join(_COLUMNS)] + ["\t".join(_row(e, _scan_row(ings[e["name"]], e.get("alignment"))))
                                    for e in table]
    warnings = [f"species {e['name']}: local source {e.get('source_resolved') or e['source']} (the rebuild needs "
                "this file at this path, or an edited row in recipe/specimens.tsv)"
                for e in table if "://" not in str(e.get("source_resolved") or e["source"])]
    aligned = {e["name"]: e["alignment"] for e in table if e.get("alignment")}
    names = " ".join(shlex.quote(e["name"]) for e in table)
    enc = attrs["encoding"]["images"]["dtype"]
    lines = [
        "#!/usr/bin/env bash",
        "# Rebuild the dataset store from the sources: bash recipe/rebuild.sh [OUT.zarr] (run in the export folder).",
        "# Every setting each cube was made with is below; compare the result with",
        "#   python -c 'from tomodata.export import verify_rebuild; print(verify_rebuild(\"rebuilt.zarr\", \".\"))'",
        "set -euo pipefail",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        'OUT="${1:-rebuilt.zarr}"',
        'WORK="${REBUILD_WORK:-rebuild-work}"',
        'RAW="$WORK/raw"; CUBES="$WORK/cubes"; ALIGNED="$WORK/aligned"',
        'mkdir -p "$RAW" "$CUBES" "$ALIGNED"',
    ]
    files: dict[str, str] = {}
    for name, summary in aligned.items():
        if "scan" not in summary or "centre_mm_zyx" not in summary:
            lines += [f"echo 'species {name} was aligned by an older tomo align whose record cannot be replayed: "
                      "rebuild with the workflow and recipe/config.json' >&2", "exit 2"]
        files[f"recipe/alignment/{name}.json"] = json.dumps(summary, indent=1, sort_keys=True) + "\n"
    lines += ['tomo fetch "$HERE/specimens.tsv" -d "$RAW" > "$RAW/records.tsv"']
    for e in table:
        lines += _species_lines(e["name"], ings[e["name"]], aligned.get(e["name"]))
    cubes = " ".join(f'"$CUBES/{e["name"]}.npz"' for e in table)
    lines += [f'tomo store-create "$OUT" --manifest "$HERE/specimens.tsv" --cubes {cubes} '
              f"--views {attrs['n_views']} --seed {attrs['view_scheme']['seed']} --size {attrs['image_size']} "
              f"--steps {attrs['steps']} --chi {_num(attrs['chi'])} --volume-size {vs} --encoding {enc}",
              f"for name in {names}; do",
              '  tomo render-species "$OUT" --cube "$CUBES/$name.npz" --name "$name" --backend cpu',
              "done",
              'tomo finalize "$OUT"', ""]
    files.update({"recipe/specimens.tsv": "\n".join(rows) + "\n", "recipe/rebuild.sh": "\n".join(lines)})
    return files, warnings
