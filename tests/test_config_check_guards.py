"""Config-check details the other tests leave open (tomodata.config_check): the key path and bound each
error line names, one line per problem, the nested --config note only for nested values, YAML merge
keys, and the overlay rules' edge cases."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tomodata.config_check import (
    NESTED_TEXT_NOTE,
    ConfigError,
    check_config,
    check_config_files,
    config_errors,
    config_file_errors,
    load_schema,
    overlay_errors,
    value_warnings,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def base() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def errors_of(cfg: dict, cli: dict | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        check_config(cfg, SCHEMA, cli)
    return e.value


def test_bounds_name_the_right_operator():
    """An exclusive minimum reads "> 0" (not ">= 0", which 0 itself would meet) and maxItems "at most"."""
    cfg = base()
    cfg["model"]["train"]["lr"] = 0
    assert errors_of(cfg).errors == ["model.train.lr: must be > 0, given 0"]
    cfg = base()
    cfg["data"]["cube"]["window"] = [1, 2, 3]
    assert errors_of(cfg).errors == ["data.cube.window: at most 2 items, given [1, 2, 3]"]


def test_a_wrong_item_inside_a_oneof_branch_keeps_its_path():
    """data.add is a list or a mapping: a list with a number in it is named at the item (data.add.0),
    not as "expected array or object, given array", which would leave the user guessing."""
    cfg = base()
    cfg["data"]["add"] = [1]
    assert errors_of(cfg).errors == ["data.add.0: expected string, given integer 1"]


def test_two_fitting_branches_give_the_general_line(tmp_path: Path):
    """Where several oneOf/anyOf branches have the instance's type, no one branch's errors are picked
    (they would tell the user to fix what the other branch does not need)."""
    schema = tmp_path / "schema.yaml"
    schema.write_text(
        "type: object\nproperties:\n  x:\n    anyOf:\n"
        "      - {type: object, required: [a]}\n      - {type: object, required: [b]}\n"
    )
    with pytest.raises(ConfigError) as e:
        check_config({"x": {}}, schema)
    assert e.value.errors == ["x: expected object or object, given object {}"]


def test_each_problem_is_listed_once():
    """A bad resources.default (a $ref checked through more than one path of the schema) gives each
    problem one line, not several copies."""
    cfg = base()
    cfg["resources"]["default"] = {"thread": 1}
    errors = errors_of(cfg).errors
    assert len(errors) == len(set(errors)), errors
    assert errors.count("resources.default.thread: unknown key; did you mean 'threads'?") == 1, errors


def test_a_problem_of_the_whole_config_names_the_top_level():
    """A problem of the config itself (not of a key) is named "(top level)", never an empty path."""
    assert config_errors([], load_schema(SCHEMA)) == ["(top level): expected object, given array []"]


def test_top_level_text_from_the_command_line_gets_no_nested_note():
    """--config dataset=x is a top-level value (Snakemake parses it as YAML): the note that nested
    --config values are read as text would be wrong there."""
    cfg = base()
    cfg["dataset"] = "x"
    err = errors_of(copy.deepcopy(cfg), {"dataset": "x"})
    assert "dataset: expected object, given string 'x'" in err.errors
    assert NESTED_TEXT_NOTE not in str(err)


def test_yaml_merge_keys_are_not_keys_given_twice(tmp_path: Path):
    """Two ``<<`` merge keys in one mapping are YAML merges (PyYAML applies both), not a duplicate key."""
    f = tmp_path / "c.yaml"
    f.write_text("a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n  z: 3\n")
    assert yaml.safe_load(f.read_text())["c"] == {"x": 1, "y": 2, "z": 3}
    assert config_file_errors(f) == []


def test_an_overlay_over_the_default_file_given_again_after_it(tmp_path: Path):
    """The default file (config.yaml) is read first, but given again after the overlay it replaces the
    overlay's values: refused as "comes after it", like any base given after its overlay."""
    (tmp_path / "base.yaml").write_text("run: base\n")
    (tmp_path / "over.yaml").write_text("overlay: {over: base.yaml}\nrun: longer\n")
    assert overlay_errors(["over.yaml"], cwd=tmp_path, default="base.yaml") == []
    (err,) = overlay_errors(["over.yaml", "base.yaml"], cwd=tmp_path, default="base.yaml")
    assert err.startswith("over.yaml is an overlay over base.yaml, which comes after it"), err


