"""Cross-validation folds over species: the split assignment and read-only fold views of a store.

A store's own split (the manifest's ``split`` column) holds out a few species once; with few
species (the demo's 4 test species) that is a weak test. K-fold cross-validation holds out every
species once: the species are grouped by their ``species`` label (case-insensitive, so specimens of
one species stay together), the groups shuffled with ``seed`` and dealt round-robin into ``folds``
parts (sizes differ by at most one). Fold ``k`` tests part ``k``, chooses its checkpoint on part
``(k + 1) % folds`` (val) and trains on the rest; over the folds every species is a test species
exactly once and a val species exactly once. Settings chosen before (steps, learning rate, network)
were chosen on the store's own val split: say so where a fold tests those species.

A fold view is a folder beside the store, not a copy::

    <view>/zarr.json     the base store's root attributes with the fold's splits, plus
                         ``cross_validation`` (base, folds, fold, seed, unit, the base's splits and
                         its completion record)
    <view>/species  ->   <base>/species  (a relative symbolic link; the data are the base's)

Every reader of a store (training, evaluation, the figures) reads a view as a store. It is read-only:
:func:`tomodata.store.layout.check_fold_view` (wherever a store is opened) refuses to open it for
writing, and a view whose base's completion record changed (a species rendered again, then finalised)
is refused until it is made again.

``fold_splits(table, folds=K, seed=S) -> list[dict[name, split]]``   the assignment, one dict a fold
``make_fold_view(base, view, folds=K, fold=k, seed=S) -> Path``      write (or replace) a view
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..files import write_json
from ..splits import SPLITS
from .layout import CV_KEY, _root_json, check_fold_view

__all__ = ["CV_KEY", "fold_splits", "make_fold_view", "check_fold_view", "fold_groups"]

#: what a fold holds out, in words (recorded in the view)
UNIT = "species: the species table's `species` label, compared case-insensitively (its specimens stay together)"


def fold_groups(table: list[dict]) -> list[list[str]]:
    """The held-out units of a species table: specimen names grouped by their ``species`` label
    (stripped, case-insensitive; a row without one is its own group), in table order."""
    groups: dict[str, list[str]] = {}
    for e in table:
        key = str(e.get("species") or "").strip().casefold() or f"\0{e['name']}"
        groups.setdefault(key, []).append(str(e["name"]))
    return list(groups.values())


def fold_splits(table: list[dict], *, folds: int, seed: int = 0) -> list[dict[str, str]]:
    """Each fold's split of every specimen of ``table`` (module docstring): ``out[k][name]`` is
    ``"test"`` for part k, ``"val"`` for part (k + 1) % folds, else ``"train"``. ValueError where
    ``folds`` < 3 (a fold needs train, val and test parts) or exceeds the number of species."""
    groups = fold_groups(table)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 3:
        raise ValueError(f"folds must be an integer >= 3 (each fold needs train, val and test species), got {folds!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if folds > len(groups):
        raise ValueError(f"{folds} folds but only {len(groups)} species to hold out: at most {len(groups)} folds")
    order = np.random.default_rng(int(seed)).permutation(len(groups))
    part = {int(g): rank % folds for rank, g in enumerate(order)}
    out = []
    for k in range(folds):
        role = {k: "test", (k + 1) % folds: "val"}
        out.append({name: role.get(part[g], "train") for g, names in enumerate(groups) for name in names})
    return out


def make_fold_view(base, view, *, folds: int, fold: int, seed: int = 0) -> Path:
    """Write the read-only view of fold ``fold`` of ``folds`` of the finalised store ``base`` at
    ``view`` (module docstring), replacing a view there; returns ``view``. ValueError where ``base``
    is not finalised, is itself a view, or ``view`` holds anything but a view."""
    base, view = Path(base), Path(view)
    meta = _root_json(base)
    attrs = meta.get("attributes") or {}
    if CV_KEY in attrs:
        home = (base / attrs[CV_KEY]["base"]).resolve()
        raise ValueError(f"{base} is a fold view itself: make views of the store it reads ({home})")
    if not attrs.get("completion"):
        raise ValueError(f"{base} is not finalised (no completion record): run tomo finalize (the workflow does) first")
    if not 0 <= int(fold) < int(folds):
        raise ValueError(f"fold must be in [0, {folds}), got {fold}")
    b, v = base.resolve(), view.resolve()
    if v == b or b in v.parents or v in b.parents:
        raise ValueError(f"{view}: a fold view goes beside its store {base}, not inside it (nor the store inside it)")
    split = fold_splits(attrs["species"], folds=folds, seed=seed)[int(fold)]
    table = [dict(e, split=split[e["name"]]) for e in attrs["species"]]
    _clear_view(view)
    view.mkdir(parents=True, exist_ok=True)
    link = os.path.relpath(base.resolve() / "species", view.resolve())
    record = {
        "base": os.path.relpath(base.resolve(), view.resolve()),
        "folds": int(folds),
        "fold": int(fold),
        "seed": int(seed),
        "unit": UNIT,
        "assignment": "tomodata.store.folds.fold_splits(table, folds=folds, seed=seed)[fold]",
        "base_splits": attrs.get("splits"),
        "base_completion": attrs["completion"],
    }
    new = dict(attrs, species=table, splits={s: [e["name"] for e in table if e["split"] == s] for s in SPLITS})
    new[CV_KEY] = record
    os.symlink(link, view / "species", target_is_directory=True)
    write_json(view / "zarr.json", dict(meta, attributes=new))
    return view


def _clear_view(view: Path) -> None:
    """Remove an earlier view at ``view`` (its zarr.json and link only; never what the link points at)."""
    if not view.exists() and not view.is_symlink():
        return
    if not view.is_dir() or view.is_symlink():
        raise ValueError(f"{view} exists and is not a fold view folder: remove it or choose another path")
    left = {p.name for p in view.iterdir()} - {"zarr.json", "species"}
    if left or ((view / "species").exists() and not (view / "species").is_symlink()):
        raise ValueError(f"{view} holds files that are not a fold view's ({sorted(left) or 'species/'}): not replaced")
    if (view / "zarr.json").exists() and CV_KEY not in (_root_json(view).get("attributes") or {}):
        raise ValueError(f"{view} is a dataset store, not a fold view: not replaced")
    (view / "species").unlink(missing_ok=True)
    (view / "zarr.json").unlink(missing_ok=True)
