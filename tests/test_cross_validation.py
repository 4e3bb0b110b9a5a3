"""Cross-validation over species: the fold assignment, read-only fold views of a store
(tomodata.store.folds, tomo cv-view) and the pooled result of the folds (model.cross_validation,
tomo cv-summary), with the pooled statistics recomputed here from the per-sample metrics. Training
and evaluating on views, through the workflow: tests/test_workflow.py::test_full_pipeline_tiny."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from tiny_runs import build_demo

from model.cli import main
from model.cross_validation import _fold_level, held_out_units, pool_folds
from model.cv_report import cv_report
from model.eval_source import store_content
from model.stats import holm
from tomodata.store import create_store, finalize_store, open_store, validate_store, write_species
from tomodata.store.folds import fold_groups, fold_splits, make_fold_view


def _table(labels):
    return [{"name": f"s{i:02d}", "species": lab} for i, lab in enumerate(labels)]


# ------------------------------------------------------------------------------------ assignment
@pytest.mark.parametrize("n, folds", [(28, 7), (51, 5), (9, 3), (10, 4)])
def test_every_species_is_test_once_and_val_once(n, folds):
    table = _table([f"species {i}" for i in range(n)])
    splits = fold_splits(table, folds=folds, seed=3)
    assert len(splits) == folds
    for name in (e["name"] for e in table):
        roles = [s[name] for s in splits]
        assert roles.count("test") == 1 and roles.count("val") == 1 and roles.count("train") == folds - 2
    sizes = [sum(v == "test" for v in s.values()) for s in splits]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    for k, s in enumerate(splits):  # fold k's val species are fold k+1's test species
        nxt = splits[(k + 1) % folds]
        assert {n for n, v in s.items() if v == "val"} == {n for n, v in nxt.items() if v == "test"}


def test_specimens_of_one_species_stay_together():
    labels = ["Mus musculus", "mus musculus ", "Rattus", "Felis", "Canis", "Canis", "Ursus"]
    table = _table(labels)
    assert fold_groups(table) == [["s00", "s01"], ["s02"], ["s03"], ["s04", "s05"], ["s06"]]
    for s in fold_splits(table, folds=5, seed=1):
        assert s["s00"] == s["s01"] and s["s04"] == s["s05"]


def test_assignment_is_seeded():
    table = _table([f"species {i}" for i in range(20)])
    assert fold_splits(table, folds=4, seed=0) == fold_splits(table, folds=4, seed=0)
    assert fold_splits(table, folds=4, seed=0) != fold_splits(table, folds=4, seed=1)


@pytest.mark.parametrize(
    "folds, seed, match",
    [(2, 0, ">= 3"), (0, 0, ">= 3"), (True, 0, ">= 3"), (6, 0, "only 5 species"), (3, -1, "non-negative")],
)
def test_bad_fold_counts_and_seeds(folds, seed, match):
    with pytest.raises(ValueError, match=match):
        fold_splits(_table([f"sp {i}" for i in range(5)]), folds=folds, seed=seed)


# ------------------------------------------------------------------------------------ fold views
@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_demo(tmp_path_factory.mktemp("cv") / "demo", species=6, val=1, test=1, views=4, size=32)


def test_view_reads_the_base_data_with_the_folds_splits(base, tmp_path):
    view = make_fold_view(base, tmp_path / "fold1", folds=3, fold=1, seed=5)
    assert (view / "species").is_symlink() and not Path(str((view / "species").readlink())).is_absolute()
    ds, b = open_store(view), open_store(base)
    want = fold_splits(b.attrs["species"], folds=3, seed=5)[1]
    for split in ("train", "val", "test"):
        assert ds.species_names(split) == [n for n in b.species_names() if want[n] == split]
        assert ds.attrs["splits"][split] == ds.species_names(split)
    name = ds.species_names("test")[0]
    assert np.array_equal(ds.images(name, np.arange(8)), b.images(name, np.arange(8)))
    assert ds.attrs["cross_validation"]["base_splits"] == b.attrs["splits"]
    assert validate_store(view).ok
    # both folders moved together: the relative link still finds the data
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(base.parent, moved / base.parent.name, symlinks=True)
    make_fold_view(moved / base.parent.name / base.name, moved / "v", folds=3, fold=0)
    shutil.move(str(moved), str(tmp_path / "moved2"))
    assert open_store(tmp_path / "moved2" / "v").species_names("test")


def test_view_is_read_only_and_refused_once_the_base_changes(base, tmp_path):
    work = tmp_path / "b"
    shutil.copytree(base.parent, work)
    store = work / base.name
    view = make_fold_view(store, tmp_path / "v", folds=3, fold=0)
    with pytest.raises(ValueError, match="read-only fold view"):
        finalize_store(view)
    with pytest.raises(ValueError, match="fold view itself"):
        make_fold_view(view, tmp_path / "w", folds=3, fold=0)
    st = open_store(store).settings
    for how in ({"update": True}, {"overwrite": True}):  # an update would write through the link
        with pytest.raises(FileExistsError, match="fold view"):
            create_store(view, st, species=open_store(store).attrs["species"], **how)
    with pytest.raises(ValueError, match="read-only fold view"):
        write_species(view, "procedural_00", volume=np.zeros((32,) * 3), rotations=np.zeros((4, 3, 3)), images=[])
    finalize_store(store)  # finalised again with the same data: the view still holds
    assert open_store(view).species_names("test")
    meta = json.loads((store / "zarr.json").read_text())  # a species rendered again: other checksums
    done = meta["attributes"]["completion"]["species_sha256"]
    done[next(iter(done))]["images"] = "0" * 64
    (store / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="finalised again"):
        open_store(view)
    assert "finalised again" in " ".join(validate_store(view).errors)  # tomo validate says so too
    make_fold_view(store, view, folds=3, fold=0)  # made again: readable
    assert open_store(view).species_names("test")
    shutil.rmtree(store)
    with pytest.raises(ValueError, match="is gone"):
        open_store(view)


def test_view_replaces_only_views(base, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not a fold view"):
        make_fold_view(base, tmp_path / "data", folds=3, fold=0)
    for inside in (base, base / "cv0", base / "species" / "zz", base.parent):  # the store's folder, or around it
        with pytest.raises(ValueError, match="beside its store"):
            make_fold_view(base, inside, folds=3, fold=0)
    assert (tmp_path / "data" / "keep.txt").read_text() == "x" and validate_store(base).ok
    with pytest.raises(ValueError, match=r"fold must be in \[0, 3\)"):
        make_fold_view(base, tmp_path / "v", folds=3, fold=3)


def test_cli_cv_view(base, tmp_path, capsys):
    assert main(["cv-view", str(base), "--folds", "3", "--fold", "2", "-o", str(tmp_path / "v")]) == 0
    assert "fold 2 of 3: 2 train, 2 val, 2 test species" in capsys.readouterr().out
    assert main(["cv-view", str(base), "--folds", "2", "--fold", "0", "-o", str(tmp_path / "w")]) == 2
    assert ">= 3" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ pooling
METHODS = ["ours", "nn", "mean"]


def _fake_eval(view: Path, out: Path, rng, shift: float) -> None:
    """An evaluation folder of the fold view ``view`` with made-up per-sample metrics (the pooling
    reads summary.json and metrics.csv only)."""
    ds = open_store(view)
    test = ds.species_names("test")
    seed = int(rng.integers(2**31))  # this fold's
    rows = []
    for i, (m, bias) in enumerate(zip(METHODS, (0.0, 0.01, 0.02))):
        levels = np.random.default_rng(seed).uniform(0.03, 0.06, len(test))  # the species' levels: shared
        r = np.random.default_rng([seed, i])  # each method's own noise
        for name, species_level in zip(test, levels):
            b = bias * r.uniform(0.5, 1.5)
            level = species_level + b + shift
            for s in range(4):
                rows.append(
                    dict(
                        method=m, species=name, sample=s, view=s // 2, mirrored=bool(s % 2), view_class="side",
                        l2=level + r.normal(0, 0.003), mse=(level + r.normal(0, 0.003)) ** 2,
                        dssim=0.1 + b + r.normal(0, 0.01),
                    )
                )  # fmt: skip
    out.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out / "metrics.csv", index=False)
    summary = dict(
        store=str(view), eval_split="test", methods=METHODS, eval_species=test, splits=ds.attrs["splits"],
        n_views_evaluated=2 * len(test), image_size=32, target_shape=[16, 16, 16], checkpoint="c.pt",
        checkpoint_step=2, store_content=store_content(ds), store_resolved=str(view.resolve()),
    )  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary))


def _fold_evals(base: Path, tmp_path: Path, n_folds: int, rng) -> list[Path]:
    """The evaluation folders (made up: :func:`_fake_eval`) of ``n_folds`` fold views of ``base``."""
    dirs = []
    for k in range(n_folds):
        view = make_fold_view(base, tmp_path / f"fold{k}" / "dataset.zarr", folds=n_folds, fold=k, seed=2)
        _fake_eval(view, tmp_path / f"fold{k}" / "eval", rng, shift=0.002 * k)
        dirs.append(tmp_path / f"fold{k}" / "eval")
    return dirs


@pytest.fixture()
def folds(base, tmp_path):
    return _fold_evals(base, tmp_path, 3, np.random.default_rng(0))


def test_pooled_statistics_match_a_direct_computation(folds, tmp_path):
    res = pool_folds(folds[::-1], tmp_path / "cv")  # any order
    m = pd.concat([pd.read_csv(d / "metrics.csv").assign(fold=k) for k, d in enumerate(folds)])
    sp = m.groupby(["method", "species"])["l2"].mean().unstack(0)
    assert len(sp) == 6 and res["n_species"] == 6
    got = res["means"]["species"]["ours"]["l2"]
    half = stats.t.ppf(0.975, 5) * sp["ours"].std(ddof=1) / np.sqrt(6)
    assert got["mean"] == pytest.approx(sp["ours"].mean()) and got["n"] == 6
    assert got["ci_high"] - got["mean"] == pytest.approx(half)
    tests = pd.read_csv(tmp_path / "cv" / "tests.csv")
    row = tests.query(
        "metric == 'l2' and method_a == 'ours' and method_b == 'nn' and level == 'species' and test == 't'"
    )
    assert row["p"].item() == pytest.approx(stats.ttest_rel(sp["ours"], sp["nn"]).pvalue)
    fold_means = m.groupby(["method", "fold", "species"])["l2"].mean().groupby(["method", "fold"]).mean().unstack(0)
    fold_rows = tests.query("metric == 'l2' and method_a == 'ours' and method_b == 'nn' and level == 'fold'")
    row = fold_rows.query("test == 't'")
    assert row["p"].item() == pytest.approx(stats.ttest_rel(fold_means["ours"], fold_means["nn"]).pvalue)
    assert row["n"].item() == 3 and np.isfinite(row["p_holm"].item())
    # the corrected resampled t: each fold trains on 2 species and tests 2 (6 species, 3 folds)
    assert res["fold_sizes"] == {"n_train": 2.0, "n_test": 2.0}
    d = fold_means["ours"] - fold_means["nn"]
    t = d.mean() / np.sqrt((1 / 3 + 2 / 2) * d.var(ddof=1))
    row = fold_rows.query("test == 'corrected t'")
    assert row["statistic"].item() == pytest.approx(t) and row["p"].item() == pytest.approx(2 * stats.t.sf(abs(t), 2))
    assert row["p"].item() > fold_rows.query("test == 't'")["p"].item() and np.isfinite(row["p_holm"].item())
    summary = pd.read_csv(tmp_path / "cv" / "summary.csv")
    assert list(summary["level"].unique()) == ["species", "fold", "sample"]
    species = pd.read_csv(tmp_path / "cv" / "species.csv")
    assert set(species["fold"]) == {0, 1, 2} and species.groupby("species")["fold"].nunique().max() == 1
    folds_csv = pd.read_csv(tmp_path / "cv" / "folds.csv")
    assert set(folds_csv["fold"]) == {0, 1, 2}
    # the species of the store's own val split (settings were chosen on them) left out in a second result
    assert res["base_splits"] == {"train": [f"procedural_0{i}" for i in range(4)], "val": ["procedural_04"],
                                  "test": ["procedural_05"]}  # fmt: skip
    assert res["without_base_val"]["means"]["species"]["ours"]["l2"]["n"] == 5
    assert res["base_train_only"]["species"] == [f"procedural_0{i}" for i in range(4)]
    assert json.loads((tmp_path / "cv" / "summary.json").read_text())["folds"] == 3


def test_corrected_t_takes_each_folds_train_and_test_counts(tmp_path_factory, tmp_path):
    """8 species in 4 folds: each fold trains on 4 species, tests 2 and validates on 2, so the corrected
    resampled t's factor 1/K + n_test/n_train is 1/4 + 2/4 (helper-82: with 6 species in 3 folds,
    train, test and val are all 2, and swapped counts or val counted as train passed)."""
    base = build_demo(tmp_path_factory.mktemp("cv8") / "demo", species=8, val=1, test=1, views=4, size=32)
    dirs = _fold_evals(base, tmp_path, 4, np.random.default_rng(1))
    res = pool_folds(dirs, tmp_path / "cv")
    assert res["fold_sizes"] == {"n_train": 4.0, "n_test": 2.0}
    m = pd.concat([pd.read_csv(d / "metrics.csv").assign(fold=k) for k, d in enumerate(dirs)])
    fold_means = m.groupby(["method", "fold", "species"])["l2"].mean().groupby(["method", "fold"]).mean().unstack(0)
    d = fold_means["ours"] - fold_means["nn"]
    t = d.mean() / np.sqrt((1 / 4 + 2 / 4) * d.var(ddof=1))
    tests = pd.read_csv(tmp_path / "cv" / "tests.csv")
    row = tests.query("metric == 'l2' and method_a == 'ours' and method_b == 'nn' and test == 'corrected t'")
    assert row["statistic"].item() == pytest.approx(t) and row["p"].item() == pytest.approx(2 * stats.t.sf(abs(t), 3))


def test_dssim_gauss_is_pooled_where_every_fold_has_it_and_joins_the_claims_holm_family(folds, tmp_path):
    """Fold evaluations made before dssim_gauss existed pool without it; with it in every fold it is
    tabulated, and Holm runs over the first method's comparisons in l2, dssim and dssim_gauss together."""
    rng = np.random.default_rng(5)
    for d in folds[:2]:  # two of three folds have it: left out
        m = pd.read_csv(d / "metrics.csv")
        m.assign(dssim_gauss=m["dssim"] + rng.normal(0, 0.01, len(m))).to_csv(d / "metrics.csv", index=False)
    res = pool_folds(folds, tmp_path / "some")
    assert "dssim_gauss" not in res["means"]["species"]["ours"]
    m = pd.read_csv(folds[2] / "metrics.csv")
    m.assign(dssim_gauss=m["dssim"] + rng.normal(0, 0.01, len(m))).to_csv(folds[2] / "metrics.csv", index=False)
    res = pool_folds(folds, tmp_path / "all")
    assert "dssim_gauss" in res["means"]["species"]["ours"] and "dssim_gauss" in res["means"]["fold"]["ours"]
    tests = pd.read_csv(tmp_path / "all" / "tests.csv")
    for level, test in (("species", "t"), ("fold", "corrected t")):
        fam = tests[(tests.method_a == "ours") & (tests.level == level) & (tests.test == test)]
        fam = fam[fam.metric != "mse"]
        assert sorted(fam["metric"].unique()) == ["dssim", "dssim_gauss", "l2"]
        np.testing.assert_allclose(fam["p_holm"], holm(fam["p"].to_numpy()))
    folds_csv = pd.read_csv(tmp_path / "all" / "folds.csv")
    assert set(folds_csv["metric"]) == {"l2", "dssim", "dssim_gauss"}


