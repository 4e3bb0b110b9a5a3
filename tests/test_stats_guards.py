"""model.stats against independent computations: pairing on the samples both methods have, the
Wilcoxon test's handling of zero differences (brute-force sign enumeration), and the level of
every interval (scipy.stats.t.interval)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from test_cv_compare import SPECIES, _write

from model import stats as S
from model.cv_compare import compare_cv


def _layout(n_species: int, n_views: int):
    """Every sample of ``n_species`` species with ``n_views`` views: (species, sample) per sample."""
    species = np.repeat([f"sp{i}" for i in range(n_species)], 2 * n_views)
    sample = np.tile(np.arange(2 * n_views), n_species)
    return species, sample


def _joint_species_means(a, b, species):
    """Per-species means of a and b over the samples where both are finite, written out by hand."""
    ma, mb = [], []
    for sp in dict.fromkeys(species):
        both = [i for i in range(len(a)) if species[i] == sp and np.isfinite(a[i]) and np.isfinite(b[i])]
        if both:
            ma.append(np.mean([a[i] for i in both]))
            mb.append(np.mean([b[i] for i in both]))
    return np.array(ma), np.array(mb)


def _t_interval(x, level):
    """scipy's t-interval of the mean of ``x``: (mean, low, high)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = stats.t.interval(level, x.size - 1, loc=x.mean(), scale=stats.sem(x))
    return x.mean(), lo, hi


def _rng_case():
    """4 species x 3 views; ``a`` misses samples where ``b`` has values (and the reverse)."""
    species, sample = _layout(4, 3)
    rng = np.random.default_rng(11)
    b = rng.random(species.size)
    a = b - 0.05 + 0.3 * rng.random(species.size)
    a[[0, 1, 7, 13]] = np.nan  # sp0's view 0 gone in a (b keeps it), single samples of sp1 and sp2
    b[[20]] = np.nan
    return a, b, species, sample


def test_species_comparisons_use_only_samples_both_methods_have():
    """A sample missing in one method is dropped from both before the species means are formed:
    the t-test, the difference interval and Wilcoxon compare the two methods on the same samples."""
    a, b, species, _ = _rng_case()
    ma, mb = _joint_species_means(a, b, species)
    t, p, n = S.species_ttest(a, b, species)
    want = stats.ttest_rel(ma, mb)
    assert n == 4
    assert (t, p) == pytest.approx((want.statistic, want.pvalue), rel=1e-10), "t-test not on the joint samples"
    got = S.species_diff_ci(a, b, species)
    assert got[:3] == pytest.approx(_t_interval(ma - mb, 0.95), rel=1e-10), "interval not on the joint samples"
    w, pw, nw = S.species_wilcoxon(a, b, species)
    ref = stats.wilcoxon(ma, mb)
    assert (w, pw, nw) == pytest.approx((ref.statistic, ref.pvalue, 4)), "Wilcoxon not on the joint samples"


def test_sample_ttest_uses_only_samples_both_methods_have():
    """The paper's protocol pairs mirrored-pair means of a and b formed from the same samples: where a
    misses one sample of a pair, b's pair mean is its other sample alone, and a unit missing in a is
    gone from both."""
    a, b, species, sample = _rng_case()
    ok = np.isfinite(a) & np.isfinite(b)
    pa, pb = [], []
    for i in range(0, a.size, 2):  # a view and its mirror are neighbours in _layout
        keep = [j for j in (i, i + 1) if ok[j]]
        if keep:
            pa.append(np.mean(a[keep]))
            pb.append(np.mean(b[keep]))
    t, p, n = S.sample_ttest(a, b, species, sample, 3)
    want = stats.ttest_rel(pa, pb)
    assert n == len(pa) == 11
    assert (t, p) == pytest.approx((want.statistic, want.pvalue), rel=1e-10)


def test_wilcoxon_drops_zero_differences_as_an_exact_enumeration_does():
    """Zero species differences are dropped (Wilcoxon's own treatment), not split between the signs:
    W and the exact two-sided p of the remaining species from all 2^n sign patterns."""
    species, _ = _layout(7, 1)
    d = np.array([-1.0, -2.0, -3.0, -4.0, -5.0, 2.5, 0.0])  # species differences a - b
    b = np.repeat(np.arange(7, dtype=np.float64), 2)
    a = b + np.repeat(d, 2)
    w, p, n = S.species_wilcoxon(a, b, species)
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    w_plus = ranks[nz > 0].sum()
    w_min = min(w_plus, ranks.sum() - w_plus)
    as_extreme = 0
    for signs in itertools.product((0, 1), repeat=nz.size):
        s = float(np.dot(signs, ranks))
        as_extreme += min(s, ranks.sum() - s) <= w_min
    assert n == 6
    assert w == w_min == 3.0, f"W {w}: the smaller rank sum of the non-zero differences is {w_min}"
    assert p == pytest.approx(as_extreme / 2**nz.size) == 0.15625


