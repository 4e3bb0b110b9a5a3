"""model.stats: species-level intervals and tests, Holm's adjustment, the paper's per-sample protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from model import stats as S


def _layout(n_species: int, n_views: int):
    """Every sample of ``n_species`` species with ``n_views`` views: (species, sample) per sample."""
    species = np.repeat([f"sp{i}" for i in range(n_species)], 2 * n_views)
    sample = np.tile(np.arange(2 * n_views), n_species)
    return species, sample


def test_species_means_order_counts_and_nan():
    v = np.array([1.0, 3.0, 10.0, np.nan, 20.0, 5.0])
    sp = np.array(["b", "b", "a", "a", "a", "c"])
    names, means, n = S.species_means(v, sp)
    assert names == ["b", "a", "c"]  # first appearance
    np.testing.assert_allclose(means, [2.0, 15.0, 5.0])
    assert n.tolist() == [2, 2, 1]  # the NaN is not counted
    names, means, n = S.species_means([np.nan, 1.0], ["x", "y"])
    assert math.isnan(means[0]) and n.tolist() == [0, 1]


def test_pair_means_count_a_mirrored_pair_once():
    species, sample = _layout(2, 3)  # 2 species x 3 views x 2 = 12 samples
    v = np.arange(12, dtype=float)
    units, m = S.pair_means(v, species, sample, n_views=3)
    assert len(units) == 6 == len(v) // 2  # halves n
    assert units[:3] == [("sp0", 0), ("sp0", 1), ("sp0", 2)]
    np.testing.assert_allclose(m, [0.5, 2.5, 4.5, 6.5, 8.5, 10.5])
    # a lone sample (its mirror not evaluated, or NaN) is its own unit's mean
    units, m = S.pair_means([1.0, 7.0, np.nan], ["a", "a", "a"], [0, 3, 2], n_views=2)
    assert units == [("a", 0), ("a", 1)] and m.tolist() == [1.0, 7.0]
    with pytest.raises(ValueError, match="out of range"):
        S.pair_means([1.0], ["a"], [4], n_views=2)
    # the t-interval on the units: n = distinct views
    mean, lo, hi, n = S.sample_ci(v, species, sample, 3)
    assert n == 6 and mean == pytest.approx(5.5) and lo < mean < hi
    assert hi - mean == pytest.approx(2.570581836 * np.std([0.5, 2.5, 4.5, 6.5, 8.5, 10.5], ddof=1) / math.sqrt(6))


def test_sample_ttest_pairs_units():
    species, sample = _layout(2, 4)
    rng = np.random.default_rng(3)
    a = rng.random(16)
    b = a + 0.1 + 0.01 * rng.standard_normal(16)
    t, p, n = S.sample_ttest(a, b, species, sample, 4)
    assert n == 8
    pa = (a[0::2] + a[1::2]) / 2  # a view and its mirror are neighbours
    pb = (b[0::2] + b[1::2]) / 2
    r = stats.ttest_rel(pa, pb)
    assert t == pytest.approx(r.statistic) and p == pytest.approx(r.pvalue) and t < 0
    # NaN in either method drops that sample for both
    b2 = b.copy()
    b2[[0, 1]] = np.nan  # view 0 of sp0 gone entirely
    assert S.sample_ttest(a, b2, species, sample, 4)[2] == 7
    assert math.isnan(S.sample_ttest(a, a, species, sample, 4)[0])


def test_wilcoxon_exact_for_eight_species_all_better():
    species, sample = _layout(8, 2)
    rng = np.random.default_rng(0)
    b = rng.random(species.size)
    a = b - 0.05 * (1 + np.repeat(np.arange(8), 4))  # a better (lower) in every species, distinct gaps
    w, p, n = S.species_wilcoxon(a, b, species)
    assert (w, n) == (0.0, 8)
    assert p == 2 / 256 == 0.0078125  # exact two-sided: 2 of the 2^8 sign patterns are as extreme
    t, pt, nt = S.species_ttest(a, b, species)
    assert nt == 8 and t < 0 and pt < 0.01
    ma = a.reshape(8, 4).mean(1)
    mb = b.reshape(8, 4).mean(1)
    assert t == pytest.approx(stats.ttest_rel(ma, mb).statistic)


def test_species_tests_use_species_means_not_samples():
    # two species, many samples each: the species is the unit (n = 2), not the 200 samples
    species, sample = _layout(2, 50)
    rng = np.random.default_rng(1)
    b = rng.random(200)
    a = b - 0.01
    t, p, n = S.species_ttest(a, b, species)
    w, pw, nw = S.species_wilcoxon(a, b, species)
    assert n == nw == 2
    assert pw == 0.5  # the smallest two-sided exact p with two species
    assert math.isnan(S.species_ttest(a, a, species)[0]) and math.isnan(S.species_wilcoxon(a, a, species)[1])


def test_wilcoxon_is_exact_up_to_50_species_and_approximate_above():
    """docs/model.md, "Statistics": scipy's method="auto", exact for at most 50 species without ties,
    the normal approximation above (the 51 mice's Wilcoxon p-values; helper-81: the docs said exact)."""
    rng = np.random.default_rng(3)
    for k, method in ((50, "exact"), (51, "asymptotic")):
        species, _ = _layout(k, 1)  # 2 samples per species
        a = rng.normal(0.0, 1.0, 2 * k)
        b = a + rng.normal(0.3, 1.0, 2 * k)  # distinct differences of the species means: no ties
        ma, mb = a.reshape(k, 2).mean(axis=1), b.reshape(k, 2).mean(axis=1)
        assert np.unique(np.abs(ma - mb)).size == k
        want = stats.wilcoxon(ma, mb, alternative="two-sided", method=method).pvalue
        assert S.species_wilcoxon(a, b, species)[1] == pytest.approx(want, rel=1e-12), (k, method)


def test_equal_nonzero_differences_have_no_t_test():
    """Every species (or mirrored pair) better by the same amount: the t statistic would be inf with
    p = 0; no spread means no t-test (NaN), while the Wilcoxon test still ranks the differences."""
    species, sample = _layout(3, 2)
    b = np.tile([0.25, 0.5, 0.75, 1.0], 3)
    a = b - 0.125  # exact in binary: every species-mean difference is -0.125
    assert all(map(math.isnan, S.species_ttest(a, b, species)[:2]))
    assert all(map(math.isnan, S.sample_ttest(a, b, species, sample, 2)[:2]))
    assert S.species_wilcoxon(a, b, species)[1] == 0.25  # 2 / 2^3
    assert S.species_diff_ci(a, b, species)[:3] == (-0.125, -0.125, -0.125)
    # equal to float rounding only (0.1 is not exact in binary): still no spread, no t = -6e15
    a = b - 0.1
    assert all(map(math.isnan, S.species_ttest(a, b, species)[:2]))
    assert all(map(math.isnan, S.corrected_resampled_t(a[:4], b[:4], n_train=3, n_test=1)[:2]))
    assert all(map(math.isnan, S.paired_t(a, b)))  # the fold level's plain t and paired_tests use it
    t, p = S.paired_t(a + np.linspace(0, 1e-9, a.size), b)  # a real spread, however small: tested
    assert (t, p) == pytest.approx(tuple(stats.ttest_rel(a + np.linspace(0, 1e-9, a.size), b)))


def test_species_ci_is_the_t_interval_of_the_species_means():
    species, sample = _layout(4, 3)
    # identical species: the interval is degenerate at the mean
    v = np.tile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 4)
    mean, lo, hi, n = S.species_ci(v, species)
    assert n == 4 and mean == pytest.approx(0.35) and lo == pytest.approx(mean, abs=1e-15) == pytest.approx(hi)
    # different species: t_{.975, 3} sd / sqrt(4) of the four species means, by hand
    v = v + np.repeat([0.0, 0.1, 0.2, 0.6], 6)
    m = 0.35 + np.array([0.0, 0.1, 0.2, 0.6])
    half = stats.t.ppf(0.975, 3) * m.std(ddof=1) / 2.0
    mean, lo, hi, n = S.species_ci(v, species)
    assert n == 4 and mean == pytest.approx(m.mean()) and (lo, hi) == pytest.approx((m.mean() - half, m.mean() + half))
    assert S.species_ci(v, species, level=0.9)[2] < hi  # a lower level, a narrower interval
    # only species means count: shuffling samples within a species changes nothing
    perm = np.concatenate([np.random.default_rng(k).permutation(6) + 6 * k for k in range(4)])
    assert S.species_ci(v[perm], species[perm]) == pytest.approx((mean, lo, hi, n), rel=1e-12)
    # the paired difference: a constant shift gives a degenerate interval at the shift
    d = S.species_diff_ci(v + 0.25, v, species)
    assert d[:3] == pytest.approx((0.25, 0.25, 0.25)) and d[3] == 4


