"""Guards of training (model.train, model.train_loop) and evaluation (model.eval_phases) that a mutation
hunt (helper-101) found untested: the schedule, the settings' checks, what a log row holds, the last
step's validation and checkpoint, the val loss, a run without a val split, a stop on a signal, each
rank's share of a batch, and the slice-count DSSIM's reference."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import signal
import threading
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_evaluate import build_split_store

from model import train as train_mod
from model import train_loop
from model.data import SpeciesVolumes, StoreSamples, batch_indices, resize_xrays
from model.eval_phases import _fuse_batch
from model.evaluate import EvalConfig, evaluate_run
from model.fusion import fuse
from model.network import NetworkConfig
from model.train import (
    TrainConfig,
    _device,
    _setup,
    load_checkpoint,
    lr_factor,
    model_from_checkpoint,
    size_notes,
    train,
)
from model.train_attempts import read_attempts
from model.train_loop import _batches, _ignore_stop_signals, evaluate_loss

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)
#: 5 steps: warm-up 2, a validation and a checkpoint at step 3 and (the last step) at 5, every step logged
CFG = TrainConfig(steps=5, batch_size=2, lr=3e-3, warmup_steps=2, val_every=3, val_samples=4, ckpt_every=3, log_every=1)


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _train(store, out, cfg=CFG, **kw) -> dict:
    return train(store, out, net=TINY, cfg=cfg, progress=False, device="cpu", **kw)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """2 training species, 1 val, 1 test; 4 views (8 samples) each, 32² x-rays, 32³ volumes."""
    return build_split_store(tmp_path_factory.mktemp("g") / "dataset.zarr", ("train", "train", "val", "test"), views=4)


@pytest.fixture(scope="module")
def noval(tmp_path_factory):
    """A store without val species: no model choice, best.pt is last.pt."""
    return build_split_store(tmp_path_factory.mktemp("nv") / "dataset.zarr", ("train", "train"), views=2)


def _run(store, root, name, **changes):
    """CFG's run with ``changes`` in ``root / name``."""
    _train(store, root / name, cfg=dataclasses.replace(CFG, **changes))
    return root / name


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def run_a(store, runs_root):
    """CFG's 5 steps, every step logged."""
    return _run(store, runs_root, "a")


@pytest.fixture(scope="module")
def run_b(store, runs_root):
    """The same 5 steps, every second step logged, the step checkpoints kept."""
    return _run(store, runs_root, "b", log_every=2, keep_checkpoints=True)


@pytest.fixture(scope="module")
def run_none(store, runs_root):
    """The same 5 steps with amp "none" (on the CPU "auto" is no autocast)."""
    return _run(store, runs_root, "none", amp="none")


