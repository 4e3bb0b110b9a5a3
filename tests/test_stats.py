"""model.stats: species-level tests and cluster bootstrap, the paper's per-sample protocol."""

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


def test_cluster_bootstrap():
    species, sample = _layout(4, 3)
    # identical species: every draw has the same mean, the interval is degenerate
    v = np.tile([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 4)
    mean, lo, hi, n = S.cluster_bootstrap_ci(v, species, n_boot=500)
    assert n == 4 and mean == pytest.approx(0.35) and lo == pytest.approx(mean, abs=1e-15) == hi
    # different species: the interval lies within the range of species means and covers the mean
    v = v + np.repeat([0.0, 0.1, 0.2, 0.6], 6)
    mean, lo, hi, n = S.cluster_bootstrap_ci(v, species, seed=7)
    assert n == 4 and 0.35 <= lo < mean < hi <= 0.95 and mean == pytest.approx(0.35 + 0.225)
    # seeded: reproducible; another seed, other draws
    assert S.cluster_bootstrap_ci(v, species, seed=7) == (mean, lo, hi, n)
    sp6, _ = _layout(6, 1)
    w = np.repeat([0.11, 0.23, 0.31, 0.47, 0.52, 0.9], 2)
    one, again, other = (S.cluster_bootstrap_ci(w, sp6, n_boot=300, seed=s) for s in (1, 1, 2))
    assert one == again and one != other and other[1] == pytest.approx(one[1], abs=0.05)
    # a species' samples travel together: the result depends only on the species means, so
    # shuffling samples within species changes nothing
    perm = np.concatenate(
        [
            rng_perm + 6 * k
            for k, rng_perm in enumerate(np.random.default_rng(2).permuted(np.tile(np.arange(6), (4, 1)), axis=1))
        ]
    )
    assert S.cluster_bootstrap_ci(v[perm], species[perm], seed=7) == pytest.approx((mean, lo, hi, n), rel=1e-12)
    # the paired difference: a constant shift gives a degenerate interval at the shift
    d = S.cluster_bootstrap_diff_ci(v + 0.25, v, species, n_boot=200)
    assert d[0] == pytest.approx(0.25) and d[1] == pytest.approx(0.25) and d[2] == pytest.approx(0.25) and d[3] == 4


def test_cluster_bootstrap_percentiles_match_a_direct_computation():
    species, _ = _layout(5, 2)
    v = np.repeat([1.0, 2.0, 4.0, 8.0, 16.0], 4)
    mean, lo, hi, n = S.cluster_bootstrap_ci(v, species, n_boot=2000, seed=3, level=0.9)
    m = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    boot = m[np.random.default_rng(3).integers(0, 5, size=(2000, 5))].mean(1)
    assert (lo, hi) == tuple(np.quantile(boot, [0.05, 0.95]))
    assert mean == 6.2 and n == 5


def test_nan_handling():
    species, sample = _layout(3, 2)
    v = np.array([1.0, 1.0, 1.0, 1.0, 2.0, np.nan, 2.0, 2.0, np.nan, np.nan, np.nan, np.nan])
    names, means, n = S.species_means(v, species)
    assert means[:2].tolist() == [1.0, 2.0] and math.isnan(means[2]) and n.tolist() == [4, 3, 0]
    mean, lo, hi, k = S.cluster_bootstrap_ci(v, species, n_boot=100)
    assert k == 2 and mean == 1.5  # the species without values is left out
    b = v + np.linspace(1.0, 2.0, 12)
    b[[0, 4, 5]] = np.nan
    t, p, k = S.species_ttest(v, b, species)
    assert k == 2  # sp2 has no pair; sp0 keeps 3 samples, sp1 two
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_ttest(v[:6], b[:6], species[:6])  # sp0 and 2 samples of sp1, which have no b
    with pytest.raises(ValueError, match="at least 2 species"):
        S.cluster_bootstrap_ci(v[4:], species[4:])  # sp1 and sp2, which has no values


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
        S.cluster_bootstrap_ci(v.reshape(2, 4), species)
    with pytest.raises(ValueError, match="at least 2 species"):
        S.cluster_bootstrap_ci(v[:4], species[:4])
    with pytest.raises(ValueError, match="at least 2 species"):
        S.species_wilcoxon(v[:4], v[:4] + 1, species[:4])
    with pytest.raises(ValueError, match="at least 2 species"):
        S.cluster_bootstrap_diff_ci(v[:4], v[:4], species[:4])
    with pytest.raises(ValueError, match="level"):
        S.cluster_bootstrap_ci(v, species, level=95)
    with pytest.raises(ValueError, match="n_boot"):
        S.cluster_bootstrap_ci(v, species, n_boot=0)
    with pytest.raises(ValueError, match="integers"):
        S.pair_means(v, species, sample.astype(float), 2)


def test_mean_ci():
    x = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    m, lo, hi, n = S.mean_ci(x)
    assert (m, n) == (2.5, 4) and hi - m == pytest.approx(3.182446305 * np.std(x[:4], ddof=1) / 2)
    assert math.isnan(S.mean_ci([1.0])[1]) and S.mean_ci([])[3] == 0
