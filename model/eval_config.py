"""The options of one evaluation run (:func:`model.evaluate.evaluate_run`, ``tomo evaluate``), in one
typed, frozen, validated config (:class:`EvalConfig`).

Units: memory budgets in bytes; ``slice_counts`` in depth slices; ``batch``, ``nn_query_block`` and
``train_block`` in samples. The meaning of each option: :class:`EvalConfig`; the definitions of the
methods and metrics: :mod:`model.evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .surface import DEFAULT_ISO

__all__ = ["EVAL_SPLITS", "FUSION_AT", "METHODS", "NN_SEARCHES", "EvalConfig"]

#: The evaluated methods, in the order of every table.
METHODS = ("ours", "ours_nofusion", "nn", "oracle", "mean")
#: The splits that can be evaluated (``train`` is the database of the NN, Oracle and mean baselines).
EVAL_SPLITS = ("test", "val")
#: Where ``ours`` is fused with the x-ray (:mod:`model.evaluate`).
FUSION_AT = ("xray", "target")
#: The NN's exact searches (:mod:`model.search`).
NN_SEARCHES = ("bound", "brute")


@dataclass(frozen=True)
class EvalConfig:
    """Every option of an evaluation run; checked on construction (ValueError naming the option).

    Attributes:
        store: the dataset store (.zarr); its ``train`` split is the NN/Oracle/mean database, ``split``
            the evaluated species (kept as given: summary.json records ``str(store)``).
        checkpoint: a training checkpoint (``last.pt`` / ``best.pt``).
        out_dir: output folder (created once the store and checkpoint pass their checks).
        max_samples: evaluate at most this many samples, evenly spaced over (species, sample); None: all.
        batch: samples per network/metric batch.
        device: torch device for the network, view volumes, searches and renders.
        methods: any of ``ours``, ``ours_nofusion``, ``nn``, ``oracle``, ``mean`` (a tuple once built).
        slice_counts: depths for the slice-count analysis (a tuple of ints once built).
        iso: iso-value of the DSSIM renders.
        beta: fusion sharpness.
        fusion_at: ``"xray"`` or ``"target"`` (:mod:`model.evaluate`).
        oracle_bytes: memory for one block of held-out view volumes in the Oracle's scan
            (:func:`model.oracle.oracle_search`): more samples than fit take more passes over the
            training view volumes (each pass makes them all once).
        nn_feature_bytes: memory for the NN's lower-bound features of every training x-ray;
            ``nn_coarse`` is lowered until they fit (:func:`model.search.coarse_for_memory`); the
            search stays exact.
        cache_bytes: keep every training view volume (target grid) in memory when they fit this budget
            (the NN/Oracle volumes and the Oracle's exact distances then need no re-sampling).
        nn_search: ``"bound"`` (default): :func:`model.search.nearest_images_bounded`, the exact
            lower-bound pre-filter and re-rank on the x-rays (``nn_coarse`` cells per axis, short list
            ``nn_k``; its features take ``nn_feature_bytes`` at most; the images are kept in memory
            when they fit ``cache_bytes``); ``"brute"``: :func:`model.search.nearest_images`, every
            pair by blocked matrix products. Both are exact and give the same neighbours (ties to the
            lowest index).
        nn_query_block, train_block: NN settings: held-out x-rays read per pass (and, brute force,
            searched per pass), training images per block.
        strict: refuse a checkpoint trained on other data than the store's (ValueError naming what differs).
        split: the evaluated split, ``"test"`` (the reported result) or ``"val"`` (the model-choice
            set); exactly that split's species are evaluated (ValueError if it has none, or an
            incomplete one, or one the checkpoint was trained on).
        progress: a bar on a terminal, else progress lines and named phases in the log (tomodata.progress).
    """

    store: str | os.PathLike
    checkpoint: str | os.PathLike
    out_dir: str | os.PathLike
    max_samples: int | None = None
    batch: int = 16
    device: str | torch.device = "cpu"
    methods: Sequence[str] = METHODS
    slice_counts: Sequence[int] = (8, 16, 32, 64)
    iso: float = DEFAULT_ISO
    beta: float = 2.0
    fusion_at: str = "xray"
    oracle_bytes: int = 1 << 30
    nn_feature_bytes: int = 2 << 30
    cache_bytes: int = 1 << 30
    nn_search: str = "bound"
    nn_coarse: int = 16
    nn_k: int = 32
    nn_query_block: int = 4096
    train_block: int = 256
    strict: bool = True
    split: str = "test"
    progress: bool = False

    def __post_init__(self) -> None:
        methods = tuple(self.methods)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"methods repeat: {methods}")
        if self.fusion_at not in FUSION_AT:
            raise ValueError(f"fusion_at must be 'xray' or 'target', got {self.fusion_at!r}")
        if self.nn_search not in NN_SEARCHES:
            raise ValueError(f"nn_search must be 'bound' or 'brute', got {self.nn_search!r}")
        counts = tuple(int(c) for c in self.slice_counts)
        if any(c < 1 for c in counts):
            raise ValueError(f"slice_counts must be positive, got {list(self.slice_counts)}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {list(EVAL_SPLITS)}, got {self.split!r}")
        torch.device(self.device)  # a bad device name fails here, before any work
        object.__setattr__(self, "methods", methods)  # frozen: normalised once, here
        object.__setattr__(self, "slice_counts", counts)

    @property
    def torch_device(self) -> torch.device:
        """``device`` as a :class:`torch.device`."""
        return torch.device(self.device)

    @property
    def needs_train_views(self) -> bool:
        """Whether the training view volumes are needed (the NN's or the Oracle's results)."""
        return "nn" in self.methods or "oracle" in self.methods
