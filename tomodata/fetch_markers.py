"""Fetch records checked against the files they stand for.

``tomo fetch`` writes one record per specimen (the workflow's ``resources/RUN/fetched/ID.tsv``): one
line ``id<TAB>how<TAB>sha256<TAB>path`` (``path`` relative to the working directory, or absolute).
The record can outlive the fetched file (a cleaned ``resources/`` folder, a moved local source);
:func:`stale_fetch_records` lists such records before the DAG is built, so that the workflow removes
them and fetches again instead of failing in the job that reads the file (docs/workflow.md).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["stale_fetch_records"]


def _record_problem(record: Path, base: Path) -> str | None:
    """Why one existing record is stale: unreadable, without a 4-field line, or its path missing."""
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return f"the fetch record is unreadable ({e})"
    rows = [line.split("\t") for line in lines if line.strip()]
    rows = [r for r in rows if len(r) == 4]
    if not rows:
        return "the fetch record has no 'id<TAB>how<TAB>sha256<TAB>path' line"
    for _sid, _how, _sha, path in rows:
        if not (base / path).exists():  # an absolute path ignores base
            return f"the fetched file {path} is gone"
    return None


def stale_fetch_records(records, *, base=".") -> list[tuple[str, str]]:
    """(record path, why) for every existing fetch record whose fetched file (or folder) is gone.

    ``records``: the record paths (e.g. ``resources/RUN/fetched/ID.tsv`` of every specimen); missing
    ones are skipped. ``base``: the folder relative paths in a record are relative to (the
    workflow's working directory). Costs one ``stat`` per record line: no file is read but the records.
    """
    out = []
    for rec in map(Path, records):
        if rec.exists():
            problem = _record_problem(rec, Path(base))
            if problem:
                out.append((str(rec), problem))
    return out
