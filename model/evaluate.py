"""Evaluation on the held-out species (paper §5): ours, ours without fusion, NN, Oracle and the mean
training volume; volume L2 and image DSSIM; species-level statistics (:mod:`model.stats`) and the
paper's per-sample protocol; the view-class and slice-count analyses (§5.5).

Entry point: :func:`evaluate_run` (``tomo evaluate``) runs one :class:`EvalConfig` (every option,
:mod:`model.eval_config`) and writes everything into one folder. It is a short driver over named
phases that share one :class:`model.eval_phases.EvalState`: load (store, checkpoint, checks,
sources), the NN search, the Oracle scan, predictions and metrics (:mod:`model.eval_phases`), then
the tables and summary.json (here). The per-sample metrics live in :mod:`model.metrics`, the
statistics tables in :mod:`model.eval_tables`, the qualitative examples in :mod:`model.examples`;
every name is also importable from here.

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

* ``ours_nofusion``: the network output clamped to [0, 1] (:func:`model.fusion.as_density`, the
  rule fusion, the figures and ``tomo infer --no-fusion`` apply too).
* ``ours``: the network output fused with the input x-ray (:func:`model.fusion.fuse`, paper Eq. 2,
  β = 2, the store's χ). ``fusion_at="xray"`` (default): fused at the x-ray's own resolution (the
  store's image size, the paper's procedure), then area-averaged laterally down to ``out_size`` (the
  depth is the network's). ``fusion_at="target"``: the x-ray's optical depth ``−ln(1 − opacity)`` is
  area-averaged to ``out_size`` first (:func:`model.fusion.xray_at`; averaging density, not opacity,
  keeps Beer–Lambert exact for the coarse pixel) and the fusion runs on the target grid.
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
  training species' canonical volumes (:func:`model.sources.mean_volume`; one extra volume, no per-species views).
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
* ``dssim_gauss``: the same with SSIM's 11×11 Gaussian window (σ 1.5, population covariance) of Wang
  et al. 2004, the SSIM the paper cites (its window is not stated). Both are reported: on the mice the
  two windows ranked ours and NN differently enough to change a conclusion (docs/model.md).

**Statistics** (:mod:`model.stats`, :func:`statistics_tables`). The unit is the held-out species:
only species were held out, and a species' views (and a view and its mirror) are not independent.

* ``level = species`` (the headline): per method and metric each species' mean over its evaluated
  samples (``species.csv``); reported: the mean of the k species means with the 95 % t-interval
  over them (``mean ± t_{.975, k−1} · sd / √k``; a bootstrap over so few species is far too narrow:
  :mod:`model.stats`); n = species. Every pair of methods is compared on species means, paired by
  species: paired t-test (``scipy.stats.ttest_rel``) and Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``, two-sided, exact for n <= 50 without ties or zero differences; with n
  species its smallest p is 2/2ⁿ, .125 for 4). ``summary.json``'s ``differences``: the mean over
  species of the species-mean difference with its t-interval. ``p_holm``: Holm–Bonferroni over the
  first method's comparisons with each other method, one family per level and test over the claims'
  metrics l2, dssim and dssim_gauss together (:data:`model.metrics.HOLM_METRICS`; mse its own family).
  With fewer than 2 species these intervals and tests are NaN.
* ``level = sample`` (the paper's per-sample protocol, kept for comparison): each mirrored pair
  (sample 2i and its mirror 2i + 1, :func:`tomodata.views.sample_to_view`) is averaged first, one
  unit per distinct (species, view); t-interval ``mean ± t_{.975, n−1} · sd / √n`` and paired
  t-tests on those units; n = units. It still treats a species' views as independent, so it
  overstates the evidence.

View classes and slice counts keep per-sample t-intervals (mirrored samples counted separately).

**View classes** (§5.5, Fig. 8b): by the view direction ``d = R[:, 2]`` (the ray direction) against
the volume's axes. The procedural skulls (tomodata/phantoms/) have the snout at +x, dorsal at −y,
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
``metrics.csv``      method, species, sample, view, mirrored, view_class, l2, mse, dssim, dssim_gauss (one row per
                     sample and method)
``summary.csv``      method, metric, level, mean, ci_low, ci_high, n (level species: mean of species means,
                     t-interval over species, n species; level sample: mirrored pairs averaged, t-interval, n views)
``tests.csv``        metric, method_a, method_b, level, test, statistic, p, p_holm, n (per pair of methods and metric:
                     species t and wilcoxon, sample t; statistic: t, or W = the smaller signed-rank sum; p_holm:
                     Holm-adjusted over the first method's comparisons in l2, dssim and dssim_gauss, empty for other
                     pairs)
``species.csv``      method, species, metric, mean, n_samples (the species means)
``view_classes.csv`` method, view_class, metric (l2, dssim, dssim_gauss; l2 and dssim before session 27), mean,
                     ci_low, ci_high, n
``slice_counts.csv`` method, slices, dssim_mean, ci_low, ci_high, n
``matches.csv``      species, sample, nn_species, nn_sample, nn_dist2, nn_evaluated, oracle_species, oracle_sample,
                     oracle_dist2, oracle_evaluated (dist2: squared L2, summed, of the x-rays for NN, of the
                     target-grid view volumes for the Oracle; evaluated: training samples compared exactly)
``summary.json``     all of the above in one file (``means[level][method][metric]``, ``summary_rows``, ``tests``,
                     ``differences``, ``species_means``), with ``eval_split``, ``eval_species`` (``val_species``:
                     an alias), ``splits`` and ``split_use``, ``statistics`` (the procedure in words), the
                     definitions, settings, the paper's numbers and timings; ``store`` (as given; ``store_resolved``
                     absolute), ``checkpoint``,
                     ``checkpoint_step`` and the content ids ``store_content``
                     (:func:`model.eval_source.store_content`) and ``checkpoint_sha256`` that tie the
                     examples to this evaluation (:mod:`model.eval_source`); ``code_version`` (tomodata's version,
                     git commit and whether the checkout was dirty)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomodata.code_version import code_version
from tomodata.files import sha256_file, write_json
from tomodata.views import sample_to_view

from .eval_config import EVAL_SPLITS, METHODS, EvalConfig
from .eval_phases import EvalState, load_run, nn_phase, oracle_phase, score_phase
from .eval_phases import _check_compat as _check_compat  # re-exported: the old home of these helpers
from .eval_phases import _fuse_batch as _fuse_batch
from .eval_source import store_content
from .eval_tables import (
    CI_LEVEL,
    LEVELS,
    MATCHES_COLUMNS,
    METRICS_COLUMNS,
    PAPER_RESULTS,
    SLICE_COUNTS_COLUMNS,
    SPECIES_COLUMNS,
    SUMMARY_COLUMNS,
    TESTS_COLUMNS,
    VIEW_CLASSES_COLUMNS,
    MetricDefinitions,
    means_text,
    paired_tests,
    split_use,
    statistics_tables,
    statistics_text,
    write_csv,
)
from .examples import qualitative_examples as qualitative_examples  # re-exported: its old home
from .metrics import (
    METRICS,
    SSIM_DATA_RANGE,
    VIEW_CLASS_ANGLE,
    VIEW_CLASSES,
    depth_resample,
    dssim,
    view_class,
    volume_dssim,
    volume_errors,
)
from .names import (
    EVAL_MATCHES,
    EVAL_METRICS,
    EVAL_SLICE_COUNTS,
    EVAL_SPECIES,
    EVAL_SUMMARY,
    EVAL_SUMMARY_CSV,
    EVAL_TESTS,
    EVAL_VIEW_CLASSES,
)
from .oracle import ORACLE_CHUNK
from .stats import mean_ci

__all__ = [
    "qualitative_examples",
    "CI_LEVEL",
    "EVAL_SPLITS",
    "LEVELS",
    "METHODS",
    "METRICS",
    "PAPER_RESULTS",
    "SPECIES_COLUMNS",
    "SSIM_DATA_RANGE",
    "SUMMARY_COLUMNS",
    "TESTS_COLUMNS",
    "VIEW_CLASSES",
    "VIEW_CLASS_ANGLE",
    "EvalConfig",
    "MetricDefinitions",
    "depth_resample",
    "dssim",
    "evaluate_run",
    "paired_tests",
    "split_use",
    "statistics_tables",
    "statistics_text",
    "view_class",
    "volume_dssim",
    "volume_errors",
]


def evaluate_run(cfg: EvalConfig) -> dict:
    """Evaluate ``cfg.checkpoint`` on the store's ``cfg.split`` species (default ``test``) and write the
    tables into ``cfg.out_dir`` (module docstring; the options: :class:`EvalConfig`).

    Raises ValueError, before anything is written, for a store or checkpoint that cannot be
    evaluated (:func:`model.eval_phases.load_run`). Returns the summary dict (also ``summary.json``).
    """
    t_start = time.perf_counter()
    st = load_run(cfg, t_start)
    nn_phase(st)
    oracle_phase(st)
    score_phase(st)
    tables = write_tables(st)
    summary = summary_json(st, tables)
    write_json(st.out / EVAL_SUMMARY, summary)
    return summary


# --------------------------------------------------------------------------------------------------
# tables and summary.json
# --------------------------------------------------------------------------------------------------


@dataclass
class Tables:
    """What the tables phase wrote, for summary.json: ``species_of`` / ``view_of`` (Q,) per evaluated
    sample, ``stats`` (:func:`statistics_tables`), the view-class and slice-count rows."""

    species_of: list[str]
    view_of: np.ndarray
    stats: dict[str, list[dict]]
    view_classes: list[dict]
    slice_counts: list[dict]


def write_tables(st: EvalState) -> Tables:
    """Phase 5: metrics.csv, summary.csv, tests.csv, species.csv, view_classes.csv, slice_counts.csv
    and matches.csv in ``st.out``."""
    cfg, sc, out, Q = st.cfg, st.scores, st.out, st.Q
    assert sc is not None
    view_of, mirrored = sample_to_view(st.smp_idx, st.ds.settings.n_views)
    species_of = [st.held[int(s)] for s in st.sp_idx]
    metric_rows = [
        dict(
            method=m,
            species=species_of[i],
            sample=int(st.smp_idx[i]),
            view=int(view_of[i]),
            mirrored=bool(mirrored[i]),
            view_class=sc.classes[i],
            **{k: float(sc.per[m][k][i]) for k in METRICS},
        )
        for m in cfg.methods
        for i in range(Q)
    ]
    write_csv(out / EVAL_METRICS, METRICS_COLUMNS, metric_rows)

    t0 = time.perf_counter()
    stats = statistics_tables(
        sc.per,
        species_of,
        st.smp_idx,
        st.ds.settings.n_views,
        methods=cfg.methods,
    )
    st.timings["statistics_s"] = time.perf_counter() - t0
    write_csv(out / EVAL_SUMMARY_CSV, SUMMARY_COLUMNS, stats["summary"])
    write_csv(out / EVAL_TESTS, TESTS_COLUMNS, stats["tests"])
    write_csv(out / EVAL_SPECIES, SPECIES_COLUMNS, stats["species"])

    cls = np.asarray(sc.classes)
    vc_rows = []
    for m in cfg.methods:
        for vc in VIEW_CLASSES:
            for k in ("l2", "dssim", "dssim_gauss"):
                mean, lo, hi, n = mean_ci(sc.per[m][k][cls == vc])
                vc_rows.append(dict(method=m, view_class=vc, metric=k, mean=mean, ci_low=lo, ci_high=hi, n=n))
    write_csv(out / EVAL_VIEW_CLASSES, VIEW_CLASSES_COLUMNS, vc_rows)
    sc_rows = []
    for m in sc.slice_methods:
        for c in sc.used_counts:
            mean, lo, hi, n = mean_ci(sc.slice_vals[m][c])
            sc_rows.append(dict(method=m, slices=c, dssim_mean=mean, ci_low=lo, ci_high=hi, n=n))
    write_csv(out / EVAL_SLICE_COUNTS, SLICE_COUNTS_COLUMNS, sc_rows)
    write_csv(out / EVAL_MATCHES, MATCHES_COLUMNS, _match_rows(st, species_of))
    return Tables(species_of, view_of, stats, vc_rows, sc_rows)


def _match_rows(st: EvalState, species_of: list[str]) -> list[dict]:
    """matches.csv's rows: per evaluated sample its NN and Oracle (empty cells for a method not evaluated)."""
    methods, train_src, nn, orc = st.cfg.methods, st.train_src, st.nn, st.oracle
    assert nn is not None and orc is not None
    zeros = np.zeros(st.Q, np.int64)  # no NN/Oracle: columns left empty below
    tsp, tsm = train_src.locate(np.maximum(nn.index, 0)) if train_src else (zeros, zeros)
    osp, osm = train_src.locate(np.maximum(orc.index, 0)) if train_src else (zeros, zeros)
    has_nn, has_or = "nn" in methods, "oracle" in methods
    rows = []
    for i in range(st.Q):
        row: dict = dict(species=species_of[i], sample=int(st.smp_idx[i]))
        row.update(
            nn_species=st.train[int(tsp[i])] if has_nn else "",
            nn_sample=int(tsm[i]) if has_nn else "",
            nn_dist2=float(nn.dist2[i]) if has_nn else "",
            nn_evaluated=int(nn.evaluated[i]) if has_nn else "",
            oracle_species=st.train[int(osp[i])] if has_or else "",
            oracle_sample=int(osm[i]) if has_or else "",
            oracle_dist2=float(orc.dist2[i]) if has_or else "",
            oracle_evaluated=int(orc.evaluated[i]) if has_or else "",
        )
        rows.append(row)
    return rows


