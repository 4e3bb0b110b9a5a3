"""A cross-validation's result as a page: ``report.md`` beside ``tomo cv-summary``'s tables.

Read from ``summary.json`` and ``species.csv`` (:func:`model.cross_validation.pool_folds`): every
mean, interval, statistic and p is quoted from those tables; only the counts "ours lower on k of n
species" (from species.csv's species means) and the bold (the lowest mean of a column) are worked out
here. For each species set the summary has
(every species; without the store's own val species; the store's own train species only), the page
gives, at the species level (the held-out unit):

* each method's mean of the species means with its 95 % t-interval over the species;
* the first method (ours) against each other: on how many species its mean is lower, the paired
  t-test's and the Wilcoxon test's p, each with its Holm-adjusted p (the families of
  :mod:`model.eval_tables`, within that species set: ours' comparisons in l2, DSSIM and Gaussian
  DSSIM together, ``mse`` its own);

then each fold's means (``folds.csv``: its test species, the step of its checkpoint, each method's
mean of its species means), the fold level's paired t and corrected resampled t over the K folds and
the procedure in words. Lower is better for every metric. A bold mean is the lowest of its
column, not a claim of significance.

``cv_report(cv_dir) -> str``, ``write_cv_report(cv_dir, out=None) -> Path``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from tomodata.files import read_json_object, write_text

from .metrics import HOLM_METRICS
from .names import CV_BASE_TRAIN_ONLY, CV_FOLDS_CSV, CV_REPORT, CV_WITHOUT_BASE_VAL, EVAL_SPECIES, EVAL_SUMMARY

__all__ = ["cv_report", "write_cv_report"]

#: the species sets of summary.json, in the page's order: (key, heading); "" is every species
_SETS = (
    ("", "Every species"),
    (CV_BASE_TRAIN_ONLY, "The store's own train species only"),
    (CV_WITHOUT_BASE_VAL, "Without the store's own val species"),
)


#: the summary.json keys the page reads (tomo cv-summary writes them all)
_KEYS = ("methods", "folds", "n_species", "n_samples", "seed", "unit", "base_store", "fold_sizes", "means", "tests")


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def _num(x: float | None, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if _finite(x) else "–"


def _p(x: float | None) -> str:
    return f"{x:.2g}" if _finite(x) else "–"


def _metrics(means: Mapping, methods: Sequence[str]) -> list[str]:
    return [k for k in means[methods[0]] if all(k in means[m] for m in methods)]


def _means_table(means: Mapping, methods: Sequence[str], metrics: Sequence[str]) -> list[str]:
    rows = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    best = {
        k: min((means[m][k]["mean"] for m in methods if _finite(means[m][k]["mean"])), default=None) for k in metrics
    }
    for m in methods:
        cells = []
        for k in metrics:
            v = means[m][k]
            cell = f"{_num(v['mean'])} [{_num(v['ci_low'])}, {_num(v['ci_high'])}]"
            cells.append(f"**{cell}**" if best[k] is not None and v["mean"] == best[k] else cell)
        rows.append(f"| {m} | " + " | ".join(cells) + " |")
    return rows


def _tests_table(tests: Sequence[Mapping], species: pd.DataFrame, methods: Sequence[str], metrics) -> list[str]:
    """Ours against each other method, per metric: species where ours is lower, t and Wilcoxon p."""
    first = methods[0]
    by = {(r["metric"], r["method_b"], r["test"]): r for r in tests if r["method_a"] == first}
    rows = [
        f"| metric | {first} vs | {first} lower on | t | p | p Holm | Wilcoxon W | p | p Holm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in metrics:
        wide = species[species["metric"] == k].pivot(index="species", columns="method", values="mean")
        for m in methods[1:]:
            t, w = by.get((k, m, "t")), by.get((k, m, "wilcoxon"))
            if t is None:
                continue
            pair = wide.reindex(columns=[first, m]).dropna()
            lower = f"{int((pair[first] < pair[m]).sum())}/{len(pair)}"
            wcells = [_num(w["statistic"]), _p(w["p"]), _p(w["p_holm"])] if w else ["–"] * 3
            rows.append(
                f"| {k} | {m} | {lower} | {_num(t['statistic'], 3)} | {_p(t['p'])} | {_p(t['p_holm'])} | "
                + " | ".join(wcells)
                + " |"
            )
    return rows


def _folds_tables(folds: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """Per metric of :data:`HOLM_METRICS` in ``folds.csv``: each fold's test species, checkpoint step
    and every method's fold mean."""
    out: list[str] = []
    for k in [k for k in HOLM_METRICS if k in set(folds["metric"])]:
        t = folds[folds["metric"] == k]
        wide = t.pivot(index="fold", columns="method", values="mean").reindex(columns=list(methods))
        info = t.groupby("fold")[["n_species", "checkpoint_step"]].first().to_dict("index")
        out += ["", f"{k}:", "", "| fold | test species | step | " + " | ".join(methods) + " |"]
        out.append("|---|---|---|" + "---|" * len(methods))
        for f, row in wide.iterrows():
            cells = " | ".join(_num(float(row[m])) for m in methods)
            out.append(f"| {f} | {_num(info[f]['n_species'], 6)} | {_num(info[f]['checkpoint_step'], 9)} | {cells} |")
    return out or ["", f"No {CV_FOLDS_CSV} rows."]