def test_species_diff_ci_excludes_zero_exactly_when_the_t_test_rejects():
    species, _ = _layout(5, 1)
    rng = np.random.default_rng(0)
    for shift in np.linspace(0.0, 0.6, 25):
        a = rng.normal(size=10) + shift
        b = rng.normal(size=10)
        _, lo, hi, _ = S.species_diff_ci(a, b, species)
        _, p, _ = S.species_ttest(a, b, species)
        assert (lo > 0 or hi < 0) == (p < 0.05)


def test_species_t_interval_covers_at_its_level_where_a_bootstrap_would_not():
    """The reason for the t-interval: with 4 species a percentile bootstrap of the species means covers
    about 80 % (model.stats' docstring); the t-interval its nominal 95 %."""
    rng = np.random.default_rng(1)
    species, _ = _layout(4, 1)
    hits = 0
    for _ in range(2000):
        _, lo, hi, _ = S.species_ci(np.repeat(rng.normal(size=4), 2), species)
        hits += lo <= 0.0 <= hi
    assert 0.935 <= hits / 2000 <= 0.965


def test_holm_by_hand():
    q = S.holm([0.01, 0.04, 0.03, 0.005])
    # sorted: .005 x4 = .02, .01 x3 = .03, .03 x2 = .06, .04 x1 = .04 -> made non-decreasing: .06
    np.testing.assert_allclose(q[[3, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert S.holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1
    assert S.holm([]).size == 0 and S.holm([0.2]).tolist() == [0.2]
    np.testing.assert_allclose(S.holm([0.02, 0.02, 0.02, 0.001]), [0.06, 0.06, 0.06, 0.004])  # ties


def test_holm_counts_an_untestable_comparison_in_the_family():
    """A NaN p (no test possible) stays NaN but is one of the family's m claims: the others are
    adjusted as if it had p = 1 (helper-64: leaving it out of m was slightly anti-conservative)."""
    q = S.holm([0.01, 0.04, 0.03, np.nan, 0.005])
    # m = 5: .005 x5 = .025, .01 x4 = .04, .03 x3 = .09, .04 x2 = .08 -> non-decreasing: .09
    np.testing.assert_allclose(q[[4, 0, 2, 1]], [0.025, 0.04, 0.09, 0.09])
    assert math.isnan(q[3])
    np.testing.assert_array_equal(np.isnan(S.holm([np.nan, np.nan])), [True, True])  # nothing tested
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03, 1.0, 0.005])[[4, 0, 2, 1]], q[[4, 0, 2, 1]])


