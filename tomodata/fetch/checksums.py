"""Checksums and sizes of sources as fetched: a file's sha256, a folder's :func:`tree_sha256`, a
detached NRRD header's with its data files (:func:`source_sha256`); sizes in bytes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..files import sha256_file, tree_bytes
from ..io import nrrd_data_names


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
        return tree_bytes(path)
    return sum(f.stat().st_size for f in [path] + nrrd_data_files(path))
