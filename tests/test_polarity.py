"""The polarity rule of model.infer on ≥ 300 synthetic clinical-looking radiographs made from the real
head CTs in ../shared/data/real (tests/synth_radiographs.py: lateral, frontal and oblique views,
portrait and landscape, display curves, noise, collimator shutters bright or dark, padding, burned-in
text, rulers, positioners, both polarities).

The rule's constants were chosen on the films of seeds 1 and 2; this test uses seed 7, which was not
looked at while choosing them. Measured (2026-12-03): 93.0 % right, 6.7 % refused (an error asking
for --polarity), 1 wrong (at low confidence, with a warning), none wrong at high or normal confidence.
The issue's target is ≥ 98 % right: not reached yet (the refusals), see the closing note of #13.
"""

from __future__ import annotations

import numpy as np
import pytest

from synth_radiographs import REAL, make_films
from model.infer import detect_polarity, prepare_xray

pytestmark = pytest.mark.skipif(not (REAL / "cthead-8bit").is_dir(), reason="needs ../shared/data/real beside the clone")


@pytest.fixture(scope="module")
def films():
    return make_films(300, seed=7)


def test_the_set_covers_what_it_claims(films):
    text = " ".join(d for _, _, d in films)
    assert len(films) >= 300 and 0.4 < np.mean([inv for _, inv, _ in films]) < 0.6
    for what in ("lateral", "frontal", "oblique", "120x96", "96x120", "bright shutters", "dark shutters", "text",
                 "ruler", "positioner", "padding", "gamma", "S-curve", "cthead", "cranium", "headsq"):
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
    assert right / len(films) >= 0.92, (right, refused, wrong)
    assert len(wrong) <= 3 and all(conf == "low" for conf, _ in wrong), wrong


def test_refusal_asks_for_the_option_and_low_confidence_warns():
    flat = np.full((64, 64), 0.5) + np.random.default_rng(0).normal(0, 0.01, (64, 64))
    with pytest.raises(ValueError, match="pass --polarity keep .* or --polarity invert"):
        prepare_xray(flat)
    sq, rec = prepare_xray(flat, polarity="keep")
    assert rec["polarity"]["decided_by"] == "keep"


def test_header_polarity_is_trusted_unless_the_image_clearly_disagrees(films):
    img, inverted, _ = next(f for f in films if not f[1] and detect_polarity(f[0])["confidence"] == "high")
    _, rec = prepare_xray(img, header="PhotometricInterpretation MONOCHROME2")
    assert rec["polarity"]["inverted"] is False and rec["polarity"]["decided_by"].startswith("header")
    with pytest.raises(ValueError, match="header .* and the image disagree"):
        prepare_xray(1 - img, header="PhotometricInterpretation MONOCHROME2")
