"""Two cross-validations over the same species compared species by species (``tomo cv-compare``).

Each input is a ``tomo cv-summary`` folder (its ``species.csv``: one row per method, species and
metric with the species mean). The unit is the held-out species, paired across the two runs (two
recipes, two datasets of the same species: view sets, training lengths):

* ``methods.csv``: for every method and metric both hold, the mean over species in A and in B, the
  mean paired difference B − A with its 95 % t-interval, the species on which B is higher, and the
  paired t-test over the species (:func:`model.stats.species_ttest`);
* ``margins.csv``: for the first method (ours) against every other, its margin ``ours − other`` in A
  and in B, the change B − A with its interval and paired t, Holm-adjusted over the margins of
  :data:`model.metrics.HOLM_METRICS` (the family of claims "the margin changed"), and the species on
  which ours is lower in B.

The two runs must hold the same methods (the first, ours, first in both), metrics and species (a
ValueError names what differs); a species without a value in one run is left out of that row.
The pairing is by species alone: where the two runs assigned species to other folds (other fold
seeds or counts), the comparison still pairs them, and the result says on how many species the folds
differ (``fold_differences``; species.csv's ``fold`` column). ``species_set`` restricts both to one
of the species sets of ``summary.json`` (:data:`SPECIES_SETS`: ``base_train_only``, the store's own
train species, never used for a choice; ``without_base_val``), which both runs must name alike. The
species of a fold share a network and the folds share training data, so the intervals are not
exact, as for ``tomo cv-summary``'s species level.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tomodata.files import read_json_object

from .eval_tables import write_csv
from .metrics import HOLM_METRICS
from .names import CV_SPECIES_SETS, EVAL_SPECIES, EVAL_SUMMARY
from .stats import holm, mean_ci, species_ttest

__all__ = ["compare_cv", "SPECIES_SETS", "SPECIES_TABLE"]

#: the table of a tomo cv-summary folder that is compared (its folder is laid out as an evaluation's)
SPECIES_TABLE = EVAL_SPECIES
#: the species sets a comparison can be restricted to: every species, or one of summary.json's subsets
SPECIES_SETS = CV_SPECIES_SETS
_DIFF = ("diff", "ci_low", "ci_high", "higher", "n", "t", "p")
METHODS_COLUMNS = ("metric", "method", "mean_a", "mean_b", *_DIFF)
MARGINS_COLUMNS = ("metric", "method", "other", "margin_a", "margin_b", *_DIFF, "ours_lower_b", "p_holm")


def _species_table(folder) -> pd.DataFrame:
    """``folder/species.csv`` (a tomo cv-summary output), checked for its columns."""
    path = Path(folder) / SPECIES_TABLE
    if not path.is_file():
        raise ValueError(f"{folder}: no {SPECIES_TABLE} (give a tomo cv-summary output folder)")
    t = pd.read_csv(path)
    missing = {"method", "species", "metric", "mean"} - set(t.columns)
    if missing:
        raise ValueError(f"{path}: lacks the columns {sorted(missing)}")
    return t


def _species_set(folder, name: str) -> list[str]:
    """The species of ``folder/summary.json``'s set ``name`` (:data:`SPECIES_SETS` but "all")."""
    s = read_json_object(Path(folder) / EVAL_SUMMARY, "cross-validation summary", keys=(name,))
    if not s[name]:
        raise ValueError(f"{folder}: {EVAL_SUMMARY} has no {name} species (too few to test)")
    return sorted(s[name]["species"])


