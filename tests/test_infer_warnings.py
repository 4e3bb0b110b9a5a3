"""What ``tomo infer`` tells a user about a film it may not know (session 37, a walkthrough with real
radiographs): a polarity refusal says why (weak cues, or little air as on a chest film) in the units
the score sums; overriding it on a film with little air warns that --polarity decides the polarity
only; the out-of-distribution warning suggests --air subtract only where the air is grey and names
the features that part the film from its nearest training x-ray."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from synth_radiographs import REAL
from test_infer import TINY, _phantom, _png, _save, _u8, _write_dicom

import model.infer_outputs as io_mod
import model.polarity as polarity_module
from model.cli import main
from model.infer import far_warning, infer_file
from model.ood import FEATURES, GREY_AIR, ood_check, reference_from_features
from model.xray import prepare_xray

CHEST = REAL / "xray"


def _cues(border: float, flat: float, texture: float, air_region: float) -> dict:
    """Cue values (as _polarity_cues returns them) worth ``border``, ``flat`` and ``texture`` units."""
    return {
        "field_bands_tblr": [0, 0, 0, 0],
        "air_at_field_border": 0.05 * border,
        "flat_regions_dark": 0.01 * flat,
        "texture_bright": 0.1 * texture,
        "air_region": air_region,
    }


@pytest.fixture
def film():
    """A plain film (the cues are patched in): its content does not matter."""
    return np.random.default_rng(0).random((40, 40))


def _patch(monkeypatch, cues: dict) -> None:
    monkeypatch.setattr(polarity_module, "_polarity_cues", lambda _x: cues)


def test_a_little_air_refusal_says_so_with_the_units_summed(monkeypatch, film):
    """The border cue against the other two on a film with little air: refused, and the message names
    the reason and the three units that make the score (they sum to it)."""
    _patch(monkeypatch, _cues(2.0, -3.0, -3.0, air_region=0.18))
    with pytest.raises(ValueError) as ei:
        prepare_xray(film, polarity="auto")
    msg = str(ei.value)
    assert "little air (air region 0.18 < 0.40)" in msg and "chest film" in msg, msg
    assert "score -4.00 = border +2.00 + flat -3.00 + texture -3.00, in units" in msg, msg


def test_a_weak_refusal_says_the_cues_are_weak(monkeypatch, film):
    _patch(monkeypatch, _cues(0.3, 0.3, 0.2, air_region=0.6))
    with pytest.raises(ValueError, match="cannot be decided from this image: the cues are weak"):
        prepare_xray(film, polarity="auto")


@pytest.mark.parametrize("mode", ["keep", "invert"])
def test_overriding_a_little_air_refusal_warns_that_the_film_may_be_unknown(monkeypatch, film, mode):
    """--polarity keep/invert where the rule refused for little air: decided as asked, with a warning
    that the override settles the polarity only (a chest film then passed every later check)."""
    _patch(monkeypatch, _cues(2.0, -3.0, -3.0, air_region=0.18))
    with pytest.warns(UserWarning, match=f"--polarity {mode} decides the polarity only: the film shows little air"):
        _, rec = prepare_xray(film, polarity=mode)
    assert rec["polarity"]["inverted"] is (mode == "invert") and rec["polarity"]["detected"]["refusal"] == "little air"


def test_overriding_a_film_with_air_gives_no_such_warning(monkeypatch, film):
    _patch(monkeypatch, _cues(2.0, -3.0, -3.0, air_region=0.6))  # decided (low confidence): air around it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_xray(film, polarity="keep")


@pytest.mark.skipif(not CHEST.is_dir(), reason="needs ../shared/data/real/xray beside the clone")
@pytest.mark.parametrize("name", ["00000001_000.png", "00027426_000.png"])
def test_real_chest_films_are_refused_and_an_override_warns(name):
    """The two real chest radiographs: refused for little air; with --polarity keep, warned."""
    img = cv2.imread(str(CHEST / name), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0
    with pytest.raises(ValueError, match="little air .* as on a chest film"):
        prepare_xray(img, polarity="auto")
    with pytest.warns(UserWarning, match="decides the polarity only"):
        prepare_xray(img, polarity="keep")


def _ood(outside: dict, border: float, gaps=("p50", "p90")) -> dict:
    feats = dict(zip(FEATURES, (0.3, 0.6, border, 0.1, 0.3, 0.6)))
    rec = {"far": True, "distance": 5.0, "threshold": 2.0, "features": feats, "outside": outside}
    return rec | {"largest_gaps": list(gaps)}


def test_the_far_warning_suggests_air_subtract_only_for_grey_air():
    """A border outside the training range (0–0) by noise in black air (0.01) is not grey air: no
    --air subtract (it misled a user into hiding a chest film); above GREY_AIR it is suggested, unless
    the air is already subtracted."""
    border = {"border": {"input": 0.01, "training_1_99": [0.0, 0.0]}}
    assert "--air subtract" not in far_warning("f.png", _ood(border, 0.01), "keep")
    grey = {"border": {"input": 0.3, "training_1_99": [0.0, 0.0]}}
    assert GREY_AIR < 0.3
    assert "the air is grey, unlike the training x-rays' black: try --air subtract" in far_warning(
        "f.png", _ood(grey, 0.3), "keep"
    )
    assert "--air subtract" not in far_warning("f.png", _ood(grey, 0.3), "subtract")


def test_the_far_warning_names_the_features_when_none_is_outside_alone():
    text = far_warning("f.png", _ood({}, 0.0, gaps=("p50", "extent")), "keep")
    assert "distance 5.00 > 2.00: the features together, mostly p50 and extent" in text, text


def test_largest_gaps_are_the_features_furthest_from_the_nearest_training_xray():
    """ood_check's largest_gaps: the two features with the largest scaled gaps to the nearest training
    x-ray, largest first (computed here by hand on a reference of two x-rays)."""
    ref = reference_from_features(np.array([[0.3, 0.6, 0.0, 0.10, 0.30, 0.60], [0.5, 0.8, 0.0, 0.20, 0.50, 0.90]]))
    scale = np.asarray(ref["scale"])
    x = np.zeros((32, 32))
    x[8:24, 8:24] = np.linspace(0.05, 0.95, 16)[None, :]  # a specimen with a ramp of opacities
    rec = ood_check(x, ref)
    f = np.array([rec["features"][k] for k in FEATURES])
    gaps = ((np.asarray(ref["values"]) - f) / scale) ** 2
    nearest = gaps[np.argmin(gaps.sum(1))]
    assert rec["largest_gaps"] == [FEATURES[i] for i in np.argsort(-nearest)[:2]]
    assert rec["distance"] == pytest.approx(float(np.sqrt(nearest.sum())))


# --------------------------------------------------------------------------------------------------
# notes about the film's size and format (through tomo infer with a tiny checkpoint)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("ckpt") / "tiny.pt", TINY)


def _film(path, h: int, w: int):
    return _png(path, _u8(_phantom(h, w)))


def test_a_film_smaller_than_the_network_input_is_said_to_be_enlarged(tiny_ckpt, tmp_path):
    """A 20-pixel film for a 32-pixel network input: a warning, and the record's resize rule says
    bilinear up (it said area averaging down)."""
    src = _film(tmp_path / "small.png", 20, 20)
    with pytest.warns(UserWarning, match=f"smaller than the network's input {TINY.input_size} px: it is enlarged"):
        rec = infer_file(src, tiny_ckpt, tmp_path / "o.nrrd", polarity="keep", previews=False, square="pad")
    assert rec["sizes"]["resize_rule"].startswith("bilinear (pixel centres) up"), rec["sizes"]
    big = _film(tmp_path / "big.png", 48, 48)
    rec = infer_file(big, tiny_ckpt, tmp_path / "b.nrrd", polarity="keep", previews=False, square="pad")
    assert rec["sizes"]["resize_rule"].startswith("area averaging down")
    assert not any("smaller than the network" in w for w in rec["warnings"])


def test_a_volume_over_a_gibibyte_names_max_size(tiny_ckpt, tmp_path, monkeypatch):
    """The written volume's size (D × N × N float32) over 1 GiB: a warning naming --max-size (a
    4000-pixel film wrote 2.3 GB in silence). The threshold is reached here by a small film and a
    patched GiB, not by writing a gigabyte."""
    src = _film(tmp_path / "f.png", 40, 40)
    monkeypatch.setattr(io_mod, "_GIB", 1024.0)  # bytes per "GiB" here: the 16 x 40 x 40 float32 volume is 100
    with pytest.warns(UserWarning, match=r"float32, \d+\.\d GiB; --max-size N writes it at N x N"):
        infer_file(src, tiny_ckpt, tmp_path / "o.nrrd", polarity="keep", previews=False, square="pad")


def test_format_with_one_radiograph_must_agree_with_the_output_suffix(tiny_ckpt, tmp_path, capsys):
    """--format is the batch's format; with one radiograph -o's suffix decides, and a --format that
    says otherwise is an error (it was ignored in silence); one that agrees is fine."""
    src = _film(tmp_path / "f.png", 40, 40)
    common = ["infer", str(src), "--checkpoint", str(tiny_ckpt), "--polarity", "keep", "--no-previews"]
    assert main([*common, "-o", str(tmp_path / "v.nrrd"), "--format", "nii.gz"]) == 2
    assert "--format nii.gz with one radiograph: the suffix of -o" in capsys.readouterr().err
    assert not (tmp_path / "v.nrrd").exists()
    assert main([*common, "-o", str(tmp_path / "v.nii.gz"), "--format", "nii.gz"]) == 0
    assert (tmp_path / "v.nii.gz").is_file()


def test_the_summary_line_says_a_dicom_display_inversion_was_applied(tiny_ckpt, tmp_path, capsys):
    """A MONOCHROME1 film is inverted on reading; the printed line says so beside "polarity kept"
    (which alone read as if the film had been left as stored)."""
    stored = np.rint((1 - _phantom(40, 40)) * 4095).astype(np.uint16)
    path = _write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", spacing=(0.5, 0.5))
    args = ["infer", str(path), "--checkpoint", str(tiny_ckpt), "-o", str(tmp_path / "v.nrrd"), "--no-previews"]
    assert main([*args, "--polarity", "keep"]) == 0
    out = capsys.readouterr().out
    assert "polarity kept (the file's display inversion applied on reading)" in out, out
