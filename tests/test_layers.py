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


def test_architecture_names_every_module():
    """docs/architecture.md's package tables name every module (`name`) and subpackage (`name/`): a
    module added without a line there leaves readers no map to it."""
    text = (ROOT / "docs/architecture.md").read_text()
    tables = text.split("## Packages, by concern", 1)[1].split("## Conventions", 1)[0]
    missing = []
    for pkg in ("tomodata", "model"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.stem == "__init__":
                if path.parent.name != pkg and f"`{path.parent.name}/`" not in tables:
                    missing.append(path.parent.relative_to(ROOT).as_posix() + "/")
            elif f"`{path.stem}`" not in tables:
                missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"modules docs/architecture.md's tables do not name: {missing}"
