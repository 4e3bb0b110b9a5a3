"""Shared fixtures: the optional ../shared data folder, the GPU marker, killing a process tree."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import psutil
import pytest

# Each pytest-xdist worker its own numba cache, inherited by the snakemake and tomo processes it starts
# (set before anything imports numba): the workers do not wait on each other's compiles or write into
# the package's __pycache__. (Concurrent compiles into one folder are safe: tomodata.numba_cache locks
# numba's cache writes; tests/test_numba_cache.py.)
if os.environ.get("PYTEST_XDIST_WORKER"):
    _base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tomo-tests-numba-cache")
    os.environ["NUMBA_CACHE_DIR"] = os.path.join(_base, os.environ["PYTEST_XDIST_WORKER"])

from tomodata.render import cuda_available  # noqa: E402 - after the numba cache folder is set

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _cuda() -> bool:
    return cuda_available()


# The longest test files first. The suite runs on 2 workers (pytest-xdist; pyproject: `-n 2 --dist
# loadfile --no-loadscope-reorder`): each file runs whole on one worker (module fixtures built once),
# files handed out in collection order, so a long file collected last would run alone at the end.
# The other files keep pytest's order after these.
LONG_FILES = (  # seconds summed over each file's tests in CI with 2 workers (session 22, 03c0374)
    "test_workflow.py",  # 576
    "test_workflow_extend.py",  # 516
    "test_store_state.py",  # 191
    "test_slurm.py",  # 162
    "test_train.py",  # 121
    "test_align.py",  # 118
    "test_stale_sources.py",  # 99
    "test_train_guard.py",  # 87
    "test_config_check.py",  # 54
    "test_explorer.py",  # 48
    "test_export.py",  # 42
)


def _long_files_first(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


def pytest_collection_modifyitems(config, items):
    _long_files_first(items)
    if "paper" not in (config.getoption("-m") or ""):  # the 30-minute paper-size run: only when asked for
        paper = pytest.mark.skip(reason="the paper-size smoke run (about 30 min) runs with: python -m pytest -m paper")
        for item in items:
            if "paper" in item.keywords:
                item.add_marker(paper)
    if _cuda():
        return
    skip = pytest.mark.skip(reason="no CUDA device with CuPy here (GPU tests run where one exists)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository, or a skip with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it lives beside the project, not in it)")
    return SHARED_DATA


def _kill_tree(pid: int) -> None:
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = parent.children(recursive=True) + [parent]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)  # SIGKILL: snakemake ignores SIGTERM while SLURM jobs are open
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture()
def kill_tree():
    """``kill_tree(pid)``: SIGKILL a process and all its descendants, and wait for them."""
    return _kill_tree
