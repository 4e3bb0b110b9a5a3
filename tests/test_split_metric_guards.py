"""Per-sample metrics (model.metrics) and the assignment of species to splits and folds
(tomodata.store.folds, model.cross_validation), checked against hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from model.cross_validation import _check_folds, _fold_level, _fold_rows, _split_sizes, _stack
from model.metrics import depth_resample, volume_dssim, volume_errors
from tomodata.demo import demo_splits
from tomodata.store.folds import fold_splits


def _ramp_ball(n: int, at_half: float) -> np.ndarray:
    """(n, n, n) float32 densities linear in the distance r from the centre (slope 1), 0.5 at
    r = ``at_half``."""
    c = (2 * np.arange(n) + 1) / n - 1
    w, v, u = np.meshgrid(c, c, c, indexing="ij")
    return np.clip(0.5 + (at_half - np.sqrt(u * u + v * v + w * w)), 0, 1).astype(np.float32)


# ------------------------------------------------------------------------------------ metrics
def test_volume_errors_are_float64_for_float64_volumes():
    """mse is the mean of squared differences in float64: differences below float32's resolution
    (1e-9 on densities near 0.7) are kept, not rounded away."""
    rng = np.random.default_rng(0)
    true = 0.5 + 0.4 * rng.random((2, 4, 5, 6))
    diff = np.stack([np.full((4, 5, 6), 1e-9), np.linspace(-3e-9, 3e-9, 120).reshape(4, 5, 6)])
    l2, mse = volume_errors(true + diff, true)
    want = ((true + diff) - true) ** 2
    np.testing.assert_allclose(mse, want.reshape(2, -1).mean(1), rtol=1e-6)
    np.testing.assert_allclose(l2, np.sqrt(want.reshape(2, -1).mean(1)), rtol=1e-6)


def test_volume_errors_in_row_chunks_pair_each_prediction_with_its_own_truth():
    """``rows`` only bounds the temporaries: each sample's error is against its own truth, whatever
    the chunking."""
    rng = np.random.default_rng(1)
    pred = torch.from_numpy(rng.random((5, 3, 4, 4)).astype(np.float32))
    true = torch.from_numpy(rng.random((5, 3, 4, 4)).astype(np.float32))
    want = ((pred.double() - true.double()) ** 2).reshape(5, -1).mean(1).numpy()
    for rows in (None, 1, 2, 3):
        np.testing.assert_allclose(volume_errors(pred, true, rows=rows)[1], want, rtol=1e-12, err_msg=f"rows={rows}")


def test_volume_dssim_renders_both_volumes_at_the_given_iso():
    """The iso-value reaches both renders: two volumes that agree wherever the density is at least
    0.3 render alike at iso 0.5 (DSSIM 0) and differ at the default iso 0.1."""
    a = _ramp_ball(32, 0.6)
    b = np.where(a >= 0.3, a, 0.0).astype(np.float32)  # the shell between 0.1 and 0.3 removed
    assert volume_dssim(a, b, iso=0.5) == 0.0
    assert volume_dssim(a, b) > 0.05


def test_depth_resample_refuses_no_slices():
    """Zero slices is no slice count: a ValueError naming it, not a torch error."""
    with pytest.raises(ValueError, match="slices must be >= 1"):
        depth_resample(torch.rand(1, 8, 3, 3), 0)


# ------------------------------------------------------------------------------ fold assignment
def test_fold_assignment_is_the_documented_seeded_round_robin_deal():
    """The species are shuffled with numpy's default_rng(seed) and dealt round-robin: the r-th species
    of the shuffle is tested by fold r % K and is val in fold (r - 1) % K (the rule a fold view
    records, so a view made again from the same seed holds out the same species)."""
    names = [f"s{i:02d}" for i in range(11)]
    table = [{"name": n, "species": f"Species {i}"} for i, n in enumerate(names)]
    K, seed = 4, 7
    order = np.random.default_rng(seed).permutation(len(names))
    part = {names[int(g)]: r % K for r, g in enumerate(order)}
    got = fold_splits(table, folds=K, seed=seed)
    for k in range(K):
        want = {n: "test" if part[n] == k else "val" if part[n] == (k + 1) % K else "train" for n in names}
        assert got[k] == want, f"fold {k}"


def test_more_folds_than_species_is_refused_whatever_the_specimen_count():
    """A fold needs a test species of its own: 3 folds over 2 species (of 3 specimens each) is
    refused, as the species, not the specimens, are held out."""
    table = [{"name": f"s{i}", "species": "Canis" if i < 3 else "Felis"} for i in range(6)]
    with pytest.raises(ValueError, match="only 2 species"):
        fold_splits(table, folds=3, seed=0)


def _fold(k: int, test: list[str], every: list[str]) -> dict:
    """What model.cross_validation reads of fold ``k`` of 3 (its _read_fold's dict, made up)."""
    return dict(
        dir=Path(f"fold{k}"), base=Path("base.zarr"), table=[{"name": n} for n in every],
        cv=dict(folds=3, fold=k, seed=0, base_completion="c"), summary=dict(methods=["ours"], eval_species=test),
    )  # fmt: skip


def test_pooling_needs_each_species_tested_by_exactly_one_fold():
    """Pooled folds must test every species once: a species tested by two folds (trained on by the
    third) or by none is refused, naming it."""
    every = ["a", "b", "c", "d"]
    ok = [_fold(0, ["a"], every), _fold(1, ["b", "c"], every), _fold(2, ["d"], every)]
    assert [f["cv"]["fold"] for f in _check_folds(ok[::-1])] == [0, 1, 2]
    twice = [_fold(0, ["a", "b"], every), _fold(1, ["b", "c"], every), _fold(2, ["d"], every)]
    with pytest.raises(ValueError, match="species b is a test species of folds 0 and 1"):
        _check_folds(twice)
    missing = [_fold(0, ["a"], every), _fold(1, ["b"], every), _fold(2, ["d"], every)]
    with pytest.raises(ValueError, match=r"miss \['c'\]"):
        _check_folds(missing)


def test_fold_level_means_each_folds_species_means_not_its_samples():
    """A fold's score is the mean of its test species' means (each species once, whatever its sample
    count; NaN samples left out), and the fold-level tests pair the folds' scores of two methods on the
    samples both have: the plain paired t (scipy) and the corrected resampled t (by hand)."""
    units = np.array(["a"] * 5 + ["b"] + ["c"] * 3 + ["d"] * 2 + ["e"] * 4 + ["f"])
    fold = np.array([0] * 6 + [1] * 5 + [2] * 5)
    ours = np.array([0.1] * 5 + [0.5] + [0.2, 0.2, 0.5] + [0.6] * 2 + [0.3] * 4 + [0.9])
    nn = ours + np.array([0.0] * 5 + [0.2] + [0.1] * 3 + [0.05] * 2 + [0.01] * 4 + [0.4])
    nn[8] = np.nan  # a sample missing in nn: left out of both methods' fold means in the tests
    ours_f = np.array([(0.1 + 0.5) / 2, (0.3 + 0.6) / 2, (0.3 + 0.9) / 2])  # the samples' means differ
    summary, tests = _fold_level({"ours": {"l2": ours}, "nn": {"l2": nn}}, units, fold, ["ours", "nn"], (3.0, 2.0))
    row = next(r for r in summary if r["method"] == "ours")
    lo, hi = stats.t.interval(0.95, 2, loc=ours_f.mean(), scale=stats.sem(ours_f))
    assert (row["mean"], row["ci_low"], row["ci_high"], row["n"]) == pytest.approx((ours_f.mean(), lo, hi, 3))
    x = np.array([0.3, (0.2 + 0.6) / 2, 0.6])  # ours on the samples nn has (c: 0.2 without its 0.5)
    y = np.array([(0.1 + 0.7) / 2, (0.3 + 0.65) / 2, (0.31 + 1.3) / 2])
    d = x - y
    t = next(r for r in tests if r["test"] == "t")
    assert (t["statistic"], t["p"]) == pytest.approx(tuple(stats.ttest_rel(x, y)))
    ct = next(r for r in tests if r["test"] == "corrected t")
    want = d.mean() / math.sqrt((1 / 3 + 2.0 / 3.0) * d.var(ddof=1))
    assert ct["statistic"] == pytest.approx(want) and ct["p"] == pytest.approx(2 * stats.t.sf(abs(want), 2))


def test_corrected_t_sizes_count_held_out_units_not_specimens():
    """n_train and n_test of the corrected resampled t are the held-out units (species) a fold trains
    on and tests, means over the folds: specimens of one species count once."""
    unit_of = {"a1": "A", "a2": "A", "a3": "A", "c1": "C", "c2": "C"}
    folds = [
        {"summary": {"splits": {"train": ["a1", "a2", "a3", "b"]}, "eval_species": ["c1", "c2", "d"]}},
        {"summary": {"splits": {"train": ["c1", "c2", "d"]}, "eval_species": ["a1", "a2", "a3"]}},
    ]
    assert _split_sizes(folds, unit_of) == (2.0, 1.5)  # trains on A, b / C, d; tests C, d / A


def test_folds_csv_mean_is_the_mean_of_the_folds_species_means():
    """folds.csv's per-fold score is the mean of its test species' means (as the fold level), not the
    mean over its samples: a species with 4 samples weighs as much as one with 1."""
    units = np.array(["a"] * 4 + ["b"] + ["c", "d"])
    fold = np.array([0] * 5 + [1] * 2)
    l2 = np.array([0.1] * 4 + [0.6] + [0.2, 0.4])
    folds = [
        {"cv": {"fold": k}, "summary": {"eval_species": sp, "splits": {"val": []}, "checkpoint_step": 1}}
        for k, sp in ((0, ["a", "b"]), (1, ["c", "d"]))
    ]
    rows = _fold_rows(folds, {"ours": {"l2": l2}}, units, fold, ["ours"])
    assert [(r["fold"], r["n_species"]) for r in rows] == [(0, 2), (1, 2)]
    assert [r["mean"] for r in rows] == pytest.approx([0.35, 0.3]), "fold 0's sample mean would be 0.2"


def test_methods_must_be_evaluated_on_the_same_samples_to_be_paired():
    """The pooled per-sample arrays pair methods by position: a method evaluated on other samples
    (another sample index of a species) is refused, not silently paired with the wrong ones."""

    def fold(k, rows):
        return {"cv": {"fold": k}, "metrics": pd.DataFrame(rows, columns=["method", "species", "sample", "l2"])}

    good = [fold(0, [("ours", "a", 0, 0.1), ("nn", "a", 0, 0.2), ("ours", "a", 1, 0.3), ("nn", "a", 1, 0.4)])]
    per, species, sample, folds = _stack(good, ["ours", "nn"])
    assert per["nn"]["l2"].tolist() == [0.2, 0.4] and sample.tolist() == [0, 1] and folds.tolist() == [0, 0]
    bad = [fold(0, [("ours", "a", 0, 0.1), ("nn", "a", 1, 0.2), ("ours", "a", 1, 0.3), ("nn", "a", 0, 0.4)])]
    with pytest.raises(ValueError, match="method nn was evaluated on other samples than ours"):
        _stack(bad, ["ours", "nn"])


def test_pooling_refuses_folds_evaluated_with_other_settings():
    """Folds pooled into one result must be evaluated alike: another iso-value (DSSIM's renders) in
    one fold is refused, naming the setting."""
    every = ["a", "b", "c"]
    folds = [_fold(k, [n], every) for k, n in enumerate(every)]
    for f in folds:
        f["summary"]["settings"] = {"iso": 0.1, "max_samples": 8}
    _check_folds(folds)
    folds[2]["summary"]["settings"] = {"iso": 0.2, "max_samples": 8}
    with pytest.raises(ValueError, match=r"differ in settings\.iso \(0\.2 vs 0\.1\)"):
        _check_folds(folds)


# ------------------------------------------------------------------------------------ store splits
def test_demo_splits_put_the_last_species_in_test_and_those_before_in_val():
    """The demo's rule, written out: the last ``test`` species are test, the ``val`` before them val,
    the rest train (adding test species leaves the earlier ones' splits unchanged)."""
    assert demo_splits(6, val=2, test=1) == ["train", "train", "train", "val", "val", "test"]
    assert demo_splits(4, val=1) == ["train", "train", "train", "val"]
    assert demo_splits(7, val=2, test=2)[:5] == demo_splits(5, val=2)
