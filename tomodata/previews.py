"""The project's PNG files: the pixel convention (:func:`to_png`), the one writer (:func:`write_png`:
atomic, an error where it cannot write), grids of images (:func:`tile`), and the x-ray previews of
``tomo phantom --preview``, ``tomo render``, ``tomo build-demo`` and ``tomo render-species --previews``
(one 8-bit grey PNG per image and a contact sheet).

Images are float opacity in [0, 1], shape (n, H, W); a PNG pixel is ``round(clip(v, 0, 1) · 255)``
(linear, no gamma: bone is bright). The sheet lays the images out row by row on a grid of
``ceil(sqrt(n))`` columns, black where the last row is short.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from .files import atomic_write

__all__ = ["to_png", "contact_grid", "remove_previews", "tile", "write_png", "write_previews"]


def to_png(img: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] → 8-bit grey (linear, no gamma: bone is bright)."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path, img: np.ndarray) -> Path:
    """Write ``img`` as a PNG file at ``path`` (atomically; the folder is made): uint8 (H, W) grey or
    (H, W, 3) RGB as it is, any other dtype as opacity through :func:`to_png`. ValueError naming the
    path where the image cannot be encoded (OpenCV's ``imwrite`` only returns False)."""
    a = np.asarray(img)
    if a.dtype != np.uint8:
        a = to_png(a)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or 0 in a.shape:
        raise ValueError(f"{path}: a PNG image is (H, W) grey or (H, W, 3) RGB, not {a.shape}")
    ok, buf = cv2.imencode(".png", a[..., ::-1] if a.ndim == 3 else a)  # OpenCV's colour order is BGR
    if not ok:  # pragma: no cover - imencode fails only on shapes refused above
        raise ValueError(f"{path}: OpenCV could not encode the PNG")
    return atomic_write(path, lambda tmp: tmp.write_bytes(buf.tobytes()))


def tile(images, cols: int, *, pad: int = 0, border: int = 0) -> np.ndarray:
    """The grid of ``images`` (n, H, W[, C], or a list of such equal arrays) ``cols`` a row (fewer where
    n < cols), filled row by row, ``pad`` pixels between them and ``border`` around; zeros elsewhere,
    in their dtype."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    shape = (rows * h + (rows - 1) * pad + 2 * border, cols * w + (cols - 1) * pad + 2 * border)
    out = np.zeros(shape + images.shape[3:], images.dtype)
    for i, img in enumerate(images):
        y, x = border + (i // cols) * (h + pad), border + (i % cols) * (w + pad)
        out[y : y + h, x : x + w] = img
    return out


def contact_grid(images: np.ndarray) -> np.ndarray:
    """The (rows·H, cols·W) uint8 sheet of ``images`` (n, H, W) opacity: ``cols = ceil(sqrt(n))``,
    filled row by row."""
    return tile(to_png(images), int(np.ceil(np.sqrt(len(images)))))


def write_previews(images: np.ndarray, out_dir: Path, *, prefix: str = "xray", limit: int = 16) -> list[Path]:
    """PNG files ``<prefix>_000.png``, ... of the first ``limit`` images (n, H, W) opacity and a contact
    sheet ``<prefix>_sheet.png`` of them, in ``out_dir`` (created); their paths, the sheet last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    shown = images[:limit]
    for i, img in enumerate(shown):
        paths.append(write_png(out_dir / f"{prefix}_{i:03d}.png", to_png(img)))
    paths.append(write_png(out_dir / f"{prefix}_sheet.png", contact_grid(shown)))
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
