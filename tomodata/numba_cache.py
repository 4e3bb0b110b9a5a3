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
beside the index, so read-index / choose-name / write-index / write-data is one step per function.
Loading needs no lock (numba writes both files by atomic rename and treats a missing data file as a
miss). Where the file system refuses locks (Lustre without ``-o flock``) the save goes on unlocked
after one warning: set ``NUMBA_CACHE_DIR`` to a node-local folder there.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from numba.core import caching

__all__ = ["install", "installed"]

_MARK = "_tomo_cache_lock"
_warned: set[str] = set()


@contextlib.contextmanager
def _locked(index_path: str) -> Iterator[None]:
    """Hold an exclusive flock on ``index_path + '.lock'`` (created if missing) for the block."""
    path = index_path + ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:  # numba's own save will meet the same folder and report it
        _warn_once(path, e)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            _warn_once(path, e)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _warn_once(path: str, error: OSError) -> None:
    folder = os.path.dirname(path)
    if folder in _warned:
        return
    _warned.add(folder)
    warnings.warn(
        f"numba cache {folder}: no file lock ({error.strerror or error}); processes that compile the "
        "same function at once can mix up its cached code: set NUMBA_CACHE_DIR to a local folder",
        RuntimeWarning,
        stacklevel=4,
    )


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(self: caching.IndexDataCacheFile, *args: Any, **kwargs: Any) -> Any:
        index_path = getattr(self, "_index_path", None)
        if not isinstance(index_path, str):  # a numba whose cache file keeps its path elsewhere
            _warn_once(os.path.join(str(getattr(self, "_cache_path", "?")), "?"), OSError("index path unknown"))
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
    """Put the lock around ``IndexDataCacheFile.save`` and ``.flush`` (idempotent).

    Returns False, with a warning, when this numba has no such class or methods (the lock is then
    missing: concurrent first compiles are unsafe as in plain numba).
    """
    if installed():
        return True
    cls = getattr(caching, "IndexDataCacheFile", None)
    if cls is None or not all(callable(getattr(cls, m, None)) for m in ("save", "flush")):
        warnings.warn(
            "numba.core.caching.IndexDataCacheFile.save/flush not found: numba's cache writes are not "
            "locked (tomodata.numba_cache); concurrent first compiles may mix up cached code",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    for name in ("save", "flush"):
        method = getattr(cls, name)
        if not getattr(method, _MARK, False):
            setattr(cls, name, _wrap(method))
    return True
