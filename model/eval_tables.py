"""The evaluation's tables (:mod:`model.evaluate`): species- and sample-level statistics
(:mod:`model.stats`), the tests between methods, the procedure in words, the splits' use, the
definitions recorded in summary.json and the CSV writer; the columns of every table.

Conventions: ``per[method][metric]`` are (N,) per-sample float arrays in one sample order; CSV floats
are written with ``%.8g`` (``nan`` for missing), one row per dict, ``\\n`` line ends.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tomodata.files import atomic_write

from . import stats as ST
from .metrics import HOLM_METRICS, METRICS

__all__ = [
    "CI_LEVEL",
    "LEVELS",
    "MATCHES_COLUMNS",
    "METRICS_COLUMNS",
    "PAPER_RESULTS",
    "SLICE_COUNTS_COLUMNS",
    "SPECIES_COLUMNS",
    "SUMMARY_COLUMNS",
    "TESTS_COLUMNS",
    "VIEW_CLASSES_COLUMNS",
    "MetricDefinitions",
    "holm_column",
    "paired_tests",
    "split_use",
    "statistics_tables",
    "statistics_text",
    "write_csv",
]

#: Levels of summary.csv / tests.csv: species (the held-out unit) and sample (the paper's protocol).
LEVELS = ("species", "sample")
CI_LEVEL = 0.95
SUMMARY_COLUMNS = ("method", "metric", "level", "mean", "ci_low", "ci_high", "n")
TESTS_COLUMNS = ("metric", "method_a", "method_b", "level", "test", "statistic", "p", "p_holm", "n")
SPECIES_COLUMNS = ("method", "species", "metric", "mean", "n_samples")
METRICS_COLUMNS = ("method", "species", "sample", "view", "mirrored", "view_class", *METRICS)
VIEW_CLASSES_COLUMNS = ("method", "view_class", "metric", "mean", "ci_low", "ci_high", "n")
SLICE_COUNTS_COLUMNS = ("method", "slices", "dssim_mean", "ci_low", "ci_high", "n")
MATCHES_COLUMNS = (
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
)

#: The paper's means on its synthetic validation set (§5.3); context only, not comparable in scale.
PAPER_RESULTS = {
    "l2": {"ours": 0.051, "nn": 0.067, "oracle": 0.060},
    "dssim": {"ours": 0.097, "nn": 0.109, "oracle": 0.110},
}


@dataclass(frozen=True)
class MetricDefinitions:
    """The definitions as recorded in summary.json."""

    l2: str = "sqrt(mean over target voxels of (pred - true)^2) (voxel RMSE); mse = its square"
    dssim: str = (
        "(1 - SSIM)/2, skimage.metrics.structural_similarity(data_range=1.0, 7x7 uniform window) "
        "between model.surface.render_isosurface images (iso, AO on) from the x-ray's view"
    )
    dssim_gauss: str = (
        "as dssim with SSIM's 11x11 Gaussian window, sigma 1.5, population covariance (Wang et al. 2004, the "
        "definition the paper cites): structural_similarity(gaussian_weights=True, sigma=1.5, "
        "use_sample_covariance=False)"
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
        "species level: mean of species means +- t_{0.975,k-1} sd/sqrt(k) over the k species means; "
        "sample level (mirrored pairs averaged): mean +- t_{0.975,n-1} sd/sqrt(n)"
    )
    tests: str = (
        "species level: scipy.stats.ttest_rel and scipy.stats.wilcoxon (two-sided) on species means, "
        "paired by species; sample level: ttest_rel on mirrored-pair means, paired by (species, view); "
        "p_holm: Holm-Bonferroni over the first method's comparisons with each other method, one family per "
        "level and test over the metrics l2, dssim and dssim_gauss together (mse: its own family); empty for "
        "pairs of two other methods"
    )
    view_classes_and_slices: str = "t-interval over samples (mirrored samples counted separately)"


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
            t, p = ST.paired_t(x[ok], y[ok])
            rows.append(dict(metric=metric, method_a=a, method_b=b, t=t, p=p, n=int(ok.sum())))
    return rows


def statistics_tables(
    per: dict[str, dict[str, np.ndarray]],
    species: Sequence[str],
    sample,
    n_views: int,
    *,
    methods: Sequence[str],
    metrics: Sequence[str] | None = None,
    level: float = CI_LEVEL,
) -> dict[str, list[dict]]:
    """The rows of summary.csv, tests.csv and species.csv and the paired differences (:mod:`model.stats`).

    Args:
        per: ``per[method][metric]`` (N,) per-sample values, one order for all.
        species: (N,) the samples' species; ``sample``: (N,) their indices within the species
            (``2i`` view ``i``, ``2i + 1`` its mirror); ``n_views``: views per species.
        methods, metrics: what to tabulate; tests for every pair of methods (in ``methods`` order). ``metrics``
            None: those of :data:`METRICS` that ``per`` has (an evaluation made before one was added lacks it).
        level: the intervals' confidence level.

    Returns:
        ``summary`` (:data:`SUMMARY_COLUMNS`; per level, method, metric): ``species``: mean of species
        means, t-interval over them, n = species; ``sample``: mirrored pairs averaged, t-interval, n = views
        (a view of which one sample was evaluated, as with ``max_samples``, counts once with that sample).
        ``tests`` (:data:`TESTS_COLUMNS`; per metric and pair): species ``t`` and ``wilcoxon``,
        sample ``t``; ``p_holm`` adjusts the first method's comparisons (:func:`holm_column`).
        ``species`` (:data:`SPECIES_COLUMNS`). ``differences``: per metric and pair,
        the species-level mean of a − b with its t-interval. With fewer than 2 species with values,
        species-level CIs, tests and differences are NaN (n says how many there were).
    """
    metrics = [k for k in METRICS if k in per[methods[0]]] if metrics is None else list(metrics)
    sp = np.asarray([str(x) for x in species])
    sample = np.asarray(sample, dtype=np.int64)
    summary = _summary_rows(per, sp, sample, n_views, methods=methods, metrics=metrics, level=level)
    sp_rows = []
    for m in methods:
        for k in metrics:
            names, sm, counts = ST.species_means(per[m][k], sp)
            sp_rows += [
                dict(method=m, species=nm, metric=k, mean=float(x), n_samples=int(c))
                for nm, x, c in zip(names, sm, counts)
            ]
    tests, diffs = _test_rows(per, sp, sample, n_views, methods=methods, metrics=metrics, level=level)
    return dict(summary=summary, tests=holm_column(tests, methods[0]), species=sp_rows, differences=diffs)


def _n_species(sp: np.ndarray, *arrays) -> int:
    """How many species have a sample where every one of ``arrays`` is finite."""
    ok = np.logical_and.reduce([np.isfinite(np.asarray(a, dtype=np.float64)) for a in arrays])
    return len(set(sp[ok].tolist()))


def _summary_rows(per, sp: np.ndarray, sample: np.ndarray, n_views: int, *, methods, metrics, level) -> list[dict]:
    """summary.csv's rows (:func:`statistics_tables`)."""
    summary = []
    for lv in LEVELS:
        for m in methods:
            for k in metrics:
                v = np.asarray(per[m][k], dtype=np.float64)
                if lv == "sample":
                    mean, lo, hi, n = ST.sample_ci(v, sp, sample, n_views, level)
                elif _n_species(sp, v) >= 2:
                    mean, lo, hi, n = ST.species_ci(v, sp, level)
                else:
                    _, sm, _ = ST.species_means(v, sp)
                    sm = sm[np.isfinite(sm)]
                    mean, lo, hi, n = (float(sm.mean()) if sm.size else math.nan), math.nan, math.nan, int(sm.size)
                summary.append(dict(method=m, metric=k, level=lv, mean=mean, ci_low=lo, ci_high=hi, n=n))
    return summary


