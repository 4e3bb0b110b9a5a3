"""tomodata.io.read_volume: every source format, its spacing and axis order, and the bad inputs.

All data are made here in tmp_path, except the real CT folders under ../shared/data (skipped where
absent). Arrays are non-cubic (z, y, x all different) so that an axis mix-up fails.
"""

from __future__ import annotations

import functools
import os
import random
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import nrrd
import numpy as np
import pytest
import tifffile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tomodata.ingest import cube_specimen
from tomodata.io import SOURCE_KINDS, check_spacing, natural_key, read_volume, sniff_kind

SHAPE = (5, 7, 9)  # z, y, x
SPACING = (2.5, 0.75, 0.5)  # z, y, x mm


def _vol(dtype=np.int16, shape=SHAPE) -> np.ndarray:
    return (np.arange(np.prod(shape)) * 7 % 1000).reshape(shape).astype(dtype)


def _listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------------
# movies

CODECS = [("mp4v", ".mp4"), ("MJPG", ".avi"), ("FFV1", ".mkv"), ("mp4v", ".mov")]


def _write_movie(path: Path, frames, fourcc: str, fps: float = 25.0) -> bool:
    """Write grey (z, h, w) or BGR (z, h, w, 3) uint8 frames; False if this build cannot."""
    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h), True)
    if not writer.isOpened():
        return False
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f)
    writer.release()
    return path.is_file() and path.stat().st_size > 0


@functools.cache
def _codec_works(fourcc: str, ext: str, folder: str) -> bool:
    """Can this OpenCV build write a movie with ``fourcc`` in ``ext`` and decode it again?"""
    p = Path(folder) / f"probe_{fourcc}{ext}"
    if not _write_movie(p, np.full((3, 16, 16), 128, np.uint8), fourcc):
        return False
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    p.unlink()
    return n == 3


def _need_codec(fourcc: str, ext: str, tmp_path_factory) -> None:
    folder = tmp_path_factory.getbasetemp() / "codec_probe"
    folder.mkdir(exist_ok=True)
    if not _codec_works(fourcc, ext, str(folder)):
        pytest.skip(f"this OpenCV build cannot write+read {fourcc!r} in {ext}")


def _index_frames(n=12, h=48, w=64) -> np.ndarray:
    """Slices whose level encodes their index (20 levels apart) plus a mild gradient."""
    yy, xx = np.mgrid[0:h, 0:w]
    grad = (xx + yy) // 8
    return np.stack([np.clip(15 + 18 * i + grad, 0, 255) for i in range(n)]).astype(np.uint8)


