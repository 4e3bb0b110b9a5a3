"""The errors of a fetch (each names the specimen id and the URL) and :class:`FetchResult`, the
record of one fetched source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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
