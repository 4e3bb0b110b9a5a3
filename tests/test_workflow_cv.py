"""The workflow's cross-validation rules (workflow/rules/cv.smk, model.cv): a tiny demo run with 3
folds makes every fold's view, network and evaluation and the pooled tables; a second run has
nothing to do; another fold seed re-runs the folds and nothing of the run's own result; turning
cross-validation off plans nothing; a fold count the species cannot fill stops at parse time."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from test_workflow import TINY_MODEL, planned_jobs, smk, tiny_config

from tomodata.store import open_store

pytestmark = pytest.mark.timeout(900)


def _config(tmp_path, **cv):
    demo = {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}}
    cfg = tiny_config("cv", demo, {**TINY_MODEL, "explorer": {"enabled": False}, "cv": cv})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_cross_validation_rules(tmp_path):
    """Only the pooled result is asked for (the run's own model rules are tested elsewhere)."""
    config = _config(tmp_path, folds=3, seed=0)
    target = "results/cv/cv/summary.json"
    dry = {rule for rule, _ in planned_jobs(tmp_path, "--configfile", str(config))}
    assert {"cv_view", "cv_train", "cv_evaluate", "cv_summary", "train", "evaluate"} <= dry  # all asks for both
    smk(tmp_path, target, "--cores", "2", "--configfile", str(config), timeout=900)
    res = tmp_path / "results/cv"
    store = open_store(res / "dataset.zarr")
    summary = json.loads((res / "cv/summary.json").read_text())
    assert summary["folds"] == 3 and summary["n_species"] == 3
    species = pd.read_csv(res / "cv/species.csv")
    assert sorted(species["species"].unique()) == store.species_names()
    assert species.groupby("species")["fold"].nunique().max() == 1
    for k in range(3):
        view = open_store(res / f"cv/fold{k}/dataset.zarr")
        ev = json.loads((res / f"cv/fold{k}/eval/summary.json").read_text())
        assert ev["eval_species"] == view.species_names("test") and ev["eval_split"] == "test"
        assert (tmp_path / f"logs/cv/cv/train_fold{k}.log").is_file()
    assert planned_jobs(tmp_path, target, "--configfile", str(config)) == []
    # another fold seed: the folds again (nothing before them)
    other = _config(tmp_path, folds=3, seed=1)
    rules = {rule for rule, _ in planned_jobs(tmp_path, target, "--configfile", str(other))}
    assert rules == {"cv_view", "cv_train", "cv_evaluate", "cv_summary"}
    # off: the run's own model rules only (the folds' files stay, unused)
    rules = {rule for rule, _ in planned_jobs(tmp_path, "--configfile", str(_config(tmp_path, folds=0)))}
    assert rules and not {r for r in rules if r.startswith("cv_")}


@pytest.mark.parametrize("folds, message", [(2, "0 (no cross-validation) or at least 3"), (4, "has 3 species")])
def test_bad_fold_count_stops_before_any_job(tmp_path, folds, message):
    proc = smk(tmp_path, "-n", "--configfile", str(_config(tmp_path, folds=folds)), check=False)
    assert proc.returncode != 0 and message in proc.stdout
