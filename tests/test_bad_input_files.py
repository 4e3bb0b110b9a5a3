"""Records, configs and scans given to the CLI that are the wrong file (a user audit, part 2): a
one-line error naming the file (exit status 2) before any work, never the codec's or parser's message
without a path, never a cube of another specimen's scan accepted in silence."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from tomodata import render_jobs
from tomodata.export.write import _config_file
from tomodata.ingest import cube_specimen, load_cube
from tomodata.previews import remove_previews
from tomodata.species_table import _check_source

BINARY = bytes(range(128, 256)) * 4  # no UTF-8 text


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(folder, manifest, fetch record, {id: cube}) of 2 demo specimens, cubes of 16³."""
    d = tmp_path_factory.mktemp("files")
    src = d / "src"
    assert main(["demo-movies", "-o", str(src), "--species", "2", "--held-out", "1", "--movie-size", "16"]) == 0
    manifest = src / "manifest.tsv"
    record = d / "fetched.tsv"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["fetch", str(manifest), "-d", str(d / "f"), "--record"]) == 0  # sha256s into the manifest
    record.write_text(buf.getvalue())
    cubes = {}
    for sid in ("procedural_00", "procedural_01"):
        cubes[sid] = d / f"{sid}.npz"
        args = ["cube", "--fetched", str(record), "--id", sid, "--manifest", str(manifest), "-o", str(cubes[sid])]
        assert main([*args, "--size", "16"]) == 0
    return d, manifest, record, cubes


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    return err


def _ball(path: Path) -> Path:
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    np.save(path, np.where(z * z + y * y + x * x < 36, 0.8, 0.0).astype(np.float32))
    return path


# -- files that are not what the option asks for ------------------------------------------------------


def test_binary_fetch_record_is_named(tmp_path, capsys):
    rec = tmp_path / "rec.tsv"
    rec.write_bytes(BINARY)
    capsys.readouterr()
    assert main(["cube", "--fetched", str(rec), "--id", "a", "-o", str(tmp_path / "c.npz")]) == 2
    assert f"error: fetch record {rec} is not a UTF-8 text file" in _err(capsys)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (BINARY, "is not a UTF-8 text file"),
        (b"{not json", "is not JSON"),
        (b"[1, 2]", "holds a JSON list, not an object"),
        (json.dumps({"n_views": 3, "chi": 10}).encode(), "lacks rotation_zyx, centre_mm_zyx"),  # a settings file
    ],
)
def test_align_record_must_be_an_alignment_record(tmp_path, capsys, content, says):
    bad = tmp_path / "record.json"
    bad.write_bytes(content)
    scan = _ball(tmp_path / "ball.npy")
    capsys.readouterr()
    out = tmp_path / "c.npz"
    assert main(["cube", str(scan), "--spacing", "1", "--align-record", str(bad), "-o", str(out), "--size", "16"]) == 2
    err = _err(capsys)
    assert f"error: alignment record {bad} " in err and says in err
    assert not out.exists()
    aligned = tmp_path / "a.nii.gz"
    assert main(["align", str(scan), "--spacing", "1", "--replay", str(bad), "-o", str(aligned)]) == 2
    err = _err(capsys)
    assert f"error: alignment record {bad} " in err and says in err
    assert not aligned.exists()


def test_a_replay_does_not_keep_the_replayed_scans_checksum(tmp_path):
    """tomo align --replay on another scan: the new record does not carry the replayed record's source
    sha256 (store-create would blame the cube for another scan); with --fetched it has its own."""
    scan = _ball(tmp_path / "ball.npy")
    assert main(["align", str(scan), "--spacing", "1", "-o", str(tmp_path / "a.nii.gz"), "--id", "a"]) == 0
    rec = json.loads((tmp_path / "a.json").read_text())
    rec["source_sha256"] = "f" * 64  # as tomo align --fetched records it
    (tmp_path / "a.json").write_text(json.dumps(rec))
    out = tmp_path / "b.nii.gz"
    assert main(["align", str(scan), "--spacing", "1", "--replay", str(tmp_path / "a.json"), "-o", str(out)]) == 0
    assert "source_sha256" not in json.loads((tmp_path / "b.json").read_text())


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (BINARY, "is not a UTF-8 text file"),
        (b"a: [1, 2", "is not YAML (expected ',' or ']', but got '<stream end>' at line 1, column 9)"),
        (b"- 1\n- 2\n", "holds no mapping"),
    ],
)
def test_store_create_config_file(demo, tmp_path, capsys, content, says):
    _d, manifest, _rec, cubes = demo
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    store = tmp_path / "d.zarr"
    args = ["store-create", str(store), "--manifest", str(manifest), "--cubes", *map(str, cubes.values())]
    capsys.readouterr()
    assert main([*args, "--volume-size", "16", "--views", "2", "--size", "16", "--config", str(config)]) == 2
    err = _err(capsys)
    assert f"error: config file {config} " in err and says in err
    assert not store.exists()
    assert main([*args, "--volume-size", "16", "--views", "2", "--size", "16", "--config-json", "[1]"]) == 2
    assert "error: --config-json is not a JSON object" in _err(capsys)


