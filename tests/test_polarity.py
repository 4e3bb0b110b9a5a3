"""The polarity rule of model.infer on ≥ 300 synthetic clinical-looking radiographs made from the real
head CTs in ../shared/data/real (tests/synth_radiographs.py: lateral, frontal and oblique views,
portrait and landscape, display curves, a heel-effect ramp, quantum noise, 8-bit storage for 60 %,
collimator shutters bright or dark, padding, burned-in text, rulers, positioners, both polarities),
and the issue's own collimated skull film.

The rule's constants were chosen on the films of seeds 1 and 2 (99.2 % right there); this test uses
seeds 7, 11 and 13, whose failures were not looked at while choosing them (seed 7's totals were
measured before, with the older rule: 93.0 %; seed 13 was first run on 2026-12-04 with the rule as
committed, after the rule was fixed). Measured 2026-12-04 (``.venv/bin/python -m pytest -q
tests/test_polarity.py -p no:cacheprovider``; the counts from the same loop as a script):

    seed  right (high / normal / low)   refused   wrong
    7     99.0 % (228 / 68 / 1)         0.7 %     1 at low confidence (with a warning)
    11    99.7 % (227 / 69 / 3)         0.3 %     0
    13    98.7 % (216 / 79 / 1)         1.3 %     0

Two more untouched seeds, run once with the final rule and generator (not in the test, to keep it
short): 17 and 19: 100 % right each (300 films), none refused. None wrong at high or normal
confidence anywhere; the issue's target (≥ 98 % right, none wrong at high
confidence) is met. The generator's realism (heel ramp, 8 bits, noise that grows with the opacity as
photon counts fall behind bone) was added after the rule was fixed, and the rule was not changed for
it. It made the set easier: the noise model feeds the texture cue. Without it (heel and 8 bits only,
noise uniform) the same seeds give 98.3 / 98.0 / 98.0 % right, 1.3 / 1.7 / 2.0 % refused, 1 / 1 / 0
wrong at low confidence; before any of it (the generator of commit 2d730f4) 98.3 / 98.0 / 99.0 %.
Tried and dropped: the texture cue at half weight (99.5 % on seeds 1–2, but 98.0 % / 97.7 % on
seeds 7 / 11 with that older generator): it did not carry over; the seeds 7 and 11 totals of that
variant were seen, their films were not.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from synth_radiographs import REAL, issue_film, make_films
from synth_radiographs import volumes as synth_volumes
from test_infer import _clinical_film

import model.xray as xray_module
from model.infer import detect_polarity, prepare_xray
from model.polarity import BORDER_FRACTION
from tomodata.render import render_xrays

pytestmark = pytest.mark.skipif(
    not (REAL / "cthead-8bit").is_dir(), reason="needs ../shared/data/real beside the clone"
)


@pytest.fixture(scope="module", params=[7, 11, 13])
def films(request):
    return make_films(300, seed=request.param)


def test_the_set_covers_what_it_claims(films):
    text = " ".join(d for _, _, d in films)
    assert len(films) >= 300 and 0.4 < np.mean([inv for _, inv, _ in films]) < 0.6
    for what in (
        "lateral",
        "frontal",
        "oblique",
        "120x96",
        "96x120",
        "bright shutters",
        "dark shutters",
        "text",
        "ruler",
        "positioner",
        "padding",
        "gamma",
        "S-curve",
        "8-bit",
        "heel",
        "cthead",
        "cranium",
        "headsq",
    ):
        assert what in text, what


def test_right_or_refused_never_confidently_wrong(films):
    right = refused = 0
    wrong = []
    for img, inverted, desc in films:
        r = detect_polarity(img)
        if r["invert"] is None:
            refused += 1
        elif r["invert"] == inverted:
            right += 1
        else:
            wrong.append((r["confidence"], desc))
    assert right / len(films) >= 0.98, (right, refused, wrong)
    assert (refused + len(wrong)) / len(films) <= 0.02 and all(conf == "low" for conf, _ in wrong), wrong


def test_refusal_asks_for_the_option_and_low_confidence_warns():
    flat = np.full((64, 64), 0.5) + np.random.default_rng(0).normal(0, 0.01, (64, 64))
    with pytest.raises(ValueError, match="pass --polarity keep .* or --polarity invert"):
        prepare_xray(flat)
    sq, rec = prepare_xray(flat, polarity="keep")
    assert rec["polarity"]["decided_by"] == "keep"
    # a guess of low confidence is taken with a warning that says which way and how to decide (the
    # detector's verdict stubbed: which films give "low" is the detector's business, tested above;
    # helper-83: the warning could be removed with every test passing)
    for invert, how in ((True, "inverting"), (False, "keeping")):
        low = {**detect_polarity(flat), "invert": invert, "confidence": "low", "margin": 0.05 if not invert else -0.05}
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(xray_module, "detect_polarity", lambda x, mask=None, low=low: low)
            with pytest.warns(UserWarning, match=rf"polarity detection is uncertain .*; {how}; pass --polarity keep"):
                _, rec = prepare_xray(flat)
        assert rec["polarity"]["inverted"] is invert
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at normal confidence
        with pytest.MonkeyPatch.context() as mp:
            sure = {**low, "confidence": "normal"}
            mp.setattr(xray_module, "detect_polarity", lambda x, mask=None: sure)
            prepare_xray(flat)


def test_header_polarity_is_trusted_unless_the_image_clearly_disagrees(films):
    img, inverted, _ = next(f for f in films if not f[1] and detect_polarity(f[0])["confidence"] == "high")
    _, rec = prepare_xray(img, header="PhotometricInterpretation MONOCHROME2")
    assert rec["polarity"]["inverted"] is False and rec["polarity"]["decided_by"].startswith("header")
    with pytest.raises(ValueError, match="header .* and the image disagree"):
        prepare_xray(1 - img, header="PhotometricInterpretation MONOCHROME2")
    # an image that does not confirm the header: kept as the header says, with a warning
    flat = np.full((64, 64), 0.5) + np.random.default_rng(0).normal(0, 0.01, (64, 64))
    with pytest.warns(UserWarning, match=r"kept as the file's header says .* does not show which way"):
        _, rec = prepare_xray(flat, header="PhotometricInterpretation MONOCHROME2")
    assert rec["polarity"]["inverted"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an image that agrees: no warning
        prepare_xray(img, header="PhotometricInterpretation MONOCHROME2")


def test_the_issue_film_is_kept():
    """The real failure that opened issue #13: a portrait 8-bit lateral skull film, bone bright, air
    dark grey (≈ .40), a bright collimator band along the top and left edges (border mean ≈ .50), a
    ruler and a nasal positioner; the old rule inverted it at "normal" confidence."""
    film, _ = _clinical_film(200, 150, 120, 60)
    film = np.round(film * 255) / 255  # 8-bit
    r = detect_polarity(film)
    assert r["invert"] is False and r["confidence"] in ("high", "normal"), r
    sq, rec = prepare_xray(film)
    assert rec["polarity"]["inverted"] is False and rec["square"]["anatomy_found"]
    assert detect_polarity(1 - film)["invert"] is True


def test_the_issue_film_from_a_real_ct_is_kept():
    """The same real failure from the real 8-bit head CT (synth_radiographs.issue_film): portrait
    200×150, 8-bit, lateral, bone bright, air ≈ .40 inside, the border band's mean ≈ .50 (a bright
    collimator band on the top and left edges), a ruler and a nasal positioner: kept, at high or
    normal confidence, through prepare_xray too; its negative inverted."""
    film = issue_film()
    assert film.shape == (200, 150) and np.array_equal(film, np.round(film * 255) / 255)
    b = int(BORDER_FRACTION * 150)
    ring = np.ones(film.shape, bool)
    ring[b:-b, b:-b] = False
    assert film[ring].mean() == pytest.approx(0.50, abs=0.03) and np.median(film[ring]) == pytest.approx(0.40, abs=0.02)
    r = detect_polarity(film)
    assert r["invert"] is False and r["confidence"] in ("high", "normal"), r
    _, rec = prepare_xray(film)
    assert rec["polarity"]["inverted"] is False
    assert detect_polarity(1 - film)["invert"] is True


def test_tight_crops_of_real_skulls_are_never_confidently_wrong():
    """Films cropped inside the head (no air around it: 30–50 of 192 pixels cut from each edge; the
    three real CTs, frontal and lateral, with and without noise, both polarities: 72 films; helper-70,
    session 32). Before session 32, 18 were wrong at normal confidence (the border cue, outvoted by the
    other two, was not heard where 30–33 % of the field counted as an air region); now a decision
    against the border cue is at most low confidence (a warning), and with less than 40 % air region
    none is made. Measured on this set when the change was made: 22 right, 42 refused, 8 wrong, all
    at low confidence."""
    vols = synth_volumes()
    lateral = np.stack([[0, 0, -1.0], [0, 1, 0], [1, 0, 0]], axis=1)
    rng = np.random.default_rng(0)
    outcome = {"right": 0, "refused": 0, "wrong": []}
    for name in ("cthead", "cranium", "headsq"):
        for rot in (np.eye(3), lateral):
            x = render_xrays(vols[name], rot[None], size=192, steps=96, chi=7.0, backend="cpu")[0]
            for c in (30, 40, 50):
                for noise in (0.0, 0.01):
                    im = np.clip(x[c : 192 - c, c : 192 - c] + rng.normal(0, noise, (192 - 2 * c,) * 2), 0, 1)
                    for inverted in (False, True):
                        r = detect_polarity(1 - im if inverted else im)
                        if r["invert"] is None:
                            outcome["refused"] += 1
                        elif r["invert"] == inverted:
                            outcome["right"] += 1
                        else:
                            outcome["wrong"].append(r["confidence"])
    assert all(conf == "low" for conf in outcome["wrong"]), outcome
    assert outcome["right"] >= 20 and outcome["refused"] <= 45, outcome  # not by refusing everything
