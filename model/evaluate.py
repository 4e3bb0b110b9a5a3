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
  Exact search, two ways (``nn_search``, :mod:`model.search`). ``"bound"`` (the default): lower-
  bound features of every training image (``nn_coarse`` cells per axis), a short list by the bound,
  exact re-ranking until the bound proves the winner (:func:`model.search.nearest_images_bounded`);
  on the demo it compares about 10 of 3,840 training images exactly per query. ``"brute"``: every
  pair by blocked float64 matrix products (:func:`model.search.nearest_images`). Ties go to the
  lowest training index.
* ``mean`` (a baseline the paper lacks): the average of the training species' view volumes at the
  sample's view (its rotation and mirror flag); no input is used. View sampling (trilinear, zero
  outside the cube) is linear in the volume, so it is made as the view volume of the mean of the
  training species' canonical volumes (:func:`mean_volume`; one extra volume, no per-species views).
  It says how much of a method's score a species-agnostic skull already earns.
* ``oracle`` (paper §5.1): the training view volume nearest in L2 to the ground-truth view volume,
  on the target grid, over every training sample (mirrored ones included). It ignores the x-ray.
  **Exact, by one scan** (:mod:`model.oracle`): every training view volume is made once per block
  of evaluated samples and compared with all of them by float32 matrix products with a proven
  error bound; the few training samples the bound cannot rule out are re-ranked exactly (Σ (a − b)²
  in float64 on the target grid), ties to the lowest index. ``matches.csv`` records per sample how
  many were re-ranked. When all training view volumes fit ``cache_bytes`` they are made once and
  kept; otherwise they are re-sampled on the fly.

**Memory** does not grow with the number of training species: the Oracle keeps one block of
evaluated view volumes (``oracle_bytes``) and one block of training view volumes; the NN's
lower-bound features are capped by ``nn_feature_bytes`` (cells per axis lowered to fit) and its
training x-rays streamed from the store; the optional caches take ``cache_bytes``; a
:class:`model.sources.ViewSource` keeps at most ``max_volumes`` canonical volumes; errors run a few
rows at a time and the metrics render one group of view volumes at a time. None of this changes a
number (tests/test_evaluate.py). Per-phase costs and the peak resident memory: ``tomo bench
evaluate`` (:mod:`model.bench_evaluate`, docs/benchmarks.md).

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
                     oracle_dist2, oracle_evaluated (dist2: squared L2, summed, of the x-rays for NN, of the
                     target-grid view volumes for the Oracle; evaluated: training samples compared exactly)
``summary.json``     all of the above in one file (``means[level][method][metric]``, ``summary_rows``, ``tests``,
                     ``differences``, ``species_means``), with ``eval_split``, ``eval_species`` (``val_species``:
                     an alias), ``splits`` and ``split_use``, ``statistics`` (the procedure in words), the
                     definitions, settings, the paper's numbers and timings
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from skimage.metrics import structural_similarity

from tomodata.files import write_json
from tomodata.progress import phase
from tomodata.progress import progress as progress_bar
from tomodata.store import open_store
from tomodata.views import sample_to_view

from . import stats as ST
from .data import StoreSamples, resize_xrays
from .fusion import fuse, opacity_max, upsample_lateral
from .oracle import ORACLE_CHUNK, oracle_search
from .search import (
    _row_chunks,
    coarse_factors,
    coarse_for_memory,
    nearest_images,
    nearest_images_bounded,
    train_coarse_features,
)
from .sources import (
    ImageSource,
    ViewSource,
    mean_volume,
    release_freed_memory,
    select_evenly,
    store_image_blocks,
)
from .stats import mean_ci
from .surface import DEFAULT_ISO, render_isosurface, render_isosurface_torch
from .train import config_differences, data_fingerprint, model_from_checkpoint

