"""The config files that say they are complete on their own set every key of config.yaml.

Snakemake reads config.yaml (the Snakefile's `configfile:`) and merges each `--configfile` over it key
by key, so a key such a file leaves out keeps the demo's value (a demo-sized `resources.explorer` in a
paper-size run, say). Static: the files and the schema are read, Snakemake is not run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
CLAIM = "complete on its own"
#: the files that say so (their headers); each must set every key path of config.yaml
COMPLETE = sorted(p.name for p in (ROOT / "workflow/configs").glob("*.yaml") if CLAIM in p.read_text())


def _resolve(node: dict) -> dict:
    """``node`` with its local ``$ref`` and ``allOf`` folded in (the forms the schema uses)."""
    node = dict(node or {})
    while "$ref" in node:
        ref = node.pop("$ref")
        assert ref.startswith("#/"), ref
        target = SCHEMA
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **node}
    for sub in node.pop("allOf", []):
        sub = _resolve(sub)
        node["properties"] = {**sub.get("properties", {}), **node.get("properties", {})}
        node.update({k: v for k, v in sub.items() if k not in node})
    return node


def _child(node: dict, key: str) -> dict:
    """The schema of ``key`` inside a mapping of schema ``node`` (its property, else its additionalProperties)."""
    props = node.get("properties", {})
    if key in props:
        return _resolve(props[key])
    extra = node.get("additionalProperties")
    return _resolve(extra) if isinstance(extra, dict) else {}


def key_paths(cfg: dict, node: dict | None = None, prefix: str = "") -> list[str]:
    """Dotted key paths of ``cfg``'s leaves. A mapping whose schema names no ``properties`` (a free-form
    map such as ``model.real_xrays`` or ``data.add``) is one leaf: its entries are the file's to choose.
    ``resources`` lists rule names but each rule's threads/mem_mb/runtime are keys (a rule's keys left
    out are also merged from config.yaml)."""
    node = _resolve(SCHEMA) if node is None else node
    out = []
    for key, value in cfg.items():
        sub = _child(node, key)
        if isinstance(value, dict) and value and "properties" in sub:
            out += key_paths(value, sub, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _has(cfg, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return False
        cfg = cfg[part]
    return True


def test_the_files_that_claim_it_are_found():
    assert {"paper.yaml", "micro-ct.yaml", "paper-smoke.yaml"} <= set(COMPLETE), COMPLETE


def test_key_paths_stop_at_free_form_maps():
    cfg = {
        "data": {"add": {"extra": "manifests/extra.tsv"}, "fetch": {"rate": 1.0}},
        "resources": {"explorer": {"mem_mb": 2000}},
        "model": {"real_xrays": {"fox": {"path": "fox.png", "gamma": 2.2}}, "explorer": {"samples": 24}},
    }
    assert key_paths(cfg) == [
        "data.add",
        "data.fetch.rate",
        "resources.explorer.mem_mb",
        "model.real_xrays",
        "model.explorer.samples",
    ]
    paths = key_paths(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert {"model.real_xrays", "resources.explorer.mem_mb", "model.train.compile", "data.demo.species"} <= set(paths)


@pytest.mark.parametrize("name", COMPLETE)
def test_complete_config_files_set_every_key_of_config_yaml(name):
    default = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = yaml.safe_load((ROOT / "workflow/configs" / name).read_text())
    missing = [p for p in key_paths(default) if not _has(cfg, p)]
    assert not missing, (
        f"workflow/configs/{name} says it is {CLAIM} but leaves out {len(missing)} key path(s) of config.yaml, "
        f"which Snakemake then takes from the demo's config.yaml: {', '.join(missing)}"
    )
