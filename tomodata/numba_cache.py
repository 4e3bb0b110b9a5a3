"""A file lock around numba's on-disk cache writes, so concurrent first compiles cannot mix up code.

numba (0.59-0.68 at least) saves a newly compiled overload of a ``cache=True`` function by reading
the function's index (``NAME.nbi``), taking the first free data-file number and writing the index,
then the data file (``NAME.N.nbc``), with no lock (``numba.core.caching.IndexDataCacheFile.save``).
Two processes compiling *different* signatures of one function at once (two Snakemake jobs on a
fresh clone, cluster nodes sharing the clone's ``__pycache__``; e.g. the resampling kernels compile
per input dtype: uint8 movies, uint16 TIFFs, int16 DICOM) both take ``NAME.1.nbc``: the index of one
and the data of the other survive, and every later process runs the wrong machine code for that
signature, silently. Reproduced on numba 0.68.1: a toy ``f(x) = 3x + 1`` compiled for int64 and
float64 at once returned ``f(5.5) = 16`` from the cache ever after (tests/test_numba_cache.py).
numba's maintainers name a file lock as the fix of the related gufunc race (numba#10128).

:func:`install` wraps ``save`` and ``flush`` in an exclusive ``fcntl.flock`` on ``NAME.nbi.lock``
beside the index, so read-index / choose-name / write-data / write-index is one step per function,
and ``save`` writes the data file before the index that names it (numba writes the index first: a
process loading in between could read a data file that an older source or numba left under that
name). Loading then needs no lock: both files are replaced by atomic rename, and a name in an index
always has its data. Where the file system refuses locks (Lustre without ``-o flock``), or another
process holds the lock over :data:`LOCK_WAIT_S` (stopped while saving), the save goes on unlocked
after one warning; NFS mounted ``nolock`` or ``local_lock=flock`` gives node-local locks without an
error. There, set ``NUMBA_CACHE_DIR`` to a node-local folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from numba.core import caching

__all__ = ["FASTMATH", "KERNEL_OPTIONS", "install", "installed"]

#: the ``fastmath`` flags of the dataset's kernels (renderer, resampling): every fast-math flag but
#: ``reassoc`` and ``afn``. Without ``reassoc`` LLVM keeps a float sum in the order written instead of
#: splitting it over the vector lanes, as many as the CPU's code has, so the kernels give the same
#: bits on the x86-64 targets checked, AVX2 and AVX-512 (tests/test_cpu_targets.py; docs/export.md, "On
#: another machine"). numba's on-disk cache does not see these flags (its index is keyed by the kernel
#: file's time stamp and the function's bytecode): a change here must also touch the kernel modules
#: (tomodata/_render_cpu.py, tomodata/resample.py), or cached code keeps the old flags
FASTMATH = frozenset({"nnan", "ninf", "nsz", "arcp", "contract"})
#: ``numba.njit`` options of the dataset's kernels (``@nb.njit(**KERNEL_OPTIONS)``): cached, no GIL, no
#: bounds checks, numpy's error model, :data:`FASTMATH`
KERNEL_OPTIONS: dict[str, Any] = dict(
    nogil=True, cache=True, fastmath=set(FASTMATH), boundscheck=False, error_model="numpy"
)

_MARK = "_tomo_cache_lock"
_warned: set[str] = set()
#: seconds a save waits for another process's lock before it goes on unlocked (with a warning): a
#: process stopped while saving (Ctrl-Z) must not stall every other first compile of that function
LOCK_WAIT_S = 300.0
_POLL_S = 0.05


def _open_lock(path: str) -> int:
    """A descriptor of the lock file (created if missing; read-only where another user made it)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY)  # flock works on any open descriptor


@contextlib.contextmanager
def _locked(index_path: str) -> Iterator[None]:
    """Hold an exclusive flock on ``index_path + '.lock'`` for the block; unlocked, after one warning
    per folder, where the file cannot be opened or locked or another process holds it over
    :data:`LOCK_WAIT_S`."""
    path = index_path + ".lock"
    try:
        fd = _open_lock(path)
    except OSError as e:  # numba's own save will meet the same folder and report it
        _warn_once(path, e.strerror or str(e))
        yield
        return
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _warn_once(path, f"held by another process for over {LOCK_WAIT_S:g} s")
                    break
                time.sleep(_POLL_S)
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                _warn_once(path, e.strerror or str(e))
                break
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _warn_once(path: str, why: str) -> None:
    folder = os.path.dirname(path)
    if folder in _warned:
        return
    _warned.add(folder)
    warnings.warn(
        f"numba cache {folder}: no file lock ({why}); processes that compile the same function at once "
        "can mix up its cached code: set NUMBA_CACHE_DIR to a local folder",
        RuntimeWarning,
        stacklevel=4,
    )


def _save(self: caching.IndexDataCacheFile, key: Any, data: Any) -> None:
    """numba's ``IndexDataCacheFile.save`` with the data file written before the index that names it
    (numba writes the index first: a process loading in between read a data file left by an older
    source or numba version under that name). Called under the lock."""
    overloads = self._load_index()
    data_name = overloads.get(key)
    if data_name is None:
        existing = set(overloads.values())
        data_name = next(n for n in map(self._data_name, itertools.count(1)) if n not in existing)
        self._save_data(data_name, data)
        overloads[key] = data_name
        self._save_index(overloads)
    else:
        self._save_data(data_name, data)


_NEEDS = ("save", "flush", "_load_index", "_save_index", "_save_data", "_data_name")


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(self: caching.IndexDataCacheFile, *args: Any, **kwargs: Any) -> Any:
        index_path = getattr(self, "_index_path", None)
        if not isinstance(index_path, str):  # a numba whose cache file keeps its path elsewhere
            _warn_once(os.path.join(str(getattr(self, "_cache_path", "?")), "?"), "index path unknown")
            return method(self, *args, **kwargs)
        with _locked(index_path):
            return method(self, *args, **kwargs)

    setattr(locked, _MARK, True)
    return locked


def installed() -> bool:
    """True when numba's cache saves go through the lock."""
    cls = getattr(caching, "IndexDataCacheFile", None)
    return cls is not None and all(getattr(getattr(cls, m, None), _MARK, False) for m in ("save", "flush"))


def install() -> bool:
    """Put the lock around ``IndexDataCacheFile.save`` (data before index) and ``.flush`` (idempotent).

    Returns False, with a warning, when this numba has no such class or methods (the lock is then
    missing: concurrent first compiles are unsafe as in plain numba).
    """
    if installed():
        return True
    cls = getattr(caching, "IndexDataCacheFile", None)
    if cls is None or not all(callable(getattr(cls, m, None)) for m in _NEEDS):
        warnings.warn(
            "numba.core.caching.IndexDataCacheFile is not the one tomodata.numba_cache was written for: "
            "numba's cache writes are not locked; concurrent first compiles may mix up cached code",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    cls.save = _wrap(_save)
    cls.flush = _wrap(cls.flush)
    return True