def _test_rows(
    per, sp: np.ndarray, sample: np.ndarray, n_views: int, *, methods, metrics, level
) -> tuple[list[dict], list[dict]]:
    """tests.csv's rows and the species-level differences (:func:`statistics_tables`)."""
    tests, diffs = [], []
    for k in metrics:
        for a, b in itertools.combinations(methods, 2):
            va, vb = (np.asarray(per[x][k], dtype=np.float64) for x in (a, b))
            ns = _n_species(sp, va, vb)
            row = dict(metric=k, method_a=a, method_b=b)
            t: tuple
            w: tuple
            d: tuple
            if ns >= 2:
                t = ST.species_ttest(va, vb, sp)
                w = ST.species_wilcoxon(va, vb, sp)
                d = ST.species_diff_ci(va, vb, sp, level)
            else:
                t = w = (math.nan, math.nan, ns)
                d = (math.nan, math.nan, math.nan, ns)
            tests.append(dict(row, level="species", test="t", statistic=t[0], p=t[1], n=t[2]))
            tests.append(dict(row, level="species", test="wilcoxon", statistic=w[0], p=w[1], n=w[2]))
            ts = ST.sample_ttest(va, vb, sp, sample, n_views)
            tests.append(dict(row, level="sample", test="t", statistic=ts[0], p=ts[1], n=ts[2]))
            diffs.append(dict(row, level="species", mean_diff=d[0], ci_low=d[1], ci_high=d[2], n=d[3]))
    return tests, diffs


