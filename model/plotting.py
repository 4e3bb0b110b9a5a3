"""The figures' shared conventions (:mod:`model.figures`, :mod:`model.qualitative`): methods in the
order ours, ours (no fusion), NN, Oracle, mean (then any others, sorted) with the same label and
colour in every figure, and figures drawn with matplotlib's object API
(``matplotlib.figure.Figure`` on the Agg canvas: no display, no pyplot state, nothing global),
saved as PNG at :data:`DPI` on white.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "METHOD_COLOURS",
    "METHOD_LABELS",
    "METHOD_ORDER",
    "method_colour",
    "method_label",
    "new_figure",
    "ordered_methods",
    "save_png",
]

METHOD_ORDER = ("ours", "ours_nofusion", "nn", "oracle", "mean")
METHOD_LABELS = {
    "ours": "Ours",
    "ours_nofusion": "Ours (no fusion)",
    "nn": "NN",
    "oracle": "Oracle",
    "mean": "Mean (train)",
    "truth": "Ground truth",
}
METHOD_COLOURS = {
    "ours": "#d95f02",
    "ours_nofusion": "#f4a582",
    "nn": "#1b9e77",
    "oracle": "#7570b3",
    "mean": "#a6761d",
    "truth": "#444444",
}
_EXTRA_COLOURS = ("#e7298a", "#66a61e", "#e6ab02", "#666666")
#: dots per inch of every figure (a figure of w x h inches is w·DPI x h·DPI pixels)
DPI = 150


def new_figure(w: float, h: float) -> Figure:
    """A figure of ``w`` x ``h`` inches at :data:`DPI`."""
    return Figure(figsize=(w, h), dpi=DPI)


def save_png(fig, out_png) -> Path:
    """Save ``fig`` as the PNG ``out_png`` (parent folders made; ``ValueError`` for another suffix)."""
    out = Path(out_png)
    if out.suffix.lower() != ".png":
        raise ValueError(f"out_png must end in .png, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, facecolor="white")
    return out


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """The distinct ``methods`` in :data:`METHOD_ORDER`, then any others sorted."""
    present = list(dict.fromkeys(str(m) for m in methods))
    known = [m for m in METHOD_ORDER if m in present]
    return known + sorted(m for m in present if m not in METHOD_ORDER)


def method_colour(method: str) -> str:
    """The method's colour (:data:`METHOD_COLOURS`; others get a fixed one from their name)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _EXTRA_COLOURS[sum(map(ord, method)) % len(_EXTRA_COLOURS)]


def method_label(method: str) -> str:
    """The method's label in figures (:data:`METHOD_LABELS`, else its name)."""
    return METHOD_LABELS.get(method, method)
