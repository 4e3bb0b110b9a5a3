"""Which scan a ``tomo cube`` or ``tomo align`` job reads, and with which settings.

The scan is named by a path, by a ``tomo fetch`` record's line of a specimen (``--fetched``; a source
fetched in place must still be what was fetched), or by a manifest row whose source is local
(``--manifest``/``--id``). Options given win over the manifest row's cells: spacing (mm, z, y, x),
slice axis, orientation, and the ingest settings window, background, crop (:func:`ingest_options`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .fetch.checksums import source_sha256
from .fetch_markers import fetched_entry
from .manifest import load_manifest, parse_spacing
from .specimens import local_source

__all__ = ["ScanSource", "resolve_scan", "check_in_place", "ingest_options", "parse_floats"]


class ScanSource(NamedTuple):
    """A resolved scan: its path, spacing (z, y, x mm) or None (the file's), slice axis, orientation
    or None, and the manifest row ({} without a manifest)."""

    path: str
    spacing: Any
    slice_axis: str
    orientation: str | None
    row: dict


def parse_floats(text: str, n: int, what: str) -> tuple[float, ...]:
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


def check_in_place(path: str, fetched_sha256: str) -> None:
    """A source fetched in place is read where it is, outside the fetch's control: it must still be
    what was fetched (and verified against a declared sha256), or the output would record a false
    checksum. Raises ValueError naming the file and both hashes."""
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


def _row(manifest: str, specimen_id: str | None) -> tuple[dict, str]:
    """The manifest row of ``specimen_id`` and the folder its relative sources are relative to."""
    if not specimen_id:
        raise ValueError("--manifest needs --id")
    table = load_manifest(manifest)
    rows = table[table["id"] == specimen_id]
    if rows.empty:
        raise ValueError(f"specimen {specimen_id!r} is not in {manifest}; known: {', '.join(table['id'])}")
    return rows.iloc[0].to_dict(), table.attrs["base_dir"]


def resolve_scan(
    scan: str | None,
    *,
    fetched: str | None = None,
    manifest: str | None = None,
    specimen_id: str | None = None,
    spacing: str | None = None,
    slice_axis: str = "z",
    orientation: str | None = None,
) -> ScanSource:
    """The scan a job reads (module docstring): ``scan`` (a path), or the line of ``specimen_id`` in the
    fetch record ``fetched``, or the local source of its row in ``manifest``; ``spacing`` is the option's
    text ("z,y,x" or one number). ValueError for a missing or contradictory choice."""
    if fetched:
        if scan:
            raise ValueError("give the scan or --fetched, not both")
        if not specimen_id:
            raise ValueError("--fetched needs --id")
        entry = fetched_entry(fetched, specimen_id)
        scan = entry.path
        if entry.how == "in-place":
            check_in_place(scan, entry.sha256)
    elif not scan and not (manifest and specimen_id):
        raise ValueError("give the scan (file or folder), --fetched RECORD --id ID, or --manifest M --id ID")
    sp = parse_floats(spacing, 3, "--spacing") if spacing else None
    row: dict = {}
    if manifest:
        row, base = _row(manifest, specimen_id)
        if not scan:  # the row's own source, where it is local
            src = local_source({**row, "_base": base})
            if src is None:
                raise ValueError(
                    f"specimen {specimen_id!r}: its source {row['source']} is remote: fetch it first "
                    f"(tomo fetch {manifest} -d DIR > RECORD) and give --fetched RECORD"
                )
            scan = str(src)
        sp = sp or parse_spacing(row["spacing_mm"])
        slice_axis = row["slice_axis"] or slice_axis
    assert scan is not None  # every branch above sets it or raises
    return ScanSource(scan, sp, slice_axis, orientation or row.get("orientation") or None, row)


def ingest_options(row: dict, window: str | None, background: float | None) -> tuple[str | None, float | None]:
    """``(window, background)``: the options where given, else the manifest row's cells (None: the
    reader's defaults)."""
    if window is None:
        window = row.get("window") or None
    if background is None and row.get("background"):
        background = float(row["background"])
    return window, background
