"""Guards and documented rules of the NN search (model.search), the Oracle (model.oracle) and fusion
(model.fusion) that the larger tests (tests/test_evaluate.py, tests/test_fusion*.py) leave open:
found by mutating the modules (helper-102) and checked here on tiny arrays against brute force and
hand-computed values, without a store.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import model.oracle as OR
import model.search as E
from model.fusion import fuse, xray_at
from model.oracle import oracle_search
from model.search import (
    bounded_search,
    coarse_cells,
    coarse_factors,
    coarse_features,
    nearest_images,
    nearest_images_bounded,
)


class ArraySource:
    """The interface of model.sources.ViewSource / ImageSource over an in-memory (N, D, S, S) stack."""

    def __init__(self, arr):
        self.arr = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        self.device = torch.device("cpu")
        self.image_size = self.arr.shape[-1]

    def __len__(self) -> int:
        return self.arr.shape[0]

    def views(self, g, *, size: int, depth: int) -> torch.Tensor:
        assert (depth, size, size) == tuple(self.arr.shape[1:])
        return self.arr[torch.from_numpy(np.asarray(g, dtype=np.int64))].clone()


def _brute(queries, train):
    """(index, squared distance) of the nearest training sample, ties to the lowest index (float64)."""
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    t = np.asarray(train, np.float64).reshape(len(train), -1)
    d = ((q[:, None] - t[None]) ** 2).sum(-1)
    return d.argmin(1), d.min(1)  # argmin: the first minimal index


def _stack(seed, n, shape, scale=1.0):
    return (np.random.default_rng(seed).random((n, *shape)) * scale).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# NN: brute force (nearest_images)
# --------------------------------------------------------------------------------------------------


def test_nearest_images_refuses_an_empty_training_set_and_mismatched_pixels():
    q = _stack(0, 2, (4,))
    with pytest.raises(ValueError, match="no training images"):
        nearest_images(q, lambda: iter([]))
    with pytest.raises(ValueError, match="pixels"):
        nearest_images(q, lambda: iter([(0, _stack(1, 3, (5,)))]))


def test_nearest_images_recomputes_the_winners_distance_directly():
    """The expansion ‖a‖² + ‖b‖² − 2a·b cancels catastrophically on large offsets; the reported
    distance is the direct Σ (a − b)² of the winner (docstring), exactly 0 for an identical image."""
    rng = np.random.default_rng(2)
    train = 3000.0 + rng.random((6, 3, 3)) * 1e-2  # float64: the products are not exact
    queries = np.concatenate([train[[4]], 3000.0 + rng.random((3, 3, 3)) * 1e-2])
    want_i, want_d = _brute(queries, train)
    idx, d2 = nearest_images(queries, lambda: iter([(0, train[:4]), (4, train[4:])]), query_block=2)
    assert idx.tolist() == want_i.tolist() and d2[0] == 0.0
    np.testing.assert_allclose(d2, want_d, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------
# lower-bound features
# --------------------------------------------------------------------------------------------------


def test_coarse_factors_are_the_smallest_dividing_factors_within_coarse_cells():
    for n in range(1, 41):
        for coarse in range(1, 12):
            want = min(f for f in range(1, n + 1) if n % f == 0 and n // f <= coarse)
            assert coarse_factors((n,), coarse) == (want,), (n, coarse)
    assert coarse_factors((10, 12, 7), 4) == (5, 3, 7)
    assert coarse_cells((10, 12, 7), 4) == 2 * 4 * 1
    for bad in (0, -3):
        with pytest.raises(ValueError, match="coarse must be >= 1"):
            coarse_factors((8, 8, 8), bad)


def test_coarse_features_are_block_means_times_sqrt_f_and_deviation_norms():
    x = np.random.default_rng(4).random((2, 2, 4, 6))
    f = (1, 2, 3)
    got = coarse_features(torch.from_numpy(x.astype(np.float32)), f).double().numpy()
    assert got.shape == (2, 2 * 2 * 2 * 2)
    blocks = x.astype(np.float32).astype(np.float64).reshape(2, 2, 1, 2, 2, 2, 3)
    mean = blocks.mean(axis=(2, 4, 6), keepdims=True)
    rho = np.sqrt(((blocks - mean) ** 2).sum(axis=(2, 4, 6)))
    want = np.concatenate([mean.reshape(2, -1) * math.sqrt(6.0), rho.reshape(2, -1)], 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="do not divide"):
        coarse_features(torch.zeros(1, 2, 4, 6), (1, 3, 3))


# --------------------------------------------------------------------------------------------------
# bounded search
# --------------------------------------------------------------------------------------------------


def test_bounded_search_breaks_exact_ties_to_the_lowest_index():
    train = _stack(5, 12, (2, 4, 4))
    for lo, hi in ((1, 9), (3, 10), (0, 11)):
        train[hi] = train[lo]
    src = ArraySource(train)
    queries = torch.from_numpy(np.concatenate([train[[9, 10, 11]], train[[1, 3, 0]] + 0.01]))
    want_i, want_d = _brute(queries.numpy(), train)
    assert want_i.tolist() == [1, 3, 0, 1, 3, 0]
    for coarse, k, chunk in ((1, 2, 1), (2, 3, 2), (4, 12, 5)):
        res = bounded_search(queries, src, coarse=coarse, k=k, chunk=chunk)
        assert res.index.tolist() == want_i.tolist(), (coarse, k, chunk)
        np.testing.assert_allclose(res.dist2, want_d, rtol=1e-9, atol=1e-12)
        assert res.certified.all()


def test_bounded_search_evaluates_each_training_sample_at_most_once():
    """A loose bound (one cell) sends most samples to the fallback pass; the ones the shortlist
    already compared are not compared again: ``evaluated`` never exceeds the training set."""
    train = _stack(6, 10, (2, 4, 4))
    src = ArraySource(train)
    queries = torch.from_numpy(_stack(7, 4, (2, 4, 4)))
    res = bounded_search(queries, src, coarse=1, k=2, chunk=1)
    want_i, want_d = _brute(queries.numpy(), train)
    assert res.index.tolist() == want_i.tolist() and res.certified.all()
    assert res.fallback.any() and (res.evaluated <= len(src)).all()


def test_at_full_resolution_the_shortlist_certifies_without_fallback():
    """One voxel per cell: the lower bound is the distance itself, so the nearest (first in LB order)
    is certified by the next LB after one exact comparison; no fallback pass."""
    train = _stack(8, 9, (1, 4, 4))
    src = ArraySource(train)
    queries = torch.from_numpy(_stack(9, 5, (1, 4, 4)))
    want_i, _ = _brute(queries.numpy(), train)
    res = bounded_search(queries, src, coarse=4, k=1, chunk=1)
    assert res.index.tolist() == want_i.tolist() and res.certified.all()
    assert not res.fallback.any() and (res.evaluated == 1).all()


def test_max_evaluated_caps_the_exact_comparisons_and_certifies_what_the_bound_proves():
    train = _stack(10, 10, (2, 4, 4))
    src = ArraySource(train)
    queries = torch.from_numpy(_stack(11, 4, (2, 4, 4)))
    want_i, want_d = _brute(queries.numpy(), train)
    for cap in (1, 3):
        res = bounded_search(queries, src, coarse=1, k=5, chunk=2, max_evaluated=cap)
        assert (res.evaluated <= cap).all() and (res.evaluated >= 1).all(), cap
        assert (res.dist2 >= want_d - 1e-9).all()
    # full resolution: the one permitted comparison is also the proof
    exact = ArraySource(train[:, :1])
    q1 = queries[:, :1].contiguous()
    res = bounded_search(q1, exact, coarse=4, k=3, chunk=1, max_evaluated=1)
    assert res.certified.all() and (res.evaluated == 1).all()
    assert res.index.tolist() == _brute(q1.numpy(), train[:, :1])[0].tolist()


def test_bounded_search_refuses_features_of_another_training_set():
    train = _stack(12, 6, (1, 4, 4))
    src = ArraySource(train)
    factors = coarse_factors((1, 4, 4), 2)
    feats = coarse_features(torch.from_numpy(train[:5]), factors)
    with pytest.raises(ValueError, match="training features"):
        bounded_search(torch.from_numpy(train[:1]), src, coarse=2, train_features=feats)
    with pytest.raises(ValueError, match="training features"):
        nearest_images_bounded(train[:1, 0], src, coarse=2, train_features=feats)


def test_bench_nn_scales_each_measured_cost_to_the_papers_sizes(monkeypatch):
    """bench_nn's docstring: brute force per (query, training image, pixel), features per (training
    image, pixel), lower bounds per (query, training image), exact comparisons per (query, pixel);
    the held-out x-rays are the 'val' species (else 'test')."""
    imgs = {n: _stack(20 + i, m, (1, 4, 4)) for i, (n, m) in enumerate([("a", 5), ("b", 4), ("v", 3), ("t", 6)])}

    class Store:
        def species_names(self, split):
            return {"train": ["a", "b"], "val": ["v"], "test": ["t"]}[split]

    class Images(ArraySource):
        def __init__(self, ds, names, *, device="cpu"):
            super().__init__(np.concatenate([imgs[n] for n in names]))

        def cache(self, **kw):
            return True

    monkeypatch.setattr(E, "open_store", lambda store: Store())
    monkeypatch.setattr(E, "ImageSource", Images)
    r = E.bench_nn("store", queries=10, coarse=2, k=2)
    N, Q, P = 9, 3, 16
    assert (r["n_train"], r["n_queries"], r["image_size"], r["cells"]) == (N, Q, 4, 4) and r["same"]
    ps, est, t = E.PAPER_NN_SCALE, r["paper_estimate_s"], r["bound_timings"]
    approx = pytest.approx
    assert est["brute"] == approx(r["brute_s"] / (Q * N * P) * ps["n_queries"] * ps["n_train"] * ps["pixels"])
    assert est["features"] == approx(r["features_s"] / (N * P) * ps["n_train"] * ps["pixels"])
    assert est["bounds"] == approx(t["bound_s"] / (Q * N) * ps["n_queries"] * ps["n_train"])
    assert est["exact"] == approx(t["exact_s"] / (Q * P) * ps["n_queries"] * ps["pixels"])


# --------------------------------------------------------------------------------------------------
# Oracle
# --------------------------------------------------------------------------------------------------


def test_oracle_finds_an_all_zero_training_volume_for_an_all_zero_query():
    """Zero error allowance (both norms 0): the exact match must survive the scan's ``lo <= upper``."""
    train = _stack(13, 5, (2, 3, 3))
    train[3] = 0.0
    src = ArraySource(train)
    queries = torch.zeros(2, 2, 3, 3)
    queries[1] = torch.from_numpy(train[1])
    res = oracle_search(lambda ix: queries[ix], 2, src, size=3, depth=2)
    assert res.index.tolist() == [3, 1] and res.dist2.tolist() == [0.0, 0.0]