def test_cli_prints_the_means_and_the_first_methods_tests(folds, tmp_path, capsys):
    assert main(["cv-summary", *map(str, folds), "-o", str(tmp_path / "cv")]) == 0
    out = capsys.readouterr().out
    tests = pd.read_csv(tmp_path / "cv" / "tests.csv").query("metric == 'l2' and method_a == 'ours'")
    species = tests.query("method_b == 'nn' and level == 'species' and test == 't'")["p_holm"].item()
    fold = tests.query("method_b == 'nn' and level == 'fold' and test == 'corrected t'")["p_holm"].item()
    assert "3 folds, 6 species each tested once" in out and "corrected t on the folds" in out
    assert f"nn {species:.2g} / {fold:.2g}" in out.split("l2     ", 1)[1].splitlines()[0]


def test_pooling_refuses_what_is_not_every_fold_once(folds, base, tmp_path):
    with pytest.raises(ValueError, match=r"folds 0..2 are needed once each, got folds \[0, 1\]"):
        pool_folds(folds[:2], tmp_path / "a")
    with pytest.raises(ValueError, match=r"got folds \[0, 0, 1, 2\]"):
        pool_folds([folds[0], *folds], tmp_path / "b")
    s = json.loads((folds[1] / "summary.json").read_text())
    s["eval_split"] = "val"
    (folds[1] / "summary.json").write_text(json.dumps(s))
    with pytest.raises(ValueError, match="a fold's result is its test split"):
        pool_folds(folds, tmp_path / "c")
    s["eval_split"], s["store"] = "test", str(base)
    s.pop("store_resolved")  # an older summary: the store as given
    (folds[1] / "summary.json").write_text(json.dumps(s))
    with pytest.raises(ValueError, match="not a fold view"):
        pool_folds(folds, tmp_path / "d")
    make_fold_view(base, tmp_path / "other", folds=3, fold=1, seed=9)  # another seed's fold 1
    s["store"] = str(tmp_path / "other")
    (folds[1] / "summary.json").write_text(json.dumps(s))
    s["splits"] = open_store(tmp_path / "other").attrs["splits"]  # as if evaluated there
    (folds[1] / "summary.json").write_text(json.dumps(s))
    with pytest.raises(ValueError, match="differ in seed"):
        pool_folds(folds, tmp_path / "f")