def test_holm_matches_the_step_down_definition():
    """Against a direct reading of Holm (1979): reject H_(i) while p_(i) <= alpha / (m - i + 1); the
    adjusted p of H_(i) is the smallest alpha at which it is rejected."""
    rng = np.random.default_rng(3)
    for _ in range(300):
        m = int(rng.integers(1, 14))
        p = np.round(rng.random(m) ** 3, 3)  # rounding makes ties
        order = np.argsort(p, kind="stable")
        want = np.empty(m)
        running = 0.0
        for i, j in enumerate(order):
            running = max(running, min(1.0, (m - i) * p[j]))
            want[j] = running
        np.testing.assert_allclose(S.holm(p), want, rtol=0, atol=1e-15)


def test_nan_handling():
    species, sample = _layout(3, 2)
    v = np.array([1.0, 1.0, 1.0, 1.0, 2.0, np.nan, 2.0, 2.0, np.nan, np.nan, np.nan, np.nan])
    names, means, n = S.species_means(v, species)
    assert means[:2].tolist() == [1.0, 2.0] and math.isnan(means[2]) and n.tolist() == [4, 3, 0]
    mean, lo, hi, k = S.species_ci(v, species)
    assert k == 2 and mean == 1.5  # the species without values is left out
    b = v + np.linspace(1.0, 2.0, 12)
    b[[0, 4, 5]] = np.nan
    t, p, k = S.species_ttest(v, b, species)
    assert k == 2  # sp2 has no pair; sp0 keeps 3 samples, sp1 two
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_ttest(v[:6], b[:6], species[:6])  # sp0 and 2 samples of sp1, which have no b
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_ci(v[4:], species[4:])  # sp1 and sp2, which has no values