def _settings(st: EvalState) -> dict:
    """summary.json's ``settings``: the options as given, and what the run chose from them."""
    cfg = st.cfg
    return dict(
        max_samples=cfg.max_samples,
        batch=cfg.batch,
        device=str(st.dev),
        iso=cfg.iso,
        beta=cfg.beta,
        fusion_at=cfg.fusion_at,
        oracle_bytes=cfg.oracle_bytes,
        oracle_chunk=ORACLE_CHUNK,
        nn_feature_bytes=cfg.nn_feature_bytes,
        cache_bytes=cfg.cache_bytes,
        train_views_cached=st.cached,
        nn_search=cfg.nn_search,
        nn_coarse=cfg.nn_coarse,
        nn_coarse_used=st.nn_coarse_used,
        nn_k=cfg.nn_k,
        nn_query_block=cfg.nn_query_block,
        train_block=cfg.train_block,
        strict=cfg.strict,
        ssim_data_range=SSIM_DATA_RANGE,
        view_class_angle_deg=VIEW_CLASS_ANGLE,
        split=cfg.split,
        ci_level=CI_LEVEL,
    )


def _oracle_summary(st: EvalState) -> dict | None:
    """summary.json's ``oracle``: the rule, passes and exact comparisons per query (None: not evaluated)."""
    if "oracle" not in st.cfg.methods:
        return None
    assert st.oracle is not None
    ev, Q = st.oracle.evaluated, st.Q
    return dict(
        rule="exact scan (model.oracle)",
        chunk=ORACLE_CHUNK,
        passes=st.oracle_res.passes if st.oracle_res is not None else 0,
        exact=True,
        mean_evaluated=float(ev.mean()) if Q else math.nan,
        most_evaluated=int(ev.max()) if Q else 0,
    )