def test_pooling_refuses_views_made_again_and_species_without_samples(folds, base, tmp_path):
    make_fold_view(base, folds[1].parent / "dataset.zarr", folds=3, fold=1, seed=11)  # another seed since
    with pytest.raises(ValueError, match="other splits or data than when it was evaluated"):
        pool_folds(folds, tmp_path / "a")
    make_fold_view(base, folds[1].parent / "dataset.zarr", folds=3, fold=1, seed=2)
    m = pd.read_csv(folds[2] / "metrics.csv")
    gone = m["species"].iloc[0]
    m[m["species"] != gone].to_csv(folds[2] / "metrics.csv", index=False)
    with pytest.raises(ValueError, match=f"test species \\['{gone}'\\] have no evaluated samples"):
        pool_folds(folds, tmp_path / "b")


def test_unit_ids_never_collide():
    """A species label that is also another specimen's name gets its own id (helper-64: two units
    were pooled as one species)."""
    table = [dict(name="m1", species="BALB"), dict(name="m2", species="balb"), dict(name="BALB", species="other")]
    assert held_out_units(table) == {"m1": "species:BALB", "m2": "species:BALB", "BALB": "BALB"}
    table.append(dict(name="species:BALB", species=""))
    with pytest.raises(ValueError, match="cannot name its unit"):
        held_out_units(table)


