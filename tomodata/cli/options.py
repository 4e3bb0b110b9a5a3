"""Option types of the ``tomo`` commands (also used by :mod:`model.cli_parsers`) and the renderer's
options shared by several commands."""

from __future__ import annotations

import argparse
import math

from ..store_settings import IMAGE_ENCODINGS, StoreSettings
from ..views import VIEW_SETS

__all__ = ["positive_int", "non_negative_int", "positive_float", "finite_float", "render_opts"]


def _int_at_least(text: str, least: int, shown: str) -> int:
    """``text`` as an integer >= ``least``, else argparse's usage error (exit status 2) naming ``shown``."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"expected an integer {shown}, got {v}")
    return v


def positive_int(text: str) -> int:
    """An option type: an integer > 0 (else argparse's usage error, exit status 2)."""
    return _int_at_least(text, 1, "> 0")


def non_negative_int(text: str) -> int:
    """An option type: an integer >= 0 (a count where 0 means none; else a usage error, exit status 2)."""
    return _int_at_least(text, 0, ">= 0")


def positive_float(text: str) -> float:
    """An option type: a finite number > 0 (else argparse's usage error, exit status 2)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return v


def finite_float(text: str) -> float:
    """An option type: a finite number (not nan or inf; else argparse's usage error, exit status 2)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


def image_opts(q, size: int = StoreSettings.image_size) -> None:
    """A store's image settings (image side in pixels, samples per ray, χ); defaults: StoreSettings'."""
    q.add_argument("--size", type=positive_int, default=size, help="image side in pixels (default %(default)s)")
    q.add_argument(
        "--steps", type=positive_int, default=StoreSettings.steps, help="samples per ray (default %(default)s)"
    )
    q.add_argument(
        "--chi", type=positive_float, default=StoreSettings.chi, help="extinction coefficient χ (default %(default)s)"
    )


def view_set_opts(q) -> None:
    """A store's view set, cube side and image encoding; defaults: StoreSettings'."""
    d = StoreSettings
    q.add_argument("--views", type=positive_int, default=d.n_views, help="views per species (default %(default)s)")
    q.add_argument("--seed", type=int, default=d.view_seed, help="view seed (default %(default)s)")
    q.add_argument(
        "--view-sets",
        choices=list(VIEW_SETS),
        default=d.view_sets,
        help="every species from the same views, or each from its own (seeded by the seed and its name; "
        "default %(default)s)",
    )
    q.add_argument("--volume-size", type=positive_int, default=d.volume_size, help="cube side (default %(default)s)")
    q.add_argument("--encoding", choices=list(IMAGE_ENCODINGS), default=d.image_encoding, help="image encoding")


def render_opts(q, size: int = StoreSettings.image_size) -> None:
    """The renderer's options (:func:`image_opts` and the backend)."""
    image_opts(q, size)
    q.add_argument("--backend", choices=["auto", "cpu", "cuda"], default="auto", help="renderer backend")
