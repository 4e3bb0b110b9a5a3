"""Slice movies (any container/codec this OpenCV's FFmpeg decodes): one frame = one z slice, uint8
grey (BT.601 luma of colour frames). Frames are counted by decoding; a container that announces more
frames than decode is a truncated file (``ValueError``). No spacing."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .common import _colour_spread, _refuse_text, _to_grey, _warn_colour

_MAX_HINT = 100_000  # frame-count hints above this are not trusted for preallocation


def _read_movie(p: Path) -> tuple[np.ndarray, None]:
    """Slice movie → (n, h, w) uint8 grey; frames counted by decoding (module docstring)."""
    _refuse_text(p, "movie")
    cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise ValueError(
                f"{p}: OpenCV/FFmpeg cannot open this movie (truncated or corrupt file, or a codec/container "
                "this build does not decode)"
            )
        announced = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        announced = int(announced) if math.isfinite(announced) and 0 < announced <= 1e9 else 0
        buf: np.ndarray | None = None
        frame = None
        n = 0
        spread = 0.0
        while True:
            ok, frame = cap.read(frame)
            if not ok or frame is None or frame.size == 0:
                break
            if buf is None:
                shape0 = frame.shape
                # the announced count (capped at 2 GiB of frames) sizes the buffer; it grows if short
                cap_frames = max(64, (2 << 30) // max(1, frame.shape[0] * frame.shape[1] * frame.itemsize))
                hint = min(announced, cap_frames) if 0 < announced <= _MAX_HINT else 64
                buf = np.empty((hint,) + shape0[:2], dtype=frame.dtype)
            elif frame.shape != shape0:
                raise ValueError(
                    f"{p}: frame {n} has size {frame.shape[1]}×{frame.shape[0]} but frame 0 has "
                    f"{shape0[1]}×{shape0[0]}; every slice of a movie must have the same size"
                )
            if n == buf.shape[0]:  # grow in place (realloc), 1.5× at a time
                buf.resize((n + max(16, n // 2),) + buf.shape[1:], refcheck=False)
            if frame.ndim == 2:
                buf[n] = frame
            else:
                if n % 8 == 0:
                    spread = max(spread, _colour_spread(frame))
                buf[n] = _to_grey(frame, "bgr")
            n += 1
    finally:
        cap.release()
    if buf is None or n == 0:
        raise ValueError(f"{p}: the movie holds no decodable frames (zero frames, or a truncated/corrupt file)")
    if announced and n < announced:
        raise ValueError(
            f"{p}: only {n} of the {announced} frames the container announces could be decoded; the movie "
            "is truncated or corrupt (re-export or re-download it)"
        )
    if n != buf.shape[0]:
        buf.resize((n,) + buf.shape[1:], refcheck=False)
    _warn_colour(p, spread)
    return buf, None