def _means(summary_rows: list[dict], methods) -> dict:
    """``means[level][method][metric]`` = dict(mean, ci_low, ci_high, n) of summary.csv's rows."""
    return {
        lv: {
            m: {
                r["metric"]: dict(mean=r["mean"], ci_low=r["ci_low"], ci_high=r["ci_high"], n=r["n"])
                for r in summary_rows
                if r["method"] == m and r["level"] == lv
            }
            for m in methods
        }
        for lv in LEVELS
    }


def summary_json(st: EvalState, tb: Tables) -> dict:
    """Phase 6: summary.json's content (module docstring); stops the run's clock (``timings.total_s``)."""
    cfg, sc, D, S = st.cfg, st.scores, st.D, st.S
    assert sc is not None
    n_species = len(set(tb.species_of))
    cls = np.asarray(sc.classes)
    st.timings["total_s"] = time.perf_counter() - st.t_start
    return dict(
        store=str(cfg.store),
        store_resolved=str(Path(cfg.store).resolve()),
        checkpoint=str(cfg.checkpoint),
        checkpoint_step=int(st.ckpt.get("step", -1)),
        store_content=store_content(st.ds),
        checkpoint_sha256=sha256_file(cfg.checkpoint),
        code_version=code_version(),  # the evaluation's code: version, git commit, dirty (its metrics changed)
        network=st.net.to_dict(),
        target_shape=[D, S, S],
        image_size=st.image_size,
        chi=st.chi,
        eval_split=cfg.split,
        eval_species=st.held,
        val_species=st.held,
        train_species=st.train,
        splits=st.splits,
        split_use=split_use(cfg.split),
        aliases={"val_species": "eval_species (the evaluated species, whatever their split; kept for older readers)"},
        n_samples=int(st.Q),
        n_species=n_species,
        n_views_evaluated=len(set(zip(tb.species_of, tb.view_of.tolist()))),
        methods=list(cfg.methods),
        settings=_settings(st),
        data_differences=st.diffs,
        definitions=MetricDefinitions().__dict__,
        paper=PAPER_RESULTS,
        statistics=statistics_text(n_species=n_species, first_method=cfg.methods[0]),
        means=_means(tb.stats["summary"], cfg.methods),
        summary_rows=tb.stats["summary"],
        tests=tb.stats["tests"],
        differences=tb.stats["differences"],
        species_means=tb.stats["species"],
        view_classes=tb.view_classes,
        view_class_counts={c: int((cls == c).sum()) for c in VIEW_CLASSES},
        slice_counts=dict(
            rows=tb.slice_counts,
            used=sc.used_counts,
            skipped=sc.skipped_counts,
            note=f"counts >= the target depth {D} are skipped",
        ),
        oracle=_oracle_summary(st),
        timings=st.timings,
    )


def summary_text(summary: dict) -> str:
    """What ``tomo evaluate`` prints of :func:`evaluate_run`'s summary: the samples and species, then the
    means with 95 % intervals at the species and the sample level."""
    head = {
        "species": "mean of species means, 95% t-interval over the species means (n = species)",
        "sample": "paper protocol: one unit per view, its sample and mirror averaged, 95% t-interval (n = views)",
    }
    first = (
        f"{summary['n_samples']} held-out samples of {summary['n_species']} {summary['eval_split']!r} species "
        f"({summary['n_views_evaluated']} distinct views)"
    )
    return "\n".join([first] + means_text(summary["means"], head))
