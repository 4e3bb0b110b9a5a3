"""One specimen's source fetched into ``<dest>/<id>/`` (:func:`fetch_one`), in steps: an earlier
verified copy, the mirror folder, then the alternatives in order (HTTP transfer or local copy),
each verified against the manifest's sha256 before it takes its final name."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..files import sha256_file, tree_bytes
from ..manifest import split_sources
from .checksums import _source_bytes, nrrd_data_files, source_sha256
from .common import _archive_stem, _is_remote, _local_path, _target_name
from .errors import ChecksumMismatch, FetchError, FetchResult, SourcesExhausted
from .local import _copy_detached, _copy_file, _copy_folder, _extract, _in_place_first, _result_path
from .transfer import RateLimiter, _download, _download_detached, make_session


def _spec_get(spec, key: str, default: str = "") -> str:
    try:
        v = spec[key]
    except (KeyError, IndexError):
        return default
    if v is None or (isinstance(v, float) and v != v):
        return default
    return str(v).strip()


@dataclass(frozen=True)
class _Job:
    """One specimen's fetch: its id, source kind, expected sha256 (None: any) and folder ``<dest>/<id>``."""

    sid: str
    kind: str
    expected: str | None
    out_dir: Path

    def finish(self, url: str, final: Path, digest: str, *, resumed=False, from_mirror=False, reused=False):
        """The result for ``final`` (a file or folder in ``out_dir``); an archive is extracted beside it
        (a fresh one always, a reused one when its folder is missing)."""
        if final.is_dir():
            return FetchResult(self.sid, final, digest, tree_bytes(final), url, resumed, from_mirror, reused)
        stem = _archive_stem(final.name)
        if stem is not None:
            folder = self.out_dir / stem
            if not (reused and folder.is_dir()):  # a fresh archive is always (re-)extracted
                _extract(final, folder, self.sid, url)
            path = _result_path(folder, self.kind)
            size = final.stat().st_size
        else:
            path, size = final, _source_bytes(final)
        return FetchResult(self.sid, path, digest, size, url, resumed, from_mirror, reused)

    def install(self, part: Path, final: Path, shown: str) -> str:
        """Rename the verified ``part`` to ``final``; its sha256. A mismatch removes the part."""
        digest = sha256_file(part)
        if self.expected is not None and digest != self.expected:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch(self.sid, shown, self.expected, digest)
        os.replace(part, final)
        return digest


def fetch_one(
    spec,
    dest_dir,
    *,
    mirror=None,
    rate: float | None = 1.0,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    base_dir=None,
    progress: bool = False,
    session=None,
    limiter: RateLimiter | None = None,
    in_place: bool = False,
) -> FetchResult:
    """Fetch one specimen's source into ``dest_dir/<id>/`` and verify it (see the module rules).

    ``spec``: a manifest row (mapping or pandas Series) with ``id``, ``source``, ``source_kind`` and
    optionally ``sha256``. ``retries``: extra attempts per URL; ``backoff``: first retry delay in s
    (doubling); ``timeout``: seconds per connect/read; ``rate``: requests per second per host;
    ``base_dir``: folder for relative local paths (default: the current one). ``session``/``limiter``
    may be shared between calls (:func:`make_session`, :class:`RateLimiter`). ``in_place``: the first
    existing local source is checked and hashed where it is, not copied (module rules). The sha256
    checked against the row's is :func:`source_sha256` of what was fetched (archives: as downloaded).
    An earlier verified copy in ``dest_dir/<id>/`` is kept (``reused``): a re-run only hashes.
    """
    sid = _spec_get(spec, "id")
    source = _spec_get(spec, "source")
    kind = _spec_get(spec, "source_kind", "movie") or "movie"
    expected = _spec_get(spec, "sha256").lower() or None
    if not sid or not source:
        raise ValueError(f"spec needs 'id' and 'source', got id={sid!r} source={source!r}")
    if retries < 0 or backoff < 0 or timeout <= 0:
        raise ValueError("retries and backoff must be >= 0 and timeout > 0")
    alternatives = split_sources(source)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    if in_place and (found := _in_place_first(sid, alternatives, base, kind, expected)) is not None:
        return found
    job = _Job(sid, kind, expected, Path(dest_dir) / sid)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    limiter = limiter if limiter is not None else RateLimiter(rate)
    reused = _reuse_existing(job, alternatives, base)  # 1. a verified final file (or folder) from an earlier run
    if reused is not None:
        return reused
    errors: list[Exception] = []
    tried: list[str] = []
    if mirror is not None:  # 2. the mirror folder
        mirrored = _from_mirror(job, alternatives, Path(mirror), errors, tried)
        if mirrored is not None:
            return mirrored
    # 3. the sources, in order
    transfer = dict(retries=retries, backoff=backoff, timeout=timeout, progress=progress)
    return _from_sources(job, alternatives, base, session, limiter, errors, tried, transfer)


