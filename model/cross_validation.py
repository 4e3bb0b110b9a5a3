"""Cross-validation over species: the evaluations of every fold pooled into one result.

Each fold ``k`` of ``K`` (:mod:`tomodata.store.folds`) trained on its own train species, chose its
checkpoint on its val species and was evaluated (``tomo evaluate --split test``) on its test species;
over the folds every species is a test species exactly once. :func:`pool_folds` checks that the
evaluations are the K folds of one store (same base store and completion, folds, seed, methods and
sizes; test species disjoint and together every species), stacks their per-sample metrics and writes,
in ``out``:

``summary.csv``  method, metric, level, mean, ci_low, ci_high, n: levels ``species`` (each species'
                 mean over its samples, t-interval over the species: the headline), ``fold`` (each
                 fold's mean of its species means, t-interval over the K folds) and ``sample``
``tests.csv``    metric, method_a, method_b, level, test, statistic, p, p_holm, n: paired tests per
                 level (species: t and Wilcoxon; fold: t over the K fold means; sample: t), Holm over
                 the first method's comparisons (:func:`model.eval_tables.holm_column`)
``species.csv``  method, species, metric, mean, n_samples, plus the species' ``fold``
``folds.csv``    fold, test species, val species, checkpoint step, and per method the fold's l2 / DSSIM
``summary.json`` all of that, the procedure in words and the same species-level result without the
                 species of the store's own val split (settings chosen before were judged on them)

The species level treats the species as independent although the K models share most of their
training data; no unbiased estimate of a K-fold variance exists (Bengio & Grandvalet 2004). The
fold level, with K units, is the cautious reading.

``pool_folds(eval_dirs, out) -> dict``   (summary.json's content)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tomodata.files import json_safe, read_json_object, write_json
from tomodata.store import open_store
from tomodata.store.folds import CV_KEY

from . import stats as ST
from .eval_tables import (
    CI_LEVEL,
    SPECIES_COLUMNS,
    SUMMARY_COLUMNS,
    TESTS_COLUMNS,
    holm_column,
    statistics_tables,
    statistics_text,
    write_csv,
)
from .metrics import METRICS

__all__ = ["pool_folds", "FOLDS_COLUMNS"]

FOLDS_COLUMNS = ("fold", "method", "metric", "mean", "n_species", "test_species", "val_species", "checkpoint_step")


def _read_fold(d: Path) -> dict:
    """One fold's evaluation: its summary.json, the fold view's record and its metrics.csv."""
    s = read_json_object(d / "summary.json", "an evaluation summary", keys=("store", "eval_split", "methods"))
    if s["eval_split"] != "test":
        raise ValueError(f"{d}: evaluated split {s['eval_split']!r}; a fold's result is its test split")
    try:
        cv = open_store(s["store"]).attrs.get(CV_KEY)
    except ValueError as e:
        raise ValueError(f"{d}: its store cannot be read as it was evaluated: {e}") from None
    if not cv:
        raise ValueError(f"{d}: evaluated {s['store']}, a store, not a fold view (tomo cv-view)")
    if not (d / "metrics.csv").is_file():
        raise ValueError(f"{d}: no metrics.csv beside summary.json: evaluate the fold again")
    m = pd.read_csv(d / "metrics.csv", dtype={"species": str})
    base = (Path(s["store"]) / cv["base"]).resolve()
    return dict(dir=d, summary=s, cv=cv, base=base, metrics=m)


def _check_folds(folds: list[dict]) -> list[dict]:
    """The folds in fold order, checked to be the K folds of one store; ValueError naming what differs."""
    first = folds[0]
    same = ("folds", "seed", "base_completion")
    for f in folds[1:]:
        if f["base"] != first["base"]:
            raise ValueError(f"{f['dir']} is a fold of {f['base']}, {first['dir']} of {first['base']}")
        for k in same:
            if f["cv"][k] != first["cv"][k]:
                raise ValueError(f"{f['dir']} and {first['dir']} differ in {k} (folds of different views)")
        for k in ("methods", "n_views_evaluated", "image_size", "target_shape"):
            if f["summary"].get(k) != first["summary"].get(k):
                raise ValueError(f"{f['dir']} and {first['dir']} differ in {k}: evaluated differently")
    K = int(first["cv"]["folds"])
    got = sorted(int(f["cv"]["fold"]) for f in folds)
    if got != list(range(K)):
        raise ValueError(f"the {K} folds 0..{K - 1} are needed once each, got folds {got}")
    folds = sorted(folds, key=lambda f: int(f["cv"]["fold"]))
    seen: dict[str, int] = {}
    for f in folds:
        for name in f["summary"]["eval_species"]:
            if name in seen:
                raise ValueError(f"species {name} is a test species of folds {seen[name]} and {f['cv']['fold']}")
            seen[name] = int(f["cv"]["fold"])
    every = [e["name"] for e in open_store(first["summary"]["store"]).attrs["species"]]
    if sorted(seen) != sorted(every):
        raise ValueError(f"the folds' test species miss {sorted(set(every) - set(seen))}: evaluate every species")
    return folds


def _stack(folds: list[dict], methods: Sequence[str]):
    """per[method][metric] (N,) over all folds, species (N,), sample (N,), fold (N,) in one order."""
    per: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    keys = None
    for m in methods:
        rows = pd.concat([f["metrics"].assign(fold=int(f["cv"]["fold"])) for f in folds])
        rows = rows[rows["method"] == m]
        k = rows[["species", "sample", "fold"]].to_numpy()
        if keys is None:
            keys = k
        elif k.shape != keys.shape or np.any(k != keys):
            raise ValueError(f"method {m} was evaluated on other samples than {methods[0]}")
        for metric in METRICS:
            per[m][metric] = rows[metric].to_numpy(np.float64)
    assert keys is not None
    return per, keys[:, 0].astype(str), keys[:, 1].astype(np.int64), keys[:, 2].astype(np.int64)


def _fold_level(per, species, fold, methods, *, level: float = CI_LEVEL) -> tuple[list[dict], list[dict]]:
    """summary and tests rows of the fold level: each fold's mean of its species means."""
    means: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    ks = np.unique(fold)
    for m in methods:
        for k in METRICS:
            means[m][k] = np.array(
                [np.nanmean(ST.species_means(per[m][k][fold == f], species[fold == f])[1]) for f in ks]
            )
    summary = []
    for m in methods:
        for k in METRICS:
            mean, lo, hi, n = ST.mean_ci(means[m][k], level)
            summary.append(dict(method=m, metric=k, level="fold", mean=mean, ci_low=lo, ci_high=hi, n=n))
    tests = []
    for k in METRICS:
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                x, y = means[a][k], means[b][k]
                ok = np.isfinite(x) & np.isfinite(y)
                t, p = (math.nan, math.nan)
                if ok.sum() >= 2 and np.any(x[ok] != y[ok]):
                    r = stats.ttest_rel(x[ok], y[ok])
                    t, p = float(r.statistic), float(r.pvalue)
                tests.append(
                    dict(metric=k, method_a=a, method_b=b, level="fold", test="t", statistic=t, p=p, n=int(ok.sum()))
                )
    return summary, tests