# ------------------------------------------------------------------------------------------ settings
def test_lr_factor_warms_up_linearly_then_decays_by_a_cosine_to_min_lr_ratio():
    """lr_factor: linear warm-up to 1, then cosine decay to min_lr_ratio at cfg.steps (and there after)."""
    cfg = TrainConfig(steps=10, warmup_steps=4, min_lr_ratio=0.1)
    warm = [lr_factor(s, cfg) for s in range(4)]
    assert warm[0] > 0  # the first step learns
    assert np.allclose(np.diff(warm), warm[1] - warm[0]) and warm[-1] == pytest.approx(1.0)  # linear, to 1
    assert lr_factor(4, cfg) == pytest.approx(1.0)  # the cosine starts at 1
    decay = [lr_factor(s, cfg) for s in range(4, 11)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert lr_factor(7, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay: the midpoint
    for s in (10, 11, 50):
        assert lr_factor(s, cfg) == pytest.approx(0.1)
    assert lr_factor(0, dataclasses.replace(cfg, warmup_steps=0)) == pytest.approx(1.0)  # no warm-up


@pytest.mark.parametrize("name", ["steps", "batch_size", "val_every", "ckpt_every", "log_every", "val_samples"])
def test_each_count_must_be_positive(name):
    with pytest.raises(ValueError, match=f"{name} must be > 0, got 0"):
        TrainConfig(**{name: 0}).validate()


def test_bad_rates_workers_and_unknown_settings_are_refused():
    for lr in (0.0, -1e-3, math.nan, math.inf):
        with pytest.raises(ValueError, match="lr must be a positive number"):
            TrainConfig(lr=lr).validate()
    for name in ("warmup_steps", "num_workers"):
        with pytest.raises(ValueError, match="must be >= 0"):
            TrainConfig(**{name: -1}).validate()
    with pytest.raises(ValueError, match=r"unknown training settings \['bogus'\]"):
        TrainConfig.from_dict(TrainConfig().to_dict() | {"bogus": 1})


def test_train_checks_its_settings_before_writing(store, tmp_path):
    with pytest.raises(ValueError, match="steps must be > 0"):
        _train(store, tmp_path, cfg=dataclasses.replace(CFG, steps=0))
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "train_log.csv").exists()


def test_a_network_deeper_than_the_volumes_is_noted(store):
    """The output is compared by its depth too: 64 slices from 32³ volumes are interpolated."""
    notes = size_notes(dataclasses.replace(TINY, out_depth=64), StoreSamples(store, "train").attrs)
    assert len(notes) == 1 and "output (64 x 16²) is larger than the store's volumes (32³)" in notes[0]


def test_one_process_may_name_a_gpu():
    """cuda:N is refused only with several processes (each takes its local rank's GPU)."""
    try:
        _device(0, "cuda:0", world=1)
    except ValueError as e:  # no CUDA here: refused for that, not for sharing a GPU
        assert "same GPU" not in str(e) and "torch sees no CUDA device" in str(e)


# ------------------------------------------------------------------------------------------ the steps
def test_logged_lr_follows_the_schedule(run_a):
    rows = _rows(run_a / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    for r in rows:  # after step s the scheduler has stepped s times
        assert float(r["lr"]) == pytest.approx(CFG.lr * lr_factor(int(r["step"]), CFG), rel=1e-9), r


def test_a_log_row_is_the_mean_loss_since_the_previous_row_and_the_last_step_is_logged(run_a, run_b):
    """log_every changes no weight: each row of a run logging every second step is the mean of the
    per-step losses since the row before; the last step is logged although 5 is odd."""
    each = {int(r["step"]): float(r["loss"]) for r in _rows(run_a / "train_log.csv")}
    rows = _rows(run_b / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 5]
    for r, window in zip(rows, ([1, 2], [3, 4], [5])):
        assert float(r["loss"]) == pytest.approx(np.mean([each[s] for s in window]), rel=1e-9), r


def test_the_last_step_is_validated_and_checkpointed(run_a):
    """val_every = ckpt_every = 3 of 5 steps: steps 3 and 5 validated, last.pt at step 5."""
    assert [int(r["step"]) for r in _rows(run_a / "val_log.csv")] == [3, 5]
    assert load_checkpoint(run_a / "last.pt")["step"] == 5
    summary = json.loads((run_a / "summary.json").read_text())
    assert summary["step"] == 5 and summary["best_step"] in (3, 5) and summary["stopped"] is None


def test_step_checkpoints_only_with_keep_checkpoints(run_a, run_b):
    assert not list(run_a.glob("step_*.pt"))
    assert sorted(p.name for p in run_b.glob("step_*.pt")) == ["step_0000003.pt", "step_0000005.pt"]
    assert load_checkpoint(run_b / "step_0000003.pt")["step"] == 3


def test_amp_auto_is_no_autocast_on_the_cpu(run_a, run_none):
    """amp "auto": bf16 autocast on CUDA, none on the CPU: the same losses and weights as "none"."""
    assert [r["loss"] for r in _rows(run_a / "train_log.csv")] == [r["loss"] for r in _rows(run_none / "train_log.csv")]
    a, b = load_checkpoint(run_a / "last.pt")["model"], load_checkpoint(run_none / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_training_loss_is_the_voxel_mse_of_the_first_batch(store, run_a, tmp_path):
    """Step 1's logged loss: the voxel MSE (L2) of the initial network on batch 0 of the (seed, step)
    order (model.data.batch_indices) against its view volumes."""
    run = _setup(store, tmp_path, net=TINY, cfg=CFG, resume=False, max_steps=None, restart=False, device="cpu")
    ds = StoreSamples(store, "train")
    batch = torch.utils.data.default_collate([ds[int(i)] for i in batch_indices(0, CFG.batch_size, len(ds), CFG.seed)])
    y = SpeciesVolumes(ds, "cpu", size=TINY.out_size, steps=TINY.out_depth).targets(batch)
    run.model.train()
    with torch.no_grad():
        want = F.mse_loss(run.model(resize_xrays(batch["xray"], TINY.input_size)).float(), y).item()
    got = float(_rows(run_a / "train_log.csv")[0]["loss"])
    assert got == pytest.approx(want, rel=1e-5)


def test_validation_loss_is_the_mean_voxel_mse_in_eval_mode(store, run_a):
    """evaluate_loss: the mean voxel MSE of the network in eval mode (batch norm's running statistics),
    its mode put back after; the val log holds it for val_samples samples at the checkpoint's weights."""
    val = StoreSamples(store, "val")
    targets = SpeciesVolumes(val, "cpu", size=TINY.out_size, steps=TINY.out_depth)
    model, _ = model_from_checkpoint(run_a / "last.pt", map_location="cpu")
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(val)):
            b = torch.utils.data.default_collate([val[i]])
            y = targets.targets(b)
            total += float(((model(resize_xrays(b["xray"], TINY.input_size)).double() - y.double()) ** 2).sum())
            count += y.numel()
    model.train()
    got = evaluate_loss(model, val, targets, TINY, n=len(val), seed=0, batch=3, device=torch.device("cpu"))
    assert got == pytest.approx(total / count, rel=1e-5)
    assert model.training  # put back
    # the val log's last row: the same quantity over the fixed subset of val_samples samples
    logged = float(_rows(run_a / "val_log.csv")[-1]["val_loss"])
    subset = evaluate_loss(model, val, targets, TINY, n=CFG.val_samples, seed=CFG.seed, batch=1, device="cpu")
    assert logged == pytest.approx(subset, rel=1e-5) and subset != pytest.approx(got, rel=1e-5)


def test_a_summary_written_again_has_the_latest_and_the_best_val_loss(store, tmp_path):
    """summary.json's val_loss is the latest validation, best_val_loss and best_step best.pt's; a
    finished run whose summary.json was deleted writes them again from last.pt."""
    cfg = dataclasses.replace(CFG, steps=4, batch_size=4, lr=1e-2, warmup_steps=1, val_every=2, val_samples=8)
    first = _train(store, tmp_path, cfg=cfg)
    val = {int(r["step"]): float(r["val_loss"]) for r in _rows(tmp_path / "val_log.csv")}
    assert first["best_step"] != first["step"]  # the premise: the last validation is not the best
    assert first["val_loss"] == pytest.approx(val[first["step"]], rel=1e-12)
    assert first["best_step"] == min(val, key=val.get)
    assert first["best_val_loss"] == pytest.approx(min(val.values()), rel=1e-12)
    (tmp_path / "summary.json").unlink()
    again = _train(store, tmp_path, cfg=cfg)
    for key in ("step", "val_loss", "best_step", "best_val_loss"):
        assert again[key] == pytest.approx(first[key], rel=1e-12), key


def test_the_checkpoint_bytes_do_not_depend_on_the_global_rngs_before_training(noval, tmp_path):
    """Every RNG a checkpoint records is seeded from cfg.seed: a second run after other code drew from
    (or seeded) torch's, NumPy's and Python's global generators writes the same last.pt."""
    one = dataclasses.replace(CFG, steps=1, val_every=1, ckpt_every=1)
    _train(noval, tmp_path / "a", cfg=one)
    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    _train(noval, tmp_path / "b", cfg=one)
    assert (tmp_path / "a" / "last.pt").read_bytes() == (tmp_path / "b" / "last.pt").read_bytes()


def test_weight_decay_reaches_the_optimiser(noval, tmp_path):
    one = dataclasses.replace(CFG, steps=1, val_every=1, ckpt_every=1)
    _train(noval, tmp_path / "a", cfg=one)
    _train(noval, tmp_path / "b", cfg=dataclasses.replace(one, weight_decay=0.5))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt")["model"], load_checkpoint(tmp_path / "b" / "last.pt")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- no val split
def test_without_a_val_split_best_is_last_and_a_rerun_keeps_the_summary(noval, tmp_path, capsys):
    short = dataclasses.replace(CFG, steps=2, val_every=2, ckpt_every=2)
    first = _train(noval, tmp_path, cfg=short, max_steps=7)  # max_steps past the end: the run's length
    assert first["step"] == 2 and first["best_step"] == 2 and math.isnan(first["best_val_loss"])
    assert first["model_choice"] == "no val split: best.pt is last.pt" and first["val_species"] == []
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    before = (tmp_path / "summary.json").read_bytes()
    capsys.readouterr()
    again = _train(noval, tmp_path, cfg=short)
    assert "nothing to train; summary.json left as it was" in capsys.readouterr().err
    assert (tmp_path / "summary.json").read_bytes() == before and again["best_step"] == 2
    fresh = _train(noval, tmp_path, cfg=dataclasses.replace(short, steps=3), resume=False)  # not refused
    assert fresh["start"] == 0 and fresh["step"] == 3


def test_a_stop_signal_writes_last_at_that_step_and_no_best(noval, tmp_path, monkeypatch):
    """SIGTERM during step 2 of 4 (ckpt_every past the end): last.pt at step 2, summary and attempt
    say stopped, and, no run having finished, no best.pt; run again it finishes, best.pt = last.pt."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set on the main thread only")
    real = train_loop._train_step

    def step(run, targets, batch):
        loss = real(run, targets, batch)
        if run.reached == 1:  # during step 2
            signal.raise_signal(signal.SIGTERM)
        return loss

    def unhandled(signum, frame):
        raise RuntimeError("training set no SIGTERM handler")

    monkeypatch.setattr(train_loop, "_train_step", step)
    cfg = dataclasses.replace(CFG, steps=4, val_every=4, ckpt_every=100)
    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        stopped = _train(noval, tmp_path, cfg=cfg)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert stopped["step"] == 2 and stopped["stopped"] == "SIGTERM"
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2 and not (tmp_path / "best.pt").exists()
    assert read_attempts(tmp_path)[-1]["status"] == "stopped: SIGTERM"
    monkeypatch.undo()
    done = _train(noval, tmp_path, cfg=cfg)
    assert (done["start"], done["step"], done["stopped"]) == (2, 4, None)
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()


# ------------------------------------------------------------------------------------ batches, ranks
def test_each_rank_takes_its_share_of_every_global_batch(store):
    """Two processes: rank r takes samples [2r, 2r + 2) of each global batch of 4 of steps start + 1 …
    end (their order: batch_indices of steps start … end - 1); the loader's workers ignore stop signals."""
    ds = StoreSamples(store, "train")
    cfg = dataclasses.replace(CFG, batch_size=4, seed=3)
    shares = []
    for rank in (0, 1):
        run = types.SimpleNamespace(
            net=TINY,
            cfg=cfg,
            device=torch.device("cpu"),
            train_set=ds,
            val_set=None,
            per_rank=2,
            rank=rank,
            start=2,
            end=5,
        )
        loader, _, val_targets = _batches(run)
        assert val_targets is None and loader.worker_init_fn is _ignore_stop_signals
        shares.append(list(loader.batch_sampler))
    want = [batch_indices(s, 4, len(ds), 3).tolist() for s in range(2, 5)]
    assert [a + b for a, b in zip(*shares)] == want


def test_a_batch_that_the_processes_cannot_share_is_refused(store, tmp_path, monkeypatch):
    """Under torchrun each of the N processes takes batch_size / N samples of every global batch: a
    batch_size that N does not divide is refused before any step (here as rank 0 of 2 processes)."""
    monkeypatch.setattr(train_mod, "_dist_info", lambda: (0, 2, 0))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match="batch_size 3 must be divisible by the 2 processes"):
        _setup(
            store,
            tmp_path,
            net=TINY,
            cfg=dataclasses.replace(CFG, batch_size=3),
            resume=False,
            max_steps=None,
            restart=False,
            device="cpu",
        )


def test_loader_workers_ignore_stop_signals():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set on the main thread only")
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        _ignore_stop_signals(0)
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in old)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("ck")
    _train(store, out, cfg=dataclasses.replace(CFG, steps=1, val_every=1, ckpt_every=1))
    return out / "last.pt"


