"""Config errors that help: every problem of a workflow config, one line each, with its dotted key
path, what is wrong and, for a misspelt key or value, "did you mean …?". Never a schema dump.

The Snakefile calls :func:`check_config` in place of Snakemake's ``validate`` (it fills the schema's
``default:`` values the same way) and :func:`check_resources` once the rule files are included.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import yaml
from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .files import read_text, read_yaml_node
from .ingest_settings import parse_orientation, parse_window

__all__ = [
    "ConfigError",
    "config_errors",
    "config_file_errors",
    "gpu_problems",
    "check_config",
    "check_config_files",
    "check_resources",
    "load_schema",
    "overlay_errors",
    "rule_names",
    "schema_keys",
    "value_errors",
    "value_warnings",
]

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


def schema_keys(schema_path) -> list[str]:
    """The config's top-level keys: the schema's ``properties``."""
    return sorted(load_schema(schema_path).get("properties", {}))


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


#: Snakemake reads a value nested in ``--config KEY={...}`` as text (YAML's BaseLoader)
NESTED_TEXT_NOTE = (
    "Snakemake reads values nested in --config KEY={...} as text: give nested settings in a --configfile, "
    "or only top-level ones with --config"
)


def check_config(config: dict, schema_path, cli_config: dict | None = None) -> dict:
    """Validate ``config`` against the schema file and fill its defaults (in place, like Snakemake's
    ``validate``); return it, or raise :class:`ConfigError` listing every problem. ``cli_config``:
    Snakemake's ``--config`` values; where some are nested and a value is text where another type is
    expected, the error says why (:data:`NESTED_TEXT_NOTE`)."""
    errors = config_errors(config, load_schema(schema_path), fill_defaults=True)
    if errors:
        texts = [e.split(":", 1)[0] for e in errors if ", given string " in e]
        raise ConfigError(errors, note=NESTED_TEXT_NOTE if any(_nested_in(k, cli_config or {}) for k in texts) else "")
    return config


def _nested_in(dotted: str, cli_config: dict) -> bool:
    """Whether the key path ``dotted`` ("a.b.c") is a value nested in ``--config a={...}``."""
    node, parts = cli_config, dotted.split(".")
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return len(parts) > 1


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


# ------------------------------------------------------------------------------------ across keys
def value_errors(config: dict) -> list[str]:
    """Problems the schema's types let through, one line each (``config`` validated, defaults filled):
    a manifest the demo would ignore, a window or orientation the cube jobs would refuse, 1 or 2
    cross-validation folds."""
    data = config.get("data") or {}
    errors = []
    if data.get("source") == "demo" and data.get("manifest"):
        errors.append(
            f"data.manifest: {data['manifest']!r} is set, but data.source is 'demo', which ignores it: set "
            "data.source: manifest, or give an overlay after the config it changes (the last --configfile wins)"
        )
    cube = data.get("cube") or {}
    for key, parse in (("window", parse_window), ("orientation", parse_orientation)):
        try:
            parse(cube.get(key))
        except ValueError as e:
            errors.append(f"data.cube.{key}: {e}")
    folds = ((config.get("model") or {}).get("cv") or {}).get("folds", 0)
    if folds in (1, 2):
        errors.append(
            f"model.cv.folds: {folds} folds cannot give each fold train, val and test species: 0 (no "
            "cross-validation) or at least 3"
        )
    return errors


def value_warnings(config: dict) -> list[str]:
    """Settings that do nothing in this config, one line each."""
    align = (config.get("data") or {}).get("align") or {}
    if align.get("reference") and not align.get("enabled"):
        return [
            f"data.align.reference {align['reference']!r} is set, but data.align.enabled is false: nothing is "
            "aligned (set data.align.enabled: true to align every specimen to it)"
        ]
    return []


# ------------------------------------------------------------------------------------ config files
def config_file_errors(path) -> list[str]:
    """Problems of one config file, naming it (Snakemake names no file, or reads on in silence): not
    UTF-8, neither JSON nor YAML (line, column), not a mapping of keys, a key given twice in one
    mapping (both keep the last one). JSON is tried first, as Snakemake does (a tab-indented JSON
    file is no YAML)."""
    try:
        text = read_text(path, "config file")
    except ValueError as e:
        return [str(e)]
    twice: list[str] = []
    try:
        data = json.loads(text, object_pairs_hook=lambda pairs: _json_object(pairs, twice))
    except json.JSONDecodeError:
        pass
    else:
        if not isinstance(data, dict):
            return [f"config file {path} holds a JSON {type(data).__name__}, not keys at the top level"]
        return [f"config file {path}: {k} is given twice in one object; JSON would keep the last one" for k in twice]
    try:
        root = read_yaml_node(path, "config file", text)  # the text read once
    except ValueError as e:
        return [str(e)]
    if not isinstance(root, yaml.MappingNode):
        what = "is empty" if root is None else f"holds a {'list' if isinstance(root, yaml.SequenceNode) else 'value'}"
        return [f"config file {path} {what}, not keys at the top level (e.g. 'run: demo')"]
    out: list[str] = []
    _duplicate_keys(root, [], path, out)
    return out


def _json_object(pairs: list, twice: list[str]) -> dict:
    keys = [k for k, _ in pairs]
    for k in dict.fromkeys(k for i, k in enumerate(keys) if k in keys[:i]):  # each key once, however often
        twice.append(repr(k))
    return dict(pairs)


def _duplicate_keys(node, where: list, path, out: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            line = key.start_mark.line + 1
            if name is not None and name != "<<":
                if name in seen:
                    out.append(
                        f"config file {path}: {_path([*where, name])} is given twice (lines {seen[name]} and "
                        f"{line}); YAML would keep the last one in silence"
                    )
                seen.setdefault(name, line)
            _duplicate_keys(value, [*where, name], path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicate_keys(item, [*where, i], path, out)


def _path_writer(cwd: Path, base: Path):
    """How a message writes a path given relative to ``cwd``: relative to ``base`` where under it,
    else absolute."""

    def shown(f) -> str:
        full = (cwd / f).resolve()
        return str(full.relative_to(base)) if full.is_relative_to(base) else str(full)

    return shown


def overlay_errors(configfiles, cwd=".", default: str | None = None, shown=None) -> list[str]:
    """An overlay (a config file with ``overlay: {over: BASE}``: a few settings changed over the config
    file BASE, a path relative to the overlay's own folder) must come after BASE among
    ``configfiles`` (Snakemake's --configfile, in order; paths relative to ``cwd``) or be the
    ``default`` file that Snakemake reads before all of them: given alone it would change
    config.yaml's demo, given before BASE, BASE's values would override it. One line per misplaced
    overlay; ``shown(path)`` writes a path for the message (default: relative to ``cwd`` where under it)."""
    cwd = Path(cwd).resolve()
    shown = shown or _path_writer(cwd, cwd)

    files = [(cwd / f).resolve() for f in configfiles]
    first = (cwd / default).resolve() if default and (cwd / default).is_file() else None
    errors = []
    for i, (given, f) in enumerate(zip(configfiles, files)):
        try:
            data = yaml.safe_load(read_text(f, "config file"))
        except (OSError, ValueError, yaml.YAMLError):
            continue  # config_file_errors names it
        spec = data.get("overlay") if isinstance(data, dict) else None
        if spec is None:
            continue
        if not (isinstance(spec, dict) and set(spec) == {"over"} and isinstance(spec["over"], str)):
            errors.append(
                f"{shown(given)}: overlay must be {{over: CONFIG FILE}} (the config it changes), given {_short(spec)}"
            )
            continue
        base = ((cwd / given).parent / spec["over"]).resolve()  # the folder the overlay was given in
        if not base.is_file():
            errors.append(
                f"{shown(given)}: overlay.over {spec['over']!r} does not exist (relative to the overlay's folder "
                f"{shown((cwd / given).parent)}): correct it"
            )
            continue
        at = [j for j, g in enumerate(files) if g == base]
        if (at and max(at) < i) or (base == first and not at):
            continue
        why = "comes after it (the last file given wins: its values replace the overlay's)" if at else "is not given"
        errors.append(
            f"{shown(given)} is an overlay over {shown(base)}, which {why}: give {shown(base)} first "
            f"(snakemake --configfile {shown(base)} {shown(given)})"
        )
    return errors


def add_list_errors(files, cwd=".", shown=None) -> list[str]:
    """``data.add`` set in two or more of ``files`` (config files, in Snakemake's order) so that an overlay
    manifest of an earlier file is not in the merged value: Snakemake merges mappings (NAME: TSV) across
    config files but replaces a list, so those scans would leave the store without a word. The same
    file given twice, or a later list that repeats the earlier entries, loses nothing: fine."""
    cwd = Path(cwd).resolve()
    shown = shown or _path_writer(cwd, cwd)
    given = []
    for f in files:
        try:
            data = yaml.safe_load(read_text(cwd / f, "config file"))
        except (OSError, ValueError, yaml.YAMLError):
            continue  # config_file_errors names it
        add = (
            (data.get("data") or {}).get("add")
            if isinstance(data, dict) and isinstance(data.get("data"), dict)
            else None
        )
        if add and isinstance(add, (list, dict)):  # another type: the schema names it
            given.append((f, add))
    merged: list | dict | None = None
    for _, add in given:  # as Snakemake merges them: mappings key by key, anything else replaced
        merged = {**merged, **add} if isinstance(merged, dict) and isinstance(add, dict) else add
    kept = {str(m) for m in (merged.values() if isinstance(merged, dict) else merged or [])}
    every = {str(m) for _, add in given for m in (add.values() if isinstance(add, dict) else add)}
    if every <= kept:
        return []
    where = "; ".join(f"{shown(f)}: {_short(add)}" for f, add in given)
    return [
        f"data.add is given in {len(given)} config files ({where}), at least one as a list: Snakemake replaces a "
        f"list from an earlier file with a later one, so only {shown(given[-1][0])}'s overlays would be used and "
        "the others' scans would leave the store. Name each overlay in a mapping, which Snakemake merges: "
        'data: {add: {my_scans: my-scans.tsv}} (docs/manifest.md, "Adding scans")'
    ]


def _foreign_file_errors(configfiles, known_keys, cwd: Path, shown) -> list[str]:
    """A --configfile none of whose top-level keys is a config key (``known_keys`` or ``overlay``):
    most likely a target given after ``--configfile A B``, which Snakemake reads as one more config
    file (its keys then failed as "unknown key" with no word of the cause)."""
    out = []
    known = set(known_keys) | {"overlay"}
    for f in configfiles:
        try:
            data = yaml.safe_load(read_text(cwd / f, "config file"))  # JSON is YAML here: keys only
        except (OSError, ValueError, yaml.YAMLError):
            continue  # config_file_errors names it
        if isinstance(data, dict) and data and not set(map(str, data)) & known:
            keys = ", ".join(sorted(map(str, data))[:4])
            out.append(
                f"{shown(f)} is not a config file of this workflow (its keys: {keys}; a config has "
                f"{', '.join(sorted(known_keys))}): if it is a target, give it before --configfile, "
                "which reads every word after it as a config file"
            )
    return out


def check_config_files(configfiles, default: str = "config.yaml", cwd=".", known_keys=None) -> None:
    """The workflow's config files before it uses them: ``default`` (read by the Snakefile's
    ``configfile:``, where present) and ``configfiles`` (``--configfile``, in order) each checked by
    :func:`config_file_errors`, then the overlays' order (:func:`overlay_errors`); raises
    :class:`ConfigError` with every problem. Paths are shown as the user would type them: relative
    to the folder the command was started in ($PWD: Snakemake's --directory changes the working
    folder, not it) where under it, else absolute. ``known_keys``: the config's top-level keys; a
    --configfile with none of them is refused as a likely target (:func:`_foreign_file_errors`)."""
    cwd = Path(cwd).resolve()
    shown = _path_writer(cwd, Path(os.environ.get("PWD") or cwd).resolve())

    files = ([default] if (cwd / default).is_file() else []) + [str(f) for f in configfiles]
    errors = [e.replace(str(cwd / f), shown(f)) for f in files for e in config_file_errors(cwd / f)]
    if known_keys is not None:
        errors = errors or _foreign_file_errors([str(f) for f in configfiles], known_keys, cwd, shown)
    errors = errors or overlay_errors([str(f) for f in configfiles], cwd, default=default, shown=shown)
    errors = errors or add_list_errors(files, cwd, shown=shown)
    if errors:
        raise ConfigError(errors)


def gpu_problems(
    render: bool,
    model_rules,
    device: str,
    *,
    cupy_cuda: bool | None,
    torch_cuda: bool | None,
    job_environments: str = "",
) -> tuple[list[str], list[str]]:
    """``(missing, unchecked)``: the GPU needs of a run's jobs that run on this machine, one line each.

    ``render``: render_species jobs with ``render.backend: cuda``; ``model_rules``: the model rules
    that need a GPU (``model.train.device`` ``device``). ``cupy_cuda`` / ``torch_cuda``: whether CuPy /
    torch in Snakemake's own Python sees a CUDA device, None where it cannot import them. ``missing``
    (stop the run): a need unmet in Snakemake's environment, which is the jobs' environment unless
    ``job_environments`` names others (e.g. "conda": Snakemake's ``--sdm conda``, each rule in its
    own, while Snakemake itself runs in ``envs/workflow.yaml``, without torch or CuPy); then every
    need is ``unchecked`` (warn): Snakemake's Python cannot judge the jobs'."""
    model_rules = sorted(model_rules)
    rules = ", ".join(model_rules)
    needs = []
    if render:
        hint = "pip install -e '.[gpu-cuda12]' or '.[gpu-cuda13]', README"
        needs.append(
            ("render.backend: cuda", cupy_cuda, f"CuPy and a CUDA device: {hint}", f"CuPy is not installed: {hint}")
        )
    if model_rules:
        needs.append(
            (
                f"model.train.device: {device}",
                torch_cuda,
                f"torch sees no CUDA device; rules {rules}",
                f"torch is not installed in this environment, where the jobs run; rules {rules}",
            )
        )
    missing, unchecked = [], []
    for setting, seen, none_seen, not_installed in needs:
        if job_environments:
            unchecked.append(f"{setting}: the jobs run in their own environments ({job_environments})")
        elif seen is None:
            missing.append(f"{setting} ({not_installed})")
        elif not seen:
            missing.append(f"{setting} ({none_seen})")
    return missing, unchecked