def test_oracle_counts_every_tied_candidate_it_reranks():
    """``evaluated``: the training samples the scan could not rule out; three exact copies of the
    nearest can never be told apart by the scan, so each query re-ranks at least 3 (the lowest wins)."""
    train = _stack(14, 8, (2, 4, 4))
    train[5] = train[2]
    train[7] = train[2]
    src = ArraySource(train)
    queries = torch.from_numpy(np.stack([train[2] + 0.001, train[2]]))
    res = oracle_search(lambda ix: queries[ix], 2, src, size=4, depth=2, block=3)
    assert res.index.tolist() == [2, 2] and (res.evaluated >= 3).all() and (res.evaluated <= len(src)).all()


def test_oracle_guards_and_the_empty_query_set():
    train = _stack(15, 4, (2, 4, 4))
    src = ArraySource(train)
    with pytest.raises(ValueError, match="training samples"):
        oracle_search(lambda ix: torch.zeros(len(ix), 2, 4, 4), 1, ArraySource(train[:0]), size=4, depth=2)
    with pytest.raises(ValueError, match="query_views returned"):  # the wrong grid, right count
        oracle_search(lambda ix: torch.zeros(len(ix), 2, 4, 3), 2, src, size=4, depth=2)
    none = oracle_search(lambda ix: torch.zeros(len(ix), 2, 4, 4), 0, src, size=4, depth=2)
    assert none.passes == 0 and none.index.size == 0 and none.evaluated.size == 0


