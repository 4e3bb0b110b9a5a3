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


# where a file git does not know yet is code that ran (a new module); untracked files elsewhere are not
_CODE_PATHS = ("tomodata", "model", "workflow", "Snakefile")


def code_version() -> dict:
    """``{"tomodata": version, "git_commit": hex or None, "git_dirty": bool or None}``; the commit is
    None outside a git checkout (an installed package) or where git is missing. Dirty: a tracked file
    differs from the commit, or a file git does not track (and does not ignore) lies in the code's
    folders (``tomodata/``, ``model/``, ``workflow/``: a new module not yet committed)."""
    return dict(_cached())


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[tuple[str, Any], ...]:
    info: dict[str, Any] = {"tomodata": __version__, "git_commit": None, "git_dirty": None}
    root = Path(__file__).resolve().parents[1]  # tomodata/code_version.py -> the checkout
    if not (root / ".git").exists():
        return tuple(info.items())
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        info["git_commit"] = commit or None
        info["git_dirty"] = _dirty(root)
    except (OSError, subprocess.SubprocessError):
        pass
    return tuple(info.items())


def _dirty(root: Path) -> bool:
    """Whether the checkout at ``root`` holds code that its HEAD commit does not (see :func:`code_version`)."""
    changed = _git(root, "status", "--porcelain", "--untracked-files=no")
    new_code = _git(root, "ls-files", "--others", "--exclude-standard", "--", *_CODE_PATHS)
    return bool(changed.strip() or new_code.strip())


def _git(root: Path, *args: str) -> str:
    """A read-only git command's output (GIT_OPTIONAL_LOCKS=0: no index.lock to trip a commit beside it)."""
    return subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
    ).stdout
