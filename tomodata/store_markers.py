"""Workflow markers checked against the store they stand for.

The workflow's marker files (``dataset.created.json``, ``species/<id>.done.json``,
``dataset.final.json``) say that a state of the store was reached; they live beside the store, so
they can outlive it (a deleted store, a store replaced by another build, a cluster's scratch purge, a
species' group, array or shard removed). Before the DAG is built, :func:`stale_markers` lists every
marker whose store state is gone, so that the workflow removes it and redoes exactly that part
(docs/workflow.md, "The store's state is the truth"). The check reads JSON metadata, file sizes and
each shard's index (a few KiB per shard, checked against its crc32c and its file's size: a shard cut
short or overwritten is caught before a job reads it): well under a second for the paper's store.
Damaged chunk *contents* under a sound index are found by ``tomo validate`` (it reads the data),
which names the species to rebuild.

:func:`store_fingerprint` is what ``tomo store-create --done`` records in ``dataset.created.json``
(the store's settings and species table), so that a store replaced by another build is noticed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import struct
from pathlib import Path
from typing import NamedTuple

import google_crc32c  # installed with zarr (its shard-index checksum codec uses it)

from .files import read_json_object, write_json
from .run_layout import FINAL_MARKER, species_marker
from .store_settings import StoreSettings
from .views import view_sets_of

__all__ = [
    "stale_markers",
    "unreadable_store",
    "store_fingerprint",
    "settings_differences",
    "settings_record",
    "settings_file_changes",
    "sync_settings_file",
    "expected_chunk_files",
    "species_file_problem",
    "check_settings_file",
    "write_created_marker",
    "write_species_marker",
    "data_file_sizes",
    "write_final_marker",
    "forget_markers",
]

#: bytes per inner chunk in a shard index (offset, length: two uint64) and of its crc32c
_INDEX_ENTRY, _CRC32C = 16, 4


# ------------------------------------------------------------------ writing and forgetting the markers
# (their names: tomodata.run_layout; each written atomically, so a marker is whole or absent)


def write_created_marker(path, store, summary: dict, *, n_species: int, n_views: int) -> None:
    """``dataset.created.json``: ``create_store``'s ``summary`` with the store's settings and species
    table (:func:`store_fingerprint`), so that a store replaced later is noticed."""
    record = dict(store=str(store), n_species=n_species, n_views=n_views, **summary)
    write_json(path, record | store_fingerprint(store))


def write_species_marker(path, store, name: str, complete: dict) -> None:
    """``species/ID.done.json``: species ``name`` rendered into ``store``, with its completion marker
    (:func:`tomodata.store.write_species`'s) and the size of each of its data files (``files``), so
    that a file cut short or replaced later is noticed before the DAG is built (:func:`stale_markers`)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(path, dict(species=name, store=str(store), complete=complete, files=data_file_sizes(store, name)))


def data_file_sizes(store, name: str) -> dict[str, int]:
    """{path inside the species group: size in bytes} of every data (chunk or shard) file of species
    ``name``: every file of its group but the ``zarr.json`` metadata."""
    group = Path(store) / "species" / name
    return {
        p.relative_to(group).as_posix(): p.stat().st_size
        for p in sorted(group.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


def _size_problem(group: Path, sizes) -> str | None:
    """A data file whose size is not the one the done marker recorded (``sizes``; None: an older marker)."""
    if not isinstance(sizes, dict):
        return None
    for rel, size in sizes.items():
        try:
            now = (group / rel).stat().st_size
        except OSError:
            return f"lacks its data file {rel}"
        if now != size:
            return f"has a data file {rel} of {now} bytes, {size} when it was rendered (cut short or replaced)"
    return None


def write_final_marker(path, store, report, attrs: dict) -> None:
    """``dataset.final.json``: the finalised store's validation ``report`` and its recorded completion
    (``attrs``: the store's root attributes after :func:`tomodata.store.finalize_store`)."""
    write_json(
        path,
        dict(
            store=str(store),
            ok=report.ok,
            n_species=len(attrs["species"]),
            splits=attrs.get("splits"),
            warnings=report.warnings,
            completion=attrs.get("completion"),
        ),
    )


def forget_markers(folder, species: list[str]) -> list[Path]:
    """Remove the markers of a run folder that say ``species`` are rendered, and its final marker, so
    that the next workflow run redoes them; the paths removed."""
    removed = []
    for path in [Path(folder) / species_marker(n) for n in species] + [Path(folder) / FINAL_MARKER]:
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def _json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if it is missing, unreadable or not an object."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _attrs(path: Path) -> dict | None:
    obj = _json(path)
    return None if obj is None else obj.get("attributes", {})


# ----------------------------------------------------------------------------------------------
# the store's settings and species table


def _store_settings(root: dict) -> dict | None:
    """The settings in a store's root attributes as the settings file spells them (``tomo
    store-settings``: spec_version, n_views, view_seed, ...), or None if they are unreadable."""
    try:
        return {"spec_version": root.get("spec_version"), **StoreSettings.from_attrs(root).to_json()}
    except ValueError:
        return None


def settings_differences(store_attrs: dict, settings: dict) -> list[str]:
    """What differs between a store's root attributes and a settings record (the JSON of ``tomo
    store-settings``, i.e. ``dataset.settings.json``), one ``"key: store V, settings W"`` line each;
    ``["the store's settings are unreadable"]`` if they are. Keys missing from ``settings`` (an
    older record) are not compared."""
    have = _store_settings(store_attrs)
    if have is None:
        return ["the store's settings are unreadable"]
    have, settings = _view_sets_filled(have), _view_sets_filled(settings)
    return [
        f"{k}: store {have.get(k)!r}, settings {v!r}"
        for k, v in settings.items()
        if k in have and have[k] != v  # 10 == 10.0: chi as int or float is the same setting
    ]


def _view_sets_filled(record: dict) -> dict:
    """A settings record with ``view_sets`` given: records leave out the default, ``shared``
    (:meth:`StoreSettings.to_json`), so an absent key is that setting, not an unknown one. A value that
    is not a view set (``null``, a typo) is kept as it is: a difference to report or repair, not an
    error here."""
    try:
        return {**record, "view_sets": view_sets_of(record, "view_sets")}
    except ValueError:
        return dict(record)


def check_settings_file(attrs: dict, store, path) -> None:
    """``ValueError`` if the store's settings (root attributes ``attrs``) are not those of the settings
    file ``path`` (``tomo store-settings``): rendering would follow the store's, not the run's."""
    try:
        record = read_json_object(path, "settings file")
    except ValueError as e:
        raise ValueError(f"{e} (tomo store-settings writes one)") from None
    diff = settings_differences(attrs, record)
    if diff:
        raise ValueError(
            f"the store {store} was made with other settings than {path} ({'; '.join(diff)}): refusing to "
            "render into it. Create it again with these settings first (tomo store-create --update; the "
            "workflow: rerun snakemake, which removes dataset.created.json and recreates the store)"
        )


def settings_record(settings: StoreSettings, spec_version: str) -> dict:
    """The JSON record of a store's settings that ``tomo store-settings`` writes (the workflow's
    ``dataset.settings.json``), in the key order of the files written before (``view_sets`` last, only
    where it is not ``shared``: :meth:`StoreSettings.to_json`)."""
    s = settings.to_json()
    keys = ("n_views", "view_seed", "image_size", "steps", "chi", "volume_size", "image_encoding", "view_sets")
    return {"spec_version": spec_version, **{k: s[k] for k in keys if k in s}}


def sync_settings_file(path, store, record: dict, markers: list) -> str | None:
    """Make the settings file ``path`` (``dataset.settings.json``) hold ``record``, the config's
    settings (:func:`settings_record`), before the DAG is built; what its job (``tomo store-settings``)
    would write, dated so that exactly the work the change needs is redone:

    * it holds ``record`` already: nothing;
    * the ``store`` holds exactly ``record`` and some of ``markers`` exist (the file was deleted, or a
      changed setting was changed back): written, dated 1 s before the oldest marker, so that the jobs
      that read it (store creation, every species' render) do not re-run for it;
    * it holds other settings and the store is not ``record``'s: written now, newer than every
      marker, so that the store and everything after it are made again by date, also where
      Snakemake's params records (under ``.snakemake/``) are lost;
    * it is gone and the store is not ``record``'s: nothing (its job writes it, and all after runs);
    * it holds ``record``, the store is another's, and it is not newer than every marker: dated now.

    So its date says whether the store holds the config's settings (older than the markers) or not
    (newer), whatever happened before: a dry run after a config change writes it, and changing the
    config back writes it back, dated as before.

    Returns a message saying what was done, or None."""
    path = Path(path)
    have = _json(path) if path.exists() else None
    dates = [p.stat().st_mtime for p in map(Path, markers) if p.exists()]
    root = _attrs(Path(store) / "zarr.json") if dates else None
    if have == record:
        if root is None or _store_settings(root) == record or path.stat().st_mtime > max(dates):
            return None
        os.utime(path)  # the config's settings, older than markers of a store of others: made newer
        return f"{path} holds the config's settings but the store others: dated now, so that the store is made again"
    gone = not path.exists()
    changes = [] if gone else _changes(path, have, record)
    if root is not None and _store_settings(root) == record:
        write_json(path, record)  # as tomo store-settings writes it
        os.utime(path, (min(dates) - 1, min(dates) - 1))
        if gone:
            return (
                f"{path} was gone: written again from the store's settings, which are the run's "
                "(no species re-rendered)"
            )
        return (
            f"{path} held other settings than the config ({'; '.join(changes)}), but the store holds the config's: "
            "written with them, dated before the markers (the store is not made again for it)"
        )
    if gone:
        return None
    write_json(path, record)
    return (
        f"{path} held other settings than the config ({'; '.join(changes)}): written with the config's, so that "
        "the store, every species and everything after them are made again"
    )


def settings_file_changes(path, record: dict) -> list[str]:
    """What differs between the settings file ``path`` (``dataset.settings.json``, as ``tomo
    store-settings`` wrote it) and the run's settings ``record`` (:func:`settings_record` of the
    config's), one ``"key: file V, config W"`` line each; ``[]`` where the file is missing (its job
    runs anyway) or holds the same settings; one line where it is not a JSON object."""
    path = Path(path)
    return _changes(path, _json(path), record) if path.exists() else []


def _changes(path: Path, have: dict | None, record: dict) -> list[str]:
    """:func:`settings_file_changes` of the file ``path`` already read as ``have`` (None: not JSON)."""
    if have is None:
        return [f"{path} is not a JSON object"]
    have, record = _view_sets_filled(have), _view_sets_filled(record)
    return [f"{k}: file {have.get(k)!r}, config {v!r}" for k, v in record.items() if have.get(k) != v]


def store_fingerprint(store) -> dict:
    """What ``dataset.created.json`` records of a store just created: ``settings`` (as in
    :func:`settings_differences`), ``species_sha256`` (sha256 hex of the root attribute ``species``,
    the species table, as canonical JSON) and ``splits`` (split → species names). Empty dict if the
    store's root ``zarr.json`` is unreadable."""
    root = _attrs(Path(store) / "zarr.json")
    if root is None:
        return {}
    return {
        "settings": _store_settings(root),
        "species_sha256": _table_sha256(root),
        "splits": root.get("splits"),
    }


def _table_sha256(root: dict) -> str:
    text = json.dumps(root.get("species"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _settings_problem(root: dict, settings, created: Path) -> str | None:
    """Why every marker is stale because the store's settings are not the run's: those of the
    settings file ``settings`` (if it exists), else those ``created`` recorded (if it did)."""
    record, what = (_json(Path(settings)), settings) if settings is not None else (None, None)
    if record is None:
        made = _json(created) or {}
        record, what = made.get("settings"), created
        if not isinstance(record, dict):  # a marker written before settings were recorded
            record = {"n_views": made["n_views"]} if isinstance(made.get("n_views"), int) else {}
    diff = settings_differences(root, record) if record else []
    return f"the store has other settings than {what}: {'; '.join(diff)}" if diff else None


def _table_problem(root: dict, created: Path) -> str | None:
    """Why ``created`` is stale: the store's species table is not the one it recorded."""
    recorded = (_json(created) or {}).get("species_sha256")
    if recorded is None or recorded == _table_sha256(root):
        return None  # a marker written before tables were recorded is not compared
    return "the store's species table (species, splits) is not the one this marker recorded"


# ----------------------------------------------------------------------------------------------
# a species' arrays and their chunk files


def expected_chunk_files(meta: dict) -> list[tuple[str, int]]:
    """(key relative to the array's folder, smallest plausible size in bytes) of every chunk file
    (shard file, for a sharded array) an array whose every chunk was written has, from its
    ``zarr.json`` ``meta``: one per grid cell, ``prod(ceil(shape / chunk_shape))`` of them, keyed
    ``c/i/j/k`` (zarr v3's default key encoding). A shard holds at least its index (16 bytes per
    inner chunk, + 4 for its crc32c); any other chunk at least 1 byte. Empty for a key encoding
    other than ``default`` (not checked)."""
    enc = meta.get("chunk_key_encoding") or {"name": "default"}
    if enc.get("name") != "default":
        return []
    sep = (enc.get("configuration") or {}).get("separator", "/")
    shape = meta["shape"]
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    counts = [math.ceil(s / c) for s, c in zip(shape, grid, strict=True)]
    least = 1
    for codec in meta.get("codecs") or []:
        if codec.get("name") == "sharding_indexed":
            conf = codec["configuration"]
            inner = math.prod(math.ceil(g / c) for g, c in zip(grid, conf["chunk_shape"], strict=True))
            crc = any(c.get("name") == "crc32c" for c in conf.get("index_codecs") or [])
            least = inner * _INDEX_ENTRY + (_CRC32C if crc else 0)
    return [(sep.join(["c", *map(str, idx)]), least) for idx in itertools.product(*map(range, counts))]


def _expected_arrays(root: dict, group: Path) -> list[tuple[str, list | None]]:
    """(path inside the species group, expected shape or None) of every array a species of this
    store has: those of the root attribute ``layout.arrays`` (a logical array at its spec's path, e.g.
    ``volume/0``) and the other levels the OME-Zarr volume group's ``multiscales`` lists."""
    from .store.layout import array_subpath  # noqa: PLC0415 - cycle: tomodata.store imports this module

    layout = (root.get("layout") or {}).get("arrays") or {}
    out: list[tuple[str, list | None]] = []
    spec = str(root.get("spec_version"))
    for name, lay in layout.items():
        sub = array_subpath(spec, name)  # the spec's rule, as the reader's (layout's "path" says the same)
        out.append((sub, lay.get("shape")))
        parent, _, level = sub.rpartition("/")
        if parent:
            ome = (_attrs(group / parent / "zarr.json") or {}).get("ome") or {}
            for ds in ((ome.get("multiscales") or [{}])[0]).get("datasets") or []:
                if str(ds.get("path")) != level:
                    out.append((f"{parent}/{ds.get('path')}", None))
    return out


class _ShardIndex(NamedTuple):
    """Where a shard file keeps its index: ``entries`` inner chunks of (offset, length) uint64 little
    endian, ``nbytes`` with the crc32c (``crc``) after them, at the file's end or start (``at_end``)."""

    entries: int
    nbytes: int
    at_end: bool
    crc: bool


def _shard_index(meta: dict) -> _ShardIndex | None:
    """The shard index layout of an array's ``zarr.json`` ``meta``; None unless it is sharded with the
    index encoded as our stores write it (``bytes`` little endian, optionally ``crc32c``)."""
    for codec in meta.get("codecs") or []:
        if codec.get("name") == "sharding_indexed":
            conf = codec["configuration"]
            grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
            n = math.prod(math.ceil(g / c) for g, c in zip(grid, conf["chunk_shape"], strict=True))
            names = [c.get("name") for c in conf.get("index_codecs") or []]
            if names not in (["bytes"], ["bytes", "crc32c"]):
                return None
            if ((conf.get("index_codecs")[0].get("configuration") or {}).get("endian", "little")) != "little":
                return None
            crc = names[-1] == "crc32c"
            return _ShardIndex(
                n, n * _INDEX_ENTRY + (_CRC32C if crc else 0), conf.get("index_location") != "start", crc
            )
    return None


def _shard_index_problem(path: Path, size: int, index: _ShardIndex) -> str | None:
    """Why the shard file ``path`` (``size`` bytes) cannot be read: its index fails its crc32c, or
    points past the data (a file cut short or overwritten keeps a plausible size but no index; zarr
    then fails on a read in the middle of a run). Reads the index only."""
    with open(path, "rb") as fh:
        fh.seek(size - index.nbytes if index.at_end else 0)
        raw = fh.read(index.nbytes)
    body = raw[: index.entries * _INDEX_ENTRY]
    if index.crc and google_crc32c.value(body) != int.from_bytes(raw[-_CRC32C:], "little"):
        return "its shard index fails its checksum"
    lo, hi = (0, size - index.nbytes) if index.at_end else (index.nbytes, size)
    empty = 2**64 - 1
    for k in range(index.entries):
        offset, length = struct.unpack_from("<QQ", body, k * _INDEX_ENTRY)
        if (offset, length) != (empty, empty) and not (lo <= offset and offset + length <= hi):
            return f"its shard index points past its data (inner chunk {k}: bytes {offset}+{length} of {size})"
    return None


def _array_problem(folder: Path, shape: list | None) -> str | None:
    """What is wrong with one array of a complete species: no ``zarr.json``, another shape, or a chunk
    file missing, shorter than it can be (:func:`expected_chunk_files`) or, for a shard, with an index
    that fails its checksum or points past the data (:func:`_shard_index_problem`)."""
    meta = _json(folder / "zarr.json")
    if meta is None or meta.get("node_type") != "array":
        return "is missing (no readable array zarr.json)"
    if shape is not None and list(meta.get("shape") or []) != list(shape):
        return f"has shape {meta.get('shape')}, the store's layout says {shape}"
    try:
        files, index = expected_chunk_files(meta), _shard_index(meta)
    except (KeyError, TypeError, ValueError, AttributeError):
        return "has an unreadable zarr.json"
    for key, least in files:
        try:
            size = (folder / key).stat().st_size
            if size < least:
                return f"has a truncated data file {key} ({size} bytes, at least {least} expected)"
            if index is not None and (why := _shard_index_problem(folder / key, size, index)):
                return f"has a damaged data file {key}: {why}"
        except OSError:
            return f"lacks its data file {key} ({len(files)} expected)"
    return None


def _species_problem(store: Path, name: str, marker: Path, root: dict) -> str | None:
    """Why a species' done marker is stale: the species is missing, unfinished, of other checksums,
    one of its expected arrays or chunk files is missing (see :func:`_array_problem`), or a data file
    is not the size the marker recorded (markers since session 34)."""
    group = store / "species" / name
    attrs = _attrs(group / "zarr.json")
    if attrs is None:
        return f"species {name} is not in the store"
    if attrs.get("status") != "complete" or not isinstance(attrs.get("complete"), dict):
        return f"species {name} is {attrs.get('status', 'unfinished')} in the store"
    try:
        content = json.loads(marker.read_text())
        recorded, sizes = (content.get("complete") or {}).get("sha256"), content.get("files")
    except (OSError, ValueError, AttributeError):
        recorded = sizes = None
    if recorded != attrs["complete"].get("sha256"):
        return f"species {name}: the marker's checksums are not the store's"
    problem = species_file_problem(store, name, root) or _size_problem(group, sizes)
    return f"species {name}: {problem}" if problem else None


def species_file_problem(store, name: str, root: dict) -> str | None:
    """What is wrong with the files of species ``name`` of ``store`` (root attributes ``root``): a
    group of its layout, an array or a chunk file missing, or a chunk file shorter than it can be
    (:func:`_array_problem`); None where every file is there. Reads metadata and file sizes only."""
    group = Path(store) / "species" / name
    for sub, shape in _expected_arrays(root, group):
        parent = sub.rpartition("/")[0]
        if parent and not (group / parent / "zarr.json").is_file():
            return f"group {parent} is missing (no zarr.json)"
        problem = _array_problem(group / sub, shape)
        if problem:
            return f"array {sub} {problem}"
    return None


def unreadable_store(store) -> str | None:
    """Why the store at ``store`` is there but cannot be read (None where it reads, or where there is
    no such path at all: a deleted store): a symbolic link to nothing, a path that is not a folder, a
    root ``zarr.json`` that is missing, damaged or not a group's, or a ``species`` group without its
    ``zarr.json``."""
    store = Path(store)
    if not store.exists():
        return f"{store} is a symbolic link to {os.readlink(store)}, which is not there" if store.is_symlink() else None
    if not store.is_dir():
        return f"{store} is not a folder"
    if _json(store / "zarr.json") is None:
        return f"{store}/zarr.json is missing, unreadable or not JSON"
    if not (store / "species" / "zarr.json").is_file():
        return f"{store}/species/zarr.json is missing"
    return None


def stale_markers(store, *, created, final, done: dict, settings=None) -> list[tuple[str, str]]:
    """(marker path, why) for every existing marker whose store state is gone.

    ``done``: species name → its done marker; ``settings``: the run's settings file
    (``dataset.settings.json``), if given. Every marker is stale if the store is gone (no such path:
    deleted), or has other settings than ``settings`` (without it: than ``created`` recorded). A store
    that is there but cannot be read (:func:`unreadable_store`: a dangling symbolic link, a file
    system not mounted here, a root or species group whose ``zarr.json`` is missing or damaged)
    proves nothing: no marker is stale, so that a dry run, ``--unlock`` or a login node without the
    cluster's scratch removes nothing (the workflow warns; a damaged store is removed by hand).
    ``created`` (and ``final``) is stale if the store's species table is not the one ``created``
    recorded. A species that is missing, unfinished, of other checksums, or
    lacks an expected array or chunk file makes its own marker and ``final`` stale; so does a done
    marker that is gone while its species is in the store (removed by hand: render it again). The
    done marker of a species the store neither holds nor lists (a run of another config removed it)
    is stale alone: ``final`` vouches for the store as it is, and a dry run of that other config must
    not make this one evaluate again (helper-85).
    """
    store, created, final = Path(store), Path(created), Path(final)
    existing = [Path(p) for p in [created, final, *done.values()] if Path(p).exists()]
    if not existing or unreadable_store(store):
        return []  # nothing to check, or nothing proven: a store not mounted here keeps its markers
    root = _attrs(store / "zarr.json")
    if root is None:
        return [(str(p), f"the store {store} is gone") for p in existing]
    why_all = _settings_problem(root, settings, created)
    if why_all:
        return [(str(p), why_all) for p in existing]
    out = []
    table = _table_problem(root, created) if created.exists() else None
    if table:
        out.append((str(created), table))
    listed = {e.get("name") for e in root.get("species") or [] if isinstance(e, dict)}
    final_stale = bool(out)
    for name, marker in done.items():
        if Path(marker).exists():
            problem = _species_problem(store, name, Path(marker), root)
            if problem:
                out.append((str(marker), problem))
                # a species the store neither holds nor lists is no part of what final vouches for
                final_stale |= name in listed or (store / "species" / name).exists()
    if final_stale and final.exists():
        out.append((str(final), "a marker it depends on is stale"))
    elif final.exists() and (gone := _markers_removed(store, done)):
        # a done marker removed by hand, or a species whose render never finished: render it (again)
        out.append((str(final), f"species {gone[0]} is in the store without its done marker ({done[gone[0]]})"))
    return out


def _markers_removed(store: Path, done: dict) -> list[str]:
    """Species whose group is in the store but whose done marker is not there (a new species has no
    group yet: the workflow renders it anyway)."""
    return [n for n, m in done.items() if not Path(m).exists() and (store / "species" / n / "zarr.json").is_file()]
