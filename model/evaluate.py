"""Evaluation on the held-out species (paper §5): ours, ours without fusion, NN, Oracle and the mean
training volume; volume L2 and image DSSIM; species-level statistics (:mod:`model.stats`) and the
paper's per-sample protocol; the view-class and slice-count analyses (§5.5).

Entry point: :func:`evaluate_run` (``tomo evaluate``) writes everything into one folder.

Definitions
-----------
**Splits.** Exactly one split is evaluated, ``split`` (``tomo evaluate --split``): ``test`` (the
default, the reported result) or ``val``. The store's ``train`` species are the database of the NN,
Oracle and mean baselines (and what the network was trained on; an evaluated species that the
checkpoint was trained on is refused). ``val`` is the training run's validation set, used for model
choice and tuning, so a ``val`` evaluation is not an untouched held-out result. ``summary.json``
records ``eval_split``, ``eval_species`` and every split's species with what it was used for.

**Target grid.** Every method is compared with the ground truth on the network's output grid,
``out_depth × out_size²`` (the checkpoint's NetworkConfig): the ground truth is the sample's view
volume on that grid, exactly the training target (:func:`model.data.torch_view_volumes` of the
species' canonical volume, the view's rotation, rows reversed for mirrored samples).

**Methods** (column ``method``):

* ``ours_nofusion``: the raw network output, clamped to >= 0.
* ``ours``: the network output fused with the input x-ray (:func:`model.fusion.fuse`, paper Eq. 2,
  β = 2, the store's χ). ``fusion_at="xray"`` (default): fused at the x-ray's own resolution (the
  store's image size, the paper's procedure), then area-averaged laterally down to ``out_size`` (the
  depth is the network's). ``fusion_at="target"``: the x-ray's optical depth ``−ln(1 − opacity)`` is
  area-averaged to ``out_size`` first (averaging density, not opacity, keeps Beer–Lambert exact for
  the coarse pixel) and the fusion runs on the target grid.
* ``nn`` (paper §5.1): the training sample whose x-ray is nearest in L2 to the input x-ray (at the
  store's image resolution, over every sample of every ``train`` species, mirrored ones included);
  the method returns that sample's view volume (its species' volume, its rotation, its mirror flag).
  Exact search, two ways (``nn_search``). ``"bound"`` (the default) is the Oracle's rule below on
  the x-rays (each a (1, S, S) volume; :func:`nearest_images_bounded`): lower-bound features of every
  training image (``nn_coarse`` cells per axis), a short list by the bound, exact re-ranking until
  the bound proves the winner; on the demo it compares about 10 of 3,840 training images exactly
  per query, so the cost is that of the features (2·cells numbers per image instead of S² pixels).
  ``"brute"``: training images are streamed from the store block by block (one block of
  ``train_block`` images in memory at a time) against a block of ``nn_query_block`` query images;
  distances ``‖a‖² + ‖b‖² − 2a·b`` in float64 (matrix products, on ``device``) pick each block's
  arg-min; the winner's distance is then recomputed directly as ``Σ (a − b)²`` (so a query equal to a
  training image has distance exactly 0) and compared across blocks; ties go to the lowest training
  index. Exact up to float64 rounding of the expansion within a block (~1e-12 relative).
* ``mean`` (a baseline the paper lacks): the average of the training species' view volumes at the
  sample's view (its rotation and mirror flag); no input is used. View sampling (trilinear, zero
  outside the cube) is linear in the volume, so it is made as the view volume of the mean of the
  training species' canonical volumes (:func:`mean_volume`; one extra volume, no per-species views).
  It says how much of a method's score a species-agnostic skull already earns.
* ``oracle`` (paper §5.1): the training view volume nearest in L2 to the ground-truth view volume,
  on the target grid, over every training sample (mirrored ones included). It ignores the x-ray.
  **Coarse-to-fine with a lower bound — exact.** The grid is cut into non-overlapping blocks of
  ``(fd, fh, fw)`` voxels (per axis the smallest factor dividing the side that leaves at most
  ``oracle_coarse`` cells); a volume's features are, per block, its mean times sqrt(fd·fh·fw) and
  the norm of its deviation from that mean (:func:`coarse_features`). Per block, Pythagoras and the
  reverse triangle inequality give ``‖a_j − b_j‖² >= f (m_a − m_b)² + (ρ_a − ρ_b)²``, so the feature
  distance LB is a lower bound of the exact squared distance (the deviation norms make it much
  tighter than block means alone). Per query, the ``oracle_k`` + 1 smallest LBs over all training
  samples are kept (streaming top-k; the training features are computed once, block by block); the
  first ``oracle_k`` are evaluated exactly (Σ (a − b)² in float64 at full target resolution) in
  increasing LB order, ``oracle_chunk`` at a time, stopping as soon as the next LB exceeds the best
  exact distance d* (plus a margin for float rounding, d*·1e-4 + 1e-6 + 1e-6·sqrt(d*)·(‖q‖ + 1)):
  nothing left can beat d*.
  If the shortlist runs out while the (k+1)-th LB is still <= d*, a fallback pass evaluates every
  training sample whose LB is <= d*. The result is the exact nearest training view volume (ties to
  the lowest index); ``tests/test_evaluate.py`` checks it against brute force. ``matches.csv`` records
  per query how many candidates were evaluated, whether the fallback ran and whether the result is
  certified exact. ``oracle_max_evaluated = k`` turns this into the plain rule "shortlist the top k
  by the bound, re-rank them exactly" — then exact only where ``oracle_certified`` says so (the best
  exact distance is <= the (k+1)-th bound). When all training view volumes fit ``cache_bytes`` they
  are made once and kept; otherwise they are re-sampled on the fly.

**Memory** does not grow with the number of training species beyond the lower-bound features
(capped by ``oracle_feature_bytes``, the cells per axis lowered to fit) and the optional caches
(``cache_bytes``): the NN's training x-rays and the Oracle's training view volumes are streamed
from the store block by block (:func:`train_coarse_features`: about 128 MB of float64 per block),
the lower bounds widen one block of features at a time (:data:`LOWER_BOUND_BLOCK_BYTES`), a
:class:`ViewSource` keeps at most ``max_volumes`` canonical volumes and samples ``view_batch``
views per call, exact distances and errors run a few rows at a time, and the metrics render one
group of view volumes at a time. None of this changes a number (tests/test_evaluate.py). Per-phase
costs and the peak resident memory: ``tomo bench evaluate`` (:mod:`model.bench_evaluate`,
docs/benchmarks.md).

**Metrics** (per sample and method):

* ``mse`` = mean over the target grid's voxels of (prediction − truth)², densities in [0, 1];
  ``l2`` = sqrt(mse), the voxel RMSE. This is "L2 as used in training" (the training loss is the voxel
  MSE) put on the scale of densities; the paper reports .051 (ours), .067 (NN), .060 (Oracle) without
  saying which normalisation (:data:`PAPER_RESULTS`).
* ``dssim`` = (1 − SSIM) / 2 between :func:`model.surface.render_isosurface` images (iso 0.1, AO on,
  the x-ray's own view) of prediction and truth, SSIM by ``skimage.metrics.structural_similarity``
  with ``data_range=1.0`` (images in [0, 1]) and its defaults (7×7 uniform window, K1 = .01,
  K2 = .03). Paper: .097 (ours), .109 (NN), .110 (Oracle).

**Statistics** (:mod:`model.stats`, :func:`statistics_tables`). The unit is the held-out species:
only species were held out, and a species' views (and a view and its mirror) are not independent.

* ``level = species`` (the headline): per method and metric each species' mean over its evaluated
  samples (``species.csv``); reported: the mean of the species means with a 95 % percentile interval
  of a cluster bootstrap over species (``n_boot`` = 10,000 draws of the species with replacement,
  all of a species' samples together, seeded by ``boot_seed``); n = species. Every pair of methods is
  compared on species means, paired by species: paired t-test (``scipy.stats.ttest_rel``) and
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided, exact for n <= 50 without ties or
  zero differences; with n species its smallest p is 2/2ⁿ, .125 for 4). ``summary.json``'s
  ``differences``: the mean over species of the species-mean difference with its bootstrap interval.
  With fewer than 2 species these intervals and tests are NaN.
* ``level = sample`` (the paper's per-sample protocol, kept for comparison): each mirrored pair
  (sample 2i and its mirror 2i + 1, :func:`tomodata.views.sample_to_view`) is averaged first, one
  unit per distinct (species, view); t-interval ``mean ± t_{.975, n−1} · sd / √n`` and paired
  t-tests on those units; n = units. It still treats a species' views as independent, so it
  overstates the evidence.

View classes and slice counts keep per-sample t-intervals (mirrored samples counted separately).

**View classes** (§5.5, Fig. 8b): by the view direction ``d = R[:, 2]`` (the ray direction) against
the volume's axes. The procedural skulls (tomodata/phantoms.py) have the snout at +x, dorsal at −y,
z left–right, so: ``top`` = within 30° of ±y (looking down on / up at the skull), ``front`` = within
30° of ±x (along the snout), ``side`` = within 30° of ±z (lateral), ``other`` = the rest. The cones
do not overlap. Mirroring does not change the direction. For scanned specimens the classes mean this
only as far as their volumes were aligned the same way.

**Slice count** (§5.5, Figs. 7, 8a): a volume is box-averaged along depth to ``n`` slices
(``adaptive_avg_pool``) and linearly up-sampled back to its depth (``align_corners=False``); the
DSSIM between the renders of this and of the original is recorded, for the ground truth (``truth``)
and ``ours`` (``ours_nofusion`` when ``ours`` is not evaluated), for every ``n`` in ``slice_counts``
below the target depth (larger ones are listed as skipped in ``summary.json``).

Outputs (``out_dir``)
---------------------
``metrics.csv``      method, species, sample, view, mirrored, view_class, l2, mse, dssim (one row per sample and method)
``summary.csv``      method, metric, level, mean, ci_low, ci_high, n (level species: mean of species means, bootstrap
                     CI, n species; level sample: mirrored pairs averaged, t-interval, n pairs)
``tests.csv``        metric, method_a, method_b, level, test, statistic, p, n (per pair of methods and metric: species
                     t and wilcoxon, sample t; statistic: t, or W = the smaller signed-rank sum)
``species.csv``      method, species, metric, mean, n_samples (the species means)
``view_classes.csv`` method, view_class, metric, mean, ci_low, ci_high, n
``slice_counts.csv`` method, slices, dssim_mean, ci_low, ci_high, n
``matches.csv``      species, sample, nn_species, nn_sample, nn_dist2, nn_evaluated, oracle_species, oracle_sample,
                     oracle_dist2, oracle_evaluated, oracle_fallback, oracle_certified (dist2: squared L2, summed,
                     of the x-rays for NN, of the target-grid view volumes for the Oracle; evaluated: training
                     samples compared exactly)
``summary.json``     all of the above in one file (``means[level][method][metric]``, ``summary_rows``, ``tests``,
                     ``differences``, ``species_means``), with ``eval_split``, ``eval_species`` (``val_species``:
                     an alias), ``splits`` and ``split_use``, ``statistics`` (the procedure in words), the
                     definitions, settings, the paper's numbers and timings
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tomodata.progress import phase

from . import stats as ST
from .data import resize_xrays, torch_view_volumes
from .stats import mean_ci
from .surface import DEFAULT_ISO, render_isosurface_torch

__all__ = [
    "EVAL_SPLITS",
    "LEVELS",
    "METHODS",
    "PAPER_RESULTS",
    "VIEW_CLASSES",
    "MetricDefinitions",
    "ViewSource",
    "coarse_cells",
    "coarse_factors",
    "coarse_features",
    "depth_resample",
    "dssim",
    "evaluate_run",
    "mean_ci",
    "mean_volume",
    "nearest_images",
    "oracle_coarse_for_memory",
    "oracle_search",
    "paired_tests",
    "split_use",
    "statistics_tables",
    "statistics_text",
    "store_image_blocks",
    "view_class",
    "volume_errors",
]

METHODS = ("ours", "ours_nofusion", "nn", "oracle", "mean")
#: The splits that can be evaluated (``train`` is the database of the NN, Oracle and mean baselines).
EVAL_SPLITS = ("test", "val")
#: Levels of summary.csv / tests.csv: species (the held-out unit) and sample (the paper's protocol).
LEVELS = ("species", "sample")
CI_LEVEL = 0.95
SUMMARY_COLUMNS = ("method", "metric", "level", "mean", "ci_low", "ci_high", "n")
TESTS_COLUMNS = ("metric", "method_a", "method_b", "level", "test", "statistic", "p", "n")
SPECIES_COLUMNS = ("method", "species", "metric", "mean", "n_samples")
VIEW_CLASSES = ("top", "front", "side", "other")
#: Half-angle of the view-class cones around the volume axes (degrees).
VIEW_CLASS_ANGLE = 30.0
#: The paper's means on its synthetic validation set (§5.3); context only, not comparable in scale.
PAPER_RESULTS = {"l2": {"ours": 0.051, "nn": 0.067, "oracle": 0.060},
                 "dssim": {"ours": 0.097, "nn": 0.109, "oracle": 0.110}}
METRICS = ("l2", "mse", "dssim")
SSIM_DATA_RANGE = 1.0
#: Oracle pruning margin: a candidate is skipped only if LB > d* (1 + REL) + ABS + NORM · sqrt(d*) (‖q‖ + 1).
ORACLE_REL_MARGIN = 1e-4
ORACLE_ABS_MARGIN = 1e-6
ORACLE_NORM_MARGIN = 1e-6


@dataclass(frozen=True)
class MetricDefinitions:
    """The definitions as recorded in summary.json."""

    l2: str = "sqrt(mean over target voxels of (pred - true)^2) (voxel RMSE); mse = its square"
    dssim: str = ("(1 - SSIM)/2, skimage.metrics.structural_similarity(data_range=1.0, 7x7 uniform window) "
                  "between model.surface.render_isosurface images (iso, AO on) from the x-ray's view")
    target: str = "network output grid out_depth x out_size^2; ground truth = torch_view_volumes target"
    nn: str = "training sample with the L2-nearest x-ray (store resolution), exact blocked search"
    mean: str = ("the average of the training species' view volumes at the sample's view and mirror flag, no "
                 "input used; made as the view volume of the mean training volume (trilinear sampling is linear)")
    oracle: str = "training view volume L2-nearest to the ground truth on the target grid, exact (lower-bound pruning)"
    view_class: str = ("d = R[:, 2]; top: within 30 deg of +-y, front: of +-x, side: of +-z, else other "
                       "(phantoms: snout +x, dorsal -y, z left-right)")
    slice_counts: str = "depth box-averaged to n slices, linearly up-sampled back; DSSIM vs the original's render"
    ci: str = ("species level: mean of species means, 95% percentile interval of a cluster bootstrap over species; "
               "sample level (mirrored pairs averaged): mean +- t_{0.975,n-1} sd/sqrt(n)")
    tests: str = ("species level: scipy.stats.ttest_rel and scipy.stats.wilcoxon (two-sided) on species means, "
                  "paired by species; sample level: ttest_rel on mirrored-pair means, paired by (species, view)")
    view_classes_and_slices: str = "t-interval over samples (mirrored samples counted separately)"


# --------------------------------------------------------------------------------------------------
# small pieces
# --------------------------------------------------------------------------------------------------


def view_class(rotation, *, angle: float = VIEW_CLASS_ANGLE) -> str:
    """``top`` / ``front`` / ``side`` / ``other`` of a camera → volume rotation (module docstring)."""
    R = np.asarray(rotation, dtype=np.float64)
    if R.shape != (3, 3):
        raise ValueError(f"rotation must be (3, 3), got {R.shape}")
    d = np.abs(R[:, 2]) / max(np.linalg.norm(R[:, 2]), 1e-12)
    c = math.cos(math.radians(angle))
    if d[1] >= c:
        return "top"
    if d[0] >= c:
        return "front"
    if d[2] >= c:
        return "side"
    return "other"


def volume_errors(pred, true, *, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (l2, mse) of (B, ...) or single volumes: mse = mean of squared differences (float64),
    l2 = sqrt(mse). ``rows``: samples per float64 pass (None: all at once; the same numbers either
    way, see :func:`_row_chunks`), to bound the float64 temporaries."""
    p = torch.as_tensor(pred)
    t = torch.as_tensor(true)
    if p.shape != t.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and truth {tuple(t.shape)} differ in shape")
    single = p.ndim == 3
    if single:
        p, t = p[None], t[None]
    mse = np.empty(p.shape[0], dtype=np.float64)
    for a, b in _row_chunks(p.shape[0], rows):
        mse[a:b] = ((p[a:b].double() - t[a:b].double()) ** 2).flatten(1).mean(1).cpu().numpy()
    l2 = np.sqrt(mse)
    return (l2[0], mse[0]) if single else (l2, mse)


