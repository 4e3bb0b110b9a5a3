"""Training: L2 on view volumes, Adam, a cosine schedule with warm-up, exact resume, DDP, logs.

``train(store, out_dir, net=NetworkConfig, cfg=TrainConfig)`` trains on the store's ``train`` split
and validates on its held-out species (``val``) every ``val_every`` steps. Everything that decides
the next step is in the checkpoint — model, optimiser, scheduler, step, RNG states — and the sample
order is a pure function of (seed, step) (:func:`model.data.batch_indices`), so a run stopped after
any checkpoint and resumed continues with exactly the losses of an uninterrupted run. A run keeps
its length: the schedule is a function of ``steps``, so a checkpoint of other ``steps`` (like other
settings) is not resumed. Run again once finished, it trains nothing and leaves its outputs as
they were.

Several GPUs (or CPU processes): start with ``torchrun --nproc_per_node N -m model.cli train ...`` or
``torchrun ... $(which tomo) train ...``; each rank takes its share of every global batch and
DistributedDataParallel averages the gradients. Only rank 0 writes logs and checkpoints.

**Model choice** is made on the ``val`` split only: whenever the validation loss (a fixed seeded
subset of the val species' samples) improves, the checkpoint is also written as ``best.pt``; the
workflow evaluates ``best.pt`` on the ``test`` split, which no training decision ever looks at.

Outputs in ``out_dir``: ``last.pt``, ``best.pt`` (and ``step_XXXXXXX.pt`` every ``ckpt_every`` steps),
``train_log.csv`` (step, loss, lr, samples/s), ``val_log.csv`` (step, val_loss), ``tensorboard/``.

Here: the settings (:class:`TrainConfig`, :func:`lr_factor`), the device and process group, and a
run's start (fresh, resumed from ``last.pt``, or nothing left to train); the steps themselves
(batches, optimisation, validation, checkpoints, summary): :mod:`model.train_loop`.
"""

from __future__ import annotations

__all__ = [  # checkpoint I/O lives in model.checkpoint; its names stay importable from here
    "CHECKPOINT_FORMAT",
    "TrainConfig",
    "config_differences",
    "data_fingerprint",
    "load_checkpoint",
    "lr_factor",
    "model_from_checkpoint",
    "open_val_species",
    "save_checkpoint",
    "train",
]

import dataclasses
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tomodata.files import atomic_write
from tomodata.progress import progress as progress_bar
from tomodata.store_settings import StoreSettings