@pytest.mark.parametrize("level", [0.5, 0.8, 0.99])
def test_every_interval_has_the_level_it_is_asked_for(level):
    """species_ci, species_diff_ci and sample_ci are scipy's t-interval at the requested level."""
    a, b, species, sample = _rng_case()
    fa, fb = np.nan_to_num(a, nan=0.4), np.nan_to_num(b, nan=0.6)
    ma, mb = _joint_species_means(fa, fb, species)
    assert S.species_ci(fa, species, level)[:3] == pytest.approx(_t_interval(ma, level), rel=1e-10)
    assert S.species_diff_ci(fa, fb, species, level)[:3] == pytest.approx(_t_interval(ma - mb, level), rel=1e-10)
    units = (fa[0::2] + fa[1::2]) / 2
    assert S.sample_ci(fa, species, sample, 3, level)[:3] == pytest.approx(_t_interval(units, level), rel=1e-10)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 95])
def test_every_interval_refuses_a_level_outside_0_1(level):
    """A level of 0 (an empty interval) or 1 (an infinite one) is no confidence level: refused by every
    interval (mean_ci and sample_ci returned NaN or infinite bounds for them; helper-97)."""
    species, sample = _layout(3, 1)
    v = np.arange(6, dtype=np.float64)
    with pytest.raises(ValueError, match="level must be in"):
        S.species_ci(v, species, level)
    with pytest.raises(ValueError, match="level must be in"):
        S.species_diff_ci(v, v[::-1], species, level)
    with pytest.raises(ValueError, match="level must be in"):
        S.mean_ci(v, level)
    with pytest.raises(ValueError, match="level must be in"):
        S.sample_ci(v, species, sample, 1, level)


def test_interval_bounds_are_symmetric_about_the_mean_of_species_means():
    """The interval is mean ± half with the mean over species (each species once, whatever its
    sample count), not over samples."""
    species = np.array(["x"] * 6 + ["y"] * 2 + ["z"] * 2)
    v = np.array([0.0] * 6 + [1.0, 1.0, 2.0, 2.0])
    mean, lo, hi, n = S.species_ci(v, species)
    assert n == 3 and mean == pytest.approx(1.0), "the mean over samples would be 0.6"
    assert hi - mean == pytest.approx(mean - lo) == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))


# ------------------------------------------------------------------------------ tomo cv-compare
def test_cv_compare_t_has_the_sign_of_the_difference_b_minus_a(tmp_path):
    """methods.csv's and margins.csv's t is the paired t of B − A (scipy's ttest_rel(b, a)): positive
    where B is higher, the sign of ``diff``; higher counts only species where B is strictly higher."""
    a = {("ours", "l2"): np.linspace(0.02, 0.06, len(SPECIES)), ("nn", "l2"): np.linspace(0.03, 0.07, len(SPECIES))}
    b = {k: v.copy() for k, v in a.items()}
    b["nn", "l2"] += np.array([0.0, 0.0, 0.001, 0.002, 0.004, 0.003, 0.005, 0.0015])  # B higher on 6, equal on 2
    b["ours", "l2"] -= np.array([0.0, 0.001, 0.002, 0.0, 0.001, 0.003, 0.002, 0.001])
    res = compare_cv(_write(tmp_path / "a", a), _write(tmp_path / "b", b))
    row = next(r for r in res["methods"] if r["method"] == "nn")
    want = stats.ttest_rel(b["nn", "l2"], a["nn", "l2"])
    assert row["t"] == pytest.approx(want.statistic) and row["t"] > 0 and row["diff"] > 0
    assert row["higher"] == 6, "species with equal means are not higher in B"
    m = res["margins"][0]
    ma, mb = a["ours", "l2"] - a["nn", "l2"], b["ours", "l2"] - b["nn", "l2"]
    assert m["t"] == pytest.approx(stats.ttest_rel(mb, ma).statistic) and m["t"] < 0 and m["diff"] < 0


def test_cv_compare_margins_holm_family_is_the_claims_metrics_only(tmp_path):
    """mse (l2 squared) is compared in methods.csv but is no claim: margins.csv and its Holm family
    hold l2 and the DSSIMs only, so p_holm of the l2 margins is Holm over those two margins alone."""
    rng = np.random.default_rng(5)
    a = {(m, k): rng.uniform(0.02, 0.06, len(SPECIES)) for k in ("l2", "mse") for m in ("ours", "nn", "mean")}
    b = {key: v + rng.normal(0.001, 0.002, len(SPECIES)) for key, v in a.items()}
    res = compare_cv(_write(tmp_path / "a", a), _write(tmp_path / "b", b))
    assert {r["metric"] for r in res["methods"]} == {"l2", "mse"}
    assert [(r["metric"], r["other"]) for r in res["margins"]] == [("l2", "nn"), ("l2", "mean")]
    p = []
    for other in ("nn", "mean"):
        ma, mb = a["ours", "l2"] - a[other, "l2"], b["ours", "l2"] - b[other, "l2"]
        p.append(stats.ttest_rel(mb, ma).pvalue)
    want = [min(1.0, 2 * min(p)), min(1.0, max(2 * min(p), max(p)))]  # Holm by hand, m = 2
    got = [r["p_holm"] for r in res["margins"]]
    assert sorted(got) == pytest.approx(want), f"Holm over the l2 margins alone: {want}, got {got}"