def _reuse_existing(job: _Job, alternatives: list[str], base: Path) -> FetchResult | None:
    """The first alternative whose final file (or folder) is already there and verified; a mismatching
    one is reported (and fetched again by the later steps). Without a declared sha256, a copy of a
    local source that exists is verified against that source: new content under the same name
    (a demo movie made again with another seed) is copied again, never the old copy kept."""
    for url in alternatives:
        final = job.out_dir / _target_name(url, job.sid, job.kind)
        if final.exists():
            try:
                digest = source_sha256(final)
            except (FileNotFoundError, ValueError):  # a header whose data files did not all arrive
                digest = None
            if digest is not None and job.expected is None and _changed_local(url, base, digest):
                continue  # copied again by the later steps
            if digest is not None and (job.expected is None or digest == job.expected):
                return job.finish(url, final, digest, reused=True)
            if digest is not None:
                warnings.warn(
                    f"specimen {job.sid!r}: existing {final} has sha256 {digest}, manifest says {job.expected}; "
                    "fetching again",
                    stacklevel=3,  # the caller of fetch_one
                )
    return None


def _changed_local(url: str, base: Path, digest: str) -> bool:
    """Whether ``url`` is a local source that exists and whose content is no longer ``digest``."""
    if _is_remote(url):
        return False
    try:
        src = _local_path(url, base)
        return src.exists() and source_sha256(src) != digest
    except (OSError, ValueError):  # unreadable here: the copy step reports it
        return True


def _from_mirror(job: _Job, alternatives: list[str], mirror: Path, errors: list, tried: list) -> FetchResult | None:
    """``mirror/<id>/<name>``, then ``mirror/<name>``, for each http(s) alternative in order; a mirror
    file that fails is skipped with a warning (its error appended to ``errors``, its name to ``tried``)."""
    for url in alternatives:
        if not _is_remote(url):
            continue
        name = _target_name(url, job.sid, job.kind)
        for cand in (mirror / job.sid / name, mirror / name):
            if not cand.is_file():
                continue
            final = job.out_dir / name
            part = job.out_dir / f"{name}.part"
            shown = f"{url} via mirror {cand}"
            tried.append(shown)
            try:
                if nrrd_data_files(cand):  # a detached header: with its data files, beside it
                    digest = _copy_detached(job.sid, shown, cand, final, job.expected)
                    return job.finish(url, final, digest, from_mirror=True)
                _copy_file(cand, part, job.sid, shown, job.kind)
                digest = job.install(part, final, shown)
                return job.finish(url, final, digest, from_mirror=True)
            except FetchError as e:
                part.unlink(missing_ok=True)
                warnings.warn(f"mirror file skipped: {e}", stacklevel=3)  # the caller of fetch_one
                errors.append(e)
    return None


def _from_sources(job: _Job, alternatives, base: Path, session, limiter, errors: list, tried: list, transfer: dict):
    """The alternatives in order (HTTP or local); the first verified one wins. All failing: the one
    error, or :class:`SourcesExhausted` with every attempt (mirror files included). A session made
    here (``session`` None) is closed here."""
    own_session = session is None
    try:
        for url in alternatives:
            final = job.out_dir / _target_name(url, job.sid, job.kind)
            tried.append(url)
            try:
                if _is_remote(url):
                    if session is None:
                        session = make_session()
                    return _fetch_remote(job, session, limiter, url, final, transfer)
                return _fetch_local(job, url, base, final)
            except FetchError as e:
                errors.append(e)
            except (OSError, ValueError) as e:  # a disk error; a header whose data file line is malformed
                errors.append(FetchError(job.sid, url, f"{type(e).__name__}: {e}"))
    finally:
        if own_session and session is not None:
            session.close()
    if len(errors) == 1:
        raise errors[0]
    raise SourcesExhausted(job.sid, tried, errors)


def _fetch_remote(job: _Job, session, limiter, url: str, final: Path, transfer: dict) -> FetchResult:
    """Download ``url`` through ``<final>.part`` (a detached NRRD header: with its data files), verified."""
    part = job.out_dir / f"{final.name}.part"
    resumed = _download(session, limiter, url, part, job.sid, job.kind, **transfer)
    if final.suffix.lower() == ".nhdr":
        digest = _download_detached(session, limiter, url, part, final, job.sid, job.kind, job.expected, **transfer)
        return job.finish(url, final, digest, resumed=resumed)
    digest = job.install(part, final, url)
    return job.finish(url, final, digest, resumed=resumed)


def _fetch_local(job: _Job, url: str, base: Path, final: Path) -> FetchResult:
    """Copy the local file, folder or detached NRRD header ``url`` (relative to ``base``) to ``final``, verified."""
    try:
        src = _local_path(url, base)
    except ValueError as e:
        raise FetchError(job.sid, url, str(e)) from None
    if src.is_dir():
        return job.finish(url, final, _copy_folder(job.sid, url, src, final, job.expected))
    if not src.is_file():
        raise FetchError(job.sid, url, f"local source {src} does not exist")
    if nrrd_data_files(src):
        return job.finish(url, final, _copy_detached(job.sid, url, src, final, job.expected))
    part = job.out_dir / f"{final.name}.part"
    _copy_file(src, part, job.sid, url, job.kind)
    digest = job.install(part, final, url)
    return job.finish(url, final, digest)
