"""Shared fixtures: the optional ../shared data folder, the GPU marker, killing a process tree."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from tomodata.render import cuda_available

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _cuda() -> bool:
    return cuda_available()


def pytest_collection_modifyitems(config, items):
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
