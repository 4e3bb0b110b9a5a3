"""tomodata.run_layout: the run folder's names (the workflow, tomo explorer, build-demo and exports use
them; tests/test_workflow.py checks the planned jobs against them)."""

import subprocess
import sys

import pytest

from tomodata.export.common import _resolve_store
from tomodata.run_layout import STORE_NAME, store_in


def test_imports_nothing_heavy():
    """The workflow imports it at parse time."""
    code = "import sys, tomodata.run_layout; sys.exit(bool({'torch', 'zarr', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_store_in(tmp_path):
    store = tmp_path / "run" / STORE_NAME
    assert store_in(store) is None and store_in(tmp_path / "run") is None  # nothing there yet
    store.mkdir(parents=True)
    assert store_in(tmp_path / "run") is None  # a folder without zarr.json is no store
    (store / "zarr.json").write_text("{}")
    assert store_in(store) == store
    assert store_in(tmp_path / "run") == store
    assert store_in(tmp_path) is None  # only one level down
    assert _resolve_store(tmp_path / "run") == store
    with pytest.raises(FileNotFoundError, match=f"no zarr.json in it or in {tmp_path / STORE_NAME}"):
        _resolve_store(tmp_path)
