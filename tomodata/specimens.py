"""The workflow's specimens: rows of the demo, a manifest and overlays; source checks; content keys.

The Snakefile reads everything here at parse time (workflow/rules/common.smk), so the rules stay
declarative and the logic is tested in Python (tests/test_specimens.py).

* :func:`collect_rows` joins the demo's rows (known before its movies exist), the manifest's and
  those of every overlay manifest (``data.add``) into one table; ids must be unique across them.
* :func:`source_problems` lists every row whose local source is missing, unreadable or of another
  kind than its ``source_kind`` says, one line each with the row, the path and what to do.
* :func:`content_key` is what a specimen's data *is*, independent of how its source is spelled:
  ``sha256:<hex>`` of a local source (folders: :func:`tomodata.fetch.source_sha256`), or of the
  manifest's declared ``sha256``; ``url:<source>`` for a remote source without one; for the demo
  ``demo:<seed>:<movie_size>:<codec>:<id>``. Where the specimen's cube already records a key and the
  sha256 of the source it was made from, and that sha256 is the current one, the recorded key is
  kept: so switching the demo to its exported manifest, renaming a manifest, spelling a path
  another way or toggling ``in_place`` keeps every key, and no job re-runs. A demo movie on disk
  counts only while the demo's manifest records the current movie settings (else the demo's job
  makes it afresh in this run, and the settings are the key).
* :func:`declared_mismatches` lists every local source that no longer matches its declared
  ``sha256`` (which is its key, so nothing else would notice), hashing only what changed.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from .demo import DEMO_SETTINGS_PREFIX, demo_rows
from .files import write_json
from .manifest import COLUMNS, load_manifest, parse_spacing, split_sources

__all__ = [
    "collect_rows",
    "local_source",
    "source_problems",
    "gone_but_built",
    "content_key",
    "declared_mismatches",
    "ShaCache",
    "row_settings",
    "recorded_params",
]

_FOLDER_KINDS = ("dicom", "image_folder")
#: the data.demo settings a demo movie's content depends on (tomodata.demo.demo_rows; the species
#: count and the split only add or relabel species)
DEMO_MOVIE_KEYS = ("movie_size", "codec", "seed")


def overlay_paths(add) -> list[str]:
    """The overlay manifests of config ``data.add``: a list of TSV paths, or a mapping NAME: TSV (which
    Snakemake merges across config files; docs/manifest.md), in the order given."""
    return list(add.values()) if isinstance(add, dict) else list(add or [])


def collect_rows(*, demo: dict | None, demo_dir, manifest=None, overlays=()) -> dict[str, dict]:
    """id → row (the manifest's columns plus ``_manifest``, ``_base`` and ``_origin``), in order.

    ``demo``: config ``data.demo`` (or None); its rows are relative to ``demo_dir`` and come from
    ``demo_dir/manifest.tsv`` (written by the demo's job). ``manifest``, ``overlays``: TSV paths.
    Raises ValueError naming the files of a duplicate id.
    """
    rows: dict[str, dict] = {}

    def add(row: dict, origin: str, manifest_path: str, base: str) -> None:
        sid = row["id"]
        clash = next((k for k in rows if k.lower() == sid.lower()), None)
        if clash is not None:
            raise ValueError(
                f"specimen id {sid!r} of {origin} is already given by {rows[clash]['_origin']}; "
                "ids must be unique (case-insensitively) across the demo, data.manifest and data.add"
            )
        full = {c: "" for c in COLUMNS}
        full.update({k: str(v) for k, v in row.items()})
        full["slice_axis"] = full["slice_axis"] or "z"
        full.update(_manifest=manifest_path, _base=base, _origin=origin)
        rows[sid] = full

    if demo is not None:
        demo_manifest = str(Path(demo_dir) / "manifest.tsv")
        for row in demo_rows(
            demo["species"],
            val=demo["val"],
            test=demo["test"],
            movie_size=demo["movie_size"],
            codec=demo["codec"],
            seed=demo["seed"],
        ):
            add(row, "the demo (data.demo)", demo_manifest, str(demo_dir))
    for path in ([manifest] if manifest else []) + list(overlays):
        if not Path(path).is_file():  # quoted: a space at the end shows
            what = "is a folder, not a manifest file" if Path(path).is_dir() else "does not exist"
            raise ValueError(f"manifest {str(path)!r} {what} (relative to {Path.cwd()})")
        table = load_manifest(path)
        for row in table.to_dict(orient="records"):
            add(row, str(path), str(path), table.attrs["base_dir"])
    return rows


def demo_manifest_edits(rows: dict[str, dict], path, demo: dict) -> list[str]:
    """Hand edits of the demo's generated manifest at ``path`` (``tomo demo-movies``): how it differs
    from the demo's rows in ``rows`` (:func:`collect_rows`), one line per row or cell; none where the
    file is absent or was made with other settings than ``demo`` (``data.demo``: it is made again
    then). ``sha256``, which ``tomo fetch`` fills in, is not compared. The workflow takes the demo
    from its config, but ``tomo store-create`` reads the file, so an edit would reach the store
    with the next store update."""
    if not Path(path).is_file():
        return []
    keys = ("species", "val", "test", "movie_size", "codec", "seed")
    try:
        recorded = _demo_made_with(path)
    except ValueError as e:
        return [str(e)]
    if recorded != {k: demo[k] for k in keys}:
        return []
    demo = {sid: r for sid, r in rows.items() if r["_origin"].startswith("the demo")}
    on_disk = {str(r["id"]): r for r in load_manifest(path).to_dict(orient="records")}
    out = [f"row {sid}: not in the demo" for sid in on_disk if sid not in demo]
    out += [f"row {sid}: missing" for sid in demo if sid not in on_disk]
    for sid in demo.keys() & on_disk.keys():
        for col in COLUMNS:
            a, b = demo[sid].get(col, ""), on_disk[sid].get(col)
            b = "" if b is None or (isinstance(b, float) and np.isnan(b)) else str(b)
            if col != "sha256" and a != b:
                out.append(f"row {sid}, column {col}: {b!r} (the demo: {a!r})")
    return sorted(out)


def _demo_made_with(path) -> dict | None:
    """The data.demo settings the demo's manifest at ``path`` records it was made with (its first
    line), or None (no file, no record). Raises ValueError where the record is not JSON."""
    try:
        first = Path(path).read_text().split("\n", 1)[0]
    except OSError:
        return None
    made = first.split(DEMO_SETTINGS_PREFIX, 1)[1] if first.startswith("#") and DEMO_SETTINGS_PREFIX in first else None
    try:
        return json.loads(made) if made is not None else None
    except ValueError:
        raise ValueError(f"line 1: the recorded data.demo settings are not JSON: {made!r}") from None


def _demo_movies_current(row: dict, demo: dict) -> bool:
    """Whether the demo's movies on disk were made with the movie settings of ``demo`` (its
    manifest, ``row['_manifest']``, records them): where not, the demo's job makes them afresh in
    this run, and what is on disk now is not the specimen's content."""
    try:
        made = _demo_made_with(row["_manifest"])
    except ValueError:
        return False
    return made is not None and all(made.get(k) == demo[k] for k in DEMO_MOVIE_KEYS)


