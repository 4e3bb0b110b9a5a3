"""The qualitative figures: renders of example volumes (paper Figs. 5/17 and 7, and the example row of
Fig. 9). Their inputs are the qualitative examples of :mod:`model.examples` (rows of view volumes
(D, h, w) in their x-ray's camera frame, densities in [0, 1]); every render goes through
:func:`model.applications.novel_views` at :func:`model.applications.display_grid`. Each ``fig_*``
writes one PNG and returns its path (:mod:`model.plotting`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import applications as A
from .evaluate import depth_resample, dssim
from .fusion import render_view, rerender_error
from .plotting import method_colour, method_label, new_figure, save_png

__all__ = ["fig_qualitative", "fig_slice_views", "fusion_panels", "slice_view_renders"]

_VOLUME_KEYS = ("ours", "truth", "nn", "oracle", "mean")


def fig_qualitative(rows, out_png, *, novel_deg: float = 60.0, mode: str | None = None, backend: str = "auto") -> Path:
    """Paper Fig. 5/17: a grid with one row per sample.

    ``rows``: a non-empty list of dicts with ``xray`` (H, W) opacity in [0, 1] and view volumes
    (D, h, w) in that x-ray's camera frame under ``ours``, ``truth`` (ground truth), ``nn``,
    ``oracle`` and ``mean`` (any may be absent; a column appears when some row has it), plus an optional
    ``title`` (str, the row label). Columns: the input x-ray, then for each volume its render from
    the original view (0°) and from a novel view turned ``novel_deg`` about the image-vertical axis
    (:func:`model.applications.novel_views`, at :func:`model.applications.display_grid`: at least
    128² pixels, coarse volumes sampled trilinearly). ``mode``: ``"surface"`` (iso 0.1, the paper's
    renders; the default when ``model.surface`` exists) or ``"xray"`` (the default otherwise) or
    ``"depth"``.
    """
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError("rows must be a non-empty list of dicts {xray, ours, truth, nn, oracle, mean, title}")
    if mode is None:
        mode = "surface" if A.surface_available() else "xray"
    if mode not in ("surface", "xray", "depth"):
        raise ValueError(f"mode must be 'surface', 'xray' or 'depth', got {mode!r}")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ValueError(f"row {i} must be a dict, got {type(r).__name__}")
        if "xray" not in r:
            raise ValueError(f"row {i} lacks 'xray'")
        unknown = set(r) - {"xray", "title", *_VOLUME_KEYS}
        if unknown:
            raise ValueError(f"row {i} has unknown keys {sorted(unknown)}")
    keys = [k for k in _VOLUME_KEYS if any(k in r for r in rows)]
    if not keys:
        raise ValueError("no row has a volume (ours, truth, nn, oracle or mean)")
    ncol = 1 + 2 * len(keys)
    cell = 1.55
    fig = new_figure(cell * ncol, cell * len(rows) + 0.9)
    axes = fig.subplots(len(rows), ncol, squeeze=False)
    for i, r in enumerate(rows):
        x = np.asarray(r["xray"], dtype=np.float64)
        if x.ndim != 2 or not np.isfinite(x).all():
            raise ValueError(f"row {i}: xray must be a finite 2D image, got shape {x.shape}")
        axes[i, 0].imshow(np.clip(x, 0, 1), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(str(r.get("title", f"sample {i}")), fontsize=8)
        for j, k in enumerate(keys):
            ax0, ax1 = axes[i, 1 + 2 * j], axes[i, 2 + 2 * j]
            if k in r and r[k] is not None:
                try:
                    size, steps = A.display_grid(np.shape(r[k]))
                    imgs = A.novel_views(r[k], [0.0, novel_deg], mode=mode, size=size, steps=steps, backend=backend)
                except ValueError as e:
                    raise ValueError(f"row {i}, {k}: {e}") from e
                ax0.imshow(imgs[0], cmap="gray", vmin=0, vmax=1)
                ax1.imshow(imgs[1], cmap="gray", vmin=0, vmax=1)
            else:
                for ax in (ax0, ax1):
                    ax.imshow(np.full((2, 2), 0.92), cmap="gray", vmin=0, vmax=1)
                    ax.text(0.5, 0.5, "not given", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("Input x-ray", fontsize=8)
    for j, k in enumerate(keys):
        for c, view in ((1 + 2 * j, "original view"), (2 + 2 * j, f"novel view ({novel_deg:g}°)")):
            axes[0, c].set_title(f"{method_label(k)}\n{view}", fontsize=8, color=method_colour(k))
            for ax in axes[:, c]:
                for s in ax.spines.values():
                    s.set_edgecolor(method_colour(k))
                    s.set_linewidth(1.5)
    what = {"surface": "iso-surface renders (iso 0.1)", "xray": "x-ray re-renders", "depth": "first-hit depth"}[mode]
    fig.suptitle(f"Qualitative results (paper Figs. 5, 17): {what}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96), pad=0.4, h_pad=0.3, w_pad=0.3)
    return save_png(fig, out_png)


def slice_view_renders(
    vol, counts: Sequence[int], angles_deg: Sequence[float], *, mode: str = "surface", backend: str = "auto"
) -> dict:
    """The cells of Fig. 7 for one (D, H, W) view volume: ``{count: (images, dssims)}`` for every
    ``count`` in ``counts`` (each < D) and for D itself. ``images`` (len(angles), S, S) are renders
    (:func:`model.applications.novel_views`) of the volume box-averaged along depth to ``count``
    slices and linearly up-sampled back (:func:`model.evaluate.depth_resample`, as the slice-count
    analysis; it stays in [0, 1]), at :func:`model.applications.display_grid`; ``dssims``
    (len(angles),) their DSSIM to the full-depth render of the same view (0 for D)."""
    v = A.check_view_volume(vol)
    depth = v.shape[0]
    size, steps = A.display_grid(v.shape)
    full = A.novel_views(v, angles_deg, mode=mode, size=size, steps=steps, backend=backend)
    out = {depth: (full, np.zeros(len(full)))}
    for c in counts:
        if not 0 < int(c) < depth:
            raise ValueError(f"slice count {c} is not between 1 and the depth {depth} - 1")
        vr = depth_resample(torch.from_numpy(v)[None], int(c))[0].numpy()
        imgs = A.novel_views(vr, angles_deg, mode=mode, size=size, steps=steps, backend=backend)
        out[int(c)] = (imgs, np.array([dssim(imgs[a], full[a]) for a in range(len(full))]))
    return out


def fig_slice_views(
    rows, out_png, *, slice_counts: Sequence[int] = (8, 16, 32, 64), novel_deg: float = 60.0, backend: str = "auto"
) -> Path:
    """Paper Fig. 7: what fewer depth slices look like.

    For the first row of ``rows`` (the :func:`fig_qualitative` rows) that has ``truth`` and/or ``ours``
    (D, h, w) view volumes: each volume box-averaged along depth to every count in ``slice_counts``
    below D and linearly up-sampled back (:func:`model.evaluate.depth_resample`, the slice-count
    analysis), then rendered as iso-surfaces (iso 0.1) from the x-ray's view and from a novel view
    turned ``novel_deg`` about the image-vertical axis (where the depth steps show), next to the
    full-depth volume (:func:`slice_view_renders`). Each cell is labelled with its DSSIM to the
    full-depth render of that view; these renders go through
    :func:`model.applications.novel_views`, so the values are close to, not the same as, Fig. 8a's.
    """
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError("rows must be a non-empty list of dicts with 'truth' and/or 'ours' view volumes")
    row = next(
        (r for r in rows if isinstance(r, dict) and (r.get("truth") is not None or r.get("ours") is not None)), None
    )
    if row is None:
        raise ValueError("no row has a 'truth' or 'ours' view volume")
    mode = "surface" if A.surface_available() else "xray"
    keys = [k for k in ("truth", "ours") if row.get(k) is not None]
    vols = {k: A.check_view_volume(row[k], name=k) for k in keys}
    depth = vols[keys[0]].shape[0]
    counts = sorted({int(c) for c in slice_counts if 0 < int(c) < depth})
    if not counts:
        raise ValueError(f"no slice count below the volumes' depth {depth} in {list(slice_counts)}")
    angles = (0.0, float(novel_deg))
    cols = counts + [depth]
    fig = new_figure(1.6 * len(cols) + 1.0, 1.55 * 2 * len(keys) + 0.8)
    axes = fig.subplots(2 * len(keys), len(cols), squeeze=False)
    for i, k in enumerate(keys):
        cells = slice_view_renders(vols[k], counts, angles, mode=mode, backend=backend)
        for j, c in enumerate(cols):
            imgs, d = cells[c]
            labels = ["full depth"] * 2 if c == depth else [f"DSSIM {d[a]:.3f}" for a in range(2)]
            for a in range(2):
                ax = axes[2 * i + a, j]
                ax.imshow(imgs[a], cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(labels[a], fontsize=7)
                for sp in ax.spines.values():
                    sp.set_edgecolor(method_colour(k))
                    sp.set_linewidth(1.5)
                if j == 0:
                    view = "original view" if a == 0 else f"novel view ({novel_deg:g}°)"
                    ax.set_ylabel(f"{method_label(k)}\n{view}", fontsize=8, color=method_colour(k))
                if i == 0 and a == 0:
                    ax.set_title(f"{c} slices" + (" (all)" if c == depth else ""), fontsize=8)
    title = row.get("title")
    what = "iso-surface renders (iso 0.1)" if mode == "surface" else "x-ray re-renders"
    fig.suptitle(
        "Depth down-sampled to fewer slices and up again (paper Fig. 7)\n" + what + (f", {title}" if title else ""),
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93), pad=0.4, h_pad=0.4, w_pad=0.3)
    return save_png(fig, out_png)


def fusion_panels(example: dict, *, chi: float = 10.0, backend: str = "auto") -> list[tuple[str, np.ndarray]]:
    """The example row of Fig. 9 (:func:`model.figures.fig_fusion`): ``(title, image)`` pairs, the
    input x-ray, then for ``fused`` and ``nofusion`` the x-ray re-rendered from the volume
    (``1 − exp(−chi · mean over depth)``, with its max |difference| to the input clamped at
    ``1 − exp(−chi)``, :func:`model.fusion.rerender_error`) and its render
    (iso-surface if ``model.surface`` exists, else first-hit depth). ``example``: ``xray`` (H, W),
    view volumes ``fused`` and ``nofusion`` (D, h, w), optional ``settings`` ``{"beta", "fusion_at"}``
    (the evaluation's fusion, :mod:`model.examples`: named in the fused panels' titles)."""
    for k in ("xray", "fused", "nofusion"):
        if k not in example:
            raise ValueError(f"fusion example lacks {k!r} (needs xray, fused, nofusion)")
    x = np.asarray(example["xray"], dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"fusion example xray must be 2D, got shape {x.shape}")
    shade = "surface" if A.surface_available() else "depth"
    panels = [("input x-ray", np.clip(x, 0, 1))]
    for k, lab, how in (("fused", "fusion", _fusion_label(example.get("settings"))), ("nofusion", "no fusion", "")):
        v = A.check_view_volume(example[k], name=k)
        re = render_view(v, chi=chi)
        diff = f"max |Δ| = {rerender_error(v, x, chi=chi):.2g}" if re.shape == x.shape else f"{re.shape[0]}² px"
        panels.append((f"{lab}: re-rendered x-ray{how}\n{diff}", re))
        panels.append(
            (
                f"{lab}: {'iso-surface' if shade == 'surface' else 'depth'}{how}",
                A.novel_views(v, [0.0], mode=shade, backend=backend)[0],
            )
        )
    return panels


def _fusion_label(settings: dict | None) -> str:
    """A line ``β = 3, target grid`` of a fusion example's ``settings`` (empty without)."""
    if not settings:
        return ""
    where = "target grid" if settings.get("fusion_at") == "target" else "x-ray grid"
    return f"\nβ = {float(settings['beta']):g}, {where}"
