"""Inference on real radiographs: model.infer (read, polarity, gamma, square, network, fusion, files)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
import tifffile
import torch
from PIL import Image, ImageOps
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from torch import nn

import model.infer as infer
import model.infer_outputs as infer_outputs
from model.cli import main
from model.fusion import opacity_max, render_view, upsample_lateral
from model.infer import (
    bench_infer,
    detect_polarity,
    fold_batchnorm,
    infer_file,
    load_model,
    predict_volume,
    prepare_xray,
    read_xray,
)
from model.network import NetworkConfig, TomographyNet
from model.ood import field_fill, reference_from_features, xray_features
from model.predict import _network_input
from model.train import TrainConfig, save_checkpoint
from model.volume_io import PREVIEWS as INFER_PREVIEWS
from model.volume_io import write_volume
from model.xray import FIELD_FILL
from model.xray_files import polarity_header
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import render_xrays
from tomodata.views import hemisphere_views

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)
PREVIEWS = ("xray", "coronal", "axial", "sagittal", "mip_depth", "mip_side")
REAL = ("00000001_000.png", "00027426_000.png")


def test_preview_names():
    assert INFER_PREVIEWS == PREVIEWS  # the workflow's real_xray rule lists these files


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)


def _save(path: Path, net: NetworkConfig, *, data=None, seed: int = 0, model=None) -> Path:
    torch.manual_seed(seed)
    model = model if model is not None else TomographyNet(net)
    _randomise_bn(model, seed)
    opt = torch.optim.Adam(model.parameters())
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return save_checkpoint(
        path,
        model=model,
        optimizer=opt,
        scheduler=sch,
        step=2,
        net=net,
        cfg=TrainConfig(),
        data={"chi": 10.0} if data is None else data,
    )


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny networks: one thread avoids OpenMP barrier stalls on a loaded 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", TINY)


def _phantom(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An x-ray-like opacity image: dense blobs on a dark (air) background, values in [0, 0.9]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    for _ in range(6):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        s = rng.uniform(0.06, 0.15) * min(h, w)
        img += rng.uniform(0.5, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return 0.9 * (1 - np.exp(-img))


def _png(path: Path, img) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _read_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(D, H, W) array and (z, y, x) spacing read back with pynrrd / nibabel."""
    name = path.name
    if name.endswith(".nrrd"):
        data, header = nrrd.read(str(path), index_order="C")
        sd = np.asarray(header["space directions"], float)
        return data, (sd[2, 2], sd[1, 1], sd[0, 0])
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).transpose(2, 1, 0)
    zx, zy, zz = img.header.get_zooms()
    return data, (float(zz), float(zy), float(zx))


def _write_dicom(
    path: Path,
    stored: np.ndarray,
    *,
    photometric="MONOCHROME2",
    bits=12,
    spacing=None,
    key="ImagerPixelSpacing",
    slope=None,
    intercept=None,
    extra=None,
) -> Path:
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    if photometric:  # None: left out (a malformed file)
        ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if spacing is not None:
        setattr(ds, key, [f"{spacing[0]:g}", f"{spacing[1]:g}"])
    if slope is not None:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------------
# the real radiographs, end to end


