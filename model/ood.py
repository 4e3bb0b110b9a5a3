"""Is a radiograph like the x-rays the network was trained on? An out-of-distribution check.

A network trained on our rendered x-rays has never seen a film whose specimen fills the whole image,
whose air is grey, or whose contrast is compressed by a display curve; its answer to such an input
is a guess. :func:`reference_from_store` summarises the training x-rays once (at training time; kept
in the checkpoint as ``xray_reference``) and :func:`ood_check` measures how far a prepared input is
from the nearest of them.

**Features** of an (n, n) opacity image in [0, 1] at the network's input size (:func:`xray_features`):
the fraction of pixels covered by the specimen (opacity above ``FILL_LEVEL``), the long side of the
specimen's bounding box over n, the mean opacity of the border band (air is 0 in training), and the
10th, 50th and 90th percentiles of the specimen's opacity. **Distance**: each feature divided by its
spread over the reference (median absolute deviation × 1.4826, at least ``MIN_SCALE``), the Euclidean
distance to the nearest reference x-ray. **Far** when that distance exceeds the reference's own
leave-one-out nearest distance at its 99th percentile times ``FAR_FACTOR``; the record names the
features that lie furthest outside the reference's range.

**The field's scale** (:func:`field_fill`). ``tomo infer``'s ``square="field"`` centres a square on
the film's anatomy with the anatomy's long side at a fraction ``fill`` of it. The training x-rays
have no one fill: each specimen is fitted to the cube's ball, so its projected long side depends on
the view (0.50–0.78 of the image for 90 % of the demo's). So the fill is the one at which the
input's shape is among the training x-rays': scaling the square by ``s`` scales the specimen's area
fraction by ``s²`` and its extent by ``s`` (their ratio area / extent², the shape, stays), and the
fill chosen minimises the mean distance in (area fraction, extent) to the ``FILL_NEIGHBOURS``
nearest training x-rays. With the demo checkpoint's summary, on 64 views of 4 demo species
rendered at the training scale: 0 of 64 far from the training x-rays (29 at the fixed 0.75), the fill
off by a mean |log ratio| of .087 (0.75: .146); docs/model.md.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import StoreSamples, resize_xrays

__all__ = [
    "FEATURES",
    "xray_features",
    "reference_from_store",
    "reference_from_features",
    "ood_check",
    "field_fill",
    "shape_distance",
]

#: names of the features, in order
FEATURES = ("fill", "extent", "border", "p10", "p50", "p90")
#: opacity above which a pixel is specimen
FILL_LEVEL = 0.02
#: smallest per-feature scale (features are fractions in [0, 1])
MIN_SCALE = 0.01
#: far: distance > FAR_FACTOR × the reference's 99th-percentile leave-one-out nearest distance
FAR_FACTOR = 2.0
#: mean opacity of the border band above which an input's air reads as grey (training: 0); below it a
#: border "outside" the training range is noise in black air, and ``tomo infer`` suggests no --air subtract
GREY_AIR = 0.05
#: training x-rays summarised per reference
REFERENCE_SAMPLES = 512
#: field_fill: the fills searched (the anatomy's long side over the square's side), step FILL_STEP
FILL_RANGE = (0.30, 0.95)
FILL_STEP = 0.005
#: field_fill: training x-rays whose mean distance is minimised
FILL_NEIGHBOURS = 16


def xray_features(img) -> np.ndarray:
    """(6,) float64 features of an (n, n) opacity image in [0, 1] (see :data:`FEATURES`)."""
    x = np.asarray(img, np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, n) image, got shape {x.shape}")
    n = max(x.shape)
    b = max(1, int(round(0.05 * min(x.shape))))
    border = np.concatenate([x[:b].ravel(), x[-b:].ravel(), x[:, :b].ravel(), x[:, -b:].ravel()])
    m = x > FILL_LEVEL
    if m.any():
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        extent = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / n
        p10, p50, p90 = np.percentile(x[m], [10, 50, 90])
    else:
        extent, p10, p50, p90 = 0.0, 0.0, 0.0, 0.0
    return np.array([m.mean(), extent, border.mean(), p10, p50, p90])


def reference_from_store(store, *, size: int, species=None, n: int = REFERENCE_SAMPLES, seed: int = 0) -> dict:
    """Features of ``n`` training x-rays of ``store`` (split "train", or ``species``), each area-
    averaged to ``size`` as the network sees it: a JSON-ready dict for the checkpoint."""
    ds = StoreSamples(store, "train", species=species)
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    feats = []
    for i in idx:
        x = ds[int(i)]["xray"][None]  # (1, 1, S, S)
        feats.append(xray_features(resize_xrays(x.to(torch.float32), size)[0, 0].numpy()))
    return {
        **reference_from_features(np.stack(feats)),
        "store": str(store),
        "species": list(ds.species),
        "size": int(size),
    }


def reference_from_features(f) -> dict:
    """The reference of (n, 6) features (:func:`xray_features` of n training x-rays): the features,
    their scale (median absolute deviation × 1.4826, at least ``MIN_SCALE``) and the 99th percentile
    of each one's leave-one-out nearest distance."""
    f = np.asarray(f, np.float64)
    scale = np.maximum(1.4826 * np.median(np.abs(f - np.median(f, 0)), 0), MIN_SCALE)
    z = f / scale
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return {
        "features": FEATURES,
        "values": f.tolist(),
        "scale": scale.tolist(),
        "loo_nearest_q99": float(np.percentile(d.min(1), 99)) if len(f) > 1 else 0.0,
        "samples": int(len(f)),
    }


