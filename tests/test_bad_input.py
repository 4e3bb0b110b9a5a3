"""Bad input across the CLI and the workflow: a clear error, and what was complete stays intact."""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from test_workflow import _env

from model import cli
from model.cli import main
from tomodata.ingest import save_cube
from tomodata.store import create_store, finalize_store, open_store, validate_store, write_species
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views

ROOT = Path(__file__).resolve().parents[1]


def _species(name):
    return dict(
        name=name,
        split="train",
        source="test",
        source_checksum="0" * 64,
        original_shape=[16, 16, 16],
        spacing_mm=[1.0, 1.0, 1.0],
    )


def _store(path, names, *, views=4, size=32):
    create_store(
        path,
        StoreSettings(chi=10.0, steps=16, image_size=size, volume_size=16, n_views=views, view_seed=0),
        species=[_species(n) for n in names],
    )


def test_unknown_species_id(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    _store(store, ["alpha"])
    cube = save_cube(tmp_path / "c.npz", np.zeros((16, 16, 16), np.float32) + 0.1, {"id": "beta"})
    assert main(["render-species", str(store), "--cube", str(cube)]) == 2
    err = capsys.readouterr().err
    assert "beta" in err and "alpha" in err  # names the unknown id and the known ones
    assert open_store(store).status("alpha") == "pending"


def test_unreadable_paths(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.zarr")]) == 2  # bad input, not a failed check (1)
    assert "missing.zarr: no such dataset store" in capsys.readouterr().err
    holder = tmp_path / "run"
    (holder / "dataset.zarr").mkdir(parents=True)
    (holder / "dataset.zarr" / "zarr.json").write_text("{}")
    assert main(["validate", str(holder)]) == 2
    assert f"the store in it is {holder / 'dataset.zarr'}" in capsys.readouterr().err
    assert main(["cube", str(tmp_path / "nothing.mp4"), "-o", str(tmp_path / "c.npz"), "--spacing", "1"]) == 2
    assert "nothing.mp4" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    assert main(["cube", str(folder), "-o", str(tmp_path / "d.npz"), "--spacing", "1"]) == 2
    assert not (tmp_path / "d.npz").exists()


def test_config_typo_names_the_key(tmp_path):
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["dataset"]["n_veiws"] = cfg["dataset"].pop("n_views")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "-n",
            "--configfile",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "n_veiws" in out or "n_views" in out, out[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped elsewhere)."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a size-limited directory")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_keeps_complete_species(small_disk, tmp_path, capsys):
    store = small_disk / "s.zarr"
    _store(store, ["small", "big"], views=48, size=64)
    rots = hemisphere_views(48, seed=0)
    rng = np.random.default_rng(0)
    vol = np.zeros((16, 16, 16), np.float32) + 0.2
    write_species(store, "small", volume=vol, rotations=rots, images=np.zeros((48, 64, 64), np.float32) + 0.5)
    before = {p: p.read_bytes() for p in (store / "species" / "small").rglob("*") if p.is_file()}
    # incompressible images: 96 × 64² × 2 bytes ≈ 0.8 MB per copy; with the volume and temporaries the
    # writer runs out of the 2 MiB
    noisy = rng.random((48, 64, 64)).astype(np.float32)
    big = save_cube(tmp_path / "big.npz", rng.random((16, 16, 16)).astype(np.float32), {"id": "big"})
    # fill the disk so the big species cannot fit
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(free - 300_000, 0))
    code = None
    try:
        write_species(store, "big", volume=np.asarray(np.load(big)["volume"]), rotations=rots, images=noisy)
    except OSError as e:
        code = e.errno
    assert code is not None, "the write should have run out of space"
    # through the CLI: a clear message, exit status 3
    assert cli.main(["render-species", str(store), "--cube", str(big)]) == 3
    err = capsys.readouterr().err
    assert "no space left" in err
    report = validate_store(store)
    assert not report.ok and report.species_to_rebuild == ["big"]
    after = {p: p.read_bytes() for p in (store / "species" / "small").rglob("*") if p.is_file()}
    assert after == before  # the complete species is intact
    filler.unlink()
    assert cli.main(["render-species", str(store), "--cube", str(big)]) == 0  # room again: the rerun completes


