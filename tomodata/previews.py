"""PNG previews of x-rays (``tomo phantom --preview``, ``tomo render``, ``tomo build-demo``,
``tomo render-species --previews``): one 8-bit grey PNG per image and a contact sheet.

Images are float opacity in [0, 1], shape (n, H, W); a PNG pixel is ``round(clip(v, 0, 1) · 255)``
(linear, no gamma: bone is bright). The sheet lays the images out row by row on a grid of
``ceil(sqrt(n))`` columns, black where the last row is short.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

__all__ = ["to_png", "contact_grid", "remove_previews", "write_previews"]


def to_png(img: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] → 8-bit grey (linear, no gamma: bone is bright)."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def contact_grid(images: np.ndarray) -> np.ndarray:
    """The (rows·H, cols·W) uint8 sheet of ``images`` (n, H, W) opacity: ``cols = ceil(sqrt(n))``,
    filled row by row."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    s = images.shape[1:]
    sheet = np.zeros((rows * s[0], cols * s[1]), np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        sheet[r * s[0] : (r + 1) * s[0], c * s[1] : (c + 1) * s[1]] = to_png(img)
    return sheet


def write_previews(images: np.ndarray, out_dir: Path, *, prefix: str = "xray", limit: int = 16) -> list[Path]:
    """PNG files ``<prefix>_000.png``, ... of the first ``limit`` images (n, H, W) opacity and a contact
    sheet ``<prefix>_sheet.png`` of them, in ``out_dir`` (created); their paths, the sheet last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    shown = images[:limit]
    for i, img in enumerate(shown):
        p = out_dir / f"{prefix}_{i:03d}.png"
        cv2.imwrite(str(p), to_png(img))
        paths.append(p)
    p = out_dir / f"{prefix}_sheet.png"
    cv2.imwrite(str(p), contact_grid(shown))
    paths.append(p)
    return paths


def remove_previews(out_dir: Path, *, prefix: str = "xray") -> list[Path]:
    """Delete the files :func:`write_previews` names (``<prefix>_NNN.png``, ``<prefix>_sheet.png``)
    from ``out_dir`` (an earlier run's, so that a re-used folder holds only the new ones); the paths
    removed. Other files are left alone."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d{{3,}}|sheet)\.png")
    gone = [p for p in sorted(Path(out_dir).glob(f"{prefix}_*.png")) if pattern.fullmatch(p.name)]
    for p in gone:
        p.unlink()
    return gone
