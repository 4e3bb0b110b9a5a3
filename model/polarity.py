"""Which way round is a radiograph? Our x-rays are opacity (air dark, bone bright); a film may be
either. :func:`detect_polarity` decides from the image, or refuses to guess.

**Polarity** (``detect_polarity``). Our x-rays are opacity: air ≈ 0 (dark), dense bone bright.
A DICOM file says how it is displayed (``PhotometricInterpretation``; MONOCHROME1 is inverted on
reading): ``"auto"`` trusts it, unless the image cues below say the opposite at high confidence,
which is an error. For other files the rule works on the *exposed field*: bands of uniform
rows/columns at each edge that end in a straight step (collimator shutters, bright or dark; padding)
are removed (:func:`exposed_field`). Three cues, each antisymmetric under ``1 − v``: (1) the air at
the field's border is dark (the rank of the border ring's median among the field's pixels), (2) flat
regions are darker than textured ones (inside the field), (3) the brightest pixels are more textured
than the darkest. Each is scaled by its no-information level, clipped to ±3 and summed; the sign
decides. **No guess** (a ``ValueError`` that asks for ``--polarity keep`` or ``invert``) when
|sum| ≤ 1, or when the border cue (the one that holds for any anatomy) says the opposite of the sum
with ≥ 0.4 units on a film without an air region (``air_region``: less than 40 % of the smoothed
field within 15 % of one end of its range): chest films, whose dark lungs are textured and bright
abdomen smooth and which show little air, end here (0.16, 0.18 on the two real ones), and many skull
films cropped inside the head; on a head film with air around it the border cue is the one that
rulers, text and shutters at the border corrupt, so a decision against it is made, at low confidence.
Confidence: ``high`` when the three agree clearly, ``normal`` when the flat cue agrees and the
border cue does not disagree, else ``low`` (with a warning). Synthetic films from the real CTs
(tests/test_polarity.py, tests/synth_radiographs.py; constants chosen on seeds 1 and 2), seeds 7,
11 and 13 held out. Session 32 (helper-70 found skull films cropped inside the head wrong at normal
confidence: 18 of 72, where 30–33 % of the field counted as an air region) raised the air-region
limit from 30 % to 40 % and capped a decision against the border cue at low confidence, chosen on
seeds 1 and 2 and that crop set, then run once on the held-out seeds (``/tmp/s32/pol/heldout.py``,
the test's loop as a script, 2026-12-07): seed 7: 98.0 % right, 1.7 % refused, 1 wrong at low
confidence; seed 11: 99.7 %, 0.3 %, none wrong; seed 13: 98.3 %, 1.7 %, none wrong; seeds 17 and
19: 99.7 % and 100 %; none wrong at high or normal confidence; about 7 % of the right decisions are
now at low confidence (with a warning). Before (2026-12-04): 99.0 / 99.7 / 98.7 % right, 0.7 / 0.3 /
1.3 % refused on seeds 7 / 11 / 13, 100 % on 17 and 19. The crop set: 22 right, 42 refused, 8 wrong,
all at low confidence (was 18 wrong at normal). **Out of its domain** (a cranial film without air
around the head, a chest film cropped inside the body), the cues can agree on the wrong answer:
crops of the two real chest films are wrong at high confidence; give ``--polarity`` for such films.
The issue's film (a collimated 8-bit lateral skull, air .40, border .51, ruler, positioner;
``synth_radiographs.issue_film``) is kept at high confidence.
``polarity="keep"`` / ``"invert"`` override it (the statistics are recorded anyway).

"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["detect_polarity", "exposed_field"]

#: border band (fraction of the short side) used by the polarity rule and the background value
BORDER_FRACTION = 0.05
#: polarity rule: rows/columns with an 85th−15th percentile spread below this are uniform (bands)
POLARITY_FLAT = 0.1
#: polarity rule: a change of the row median above this ends a shutter or padding band
POLARITY_STEP = 0.12
#: polarity rule: working resolution (long side, pixels)
POLARITY_SIDE = 160
#: polarity rule: the border cue (in units) at which its disagreement with the sum refuses a guess
POLARITY_BORDER_VOTE = 0.4
#: colour images whose 99th-percentile channel spread is at most this fraction of full scale are grey
#: polarity rule: a film with at least this fraction of its field within 15 % of one end of its range
#: (smoothed) shows an air region; the border cue's disagreement then does not refuse a decision, but
#: caps its confidence at low (a warning)
POLARITY_AIR_REGION = 0.4
#: smallest accepted side of an x-ray (pixels)
MIN_SIDE = 8


def _edge_band(med: np.ndarray, spread: np.ndarray, limit: int) -> int:
    """Width of a shutter or padding band at the start of a row (or column) profile: uniform rows
    (spread < POLARITY_FLAT) before a step of the row median (> POLARITY_STEP within 2 rows)."""
    n = len(med)
    i = 0
    while i < limit and spread[i] < POLARITY_FLAT:
        if i >= 1 and abs(med[i] - med[max(0, i - 2)]) > POLARITY_STEP and spread[i - 1] < POLARITY_FLAT:
            return i
        i += 1
    if 0 < i < limit and i + 1 < n and abs(med[i + 1] - np.median(med[:i])) > POLARITY_STEP:
        return i  # the band ends straight onto the anatomy
    return 0


def exposed_field(x: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) widths of the collimator shutters and padding on each edge: bands
    of uniform rows/columns that end in a straight step, found one after another (padding, then a
    shutter), at most 35 % of the side each."""
    H, W = x.shape
    out: list[int] = []
    for prof_axis, n in ((1, H), (1, H), (0, W), (0, W)):
        med = np.median(x, axis=prof_axis)
        spread = np.percentile(x, 85, axis=prof_axis) - np.percentile(x, 15, axis=prof_axis)
        if len(out) % 2:  # bottom / right: from the far edge
            med, spread = med[::-1], spread[::-1]
        total, limit = 0, int(0.35 * n)
        for _ in range(3):
            k = _edge_band(med[total:], spread[total:], limit - total)
            if k == 0:
                break
            total += k
        out.append(total)
    return tuple(out)  # type: ignore[return-value]