def test_an_overlay_spec_with_other_keys_is_refused(tmp_path: Path):
    """overlay: takes exactly {over: FILE}; another key (a typo such as "ovre", or a setting put under
    it) is named, not ignored."""
    (tmp_path / "base.yaml").write_text("run: base\n")
    (tmp_path / "over.yaml").write_text("overlay: {over: base.yaml, run: x}\n")
    assert overlay_errors(["base.yaml", "over.yaml"], cwd=tmp_path) == [
        "over.yaml: overlay must be {over: CONFIG FILE} (the config it changes), given "
        "{'over': 'base.yaml', 'run': 'x'}"
    ]


def test_an_enabled_alignment_with_a_reference_gives_no_warning():
    """data.align.reference warns only while data.align.enabled is false (then it does nothing)."""
    cfg = base()
    check_config(cfg, SCHEMA)
    cfg["data"]["align"].update(reference="sp00", enabled=True)
    assert value_warnings(cfg) == []
    cfg["data"]["align"]["enabled"] = False
    assert len(value_warnings(cfg)) == 1


# ------------------------------------------------------------------ check_config_files (the Snakefile's call)
@pytest.fixture()
def run_dir(tmp_path: Path, monkeypatch) -> Path:
    """A workflow folder ``tmp/run`` entered from ``tmp`` ($PWD), as with snakemake --directory run."""
    monkeypatch.setenv("PWD", str(tmp_path))
    (tmp_path / "run").mkdir()
    (tmp_path / "run/base.yaml").write_text("run: base\n")
    return tmp_path / "run"


KNOWN = ["data", "run"]


def files_errors(run_dir: Path, files, default="config.yaml") -> list[str]:
    with pytest.raises(ConfigError) as e:
        check_config_files(files, default=default, cwd=run_dir, known_keys=KNOWN)
    return e.value.errors


def test_config_files_name_paths_from_where_the_command_started(run_dir: Path):
    """A file's problem names it as typed from $PWD (run/twice.yaml), not from --directory's folder."""
    (run_dir / "twice.yaml").write_text("run: a\nrun: b\n")
    assert files_errors(run_dir, ["twice.yaml"]) == [
        "config file run/twice.yaml: run is given twice (lines 1 and 2); YAML would keep the last one in silence"
    ]


def test_the_default_config_file_is_checked_too(run_dir: Path):
    """The default file (read by the Snakefile's configfile:, no --configfile names it) is checked."""
    (run_dir / "config.yaml").write_text("run: a\nrun: b\n")
    (err,) = files_errors(run_dir, [])
    assert err.startswith("config file run/config.yaml: run is given twice"), err


def test_a_target_given_as_config_file_is_named_but_an_overlay_is_not(run_dir: Path):
    """With the config's keys known, a --configfile with none of them is named as a likely target; an
    overlay file whose only key is ``overlay`` is a config file."""
    (run_dir / "final.json").write_text('{"store": "x.zarr"}')
    (err,) = files_errors(run_dir, ["base.yaml", "final.json"])
    assert err.startswith("run/final.json is not a config file of this workflow (its keys: store; "), err
    (run_dir / "over.yaml").write_text("overlay: {over: base.yaml}\n")
    check_config_files(["base.yaml", "over.yaml"], cwd=run_dir, known_keys=KNOWN)


def test_data_add_lists_in_two_config_files_stop_the_check(run_dir: Path):
    """check_config_files also refuses data.add given as lists in two config files (one would be lost)."""
    (run_dir / "a.yaml").write_text("data: {add: [a.tsv]}\n")
    (run_dir / "b.yaml").write_text("data: {add: [b.tsv]}\n")
    (err,) = files_errors(run_dir, ["a.yaml", "b.yaml"])
    assert err.startswith("data.add is given in 2 config files (run/a.yaml: ['a.tsv']; run/b.yaml: ['b.tsv'])"), err


def test_the_nested_text_note_is_only_for_type_errors():
    """A nested --config value that is wrong for another reason than its text type (a misspelt enum
    value) gets no note that nested values are read as text."""
    cfg = base()
    cfg["render"]["backend"] = "cdua"
    err = errors_of(cfg, {"render": {"backend": "cdua"}})
    assert err.errors[0].startswith("render.backend: 'cdua' is not allowed; did you mean 'cuda'?")
    assert NESTED_TEXT_NOTE not in str(err)
