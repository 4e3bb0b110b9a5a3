"""Fetch records: written (:func:`fetch_record_line`), read (:func:`fetched_entry`) and checked
against the files they stand for (:func:`stale_fetch_records`).

``tomo fetch`` writes one record per specimen (the workflow's ``resources/RUN/fetched/ID.tsv``): one
line ``id<TAB>how<TAB>sha256<TAB>path`` (``path`` relative to the working directory, or absolute;
``how``: in-place, mirror, kept, resumed or fetched).
The record can outlive the fetched file (a cleaned ``resources/`` folder, a local source moved without its row);
:func:`stale_fetch_records` lists such records before the DAG is built, so that the workflow removes
them and fetches again instead of failing in the job that reads the file, or, where the local source
is read in place now and holds what was copied, rewrites them as in-place records
(:func:`in_place_record_line`; docs/workflow.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .files import read_text

__all__ = ["FetchEntry", "fetch_record_line", "fetched_entry", "in_place_record_line", "stale_fetch_records"]


class FetchEntry(NamedTuple):
    """One line of a fetch record."""

    id: str
    how: str
    sha256: str
    path: str


def _entries(text: str) -> list[FetchEntry]:
    """The record lines of ``text`` (lines of four tab-separated fields; others ignored)."""
    return [FetchEntry(*f) for f in (line.split("\t") for line in text.splitlines()) if len(f) == 4]


def fetch_record_line(result) -> str:
    """The record line of a :class:`tomodata.fetch.FetchResult` (ValueError where its path holds a tab
    or a line break, which the line cannot hold)."""
    if any(c in str(result.path) for c in "\t\r\n"):
        raise ValueError(
            f"{result.id}: the path {str(result.path)!r} holds a tab or line break, which the fetch record cannot "
            "hold; rename the source (or fetch without --in-place)"
        )
    how = (
        "in-place"
        if result.in_place
        else "mirror"
        if result.from_mirror
        else "kept"
        if result.reused
        else "resumed"
        if result.resumed
        else "fetched"
    )
    return _line(FetchEntry(result.id, how, result.sha256, str(result.path)))


def _line(entry: FetchEntry) -> str:
    return "\t".join(entry)


def in_place_record_line(
    record, specimen_id: str, source, source_sha256: str | None, *, kind: str, base="."
) -> str | None:
    """The record line an in-place fetch would write, for a record whose copied file is gone while the
    specimen's local ``source`` (the path its row gives now, read in place) holds what was copied
    (``source_sha256``, the source's sha256 now, equals the recorded one); None where it does not, the
    record is in place already or unreadable. The workflow rewrites such a record instead of removing
    it (docs/workflow.md): the cube made from the copy stays current, while a removed record made a
    re-run fetch count as new input and re-made the specimen and everything after it. ``kind``: the
    row's source_kind (an archive is never read in place: it is copied and extracted, and its record
    names the extracted file, so None). ``base``: as for :func:`stale_fetch_records`."""
    from .fetch.common import is_archive_source  # noqa: PLC0415 - lazy: the Snakefile imports this module

    try:
        entry = fetched_entry(record, specimen_id)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if entry.how == "in-place" or source is None or not source_sha256 or source_sha256 != entry.sha256:
        return None
    if is_archive_source(str(source), specimen_id, kind):
        return None
    if (Path(base) / entry.path).exists() or not Path(source).exists():
        return None
    return _line(FetchEntry(specimen_id, "in-place", entry.sha256, str(Path(source).absolute())))


def fetched_entry(record, specimen_id: str) -> FetchEntry:
    """The line of ``specimen_id`` in the fetch record file ``record`` (ValueError where the file is
    missing, a folder, unreadable or has no line for it)."""
    rec = Path(record)
    if not rec.is_file():
        raise ValueError(f"fetch record {rec} {'is a folder, not a file' if rec.is_dir() else 'does not exist'}")
    for entry in _entries(read_text(rec, "fetch record")):
        if entry.id == specimen_id:
            return entry
    raise ValueError(f"fetch record {rec} has no line for specimen {specimen_id!r}")


def _record_problem(record: Path, base: Path, now: Path | None = None) -> str | None:
    """Why one existing record is stale: unreadable, without a 4-field line, or its path missing (but
    for an in-place source that is now at ``now``, another place, where it exists: moved, and the row
    points at the new place)."""
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return f"the fetch record is unreadable ({e})"
    rows = _entries("\n".join(lines))
    if not rows:
        return "the fetch record has no 'id<TAB>how<TAB>sha256<TAB>path' line"
    for row in rows:
        if not (base / row.path).exists():  # an absolute path ignores base
            if row.how == "in-place":  # the record names the source itself
                if _moved(base / row.path, now):
                    continue  # the fetch job re-runs (its location changed) and writes the record anew
                return f"the source {row.path}, read in place, is gone (fetching needs it back there)"
            return f"the fetched file {row.path} is gone"
    return None


def _moved(was: Path, now: Path | None) -> bool:
    """Whether an in-place source recorded at ``was`` (gone) is now at ``now``, another existing place."""
    if now is None or not Path(now).exists():
        return False
    return Path(now).resolve() != was.resolve()


def stale_fetch_records(records, *, base=".", sources=None) -> list[tuple[str, str]]:
    """(record path, why) for every existing fetch record whose fetched file (or folder) is gone.

    ``records``: the record paths (e.g. ``resources/RUN/fetched/ID.tsv`` of every specimen); missing
    ones are skipped. ``base``: the folder relative paths in a record are relative to (the
    workflow's working directory). ``sources``: record path → the specimen's local source as its row
    gives it now (None: remote); an in-place source that is gone from the recorded place but there
    (moved, the row updated) keeps its record: the fetch job re-runs for the new location and a
    re-fetch of the same content stops there (else the whole chain ran again). Costs one ``stat`` per
    record line: no file is read but the records.
    """
    out = []
    sources = {str(k): v for k, v in (sources or {}).items()}
    for rec in map(Path, records):
        if rec.exists():
            problem = _record_problem(rec, Path(base), sources.get(str(rec)))
            if problem:
                out.append((str(rec), problem))
    return out
