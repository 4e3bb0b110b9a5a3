"""Bad scans and cube files given to the CLI (a user audit): a one-line error naming the file and the
problem (exit status 2), never a traceback, never a silently wrong cube."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid
from test_io import _dicom_slice

from model.cli import main
from tomodata.ingest import DENSE_WARN, cube_specimen, load_cube, save_cube
from tomodata.ingest_settings import check_density
from tomodata.io import read_array, read_volume
from tomodata.store import create_store
from tomodata.store_settings import StoreSettings


def _slab(shape=(1, 32, 32)) -> np.ndarray:
    v = np.zeros(shape, np.float32)
    v[..., 8:24, 8:24] = 0.8
    return v


def _cube(capsys, args: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["cube", *args, "--size", "16"])
    return rc, capsys.readouterr().err


# -- 1. a single slice is no volume -----------------------------------------------------------------


def _one_npy(d: Path) -> tuple[Path, list[str]]:
    np.save(d / "one.npy", _slab())
    return d / "one.npy", ["--spacing", "1"]


def _one_bmp(d: Path) -> tuple[Path, list[str]]:
    (d / "bmp").mkdir()
    cv2.imwrite(str(d / "bmp" / "s001.bmp"), (255 * _slab()[0]).astype(np.uint8))
    return d / "bmp", ["--spacing", "2,1,1"]


def _one_dicom(d: Path) -> tuple[Path, list[str]]:
    (d / "dcm").mkdir()
    _dicom_slice(d / "dcm" / "1.dcm", np.full((32, 32), 1500, np.uint16), z=0.0, series_uid=generate_uid(), instance=1)
    return d / "dcm", ["--window", "hu-bone"]


def _one_nifti(d: Path) -> tuple[Path, list[str]]:
    nib.save(nib.Nifti1Image(_slab(), np.eye(4)), d / "one.nii.gz")  # nibabel (x, y, z) = (1, 32, 32)
    return d / "one.nii.gz", []


def _one_nifti_z(d: Path) -> tuple[Path, list[str]]:
    nib.save(nib.Nifti1Image(_slab((32, 32, 1)), np.eye(4)), d / "z.nii")  # one z slice
    return d / "z.nii", []


@pytest.mark.parametrize("make", [_one_npy, _one_bmp, _one_dicom, _one_nifti, _one_nifti_z])
def test_a_single_slice_is_not_a_volume(tmp_path, capsys, make):
    """Every reader's array passes one check (tomodata.io.common._check_volume): at least 2 voxels
    along every axis. Before, these made a flat slab of a cube with exit status 0."""
    path, opts = make(tmp_path)
    rc, err = _cube(capsys, [str(path), "-o", str(tmp_path / "c.npz"), *opts])
    assert rc == 2, err
    assert err.startswith(f"error: {path}: a volume needs at least 2 voxels along every axis, got shape (")
    assert "(a single slice?)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.npz").exists()
    with pytest.raises(ValueError, match="at least 2 voxels along every axis"):
        read_volume(path, spacing=1)


def test_two_slices_are_a_volume(tmp_path, capsys):
    np.save(tmp_path / "two.npy", _slab((2, 32, 32)))
    rc, err = _cube(capsys, [str(tmp_path / "two.npy"), "-o", str(tmp_path / "c.npz"), "--spacing", "1"])
    assert rc == 0, err


def test_read_array_refuses_a_single_slice(tmp_path):
    """What ``tomo render`` reads a .npy through (tomodata.render_jobs.load_volume)."""
    np.save(tmp_path / "one.npy", _slab())
    with pytest.raises(ValueError, match=r"one\.npy: a volume needs at least 2 voxels .* \(1, 32, 32\)"):
        read_array(tmp_path / "one.npy")
    np.savez(tmp_path / "one.npz", volume=_slab((32, 1, 32)))
    with pytest.raises(ValueError, match=r"one\.npz: a volume needs at least 2 voxels"):
        read_array(tmp_path / "one.npz")
    np.savez(tmp_path / "ok.npz", volume=_slab((4, 32, 32)), spacing=np.ones(3))
    assert read_array(tmp_path / "ok.npz").shape == (4, 32, 32)


def test_render_refuses_a_single_slice(tmp_path, capsys):
    np.save(tmp_path / "one.npy", _slab())
    capsys.readouterr()
    assert main(["render", str(tmp_path / "one.npy"), "-o", str(tmp_path / "r"), "--views", "2", "--size", "16"]) == 2
    assert "at least 2 voxels along every axis" in capsys.readouterr().err


# -- 2. a NIfTI zoom of 0, < 0 or NaN is no spacing -------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*ignoring unusable NIfTI spacing")
@pytest.mark.parametrize("bad", [0.0, -2.0, np.nan])
def test_nifti_unusable_zoom_gives_no_spacing(tmp_path, capsys, bad):
    """nibabel's loader makes a zero pixdim 1 (and a negative one positive): that passed for 1 mm.
    Now it counts as no spacing, as an NRRD spacing of 0 does."""
    vol = np.zeros((16, 16, 16), np.float32)
    vol[4:12, 4:12, 4:12] = 0.8
    img = nib.Nifti1Image(vol, np.eye(4))
    img.header["pixdim"][1:4] = (bad, 0.5, 0.5)  # set_zooms refuses these; files in the wild have them
    path = tmp_path / "zoom.nii.gz"
    nib.save(img, path)
    rc, err = _cube(capsys, [str(path), "-o", str(tmp_path / "c.npz")])
    assert rc == 2
    assert f"error: {path}: the nifti gives no voxel spacing" in err and "--allow-default-spacing" in err
    assert not (tmp_path / "c.npz").exists()
    with pytest.warns(UserWarning, match="ignoring unusable NIfTI spacing"):
        with pytest.raises(ValueError, match="gives no voxel spacing"):
            read_volume(path, allow_default_spacing=False)
    rc, err = _cube(capsys, [str(path), "-o", str(tmp_path / "c.npz"), "--spacing", "1,0.5,0.5"])
    assert rc == 0, err
    assert load_cube(tmp_path / "c.npz")[1]["spacing_mm"] == [1.0, 0.5, 0.5]
    good = nib.Nifti1Image(vol, np.eye(4))
    good.header.set_zooms((0.25, 0.5, 0.5))  # (x, y, z): read as (z, y, x) = (0.5, 0.5, 0.25)
    nib.save(good, tmp_path / "good.nii")
    assert read_volume(tmp_path / "good.nii", allow_default_spacing=False)[1] == (0.5, 0.5, 0.25)


# -- 3. big-endian data are read in native byte order -----------------------------------------------


def _values() -> np.ndarray:
    v = np.zeros((8, 12, 16), np.int16)
    v[2:6, 3:9, 4:12] = np.arange(4 * 6 * 8, dtype=np.int16).reshape(4, 6, 8) * 5 + 100
    return v


def test_big_endian_nrrd(tmp_path, capsys):
    """A detached NRRD header with ``endian: big`` (numba refused '>i2': a TypingError traceback)."""
    v = _values()
    (tmp_path / "v.raw").write_bytes(v.astype(">i2").tobytes())
    header = (
        "NRRD0004\ntype: int16\ndimension: 3\nsizes: 16 12 8\nencoding: raw\nendian: big\n"
        "spacings: 0.5 0.5 1\ndata file: v.raw\n\n"
    )
    (tmp_path / "v.nhdr").write_text(header)
    arr, sp = read_volume(tmp_path / "v.nhdr")
    assert arr.dtype == np.int16 and arr.dtype.isnative and sp == (1.0, 0.5, 0.5)
    np.testing.assert_array_equal(arr, v)
    np.save(tmp_path / "native.npy", v)
    window = ["--window", "0,1200"]
    rc, err = _cube(capsys, [str(tmp_path / "v.nhdr"), "-o", str(tmp_path / "big.npz"), *window])
    assert rc == 0, err
    rc, err = _cube(
        capsys, [str(tmp_path / "native.npy"), "-o", str(tmp_path / "n.npz"), "--spacing", "1,.5,.5", *window]
    )
    assert rc == 0, err
    np.testing.assert_array_equal(load_cube(tmp_path / "big.npz")[0], load_cube(tmp_path / "n.npz")[0])


def test_big_endian_npy(tmp_path, capsys):
    v = _values().astype(np.float32) / 1200
    np.save(tmp_path / "big.npy", v.astype(">f4"))
    np.save(tmp_path / "native.npy", v)
    for name in ("big", "native"):
        rc, err = _cube(capsys, [str(tmp_path / f"{name}.npy"), "-o", str(tmp_path / f"{name}.npz"), "--spacing", "1"])
        assert rc == 0, err
    np.testing.assert_array_equal(load_cube(tmp_path / "big.npz")[0], load_cube(tmp_path / "native.npz")[0])
    arr = read_array(tmp_path / "big.npy")
    assert arr.dtype == np.float32 and arr.dtype.isnative
    np.testing.assert_array_equal(arr, v)


# -- 4. an empty .npy ------------------------------------------------------------------------------


def test_read_array_empty_and_text_files(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npy: the file is empty \(0 bytes\)"):
        read_array(tmp_path / "empty.npy")
    (tmp_path / "page.npz").write_text("<html><body>Not found</body></html>")
    with pytest.raises(ValueError, match=r"page\.npz: this looks like an HTML page"):
        read_array(tmp_path / "page.npz")
    with pytest.raises(ValueError, match=r"missing\.npy: no such file"):
        read_array(tmp_path / "missing.npy")


def test_render_empty_npy(tmp_path, capsys):
    """``tomo cube`` says "the file is empty"; ``tomo render`` gave ``EOFError: No data left in file``."""
    (tmp_path / "empty.npy").write_bytes(b"")
    capsys.readouterr()
    assert main(["render", str(tmp_path / "empty.npy"), "-o", str(tmp_path / "r"), "--views", "2"]) == 2
    assert "the file is empty" in capsys.readouterr().err


def test_cube_empty_npy(tmp_path, capsys):
    (tmp_path / "empty.npy").write_bytes(b"")
    rc, err = _cube(capsys, [str(tmp_path / "empty.npy"), "-o", str(tmp_path / "c.npz"), "--spacing", "1"])
    assert rc == 2 and "the file is empty (0 bytes)" in err


@pytest.mark.parametrize("offset, hu", [(-1024, True), (0, False)])
def test_window_hint_offers_hu_presets_only_for_hounsfield_units(tmp_path, capsys, offset, hu):
    """Raw CT numbers from 0 (vtk-headsq's 0 … 3926) are no Hounsfield units: no HU preset offered."""
    vol = np.zeros((12, 16, 16), np.int16) + offset
    vol[4:8, 4:12, 4:12] = offset + 3000
    np.save(tmp_path / "v.npy", vol)
    rc, err = _cube(capsys, [str(tmp_path / "v.npy"), "-o", str(tmp_path / "c.npz"), "--spacing", "1"])
    assert rc == 2 and "it needs a window lo,hi that maps its values to density" in err
    assert f"[{offset}, {offset + 3000}]" in err and "values here span" not in err  # one range, stated once
    assert ("'hu-bone' or 'hu-head'" in err) is hu and ("not Hounsfield units" in err) is not hu


def test_window_error_states_the_whole_scans_range():
    """The density check runs a few slices at a time: its error stated the first slab's range and then
    the whole scan's ("int16 data spans [-1024, 0] ... (values here span -1024 ... 3000)")."""
    vol = np.full((3, 2048, 2048), -1024, np.int16)  # 8 MiB slices: one slice per slab
    vol[0, :8, :8] = 0
    vol[2, :8, :8] = 3000
    with pytest.raises(ValueError, match=r"int16 data spans \[-1024, 3000\], not \[0, 1\]") as e:
        check_density(vol, None)
    assert str(e.value).count("3000") == 1


# -- 5. a file that is not a cube where a cube is expected -------------------------------------------


def test_load_cube_refuses_what_is_not_a_cube(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((16, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"x\.npy is not a cube file \(\.npz written by tomo cube\): .*plain array"):
        load_cube(tmp_path / "x.npy")
    np.savez(tmp_path / "v.npz", volume=np.zeros((16, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"v\.npz is not a cube file .*\['volume'\], not 'volume' and 'meta'"):
        load_cube(tmp_path / "v.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.npz is not a cube file .*cannot read it"):
        load_cube(tmp_path / "empty.npz")
    (tmp_path / "text.npz").write_text("volume, meta\n")
    with pytest.raises(ValueError, match=r"text\.npz is not a cube file"):
        load_cube(tmp_path / "text.npz")
    np.savez(tmp_path / "meta.npz", volume=np.zeros((2, 2, 2)), meta=np.array("{not json"))
    with pytest.raises(ValueError, match=r"meta\.npz is not a cube file .*JSONDecodeError"):
        load_cube(tmp_path / "meta.npz")
    with pytest.raises(FileNotFoundError):
        load_cube(tmp_path / "missing.npz")
    cube = save_cube(tmp_path / "ok.npz", np.zeros((4, 4, 4), np.float32), {"id": "a"})
    assert load_cube(cube)[1] == {"id": "a"}


def test_render_species_with_a_npy_cube(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    species = dict(name="a", split="train", source="t", source_checksum="0" * 64, original_shape=[16] * 3)
    create_store(
        store,
        StoreSettings(chi=10.0, steps=16, image_size=16, volume_size=16, n_views=2, view_seed=0),
        species=[dict(species, spacing_mm=[1.0] * 3)],
    )
    np.save(tmp_path / "a.npy", np.zeros((16, 16, 16), np.float32))
    capsys.readouterr()
    assert main(["render-species", str(store), "--cube", str(tmp_path / "a.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'a.npy'} is not a cube file (.npz written by tomo cube)")
    assert len(err.strip().splitlines()) == 1


def test_store_create_with_a_npy_cube(tmp_path, capsys):
    src = tmp_path / "src"
    assert main(["demo-movies", "-o", str(src), "--species", "2", "--held-out", "1", "--movie-size", "16"]) == 0
    np.save(tmp_path / "procedural_00.npy", np.zeros((16, 16, 16), np.float32))
    capsys.readouterr()
    args = ["store-create", str(tmp_path / "d.zarr"), "--manifest", str(src / "manifest.tsv"), "--volume-size", "16"]
    assert main([*args, "--cubes", str(tmp_path / "procedural_00.npy")]) == 2
    assert "procedural_00.npy is not a cube file (.npz written by tomo cube)" in capsys.readouterr().err
    assert not (tmp_path / "d.zarr").exists()


# -- 6. the faint-material warning: only where the denser part falls clearly short of the support ----


def _ball_npy(tmp_path: Path, name: str, halo: float) -> Path:
    """A 64³ ball of density 0.8 (radius 22), inside a ball of density ``halo`` (radius 30) if > 0."""
    n = 64
    z, y, x = np.mgrid[:n, :n, :n] - (n - 1) / 2
    r2 = z**2 + y**2 + x**2
    v = np.where(r2 < 22**2, 0.8, np.where(r2 < 30**2, halo, 0.0)).astype(np.float32)
    np.save(tmp_path / name, v)
    return tmp_path / name


@pytest.mark.parametrize("size", [16, 24, 32, 64])
def test_no_faint_material_warning_without_faint_material(tmp_path, size):
    """A small cube's support itself reaches less than 0.8 of the ball (size 32: about 0.72), and the
    specimen's denser part as far or farther: before, every such cube warned."""
    path = _ball_npy(tmp_path, "ball.npy", 0.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*faint material.*")
        _, meta = cube_specimen(path, spacing=(1.0, 1.0, 1.0), size=size)
    if size <= 32:
        assert meta["specimen_reach"] < DENSE_WARN and meta["dense_reach"] < DENSE_WARN  # the old false alarm
    assert meta["dense_reach"] >= meta["specimen_reach"]
    assert not any("faint material" in n for n in meta["read_notes"])


@pytest.mark.parametrize("size", [24, 32, 64])
def test_faint_halo_still_warns_in_small_cubes(tmp_path, capsys, size):
    """A faint halo (2 % density out to radius 30 around a dense ball of radius 22: 0.73 of it) sets
    the scale: the warning, on the CLI too, and in the cube's read_notes."""
    path = _ball_npy(tmp_path, "halo.npy", 0.02)
    out = tmp_path / "c.npz"
    capsys.readouterr()
    with pytest.warns(UserWarning, match=r"faint material sets this cube's scale: .*reaches 0\.\d\d .* only 0\.\d\d"):
        assert main(["cube", str(path), "-o", str(out), "--spacing", "1", "--size", str(size)]) == 0
    meta = load_cube(out)[1]
    assert meta["dense_reach"] < 0.86 * meta["specimen_reach"]
    assert any("faint material" in n for n in meta["read_notes"])
    with warnings.catch_warnings():  # the fix the warning names: background above the halo
        warnings.filterwarnings("error", message=".*faint material.*")
        _, meta = cube_specimen(path, spacing=(1.0, 1.0, 1.0), size=size, background=0.05)
    assert meta["dense_reach"] >= meta["specimen_reach"]


def test_faint_material_warning_in_json_record(tmp_path):
    """The record stays JSON (read_notes are strings) when the warning fires."""
    path = _ball_npy(tmp_path, "halo.npy", 0.02)
    with pytest.warns(UserWarning, match="faint material"):
        _, meta = cube_specimen(path, spacing=(1.0, 1.0, 1.0), size=32)
    json.dumps(meta)