@pytest.mark.parametrize("fourcc,ext", CODECS)
def test_movie_roundtrip(tmp_path, tmp_path_factory, fourcc, ext):
    _need_codec(fourcc, ext, tmp_path_factory)
    frames = _index_frames()
    p = tmp_path / f"stack{ext}"
    assert _write_movie(p, frames, fourcc)
    before = _listing(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grey content must not trigger the colour warning
        vol, sp = read_volume(p, spacing=SPACING)
    assert _listing(tmp_path) == before
    assert sniff_kind(p) == "movie"
    assert vol.shape == frames.shape and vol.dtype == np.uint8 and vol.flags.c_contiguous
    assert sp == SPACING
    means = vol.reshape(len(vol), -1).mean(axis=1)
    assert np.all(np.diff(means) > 10), "slice order must follow frame order"
    tol = 0 if fourcc == "FFV1" else 6
    assert np.abs(vol.astype(int) - frames).mean() <= tol


def test_movie_needs_spacing(tmp_path, tmp_path_factory):
    _need_codec("MJPG", ".avi", tmp_path_factory)
    p = tmp_path / "a.avi"
    assert _write_movie(p, _index_frames(4), "MJPG")
    with pytest.raises(ValueError, match="no voxel spacing"):
        read_volume(p, allow_default_spacing=False)
    with pytest.warns(UserWarning, match="1.0 mm"):
        vol, sp = read_volume(p)  # docs/manifest.md: the default is 1.0 mm with a warning
    assert sp == (1.0, 1.0, 1.0) and vol.shape == (4, 48, 64)
    assert read_volume(p, spacing=0.5)[1] == (0.5, 0.5, 0.5)


def test_movie_colour_becomes_luma(tmp_path, tmp_path_factory):
    _need_codec("FFV1", ".mkv", tmp_path_factory)
    frames = np.zeros((3, 32, 48, 3), np.uint8)
    frames[:, :, :16] = (255, 0, 0)  # blue (BGR)
    frames[:, :, 16:32] = (0, 255, 0)  # green
    frames[:, :, 32:] = (0, 0, 255)  # red
    p = tmp_path / "colour.mkv"
    assert _write_movie(p, frames, "FFV1")
    with pytest.warns(UserWarning, match="colour content"):
        vol, _ = read_volume(p, spacing=1)
    assert vol.shape == (3, 32, 48)
    np.testing.assert_allclose(vol[:, 5, [5, 20, 40]].astype(float), [[29, 150, 76]] * 3, atol=1)


class _LyingCapture:
    """A real capture whose CAP_PROP_FRAME_COUNT says ``count``."""

    real = cv2.VideoCapture

    def __init__(self, count, *args):
        self.cap = self.real(*args)
        self.count = count

    def get(self, prop):
        return float(self.count) if prop == cv2.CAP_PROP_FRAME_COUNT else self.cap.get(prop)

    def __getattr__(self, name):
        return getattr(self.cap, name)


@pytest.mark.parametrize("count", [0, 3, -1.9e14, float("nan")])
def test_movie_frames_counted_by_decoding(tmp_path, tmp_path_factory, monkeypatch, count):
    """The header's count is only a hint: too low / absent / garbage still gives every frame."""
    _need_codec("MJPG", ".avi", tmp_path_factory)
    frames = _index_frames(90, 16, 24)  # more than the 64-frame default hint: the buffer must grow
    p = tmp_path / "long.avi"
    assert _write_movie(p, frames, "MJPG")
    monkeypatch.setattr(cv2, "VideoCapture", functools.partial(_LyingCapture, count))
    vol, _ = read_volume(p, spacing=1)
    assert vol.shape == (90, 16, 24)
    assert np.abs(vol.astype(int) - frames).mean() < 4


def test_movie_fewer_frames_than_announced(tmp_path, tmp_path_factory, monkeypatch):
    _need_codec("MJPG", ".avi", tmp_path_factory)
    p = tmp_path / "short.avi"
    assert _write_movie(p, _index_frames(10), "MJPG")
    monkeypatch.setattr(cv2, "VideoCapture", functools.partial(_LyingCapture, 20))
    with pytest.raises(ValueError, match=r"only 10 of the 20 frames.*truncated"):
        read_volume(p, spacing=1)


def test_movie_size_change_midstream(tmp_path, monkeypatch):
    """OpenCV's FFmpeg backend rescales such frames itself; a backend that does not must be refused."""

    class Changing:
        def __init__(self, *args):
            self.i = 0

        def isOpened(self):
            return True

        def get(self, prop):
            return 4.0

        def read(self, image=None):
            self.i += 1
            if self.i > 4:
                return False, None
            h = 20 if self.i < 3 else 10
            return True, np.zeros((h, 30, 3), np.uint8)

        def release(self):
            pass

    p = tmp_path / "changing.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    monkeypatch.setattr(cv2, "VideoCapture", Changing)
    with pytest.raises(ValueError, match=r"frame 2 has size 30×10 but frame 0 has 30×20"):
        read_volume(p, spacing=1)


@pytest.mark.parametrize("fourcc,ext", [("MJPG", ".avi"), ("mp4v", ".mp4"), ("mp4v", ".mkv")])
def test_movie_truncated(tmp_path, tmp_path_factory, fourcc, ext):
    """Cut in half: either the container can no longer be opened (MP4: index at the end) or fewer
    frames decode than it announces (AVI, MKV): both are a ValueError naming the file."""
    _need_codec(fourcc, ext, tmp_path_factory)
    full = tmp_path / f"full{ext}"
    assert _write_movie(full, _index_frames(40), fourcc)
    cut = tmp_path / f"cut{ext}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.(avi|mp4|mkv).*(truncated|cannot open)"):
        read_volume(cut, spacing=1)
    assert read_volume(full, spacing=1)[0].shape[0] == 40


def test_movie_html_page(tmp_path):
    p = tmp_path / "download.mp4"
    p.write_text("\n  <!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>gone</body></html>\n")
    with pytest.raises(ValueError, match=r"download\.mp4.*this looks like an HTML page, not a movie"):
        read_volume(p, spacing=1)
    p.write_text('<html lang="en">\n<body>login</body></html>')
    with pytest.raises(ValueError, match="HTML page"):
        read_volume(p, spacing=1)


def test_movie_text_empty_and_lfs(tmp_path):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.avi.*empty \(0 bytes\)"):
        read_volume(empty, spacing=1)
    lfs = tmp_path / "lfs.mp4"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ValueError, match="Git LFS pointer"):
        read_volume(lfs, spacing=1)
    junk = tmp_path / "junk.mov"
    junk.write_text("Access denied. Please try again later.\n")
    with pytest.raises(ValueError, match="text file, not a movie"):
        read_volume(junk, spacing=1)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=r"garbage\.mp4.*cannot open"):
        read_volume(garbage, spacing=1)


