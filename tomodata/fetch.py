"""Fetch the sources named in a specimen manifest into ``<dest>/<id>/``, verified and atomically.

Rules (details in ``docs/manifest.md``):

* **Layout.** A source lands at ``<dest>/<id>/<name>``, ``name`` being the last part of the URL path
  or local path (unsafe characters → ``_``; an empty name → ``<id>`` + a suffix for the kind).
  Downloads are written to ``<name>.part`` and renamed with ``os.replace`` only after the checksum
  check: a file under its final name is always complete.
* **Alternatives.** ``a | b | c`` in ``source`` are tried in order; the first that yields a verified
  file wins. If all fail, :class:`SourcesExhausted` lists every attempt (one alternative: its own error).
* **Mirror.** With ``mirror=DIR``, ``DIR/<id>/<name>`` and then ``DIR/<name>`` (for each http(s)
  alternative, in order) are used instead of the network when they exist; a mirror file that fails
  the checksum is skipped with a warning.
* **Existing files.** A final file already present is kept when its sha256 equals the manifest's
  (or, when the manifest has none, trusted and hashed); a mismatching one is fetched again.
* **HTTP.** One ``requests`` session, one connection per host, ``Accept-Encoding: identity``;
  resume with ``Range`` from an existing ``.part`` (a 200 answer restarts from zero; 416 counts as
  complete only if the server's size equals the part's); retries with exponential backoff
  (``backoff * 2**k`` s) on connection errors, timeouts, 5xx, 408 and 429; other 4xx fail at once;
  at most ``rate`` requests per second per host. A ``text/html`` answer, or a body starting with
  ``<!DOCTYPE html``/``<html``, is an error (:class:`HtmlPageError`).
* **Archives.** A ``.zip``, ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or ``.tar.xz`` source is
  verified (its sha256 is the archive's), kept, and extracted into ``<dest>/<id>/<stem>/`` through a
  temporary folder that is renamed into place; a single top-level folder in the archive becomes that
  folder. The result's path is the folder, or its only file for single-file kinds (movie, tiff, …).
* **Local folders** (``image_folder``/``dicom`` sources given as a folder path or ``file://`` URL) are
  copied the same way; their checksum is :func:`tree_sha256`.
* **Detached NRRD headers** (``.nhdr``) are fetched with every data file they name (one file, a
  ``%d`` pattern or a LIST), kept at the same relative names (remote: data URLs relative to the
  header's URL; the header is renamed into place last); the checksum covers them all
  (:func:`source_sha256`). A missing data file is an error naming header and file.
* **In place** (``in_place=True``): the first local alternative that exists is not copied; it is
  checked (exists, readable, a file or folder as its kind needs, the format its kind says) and
  hashed exactly as a copy would be (:func:`source_sha256`), and the result's path is the source
  itself (``Path.absolute()``: symlinks kept). An archive is still copied and extracted (the readers
  need the folder), and when no local alternative exists the remote ones are fetched as usual.

Every error is a :class:`FetchError` that names the specimen id and the URL.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import url2pathname

import pandas as pd
import requests
import urllib3
from requests.adapters import HTTPAdapter

from .files import sha256_file
from .io import nrrd_data_names, sniff_kind
from .manifest import load_manifest, record_checksums, split_sources, validate_manifest
from .progress import progress as progress_bar

__all__ = [
    "FetchResult",
    "FetchError",
    "HTTPStatusError",
    "FetchTimeout",
    "FetchConnectionError",
    "ChecksumMismatch",
    "HtmlPageError",
    "SourcesExhausted",
    "FetchManifestError",
    "source_sha256",
    "nrrd_data_files",
    "RateLimiter",
    "make_session",
    "fetch_one",
    "fetch_manifest",
    "tree_sha256",
    "ARCHIVE_SUFFIXES",
]

USER_AGENT = "single-image-tomography-fetch/0.1 (research dataset rebuild; python-requests)"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")
SINGLE_FILE_KINDS = ("movie", "tiff", "nrrd", "nifti", "npy")
_DEFAULT_SUFFIX = {
    "movie": ".mp4",
    "tiff": ".tif",
    "nrrd": ".nrrd",
    "nifti": ".nii.gz",
    "npy": ".npy",
    "image_folder": ".zip",
    "dicom": ".zip",
}
_WHAT = {
    "movie": "a movie",
    "tiff": "a TIFF file",
    "nrrd": "an NRRD file",
    "nifti": "a NIfTI file",
    "npy": "a NumPy file",
    "image_folder": "an image archive",
    "dicom": "a DICOM archive",
}
_CHUNK = 1 << 20
_MAX_BACKOFF_S = 60.0


# --------------------------------------------------------------------------------------------- errors


class FetchError(RuntimeError):
    """A source could not be fetched; ``specimen_id`` and ``url`` say which."""

    def __init__(self, specimen_id: str, url: str, message: str):
        self.specimen_id = specimen_id
        self.url = url
        super().__init__(f"specimen {specimen_id!r}: {message} (URL: {url})")


class HTTPStatusError(FetchError):
    """The server answered with an error status (``status``)."""

    def __init__(self, specimen_id: str, url: str, status: int, reason: str = ""):
        self.status = status
        super().__init__(specimen_id, url, f"HTTP {status} {reason}".rstrip())


class FetchTimeout(FetchError):
    """The server did not answer within the timeout (after all retries)."""


class FetchConnectionError(FetchError):
    """The connection failed or broke off (after all retries)."""


class ChecksumMismatch(FetchError):
    """The fetched data's sha256 (``actual``) differs from the manifest's (``expected``)."""

    def __init__(self, specimen_id: str, url: str, expected: str, actual: str):
        self.expected = expected
        self.actual = actual
        super().__init__(specimen_id, url, f"sha256 mismatch: expected {expected}, got {actual}")


class HtmlPageError(FetchError):
    """An HTML page came where binary data (a movie, an archive …) was expected."""


class SourcesExhausted(FetchError):
    """Every alternative source of a specimen failed; ``errors`` holds each attempt's error."""

    def __init__(self, specimen_id: str, urls: list[str], errors: Sequence[Exception]):
        self.specimen_id = specimen_id
        self.url = " | ".join(urls)
        self.errors = list(errors)
        lines = "\n  ".join(str(e) for e in errors)
        RuntimeError.__init__(self, f"specimen {specimen_id!r}: all {len(errors)} sources failed:\n  {lines}")


