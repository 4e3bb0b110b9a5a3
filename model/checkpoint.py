"""Checkpoints of :mod:`model.train`: what one holds, writing it atomically and reproducibly, reading
it back, and the data fingerprint a checkpoint must match to be resumed or evaluated.

A checkpoint (``format`` :data:`CHECKPOINT_FORMAT`) is a ``torch.save`` dict: ``step``, ``model``,
``optimizer``, ``scheduler`` (state dicts), ``rng`` (:func:`rng_state`), ``network`` and ``train``
(the settings), ``data`` (:func:`data_fingerprint`), ``metrics``, ``code_version``,
``xray_reference`` (for ``tomo infer``'s out-of-distribution check) and, in ``last.pt``,
``best_checkpoint`` and ``val_history``.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tomodata import __version__
from tomodata.files import atomic_write
from tomodata.store import open_store
from tomodata.views import DEFAULT_VIEW_SETS, view_sets_of

from .data import StoreSamples
from .names import TRAIN_BEST, TRAIN_LAST
from .network import NetworkConfig, TomographyNet

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "config_differences",
    "data_differences",
    "data_fingerprint",
    "load_checkpoint",
    "model_from_checkpoint",
    "open_val_species",
    "resume_differences",
    "resume_refusal",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "tomo-checkpoint/1"


def data_fingerprint(dataset: StoreSamples) -> dict:
    """What a checkpoint's data must match on resume (and evaluation): store spec, sizes, the
    training species and ``content``, the sha256 of the stored checksums of the train species of
    ``dataset`` and of the store's complete val species (model choice); ``view_sets`` only for
    per-species views (a shared store's fingerprint is that of a store made before them)."""
    a = dataset.attrs
    ds = open_store(dataset.store_path)
    names = list(dataset.species) + open_val_species(dataset)
    sets = view_sets_of(a["view_scheme"])  # named only where not the default, as in the store's attributes
    return dict(
        spec_version=a["spec_version"],
        chi=a["chi"],
        steps=a["steps"],
        image_size=a["image_size"],
        volume_size=a["volume_size"],
        n_views=a["n_views"],
        view_scheme=a["view_scheme"]["name"],
        view_seed=a["view_scheme"]["seed"],
        **({} if sets == DEFAULT_VIEW_SETS else {"view_sets": sets}),
        species=list(dataset.species),
        content=ds.content_id(names),
    )


def rng_state() -> dict:
    """Every RNG's state that a checkpoint records (torch, CUDA, NumPy, Python)."""
    return dict(
        torch=torch.get_rng_state(),
        numpy=np.random.get_state(),
        python=random.getstate(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    )


def set_rng_state(state: dict) -> None:
    """Restore the RNG states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: Path,
    *,
    model,
    optimizer,
    scheduler,
    step: int,
    net: NetworkConfig,
    cfg: TrainConfig,
    data: dict,
    metrics: dict | None = None,
    xray_reference: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename). ``xray_reference``: the training
    x-rays' summary for the out-of-distribution check of ``tomo infer`` (:mod:`model.ood`);
    ``extra``: more entries (``last.pt``: ``best_checkpoint``, the bytes of ``best.pt``, and
    ``val_history``, so that a resumed run restores both where they were deleted)."""
    module = model.module if hasattr(model, "module") else model
    state = dict(
        format=CHECKPOINT_FORMAT,
        step=step,
        model=module.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=rng_state(),
        network=net.to_dict(),
        train=cfg.to_dict(),
        data=data,
        metrics=metrics or {},
        code_version=__version__,
        xray_reference=xray_reference,
        **(extra or {}),
    )
    return atomic_write(path, lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict, path: Path) -> None:
    """``torch.save`` through a file object: given a path it names the archive's folder after the
    file (here a random temporary name), so the same state would not give the same bytes."""
    with open(path, "wb") as fh:
        torch.save(state, fh)


def load_checkpoint(path, *, map_location="cpu") -> dict:
    """Read a checkpoint; ValueError if it is not one of ours."""
    path = Path(path)
    if path.is_dir():
        inside = [c for c in (path / TRAIN_BEST, path / TRAIN_LAST) if c.is_file()]
        hint = f" (it holds {inside[0].name}: pass {inside[0]})" if inside else ""
        raise ValueError(f"checkpoint {path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise ValueError(f"{path} is not a readable checkpoint: {e}{_unreadable_hint(path)}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    return state


def _unreadable_hint(path: Path) -> str:
    """What to do about an unreadable ``best.pt`` or ``last.pt`` of a training run (else nothing)."""
    if path.name == TRAIN_BEST:
        return (
            f" (in the workflow `snakemake --forcerun train` writes it again from {path.parent / TRAIN_LAST}; "
            "by hand: delete it and run the same tomo train again)"
        )
    if path.name == TRAIN_LAST:
        return " (delete it, or run tomo train with --no-resume, to train afresh in its folder)"
    return ""


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two flat-ish dicts ("key: x != y")."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k)!r} (checkpoint) != {b.get(k)!r} (now)")
    return out


def resume_differences(state: dict, *, net: dict, train: dict, data: dict) -> list[str]:
    """What differs (:func:`config_differences`) between a checkpoint ``state`` and the network and
    training settings and data fingerprint (:func:`data_fingerprint`) of a run that would resume it.
    How a step runs (``compile``, ``memory_format``), not what it computes, is not compared, nor how
    often a run checkpoints and logs, nor its loader workers (``ckpt_every``, ``keep_checkpoints``,
    ``log_every``, ``num_workers``: neither weights nor RNG depend on them; ``val_every`` is compared:
    it decides ``best.pt``); ``steps`` is: the learning rate at a step is a function of it
    (:func:`model.train.lr_factor`)."""
    how = ("compile", "memory_format", "channels_last", "ckpt_every", "keep_checkpoints", "log_every", "num_workers")
    saved = dict(state["network"])
    for f in dataclasses.fields(NetworkConfig):  # keys added since the checkpoint was made: at their defaults
        saved.setdefault(f.name, f.default)
    diffs = config_differences(saved, net, "network.")
    diffs += config_differences(
        {k: v for k, v in state["train"].items() if k not in how},
        {k: v for k, v in train.items() if k not in how},
        "train.",
    )
    return diffs + data_differences(state["data"], data)


#: keys of :func:`data_fingerprint` added after checkpoints were first written (``content``; ``view_sets``
#: in session 31): compared only where the checkpoint has them (``content`` alone tells stores apart)
ADDED_FINGERPRINT_KEYS = ("content", "view_sets")


def data_differences(saved: dict, now: dict) -> list[str]:
    """:func:`config_differences` of a checkpoint's data fingerprint ``saved`` and a store's ``now``
    (``data.`` keys), leaving out the :data:`ADDED_FINGERPRINT_KEYS` that ``saved`` lacks."""
    now = {k: v for k, v in now.items() if k in saved or k not in ADDED_FINGERPRINT_KEYS}
    if "view_sets" in saved:  # a per-species checkpoint: a shared store now has the default, unwritten
        now.setdefault("view_sets", DEFAULT_VIEW_SETS)
    return config_differences(saved, now, "data.")


def resume_refusal(path, diffs: list[str]) -> str:
    """The one-line error for a ``last.pt`` (``path``) made with other settings or data than a run
    that would resume it: what differs (``diffs``, :func:`config_differences`) and what to do. The
    learning rate at a step is a function of ``steps`` (the cosine's end), so a run keeps its length."""
    why = "; ".join(diffs)
    if any(d.startswith("train.steps:") for d in diffs):
        why += " (the learning-rate schedule ends at steps: a run keeps its length; --max-steps stops early)"
    return (
        f"{path} was made with other settings, refusing to resume: {why}. Give the checkpoint's settings to "
        "continue it, or start afresh in a new output folder (-o) or here with --no-resume (overwrites it)"
    )


def model_from_checkpoint(path, *, map_location="cpu") -> tuple[TomographyNet, dict]:
    """The trained network (eval mode) and the checkpoint dict."""
    state = load_checkpoint(path, map_location=map_location)
    net = NetworkConfig.from_dict(state["network"])
    model = TomographyNet(net)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def open_val_species(train_set: StoreSamples) -> list[str]:
    """The store's held-out species (split ``val``) that are complete."""
    ds = open_store(train_set.store_path)
    return [n for n in ds.species_names(split="val") if ds.is_complete(n)]