def test_bad_inputs_raise():
    species, sample = _layout(2, 2)
    v = np.arange(8, dtype=float)
    with pytest.raises(ValueError, match="differ in length"):
        S.species_ttest(v, v[:-1], species)
    with pytest.raises(ValueError, match="differ in length"):
        S.species_means(v, species[:-1])
    with pytest.raises(ValueError, match="differ in length"):
        S.sample_ci(v, species, sample[:3], 2)
    with pytest.raises(ValueError, match="1-D"):
        S.species_ci(v.reshape(2, 4), species)
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_ci(v[:4], species[:4])
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_wilcoxon(v[:4], v[:4] + 1, species[:4])
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_diff_ci(v[:4], v[:4], species[:4])
    with pytest.raises(ValueError, match="level"):
        S.species_ci(v, species, level=95)
    with pytest.raises(ValueError, match="integers"):
        S.pair_means(v, species, sample.astype(float), 2)


def test_mean_ci():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    m, lo, hi, n = S.mean_ci(x)
    assert (m, n) == (2.5, 4) and hi - m == pytest.approx(3.182446305 * np.std(x[:4], ddof=1) / 2)
    assert math.isnan(S.mean_ci([1.0])[1]) and S.mean_ci([])[3] == 0


def test_corrected_resampled_t_by_hand():
    a, b = np.array([5.0, 6.0, 7.0, 8.0, 9.0]), np.array([4.0, 4.0, 4.0, 4.0, 4.0])  # d = 1..5
    t, p, J = S.corrected_resampled_t(a, b, n_train=30, n_test=10)
    want = 3.0 / math.sqrt((1 / 5 + 10 / 30) * 2.5)  # mean 3, var 2.5
    assert J == 5 and t == pytest.approx(want) and p == pytest.approx(2 * stats.t.sf(want, 4))
    # no overlap term: the plain paired t; the term only widens the variance (larger p)
    t0, p0, _ = S.corrected_resampled_t(a, b, n_train=1e300, n_test=1e-300)
    plain = stats.ttest_rel(a, b)
    assert t0 == pytest.approx(plain.statistic) and p0 == pytest.approx(plain.pvalue) and p > p0
    assert S.corrected_resampled_t(b, a, n_train=30, n_test=10)[0] == pytest.approx(-want)


def test_corrected_resampled_t_edges():
    nan_t, nan_p, n = S.corrected_resampled_t([1.0, 2.0], [1.0, 2.0], n_train=3, n_test=1)
    assert math.isnan(nan_t) and math.isnan(nan_p) and n == 2
    assert math.isnan(S.corrected_resampled_t([1.0], [0.0], n_train=3, n_test=1)[1])  # one split
    # equal non-zero differences: no spread, so no t-test (not t = inf, p = 0)
    assert all(map(math.isnan, S.corrected_resampled_t([2.0, 3.0], [1.0, 2.0], n_train=3, n_test=1)[:2]))
    assert S.corrected_resampled_t([1.0, 2.0, np.nan], [0.0, 0.5, 1.0], n_train=3, n_test=1)[2] == 2  # NaN dropped
    with pytest.raises(ValueError, match="positive"):
        S.corrected_resampled_t([1.0, 2.0], [0.0, 0.0], n_train=0, n_test=1)
    with pytest.raises(ValueError, match="one score per split each, got 5 and 1"):  # no broadcasting
        S.corrected_resampled_t([1.0, 2.0, 3.0, 4.0, 5.0], [0.0], n_train=3, n_test=1)


def test_wilcoxon_n_counts_the_species_it_ranks():
    """Zero differences are dropped by the test, so n (and the smallest possible p, 2/2^n) counts only
    the species with a non-zero difference."""
    species, _ = _layout(4, 2)
    b = np.repeat([1.0, 2.0, 3.0, 4.0], 4)
    a = b - np.repeat([1.0, 2.0, 3.0, 0.0], 4)  # the fourth species: no difference
    w, p, n = S.species_wilcoxon(a, b, species)
    assert n == 3 and p == pytest.approx(stats.wilcoxon([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).pvalue) == 0.25
    assert S.species_ttest(a, b, species)[2] == 4  # the t-test uses every species
