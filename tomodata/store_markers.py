"""Workflow markers checked against the store they stand for.

The workflow's marker files (``dataset.created.json``, ``species/<id>.done.json``,
``dataset.final.json``) say that a state of the store was reached; they live beside the store, so
they can outlive it (a deleted store, a cluster's scratch purge, a species' shards removed). Before
the DAG is built, :func:`stale_markers` lists every marker whose store state is gone, so that the
workflow removes it and redoes exactly that part (docs/workflow.md, "The store's state is the
truth"). The check reads only JSON metadata and lists folders: it costs milliseconds. Damaged shard
*contents* are found by ``tomo validate`` (it reads the data), which names the species to rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["stale_markers"]


def _attrs(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()).get("attributes", {})
    except (OSError, ValueError):
        return None


def _species_problem(store: Path, name: str, marker: Path) -> str | None:
    group = store / "species" / name
    attrs = _attrs(group / "zarr.json")
    if attrs is None:
        return f"species {name} is not in the store"
    if attrs.get("status") != "complete" or not isinstance(attrs.get("complete"), dict):
        return f"species {name} is {attrs.get('status', 'unfinished')} in the store"
    try:
        recorded = (json.loads(marker.read_text()).get("complete") or {}).get("sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded != attrs["complete"].get("sha256"):
        return f"species {name}: the marker's checksums are not the store's"
    for meta in sorted(group.rglob("zarr.json")):  # every array, also those inside the OME-Zarr volume group
        try:
            if json.loads(meta.read_text()).get("node_type") != "array":
                continue
        except (OSError, ValueError):
            return f"species {name}: {meta.parent.relative_to(group)} has an unreadable zarr.json"
        chunks = meta.parent / "c"
        if not chunks.is_dir() or not any(f.is_file() for f in chunks.rglob("*")):
            return f"species {name}: array {meta.parent.relative_to(group)} has no data files"
    return None


def stale_markers(store, *, created, final, done: dict) -> list[tuple[str, str]]:
    """(marker path, why) for every existing marker whose store state is gone.

    ``done``: species name → its done marker. A missing store (or a folder that is not one) makes
    every marker stale; a species that is missing, unfinished, of other checksums or without data
    files makes its own marker and ``final`` stale.
    """
    store = Path(store)
    existing = [Path(p) for p in [created, final, *done.values()] if Path(p).exists()]
    if not existing:
        return []
    root = _attrs(store / "zarr.json")
    if root is None:
        why = f"the store {store} is gone" if not store.exists() else f"{store} is not a dataset store"
        return [(str(p), why) for p in existing]
    out = []
    for name, marker in done.items():
        if Path(marker).exists():
            problem = _species_problem(store, name, Path(marker))
            if problem:
                out.append((str(marker), problem))
    if out and Path(final).exists():
        out.append((str(final), "a species it vouches for is not complete in the store"))
    return out
