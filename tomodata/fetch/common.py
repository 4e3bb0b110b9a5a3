"""What every fetch step shares: the archive suffixes, the per-kind default names and wording, the
target name of a source inside ``<dest>/<id>/``, local-path resolution and the HTML check."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

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


def is_archive_source(src: str, specimen_id: str, kind: str) -> bool:
    """Whether ``tomo fetch`` extracts ``src`` (an archive by its file name, as fetch names it)."""
    return _archive_stem(_target_name(src, specimen_id, kind)) is not None


def _archive_stem(name: str) -> str | None:
    low = name.lower()
    for suf in ARCHIVE_SUFFIXES:
        if low.endswith(suf) and len(name) > len(suf):
            return name[: -len(suf)]
    return None
