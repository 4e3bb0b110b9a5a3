"""Statistics of the evaluation (:mod:`model.evaluate`): the held-out *species* are the unit.

Conventions. Every function takes per-sample arrays in one order, one entry per evaluated sample:

* ``values``, ``a``, ``b``: (N,) float, a metric per sample (NaN = missing: dropped). ``a`` and
  ``b`` are two methods on the same samples (``a[i]``, ``b[i]`` of sample ``i``); a sample missing
  in either is dropped from their comparison.
* ``species``: (N,) species labels (str).
* ``sample``: (N,) int, the sample's index within its species; ``n_views``: views per species.
  Sample ``2i`` is view ``i`` and ``2i + 1`` its mirror (:func:`tomodata.views.sample_to_view`).

Two levels:

* **species** (the held-out unit): a method's per-species means (the mean over that species'
  samples); its summary is the mean of the species means with the 95 % t-interval over them
  (``mean ± t_{.975, k−1} sd / √k``, k species; :func:`species_ci`); two methods are compared on
  their species means, paired by species: ``scipy.stats.ttest_rel`` and ``scipy.stats.wilcoxon``
  (two-sided; exact null distribution for n <= 50 without ties or zero differences, scipy's
  ``method="auto"``), and the t-interval of the paired differences (:func:`species_diff_ci`). n =
  species. Why not a bootstrap over species: with few species a percentile bootstrap is far too
  narrow (simulated coverage of its nominal 95 % for normal species means: about .50 with 2 species,
  .80 with 4, .90 with 10; the t-interval's: .95).
* **splits** (cross-validation, :mod:`model.cross_validation`): :func:`corrected_resampled_t`, the
  paired t over the K folds' scores with Nadeau & Bengio's correction for their shared training data.
* **multiple comparisons**: :func:`holm` adjusts one family of p-values (Holm–Bonferroni);
  :mod:`model.eval_tables` applies it to the reported method's comparisons with each other method.
* **sample** (the paper's protocol, kept for comparison): each mirrored pair is averaged first (one
  unit per distinct (species, view); a lone sample of a pair is its own unit's mean), then the
  t-interval ``mean ± t_{.975, n−1} sd / √n`` and ``ttest_rel`` paired by unit. n = units.

Functions that need two species raise ``ValueError`` with fewer; mismatched lengths raise
``ValueError`` too. A t-test whose paired differences are all equal (zero or not; equal to float
rounding, a spread of at most 16 machine epsilons of the largest) returns NaN t and p: its
statistic would be ±inf (or ~1e15) with p ≈ 0, a certainty the test's variance estimate of zero
cannot give (:func:`holm` counts such a NaN as p = 1); the Wilcoxon test beside it still ranks equal
non-zero differences (p ≥ 2/2^n).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from tomodata.views import sample_to_view

__all__ = [
    "corrected_resampled_t",
    "holm",
    "mean_ci",
    "pair_means",
    "paired_t",
    "sample_ci",
    "sample_ttest",
    "species_ci",
    "species_diff_ci",
    "species_means",
    "species_ttest",
    "species_wilcoxon",
]

# --------------------------------------------------------------------------------------------------
# input checks and grouping


def _arrays(*arrays, names: Sequence[str]) -> list[np.ndarray]:
    """1-D arrays of one length (ValueError naming the mismatch)."""
    out = [np.asarray(a) for a in arrays]
    for a, n in zip(out, names):
        if a.ndim != 1:
            raise ValueError(f"{n} must be a 1-D per-sample array, got shape {a.shape}")
    lengths = {n: a.shape[0] for a, n in zip(out, names)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"per-sample arrays differ in length: {lengths}")
    return out


def _group_means(values: np.ndarray, keys: list) -> tuple[list, np.ndarray, np.ndarray]:
    """(keys in first-appearance order, mean of the finite values per key (NaN if none), their count)."""
    order: dict = {}
    for k in keys:
        order.setdefault(k, len(order))
    idx = np.fromiter((order[k] for k in keys), dtype=np.int64, count=len(keys))
    ok = np.isfinite(values)
    sums = np.bincount(idx[ok], weights=values[ok], minlength=len(order))
    counts = np.bincount(idx[ok], minlength=len(order)).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return list(order), means, counts


def species_means(values, species) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-species means of a per-sample metric.

    Returns ``(names, means, n_samples)``: species in order of first appearance, (k,) float64 means
    over each species' finite values (NaN where it has none) and (k,) int64 counts of those values.
    """
    v, s = _arrays(values, species, names=("values", "species"))
    return _group_means(v.astype(np.float64), [str(x) for x in s])


