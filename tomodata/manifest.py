"""The specimen manifest: a TSV table, one row per specimen, that says what to fetch and how to read it.

Columns (see ``docs/manifest.md``; the row schema is ``tomodata/schemas/manifest.schema.yaml``):

    id           unique safe name ([A-Za-z0-9_.-], case-insensitively unique)    required
    species      species name                                                    required
    source       URL (http, https, file) or local path; "a | b" = alternatives   required
    source_kind  movie | image_folder | tiff | dicom | nrrd | nifti | npy         required
    spacing_mm   "z,y,x" mm; required for movie, image_folder, npy               optional
    slice_axis   z | y | x: the volume axis the source slices step along (z)    optional
    split        train | val | test                                              required
    licence      terms of use of the source data                                 required
    sha256       64 hex digits; recorded on first fetch, enforced afterwards     optional
    notes        free text                                                       optional
    window       "lo,hi" or a preset (hu-bone, hu-head): values → density        optional
    background   densities <= this become 0                                      optional
    orientation  axis order and flips after slice_axis, e.g. "z,-y,x"            optional
    crop         none | largest: drop parts not connected to the specimen        optional

The last four are the specimen's ingest settings (:mod:`tomodata.ingest_settings`); an empty cell
takes the workflow's ``data.cube.*`` default.

File format: UTF-8, tab separated, first non-comment line is the header; lines starting with ``#``
and blank lines are ignored; cells are stripped of surrounding spaces; rows shorter than the header
get empty trailing cells. Errors name the row (1-based, data rows only), the file line and the column.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import jsonschema
import pandas as pd
import yaml

from .files import write_text
from .splits import SPLITS

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "SOURCE_KINDS",
    "SPLITS",
    "INGEST_COLUMNS",
    "SLICE_AXES",
    "KINDS_NEEDING_SPACING",
    "ManifestError",
    "load_manifest",
    "validate_manifest",
    "record_checksums",
    "manifest_schema",
    "split_sources",
    "parse_spacing",
    "slice_axis_transpose",
]

COLUMNS = (
    "id",
    "species",
    "source",
    "source_kind",
    "spacing_mm",
    "slice_axis",
    "split",
    "licence",
    "sha256",
    "notes",
    "window",
    "background",
    "orientation",
    "crop",
    "attribution",
)
INGEST_COLUMNS = ("window", "background", "orientation", "crop")
REQUIRED_COLUMNS = ("id", "species", "source", "source_kind", "split", "licence")
SOURCE_KINDS = ("movie", "image_folder", "tiff", "dicom", "nrrd", "nifti", "npy")
SLICE_AXES = ("z", "y", "x")
KINDS_NEEDING_SPACING = ("movie", "image_folder", "npy")

_SCHEMA_PATH = Path(__file__).with_name("schemas") / "manifest.schema.yaml"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_ERRORS = 30


class ManifestError(ValueError):
    """An invalid manifest; ``errors`` lists every problem found (row, column and what is wrong)."""

    def __init__(self, origin: str, errors: list[str]):
        self.origin = origin
        self.errors = list(errors)
        shown = self.errors[:_MAX_ERRORS]
        more = f"\n  … and {len(self.errors) - len(shown)} more" if len(self.errors) > len(shown) else ""
        if len(self.errors) == 1:  # one problem, one line
            super().__init__(f"manifest {origin} is invalid: {self.errors[0]}")
        else:
            super().__init__(f"manifest {origin} is invalid:\n  " + "\n  ".join(shown) + more)


@lru_cache(maxsize=1)
def manifest_schema() -> dict:
    """The JSON schema (draft 2020-12) of one manifest row, read from the package's YAML file."""
    with open(_SCHEMA_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def split_sources(source: str) -> list[str]:
    """The alternatives of a ``source`` cell, in the order they are tried (split on ``|``, stripped)."""
    return [s.strip() for s in str(source).split("|") if s.strip()]


def parse_spacing(text) -> tuple[float, float, float] | None:
    """``"z,y,x"`` → three floats (mm); empty/None → None. Raises ValueError unless all three are > 0."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise ValueError(f"spacing must be three numbers 'z,y,x' in mm, got {text!r}")
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"spacing must be three numbers 'z,y,x' in mm, got {text!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(f"spacing values must be finite and positive (mm), got {text!r}")
    return vals  # type: ignore[return-value]


def slice_axis_transpose(slice_axis: str) -> tuple[int, int, int]:
    """Axes for ``np.transpose`` that turn a slice stack ``a[slice, row, col]`` into ``vol[z, y, x]``.

    The slices step along ``slice_axis``; a slice's rows and columns run along the other two volume
    axes in (z, y, x) order: z → (0, 1, 2); y → frames are (z, x) images, (1, 0, 2); x → frames are
    (z, y) images, (1, 2, 0).
    """
    table = {"z": (0, 1, 2), "y": (1, 0, 2), "x": (1, 2, 0)}
    if slice_axis in ("", None):
        slice_axis = "z"
    if slice_axis not in table:
        raise ValueError(f"slice_axis must be one of {SLICE_AXES}, got {slice_axis!r}")
    return table[slice_axis]


def _where(row: int, line: int | None, column: str | None = None) -> str:
    s = f"row {row}" + (f" (line {line})" if line is not None else "")
    return s + (f", column {column!r}" if column else "")


def _check_header(header: list[str]) -> list[str]:
    errors = []
    seen = set()
    for name in header:
        if name in seen:
            errors.append(f"header: column {name!r} appears more than once")
        seen.add(name)
        if name not in COLUMNS:
            close = difflib.get_close_matches(name.lower(), COLUMNS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"header: unknown column {name!r}{hint}; allowed columns: {', '.join(COLUMNS)}")
    for name in REQUIRED_COLUMNS:
        if name not in seen:
            errors.append(f"header: required column {name!r} is missing (required: {', '.join(REQUIRED_COLUMNS)})")
    return errors


def _schema_errors(validator, cells: dict, row: int, line: int | None, absent: frozenset = frozenset()) -> list[str]:
    """jsonschema errors of one row, each naming its row and column (``absent``: required columns the
    header lacks, reported once for the header, not for every row)."""
    props = manifest_schema()["properties"]
    out = []
    for err in sorted(validator.iter_errors(cells), key=lambda e: (list(e.path), e.message)):
        if err.validator == "required":
            for col in [c for c in err.validator_value if c not in cells and c not in absent]:
                if col == "spacing_mm":
                    msg = (
                        f"is empty but required when source_kind is {cells.get('source_kind')!r} "
                        f"({', '.join(KINDS_NEEDING_SPACING)} carry no voxel spacing): give 'z,y,x' in mm"
                    )
                else:
                    msg = "is empty but required"
                out.append(f"{_where(row, line, col)}: {msg}")
            continue
        col = err.path[0] if err.path else None
        if col in props:
            value = cells.get(col)
            if err.validator == "enum":
                msg = f"{value!r} is not one of {err.validator_value}"
            else:
                msg = f"{value!r} is not valid: expected {props[col].get('description', err.message)}"
        else:
            msg = err.message
        out.append(f"{_where(row, line, col)}: {msg}")
    return out


def _semantic_errors(cells: dict, row: int, line: int | None) -> list[str]:
    # kept lazy: the Snakefile imports this module (start-up); ingest_settings pulls in numba and scipy
    from .ingest_settings import parse_orientation, parse_window  # noqa: PLC0415

    out = []
    for col, check in (("window", parse_window), ("orientation", parse_orientation)):
        if col in cells:
            try:
                check(cells[col])
            except ValueError as e:
                out.append(f"{_where(row, line, col)}: {e}")
    if "spacing_mm" in cells:
        try:
            parse_spacing(cells["spacing_mm"])
        except ValueError as e:
            out.append(f"{_where(row, line, 'spacing_mm')}: {e}")
    if "source" in cells:
        for alt in split_sources(cells["source"]):
            m = _SCHEME_RE.match(alt)
            if m and m.group(1).lower() not in ("http", "https", "file"):
                out.append(
                    f"{_where(row, line, 'source')}: unsupported URL scheme {m.group(1)!r} in {alt!r} "
                    "(use http://, https://, file:// or a local path)"
                )
            elif m and len(alt) == len(m.group(0)):
                out.append(f"{_where(row, line, 'source')}: URL {alt!r} has nothing after the scheme")
    return out


def validate_manifest(
    table: pd.DataFrame, *, origin: str = "<table>", lines: list[int] | None = None, base_dir=None
) -> pd.DataFrame:
    """Validate a manifest table (string cells) and return its normalised copy.

    The copy has exactly :data:`COLUMNS` (missing optional columns become empty strings), all cells
    stripped strings, ``slice_axis`` defaulted to ``"z"``, ``sha256`` in lower case, and
    ``attrs["base_dir"]`` (folder that relative local paths in ``source`` are resolved against).
    Raises :class:`ManifestError` (a ValueError) listing every problem with its row and column: those
    of the header and of every row at once (rows are checked on the header's known, unique columns).
    """
    header = [str(c).strip() for c in table.columns]
    errors = _check_header(header)
    usable = [i for i, c in enumerate(header) if c in COLUMNS and header.count(c) == 1]
    absent = frozenset(c for c in REQUIRED_COLUMNS if header.count(c) != 1)  # reported for the header
    df = table.copy()
    df.columns = list(range(len(header)))  # positional: a header may name a column twice
    df = df.fillna("").astype(str).apply(lambda col: col.str.strip())
    validator = jsonschema.Draft202012Validator(manifest_schema())
    seen: dict[str, int] = {}
    for k, values in enumerate(df.itertuples(index=False, name=None)):
        row = k + 1
        line = lines[k] if lines is not None else None
        cells = {header[i]: values[i] for i in usable if values[i] != ""}
        found = _schema_errors(validator, cells, row, line, absent)
        flagged = {c for c in COLUMNS if f"column {c!r}" in " ".join(found)}
        errors += found
        errors += _semantic_errors({c: v for c, v in cells.items() if c not in flagged}, row, line)
        ident = cells.get("id", "")
        if ident:
            low = ident.lower()
            if low in seen:
                errors.append(
                    f"{_where(row, line, 'id')}: id {ident!r} is not unique "
                    f"(row {seen[low]} has the same id, ids compare case-insensitively)"
                )
            else:
                seen[low] = row
    if len(df) == 0:
        errors.append("the manifest has a header but no rows")
    if errors:
        raise ManifestError(origin, errors)
    df.columns = header
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = ""
    df = df[list(COLUMNS)].reset_index(drop=True)
    df["slice_axis"] = df["slice_axis"].where(df["slice_axis"] != "", "z")
    df["sha256"] = df["sha256"].str.lower()
    df.attrs["origin"] = origin
    df.attrs["base_dir"] = str(Path(base_dir) if base_dir is not None else Path.cwd())
    return df


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """Header, data rows (split on tabs, padded or cut to the header), their 1-based file line numbers
    and the rows' cell-count errors (the other checks still run on those rows)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:  # a binary file given as a manifest: name it (the codec's text does not)
        raise ManifestError(str(path), [f"not a UTF-8 text file (a manifest is tab-separated text): {e}"]) from None
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    errors: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in raw.split("\t")]
        if header is None:
            header = fields
            if len(header) == 1 and re.search(r"[,;\s]", raw.strip()):  # commas, semicolons or spaces
                raise ManifestError(
                    str(path), [f"line {lineno}: the header has no tabs; the manifest must be tab separated"]
                )
            continue
        if len(fields) > len(header):
            extra = fields[len(header) :]
            if any(extra):
                errors.append(
                    f"{_where(len(rows) + 1, lineno)}: has {len(fields)} tab-separated cells, "
                    f"the header has {len(header)}"
                )
            fields = fields[: len(header)]
        rows.append(fields + [""] * (len(header) - len(fields)))
        lines.append(lineno)
    if header is None:
        raise ManifestError(str(path), ["the file has no header line"])
    return header, rows, lines, errors