def dssim(img_a, img_b) -> float:
    """(1 − SSIM)/2 of two images in [0, 1] (skimage, data_range=1.0, 7×7 window)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(img_a, dtype=np.float64)
    b = np.asarray(img_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"dssim needs two images of the same 2D shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 7:
        raise ValueError(f"dssim needs images of at least 7x7 pixels (SSIM's window), got {a.shape}")
    return float((1.0 - structural_similarity(a, b, data_range=SSIM_DATA_RANGE)) / 2.0)


def volume_dssim(pred, true, *, iso: float = DEFAULT_ISO) -> float:
    """DSSIM of the iso-surface renders of two (D, H, W) view volumes."""
    from .surface import render_isosurface

    return dssim(render_isosurface(pred, iso=iso), render_isosurface(true, iso=iso))


def depth_resample(vol: torch.Tensor, slices: int) -> torch.Tensor:
    """(B, D, H, W) → box-averaged along depth to ``slices``, linearly up-sampled back to D."""
    B, D, H, W = vol.shape
    if slices < 1:
        raise ValueError(f"slices must be >= 1, got {slices}")
    x = vol[:, None].float()
    down = F.adaptive_avg_pool3d(x, (slices, H, W))
    up = F.interpolate(down, size=(D, H, W), mode="trilinear", align_corners=False)
    return up[:, 0]


def paired_tests(values: dict[str, dict[str, np.ndarray]], methods: Sequence[str],
                 metrics: Sequence[str] = METRICS) -> list[dict]:
    """Paired two-sided t-tests between every pair of ``methods`` per metric, every sample counted as
    independent (not what ``tests.csv`` reports: see :func:`statistics_tables`).

    ``values[metric][method]`` are per-sample arrays in the same sample order."""
    from scipy import stats

    rows = []
    for metric in metrics:
        for a, b in itertools.combinations(methods, 2):
            x = np.asarray(values[metric][a], dtype=np.float64)
            y = np.asarray(values[metric][b], dtype=np.float64)
            ok = np.isfinite(x) & np.isfinite(y)
            n = int(ok.sum())
            if n >= 2 and np.any(x[ok] != y[ok]):
                res = stats.ttest_rel(x[ok], y[ok])
                t, p = float(res.statistic), float(res.pvalue)
            else:
                t, p = math.nan, math.nan
            rows.append(dict(metric=metric, method_a=a, method_b=b, t=t, p=p, n=n))
    return rows


def statistics_tables(per: dict[str, dict[str, np.ndarray]], species: Sequence[str], sample, n_views: int, *,
                      methods: Sequence[str], metrics: Sequence[str] = METRICS, n_boot: int = ST.BOOTSTRAP_DRAWS,
                      seed: int = 0, level: float = CI_LEVEL) -> dict[str, list[dict]]:
    """The rows of summary.csv, tests.csv and species.csv and the paired differences (:mod:`model.stats`).

    Args:
        per: ``per[method][metric]`` (N,) per-sample values, one order for all.
        species: (N,) the samples' species; ``sample``: (N,) their indices within the species
            (``2i`` view ``i``, ``2i + 1`` its mirror); ``n_views``: views per species.
        methods, metrics: what to tabulate; tests for every pair of methods (in ``methods`` order).
        n_boot, seed, level: the cluster bootstrap over species.

    Returns:
        ``summary`` (:data:`SUMMARY_COLUMNS`; per level, method, metric): ``species``: mean of species
        means, bootstrap CI, n = species; ``sample``: mirrored pairs averaged, t-interval, n = pairs.
        ``tests`` (:data:`TESTS_COLUMNS`; per metric and pair): species ``t`` and ``wilcoxon``,
        sample ``t``. ``species`` (:data:`SPECIES_COLUMNS`). ``differences``: per metric and pair,
        the species-level mean of a − b with its bootstrap CI. With fewer than 2 species with values,
        species-level CIs, tests and differences are NaN (n says how many there were).
    """
    species = np.asarray([str(x) for x in species])
    sample = np.asarray(sample, dtype=np.int64)
    boot = dict(level=level, n_boot=n_boot, seed=seed)

    def n_species(*arrays) -> int:
        ok = np.logical_and.reduce([np.isfinite(np.asarray(a, dtype=np.float64)) for a in arrays])
        return len(set(species[ok].tolist()))

    summary, sp_rows = [], []
    for lv in LEVELS:
        for m in methods:
            for k in metrics:
                v = np.asarray(per[m][k], dtype=np.float64)
                if lv == "sample":
                    mean, lo, hi, n = ST.sample_ci(v, species, sample, n_views, level)
                elif n_species(v) >= 2:
                    mean, lo, hi, n = ST.cluster_bootstrap_ci(v, species, **boot)
                else:
                    _, sm, _ = ST.species_means(v, species)
                    sm = sm[np.isfinite(sm)]
                    mean, lo, hi, n = (float(sm.mean()) if sm.size else math.nan), math.nan, math.nan, int(sm.size)
                summary.append(dict(method=m, metric=k, level=lv, mean=mean, ci_low=lo, ci_high=hi, n=n))
    for m in methods:
        for k in metrics:
            names, sm, ns = ST.species_means(per[m][k], species)
            sp_rows += [dict(method=m, species=nm, metric=k, mean=float(x), n_samples=int(c))
                        for nm, x, c in zip(names, sm, ns)]
    tests, diffs = [], []
    for k in metrics:
        for a, b in itertools.combinations(methods, 2):
            va, vb = (np.asarray(per[x][k], dtype=np.float64) for x in (a, b))
            ns = n_species(va, vb)
            row = dict(metric=k, method_a=a, method_b=b)
            if ns >= 2:
                t = ST.species_ttest(va, vb, species)
                w = ST.species_wilcoxon(va, vb, species)
                d = ST.cluster_bootstrap_diff_ci(va, vb, species, **boot)
            else:
                t = w = (math.nan, math.nan, ns)
                d = (math.nan, math.nan, math.nan, ns)
            tests.append(dict(row, level="species", test="t", statistic=t[0], p=t[1], n=t[2]))
            tests.append(dict(row, level="species", test="wilcoxon", statistic=w[0], p=w[1], n=w[2]))
            ts = ST.sample_ttest(va, vb, species, sample, n_views)
            tests.append(dict(row, level="sample", test="t", statistic=ts[0], p=ts[1], n=ts[2]))
            diffs.append(dict(row, level="species", mean_diff=d[0], ci_low=d[1], ci_high=d[2], n=d[3]))
    return dict(summary=summary, tests=tests, species=sp_rows, differences=diffs)


def statistics_text(*, n_boot: int, seed: int, n_species: int) -> str:
    """The statistical procedure, in words, for summary.json."""
    wmin = f"{2.0 / 2 ** n_species:.3g}" if n_species >= 1 else "n/a"
    return (
        "The held-out species are the unit: only they were held out, and a species' views (and each view's "
        "mirror) are not independent of one another. "
        "Species level (the headline; summary.csv and tests.csv rows with level=species): per method and metric "
        "each species' mean over its evaluated samples (species.csv); reported: the mean of the species means "
        f"with a 95% percentile interval of a cluster bootstrap over species ({n_boot} draws of the species with "
        f"replacement, all of a species' samples together, seed {seed}); n = species. Two methods are compared on "
        "their species means, paired by species: paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank "
        "test (scipy.stats.wilcoxon, two-sided, exact for n <= 50 without ties or zero differences); "
        f"with {n_species} species the smallest possible two-sided Wilcoxon p is 2/2^{n_species} = {wmin}. "
        "'differences' in summary.json: mean over species of the species-mean difference a - b with the same "
        "bootstrap interval. With few species the percentile interval is narrower than a t-interval would be; "
        "read it with the tests. Fewer than 2 species: species-level intervals and tests are NaN. "
        "Sample level (the paper's per-sample protocol, for comparison; level=sample): each mirrored pair "
        "(sample 2i and its mirror 2i+1, tomodata.views.sample_to_view) averaged first, one unit per distinct "
        "(species, view); t-interval mean +- t_{0.975,n-1} sd/sqrt(n) and paired t-tests on the units; "
        "n = units. It treats a species' views as independent, so its intervals and p-values overstate the "
        "evidence. view_classes.csv and slice_counts.csv keep per-sample t-intervals (mirrors counted separately)."
    )


def split_use(eval_split: str) -> dict[str, str]:
    """What each split of the store was used for, in a run that evaluates ``eval_split``."""
    return {
        "train": "training the network; the database of the NN, Oracle and mean baselines",
        "val": ("model choice and tuning (the training run's validation); "
                + ("evaluated in this run, so these numbers are not an untouched held-out result"
                   if eval_split == "val" else "never evaluated for the reported result")),
        "test": ("held out from training and model choice; "
                 + ("evaluated in this run: the reported result" if eval_split == "test"
                    else "not evaluated in this run")),
    }


def mean_volume(ds, species: Sequence[str]) -> np.ndarray:
    """(Z, Y, X) float32 mean of the canonical volumes of ``species`` (summed in float64, one at a time).

    Its view volume at a sample's view is the ``mean`` baseline: view sampling (trilinear, zero outside)
    is linear in the volume, so this equals the average of the species' view volumes at that view."""
    if not species:
        raise ValueError("no species to average")
    acc = None
    for name in species:
        v = np.asarray(ds.volume(name), dtype=np.float64)
        acc = v.copy() if acc is None else acc + v
    return (acc / len(species)).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# view volumes of a split, on the fly
