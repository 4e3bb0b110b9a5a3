"""The paper's evaluation figures (§5, Figs. 6, 8 and 9) from the CSVs of ``model.evaluate``, and
:func:`write_all_figures`, which also draws the qualitative Figs. 5/17 and 7 (:mod:`model.qualitative`,
re-exported here) from example volumes. Figure file names: :mod:`model.names`.

Every ``fig_*`` function writes one PNG and returns its path; method order, labels, colours and the
matplotlib conventions are :mod:`model.plotting`'s.

Inputs (an *eval folder*, as written by ``model.evaluate``):

* ``metrics.csv``: one row per (method, sample): ``method, species, sample, view, mirrored,
  view_class, l2, mse, dssim`` and ``dssim_gauss`` (drawn in Figs. 6 and 8b where present); methods
  ``ours``, ``ours_nofusion``, ``nn``, ``oracle``, ``mean``.
* ``summary.csv``: ``method, metric, level, mean, ci_low, ci_high, n`` (95 % CI bounds, absolute
  values); ``level`` ``species`` (mean of species means, t-interval over them, n = species) or
  ``sample`` (the paper's protocol: mirrored pairs averaged, t-interval, n = pairs).
* ``tests.csv``: ``metric, method_a, method_b, level, test, statistic, p, p_holm, n``; ``test`` ``t``
  or ``wilcoxon`` (optional for the figures; ``p_holm`` too, absent from eval folders before it).
* ``summary.json`` (optional): its ``eval_split`` names the evaluated split in Fig. 6's title.
* ``view_classes.csv``: ``method, view_class, metric, mean, ci_low, ci_high, n``.
* ``slice_counts.csv``: ``slices`` plus the DSSIM mean in a column ``dssim``, ``dssim_mean`` or
  ``mean`` (with a ``metric`` column, only its ``dssim`` rows); ``method``, ``ci_low``/``ci_high``
  (or ``dssim_ci_low``/``dssim_ci_high``) optional.

A missing file or column raises ``ValueError`` naming it.
"""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tomodata.store_settings import StoreSettings

from . import figure_tables as tables
from .evaluate import LEVELS, PAPER_RESULTS, VIEW_CLASSES
from .names import (
    EVAL_METRICS,
    EVAL_SLICE_COUNTS,
    EVAL_SUMMARY_CSV,
    EVAL_VIEW_CLASSES,
    FIG_FUSION,
    FIG_METHODS,
    FIG_QUALITATIVE,
    FIG_SLICE_COUNTS,
    FIG_SLICE_VIEWS,
    FIG_VIEW_CLASSES,
)
from .plotting import (
    METHOD_COLOURS,
    METHOD_LABELS,
    METHOD_ORDER,
    method_colour,
    method_label,
    new_figure,
    ordered_methods,
    save_png,
)
from .qualitative import fig_qualitative, fig_slice_views, fusion_panels

__all__ = [
    "METHOD_ORDER",
    "METHOD_LABELS",
    "METHOD_COLOURS",
    "PAPER_MEANS",
    "VIEW_CLASS_ORDER",
    "fig_methods",
    "fig_qualitative",
    "fig_slice_counts",
    "fig_slice_views",
    "fig_fusion",
    "fig_view_classes",
    "write_all_figures",
]

#: Means reported in the paper (§5.3) for context: L2 and DSSIM, ours / NN / Oracle. The paper does
#: not state its SSIM window, so its DSSIM is shown beside both of ours.
PAPER_MEANS = {**PAPER_RESULTS, "dssim_gauss": PAPER_RESULTS["dssim"]}
#: metrics drawn where an evaluation has them (folders written before session 25 have no dssim_gauss)
OPTIONAL_METRICS = ("dssim_gauss",)
VIEW_CLASS_ORDER = VIEW_CLASSES
METRIC_LABELS = {
    "l2": "L2 volume error",
    "dssim": "DSSIM of iso-surface renders (7x7 uniform SSIM window)",
    "dssim_gauss": "DSSIM of iso-surface renders (11x11 Gaussian SSIM window)",
    "mse": "MSE",
}
METRIC_UNITS = {
    "l2": "L2 = voxel RMSE (density, lower is better)",
    "dssim": "DSSIM (unitless, lower is better)",
    "dssim_gauss": "DSSIM, Gaussian window (unitless, lower is better)",
    "mse": "MSE (density², lower is better)",
}