def load_manifest(path) -> pd.DataFrame:
    """Read and validate a manifest TSV; return it normalised (see :func:`validate_manifest`).

    Relative local paths in ``source`` are relative to the manifest's folder (``attrs["base_dir"]``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    header, rows, lines, read_errors = _read_rows(path)
    table = pd.DataFrame(rows, columns=header, dtype=str) if rows else pd.DataFrame(columns=header, dtype=str)
    try:
        df = validate_manifest(table, origin=str(path), lines=lines, base_dir=path.resolve().parent)
    except ManifestError as e:
        raise ManifestError(str(path), _in_file_order(e.errors + read_errors)) from None
    if read_errors:
        raise ManifestError(str(path), read_errors)
    df.attrs["path"] = str(path)
    return df


def _in_file_order(errors: list[str]) -> list[str]:
    """The header's problems first, then the rows' by row number (stable), then the rest."""

    def key(msg: str) -> tuple[int, int]:
        if msg.startswith("header:"):
            return (0, 0)
        m = re.match(r"row (\d+)\b", msg)
        return (1, int(m.group(1))) if m else (2, 0)

    return sorted(errors, key=key)


def record_checksums(path, checksums: Mapping[str, str]) -> int:
    """Fill the ``sha256`` cell of the rows named in ``checksums`` (id → hex digest); return how many.

    Cells already holding the same digest are left alone; a different existing digest raises
    ValueError (a checksum mismatch) and nothing is written. A missing ``sha256`` column is appended.
    Comments, blank lines and column order are kept; the file is replaced atomically.
    """
    path = Path(path)
    load_manifest(path)  # never rewrite a broken manifest
    wanted: dict[str, str] = {}
    for ident, digest in checksums.items():
        if not isinstance(digest, str) or not _SHA_RE.match(digest):
            raise ValueError(f"checksum for {ident!r} must be 64 hex digits, got {digest!r}")
        wanted[str(ident).lower()] = digest.lower()
    text = path.read_text(encoding="utf-8-sig")
    out_lines: list[str] = []
    header: list[str] | None = None
    found: set[str] = set()
    changed = 0
    mismatches = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            out_lines.append(raw)
            continue
        fields = raw.split("\t")
        if header is None:
            header = [f.strip() for f in fields]
            if "sha256" not in header:
                fields = fields + ["sha256"]
                header.append("sha256")
            out_lines.append("\t".join(fields))
            continue
        fields = fields + [""] * (len(header) - len(fields))
        ident = fields[header.index("id")].strip()
        key = ident.lower()
        if key in wanted:
            found.add(key)
            col = header.index("sha256")
            old = fields[col].strip().lower()
            if old == "":
                fields[col] = wanted[key]
                changed += 1
            elif old != wanted[key]:
                mismatches.append(f"{ident}: manifest has {old}, got {wanted[key]}")
        while len(fields) > len(header) and fields[-1].strip() == "":
            fields.pop()
        out_lines.append("\t".join(fields))
    missing = sorted(set(wanted) - found)
    if missing:
        raise ValueError(f"record_checksums: ids not in manifest {path}: {missing}")
    if mismatches:
        raise ValueError(f"checksum mismatch in manifest {path} (nothing written):\n  " + "\n  ".join(mismatches))
    if changed:
        write_text(path, "\n".join(out_lines) + "\n")
    return changed
