"""The folder names of a workflow run, kept in one place.

A run of the workflow writes under ``results/RUN/`` (a cross-validation fold under
``results/RUN/cv/fold{k}/`` the same way)::

    STORE_NAME     dataset.zarr/   the dataset store (tomodata.store); also the store's name in a
                                   ``tomo build-demo`` output folder and in a data export
    MODEL_DIR      model/          ``tomo train``'s output (model.names.TRAIN_*: best.pt, last.pt, ...)
    EVAL_DIR       eval/           ``tomo evaluate``'s output (model.names.EVAL_*)
    EXPLORER_DIR   explorer/       ``tomo explorer``'s page
    CREATED_MARKER dataset.created.json      the workflow's markers (tomodata.store_markers): the
    species_marker(ID) species/ID.done.json  store created, a species rendered, the store finalised
    FINAL_MARKER   dataset.final.json

The workflow (``workflow/rules/common.smk``) imports these at parse time, so this module imports
nothing heavy (no zarr, no torch). Names only: the dataset package knows nothing of what the model's
folders hold.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CREATED_MARKER",
    "EVAL_DIR",
    "EXPLORER_DIR",
    "FINAL_MARKER",
    "MODEL_DIR",
    "STORE_NAME",
    "species_marker",
    "store_in",
]

#: the dataset store's folder in a run, a build-demo output folder and a data export
STORE_NAME = "dataset.zarr"
#: the training's folder (tomo train -o)
MODEL_DIR = "model"
#: the evaluation's folder (tomo evaluate -o)
EVAL_DIR = "eval"
#: the web explorer's folder (tomo explorer -o)
EXPLORER_DIR = "explorer"
#: the workflow's marker of a created store (tomo store-create --done)
CREATED_MARKER = "dataset.created.json"
#: the workflow's marker of a finalised store (tomo finalize --done)
FINAL_MARKER = "dataset.final.json"


def species_marker(sid: str) -> str:
    """The workflow's marker of a rendered species (tomo render-species --done), relative to the run."""
    return f"species/{sid}.done.json"


def store_in(path) -> Path | None:
    """The dataset store at ``path``: ``path`` itself where it holds a ``zarr.json``, else
    ``path/STORE_NAME`` where that does (a run, build-demo or export folder), else None."""
    p = Path(path)
    if (p / "zarr.json").is_file():
        return p
    if (p / STORE_NAME / "zarr.json").is_file():
        return p / STORE_NAME
    return None