@pytest.mark.parametrize("fourcc,ext", [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_movie_zero_frames(tmp_path, tmp_path_factory, fourcc, ext):
    _need_codec(fourcc, ext, tmp_path_factory)
    p = tmp_path / f"zero{ext}"
    w = cv2.VideoWriter(str(p), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), 25.0, (32, 32), True)
    w.release()
    if not p.exists():
        pytest.skip("the writer leaves no file without frames")
    with pytest.raises(ValueError, match=rf"zero\{ext}.*(no decodable frames|cannot open)"):
        read_volume(p, spacing=1)


# --------------------------------------------------------------------------------------------------
# folders of slice images


def test_natural_key():
    names = ["slice10.png", "slice2.png", "Slice1.png", "slice002b.png", "slice100.png"]
    assert sorted(names, key=natural_key) == [
        "Slice1.png",
        "slice2.png",
        "slice002b.png",
        "slice10.png",
        "slice100.png",
    ]


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".jpg"])
def test_image_folder_natural_order(tmp_path, ext):
    n, h, w = 12, 10, 14
    order = list(range(1, n + 1))
    random.Random(1).shuffle(order)  # creation order must not matter
    for i in order:
        cv2.imwrite(str(tmp_path / f"slice{i}{ext}"), np.full((h, w), 20 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    before = _listing(tmp_path)
    vol, sp = read_volume(tmp_path, spacing=(2.0, 1.0, 0.5))
    assert _listing(tmp_path) == before
    assert sniff_kind(tmp_path) == "image_folder"
    assert vol.shape == (n, h, w) and vol.dtype == np.uint8 and sp == (2.0, 1.0, 0.5)
    np.testing.assert_allclose(vol[:, h // 2, w // 2], 20 * np.arange(1, n + 1), atol=2 if ext == ".jpg" else 0)


def test_image_folder_16bit_png_kept(tmp_path):
    vals = [300, 1000, 40000, 65535]
    for i, v in enumerate(vals):
        img = np.full((6, 8), v, np.uint16)
        img[0, 0] = i
        assert cv2.imwrite(str(tmp_path / f"s{i:02d}.png"), img)
    vol, _ = read_volume(tmp_path, spacing=1)
    assert vol.dtype == np.uint16 and vol.shape == (4, 6, 8)
    assert vol[:, 3, 3].tolist() == vals and vol[:, 0, 0].tolist() == [0, 1, 2, 3]


def test_image_folder_colour_slices(tmp_path):
    grey_bgr = cv2.cvtColor(np.full((6, 8), 77, np.uint8), cv2.COLOR_GRAY2BGR)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"g{i}.png"), grey_bgr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vol, _ = read_volume(tmp_path, spacing=1)
    assert vol.shape == (3, 6, 8) and np.all(vol == 77)
    red = np.zeros((6, 8, 4), np.uint8)
    red[..., 2] = 255
    red[..., 3] = 255  # alpha is dropped
    cv2.imwrite(str(tmp_path / "g3.png"), red)
    with pytest.warns(UserWarning, match="colour content"):
        vol, _ = read_volume(tmp_path, spacing=1)
    assert vol[3, 0, 0] == 76


def test_image_folder_refusals(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "s1.png"), np.zeros((6, 8), np.uint8))
    cv2.imwrite(str(mixed / "s2.png"), np.zeros((6, 9), np.uint8))
    with pytest.raises(ValueError, match=r"s2\.png: slice size 9×6 differs from s1\.png \(8×6\)"):
        read_volume(mixed, spacing=1)

    depth = tmp_path / "depth"
    depth.mkdir()
    cv2.imwrite(str(depth / "s1.png"), np.zeros((6, 8), np.uint8))
    cv2.imwrite(str(depth / "s2.png"), np.zeros((6, 8), np.uint16))
    with pytest.raises(ValueError, match="bit depth"):
        read_volume(depth, spacing=1)

    formats = tmp_path / "formats"
    formats.mkdir()
    cv2.imwrite(str(formats / "s1.png"), np.zeros((6, 8), np.uint8))
    cv2.imwrite(str(formats / "s2.jpg"), np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match=r"mixes image formats \(jpeg: 1, png: 1\)"):
        read_volume(formats, spacing=1)

    broken = tmp_path / "broken"
    broken.mkdir()
    cv2.imwrite(str(broken / "s1.png"), np.zeros((6, 8), np.uint8))
    (broken / "s2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"s2\.png: cannot decode"):
        read_volume(broken, spacing=1)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        read_volume(empty, spacing=1)
    (empty / "sub").mkdir()
    with pytest.raises(ValueError, match="only sub-folders: sub"):
        read_volume(empty, spacing=1)
    (empty / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no slice images"):
        read_volume(empty, spacing=1)


def test_image_folder_says_what_it_skipped(tmp_path):
    """Stray files, sub-folders and hidden files of a slice folder are named in one warning, as a
    DICOM folder's non-DICOM files are, and kept in the cube's read_notes; a clean folder says nothing."""
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"s{i}.png"), np.full((6, 8), 40 * i, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(folder, spacing=1)
    (folder / "notes.txt").write_text("scan notes")
    (folder / "Thumbs.db").write_bytes(b"\x00")
    (folder / ".DS_Store").write_bytes(b"\x00")
    (folder / "._s0.png").write_bytes(b"\x00")
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "s9.png"), np.zeros((6, 8), np.uint8))
    with pytest.warns(UserWarning, match="skipped") as rec:
        vol, _ = read_volume(folder, spacing=1)
    assert vol.shape == (4, 6, 8)
    (msg,) = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert msg.startswith(f"{folder}: skipped 2 file(s) that are not slice images")
    assert "notes.txt, Thumbs.db" in msg and "1 sub-folder(s), not read: sub/" in msg
    assert "2 hidden file(s) or folder(s): ._s0.png, .DS_Store" in msg
    with pytest.warns(UserWarning, match="skipped 2 file"):
        _, meta = cube_specimen(folder, spacing=(2.0, 1.0, 1.0), size=16)
    assert msg in meta["read_notes"]


# --------------------------------------------------------------------------------------------------
# TIFF


def test_tiff_imagej_spacing(tmp_path):
    vol = _vol(np.uint16)
    p = tmp_path / "stack.tif"
    # ImageJ: resolution in pixels per unit (x, y), z step in 'spacing'
    tifffile.imwrite(
        p, vol, imagej=True, resolution=(1 / 0.5, 1 / 0.75), metadata={"spacing": 2.5, "unit": "mm", "axes": "ZYX"}
    )
    out, sp = read_volume(p)
    assert sniff_kind(p) == "tiff"
    np.testing.assert_array_equal(out, vol)
    assert out.dtype == np.uint16
    np.testing.assert_allclose(sp, SPACING)

    um = tmp_path / "um.tif"
    tifffile.imwrite(
        um, vol, imagej=True, resolution=(2.0, 4.0), metadata={"spacing": 10.0, "unit": "micron", "axes": "ZYX"}
    )
    np.testing.assert_allclose(read_volume(um)[1], (0.01, 0.00025, 0.0005))


def test_tiff_ome_and_plain(tmp_path):
    vol = _vol(np.float32)
    ome = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        ome,
        vol,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeZ": 2.5,
            "PhysicalSizeY": 750.0,
            "PhysicalSizeX": 500.0,
            "PhysicalSizeZUnit": "mm",
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeXUnit": "µm",
        },
    )
    out, sp = read_volume(ome)
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_allclose(sp, SPACING)

    plain = tmp_path / "plain.tiff"
    tifffile.imwrite(plain, vol)
    with pytest.raises(ValueError, match="no voxel spacing"):
        read_volume(plain, allow_default_spacing=False)
    out, sp = read_volume(plain, spacing=SPACING)
    np.testing.assert_array_equal(out, vol)
    assert sp == SPACING

    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, vol[0])
    with pytest.raises(ValueError, match="one 2-D image"):
        read_volume(flat, spacing=1)


