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

Layout: :mod:`.specimen` (:func:`fetch_one`, step by step) and :mod:`.driver` (:func:`fetch_manifest`)
drive :mod:`.transfer` (HTTP with resume, retries, rate limit) and :mod:`.local` (copies, archives,
in place); :mod:`.checksums` hashes sources, :mod:`.errors` holds the errors and :class:`FetchResult`,
:mod:`.common` the naming rules they share.
"""

from __future__ import annotations

from .checksums import nrrd_data_files, source_sha256, tree_sha256
from .common import ARCHIVE_SUFFIXES, SINGLE_FILE_KINDS
from .driver import fetch_manifest
from .errors import (
    ChecksumMismatch,
    FetchConnectionError,
    FetchError,
    FetchManifestError,
    FetchResult,
    FetchTimeout,
    HtmlPageError,
    HTTPStatusError,
    SourcesExhausted,
)
from .specimen import fetch_one
from .transfer import USER_AGENT, RateLimiter, make_session

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
    "SINGLE_FILE_KINDS",
    "USER_AGENT",
]