from .checkpoint import (
    CHECKPOINT_FORMAT,
    config_differences,
    data_fingerprint,
    load_checkpoint,
    model_from_checkpoint,
    open_val_species,
    resume_differences,
    resume_refusal,
    save_checkpoint,
    set_rng_state,
)
from .data import StoreSamples
from .devices import torch_device
from .names import SUPERSEDED_DIR, TRAIN_BEST, TRAIN_LAST, TRAIN_LOG, TRAIN_SUMMARY, TRAIN_VAL_LOG
from .network import MEMORY_FORMATS, NetworkConfig, TomographyNet
from .ood import reference_from_store
from .run_lock import train_lock
from .train_attempts import recorded_attempt
from .train_logs import TrainLogs, kept_summary, rerun_note, restore_val_log
from .train_loop import _batches, _finish, _loop, _Run, _stop_on_signals


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Steps count global batches of ``batch_size`` samples."""

    steps: int = 150_000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 500
    min_lr_ratio: float = 0.01
    val_every: int = 1000
    val_samples: int = 512
    ckpt_every: int = 1000
    keep_checkpoints: bool = False
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, none on CPU; "bf16"; "none"
    compile: bool = False  # torch.compile the training step's forward pass (never blocks a resume)
    memory_format: str = "nhwc"  # the network's tensors in NHWC or NCHW order (never blocks a resume)

    def validate(self) -> TrainConfig:
        for name in ("steps", "batch_size", "val_every", "ckpt_every", "log_every", "val_samples"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.warmup_steps < 0 or self.num_workers < 0:
            raise ValueError("warmup_steps and num_workers must be >= 0")
        if self.amp not in ("auto", "bf16", "none"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {self.amp!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {sorted(MEMORY_FORMATS)}, got {self.memory_format!r}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        # checkpoints of session 13 record channels_last: it never changed the order (NHWC either way)
        d = {k: v for k, v in d.items() if k != "channels_last"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d).validate()


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_lr_ratio`` at ``cfg.steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


# ------------------------------------------------------------------------------------------ dist
def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _device(local_rank: int, want: str = "auto", world: int = 1) -> torch.device:
    """The training device (:func:`model.devices.torch_device`), made the current CUDA device. Under
    torchrun (``world`` > 1) each process takes its local rank's GPU: ``cuda:N`` is refused there."""
    if world > 1 and want.strip().lower().startswith("cuda:"):
        raise ValueError(
            f"device {want!r} with {world} processes would put every one on the same GPU: give cuda (each "
            "process takes its local rank's GPU; CUDA_VISIBLE_DEVICES chooses which)"
        )
    dev = torch_device(want, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def size_notes(net: NetworkConfig, attrs: dict) -> list[str]:
    """Where the network is larger than the store's data (``attrs``: its root attributes): its input
    than the x-rays, its output than the volumes. Training works, but on interpolated data."""
    settings = StoreSettings.from_attrs(attrs)
    notes = []
    if net.input_size > settings.image_size:
        notes.append(
            f"the network's input ({net.input_size}²) is larger than the store's x-rays ({settings.image_size}²): "
            "they are upsampled, no detail is added"
        )
    if max(net.out_size, net.out_depth) > settings.volume_size:
        notes.append(
            f"the network's output ({net.out_depth} x {net.out_size}²) is larger than the store's volumes "
            f"({settings.volume_size}³): its targets are interpolated from them, no detail is added"
        )
    return notes


def train(
    store,
    out_dir,
    *,
    net: NetworkConfig,
    cfg: TrainConfig,
    resume: bool = True,
    max_steps: int | None = None,
    progress: bool | None = None,
    restart_if_changed: bool = False,
    device: str = "auto",
) -> dict:
    """Train (or resume) a network on ``store``; returns a summary dict.

    ``max_steps`` stops early after that global step (used to test resuming); ``cfg.steps`` still
    sets the schedule. With ``resume`` and an existing ``out_dir/last.pt``, training continues from
    it; a checkpoint made with other network or training settings (``steps`` included: the schedule
    is a function of it), or other data (the stored content of the train and val species), is
    refused with what differs, or with ``restart_if_changed`` (the workflow's mode) training starts
    afresh, the earlier run's checkpoints and logs copied to ``out_dir/superseded/step{N}-{UTC}/``.
    A checkpoint already at the last step: nothing is trained, the outputs stay as they were
    (:func:`_nothing_to_train`). SIGINT or SIGTERM stop it after the current step with ``last.pt``
    written (summary ``stopped``: the signal's name). ``device``: auto (CUDA where present), cpu,
    cuda or cuda:N (not a setting a checkpoint is compared by: a run may resume on another device).
    A second trainer of the same ``out_dir`` is refused (:func:`model.run_lock.train_lock`).
    """
    with train_lock(Path(out_dir), enabled=_dist_info()[0] == 0):  # one trainer per folder (rank 0 writes)
        return _train(store, out_dir, net, cfg, resume, max_steps, progress, restart_if_changed, device)


def _train(store, out_dir, net, cfg, resume, max_steps, progress, restart_if_changed, device) -> dict:
    """:func:`train` while it holds the folder's lock."""
    run = _setup(
        store, out_dir, net=net, cfg=cfg, resume=resume, max_steps=max_steps, restart=restart_if_changed, device=device
    )
    if run.start >= run.end:
        return _nothing_to_train(run)
    run.reached = run.start  # a failure before the first step reports the step it started from
    attempt = recorded_attempt(
        run.out,
        enabled=run.rank == 0,
        from_step=run.start,
        to_step=run.end,
        device=str(run.device),
        world=run.world,
        reached=lambda: run.reached,
    )
    with attempt as set_status:
        summary = _trained(run, progress)
        if run.stop:
            set_status(f"stopped: {run.stop}")
    return summary


def _trained(run: _Run, progress: bool | None) -> dict:
    """The steps of :func:`_train` after the set-up: data, logs, the loop, the summary."""
    loader, targets, val_targets = _batches(run)
    logs = TrainLogs(run.out, run.rank == 0, run.start, run.val_history)
    if progress is None:
        progress = True  # a bar on a terminal, lines in a log (tomodata.progress)
    bar = progress_bar(total=run.end, initial=run.start, enabled=progress and run.rank == 0, desc="train", unit="step")
    run.model.train()
    t_last = time.perf_counter()
    if run.rank == 0:
        run.ref = reference_from_store(run.train_set.store_path, size=run.net.input_size, species=run.train_set.species)
    with _stop_on_signals(run):
        step = _loop(run, loader, targets, val_targets, logs, bar, t_last)
    bar.close()
    logs.close()
    return _finish(run, step)


def _setup(
    store,
    out_dir,
    *,
    net: NetworkConfig,
    cfg: TrainConfig,
    resume: bool,
    max_steps: int | None,
    restart: bool,
    device: str = "auto",
) -> _Run:
    """Check the settings, join the process group (world > 1), open the data, build the model,
    optimiser and schedule (seeded), and resume from ``out_dir/last.pt`` when asked and present
    (``restart``: only from one of exactly these settings and data, else start afresh)."""
    cfg.validate()
    net.validate()
    rank, world, local_rank = _dist_info()
    dev = _device(local_rank, device, world)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes")
    out = Path(out_dir)

    train_set = StoreSamples(store, "train")
    if rank == 0:
        for note in size_notes(net, train_set.attrs):
            print(f"note: {note}", file=sys.stderr)
    val_names = open_val_species(train_set)
    val_set = StoreSamples(store, "val", species=val_names) if val_names else None
    fingerprint = data_fingerprint(train_set)

    # every RNG a checkpoint records is seeded: two runs of the same settings write the same bytes
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model: torch.nn.Module = TomographyNet(net).set_memory_format(cfg.memory_format).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    run = _Run(
        net=net,
        cfg=cfg,
        rank=rank,
        world=world,
        local_rank=local_rank,
        device=dev,
        out=out,
        train_set=train_set,
        val_set=val_set,
        fingerprint=fingerprint,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        start=0,
        end=0,
        best=dict(val_loss=math.inf, step=0),
    )
    if resume and run.last.exists():
        _resume(run, restart=restart)
    if world > 1:
        run.model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    run.forward = torch.compile(run.model) if cfg.compile else run.model  # same parameters, same state_dict
    run.end = min(cfg.steps, max_steps) if max_steps is not None else cfg.steps
    return run


def _resume(run: _Run, *, restart: bool = False) -> None:
    """Continue from ``last.pt``: model, optimiser, schedule, RNG states, step, the best validation
    so far, the latest validation loss and (where deleted) ``best.pt`` and ``val_log.csv``. Made
    with other settings (``steps`` included) or data: ValueError naming what differs, or with
    ``restart`` a note on stderr and a fresh start."""
    last = run.last
    state = load_checkpoint(last, map_location=run.device)
    diffs = resume_differences(state, net=run.net.to_dict(), train=run.cfg.to_dict(), data=run.fingerprint)
    if diffs and restart:
        kept = _keep_superseded(run, int(state["step"])) if run.rank == 0 else None
        where = f" (the earlier run's files are kept in {kept})" if kept else ""
        print(
            f"note: {last} was made with other settings; starting afresh{where}:\n  " + "\n  ".join(diffs),
            file=sys.stderr,
        )
        return
    if diffs:
        raise ValueError(resume_refusal(last, diffs))
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    run.start = int(state["step"])
    m = state["metrics"]  # the latest and the best validation so far travel in last.pt
    run.val_loss = math.nan if m.get("val_loss") is None else float(m["val_loss"])
    _restore_outputs(run, state)
    if run.start:
        run.best.update({k: m[f"best_{k}"] for k in ("val_loss", "step") if m.get(f"best_{k}") is not None})
        if run.rank == 0 and run.start < run.cfg.steps:  # a finished run says so itself (_nothing_to_train)
            print(f"note: resuming {last} at step {run.start}", file=sys.stderr)


def _keep_superseded(run: _Run, step: int) -> Path:
    """Copy the run's ``last.pt`` (it holds ``best.pt``'s bytes too), ``best.pt`` and logs into
    ``OUT/superseded/step{step}-{UTC time}/`` before a fresh start overwrites them, so that a changed
    setting does not discard days of training (copies, not moves: other ranks may still read last.pt).
    Returns that folder."""
    when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = run.out / SUPERSEDED_DIR / f"step{step}-{when}"
    folder.mkdir(parents=True, exist_ok=True)
    for name in (TRAIN_LAST, TRAIN_BEST, TRAIN_LOG, TRAIN_VAL_LOG, TRAIN_SUMMARY):
        if (run.out / name).is_file():
            shutil.copy2(run.out / name, folder / name)
    return folder


def _restore_outputs(run: _Run, state: dict) -> None:
    """``best.pt`` as it was at ``last.pt``'s step where it is missing (a workflow deletes a job's
    declared outputs before it re-runs the job), and the val history :class:`TrainLogs` restores."""
    run.best_bytes = state.get("best_checkpoint")
    run.val_history = [r for r in state.get("val_history", []) if r["step"] <= run.start]
    if run.rank != 0:
        return
    best = run.best_bytes
    if best is not None and not run.best_path.exists():
        atomic_write(run.best_path, lambda tmp: Path(tmp).write_bytes(best))
        run.restored.append(run.best_path.name)
    elif not run.best_path.exists() and run.start >= run.cfg.steps:  # an older, finished last.pt: no bytes
        print(f"note: {run.last} carries no best.pt; best.pt is last.pt", file=sys.stderr)
        shutil.copyfile(run.last, run.best_path)


def _nothing_to_train(run: _Run) -> dict:
    """A re-run whose ``last.pt`` is already at the last step of this call (a finished run): no step,
    no log rewritten, ``val_log.csv`` restored where deleted; ``summary.json`` kept where it records
    ``last.pt``'s step and validation losses, else written again from them. Returns the summary."""
    path = run.out / TRAIN_SUMMARY
    best_step = run.best["step"] if run.val_set is not None else run.start  # _finish: no val, best is last
    kept = kept_summary(path, dict(step=run.start, val_loss=run.val_loss, best_step=best_step, stopped=None))
    if run.rank == 0 and restore_val_log(run.out, run.val_history):
        run.restored.append(TRAIN_VAL_LOG)
    summary = kept if kept is not None else _finish(run, run.start)
    if run.rank == 0:
        print(rerun_note(run.last, run.start, run.end, kept=kept is not None, restored=run.restored), file=sys.stderr)
    return summary
