"""Config errors that help (tomodata.config_check and the Snakefile): key paths, "did you mean", every
problem at once, no schema dump; resources keys checked against the workflow's rule names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from test_workflow import ROOT, smk
from tomodata.config_check import ConfigError, check_config, check_resources, config_errors, rule_names

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def base() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_typo_names_its_path_and_the_key_meant():
    cfg = base()
    cfg["data"]["cube"]["windw"] = [0, 1]
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA)
    msg = str(e.value)
    assert "data.cube.windw: unknown key; did you mean 'window'?" in msg
    assert len(msg.splitlines()) <= 3 and "description" not in msg and "properties" not in msg


def test_every_problem_listed_once():
    cfg = base()
    cfg["data"]["cube"]["crop"] = "smallest"
    cfg["dataset"]["n_views"] = -3
    cfg["render"]["backnd"] = "cpu"
    cfg["data"]["demo"]["species"] = "many"
    errors = config_errors(cfg, yaml.safe_load(SCHEMA.read_text()))
    assert len(errors) == 4
    text = "\n".join(errors)
    assert "data.cube.crop: 'smallest' is not allowed; allowed: largest, none" in text
    assert "dataset.n_views: -3 does not satisfy minimum 1" in text
    assert "render.backnd: unknown key; did you mean 'backend'?" in text
    assert "data.demo.species: 'many' is a str, expected integer" in text
    check_config(base(), SCHEMA)  # the shipped config is fine


def test_resources_keys_are_rule_names():
    names = rule_names(ROOT / "workflow/rules")
    assert {"render_species", "demo_movies", "align", "train"} <= set(names)
    check_resources(base(), names)
    cfg = base()
    cfg["resources"]["render_specie"] = {"threads": 1}
    with pytest.raises(ConfigError, match="resources.render_specie: not a rule of this workflow; did you mean "
                                          "'render_species'?"):
        check_resources(cfg, names)


@pytest.mark.parametrize("extra, expected", [
    ({"data": {"cube": {"windw": [0, 1]}}}, "data.cube.windw: unknown key; did you mean 'window'?"),
    ({"resources": {"trian": {"threads": 1}}}, "resources.trian: not a rule of this workflow; did you mean 'train'?"),
])
def test_the_workflow_stops_with_the_message(tmp_path: Path, extra, expected):
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(extra))
    out = smk(tmp_path, "-n", "--configfile", str(ROOT / "config.yaml"), str(tmp_path / "typo.yaml"), check=False)
    assert out.returncode != 0 and expected in out.stdout, out.stdout[-2000:]
    assert len(out.stdout.splitlines()) < 20  # no schema dump