def test_oracle_scan_error_is_the_documented_bound():
    """Module docstring: ε = 2.02 γ_m ‖q‖ ‖t‖ + 4 n 2⁻⁵³ (‖q‖ + ‖t‖)², γ_m = m·u / (1 − m·u), u = 2⁻²⁴."""
    qn = torch.tensor([0.0, 1.5, 40.0], dtype=torch.float64)
    tn = torch.tensor([2.0, 0.0, 7.0, 1e3], dtype=torch.float64)
    for m, n in ((1, 8), (1024, 4096), (4096, 10_000)):
        u = 2.0**-24
        gamma = m * u / (1 - m * u)
        want = np.array([[2.02 * gamma * a * b + 4 * n * 2.0**-53 * (a + b) ** 2 for b in tn] for a in qn])
        np.testing.assert_allclose(OR.scan_error(qn, tn, chunk=m, n=n).numpy(), want, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------------------------------
# fusion
# --------------------------------------------------------------------------------------------------


def test_xray_at_its_own_size_clips_tiny_excursions_to_the_unit_range():
    x = np.array([[-5e-6, 0.3], [0.7, 1.0 + 5e-6]])
    got = xray_at(x, (2, 2))
    assert got.min() >= 0.0 and got.max() <= 1.0
    np.testing.assert_array_equal(got, np.clip(x, 0.0, 1.0))


@pytest.mark.parametrize("kw", [dict(beta=True), dict(chi=True)])
def test_a_bool_beta_or_chi_is_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        fuse(np.full((2, 2, 2), 0.5), np.full((2, 2), 0.5), **kw)


def test_removal_falls_back_to_proportional_scaling_when_the_weights_underflow():
    """Module docstring: should µ̄^β underflow to 0 for every entry (here β = 20 on densities ~1e-17),
    a second round with weights µ̄ (plain proportional scaling) takes over; the column still sums to T."""
    D, chi, beta = 4, 10.0, 20.0
    col = np.array([1.0, 2.0, 3.0, 4.0]) * 1e-17
    assert (col**beta == 0).all()
    coarse = np.broadcast_to(col[:, None, None], (D, 2, 2)).astype(np.float32)
    S = coarse[:, 0, 0].astype(np.float64).sum()
    T = S / 2
    xray = np.full((2, 2), -np.expm1(-chi * T / D))  # asks for half the predicted column sum
    got = fuse(coarse, xray, beta=beta, chi=chi).astype(np.float64)
    np.testing.assert_allclose(got.sum(0), T, rtol=1e-6)
    np.testing.assert_allclose(got[:, 0, 0], coarse[:, 0, 0].astype(np.float64) / 2, rtol=1e-6)


def test_nearest_images_breaks_ties_across_blocks_to_the_lowest_index():
    """Equal training images in two blocks: the earlier block's (the lower global index) wins, as
    within a block (helper-105: `<` → `<=` between blocks survived)."""
    rng = np.random.default_rng(5)
    img = rng.random((1, 3, 3))
    blocks = [(0, np.concatenate([rng.random((2, 3, 3)) + 2, img])), (3, np.concatenate([img, img]))]
    idx, d = nearest_images(img, lambda: iter(blocks))
    assert idx.tolist() == [2] and d.tolist() == [0.0]