def test_units_are_species_labels_and_folds_may_differ_in_size(tmp_path):
    """Two specimens of one species label are one held-out unit (n counts labels); 4 folds of 5 units
    test 2, 1, 1 and 1 units: pooled all the same."""
    store = build_demo(tmp_path / "d", species=6, val=1, test=1, views=4, size=32)
    meta = json.loads((store / "zarr.json").read_text())
    for e, label in zip(meta["attributes"]["species"], ["A", "a", "B", "C", "D", "E"]):
        e["species"] = label
    (store / "zarr.json").write_text(json.dumps(meta))
    table = open_store(store).attrs["species"]
    units = held_out_units(table)
    assert units["procedural_00"] == units["procedural_01"] == "A" and units["procedural_02"] == "procedural_02"
    dirs = []
    for k in range(4):
        view = make_fold_view(store, tmp_path / f"f{k}" / "dataset.zarr", folds=4, fold=k, seed=0)
        _fake_eval(view, tmp_path / f"f{k}" / "eval", np.random.default_rng(k), shift=0.001 * k)
        dirs.append(tmp_path / f"f{k}" / "eval")
    res = pool_folds(dirs, tmp_path / "cv")
    assert res["n_species"] == 5 and res["means"]["species"]["ours"]["l2"]["n"] == 5
    assert res["held_out_units"] == {"procedural_00": "A", "procedural_01": "A"}
    tests = pd.read_csv(tmp_path / "cv" / "tests.csv").query("level == 'species' and test == 'wilcoxon'")
    assert (tests["p"].dropna() >= 2 / 2**5 - 1e-12).all()  # 5 units: the smallest two-sided p
    species = pd.read_csv(tmp_path / "cv" / "species.csv")
    assert "A" in set(species["species"]) and "procedural_00" not in set(species["species"])