class FetchManifestError(RuntimeError):
    """Some specimens failed (``keep_going=True``): ``failures`` maps id → error, ``results`` the rest."""

    def __init__(self, failures: dict[str, Exception], results: list[FetchResult]):
        self.failures = dict(failures)
        self.results = list(results)
        lines = "\n  ".join(str(e) for e in failures.values())
        super().__init__(f"{len(failures)} of {len(failures) + len(results)} specimens failed:\n  {lines}")


@dataclass(frozen=True)
class FetchResult:
    """One fetched specimen source.

    ``path``: the file (a detached NRRD: its header), or the folder for archives and folder sources;
    ``sha256``/``bytes``: :func:`source_sha256` and the size of what was fetched (an archive: the
    archive's; a folder: :func:`tree_sha256` and the total; a detached NRRD: header + data files);
    ``url``: the alternative used;
    ``resumed``: a partial download was continued; ``from_mirror``: copied from the mirror folder;
    ``reused``: the final file was already there and verified, nothing was fetched; ``in_place``:
    a local source checked and hashed where it is (``path`` is the source).
    """

    id: str
    path: Path
    sha256: str
    bytes: int
    url: str
    resumed: bool = False
    from_mirror: bool = False
    reused: bool = False
    in_place: bool = False


class _Retryable(Exception):
    def __init__(self, error: FetchError, retry_after: float | None = None):
        self.error = error
        self.retry_after = retry_after


class _Restart(Exception):
    """The .part cannot be continued: discard it and download from zero."""


# ------------------------------------------------------------------------------------------- helpers


