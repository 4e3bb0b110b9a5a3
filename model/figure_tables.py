"""An eval folder's tables as the figures read them (:mod:`model.figures`): each CSV checked for its
file, columns and rows (``ValueError`` naming what is missing), the rows of one method / metric /
level / test, and single values of ``summary.json``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .eval_tables import SUMMARY_COLUMNS, TESTS_COLUMNS
from .names import EVAL_SUMMARY, EVAL_SUMMARY_CSV, EVAL_TESTS

__all__ = [
    "eval_dir",
    "eval_split",
    "read_csv",
    "read_summary",
    "read_tests",
    "summary_row",
    "summary_value",
    "test_row",
]


def read_csv(path: Path, required: Iterable[str], what: str):
    """The CSV at ``path`` as a DataFrame; ValueError (prefixed ``what``) when missing, unreadable, without a
    ``required`` column or without rows. ``method`` values as text."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what}: missing file {path}")
    try:
        df = pd.read_csv(path)
    except Exception as e:  # empty or malformed file
        raise ValueError(f"{what}: cannot read {path}: {e}") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: {path.name} lacks column(s) {missing} (has {list(df.columns)})")
    if df.empty:
        raise ValueError(f"{what}: {path.name} has no rows")
    if "method" in df.columns:
        df["method"] = df["method"].astype(str)
    return df


def eval_dir(path) -> Path:
    """``path`` as a Path, ValueError where no such folder exists."""
    d = Path(path)
    if not d.is_dir():
        raise ValueError(f"eval folder {d} does not exist")
    return d


def read_summary(d: Path):
    """``d``/summary.csv (:data:`model.eval_tables.SUMMARY_COLUMNS`), ``level`` as text."""
    df = read_csv(d / EVAL_SUMMARY_CSV, SUMMARY_COLUMNS, "summary")
    df["level"] = df["level"].astype(str)
    return df


def summary_row(summary, method: str, metric: str, level: str):
    """The summary row of one method, metric and level, or None."""
    sel = summary[(summary["method"] == method) & (summary["metric"] == metric) & (summary["level"] == level)]
    return None if sel.empty else sel.iloc[0]


def read_tests(d: Path):
    """tests.csv or None when absent (its columns are checked when present)."""
    p = d / EVAL_TESTS
    if not p.is_file():
        return None
    df = read_csv(p, [c for c in TESTS_COLUMNS if c != "p_holm"], "paired tests")
    if "p_holm" not in df.columns:
        df["p_holm"] = np.nan
    df["level"] = df["level"].astype(str)
    df["test"] = df["test"].astype(str)
    return df


def test_row(tests, metric: str, a: str, b: str, level: str, test: str = "t"):
    """The tests row of methods ``a`` and ``b`` (either order) for one metric, level and test, or None."""
    if tests is None:
        return None
    t = tests[
        (tests["metric"] == metric)
        & (tests["level"] == level)
        & (tests["test"] == test)
        & (
            ((tests["method_a"] == a) & (tests["method_b"] == b))
            | ((tests["method_a"] == b) & (tests["method_b"] == a))
        )
    ]
    return None if t.empty else t.iloc[0]


def eval_split(d: Path) -> str | None:
    """``eval_split`` from summary.json, if there is one."""
    value = summary_value(d, "eval_split", None)
    return None if value is None else str(value)


def summary_value(d: Path, key: str, default):
    """summary.json's ``key``, or ``default`` where there is no summary.json or no such key."""
    try:
        return json.loads((d / EVAL_SUMMARY).read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return default