def pair_means(values, species, sample, n_views: int) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Mirrored pairs averaged: one unit per distinct (species, view).

    Returns ``(units, means)``: (species, view) keys in order of first appearance and (u,) float64
    means of their finite values (a view's sample and its mirror; one of them if the other is absent
    or NaN). Units without a finite value are left out.
    """
    v, s, j = _arrays(values, species, sample, names=("values", "species", "sample"))
    if j.size and not np.issubdtype(j.dtype, np.integer):
        raise ValueError(f"sample indices must be integers, got dtype {j.dtype}")
    view, _ = sample_to_view(j.astype(np.int64), int(n_views))
    units, means, counts = _group_means(v.astype(np.float64), [(str(a), int(b)) for a, b in zip(s, view)])
    keep = counts > 0
    return [u for u, k in zip(units, keep) if k], means[keep]


def _species_level(values, species) -> np.ndarray:
    """Finite species means, at least two of them (ValueError otherwise)."""
    _, m, _ = species_means(values, species)
    m = m[np.isfinite(m)]
    if m.size < 2:
        raise ValueError(f"species-level statistics need at least 2 species with values, got {m.size}")
    return m


def _paired(a, b, species) -> tuple[np.ndarray, np.ndarray]:
    """Species means of two methods on the samples where both have a value, paired by species."""
    a, b, s = _arrays(a, b, species, names=("a", "b", "species"))
    a, b = a.astype(np.float64), b.astype(np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    _, ma, na = species_means(np.where(ok, a, np.nan), s)
    _, mb, _ = species_means(np.where(ok, b, np.nan), s)
    keep = na > 0
    if keep.sum() < 2:
        raise ValueError(f"species-level tests need at least 2 species with values of both methods, got {keep.sum()}")
    return ma[keep], mb[keep]


# --------------------------------------------------------------------------------------------------
# confidence intervals


def mean_ci(x, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, ci_low, ci_high, n) of the finite values of ``x``: the t-interval
    ``mean ± t_{(1+level)/2, n−1} sd / √n`` (sd with n − 1); NaN bounds for n < 2, all NaN for n = 0.
    ValueError for a ``level`` outside (0, 1)."""
    level = _level(level)
    a = np.asarray(x, dtype=np.float64).ravel()
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(a.mean())
    if n < 2:
        return m, math.nan, math.nan, n
    half = float(stats.t.ppf(0.5 + level / 2.0, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half, n


def species_ci(values, species, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean of species means, ci_low, ci_high, n species): the t-interval over the species means
    (:func:`mean_ci`, n − 1 degrees of freedom). ValueError with fewer than 2 species with values."""
    return mean_ci(_species_level(values, species), level)


def species_diff_ci(a, b, species, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean over species of the species-mean difference a − b, ci_low, ci_high, n species): the
    t-interval of the paired differences (samples where both have a value); it excludes 0 exactly
    when :func:`species_ttest`'s p < 1 − level (equal differences d: the point [d, d], test NaN)."""
    ma, mb = _paired(a, b, species)
    return mean_ci(ma - mb, level)


def _level(level: float) -> float:
    """``level`` checked to lie in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(level)


def sample_ci(values, species, sample, n_views: int, level: float = 0.95) -> tuple[float, float, float, int]:
    """The paper's protocol: (mean, ci_low, ci_high, n units) of the t-interval over mirrored-pair
    means (:func:`pair_means`; n = distinct (species, view))."""
    return mean_ci(pair_means(values, species, sample, n_views)[1], level)


# --------------------------------------------------------------------------------------------------
# tests


#: paired differences whose spread (max − min) is at most this many machine epsilons of their largest
#: magnitude count as all equal: no t-test (module notes)
_SPREAD_EPS = 16.0 * float(np.finfo(np.float64).eps)


def _no_spread(d: np.ndarray) -> bool:
    """True when there are fewer than 2 paired differences ``d`` or they are all equal (to float
    rounding): a t-test is undefined (module notes)."""
    if d.size < 2:
        return True
    return float(np.ptp(d)) <= _SPREAD_EPS * float(np.max(np.abs(d)))


def paired_t(a, b) -> tuple[float, float]:
    """(t, p): ``scipy.stats.ttest_rel`` (two-sided) of the paired finite (n,) arrays ``a`` and ``b``;
    NaN t and p for n < 2 or differences all equal (zero or not; module notes)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if _no_spread(a - b):
        return math.nan, math.nan
    r = stats.ttest_rel(a, b)
    return float(r.statistic), float(r.pvalue)


def species_ttest(a, b, species) -> tuple[float, float, int]:
    """(t, p, n species): :func:`paired_t` of the species means of a and b (NaN t and p when every
    species' difference is the same, zero or not)."""
    ma, mb = _paired(a, b, species)
    return (*paired_t(ma, mb), int(ma.size))


def species_wilcoxon(a, b, species) -> tuple[float, float, int]:
    """(W, p, n): ``scipy.stats.wilcoxon`` (two-sided, ``method="auto"``) of the species means of a
    and b; W = the smaller rank sum. Zero differences are dropped (scipy's ``"wilcox"``), so n counts
    the species with a non-zero difference, those the test ranks (the smallest possible p is
    2/2^n). Exact for n <= 50 without ties; with ties scipy 1.17 permutes for n <= 13 and uses the
    tie-corrected normal approximation (no continuity correction) above. NaN W and p when every
    difference is zero."""
    ma, mb = _paired(a, b, species)
    n = int(np.count_nonzero(ma != mb))
    if n == 0:
        return math.nan, math.nan, n
    r = stats.wilcoxon(ma, mb, alternative="two-sided")
    return float(r.statistic), float(r.pvalue), n


def sample_ttest(a, b, species, sample, n_views: int) -> tuple[float, float, int]:
    """The paper's protocol: (t, p, n units): ``ttest_rel`` (two-sided) of a and b over mirrored-pair
    means (on the samples where both have a value), paired by (species, view). NaN t and p for
    n < 2 or equal differences (zero or not; module notes)."""
    a, b, s, j = _arrays(a, b, species, sample, names=("a", "b", "species", "sample"))
    a, b = a.astype(np.float64), b.astype(np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    ua, pa = pair_means(np.where(ok, a, np.nan), s, j, n_views)
    ub, pb = pair_means(np.where(ok, b, np.nan), s, j, n_views)
    assert ua == ub  # same samples kept for both
    return (*paired_t(pa, pb), int(pa.size))


def corrected_resampled_t(a, b, *, n_train: float, n_test: float) -> tuple[float, float, int]:
    """(t, p, J): Nadeau & Bengio's (2003) corrected resampled t-test of two methods over J splits.

    ``a``, ``b``: (J,) each method's score on each split's test set (here: a fold's mean of its test
    species' means), paired by split; ``n_train``, ``n_test``: the units a split trains on and tests
    (means over the splits). With d = a − b, ``t = mean(d) / sqrt((1/J + n_test/n_train) · var(d))``
    (var with J − 1 degrees of freedom), two-sided p from Student's t with J − 1 df. The plain paired
    t (``ttest_rel``) has 1/J alone: it ignores that the J networks share most of their training data,
    which makes the split scores correlated and its p too small; the n_test/n_train term is the
    correction's model of that correlation (for plain K-fold CV n_test/n_train = 1/(K − 1); where a
    fold also holds out a val part, n_train is smaller and the correction larger). Not exact either,
    but conservative where the plain test is not (Nadeau & Bengio 2003; Bouckaert & Frank 2004).
    NaN t and p for J < 2 or all differences equal (zero or not; module notes)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold one score per split each, got {a.size} and {b.size}")
    d = a - b
    d = d[np.isfinite(d)]
    J = int(d.size)
    if not (n_train > 0 and n_test > 0):
        raise ValueError(f"n_train and n_test must be positive, got {n_train}, {n_test}")
    if _no_spread(d):
        return math.nan, math.nan, J
    var = float(np.var(d, ddof=1))
    mean = float(np.mean(d))
    t = mean / math.sqrt((1.0 / J + n_test / n_train) * var)
    return t, float(2.0 * stats.t.sf(abs(t), J - 1)), J


def holm(p) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of one family of tests, in the input's order: the i-th
    smallest of m p-values times (m − i + 1), made non-decreasing, capped at 1. A NaN entry (a
    comparison that could not be tested: every difference equal, too few units) stays NaN but counts
    in m, as the family's claim it is (conservative: the others are adjusted as if it had p = 1);
    m = 0 where every entry is NaN. (scipy offers only FDR control, which is weaker.)"""
    p = np.asarray(p, dtype=np.float64).ravel()
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = p.size if ok.size else 0
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(order.size)) * p[order]))
    return out
