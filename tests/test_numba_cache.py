"""tomodata.numba_cache: concurrent first compiles of one cached function keep their own code."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from numba.core import caching

import model._sample_cpu  # noqa: F401 - each module with cached kernels installs the lock
import model.fusion  # noqa: F401
import tomodata.render  # noqa: F401
import tomodata.resample  # noqa: F401
from tomodata import numba_cache

ROOT = Path(__file__).resolve().parents[1]

TOY = """
import numba

@numba.njit(cache=True)
def f(x):
    return x * 3 + 1
"""

# One process that compiles toy.f for one argument type while the other does. numba's save is slowed
# inside its race window (1 s after reading the index; the int64 process also waits 2 s before writing
# its data file), which without the lock leaves the index of one and the code of the other (checked by
# hand on numba 0.68.1: f(5.5) then returns 16 from the cache, or the float64 entry is lost). Both
# start compiling together and enter save together (barriers on files, outside the lock) and record
# when they enter and leave it, so the test can see that the two saves really overlapped.
CHILD = """
import json, os, sys, time
import numpy as np
import numba.core.caching as caching

load_index, save_data = caching.IndexDataCacheFile._load_index, caching.IndexDataCacheFile._save_data
def slow_load_index(self):
    index = load_index(self)
    time.sleep(1.0)
    return index
def slow_save_data(self, name, data):
    time.sleep(float(os.environ["DATA_DELAY"]))
    return save_data(self, name, data)
caching.IndexDataCacheFile._load_index = slow_load_index
caching.IndexDataCacheFile._save_data = slow_save_data
if os.environ["LOCK"] == "1":
    from tomodata import numba_cache
    assert numba_cache.install()
locked_save, times = caching.IndexDataCacheFile.save, {}
def timed_save(self, key, data):
    times["enter"] = time.time()
    open(sys.argv[1] + ".saving", "w").close()  # both enter save before either goes on: they overlap
    while not all(os.path.exists(k + ".saving") for k in ("int", "float")):
        time.sleep(0.01)
    try:
        return locked_save(self, key, data)
    finally:
        times["leave"] = time.time()
caching.IndexDataCacheFile.save = timed_save

import toy
kind = sys.argv[1]
open(kind + ".ready", "w").close()
while not all(os.path.exists(k + ".ready") for k in ("int", "float")):
    time.sleep(0.01)
value = toy.f(np.int64(5) if kind == "int" else np.float64(5.5))
json.dump({"value": float(value), **times}, open(kind + ".json", "w"))
"""

CHECK = """
import json
import numpy as np
import toy
a, b = toy.f(np.int64(5)), toy.f(np.float64(5.5))
print(json.dumps({"int": float(a), "float": float(b), "hits": len(toy.f.stats.cache_hits),
                  "misses": len(toy.f.stats.cache_misses)}))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_the_kernel_modules_install_the_lock():
    assert numba_cache.installed()
    assert numba_cache.install()  # idempotent


def test_two_processes_compiling_one_function_at_once_keep_their_own_code(tmp_path):
    (tmp_path / "toy.py").write_text(TOY)
    (tmp_path / "child.py").write_text(CHILD)
    procs = {
        kind: subprocess.Popen(
            [sys.executable, "child.py", kind],
            cwd=tmp_path,
            env=_env(tmp_path, LOCK="1", DATA_DELAY=delay),
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind, delay in (("int", "2"), ("float", "0"))
    }
    for kind, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{kind}: {err}"
    runs = {kind: json.loads((tmp_path / f"{kind}.json").read_text()) for kind in procs}
    assert runs["int"]["value"] == 16.0 and runs["float"]["value"] == 17.5
    assert max(r["enter"] for r in runs.values()) < min(r["leave"] for r in runs.values()), (
        "the two saves did not overlap: the test did not exercise the race"
    )
    out = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, check=True
    )
    check = json.loads(out.stdout)
    assert check == {"int": 16.0, "float": 17.5, "hits": 2, "misses": 0}, check
    assert len(list((tmp_path / "cache").rglob("toy.f-*.nbc"))) == 2  # one data file per signature


def test_a_file_system_without_locks_saves_unlocked_after_one_warning(tmp_path, monkeypatch):
    assert numba_cache.install()

    def no_lock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(numba_cache.fcntl, "flock", no_lock)
    monkeypatch.setattr(numba_cache, "_warned", set())
    cache = caching.IndexDataCacheFile(str(tmp_path), "toy.f-2.py311", (0.0, 0))
    with pytest.warns(RuntimeWarning, match=r"no file lock \(No locks available\).*NUMBA_CACHE_DIR"):
        cache.save(("sig", "a"), b"code a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per folder
        cache.save(("sig", "b"), b"code b")
    assert cache.load(("sig", "a")) == b"code a" and cache.load(("sig", "b")) == b"code b"


def test_the_lock_file_sits_beside_the_index(tmp_path):
    assert numba_cache.install()
    cache = caching.IndexDataCacheFile(str(tmp_path), "k.f-1.py311", (0.0, 0))
    cache.save(("sig",), b"code")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "k.f-1.py311.1.nbc",
        "k.f-1.py311.nbi",
        "k.f-1.py311.nbi.lock",
    ]


def test_the_data_file_is_written_before_the_index_that_names_it(tmp_path, monkeypatch):
    """numba writes the index first: a process loading in between read whatever data file an older
    source or numba version left under that name."""
    assert numba_cache.install()
    cache = caching.IndexDataCacheFile(str(tmp_path), "k.f-1.py311", (0.0, 0))
    (tmp_path / "k.f-1.py311.1.nbc").write_bytes(b"left by an older source")
    seen = []
    save_index = caching.IndexDataCacheFile._save_index

    def watching(self, overloads):
        seen.append((tmp_path / "k.f-1.py311.1.nbc").read_bytes() != b"left by an older source")
        return save_index(self, overloads)

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", watching)
    cache.save(("sig",), b"new code")
    assert seen == [True]  # the new data was in place when the index naming it was written
    assert cache.load(("sig",)) == b"new code"


def test_a_lock_held_too_long_is_passed_after_one_warning(tmp_path, monkeypatch):
    """A process stopped while saving (Ctrl-Z) must not stall every other first compile."""
    assert numba_cache.install()
    monkeypatch.setattr(numba_cache, "LOCK_WAIT_S", 0.3)
    monkeypatch.setattr(numba_cache, "_warned", set())
    cache = caching.IndexDataCacheFile(str(tmp_path), "k.f-1.py311", (0.0, 0))
    cache.save(("a",), b"code a")  # makes the index and its lock file
    holder = os.open(str(tmp_path / "k.f-1.py311.nbi.lock"), os.O_RDWR)
    try:
        numba_cache.fcntl.flock(holder, numba_cache.fcntl.LOCK_EX)  # another open file: flock conflicts
        with pytest.warns(RuntimeWarning, match=r"held by another process for over 0.3 s"):
            cache.save(("b",), b"code b")
    finally:
        os.close(holder)
    assert cache.load(("a",)) == b"code a" and cache.load(("b",)) == b"code b"
