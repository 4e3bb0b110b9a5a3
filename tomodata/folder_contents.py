"""The record of what a folder output holds, checked before the workflow decides what to run.

Snakemake treats a ``directory()`` output as present while the folder exists: a file deleted inside
``results/RUN/apps/``, ``results/RUN/explorer/`` or ``results/RUN/real/NAME/apps/`` went unnoticed
("Nothing to be done") and the report or the web page came out short. The commands that write such a
folder (``tomo apps``, ``tomo explorer``, ``tomo infer --apps``) finish by writing
``FOLDER/.contents.json`` (:func:`record_contents`: every file's path relative to the folder, its
size in bytes and its SHA-256); :func:`contents_problem` tells whether the folder still holds them,
and the workflow runs the job again where it does not (docs/workflow.md, "Folder outputs"). The
digest catches an edit that keeps a file's size (a PNG damaged by hand), which sizes alone missed.

A folder without the record (written before records existed, or by hand) is not checked: its
contents are unknown, not wrong. A record of format 1 (sizes only, before session 30) is checked by
size.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import sha256_file, write_json

__all__ = ["CONTENTS_FILE", "record_contents", "contents_problem"]

#: the record's file name inside the folder (hidden: the report's patterns and the page ignore it)
CONTENTS_FILE = ".contents.json"


def _files(folder: Path) -> dict[str, dict]:
    """{path relative to ``folder`` (POSIX): {"size": bytes, "sha256": hex}} of every file under it but
    the record."""
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CONTENTS_FILE
    }


def record_contents(folder) -> Path:
    """Write ``folder/.contents.json`` (atomically) listing every file under ``folder`` with its size
    and SHA-256; call it last, when the folder is complete. Returns the record's path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; nothing to record")
    return write_json(folder / CONTENTS_FILE, {"format": 2, "files": _files(folder)})


def _read_record(record: Path) -> list[tuple[str, int, str | None]]:
    """(path, size, sha256 or None) of every file a record lists; format 1 holds sizes only."""
    data = json.loads(record.read_text(encoding="utf-8"))
    files = data["files"]
    if data.get("format", 1) == 1:
        return [(str(k), int(v), None) for k, v in files.items()]
    return [(str(k), int(v["size"]), str(v["sha256"])) for k, v in files.items()]


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def contents_problem(folder) -> str | None:
    """Why ``folder`` no longer holds what its record lists (a file gone, of another size or of other
    content), or None: the folder or its record is absent (nothing to check), or every file is as
    recorded. Costs one ``stat`` per recorded file, and reading them all where every size matches."""
    folder = Path(folder)
    record = folder / CONTENTS_FILE
    if not record.is_file():
        return None
    try:
        items = _read_record(record)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its record {record.name} is unreadable ({type(e).__name__}: {e})"
    gone = [name for name, _, _ in items if not (folder / name).is_file()]
    if gone:
        return f"{len(gone)} of its {len(items)} files are gone ({_listed(gone)})"
    changed = [name for name, size, _ in items if (folder / name).stat().st_size != size]
    if changed:
        return f"{len(changed)} of its files changed size ({_listed(changed)})"
    edited = [name for name, _, digest in items if digest is not None and sha256_file(folder / name) != digest]
    if edited:
        return f"{len(edited)} of its files changed content ({_listed(edited)})"
    return None
