"""The specimen manifest: the shipped template, every validation error, record_checksums."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tomodata.manifest import (
    COLUMNS,
    INGEST_COLUMNS,
    ManifestError,
    load_manifest,
    manifest_schema,
    parse_spacing,
    record_checksums,
    slice_axis_transpose,
    split_sources,
    validate_manifest,
)

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "manifests" / "utct-mammalia.template.tsv"
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()


def good_row(**over) -> dict:
    row = {
        "id": "Didelphis_virginiana",
        "species": "Didelphis virginiana",
        "source": "https://example.invalid/EXAMPLE/coronal.mp4",
        "source_kind": "movie",
        "spacing_mm": "0.1,0.1,0.2",
        "slice_axis": "z",
        "split": "train",
        "licence": "UTCT: research use, no redistribution",
        "sha256": "",
        "notes": "",
        "window": "",
        "background": "",
        "orientation": "",
        "crop": "",
        "attribution": "",
    }
    row.update(over)
    return row


def write_tsv(path: Path, rows: list[dict], columns=None, comments=()) -> Path:
    columns = list(columns or rows[0].keys())
    lines = [f"# {c}" for c in comments] + ["\t".join(columns)]
    lines += ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def second_row(**over) -> dict:
    return good_row(id="Tamandua_tetradactyla", species="Tamandua tetradactyla", **over)


def test_template_loads_and_is_normalised():
    df = load_manifest(TEMPLATE)
    assert list(df.columns) == list(COLUMNS)
    assert 2 <= len(df) <= 3
    assert set(df["split"]) <= {"train", "val", "test"}
    assert all("EXAMPLE" in s for s in df["source"])  # placeholders, clearly marked
    assert all(
        s.startswith("https://digimorph.org/specimens/EXAMPLE/")
        for s in df["source"].map(lambda s: split_sources(s)[0])
    )
    assert df.attrs["base_dir"] == str(TEMPLATE.parent.resolve())
    for sp in df["spacing_mm"]:
        assert parse_spacing(sp) is not None


def test_valid_manifest_with_optional_columns_absent(tmp_path):
    rows = [good_row(), second_row(source_kind="nrrd", spacing_mm="")]
    cols = ["id", "species", "source", "source_kind", "spacing_mm", "split", "licence"]
    df = load_manifest(write_tsv(tmp_path / "m.tsv", rows, cols, comments=["a comment"]))
    assert list(df.columns) == list(COLUMNS)
    assert list(df["slice_axis"]) == ["z", "z"]  # default
    assert list(df["sha256"]) == ["", ""]
    assert df.loc[1, "spacing_mm"] == ""  # NRRD carries its spacing


def test_short_rows_are_padded_and_sha_lowercased(tmp_path):
    p = tmp_path / "m.tsv"
    r = good_row(sha256=SHA_A.upper())
    cols = [c for c in COLUMNS if c not in INGEST_COLUMNS]  # ... notes: the ingest columns are absent
    text = "\t".join(cols) + "\n" + "\t".join(r[c] for c in cols[:-1]) + "\n"  # no notes cell
    p.write_text(text)
    df = load_manifest(p)
    assert df.loc[0, "sha256"] == SHA_A
    assert df.loc[0, "notes"] == ""


def _error(tmp_path, rows, columns=None) -> str:
    p = write_tsv(tmp_path / "bad.tsv", rows, columns)
    with pytest.raises(ValueError) as ei:
        load_manifest(p)
    assert isinstance(ei.value, ManifestError)
    return str(ei.value)


def test_missing_required_column(tmp_path):
    cols = [c for c in COLUMNS if c != "licence"]
    msg = _error(tmp_path, [good_row()], cols)
    assert "required column 'licence' is missing" in msg


def test_typo_column_gets_suggestion(tmp_path):
    row = good_row()
    row["licnese"] = row.pop("licence")
    msg = _error(tmp_path, [row])
    assert "unknown column 'licnese'" in msg
    assert "did you mean 'licence'" in msg
    assert "allowed columns: id, species, source" in msg


def test_duplicate_column(tmp_path):
    cols = list(COLUMNS) + ["split"]
    p = tmp_path / "m.tsv"
    r = good_row()
    p.write_text("\t".join(cols) + "\n" + "\t".join([r[c] for c in COLUMNS] + ["val"]) + "\n")
    with pytest.raises(ValueError, match="column 'split' appears more than once"):
        load_manifest(p)


@pytest.mark.parametrize("sep", [",", ";", "    ", " "])
def test_a_file_not_tab_separated_is_refused_in_one_line(tmp_path, sep):
    """Commas, semicolons or spaces (an editor's tabs turned into spaces): one line, not a list of
    every column the header lacks."""
    p = tmp_path / "m.csv"
    p.write_text(sep.join(COLUMNS) + "\n" + sep.join(good_row()[c] or "x" for c in COLUMNS) + "\n")
    with pytest.raises(ValueError, match="must be tab separated") as e:
        load_manifest(p)
    assert len(str(e.value).splitlines()) == 1, str(e.value)


def test_duplicate_id_names_both_rows(tmp_path):
    msg = _error(tmp_path, [good_row(), second_row(), good_row(id="didelphis_VIRGINIANA")])
    assert "row 3 (line 4), column 'id'" in msg
    assert "not unique" in msg and "row 1" in msg


def test_unsafe_id(tmp_path):
    msg = _error(tmp_path, [good_row(id="bad id/..")])
    assert "row 1 (line 2), column 'id'" in msg


def test_bad_split(tmp_path):
    msg = _error(tmp_path, [good_row(), second_row(split="training")])
    assert "row 2 (line 3), column 'split'" in msg
    assert "'training' is not one of ['train', 'val', 'test']" in msg


@pytest.mark.parametrize("spacing", ["0.1,0.1", "0.1,-0.1,0.1", "0,1,1", "a,b,c", "0.1;0.1;0.1", "inf,1,1"])
def test_bad_spacing(tmp_path, spacing):
    msg = _error(tmp_path, [good_row(spacing_mm=spacing)])
    assert "row 1 (line 2), column 'spacing_mm'" in msg


@pytest.mark.parametrize("kind", ["movie", "image_folder", "npy"])
def test_missing_spacing_for_kinds_without_one(tmp_path, kind):
    msg = _error(tmp_path, [second_row(), good_row(source_kind=kind, spacing_mm="")])
    assert "row 2 (line 3), column 'spacing_mm'" in msg
    assert "required when source_kind is" in msg


@pytest.mark.parametrize("sha", ["abc", "g" * 64, SHA_A + "0"])
def test_bad_sha256(tmp_path, sha):
    msg = _error(tmp_path, [good_row(sha256=sha)])
    assert "row 1 (line 2), column 'sha256'" in msg


@pytest.mark.parametrize(
    "column,value",
    [
        ("source_kind", "video"),
        ("slice_axis", "w"),
        ("source", "ftp://host/x.mp4"),
        ("source", "https://a/x.mp4||b.mp4"),
        ("licence", ""),
        ("species", ""),
    ],
)
def test_other_bad_cells(tmp_path, column, value):
    msg = _error(tmp_path, [good_row(**{column: value})])
    assert f"row 1 (line 2), column {column!r}" in msg


def test_all_errors_are_reported_together(tmp_path):
    msg = _error(tmp_path, [good_row(split="x"), second_row(sha256="zz")])
    assert "row 1 (line 2), column 'split'" in msg and "row 2 (line 3), column 'sha256'" in msg


def test_header_cells_and_rows_are_reported_in_one_error(tmp_path):
    """A header typo, a row with too many cells and bad cells in other rows: one error lists them all,
    the header first, then the rows in file order; a missing required column is named once."""
    cols = [c for c in COLUMNS if c not in ("licence", "notes")] + ["nots", "split"]
    p = tmp_path / "m.tsv"
    rows = [good_row(source_kind="film"), second_row(), good_row(id="C", sha256="zz")]
    lines = ["\t".join(cols)] + ["\t".join(r[c] if c in r else "val" for c in cols) for r in rows]
    lines[2] += "\textra"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError) as ei:
        load_manifest(p)
    errs = ei.value.errors
    assert errs[0].startswith("header:") and not errs[-1].startswith("header:")
    assert sum("'licence'" in e for e in errs) == 1 and any("unknown column 'nots'" in e for e in errs)
    assert any("column 'split' appears more than once" in e for e in errs)
    assert [e.split(":")[0] for e in errs if e.startswith("row")] == [
        "row 1 (line 2), column 'source_kind'",
        "row 2 (line 3)",
        "row 3 (line 4), column 'sha256'",
    ]


def test_too_many_cells(tmp_path):
    p = tmp_path / "m.tsv"
    r = good_row()
    p.write_text("\t".join(COLUMNS) + "\n" + "\t".join(r[c] for c in COLUMNS) + "\textra\n")
    with pytest.raises(ValueError, match=rf"row 1 \(line 2\): has {len(COLUMNS) + 1} tab-separated cells"):
        load_manifest(p)


def test_validate_dataframe_without_lines():
    df = pd.DataFrame([good_row(split="nope")])
    with pytest.raises(ValueError, match=r"row 1, column 'split'"):
        validate_manifest(df)
    assert validate_manifest(pd.DataFrame([good_row()])).loc[0, "id"] == "Didelphis_virginiana"


def test_schema_is_the_single_source_of_columns():
    assert set(manifest_schema()["properties"]) == set(COLUMNS)


def test_helpers():
    assert split_sources(" a | b|c ") == ["a", "b", "c"]
    assert parse_spacing("0.5, 0.25 ,1") == (0.5, 0.25, 1.0)
    assert parse_spacing("") is None
    stack = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # (slice, row, col)
    for axis in "zyx":
        vol = stack.transpose(slice_axis_transpose(axis))
        # slice k of the stack is the plane at index k along the named axis
        plane = {"z": vol[1], "y": vol[:, 1, :], "x": vol[:, :, 1]}[axis]
        np.testing.assert_array_equal(plane, stack[1])
    with pytest.raises(ValueError):
        slice_axis_transpose("w")


def test_record_checksums_fills_and_keeps_layout(tmp_path):
    rows = [good_row(), second_row(sha256=SHA_B), good_row(id="Third", notes="keep me")]
    p = write_tsv(tmp_path / "m.tsv", rows, comments=["header comment"])
    before = p.read_text().splitlines()
    n = record_checksums(p, {"Didelphis_virginiana": SHA_A.upper(), "Tamandua_tetradactyla": SHA_B})
    assert n == 1
    after = p.read_text().splitlines()
    assert after[0] == before[0] == "# header comment"
    assert after[1] == before[1]
    df = load_manifest(p)
    assert list(df["sha256"]) == [SHA_A, SHA_B, ""]
    assert df.loc[2, "notes"] == "keep me"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.tsv"]  # no temp file left


def test_record_checksums_adds_missing_column(tmp_path):
    cols = ["id", "species", "source", "source_kind", "spacing_mm", "split", "licence"]
    p = write_tsv(tmp_path / "m.tsv", [good_row(), second_row()], cols)
    assert record_checksums(p, {"Tamandua_tetradactyla": SHA_B}) == 1
    df = load_manifest(p)
    assert list(df["sha256"]) == ["", SHA_B]


def test_record_checksums_refuses_to_overwrite(tmp_path):
    p = write_tsv(tmp_path / "m.tsv", [good_row(sha256=SHA_A), second_row()])
    text = p.read_text()
    with pytest.raises(ValueError, match="checksum mismatch") as ei:
        record_checksums(p, {"Tamandua_tetradactyla": SHA_B, "Didelphis_virginiana": SHA_B})
    assert SHA_A in str(ei.value) and SHA_B in str(ei.value)
    assert p.read_text() == text  # nothing written, not even the valid cell
    with pytest.raises(ValueError, match="not in manifest"):
        record_checksums(p, {"Nobody": SHA_B})
    with pytest.raises(ValueError, match="64 hex"):
        record_checksums(p, {"Tamandua_tetradactyla": "xyz"})
    assert p.read_text() == text


def test_a_binary_file_given_as_a_manifest_is_named(tmp_path):
    """A .npy (or any non-UTF-8 file) given as a manifest: the error names the file, not only the codec."""
    bad = tmp_path / "volume.npy"
    bad.write_bytes(b"\x93NUMPY\x01\x00v\x00" + bytes(range(128, 256)))
    with pytest.raises(ManifestError, match=r"manifest .*volume\.npy is invalid: not a UTF-8 text file"):
        load_manifest(bad)