def _polarity_cues(x: np.ndarray) -> dict:
    """The three image cues of the polarity rule (positive: bone bright as it is), on the exposed field."""
    t, b, l, r = exposed_field(x)
    f = x[t : x.shape[0] - b, l : x.shape[1] - r]
    if min(f.shape) < MIN_SIDE:
        f, (t, b, l, r) = x, (0, 0, 0, 0)
    h, w = f.shape
    bw = max(1, int(0.06 * min(h, w)))
    ring = np.zeros(f.shape, bool)
    ring[:bw] = ring[-bw:] = True
    ring[:, :bw] = ring[:, -bw:] = True
    rm = np.median(f[ring])
    field_air = 0.5 - float(np.mean(f < rm)) - 0.5 * float(np.mean(f == rm))
    mu = ndimage.uniform_filter(f, 5)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(f * f, 5) - mu * mu, 0.0))
    ins = max(1, int(0.12 * min(h, w)))
    fi, si = f[ins : h - ins, ins : w - ins], sd[ins : h - ins, ins : w - ins]
    if fi.size < 16:
        fi, si = f, sd
    lo, hi = np.percentile(si, [30, 70])
    flat_side = float(np.median(fi[si >= hi]) - np.median(fi[si <= lo]))
    qlo, qhi = np.percentile(fi, [15, 85])
    s_lo, s_hi = float(si[fi <= qlo].mean()), float(si[fi >= qhi].mean())
    texture = (s_hi - s_lo) / max(s_hi + s_lo, 1e-12)
    sm = cv2.GaussianBlur(f.astype(np.float32), (0, 0), 1.5)
    p1, p99 = np.percentile(sm, [1, 99])
    rg = max(float(p99 - p1), 1e-6)
    air_region = max(float(np.mean(sm < p1 + 0.15 * rg)), float(np.mean(sm > p99 - 0.15 * rg)))
    return {
        "field_bands_tblr": [int(t), int(b), int(l), int(r)],
        "air_at_field_border": field_air,
        "flat_regions_dark": flat_side,
        "texture_bright": texture,
        "air_region": air_region,
    }


def detect_polarity(image, mask=None) -> dict:
    """The polarity rule (module docstring) on an (H, W) image in [0, 1].

    Returns ``invert`` (bool, or None where the rule refuses to guess), ``confidence`` ("high",
    "normal", "low", "none"), ``margin`` (the combined score: > 0 bone bright as it is, antisymmetric
    under ``1 − image``), ``units`` (the three cues in units, clipped: border, flat, texture),
    ``refusal`` (None, "weak": |score| <= 1, or "little air": the border cue against the sum on a
    film without an air region), the three cues and the exposed field, and ``rule``.
    """
    x = np.asarray(image, dtype=np.float64)
    if mask is not None:  # masked pixels take the image median: no cue
        x = np.where(np.asarray(mask, bool), float(np.median(x[~np.asarray(mask, bool)])), x)
    scale = min(1.0, POLARITY_SIDE / max(x.shape))
    small = (
        x
        if scale == 1
        else cv2.resize(
            x,
            (max(MIN_SIDE, round(x.shape[1] * scale)), max(MIN_SIDE, round(x.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    )
    cues = _polarity_cues(small)
    units = np.array(
        [cues["air_at_field_border"] / 0.05, cues["flat_regions_dark"] / 0.01, cues["texture_bright"] / 0.1]
    )
    units = np.clip(units, -3, 3)
    score = float(units.sum())
    d = np.sign(score)
    # air at the field's border is the cue that holds for any anatomy; where it has something to say
    # (>= POLARITY_BORDER_VOTE units) and says the opposite of the sum, the cues disagree: no guess,
    # unless the film shows a large region at one end of its range (air around a head: the other
    # cues read it; rulers, text and shutters at the border corrupt the border cue instead). A film
    # the body fills (a chest) has no such region: its dark lungs are textured, its abdomen smooth.
    disagree = np.sign(units[0]) != d and abs(units[0]) >= POLARITY_BORDER_VOTE
    refusal = None
    if abs(score) <= 1:
        refusal = "weak"
    elif disagree and cues["air_region"] < POLARITY_AIR_REGION:
        refusal = "little air"
    if refusal:
        invert, conf = None, "none"
    else:
        invert = bool(d < 0)
        if (np.sign(units) == d).all() and (np.abs(units) > 1).all():
            conf = "high"
        elif np.sign(units[1]) == d and abs(score) > 2 and not disagree:
            conf = "normal"
        else:  # weak, or against the border cue on a film with an air region: decided, with a warning
            conf = "low"
    return {
        "invert": invert,
        "confidence": conf,
        "margin": score,
        "units": [float(u) for u in units],
        "refusal": refusal,
        **cues,
        "rule": (
            "on the exposed field (collimator shutters and padding removed): air at the field's border is "
            "dark, flat regions are darker than textured ones, the brightest pixels are more textured "
            "than the darkest; each cue in units of its no-information level, clipped to ±3, summed; "
            "|sum| <= 1, or the border cue (>= 0.4 units) against the sum on a film without an air region "
            "(< 40 % of the field within 15 % of one end of its range): no decision; against the border cue "
            "with an air region: low confidence"
        ),
    }
