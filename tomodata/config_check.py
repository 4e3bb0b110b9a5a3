"""Config errors that help: every problem of a workflow config, one line each, with its dotted key
path, what is wrong and, for a misspelt key or value, "did you mean …?". Never a schema dump.

The Snakefile calls :func:`check_config` in place of Snakemake's ``validate`` (it fills the schema's
``default:`` values the same way) and :func:`check_resources` once the rule files are included.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import yaml
from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["ConfigError", "config_errors", "check_config", "check_resources", "load_schema", "rule_names"]

_JSON_TYPES = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "array",
    tuple: "array",
    dict: "object",
    type(None): "null",
}


class ConfigError(ValueError):
    """An invalid config; ``errors`` lists every problem, one line each (``note``: one more line)."""

    def __init__(self, errors: list[str], note: str = ""):
        self.errors = list(errors)
        n = len(self.errors)
        lines = [f"the config has {n} problem{'s' * (n != 1)}:", *(f"  {e}" for e in self.errors)]
        super().__init__("\n".join(lines + ([f"  ({note})"] if note else [])))


# ------------------------------------------------------------------------------------ wording
def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _brief(schema) -> str:
    """One short phrase for what a (sub)schema accepts."""
    if not isinstance(schema, dict):
        return "a valid value"
    if "enum" in schema:
        return "one of " + ", ".join(_short(v, 30) for v in schema["enum"])
    if "const" in schema:
        return _short(schema["const"], 30)
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1].replace("_", " ")
    t = schema.get("type")
    if t == "array" and schema.get("minItems") is not None and schema.get("minItems") == schema.get("maxItems"):
        return f"a list of {schema['minItems']} {schema.get('items', {}).get('type', 'value')}s"
    if isinstance(t, list):
        return " or ".join(t)
    return t or "a valid value"


def _close(word, allowed) -> str | None:
    close = difflib.get_close_matches(str(word), [str(a) for a in allowed], n=1, cutoff=0.6)
    return close[0] if close else None


def _allowed(values) -> str:
    return ", ".join(str(v) for v in values)


def _branch_errors(err) -> list | None:
    """The errors of the one oneOf/anyOf branch whose declared type fits the instance, else None."""
    branches = err.schema.get(err.validator, [])
    fitting = []
    for i, sub in enumerate(branches):
        if not isinstance(sub, dict) or "type" not in sub:
            continue
        errs = [e for e in err.context if e.relative_schema_path and e.relative_schema_path[0] == i]
        if not any(e.validator == "type" and not e.relative_path for e in errs):
            fitting.append(errs)
    return fitting[0] if len(fitting) == 1 and fitting[0] else None


def _lines(err) -> list[str]:
    """One line per problem of a jsonschema error (several for unknown keys and nested branches)."""
    where = _path(err.absolute_path)
    v, schema, inst = err.validator, err.schema, err.instance
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = list(schema.get("properties", {}))
        out = []
        for key in (k for k in inst if k not in allowed):
            meant = _close(key, allowed)
            hint = f"did you mean {meant!r}?" if meant else f"allowed here: {_allowed(allowed) or 'none'}"
            out.append(f"{_path([*err.absolute_path, key])}: unknown key; {hint}")
        return out
    if v == "enum":
        meant = _close(inst, err.validator_value) if isinstance(inst, str) else None
        hint = f"; did you mean {meant!r}?" if meant else ""
        return [f"{where}: {_short(inst)} is not allowed{hint} (allowed: {_allowed(err.validator_value)})"]
    if v == "type":
        return [f"{where}: expected {_brief(schema)}, given {_type_name(inst)} {_short(inst)}"]
    if v == "required":
        missing = [k for k in err.validator_value if isinstance(inst, dict) and k not in inst]
        return [f"{_path([*err.absolute_path, k])}: missing (required)" for k in missing] or [f"{where}: {err.message}"]
    if v in ("oneOf", "anyOf"):
        inner = _branch_errors(err)
        if inner is not None:
            return [line for e in inner for line in _lines(e)]
        if not err.context:  # valid under more than one branch of a oneOf
            return [f"{where}: {_short(inst)} matches more than one of: {', '.join(map(_brief, schema[v]))}"]
        values = [x for s in schema[v] if isinstance(s, dict) for x in s.get("enum", [])]
        meant = _close(inst, values) if isinstance(inst, str) and values else None
        hint = f"; did you mean {meant!r}?" if meant else ""
        expected = " or ".join(_brief(s) for s in schema[v])
        return [f"{where}: expected {expected}, given {_type_name(inst)} {_short(inst)}{hint}"]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if v in bounds:
        return [f"{where}: must be {bounds[v]} {err.validator_value}, given {_short(inst)}"]
    if v in ("minItems", "maxItems", "minLength", "maxLength"):
        word = "at least" if v.startswith("min") else "at most"
        unit = "items" if v.endswith("Items") else "characters"
        return [f"{where}: {word} {err.validator_value} {unit}, given {_short(inst)}"]
    if "propertyNames" in err.absolute_schema_path:  # the key itself (instance) breaks a rule of key names
        return [f"{_path([*err.absolute_path, inst])}: not a valid key name ({err.message.splitlines()[0][:150]})"]
    if v == "pattern":
        return [f"{where}: {_short(inst)} does not match the pattern {err.validator_value!r}"]
    return [f"{where}: " + err.message.splitlines()[0][:200]]


# ------------------------------------------------------------------------------------ checks
def load_schema(schema_path) -> dict:
    """The schema (YAML or JSON) with its ``$id`` set to the file, so relative ``$ref`` stay local."""
    path = Path(schema_path).resolve()
    schema = yaml.safe_load(path.read_text())
    schema["$id"] = path.as_uri()
    return schema


def _validator(schema: dict, fill_defaults: bool):
    """The validator the schema declares (2020-12 if none), filling defaults as Snakemake's
    ``validate(..., set_default=True)`` does: each ``properties`` level before it is checked."""
    cls = validators.validator_for(schema, default=Draft202012Validator)
    if fill_defaults:
        check_properties = cls.VALIDATORS["properties"]

        def set_defaults(validator, properties, instance, sub):
            if isinstance(instance, dict):
                for name, prop in properties.items():
                    if isinstance(prop, dict) and "default" in prop:
                        instance.setdefault(name, prop["default"])
            yield from check_properties(validator, properties, instance, sub)

        cls = validators.extend(cls, {"properties": set_defaults})

    def retrieve(uri):
        text = Path(url2pathname(urlparse(uri).path)).read_text()
        return Resource.from_contents(yaml.safe_load(text), default_specification=DRAFT202012)

    # `retrieve` is the public alias of the attrs field `_retrieve`; mypy's attrs plugin does not see aliases
    registry = Registry(retrieve=retrieve).with_resource(  # type: ignore[call-arg]
        schema.get("$id", ""), Resource.from_contents(schema, default_specification=DRAFT202012)
    )
    return cls(schema, registry=registry)


def config_errors(config: dict, schema: dict, fill_defaults: bool = False) -> list[str]:
    """Every problem of ``config`` against ``schema``, one line each (defaults filled if asked)."""
    errors = list(_validator(schema, fill_defaults).iter_errors(config))  # all of them: fills every default
    errors.sort(key=lambda e: [str(p) for p in e.absolute_path])
    lines: list[str] = []
    for e in errors:
        lines.extend(line for line in _lines(e) if line not in lines)
    return lines


def check_config(config: dict, schema_path) -> dict:
    """Validate ``config`` against the schema file and fill its defaults (in place, like Snakemake's
    ``validate``); return it, or raise :class:`ConfigError` listing every problem."""
    errors = config_errors(config, load_schema(schema_path), fill_defaults=True)
    if errors:
        raise ConfigError(errors)
    return config


def check_resources(config: dict, rule_names) -> None:
    """Every key of ``config['resources']`` but ``default`` must name a rule of the workflow."""
    names = sorted(set(rule_names))
    unknown = [k for k in (config.get("resources") or {}) if k != "default" and k not in names]
    if unknown:
        lines = []
        for k in unknown:
            meant = _close(k, names)
            lines.append(
                f"resources.{k}: not a rule of this workflow" + (f"; did you mean {meant!r}?" if meant else "")
            )
        raise ConfigError(lines, note="rules: " + ", ".join(n for n in names if n != "all"))


def rule_names(rules_dir) -> list[str]:
    """Every rule a workflow's rule files define (also those only defined for some configs: the
    demo's, the alignment's), read from ``rule NAME:`` lines of ``rules_dir/*.smk``."""
    names = set()
    for f in sorted(Path(rules_dir).glob("*.smk")):
        names.update(re.findall(r"^\s*rule (\w+):", f.read_text(), flags=re.M))
    return sorted(names)
