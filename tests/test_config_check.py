"""Config errors that help (tomodata.config_check and the Snakefile): key paths, "did you mean", every
problem at once, no schema dump, the schema's defaults filled as Snakemake's validate fills them;
resources keys checked against the workflow's rule names."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml
from snakemake.utils import validate
from test_workflow import ROOT, smk

from tomodata.config_check import (
    NESTED_TEXT_NOTE,
    ConfigError,
    add_list_errors,
    check_config,
    check_resources,
    config_file_errors,
    gpu_problems,
    overlay_errors,
    rule_names,
    value_errors,
    value_warnings,
)
from tomodata.render import cuda_available

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
    assert "(rules: align, align_sheet, apps, cube, cv_evaluate, cv_summary, cv_train, cv_view, demo_movies," in str(
        e.value
    ) and " all," not in str(e.value)


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
        ({"data": {"cube": {"window": [5, 1]}}}, "data.cube.window: window must be two finite numbers lo < hi"),
        ({"data": {"manifest": "m.tsv"}}, "data.manifest: 'm.tsv' is set, but data.source is 'demo', which ignores it"),
        ({"model": {"train": {"device": "gpu"}}}, "model.train.device: 'gpu' does not match the pattern"),
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


# ------------------------------------------------------------------ across keys, files, overlays
def test_value_errors_the_schema_lets_through():
    cfg = base()
    check_config(cfg, SCHEMA)
    assert value_errors(cfg) == [] and value_warnings(cfg) == []
    cfg["data"]["manifest"] = "manifests/mice.tsv"  # ignored by the demo: an overlay given alone
    cfg["data"]["cube"].update(window=[5, 1], orientation="z,z,x")
    errors = value_errors(cfg)
    assert len(errors) == 3
    assert errors[0].startswith("data.manifest: 'manifests/mice.tsv' is set, but data.source is 'demo'")
    assert errors[1] == "data.cube.window: window must be two finite numbers lo < hi, got [5, 1]"
    assert errors[2].startswith("data.cube.orientation: orientation must name z, y and x once each")
    cfg["data"]["align"]["reference"] = "sp00"
    assert value_warnings(cfg) == [
        "data.align.reference 'sp00' is set, but data.align.enabled is false: nothing is aligned (set "
        "data.align.enabled: true to align every specimen to it)"
    ]


def test_schema_refuses_device_names_and_tiny_volumes():
    cfg = base()
    cfg["model"]["train"]["device"] = "gpu"
    cfg["dataset"]["volume_size"] = 2
    msg = problems(cfg)
    assert "model.train.device: 'gpu' does not match the pattern" in msg
    assert "dataset.volume_size: must be >= 4, given 2" in msg
    for ok in ("cpu", "cuda", "cuda:1"):
        cfg = base()
        cfg["model"]["train"]["device"] = ok
        check_config(cfg, SCHEMA)


def test_nested_cli_values_read_as_text_say_why():
    cfg = base()
    cfg["dataset"]["volume_size"] = "64"  # as Snakemake's --config dataset={volume_size: 64} gives it
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA, {"dataset": {"volume_size": "64"}})
    assert "dataset.volume_size: expected integer, given string '64'" in str(e.value)
    assert NESTED_TEXT_NOTE in str(e.value)
    for cli in ({"run": "x"}, {"render": {"batch": "4"}}):  # the text from a config file: no note
        with pytest.raises(ConfigError) as e:
            check_config(copy.deepcopy(cfg), SCHEMA, cli)
        assert NESTED_TEXT_NOTE not in str(e.value)


def test_config_file_errors_name_the_file_and_line(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("run: a\ndataset:\n  n_views: 4\n  chi: 1\n  n_views: 8\nrun: b\nlist:\n  - {x: 1, x: 2}\n")
    assert config_file_errors(f) == [
        f"config file {f}: dataset.n_views is given twice (lines 3 and 5); YAML would keep the last one in silence",
        f"config file {f}: run is given twice (lines 1 and 6); YAML would keep the last one in silence",
        f"config file {f}: list.0.x is given twice (lines 8 and 8); YAML would keep the last one in silence",
    ]
    f.write_text("run: demo\n  bad: [\n")
    assert config_file_errors(f) == [
        f"config file {f} is not YAML (mapping values are not allowed here at line 2, column 6)"
    ]
    f.write_bytes("# réglage\nrun: démo\n".encode("latin-1"))
    assert config_file_errors(f) == [f"config file {f} is not a UTF-8 text file (byte 3: invalid continuation byte)"]
    f.write_text("")
    assert config_file_errors(f) == [f"config file {f} is empty, not keys at the top level (e.g. 'run: demo')"]
    f.write_text('{\n\t"run": "a",\n\t"dataset": {"chi": 1, "chi": 2}\n}\n')  # JSON indented with tabs: no YAML
    assert config_file_errors(f) == [
        f"config file {f}: 'chi' is given twice in one object; JSON would keep the last one"
    ]
    f.write_text('{\n\t"run": "a",\n\t"dataset": {"chi": 1, "chi": 2, "chi": 3}\n}\n')  # once, however often
    assert config_file_errors(f) == [
        f"config file {f}: 'chi' is given twice in one object; JSON would keep the last one"
    ]
    f.write_text("[1, 2]")
    assert config_file_errors(f) == [f"config file {f} holds a JSON list, not keys at the top level"]
    f.write_text("- run: demo\n")
    assert config_file_errors(f) == [f"config file {f} holds a list, not keys at the top level (e.g. 'run: demo')"]


@pytest.mark.parametrize("name", ["config.yaml", *sorted(p.name for p in (ROOT / "workflow/configs").glob("*.yaml"))])
def test_shipped_config_files_are_clean(name):
    path = ROOT / name if name == "config.yaml" else ROOT / "workflow/configs" / name
    assert config_file_errors(path) == []
    chain = [path]  # an overlay names a config file that exists, and is accepted after it (and its bases)
    while over := (yaml.safe_load(chain[0].read_text()).get("overlay") or {}).get("over"):
        assert (chain[0].parent / over).is_file()
        chain.insert(0, (chain[0].parent / over).resolve())
    assert overlay_errors([str(p) for p in chain]) == []


def test_overlays_come_after_the_file_they_change(tmp_path: Path):
    (tmp_path / "base.yaml").write_text("run: base\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/over.yaml").write_text("overlay: {over: ../base.yaml}\nrun: longer\n")
    (tmp_path / "other.yaml").write_text("run: other\n")
    assert overlay_errors(["base.yaml", "sub/over.yaml"], cwd=tmp_path) == []
    assert overlay_errors(["base.yaml", "other.yaml", "sub/over.yaml"], cwd=tmp_path) == []
    assert overlay_errors(["sub/over.yaml"], cwd=tmp_path) == [
        "sub/over.yaml is an overlay over base.yaml, which is not given: give base.yaml first "
        "(snakemake --configfile base.yaml sub/over.yaml)"
    ]
    (err,) = overlay_errors(["sub/over.yaml", "base.yaml"], cwd=tmp_path)
    assert err.startswith("sub/over.yaml is an overlay over base.yaml, which comes after it (the last file given wins")
    (err,) = overlay_errors(["base.yaml", "sub/over.yaml", "base.yaml"], cwd=tmp_path)  # base again after it
    assert "comes after it" in err
    (tmp_path / "sub/over.yaml").write_text("overlay: {over: ../gone.yaml}\n")
    assert overlay_errors(["sub/over.yaml"], cwd=tmp_path) == [
        "sub/over.yaml: overlay.over '../gone.yaml' does not exist (relative to the overlay's folder sub): correct it"
    ]
    (tmp_path / "sub/over.yaml").write_text("overlay: {over: ../base.yaml}\n")  # the default file comes first
    assert overlay_errors(["sub/over.yaml"], cwd=tmp_path, default="base.yaml") == []
    (tmp_path / "sub/over.yaml").write_text("overlay: base.yaml\n")
    assert overlay_errors(["sub/over.yaml"], cwd=tmp_path) == [
        "sub/over.yaml: overlay must be {over: CONFIG FILE} (the config it changes), given 'base.yaml'"
    ]


def test_data_add_in_two_config_files_must_be_mappings(tmp_path: Path):
    """Snakemake merges mappings across config files but replaces lists: data.add as a list in two files
    kept only the last file's overlays, and the others' scans left the store in silence (helper-72)."""
    (tmp_path / "a.yaml").write_text("data: {add: [a.tsv]}\n")
    (tmp_path / "b.yaml").write_text("data: {add: [b.tsv]}\n")
    (tmp_path / "ma.yaml").write_text("data: {add: {a: a.tsv}}\n")
    (tmp_path / "mb.yaml").write_text("data: {add: {b: b.tsv}}\n")
    (tmp_path / "none.yaml").write_text("data: {add: []}\n")
    (err,) = add_list_errors(["a.yaml", "b.yaml"], cwd=tmp_path)
    assert "data.add is given in 2 config files (a.yaml: ['a.tsv']; b.yaml: ['b.tsv'])" in err
    assert "only b.yaml's overlays would be used" in err and "data: {add: {my_scans: my-scans.tsv}}" in err
    assert len(add_list_errors(["ma.yaml", "b.yaml"], cwd=tmp_path)) == 1  # a list after a mapping replaces it
    assert add_list_errors(["ma.yaml", "mb.yaml"], cwd=tmp_path) == []  # mappings merge
    assert add_list_errors(["none.yaml", "a.yaml"], cwd=tmp_path) == []  # an empty list adds nothing
    assert add_list_errors(["a.yaml"], cwd=tmp_path) == []
    assert add_list_errors(["a.yaml", "a.yaml"], cwd=tmp_path) == []  # config.yaml read and also given
    (tmp_path / "ab.yaml").write_text("data: {add: [a.tsv, b.tsv]}\n")
    assert add_list_errors(["a.yaml", "ab.yaml"], cwd=tmp_path) == []  # the later list keeps a.tsv
    (tmp_path / "s.yaml").write_text("data: {add: a.tsv}\n")
    assert add_list_errors(["s.yaml", "b.yaml"], cwd=tmp_path) == []  # not a list: the schema names it


def test_the_workflow_names_config_file_mistakes(tmp_path: Path):
    """An overlay given alone, a key given twice: the workflow stops naming the file."""
    over = ROOT / "workflow/configs/mice-long.yaml"
    out = smk(tmp_path, "-n", "--cores", "1", "--configfile", str(over), check=False).stdout
    # paths as typed from where the command started ($PWD), not from --directory's folder
    assert re.search(
        r"\S*workflow/configs/mice-long.yaml is an overlay over \S*workflow/configs/mice.yaml, which is not given", out
    ), out[-2000:]
    (tmp_path / "twice.yaml").write_text("run: a\nrun: b\n")
    out = smk(tmp_path, "-n", "--cores", "1", "--configfile", str(tmp_path / "twice.yaml"), check=False).stdout
    assert "twice.yaml: run is given twice (lines 1 and 2)" in out, out[-2000:]
    # a target after --configfile A B is read as one more config file: named as a likely target
    (tmp_path / "final.json").write_text('{"store": "x.zarr", "completion": {}}')
    files = [str(over.parent / "mice.yaml"), str(tmp_path / "final.json")]
    out = smk(tmp_path, "-n", "--cores", "1", "--configfile", *files, check=False).stdout
    assert "final.json is not a config file of this workflow (its keys: completion, store; a config has data, " in out
    assert "if it is a target, give it before --configfile" in out and "unknown key" not in out, out[-2000:]
    (tmp_path / "config.yaml").write_text("run: demo\n  bad: [\n")  # the default file: Snakemake names none
    out = smk(tmp_path, "-n", "--cores", "1", check=False).stdout
    assert "config.yaml is not YAML (mapping values are not allowed here at line 2, column 6)" in out


def test_a_gpu_config_without_a_gpu_stops_before_any_job(tmp_path: Path):
    """render.backend: cuda or model.train.device: cuda where the jobs run here and there is no GPU: the
    run stops before its first job (Snakemake's onstart); a dry run, or a run of targets that need no
    GPU job, goes on."""
    if cuda_available():
        pytest.skip("this machine has CUDA: the check passes")
    (tmp_path / "gpu.yaml").write_text("render: {backend: cuda}\nmodel: {train: {device: cuda}}\n")
    args = ["--cores", "1", "--configfile", str(ROOT / "config.yaml"), str(tmp_path / "gpu.yaml")]
    smk(tmp_path, "-n", *args)
    out = smk(tmp_path, *args, check=False)
    assert out.returncode != 0 and "jobs of this run need a GPU" in out.stdout, out.stdout[-2000:]
    assert "render.backend: cuda" in out.stdout
    if not torch_cuda():
        assert "model.train.device: cuda (torch sees no CUDA device; rules " in out.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
    smk(tmp_path, *args, "--until", "store_settings")  # no GPU job among them
    assert (tmp_path / "results/demo/dataset.settings.json").is_file()


def test_gpu_needs_of_jobs_in_their_own_environments_warn_instead_of_stopping():
    """helper-79: under --sdm conda, Snakemake runs from envs/workflow.yaml (no torch, no CuPy), and
    every local GPU run stopped with "which has none", also on a GPU machine whose jobs' environments
    have both. Without --sdm the jobs run in Snakemake's environment: a package it lacks is named."""
    both = {"render": True, "model_rules": {"train", "evaluate"}, "device": "cuda"}
    missing, unchecked = gpu_problems(**both, cupy_cuda=False, torch_cuda=False)
    assert missing[0].startswith("render.backend: cuda (CuPy and a CUDA device: pip install")
    assert missing[1] == "model.train.device: cuda (torch sees no CUDA device; rules evaluate, train)"
    assert unchecked == []
    assert gpu_problems(**both, cupy_cuda=True, torch_cuda=True) == ([], [])
    missing, unchecked = gpu_problems(**both, cupy_cuda=None, torch_cuda=None)
    assert missing[0].startswith("render.backend: cuda (CuPy is not installed: pip install")
    assert missing[1] == (
        "model.train.device: cuda (torch is not installed in this environment, where the jobs run; "
        "rules evaluate, train)"
    )
    missing, unchecked = gpu_problems(**both, cupy_cuda=None, torch_cuda=None, job_environments="conda")
    assert missing == [] and unchecked == [
        "render.backend: cuda: the jobs run in their own environments (conda)",
        "model.train.device: cuda: the jobs run in their own environments (conda)",
    ]
    assert gpu_problems(False, set(), "cpu", cupy_cuda=None, torch_cuda=None) == ([], [])


def test_a_mirror_that_is_no_folder_stops_the_fetches(tmp_path: Path):
    (tmp_path / "mirror.yaml").write_text("data: {fetch: {mirror: nowhere}}\n")
    args = ["--cores", "1", "--configfile", str(ROOT / "config.yaml"), str(tmp_path / "mirror.yaml")]
    out = smk(tmp_path, *args, check=False)
    assert out.returncode != 0 and "data.fetch.mirror: nowhere is not a folder" in out.stdout, out.stdout[-2000:]
    assert not (tmp_path / "resources").exists()


def torch_cuda() -> bool:
    return torch.cuda.is_available()
