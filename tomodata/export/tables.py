"""The export's CSV tables: ``species.csv`` (one row per species) and ``samples.csv`` (one row per sample),
and the species' completion markers they quote."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..run_layout import STORE_NAME
from ..store import _voxel_mm
from ..store_settings import StoreSettings
from .common import _ARRAYS


def _csv_text(header: list[str], rows: list[list]) -> str:
    """CSV text, ``\\n`` line ends; booleans written ``true``/``false``, None as an empty field."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["true" if v is True else "false" if v is False else ("" if v is None else v) for v in r])
    return buf.getvalue()


def _species_markers(src: Path, names: list[str]) -> dict[str, dict]:
    """{species: its completion marker} (``species/<name>/zarr.json`` attribute ``complete``; {} if none)."""
    out = {}
    for name in names:
        meta = json.loads((src / "species" / name / "zarr.json").read_text())
        out[name] = meta.get("attributes", {}).get("complete") or {}
    return out


def _species_rows(attrs: dict, markers: dict, classes: dict) -> tuple[list[str], list[list]]:
    """species.csv: header and one row per species (split, source, licence and credit, shape z y x, the source's spacing
    as recorded, the cube's voxel size in mm where ingest recorded it (else empty), sha256s)."""
    header = [
        "name",
        "split",
        "taxon",
        "source",
        "source_checksum",
        "licence",
        "attribution",
        "licence_class",
        "redistribution",
        "original_shape_zyx",
        "spacing_mm_zyx",
        "voxel_mm",
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
                c.get("attribution", ""),
                c["class"],
                c["redistribution"],
                " ".join(str(int(s)) for s in e["original_shape"]),
                " ".join(repr(float(s)) for s in e["spacing_mm"]),
                _voxel_mm(e),
                StoreSettings.from_attrs(attrs).samples_per_species,
                f"{STORE_NAME}/species/{n}",
            ]
            + [sha.get(a, "") for a in _ARRAYS]
        )
    return header, rows


def _samples_rows(attrs: dict) -> tuple[list[str], list[list]]:
    """samples.csv: header and one row per sample (sample 2i is view i, 2i+1 its mirror)."""
    header = ["sample_id", "species", "split", "sample", "view", "mirrored", "images_array"]
    rows = []
    index = StoreSettings.from_attrs(attrs).sample_index
    n_samples = index.n_samples
    for e in attrs["species"]:
        n = e["name"]
        arr = f"{STORE_NAME}/species/{n}/images"
        views, mirrored = index.table()
        for i in range(n_samples):
            rows.append([f"{n}/{i}", n, e["split"], i, int(views[i]), bool(mirrored[i]), arr])
    return header, rows