def local_source(row: dict) -> Path | None:
    """The first local alternative (path or file:// URL) of a row's source as an absolute path
    (symlinks not resolved), or None when every alternative is remote."""
    for alt in split_sources(row["source"]):
        url = urlparse(alt)
        if url.scheme == "file":
            path = Path(unquote(url.path))
        elif "://" in alt:
            continue
        else:
            path = Path(alt)
        return Path(os.path.abspath(path if path.is_absolute() else Path(row["_base"]) / path))
    return None


def _problem(row: dict) -> str | None:
    """What is wrong with a row's local source, or None."""
    from .io import sniff_kind  # noqa: PLC0415 - kept lazy: the Snakefile imports this module (start-up)

    path = local_source(row)
    if path is None:
        return None
    kind = row["source_kind"]
    if not path.exists():
        where = "" if path.parent.exists() else f" (the folder {path.parent} does not exist either)"
        return f"{path} does not exist{where}"
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        return f"{path} is not readable (permissions)"
    if path.is_dir() != (kind in _FOLDER_KINDS) and not (kind == "dicom" and path.is_file()):
        want = "a folder" if kind in _FOLDER_KINDS else "a file"
        return f"{path} is a {'folder' if path.is_dir() else 'file'} but source_kind {kind} needs {want}"
    if zipfile.is_zipfile(path) if path.is_file() else False:
        return None  # an archive of slices: its content is checked when it is unpacked (tomo fetch)
    try:
        found = sniff_kind(path)
    except (ValueError, OSError) as e:
        return f"cannot be read as {kind}: {e}"
    if found != kind:
        return f"{path} holds {found} data but source_kind says {kind}"
    if kind == "dicom" and path.is_file():
        from .image_files import dicom_frames  # noqa: PLC0415 - kept lazy (start-up)

        try:
            if dicom_frames(path) <= 1:
                return f"{path} is a single-frame DICOM file, one slice: give the folder that holds the series"
        except ValueError as e:
            return f"cannot be read as {kind}: {e}"
    return None