def test_report_page_quotes_the_tables(folds, tmp_path, capsys):
    """cv-summary writes report.md (model.cv_report) from its own tables: the species counts, the means
    with their intervals, ours lower on k of n species and the tests' p as in tests.csv; tomo cv-report
    writes the same page again, and refuses a folder that is not a cv-summary output."""
    res = pool_folds(folds, tmp_path / "cv")
    page = (tmp_path / "cv" / "report.md").read_text()
    assert page.startswith("# Cross-validation: 3 folds over 6 species")
    for heading in (
        "## Every species (6 species)",
        "## The store's own train species only (4 species)",
        "## Without the store's own val species (5 species)",
        "## Fold level (3 folds)",
        "## Procedure",
    ):
        assert heading in page  # fmt: skip
    ours = res["means"]["species"]["ours"]["l2"]
    assert f"{ours['mean']:.4g} [{ours['ci_low']:.4g}, {ours['ci_high']:.4g}]" in page
    sp = (
        pd.read_csv(tmp_path / "cv" / "species.csv")
        .query("metric == 'l2'")
        .pivot(index="species", columns="method", values="mean")
    )
    t = pd.read_csv(tmp_path / "cv" / "tests.csv").query(
        "metric == 'l2' and method_a == 'ours' and method_b == 'nn' and level == 'species'"
    )
    tp, wp = (t.query(f"test == '{x}'").iloc[0] for x in ("t", "wilcoxon"))
    lower = int((sp["ours"] < sp["nn"]).sum())
    row = f"| l2 | nn | {lower}/6 | {tp['statistic']:.3g} | {tp['p']:.2g} | {tp['p_holm']:.2g} |"
    assert row + f" {wp['statistic']:.4g} | {wp['p']:.2g} | {wp['p_holm']:.2g} |" in page
    # the train-only section: its own means, its tests (Holm within it) and counts over its 4 species
    train_only = page.split("## The store's own train species only", 1)[1].split("## Without", 1)[0]
    sub = res["base_train_only"]
    v = sub["means"]["species"]["nn"]["l2"]
    assert f"| nn | {v['mean']:.4g} [{v['ci_low']:.4g}, {v['ci_high']:.4g}]" in train_only
    t4 = next(r for r in sub["tests"] if (r["metric"], r["method_b"], r["test"]) == ("l2", "nn", "t"))
    four = sp.loc[sub["species"]]
    lower4 = f"{int((four['ours'] < four['nn']).sum())}/4"
    assert f"| l2 | nn | {lower4} | {t4['statistic']:.3g} | {t4['p']:.2g} | {t4['p_holm']:.2g} |" in train_only
    best = min(res["means"]["species"][m]["l2"]["mean"] for m in res["methods"])
    assert page.count(f"**{best:.4g} [") == 1  # the lowest l2 of every species, bold once
    fc = (
        pd.read_csv(tmp_path / "cv" / "tests.csv")
        .query(
            "metric == 'l2' and method_a == 'ours' and method_b == 'nn' and level == 'fold' and test == 'corrected t'"
        )
        .iloc[0]
    )
    assert f"| {fc['statistic']:.3g} | {fc['p']:.2g} | {fc['p_holm']:.2g} |" in page.split("## Fold level", 1)[1]
    fm = pd.read_csv(tmp_path / "cv" / "folds.csv").query("fold == 0 and metric == 'l2'").set_index("method")["mean"]
    folds_l2 = page.split("## Fold level", 1)[1].split("l2:", 1)[1]
    n0 = len(res["test_species"][0])
    assert f"| 0 | {n0} | 2 | " + " | ".join(f"{fm[m]:.4g}" for m in res["methods"]) + " |" in folds_l2
    assert main(["cv-report", str(tmp_path / "cv"), "-o", str(tmp_path / "again.md")]) == 0
    assert (tmp_path / "again.md").read_text() == page and str(tmp_path / "again.md") in capsys.readouterr().out
    # a method without values for a metric (null mean in summary.json): shown as "–", no crash
    s = json.loads((tmp_path / "cv" / "summary.json").read_text())
    s["means"]["species"]["mean"]["l2"] |= {"mean": None, "ci_low": None, "ci_high": None}
    (tmp_path / "cv" / "summary.json").write_text(json.dumps(s))
    assert "| mean | – [–, –] |" in cv_report(tmp_path / "cv")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="cross-validation summary .* lacks"):
        cv_report(tmp_path / "bad")


def test_fold_level_tests_are_nan_for_equal_differences():
    """Every fold's difference the same (0.1, equal to float rounding): neither the plain nor the
    corrected t claims anything (NaN, not t = ±inf with p = 0)."""
    units = np.array(["a", "b", "c", "d", "e", "f"])
    fold = np.array([0, 0, 1, 1, 2, 2])
    x = np.array([0.3, 0.5, 0.2, 0.7, 0.4, 0.6])
    per = {"ours": {"l2": x}, "nn": {"l2": x + 0.1}}
    _, tests = _fold_level(per, units, fold, ["ours", "nn"], (4.0, 2.0))
    assert {r["test"] for r in tests} == {"t", "corrected t"}
    assert all(math.isnan(r["statistic"]) and math.isnan(r["p"]) and r["n"] == 3 for r in tests)
