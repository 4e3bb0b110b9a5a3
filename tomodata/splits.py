"""The three splits and what each is for: the one home of their names (no heavy imports, so the
manifest, the workflow's Snakefile and the store can all read it)."""

from __future__ import annotations

__all__ = ["SPLITS", "SPLIT_ROLES"]

#: the split names, in the order tables and stores list them
SPLITS = ("train", "val", "test")
#: what each split is for (recorded in a store's attributes as ``split_roles``)
SPLIT_ROLES = {
    "train": "training, and the database of the NN, Oracle and mean baselines",
    "val": "model choice, early stopping and every tuning decision; never the reported result",
    "test": "the reported result only; never looked at for any decision",
}