def tree_sha256(folder) -> str:
    """Hex sha256 of a folder: of the lines ``"<file sha256>  <relative/posix/path>\\n"``, sorted by path.

    Equals ``cd FOLDER && find . -type f | sed 's#^./##' | LC_ALL=C sort | xargs sha256sum | sha256sum``
    for ASCII names.
    """
    folder = Path(folder)
    files = sorted(
        (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()),
        key=lambda s: s.encode("utf-8"),
    )
    h = hashlib.sha256()
    for rel in files:
        h.update(f"{sha256_file(folder / rel)}  {rel}\n".encode())
    return h.hexdigest()


def nrrd_data_files(header) -> list[Path]:
    """The data files of a detached NRRD header (absolute or beside the header); [] for others."""
    header = Path(header)
    if header.suffix.lower() != ".nhdr":
        return []
    return [Path(n) if Path(n).is_absolute() else header.parent / n for n in nrrd_data_names(header)]


def source_sha256(path) -> str:
    """The checksum of a source as fetched: :func:`tree_sha256` of a folder; for a detached NRRD
    header, the sha256 of the lines ``"<file sha256>  <name>\n"`` of the header and then each data
    file in the header's order (names relative to the header's folder); else :func:`tomodata.files.sha256_file`."""
    path = Path(path)
    if path.is_dir():
        return tree_sha256(path)
    data = nrrd_data_files(path)
    if not data:
        return sha256_file(path)
    return _detached_sha256(path, path.name, data)


def _detached_sha256(header: Path, header_name: str, data: list[Path]) -> str:
    """:func:`source_sha256` of a detached header stored as ``header`` (named ``header_name``)."""
    h = hashlib.sha256()
    h.update(f"{sha256_file(header)}  {header_name}\n".encode())
    for f in data:
        if not f.is_file():
            raise FileNotFoundError(f"{header.parent / header_name}: data file {f} is missing")
        h.update(f"{sha256_file(f)}  {os.path.relpath(f, header.parent)}\n".encode())
    return h.hexdigest()


def _source_bytes(path: Path) -> int:
    if path.is_dir():
        return _tree_bytes(path)
    return sum(f.stat().st_size for f in [path] + nrrd_data_files(path))


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _looks_like_html(head: bytes) -> bool:
    s = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return s.startswith(b"<!doctype html") or s.startswith(b"<html")


def _is_remote(src: str) -> bool:
    return src.lower().startswith(("http://", "https://"))


def _local_path(src: str, base_dir: Path) -> Path:
    if src.lower().startswith("file://"):
        u = urlparse(src)
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URL with a host is not supported: {src}")
        return Path(url2pathname(u.path))
    p = Path(os.path.expanduser(src))
    return p if p.is_absolute() else base_dir / p


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return "" if name in ("", ".", "..") else name


def _target_name(src: str, specimen_id: str, kind: str) -> str:
    if _is_remote(src) or src.lower().startswith("file://"):
        raw = unquote(PurePosixPath(urlparse(src).path).name)
    else:
        raw = Path(src.rstrip("/\\")).name
    return _safe_name(raw) or f"{specimen_id}{_DEFAULT_SUFFIX.get(kind, '.bin')}"


def _archive_stem(name: str) -> str | None:
    low = name.lower()
    for suf in ARCHIVE_SUFFIXES:
        if low.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return None


def _backoff_sleep(backoff: float, attempt: int, retry_after: float | None) -> None:
    delay = backoff * (2 ** (attempt - 1))
    if retry_after is not None:
        delay = max(delay, retry_after)
    time.sleep(min(delay, _MAX_BACKOFF_S))


class RateLimiter:
    """At most ``rate`` requests per second per host (a minimum interval of ``1/rate`` s); None/0 = off."""

    def __init__(self, rate: float | None):
        if rate is not None and rate < 0:
            raise ValueError(f"rate must be >= 0 requests per second, got {rate}")
        self.interval = 1.0 / rate if rate else 0.0
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, host: str) -> None:
        """Block until a request to ``host`` is allowed."""
        if self.interval <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            time.sleep(start - now)