# --------------------------------------------------------------------------------------------------


#: memory for one torch_view_volumes call of :class:`ViewSource` (its float64 grid and temporaries)
VIEW_BATCH_BYTES = 512 << 20


class ViewSource:
    """The samples of some species as view volumes made on the fly (optionally all cached).

    Global sample index ``g = species_index · samples_per_species + sample`` (as
    :class:`model.data.StoreSamples`); sample ``2i`` is view ``i``, ``2i + 1`` its mirror. A view
    volume is :func:`model.data.torch_view_volumes` of the species' canonical volume and the view's
    rotation (the training target); a mirrored sample's is the same array with its rows reversed
    (made once per view, flipped for the mirror).
    """

    def __init__(self, ds, species: Sequence[str], *, device="cpu", block: int = 64, view_batch: int | None = None,
                 max_volumes: int = 4):
        if not species:
            raise ValueError("no species to take view volumes from")
        if (view_batch is not None and view_batch < 1) or max_volumes < 1:
            raise ValueError(f"view_batch and max_volumes must be >= 1, got {view_batch}, {max_volumes}")
        self.ds = ds
        self.species = list(species)
        self.device = torch.device(device)
        self.block = int(block)
        self.view_batch = None if view_batch is None else int(view_batch)
        self.max_volumes = int(max_volumes)
        self.samples_per_species = int(ds.attrs["samples_per_species"])
        self._volumes: dict[int, torch.Tensor] = {}  # species index -> canonical volume (LRU, max_volumes)
        self.volume_reads = 0
        self.rotations = torch.from_numpy(np.stack([ds.rotations(n) for n in self.species])).to(self.device)
        self._cache: tuple[int, int, torch.Tensor] | None = None

    def volume(self, s: int) -> torch.Tensor:
        """The canonical (Z, Y, X) volume of species index ``s``, read from the store on first use; at
        most ``max_volumes`` are kept (least recently used dropped), so memory does not grow with the
        number of species."""
        s = int(s)
        v = self._volumes.pop(s, None)
        if v is None:
            v = torch.from_numpy(np.asarray(self.ds.volume(self.species[s]), dtype=np.float32)).to(self.device)
            self.volume_reads += 1
            while len(self._volumes) >= self.max_volumes:
                self._volumes.pop(next(iter(self._volumes)))
        self._volumes[s] = v  # most recently used last
        return v

    def __len__(self) -> int:
        return len(self.species) * self.samples_per_species

    def locate(self, g) -> tuple[np.ndarray, np.ndarray]:
        """Global indices → (species index, sample index)."""
        g = np.asarray(g, dtype=np.int64)
        if g.size and (g.min() < 0 or g.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        return g // self.samples_per_species, g % self.samples_per_species

    def rotation(self, g: int) -> np.ndarray:
        from tomodata.views import sample_to_view

        s, j = self.locate([g])
        view, _ = sample_to_view(int(j[0]), self.samples_per_species // 2)
        return self.rotations[int(s[0]), view].cpu().numpy()

    def cache(self, *, size: int, depth: int, budget_bytes: int = 1 << 30) -> bool:
        """Make and keep every sample's view volume if they fit ``budget_bytes``; True if cached."""
        if self._cache is not None and self._cache[:2] == (size, depth):
            return True
        if len(self) * depth * size * size * 4 > budget_bytes:
            return False
        self._cache = None
        allv = torch.empty((len(self), depth, size, size), dtype=torch.float32, device=self.device)
        for a in range(0, len(self), self.block):
            g = np.arange(a, min(len(self), a + self.block))
            allv[a:a + g.size] = self.views(g, size=size, depth=depth)
        self._cache = (size, depth, allv)
        return True

    def views(self, g, *, size: int, depth: int, volume: torch.Tensor | None = None) -> torch.Tensor:
        """(len(g), depth, size, size) float32 view volumes on ``device``, in the order of ``g``.

        ``volume``: a (Z, Y, X) canonical volume to take instead of each sample's species volume, at
        the sample's view and mirror flag (the ``mean`` baseline; never cached)."""
        from tomodata.views import sample_to_view

        g = np.asarray(g, dtype=np.int64).reshape(-1)
        if volume is None and self._cache is not None and self._cache[:2] == (size, depth):
            self.locate(g)
            return self._cache[2][torch.from_numpy(g).to(self.device)]
        out = torch.empty((g.size, depth, size, size), dtype=torch.float32, device=self.device)
        if g.size == 0:
            return out
        s, j = self.locate(g)
        view, mirrored = sample_to_view(j, self.samples_per_species // 2)
        if volume is not None:
            volume = torch.as_tensor(volume, dtype=torch.float32, device=self.device)
        for sp in np.unique(s):
            sel = np.nonzero(s == sp)[0]
            vol = self.volume(int(sp)) if volume is None else volume
            uniq, inv = np.unique(view[sel], return_inverse=True)
            # at most view_batch views per torch_view_volumes call (default: VIEW_BATCH_BYTES of its
            # sampling grid and temporaries, about 160 bytes per voxel: one view at 128³, ~100 at 32³);
            # a view's volume does not depend on what it is batched with
            per = self.view_batch or max(1, VIEW_BATCH_BYTES // (160 * depth * size * size))
            for u0 in range(0, uniq.size, per):
                u1 = min(uniq.size, u0 + per)
                made = torch_view_volumes(vol[None, None].expand(u1 - u0, 1, *vol.shape),
                                          self.rotations[int(sp)][torch.from_numpy(uniq[u0:u1]).to(self.device)],
                                          size=size, steps=depth)
                for m in (False, True):
                    part = np.nonzero((mirrored[sel] == m) & (inv >= u0) & (inv < u1))[0]
                    if part.size:
                        v = made[torch.from_numpy(inv[part] - u0).to(self.device)]
                        out[torch.from_numpy(sel[part]).to(self.device)] = torch.flip(v, dims=(2,)) if m else v
        return out


def store_image_blocks(ds, species: Sequence[str], *, block: int = 256) -> Callable[[], Iterator[tuple[int, np.ndarray]]]:
    """A factory of iterators over all samples' x-rays of ``species``: ``(first global index, (b, S·S)
    float32)`` blocks of at most ``block`` images (shard-aligned reads), in global index order."""
    n = int(ds.attrs["samples_per_species"])

    def gen():
        for s, name in enumerate(species):
            for a in range(0, n, block):
                b = min(block, n - a)
                imgs = ds.images(name, slice(a, a + b))
                yield s * n + a, imgs.reshape(b, -1)

    return gen


# --------------------------------------------------------------------------------------------------
# NN: exact blocked nearest x-ray
# --------------------------------------------------------------------------------------------------


def nearest_images(queries, train_blocks: Callable[[], Iterable[tuple[int, np.ndarray]]], *, device="cpu",
                   query_block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 nearest neighbours of ``queries`` (Q, P) among the rows that ``train_blocks()`` yields.

    Args:
        queries: (Q, ...) images (flattened to (Q, P)).
        train_blocks: a callable returning an iterable of ``(offset, block)`` with ``block`` of shape
            (b, P) and ``offset`` its first global index; called once per query block (streaming).
        device: where the matrix products run (float64).
        query_block: queries per pass over the training data.

    Returns:
        (index (Q,) int64, squared distance (Q,) float64, recomputed directly for the winner).
    """
    q_all = torch.as_tensor(np.asarray(queries)).reshape(len(queries), -1)
    Q, P = q_all.shape
    dev = torch.device(device)
    best_i = np.full(Q, -1, dtype=np.int64)
    best_d = np.full(Q, np.inf, dtype=np.float64)
    for q0 in range(0, Q, int(query_block)):
        q = q_all[q0:q0 + query_block].to(dev, torch.float64)
        qn = (q * q).sum(1)
        bi = torch.full((q.shape[0],), -1, dtype=torch.int64, device=dev)
        bd = torch.full((q.shape[0],), math.inf, dtype=torch.float64, device=dev)
        seen = False
        for offset, block in train_blocks():
            t = torch.as_tensor(np.asarray(block)).reshape(len(block), -1).to(dev, torch.float64)
            if t.shape[1] != P:
                raise ValueError(f"training images have {t.shape[1]} pixels, the queries {P}")
            seen = True
            d = qn[:, None] + (t * t).sum(1)[None, :] - 2.0 * (q @ t.T)
            a = d.argmin(1)  # first minimal index within the block
            exact = ((q - t[a]) ** 2).sum(1)
            better = exact < bd  # strict: earlier blocks (lower indices) win ties
            bd = torch.where(better, exact, bd)
            bi = torch.where(better, a + int(offset), bi)
        if not seen:
            raise ValueError("no training images to search")
        best_i[q0:q0 + q.shape[0]] = bi.cpu().numpy()
        best_d[q0:q0 + q.shape[0]] = bd.cpu().numpy()
    return best_i, best_d


class ImageSource:
    """The x-rays of some species' samples, in :class:`ViewSource`'s global index order, with the
    interface :func:`oracle_search` takes (``len``, ``views(g, size=S, depth=1)`` → (len(g), 1, S, S)),
    so that the Oracle's exact lower-bound search serves the NN baseline too. Images are read from
    the store on demand, or all kept (``cache``) when they fit."""

    def __init__(self, ds, species: Sequence[str], *, device="cpu"):
        if not species:
            raise ValueError("no species to take x-rays from")
        self.ds = ds
        self.species = list(species)
        self.device = torch.device(device)
        self.samples_per_species = int(ds.attrs["samples_per_species"])
        self.image_size = int(ds.attrs["image_size"])
        self._all: torch.Tensor | None = None
        self.images_read = 0  # images read from the store by views() (a counter for tests and benchmarks)

    def __len__(self) -> int:
        return len(self.species) * self.samples_per_species

    def cache(self, *, budget_bytes: int = 1 << 30, block: int = 256) -> bool:
        """Read and keep every image (float32) if they fit ``budget_bytes``; True if cached."""
        if self._all is not None:
            return True
        S = self.image_size
        if len(self) * S * S * 4 > budget_bytes:
            return False
        allx = torch.empty((len(self), 1, S, S), dtype=torch.float32, device=self.device)
        for a, imgs in store_image_blocks(self.ds, self.species, block=block)():
            allx[a:a + len(imgs), 0] = torch.from_numpy(imgs.reshape(-1, S, S)).to(self.device)
        self._all = allx
        return True

    def views(self, g, *, size: int, depth: int) -> torch.Tensor:
        """(len(g), 1, S, S) float32 x-rays on ``device`` in the order of ``g`` (``size`` must be
        the store's image size and ``depth`` 1: images have no depth)."""
        S = self.image_size
        if size != S or depth != 1:
            raise ValueError(f"x-rays are (1, {S}, {S}); asked for ({depth}, {size}, {size})")
        g = np.asarray(g, dtype=np.int64).reshape(-1)
        if g.size and (g.min() < 0 or g.max() >= len(self)):
            raise IndexError(f"sample index out of range [0, {len(self)})")
        if self._all is not None:
            return self._all[torch.from_numpy(g).to(self.device)]
        out = torch.empty((g.size, 1, S, S), dtype=torch.float32, device=self.device)
        s, j = g // self.samples_per_species, g % self.samples_per_species
        for sp in np.unique(s):
            m = np.nonzero(s == sp)[0]
            uniq, inv = np.unique(j[m], return_inverse=True)  # sorted, unique reads
            name = self.species[int(sp)]
            if uniq[-1] - uniq[0] + 1 == uniq.size:  # a contiguous run: one slice read (shard-aligned, fast)
                imgs = self.ds.images(name, slice(int(uniq[0]), int(uniq[-1]) + 1))
            else:
                imgs = self.ds.images(name, uniq)
            self.images_read += uniq.size
            imgs = torch.from_numpy(np.asarray(imgs)).to(self.device)
            out[torch.from_numpy(m).to(self.device), 0] = imgs[torch.from_numpy(inv).to(self.device)]
        return out


def nearest_images_bounded(queries, source: ImageSource, *, coarse: int = 16, k: int = 32, chunk: int = 4,
                           train_features: torch.Tensor | None = None, query_block: int = 256) -> OracleResult:
    """Exact L2 nearest training x-ray of each of ``queries`` (Q, S, S), by the Oracle's rule.

    A pre-filter then an exact re-rank: :func:`oracle_search` on the images as (1, S, S) volumes:
    lower bounds from block means and deviation norms (:func:`coarse_features`, at most ``coarse``
    cells per axis) short-list the candidates, which are compared exactly (Σ (a − b)² in float64)
    until the next lower bound exceeds the best distance; the result is the same exact nearest
    neighbour (ties to the lowest index) as the brute-force :func:`nearest_images`, at a fraction
    of its cost when the bound is tight. ``query_block`` queries are searched at a time.
    """
    q_all = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    if q_all.ndim != 3 or q_all.shape[1:] != (source.image_size, source.image_size):
        raise ValueError(f"queries must be (Q, {source.image_size}, {source.image_size}), got {tuple(q_all.shape)}")
    S = source.image_size
    factors = coarse_factors((1, S, S), coarse)
    if train_features is None:
        train_features = train_coarse_features(source, size=S, depth=1, factors=factors)
    parts = []
    for a in range(0, q_all.shape[0], int(query_block)):
        q = q_all[a:a + query_block, None].to(source.device)
        parts.append(oracle_search(q, source, coarse=coarse, k=k, chunk=chunk, train_features=train_features))
    return OracleResult(*(np.concatenate([getattr(r, f) for r in parts]) for f in
                          ("index", "dist2", "evaluated", "fallback", "certified")),
                        timings={t: sum(r.timings[t] for r in parts) for t in ("bound_s", "exact_s")})


#: the paper's scale for :func:`bench_nn`'s estimate: 155 training species and 20 held out, 2,664
#: samples each, 256² x-rays
PAPER_NN_SCALE = dict(n_train=155 * 2664, n_queries=20 * 2664, pixels=256 * 256)


def bench_nn(store, *, queries: int = 256, coarse: int = 16, k: int = 32, device="cpu") -> dict:
    """Time the two exact NN searches on a store: ``queries`` held-out x-rays (evenly spaced) against
    every training x-ray, all images in memory (``tomo bench nn``).

    Returns the sizes, ``brute_s`` (:func:`nearest_images`), ``features_s`` (the training images'
    lower-bound features, once per evaluation) and ``bound_s`` (:func:`nearest_images_bounded` given
    them), the mean and largest number of exact comparisons per query, whether both found the same
    neighbours, and ``paper_estimate_s``: the paper's scale (:data:`PAPER_NN_SCALE`) at the measured
    costs: brute force per (query, training image, pixel); features per (training image, pixel);
    its lower bounds and short lists per (query, training image) and its exact comparisons per
    (comparison, pixel), assuming as many comparisons per query as measured here.
    """
    from tomodata.store import open_store

    ds = open_store(store)
    train = ds.species_names("train")
    held = ds.species_names("val") or ds.species_names("test")
    if not train or not held:
        raise ValueError(f"the store {store} needs 'train' and held-out species for the NN benchmark")
    images = ImageSource(ds, train, device=device)
    if not images.cache(budget_bytes=8 << 30):
        raise ValueError(f"the {len(images)} training x-rays of {store} do not fit 8 GiB for the benchmark")
    held_src = ImageSource(ds, held, device=device)
    g = _select(len(held_src), int(queries))
    S = images.image_size
    q = held_src.views(g, size=S, depth=1)[:, 0].cpu().numpy()
    def blocks():  # the cached images, for the brute force
        for a in range(0, len(images), 256):
            g = np.arange(a, min(len(images), a + 256))
            yield a, images.views(g, size=S, depth=1).reshape(g.size, -1)

    t = time.perf_counter()
    bi, _ = nearest_images(q, blocks, device=device)
    brute_s = time.perf_counter() - t
    t = time.perf_counter()
    factors = coarse_factors((1, S, S), coarse)
    feats = train_coarse_features(images, size=S, depth=1, factors=factors)
    features_s = time.perf_counter() - t
    t = time.perf_counter()
    r = nearest_images_bounded(q, images, coarse=coarse, k=k, train_features=feats)
    bound_s = time.perf_counter() - t
    N, Q, P = len(images), len(q), S * S
    ps = PAPER_NN_SCALE
    est = dict(
        brute=brute_s / (Q * N * P) * ps["n_queries"] * ps["n_train"] * ps["pixels"],
        features=features_s / (N * P) * ps["n_train"] * ps["pixels"],
        bounds=r.timings["bound_s"] / (Q * N) * ps["n_queries"] * ps["n_train"],
        exact=r.timings["exact_s"] / (Q * P) * ps["n_queries"] * ps["pixels"],
    )
    est["bound"] = est["features"] + est["bounds"] + est["exact"]
    return dict(n_train=N, n_queries=Q, image_size=S, coarse=coarse, cells=coarse_cells((1, S, S), coarse), k=k,
                brute_s=brute_s, features_s=features_s, bound_s=bound_s, bound_timings=r.timings,
                evaluated_mean=float(r.evaluated.mean()), evaluated_max=int(r.evaluated.max()),
                same=bool(np.array_equal(bi, r.index)), threads=torch.get_num_threads(),
                paper_scale=ps, paper_estimate_s=est)


# --------------------------------------------------------------------------------------------------
# Oracle: exact nearest view volume with a coarse lower bound
# --------------------------------------------------------------------------------------------------


def coarse_factors(shape: Sequence[int], coarse: int) -> tuple[int, ...]:
    """Per axis the smallest integer factor dividing the side that brings it to <= ``coarse`` cells."""
    if coarse < 1:
        raise ValueError(f"coarse must be >= 1, got {coarse}")
    out = []
    for n in shape:
        f = max(1, math.ceil(n / coarse))
        while n % f:
            f += 1
        out.append(f)
    return tuple(out)


def coarse_cells(shape: Sequence[int], coarse: int) -> int:
    """Number of blocks (cells) of :func:`coarse_factors` on ``shape``; the features have 2 × as many."""
    return math.prod(n // f for n, f in zip(shape, coarse_factors(shape, coarse)))


def oracle_coarse_for_memory(shape: Sequence[int], n_train: int, coarse: int, budget_bytes: int, *,
                             what: str = "the Oracle's features") -> int:
    """The largest ``c <= coarse`` whose training features (``n_train × 2 · cells`` float32) fit
    ``budget_bytes``. Fewer cells only loosen the lower bound (more exact evaluations); the Oracle
    stays exact (when ``oracle_max_evaluated`` is None, the default). ``ValueError`` when not even
    one cell per volume fits."""
    if coarse < 1:
        raise ValueError(f"coarse must be >= 1, got {coarse}")
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1, got {n_train}")
    def fits(c: int) -> bool:
        return n_train * 2 * coarse_cells(shape, c) * 4 <= budget_bytes  # float32 features

    c = int(coarse)
    while c > 1 and not fits(c):
        c -= 1
    if not fits(c):
        raise ValueError(f"{what} of {n_train} training samples need at least "
                         f"{n_train * 8} bytes (one cell each); the budget is {budget_bytes} bytes")
    return c


def coarse_features(views: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Lower-bound features of (B, D, H, W) view volumes: per non-overlapping (fd, fh, fw) block j its
    mean m_j times sqrt(f) (f = fd·fh·fw) and the norm ρ_j of its deviation from the mean,
    ``ρ_j = ‖x_j − m_j‖``. Returns (B, 2 · cells) float32 (computed in float64).

    For two volumes a, b and every block, Pythagoras (the deviation is orthogonal to the constant)
    and the reverse triangle inequality give ``‖a_j − b_j‖² = f (m_a − m_b)² + ‖ã_j − b̃_j‖²
    >= f (m_a − m_b)² + (ρ_a − ρ_b)²``, so ``‖φ(a) − φ(b)‖² <= ‖a − b‖²``."""
    fd, fh, fw = factors
    B, D, H, W = views.shape
    if D % fd or H % fh or W % fw:
        raise ValueError(f"block factors {tuple(factors)} do not divide the grid {(D, H, W)}")
    x = views.float().reshape(B, D // fd, fd, H // fh, fh, W // fw, fw)
    f = fd * fh * fw
    m = x.sum(dim=(2, 4, 6), keepdim=True, dtype=torch.float64) / f  # float64 accumulation
    dev = x - m.float()
    rho = (dev * dev).sum(dim=(2, 4, 6), dtype=torch.float64).sqrt()
    return torch.cat([m.flatten(1) * math.sqrt(f), rho.flatten(1)], 1).float()


@dataclass
class OracleResult:
    index: np.ndarray      # (Q,) int64 global training index
    dist2: np.ndarray      # (Q,) float64 exact Σ (a − b)² on the target grid
    evaluated: np.ndarray  # (Q,) int64 candidates evaluated at full resolution
    fallback: np.ndarray   # (Q,) bool: the shortlist was not enough and the fallback pass ran
    certified: np.ndarray  # (Q,) bool: provably the exact nearest (False only when max_evaluated cut it short)
    timings: dict = field(default_factory=dict)  # seconds: bound_s (lower bounds, short lists), exact_s (the rest)


def train_coarse_features(source: ViewSource, *, size: int, depth: int, factors: Sequence[int],
                          block: int | None = None, budget_bytes: int = 128 << 20) -> torch.Tensor:
    """(N, F) float32 lower-bound features (:func:`coarse_features`) of every sample of ``source``,
    streamed from the store ``block`` samples at a time (default: as many as fit ``budget_bytes`` in
    float64, an even number so that a view and its mirror share a block), so the full-resolution
    view volumes (or x-rays) are never all in memory: the peak is the features plus one block and
    its temporaries (about 4 × the block in float64). Every sample's features are computed from
    exactly its own view volume, so the result does not depend on ``block``."""
    n = len(source)
    if block is None:
        block = max(2, int(budget_bytes // (depth * size * size * 8)) // 2 * 2)
    block = int(block)
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    feats = None  # filled in place: peak memory is the features plus one block, not twice the features
    for a in range(0, n, block):
        g = np.arange(a, min(n, a + block))
        f = coarse_features(source.views(g, size=size, depth=depth), factors)
        if feats is None:
            feats = torch.empty((n, f.shape[1]), dtype=f.dtype, device=f.device)
        feats[a:a + g.size] = f
    return feats


#: bytes of one block of training features in float64 in :func:`_lower_bounds` (with its square: twice that)
LOWER_BOUND_BLOCK_BYTES = 64 << 20


def _lower_bounds(qf: torch.Tensor, tf: torch.Tensor, block: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``‖φ(q) − φ(t)‖²`` (float64) for query features (Q, F) against blocks of training features,
    streamed ``block`` rows at a time (default: :data:`LOWER_BOUND_BLOCK_BYTES` of float64 rows), so
    only one block of the training features is ever widened to float64."""
    qf = qf.double()
    qn = (qf * qf).sum(1)
    if block is None:
        block = max(2, LOWER_BOUND_BLOCK_BYTES // (8 * max(1, tf.shape[1])))
    for a, b in _row_chunks(tf.shape[0], int(block)):
        t = tf[a:b].double()
        yield a, (qn[:, None] + (t * t).sum(1)[None] - 2.0 * (qf @ t.T)).clamp_min(0.0)


def _row_chunks(n: int, rows: int | None) -> list[tuple[int, int]]:
    """``[(a, b), ...]`` covering ``range(n)`` in chunks of ``rows`` (None: one chunk) such that a
    row-wise float64 reduction gives the same bits as one pass over all n rows: torch reduces each
    row of an (n >= 2, P) tensor in the same order whatever n (checked in tests/test_evaluate.py);
    only n = 1 differs (a single row is split across threads). So a single row stays alone, and a
    lone last row joins the chunk before it."""
    if n <= 1 or rows is None or rows >= n:
        return [(0, n)]
    bounds = list(range(0, n, max(2, int(rows)))) + [n]
    if bounds[-1] - bounds[-2] == 1:
        bounds.pop(-2)
    return list(zip(bounds[:-1], bounds[1:]))


def _sq_distances(v: torch.Tensor, queries: torch.Tensor, qi: np.ndarray, rows: int = 4) -> torch.Tensor:
    """``Σ (v[r] − queries[qi[r]])²`` per row r, in float64, ``rows`` rows at a time (the float64
    temporaries of a whole request would take 3 × 8 bytes per voxel of every candidate); the same
    numbers as one pass over all rows (:func:`_row_chunks`)."""
    n = v.shape[0]
    out = torch.empty(n, dtype=torch.float64, device=v.device)
    for a, b in _row_chunks(n, rows):
        q = queries[torch.from_numpy(np.asarray(qi[a:b])).to(v.device)]
        out[a:b] = ((v[a:b].double() - q.double()) ** 2).flatten(1).sum(1)
    return out


def oracle_search(query_views: torch.Tensor, source: ViewSource, *, coarse: int = 16, k: int = 32, chunk: int = 4,
                  train_features: torch.Tensor | None = None, max_evaluated: int | None = None,
                  view_budget_bytes: int = 256 << 20) -> OracleResult:
    """Exact nearest training view volume (L2 on the query's grid) for each of ``query_views``.

    Args:
        query_views: (Q, D, H, W) ground-truth view volumes (on ``source.device``).
        source: the training samples.
        coarse: at most this many cells per axis for the lower-bound features.
        k: shortlist length (the (k+1)-th LB certifies it).
        chunk: candidates per query evaluated exactly per round.
        train_features: precomputed :func:`train_coarse_features` (same grid and ``coarse``).
        max_evaluated: stop a query after this many exact evaluations (its result is then the best
            so far and ``certified`` says whether the lower bound still proves it exact); None: no
            limit, always exact. ``max_evaluated = k`` is the plain "shortlist, then re-rank" rule.
        view_budget_bytes: cap on the full-resolution candidate views made at once.

    See the module docstring for the rule and why the result is exact.
    """
    Q, D, H, W = query_views.shape
    factors = coarse_factors((D, H, W), coarse)
    if train_features is None:
        train_features = train_coarse_features(source, size=H, depth=D, factors=factors)
    tf = train_features.to(query_views.device)
    N = tf.shape[0]
    if N != len(source):
        raise ValueError(f"{N} training features for {len(source)} training samples")
    t_start = time.perf_counter()
    qf = coarse_features(query_views, factors)
    kk = min(k + 1, N)
    best_lb = torch.full((Q, kk), math.inf, dtype=torch.float64, device=tf.device)
    best_ix = torch.full((Q, kk), -1, dtype=torch.int64, device=tf.device)
    for a, lb in _lower_bounds(qf, tf):
        cand_lb = torch.cat([best_lb, lb], 1)
        cand_ix = torch.cat([best_ix, torch.arange(a, a + lb.shape[1], device=tf.device).expand(Q, -1)], 1)
        best_lb, order = torch.topk(cand_lb, kk, dim=1, largest=False, sorted=True)  # O(n), not a full sort
        best_ix = cand_ix.gather(1, order)
    best_lb, best_ix = best_lb.cpu().numpy(), best_ix.cpu().numpy()
    t_bound = time.perf_counter()

    qnorm = qf.double().norm(dim=1).cpu().numpy()  # = ‖q‖

    def thr(d: float, i: int) -> float:
        # LB rounding (float32 features) is below 2.4e-7 · sqrt(LB) · (‖q‖ + ‖t‖); the last term covers it
        return d * (1.0 + ORACLE_REL_MARGIN) + ORACLE_ABS_MARGIN + ORACLE_NORM_MARGIN * math.sqrt(max(d, 0.0)) * (qnorm[i] + 1.0)

    # per-query state: candidate list (in LB order), position, bound on everything not in the list
    cands = [best_ix[i, :k].tolist() if N > k else best_ix[i].tolist() for i in range(Q)]
    lbs = [best_lb[i, :k].tolist() if N > k else best_lb[i].tolist() for i in range(Q)]
    bound = [float(best_lb[i, k]) if N > k else math.inf for i in range(Q)]
    pos = [0] * Q
    seen: list[set[int]] = [set() for _ in range(Q)]
    out_i = np.full(Q, -1, dtype=np.int64)
    out_d = np.full(Q, np.inf)
    evaluated = np.zeros(Q, dtype=np.int64)
    fallback = np.zeros(Q, dtype=bool)
    certified = np.zeros(Q, dtype=bool)
    cap = math.inf if max_evaluated is None else max(1, int(max_evaluated))
    done = np.zeros(Q, dtype=bool)
    per_call = max(1, int(view_budget_bytes // (D * H * W * 4)))
    while not done.all():
        req_q, req_g = [], []
        for i in np.nonzero(~done)[0]:
            take = cands[i][pos[i]:pos[i] + int(min(chunk, cap - evaluated[i]))]
            req_q += [i] * len(take)
            req_g += take
            pos[i] += len(take)
        for a in range(0, len(req_g), per_call):
            g = np.asarray(req_g[a:a + per_call])
            qi = np.asarray(req_q[a:a + per_call])
            v = source.views(g, size=H, depth=D)
            d = _sq_distances(v, query_views, qi)
            for i, gi, di in zip(qi.tolist(), g.tolist(), d.cpu().numpy().tolist()):
                evaluated[i] += 1
                seen[i].add(gi)
                if di < out_d[i] or (di == out_d[i] and gi < out_i[i]):
                    out_d[i], out_i[i] = di, gi
        for i in np.nonzero(~done)[0]:
            nxt = lbs[i][pos[i]] if pos[i] < len(cands[i]) else bound[i]
            if nxt > thr(out_d[i], i):
                done[i] = certified[i] = True
            elif evaluated[i] >= cap:
                done[i] = True  # cut short: not certified
            elif pos[i] >= len(cands[i]):
                # the shortlist is exhausted but not certified: every sample with LB <= d* is a candidate
                fallback[i] = True
                t = thr(out_d[i], i)
                new_g, new_lb, rest = [], [], math.inf
                for a, lb in _lower_bounds(qf[i:i + 1], tf):
                    lb = lb[0].cpu().numpy()
                    sel = lb <= t
                    idx = np.nonzero(sel)[0]
                    new_g += (idx + a).tolist()
                    new_lb += lb[idx].tolist()
                    if (~sel).any():
                        rest = min(rest, float(lb[~sel].min()))
                keep = [(l, g) for l, g in sorted(zip(new_lb, new_g)) if g not in seen[i]]
                cands[i] = [g for _, g in keep]
                lbs[i] = [l for l, _ in keep]
                pos[i] = 0
                bound[i] = rest
                if not cands[i]:
                    done[i] = certified[i] = True
    t_end = time.perf_counter()
    return OracleResult(out_i, out_d, evaluated, fallback, certified,
                        timings=dict(bound_s=t_bound - t_start, exact_s=t_end - t_bound))


# --------------------------------------------------------------------------------------------------
# evaluate_run
# --------------------------------------------------------------------------------------------------


def _check_compat(state: dict, store) -> list[str]:
    """Differences between the data a checkpoint was trained on (its ``data`` fingerprint: spec,
    chi, steps, image and volume sizes, views, view scheme and seed, training species) and the
    store's ``train`` split (empty = compatible)."""
    from .data import StoreSamples
    from .train import config_differences, data_fingerprint

    now = data_fingerprint(StoreSamples(store, "train"))
    return config_differences(state.get("data", {}), now, "data.")


def _fuse_batch(raw: torch.Tensor, xrays: np.ndarray, *, size: int, fusion_at: str, beta: float, chi: float) -> torch.Tensor:
    """'ours' for a batch: raw (B, D, s, s) network output, xrays (B, S, S) opacity → (B, D, size, size)."""
    from .fusion import fuse, opacity_max  # imported lazily (being finished separately)

    out = []
    coarse = raw.detach().float().cpu().numpy()
    for c, x in zip(coarse, xrays):
        if fusion_at == "target":
            tau = -np.log1p(-np.minimum(np.asarray(x, np.float64), opacity_max(chi)))
            tau = resize_xrays(torch.from_numpy(tau)[None, None], size)[0, 0].numpy()
            x = -np.expm1(-tau)
        f = torch.from_numpy(np.ascontiguousarray(fuse(c, x, beta=beta, chi=chi)))
        out.append(resize_xrays(f[None], size)[0])
    return torch.stack(out).to(raw.device)


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(header), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})


def _jsonable(o):
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return _jsonable(float(o))
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def _select(n_total: int, max_samples: int | None) -> np.ndarray:
    if max_samples is None or max_samples >= n_total:
        return np.arange(n_total, dtype=np.int64)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    return np.unique(np.round(np.linspace(0, n_total - 1, max_samples)).astype(np.int64))


def evaluate_run(store, checkpoint, out_dir, *, max_samples: int | None = None, batch: int = 16, device="cpu",
                 methods: Sequence[str] = METHODS, slice_counts: Sequence[int] = (8, 16, 32, 64),
                 iso: float = DEFAULT_ISO, beta: float = 2.0, fusion_at: str = "xray",
                 oracle_coarse: int = 16, oracle_k: int = 32, oracle_chunk: int = 4,
                 oracle_max_evaluated: int | None = None, oracle_feature_bytes: int = 2 << 30,
                 cache_bytes: int = 1 << 30,
                 nn_search: str = "bound", nn_coarse: int = 16, nn_k: int = 32,
                 nn_query_block: int = 4096, train_block: int = 256, strict: bool = True,
                 split: str = "test", n_boot: int = ST.BOOTSTRAP_DRAWS, boot_seed: int = 0,
                 progress: bool = False) -> dict:
    """Evaluate a checkpoint on the store's ``split`` species (default ``test``); write the tables
    (module docstring).

    Args:
        store: the dataset store (.zarr); its ``train`` split is the NN/Oracle/mean database, ``split``
            the evaluated species.
        checkpoint: a training checkpoint (``last.pt``).
        out_dir: output folder (created).
        max_samples: evaluate at most this many samples, evenly spaced over (species, sample).
        batch: samples per network/metric batch.
        device: torch device for the network, view volumes, searches and renders.
        methods: any of ``ours``, ``ours_nofusion``, ``nn``, ``oracle``, ``mean``.
        slice_counts: depths for the slice-count analysis.
        iso: iso-value of the DSSIM renders.
        beta: fusion sharpness.
        fusion_at: ``"xray"`` or ``"target"`` (module docstring).
        oracle_coarse, oracle_k, oracle_chunk, oracle_max_evaluated: Oracle search settings
            (:func:`oracle_search`; ``oracle_max_evaluated=None``: no cap, exact).
        oracle_feature_bytes: memory for the Oracle's lower-bound features of every training sample;
            ``oracle_coarse`` is lowered until they fit (:func:`oracle_coarse_for_memory`; the paper's
            413k training samples at 128³ need 13.5 GB = 12.6 GiB at 16 cells per axis, 1.7 GB at 8).
            The search stays exact (with ``oracle_max_evaluated=None``); ``summary.json`` records the
            coarseness used.
        cache_bytes: keep every training view volume (target grid) in memory when they fit this budget
            (the NN/Oracle volumes and the Oracle's exact distances then need no re-sampling).
        nn_search: ``"bound"`` (default): :func:`nearest_images_bounded`, the Oracle's exact
            lower-bound pre-filter and re-rank on the x-rays (``nn_coarse`` cells per axis, short list
            ``nn_k``; its features take ``oracle_feature_bytes`` at most, like the Oracle's; the
            images are kept in memory when they fit ``cache_bytes``); ``"brute"``:
            :func:`nearest_images`, every pair by blocked matrix products. Both are exact and give
            the same neighbours (ties to the lowest index).
        nn_query_block, train_block: NN settings: held-out x-rays read per pass (and, brute force,
            searched per pass), training images per block.
        strict: refuse a checkpoint trained on other data than the store's (ValueError naming what differs).
        split: the evaluated split, ``"test"`` (the reported result) or ``"val"`` (the model-choice
            set); exactly that split's species are evaluated (ValueError if it has none, or an
            incomplete one, or one the checkpoint was trained on).
        n_boot, boot_seed: draws and seed of the cluster bootstrap over species (:mod:`model.stats`).
        progress: a bar on a terminal, else progress lines and named phases in the log (tomodata.progress).

    Returns:
        The summary dict (also written as ``summary.json``).
    """
    from tomodata.store import open_store

    from .train import model_from_checkpoint

    t_start = time.perf_counter()
    methods = tuple(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods repeat: {methods}")
    if fusion_at not in ("xray", "target"):
        raise ValueError(f"fusion_at must be 'xray' or 'target', got {fusion_at!r}")
    if nn_search not in ("bound", "brute"):
        raise ValueError(f"nn_search must be 'bound' or 'brute', got {nn_search!r}")
    counts = [int(c) for c in slice_counts]
    if any(c < 1 for c in counts):
        raise ValueError(f"slice_counts must be positive, got {list(slice_counts)}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {list(EVAL_SPLITS)}, got {split!r}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    dev = torch.device(device)

    ds = open_store(store)
    model, state = model_from_checkpoint(checkpoint, map_location="cpu")
    net = model.config
    splits = {sp: ds.species_names(sp) for sp in ("train", "val", "test")}
    held = splits[split]  # the evaluated species: exactly the asked split
    train = splits["train"]
    if not held:
        have = ", ".join(f"{k}: {len(v)}" for k, v in splits.items())
        raise ValueError(f"the store {store} has no {split!r} species to evaluate ({have} species); "
                         f"pick another split (--split)")
    if not train:
        raise ValueError(f"the store {store} has no 'train' species (the NN, Oracle and mean database)")
    incomplete = [n for n in held + train if not ds.is_complete(n)]
    if incomplete:
        raise ValueError(f"species not complete in {store}: {incomplete} (run tomo validate)")
    diffs = _check_compat(state, store)
    if diffs and strict:
        raise ValueError(f"checkpoint {checkpoint} was trained on other data than the store {store}:\n  "
                         + "\n  ".join(diffs))
    leaked = sorted(set(held) & set(state.get("data", {}).get("species", [])))
    if leaked:
        raise ValueError(f"evaluated ({split!r}) species {leaked} of {store} were training species of {checkpoint}")
    image_size = int(ds.attrs["image_size"])
    chi = float(ds.attrs["chi"])
    D, S = int(net.out_depth), int(net.out_size)
    if S < 7:
        raise ValueError(f"the network's output size {S} is below SSIM's 7x7 window")
    model = model.to(dev)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    held_src = ViewSource(ds, held, device=dev)
    train_src = ViewSource(ds, train, device=dev) if ("nn" in methods or "oracle" in methods) else None
    sel = _select(len(held_src), max_samples)
    sp_idx, smp_idx = held_src.locate(sel)
    Q = sel.size
    n_views = int(ds.attrs["n_views"])
    mean_vol = None
    if "mean" in methods:  # the mean baseline: views of the mean training volume (= mean of their views)
        t0 = time.perf_counter()
        mean_vol = torch.from_numpy(mean_volume(ds, train)).to(dev)
        timings["mean_volume_s"] = time.perf_counter() - t0

    held_images = ImageSource(ds, held)  # the held-out x-rays, read on demand (same global indices)

    def held_xrays(ix: np.ndarray) -> np.ndarray:
        return held_images.views(ix, size=image_size, depth=1)[:, 0].numpy()

    # ---- NN: exact nearest training x-ray
    nn_i = np.full(Q, -1, np.int64)
    nn_d = np.full(Q, np.nan)
    nn_eval = np.zeros(Q, np.int64)
    nn_coarse_used = None
    if progress and "nn" in methods:
        phase("evaluate", f"NN search ({nn_search}) of {Q} held-out x-rays in {len(train)} training species")
    if "nn" in methods and nn_search == "brute":
        t0 = time.perf_counter()
        blocks = store_image_blocks(ds, train, block=train_block)
        for a in range(0, Q, nn_query_block):
            ix = sel[a:a + nn_query_block]
            nn_i[a:a + ix.size], nn_d[a:a + ix.size] = nearest_images(
                held_xrays(ix), blocks, device=dev, query_block=nn_query_block)
        nn_eval[:] = len(train) * int(ds.attrs["samples_per_species"])
        timings["nn_s"] = timings["nn_search_s"] = time.perf_counter() - t0
    elif "nn" in methods:
        t0 = time.perf_counter()
        images = ImageSource(ds, train, device=dev)
        images.cache(budget_bytes=cache_bytes, block=train_block)
        nn_coarse_used = oracle_coarse_for_memory((1, image_size, image_size), len(images), nn_coarse,
                                                  oracle_feature_bytes, what="the NN's lower-bound features")
        nn_feats = train_coarse_features(images, size=image_size, depth=1,
                                         factors=coarse_factors((1, image_size, image_size), nn_coarse_used))
        timings["nn_features_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        timings["nn_bound_s"] = 0.0
        for a in range(0, Q, nn_query_block):
            ix = sel[a:a + nn_query_block]
            r = nearest_images_bounded(held_xrays(ix), images, coarse=nn_coarse_used, k=nn_k,
                                       train_features=nn_feats)
            timings["nn_bound_s"] += r.timings["bound_s"]
            if not r.certified.all():  # cannot happen without a cap on the evaluations; never report unproven
                raise RuntimeError("the bounded NN search left a query uncertified")
            nn_i[a:a + ix.size], nn_d[a:a + ix.size], nn_eval[a:a + ix.size] = r.index, r.dist2, r.evaluated
        del images, nn_feats
        timings["nn_search_s"] = time.perf_counter() - t1
        timings["nn_s"] = time.perf_counter() - t0

    # ---- Oracle: lower-bound features of every training view volume (the search runs per batch below)
    or_i = np.full(Q, -1, np.int64)
    or_d = np.full(Q, np.nan)
    or_eval = np.zeros(Q, np.int64)
    or_fb = np.zeros(Q, bool)
    or_cert = np.zeros(Q, bool)
    coarse_used = oracle_coarse
    if "oracle" in methods:
        coarse_used = oracle_coarse_for_memory((D, S, S), len(train_src), oracle_coarse, oracle_feature_bytes)
        if coarse_used < oracle_coarse:
            print(f"note: Oracle features with {oracle_coarse} cells per axis would not fit "
                  f"{oracle_feature_bytes / 2**30:.2f} GiB for {len(train_src)} training samples; "
                  f"using {coarse_used} (only slower)", file=sys.stderr)
    factors = coarse_factors((D, S, S), coarse_used)
    cached = False
    if train_src is not None:
        if progress:
            phase("evaluate", "training view volumes: cache")
        t0 = time.perf_counter()
        cached = train_src.cache(size=S, depth=D, budget_bytes=cache_bytes)
        timings["train_views_cache_s"] = time.perf_counter() - t0
    feats = None
    if "oracle" in methods:
        if progress:
            phase("evaluate", f"Oracle lower-bound features ({coarse_used} cells per axis)")
        t0 = time.perf_counter()
        feats = train_coarse_features(train_src, size=S, depth=D, factors=factors)
        timings["oracle_features_s"] = time.perf_counter() - t0
    t_oracle = 0.0

    # ---- predictions, metrics, renders
    t0 = time.perf_counter()
    slice_methods = ["truth"] + [m for m in ("ours", "ours_nofusion") if m in methods][:1]
    used_counts = [c for c in counts if c < D]
    skipped_counts = [c for c in counts if c >= D]
    per = {m: {k: np.full(Q, np.nan) for k in METRICS} for m in methods}
    slice_vals = {m: {c: np.full(Q, np.nan) for c in used_counts} for m in slice_methods}
    classes = [view_class(held_src.rotation(int(g))) for g in sel]
    from tomodata.progress import progress as progress_bar

    if progress:
        phase("evaluate", f"predictions, baselines and metrics of {Q} samples")
    bar = progress_bar(total=Q, enabled=progress, desc="evaluate", unit="sample")
    t_fuse = t_render = t_net = t_truth = t_nnv = t_mean = t_oracle_bound = 0.0
    with torch.no_grad():
        for a in range(0, Q, batch):
            ix = sel[a:a + batch]
            b = ix.size
            xr = held_xrays(ix)
            tt0 = time.perf_counter()
            truth = held_src.views(ix, size=S, depth=D)
            t_truth += time.perf_counter() - tt0
            vols: dict[str, torch.Tensor] = {}
            if "ours" in methods or "ours_nofusion" in methods:
                tn0 = time.perf_counter()
                raw = model(resize_xrays(torch.from_numpy(xr)[:, None].to(dev), net.input_size)).float()
                t_net += time.perf_counter() - tn0
                if "ours_nofusion" in methods:
                    vols["ours_nofusion"] = raw.clamp_min(0.0)
                if "ours" in methods:
                    tf0 = time.perf_counter()
                    vols["ours"] = _fuse_batch(raw, xr, size=S, fusion_at=fusion_at, beta=beta, chi=chi)
                    t_fuse += time.perf_counter() - tf0
                del raw
            if "nn" in methods:
                tv0 = time.perf_counter()
                vols["nn"] = train_src.views(nn_i[a:a + b], size=S, depth=D)
                t_nnv += time.perf_counter() - tv0
            if "mean" in methods:
                tm0 = time.perf_counter()
                vols["mean"] = held_src.views(ix, size=S, depth=D, volume=mean_vol)
                t_mean += time.perf_counter() - tm0
            if "oracle" in methods:
                to0 = time.perf_counter()
                res = oracle_search(truth, train_src, coarse=coarse_used, k=oracle_k, chunk=oracle_chunk,
                                    train_features=feats, max_evaluated=oracle_max_evaluated)
                t_oracle_bound += res.timings["bound_s"]
                bs = slice(a, a + b)
                or_i[bs], or_d[bs], or_eval[bs], or_fb[bs], or_cert[bs] = (res.index, res.dist2, res.evaluated,
                                                                           res.fallback, res.certified)
                vols["oracle"] = train_src.views(res.index, size=S, depth=D)
                t_oracle += time.perf_counter() - to0
            tr0 = time.perf_counter()
            order = [m for m in methods]
            # each volume group is rendered on its own and dropped (the renderer's result for a volume
            # does not depend on what it is batched with): no concatenated stack of every method's and
            # every slice count's volumes (14 groups of `batch` view volumes at the paper's sizes)
            imgs_truth = render_isosurface_torch(truth, iso=iso).cpu().numpy()
            imgs_m = {m: render_isosurface_torch(vols[m], iso=iso).cpu().numpy() for m in order}
            for m in order:
                l2, mse = volume_errors(vols[m], truth, rows=4)
                per[m]["l2"][a:a + b], per[m]["mse"][a:a + b] = l2, mse
                per[m]["dssim"][a:a + b] = [dssim(imgs_m[m][i], imgs_truth[i]) for i in range(b)]
            for m in slice_methods:
                base = truth if m == "truth" else vols[m]
                ref = imgs_truth if m == "truth" else imgs_m[m]
                for c in used_counts:
                    im = render_isosurface_torch(depth_resample(base, c), iso=iso).cpu().numpy()
                    slice_vals[m][c][a:a + b] = [dssim(im[i], ref[i]) for i in range(b)]
            del vols, truth
            t_render += time.perf_counter() - tr0
            bar.update(b)
    bar.close()
    timings["predict_and_metrics_s"] = time.perf_counter() - t0
    timings["network_s"] = t_net
    timings["fusion_s"] = t_fuse
    timings["truth_views_s"] = t_truth
    timings["nn_views_s"] = t_nnv
    timings["mean_views_s"] = t_mean
    timings["oracle_search_s"] = t_oracle
    timings["oracle_bound_s"] = t_oracle_bound
    timings["render_and_ssim_s"] = t_render

    # ---- tables
    from tomodata.views import sample_to_view

    view_of, mirrored = sample_to_view(smp_idx, n_views)
    species_of = [held[int(s)] for s in sp_idx]
    metric_rows = []
    for m in methods:
        for i in range(Q):
            metric_rows.append(dict(method=m, species=species_of[i], sample=int(smp_idx[i]), view=int(view_of[i]),
                                    mirrored=bool(mirrored[i]), view_class=classes[i], l2=float(per[m]["l2"][i]),
                                    mse=float(per[m]["mse"][i]), dssim=float(per[m]["dssim"][i])))
    _write_csv(out / "metrics.csv", ["method", "species", "sample", "view", "mirrored", "view_class", "l2", "mse", "dssim"],
               metric_rows)

    t0 = time.perf_counter()
    st = statistics_tables(per, species_of, smp_idx, n_views, methods=methods, n_boot=n_boot, seed=boot_seed)
    timings["statistics_s"] = time.perf_counter() - t0
    summary_rows, test_rows = st["summary"], st["tests"]
    _write_csv(out / "summary.csv", SUMMARY_COLUMNS, summary_rows)
    _write_csv(out / "tests.csv", TESTS_COLUMNS, test_rows)
    _write_csv(out / "species.csv", SPECIES_COLUMNS, st["species"])

    cls = np.asarray(classes)
    vc_rows = []
    for m in methods:
        for c in VIEW_CLASSES:
            for k in ("l2", "dssim"):
                mean, lo, hi, n = mean_ci(per[m][k][cls == c])
                vc_rows.append(dict(method=m, view_class=c, metric=k, mean=mean, ci_low=lo, ci_high=hi, n=n))
    _write_csv(out / "view_classes.csv", ["method", "view_class", "metric", "mean", "ci_low", "ci_high", "n"], vc_rows)

    sc_rows = []
    for m in slice_methods:
        for c in used_counts:
            mean, lo, hi, n = mean_ci(slice_vals[m][c])
            sc_rows.append(dict(method=m, slices=c, dssim_mean=mean, ci_low=lo, ci_high=hi, n=n))
    _write_csv(out / "slice_counts.csv", ["method", "slices", "dssim_mean", "ci_low", "ci_high", "n"], sc_rows)

    tsp, tsm = (train_src.locate(np.maximum(nn_i, 0)) if train_src else (None, None))
    osp, osm = (train_src.locate(np.maximum(or_i, 0)) if train_src else (None, None))
    match_rows = []
    for i in range(Q):
        r = dict(species=species_of[i], sample=int(smp_idx[i]))
        has_nn, has_or = "nn" in methods, "oracle" in methods
        r.update(nn_species=train[int(tsp[i])] if has_nn else "", nn_sample=int(tsm[i]) if has_nn else "",
                 nn_dist2=float(nn_d[i]) if has_nn else "", nn_evaluated=int(nn_eval[i]) if has_nn else "",
                 oracle_species=train[int(osp[i])] if has_or else "", oracle_sample=int(osm[i]) if has_or else "",
                 oracle_dist2=float(or_d[i]) if has_or else "", oracle_evaluated=int(or_eval[i]) if has_or else "",
                 oracle_fallback=bool(or_fb[i]) if has_or else "", oracle_certified=bool(or_cert[i]) if has_or else "")
        match_rows.append(r)
    _write_csv(out / "matches.csv", ["species", "sample", "nn_species", "nn_sample", "nn_dist2", "nn_evaluated",
                                     "oracle_species",
                                     "oracle_sample", "oracle_dist2", "oracle_evaluated", "oracle_fallback",
                                     "oracle_certified"], match_rows)

    timings["total_s"] = time.perf_counter() - t_start
    summary = dict(
        store=str(store), checkpoint=str(checkpoint), checkpoint_step=int(state.get("step", -1)),
        network=net.to_dict(), target_shape=[D, S, S], image_size=image_size, chi=chi,
        eval_split=split, eval_species=held, val_species=held, train_species=train,
        splits=splits, split_use=split_use(split),
        aliases={"val_species": "eval_species (the evaluated species, whatever their split; kept for older readers)"},
        n_samples=int(Q), n_species=len(set(species_of)), n_views_evaluated=len(set(zip(species_of, view_of.tolist()))),
        methods=list(methods),
        settings=dict(max_samples=max_samples, batch=batch, device=str(dev), iso=iso, beta=beta, fusion_at=fusion_at,
                      oracle_coarse=oracle_coarse, oracle_coarse_used=coarse_used,
                      oracle_feature_bytes=oracle_feature_bytes, oracle_k=oracle_k, oracle_chunk=oracle_chunk,
                      oracle_max_evaluated=oracle_max_evaluated, cache_bytes=cache_bytes, train_views_cached=cached,
                      nn_search=nn_search, nn_coarse=nn_coarse, nn_coarse_used=nn_coarse_used, nn_k=nn_k,
                      nn_query_block=nn_query_block, train_block=train_block, strict=strict,
                      ssim_data_range=SSIM_DATA_RANGE, view_class_angle_deg=VIEW_CLASS_ANGLE, split=split,
                      n_boot=int(n_boot), boot_seed=int(boot_seed), ci_level=CI_LEVEL),
        data_differences=diffs,
        definitions=MetricDefinitions().__dict__,
        paper=PAPER_RESULTS,
        statistics=statistics_text(n_boot=int(n_boot), seed=int(boot_seed), n_species=len(set(species_of))),
        means={lv: {m: {r["metric"]: dict(mean=r["mean"], ci_low=r["ci_low"], ci_high=r["ci_high"], n=r["n"])
                        for r in summary_rows if r["method"] == m and r["level"] == lv} for m in methods}
               for lv in LEVELS},
        summary_rows=summary_rows,
        tests=test_rows,
        differences=st["differences"],
        species_means=st["species"],
        view_classes=vc_rows,
        view_class_counts={c: int((cls == c).sum()) for c in VIEW_CLASSES},
        slice_counts=dict(rows=sc_rows, used=used_counts, skipped=skipped_counts,
                          note=f"counts >= the target depth {D} are skipped"),
        oracle=(dict(coarse_factors=list(factors), k=oracle_k, max_evaluated=oracle_max_evaluated,
                     certified=int(or_cert.sum()), exact=bool(or_cert.all()), fallbacks=int(or_fb.sum()),
                     mean_evaluated=float(or_eval.mean()) if Q else math.nan, most_evaluated=int(or_eval.max()) if Q else 0)
                if "oracle" in methods else None),
        timings=timings,
    )
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2))
    return summary


def qualitative_examples(store, checkpoint, eval_dir, *, n: int = 4, beta: float = 2.0, device="cpu") -> dict:
    """Volumes for the qualitative figures from an evaluated run (its ``matches.csv``).

    Picks up to ``n`` evaluated held-out samples (the first of each species, then further ones; the
    species are those of ``matches.csv``, whatever split was evaluated) and
    returns ``{"rows": [...], "fusion": {...}, "ours_full": [...]}``: rows for
    :func:`model.figures.fig_qualitative` (``xray`` (S, S), ``ours``, ``truth``, ``nn``, ``oracle``,
    ``mean`` (D, s, s) on the network's output grid, as evaluated, ``title``), a fusion example for
    :func:`model.figures.fig_fusion` (``xray``, ``fused`` at the x-ray's resolution, ``nofusion``) and,
    per row, ours fused at the x-ray's resolution (D, S, S) (the applications' volume).
    """
    import csv

    from tomodata.store import open_store

    from .fusion import fuse
    from .train import model_from_checkpoint

    with open(Path(eval_dir) / "matches.csv", newline="") as fh:
        matches = list(csv.DictReader(fh))
    if not matches:
        raise ValueError(f"{eval_dir}/matches.csv has no rows")
    firsts, seen = [], set()
    for r in matches:
        if r["species"] not in seen:
            seen.add(r["species"])
            firsts.append(r)
    chosen = (firsts + [r for r in matches if r not in firsts])[:n]
    ds = open_store(store)
    model, _ = model_from_checkpoint(checkpoint, map_location="cpu")
    net = model.config
    D, S = int(net.out_depth), int(net.out_size)
    chi = float(ds.attrs["chi"])
    held = list(dict.fromkeys(r["species"] for r in matches))  # the evaluated species
    train = ds.species_names("train")
    unknown = [n for n in held if n not in ds.species_names()]
    if unknown:
        raise ValueError(f"{eval_dir}/matches.csv names species {unknown} that the store {store} lacks")
    held_src, train_src = ViewSource(ds, held, device=device), ViewSource(ds, train, device=device)
    mean_vol = torch.from_numpy(mean_volume(ds, train)).to(device)
    spp = int(ds.attrs["samples_per_species"])
    rows, fulls, fusion_example = [], [], None
    with torch.no_grad():
        for r in chosen:
            g = held.index(r["species"]) * spp + int(r["sample"])
            x = ds.images(r["species"], int(r["sample"]))
            raw = model(resize_xrays(torch.from_numpy(x)[None, None], net.input_size)).float()[0].numpy()
            fused_full = fuse(raw, x, beta=beta, chi=chi)
            ours = resize_xrays(torch.from_numpy(np.ascontiguousarray(fused_full))[None], S)[0].numpy()
            row = dict(xray=x, ours=ours, truth=held_src.views([g], size=S, depth=D)[0].cpu().numpy(),
                       title=f"{r['species']} sample {r['sample']}")
            row["mean"] = held_src.views([g], size=S, depth=D, volume=mean_vol)[0].cpu().numpy()
            if r.get("nn_species"):
                gn = train.index(r["nn_species"]) * spp + int(r["nn_sample"])
                row["nn"] = train_src.views([gn], size=S, depth=D)[0].cpu().numpy()
            if r.get("oracle_species"):
                go = train.index(r["oracle_species"]) * spp + int(r["oracle_sample"])
                row["oracle"] = train_src.views([go], size=S, depth=D)[0].cpu().numpy()
            rows.append(row)
            fulls.append(fused_full)
            if fusion_example is None:
                from .fusion import upsample_lateral

                fusion_example = dict(xray=x, fused=fused_full,
                                      nofusion=upsample_lateral(np.clip(raw, 0.0, 1.0), x.shape))
    return dict(rows=rows, fusion=fusion_example, ours_full=fulls)
