"""HTTP transfer: one ``requests`` session (one connection per host, ``Accept-Encoding: identity``),
a per-host rate limit, GET into ``<name>.part`` resuming with ``Range``, retries with exponential
backoff on connection errors, timeouts, 5xx, 408 and 429, and the data files of a detached NRRD
header fetched beside it. Sizes in bytes, times in seconds."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin, urlparse

import requests
import urllib3
from requests.adapters import HTTPAdapter

from ..files import sha256_file
from ..io import nrrd_data_names
from ..progress import progress as progress_bar
from .checksums import _detached_sha256
from .common import _CHUNK, _WHAT, _looks_like_html
from .errors import (
    ChecksumMismatch,
    FetchConnectionError,
    FetchError,
    FetchTimeout,
    HtmlPageError,
    HTTPStatusError,
    _Restart,
    _Retryable,
)

USER_AGENT = "single-image-tomography-fetch/0.1 (research dataset rebuild; python-requests)"
_MAX_BACKOFF_S = 60.0


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
        # urllib3's NewConnectionError (refused, unreachable, unknown host) subclasses its
        # ConnectTimeoutError: no timeout, though the class says so
        if isinstance(e, kinds) and not isinstance(e, urllib3.exceptions.NewConnectionError):
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
        answer = _check_answer(resp, offset, url, sid, kind)
        if answer is None:
            return True  # the part already holds the whole file
        mode, offset, expected_total, resumed = answer
        _write_body(resp, part, mode, offset, expected_total, url, sid, kind, progress)
        size = part.stat().st_size
        if expected_total is not None and size != expected_total:
            raise _Retryable(FetchConnectionError(sid, url, f"incomplete body: {size} of {expected_total} bytes"))
        return resumed


def _check_answer(resp, offset: int, url, sid: str, kind: str) -> tuple[str, int, int | None, bool] | None:
    """How to write the body of ``resp`` to a part of ``offset`` bytes: (file mode, offset it starts
    at, expected total size or None, resumed); None when a 416 says the part is already complete.

    Raises _Retryable (408, 429, 5xx), _Restart (the answer does not continue the part), HTTPStatusError
    (other statuses) or HtmlPageError (an HTML Content-Type)."""
    status = resp.status_code
    if status == 416 and offset:
        _, total = _content_range(resp.headers.get("Content-Range"))
        if total is not None and total == offset:
            return None
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
    if status == 206:
        start, total = _content_range(resp.headers.get("Content-Range"))
        if start != offset:
            raise _Restart()
        return "ab", offset, total, offset > 0
    # 200: whole body (a server that ignores Range restarts from zero)
    length = resp.headers.get("Content-Length")
    return "wb", 0, (int(length) if length and length.isdigit() else None), False


def _write_body(resp, part: Path, mode: str, offset: int, expected_total, url, sid: str, kind: str, progress: bool):
    """Stream the body of ``resp`` into ``part`` (``mode`` "ab" or "wb"), fsynced; an HTML first chunk
    of a fresh part is an HtmlPageError (the part is removed); a break-off is _Retryable."""
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
                        raise HtmlPageError(sid, url, f"got an HTML page instead of {_WHAT.get(kind, 'binary data')}")
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
