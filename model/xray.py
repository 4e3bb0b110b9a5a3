"""Radiographs prepared for the network: polarity, gamma, air, background and square
(:func:`prepare_xray`). Reading a file as displayed is :mod:`model.xray_files` (``read_xray``,
re-exported here); polarity detection itself is :mod:`model.polarity`.

**Gamma**. ``gamma=g`` undoes a display gamma on the polarity-corrected image: ``value = value ** g``
(``g > 1`` darkens the mid-tones, e.g. ``g = 2.2`` undoes an sRGB-like ``v ** (1/2.2)`` encoding;
``g < 1`` brightens them; 0 and 1 are fixed points). ``None`` (default) is the same as 1: no change.
The paper (§5.4) notes that display gamma can only be undone partially.

**Background value** = the median of the border band of the exposed field (inside collimator
shutters and padding, :func:`model.polarity.exposed_field`) after polarity and gamma (unmasked
pixels). Alpha-masked pixels, shutters (``square="field"``) and padding take this value.

**Air** (``air="subtract"``). A film whose air is grey (a display offset, a window that lifts the
black) is unlike the training x-rays, whose air is 0: the background value is subtracted and the
rest stretched back to 1, ``(v − bg) / (1 − bg)`` clipped at 0, after which the background value is
0. ``"keep"`` (default) leaves the values as they are; both record the level.

**Square**. The network and the view volume are square. ``square="field"`` (default): the anatomy
is found inside the exposed field (:func:`anatomy_box`: the smoothed field split by Otsu's threshold
into air and body, opened, its largest part and every part at least a fifth as large; the whole
field where the air does not reach most of the field's border, i.e. the body fills the film: then
the field's centre square, as ``crop`` does), and the square is centred on it with side ``long side
of the anatomy / fill``: ``fill`` is :data:`FIELD_FILL` (0.75: the specimens of the training
x-rays span 0.65–0.81 of the image, measured on the real CTs' cubes) unless given; ``tomo infer``
gives the one at which the input is nearest to the checkpoint's training x-rays
(:func:`model.ood.field_fill`). Shutters become the background value and the square is padded with
it where it leaves the image. Nothing is stretched: portrait and landscape films both keep their
aspect. ``square="crop"``: centre crop to the short side (offset ``(long − short) // 2``);
``square="pad"``: pad to the long side with the background value (``(long − short) // 2`` before,
the rest after). The field, the anatomy's box, the square's
box (top, left, height, width in input pixels; negative or beyond the image where padded) and the
pad widths are recorded.

**Resize for the network**: area averaging down to the network's ``input_size`` (bilinear up if the
x-ray is smaller), ``model.data.resize_xrays``.

"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from .fusion import _check_positive
from .polarity import BORDER_FRACTION, MIN_SIDE, POLARITY_AIR_REGION, detect_polarity, exposed_field
from .xray_files import read_xray, xray_file_problem

__all__ = ["prepare_xray", "read_xray", "xray_file_problem"]

#: square="field": the anatomy's long side spans this fraction of the square (module docstring)
FIELD_FILL = 0.75
#: anatomy_box: the body is brighter than air by this fraction of (90th percentile − air)
ANATOMY_LEVEL = 0.3
#: square modes of prepare_xray
SQUARE_MODES = ("field", "crop", "pad")

# --------------------------------------------------------------------------------------------------
# preparation: polarity, gamma, background, square
# --------------------------------------------------------------------------------------------------


def _border_band(shape: tuple[int, int], fraction: float = BORDER_FRACTION) -> np.ndarray:
    H, W = shape
    b = max(1, int(round(fraction * min(H, W))))
    m = np.zeros((H, W), bool)
    m[:b] = m[-b:] = True
    m[:, :b] = m[:, -b:] = True
    return m


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_gamma(gamma) -> float | None:
    return None if gamma is None else _check_positive(gamma, "gamma")


def anatomy_box(
    x: np.ndarray, field_tblr=(0, 0, 0, 0), air: float | None = None
) -> tuple[tuple[int, int, int, int], bool]:
    """``((top, left, height, width), found)``: the anatomy's box in an (H, W) image in [0, 1] with bone
    bright (after polarity), inside the exposed field ``field_tblr`` (band widths top, bottom, left, right).
    ``air``: the air's value (default: the median of the field's border band; the field's 5th percentile where that
    is lower). The smoothed field above ``air + ANATOMY_LEVEL · (90th percentile − air)``, opened (text, thin
    lines), its largest connected part and every part at least a fifth as large (where the 90th percentile is
    air, a specimen on under a tenth of the film: that of the pixels above the air). ``found`` is False where
    no air reaches the field's border or nothing stands out (the box is then the field)."""
    H, W = x.shape
    t, b, l, r = (int(v) for v in field_tblr)
    f = x[t : H - b, l : W - r]
    whole = (t, l, f.shape[0], f.shape[1])
    if min(f.shape) < MIN_SIDE:
        return whole, False
    scale = min(1.0, 256 / max(f.shape))
    small: np.ndarray = f.astype(np.float32)
    if scale < 1:
        small = cv2.resize(
            small,
            (max(MIN_SIDE, round(f.shape[1] * scale)), max(MIN_SIDE, round(f.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    sm = cv2.GaussianBlur(small, (0, 0), max(1.0, 0.01 * max(small.shape)))
    # air: the border band's median, or the 5th percentile where lower (a body that reaches the
    # border, e.g. a chest film, would otherwise be taken for air)
    air = min(float(np.median(sm[_border_band(sm.shape)])) if air is None else air, float(np.percentile(sm, 5)))
    top = float(np.percentile(sm, 90))
    if top - air < 0.02 and (sm > air + 0.02).any():  # air at the 90th percentile: a small specimen on a large film
        top = float(np.percentile(sm[sm > air + 0.02], 90))  # its own 90th percentile
    if top - air < 0.02:
        return whole, False
    body: np.ndarray = (sm > air + ANATOMY_LEVEL * (top - air)).astype(np.uint8)
    k = max(3, int(0.06 * min(small.shape)) | 1)  # removes text, rulers, wires; the box gets a margin anyway
    body = cv2.morphologyEx(body, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    ring = _border_band(body.shape, 0.02)
    if body[ring].mean() > 0.5 or not body.any():  # the body fills the film: no air around it
        return whole, False
    n, lab, stats, _ = cv2.connectedComponentsWithStats(body, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= 0.2 * areas.max())
    x0 = stats[keep, cv2.CC_STAT_LEFT].min()
    y0 = stats[keep, cv2.CC_STAT_TOP].min()
    x1 = (stats[keep, cv2.CC_STAT_LEFT] + stats[keep, cv2.CC_STAT_WIDTH]).max()
    y1 = (stats[keep, cv2.CC_STAT_TOP] + stats[keep, cv2.CC_STAT_HEIGHT]).max()
    sy, sx = f.shape[0] / body.shape[0], f.shape[1] / body.shape[1]
    ay, ax = t + int(np.floor(y0 * sy)), l + int(np.floor(x0 * sx))
    return (
        ay,
        ax,
        min(t + f.shape[0], t + int(np.ceil(y1 * sy))) - ay,
        min(l + f.shape[1], l + int(np.ceil(x1 * sx))) - ax,
    ), True


def _field_bands(x: np.ndarray) -> tuple[int, int, int, int]:
    """:func:`~model.polarity.exposed_field` on a copy of at most 512 pixels a side, band widths
    scaled back up (rounded up: a shutter's edge is never kept)."""
    s = min(1.0, 512 / max(x.shape))
    if s == 1.0:
        return tuple(int(v) for v in exposed_field(x))  # type: ignore[return-value]
    small = cv2.resize(
        x.astype(np.float32),
        (max(MIN_SIDE, round(x.shape[1] * s)), max(MIN_SIDE, round(x.shape[0] * s))),
        interpolation=cv2.INTER_AREA,
    )
    t, b, l, r = exposed_field(small.astype(np.float64))
    fy, fx = x.shape[0] / small.shape[0], x.shape[1] / small.shape[1]
    return (
        int(np.ceil(t * fy)) if t else 0,
        int(np.ceil(b * fy)) if b else 0,
        int(np.ceil(l * fx)) if l else 0,
        int(np.ceil(r * fx)) if r else 0,
    )


def _field_square(x: np.ndarray, field_tblr, bg: float, fill: float) -> tuple[np.ndarray, dict]:
    """The square="field" rule at ``fill`` (module docstring): (S, S) image and its record."""
    H, W = x.shape
    t, b, l, r = field_tblr
    (at, al, ah, aw), found = anatomy_box(x, field_tblr, air=bg)
    if found:
        S = max(MIN_SIDE, int(np.ceil(max(ah, aw) / fill)))
        top, left = int(round(at + ah / 2 - S / 2)), int(round(al + aw / 2 - S / 2))
    else:  # the body fills the field: its centre square (nothing invented around a cut-off body)
        S = min(ah, aw)
        top, left = at + (ah - S) // 2, al + (aw - S) // 2
    g = np.full((H, W), bg)
    g[t : H - b, l : W - r] = x[t : H - b, l : W - r]  # shutters and padding bands take the background value
    out = np.full((S, S), bg)
    y0, y1, x0, x1 = max(top, 0), min(top + S, H), max(left, 0), min(left + S, W)
    out[y0 - top : y1 - top, x0 - left : x1 - left] = g[y0:y1, x0:x1]
    return out, {
        "mode": "field",
        "applied": (
            f"square around the anatomy, its long side at {fill:g} of the square"
            if found
            else "centre square of the exposed field (the body fills it)"
        ),
        "field_bands_tblr": [int(v) for v in field_tblr],
        "anatomy_box": [at, al, ah, aw],
        "anatomy_found": bool(found),
        "fill": fill,
        "box": [top, left, S, S],
        "padded": bool(top < 0 or left < 0 or top + S > H or left + S > W),
        "value": bg,
    }


def prepare_xray(
    image,
    *,
    mask=None,
    polarity: str = "auto",
    gamma: float | None = None,
    square: str = "field",
    header: str | None = None,
    air: str = "keep",
    fill: float | Callable = FIELD_FILL,
) -> tuple[np.ndarray, dict]:
    """Polarity, gamma, air, alpha mask and square (module docstring) -> ``(S, S) float64`` and a
    record. ``header``: the file's own polarity statement (DICOM PhotometricInterpretation), used by
    "auto". ``air``: "keep", or "subtract" the background value (the air's grey level, a display
    offset): ``(v - bg) / (1 - bg)`` clipped at 0, so that air is black as in the training x-rays.
    ``fill``: square="field"'s share of the square taken by the anatomy's long side, in (0, 1]; or a
    chooser ``fill(square_at) -> (fill, record)``, called where the anatomy is found with ``square_at(f)``
    (the (S, S) square at fill ``f``; the polarity, gamma, air and field decided once), its record kept
    as the square's ``fill_choice`` (``tomo infer``: :func:`model.ood.field_fill`)."""
    air = _check_choice(air, "air", AIR_MODES)
    polarity = _check_choice(polarity, "polarity", ("auto", "keep", "invert"))
    square = _check_choice(square, "square", SQUARE_MODES)
    g = _check_gamma(gamma)
    chooser, fill = (fill, FIELD_FILL) if callable(fill) else (None, fill)
    if not (isinstance(fill, (int, float)) and 0 < fill <= 1):
        raise ValueError(f"fill must be in (0, 1], got {fill!r}")
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < MIN_SIDE:
        raise ValueError(f"expected an (H, W) image with sides >= {MIN_SIDE}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("the image contains NaN or infinite values")
    x = np.clip(x, 0.0, 1.0)
    rec: dict[str, Any] = {"polarity": _decide_polarity(x, mask, polarity, header)}
    if rec["polarity"]["inverted"]:
        x = 1.0 - x
    if g is not None:
        x = x**g
    rec["gamma"] = {"gamma": g, "rule": "value = value ** gamma after polarity (None: unchanged)"}
    bg, field = _background(x, mask)
    rec["background"] = {"value": bg, "rule": "median of the exposed field's border band after polarity and gamma"}
    rec["air"] = {"mode": air, "level": bg}
    if air == "subtract" and bg < 1.0:
        x = np.clip((x - bg) / (1.0 - bg), 0.0, 1.0)
        bg = rec["background"]["value"] = 0.0  # what shutters and padding take from here on
        rec["air"]["rule"] = "(v - level) / (1 - level), clipped at 0: air black; shutters and padding take 0"
    if mask is not None:
        x = np.where(np.asarray(mask, bool), bg, x)
    sq, rec["square"] = _make_square(x, square, field, bg, fill)
    if chooser is not None and square == "field" and rec["square"]["anatomy_found"]:
        chosen, choice = chooser(lambda f: _make_square(x, square, field, bg, f)[0])
        if chosen != fill:
            sq, rec["square"] = _make_square(x, square, field, bg, chosen)
        rec["square"]["fill_choice"] = choice
    x = sq
    rec["square"]["size"] = int(x.shape[0])
    return np.ascontiguousarray(x), rec


#: what ``air`` may be: keep the air's level, or subtract it (prepare_xray)
AIR_MODES = ("keep", "subtract")


def _decide_polarity(x: np.ndarray, mask, polarity: str, header: str | None) -> dict:
    """The polarity record of the (H, W) image ``x`` in [0, 1] (``inverted``: bone was dark): the
    mode's choice, or for "auto" the header's (unless the image clearly disagrees: ValueError) or
    the detector's (:func:`model.polarity.detect_polarity`; ValueError when undecided, a warning
    when uncertain)."""
    stats = detect_polarity(x, mask)
    if polarity != "auto":
        invert = polarity == "invert"
        if stats["refusal"] == "little air":  # the override decides the polarity, not whether the film fits
            warnings.warn(
                f"--polarity {polarity} decides the polarity only: {_little_air(stats)}; the network was "
                "trained on whole heads with air around them, so its answer for such a film may mean nothing",
                UserWarning,
                stacklevel=3,
            )
    elif header is not None:  # the file says how it is displayed (DICOM): trust it unless the image clearly disagrees
        invert = False
        if stats["invert"] and stats["confidence"] == "high":
            raise ValueError(
                f"polarity: the file's header ({header}) and the image disagree (the image looks "
                f"inverted, score {stats['margin']:+.2f}); pass --polarity keep or --polarity invert"
            )
        if stats["invert"] is not False:  # the image does not confirm the header: say that the header decided
            looks = "looks inverted" if stats["invert"] else "does not show which way it is"
            warnings.warn(
                f"polarity: kept as the file's header says ({header}), but the image {looks} (score "
                f"{stats['margin']:+.2f}); check the result, or pass --polarity keep or --polarity invert",
                UserWarning,
                stacklevel=3,
            )
    elif stats["invert"] is None:
        u = stats["units"]
        why = "the cues are weak" if stats["refusal"] == "weak" else _little_air(stats)
        raise ValueError(
            f"polarity cannot be decided from this image: {why} (score {stats['margin']:+.2f} = border "
            f"{u[0]:+.2f} + flat {u[1]:+.2f} + texture {u[2]:+.2f}, in units); for a skull film pass "
            "--polarity keep (bone is bright as it is) or --polarity invert"
        )
    else:
        invert = stats["invert"]
        if stats["confidence"] == "low":
            warnings.warn(
                f"polarity detection is uncertain (score {stats['margin']:+.2f}); "
                f"{'inverting' if invert else 'keeping'}; pass --polarity keep or --polarity invert to decide",
                UserWarning,
                stacklevel=3,  # prepare_xray's caller
            )
    return {
        "mode": polarity,
        "inverted": bool(invert),
        "detected": stats,
        "decided_by": polarity if polarity != "auto" else ("header: " + header if header else "image"),
    }


def _little_air(stats: dict) -> str:
    """Why a film reads like one without air around the anatomy (a polarity refusal "little air")."""
    return (
        f"the film shows little air (air region {stats['air_region']:.2f} < {POLARITY_AIR_REGION:.2f}) and the "
        "air at its border says the opposite of the other cues, as on a chest film or a crop inside the head"
    )


def _background(x: np.ndarray, mask) -> tuple[float, tuple[int, int, int, int]]:
    """``(background value, exposed field's bands (top, bottom, left, right) in pixels)``: the median
    of the field's border band, alpha-masked pixels left out (the whole image's border band when the
    field is too small; every unmasked pixel when the band is empty)."""
    field = _field_bands(x)
    band = np.zeros(x.shape, bool)
    t, b, l, r = field
    if min(x.shape[0] - t - b, x.shape[1] - l - r) >= MIN_SIDE:
        band[t : x.shape[0] - b, l : x.shape[1] - r] = _border_band((x.shape[0] - t - b, x.shape[1] - l - r))
    else:
        band, field = _border_band(x.shape), (0, 0, 0, 0)
    sel = band if mask is None else band & ~np.asarray(mask, bool)
    if not sel.any():
        sel = np.ones(x.shape, bool) if mask is None else ~np.asarray(mask, bool)
    return float(np.median(x[sel])), field


def _make_square(x: np.ndarray, square: str, field, bg: float, fill: float) -> tuple[np.ndarray, dict]:
    """The (H, W) image made square by ``square`` ("field", "crop" or "pad" with ``bg``) and the
    square's record (``box``: top, left, height, width in input pixels)."""
    H, W = x.shape
    S_short, S_long = min(H, W), max(H, W)
    if square == "field":
        return _field_square(x, field, bg, fill)
    if H == W:
        return x, {"mode": square, "applied": "none (already square)", "box": [0, 0, H, W]}
    if square == "crop":
        top, left = (H - S_short) // 2, (W - S_short) // 2
        x = x[top : top + S_short, left : left + S_short]
        return x, {"mode": "crop", "applied": "centre crop to the short side", "box": [top, left, S_short, S_short]}
    dh, dw = S_long - H, S_long - W
    pads = [dh // 2, dh - dh // 2, dw // 2, dw - dw // 2]  # top, bottom, left, right
    x = np.pad(x, ((pads[0], pads[1]), (pads[2], pads[3])), mode="constant", constant_values=bg)
    return x, {
        "mode": "pad",
        "applied": "pad to the long side with the background value",
        "pad_top_bottom_left_right": pads,
        "value": bg,
        "box": [-pads[0], -pads[2], S_long, S_long],
    }
