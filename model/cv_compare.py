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

The two runs must hold the same species and methods (a ValueError names what differs). The species of
a fold share a network and the folds share training data, so the intervals are not exact, as for
``tomo cv-summary``'s species level.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .eval_tables import write_csv
from .metrics import HOLM_METRICS
from .stats import holm, mean_ci, species_ttest

__all__ = ["compare_cv", "SPECIES_TABLE"]

#: the table of a tomo cv-summary folder that is compared
SPECIES_TABLE = "species.csv"
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


def _pivot(t: pd.DataFrame, label: str) -> dict[tuple[str, str], pd.Series]:
    """{(method, metric): species means indexed by species (sorted)}; duplicates are an error."""
    if t.duplicated(["method", "species", "metric"]).any():
        raise ValueError(f"{label}: a (method, species, metric) appears twice in {SPECIES_TABLE}")
    return {
        (str(m), str(k)): g.set_index("species")["mean"].sort_index()
        for (m, k), g in t.groupby(["method", "metric"], sort=False)
    }


def _check_same(a: dict, b: dict, la: str, lb: str) -> None:
    """The two runs hold the same species for every (method, metric) they share, and share one."""
    shared = [k for k in a if k in b]
    if not shared:
        raise ValueError(f"{la} and {lb} share no method and metric")
    for k in shared:
        sa, sb = set(a[k].index), set(b[k].index)
        if sa != sb:
            only = sorted(sa - sb)[:3], sorted(sb - sa)[:3]
            raise ValueError(
                f"{la} and {lb} hold other species for {k[0]} {k[1]} (only in {la}: {only[0]}, "
                f"only in {lb}: {only[1]}): compare cross-validations over the same species"
            )


def _diff_row(x: pd.Series, y: pd.Series) -> dict:
    """Mean of y − x over species, its t-interval, species with y > x, paired t (x, y aligned)."""
    d = (y - x).to_numpy()
    mean, lo, hi, n = mean_ci(d)
    names = list(x.index)
    t, p, _ = species_ttest(y.to_numpy(), x.to_numpy(), names)
    return dict(diff=mean, ci_low=lo, ci_high=hi, higher=int((d > 0).sum()), n=n, t=t, p=p)


def compare_cv(a, b, out_dir=None, *, labels: tuple[str, str] = ("A", "B")) -> dict[str, list[dict]]:
    """Compare the cv-summary folders ``a`` and ``b`` (module docstring); write ``methods.csv`` and
    ``margins.csv`` into ``out_dir`` where given. Returns ``{"methods": rows, "margins": rows}``."""
    la, lb = labels
    ta, tb = _species_table(a), _species_table(b)
    pa, pb = _pivot(ta, la), _pivot(tb, lb)
    _check_same(pa, pb, la, lb)
    methods = [m for m in dict.fromkeys(ta["method"]) if m in set(tb["method"])]
    metrics = [k for k in dict.fromkeys(ta["metric"]) if any((m, k) in pa and (m, k) in pb for m in methods)]
    rows = []
    for metric in metrics:
        for m in methods:
            if (m, metric) in pa and (m, metric) in pb:
                x, y = pa[m, metric], pb[m, metric]
                rows.append(dict(metric=metric, method=m, mean_a=x.mean(), mean_b=y.mean()) | _diff_row(x, y))
    ours, margins = methods[0], []
    for metric in [k for k in HOLM_METRICS if k in metrics]:
        for m in methods[1:]:
            if (m, metric) in pa and (m, metric) in pb and (ours, metric) in pa and (ours, metric) in pb:
                ma, mb = pa[ours, metric] - pa[m, metric], pb[ours, metric] - pb[m, metric]
                row = dict(metric=metric, method=ours, other=m, margin_a=ma.mean(), margin_b=mb.mean())
                margins.append(row | _diff_row(ma, mb) | dict(ours_lower_b=int((mb < 0).sum())))
    for row, p in zip(margins, holm([r["p"] for r in margins]), strict=True):
        row["p_holm"] = float(p)
    if out_dir is not None:
        write_csv(Path(out_dir) / "methods.csv", METHODS_COLUMNS, rows)
        write_csv(Path(out_dir) / "margins.csv", MARGINS_COLUMNS, margins)
    return {"methods": rows, "margins": margins, "labels": [la, lb], "ours": ours}