# ---------------------------------------------------------------------------------------------
# helpers


def _p_num(p: float) -> str:
    """A p-value without its name: ".0178", "< .0001", "1" or "n/a"."""
    if not np.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "< .0001"
    return f"{p:.3g}".replace("0.", ".", 1) if p < 1 else "1"


def _fmt_p(p: float) -> str:
    num = _p_num(p)
    return f"p {num}" if num.startswith("<") else f"p = {num}"


def _yerr(mean, lo, hi) -> np.ndarray:
    """Error-bar half-lengths (2, n) from CI bounds; NaN bounds (n < 2) give no bar."""
    mean, lo, hi = (np.asarray(a, dtype=np.float64) for a in (mean, lo, hi))
    return np.nan_to_num(np.clip(np.stack([mean - lo, hi - mean]), 0.0, None), nan=0.0)


def _errorbar(ax, xs, means, lo, hi, **kw) -> None:
    """Error bars from CI bounds, only where the bounds are finite (evaluate writes NaN for n < 2)."""
    xs, means, lo, hi = (np.asarray(a, dtype=np.float64) for a in (xs, means, lo, hi))
    ok = np.isfinite(means) & np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.errorbar(xs[ok], means[ok], yerr=_yerr(means[ok], lo[ok], hi[ok]), fmt="none", ecolor="black", **kw)


def _p_text(row) -> str:
    """A test row's p, compact, with its Holm-adjusted p where tests.csv has one that differs."""
    p, holm = float(row["p"]), float(row.get("p_holm", np.nan))
    return _p_num(p) + (f" (Holm {_p_num(holm)})" if np.isfinite(holm) and holm != p else "")


def _bracket(ax, x0: float, x1: float, y: float, h: float, text: str) -> None:
    ax.plot([x0, x0, x1, x1], [y, y + h, y + h, y], color="black", lw=0.8)
    ax.text(0.5 * (x0 + x1), y + h, text, ha="center", va="bottom", fontsize=7)


# ---------------------------------------------------------------------------------------------
# Fig. 6: methods

_LETTERS = "abcdefgh"
_METHODS_CAPTION = (
    "Left (the held-out unit is the species): bars = mean of the species means, black = its 95 % CI "
    "(t-interval over the species means), points = each species' mean (joined across methods: they are "
    "paired); brackets: paired t-test (with its Holm-adjusted p over ours' comparisons) and Wilcoxon "
    "signed-rank test on the species means, ours against each method. "
    "Right: the paper's per-sample protocol (a view and its mirror averaged, then views "
    "treated as independent, which overstates the evidence): t-interval and paired t-tests over views. "
    "Diamonds: the paper's means (§5.3), L2 ours .051, NN .067, Oracle .060; DSSIM ours .097, NN .109, "
    "Oracle .110. Mean (train): the mean training volume seen from the input's true view (no image used)."
)


def _level_means(summary, methods: Sequence[str], metric: str, level: str) -> tuple[list, list, list, list]:
    """(means, ci_low, ci_high, n) of ``methods`` at one level; ValueError naming a missing row."""
    out: tuple[list, list, list, list] = ([], [], [], [])
    for m in methods:
        row = tables.summary_row(summary, m, metric, level)
        if row is None:
            raise ValueError(f"summary.csv has no row for method {m!r}, metric {metric!r}, level {level!r}")
        for lst, key in zip(out, ("mean", "ci_low", "ci_high", "n")):
            lst.append(float(row[key]) if key != "n" else int(row["n"]))
    return out


def _value_labels(ax, means, ns, span, unit: str) -> None:
    for j, (m_, n_) in enumerate(zip(means, ns)):
        ax.text(
            j,
            0.015 * span,
            f"{m_:.3f}\nn={n_} {unit}",
            ha="center",
            va="bottom",
            fontsize=6.5,
            zorder=5,
            bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.75, lw=0),
        )


