"""Every specimen of a manifest fetched in order, one at a time (:func:`fetch_manifest`), sharing one
HTTP session and rate limiter; optionally the new checksums recorded back into the manifest file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..manifest import load_manifest, record_checksums, validate_manifest
from .errors import FetchError, FetchManifestError, FetchResult
from .specimen import fetch_one
from .transfer import RateLimiter, make_session


def fetch_manifest(
    manifest_path_or_df,
    dest_dir,
    *,
    mirror=None,
    rate: float | None = 1.0,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 60.0,
    only: Iterable[str] | None = None,
    progress: bool = False,
    keep_going: bool = False,
    record: bool = False,
    in_place: bool = False,
) -> list[FetchResult]:
    """Fetch every specimen of a manifest (path or DataFrame) in order, one at a time; see :func:`fetch_one`.

    ``only``: ids to fetch (others skipped; an unknown id is a ValueError). ``keep_going``: fetch the
    rest after a failure and raise :class:`FetchManifestError` at the end (else the first error is
    raised at once). ``record``: write the sha256 of rows that lacked one back into the manifest file
    (:func:`tomodata.manifest.record_checksums`; needs a path). ``progress``: per-file bars and one
    line per specimen on stderr. ``in_place``: local sources are checked and hashed where they are.
    """
    df, path = _load(manifest_path_or_df)
    if record and path is None:
        raise ValueError("record=True needs the manifest's path, not a DataFrame")
    base_dir = Path(df.attrs.get("base_dir", Path.cwd()))
    rows = _select(df.to_dict(orient="records"), only)
    session = make_session()
    limiter = RateLimiter(rate)
    results: list[FetchResult] = []
    failures: dict[str, Exception] = {}
    try:
        for k, row in enumerate(rows, start=1):
            try:
                res = fetch_one(
                    row,
                    dest_dir,
                    mirror=mirror,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                    base_dir=base_dir,
                    progress=progress,
                    session=session,
                    limiter=limiter,
                    in_place=in_place,
                )
            except FetchError as e:
                if not keep_going:
                    raise
                failures[row["id"]] = e
                if progress:
                    print(f"[{k}/{len(rows)}] {row['id']}: FAILED: {e}", file=sys.stderr)
                continue
            results.append(res)
            if progress:
                print(f"[{k}/{len(rows)}] {res.id}: {_how(res)} {res.bytes} bytes -> {res.path}", file=sys.stderr)
    finally:
        session.close()
        if record and path is not None:
            _record_new(path, df, results)
    if failures:
        raise FetchManifestError(failures, results)
    return results


def _load(manifest_path_or_df) -> tuple[pd.DataFrame, Path | None]:
    """The validated manifest and its path (None for a DataFrame; one not yet validated is validated)."""
    if isinstance(manifest_path_or_df, pd.DataFrame):
        df = manifest_path_or_df
        if "base_dir" not in df.attrs:
            df = validate_manifest(df)
        return df, None
    path = Path(manifest_path_or_df)
    return load_manifest(path), path


def _select(rows: list[dict], only: Iterable[str] | None) -> list[dict]:
    """The rows whose id is in ``only`` (all for None); an id not in the manifest is a ValueError."""
    if only is None:
        return rows
    wanted = {str(i) for i in only}
    unknown = sorted(wanted - {r["id"] for r in rows})
    if unknown:
        raise ValueError(f"ids not in the manifest: {unknown}")
    return [r for r in rows if r["id"] in wanted]


def _how(res: FetchResult) -> str:
    """How a result came: in place, kept, mirror, resumed or fetched (the progress line's word)."""
    if res.in_place:
        return "in place"
    if res.reused:
        return "kept"
    if res.from_mirror:
        return "mirror"
    return "resumed" if res.resumed else "fetched"


def _record_new(path: Path, df: pd.DataFrame, results: list[FetchResult]) -> None:
    """Write the sha256 of the fetched rows that had none back into the manifest file at ``path``."""
    known = dict(zip(df["id"], df["sha256"]))
    new = {r.id: r.sha256 for r in results if not known.get(r.id)}
    if new:
        record_checksums(path, new)