def _has_remote(row: dict) -> bool:
    return any("://" in alt and not alt.startswith("file://") for alt in split_sources(row["source"]))


def gone_but_built(row: dict, cube_path) -> bool:
    """The row's local source is gone while the cube made from it is there (a source archived after
    the build): nothing needs the source until the cube is made again."""
    src = None if row["_origin"].startswith("the demo") or _has_remote(row) else local_source(row)
    if src is None or src.exists() or not Path(cube_path).is_file():
        return False
    return bool(_recorded(cube_path))


def source_problems(rows: dict[str, dict], ids=None) -> list[str]:
    """One line per row whose local source is missing, unreadable or of the wrong kind (one line for
    all the rows of a folder that does not exist; the count of rows is the caller's) (demo rows,
    whose movies a job writes, and rows with a remote alternative are not looked at here: their
    fetch job tries the alternatives in order and fails with its own message)."""
    out: list[str] = []
    absent: dict[tuple[str, str], list] = {}
    for sid in ids if ids is not None else rows:
        row = rows[sid]
        if row["_origin"].startswith("the demo") or _has_remote(row):
            continue
        what, src = _problem(row), local_source(row)
        if what and src is not None and "does not exist either" in what:  # a missing folder: one line for its rows
            absent.setdefault((str(src.parent), row["_origin"]), []).append((sid, src))
        elif what:
            out.append(f"{sid} ({row['_origin']}): {what}; fix the row's source/source_kind or put the data there")
    for (folder, origin), items in absent.items():
        sids = [sid for sid, _ in items]
        shown = ", ".join(sids[:3]) + (f" and {len(sids) - 3} more" if len(sids) > 3 else "")
        out.append(
            f"{shown} ({origin}): the folder {folder} does not exist (first source: {items[0][1]}); put "
            "the data there or fix the rows' source column"
        )
    return out


