"""Which code made a file: tomodata's version and, run from a git checkout, its commit and whether the
checkout had uncommitted changes (:func:`code_version`). Stores record it when created and in each
species' completion marker; exports, evaluations and cards quote it."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["code_version"]


def code_version() -> dict:
    """``{"tomodata": version, "git_commit": hex or None, "git_dirty": bool or None}``; the commit is
    None outside a git checkout (an installed package) or where git is missing."""
    return dict(_cached())


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[tuple[str, Any], ...]:
    info: dict[str, Any] = {"tomodata": __version__, "git_commit": None, "git_dirty": None}
    root = Path(__file__).resolve().parents[1]  # tomodata/code_version.py -> the checkout
    if not (root / ".git").exists():
        return tuple(info.items())
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(  # GIT_OPTIONAL_LOCKS=0: read only, no index.lock to trip a commit running beside
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        ).stdout
        info["git_commit"] = commit or None
        info["git_dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return tuple(info.items())