def ood_check(img, reference: dict | None) -> dict:
    """How far the network input ``img`` (n, n) is from the reference's training x-rays: ``far``
    (bool, None without a reference), ``distance``, ``threshold``, the input's features, the
    reference's 1st–99th percentile range per feature, ``outside`` (features beyond it) and
    ``largest_gaps`` (the two features that part it most from its nearest training x-ray)."""
    f = xray_features(img)
    feats = dict(zip(FEATURES, (float(v) for v in f)))
    if not reference:
        return {
            "far": None,
            "features": feats,
            "note": "no training reference in this checkpoint (trained before the check existed): not checked",
        }
    ref = np.asarray(reference["values"], np.float64)
    scale = np.asarray(reference["scale"], np.float64)
    gaps = ((ref - f) / scale) ** 2
    nearest = int(np.argmin(gaps.sum(1)))
    dist = float(np.sqrt(gaps[nearest].sum()))
    thr = FAR_FACTOR * max(float(reference["loo_nearest_q99"]), 1.0)
    lo, hi = np.percentile(ref, 1, axis=0), np.percentile(ref, 99, axis=0)
    outside = {
        k: {"input": float(v), "training_1_99": [float(a), float(b)]}
        for k, v, a, b in zip(FEATURES, f, lo, hi)
        if v < a - scale[FEATURES.index(k)] or v > b + scale[FEATURES.index(k)]
    }
    return {
        "far": dist > thr,
        "distance": dist,
        "threshold": thr,
        "features": feats,
        "outside": outside,
        # the features that part the input most from its nearest training x-ray (scaled gap, largest first)
        "largest_gaps": [FEATURES[i] for i in np.argsort(-gaps[nearest])[:2]],
        "reference": {k: reference.get(k) for k in ("store", "species", "samples", "size")},
        "rule": "features scaled by the reference's MAD; nearest training x-ray; far above "
        f"{FAR_FACTOR} x the reference's 99th-percentile leave-one-out distance (at least 1)",
    }


#: field_fill keeps the given fill where the input's area fraction or extent is at least this: the
#: specimen is not alone above FILL_LEVEL (grey air, a film the body fills), so scaling tells nothing
FILL_SATURATED = 0.95
_GEO = [FEATURES.index("fill"), FEATURES.index("extent")]


def shape_distance(img, reference: dict) -> float:
    """The mean distance of the network input ``img``'s (area fraction, extent) to its
    ``FILL_NEIGHBOURS`` nearest training x-rays of ``reference`` (each feature scaled by its MAD):
    what :func:`field_fill` minimises, measured on an image."""
    ref = np.asarray(reference["values"], np.float64)[:, _GEO]
    scale = np.asarray(reference["scale"], np.float64)[_GEO]
    d = np.sqrt((((xray_features(img)[_GEO] - ref) / scale) ** 2).sum(1))
    return float(np.sort(d)[: min(FILL_NEIGHBOURS, len(ref))].mean())


def field_fill(img, fill: float, reference: dict) -> tuple[float, dict]:
    """The fill at which the network input ``img`` (n, n), an x-ray squared with ``square="field"``
    at ``fill``, is shaped and sized as the training x-rays are (module docstring): ``(fill, record)``,
    the fill one of :data:`FILL_RANGE` in steps of :data:`FILL_STEP`. ``fill`` itself where the search
    cannot tell (``kept``): the area fraction or extent at least :data:`FILL_SATURATED` (grey air:
    every pixel counts as specimen), no specimen at all, or no fill nearer than ``fill``."""
    f0 = xray_features(img)[_GEO]
    ref = np.asarray(reference["values"], np.float64)[:, _GEO]
    scale = np.asarray(reference["scale"], np.float64)[_GEO]
    k = min(FILL_NEIGHBOURS, len(ref))
    at_fill = shape_distance(img, reference)
    rec = {"from_fill": float(fill), "mean_distance_at_from_fill": at_fill}
    rule = (
        f"the fill in {FILL_RANGE[0]}–{FILL_RANGE[1]} (step {FILL_STEP}) minimising the mean distance of "
        f"(area fraction x s², extent x s), s = fill / from_fill, to the {k} nearest training x-rays of the "
        "checkpoint's reference (each feature scaled by its MAD)"
    )
    if f0.max() >= FILL_SATURATED or f0.min() <= 0.0:
        why = "no specimen above the air" if f0.min() <= 0.0 else "the specimen's area or extent fills the image"
        return float(fill), {**rec, "fill": float(fill), "kept": f"{why}: scaling tells nothing", "rule": rule}
    fills = np.round(np.arange(FILL_RANGE[0], FILL_RANGE[1] + FILL_STEP / 2, FILL_STEP), 6)
    s = fills / fill
    feats = np.stack([f0[0] * s**2, f0[1] * s], 1)  # (fills, 2): area fraction, extent
    dist = np.sqrt((((feats[:, None] - ref[None]) / scale) ** 2).sum(-1))  # (fills, reference)
    mean_k = np.sort(dist, 1)[:, :k].mean(1)
    best = int(np.argmin(mean_k))
    if not mean_k[best] < at_fill - 1e-9:
        return float(fill), {**rec, "fill": float(fill), "kept": "no fill is nearer", "rule": rule}
    return float(fills[best]), {**rec, "fill": float(fills[best]), "mean_distance": float(mean_k[best]), "rule": rule}