def holm_column(tests: list[dict], first: str) -> list[dict]:
    """``tests`` with ``p_holm``: Holm–Bonferroni (:func:`model.stats.holm`) over each family of the
    comparisons of ``first`` (the reported method) with every other method: one family per level and test
    holding those comparisons in every metric of :data:`HOLM_METRICS` (the claims: l2 and both DSSIMs),
    and one per level and test for each other metric (mse); NaN for pairs of two other methods
    (descriptive, uncorrected)."""
    out = [dict(r, p_holm=math.nan) for r in tests]
    families: dict[tuple, list[int]] = {}
    for i, r in enumerate(out):
        if first in (r["method_a"], r["method_b"]):
            family = "claims" if r["metric"] in HOLM_METRICS else r["metric"]
            families.setdefault((family, r["level"], r["test"]), []).append(i)
    for idx in families.values():
        for i, q in zip(idx, ST.holm([out[i]["p"] for i in idx])):
            out[i]["p_holm"] = float(q)
    return [{k: r[k] for k in TESTS_COLUMNS} for r in out]


def statistics_text(*, n_species: int, first_method: str) -> str:
    """The statistical procedure, in words, for summary.json."""
    wmin = f"{2.0 / 2**n_species:.3g}" if n_species >= 1 else "n/a"
    return (
        "The held-out species are the unit: only they were held out, and a species' views (and each view's "
        "mirror) are not independent of one another. "
        "Species level (the headline; summary.csv and tests.csv rows with level=species): per method and metric "
        "each species' mean over its evaluated samples (species.csv); reported: the mean of the k species means "
        "with the 95% t-interval over them, mean +- t_{0.975,k-1} sd/sqrt(k); n = species. Two methods are "
        "compared on their species means, paired by species: paired t-test (scipy.stats.ttest_rel) and Wilcoxon "
        "signed-rank test (scipy.stats.wilcoxon, two-sided, exact for n <= 50 without ties; zero differences "
        "dropped, its n counts the species with a non-zero difference); "
        f"with {n_species} species the smallest possible two-sided Wilcoxon p is 2/2^{n_species} = {wmin}. "
        "'differences' in summary.json: mean over species of the species-mean difference a - b with its "
        "t-interval (it excludes 0 exactly when the paired t-test's p < 0.05; where every difference is the "
        "same d, the interval is [d, d] and the t-test NaN: no spread, no test). "
        f"Multiple comparisons: p_holm in tests.csv is Holm-Bonferroni over the comparisons of {first_method} "
        "with each other method, one family per level and test holding them in l2, dssim and dssim_gauss "
        "together (the claims; mse, l2 squared, is its own family); pairs of two other methods are "
        "uncorrected (p_holm empty); a comparison that could not be tested (NaN p) still counts in its family. "
        "Fewer than 2 species: species-level intervals and tests are NaN. "
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


def write_csv(path: Path, header: Sequence[str], rows: Iterable[dict]) -> None:
    """Write ``rows`` under ``header`` to ``path`` atomically (floats as ``%.8g``; a key not in
    ``header`` is an error, a missing one an empty cell)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(header), lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})

    atomic_write(path, write)


def means_text(means: dict, heads: dict[str, str], *, skip: tuple[str, ...] = ()) -> list[str]:
    """Text lines of a summary's ``means`` ({level: {method: {metric: {mean, ci_low, ci_high, n}}}}):
    per level of ``heads`` (level → heading), one line per method, its metrics but ``skip``."""
    lines = []
    for level, what in heads.items():
        lines.append(f"{what}:")
        for m, vals in means[level].items():
            cells = [
                f"{k} {v['mean']:.4f} [{v['ci_low']:.4f}, {v['ci_high']:.4f}] n={v['n']}"
                for k, v in vals.items()
                if k not in skip
            ]
            lines.append(f"  {m:14} " + "  ".join(cells))
    return lines
