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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "json_safe", "sha256_file", "tree_bytes", "write_json", "write_text"]

_CHUNK = 1 << 20


def _suffixes(path: Path) -> str:
    """The suffixes a format is chosen by: ``.nii.gz``-like double ones, else the last."""
    double = "".join(path.suffixes[-2:])
    return double if double.lower() in (".nii.gz", ".tar.gz", ".npy.gz") else path.suffix


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` with a temporary path beside ``path`` (same suffixes), then move it onto
    ``path`` (the parent folder is created). Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_suffixes(path), dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        try:  # keep an existing file's permissions (mkstemp makes 0600)
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except OSError:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def write_json(path, obj, *, indent: int | None = 2) -> Path:
    """``json_safe(obj)`` as strict JSON (plus a final newline) into ``path`` atomically."""
    return write_text(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")


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