class ShaCache:
    """sha256 of local sources, remembered by (size, mtime, inode) of the file or of every file of
    a folder, in one JSON file, so a parse hashes only what changed."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    @staticmethod
    def _stamp(path: Path) -> list:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_file() and path.suffix.lower() == ".nhdr":
            from . import fetch  # noqa: PLC0415 - kept lazy: the Snakefile imports this module (start-up)

            # a detached header's data files are part of the source
            files += fetch.nrrd_data_files(path)
        return [[str(f), f.stat().st_size, f.stat().st_mtime_ns, f.stat().st_ino] for f in files]

    def sha256(self, path: Path) -> str:
        key = str(path)
        stamp = self._stamp(path)
        hit = self.entries.get(key)
        if hit and hit["stamp"] == stamp:
            return hit["sha256"]
        digest = _source_sha256(path)
        self.entries[key] = {"stamp": stamp, "sha256": digest}
        self.dirty = True
        return digest

    def known(self, path: Path) -> bool:
        """Whether the cache holds an entry for ``path`` (of any stamp)."""
        return str(path) in self.entries

    def remember(self, path: Path, digest: str) -> None:
        """Take ``digest`` as the sha256 of ``path`` as it is now (verified elsewhere: tomo fetch)."""
        self.entries[str(path)] = {"stamp": self._stamp(path), "sha256": digest}
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        write_json(self.path, self.entries, indent=0)
        self.dirty = False


def declared_mismatches(rows: dict[str, dict], ids, *, cache: ShaCache, fetched_dir) -> list[str]:
    """One line per row whose local source no longer matches the ``sha256`` its manifest declares
    (rows without one, demo rows and rows with a remote alternative are not looked at).

    Cheap at every parse: a source is hashed only where its stat stamp (size, mtime, inode of each
    file) changed since the cache last saw it, or, where the cache does not know it, where it was
    modified after its fetch record (``fetched_dir/<id>.tsv``) was written: ``tomo fetch`` verified
    it then, so an older one is taken as the declared content (and remembered by its stamp). Not
    fetched yet: ``tomo fetch`` verifies it."""
    out = []
    for sid in ids:
        row = rows[sid]
        declared = row["sha256"].strip().lower()
        if not declared or row["_origin"].startswith("the demo") or _has_remote(row):
            continue
        path = local_source(row)
        if path is None or not path.exists():
            continue
        try:
            if not cache.known(path):
                try:
                    fetched = (Path(fetched_dir) / f"{sid}.tsv").stat().st_mtime_ns
                except OSError:
                    continue
                if max((s[2] for s in ShaCache._stamp(path)), default=0) <= fetched:
                    cache.remember(path, declared)
                    continue
            now = cache.sha256(path)
        except (OSError, ValueError):  # unreadable: the source check and tomo fetch report it
            continue
        if now != declared:
            out.append(
                f"{sid} ({row['_origin']}): {path} does not match its declared sha256 {declared} (now {now}): "
                "update the manifest's sha256 or restore the file"
            )
    return out


def _source_sha256(path: Path) -> str:
    """The sha256 tomo fetch records for a local source (file, folder, detached NRRD header + data)."""
    from . import fetch  # noqa: PLC0415 - kept lazy: the Snakefile imports this module (start-up)

    return fetch.source_sha256(path)


def _meta(path) -> dict:
    """The record of an existing cube (.npz meta) or aligned volume (.json beside it), or {}."""
    try:
        if str(path).endswith(".json"):
            return json.loads(Path(path).read_text())
        with zipfile.ZipFile(path) as z, z.open("meta.npy") as f:
            return json.loads(str(np.lib.format.read_array(f, allow_pickle=False)))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def recorded_params(path) -> str | None:
    """The workflow params an output was made with (``tomo cube/align --record-params``), or None."""
    return _meta(path).get("workflow_params") if Path(path).is_file() else None


def _recorded(cube_path) -> dict:
    """content_key and source_sha256 recorded in an existing cube, or {}."""
    meta = _meta(cube_path)
    return {k: meta[k] for k in ("content_key", "source_sha256") if meta.get(k)}


def content_key(row: dict, *, demo: dict | None, cache: ShaCache, cube_path=None) -> str:
    """The identity of a specimen's source content (module docstring). A local source that is gone
    (archived after the build) keeps the key its cube recorded, so nothing re-runs for it."""
    current = row["sha256"] or None
    rec = _recorded(cube_path) if cube_path and Path(cube_path).is_file() else {}
    if row["_origin"].startswith("the demo"):
        assert demo is not None, "a demo row needs the demo settings"
        natural = f"demo:{demo['seed']}:{demo['movie_size']}:{demo['codec']}:{row['id']}"
        path = local_source(row)
        current = None  # stale movies (made again in this run): the demo's settings are the key
        if path is not None and path.exists() and _demo_movies_current(row, demo):
            current = cache.sha256(path)
    else:
        path = local_source(row)
        if current is None and path is not None and path.exists():
            current = cache.sha256(path)
        natural = f"sha256:{current}" if current else f"url:{row['source']}"
        if current is None and path is not None and not path.exists():  # archived after the build: the cube's
            current = rec.get("source_sha256")
    if current and rec.get("source_sha256") == current and rec.get("content_key"):
        return rec["content_key"]
    return natural


def row_settings(row: dict, cube_cfg: dict) -> dict:
    """A specimen's ingest settings: the row's cells over the config's ``data.cube`` defaults."""

    def pick(col, default):
        return row.get(col) or default

    window = row.get("window") or cube_cfg.get("window")
    if isinstance(window, (list, tuple)):
        window = ",".join(f"{float(w):g}" for w in window)
    bg = row.get("background") or cube_cfg.get("background")
    spacing = parse_spacing(row.get("spacing_mm"))
    return {
        "spacing": None if spacing is None else ",".join(f"{v:g}" for v in spacing),
        "slice_axis": pick("slice_axis", "z"),
        "orientation": pick("orientation", cube_cfg.get("orientation")),
        "window": window or None,
        "background": None if bg in (None, "") else float(bg),
        "crop": pick("crop", cube_cfg.get("crop") or "none"),
    }
