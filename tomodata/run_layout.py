"""The folder names of a workflow run, kept in one place.

A run of the workflow writes under ``results/RUN/`` (a cross-validation fold under
``results/RUN/cv/fold{k}/`` the same way)::

    STORE_NAME     dataset.zarr/   the dataset store (tomodata.store); also the store's name in a
                                   ``tomo build-demo`` output folder and in a data export
    MODEL_DIR      model/          ``tomo train``'s output (model.names.TRAIN_*: best.pt, last.pt, ...)
    EVAL_DIR       eval/           ``tomo evaluate``'s output (model.names.EVAL_*)
    EXPLORER_DIR   explorer/       ``tomo explorer``'s page

The workflow (``workflow/rules/common.smk``) imports these at parse time, so this module imports
nothing heavy (no zarr, no torch). Names only: the dataset package knows nothing of what the model's
folders hold.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EVAL_DIR", "EXPLORER_DIR", "MODEL_DIR", "STORE_NAME", "store_in"]

#: the dataset store's folder in a run, a build-demo output folder and a data export
STORE_NAME = "dataset.zarr"
#: the training's folder (tomo train -o)
MODEL_DIR = "model"
#: the evaluation's folder (tomo evaluate -o)
EVAL_DIR = "eval"
#: the web explorer's folder (tomo explorer -o)
EXPLORER_DIR = "explorer"


def store_in(path) -> Path | None:
    """The dataset store at ``path``: ``path`` itself where it holds a ``zarr.json``, else
    ``path/STORE_NAME`` where that does (a run, build-demo or export folder), else None."""
    p = Path(path)
    if (p / "zarr.json").is_file():
        return p
    if (p / STORE_NAME / "zarr.json").is_file():
        return p / STORE_NAME
    return None
