"""Checks of an export: :func:`verify_export` (the folder is intact) and :func:`verify_rebuild` (a store
rebuilt from the recipe matches the recorded checksums)."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import zarr

from ..files import read_json_object, sha256_file
from ..run_layout import STORE_NAME
from ..store import validate_store
from .common import _resolve_store


def _read_sums(path: Path) -> tuple[dict[str, str], list[str]]:
    """SHA256SUMS as {path: sha256 hex}, and its malformed or unsafe lines."""
    sums, problems = {}, []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            problems.append(f"SHA256SUMS line {k} is malformed: {line[:80]!r}")
            continue
        rel = m.group(2)
        if rel.startswith("/") or ".." in rel.split("/") or "\\" in rel:
            problems.append(f"SHA256SUMS line {k} names an unsafe path {rel!r}")
            continue
        sums[rel] = m.group(1)
    return sums, problems


def _file_problems(root: Path, sums: dict[str, str]) -> list[str]:
    """Files missing from, or not listed in, SHA256SUMS; symbolic links; files whose sha256 differs."""
    problems = []
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    on_disk.discard("SHA256SUMS")
    for rel in sorted(set(sums) - on_disk):
        problems.append(f"{rel}: listed in SHA256SUMS but missing")
    for rel in sorted(on_disk - set(sums)):
        problems.append(f"{rel}: not listed in SHA256SUMS")
    for rel in sorted(set(sums) & on_disk):
        p = root / rel
        if p.is_symlink():
            problems.append(f"{rel}: is a symbolic link")
        elif sha256_file(p) != sums[rel]:
            problems.append(f"{rel}: sha256 does not match SHA256SUMS (modified or corrupt)")
    return problems


def _croissant_problems(root: Path, sums: dict[str, str]) -> list[str]:
    """croissant.json unreadable; a FileObject (a file of the export, by its relative ``contentUrl``) that
    is missing, not listed in SHA256SUMS, or whose sha256 disagrees with it; a FileSet whose pattern
    matches no file listed in SHA256SUMS."""
    problems = []
    try:
        cr = json.loads((root / "croissant.json").read_text())
        for d in cr.get("distribution", []):
            url = d.get("contentUrl")
            if d.get("@type") == "cr:FileObject" and isinstance(url, str) and "://" not in url:
                if not (root / url).is_file():
                    problems.append(f"croissant.json: the FileObject {url} is missing")
                elif url not in sums:
                    problems.append(f"croissant.json: the FileObject {url} is not listed in SHA256SUMS")
                elif sums[url] != d.get("sha256"):
                    problems.append(f"croissant.json: sha256 of {url} disagrees with SHA256SUMS")
            elif d.get("@type") == "cr:FileSet" and isinstance(d.get("includes"), str):
                if not any(fnmatch.fnmatchcase(rel, d["includes"]) for rel in sums):  # "*" crosses "/" here
                    problems.append(f"croissant.json: the FileSet {d['includes']} matches no file of SHA256SUMS")
    except (OSError, ValueError) as e:
        problems.append(f"croissant.json is missing or not JSON ({type(e).__name__}: {e})")
    return problems


def _volume_problems(root: Path, sums: dict[str, str], names: list[str]) -> list[str]:
    """An export with volume files (a Croissant FileSet ``volumes/*<ext>``): every species' file
    ``volumes/<name><ext>`` listed in SHA256SUMS (one removed with its line would pass the pattern)."""
    try:
        cr = json.loads((root / "croissant.json").read_text())
    except (OSError, ValueError):
        return []  # said by _croissant_problems
    exts = [
        d["includes"].removeprefix("volumes/*")
        for d in cr.get("distribution", [])
        if d.get("@type") == "cr:FileSet" and str(d.get("includes", "")).startswith("volumes/*")
    ]
    return [
        f"volumes/{n}{ext}: a species' volume file is missing"
        for ext in exts
        for n in names
        if f"volumes/{n}{ext}" not in sums
    ]


def _store_problems(root: Path) -> list[str]:
    """A data export's ``dataset.zarr``: validation errors, species to rebuild, arrays that disagree with
    ``recipe/checksums.json``."""
    store = root / STORE_NAME
    report = validate_store(store)
    problems = [f"{STORE_NAME}: {e}" for e in report.errors]
    if report.species_to_rebuild:
        problems.append(f"{STORE_NAME}: species to rebuild: {report.species_to_rebuild}")
    try:
        recorded = json.loads((root / "recipe" / "checksums.json").read_text())["species"]
        for n, sums_n in report.checksums.items():
            if recorded.get(n, {}).get("arrays_sha256") != sums_n:
                problems.append(f"{STORE_NAME}: species {n!r} arrays disagree with recipe/checksums.json")
    except (OSError, ValueError, KeyError) as e:
        problems.append(f"recipe/checksums.json is missing or unreadable ({type(e).__name__}: {e})")
    return problems


def verify_export(out_dir) -> list[str]:
    """Problems with an export (empty list: it is intact).

    Checks that ``SHA256SUMS`` lists every file and each file's sha256, that ``provenance.json`` and
    ``croissant.json`` parse and agree with the files, and, for a data export, validates
    ``dataset.zarr`` with :func:`tomodata.store.validate_store` and compares its array checksums with
    ``recipe/checksums.json``.
    """
    root = Path(out_dir)
    if not root.is_dir():
        return [f"{root} is not a folder"]
    sums_path = root / "SHA256SUMS"
    if not sums_path.is_file():
        return [f"{root} has no SHA256SUMS"]
    sums, problems = _read_sums(sums_path)
    problems += _file_problems(root, sums)
    try:
        prov = json.loads((root / "provenance.json").read_text())
        mode = prov["export"]["mode"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return problems + [f"provenance.json is missing or unreadable ({type(e).__name__}: {e})"]
    problems += _croissant_problems(root, sums)
    problems += _volume_problems(root, sums, list(prov["export"].get("licence_classes") or {}))
    if mode == "data":
        problems += _store_problems(root)
    elif mode != "recipe-only":
        problems.append(f"provenance.json: unknown export mode {mode!r}")
    return problems


#: why a rebuild's images alone can differ, in verify_rebuild's message
_IMAGES_HINT = (
    "expected where they were rendered with the other backend (CUDA or CPU), which rounds some pixels "
    "the other way; verify_rebuild(store, export, images='skip') checks the rest. Built with other code "
    "than the store's (its card's code version; the CPU renderer changed on 2026-12-07) any array can "
    "differ in its last bits"
)


def verify_rebuild(store, out_dir, *, images: str = "exact") -> list[str]:
    """Compare a rebuilt store with an export's ``recipe/checksums.json`` (empty list: it matches).

    The rebuilt store must validate and hold the same species with the same splits; every array's
    sha256 must equal the recorded one. ``images="skip"`` leaves out the images' sha256 (for a build
    with the other renderer backend, whose images may differ by 1 uint16 step).
    """
    if images not in ("exact", "skip"):
        raise ValueError(f"images must be 'exact' or 'skip', got {images!r}")
    root = Path(out_dir)
    if not (root / "recipe" / "checksums.json").is_file():
        raise FileNotFoundError(
            f"{root} is not an export folder (no recipe/checksums.json): give the folder tomo export wrote"
        )
    recorded = read_json_object(root / "recipe" / "checksums.json", "export checksums", keys=("species",))["species"]
    if not isinstance(recorded, dict):
        raise ValueError(f"export checksums {root / 'recipe' / 'checksums.json'}: 'species' is not a mapping")
    src = _resolve_store(store)
    report = validate_store(src)
    problems = [f"rebuilt store: {e}" for e in report.errors]
    attrs: dict[str, Any] = zarr.open_group(str(src), mode="r", use_consolidated=False, zarr_format=3).attrs.asdict()
    splits = {e["name"]: e["split"] for e in attrs.get("species", [])}
    for n in sorted(set(recorded) - set(splits)):
        problems.append(f"species {n!r} is missing from the rebuilt store")
    for n in sorted(set(splits) - set(recorded)):
        problems.append(f"species {n!r} is not in the recipe")
    for n in sorted(set(recorded) & set(splits)):
        if splits[n] != recorded[n]["split"]:
            problems.append(f"species {n!r}: split {splits[n]!r}, the recipe says {recorded[n]['split']!r}")
        got = report.checksums.get(n)
        if got is None:
            continue
        wanted = (recorded[n].get("arrays_sha256") or {}).items()
        differ = [a for a, want in wanted if got.get(a) != want and not (a == "images" and images == "skip")]
        for a in differ:  # the backend hint only where the images alone differ (they follow from the rest)
            why = f" ({_IMAGES_HINT})" if differ == ["images"] else ""
            problems.append(f"species {n!r}: array {a} sha256 differs from the recipe{why}")
    return problems
