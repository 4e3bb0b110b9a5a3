"""Writing an export folder: the checks of the target folder and of the inputs (store, manifest, config),
the staging folder that hashes every file put into it, the copied store, the volume files, the recipe
and provenance records, and the atomic rename into place."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import zarr

from ..files import read_yaml, replace_dir, sha256_file
from ..manifest import load_manifest
from ..progress import progress as progress_bar
from ..recipe import recipe_files
from ..run_layout import STORE_NAME
from ..store import _voxel_mm, open_store, validate_store
from ..volume_files import VOLUME_FORMATS, write_canonical_volume
from .common import _SAFE_PATH, EXPORT_SPEC, SPLIT_NAMES, _json_text, code_version
from .tables import _csv_text, _samples_rows, _species_markers, _species_rows

_CHUNK = 4 << 20  # bytes per read when copying the store


def _copy_hashed(src: Path, dst: Path) -> str:
    """Copy a file and return the sha256 of the bytes copied (one read of the source)."""
    h = hashlib.sha256()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while True:
            block = fi.read(_CHUNK)
            if not block:
                break
            h.update(block)
            fo.write(block)
    return h.hexdigest()


def _is_export(path: Path) -> bool:
    """Whether ``path`` holds an earlier export (its provenance.json names :data:`EXPORT_SPEC`)."""
    try:
        prov = json.loads((path / "provenance.json").read_text())
        return prov.get("export", {}).get("spec") == EXPORT_SPEC
    except (OSError, ValueError, AttributeError):
        return False


def _check_out(out: Path, src: Path, overwrite: bool) -> None:
    """Refuse an export folder inside the store (or around it), a file, or a non-empty folder that is not
    an earlier export (that one only with ``overwrite``)."""
    ro, rs = out.resolve(), src.resolve()
    if ro == rs or rs in ro.parents or ro in rs.parents:
        raise ValueError(f"the export folder {out} and the store {src} must not contain one another")
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise FileExistsError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            if not overwrite:
                raise FileExistsError(
                    f"{out} exists and is not empty; pass overwrite=True (tomo export --overwrite) to replace "
                    "an earlier export"
                )
            if not _is_export(out):
                raise FileExistsError(f"{out} is not empty and is not an earlier export: refusing to replace it")
    blocking = next((p for p in [out.parent, *out.parent.parents] if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"cannot create the export folder {out}: {blocking} is a file, not a folder")


def _read_store(src: Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """The store's root attributes and {species: completion marker}, once the store validates, its species
    names are safe in paths and no marker changed since validation (else ``ValueError``)."""
    attrs: dict[str, Any] = zarr.open_group(str(src), mode="r", use_consolidated=False, zarr_format=3).attrs.asdict()
    report = validate_store(src)
    if not report.ok:
        raise ValueError(
            f"store {src} does not validate; rebuild species {report.species_to_rebuild} first:\n" + report.summary()
        )
    names = [e["name"] for e in attrs["species"]]
    for n in names:
        if not _SAFE_PATH.match(n):
            raise ValueError(f"species name {n!r} cannot be used in file paths")
    markers = _species_markers(src, names)
    for n in names:
        if markers[n].get("sha256") != report.checksums.get(n):
            raise ValueError(f"species {n!r}: completion marker changed while exporting; run again")
    return attrs, markers


def _check_volumes(volumes: str | None, recipe_only: bool, *, asked: bool | None = None) -> None:
    """``volumes`` must name a format of :data:`tomodata.volume_files.VOLUME_FORMATS`, in a data export
    (``asked``: the caller's ``recipe_only``, True where recipe-only was asked for, None where the
    species' terms chose it)."""
    if volumes is not None and volumes not in VOLUME_FORMATS:
        raise ValueError(f"volumes must be one of {sorted(VOLUME_FORMATS)}, got {volumes!r}")
    if volumes is not None and recipe_only and asked:
        raise ValueError("--volumes writes the species' volumes, which --recipe-only leaves out: give one of them")
    if volumes is not None and recipe_only:
        raise ValueError(
            "--volumes writes the species' volumes, which a recipe-only export leaves out "
            "(their terms do not clear redistribution); pass --with-data to include them anyway"
        )


def _manifest_bytes(manifest, table: list[dict]) -> bytes | None:
    """The manifest file's bytes (None without one), once it loads, lists every species of the store
    and agrees with the store's table on each one's split and source sha256 (where the manifest has
    one): ValueError listing every disagreement (another manifest would be packaged as the recipe)."""
    if manifest is None:
        return None
    df = load_manifest(manifest)
    rows = {r["id"]: r for r in df.to_dict(orient="records")}
    missing = sorted({e["name"] for e in table} - set(rows))
    if missing:
        raise ValueError(f"manifest {manifest} lacks the store's species {missing}")
    wrong = []
    for e in table:
        r = rows[e["name"]]
        if r["split"] != e["split"]:
            wrong.append(f"{e['name']}: split {r['split']!r}, the store's {e['split']!r}")
        if r["sha256"] and e.get("source_checksum") and r["sha256"] != e["source_checksum"].lower():
            wrong.append(f"{e['name']}: sha256 {r['sha256'][:12]}…, the store's source {e['source_checksum'][:12]}…")
    if wrong:
        raise ValueError(f"manifest {manifest} is not the one this store was built from:\n  " + "\n  ".join(wrong))
    return Path(manifest).read_bytes()


def _config_file(config, attrs: dict) -> tuple[str, bytes, Any]:
    """The build config as (export path ``recipe/config.<ext>``, bytes, parsed object or None for TOML).

    ``config``: None (the store's recorded config), a dict (written as JSON) or a file (copied)."""
    if config is None:
        config_obj = (attrs.get("provenance") or {}).get("config")
        return "recipe/config.json", _json_text(config_obj).encode(), config_obj
    if isinstance(config, dict):
        config_obj = json.loads(json.dumps(config, allow_nan=False))
        return "recipe/config.json", _json_text(config_obj).encode(), config_obj
    cpath = Path(config)
    config_bytes = cpath.read_bytes()
    suffix = cpath.suffix.lower() if cpath.suffix.lower() in (".yaml", ".yml", ".json", ".toml") else ".txt"
    config_obj = read_yaml(cpath, "config") if suffix != ".toml" else None  # YAML reads JSON too
    return f"recipe/config{suffix}", config_bytes, config_obj


class _Staging:
    """The hidden folder ``.OUT.partial-<random>`` beside ``out`` that an export is written into.

    ``files``: {export path: sha256} of every file written, in the order written."""

    def __init__(self, out: Path, *, progress: bool = False) -> None:
        self.progress = progress  # progress lines (count, rate, ETA) while the store and volumes are copied
        self.tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir()
        except (FileNotFoundError, NotADirectoryError) as e:  # e.g. under /proc: not the hidden name
            raise ValueError(f"cannot create the export folder {out} in {out.parent} ({e.strerror})") from None
        self.files: dict[str, str] = {}

    def put(self, rel: str, data: bytes | str) -> None:
        """Write a file (text is UTF-8 encoded) and record its sha256."""
        b = data.encode() if isinstance(data, str) else data
        p = self.tmp / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b)
        self.files[rel] = hashlib.sha256(b).hexdigest()

    def copy_store(self, src: Path, names: list[str]) -> None:
        """The store, byte for byte, as ``dataset.zarr/``: its root and species group metadata and the
        groups of the species ``names`` (the species table, whose licences were checked). A symbolic
        link, or any other file (a species group the table does not name, notes, hidden files), is
        refused: it would be published unchecked."""
        allowed = {"zarr.json", "species/zarr.json"}
        under = tuple(f"species/{n}/" for n in names)
        stray, take = [], []
        for p in sorted(src.rglob("*")):
            if p.is_symlink():
                raise ValueError(f"the store holds a symbolic link ({p}): refusing to export it")
            if not p.is_file():
                continue
            inner = p.relative_to(src).as_posix()
            if inner not in allowed and not inner.startswith(under):
                stray.append(inner)
            else:
                take.append((p, inner))
        if not stray:
            for p, inner in progress_bar(take, enabled=self.progress, desc="export: store", unit="file"):
                rel = f"{STORE_NAME}/{inner}"
                self.files[rel] = _copy_hashed(p, self.tmp / rel)
        if stray:
            raise ValueError(
                f"the store {src} holds {len(stray)} file(s) outside its metadata and the species of its table "
                f"(e.g. {', '.join(stray[:3])}): refusing to publish them unchecked; remove them, or export a "
                "copy without them"
            )

    def write_volumes(self, src: Path, table: list[dict], volumes: str) -> None:
        """Each species' canonical volume as ``volumes/<name><ext>`` (RAS, mm spacing where recorded)."""
        ds = open_store(src, volume_cache=0)
        for e in progress_bar(table, enabled=self.progress, desc="export: volumes", unit="species"):
            rel = f"volumes/{e['name']}{VOLUME_FORMATS[volumes]}"
            (self.tmp / "volumes").mkdir(exist_ok=True)
            write_canonical_volume(
                self.tmp / rel, ds.volume(e["name"]), _voxel_mm(e), description=f"tomo canonical volume {e['name']}"
            )
            self.files[rel] = sha256_file(self.tmp / rel)

    def commit(self, out: Path) -> None:
        """Write SHA256SUMS (after checking every path is safe) and rename the folder to ``out``; an earlier
        export there is replaced only once the rename succeeded (else it is put back)."""
        for rel in self.files:
            if not _SAFE_PATH.match(rel) or ".." in rel.split("/"):
                raise ValueError(f"unsafe file name in the export: {rel!r}")
        sums = "".join(f"{self.files[rel]}  {rel}\n" for rel in sorted(self.files))
        (self.tmp / "SHA256SUMS").write_text(sums)
        replace_dir(self.tmp, out)

    def discard(self) -> None:
        """Remove the staging folder (after a failure)."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def _put_tables(stage: _Staging, attrs: dict, markers: dict, classes: dict) -> None:
    """species.csv, samples.csv and splits/<split>.txt (species names, one per line)."""
    table = attrs["species"]
    stage.put("species.csv", _csv_text(*_species_rows(attrs, markers, classes)))
    stage.put("samples.csv", _csv_text(*_samples_rows(attrs)))
    for s in SPLIT_NAMES:
        members = [e["name"] for e in table if e["split"] == s]
        stage.put(f"splits/{s}.txt", "".join(m + "\n" for m in members))


def _checksums_record(attrs: dict, markers: dict, classes: dict, manifest_bytes: bytes | None) -> dict:
    """recipe/checksums.json: per species its split, source, licence and arrays' sha256 (its marker)."""
    checksums = {
        "spec": EXPORT_SPEC,
        "hashed": attrs.get("checksums", {}).get("hashed"),
        "note": (
            "arrays_sha256 must be reproduced by a rebuild (images: with the same renderer backend and "
            "machine kind); source_checksum identifies each source file"
        ),
        "species": {
            e["name"]: {
                "split": e["split"],
                "source": e["source"],
                "source_checksum": e["source_checksum"],
                "licence": classes[e["name"]]["label"],
                "licence_class": classes[e["name"]]["class"],
                "arrays_sha256": markers[e["name"]].get("sha256"),
                "marker_code_version": markers[e["name"]].get("code_version"),
            }
            for e in attrs["species"]
        },
    }
    if manifest_bytes is not None:
        checksums["manifest_sha256"] = hashlib.sha256(manifest_bytes).hexdigest()
    return checksums