@pytest.mark.parametrize("name,suffix", [(REAL[0], ".nrrd"), (REAL[1], ".nii.gz"), (REAL[0], ".nii")])
def test_real_radiographs_end_to_end(shared_data, ckpt, tmp_path, name, suffix):
    src = shared_data / "real" / "xray" / name
    out = tmp_path / "res" / f"vol{suffix}"
    # chest films: body fills the field, dark textured lungs, bright smooth abdomen: the skull cues and
    # the air at the border disagree, so "auto" asks instead of guessing; these files are bone bright
    with pytest.raises(ValueError, match="pass --polarity keep"):
        infer_file(src, ckpt, tmp_path / "auto" / f"vol{suffix}")
    assert not (tmp_path / "auto").exists() or not any((tmp_path / "auto").iterdir())
    rec = infer_file(
        src, ckpt, out, polarity="keep", square="crop"
    )  # the film as it is: the field rule has its own tests
    stem = "vol"
    # the volume: shape (D, H, W) = (16, 512, 512); lateral spacing 1 (unknown), depth = 512 / 16
    vol, spacing = _read_volume(out)
    assert vol.shape == (16, 512, 512) and vol.dtype == np.float32
    assert spacing == pytest.approx((32.0, 1.0, 1.0))
    assert rec["output"]["spacing_zyx"] == pytest.approx([32.0, 1.0, 1.0])
    assert rec["output"]["spacing_unit"].startswith("input pixel")
    assert float(vol.min()) >= 0.0 and float(vol.max()) <= 1.0
    # polarity: kept as told; the detector never said "invert" for them
    assert rec["polarity"]["inverted"] is False and rec["polarity"]["detected"]["invert"] is None
    # fusion's property at the input's resolution: the volume re-renders to the prepared x-ray
    x = cv2.imread(str(src), cv2.IMREAD_UNCHANGED) / 255.0
    err = np.abs(render_view(vol, chi=10.0) - np.minimum(x, 1 - math.exp(-10)))
    assert float(err.max()) < 1e-3
    assert rec["fusion"]["rerender_max_abs_error"] < 1e-3
    # previews and the record
    for p in PREVIEWS:
        f = out.parent / f"{stem}_{p}.png"
        im = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        assert im is not None and im.dtype == np.uint8 and im.ndim == 2, f
    xr = cv2.imread(str(out.parent / f"{stem}_xray.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(xr.astype(int) - cv2.imread(str(src), cv2.IMREAD_UNCHANGED).astype(int)).max() <= 1
    saved = json.loads((out.parent / f"{stem}.json").read_text())
    assert saved == json.loads(json.dumps(rec))
    assert saved["checkpoint"]["network"] == TINY.to_dict()
    assert saved["sizes"]["output_dhw"] == [16, 512, 512] and saved["sizes"]["network_input"] == 32
    assert saved["fusion"]["chi"] == 10.0 and saved["fusion"]["chi_source"] == "checkpoint data"
    assert set(saved["timing"]) >= {"read_s", "network_s", "volume_s", "total_s"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_cli_names_a_missing_checkpoint_before_the_films_polarity(shared_data, tmp_path, capsys):
    """The checkpoint is checked first: a film whose polarity needs --polarity does not hide it."""
    film = shared_data / "real" / "xray" / REAL[0]  # a chest film: auto polarity refuses (see above)
    assert main(["infer", str(film), "--checkpoint", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "v.nrrd")]) == 2
    err = capsys.readouterr().err
    assert "nope.pt does not exist" in err and "polarity" not in err


def test_inverted_real_radiograph_is_detected_and_flipped(shared_data, ckpt, tmp_path):
    x = cv2.imread(str(shared_data / "real" / "xray" / REAL[1]), cv2.IMREAD_UNCHANGED)
    src = _png(tmp_path / "negative.png", 255 - x)
    with pytest.raises(ValueError, match="--polarity invert"):  # a chest film: no guess (see above)
        infer_file(src, ckpt, tmp_path / "o" / "v.nrrd", previews=False)
    rec = infer_file(src, ckpt, tmp_path / "o" / "v.nrrd", previews=False, polarity="invert")
    assert rec["polarity"]["inverted"] is True
    vol, _ = _read_volume(tmp_path / "o" / "v.nrrd")
    assert np.abs(render_view(vol) - np.minimum(x / 255.0, 1 - math.exp(-10))).max() < 1e-3
    rec = infer_file(src, ckpt, tmp_path / "o2" / "v.nrrd", previews=False, polarity="keep")
    assert rec["polarity"]["inverted"] is False and rec["polarity"]["detected"]["invert"] is None


# --------------------------------------------------------------------------------------------------
# reading


def test_16bit_png_is_scaled_by_its_bits(tmp_path):
    x = _phantom(40, 48)
    full = np.rint(x / 0.9 * 65535).astype(np.uint16)
    img, info = read_xray(_png(tmp_path / "a.png", full))
    assert info["dtype"] == "uint16" and info["bits_used"] == 16
    np.testing.assert_allclose(img, full / 65535.0, atol=1e-12)
    twelve = np.rint(x / 0.9 * 4095).astype(np.uint16)  # 12-bit data in a 16-bit container
    img, info = read_xray(_png(tmp_path / "b.png", twelve))
    assert info["bits_used"] == 12
    np.testing.assert_allclose(img, twelve / 4095.0, atol=1e-12)
    eight = np.rint(x / 0.9 * 255).astype(np.uint16)  # an 8-bit image saved as 16-bit: not 4x darker
    img, info = read_xray(_png(tmp_path / "c.png", eight))
    assert info["bits_used"] == 8
    np.testing.assert_allclose(img, eight / 255.0, atol=1e-12)


def test_air_subtract_makes_grey_air_black():
    """A display offset (air at 0.25): --air subtract takes the air's level off and stretches the rest
    back, so the film is the offset-free one; keep leaves it (both record the level)."""
    x = _phantom(64, 64)
    grey = 0.25 + 0.75 * x
    ref, rec0 = prepare_xray(x, polarity="keep", square="crop")
    kept, rec1 = prepare_xray(grey, polarity="keep", square="crop")
    sub, rec2 = prepare_xray(grey, polarity="keep", square="crop", air="subtract")
    assert rec1["air"] == {"mode": "keep", "level": pytest.approx(0.25 + 0.75 * rec0["background"]["value"])}
    assert rec2["air"]["mode"] == "subtract" and rec2["background"]["value"] == 0.0
    assert np.abs(kept - ref).max() > 0.2 and np.abs(sub - ref).max() < 0.02
    with pytest.raises(ValueError, match="air"):
        prepare_xray(x, air="remove")


def test_dicom_whose_bits_stored_overstate_the_data_is_scaled_by_its_values(tmp_path):
    x = _phantom(40, 48)
    twelve = np.rint(x / 0.9 * 4095).astype(np.uint16)
    with pytest.warns(UserWarning, match="BitsStored is 16 but the values reach .* scaled as 12-bit"):
        img, info = read_xray(_write_dicom(tmp_path / "a.dcm", twelve, bits=16))
    np.testing.assert_allclose(img, twelve / 4095.0, atol=1e-12)
    assert "scaled as 12-bit" in info["bits_stored_not_used"]
    full = np.rint(x / 0.9 * 65535).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, info = read_xray(_write_dicom(tmp_path / "b.dcm", full, bits=16))
    np.testing.assert_allclose(img, full / 65535.0, atol=1e-12)


def test_rgb_that_is_grey_reads_as_grey_and_colour_warns(tmp_path):
    g = _u8(_phantom(48, 48))
    grey, _ = read_xray(_png(tmp_path / "g.png", g))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb, info = read_xray(_png(tmp_path / "rgb.png", np.dstack([g, g, g])))
    assert info["channels"] == 3 and "mean of the channels" in info["grey_rule"]
    np.testing.assert_allclose(rgb, grey, atol=1e-12)
    col = np.dstack([g, np.zeros_like(g), 255 - g])  # BGR on disk: B = g, R = 255 - g
    with pytest.warns(UserWarning, match="BT.601"):
        img, info = read_xray(_png(tmp_path / "c.png", col))
    np.testing.assert_allclose(img, (0.114 * g + 0.299 * (255.0 - g)) / 255.0, atol=1e-9)


def test_rgba_alpha_is_ignored_unless_it_masks(tmp_path):
    g = _u8(_phantom(48, 48))
    bgra = np.dstack([g, g, g, np.full_like(g, 255)])
    img, info = read_xray(_png(tmp_path / "a.png", bgra))
    assert info["alpha_mask"] is None and "ignored" in info["alpha"]
    np.testing.assert_allclose(img, g / 255.0, atol=1e-12)
    bgra[:6, :6, 3] = 0  # a fully transparent corner: masked
    bgra[:6, :6, :3] = 255  # whatever colour it has underneath
    img, info = read_xray(_png(tmp_path / "b.png", bgra))
    mask = info["alpha_mask"]
    assert mask is not None and int(mask.sum()) == 36
    sq, rec = prepare_xray(img, mask=mask, square="crop")  # the film as it is: the field rule has its own tests
    assert np.all(sq[:6, :6] == rec["background"]["value"])
    assert rec["background"]["value"] < 0.05  # the air around the phantom, not the white corner
    np.testing.assert_allclose(sq[6:, 6:], g[6:, 6:] / 255.0, atol=1e-12)


def test_dicom_monochrome1_is_inverted_and_spacing_is_read(tmp_path, ckpt):
    x = _phantom(64, 64)
    stored = np.rint(x * 4095).astype(np.uint16)
    img2, info2 = read_xray(_write_dicom(tmp_path / "m2.dcm", stored, spacing=(0.25, 0.25)))
    np.testing.assert_allclose(img2, stored / 4095.0, atol=1e-12)
    assert info2["pixel_spacing_mm"] == [0.25, 0.25] and "ImagerPixelSpacing" in info2["pixel_spacing_source"]
    # MONOCHROME1: stored = 4095 − displayed; read_xray inverts it back
    path = _write_dicom(
        tmp_path / "noext", 4095 - stored, photometric="MONOCHROME1", spacing=(0.5, 0.5), key="PixelSpacing"
    )
    img1, info1 = read_xray(path)
    assert info1["format"] == "DICOM" and info1["photometric"] == "MONOCHROME1" and "monochrome1" in info1
    np.testing.assert_allclose(img1, stored / 4095.0, atol=1e-12)
    # the volume carries the pixel spacing: lateral 0.5 mm, depth 64 * 0.5 / 16 = 2 mm
    out = tmp_path / "o" / "v.nrrd"
    rec = infer_file(
        path, ckpt, out, previews=False, square="crop"
    )  # the film as it is: the field rule has its own tests
    assert rec["polarity"]["inverted"] is False
    vol, spacing = _read_volume(out)
    assert vol.shape == (16, 64, 64) and spacing == pytest.approx((2.0, 0.5, 0.5))
    assert rec["output"]["spacing_unit"] == "mm"
    assert nrrd.read_header(str(out))["space units"] == ["mm", "mm", "mm"]
    # rescale slope/intercept are applied before the bits range
    img3, _ = read_xray(_write_dicom(tmp_path / "r.dcm", stored, slope=2, intercept=-100))
    np.testing.assert_allclose(img3, stored / 4095.0, atol=1e-12)


def test_dicom_presentation_lut_magnification_and_tiff_min_is_white(tmp_path):
    """As displayed: MONOCHROME2 with PresentationLUTShape INVERSE is inverted (MONOCHROME1 with
    INVERSE once, not twice: the DX IOD pairs them); ImagerPixelSpacing is divided by the estimated
    magnification, or named as the detector's; a MinIsWhite TIFF is inverted; only a grey DICOM's
    photometric interpretation is a polarity statement (an RGB one is not)."""
    x = _phantom(64, 64)
    stored = np.rint(x * 4095).astype(np.uint16)
    inverse = {"PresentationLUTShape": "INVERSE"}
    img, info = read_xray(_write_dicom(tmp_path / "inv.dcm", 4095 - stored, extra=inverse))
    np.testing.assert_allclose(img, stored / 4095.0, atol=1e-12)
    assert "presentation_lut" in info and polarity_header(info).endswith("PresentationLUTShape INVERSE")
    img, info = read_xray(_write_dicom(tmp_path / "m1.dcm", 4095 - stored, photometric="MONOCHROME1", extra=inverse))
    np.testing.assert_allclose(img, stored / 4095.0, atol=1e-12)
    assert polarity_header(info) == "PhotometricInterpretation MONOCHROME1"
    mag = {"EstimatedRadiographicMagnificationFactor": "1.25"}
    _, info = read_xray(_write_dicom(tmp_path / "mag.dcm", stored, spacing=(0.15, 0.2), extra=mag))
    assert info["pixel_spacing_mm"] == pytest.approx([0.12, 0.16]) and "1.25" in info["pixel_spacing_source"]
    _, info = read_xray(_write_dicom(tmp_path / "det.dcm", stored, spacing=(0.15, 0.2)))
    assert info["pixel_spacing_mm"] == [0.15, 0.2] and "at the detector" in info["pixel_spacing_source"]
    _, info = read_xray(_write_dicom(tmp_path / "pix.dcm", stored, spacing=(0.15, 0.2), key="PixelSpacing", extra=mag))
    assert info["pixel_spacing_mm"] == [0.15, 0.2]  # PixelSpacing is in the patient already
    # an enhanced object's spacing lies in its functional groups (was not read: helper-70)
    measures = Dataset()
    measures.PixelSpacing = ["0.3", "0.25"]
    group = Dataset()
    group.PixelMeasuresSequence = Sequence([measures])
    enhanced = {"SharedFunctionalGroupsSequence": Sequence([group]), "ImagerPixelSpacing": ["0.5", "0.5"]}
    _, info = read_xray(_write_dicom(tmp_path / "enh.dcm", stored, extra=enhanced))
    assert info["pixel_spacing_mm"] == [0.3, 0.25] and "SharedFunctionalGroups" in info["pixel_spacing_source"]
    enhanced = {"PerFrameFunctionalGroupsSequence": Sequence([group])}
    _, info = read_xray(_write_dicom(tmp_path / "frame.dcm", stored, extra=enhanced))
    assert info["pixel_spacing_mm"] == [0.3, 0.25] and "PerFrame" in info["pixel_spacing_source"]
    bad = {"PixelSpacing": ["0", "0.2"], "ImagerPixelSpacing": ["0.5", "0.4"]}  # a zero is no spacing
    _, info = read_xray(_write_dicom(tmp_path / "zero.dcm", stored, extra=bad))
    assert info["pixel_spacing_mm"] == [0.5, 0.4] and "ImagerPixelSpacing" in info["pixel_spacing_source"]
    u8 = np.rint(x * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", 255 - u8, photometric="miniswhite")
    img, info = read_xray(tmp_path / "w.tif")
    np.testing.assert_allclose(img, u8 / 255.0)
    assert "miniswhite" in info and info["tiff_photometric"] == "MINISWHITE"
    # LZW without imagecodecs: tifffile reads the tag, OpenCV the pixels (and inverts 8-bit MinIsWhite
    # itself): inverted once, not twice (helper-71)
    assert cv2.imwrite(str(tmp_path / "lzw.tif"), 255 - u8)  # OpenCV writes LZW
    with tifffile.TiffFile(tmp_path / "lzw.tif") as tf:
        assert tf.pages[0].compression == 5  # LZW
        offset = tf.pages[0].tags["PhotometricInterpretation"].valueoffset
    raw = bytearray((tmp_path / "lzw.tif").read_bytes())
    raw[offset : offset + 2] = (0).to_bytes(2, "little")  # MinIsWhite
    (tmp_path / "lzw.tif").write_bytes(bytes(raw))
    img, info = read_xray(tmp_path / "lzw.tif")
    if "OpenCV" in info["format"]:
        np.testing.assert_allclose(img, u8 / 255.0)
    tifffile.imwrite(tmp_path / "b.tif", u8, photometric="minisblack")
    np.testing.assert_allclose(read_xray(tmp_path / "b.tif")[0], u8 / 255.0)
    assert polarity_header({"photometric": "RGB"}) is None and polarity_header({"format": "TIFF"}) is None
    # a DICOM without PhotometricInterpretation: named as such, not blamed on a missing decoder
    with pytest.raises(ValueError, match="lacks PhotometricInterpretation") as err:
        read_xray(_write_dicom(tmp_path / "nophot.dcm", stored, photometric=None))
    assert "decoder plugin" not in str(err.value)


def test_bad_inputs_raise_value_error_and_leave_nothing(tmp_path, ckpt, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "text.png").write_text("this is not an image\n" * 20)
    (bad / "page.png").write_text("<!DOCTYPE html><html><body>404 not found</body></html>")
    (bad / "empty.png").write_bytes(b"")
    _png(bad / "constant.png", np.full((32, 32), 77, np.uint8))
    f = _phantom(32, 32).astype(np.float32)
    f[3, 4] = np.nan
    tifffile.imwrite(bad / "nan.tif", f)
    good = _png(bad / "good.png", _u8(_phantom(32, 32)))
    (bad / "not_a_ckpt.pt").write_bytes(b"\x00\x01garbage" * 100)
    two = _save(bad / "two_channels.pt", NetworkConfig(**{**TINY.to_dict(), "in_channels": 2}))
    # a checkpoint whose weights do not match its config
    state = torch.load(ckpt, weights_only=False)
    state["network"]["width"] = 32
    torch.save(state, bad / "mismatch.pt")
    cases = [
        (bad / "text.png", ckpt, "text file"),
        (bad / "page.png", ckpt, "HTML"),
        (bad / "empty.png", ckpt, "empty"),
        (bad / "constant.png", ckpt, "constant"),
        (bad / "nan.tif", ckpt, "NaN"),
        (bad / "missing.png", ckpt, "does not exist"),
        (good, bad / "not_a_ckpt.pt", "checkpoint"),
        (good, two, "2-channel"),
        (good, bad / "mismatch.pt", "do not match"),
    ]
    before = _files(bad)
    for src, ck, match in cases:
        out = tmp_path / "out" / "v.nrrd"
        with pytest.raises(ValueError, match=match):
            infer_file(src, ck, out)
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir()), (src, ck)
    assert _files(bad) == before
    for kw in (
        {"polarity": "up"},
        {"square": "stretch"},
        {"gamma": 0},
        {"gamma": float("nan")},
        {"beta": -1},
        {"chi": 0},
        {"max_size": 2},
    ):
        with pytest.raises(ValueError):
            infer_file(good, ckpt, tmp_path / "out" / "v.nrrd", **kw)
    with pytest.raises(ValueError, match="suffix"):
        infer_file(good, ckpt, tmp_path / "out" / "v.npy")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    # an output that cannot be written: refused before the network runs (which would cost minutes)
    calls = []
    monkeypatch.setattr(infer, "_run_network", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match=r"cannot write .*good.png is a file, not a folder"):
        infer_file(good, ckpt, good / "sub" / "v.nrrd")
    if Path("/proc/self").is_dir():  # Linux: a folder in which nothing can be made
        with pytest.raises(ValueError, match=r"cannot write /proc/v.nrrd: nothing can be made in /proc"):
            infer_file(good, ckpt, "/proc/v.nrrd")
    assert calls == []


def test_failure_while_writing_leaves_nothing(tmp_path, ckpt, monkeypatch):
    good = _png(tmp_path / "good.png", _u8(_phantom(32, 32)))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("unrelated")

    def boom(path, img):
        raise OSError("disk full")

    monkeypatch.setattr(infer_outputs, "write_png", boom)
    with pytest.raises(OSError, match="disk full"):
        infer_file(good, ckpt, tmp_path / "out" / "v.nii.gz")
    assert _files(tmp_path / "out") == ["keep.txt"]
    with pytest.raises(OSError, match="disk full"):
        infer_file(good, ckpt, tmp_path / "new" / "deeper" / "v.nrrd")
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------------------------------
# preparation rules


def test_polarity_rule_is_antisymmetric_and_overridable():
    x = _phantom(64, 80)
    kept = detect_polarity(x)
    assert kept["invert"] is False and kept["margin"] > 0.1
    flipped = detect_polarity(1 - x)
    assert flipped["invert"] is True and flipped["margin"] == pytest.approx(-kept["margin"])
    sq, rec = prepare_xray(1 - x, square="pad")
    assert rec["polarity"]["inverted"] is True
    np.testing.assert_allclose(sq[8:72], x, atol=1e-12)
    sq, rec = prepare_xray(x, polarity="invert", square="pad")
    assert rec["polarity"]["inverted"] is True
    np.testing.assert_allclose(sq[8:72], 1 - x, atol=1e-12)
    sq, rec = prepare_xray(1 - x, polarity="keep", square="pad")
    np.testing.assert_allclose(sq[8:72], 1 - x, atol=1e-12)


def test_gamma_is_value_to_the_power_gamma_after_polarity(tmp_path, ckpt):
    x = _phantom(48, 48)
    for g in (0.5, 2.2):
        sq, rec = prepare_xray(x, gamma=g, square="crop")  # the film as it is: the field rule has its own tests
        np.testing.assert_allclose(sq, x**g, atol=1e-12)
        assert rec["gamma"]["gamma"] == g
    sq, _ = prepare_xray(1 - x, gamma=2.0, square="crop")  # inverted first, then the power
    np.testing.assert_allclose(sq, x**2, atol=1e-12)
    src = _png(tmp_path / "a.png", _u8(x))
    out = tmp_path / "o" / "v.nrrd"
    rec = infer_file(src, ckpt, out, gamma=2.0, previews=False, square="crop")
    assert rec["gamma"]["gamma"] == 2.0
    vol, _ = _read_volume(out)
    want = (_u8(x) / 255.0) ** 2
    assert np.abs(render_view(vol) - want).max() < 1e-3
    assert np.abs(render_view(vol) - _u8(x) / 255.0).max() > 0.05  # it did change the values


def test_non_square_crop_and_pad(tmp_path, ckpt):
    x = _phantom(40, 64)
    sq, rec = prepare_xray(x, square="crop")
    assert sq.shape == (40, 40) and rec["square"]["box"] == [0, 12, 40, 40]
    np.testing.assert_allclose(sq, x[:, 12:52])
    y = _phantom(41, 64)
    sq, rec = prepare_xray(y, square="pad")
    assert sq.shape == (64, 64) and rec["square"]["pad_top_bottom_left_right"] == [11, 12, 0, 0]
    bg = rec["background"]["value"]
    assert rec["square"]["value"] == bg and np.all(sq[:11] == bg) and np.all(sq[52:] == bg)
    np.testing.assert_allclose(sq[11:52], y)
    xt = _phantom(64, 41)  # portrait
    sq, rec = prepare_xray(xt, square="crop")
    assert rec["square"]["box"] == [11, 0, 41, 41]
    # through infer_file: the record holds the box and the volume has the square's size
    src = _png(tmp_path / "wide.png", _u8(x))
    for mode, n in (("crop", 40), ("pad", 64)):
        out = tmp_path / mode / "v.nii"
        rec = infer_file(src, ckpt, out, square=mode, previews=False)
        assert rec["square"]["mode"] == mode and rec["sizes"]["square"] == n
        vol, spacing = _read_volume(out)
        assert vol.shape == (16, n, n) and spacing == pytest.approx((n / 16, 1.0, 1.0))


def test_no_fusion_upsamples_the_prediction_and_max_size_caps(tmp_path, ckpt):
    x = _u8(_phantom(96, 96))
    src = _png(tmp_path / "a.png", x)
    out = tmp_path / "nf" / "v.nrrd"
    rec = infer_file(
        src, ckpt, out, fusion=False, previews=False, square="crop"
    )  # the film as it is: the field rule has its own tests
    assert rec["fusion"]["enabled"] is False
    vol, _ = _read_volume(out)
    model, _, _ = load_model(ckpt)
    coarse = predict_volume(model, x / 255.0)
    np.testing.assert_allclose(vol, upsample_lateral(coarse, (96, 96)), atol=1e-6)
    out = tmp_path / "cap" / "v.nrrd"
    x[40:56, 40:56] = np.where(np.add.outer(np.arange(16), np.arange(16)) % 2, 250, 0)  # pixel-fine detail
    src = _png(tmp_path / "b.png", x)
    rec = infer_file(src, ckpt, out, max_size=48, previews=True, square="crop")
    vol, spacing = _read_volume(out)
    assert vol.shape == (16, 48, 48) and spacing == pytest.approx((6.0, 2.0, 2.0))
    # fused at 48²: against the x-ray's optical depth area-averaged (Beer–Lambert per coarse pixel), not
    # its opacity averaged (what tomo infer did before: .49 instead of .90 on the checkerboard)
    tau = -np.log1p(-np.minimum(x / 255.0, opacity_max(10.0)))
    half = -np.expm1(-tau.reshape(48, 2, 48, 2).mean((1, 3)))
    assert np.abs(render_view(vol) - half).max() < 1e-3
    assert rec["fusion"]["rerender_max_abs_error"] < 1e-3
    assert np.abs(render_view(vol) - cv2.resize(x / 255.0, (48, 48), interpolation=cv2.INTER_AREA)).max() > 1e-2


# --------------------------------------------------------------------------------------------------
# the model


def test_batchnorm_folding_gives_the_same_output(tmp_path):
    torch.set_num_threads(1)  # numba's OpenMP fusion may have reset it
    torch.manual_seed(1)
    model = TomographyNet(TINY).eval()
    _randomise_bn(model, 3)
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == 0
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0  # the original is untouched
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        a, b = model(x), folded(x)
    assert float(a.abs().max()) > 0.1
    assert float((a - b).abs().max()) < 1e-4
    # and through the loader (fold_bn=True by default) against the unfolded weights
    path = tmp_path / "m.pt"
    opt = torch.optim.Adam(model.parameters())
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(path, model=model, optimizer=opt, scheduler=sch, step=0, net=TINY, cfg=TrainConfig(), data={})
    m1, _, rec = load_model(path)
    assert rec["batchnorm_folded"] is True
    with torch.inference_mode():
        assert float((m1(x) - a).abs().max()) < 1e-4


def test_bench_infer_reports_timings():
    r = bench_infer(net="demo", size=64, fuse_to=96, repeats=2, compare=True, threads=1)
    assert r["seconds"] > 0 and r["network_s"] > 0 and r["fusion_s"] > 0 and len(r["runs_s"]) == 2
    assert r["seconds"] == pytest.approx(float(np.median(r["runs_s"])))
    assert r["network"]["input_size"] == 64 and r["network"]["out_size"] == 32 and r["fuse_to"] == 96
    assert r["threads"] == 1
    assert "eval+fold_bn+channels_last, 1 thread" in r["options"] and "eval, 1 thread" in r["options"]
    with pytest.raises(ValueError):
        bench_infer(net="huge", size=64, fuse_to=96, repeats=1)


# --------------------------------------------------------------------------------------------------
# several radiographs in one `tomo infer`

_MANY = ["--max-size", "32", "--no-previews"]


def _films(folder: Path, names=("film1", "film2", "film10")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        _png(folder / f"{name}.png", _u8(_phantom(48, 40, seed=k)))
    return folder


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture
def loads(monkeypatch):
    """Counts the checkpoint loads of model.infer (its network cache emptied first)."""
    calls = []

    def counted(*args, **kw):
        calls.append(args[0])
        return load_model(*args, **kw)

    monkeypatch.setattr(infer, "_MODELS", {})
    monkeypatch.setattr(infer, "load_model", counted)
    return calls


def test_several_radiographs_equal_single_calls(tmp_path, ckpt, capsys, loads):
    """A file, a quoted glob (natural order) and a duplicate in one call: the network built once, one
    progress line each, and each volume equal bit for bit to the single call's (the same bytes)."""
    src = _films(tmp_path / "films")
    common = ["--checkpoint", str(ckpt), *_MANY]
    assert main(["infer", str(src / "film2.png"), str(src / "film*.png"), *common, "-o", str(tmp_path / "many")]) == 0
    assert len(loads) == 1
    progress = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[")]
    assert [ln.split(":")[0] for ln in progress] == ["[1/3] film2.png", "[2/3] film1.png", "[3/3] film10.png"]
    assert all(ln.endswith(" s") for ln in progress)
    for name in ("film1", "film2", "film10"):
        infer._MODELS.clear()  # a single call of its own, network loaded afresh
        assert (
            main(
                [
                    "infer",
                    str(src / f"{name}.png"),
                    "--checkpoint",
                    str(ckpt),
                    *_MANY,
                    "-o",
                    str(tmp_path / "one" / f"{name}.nrrd"),
                ]
            )
            == 0
        )
        many = tmp_path / "many" / name / f"{name}.nrrd"
        assert many.read_bytes() == (tmp_path / "one" / f"{name}.nrrd").read_bytes()
        assert (many.parent / f"{name}.json").is_file()
    assert len(loads) == 4
    assert "[1/" not in capsys.readouterr().err  # a single call: as before, no progress line
    # --format, and a name with dots (a DICOM UID) keeps all but its last suffix
    _png(src / "1.2.840.5.png", _u8(_phantom(40, 40, seed=5)))
    assert (
        main(
            [
                "infer",
                str(src / "1.2.840.*"),
                str(src / "film1.png"),
                *common,
                "--format",
                "nii.gz",
                "-o",
                str(tmp_path / "nii"),
            ]
        )
        == 0
    )
    assert _tree(tmp_path / "nii") == [
        "1.2.840.5",
        "1.2.840.5/1.2.840.5.json",
        "1.2.840.5/1.2.840.5.nii.gz",
        "film1",
        "film1/film1.json",
        "film1/film1.nii.gz",
    ]


def test_several_radiographs_bad_inputs_refused_before_any_work(tmp_path, ckpt, capsys, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the network was loaded")

    monkeypatch.setattr(infer, "_MODELS", {})
    monkeypatch.setattr(infer, "load_model", no_load)
    src = _films(tmp_path / "films")
    (src / "empty.png").write_bytes(b"")
    (src / "notes.png").write_text("not an image\n")
    (src / "sub.png").mkdir()
    common = ["--checkpoint", str(ckpt), *_MANY, "-o", str(tmp_path / "out")]
    args = [
        str(src / "film*.png"),
        str(src / "nope.png"),
        str(src / "scan_*.dcm"),
        str(src / "empty.png"),
        str(src / "notes.png"),
        str(src / "sub.png"),
    ]
    assert main(["infer", *args, *common]) == 2
    err = capsys.readouterr().err
    for want in (
        "nope.png: no such file",
        "scan_*.dcm: no file matches",
        "empty.png: empty",
        "notes.png: not an image",
        "sub.png: not a file",
        "--keep-going",
    ):
        assert want in err, want
    assert "[1/" not in err and not (tmp_path / "out").exists()
    # the same stem from two folders (or differing in case or suffix only): listed, nothing run
    other = _films(tmp_path / "other", ("FILM1",))
    _png(tmp_path / "other" / "film2.jpg", _u8(_phantom(48, 40)))
    for extra in ([], ["--keep-going"]):
        assert main(["infer", str(src / "film*.png"), str(other / "*"), str(src / "nope.png"), *common, *extra]) == 2
        err = capsys.readouterr().err
        assert "same name" in err and "FILM1.png" in err and "film2.jpg" in err and "film10" not in err
        assert ("(--keep-going skips" in err) is (not extra)  # no hint to give what was given
        assert not (tmp_path / "out").exists()
    # -o must be a folder with several radiographs
    assert main(["infer", str(src / "film*.png"), "--checkpoint", str(ckpt), "-o", str(tmp_path / "v.nrrd")]) == 2
    assert "-o is a folder" in capsys.readouterr().err and not (tmp_path / "v.nrrd").exists()


def test_single_radiograph_with_glob_characters_in_its_name(tmp_path, ckpt):
    """One file named like a glob is that file, written to -o as always (not a folder)."""
    src = _png(tmp_path / "scan[1].png", _u8(_phantom(48, 40)))
    assert main(["infer", str(src), "--checkpoint", str(ckpt), *_MANY, "-o", str(tmp_path / "v.nrrd")]) == 0
    assert (tmp_path / "v.nrrd").is_file() and (tmp_path / "v.json").is_file()


def test_several_radiographs_keep_going(tmp_path, ckpt, capsys, loads):
    src = _films(tmp_path / "films", ("film1", "film2", "film3"))
    _png(src / "film2.png", np.full((40, 40), 77, np.uint8))  # decodes, then refused: a constant image
    common = ["--checkpoint", str(ckpt), *_MANY]
    # without --keep-going the run stops at the failure: film1 done, film3 never started
    assert main(["infer", str(src / "*.png"), *common, "-o", str(tmp_path / "stop")]) == 2
    err = capsys.readouterr().err
    assert "[2/3] film2.png: FAILED" in err and "1 not run" in err and "[3/3]" not in err
    assert err.count("constant") == 1  # the error once, not on the progress line and again
    assert _tree(tmp_path / "stop") == ["film1", "film1/film1.json", "film1/film1.nrrd"]
    # with it: the others run, the unusable file is skipped up front, exit 1 with the list
    assert (
        main(["infer", str(src / "*.png"), str(src / "gone.png"), *common, "--keep-going", "-o", str(tmp_path / "go")])
        == 1
    )
    err = capsys.readouterr().err
    assert "skipped" in err and "gone.png: no such file" in err
    assert "[3/3] film3.png:" in err and "2 of 4 inputs failed (1 skipped before the run" in err
    assert "1 of the 3 run)" in err  # the progress lines count the 3 run, the summary all 4 inputs
    summary = err[err.index("2 of 4 inputs failed") :]
    assert "gone.png" in summary and "film2.png" in summary and "film1" not in summary
    assert summary.count("film2.png") == 1  # the path once, not "P: P: ..."
    assert _tree(tmp_path / "go") == [
        "film1",
        "film1/film1.json",
        "film1/film1.nrrd",
        "film3",
        "film3/film3.json",
        "film3/film3.nrrd",
    ]
    assert len(loads) == 1  # the network once for both calls (same checkpoint, same process)


# --------------------------------------------------------------------------------------------------
# field of view (square="field", the default)


def _clinical_film(h: int, w: int, cy: float, cx: float, shutter: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The issue's real failure as a film: bone bright, air dark grey (0.40), a bright collimator band
    on the top and left edges, a ruler below the head and a bright positioner near its nose; the head
    (blobs) off-centre at (cy, cx). Returns the film and the head's own mask."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:h, 0:w]
    head = ((yy - cy) / (0.22 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 <= 1
    inner = ((yy - cy) / (0.18 * h)) ** 2 + ((xx - cx) / (0.16 * w)) ** 2 <= 1
    img = 0.40 + 0.25 * head + 0.25 * inner + rng.normal(0, 0.01, (h, w))
    img[int(cy + 0.3 * h) : int(cy + 0.3 * h) + 3, int(cx - 0.2 * w) : int(cx + 0.2 * w)] = 0.95  # ruler
    img[int(cy - 0.05 * h) : int(cy + 0.05 * h), int(cx + 0.23 * w) : int(cx + 0.23 * w) + 2] = 0.95  # positioner
    img[:shutter] = img[:, :shutter] = 0.9  # collimator band, top and left
    return np.clip(img, 0, 1), head


@pytest.mark.parametrize("portrait", [True, False])
def test_field_square_holds_the_anatomy_keeps_the_aspect_and_drops_the_shutters(portrait):
    h, w, cy, cx = (200, 150, 120, 60) if portrait else (150, 200, 60, 120)
    film, head = _clinical_film(h, w, cy, cx)
    sq, rec = prepare_xray(film, polarity="keep")
    q = rec["square"]
    assert q["mode"] == "field" and q["anatomy_found"]
    assert q["field_bands_tblr"][0] >= 10 and q["field_bands_tblr"][2] >= 10  # the collimator band found
    top, left, S, _ = q["box"]
    assert sq.shape == (S, S)
    ys, xs = np.nonzero(head)
    assert top <= ys.min() and ys.max() < top + S and left <= xs.min() and xs.max() < left + S  # all of the head
    long_side = max(np.ptp(ys), np.ptp(xs)) + 1
    assert 0.65 <= long_side / S <= 0.8  # FIELD_FILL of the square, not the film's short side
    # nothing stretched: every pixel of the square inside the field is the film's own pixel; the rest
    # (shutter bands, beyond the film) is the background value
    t, b, l, r = q["field_bands_tblr"]
    y, x = np.mgrid[top : top + S, left : left + S]
    inside = (y >= t) & (y < h - b) & (x >= l) & (x < w - r)
    np.testing.assert_array_equal(sq[inside], film[y[inside], x[inside]])
    assert (sq[~inside] == rec["background"]["value"]).all() and (~inside).any()
    assert rec["background"]["value"] == pytest.approx(0.40, abs=0.02)  # air, not the shutter


def test_field_square_of_a_film_the_body_fills_is_its_centre_square():
    rng = np.random.default_rng(2)
    film = np.clip(0.5 + 0.2 * np.sin(np.mgrid[0:90, 0:120][1] / 9.0) + rng.normal(0, 0.02, (90, 120)), 0, 1)
    sq, rec = prepare_xray(film, polarity="keep")
    assert not rec["square"]["anatomy_found"] and rec["square"]["box"] == [0, 15, 90, 90]
    np.testing.assert_array_equal(sq, film[:, 15:105])


def _rendered_views(species: int, n: int, seed: int, size: int = 96) -> np.ndarray:
    """(n, size, size) x-rays of a procedural species at the training scale (the cube fills the image)."""
    vol = skull_volume(species_params(species, seed=0), size=64, seed=0)
    return render_xrays(vol, hemisphere_views(n, seed=seed), size=size, steps=48, chi=10.0, backend="cpu")


@pytest.fixture(scope="module")
def view_reference():
    """A training reference of 3 species' x-rays (144 views), as a checkpoint carries it, at TINY's input."""
    train = np.concatenate([_rendered_views(s, 48, seed=1) for s in (0, 1, 2)])
    return reference_from_features([xray_features(_network_input(x, TINY.input_size)) for x in train])


def test_field_fill_finds_the_training_scale_of_held_out_species(view_reference):
    """square="field" put every anatomy's long side at FIELD_FILL (0.75) of the square, but a training
    x-ray's fill depends on its view (the specimen is fitted to the cube, not the image): views seen
    end-on were blown up to look far from every training x-ray (8 of 16 rendered demo views warned).
    field_fill chooses the fill from the training x-rays' shapes: on 48 views of 2 species the reference
    never saw, rendered at the training scale, it finds that scale closer than the fixed fill does, and
    without the fixed fill's bias (measured: mean |log ratio| .136 against .170, mean .066 against .151)."""
    chosen, fixed = [], []
    for x in np.concatenate([_rendered_views(s, 24, seed=2) for s in (9, 13)]):
        sq, rec = prepare_xray(x, polarity="keep")
        assert rec["square"]["anatomy_found"] and rec["square"]["fill"] == FIELD_FILL
        native = max(rec["square"]["anatomy_box"][2:]) / x.shape[0]  # its fill in the training x-ray
        fill, choice = field_fill(_network_input(sq, TINY.input_size), FIELD_FILL, view_reference)
        assert choice["fill"] == fill and choice.get("mean_distance", 0.0) < choice["mean_distance_at_from_fill"]
        chosen.append(np.log(fill / native))
        fixed.append(np.log(FIELD_FILL / native))
    assert np.abs(chosen).mean() < 0.9 * np.abs(fixed).mean(), (np.abs(chosen).mean(), np.abs(fixed).mean())
    assert abs(np.mean(chosen)) < 0.5 * abs(np.mean(fixed)), (np.mean(chosen), np.mean(fixed))


def test_infer_squares_the_field_at_the_fill_of_the_training_xrays(tmp_path, view_reference, monkeypatch):
    """tomo infer prepares a film again at the fill field_fill chooses when the checkpoint carries
    its training x-rays' reference (recorded as square.fill_choice); without one, at FIELD_FILL."""
    x = _rendered_views(5, 24, seed=2)[3]
    png = _png(tmp_path / "view.png", _u8(x))
    torch.manual_seed(0)
    model = TomographyNet(TINY)
    opt = torch.optim.Adam(model.parameters())
    with_ref = save_checkpoint(
        tmp_path / "ref.pt",
        model=model,
        optimizer=opt,
        scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
        step=2,
        net=TINY,
        cfg=TrainConfig(),
        data={"chi": 10.0},
        xray_reference={**view_reference, "size": TINY.input_size},
    )
    without = _save(tmp_path / "none.pt", TINY, model=model)
    rec = infer_file(png, with_ref, tmp_path / "a" / "v.nrrd", polarity="keep", previews=False)
    square = rec["square"]
    fill, _ = field_fill(
        _network_input(prepare_xray(read_xray(png)[0], polarity="keep")[0], TINY.input_size), FIELD_FILL, view_reference
    )
    assert square["fill"] == square["fill_choice"]["fill"] == fill != FIELD_FILL
    assert square["size"] == math.ceil(max(square["anatomy_box"][2:]) / fill)
    assert square["fill_choice"]["mean_distance_measured"] < square["fill_choice"]["mean_distance_at_from_fill"]
    rec = infer_file(png, without, tmp_path / "b" / "v.nrrd", polarity="keep", previews=False)
    assert rec["square"]["fill"] == FIELD_FILL and "fill_choice" not in rec["square"]
    # the film is prepared twice: the first preparation's warnings are not given again
    original = infer.prepare_xray

    def warning_prepare(*args, **kwargs):
        warnings.warn("a warning of the preparation", UserWarning, stacklevel=2)
        return original(*args, **kwargs)

    monkeypatch.setattr(infer, "prepare_xray", warning_prepare)
    rec = infer_file(png, with_ref, tmp_path / "c" / "v.nrrd", polarity="keep", previews=False)
    assert rec["square"]["fill"] == fill and rec["warnings"].count("a warning of the preparation") == 1


def test_field_fill_keeps_the_fill_where_scaling_tells_nothing(view_reference):
    """Grey air (every pixel above the specimen level: area fraction and extent 1 at any scale) and a
    blank input keep FIELD_FILL (the search shrank a grey-air film's anatomy to 0.355 of the square)."""
    x = _rendered_views(5, 24, seed=2)[3]
    sq, _ = prepare_xray(np.clip(0.1 + 0.9 * x, 0, 1), polarity="keep")
    fill, choice = field_fill(_network_input(sq, TINY.input_size), FIELD_FILL, view_reference)
    assert fill == FIELD_FILL and choice["kept"].startswith("the specimen's area or extent fills the image")
    fill, choice = field_fill(np.zeros((32, 32)), FIELD_FILL, view_reference)
    assert fill == FIELD_FILL and choice["kept"].startswith("no specimen")


def test_a_small_specimen_on_a_large_film_is_found():
    """The anatomy's threshold sat between the air and the field's 90th percentile, which is air where
    the specimen covers under a tenth of the film: the box was the whole film (helper-52)."""
    x = _rendered_views(5, 24, seed=2)[3]
    film = np.zeros((260, 320))
    film[100:196, 150:246] = x
    sq, rec = prepare_xray(film, polarity="keep")
    assert rec["square"]["anatomy_found"], rec["square"]
    ys, xs = np.nonzero(film > 0.02)
    long_side = max(np.ptp(ys), np.ptp(xs)) + 1
    assert 0.85 * long_side <= max(rec["square"]["anatomy_box"][2:]) <= 1.05 * long_side  # not the film's
    top, left, S, _ = rec["square"]["box"]
    assert top <= ys.min() and ys.max() < top + S and left <= xs.min() and xs.max() < left + S  # all of it


def test_cli_pixel_spacing_gives_a_png_its_millimetres(tmp_path, ckpt, capsys):
    """--pixel-spacing: a PNG has no spacing; given 0.25 mm the volume is in mm (lateral 0.25 at the
    film's resolution); a malformed value is refused by the parser."""
    src = _films(tmp_path / "films", names=("film1",))
    out = tmp_path / "v.nrrd"
    args = [
        "infer",
        str(src / "film1.png"),
        "--checkpoint",
        str(ckpt),
        "-o",
        str(out),
        "--no-previews",
        "--square",
        "pad",
    ]
    assert main([*args, "--pixel-spacing", "0.25"]) == 0
    assert "(mm)" in capsys.readouterr().out  # the printed spacing unit
    _, spacing = _read_volume(out)
    assert spacing[1:] == pytest.approx((0.25, 0.25))
    # rows and columns of other spacings land on the volume's y and x, also in the NIfTI beside it
    # (helper-83: every test used square pixels, so swapping them passed)
    assert main([*args, "--pixel-spacing", "0.5,0.25"]) == 0
    assert _read_volume(out)[1][1:] == pytest.approx((0.5, 0.25))
    nii = tmp_path / "v.nii.gz"
    assert main([*args[:5], str(nii), *args[6:], "--pixel-spacing", "0.5,0.25"]) == 0
    assert _read_volume(nii)[1][1:] == pytest.approx((0.5, 0.25))
    with pytest.raises(SystemExit):
        main([*args, "--pixel-spacing", "0,1"])


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_orientation_tags_turn_the_image_as_a_viewer_does(tmp_path, suffix):
    """A TIFF's Orientation tag and the EXIF orientation of a PNG/JPEG (2–8) are applied as a viewer
    (Pillow's exif_transpose) applies them, and recorded; the image used to be read as stored."""
    x = np.rint(_phantom(48, 80) * 255).astype(np.uint8)
    for tag in range(1, 9):
        path = tmp_path / f"o{tag}{suffix}"
        if suffix == ".tif":
            tifffile.imwrite(path, x, extratags=[(274, "H", 1, tag, True)])
        else:
            im = Image.fromarray(x)
            exif = im.getexif()
            exif[0x0112] = tag
            im.save(path, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
        png = tmp_path / f"ref{tag}.png"
        im = Image.fromarray(x)
        exif = im.getexif()
        exif[0x0112] = tag
        im.save(png, exif=exif)
        ref = np.asarray(ImageOps.exif_transpose(Image.open(png))) / 255.0
        img, info = read_xray(path)
        assert img.shape == ref.shape, tag
        np.testing.assert_allclose(img, ref, atol=0.03 if suffix == ".jpg" else 0)
        assert info.get("orientation", "Orientation 1").startswith(f"Orientation {tag}")


def test_a_dicom_without_its_preamble_is_read_as_dicom(tmp_path):
    """A DICOM file without the 128-byte preamble and "DICM", and without a .dcm suffix, is read by
    pydicom (it went to OpenCV, which cannot decode it); other images are not taken for one."""
    stored = np.rint(_phantom(64, 64) * 4095).astype(np.uint16)
    full = _write_dicom(tmp_path / "full.dcm", stored, spacing=(0.2, 0.2)).read_bytes()
    (tmp_path / "bare").write_bytes(full[132:])  # the file meta group (0002) first
    img, info = read_xray(tmp_path / "bare")
    np.testing.assert_allclose(img, stored / 4095.0, atol=1e-12)
    assert info["pixel_spacing_mm"] == [0.2, 0.2] and "DICOM" in info["format"]
    assert cv2.imwrite(str(tmp_path / "x.png"), (stored >> 4).astype(np.uint8))
    assert "OpenCV" in read_xray(tmp_path / "x.png")[1]["format"]


def test_nrrd_and_nifti_of_one_volume_overlay_in_itk(tmp_path):
    """The NRRD and the NIfTI of one prediction put every voxel at the same place in ITK (3D Slicer's
    reader): the NRRD names the RAS space NIfTI's qform implies (without it ITK read LPS: turned 180°)."""
    vol = np.random.default_rng(0).random((4, 5, 6)).astype("<f4")
    vol.tofile(tmp_path / "v.raw")
    images = []
    for suffix in (".nrrd", ".nii.gz"):
        out = tmp_path / f"o{suffix}"
        write_volume(out, suffix, tmp_path / "v.raw", vol.shape, (0.5, 0.4, 0.3), (-1.0, -2.0, -3.0), True, {}, "t")
        images.append(sitk.ReadImage(str(out)))
    a, b = images
    assert a.GetDirection() == b.GetDirection() and a.GetOrigin() == pytest.approx(b.GetOrigin())
    assert a.GetSpacing() == pytest.approx(b.GetSpacing())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert nrrd.read_header(str(tmp_path / "o.nrrd"))["space"] == "right-anterior-superior"


def test_a_ct_slice_is_not_taken_for_a_radiograph(tmp_path, shared_data):
    """A DICOM whose Modality is CT (MR, PET …) is refused, saying what it is: tomo infer reconstructed a
    volume from a CT cross-section with only the generic out-of-distribution warning (helper-72)."""
    stored = np.rint(_phantom(64, 64) * 4095).astype(np.uint16)
    with pytest.raises(ValueError, match=r"DICOM Modality CT: a CT slice \(a cross-section\), not a radiograph"):
        read_xray(_write_dicom(tmp_path / "ct.dcm", stored, extra={"Modality": "CT"}))
    with pytest.raises(ValueError, match="Modality MR: an MR image"):
        read_xray(_write_dicom(tmp_path / "mr.dcm", stored, extra={"Modality": "MR"}))
    for modality in ("CR", "DX", "OT", ""):
        read_xray(_write_dicom(tmp_path / f"ok{modality}.dcm", stored, extra={"Modality": modality}))
    with pytest.raises(ValueError, match="DICOM Modality CT"):
        read_xray(shared_data / "real/ge-head-tilted/05.dcm")
