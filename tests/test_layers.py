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
    own = dict(zip(("tomodata", "model"), tables.split("**model**", 1)))  # each package's own table
    missing = []
    for pkg, tables in own.items():
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.stem == "__init__":
                if path.parent.name != pkg and f"`{path.parent.name}/`" not in tables:
                    missing.append(path.parent.relative_to(ROOT).as_posix() + "/")
            elif f"`{path.stem}`" not in tables:
                missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"modules docs/architecture.md's tables do not name: {missing}"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body without its docstring."""
    body, first = node.body, node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:]
    return 0 if not body else (node.end_lineno or node.lineno) - body[0].lineno + 1


def test_modules_and_functions_stay_small():
    """docs/architecture.md: every module at most 600 lines, every function body at most 80 lines
    besides its docstring."""
    long_modules, long_functions = [], []
    for pkg in ("tomodata", "model"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            text = path.read_text()
            name = path.relative_to(ROOT).as_posix()
            if len(text.splitlines()) > 600:
                long_modules.append(name)
            for node in ast.walk(ast.parse(text, filename=name)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 80:
                    long_functions.append(f"{name}:{node.name} ({_body_lines(node)} lines)")
    assert not long_modules, f"modules over 600 lines: {long_modules}"
    assert not long_functions, f"function bodies over 80 lines: {long_functions}"