__all__ = [
    "EVAL_SPLITS",
    "LEVELS",
    "METHODS",
    "PAPER_RESULTS",
    "VIEW_CLASSES",
    "MetricDefinitions",
    "depth_resample",
    "dssim",
    "evaluate_run",
    "paired_tests",
    "qualitative_examples",
    "split_use",
    "statistics_tables",
    "statistics_text",
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
PAPER_RESULTS = {
    "l2": {"ours": 0.051, "nn": 0.067, "oracle": 0.060},
    "dssim": {"ours": 0.097, "nn": 0.109, "oracle": 0.110},
}
METRICS = ("l2", "mse", "dssim")
SSIM_DATA_RANGE = 1.0


@dataclass(frozen=True)
class MetricDefinitions:
    """The definitions as recorded in summary.json."""

    l2: str = "sqrt(mean over target voxels of (pred - true)^2) (voxel RMSE); mse = its square"
    dssim: str = (
        "(1 - SSIM)/2, skimage.metrics.structural_similarity(data_range=1.0, 7x7 uniform window) "
        "between model.surface.render_isosurface images (iso, AO on) from the x-ray's view"
    )
    target: str = "network output grid out_depth x out_size^2; ground truth = torch_view_volumes target"
    nn: str = "training sample with the L2-nearest x-ray (store resolution), exact blocked search"
    mean: str = (
        "the average of the training species' view volumes at the sample's view and mirror flag, no "
        "input used; made as the view volume of the mean training volume (trilinear sampling is linear)"
    )
    oracle: str = "training view volume L2-nearest to the ground truth on the target grid, exact (lower-bound pruning)"
    view_class: str = (
        "d = R[:, 2]; top: within 30 deg of +-y, front: of +-x, side: of +-z, else other "
        "(phantoms: snout +x, dorsal -y, z left-right)"
    )
    slice_counts: str = "depth box-averaged to n slices, linearly up-sampled back; DSSIM vs the original's render"
    ci: str = (
        "species level: mean of species means, 95% percentile interval of a cluster bootstrap over species; "
        "sample level (mirrored pairs averaged): mean +- t_{0.975,n-1} sd/sqrt(n)"
    )
    tests: str = (
        "species level: scipy.stats.ttest_rel and scipy.stats.wilcoxon (two-sided) on species means, "
        "paired by species; sample level: ttest_rel on mirrored-pair means, paired by (species, view)"
    )
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

    a = np.asarray(img_a, dtype=np.float64)
    b = np.asarray(img_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"dssim needs two images of the same 2D shape, got {a.shape} and {b.shape}")
    if min(a.shape) < 7:
        raise ValueError(f"dssim needs images of at least 7x7 pixels (SSIM's window), got {a.shape}")
    return float((1.0 - structural_similarity(a, b, data_range=SSIM_DATA_RANGE)) / 2.0)


def volume_dssim(pred, true, *, iso: float = DEFAULT_ISO) -> float:
    """DSSIM of the iso-surface renders of two (D, H, W) view volumes."""

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


def paired_tests(
    values: dict[str, dict[str, np.ndarray]], methods: Sequence[str], metrics: Sequence[str] = METRICS
) -> list[dict]:
    """Paired two-sided t-tests between every pair of ``methods`` per metric, every sample counted as
    independent (not what ``tests.csv`` reports: see :func:`statistics_tables`).

    ``values[metric][method]`` are per-sample arrays in the same sample order."""

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


def statistics_tables(
    per: dict[str, dict[str, np.ndarray]],
    species: Sequence[str],
    sample,
    n_views: int,
    *,
    methods: Sequence[str],
    metrics: Sequence[str] = METRICS,
    n_boot: int = ST.BOOTSTRAP_DRAWS,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, list[dict]]:
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
    sp = np.asarray([str(x) for x in species])
    sample = np.asarray(sample, dtype=np.int64)
    boot: dict[str, Any] = dict(level=level, n_boot=n_boot, seed=seed)

    def n_species(*arrays) -> int:
        ok = np.logical_and.reduce([np.isfinite(np.asarray(a, dtype=np.float64)) for a in arrays])
        return len(set(sp[ok].tolist()))

    summary, sp_rows = [], []
    for lv in LEVELS:
        for m in methods:
            for k in metrics:
                v = np.asarray(per[m][k], dtype=np.float64)
                if lv == "sample":
                    mean, lo, hi, n = ST.sample_ci(v, sp, sample, n_views, level)
                elif n_species(v) >= 2:
                    mean, lo, hi, n = ST.cluster_bootstrap_ci(v, sp, **boot)
                else:
                    _, sm, _ = ST.species_means(v, sp)
                    sm = sm[np.isfinite(sm)]
                    mean, lo, hi, n = (float(sm.mean()) if sm.size else math.nan), math.nan, math.nan, int(sm.size)
                summary.append(dict(method=m, metric=k, level=lv, mean=mean, ci_low=lo, ci_high=hi, n=n))
    for m in methods:
        for k in metrics:
            names, sm, counts = ST.species_means(per[m][k], sp)
            sp_rows += [
                dict(method=m, species=nm, metric=k, mean=float(x), n_samples=int(c))
                for nm, x, c in zip(names, sm, counts)
            ]
    tests, diffs = [], []
    for k in metrics:
        for a, b in itertools.combinations(methods, 2):
            va, vb = (np.asarray(per[x][k], dtype=np.float64) for x in (a, b))
            ns = n_species(va, vb)
            row = dict(metric=k, method_a=a, method_b=b)
            t: tuple
            w: tuple
            d: tuple
            if ns >= 2:
                t = ST.species_ttest(va, vb, sp)
                w = ST.species_wilcoxon(va, vb, sp)
                d = ST.cluster_bootstrap_diff_ci(va, vb, sp, **boot)
            else:
                t = w = (math.nan, math.nan, ns)
                d = (math.nan, math.nan, math.nan, ns)
            tests.append(dict(row, level="species", test="t", statistic=t[0], p=t[1], n=t[2]))
            tests.append(dict(row, level="species", test="wilcoxon", statistic=w[0], p=w[1], n=w[2]))
            ts = ST.sample_ttest(va, vb, sp, sample, n_views)
            tests.append(dict(row, level="sample", test="t", statistic=ts[0], p=ts[1], n=ts[2]))
            diffs.append(dict(row, level="species", mean_diff=d[0], ci_low=d[1], ci_high=d[2], n=d[3]))
    return dict(summary=summary, tests=tests, species=sp_rows, differences=diffs)


def statistics_text(*, n_boot: int, seed: int, n_species: int) -> str:
    """The statistical procedure, in words, for summary.json."""
    wmin = f"{2.0 / 2**n_species:.3g}" if n_species >= 1 else "n/a"
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
        "val": (
            "model choice and tuning (the training run's validation); "
            + (
                "evaluated in this run, so these numbers are not an untouched held-out result"
                if eval_split == "val"
                else "never evaluated for the reported result"
            )
        ),
        "test": (
            "held out from training and model choice; "
            + ("evaluated in this run: the reported result" if eval_split == "test" else "not evaluated in this run")
        ),
    }