def test_store_create_config_file_with_comments_only(demo, tmp_path, monkeypatch):
    """An empty config (comments only) records no config, as before; a wrong one is refused before
    the cubes are read."""
    _d, manifest, _rec, cubes = demo
    config = tmp_path / "config.yaml"
    config.write_text("# nothing set\n")
    store = tmp_path / "d.zarr"
    args = ["store-create", str(store), "--manifest", str(manifest), "--cubes", *map(str, cubes.values())]
    sizes = ["--volume-size", "16", "--views", "2", "--size", "16"]
    assert main([*args, *sizes, "--config", str(config)]) == 0
    assert store.exists()
    config.write_text("- 1\n")

    def no_cubes(*_a, **_k):
        raise AssertionError("cubes read before the config file was checked")

    monkeypatch.setattr("tomodata.species_table.cube_species", no_cubes)
    assert main([*args, *sizes, "--config", str(config), "--overwrite"]) == 2


def test_export_config_not_text(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_bytes(BINARY)
    with pytest.raises(ValueError, match=f"config {config} is not a UTF-8 text file"):
        _config_file(str(config), {})


def test_cube_from_a_manifest_row_alone(demo, tmp_path, capsys):
    """--manifest M --id ID without a scan: the row's own local source (relative to the manifest)."""
    d, manifest, _rec, cubes = demo
    out = tmp_path / "c.npz"
    assert main(["cube", "--manifest", str(manifest), "--id", "procedural_00", "-o", str(out), "--size", "16"]) == 0
    assert np.array_equal(load_cube(out)[0], load_cube(cubes["procedural_00"])[0])
    remote = tmp_path / "r.tsv"
    text = manifest.read_text().replace("movies/procedural_00.mp4", "https://example.invalid/p.mp4")
    remote.write_text(text)
    capsys.readouterr()
    assert main(["cube", "--manifest", str(remote), "--id", "procedural_00", "-o", str(out)]) == 2
    assert "is remote: fetch it first" in capsys.readouterr().err


# -- a cube made from another specimen's scan --------------------------------------------------------


def test_store_refuses_a_cube_of_another_scan(demo, tmp_path, capsys):
    d, manifest, _rec, cubes = demo
    other = tmp_path / "procedural_01.npz"  # procedural_00's movie, cubed as procedural_01
    movie = d / "src" / "movies" / "procedural_00.mp4"
    args = ["cube", str(movie), "--manifest", str(manifest), "--id", "procedural_01", "-o", str(other)]
    assert main([*args, "--size", "16"]) == 0
    assert load_cube(other)[1]["source_sha256"] == load_cube(cubes["procedural_00"])[1]["source_sha256"]
    store = tmp_path / "d.zarr"
    capsys.readouterr()
    create = ["store-create", str(store), "--manifest", str(manifest), "--volume-size", "16", "--views", "2"]
    assert main([*create, "--size", "16", "--cubes", str(cubes["procedural_00"]), str(other)]) == 2
    err = _err(capsys)
    assert f"cube {other} (specimen 'procedural_01') was made from a source with sha256" in err
    assert "the cube is of another scan" in err
    assert not store.exists()
    assert main([*create, "--size", "16", "--cubes", *map(str, cubes.values())]) == 0  # the right cubes


# -- values that make a blank cube without a word ---------------------------------------------------


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 1), (np.uint16, 4095)])
def test_label_mask_or_few_bits_warn(tmp_path, dtype, top):
    """A 0/1 uint8 mask is density 1/255 under the implicit rule, 12-bit CT in uint16 at most 0.0625:
    nearly blank x-rays. The warning names the rule and a window, and is kept in the cube's record."""
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    np.save(tmp_path / "m.npy", np.where(z * z + y * y + x * x < 36, top, 0).astype(dtype))
    with pytest.warns(UserWarning, match=f"under the {np.dtype(dtype)} rule") as caught:
        _cube, meta = cube_specimen(tmp_path / "m.npy", spacing=(1, 1, 1), size=16)
    assert any(f"need a window, e.g. 0,{top}" in str(w.message) for w in caught)
    assert any("nearly blank" in note for note in meta["read_notes"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the window the warning names: no warning
        cube, _ = cube_specimen(tmp_path / "m.npy", spacing=(1, 1, 1), size=16, window=(0, top))
    assert cube.max() > 0.5


def test_full_range_uint8_does_not_warn(tmp_path):
    z, y, x = np.mgrid[:16, :16, :16] - 7.5
    np.save(tmp_path / "m.npy", np.where(z * z + y * y + x * x < 36, 200, 0).astype(np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cube_specimen(tmp_path / "m.npy", spacing=(1, 1, 1), size=16)


# -- tomo render's output folder --------------------------------------------------------------------


def test_render_output_file_refused_before_rendering(tmp_path, capsys, monkeypatch):
    def no_render(*_a, **_k):
        raise AssertionError("rendered before the output was checked")

    monkeypatch.setattr(render_jobs, "render_batched", no_render)
    taken = tmp_path / "out"
    taken.write_text("a file")
    capsys.readouterr()
    assert main(["render", str(_ball(tmp_path / "b.npy")), "-o", str(taken), "--views", "2"]) == 2
    assert f"error: {taken} is a file; tomo render writes a folder" in _err(capsys)


def test_render_into_a_used_folder_keeps_only_its_previews(tmp_path):
    ball = str(_ball(tmp_path / "b.npy"))
    out = tmp_path / "r"
    common = ["render", ball, "-o", str(out), "--size", "16", "--steps", "8"]
    assert main([*common, "--views", "4", "--previews", "4"]) == 0
    (out / "notes.txt").write_text("mine")
    (out / "xray_keep.png").write_bytes(b"not ours")  # not a name tomo render writes
    assert main([*common, "--views", "2", "--previews", "2"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "xray_000.png",
        "xray_001.png",
        "xray_keep.png",
        "xray_sheet.png",
    ]
    assert (out / "notes.txt").read_text() == "mine" and np.load(out / "images.npy").shape == (2, 16, 16)
    assert main([*common, "--views", "2", "--previews", "0"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["xray_keep.png"]
    assert remove_previews(out) == []


def test_a_failed_render_leaves_no_record_of_arrays_it_did_not_write(tmp_path, capsys):
    """render.json is written last and an earlier one removed first: a render that fails between its
    files leaves none describing the wrong arrays."""
    common = ["render", str(_ball(tmp_path / "b.npy")), "-o", str(tmp_path / "r"), "--size", "16", "--steps", "8"]
    assert main([*common, "--views", "2"]) == 0
    (tmp_path / "r/rotations.npy").unlink()
    (tmp_path / "r/rotations.npy").mkdir()  # the second file cannot be written
    assert main([*common, "--views", "4"]) == 2
    assert "rotations.npy is a folder" in capsys.readouterr().err
    assert np.load(tmp_path / "r/images.npy").shape == (4, 16, 16) and not (tmp_path / "r/render.json").exists()


# -- numbers that are no setting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["cube", "s.npy", "-o", "c.npz", "--background", "nan"],
        ["align", "s.npy", "-o", "a.nii.gz", "--background", "inf"],
        ["render", "s.npy", "-o", "r", "--chi", "0"],
        ["store-settings", "-o", "s.json", "--chi", "nan"],
        ["fetch", "m.tsv", "-d", "f", "--timeout", "0"],
    ],
)
def test_non_finite_numbers_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "expected a finite number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, said",
    [
        (["infer", "x.png", "--checkpoint", "c", "-o", "o.nrrd", "--pixel-spacing", "abc"], "argument --pixel-spacing"),
        (["export"], "the following arguments are required: store, output"),
        (["export", "s", "o", "--volumes", "NIfTI"], "argument --volumes: invalid choice"),
        (["validate", "s.zarr", "--nope"], "unrecognized arguments: --nope"),  # blamed on validate, not tomo
        (  # a negative axis reads as an option to argparse: the line says how to give it
            ["cube", "s.npy", "-o", "c.npz", "--orientation", "-x,z,y"],
            "argument --orientation: expected one argument; a value that starts with '-' goes after '=': "
            "--orientation=-x,z,y (usage",
        ),
        (["cube", "s.npy", "-o"], "argument -o/--output: expected one argument (usage"),  # forgotten: no hint
    ],
)
def test_option_errors_are_one_line_like_every_bad_input(args, said, capsys):
    """An option argparse refuses is one line `error: tomo CMD: ...` and exit status 2, as the README
    says of bad input (argparse printed its whole usage first; a walkthrough found the two styles)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: tomo {args[0]}: {said}") and err.endswith(f"(usage: tomo {args[0]} --help)\n"), err


def test_source_check_rules():
    """The cube's source checksum against its manifest row: checked where both are known; not for an
    archive source (its sha256 is the archive's) or an aligned cube whose record names no source."""
    row = {"sha256": "A" * 64, "source": "https://host/skull.mp4", "source_kind": "movie"}
    _check_source("c.npz", "s", row, {"source_sha256": "a" * 64})  # the same, in another case
    with pytest.raises(ValueError, match="the cube is of another scan"):
        _check_source("c.npz", "s", row, {"source_sha256": "b" * 64})
    with pytest.raises(ValueError, match="the cube is of another scan"):  # the alignment record's source
        _check_source("c.npz", "s", row, {"source_sha256": "c" * 64, "alignment": {"source_sha256": "c" * 64}})
    _check_source("c.npz", "s", row, {"source_sha256": "b" * 64, "alignment": {"rotation_zyx": []}})
    _check_source("c.npz", "s", {"sha256": "", "source": "x.mp4"}, {"source_sha256": "b" * 64})
    _check_source("c.npz", "s", {**row, "source": "https://host/skulls.tar.gz?x=1"}, {"source_sha256": "b" * 64})
    # archives as tomo fetch names them: a local path with '#' or '?', a URL with a trailing slash
    for src in ("../arch/p1#v2.zip", "arch/p?.tar", "https://host/skull.zip/"):
        _check_source("c.npz", "s", {**row, "source": src}, {"source_sha256": "b" * 64})


@pytest.mark.parametrize(
    "args",
    [
        ["render", "s.npy", "-o", "r", "--previews", "-1"],
        ["fetch", "m.tsv", "-d", "f", "--retries", "-1"],
        ["demo-movies", "-o", "d", "--test", "-1"],
        ["manifest-folder", "d", "-o", "m.tsv", "--licence", "x", "--val", "-2", "--test", "1"],
        ["train", "s.zarr", "-o", "r", "--warmup", "-5"],
        ["bench", "render", "--threads", "-1"],
    ],
)
def test_negative_counts_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert "expected an integer >= 0" in capsys.readouterr().err


def test_reading_warnings_are_shown_when_the_scan_is_refused(tmp_path):
    """A scan refused by the density check still shows what reading it found (here: no spacing)."""
    np.save(tmp_path / "const.npy", np.full((8, 8, 8), 0.5, np.float32))
    with pytest.warns(UserWarning, match="gives no voxel spacing"), pytest.raises(ValueError, match="constant"):
        cube_specimen(tmp_path / "const.npy", size=8, allow_default_spacing=True)


def test_fetch_keep_going_prints_the_record_of_those_fetched(tmp_path, capsys):
    """tomo fetch --keep-going with a failing row: the stdout record still lists the fetched ones."""
    np.save(tmp_path / "a.npy", np.zeros((4, 4, 4), np.float32))
    (tmp_path / "gone.npy").write_bytes(b"")  # present for the manifest's check, then removed
    m = tmp_path / "m.tsv"
    m.write_text(
        "id\tspecies\tsource\tsource_kind\tspacing_mm\tsplit\tlicence\n"
        "a\tA a\ta.npy\tnpy\t1,1,1\ttrain\tCC0\nb\tB b\tgone.npy\tnpy\t1,1,1\ttest\tCC0\n"
    )
    (tmp_path / "gone.npy").unlink()
    capsys.readouterr()
    assert main(["fetch", str(m), "-d", str(tmp_path / "f"), "--keep-going", "--retries", "0"]) == 1
    out = capsys.readouterr()
    assert out.out.startswith("a\tfetched\t") and len(out.out.splitlines()) == 1, out
    assert "error: b: " in out.err and "1 fetched, 1 failed" in out.err
