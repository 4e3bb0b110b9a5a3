"""The record of what a folder output holds, checked before the workflow decides what to run.

Snakemake treats a ``directory()`` output as present while the folder exists: a file deleted inside
``results/RUN/apps/``, ``results/RUN/explorer/`` or ``results/RUN/real/NAME/apps/`` went unnoticed
("Nothing to be done") and the report or the web page came out short. The commands that write such a
folder (``tomo apps``, ``tomo explorer``, ``tomo infer --apps``) finish by writing
``FOLDER/.contents.json`` (:func:`record_contents`: every file's path relative to the folder and its
size in bytes); :func:`contents_problem` tells whether the folder still holds them, and the workflow
runs the job again where it does not (docs/workflow.md, "Folder outputs").

A folder without the record (written before records existed, or by hand) is not checked: its
contents are unknown, not wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from .files import write_json

__all__ = ["CONTENTS_FILE", "record_contents", "contents_problem"]

#: the record's file name inside the folder (hidden: the report's patterns and the page ignore it)
CONTENTS_FILE = ".contents.json"


def _files(folder: Path) -> dict[str, int]:
    """{path relative to ``folder`` (POSIX): size in bytes} of every file under it but the record."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != CONTENTS_FILE
    }


def record_contents(folder) -> Path:
    """Write ``folder/.contents.json`` (atomically) listing every file under ``folder`` with its size;
    call it last, when the folder is complete. Returns the record's path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder; nothing to record")
    return write_json(folder / CONTENTS_FILE, {"format": 1, "files": _files(folder)})


def contents_problem(folder) -> str | None:
    """Why ``folder`` no longer holds what its record lists (a file gone, or of another size), or
    None: the folder or its record is absent (nothing to check), or every file is as recorded.
    Costs one ``stat`` per recorded file."""
    folder = Path(folder)
    record = folder / CONTENTS_FILE
    if not record.is_file():
        return None
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
        items = [(str(k), int(v)) for k, v in files.items()]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"its record {record.name} is unreadable ({type(e).__name__}: {e})"
    gone = [name for name, _ in items if not (folder / name).is_file()]
    if gone:
        more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
        return f"{len(gone)} of its {len(items)} files are gone ({', '.join(gone[:3])}{more})"
    changed = [name for name, size in items if (folder / name).stat().st_size != size]
    if changed:
        return f"{len(changed)} of its files changed size ({', '.join(changed[:3])})"
    return None
