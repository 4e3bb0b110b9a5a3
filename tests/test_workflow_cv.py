"""The workflow's cross-validation rules (workflow/rules/cv.smk, model.cv): a fold count the species
cannot fill stops at parse time, before any job. The rules themselves run in
tests/test_workflow.py::test_full_pipeline_tiny (3 folds: views, networks, evaluations, the pooled
tables; another seed re-runs only the folds; cross-validation off plans nothing)."""

from __future__ import annotations

import pytest
import yaml
from test_workflow import TINY_MODEL, smk, tiny_config

pytestmark = pytest.mark.timeout(600)  # a hang guard (2 workers share the machine)


@pytest.mark.parametrize("folds, message", [(2, "0 (no cross-validation) or at least 3"), (4, "has 3 species")])
def test_bad_fold_count_stops_before_any_job(tmp_path, folds, message):
    demo = {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config("cv", demo, {**TINY_MODEL, "cv": {"folds": folds}}), sort_keys=False))
    proc = smk(tmp_path, "-n", "--configfile", str(config), check=False)
    assert proc.returncode != 0 and message in proc.stdout
    assert not (tmp_path / "resources").exists()
