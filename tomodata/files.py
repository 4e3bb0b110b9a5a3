"""Files written whole or not at all, JSON that strict readers accept, and file checksums: the one
home of these for both packages.

* :func:`atomic_write` — ``write(tmp)`` into a temporary file beside ``path`` that keeps its
  suffixes (writers that choose a format by suffix, e.g. ``.nii.gz``, see the right one), then
  ``os.replace``; on any error the temporary file is removed, so ``path`` is either what it was or
  the complete new file. :func:`write_text` and :func:`write_json` write through it (text flushed
  and fsync'd; an existing file's permissions kept).
* :func:`json_safe` — a JSON-ready copy: NaN and ±inf → ``None`` (strict JSON has neither), numpy
  scalars and arrays → Python numbers and lists, paths → strings, tuples → lists, keys → strings.
* :func:`sha256_file` — hex sha256 of a file's bytes, read in 1 MiB blocks.
* :func:`read_text` / :func:`read_json_object` / :func:`read_yaml` — a text, JSON-object or YAML file
  given as input, with a one-line ``ValueError`` that names the file and what it should be (a binary
  file, bad JSON or YAML, a list where an object goes) instead of the codec's or parser's message,
  which names no file. :func:`load_npz` does the same for an .npz of arrays.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

__all__ = [
    "atomic_write",
    "json_safe",
    "json_text",
    "load_npz",
    "read_json_object",
    "read_text",
    "read_yaml",
    "read_yaml_node",
    "sha256_file",
    "tree_bytes",
    "write_json",
    "write_text",
]

_CHUNK = 1 << 20


def _suffixes(path: Path) -> str:
    """The suffixes a format is chosen by: ``.nii.gz``-like double ones, else the last."""
    double = "".join(path.suffixes[-2:])
    return double if double.lower() in (".nii.gz", ".tar.gz", ".npy.gz") else path.suffix


def _umask() -> int:
    """The process's umask: read from /proc where there is one (setting it to read it, as elsewhere,
    would briefly change it for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` with a temporary path beside ``path`` (same suffixes), then move it onto
    ``path`` (the parent folder is created). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_suffixes(path), dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        try:  # keep an existing file's permissions (mkstemp makes 0600), else those open() would give
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except OSError:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def replace_dir(tmp, final) -> Path:
    """Rename the finished folder ``tmp`` to ``final``, replacing an existing ``final`` without a partial
    state: the old one is renamed aside first, put back if the rename fails, and removed after it."""
    tmp, final = Path(tmp), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_text(path, text: str) -> Path:
    """``text`` (UTF-8, newlines as given) into ``path`` atomically, flushed to disk."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def json_safe(obj):
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts (module docstring)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_text(obj, *, indent: int | None = 2) -> str:
    """``json_safe(obj)`` as strict JSON text with a final newline: every JSON file this project writes."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n"


def json_sha256(obj) -> str:
    """The sha256 (hex) of ``obj`` as canonical JSON (keys sorted, ``json.dumps``' default separators):
    the content ids of species parameters, checkpoints' data and evaluations' stores."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def write_json(path, obj, *, indent: int | None = 2) -> Path:
    """:func:`json_text` of ``obj`` into ``path`` atomically."""
    return write_text(path, json_text(obj, indent=indent))


def read_text(path, what: str) -> str:
    """The UTF-8 text of ``path`` (a BOM dropped); ``ValueError`` naming ``what`` (e.g. "fetch record")
    and the path if it is not UTF-8 text. A missing file raises ``FileNotFoundError`` as usual."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not a UTF-8 text file (byte {e.start}: {e.reason})") from None


def read_json_object(path, what: str, *, keys: tuple[str, ...] = ()) -> dict:
    """The JSON object in ``path``, checked to hold ``keys``; ``ValueError`` naming ``what`` and the
    path if the file is not UTF-8 JSON, not an object, or lacks one of ``keys``."""
    text = read_text(path, what)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} holds a JSON {type(obj).__name__}, not an object")
    missing = [k for k in keys if k not in obj]
    if missing:
        article = "an" if what[:1].lower() in "aeiou" else "a"
        raise ValueError(f"{what} {path} lacks {', '.join(missing)}: is it {article} {what}?")
    return obj


def read_config_mapping(path, json_text) -> dict | None:
    """A workflow config to record (``tomo store-create --config`` / ``--config-json``): the YAML file
    ``path``, or the JSON object ``json_text`` (it wins); None where neither is given or the file is
    empty; ``ValueError`` naming the file or option if either is not a mapping."""
    config = None
    if path:
        config = read_yaml(path, "config file")  # None for an empty file (or comments only): no config
        if config is not None and not isinstance(config, dict):
            raise ValueError(f"config file {path} holds no mapping of settings")
    if json_text:
        try:
            config = json.loads(json_text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config-json is not JSON ({e})") from None
        if not isinstance(config, dict):
            raise ValueError("--config-json is not a JSON object")
    return config


def read_yaml(path, what: str):
    """The YAML (or JSON) document in ``path``; ``ValueError`` naming ``what`` and the path, in one
    line with the parser's problem and position, if it is not UTF-8 YAML."""
    text = read_text(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _yaml_error(e, what, path) from None


def read_yaml_node(path, what: str, text: str | None = None) -> yaml.Node | None:
    """The YAML document in ``path`` (or its ``text``, already read) as a node tree (keys with their
    lines, duplicates kept; None for an empty file); errors as :func:`read_yaml`."""
    text = read_text(path, what) if text is None else text
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(e, what, path) from None


def _yaml_error(e: yaml.YAMLError, what: str, path) -> ValueError:
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(e, "problem", None) or type(e).__name__
    return ValueError(f"{what} {path} is not YAML ({problem}{where})")


def load_npz(path, what: str) -> dict[str, np.ndarray]:
    """Every array of the .npz file ``path`` (no pickles); ``ValueError`` "PATH is not WHAT: ..." where
    it cannot be read as one (empty, damaged, text, a plain .npy array). ``what`` says what it should
    be, e.g. "a cube file (.npz written by tomo cube)". A missing file stays ``FileNotFoundError``."""
    not_it = f"{path} is not {what}"
    try:
        z = np.load(path, allow_pickle=False)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - EOFError (empty), BadZipFile, ValueError (pickle, text) …
        raise ValueError(f"{not_it}: cannot read it ({type(exc).__name__}: {exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{not_it}: it holds a plain array of shape {tuple(np.shape(z))}")
    with z:
        try:
            return {k: z[k] for k in z.files}
        except Exception as exc:  # noqa: BLE001 - a damaged member
            raise ValueError(f"{not_it}: cannot read it ({type(exc).__name__}: {exc})") from None


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def tree_bytes(folder) -> int:
    """Bytes of all files under ``folder`` (recursively)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
