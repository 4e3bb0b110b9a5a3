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
                 level (species: t and Wilcoxon; fold: t and the corrected resampled t over the K fold
                 means; sample: t), Holm over the first method's comparisons
                 (:func:`model.eval_tables.holm_column`)
``species.csv``  method, species, metric, mean, n_samples, plus the species' ``fold``
``folds.csv``    fold, test species, val species, checkpoint step, and per method the fold's l2 / DSSIM
``summary.json`` all of that, the procedure in words and the species-level result without the
                 store's own val species (settings chosen before were judged on them) and on the store's
                 own train species only (never evaluated before)
``report.md``    the result as a page of tables (:mod:`model.cv_report`; also ``tomo cv-report``)

Neither level is exact: the species level treats the species as independent, but the species of one
fold share one network; the fold level's plain t averages that out but ignores that the K networks
share most of their training data (no unbiased estimate of K-fold variance exists, Bengio & Grandvalet
2004); its corrected resampled t (Nadeau & Bengio 2003, :func:`model.stats.corrected_resampled_t`)
widens the variance for that overlap: the conservative one of the three.
The species level's unit is the held-out unit: a species label with several specimens is one unit
(:func:`held_out_units`); the sample level counts each specimen's views.

``pool_folds(eval_dirs, out) -> dict``   (summary.json's content)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tomodata.files import json_safe, read_json_object, write_json
from tomodata.store import SPLITS, open_store
from tomodata.store.folds import CV_KEY, fold_groups

from . import stats as ST
from .cv_report import write_cv_report
from .eval_source import store_content
from .eval_tables import (
    CI_LEVEL,
    SPECIES_COLUMNS,
    SUMMARY_COLUMNS,
    TESTS_COLUMNS,
    holm_column,
    means_text,
    statistics_tables,
    statistics_text,
    write_csv,
)
from .metrics import HOLM_METRICS, METRICS
from .names import (
    CV_BASE_TRAIN_ONLY,
    CV_FOLDS_CSV,
    CV_WITHOUT_BASE_VAL,
    EVAL_METRICS,
    EVAL_SPECIES,
    EVAL_SUMMARY,
    EVAL_SUMMARY_CSV,
    EVAL_TESTS,
)

__all__ = ["pool_folds", "held_out_units", "FOLDS_COLUMNS"]

FOLDS_COLUMNS = ("fold", "method", "metric", "mean", "n_species", "test_species", "val_species", "checkpoint_step")


def _read_fold(d: Path) -> dict:
    """One fold's evaluation: its summary.json, its fold view (checked to be as evaluated) and metrics.csv."""
    s = read_json_object(d / EVAL_SUMMARY, "an evaluation summary", keys=("store", "eval_split", "methods"))
    if s["eval_split"] != "test":
        raise ValueError(f"{d}: evaluated split {s['eval_split']!r}; a fold's result is its test split")
    where = s.get("store_resolved") or s["store"]  # older summaries: the path as given, from this folder
    try:
        ds = open_store(where)
    except ValueError as e:
        raise ValueError(f"{d}: its store cannot be read as it was evaluated: {e}") from None
    cv = ds.attrs.get(CV_KEY)
    if not cv:
        raise ValueError(f"{d}: evaluated {where}, a store, not a fold view (tomo cv-view)")
    if ds.attrs["splits"] != s.get("splits") or store_content(ds) != s.get("store_content"):
        raise ValueError(
            f"{d}: the fold view {where} has other splits or data than when it was evaluated (made again with "
            "another seed or fold count, or the store changed): evaluate the fold again"
        )
    if not (d / EVAL_METRICS).is_file():
        raise ValueError(f"{d}: no metrics.csv beside summary.json: evaluate the fold again")
    m = pd.read_csv(d / EVAL_METRICS, dtype={"species": str})
    missing = sorted(set(s.get("eval_species") or []) - set(m["species"]))
    if missing:
        raise ValueError(
            f"{d}: test species {missing} have no evaluated samples (model.evaluate.max_samples below the fold's "
            "test species?): every test species must be evaluated"
        )
    base = (Path(where) / cv["base"]).resolve()
    return dict(dir=d, summary=s, cv=cv, base=base, table=ds.attrs["species"], n_views=ds.settings.n_views, metrics=m)


#: evaluation settings every fold must share (besides methods, sizes and network)
_SAME_SETTINGS = ("max_samples", "beta", "fusion_at", "iso", "ssim_data_range")


def _check_folds(folds: list[dict]) -> list[dict]:
    """The folds in fold order, checked to be the K folds of one store; ValueError naming what differs."""
    first = folds[0]
    for f in folds[1:]:
        if f["base"] != first["base"]:
            raise ValueError(f"{f['dir']} is a fold of {f['base']}, {first['dir']} of {first['base']}")
        for k in ("folds", "seed", "base_completion"):
            if f["cv"][k] != first["cv"][k]:
                raise ValueError(f"{f['dir']} and {first['dir']} differ in {k} (folds of different views)")
        for k in ("methods", "image_size", "target_shape", "network"):
            if f["summary"].get(k) != first["summary"].get(k):
                raise ValueError(f"{f['dir']} and {first['dir']} differ in {k}: evaluated differently")
        for k in _SAME_SETTINGS:
            a, b = ((x["summary"].get("settings") or {}).get(k) for x in (f, first))
            if a != b:
                raise ValueError(f"{f['dir']} and {first['dir']} differ in settings.{k} ({a} vs {b})")
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
    every = [e["name"] for e in first["table"]]
    if sorted(seen) != sorted(every):
        raise ValueError(f"the folds' test species miss {sorted(set(every) - set(seen))}: evaluate every species")
    return folds


def held_out_units(table: list[dict]) -> dict[str, str]:
    """Specimen name → the unit a fold holds out (:func:`tomodata.store.folds.fold_groups`): its own name
    where its species label has one specimen, else that label (as first written), or ``species:LABEL``
    where the label is also a specimen's name (two units never share an id). ValueError where even
    that is taken."""
    groups = fold_groups(table)
    names = {n for g in groups for n in g}
    out = {}
    for g in groups:
        if len(g) == 1:
            out[g[0]] = g[0]
            continue
        label = next(str(e.get("species") or "").strip() for e in table if e["name"] == g[0])
        unit = label if label not in names else f"species:{label}"
        if unit in names:
            raise ValueError(
                f"species label {label!r} of {g} cannot name its unit: {label!r} and {unit!r} are specimens"
            )
        out.update(dict.fromkeys(g, unit))
    return out


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
        for metric in [k for k in METRICS if all(k in f["metrics"].columns for f in folds)]:
            per[m][metric] = rows[metric].to_numpy(np.float64)  # a metric added since a fold's evaluation: left out
    assert keys is not None
    return per, keys[:, 0].astype(str), keys[:, 1].astype(np.int64), keys[:, 2].astype(np.int64)


def _fold_means(values: np.ndarray, units: np.ndarray, fold: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """(K,) each fold's mean of its units' means of ``values`` (NaN samples left out)."""
    return np.array([np.nanmean(ST.species_means(values[fold == f], units[fold == f])[1]) for f in ks])


def _split_sizes(folds: list[dict], unit_of: dict[str, str]) -> tuple[float, float]:
    """(n_train, n_test): the held-out units a fold trains on and tests, means over the folds (a fold's
    summary has the splits of its view: :func:`_read_fold` checks them)."""
    train = [len({unit_of.get(n, n) for n in f["summary"]["splits"]["train"]}) for f in folds]
    test = [len({unit_of.get(n, n) for n in f["summary"]["eval_species"]}) for f in folds]
    return float(np.mean(train)), float(np.mean(test))


def _fold_level(
    per, units, fold, methods, sizes: tuple[float, float], *, level: float = CI_LEVEL
) -> tuple[list[dict], list[dict]]:
    """summary and tests rows of the fold level: each fold's mean of its units' means; a pair of methods
    is compared on the samples where both have a value, by the paired t and the corrected resampled t
    (:func:`model.stats.corrected_resampled_t` with ``sizes`` = (n_train, n_test))."""
    ks = np.unique(fold)
    metrics = [k for k in METRICS if k in per[methods[0]]]
    summary = []
    for m in methods:
        for k in metrics:
            mean, lo, hi, n = ST.mean_ci(_fold_means(per[m][k], units, fold, ks), level)
            summary.append(dict(method=m, metric=k, level="fold", mean=mean, ci_low=lo, ci_high=hi, n=n))
    tests = []
    for k in metrics:
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                both = np.isfinite(per[a][k]) & np.isfinite(per[b][k])
                x, y = (_fold_means(np.where(both, per[m][k], np.nan), units, fold, ks) for m in (a, b))
                ok = np.isfinite(x) & np.isfinite(y)
                t, p = ST.paired_t(x[ok], y[ok])
                tests.append(
                    dict(metric=k, method_a=a, method_b=b, level="fold", test="t", statistic=t, p=p, n=int(ok.sum()))
                )
                ct, cp, _ = ST.corrected_resampled_t(x[ok], y[ok], n_train=sizes[0], n_test=sizes[1])
                tests.append(
                    dict(
                        metric=k, method_a=a, method_b=b, level="fold", test="corrected t", statistic=ct, p=cp,
                        n=int(ok.sum()),
                    )
                )  # fmt: skip
    return summary, tests


def _fold_rows(folds: list[dict], per, units, fold, methods) -> list[dict]:
    rows = []
    for f in folds:
        k = int(f["cv"]["fold"])
        s = f["summary"]
        for m in methods:
            for metric in [k for k in HOLM_METRICS if k in per[m]]:
                sm = ST.species_means(per[m][metric][fold == k], units[fold == k])[1]
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


def _subset(per, units, sample, n_views, methods, keep: np.ndarray, note: str) -> dict | None:
    """The species level on the samples ``keep`` (None with fewer than 2 units)."""
    if len(set(units[keep].tolist())) < 2:
        return None
    sub = {m: {k: v[keep] for k, v in d.items()} for m, d in per.items()}
    t = statistics_tables(sub, units[keep].tolist(), sample[keep], n_views, methods=methods)
    return dict(
        what=note,
        species=sorted(set(units[keep].tolist())),
        means=_means([r for r in t["summary"] if r["level"] == "species"]),
        tests=[r for r in t["tests"] if r["level"] == "species"],
    )


def pool_folds(eval_dirs: Sequence, out) -> dict:
    """Pool the K folds' evaluations in ``eval_dirs`` into ``out`` (module docstring); returns the
    summary written to ``out/summary.json``. ValueError where they are not the K folds of one store."""
    if not eval_dirs:
        raise ValueError("no fold evaluations given")
    folds = _check_folds([_read_fold(Path(d)) for d in eval_dirs])
    methods = list(folds[0]["summary"]["methods"])
    n_views, table = folds[0]["n_views"], folds[0]["table"]
    per, names, sample, fold = _stack(folds, methods)
    unit_of = held_out_units(table)
    units = np.asarray([unit_of[n] for n in names.tolist()])
    tab = statistics_tables(per, units.tolist(), sample, n_views, methods=methods)  # species level: the held-out units
    smp = tab if np.array_equal(units, names) else statistics_tables(per, names, sample, n_views, methods=methods)
    sizes = _split_sizes(folds, unit_of)
    f_summary, f_tests = _fold_level(per, units, fold, methods, sizes)
    summary = (
        [r for r in tab["summary"] if r["level"] == "species"]
        + f_summary
        + [r for r in smp["summary"] if r["level"] == "sample"]
    )
    tests = holm_column(
        [r for r in tab["tests"] if r["level"] == "species"]
        + f_tests
        + [r for r in smp["tests"] if r["level"] == "sample"],
        methods[0],
    )
    fold_of = dict(zip(units.tolist(), fold.tolist()))
    sp_rows = [dict(r, fold=fold_of[r["species"]]) for r in tab["species"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / EVAL_SUMMARY_CSV, SUMMARY_COLUMNS, summary)
    write_csv(out / EVAL_TESTS, TESTS_COLUMNS, tests)
    write_csv(out / EVAL_SPECIES, (*SPECIES_COLUMNS, "fold"), sp_rows)
    write_csv(out / CV_FOLDS_CSV, FOLDS_COLUMNS, _fold_rows(folds, per, units, fold, methods))
    cv = folds[0]["cv"]
    base_splits = cv.get("base_splits") or {}
    in_base = {sp: {unit_of[n] for n in base_splits.get(sp) or [] if n in unit_of} for sp in SPLITS}
    n_units = len(set(units.tolist()))
    result = dict(
        base_store=str(folds[0]["base"]),
        folds=int(cv["folds"]),
        seed=int(cv["seed"]),
        unit=cv["unit"],
        evaluations=[str(f["dir"]) for f in folds],
        checkpoints=[f["summary"].get("checkpoint") for f in folds],
        checkpoint_steps=[f["summary"].get("checkpoint_step") for f in folds],
        test_species={int(f["cv"]["fold"]): f["summary"]["eval_species"] for f in folds},
        held_out_units={n: u for n, u in unit_of.items() if n != u},
        n_species=n_units,
        n_samples=int(names.size),
        fold_sizes=dict(n_train=sizes[0], n_test=sizes[1]),
        methods=methods,
        means=_means(summary),
        tests=tests,
        base_splits={sp: sorted(v) for sp, v in in_base.items()},
        **{
            CV_WITHOUT_BASE_VAL: _subset(
                per, units, sample, n_views, methods, ~np.isin(units, sorted(in_base["val"])),
                "species level without the store's own val species (the settings were chosen on them)",
            ),
            CV_BASE_TRAIN_ONLY: _subset(
                per, units, sample, n_views, methods,
                np.isin(units, sorted(in_base["train"] - in_base["val"] - in_base["test"])),
                "species level on the store's own train species only: neither used for a choice nor evaluated as "
                "the run's own result before",
            ),
        },
        statistics=_procedure(int(cv["folds"]), n_units, methods[0]),
    )  # fmt: skip
    write_json(out / EVAL_SUMMARY, json_safe(result))
    write_cv_report(out)
    return result


def _procedure(K: int, n_species: int, first: str) -> str:
    return (
        f"{K}-fold cross-validation over species (tomodata.store.folds): each species is a test species of "
        "exactly one fold, whose network never trained on it and chose its checkpoint on other species; the "
        "NN, Oracle and mean baselines of a fold search that fold's train species. The folds' per-sample "
        "metrics are pooled; the species level's unit is the held-out unit (a species label with several "
        "specimens is one unit), the sample level's the specimen's view. "
        f"{statistics_text(n_species=n_species, first_method=first)} "
        f"Fold level (level=fold): each fold's mean of its test species' means, t-interval over the {K} folds "
        "and paired t-tests on them (test=t), and the corrected resampled t-test of Nadeau & Bengio (2003) on "
        f"the same {K} differences (test='corrected t': variance factor 1/{K} + n_test/n_train instead of 1/{K}, "
        "with the mean numbers of held-out units a fold tests and trains on, fold_sizes; df = K - 1). Neither "
        "level is exact: the species level treats the species as independent, but the species a fold tests "
        "share one network, and the fold level's plain t averages that out but still ignores that the K "
        "networks share most of their training data, so its interval is also too narrow (no unbiased "
        "estimate of K-fold variance exists, Bengio & Grandvalet 2004); the corrected t allows for that "
        "overlap and is the conservative test. "
        "without_base_val: the species level without the store's own val species, on which settings were "
        "chosen before; base_train_only: only the store's own train species (never used for a choice nor "
        "evaluated as the run's own result)."
    )


def pooled_text(res: dict) -> str:
    """What ``tomo cv-summary`` prints of :func:`pool_folds`' result: the means at the species and the
    fold level, then the first method against each other, Holm-adjusted p of the species-level paired
    t and the fold level's corrected t."""
    lines = [f"{res['folds']} folds, {res['n_species']} species each tested once ({res['n_samples']} samples)"]
    lines += means_text(res["means"], {"species": "species level", "fold": "fold level"}, skip=("mse",))
    first = res["methods"][0]
    lines.append(
        f"{first} against each method, Holm-adjusted p: paired t on the species means / corrected t on the folds"
    )
    for metric in [k for k in HOLM_METRICS if k in res["means"]["species"][first]]:
        p = {
            (r["method_b"], r["level"], r["test"]): r["p_holm"]
            for r in res["tests"]
            if r["metric"] == metric and r["method_a"] == first
        }
        means = {m: v[metric]["mean"] for m, v in res["means"]["species"].items()}
        pairs = [
            f"{m} {p[(m, 'species', 't')]:.2g} / {p.get((m, 'fold', 'corrected t'), math.nan):.2g}"
            + (f" ({first} worse)" if means[first] > means[m] else "")
            for m in res["methods"][1:]
            if (m, "species", "t") in p
        ]
        lines.append(f"  {metric:11} " + "  ".join(pairs))
    return "\n".join(lines)