def _put_recipe(
    stage: _Staging,
    attrs: dict,
    markers: dict,
    classes: dict,
    manifest_bytes: bytes | None,
    config: tuple[str, bytes, Any],
) -> list[str]:
    """The recipe/ files (checksums, store attributes, manifest, config, :func:`tomodata.recipe.recipe_files`);
    returns the recipe's warnings (local sources)."""
    stage.put("recipe/checksums.json", _json_text(_checksums_record(attrs, markers, classes, manifest_bytes)))
    stage.put("recipe/store_attrs.json", _json_text(attrs))
    if manifest_bytes is not None:
        stage.put("recipe/manifest.tsv", manifest_bytes)
    config_name, config_bytes, _ = config
    stage.put(config_name, config_bytes)
    recipe, local_notes = recipe_files(attrs)
    for rel, text in recipe.items():
        stage.put(rel, text)
    return local_notes


def _put_files(
    stage: _Staging,
    src: Path,
    attrs: dict,
    markers: dict,
    classes: dict,
    recipe_only: bool,
    volumes: str | None,
    manifest_bytes: bytes | None,
    config: tuple[str, bytes, Any],
) -> list[str]:
    """Everything but provenance, Croissant, card and SHA256SUMS, in this order: the store (data exports),
    the volume files, the tables, the recipe. Returns the recipe's warnings."""
    if not recipe_only:
        stage.copy_store(src, [e["name"] for e in attrs["species"]])
    if volumes is not None:
        stage.write_volumes(src, attrs["species"], volumes)
    _put_tables(stage, attrs, markers, classes)
    return _put_recipe(stage, attrs, markers, classes, manifest_bytes, config)