def make_session():
    """A ``requests.Session`` with one pooled connection per host and no automatic retries."""
    s = requests.Session()
    adapter = HTTPAdapter(pool_connections=8, pool_maxsize=1, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return s


# ------------------------------------------------------------------------------------- HTTP download


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes a-b/N`` → (a, N); ``bytes */N`` → (None, N); N may be ``*`` (None)."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _retry_after(resp) -> float | None:
    try:
        return float(resp.headers.get("Retry-After", ""))
    except ValueError:
        return None


def _is_timeout(exc: BaseException) -> bool:
    """Whether an exception (or one it wraps, as requests does with urllib3's) is a timeout."""
    kinds = (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kinds):
            return True
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return False


def _http_attempt(session, limiter, url, part: Path, sid: str, kind: str, timeout: float, progress: bool) -> bool:
    """One GET into ``part`` (continuing it with Range when it has bytes); True when it was resumed.

    Raises _Retryable, _Restart or a final FetchError.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    limiter.wait(urlparse(url).netloc.lower())
    try:
        resp = session.get(url, headers=headers, stream=True, timeout=timeout, allow_redirects=True)
    except requests.RequestException as e:
        cls = FetchTimeout if _is_timeout(e) else FetchConnectionError
        what = "timed out" if cls is FetchTimeout else "connection failed"
        raise _Retryable(cls(sid, url, f"{what} ({type(e).__name__}: {e})")) from e
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            _, total = _content_range(resp.headers.get("Content-Range"))
            if total is not None and total == offset:
                return True  # the part already holds the whole file
            raise _Restart()
        if status in (408, 429) or status >= 500:
            raise _Retryable(HTTPStatusError(sid, url, status, resp.reason or ""), _retry_after(resp))
        if status not in (200, 206):
            raise HTTPStatusError(sid, url, status, resp.reason or "")
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml"):
            raise HtmlPageError(
                sid, url, f"got an HTML page instead of {_WHAT.get(kind, 'binary data')} (Content-Type {ctype})"
            )
        resumed = False
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                raise _Restart()
            resumed = offset > 0
            mode, expected_total = "ab", total
        else:  # 200: whole body (a server that ignores Range restarts from zero)
            offset = 0
            length = resp.headers.get("Content-Length")
            mode, expected_total = "wb", (int(length) if length and length.isdigit() else None)
        bar = None
        if progress:  # a bar on a terminal, lines every 30 s or 5 % in a log
            bar = progress_bar(total=expected_total, initial=offset, unit="B", unit_scale=True, desc=sid, leave=False)
        try:
            with open(part, mode) as f:
                first = offset == 0
                # raw, undecoded reads: each returns what arrived before a break-off (iter_content
                # would drop a partly filled buffer) and the bytes are the file's, as Range counts them
                while chunk := resp.raw.read(_CHUNK, decode_content=False):
                    if first:
                        first = False
                        if _looks_like_html(chunk[:512]):
                            f.close()
                            part.unlink(missing_ok=True)
                            raise HtmlPageError(
                                sid, url, f"got an HTML page instead of {_WHAT.get(kind, 'binary data')}"
                            )
                    f.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                f.flush()
                os.fsync(f.fileno())
        except (requests.RequestException, urllib3.exceptions.HTTPError) as e:  # not local disk errors
            cls = FetchTimeout if _is_timeout(e) else FetchConnectionError
            what = "timed out while reading" if cls is FetchTimeout else "connection broke off"
            got = part.stat().st_size if part.exists() else 0
            raise _Retryable(cls(sid, url, f"{what} after {got} bytes ({type(e).__name__}: {e})")) from e
        finally:
            if bar is not None:
                bar.close()
        size = part.stat().st_size
        if expected_total is not None and size != expected_total:
            raise _Retryable(FetchConnectionError(sid, url, f"incomplete body: {size} of {expected_total} bytes"))
        return resumed


def _download(session, limiter, url, part: Path, sid, kind, *, retries, backoff, timeout, progress) -> bool:
    """Fill ``part`` with the whole body of ``url`` (resuming, retrying); True if any resume happened."""
    failures = 0
    restarts = 0
    resumed = False
    while True:
        try:
            resumed |= _http_attempt(session, limiter, url, part, sid, kind, timeout, progress)
            return resumed
        except _Restart:
            part.unlink(missing_ok=True)
            restarts += 1
            if restarts > 2:
                raise FetchConnectionError(
                    sid, url, "the server's partial answers do not fit the partial file"
                ) from None
        except _Retryable as r:
            failures += 1
            if failures > retries:
                raise r.error from None
            _backoff_sleep(backoff, failures, r.retry_after)


# ------------------------------------------------------------------------------------ local sources


def _copy_file(src: Path, part: Path, sid: str, url: str, kind: str) -> None:
    with open(src, "rb") as fin:
        head = fin.read(512)
        if _looks_like_html(head):
            raise HtmlPageError(sid, url, f"got an HTML page instead of {_WHAT.get(kind, 'binary data')}")
        fin.seek(0)
        with open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)
            fout.flush()
            os.fsync(fout.fileno())


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final`` (replacing an old one without a partial state)."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _safe_extract(archive: Path, into: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                p = PurePosixPath(info.filename.replace("\\", "/"))
                if p.is_absolute() or ".." in p.parts or re.match(r"^[A-Za-z]:", info.filename):
                    raise ValueError(f"unsafe member path {info.filename!r} in {archive.name}")
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")


def _extract(archive: Path, final_dir: Path, sid: str, url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.extract-", dir=final_dir.parent))
    try:
        try:
            _safe_extract(archive, tmp)
        except (zipfile.BadZipFile, tarfile.TarError, ValueError, EOFError, OSError) as e:
            raise FetchError(sid, url, f"cannot extract archive {archive.name}: {e}") from e
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        _replace_dir(root, final_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _result_path(folder: Path, kind: str) -> Path:
    if kind in SINGLE_FILE_KINDS:
        files = [p for p in folder.rglob("*") if p.is_file()]
        if len(files) == 1:
            return files[0]
    return folder


def _check_kind(sid: str, url: str, src: Path, kind: str) -> None:
    """A local source must exist, be readable and hold the format its kind says."""
    if not src.exists():
        where = "" if src.parent.exists() else f" (nor does its folder {src.parent})"
        raise FetchError(
            sid, url, f"{src} does not exist{where}; fix the manifest's source column or put the data there"
        )
    if not os.access(src, os.R_OK):
        raise FetchError(sid, url, f"{src} is not readable (permissions)")
    folder_kind = kind in ("image_folder", "dicom")
    if src.is_dir() and not folder_kind:
        raise FetchError(sid, url, f"{src} is a folder but source_kind {kind} needs a file; fix source or source_kind")
    if src.is_file() and kind == "image_folder" and not zipfile.is_zipfile(src):
        raise FetchError(sid, url, f"{src} is a file but source_kind image_folder needs a folder")
    if src.is_file() and _archive_stem(src.name) is not None:
        return  # an archive: what it holds is checked when it is read
    try:
        found = sniff_kind(src)
    except ValueError as e:
        raise FetchError(sid, url, f"cannot be read as {kind}: {e}") from None
    if found != kind:
        raise FetchError(sid, url, f"{src} holds {found} data but source_kind says {kind}; fix source_kind")


def _local_exists(url: str, base: Path) -> bool:
    try:
        return _local_path(url, base).exists()
    except ValueError:
        return False


def _in_place(sid: str, alternatives: list[str], base: Path, kind: str, expected: str | None) -> FetchResult:
    """The first existing local alternative, checked and hashed where it is (no copy)."""
    errors = []
    for url in alternatives:
        try:
            src = _local_path(url, base).absolute()  # not resolved: symlinks stay as written
        except ValueError as e:
            errors.append(FetchError(sid, url, str(e)))
            continue
        try:
            _check_kind(sid, url, src, kind)
            try:
                digest = source_sha256(src)
            except FileNotFoundError as e:
                raise FetchError(
                    sid, url, f"{e}; put it beside the header or fix the header's data file line"
                ) from None
        except FetchError as e:
            errors.append(e)
            continue
        if expected is not None and digest != expected:
            raise ChecksumMismatch(sid, url, expected, digest)
        return FetchResult(sid, src, digest, _source_bytes(src), url, in_place=True)
    if len(errors) == 1:
        raise errors[0]
    raise SourcesExhausted(sid, alternatives, errors)


def _copy_detached(sid: str, url: str, header: Path, final: Path, expected: str | None) -> str:
    """Copy a detached NRRD header and its data files beside ``final`` (same relative names)."""
    names = nrrd_data_files(header)
    missing = [f for f in names if not f.is_file()]
    if missing:
        raise FetchError(sid, url, f"{header} names the data file {missing[0]}, which does not exist")
    if any(Path(n).is_absolute() for n in nrrd_data_names(header)) or any(
        ".." in Path(os.path.relpath(n, header.parent)).parts for n in names
    ):
        raise FetchError(
            sid,
            url,
            f"{header}: data files named by an absolute path or outside its folder cannot "
            "be copied; name them relative to the header's folder, or fetch in place",
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.copy-", dir=final.parent))
    try:
        for f in [header] + names:
            dst = tmp / os.path.relpath(f, header.parent)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
        digest = source_sha256(tmp / header.name)
        if expected is not None and digest != expected:
            raise ChecksumMismatch(sid, url, expected, digest)
        for f in sorted(tmp.rglob("*"), key=lambda q: q.name == header.name):  # the header last
            if f.is_file():
                dst = final.parent / f.relative_to(tmp)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest


def _download_detached(session, limiter, url: str, part: Path, final: Path, sid: str, kind: str, expected, **kw) -> str:
    """Download the data files that the downloaded detached NRRD header ``part`` names (URLs relative
    to the header's URL, same relative names beside ``final``); verify header + data files
    (:func:`source_sha256`), then rename the header to ``final``, last."""
    try:
        names = nrrd_data_names(part)
    except (ValueError, OSError) as e:
        part.unlink(missing_ok=True)
        raise FetchError(sid, url, f"{final.name}: cannot read the header's data file line: {e}") from None
    data = []
    for rel in names:
        if Path(rel).is_absolute() or PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts:
            part.unlink(missing_ok=True)
            raise FetchError(
                sid,
                url,
                f"{final.name}: data file {rel} is outside the header's folder; it cannot be fetched from a URL",
            )
        f = final.parent / rel
        data.append(f)
        data_url = urljoin(url, PurePosixPath(rel).as_posix())
        fpart = f.with_name(f.name + ".part")
        fpart.parent.mkdir(parents=True, exist_ok=True)
        try:
            _download(session, limiter, data_url, fpart, sid, kind, **kw)
        except FetchError as e:
            raise FetchError(
                sid, url, f"{final.name} names the data file {rel}, which could not be fetched from {data_url}: {e}"
            ) from e
        os.replace(fpart, f)
    digest = _detached_sha256(part, final.name, data) if data else sha256_file(part)  # as source_sha256
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        for f in data:
            f.unlink(missing_ok=True)
        raise ChecksumMismatch(sid, url, expected, digest)
    os.replace(part, final)
    return digest


# ---------------------------------------------------------------------------------------- public API


def _spec_get(spec, key: str, default: str = "") -> str:
    try:
        v = spec[key]
    except (KeyError, IndexError):
        return default
    if v is None or (isinstance(v, float) and v != v):
        return default
    return str(v).strip()


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
    out_dir = Path(dest_dir) / sid
    if in_place:
        local = [u for u in alternatives if not _is_remote(u)]
        here = next((u for u in local if _local_exists(u, base)), None)
        if here is not None:
            if _archive_stem(_target_name(here, sid, kind)) is None:  # an archive is copied and extracted
                return _in_place(sid, [here], base, kind, expected)
        elif len(local) == len(alternatives):  # nothing to fetch instead: say what is missing
            return _in_place(sid, local, base, kind, expected)
    out_dir.mkdir(parents=True, exist_ok=True)
    limiter = limiter if limiter is not None else RateLimiter(rate)
    own_session = session is None

    def finish(url: str, final: Path, digest: str, *, resumed=False, from_mirror=False, reused=False):
        if final.is_dir():
            return FetchResult(sid, final, digest, _tree_bytes(final), url, resumed, from_mirror, reused)
        stem = _archive_stem(final.name)
        if stem is not None:
            folder = out_dir / stem
            if not (reused and folder.is_dir()):  # a fresh archive is always (re-)extracted
                _extract(final, folder, sid, url)
            path = _result_path(folder, kind)
            size = final.stat().st_size
        else:
            path, size = final, _source_bytes(final)
        return FetchResult(sid, path, digest, size, url, resumed, from_mirror, reused)

    # 1. A verified final file (or folder) from an earlier run.
    for url in alternatives:
        final = out_dir / _target_name(url, sid, kind)
        if final.exists():
            try:
                digest = source_sha256(final)
            except (FileNotFoundError, ValueError):  # a header whose data files did not all arrive
                digest = None
            if digest is not None and (expected is None or digest == expected):
                return finish(url, final, digest, reused=True)
            if digest is not None:
                warnings.warn(
                    f"specimen {sid!r}: existing {final} has sha256 {digest}, manifest says {expected}; fetching again",
                    stacklevel=2,
                )

    errors: list[Exception] = []
    tried: list[str] = []

    def install_file(url: str, src_part: Path, final: Path, shown: str) -> str:
        digest = sha256_file(src_part)
        if expected is not None and digest != expected:
            src_part.unlink(missing_ok=True)
            raise ChecksumMismatch(sid, shown, expected, digest)
        os.replace(src_part, final)
        return digest

    # 2. The mirror folder.
    if mirror is not None:
        for url in alternatives:
            if not _is_remote(url):
                continue
            name = _target_name(url, sid, kind)
            for cand in (Path(mirror) / sid / name, Path(mirror) / name):
                if not cand.is_file():
                    continue
                final = out_dir / name
                part = out_dir / f"{name}.part"
                shown = f"{url} via mirror {cand}"
                tried.append(shown)
                try:
                    if nrrd_data_files(cand):  # a detached header: with its data files, beside it
                        return finish(url, final, _copy_detached(sid, shown, cand, final, expected), from_mirror=True)
                    _copy_file(cand, part, sid, shown, kind)
                    digest = install_file(url, part, final, shown)
                    return finish(url, final, digest, from_mirror=True)
                except FetchError as e:
                    part.unlink(missing_ok=True)
                    warnings.warn(f"mirror file skipped: {e}", stacklevel=2)
                    errors.append(e)

    # 3. The sources, in order.
    try:
        for url in alternatives:
            name = _target_name(url, sid, kind)
            final = out_dir / name
            part = out_dir / f"{name}.part"
            tried.append(url)
            try:
                if _is_remote(url):
                    if session is None:
                        session = make_session()
                    resumed = _download(
                        session,
                        limiter,
                        url,
                        part,
                        sid,
                        kind,
                        retries=retries,
                        backoff=backoff,
                        timeout=timeout,
                        progress=progress,
                    )
                    if final.suffix.lower() == ".nhdr":
                        digest = _download_detached(
                            session,
                            limiter,
                            url,
                            part,
                            final,
                            sid,
                            kind,
                            expected,
                            retries=retries,
                            backoff=backoff,
                            timeout=timeout,
                            progress=progress,
                        )
                        return finish(url, final, digest, resumed=resumed)
                    digest = install_file(url, part, final, url)
                    return finish(url, final, digest, resumed=resumed)
                try:
                    src = _local_path(url, base)
                except ValueError as e:
                    raise FetchError(sid, url, str(e)) from None
                if src.is_dir():
                    if final.exists() and src.resolve() == final.resolve():
                        raise FetchError(sid, url, "the source folder is the destination folder")
                    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.copy-", dir=out_dir))
                    try:
                        copy = tmp / name
                        shutil.copytree(src, copy, symlinks=False)
                        digest = tree_sha256(copy)
                        if expected is not None and digest != expected:
                            raise ChecksumMismatch(sid, url, expected, digest)
                        _replace_dir(copy, final)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
                    return finish(url, final, digest)
                if not src.is_file():
                    raise FetchError(sid, url, f"local source {src} does not exist")
                if nrrd_data_files(src):
                    return finish(url, final, _copy_detached(sid, url, src, final, expected))
                _copy_file(src, part, sid, url, kind)
                digest = install_file(url, part, final, url)
                return finish(url, final, digest)
            except FetchError as e:
                errors.append(e)
            except (OSError, ValueError) as e:  # a disk error; a header whose data file line is malformed
                errors.append(FetchError(sid, url, f"{type(e).__name__}: {e}"))
    finally:
        if own_session and session is not None:
            session.close()
    if len(errors) == 1:
        raise errors[0]
    raise SourcesExhausted(sid, tried, errors)


def fetch_manifest(
    manifest_path_or_df,
    dest_dir,
    *,
    mirror=None,
    rate: float | None = 1.0,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    only: Iterable[str] | None = None,
    progress: bool = False,
    keep_going: bool = False,
    record: bool = False,
    in_place: bool = False,
) -> list[FetchResult]:
    """Fetch every specimen of a manifest (path or DataFrame) in order, one at a time; see :func:`fetch_one`.

    ``only``: ids to fetch (others skipped; an unknown id is a ValueError). ``keep_going``: fetch the
    rest after a failure and raise :class:`FetchManifestError` at the end (else the first error is
    raised at once). ``record``: write the sha256 of rows that lacked one back into the manifest file
    (:func:`tomodata.manifest.record_checksums`; needs a path). ``progress``: per-file bars and one
    line per specimen on stderr. ``in_place``: local sources are checked and hashed where they are.
    """
    path = None
    if isinstance(manifest_path_or_df, pd.DataFrame):
        df = manifest_path_or_df
        if "base_dir" not in df.attrs:
            df = validate_manifest(df)
    else:
        path = Path(manifest_path_or_df)
        df = load_manifest(path)
    if record and path is None:
        raise ValueError("record=True needs the manifest's path, not a DataFrame")
    base_dir = Path(df.attrs.get("base_dir", Path.cwd()))
    rows = df.to_dict(orient="records")
    if only is not None:
        wanted = {str(i) for i in only}
        unknown = sorted(wanted - {r["id"] for r in rows})
        if unknown:
            raise ValueError(f"ids not in the manifest: {unknown}")
        rows = [r for r in rows if r["id"] in wanted]
    session = make_session()
    limiter = RateLimiter(rate)
    results: list[FetchResult] = []
    failures: dict[str, Exception] = {}
    try:
        for k, row in enumerate(rows, start=1):
            try:
                res = fetch_one(
                    row,
                    dest_dir,
                    mirror=mirror,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                    base_dir=base_dir,
                    progress=progress,
                    session=session,
                    limiter=limiter,
                    in_place=in_place,
                )
            except FetchError as e:
                if not keep_going:
                    raise
                failures[row["id"]] = e
                if progress:
                    print(f"[{k}/{len(rows)}] {row['id']}: FAILED: {e}", file=sys.stderr)
                continue
            results.append(res)
            if progress:
                how = (
                    "in place"
                    if res.in_place
                    else "kept"
                    if res.reused
                    else "mirror"
                    if res.from_mirror
                    else "resumed"
                    if res.resumed
                    else "fetched"
                )
                print(f"[{k}/{len(rows)}] {res.id}: {how} {res.bytes} bytes -> {res.path}", file=sys.stderr)
    finally:
        session.close()
        if record and path is not None:
            known = dict(zip(df["id"], df["sha256"]))
            new = {r.id: r.sha256 for r in results if not known.get(r.id)}
            if new:
                record_checksums(path, new)
    if failures:
        raise FetchManifestError(failures, results)
    return results
