"""tomodata.specimens and tomodata.ingest_settings: the workflow's rows, source checks, content keys,
per-specimen ingest settings (window presets, orientation, crop, constant-window and spacing-order
errors)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from test_io import _dicom_slice

from tomodata.demo import write_demo_movies
from tomodata.fetch import FetchError
from tomodata.fetch.local import _check_kind
from tomodata.ingest import cube_specimen, load_cube, save_cube
from tomodata.ingest_settings import (
    WINDOW_PRESETS,
    check_density,
    crop_largest,
    orient,
    parse_orientation,
    parse_window,
)
from tomodata.specimens import (
    ShaCache,
    collect_rows,
    content_key,
    demo_manifest_edits,
    local_source,
    row_settings,
    source_problems,
)

HEADER = ["id", "species", "source", "source_kind", "spacing_mm", "split", "licence"]
DEMO = {"species": 3, "val": 1, "test": 1, "movie_size": 32, "codec": "mp4v", "seed": 0}


def manifest(path, rows):
    path.write_text("\t".join(HEADER) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def npy(path, shape=(8, 9, 10), value=100):
    a = np.zeros(shape, np.uint8)
    a[2:6, 2:7, 2:8] = value
    np.save(path, a)
    return path


def test_demo_plus_overlay_rows_and_duplicates(tmp_path):
    npy(tmp_path / "a.npy")
    m = manifest(tmp_path / "add.tsv", [["scan_a", "Homo sapiens", "a.npy", "npy", "1,1,1", "train", "CC0"]])
    rows = collect_rows(demo=DEMO, demo_dir=tmp_path / "res", overlays=[str(m)])
    assert list(rows) == ["procedural_00", "procedural_01", "procedural_02", "scan_a"]
    assert [rows[k]["split"] for k in rows] == ["train", "val", "test", "train"]
    assert local_source(rows["scan_a"]) == tmp_path / "a.npy"
    assert local_source(rows["procedural_00"]) == tmp_path / "res/movies/procedural_00.mp4"
    dup = manifest(tmp_path / "dup.tsv", [["PROCEDURAL_01", "x", "a.npy", "npy", "1,1,1", "train", "CC0"]])
    with pytest.raises(ValueError, match="already given by the demo"):
        collect_rows(demo=DEMO, demo_dir=tmp_path / "res", overlays=[str(dup)])
    with pytest.raises(ValueError, match="does not exist"):
        collect_rows(demo=None, demo_dir=tmp_path, manifest=str(tmp_path / "nope.tsv"))
    with pytest.raises(ValueError, match=r"manifest '.*add.tsv ' does not exist"):  # a trailing space shows
        collect_rows(demo=None, demo_dir=tmp_path, manifest=f"{m} ")
    with pytest.raises(ValueError, match=r"manifest '.*' is a folder, not a manifest file"):
        collect_rows(demo=None, demo_dir=tmp_path, manifest=str(tmp_path))


def test_hand_edits_of_the_demo_manifest_are_found(tmp_path):
    """The demo's manifest is output: an edit (which tomo store-create would read) is listed; a file made
    with other data.demo settings is not (the workflow makes it again)."""
    res = tmp_path / "res"
    path = write_demo_movies(res, n_species=3, **{k: v for k, v in DEMO.items() if k != "species"})
    rows = collect_rows(demo=DEMO, demo_dir=res)
    assert demo_manifest_edits(rows, path, DEMO) == []
    path.write_text(path.read_text().replace("\tval\t", "\ttrain\t"))
    assert demo_manifest_edits(rows, path, DEMO) == ["row procedural_01, column split: 'train' (the demo: 'val')"]
    assert demo_manifest_edits(rows, path, dict(DEMO, val=2)) == []  # other settings: made again
    assert demo_manifest_edits(rows, tmp_path / "nope.tsv", DEMO) == []


def test_source_problems_lists_every_bad_row(tmp_path):
    npy(tmp_path / "ok.npy")
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.npy").write_text("not an array")
    locked = npy(tmp_path / "locked.npy")
    os.chmod(locked, 0)
    m = manifest(
        tmp_path / "m.tsv",
        [
            ["ok", "s", "ok.npy", "npy", "1,1,1", "train", "CC0"],
            ["missing", "s", "gone/x.npy", "npy", "1,1,1", "train", "CC0"],
            ["folder", "s", "folder", "nrrd", "", "train", "CC0"],
            ["kind", "s", "ok.npy", "nrrd", "", "train", "CC0"],
            ["remote", "s", "https://example.invalid/x.nrrd", "nrrd", "", "train", "CC0"],
            ["locked", "s", "locked.npy", "npy", "1,1,1", "train", "CC0"],
        ],
    )
    rows = collect_rows(demo=None, demo_dir=tmp_path, manifest=str(m))
    problems = source_problems(rows)
    text = "\n".join(problems)
    assert [p.split(" ")[0] for p in problems][:3] == ["folder", "kind", "locked"] or os.geteuid() == 0
    assert (
        f"missing ({tmp_path}/m.tsv): the folder {tmp_path}/gone does not exist (first source: {tmp_path}/gone/x.npy)"
        in text
    )
    assert "is a folder but source_kind nrrd needs a file" in text
    assert "holds npy data but source_kind says nrrd" in text
    assert "fix the row's source/source_kind" in text
    if os.geteuid() != 0:  # root reads everything
        assert "locked" in text
    assert not any(p.startswith(("ok ", "remote ")) for p in problems)
    os.chmod(locked, 0o644)


def test_an_empty_source_is_listed_before_any_job(tmp_path):
    """A 0-byte file (a copy cut off) stops the run at parse time and fails tomo fetch --check; its
    suffix alone passed both, and the cube job failed later (helper-103)."""
    (tmp_path / "trunc.nii.gz").write_bytes(b"")
    m = manifest(tmp_path / "m.tsv", [["t", "s", "trunc.nii.gz", "nifti", "", "train", "CC0"]])
    problems = source_problems(collect_rows(demo=None, demo_dir=tmp_path, manifest=str(m)))
    assert len(problems) == 1 and "the file is empty (0 bytes)" in problems[0], problems
    with pytest.raises(FetchError, match="the file is empty"):
        _check_kind("t", "trunc.nii.gz", tmp_path / "trunc.nii.gz", "nifti")


def test_a_single_dicom_slice_is_no_scan(tmp_path):
    """A row naming one single-frame DICOM file stops the run before its cube job fails."""
    _dicom_slice(tmp_path / "01.dcm", np.zeros((4, 4)), z=0.0, series_uid="1.2.3.9", instance=1)
    m = manifest(tmp_path / "m.tsv", [["one", "s", "01.dcm", "dicom", "", "train", "CC0"]])
    problems = source_problems(collect_rows(demo=None, demo_dir=tmp_path, manifest=str(m)))
    assert len(problems) == 1 and "is a single-frame DICOM file, one slice" in problems[0]
    # a file of another kind under source_kind dicom is named by its kind, not taken for a slice
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4), np.float32))
    m = manifest(tmp_path / "m2.tsv", [["v", "s", "v.npy", "dicom", "", "train", "CC0"]])
    problems = source_problems(collect_rows(demo=None, demo_dir=tmp_path, manifest=str(m)))
    assert len(problems) == 1 and "holds npy data but source_kind says dicom" in problems[0]


def test_content_key_ignores_spelling_and_keeps_a_recorded_key(tmp_path):
    npy(tmp_path / "a.npy")
    cache = ShaCache(tmp_path / "cache.json")
    rel = collect_rows(
        demo=None,
        demo_dir=tmp_path,
        manifest=str(manifest(tmp_path / "m1.tsv", [["a", "s", "a.npy", "npy", "1,1,1", "train", "x"]])),
    )
    absolute = collect_rows(
        demo=None,
        demo_dir=tmp_path,
        manifest=str(
            manifest(tmp_path / "renamed.tsv", [["a", "s", f"file://{tmp_path}/a.npy", "npy", "1,1,1", "train", "x"]])
        ),
    )
    k1 = content_key(rel["a"], demo=None, cache=cache)
    assert k1.startswith("sha256:") and k1 == content_key(absolute["a"], demo=None, cache=cache)
    cache.save()
    assert ShaCache(tmp_path / "cache.json").entries  # remembered
    # the demo's key is kept when the same file is later given by a manifest (the cube records both)
    demo_rows = collect_rows(demo=DEMO, demo_dir=tmp_path / "res")
    dkey = content_key(demo_rows["procedural_00"], demo=DEMO, cache=cache)
    assert dkey == "demo:0:32:mp4v:procedural_00"
    cube = tmp_path / "cube.npz"
    save_cube(cube, np.zeros((4, 4, 4), np.float32), {"content_key": dkey, "source_sha256": k1[7:]})
    assert content_key(rel["a"], demo=None, cache=cache, cube_path=cube) == dkey
    np.save(tmp_path / "a.npy", np.ones((8, 9, 10), np.uint8))  # new content: a new key
    assert content_key(rel["a"], demo=None, cache=cache, cube_path=cube) not in (dkey, k1)
    remote = dict(rel["a"], source="https://example.invalid/a.npy", sha256="")
    assert content_key(remote, demo=None, cache=cache) == "url:https://example.invalid/a.npy"


def test_row_settings_override_the_config():
    row = {
        "spacing_mm": "2,1,1",
        "slice_axis": "",
        "orientation": "",
        "window": "hu-bone",
        "background": "",
        "crop": "largest",
    }
    cfg = {"window": [0, 255], "background": 0.05, "orientation": "z,-y,x", "crop": "none"}
    st = row_settings(row, cfg)
    assert st == {
        "spacing": "2,1,1",
        "slice_axis": "z",
        "orientation": "z,-y,x",
        "window": "hu-bone",
        "background": 0.05,
        "crop": "largest",
    }
    assert row_settings(dict(row, window=""), cfg)["window"] == "0,255"


def test_window_presets_and_orientation():
    assert parse_window("hu-bone") == WINDOW_PRESETS["hu-bone"] == (0.0, 2000.0)
    assert parse_window(" -1000, 2000 ") == (-1000.0, 2000.0) and parse_window("") is None
    for bad in ("1", "5,1", "a,b", "hu-brain"):
        with pytest.raises(ValueError, match="window"):
            parse_window(bad)
    assert parse_orientation("") == ((0, 1, 2), (False, False, False))
    assert parse_orientation("y,-z,x") == ((1, 0, 2), (False, True, False))
    with pytest.raises(ValueError, match="once each"):
        parse_orientation("z,z,x")
    vol = np.arange(24).reshape(2, 3, 4)
    out, sp = orient(vol, (1.0, 2.0, 3.0), "y,-z,x")
    assert out.shape == (3, 2, 4) and sp == (2.0, 1.0, 3.0)
    assert out[0, 0, 0] == vol[1, 0, 0]  # z reversed


def test_constant_window_and_hu_data_are_refused_naming_the_setting():
    vol = np.full((10, 10, 10), 30, np.uint8)
    vol[3:7, 3:7, 3:7] = 200
    with pytest.raises(ValueError, match=r"constant density.*manifest column `window`, config data.cube.window"):
        check_density(vol, (-1000.0, 0.0))  # below the data: a solid block
    hu = vol.astype(np.int16) * 10 - 1000
    with pytest.raises(ValueError, match=r"config data.cube.window.*hu-bone"):
        check_density(hu, None)
    check_density(hu, parse_window("hu-bone"))


def test_a_window_below_the_data_that_lifts_air_above_the_background_is_refused():
    """8-bit data under a Hounsfield preset (or a window far below it) maps air above the background:
    the cube would be the scan's box and its x-rays filled rectangles; it passed in silence (helper-72)."""
    vol = np.zeros((10, 10, 10), np.uint8)
    vol[3:7, 3:7, 3:7] = 200
    with pytest.raises(ValueError, match=r"puts every voxel above the background \(the lowest value, 0, air"):
        check_density(vol, parse_window("hu-head"), 500.0 / 3000.0)  # hu-head's own background, -500 HU
    with pytest.raises(ValueError, match=r"window -1000,3000 with background 0.1 puts every voxel above"):
        check_density(vol, (-1000.0, 3000.0), 0.1)
    check_density(vol, None, 0.02)  # air at 0: fine
    grey_air = vol + 20  # air at 20/255 = 0.078 over a background of 0.02
    with pytest.raises(ValueError, match="or a higher background"):
        check_density(grey_air, None, 0.02)
    check_density(grey_air, None, 0.1)


