"""The steps of a training run (:func:`model.train.train`): the run's state (:class:`_Run`), its batches,
the optimisation step, the logs, validation and model choice (``best.pt``), checkpoints, a stop on
SIGINT/SIGTERM after the current step, and the summary."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from tomodata.files import write_json

from .checkpoint import save_checkpoint
from .data import SpeciesVolumes, StoreSamples, batch_indices, loader_workers_context, resize_xrays
from .names import TRAIN_BEST, TRAIN_LAST, TRAIN_SUMMARY
from .network import NetworkConfig, count_parameters
from .train_logs import TrainLogs

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = ["evaluate_loss"]


def _amp_context(cfg: TrainConfig, device: torch.device):
    use = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    if use:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate_loss(
    model, dataset: StoreSamples, volumes: SpeciesVolumes, net: NetworkConfig, *, n: int, seed: int, batch: int, device
) -> float:
    """Mean voxel MSE over a fixed seeded subset of ``n`` samples of ``dataset``."""
    was_training = model.training
    model.eval()
    idx = np.random.default_rng([seed, 7]).permutation(len(dataset))[: min(n, len(dataset))]
    total, count = 0.0, 0
    for s in range(0, len(idx), batch):
        items = [dataset[int(i)] for i in idx[s : s + batch]]
        b = torch.utils.data.default_collate(items)
        x = resize_xrays(b["xray"].to(device), net.input_size)
        y = volumes.targets(b)
        pred = model(x).float()
        total += F.mse_loss(pred, y, reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / max(count, 1)


@dataclass
class _Run:
    """One call of :func:`model.train.train` while it runs: set up by :func:`model.train._setup`, then
    changed by its steps."""

    net: NetworkConfig
    cfg: TrainConfig
    rank: int  # this process's rank; only rank 0 writes
    world: int  # processes (DDP world size)
    local_rank: int
    device: torch.device
    out: Path  # the run folder
    train_set: StoreSamples
    val_set: StoreSamples | None  # the held-out species (split "val"); None: none complete
    fingerprint: dict  # data_fingerprint(train_set)
    model: torch.nn.Module  # DistributedDataParallel-wrapped with world > 1
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    start: int  # the step resumed from (0: a fresh start)
    end: int  # the last step of this call
    best: dict  # val_loss and step of best.pt so far
    val_loss: float = math.nan  # the latest validation loss
    ref: dict | None = None  # the training x-rays' summary for tomo infer's OOD check (rank 0)
    best_bytes: bytes | None = None  # best.pt as written (carried in last.pt)
    val_history: list = dataclasses.field(default_factory=list)  # val_log.csv's rows (carried in last.pt)
    stop: str = ""  # the signal that asked this run to stop after its current step
    forward: Any = None  # what the training step calls: model, or torch.compile(model) (cfg.compile)
    restored: list = dataclasses.field(default_factory=list)  # the outputs restored from last.pt
    reached: int = 0  # the last step done (set by _loop; model.train._train sets the start before it)

    @property
    def last(self) -> Path:
        return self.out / TRAIN_LAST

    @property
    def best_path(self) -> Path:
        return self.out / TRAIN_BEST

    @property
    def per_rank(self) -> int:  # samples of each global batch on this rank
        return self.cfg.batch_size // self.world


def _loop(run: _Run, loader, targets, val_targets, logs: TrainLogs, bar, t_last: float) -> int:
    """The steps ``start + 1 … end``: train, log, validate, checkpoint; after a stop request
    (:func:`_stop_on_signals`) ``last.pt`` at the step reached. Returns the last step done."""
    cfg, step = run.cfg, run.start
    losses: list[float] = []
    for step, batch in enumerate(loader, start=run.start + 1):
        losses.append(_train_step(run, targets, batch))
        run.reached = step
        bar.update(1)
        if step % cfg.log_every == 0 or step == run.end:
            t_last = _log_train(run, logs, bar, step, losses, t_last)
        if (
            run.val_set is not None
            and val_targets is not None
            and (step % cfg.val_every == 0 or step == run.end)
            and run.rank == 0
        ):
            _validate(run, run.val_set, val_targets, logs, step)
        if run.rank == 0 and (step % cfg.ckpt_every == 0 or step == run.end or run.stop):
            _save_checkpoints(run, step)
        if run.stop:
            print(
                f"[train] {run.stop}: stopped after step {step}; {run.last} written, run again to resume",
                file=sys.stderr,
            )
            break
    return step


@contextlib.contextmanager
def _stop_on_signals(run: _Run):
    """While training: SIGINT and SIGTERM (a cluster's time limit, Ctrl-C) ask ``run`` to stop
    after its current step (a second signal stops at once); the old handlers are put back after."""
    if run.world > 1 or threading.current_thread() is not threading.main_thread():  # DDP: the launcher's
        yield
        return

    def ask(signum, frame):
        if run.stop:
            raise KeyboardInterrupt(f"a second stop signal ({signal.Signals(signum).name})")
        run.stop = signal.Signals(signum).name

    old = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which stops after its step
    (:func:`_stop_on_signals`) and then shuts them down; a worker killed first would end training
    with a traceback and no checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _batches(run: _Run):
    """``(loader, targets, val_targets)``: this rank's share of the global batches of steps
    ``start + 1 … end`` (order: :func:`model.data.batch_indices`) and the view-volume targets."""
    net, cfg, device = run.net, run.cfg, run.device
    targets = SpeciesVolumes(run.train_set, device, size=net.out_size, steps=net.out_depth)
    val_targets = SpeciesVolumes(run.val_set, device, size=net.out_size, steps=net.out_depth) if run.val_set else None
    per_rank, rank = run.per_rank, run.rank
    sampler = [
        batch_indices(s, cfg.batch_size, len(run.train_set), cfg.seed)[rank * per_rank : (rank + 1) * per_rank].tolist()
        for s in range(run.start, run.end)
    ]
    loader = torch.utils.data.DataLoader(
        run.train_set,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        multiprocessing_context=loader_workers_context(cfg.num_workers),
        worker_init_fn=_ignore_stop_signals,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    return loader, targets, val_targets


def _train_step(run: _Run, targets: SpeciesVolumes, batch: dict) -> float:
    """One optimisation step on ``batch`` (L2 on the view volumes); its loss."""
    x = resize_xrays(batch["xray"].to(run.device, non_blocking=True), run.net.input_size)
    with torch.no_grad():
        y = targets.targets(batch)
    with _amp_context(run.cfg, run.device):
        pred = run.forward(x)
    loss = F.mse_loss(pred.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    run.scheduler.step()
    return loss.item()


def _log_train(run: _Run, logs: TrainLogs, bar, step: int, losses: list[float], t_last: float) -> float:
    """Log the mean loss of ``losses`` (then emptied), the learning rate and samples/s since
    ``t_last``; returns the time now (perf_counter seconds)."""
    now = time.perf_counter()
    n = len(losses)
    logs.log(
        "train",
        dict(
            step=step,
            loss=float(np.mean(losses)),
            lr=run.scheduler.get_last_lr()[0],
            samples_per_s=n * run.cfg.batch_size / max(now - t_last, 1e-9),
        ),
    )
    bar.set_postfix(loss=f"{np.mean(losses):.4g}")
    losses.clear()
    return now


def _validate(run: _Run, val_set: StoreSamples, val_targets: SpeciesVolumes, logs: TrainLogs, step: int) -> None:
    """Validation loss on the val split, logged; a new best is also written as ``best.pt`` (model
    choice on the val split only)."""
    run.val_loss = evaluate_loss(
        run.model.module if run.world > 1 else run.model,
        val_set,
        val_targets,
        run.net,
        n=run.cfg.val_samples,
        seed=run.cfg.seed,
        batch=run.per_rank,
        device=run.device,
    )
    logs.log("val", dict(step=step, val_loss=run.val_loss))
    run.val_history.append(dict(step=step, val_loss=run.val_loss))
    if run.val_loss < run.best["val_loss"]:  # model choice on the val split: keep the best checkpoint
        run.best = dict(val_loss=run.val_loss, step=step)
        _save(run, run.best_path, step)
        run.best_bytes = run.best_path.read_bytes()


def _save_checkpoints(run: _Run, step: int) -> None:
    """``last.pt`` (carrying ``best.pt`` and the val log), and ``step_XXXXXXX.pt`` with ``keep_checkpoints``."""
    _save(run, run.last, step, extra=dict(best_checkpoint=run.best_bytes, val_history=list(run.val_history)))
    if run.cfg.keep_checkpoints:
        _save(run, run.out / f"step_{step:07d}.pt", step)


def _save(run: _Run, path: Path, step: int, extra: dict | None = None) -> None:
    save_checkpoint(
        path,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        step=step,
        net=run.net,
        cfg=run.cfg,
        data=run.fingerprint,
        metrics=_metrics(run.val_loss, run.best),
        xray_reference=run.ref,
        extra=extra,
    )


def _finish(run: _Run, step: int) -> dict:
    """After the last step: ``best.pt`` = ``last.pt`` when there is no val split, wait for every
    rank, and write ``summary.json`` (rank 0); returns the summary."""
    if run.rank == 0 and run.val_set is None and run.last.exists() and not run.stop:  # no val: nothing to choose
        shutil.copyfile(run.last, run.best_path)
        run.best = dict(val_loss=math.nan, step=step)
    if run.world > 1:
        torch.distributed.barrier()
    summary = dict(
        step=step,
        start=run.start,
        val_loss=run.val_loss,
        parameters=count_parameters(run.model),
        device=str(run.device),
        world_size=run.world,
        checkpoint=str(run.last),
        best_checkpoint=str(run.best_path),
        best_step=run.best["step"],
        best_val_loss=run.best["val_loss"],
        model_choice=(
            "best.pt: the checkpoint with the lowest validation loss on the val split"
            if run.val_set is not None
            else "no val split: best.pt is last.pt"
        ),
        val_species=list(run.val_set.species) if run.val_set is not None else [],
        stopped=run.stop or None,
    )
    if run.rank == 0:
        write_json(run.out / TRAIN_SUMMARY, summary)
    return summary


def _metrics(val_loss: float, best: dict) -> dict:
    return dict(val_loss=val_loss, best_val_loss=best["val_loss"], best_step=best["step"])