# --------------------------------------------------------------------------------------------------
# DICOM


def _dicom_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    z: float | None,
    series_uid: str,
    instance: int,
    slope=2.0,
    intercept=-1024.0,
    pixel_spacing=(0.75, 0.5),
    iop=(1, 0, 0, 0, 1, 0),
    shift=0.0,
    slice_thickness: float | None = 2.5,
    headers: dict | None = None,
) -> None:
    """One CT slice (16-bit, MONOCHROME2) at ``z`` mm along the slice normal of ``iop`` (None: no
    ImagePositionPatient/ImageOrientationPatient), shifted in-plane by ``shift`` mm along the columns'
    direction c, or by (mm along c, mm along r); ``headers``: further attributes, set last but the
    rescale and pixel ones. The tests' one writer of DICOM CT slices."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"series {series_uid[-3:]}"
    ds.InstanceNumber = instance
    if z is not None:
        ds.ImageOrientationPatient = [float(v) for v in iop]
        r, c = np.array(iop[:3], float), np.array(iop[3:], float)
        along_c, along_r = (shift, 0.0) if np.isscalar(shift) else shift
        ds.ImagePositionPatient = [
            float(v) for v in (-10.0, -20.0, 0.0) + z * np.cross(r, c) + along_c * c + along_r * r
        ]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if slice_thickness is not None:
        ds.SliceThickness = slice_thickness
    for name, value in (headers or {}).items():
        setattr(ds, name, value)
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.asarray(pixels).astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def _dicom_series(folder: Path, vol: np.ndarray, uid: str, zs, *, names=None, shifts=None, **kw) -> None:
    folder.mkdir(exist_ok=True)
    names = names or [f"{uid[-3:]}_{i}.dcm" for i in range(len(vol))]
    shifts = shifts if shifts is not None else [0.0] * len(vol)
    for k, (img, z, name, sh) in enumerate(zip(vol, zs, names, shifts)):
        _dicom_slice(folder / name, img, z=z, series_uid=uid, instance=k + 1, shift=sh, **kw)


@pytest.mark.parametrize("iop", [(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1)])
def test_dicom_series_sorted_by_position(tmp_path, iop):
    vol = _vol(np.uint16)  # (5, 7, 9): 7 rows, 9 columns
    zs = 30.0 + 2.5 * np.arange(5)
    names = [f"IMG{n:04d}" for n in random.Random(3).sample(range(1000), 5)]  # no suffix, shuffled
    folder = tmp_path / "series"
    _dicom_series(folder, vol, "1.2.3.4.5.100", zs, names=names, iop=iop)
    (folder / "README.txt").write_text("export notes")
    (folder / "old").mkdir()
    before = _listing(folder)
    with pytest.warns(UserWarning, match=r"skipped 1 file.*README\.txt; 1 sub-folder\(s\), not read: old/"):
        out, sp = read_volume(folder)
    assert _listing(folder) == before
    assert sniff_kind(folder) == "dicom"
    assert out.dtype == np.float32 and out.shape == SHAPE
    np.testing.assert_array_equal(out, vol.astype(np.float32) * 2.0 - 1024.0)
    np.testing.assert_allclose(sp, SPACING)


def test_dicom_reversed_positions_and_per_slice_rescale(tmp_path):
    vol = _vol(np.uint16)
    folder = tmp_path / "s"
    folder.mkdir()
    for k in range(5):  # file k holds slice k but sits at decreasing z: sorting reverses the files
        _dicom_slice(
            folder / f"f{k}.dcm",
            vol[k],
            z=100.0 - 2.5 * k,
            series_uid="1.2.9",
            instance=k,
            slope=1.0 + k,
            intercept=float(-k),
        )
    out, sp = read_volume(folder)
    expect = np.stack([vol[k] * (1.0 + k) - k for k in range(5)])[::-1]
    np.testing.assert_allclose(out, expect)
    np.testing.assert_allclose(sp, SPACING)
    assert read_volume(folder, spacing=1.0)[1] == (1.0, 1.0, 1.0)  # spacing= overrides the file


def test_dicom_refusals(tmp_path):
    vol = _vol(np.uint16)
    two = tmp_path / "two"
    _dicom_series(two, vol, "1.2.3.4.5.111", 2.5 * np.arange(5))
    _dicom_series(two, vol[:3], "1.2.3.4.5.222", 2.5 * np.arange(3))
    with pytest.raises(ValueError, match=r"mixes 2 DICOM series") as exc:
        read_volume(two)
    assert "1.2.3.4.5.111: 5 file(s)" in str(exc.value) and "1.2.3.4.5.222: 3 file(s)" in str(exc.value)

    dup = tmp_path / "dup"
    _dicom_series(dup, vol, "1.2.8", [0.0, 2.5, 2.5, 5.0, 7.5])
    with pytest.raises(ValueError, match="same position"):
        read_volume(dup)

    single = tmp_path / "single"
    _dicom_series(single, vol[:1], "1.2.6", [0.0])
    with pytest.raises(ValueError, match="pass the folder"):
        read_volume(next(single.iterdir()))


# --------------------------------------------------------------------------------------------------
# NRRD


def test_nrrd_roundtrip_spacings_and_directions(tmp_path):
    vol = _vol(np.int16)
    p = tmp_path / "v.nrrd"
    nrrd.write(str(p), vol, {"spacings": list(SPACING[::-1])}, index_order="C")
    out, sp = read_volume(p)
    assert sniff_kind(p) == "nrrd"
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_allclose(sp, SPACING)

    q = tmp_path / "d.nhdr"  # detached header, space directions (fastest axis = x first)
    header = {"space": "left-posterior-superior", "space directions": np.diag(SPACING[::-1]), "space units": ["mm"] * 3}
    nrrd.write(str(q), vol, header, index_order="C", detached_header=True)
    out, sp = read_volume(q)
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_allclose(sp, SPACING)

    um = tmp_path / "um.nrrd"
    nrrd.write(
        str(um),
        vol,
        {
            "space": "left-posterior-superior",
            "space directions": np.diag([500.0, 750.0, 2500.0]),
            "space units": ["um"] * 3,
        },
        index_order="C",
    )
    np.testing.assert_allclose(read_volume(um)[1], SPACING)

    bare = tmp_path / "bare.nrrd"
    nrrd.write(str(bare), vol, index_order="C")
    with pytest.raises(ValueError, match="no voxel spacing"):
        read_volume(bare, allow_default_spacing=False)


@pytest.mark.parametrize("style", ["pattern", "list"])
def test_nrrd_multi_file(tmp_path, style):
    vol = _vol(np.uint16)
    for k, sl in enumerate(vol):
        sl.astype("<u2").tofile(tmp_path / f"part.{k + 1:03d}")
    data_file = "part.%03d 1 5 1" if style == "pattern" else "LIST\n" + "\n".join(f"part.{k + 1:03d}" for k in range(5))
    (tmp_path / "multi.nhdr").write_text(
        "NRRD0004\n# multi-file\ndimension: 3\nsizes: 9 7 5\nspacings: 0.5 0.75 2.5\n"
        f"type: unsigned short\nendian: little\nencoding: raw\ndata file: {data_file}\n"
    )
    out, sp = read_volume(tmp_path / "multi.nhdr")
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_allclose(sp, SPACING)
    (tmp_path / "part.004").unlink()
    with pytest.raises(ValueError, match=r"part\.004"):
        read_volume(tmp_path / "multi.nhdr")


# --------------------------------------------------------------------------------------------------
# NIfTI


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_roundtrip_axis_order(tmp_path, name):
    vol = _vol(np.int16)  # (z, y, x)
    img = nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag(list(SPACING[::-1]) + [1.0]))  # nibabel: (x, y, z)
    img.header.set_xyzt_units("mm")
    p = tmp_path / name
    nib.save(img, str(p))
    out, sp = read_volume(p)
    assert sniff_kind(p) == "nifti"
    assert out.shape == SHAPE and out.dtype == np.int16 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, vol)
    np.testing.assert_allclose(sp, SPACING)


def test_nifti_scaled_and_units(tmp_path):
    vol = _vol(np.int16)
    img = nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([0.5, 0.75, 2.5, 1.0]))
    img.header.set_slope_inter(0.5, -10.0)
    img.header.set_xyzt_units("micron")
    p = tmp_path / "s.nii"
    nib.save(img, str(p))
    out, sp = read_volume(p)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, vol * 0.5 - 10.0)
    np.testing.assert_allclose(sp, np.array(SPACING) * 1e-3)


# --------------------------------------------------------------------------------------------------
# NumPy, spacing validation, sniffing


def test_npy_and_npz(tmp_path):
    vol = _vol(np.float32)
    np.save(tmp_path / "v.npy", vol)
    with pytest.raises(ValueError, match=r"v\.npy.*no voxel spacing"):
        read_volume(tmp_path / "v.npy", allow_default_spacing=False)
    with pytest.warns(UserWarning, match="using 1.0 mm"):
        out, sp = read_volume(tmp_path / "v.npy", allow_default_spacing=True)
    np.testing.assert_array_equal(out, vol)
    assert sp == (1.0, 1.0, 1.0)
    assert read_volume(tmp_path / "v.npy", spacing=SPACING)[1] == SPACING

    np.savez(tmp_path / "named.npz", volume=vol, spacing=np.array(SPACING), other=np.zeros(3))
    out, sp = read_volume(tmp_path / "named.npz")
    np.testing.assert_array_equal(out, vol)
    assert sp == SPACING
    assert read_volume(tmp_path / "named.npz", spacing=1.5)[1] == (1.5, 1.5, 1.5)  # override wins

    np.savez_compressed(tmp_path / "only.npz", vol)
    np.testing.assert_array_equal(read_volume(tmp_path / "only.npz", spacing=1)[0], vol)

    np.savez(tmp_path / "many.npz", a=vol, b=vol)
    with pytest.raises(ValueError, match="name the volume 'volume'"):
        read_volume(tmp_path / "many.npz", spacing=1)

    np.save(tmp_path / "flat.npy", vol[0])
    with pytest.raises(ValueError, match="expected a 3-D volume"):
        read_volume(tmp_path / "flat.npy", spacing=1)


def test_spacing_validation(tmp_path):
    assert check_spacing(2) == (2.0, 2.0, 2.0)
    assert check_spacing([1, 2, 3.5]) == (1.0, 2.0, 3.5)
    assert check_spacing(np.array([1.0, 2.0, 3.0])) == (1.0, 2.0, 3.0)
    for bad in (0, -1, float("nan"), float("inf"), (1, 2), (1, 2, 0), (1, 2, "x"), True, "abc"):
        with pytest.raises(ValueError, match="spacing"):
            check_spacing(bad)
    np.save(tmp_path / "v.npy", _vol())
    with pytest.raises(ValueError, match="spacing"):
        read_volume(tmp_path / "v.npy", spacing=(1.0, -2.0, 1.0))


def test_sniff_and_bad_paths(tmp_path):
    assert SOURCE_KINDS == ("movie", "image_folder", "tiff", "dicom", "nrrd", "nifti", "npy")
    with pytest.raises(ValueError, match=r"nope\.mp4: no such file"):
        read_volume(tmp_path / "nope.mp4", spacing=1)
    (tmp_path / "v.xyz").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match=r"v\.xyz: unknown file type '\.xyz'"):
        read_volume(tmp_path / "v.xyz", spacing=1)
    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="single 2-D image is not a volume"):
        read_volume(tmp_path / "one.png", spacing=1)
    np.save(tmp_path / "nosuffix.npy", _vol())
    os.rename(tmp_path / "nosuffix.npy", tmp_path / "nosuffix")
    assert sniff_kind(tmp_path / "nosuffix") == "npy"
    (tmp_path / "page.nii").write_text("<!doctype html><html></html>")
    with pytest.raises(ValueError, match="HTML page, not a NIfTI"):
        read_volume(tmp_path / "page.nii", spacing=1)


# --------------------------------------------------------------------------------------------------
# real data (../shared/data; skipped where absent)


def test_real_headsq_nhdr(shared_data):
    folder = shared_data / "real" / "vtk-headsq"
    vol, sp = read_volume(folder / "quarter.nhdr")
    assert vol.shape == (93, 64, 64)
    np.testing.assert_allclose(sp, (1.5, 3.2, 3.2))
    # read_volume returns the values as stored; the 15-bit mask is the data's own convention
    masked = vol.astype(np.uint16) & 0x7FFF
    raw = np.stack([np.fromfile(folder / f"quarter.{k}", "<u2").reshape(64, 64) for k in range(1, 94)]) & 0x7FFF
    np.testing.assert_array_equal(masked, raw)
    assert 3000 < masked.max() < 4096


@pytest.fixture(scope="module")
def cthead(shared_data):
    vol, sp = read_volume(shared_data / "real" / "cthead-8bit", spacing=(2.0, 1.0, 1.0))
    return vol, sp, shared_data / "real" / "cthead-8bit"


def test_real_cthead_folder(cthead):
    vol, sp, folder = cthead
    assert vol.shape == (99, 256, 256) and vol.dtype == np.uint8 and sp == (2.0, 1.0, 1.0)
    for k in (1, 10, 99):
        img = cv2.imread(str(folder / f"cthead-8bit{k:03d}.bmp"), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(vol[k - 1], img)
    with pytest.raises(ValueError, match="no voxel spacing"):
        read_volume(folder, allow_default_spacing=False)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# measured with opencv-python-headless 5.0.0 (FFmpeg 8): mp4v 40.2 dB, MJPG 43.4 dB, FFV1 lossless
@pytest.mark.parametrize(
    "fourcc,ext,min_psnr", [("mp4v", ".mp4", 36.0), ("MJPG", ".avi", 39.0), ("FFV1", ".mkv", float("inf"))]
)
def test_real_cthead_movie_psnr(cthead, tmp_path, tmp_path_factory, fourcc, ext, min_psnr):
    _need_codec(fourcc, ext, tmp_path_factory)
    vol, _, _ = cthead
    p = tmp_path / f"cthead{ext}"
    assert _write_movie(p, vol, fourcc)
    out, sp = read_volume(p, spacing=(2.0, 1.0, 1.0))
    assert out.shape == vol.shape and out.dtype == np.uint8 and sp == (2.0, 1.0, 1.0)
    assert _psnr(out, vol) >= min_psnr
    # slice order: each decoded slice is closest to its own original
    err = [np.abs(out[k].astype(int) - vol[[max(k - 1, 0), k, min(k + 1, 98)]]).mean(axis=(1, 2)) for k in (20, 50, 80)]
    assert all(e.argmin() == 1 for e in err)


def test_tiff_compressed_without_imagecodecs(tmp_path):
    """OpenCV writes LZW TIFF; tifffile needs the optional imagecodecs for it, OpenCV reads it back."""
    vol = _vol(np.uint16)
    p = tmp_path / "lzw.tif"
    assert cv2.imwritemulti(str(p), list(vol))
    out, sp = read_volume(p, spacing=SPACING)
    np.testing.assert_array_equal(out, vol)
    folder = tmp_path / "slices"
    folder.mkdir()
    for k, sl in enumerate(vol):
        cv2.imwrite(str(folder / f"s{k}.tiff"), sl)
    np.testing.assert_array_equal(read_volume(folder, spacing=1)[0], vol)


def test_dicom_multiframe_file(tmp_path):
    """One enhanced (multi-frame) file: per-frame positions, shared pixel measures and rescale."""
    vol = _vol(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = "1.2.3.77"
    ds.Modality = "CT"
    ds.NumberOfFrames = 5
    ds.Rows, ds.Columns = vol.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures, orient, pvt = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [0.75, 0.5]
    orient.ImageOrientationPatient = [1.0, 0, 0, 0, 1.0, 0]
    pvt.RescaleSlope, pvt.RescaleIntercept = 1.0, -1000.0
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelValueTransformationSequence = Sequence([pvt])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    order = [3, 0, 4, 1, 2]  # stored frame k lies at z = 2.5 * order[k]
    frames = []
    for k in order:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        item.PlanePositionSequence = Sequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = vol[order].astype("<u2").tobytes()
    p = tmp_path / "enhanced.dcm"
    ds.save_as(p, enforce_file_format=True)
    out, sp = read_volume(p)
    np.testing.assert_array_equal(out, vol.astype(np.float32) - 1000.0)
    np.testing.assert_allclose(sp, SPACING)


def test_dicom_uneven_gaps_resampled_and_gantry_tilt_desheared(tmp_path):
    """Clinical series as dcm2niix reads them: uneven slice gaps resampled to uniform steps of the
    median gap (linear along the normal), sheared (tilted-gantry) slices shifted back; the original
    geometry in a warning. The real case: ../shared/data/real/ge-head-tilted (18.5°)."""
    zs = [0.0, 2.5, 5.0, 10.0, 12.5]
    ramp = np.stack([np.full((7, 9), 100 + 10 * z, np.uint16) for z in zs])  # value = 100 + 10 z
    gap = tmp_path / "gap"
    _dicom_series(gap, ramp, "1.2.7", zs, slope=1.0, intercept=0.0)
    with pytest.warns(UserWarning, match=r"slice gaps 2.500 … 5.000 mm resampled to 2.5000 mm \(6 slices\)"):
        v, sp = read_volume(gap)
    assert v.shape == (6, 7, 9) and sp[0] == pytest.approx(2.5)
    np.testing.assert_allclose(v[:, 0, 0], 100 + 10 * 2.5 * np.arange(6), rtol=1e-6)  # 7.5 mm interpolated

    # a blob fixed in space; each slice's position moves by 0.6 mm per mm along the column direction
    zs = 2.0 * np.arange(6)
    shifts = 0.3 * zs  # mm along c (rows): the tilt
    stack = np.zeros((6, 40, 12), np.uint16)
    for k, b in enumerate(shifts):
        row = (15.0 - b) / 0.75  # the blob at 15 mm along c, in slice k's own rows (PixelSpacing 0.75)
        stack[k, int(round(row)) - 1 : int(round(row)) + 2, 4:8] = 1000
    tilt = tmp_path / "tilt"
    _dicom_series(tilt, stack, "1.2.9", zs, shifts=shifts, slope=1.0, intercept=0.0)
    with pytest.warns(UserWarning, match=r"de-sheared \(gantry tilt"):
        v, _ = read_volume(tilt)
    rows = [float((v[k].sum(axis=1) * np.arange(40)).sum() / v[k].sum()) for k in range(6)]
    assert max(rows) - min(rows) < 1.0  # one row everywhere: de-sheared
    assert abs(rows[0] - 20.0) < 1.0


def test_dicom_missing_slices_refused(tmp_path):
    """A gap of more than 2.5 times the local slice step (the median gap before and after it) is
    missing slices: a ValueError naming the two slices, the gap and the count, not an interpolation.
    A change of slice thickness (2.5 mm, then 10 mm) and one dropped slice (twice the step) read."""
    vol = np.zeros((12, 7, 9), np.uint16)
    zs = list(2.5 * np.arange(12))
    folder = tmp_path / "missing"
    _dicom_series(folder, vol, "1.2.11", zs, names=[f"{k + 1:02d}.dcm" for k in range(12)])
    for k in (5, 6, 7, 8):  # 06.dcm … 09.dcm: four slices, 12.5 mm
        (folder / f"{k + 1:02d}.dcm").unlink()
    with pytest.raises(ValueError, match="missing between 05.dcm and 10.dcm") as exc:
        read_volume(folder)
    msg = str(exc.value)
    assert "(10.00 and 22.50 mm from the first slice" in msg and "a 12.50 mm gap, 5.0× the local slice step" in msg
    assert "(2.50 mm before, 2.50 mm after)" in msg and "about 4 slice(s) missing" in msg
    assert "InstanceNumber jumps from 5 to 10" in msg and "a folder of its own" in msg

    thick = tmp_path / "thick"  # 2.5 mm then 10 mm slices: the 10 mm gaps are the local step after
    zs = [0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0]
    _dicom_series(thick, np.zeros((12, 7, 9), np.uint16), "1.2.3.12", zs, names=[f"t{k}.dcm" for k in range(12)])
    with pytest.warns(UserWarning, match=r"slice gaps 2.500 … 10.000 mm resampled to 2.5000 mm \(27 slices\)"):
        assert read_volume(thick)[0].shape == (27, 7, 9)
    (thick / "t9.dcm").unlink()  # 35 → 55 mm: 2× the step
    with pytest.warns(UserWarning, match="resampled"):
        read_volume(thick)
    (thick / "t10.dcm").unlink()  # 35 → 65 mm: 3× the step
    with pytest.raises(ValueError, match=r"a 30.00 mm gap, 3.0× the local slice step \(10.00 mm before\), about 2 "):
        read_volume(thick)


def test_dicom_mixed_pixel_spacing_refused(tmp_path):
    """One series, one PixelSpacing: a slice at another spacing is a ValueError listing the values and
    the files; float noise (relative 1e-5) is the same spacing."""
    vol = _vol(np.uint16)
    folder = tmp_path / "ps"
    _dicom_series(folder, vol[:4], "1.2.13", 2.5 * np.arange(4), names=[f"{k}.dcm" for k in range(4)])
    _dicom_slice(folder / "4.dcm", vol[4], z=10.0, series_uid="1.2.13", instance=5, pixel_spacing=(0.750006, 0.5))
    out, sp = read_volume(folder)
    assert out.shape == SHAPE and sp[1:] == pytest.approx((0.75, 0.5))
    _dicom_slice(folder / "2.dcm", vol[2], z=5.0, series_uid="1.2.13", instance=3, pixel_spacing=(0.6, 0.6))
    with pytest.raises(ValueError, match="mixes 2 PixelSpacing values") as exc:
        read_volume(folder)
    assert "0.75 × 0.5 mm: 4 slice(s), 0.dcm, 1.dcm, 3.dcm …" in str(exc.value)
    assert "0.6 × 0.6 mm: 1 slice(s), 2.dcm" in str(exc.value)


def test_real_tilted_series_with_a_missing_block(shared_data, tmp_path):
    """The reviewer's case: ge-head-tilted without 10.dcm … 22.dcm leaves a 77 mm gap (half the head)
    between 09.dcm and 23.dcm: refused, where the whole series (gaps 1.1 … 7.0 mm) reads."""
    folder = shared_data / "real" / "ge-head-tilted"
    if not folder.is_dir():
        pytest.skip("needs ../shared/data/real/ge-head-tilted")
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in folder.glob("*.dcm"):
        if not 10 <= int(f.stem) <= 22:
            (cut / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match=r"between 09\.dcm and 23\.dcm .*a 77\.08 mm gap.*from 9 to 23"):
        read_volume(cut)


def test_real_tilted_clinical_series(shared_data):
    folder = shared_data / "real" / "ge-head-tilted"
    if not folder.is_dir():
        pytest.skip("needs ../shared/data/real/ge-head-tilted")
    with pytest.warns(UserWarning, match=r"tilt 18\.5°"):
        v, sp = read_volume(folder)
    assert v.shape[1:] == (512, 512) and sp[1] == pytest.approx(0.4882812)


def test_cube_record_keeps_the_original_geometry(shared_data):
    folder = shared_data / "real" / "ge-head-tilted"
    if not folder.is_dir():
        pytest.skip("needs ../shared/data/real/ge-head-tilted")
    with pytest.warns(UserWarning):
        _, meta = cube_specimen(folder, size=32, window="hu-bone")
    assert any("tilt 18.5°" in n and "original slice positions" in n for n in meta["read_notes"])
