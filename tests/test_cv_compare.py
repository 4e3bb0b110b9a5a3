"""model.cv_compare / tomo cv-compare: two cross-validations paired by species."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from model.cli import main
from model.cv_compare import compare_cv
from model.stats import holm

SPECIES = [f"s{i:02d}" for i in range(8)]


def _write(folder, means: dict[tuple[str, str], np.ndarray]):
    """A tomo cv-summary-like folder: species.csv with {(method, metric): species means}."""
    folder.mkdir(parents=True)
    with open(folder / "species.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "species", "metric", "mean", "n_samples", "fold"])
        for (m, k), v in means.items():
            for s, x in zip(SPECIES, v, strict=True):
                w.writerow([m, s, k, repr(float(x)), 4, 0])
    return folder


def _runs(tmp_path):
    rng = np.random.default_rng(0)
    a = {(m, k): rng.uniform(0.02, 0.06, 8) for k in ("l2", "dssim") for m in ("ours", "nn", "mean")}
    b = {key: v + rng.normal(0.001 if key[0] == "nn" else 0.0, 0.0005, 8) for key, v in a.items()}
    return _write(tmp_path / "a", a), _write(tmp_path / "b", b), a, b


def test_methods_and_margins_match_scipy_and_holm(tmp_path):
    fa, fb, a, b = _runs(tmp_path)
    res = compare_cv(fa, fb, tmp_path / "out", labels=("x", "y"))
    row = next(r for r in res["methods"] if r["method"] == "nn" and r["metric"] == "l2")
    d = b["nn", "l2"] - a["nn", "l2"]
    assert row["diff"] == pytest.approx(d.mean()) and row["higher"] == int((d > 0).sum()) and row["n"] == 8
    assert row["p"] == pytest.approx(stats.ttest_rel(b["nn", "l2"], a["nn", "l2"]).pvalue)
    half = stats.t.ppf(0.975, 7) * d.std(ddof=1) / np.sqrt(8)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    margins = res["margins"]
    assert [(r["metric"], r["other"]) for r in margins] == [
        ("l2", "nn"),
        ("l2", "mean"),
        ("dssim", "nn"),
        ("dssim", "mean"),
    ]
    m = margins[0]
    ma, mb = a["ours", "l2"] - a["nn", "l2"], b["ours", "l2"] - b["nn", "l2"]
    assert m["margin_a"] == pytest.approx(ma.mean()) and m["margin_b"] == pytest.approx(mb.mean())
    assert m["p"] == pytest.approx(stats.ttest_rel(mb, ma).pvalue) and m["ours_lower_b"] == int((mb < 0).sum())
    assert [r["p_holm"] for r in margins] == pytest.approx(list(holm([r["p"] for r in margins])))
    header = (tmp_path / "out" / "margins.csv").read_text().splitlines()[0]
    assert header.startswith("metric,method,other,margin_a,margin_b,diff") and header.endswith("p_holm")
    assert len((tmp_path / "out" / "methods.csv").read_text().splitlines()) == 1 + 6


def test_other_species_or_no_table_is_refused(tmp_path, capsys):
    fa, _, a, _ = _runs(tmp_path)
    other = {k: v for k, v in a.items()}
    fc = _write(tmp_path / "c", other)
    text = (fc / "species.csv").read_text().replace("s07", "t07")
    (fc / "species.csv").write_text(text)
    with pytest.raises(ValueError, match=r"other species.*only in A: \['s07'\].*only in B: \['t07'\]"):
        compare_cv(fa, fc)
    assert main(["cv-compare", str(fa), str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")]) == 2
    assert "no species.csv (give a tomo cv-summary output folder)" in capsys.readouterr().err


def test_cli_prints_both_tables(tmp_path, capsys):
    fa, fb, _, _ = _runs(tmp_path)
    assert main(["cv-compare", str(fa), str(fb), "-o", str(tmp_path / "o"), "--labels", "shared", "own"]) == 0
    out = capsys.readouterr().out
    assert "species means, own − shared" in out and "vs nn" in out and "Holm" in out
    assert (tmp_path / "o" / "methods.csv").is_file() and (tmp_path / "o" / "margins.csv").is_file()


def test_other_methods_or_another_first_method_are_refused(tmp_path):
    _, _, a, _ = _runs(tmp_path)
    fa = _write(tmp_path / "x", a)
    fewer = _write(tmp_path / "y", {k: v for k, v in a.items() if k[0] != "mean"})
    with pytest.raises(ValueError, match=r"hold other methods \(A: \['ours', 'nn', 'mean'\], B: \['ours', 'nn'\]\)"):
        compare_cv(fa, fewer)
    reordered = _write(tmp_path / "z", {k: a[k] for k in sorted(a, key=lambda k: k[0] != "nn")})
    with pytest.raises(ValueError, match="hold other methods"):
        compare_cv(fa, reordered)  # nn first: the margins would be nn's, not ours'


def test_a_species_without_a_value_in_one_run_is_left_out_of_its_row(tmp_path):
    fa, _, a, b = _runs(tmp_path)
    b = dict(b)
    b["nn", "l2"] = b["nn", "l2"].copy()
    b["nn", "l2"][0] = np.nan
    fb = _write(tmp_path / "b2", b)
    res = compare_cv(fa, fb)
    row = next(r for r in res["methods"] if r["method"] == "nn" and r["metric"] == "l2")
    assert row["n"] == 7 and row["mean_a"] == pytest.approx(a["nn", "l2"][1:].mean())
    assert row["mean_b"] - row["mean_a"] == pytest.approx(row["diff"])
    m = next(r for r in res["margins"] if r["other"] == "nn" and r["metric"] == "l2")
    assert m["n"] == 7 and m["margin_b"] - m["margin_a"] == pytest.approx(m["diff"])
    b["nn", "l2"][1:-1] = np.nan
    with pytest.raises(ValueError, match="nn l2: 1 species with a value in both runs"):
        compare_cv(fa, _write(tmp_path / "b3", b))


def test_a_species_set_of_the_summaries_restricts_both_runs(tmp_path, capsys):
    """--species-set base_train_only: the rows use only the species summary.json names in that set (the
    same in both runs); runs that name other species there, or lack the set, are refused."""
    fa, fb, a, b = _runs(tmp_path)
    keep = SPECIES[:5]
    for f in (fa, fb):
        (f / "summary.json").write_text(json.dumps({"base_train_only": {"species": keep[::-1]}}))
    res = compare_cv(fa, fb, species_set="base_train_only")
    row = next(r for r in res["methods"] if r["method"] == "nn" and r["metric"] == "l2")
    d = (b["nn", "l2"] - a["nn", "l2"])[:5]
    assert row["n"] == 5 and row["diff"] == pytest.approx(d.mean()) and res["species_set"] == "base_train_only"
    assert row["p"] == pytest.approx(stats.ttest_rel(b["nn", "l2"][:5], a["nn", "l2"][:5]).pvalue)
    assert main(["cv-compare", str(fa), str(fb), "-o", str(tmp_path / "o"), "--species-set", "base_train_only"]) == 0
    assert "species set base_train_only (5 species); folds of the two runs: the same" in capsys.readouterr().out
    assert res["fold_differences"] == 0
    (fb / "summary.json").write_text(json.dumps({"base_train_only": {"species": SPECIES[:4]}}))
    with pytest.raises(ValueError, match="name other base_train_only species"):
        compare_cv(fa, fb, species_set="base_train_only")
    with pytest.raises(ValueError, match="lacks without_base_val"):
        compare_cv(fa, fb, species_set="without_base_val")
    with pytest.raises(ValueError, match="species_set must be one of"):
        compare_cv(fa, fb, species_set="val")


def test_other_fold_assignments_are_paired_by_species_and_counted(tmp_path):
    """Species in other folds, and so in another order in species.csv (tomo cv-summary writes them in
    fold order): paired by name, not by row (helper-82: position pairing passed, with p .92 for .0012)."""
    fa, fb, a, b = _runs(tmp_path)
    rows = (fb / "species.csv").read_text().splitlines()
    moved = [r[: r.rfind(",")] + (",1" if r.split(",")[1] in ("s00", "s03") else ",0") for r in rows[1:]]
    shuffled = [moved[i] for i in np.random.default_rng(4).permutation(len(moved))]
    methods = list(dict.fromkeys(r.split(",")[0] for r in moved))  # the first is ours: kept first
    shuffled.sort(key=lambda r: methods.index(r.split(",")[0]))  # species in another order within each
    (fb / "species.csv").write_text("\n".join([rows[0], *shuffled]) + "\n")
    res = compare_cv(fa, fb)
    assert res["fold_differences"] == 2
    row = next(r for r in res["methods"] if r["method"] == "nn" and r["metric"] == "l2")
    assert row["p"] == pytest.approx(stats.ttest_rel(b["nn", "l2"], a["nn", "l2"]).pvalue)
    assert row["higher"] == int((b["nn", "l2"] > a["nn", "l2"]).sum())
