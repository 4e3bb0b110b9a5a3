"""Config errors that help (tomodata.config_check and the Snakefile): key paths, "did you mean", every
problem at once, no schema dump, the schema's defaults filled as Snakemake's validate fills them;
resources keys checked against the workflow's rule names."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from test_workflow import ROOT, smk

from tomodata.config_check import ConfigError, check_config, check_resources, rule_names

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def base() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def problems(cfg: dict) -> str:
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA)
    return str(e.value)


def test_typo_names_its_path_and_the_key_meant():
    cfg = base()
    cfg["data"]["cube"]["windw"] = [0, 1]
    msg = problems(cfg)
    assert "data.cube.windw: unknown key; did you mean 'window'?" in msg
    assert len(msg.splitlines()) <= 15  # no schema dump
    assert "description" not in msg and "properties" not in msg and "$defs" not in msg


def test_every_problem_listed_at_once():
    cfg = base()
    cfg["data"]["cube"]["crop"] = "smallest"
    cfg["dataset"]["n_views"] = -3
    cfg["render"]["backnd"] = "cpu"
    cfg["data"]["demo"]["species"] = "many"
    cfg["resources"]["cube"] = {"thread": 2}
    del cfg["run"]
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA)
    assert e.value.errors == [
        "run: missing (required)",
        "data.cube.crop: 'smallest' is not allowed (allowed: none, largest)",
        "data.demo.species: expected integer, given string 'many'",
        "dataset.n_views: must be >= 1, given -3",
        "render.backnd: unknown key; did you mean 'backend'?",
        "resources.cube.thread: unknown key; did you mean 'threads'?",
    ]
    assert str(e.value).splitlines()[0] == "the config has 6 problems:"


def test_enum_lists_the_allowed_values_and_the_one_meant():
    cfg = base()
    cfg["render"]["backend"] = "cdua"
    assert "render.backend: 'cdua' is not allowed; did you mean 'cuda'? (allowed: auto, cpu, cuda)" in problems(cfg)
    cfg = base()
    cfg["data"]["cube"]["window"] = "hu-bones"  # a oneOf: null, [lo, hi] or a preset
    assert (
        "data.cube.window: expected null or a list of 2 numbers or one of 'hu-bone', 'hu-head', given string "
        "'hu-bones'; did you mean 'hu-bone'?"
    ) in problems(cfg)


def test_problems_inside_a_fitting_branch_keep_their_path():
    cfg = base()
    cfg["model"]["real_xrays"] = {"a": {"path": "a.png", "gama": 2.2}, "b": {"polarity": "up"}, "c d": "c.png"}
    msg = problems(cfg)
    assert "model.real_xrays.a.gama: unknown key; did you mean 'gamma'?" in msg
    assert "model.real_xrays.b.path: missing (required)" in msg
    assert "model.real_xrays.b.polarity: 'up' is not allowed (allowed: auto, keep, invert)" in msg
    assert "model.real_xrays.c d: not a valid key name" in msg


@pytest.mark.parametrize("name", ["config.yaml", "workflow/configs/paper.yaml", "workflow/configs/micro-ct.yaml"])
def test_defaults_filled_as_snakemake_validate_fills_them(name):
    cfg = yaml.safe_load((ROOT / name).read_text())
    cfg["data"].pop("cube", None)  # defaults of a whole missing level, and of the levels inside it
    cfg.pop("model", None)
    theirs = copy.deepcopy(cfg)
    validate(theirs, str(SCHEMA))
    assert check_config(cfg, SCHEMA) is cfg
    assert cfg == theirs
    assert cfg["data"]["cube"]["crop"] == "none" and cfg["model"]["train"]["steps"] == 150000


def test_the_declared_draft_and_relative_refs(tmp_path: Path):
    (tmp_path / "part.yaml").write_text(
        "type: object\nadditionalProperties: false\nproperties: {size: {type: integer, default: 3}}\n"
    )
    schema = tmp_path / "schema.yaml"  # draft 7: `dependencies` (gone in 2020-12) must be honoured
    schema.write_text(
        "$schema: http://json-schema.org/draft-07/schema#\ntype: object\n"
        "properties: {part: {$ref: part.yaml, default: {}}, a: {type: string}, b: {type: string}}\n"
        "dependencies: {a: [b]}\n"
    )
    assert check_config({}, schema) == {"part": {"size": 3}}
    with pytest.raises(ConfigError) as e:
        check_config({"a": "x", "part": {"sise": 1}}, schema)
    assert e.value.errors[-1] == "part.sise: unknown key; did you mean 'size'?"
    assert len(e.value.errors) == 2 and "'b' is a dependency of 'a'" in e.value.errors[0]


def test_resources_keys_are_rule_names():
    names = rule_names(ROOT / "workflow/rules")
    assert {"render_species", "demo_movies", "align", "train"} <= set(names)
    check_resources(base(), names)
    cfg = base()
    cfg["resources"]["render_specie"] = {"threads": 1}
    cfg["resources"]["zzz"] = {"threads": 1}
    with pytest.raises(ConfigError) as e:
        check_resources(cfg, names + ["all"])
    assert e.value.errors == [
        "resources.render_specie: not a rule of this workflow; did you mean 'render_species'?",
        "resources.zzz: not a rule of this workflow",
    ]
    assert "(rules: align, align_sheet, apps, cube, demo_movies," in str(e.value) and " all," not in str(e.value)


def test_rule_files_ask_resources_of_their_own_rules():
    """res("NAME", ...) in a rule file names a rule (common.smk's res() refuses others at parse time)."""
    names = set(rule_names(ROOT / "workflow/rules"))
    asked = set()
    for f in (ROOT / "workflow/rules").glob("*.smk"):
        asked.update(re.findall(r'\bres\("(\w+)"', f.read_text()))
    assert asked and asked <= names, sorted(asked - names)
    assert 'raise ValueError(f"res({rule_name!r}): not a rule' in (ROOT / "workflow/rules/common.smk").read_text()


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"data": {"cube": {"windw": [0, 1]}}}, "data.cube.windw: unknown key; did you mean 'window'?"),
        (
            {"resources": {"render_specie": {"threads": 1}}},
            "resources.render_specie: not a rule of this workflow; did you mean 'render_species'?",
        ),
    ],
)
def test_the_workflow_stops_with_the_message(tmp_path: Path, extra, expected):
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump(extra))
    out = smk(
        tmp_path,
        "-n",
        "--cores",
        "1",
        "--configfile",
        str(ROOT / "config.yaml"),
        str(tmp_path / "typo.yaml"),
        check=False,
    )
    assert out.returncode != 0 and expected in out.stdout, out.stdout[-2000:]
    assert len(out.stdout.splitlines()) < 20 and "properties" not in out.stdout  # no schema dump