# --------------------------------------------------------------------------------------------------
# evaluate_run
# --------------------------------------------------------------------------------------------------


def _check_compat(state: dict, store) -> list[str]:
    """Differences between the data a checkpoint was trained on (its ``data`` fingerprint: spec,
    chi, steps, image and volume sizes, views, view scheme and seed, training species) and the
    store's ``train`` split (empty = compatible)."""

    now = data_fingerprint(StoreSamples(store, "train"))
    return config_differences(state.get("data", {}), now, "data.")


def _fuse_batch(
    raw: torch.Tensor, xrays: np.ndarray, *, size: int, fusion_at: str, beta: float, chi: float
) -> torch.Tensor:
    """'ours' for a batch: raw (B, D, s, s) network output, xrays (B, S, S) opacity → (B, D, size, size)."""

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


def evaluate_run(
    store,
    checkpoint,
    out_dir,
    *,
    max_samples: int | None = None,
    batch: int = 16,
    device="cpu",
    methods: Sequence[str] = METHODS,
    slice_counts: Sequence[int] = (8, 16, 32, 64),
    iso: float = DEFAULT_ISO,
    beta: float = 2.0,
    fusion_at: str = "xray",
    oracle_bytes: int = 1 << 30,
    nn_feature_bytes: int = 2 << 30,
    cache_bytes: int = 1 << 30,
    nn_search: str = "bound",
    nn_coarse: int = 16,
    nn_k: int = 32,
    nn_query_block: int = 4096,
    train_block: int = 256,
    strict: bool = True,
    split: str = "test",
    n_boot: int = ST.BOOTSTRAP_DRAWS,
    boot_seed: int = 0,
    progress: bool = False,
) -> dict:
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
        oracle_bytes: memory for one block of held-out view volumes in the Oracle's scan
            (:func:`model.oracle.oracle_search`): more samples than fit take more passes over the
            training view volumes (each pass makes them all once).
        nn_feature_bytes: memory for the NN's lower-bound features of every training x-ray;
            ``nn_coarse`` is lowered until they fit (:func:`model.search.coarse_for_memory`); the
            search stays exact.
        cache_bytes: keep every training view volume (target grid) in memory when they fit this budget
            (the NN/Oracle volumes and the Oracle's exact distances then need no re-sampling).
        nn_search: ``"bound"`` (default): :func:`nearest_images_bounded`, the Oracle's exact
            lower-bound pre-filter and re-rank on the x-rays (``nn_coarse`` cells per axis, short list
            ``nn_k``; its features take ``nn_feature_bytes`` at most; the images are kept in
            memory when they fit ``cache_bytes``); ``"brute"``:
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
        raise ValueError(
            f"the store {store} has no {split!r} species to evaluate ({have} species); pick another split (--split)"
        )
    if not train:
        raise ValueError(f"the store {store} has no 'train' species (the NN, Oracle and mean database)")
    incomplete = [n for n in held + train if not ds.is_complete(n)]
    if incomplete:
        raise ValueError(f"species not complete in {store}: {incomplete} (run tomo validate)")
    diffs = _check_compat(state, store)
    if diffs and strict:
        raise ValueError(
            f"checkpoint {checkpoint} was trained on other data than the store {store}:\n  " + "\n  ".join(diffs)
        )
    leaked = sorted(set(held) & set(state.get("data", {}).get("species", [])))
    if leaked:
        raise ValueError(f"evaluated ({split!r}) species {leaked} of {store} were training species of {checkpoint}")
    image_size = ds.settings.image_size
    chi = ds.settings.chi
    D, S = int(net.out_depth), int(net.out_size)
    if S < 7:
        raise ValueError(f"the network's output size {S} is below SSIM's 7x7 window")
    model = model.to(dev)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    held_src = ViewSource(ds, held, device=dev)
    train_src = ViewSource(ds, train, device=dev) if ("nn" in methods or "oracle" in methods) else None
    sel = select_evenly(len(held_src), max_samples)
    sp_idx, smp_idx = held_src.locate(sel)
    Q = sel.size
    n_views = ds.settings.n_views
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
            ix = sel[a : a + nn_query_block]
            nn_i[a : a + ix.size], nn_d[a : a + ix.size] = nearest_images(
                held_xrays(ix), blocks, device=dev, query_block=nn_query_block
            )
        nn_eval[:] = len(train) * ds.settings.samples_per_species
        timings["nn_s"] = timings["nn_search_s"] = time.perf_counter() - t0
    elif "nn" in methods:
        t0 = time.perf_counter()
        images = ImageSource(ds, train, device=dev)
        images.cache(budget_bytes=cache_bytes, block=train_block)
        nn_coarse_used = coarse_for_memory(
            (1, image_size, image_size), len(images), nn_coarse, nn_feature_bytes, what="the NN's lower-bound features"
        )
        nn_feats = train_coarse_features(
            images, size=image_size, depth=1, factors=coarse_factors((1, image_size, image_size), nn_coarse_used)
        )
        timings["nn_features_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        timings["nn_bound_s"] = 0.0
        for a in range(0, Q, nn_query_block):
            ix = sel[a : a + nn_query_block]
            r = nearest_images_bounded(held_xrays(ix), images, coarse=nn_coarse_used, k=nn_k, train_features=nn_feats)
            timings["nn_bound_s"] += r.timings["bound_s"]
            if not r.certified.all():  # cannot happen without a cap on the evaluations; never report unproven
                raise RuntimeError("the bounded NN search left a query uncertified")
            nn_i[a : a + ix.size], nn_d[a : a + ix.size], nn_eval[a : a + ix.size] = r.index, r.dist2, r.evaluated
        del images, nn_feats
        release_freed_memory()
        timings["nn_search_s"] = time.perf_counter() - t1
        timings["nn_s"] = time.perf_counter() - t0

    # ---- Oracle: exact nearest training view volume of every evaluated sample (one scan per block)
    cached = False
    if train_src is not None:
        if progress:
            phase("evaluate", "training view volumes: cache")
        t0 = time.perf_counter()
        cached = train_src.cache(size=S, depth=D, budget_bytes=cache_bytes)
        timings["train_views_cache_s"] = time.perf_counter() - t0
    or_i = np.full(Q, -1, np.int64)
    or_d = np.full(Q, np.nan)
    or_eval = np.zeros(Q, np.int64)
    oracle_res = None
    if "oracle" in methods:
        assert train_src is not None  # made whenever nn or oracle is evaluated
        if progress:
            phase("evaluate", f"Oracle: exact scan of {len(train_src)} training view volumes for {Q} held-out samples")
        t0 = time.perf_counter()
        oracle_res = oracle_search(
            lambda ix: held_src.views(sel[ix], size=S, depth=D),
            Q,
            train_src,
            size=S,
            depth=D,
            query_bytes=oracle_bytes,
            progress=progress,
        )
        or_i, or_d, or_eval = oracle_res.index, oracle_res.dist2, oracle_res.evaluated
        timings["oracle_s"] = time.perf_counter() - t0
        timings.update({f"oracle_{k}": v for k, v in oracle_res.timings.items()})
        release_freed_memory()

    # ---- predictions, metrics, renders
    t0 = time.perf_counter()
    slice_methods = ["truth"] + [m for m in ("ours", "ours_nofusion") if m in methods][:1]
    used_counts = [c for c in counts if c < D]
    skipped_counts = [c for c in counts if c >= D]
    per = {m: {k: np.full(Q, np.nan) for k in METRICS} for m in methods}
    slice_vals = {m: {c: np.full(Q, np.nan) for c in used_counts} for m in slice_methods}
    classes = [view_class(held_src.rotation(int(g))) for g in sel]

    if progress:
        phase("evaluate", f"predictions, baselines and metrics of {Q} samples")
    bar = progress_bar(total=Q, enabled=progress, desc="evaluate", unit="sample")
    t_fuse = t_render = t_net = t_truth = t_nnv = t_mean = t_oracle = 0.0
    with torch.no_grad():
        for a in range(0, Q, batch):
            ix = sel[a : a + batch]
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
                assert train_src is not None
                tv0 = time.perf_counter()
                vols["nn"] = train_src.views(nn_i[a : a + b], size=S, depth=D)
                t_nnv += time.perf_counter() - tv0
            if "mean" in methods:
                tm0 = time.perf_counter()
                vols["mean"] = held_src.views(ix, size=S, depth=D, volume=mean_vol)
                t_mean += time.perf_counter() - tm0
            if "oracle" in methods:
                assert train_src is not None
                to0 = time.perf_counter()
                vols["oracle"] = train_src.views(or_i[a : a + b], size=S, depth=D)
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
                per[m]["l2"][a : a + b], per[m]["mse"][a : a + b] = l2, mse
                per[m]["dssim"][a : a + b] = [dssim(imgs_m[m][i], imgs_truth[i]) for i in range(b)]
            for m in slice_methods:
                base = truth if m == "truth" else vols[m]
                ref = imgs_truth if m == "truth" else imgs_m[m]
                for c in used_counts:
                    im = render_isosurface_torch(depth_resample(base, c), iso=iso).cpu().numpy()
                    slice_vals[m][c][a : a + b] = [dssim(im[i], ref[i]) for i in range(b)]
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
    timings["oracle_views_s"] = t_oracle  # the results' view volumes (the scan's: oracle_scan_views_s)
    timings["render_and_ssim_s"] = t_render

    # ---- tables

    view_of, mirrored = sample_to_view(smp_idx, n_views)
    species_of = [held[int(s)] for s in sp_idx]
    metric_rows = []
    for m in methods:
        for i in range(Q):
            metric_rows.append(
                dict(
                    method=m,
                    species=species_of[i],
                    sample=int(smp_idx[i]),
                    view=int(view_of[i]),
                    mirrored=bool(mirrored[i]),
                    view_class=classes[i],
                    l2=float(per[m]["l2"][i]),
                    mse=float(per[m]["mse"][i]),
                    dssim=float(per[m]["dssim"][i]),
                )
            )
    _write_csv(
        out / "metrics.csv",
        ["method", "species", "sample", "view", "mirrored", "view_class", "l2", "mse", "dssim"],
        metric_rows,
    )

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
        for vc in VIEW_CLASSES:
            for k in ("l2", "dssim"):
                mean, lo, hi, n = mean_ci(per[m][k][cls == vc])
                vc_rows.append(dict(method=m, view_class=vc, metric=k, mean=mean, ci_low=lo, ci_high=hi, n=n))
    _write_csv(out / "view_classes.csv", ["method", "view_class", "metric", "mean", "ci_low", "ci_high", "n"], vc_rows)

    sc_rows = []
    for m in slice_methods:
        for c in used_counts:
            mean, lo, hi, n = mean_ci(slice_vals[m][c])
            sc_rows.append(dict(method=m, slices=c, dssim_mean=mean, ci_low=lo, ci_high=hi, n=n))
    _write_csv(out / "slice_counts.csv", ["method", "slices", "dssim_mean", "ci_low", "ci_high", "n"], sc_rows)

    zeros = np.zeros(Q, np.int64)  # no NN/Oracle: columns left empty below
    tsp, tsm = train_src.locate(np.maximum(nn_i, 0)) if train_src else (zeros, zeros)
    osp, osm = train_src.locate(np.maximum(or_i, 0)) if train_src else (zeros, zeros)
    match_rows = []
    for i in range(Q):
        row: dict = dict(species=species_of[i], sample=int(smp_idx[i]))
        has_nn, has_or = "nn" in methods, "oracle" in methods
        row.update(
            nn_species=train[int(tsp[i])] if has_nn else "",
            nn_sample=int(tsm[i]) if has_nn else "",
            nn_dist2=float(nn_d[i]) if has_nn else "",
            nn_evaluated=int(nn_eval[i]) if has_nn else "",
            oracle_species=train[int(osp[i])] if has_or else "",
            oracle_sample=int(osm[i]) if has_or else "",
            oracle_dist2=float(or_d[i]) if has_or else "",
            oracle_evaluated=int(or_eval[i]) if has_or else "",
        )
        match_rows.append(row)
    _write_csv(
        out / "matches.csv",
        [
            "species",
            "sample",
            "nn_species",
            "nn_sample",
            "nn_dist2",
            "nn_evaluated",
            "oracle_species",
            "oracle_sample",
            "oracle_dist2",
            "oracle_evaluated",
        ],
        match_rows,
    )

    timings["total_s"] = time.perf_counter() - t_start
    summary = dict(
        store=str(store),
        checkpoint=str(checkpoint),
        checkpoint_step=int(state.get("step", -1)),
        network=net.to_dict(),
        target_shape=[D, S, S],
        image_size=image_size,
        chi=chi,
        eval_split=split,
        eval_species=held,
        val_species=held,
        train_species=train,
        splits=splits,
        split_use=split_use(split),
        aliases={"val_species": "eval_species (the evaluated species, whatever their split; kept for older readers)"},
        n_samples=int(Q),
        n_species=len(set(species_of)),
        n_views_evaluated=len(set(zip(species_of, view_of.tolist()))),
        methods=list(methods),
        settings=dict(
            max_samples=max_samples,
            batch=batch,
            device=str(dev),
            iso=iso,
            beta=beta,
            fusion_at=fusion_at,
            oracle_bytes=oracle_bytes,
            oracle_chunk=ORACLE_CHUNK,
            nn_feature_bytes=nn_feature_bytes,
            cache_bytes=cache_bytes,
            train_views_cached=cached,
            nn_search=nn_search,
            nn_coarse=nn_coarse,
            nn_coarse_used=nn_coarse_used,
            nn_k=nn_k,
            nn_query_block=nn_query_block,
            train_block=train_block,
            strict=strict,
            ssim_data_range=SSIM_DATA_RANGE,
            view_class_angle_deg=VIEW_CLASS_ANGLE,
            split=split,
            n_boot=int(n_boot),
            boot_seed=int(boot_seed),
            ci_level=CI_LEVEL,
        ),
        data_differences=diffs,
        definitions=MetricDefinitions().__dict__,
        paper=PAPER_RESULTS,
        statistics=statistics_text(n_boot=int(n_boot), seed=int(boot_seed), n_species=len(set(species_of))),
        means={
            lv: {
                m: {
                    r["metric"]: dict(mean=r["mean"], ci_low=r["ci_low"], ci_high=r["ci_high"], n=r["n"])
                    for r in summary_rows
                    if r["method"] == m and r["level"] == lv
                }
                for m in methods
            }
            for lv in LEVELS
        },
        summary_rows=summary_rows,
        tests=test_rows,
        differences=st["differences"],
        species_means=st["species"],
        view_classes=vc_rows,
        view_class_counts={c: int((cls == c).sum()) for c in VIEW_CLASSES},
        slice_counts=dict(
            rows=sc_rows, used=used_counts, skipped=skipped_counts, note=f"counts >= the target depth {D} are skipped"
        ),
        oracle=(
            dict(
                rule="exact scan (model.oracle)",
                chunk=ORACLE_CHUNK,
                passes=oracle_res.passes if oracle_res is not None else 0,
                exact=True,
                mean_evaluated=float(or_eval.mean()) if Q else math.nan,
                most_evaluated=int(or_eval.max()) if Q else 0,
            )
            if "oracle" in methods
            else None
        ),
        timings=timings,
    )
    write_json(out / "summary.json", summary)
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
    chi = ds.settings.chi
    held = list(dict.fromkeys(r["species"] for r in matches))  # the evaluated species
    train = ds.species_names("train")
    unknown = [n for n in held if n not in ds.species_names()]
    if unknown:
        raise ValueError(f"{eval_dir}/matches.csv names species {unknown} that the store {store} lacks")
    held_src, train_src = ViewSource(ds, held, device=device), ViewSource(ds, train, device=device)
    mean_vol = torch.from_numpy(mean_volume(ds, train)).to(device)
    spp = ds.settings.samples_per_species
    rows, fulls, fusion_example = [], [], None
    with torch.no_grad():
        for r in chosen:
            g = held.index(r["species"]) * spp + int(r["sample"])
            x = ds.images(r["species"], int(r["sample"]))
            raw = model(resize_xrays(torch.from_numpy(x)[None, None], net.input_size)).float()[0].numpy()
            fused_full = fuse(raw, x, beta=beta, chi=chi)
            ours = resize_xrays(torch.from_numpy(np.ascontiguousarray(fused_full))[None], S)[0].numpy()
            row = dict(
                xray=x,
                ours=ours,
                truth=held_src.views([g], size=S, depth=D)[0].cpu().numpy(),
                title=f"{r['species']} sample {r['sample']}",
            )
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
                fusion_example = dict(
                    xray=x, fused=fused_full, nofusion=upsample_lateral(np.clip(raw, 0.0, 1.0), x.shape)
                )
    return dict(rows=rows, fusion=fusion_example, ours_full=fulls)