def _provenance(
    attrs: dict,
    src: Path,
    exported_at: str,
    mode: str,
    lic: dict,
    classes: dict,
    notes: list[str],
    config: tuple[str, bytes, Any],
    has_manifest: bool,
    urls: dict[str, str | None],
) -> dict:
    """provenance.json: the export (spec, mode, time, URLs, licence, warnings), code version, config, store.
    ``urls``: ``dataset_url`` (where the export is published) and ``code_url`` (the code's repository)."""
    config_name, _, config_obj = config
    return {
        "export": {
            "spec": EXPORT_SPEC,
            "mode": mode,
            **urls,
            "tool": "tomodata.export.export_dataset",
            "exported_at": exported_at,
            "source_store": str(src.resolve()),  # absolute, on the building machine (a relative one said nothing)
            "licence": lic["hf"],
            "licence_name": lic["name"],
            "not_for_redistribution": lic["not_for_redistribution"],
            "licence_classes": {n: c["class"] for n, c in classes.items()},
            "warnings": notes,
        },
        "code_version": code_version(),
        "exported_at": exported_at,
        "config": config_obj,
        "config_file": config_name,
        "manifest_file": "recipe/manifest.tsv" if has_manifest else None,
        "store": {
            "spec_version": attrs.get("spec_version"),
            "provenance": attrs.get("provenance"),
            "timestamps": attrs.get("timestamps"),
            "completion": attrs.get("completion"),
            "finalized": isinstance(attrs.get("completion"), dict),
        },
    }


def _summary(
    out: Path,
    stage: _Staging,
    *,
    recipe_only: bool,
    lic: dict,
    classes: dict,
    n_species: int,
    n_samples: int,
    notes: list[str],
) -> dict:
    """export_dataset's return value; ``bytes``: the size of every file of the export, SHA256SUMS included."""
    files = stage.files
    n_bytes = sum((out / rel).stat().st_size for rel in [*files, "SHA256SUMS"])
    return {
        "out": str(out),
        "mode": "recipe-only" if recipe_only else "data",
        "recipe_only": recipe_only,
        "licence": lic["hf"],
        "licence_classes": {n: c["class"] for n, c in classes.items()},
        "not_for_redistribution": lic["not_for_redistribution"],
        "species": n_species,
        "samples": n_samples,
        "files": len(files) + 1,
        "bytes": n_bytes,
        "warnings": notes,
    }