def _method_axis(methods: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """x positions, colours and tick labels of the methods' bars."""
    ticks = [method_label(m).replace(" (", "\n(") for m in methods]
    return np.arange(len(methods)), [method_colour(m) for m in methods], ticks


def _species_brackets(ax, tests, methods: list[str], metric: str, y: float, span: float) -> float:
    """Species-level t and Wilcoxon p-values of ours against each method, stacked from ``y`` up;
    returns the height above the last bracket."""
    if "ours" not in methods:
        return y
    for j, m in enumerate(methods):
        if m == "ours":
            continue
        t = tables.test_row(tests, metric, "ours", m, "species", "t")
        w = tables.test_row(tests, metric, "ours", m, "species", "wilcoxon")
        if t is None and w is None:
            continue
        text = ", ".join(f"{lab} {_p_text(r)}" for lab, r in (("t", t), ("Wilcoxon", w)) if r is not None)
        n = int((t if t is not None else w)["n"])
        _bracket(ax, methods.index("ours"), j, y, 0.02 * span, f"p: {text}; n={n} species")
        y += 0.11 * span
    return y


def _species_panel(ax, per, summary, tests, methods: list[str], metric: str, letter: str) -> None:
    """Fig. 6 left: mean of species means ± t-interval, each species' mean, species-level tests."""
    xs, cols, ticks = _method_axis(methods)
    means, lo, hi, ns = _level_means(summary, methods, metric, "species")
    sp = per.groupby(["method", "species"], sort=False)[metric].mean().unstack("species")
    sp = sp.reindex(methods)
    names = list(sp.columns)
    offs = np.linspace(-0.18, 0.18, len(names)) if len(names) > 1 else np.zeros(1)
    ax.bar(xs, means, color=cols, width=0.7, edgecolor="black", lw=0.6, alpha=0.55, zorder=2)
    for k, name in enumerate(names):
        y = sp[name].to_numpy(dtype=float)
        ax.plot(xs + offs[k], y, "-", color="#888888", lw=0.5, alpha=0.5, zorder=3)
        ax.scatter(xs + offs[k], y, s=14, c=cols, edgecolor="black", linewidth=0.4, zorder=4)
    _errorbar(ax, xs, means, lo, hi, capsize=6, lw=1.6, zorder=5)
    ax.scatter(xs, means, marker="_", s=300, color="black", lw=1.6, zorder=5)
    top = float(np.nanmax([*hi, *means, *np.ravel(sp.to_numpy(dtype=float)), 0.0]))
    span = top if top > 0 else 1.0
    _value_labels(ax, means, ns, span, "species")
    y = _species_brackets(ax, tests, methods, metric, top + 0.04 * span, span)
    ax.set_ylim(0, y + 0.04 * span)
    ax.set_xticks(xs, ticks, fontsize=8)
    ax.set_ylabel(METRIC_UNITS.get(metric, metric), fontsize=8)
    ax.set_title(
        f"({letter}) {METRIC_LABELS.get(metric, metric)} per species: mean of species means ± 95 % CI",
        fontsize=9.5,
    )
    ax.grid(axis="y", alpha=0.3, zorder=0)


def _sample_panel(ax, summary, tests, methods: list[str], metric: str, letter: str) -> None:
    """Fig. 6 right: the paper's protocol per view, its t-tests, and the paper's means (diamonds)."""
    xs, cols, ticks = _method_axis(methods)
    means, lo, hi, ns = _level_means(summary, methods, metric, "sample")
    ax.bar(xs, means, color=cols, width=0.65, edgecolor="black", lw=0.6, zorder=2)
    _errorbar(ax, xs, means, lo, hi, capsize=4, lw=1, zorder=3)
    paper = PAPER_MEANS.get(metric, {})
    px = [j for j, m in enumerate(methods) if m in paper]
    if px:
        ax.scatter(
            px,
            [paper[methods[j]] for j in px],
            marker="D",
            facecolor="none",
            edgecolor="black",
            s=36,
            zorder=4,
            label="paper (Henzler et al. 2018)",
        )
        ax.legend(loc="upper right", fontsize=7, framealpha=0.9)
    top = float(np.nanmax([*hi, *means, *(paper.get(m, 0.0) for m in methods), 0.0]))
    span = top if top > 0 else 1.0
    _value_labels(ax, means, ns, span, "views")
    y = top + 0.04 * span
    if "ours" in methods:
        for j, m in enumerate(methods):
            t = None if m == "ours" else tables.test_row(tests, metric, "ours", m, "sample", "t")
            if t is None:
                continue
            text = f"t: {_fmt_p(float(t['p']))} (n={int(t['n'])} views)"
            _bracket(ax, methods.index("ours"), j, y, 0.02 * span, text)
            y += 0.09 * span
    ax.set_ylim(0, y + (0.2 if px else 0.04) * span)  # room for the legend above the brackets
    ax.set_xticks(xs, ticks, fontsize=8)
    ax.set_ylabel(METRIC_UNITS.get(metric, metric), fontsize=8)
    ax.set_title(f"({letter}) paper protocol per view (mirror pairs averaged): mean ± 95 % CI", fontsize=9.5)
    ax.grid(axis="y", alpha=0.3, zorder=0)


def fig_methods(eval_dir, out_png, *, metrics: Sequence[str] = ("l2", "dssim", "dssim_gauss")) -> Path:
    """Paper Fig. 6 at two levels, one row per metric (those of :data:`OPTIONAL_METRICS` only where
    ``metrics.csv`` has them).

    Left (the headline): per method the mean of the species means with its 95 % t-interval
    (``summary.csv``, ``level = species``), every species' mean as a point (from ``metrics.csv``;
    a species' points joined across methods, they are paired), and, from ``tests.csv`` (optional),
    the species-level paired t-test and Wilcoxon p-values of ours against each other method.
    Right: the paper's per-sample protocol (``level = sample``: mirrored pairs averaged, t-interval,
    n = pairs) with its paired t-test p-values, and the paper's means as hollow diamonds for context.
    """

    d = tables.eval_dir(eval_dir)
    asked = list(metrics)
    required = [m for m in asked if m not in OPTIONAL_METRICS]
    per = tables.read_csv(d / EVAL_METRICS, ["method", "species", *required], "per-sample metrics")
    metrics = [m for m in asked if m in per.columns]
    if not metrics:
        raise ValueError(f"methods: metrics.csv has none of the metrics {', '.join(asked)}")
    per["species"] = per["species"].astype(str)
    summary = tables.read_summary(d)
    tests = tables.read_tests(d)
    methods = ordered_methods(per["method"])
    split = tables.eval_split(d)
    fig = new_figure(13.0, 4.6 * len(metrics) + 1.0)
    axes = fig.subplots(len(metrics), 2, squeeze=False, gridspec_kw=dict(width_ratios=(1.25, 1)))
    for i, metric in enumerate(metrics):
        _species_panel(axes[i][0], per, summary, tests, methods, metric, _LETTERS[2 * i])
        _sample_panel(axes[i][1], summary, tests, methods, metric, _LETTERS[2 * i + 1])
    caption = "\n".join(textwrap.wrap(_METHODS_CAPTION, 190))
    where = f"the held-out {split!r} species" if split else "the held-out species"
    fig.suptitle(f"Methods compared on {where} (paper Fig. 6); lower is better", fontsize=12)
    fig.text(0.5, 0.008, caption, ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return save_png(fig, out_png)


# ---------------------------------------------------------------------------------------------
# Fig. 8a: slice counts (Fig. 7: model.qualitative.fig_slice_views)


def _slice_table(d: Path):
    df = tables.read_csv(d / EVAL_SLICE_COUNTS, ("slices",), "slice counts")
    if "metric" in df.columns:
        df = df[df["metric"].astype(str).str.lower() == "dssim"]
        if df.empty:
            raise ValueError("slice counts: slice_counts.csv has a 'metric' column but no 'dssim' rows")
    col = next((c for c in ("dssim", "dssim_mean", "mean") if c in df.columns), None)
    if col is None:
        raise ValueError(
            f"slice counts: slice_counts.csv needs a DSSIM column 'dssim', 'dssim_mean' or 'mean' "
            f"(has {list(df.columns)})"
        )
    lo = next((c for c in ("ci_low", "dssim_ci_low") if c in df.columns), None)
    hi = next((c for c in ("ci_high", "dssim_ci_high") if c in df.columns), None)
    if "method" not in df.columns:
        df = df.assign(method="ours")
    return df, col, lo, hi


def fig_slice_counts(eval_dir, out_png) -> Path:
    """Paper Fig. 8a: DSSIM of a volume down-sampled in depth to 8 … 64 slices (and up again)
    against the 128-slice original, per method, with 95 % CIs when ``slice_counts.csv`` has them."""
    d = tables.eval_dir(eval_dir)
    df, col, lo, hi = _slice_table(d)
    fig = new_figure(6.0, 4.2)
    ax = fig.subplots()
    for m in ordered_methods(df["method"]):
        sub = df[df["method"] == m].sort_values("slices")
        s = sub["slices"].to_numpy(dtype=float)
        y = sub[col].to_numpy(dtype=float)
        ax.plot(s, y, "o-", color=method_colour(m), label=method_label(m), lw=1.5, ms=5)
        if lo and hi:
            ax.fill_between(
                s, sub[lo].to_numpy(dtype=float), sub[hi].to_numpy(dtype=float), color=method_colour(m), alpha=0.2, lw=0
            )
        for sx, sy in zip(s, y) if df["method"].nunique() == 1 else ():
            ax.annotate(f"{sy:.3f}", (sx, sy), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ticks = sorted(set(df["slices"].astype(int)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("depth slices kept (down-sampled, then up-sampled to the original depth)")
    ax.set_ylabel("DSSIM to the full-depth volume (lower is better)")
    ci = "\nshaded: 95 % CI over samples, a view and its mirror\ncounted apart (overstates the evidence)"
    ax.set_title("Effect of slice count (paper Figs. 7, 8a)" + (ci if lo and hi else ""), fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, out_png)


# ---------------------------------------------------------------------------------------------
# Fig. 9: fusion

_FUSION_PAIR = ("ours", "ours_nofusion")


def _fusion_bars(ax, summary, tests, metric: str) -> None:
    """One metric of Fig. 9: both means ± CI and the paired tests, at the species level when both
    have n >= 2 species, else at the sample level."""
    pair = _FUSION_PAIR
    rows = [tables.summary_row(summary, m, metric, "species") for m in pair]
    level = "species" if min(int(r["n"]) for r in rows) >= 2 else "sample"
    rows = [tables.summary_row(summary, m, metric, level) for m in pair]
    unit = "species" if level == "species" else "views"
    means = [float(r["mean"]) for r in rows]
    ax.bar([0, 1], means, color=[method_colour(m) for m in pair], edgecolor="black", lw=0.6, width=0.6, zorder=2)
    _errorbar(ax, [0, 1], means, [r["ci_low"] for r in rows], [r["ci_high"] for r in rows], capsize=5, zorder=3)
    for j, r in enumerate(rows):
        text = f"{float(r['mean']):.4f}\nn={int(r['n'])} {unit}"
        ax.text(j, float(r["mean"]) * 0.5, text, ha="center", va="center", fontsize=8)
    top = float(np.nanmax([0.0, *(float(r["ci_high"]) for r in rows), *means]))
    top = top if top > 0 else 1.0
    t = tables.test_row(tests, metric, *pair, level, "t")
    wx = tables.test_row(tests, metric, *pair, level, "wilcoxon") if level == "species" else None
    if t is not None:
        text = f"paired t = {float(t['statistic']):.2f}, {_fmt_p(float(t['p']))}"
        if wx is not None:
            text += f"; Wilcoxon {_fmt_p(float(wx['p']))}"
        _bracket(ax, 0, 1, top * 1.05, top * 0.03, text)
    ax.set_ylim(0, top * 1.25)
    ax.set_xticks([0, 1], ["with fusion", "without fusion"])
    ax.set_ylabel(METRIC_UNITS.get(metric, metric), fontsize=8)
    what = (
        "mean of species means ± 95 % CI"
        if level == "species"
        else "per view (mirrored pairs averaged): mean ± 95 % CI"
    )
    ax.set_title(f"{METRIC_LABELS.get(metric, metric)}:\n{what}", fontsize=9)
    ax.grid(axis="y", alpha=0.3, zorder=0)


def fig_fusion(
    eval_dir,
    out_png,
    *,
    example: dict | None = None,
    metrics: Sequence[str] = ("l2", "dssim"),
    chi: float = 10.0,
    backend: str = "auto",
) -> Path:
    """Paper Fig. 9: fusion (``ours``) against no fusion (``ours_nofusion``).

    Top: for each metric the mean ± 95 % CI of both (``summary.csv``) with the paired-test p-values
    (``tests.csv`` if present): at the species level (mean of species means, t-interval, t and
    Wilcoxon tests on species means) when both have n >= 2 species, else at the sample level (the
    paper's protocol). Optional ``example`` dict with ``xray`` (H, W) and view volumes
    ``fused`` and ``nofusion``: a second row shows the input x-ray, the x-rays re-rendered from both
    volumes (with their max |difference| to the input) and their renders (iso-surface if
    ``model.surface`` exists, else first-hit depth; :func:`model.qualitative.fusion_panels`).
    """
    d = tables.eval_dir(eval_dir)
    summary = tables.read_summary(d)
    tests = tables.read_tests(d)
    for m in _FUSION_PAIR:
        for metric in metrics:
            for level in LEVELS:
                if tables.summary_row(summary, m, metric, level) is None:
                    raise ValueError(
                        f"fusion: summary.csv has no row for method {m!r}, metric {metric!r}, level {level!r}"
                    )
    nrow = 2 if example is not None else 1
    fig = new_figure(10.0, 3.6 + 2.6 * (nrow - 1) + 0.4)
    if example is None:
        axes_top = fig.subplots(1, len(metrics), squeeze=False)[0]
    else:
        gs = fig.add_gridspec(2, 5 * len(metrics), height_ratios=(1.4, 1.0))
        w = 5
        axes_top = [fig.add_subplot(gs[0, i * w : (i + 1) * w]) for i in range(len(metrics))]
    for ax, metric in zip(axes_top, metrics):
        _fusion_bars(ax, summary, tests, metric)
    if example is not None:
        panels = fusion_panels(example, chi=chi, backend=backend)
        step = 5 * len(metrics) // len(panels)
        for i, (title, img) in enumerate(panels):
            ax = fig.add_subplot(gs[1, i * step : (i + 1) * step])
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Effect of fusion (paper Fig. 9): lower is better", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return save_png(fig, out_png)


# ---------------------------------------------------------------------------------------------
# Fig. 8b: view classes


def fig_view_classes(eval_dir, out_png, *, metrics: Sequence[str] = ("dssim", "dssim_gauss", "l2")) -> Path:
    """Paper Fig. 8b: mean error ± 95 % CI per view class (top, front, side, other) and method
    (``view_classes.csv``: per-sample t-intervals, mirrors counted apart, as the title says), one
    panel per metric present."""
    d = tables.eval_dir(eval_dir)
    df = tables.read_csv(
        d / EVAL_VIEW_CLASSES, ("method", "view_class", "metric", "mean", "ci_low", "ci_high", "n"), "view classes"
    )
    df["view_class"] = df["view_class"].astype(str)
    asked = list(metrics)
    metrics = [m for m in asked if (df["metric"] == m).any()]
    if not metrics:
        raise ValueError(
            f"view classes: view_classes.csv has none of the metrics {', '.join(asked)} "
            f"(has {sorted(df['metric'].astype(str).unique())})"
        )
    present = list(dict.fromkeys(df["view_class"]))
    classes = [c for c in VIEW_CLASS_ORDER if c in present] + sorted(c for c in present if c not in VIEW_CLASS_ORDER)
    methods = ordered_methods(df["method"])
    fig = new_figure(5.2 * len(metrics), 4.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, metrics):
        sub = df[df["metric"] == metric]
        for j, m in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for c_i, c in enumerate(classes):
                r = sub[(sub["method"] == m) & (sub["view_class"] == c)]
                if r.empty:
                    continue
                r = r.iloc[0]
                xs.append(c_i + (j - (len(methods) - 1) / 2) * width)
                ys.append(float(r["mean"]))
                lo.append(float(r["ci_low"]))
                hi.append(float(r["ci_high"]))
            if xs:
                ax.bar(
                    xs,
                    ys,
                    width=width,
                    color=method_colour(m),
                    edgecolor="black",
                    lw=0.5,
                    label=method_label(m),
                    zorder=2,
                )
                _errorbar(ax, xs, ys, lo, hi, capsize=2, lw=0.8, zorder=3)
        ns = []
        for c in classes:
            n = sub[sub["view_class"] == c]["n"]
            ns.append(int(n.max()) if len(n) else 0)
        ax.set_xticks(range(len(classes)), [f"{c}\n(n={n})" for c, n in zip(classes, ns)])
        ax.set_xlabel("view class of the input x-ray")
        ax.set_ylabel(METRIC_UNITS.get(metric, metric))
        ax.set_title(textwrap.fill(f"{METRIC_LABELS.get(metric, metric)} by view", 44), fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3, zorder=0)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.93), ncol=len(methods), fontsize=8, frameon=False
    )
    fig.suptitle(
        "Error by view direction (paper Fig. 8b): mean ± 95 % CI over samples (none for n < 2)\n"
        "n = samples, a view and its mirror counted apart, views of one species as independent",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.88))
    return save_png(fig, out_png)


# ---------------------------------------------------------------------------------------------
# all


def write_all_figures(
    eval_dir, out_dir, *, qualitative_rows=None, fusion_example: dict | None = None, backend: str = "auto"
) -> list[Path]:
    """Write every figure the eval folder supports into ``out_dir``; returns the PNG paths.

    Always ``fig6_methods.png`` (needs ``metrics.csv`` and ``summary.csv``: ``ValueError`` if they are
    missing); ``fig9_fusion.png`` when ``summary.csv`` has ``ours_nofusion`` rows (or
    ``fusion_example`` is given); ``fig8b_view_classes.png`` when ``view_classes.csv`` exists;
    ``fig8a_slice_counts.png`` when ``slice_counts.csv`` exists; ``fig17_qualitative.png`` and
    ``fig7_slice_views.png`` when ``qualitative_rows`` (see :func:`fig_qualitative`) are given. Each
    figure left out is named in a warning, with what it needs.
    """
    d = tables.eval_dir(eval_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [fig_methods(d, out / f"{FIG_METHODS}.png")]
    summary = tables.read_csv(d / EVAL_SUMMARY_CSV, ("method",), "summary")
    if fusion_example is not None or (summary["method"] == "ours_nofusion").any():
        chi = tables.summary_value(d, "chi", StoreSettings.chi)
        paths.append(fig_fusion(d, out / f"{FIG_FUSION}.png", example=fusion_example, chi=chi, backend=backend))
    left_out = []
    for name, table, draw in (
        (FIG_VIEW_CLASSES, EVAL_VIEW_CLASSES, fig_view_classes),
        (FIG_SLICE_COUNTS, EVAL_SLICE_COUNTS, fig_slice_counts),
    ):
        if (d / table).is_file():
            paths.append(draw(d, out / f"{name}.png"))
        else:
            left_out.append(f"{name}.png (the eval folder has no {table}: evaluate again)")
    if qualitative_rows:
        paths.append(fig_qualitative(qualitative_rows, out / f"{FIG_QUALITATIVE}.png", backend=backend))
        paths.append(fig_slice_views(qualitative_rows, out / f"{FIG_SLICE_VIEWS}.png", backend=backend))
    else:
        left_out.append(
            f"{FIG_QUALITATIVE}.png and {FIG_SLICE_VIEWS}.png (they need examples: tomo figures --store and "
            "--checkpoint, or --examples-file)"
        )
    if left_out:
        warnings.warn("figures left out: " + "; ".join(left_out), stacklevel=2)
    return paths