def _fold_table(tests: Sequence[Mapping], first: str) -> list[str]:
    rows = [
        f"| metric | {first} vs | t | p | p Holm | corrected t | p | p Holm |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["metric"], r["method_b"], r["test"]): r for r in tests if r["method_a"] == first and r["level"] == "fold"}
    if not by:
        return ["No fold-level tests in summary.json."]
    for metric, other in dict.fromkeys((k, m) for k, m, _ in by):
        cells = []
        for test in ("t", "corrected t"):
            r = by.get((metric, other, test))
            cells += [_num(r["statistic"], 3), _p(r["p"]), _p(r["p_holm"])] if r else ["–"] * 3
        rows.append(f"| {metric} | {other} | " + " | ".join(cells) + " |")
    return rows


def cv_report(cv_dir) -> str:
    """The markdown page of the ``tomo cv-summary`` folder ``cv_dir`` (module docstring)."""
    cv_dir = Path(cv_dir)
    s = read_json_object(cv_dir / EVAL_SUMMARY, "cross-validation summary", keys=_KEYS)
    species = pd.read_csv(cv_dir / EVAL_SPECIES, keep_default_na=False, na_values=[""])
    methods = list(s["methods"])
    first = methods[0]
    steps = [_num(x, 6) for x in s.get("checkpoint_steps") or []]
    lines = [
        f"# Cross-validation: {s['folds']} folds over {s['n_species']} species",
        "",
        f"- Store: `{s['base_store']}`; fold seed {s['seed']}; {s['n_samples']} test samples.",
        f"- Held-out unit: {s['unit']}.",
        f"- Checkpoints (each fold's best on its own val species), steps: {', '.join(steps) or '–'}.",
        f"- A fold trains on {s['fold_sizes']['n_train']:g} and tests {s['fold_sizes']['n_test']:g} units on average.",
        "- Lower is better for every metric; a bold mean is the lowest of its column, not a significance claim.",
        f"- Made by `tomo cv-report` from `{EVAL_SUMMARY}` and `{EVAL_SPECIES}` (quoted; the counts of species "
        "on which ours is lower and the bold are worked out from them); the procedure is at the end.",
    ]
    for key, heading in _SETS:
        part = s if not key else s.get(key)
        if not part:
            continue
        means = part["means"]["species"]
        tests = [r for r in part["tests"] if r["level"] == "species"]
        names = part.get("species") or sorted(species["species"].unique())
        sub = species[species["species"].isin(names)]
        metrics = _metrics(means, methods)
        lines += ["", f"## {heading} ({len(names)} species)", ""]
        if key:
            lines += [f"{part['what']}.", ""]
        lines += ["Mean of the species means [95 % t-interval over the species]:", ""]
        lines += _means_table(means, methods, metrics)
        family = ", ".join(k for k in HOLM_METRICS if k in metrics)
        rest = "".join(f", {k} its own family" for k in metrics if k not in HOLM_METRICS)
        lines += [
            "",
            f"{first} against each method, paired by species (two-sided; Holm over the comparisons of {first} "
            f"in {family} together{rest}, within this species set):",
            "",
        ]
        lines += _tests_table(tests, sub, methods, metrics)
    lines += ["", f"## Fold level ({s['folds']} folds)", "", "Each fold's mean of its test species' means:"]
    folds_csv = cv_dir / CV_FOLDS_CSV
    lines += _folds_tables(pd.read_csv(folds_csv), methods) if folds_csv.is_file() else ["", f"No {CV_FOLDS_CSV}."]
    lines += ["", f"{first} against each method over the folds (paired t; corrected resampled t):", ""]
    lines += _fold_table(s["tests"], first)
    lines += ["", "## Procedure", "", s.get("statistics", "–"), ""]
    return "\n".join(lines)


def write_cv_report(cv_dir, out=None) -> Path:
    """Write :func:`cv_report` of ``cv_dir`` to ``out`` (default ``cv_dir/report.md``) atomically."""
    return write_text(Path(out) if out is not None else Path(cv_dir) / CV_REPORT, cv_report(cv_dir))