def _restrict(ta: pd.DataFrame, tb: pd.DataFrame, a, b, name: str, labels) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both species tables restricted to the species set ``name`` (the same in both runs)."""
    if name not in SPECIES_SETS:
        raise ValueError(f"species_set must be one of {list(SPECIES_SETS)}, got {name!r}")
    if name == "all":
        return ta, tb
    sa, sb = _species_set(a, name), _species_set(b, name)
    if sa != sb:
        raise ValueError(
            f"{labels[0]} and {labels[1]} name other {name} species (only in {labels[0]}: "
            f"{sorted(set(sa) - set(sb))[:3]}, only in {labels[1]}: {sorted(set(sb) - set(sa))[:3]})"
        )
    return ta[ta["species"].isin(sa)], tb[tb["species"].isin(sa)]


def _pivot(t: pd.DataFrame, label: str) -> dict[tuple[str, str], pd.Series]:
    """{(method, metric): species means indexed by species (sorted)}; duplicates are an error."""
    if t.duplicated(["method", "species", "metric"]).any():
        raise ValueError(f"{label}: a (method, species, metric) appears twice in {SPECIES_TABLE}")
    return {
        (str(m), str(k)): g.set_index("species")["mean"].sort_index()
        for (m, k), g in t.groupby(["method", "metric"], sort=False)
    }


def _check_same(ta: pd.DataFrame, tb: pd.DataFrame, a: dict, b: dict, la: str, lb: str) -> None:
    """The two runs hold the same methods (in the same order: the first is ours), metrics and, for
    each (method, metric), species; ValueError naming what differs."""
    for col in ("method", "metric"):
        va, vb = list(dict.fromkeys(ta[col])), list(dict.fromkeys(tb[col]))
        if set(va) != set(vb) or (col == "method" and va[0] != vb[0]):
            raise ValueError(
                f"{la} and {lb} hold other {col}s ({la}: {va}, {lb}: {vb}): compare runs of one evaluation"
            )
    if set(a) != set(b):
        raise ValueError(f"{la} and {lb} hold other method and metric pairs: {sorted(set(a) ^ set(b))[:3]}")
    for k in a:
        sa, sb = set(a[k].index), set(b[k].index)
        if sa != sb:
            only = sorted(sa - sb)[:3], sorted(sb - sa)[:3]
            raise ValueError(
                f"{la} and {lb} hold other species for {k[0]} {k[1]} (only in {la}: {only[0]}, "
                f"only in {lb}: {only[1]}): compare cross-validations over the same species"
            )


def _diff_row(x: pd.Series, y: pd.Series, what: str) -> dict:
    """Means of x and y over the species where both have a value, the mean of y − x, its t-interval,
    the species with y > x and the paired t (x, y aligned by species); ``what`` names them in errors."""
    both = x.notna() & y.notna()
    x, y = x[both], y[both]
    if len(x) < 2:
        raise ValueError(f"{what}: {len(x)} species with a value in both runs; at least 2 are needed")
    d = (y - x).to_numpy()
    mean, lo, hi, n = mean_ci(d)
    t, p, _ = species_ttest(y.to_numpy(), x.to_numpy(), list(x.index))
    out = dict(mean_a=float(x.mean()), mean_b=float(y.mean()), diff=mean, ci_low=lo, ci_high=hi)
    return out | dict(higher=int((d > 0).sum()), n=n, t=t, p=p)


def compare_cv(
    a, b, out_dir=None, *, labels: tuple[str, str] = ("A", "B"), species_set: str = "all"
) -> dict[str, list[dict]]:
    """Compare the cv-summary folders ``a`` and ``b`` on the species of ``species_set`` (module
    docstring); write ``methods.csv`` and ``margins.csv`` into ``out_dir`` where given. Returns
    ``{"methods": rows, "margins": rows, "labels": [la, lb], "ours": name, "species_set": name}``."""
    la, lb = labels
    ta, tb = _restrict(_species_table(a), _species_table(b), a, b, species_set, labels)
    pa, pb = _pivot(ta, la), _pivot(tb, lb)
    _check_same(ta, tb, pa, pb, la, lb)
    methods, metrics = list(dict.fromkeys(ta["method"])), list(dict.fromkeys(ta["metric"]))
    rows = [
        dict(metric=k, method=m) | _diff_row(pa[m, k], pb[m, k], f"{m} {k}")
        for k in metrics
        for m in methods
        if (m, k) in pa
    ]
    ours, margins = methods[0], []
    for k in [k for k in HOLM_METRICS if k in metrics]:
        for m in methods[1:]:
            if (m, k) in pa and (ours, k) in pa:
                ma, mb = pa[ours, k] - pa[m, k], pb[ours, k] - pb[m, k]
                row = _diff_row(ma, mb, f"{ours} − {m} {k}")
                row["margin_a"], row["margin_b"] = row.pop("mean_a"), row.pop("mean_b")
                ours_lower = int((mb[ma.notna() & mb.notna()] < 0).sum())
                margins.append(dict(metric=k, method=ours, other=m) | row | dict(ours_lower_b=ours_lower))
    for row, p in zip(margins, holm([r["p"] for r in margins]), strict=True):
        row["p_holm"] = float(p)
    if out_dir is not None:
        write_csv(Path(out_dir) / "methods.csv", METHODS_COLUMNS, rows)
        write_csv(Path(out_dir) / "margins.csv", MARGINS_COLUMNS, margins)
    return {
        "methods": rows,
        "margins": margins,
        "labels": [la, lb],
        "ours": ours,
        "species_set": species_set,
        "fold_differences": _fold_differences(ta, tb),
    }


def _fold_differences(ta: pd.DataFrame, tb: pd.DataFrame) -> int | None:
    """On how many species the two runs' folds differ (None where a table has no ``fold`` column)."""
    if "fold" not in ta.columns or "fold" not in tb.columns:
        return None
    fa, fb = (t.groupby("species")["fold"].first() for t in (ta, tb))
    return int((fa != fb.reindex(fa.index)).sum())


def comparison_text(res: dict) -> str:
    """What ``tomo cv-compare`` prints of :func:`compare_cv`'s result: each method's species means in
    the two runs with the paired difference, then ours' margins against the others and their change."""
    la, lb = res["labels"]
    n = res["methods"][0]["n"] if res["methods"] else 0
    folds = res["fold_differences"]
    same = "unknown" if folds is None else "the same" if folds == 0 else f"differ on {folds} species"
    lines = [
        f"species set {res['species_set']} ({n} species); folds of the two runs: {same} (paired by species)",
        f"species means, {lb} − {la} (95 % t-interval over the species, paired t):",
    ]
    for r in res["methods"]:
        if r["metric"] != "mse":
            lines.append(
                f"  {r['metric']:11} {r['method']:14} {la} {r['mean_a']:.4f}  {lb} {r['mean_b']:.4f}  "
                f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  higher on {r['higher']}/{r['n']}  "
                f"p {r['p']:.2g}"
            )
    lines.append(
        f"{res['ours']} − other, {lb} − {la} (negative: the margin grew in favour of {res['ours']}), Holm over these:"
    )
    for r in res["margins"]:
        lines.append(
            f"  {r['metric']:11} vs {r['other']:14} {la} {r['margin_a']:+.4f}  {lb} {r['margin_b']:+.4f}  "
            f"{r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]  p {r['p']:.2g}  Holm {r['p_holm']:.2g}  "
            f"{res['ours']} lower in {lb} on {r['ours_lower_b']}/{r['n']}"
        )
    return "\n".join(lines)
