"""Config errors that help: every problem of a workflow config, one line each, with its dotted key
path, what is wrong and, for a misspelt key, "did you mean …?" from the schema. Never a schema dump.

The Snakefile calls :func:`check_config` before Snakemake's own ``validate`` (which then only fills in
the schema's defaults) and :func:`check_resources` once every rule is defined.
"""

from __future__ import annotations

import difflib
from pathlib import Path

__all__ = ["ConfigError", "config_errors", "check_config", "check_resources", "rule_names"]


class ConfigError(ValueError):
    """An invalid config; ``errors`` lists every problem, one line each."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__(f"the config has {len(errors)} problem{'s' * (len(errors) != 1)}:\n  " + "\n  ".join(errors))


def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _brief(schema: dict) -> str:
    """One short phrase for what a (sub)schema accepts."""
    if "enum" in schema:
        return "one of " + ", ".join(repr(v) for v in schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return " or ".join(t)
    if t == "array" and "minItems" in schema and schema.get("minItems") == schema.get("maxItems"):
        return f"a list of {schema['minItems']} {schema.get('items', {}).get('type', 'value')}s"
    return t or "a valid value"


def _did_you_mean(word: str, allowed) -> str:
    close = difflib.get_close_matches(str(word), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(sorted(map(str, allowed)))}"


def _line(err) -> str:
    where = _path(err.absolute_path)
    v, schema = err.validator, err.schema
    if v == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        return "; ".join(f"{_path(list(err.absolute_path) + [k])}: unknown key{_did_you_mean(k, allowed)}"
                         for k in extra)
    if v == "enum":
        return f"{where}: {err.instance!r} is not allowed{_did_you_mean(err.instance, schema['enum'])}"
    if v == "type":
        return f"{where}: {err.instance!r} is a {type(err.instance).__name__}, expected {_brief(schema)}"
    if v == "required":
        return f"{where}: {err.message.split(' is a required')[0]} is required"
    if v in ("oneOf", "anyOf"):
        return f"{where}: {err.instance!r} is not " + " or ".join(_brief(s) for s in schema[v])
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "minItems", "maxItems",
             "minLength"):
        return f"{where}: {err.instance!r} does not satisfy {v} {err.validator_value!r}"
    return f"{where}: {err.message}"


def config_errors(config: dict, schema: dict) -> list[str]:
    """Every problem of ``config`` against ``schema`` (JSON Schema 2020-12), one line each."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [_line(e) for e in errors]


def check_config(config: dict, schema_path) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config`` (defaults are not filled here)."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = config_errors(config, schema)
    if errors:
        raise ConfigError(errors)


def check_resources(config: dict, rule_names) -> None:
    """Every key of ``config['resources']`` but ``default`` must name a rule of the workflow."""
    names = sorted(set(rule_names))
    unknown = [k for k in (config.get("resources") or {}) if k != "default" and k not in names]
    if unknown:
        rules = ", ".join(n for n in names if n != "all")
        raise ConfigError([f"resources.{k}: not a rule of this workflow{_did_you_mean(k, names)} (rules: {rules})"
                           for k in unknown])


def rule_names(rules_dir) -> list[str]:
    """Every rule a workflow's rule files define (also those only defined for some configs: the
    demo's, the alignment's), read from ``rule NAME:`` lines of ``rules_dir/*.smk``."""
    import re

    names = set()
    for f in sorted(Path(rules_dir).glob("*.smk")):
        names.update(re.findall(r"^\s*rule (\w+):", f.read_text(), flags=re.M))
    return sorted(names)
