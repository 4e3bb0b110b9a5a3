"""Synthetic clinical-looking radiographs from the real CT volumes in ../shared/data/real, for the
polarity tests (tests/test_polarity.py).

Each film: a Beer–Lambert x-ray (tomodata.render, bone bright, air 0) of a real head CT from a
lateral, frontal or oblique view, placed on a portrait or landscape detector (air around it, the head
sometimes cut by an edge), with film fog and exposure scaling, a heel-effect ramp (up to .08 across
the film), a display curve (gamma 0.5 … 2.2 or an S-curve), quantum noise (growing with the opacity:
fewer photons behind bone), and the artefacts of real films: collimator shutters (bright or dark
bands on 1–3 edges), padding (exactly constant borders), burned-in text, a ruler with ticks, a nasal
positioner; then, for half of them, the whole film inverted (air bright); 60 % stored in 8 bits.
``make_films(n, seed)`` returns ``[(image (H, W) float in [0, 1], inverted: bool, description)]``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from tomodata.ingest import cube_specimen
from tomodata.render import render_xrays

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SIZE = 48  # cube side: enough for a film's structure, fast to render


@lru_cache(maxsize=1)
def volumes() -> dict[str, np.ndarray]:
    """Real head CTs as SIZE³ density cubes in the canonical pose (tomodata.ingest)."""
    specs = {
        "cthead": dict(path=REAL / "cthead-8bit", spacing=(2, 1, 1), orientation="x,z,-y", crop="largest"),
        "cranium": dict(
            path=REAL / "invesalius-cranium/cranium.nhdr", window="hu-bone", orientation="x,-z,y", crop="largest"
        ),
        "headsq": dict(path=REAL / "vtk-headsq/quarter.nhdr", window=(500, 3000), crop="largest"),
    }
    mice = sorted((REAL / "mouse-ct-atlas").glob("*.nii.gz"))[:2]
    for k, m in enumerate(mice):
        specs[f"mouse{k}"] = dict(path=m)
    out = {}
    for name, s in specs.items():
        path = s.pop("path")
        out[name] = cube_specimen(path, size=SIZE, **s)[0]
    return out


def _views(rng) -> tuple[np.ndarray, str]:
    """A lateral, frontal or oblique camera rotation (camera → volume; the cube's canonical axes)."""
    kind = rng.choice(["lateral", "frontal", "oblique"])
    if kind == "lateral":  # along z (left-right)
        d = np.array([1.0, 0.0, 0.0])
    elif kind == "frontal":  # along x (anterior-posterior)
        d = np.array([0.0, 0.0, 1.0])
    else:
        d = rng.normal(size=3)
    d = d / np.linalg.norm(d)
    up = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(up, d)
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    return np.stack([u, v, d], axis=1), kind


def _curve(x, rng) -> tuple[np.ndarray, str]:
    if rng.random() < 0.7:
        g = float(rng.uniform(0.5, 2.2))
        return x ** (1.0 / g), f"gamma {g:.2f}"
    k = float(rng.uniform(4, 10))
    y = 1 / (1 + np.exp(-k * (x - 0.5)))
    lo, hi = 1 / (1 + np.exp(k * 0.5)), 1 / (1 + np.exp(-k * 0.5))
    return (y - lo) / (hi - lo), f"S-curve {k:.1f}"


def _artefacts(img, rng) -> tuple[np.ndarray, list[str]]:
    H, W = img.shape
    notes = []
    if rng.random() < 0.7:  # collimator shutters: bright (unexposed) or, on some systems, dark
        bright = rng.random() < 0.75
        for edge in rng.choice(4, size=int(rng.integers(1, 4)), replace=False):
            w = int(rng.uniform(0.03, 0.2) * (H if edge < 2 else W))
            val = rng.uniform(0.85, 1.0) if bright else rng.uniform(0.0, 0.1)
            band = val + rng.normal(0, 0.01, size=(w, W) if edge < 2 else (H, w))
            if edge == 0:
                img[:w] = band
            elif edge == 1:
                img[H - w :] = band
            elif edge == 2:
                img[:, :w] = band
            else:
                img[:, W - w :] = band
        notes.append(f"{'bright' if bright else 'dark'} shutters")
    if rng.random() < 0.5:  # burned-in text
        colour = float(rng.choice([0.0, 1.0]))
        org = (int(rng.uniform(0.05, 0.6) * W), int(rng.uniform(0.1, 0.95) * H))
        mask = np.zeros((H, W), np.uint8)  # OpenCV draws text on 8-bit images only
        cv2.putText(
            mask,
            str(rng.choice(["L", "R", "PA", "LAT 12/03", "AP"])),
            org,
            cv2.FONT_HERSHEY_SIMPLEX,
            float(rng.uniform(0.3, 0.7)),
            255,
            1,
            cv2.LINE_AA,
        )
        a = mask / 255.0
        img = img * (1 - a) + colour * a
        notes.append("text")
    if rng.random() < 0.3:  # a ruler: a bright bar with ticks
        y0 = int(rng.uniform(0.6, 0.9) * H)
        img[y0 : y0 + 3, W // 8 : 7 * W // 8] = 0.95
        img[y0 - 3 : y0, W // 8 : 7 * W // 8 : 6] = 0.95
        notes.append("ruler")
    if rng.random() < 0.2:  # a nasal positioner
        c = (int(rng.uniform(0.3, 0.9) * W), int(rng.uniform(0.3, 0.7) * H))
        mask = np.zeros((H, W), np.uint8)
        cv2.ellipse(mask, c, (int(0.12 * W), int(0.03 * H)), float(rng.uniform(0, 180)), 0, 360, 255, -1)
        img = np.where(mask > 0, np.maximum(img, 0.9), img)
        notes.append("positioner")
    if rng.random() < 0.3:  # padding: exactly constant borders
        val = float(rng.choice([0.0, 1.0]))
        p = int(rng.uniform(0.02, 0.1) * min(H, W))
        edges = rng.choice(4, size=int(rng.integers(1, 5)), replace=False)
        for edge in edges:
            sl = [
                (slice(0, p), slice(None)),
                (slice(H - p, H), slice(None)),
                (slice(None), slice(0, p)),
                (slice(None), slice(W - p, W)),
            ][edge]
            img[sl] = val
        notes.append(f"padding {val:g}")
    return img, notes


def make_films(n: int, seed: int) -> list[tuple[np.ndarray, bool, str]]:
    vols = volumes()
    names = sorted(vols)
    rng = np.random.default_rng(seed)
    # the realism added later (heel effect, 8 bits) draws from its own stream, so that each seed's films
    # keep their anatomy, view and artefacts
    rng2 = np.random.default_rng([seed, 2])
    films = []
    for _ in range(n):
        name = names[int(rng.integers(len(names)))]
        rot, kind = _views(rng)
        x = render_xrays(vols[name], rot[None], size=96, steps=48, chi=float(rng.uniform(4, 10)), backend="cpu")[0]
        H, W = (120, 96) if rng.random() < 0.5 else (96, 120)  # portrait or landscape detector
        canvas = np.zeros((H, W))
        scale = float(rng.uniform(0.8, 1.25))
        s = int(96 * scale)
        xs = cv2.resize(x, (s, s), interpolation=cv2.INTER_AREA)
        top, left = int(rng.integers(-s // 6, H - 5 * s // 6 + 1)), int(rng.integers(-s // 6, W - 5 * s // 6 + 1))
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + s, H), min(left + s, W)
        canvas[t0:t1, l0:l1] = xs[t0 - top : t1 - top, l0 - left : l1 - left]
        fog, gain = float(rng.uniform(0.0, 0.2)), float(rng.uniform(0.6, 1.0))
        img = fog + gain * canvas
        # heel effect and uneven processing: a smooth ramp of the background across the film
        ang, amp = float(rng2.uniform(0, 2 * np.pi)), float(rng2.uniform(0.0, 0.08))
        yy, xx = np.mgrid[0:H, 0:W]
        img = img + amp * (np.cos(ang) * (xx / W - 0.5) + np.sin(ang) * (yy / H - 0.5))
        img, curve = _curve(np.clip(img, 0, 1), rng)
        # quantum noise: more photons reach the detector through air than through bone, so the noise of
        # an opacity image grows with the opacity (0.5 sigma in air, 1.5 sigma behind the densest bone)
        img = img + rng.normal(0, float(rng.uniform(0.003, 0.03)), size=img.shape) * (0.5 + np.clip(img, 0, 1))
        img, notes = _artefacts(np.clip(img, 0, 1), rng)
        inverted = bool(rng.random() < 0.5)
        img = np.clip(img, 0, 1)
        img = 1.0 - img if inverted else img
        bits = rng2.random() < 0.6  # most clinical exports are 8-bit PNG or JPEG
        if bits:
            img = np.round(img * 255) / 255
        films.append(
            (
                img,
                inverted,
                f"{name} {kind} {H}x{W} {curve} heel {amp:.2f} {'8-bit ' if bits else ''}"
                f"{', '.join(notes)}{' INVERTED' if inverted else ''}",
            )
        )
    return films


def issue_film(width: int = 3) -> np.ndarray:
    """The real failure that opened issue #13, made from the real 8-bit head CT (cthead): a portrait
    200×150 8-bit lateral skull film, bone bright, air dark grey (≈ .40), a bright collimator band
    (``width`` pixels, .9) along the top and left edges that lifts the border band's mean to ≈ .50, a
    ruler below the head and a nasal positioner in front of the face; gamma 1, light noise. Not
    inverted (the right answer is "keep")."""
    rot = np.stack([np.array([0.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])], axis=1)
    x = render_xrays(volumes()["cthead"], rot[None], size=96, steps=48, chi=7.0, backend="cpu")[0]
    H, W, s = 200, 150, 190
    xs = cv2.resize(x, (s, s), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((H, W))
    canvas[4 : 4 + s, :] = xs[:, 20 : 20 + W]  # the head fills most of the film, off-centre, cut on one side
    ys, xs_ = np.nonzero(canvas > 0.05)
    img = 0.40 + 0.55 * canvas + np.random.default_rng(13).normal(0, 0.01, (H, W))
    y0 = min(ys.max() + 6, H - 12)
    img[y0 : y0 + 3, 30:120] = 0.95  # ruler below the head
    img[y0 - 3 : y0, 30:120:8] = 0.95  # its ticks
    mask = np.zeros((H, W), np.uint8)  # nasal positioner: a bright bar against the face
    cv2.ellipse(mask, (max(int(xs_.min()) + 4, 12), int(np.median(ys))), (14, 4), 20.0, 0, 360, 255, -1)
    img = np.where(mask > 0, 0.92, img)
    img[:width] = 0.9  # collimator band, top
    img[:, :width] = 0.9  # and left
    return np.round(np.clip(img, 0, 1) * 255) / 255  # 8-bit