def _fold_rows(folds: list[dict], per, species, fold, methods) -> list[dict]:
    rows = []
    for f in folds:
        k = int(f["cv"]["fold"])
        s = f["summary"]
        for m in methods:
            for metric in ("l2", "dssim"):
                sm = ST.species_means(per[m][metric][fold == k], species[fold == k])[1]
                rows.append(
                    dict(
                        fold=k,
                        method=m,
                        metric=metric,
                        mean=float(np.nanmean(sm)),
                        n_species=int(sm.size),
                        test_species=" ".join(s["eval_species"]),
                        val_species=" ".join((s.get("splits") or {}).get("val") or []),
                        checkpoint_step=s.get("checkpoint_step"),
                    )
                )
    return rows


def _means(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r["level"], {}).setdefault(r["method"], {})[r["metric"]] = {
            k: r[k] for k in ("mean", "ci_low", "ci_high", "n")
        }
    return out


def pool_folds(eval_dirs: Sequence, out) -> dict:
    """Pool the K folds' evaluations in ``eval_dirs`` into ``out`` (module docstring); returns the
    summary written to ``out/summary.json``. ValueError where they are not the K folds of one store."""
    if not eval_dirs:
        raise ValueError("no fold evaluations given")
    folds = _check_folds([_read_fold(Path(d)) for d in eval_dirs])
    methods = list(folds[0]["summary"]["methods"])
    n_views = open_store(folds[0]["summary"]["store"]).settings.n_views
    per, species, sample, fold = _stack(folds, methods)
    tab = statistics_tables(per, species, sample, n_views, methods=methods)
    f_summary, f_tests = _fold_level(per, species, fold, methods)
    by_level = {lv: [r for r in tab["summary"] if r["level"] == lv] for lv in ("species", "sample")}
    summary = by_level["species"] + f_summary + by_level["sample"]
    tests = holm_column(tab["tests"] + f_tests, methods[0])
    fold_of = dict(zip(species.tolist(), fold.tolist()))
    sp_rows = [dict(r, fold=fold_of[r["species"]]) for r in tab["species"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, summary)
    write_csv(out / "tests.csv", TESTS_COLUMNS, tests)
    write_csv(out / "species.csv", (*SPECIES_COLUMNS, "fold"), sp_rows)
    write_csv(out / "folds.csv", FOLDS_COLUMNS, _fold_rows(folds, per, species, fold, methods))
    cv = folds[0]["cv"]
    tuned = sorted(set((cv.get("base_splits") or {}).get("val") or []))
    keep = ~np.isin(species, tuned)
    untuned = None
    if len(set(species[keep].tolist())) >= 2:
        sub = {m: {k: v[keep] for k, v in d.items()} for m, d in per.items()}
        t2 = statistics_tables(sub, species[keep], sample[keep], n_views, methods=methods)
        untuned = dict(
            excluded=tuned,
            means=_means([r for r in t2["summary"] if r["level"] == "species"]),
            tests=[r for r in t2["tests"] if r["level"] == "species"],
        )
    result = dict(
        base_store=str(folds[0]["base"]),
        folds=int(cv["folds"]),
        seed=int(cv["seed"]),
        unit=cv["unit"],
        evaluations=[str(f["dir"]) for f in folds],
        checkpoints=[f["summary"].get("checkpoint") for f in folds],
        checkpoint_steps=[f["summary"].get("checkpoint_step") for f in folds],
        test_species={int(f["cv"]["fold"]): f["summary"]["eval_species"] for f in folds},
        n_species=len(set(species.tolist())),
        n_samples=int(species.size),
        methods=methods,
        means=_means(summary),
        tests=tests,
        base_val_species=tuned,
        without_base_val=untuned,
        statistics=_procedure(int(cv["folds"]), len(set(species.tolist())), methods[0]),
    )
    write_json(out / "summary.json", json_safe(result))
    return result


def _procedure(K: int, n_species: int, first: str) -> str:
    return (
        f"{K}-fold cross-validation over species (tomodata.store.folds): each species is a test species of "
        "exactly one fold, whose network never trained on it and chose its checkpoint on other species; the "
        "NN, Oracle and mean baselines of a fold search that fold's train species. The folds' per-sample "
        f"metrics are pooled. {statistics_text(n_species=n_species, first_method=first)} "
        f"Fold level (level=fold): each fold's mean of its test species' means, t-interval over the {K} folds "
        "and paired t-tests on them: the K models share most of their training data, so the species are not "
        "independent across folds and no unbiased variance estimate of K-fold cross-validation exists "
        "(Bengio & Grandvalet 2004); the fold level, with few units, is the cautious reading. "
        "without_base_val: the species level without the store's own val species, on which the settings "
        "(network, steps, learning rate) were chosen before."
    )
