"""The package layers (docs/architecture.md): ``model`` may import ``tomodata``, never the reverse,
and ``tomo`` is ``model.cli:main``."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> set[str]:
    """Top-level package names imported anywhere in a module (function-local imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_tomodata_never_imports_model():
    offenders = [
        p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "tomodata").rglob("*.py")) if "model" in _imported(p)
    ]
    assert not offenders, f"tomodata modules importing model: {offenders}"


def test_tomo_entry_point_is_the_model_cli():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tomo": "model.cli:main"}