def test_a_path_that_is_not_a_store_is_named(tmp_path, capsys):
    """Issue #14: a folder that exists but is not a store, a missing store, a store of another spec
    version: every command that reads a store says which path and what to do."""
    odd = tmp_path / "results" / "dataset.zarr"
    odd.mkdir(parents=True)
    (odd / "notes.txt").write_text("not a store")
    for cmd in (
        ["train", str(odd), "-o", str(tmp_path / "t")],
        ["validate", str(odd)],
        ["evaluate", str(odd), "--checkpoint", str(tmp_path / "x.pt"), "-o", str(tmp_path / "e")],
    ):
        assert main(cmd) != 0, cmd
        err = capsys.readouterr()
        assert f"{odd} exists but is not a dataset store" in err.err + err.out, (cmd, err)
    with pytest.raises(ValueError, match="no such dataset store"):
        open_store(tmp_path / "missing.zarr")
    store = tmp_path / "old.zarr"
    _store(store, ["a"])
    zarr.open_group(str(store), mode="r+").attrs["spec_version"] = "tomo-dataset/0"
    with pytest.raises(ValueError, match=r"a store of spec 'tomo-dataset/0' .* rebuild it"):
        open_store(store)


def test_full_disk_during_export_leaves_nothing(small_disk, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    _store(store, ["a"], views=48, size=64)
    rots = hemisphere_views(48, seed=0)
    noisy = np.random.default_rng(0).random((48, 64, 64)).astype(np.float32)  # ≈ 0.8 MB per copy
    write_species(store, "a", volume=np.zeros((16, 16, 16), np.float32) + 0.2, rotations=rots, images=noisy)
    finalize_store(store)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(shutil.disk_usage(small_disk).free - 400_000, 0))
    code = main(["export", str(store), str(small_disk / "export"), "--with-data"])
    err = capsys.readouterr().err
    assert code == 3 and "no space left" in err, (code, err)
    assert [p.name for p in small_disk.iterdir()] == ["filler"]  # no partial export folder
    filler.unlink()
    assert main(["export", str(store), str(small_disk / "export"), "--with-data"]) == 0  # room again


def test_an_output_path_of_the_wrong_kind_is_bad_input(tmp_path, capsys):
    """A folder where an output file goes, or a file where a folder goes: exit status 2 naming the path,
    not the full-disk advice of status 3."""
    vol = tmp_path / "v.npy"
    zz, yy, xx = np.mgrid[:16, :16, :16] - 7.5
    np.save(vol, (0.5 * (zz**2 + yy**2 + xx**2 < 36)).astype(np.float32))  # a ball
    folder = tmp_path / "c.npz"
    folder.mkdir()
    assert main(["cube", str(vol), "-o", str(folder), "--spacing", "1", "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert f"{folder} is a folder; a file is needed there" in err and "free space" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "v.npy"]  # no temporary file left
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["demo-movies", "-o", str(afile / "sub"), "--species", "2", "--val", "0"]) == 2
    err = capsys.readouterr().err
    assert "a part of this path is a file, not a folder" in err and "free space" not in err


def test_demo_movies_of_an_odd_size_are_refused(tmp_path, capsys):
    """The video writers keep even frame sizes: a 15-voxel movie came out 14 x 14 under a 15³ manifest."""
    assert main(["demo-movies", "-o", str(tmp_path / "m"), "--species", "2", "--val", "0", "--movie-size", "15"]) == 2
    assert "movie_size must be even" in capsys.readouterr().err


def test_settings_too_large_for_memory_are_named(tmp_path, capsys):
    """A volume far beyond the machine's memory: one line naming the size numpy asked for, no traceback."""
    assert main(["phantom", str(tmp_path / "x.npy"), "--size", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not enough memory for this command's settings") and "PiB" in err, err
