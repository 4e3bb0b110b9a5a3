"""Local sources and the steps after a transfer: copies of files, folders and detached NRRD headers
(through a temporary name, renamed into place only when verified), archive extraction, and the
in-place check of a local source (checked and hashed where it is, not copied)."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..files import replace_dir
from ..io import nrrd_data_names, sniff_kind
from .checksums import _source_bytes, nrrd_data_files, source_sha256, tree_sha256
from .common import (
    _CHUNK,
    _WHAT,
    SINGLE_FILE_KINDS,
    _archive_stem,
    _is_remote,
    _local_path,
    _looks_like_html,
    _target_name,
)
from .errors import ChecksumMismatch, FetchError, FetchResult, HtmlPageError, SourcesExhausted


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
        replace_dir(root, final_dir)
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


def _copy_folder(sid: str, url: str, src: Path, final: Path, expected: str | None) -> str:
    """Copy the folder ``src`` to ``final`` through a temporary folder beside it, verified by
    :func:`tree_sha256` before it is renamed into place; its sha256."""
    if final.exists() and src.resolve() == final.resolve():
        raise FetchError(sid, url, "the source folder is the destination folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.copy-", dir=final.parent))
    try:
        copy = tmp / final.name
        shutil.copytree(src, copy, symlinks=False)
        digest = tree_sha256(copy)
        if expected is not None and digest != expected:
            raise ChecksumMismatch(sid, url, expected, digest)
        replace_dir(copy, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return digest


def _in_place_first(sid: str, alternatives: list[str], base: Path, kind: str, expected) -> FetchResult | None:
    """``in_place=True``: the first existing local alternative checked and hashed where it is; with no
    local alternative existing and no remote one, the error saying what is missing. None where the
    source must be fetched instead (an archive, which is copied and extracted, or remote alternatives)."""
    local = [u for u in alternatives if not _is_remote(u)]
    here = next((u for u in local if _local_exists(u, base)), None)
    if here is not None:
        if _archive_stem(_target_name(here, sid, kind)) is None:  # an archive is copied and extracted
            return _in_place(sid, [here], base, kind, expected)
    elif len(local) == len(alternatives):  # nothing to fetch instead: say what is missing
        return _in_place(sid, local, base, kind, expected)
    return None