def test_crop_largest_drops_a_table(tmp_path):
    vol = np.zeros((20, 20, 20), np.uint8)
    vol[4:14, 4:14, 4:14] = 200  # the head (larger than the table)
    vol[17:19, :, :] = 150  # a table, not touching it
    out, rec = crop_largest(vol, None)
    assert rec["parts"] == 2 and out[18].max() == 0 and out[8, 8, 8] == 200
    np.save(tmp_path / "v.npy", vol)
    _, plain = cube_specimen(tmp_path / "v.npy", spacing=(1, 1, 1), size=16)
    _, cropped = cube_specimen(tmp_path / "v.npy", spacing=(1, 1, 1), size=16, crop="largest")
    assert cropped["fit"]["rho_mm"] < plain["fit"]["rho_mm"]  # the fit holds the head alone
    assert cropped["crop"] == "largest" and cropped["crop_record"]["parts"] == 2


def test_spacing_in_xyz_order_is_refused(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    vol = np.zeros((6, 8, 10), np.uint8)
    vol[2:4, 2:6, 2:8] = 200
    # the header's axes are x, y, z (fastest first); pynrrd writes arrays in C order as given: z y x
    nrrd.write(str(tmp_path / "v.nrrd"), vol, {"spacings": [1.0, 2.0, 3.0]}, index_order="C")
    with pytest.raises(ValueError, match=r"x,y,z order; spacing is z,y,x .* the file says z,y,x = 3,2,1"):
        cube_specimen(tmp_path / "v.nrrd", spacing=(1.0, 2.0, 3.0), size=16)
    cube, meta = cube_specimen(tmp_path / "v.nrrd", spacing=(3.0, 2.0, 1.0), size=16, orientation="z,-y,x")
    assert meta["orientation"] == "z,-y,x" and meta["spacing_mm"] == [3.0, 2.0, 1.0]
    save_cube(tmp_path / "c.npz", cube, meta)
    assert load_cube(tmp_path / "c.npz")[1]["orientation"] == "z,-y,x"
    # another spacing than the file's: allowed, with a warning (the proportions change)
    with pytest.warns(UserWarning, match=r"spacing_mm 1,1,1 overrides the file's own 3,2,1 \(z,y,x\)"):
        cube_specimen(tmp_path / "v.nrrd", spacing=(1.0, 1.0, 1.0), size=16)


GE_TILTED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "ge-head-tilted"


@pytest.mark.skipif(not GE_TILTED.is_dir(), reason=f"{GE_TILTED} is absent (the real tilted-gantry CT)")
def test_spacing_of_a_regridded_dicom_series_is_refused():
    """The reader resamples a tilted, unevenly spaced series onto its own grid: a given spacing would
    not describe that grid (the head came out squashed 4x in z)."""
    with pytest.warns(UserWarning, match="clinical geometry corrected"):
        with pytest.raises(ValueError, match=r"resampled onto a regular grid of 4.00193,0.488281,0.488281 mm"):
            cube_specimen(GE_TILTED, spacing=(1.0, 1.0, 1.0), size=16, window="hu-head")