def test_slice_count_dssim_compares_a_method_with_its_own_render(store, checkpoint, tmp_path):
    """The slice-count DSSIM is between the renders of the depth-resampled volume and of the volume
    itself: a prediction of all ones (output bias +5, as densities) is the same at every slice count."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["model"]["out.bias"] = torch.full_like(state["model"]["out.bias"], 5.0)
    torch.save(state, tmp_path / "bright.pt")
    cfg = EvalConfig(
        store, tmp_path / "bright.pt", tmp_path / "e", methods=("ours_nofusion",), slice_counts=(4,), max_samples=2
    )
    summary = evaluate_run(cfg)
    rows = {r["method"]: r for r in _rows(tmp_path / "e" / "slice_counts.csv")}
    assert set(rows) == {"truth", "ours_nofusion"} and float(rows["ours_nofusion"]["dssim_mean"]) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(rows["truth"]["dssim_mean"]) > 0  # the truth has depth structure
    # dssim_gauss is SSIM with the 11x11 Gaussian window, not dssim's 7x7 uniform one
    metrics = _rows(tmp_path / "e" / "metrics.csv")
    assert len(metrics) == 2 and all(r["dssim"] != r["dssim_gauss"] for r in metrics)
    # the per-batch phases are timed in summary.json
    assert {"network_s", "truth_views_s", "render_and_ssim_s", "predict_and_metrics_s"} <= set(summary["timings"])


def test_fusion_at_the_xray_fuses_at_its_resolution_with_the_given_beta():
    """fusion_at="xray": 'ours' is fused (with the evaluation's beta) at the x-ray's own resolution,
    then area-averaged laterally down to the output size (model.evaluate's docstring)."""
    rng = np.random.default_rng(2)
    raw = torch.from_numpy(rng.random((2, 8, 6, 6)).astype(np.float32) * 0.3)
    xr = rng.random((2, 12, 12)).astype(np.float32) * 0.9
    for beta in (1.0, 5.0):
        got = _fuse_batch(raw, xr, size=6, fusion_at="xray", beta=beta, chi=10.0).numpy()
        fused = [fuse(raw[i].numpy(), xr[i], beta=beta, chi=10.0) for i in range(2)]  # (8, 12, 12) each
        want = np.stack([f.reshape(8, 6, 2, 6, 2).mean((2, 4)) for f in fused])
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_store_without_training_species_is_refused(checkpoint, tmp_path):
    other = build_split_store(tmp_path / "nt.zarr", ("val", "test"), views=2, size=16)
    with pytest.raises(ValueError, match="has no 'train' species"):
        evaluate_run(EvalConfig(other, checkpoint, tmp_path / "x", max_samples=2))
