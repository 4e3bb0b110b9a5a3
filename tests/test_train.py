"""Training data (targets on the fly, deterministic order), training, exact resume, DDP, the CLI."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_workflow import BIN
from tiny_runs import TINY_NET, build_demo, demo_args, train_args

from model.checkpoint import data_differences, data_fingerprint
from model.cli import main
from model.data import (
    GlobalIndex,
    SpeciesVolumes,
    StoreSamples,
    batch_indices,
    bench_loader,
    loader_workers_context,
    torch_view_volumes,
)
from model.infer import infer_file
from model.network import NetworkConfig
from model.ood import FEATURES, ood_check
from model.train import TrainConfig, _device, load_checkpoint, model_from_checkpoint, size_notes, train
from model.train_attempts import read_attempts
from model.train_loop import _stop_on_signals
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import view_volumes
from tomodata.store import open_store
from tomodata.store_markers import _shard_index
from tomodata.views import hemisphere_views

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    build_demo(out, species=4, held_out=1, views=6)
    return out / "dataset.zarr"


def test_torch_view_volumes_equal_renderer():
    vol = skull_volume(species_params(3), size=48)
    rots = hemisphere_views(5, seed=8)
    ref = view_volumes(vol, rots, size=40, steps=48, backend="cpu")
    vols = torch.from_numpy(vol)[None, None].expand(5, 1, 48, 48, 48)
    got = torch_view_volumes(vols, torch.from_numpy(rots), size=40, steps=48)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)
    mir = torch_view_volumes(
        vols, torch.from_numpy(rots), size=40, steps=48, mirrored=torch.tensor([1, 0, 1, 0, 1]).bool()
    )
    np.testing.assert_allclose(mir[0].numpy(), ref[0][:, ::-1, :], atol=1e-5)
    np.testing.assert_allclose(mir[1].numpy(), ref[1], atol=1e-5)
    # a non-cubic random volume: zero padding and the cube's boundary agree too
    rnd = np.random.default_rng(0).random((10, 12, 14)).astype(np.float32)
    got = torch_view_volumes(
        torch.from_numpy(rnd)[None, None].expand(5, 1, 10, 12, 14), torch.from_numpy(rots), size=16, steps=12
    )
    np.testing.assert_allclose(got.numpy(), view_volumes(rnd, rots, size=16, steps=12, backend="cpu"), atol=1e-5)


def test_torch_view_volumes_bits_kept():
    """The training target's bits: the CPU sampler (model/_sample_cpu.py, ATen's float32 arithmetic
    fused with the mask) and the cached camera grid give exactly the values of the plain formula
    (grid per call, einsum in float64, grid_sample, mask from float64), signs of zeros included. The
    plain formula mirrors by negating the camera's v axis; torch_view_volumes reverses the rows
    (tomodata.views.mirror): the two agree bit for bit."""

    def plain(volumes, rotations, size, steps, mirrored):
        rot = rotations.to(torch.float64).clone()
        rot[:, :, 1] = rot[:, :, 1] * (1.0 - 2.0 * mirrored.to(torch.float64))[:, None]
        uv = (2.0 * torch.arange(size, dtype=torch.float64) + 1.0) / size - 1.0
        w = (2.0 * torch.arange(steps, dtype=torch.float64) + 1.0) / steps - 1.0
        ww, vv, uu = torch.meshgrid(w, uv, uv, indexing="ij")
        pts = torch.einsum("bij,kmnj->bkmni", rot, torch.stack([uu, vv, ww], dim=-1))
        inside = (pts.abs() <= 1.0).all(dim=-1)
        out = F.grid_sample(volumes.float(), pts.float(), mode="bilinear", padding_mode="zeros", align_corners=False)
        return out[:, 0] * inside.to(out.dtype)

    rng = np.random.default_rng(5)
    rots = torch.from_numpy(hemisphere_views(6, seed=2))
    mir = torch.tensor([0, 1, 0, 1, 1, 0]).bool()
    for shape, size, steps in [((20, 20, 20), 24, 20), ((10, 12, 14), 16, 12), ((33, 17, 25), 20, 9)]:
        vols = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))[None, None].expand(6, 1, *shape)
        for _ in range(2):  # the second call reads the cached grid
            got = torch_view_volumes(vols, rots, size=size, steps=steps, mirrored=mir)
            want = plain(vols, rots, size, steps, mir)
            assert torch.equal(got, want)
            assert torch.equal(torch.signbit(got), torch.signbit(want))
    # one volume per item (no expand), on a larger grid
    vols = torch.from_numpy(rng.random((6, 1, 48, 40, 44)).astype(np.float32))
    assert torch.equal(
        torch_view_volumes(vols, rots, size=50, steps=46), plain(vols, rots, 50, 46, torch.zeros(6).bool())
    )
    # picked by index from fewer volumes (the training's species volumes, read in place): the same bits
    # as the gathered batch; an index out of range is an error, not a read past the array
    pick = torch.tensor([2, 0, 2, 1, 0, 2])
    want = torch_view_volumes(vols[:3][pick], rots, size=20, steps=9, mirrored=mir)
    assert torch.equal(torch_view_volumes(vols[:3], rots, size=20, steps=9, mirrored=mir, index=pick), want)
    for bad in (torch.tensor([0, 1, 2, 3, 0, 0]), torch.tensor([0, -1, 0, 0, 0, 0])):
        with pytest.raises(ValueError, match="index must be"):
            torch_view_volumes(vols[:3], rots, size=20, steps=9, index=bad)
    with pytest.raises(ValueError, match="rotations must be"):
        torch_view_volumes(vols[:3], rots, size=20, steps=9, index=pick[:4])


def test_global_index_joins_and_splits_species_and_samples():
    gi = GlobalIndex(3, 8)
    assert len(gi) == 24 and gi.of(2, 5) == 21
    s, j = gi.locate(np.array([[0, 7], [8, 23]]))
    assert s.tolist() == [[0, 0], [1, 2]] and j.tolist() == [[0, 7], [0, 7]]
    assert all(gi.of(int(a), int(b)) == g for g, a, b in zip(range(24), *gi.locate(np.arange(24))))
    for bad in (-1, 24):
        with pytest.raises(IndexError):
            gi.locate(bad)
    for sp, smp in ((3, 0), (0, 8), (-1, 0)):
        with pytest.raises(IndexError):
            gi.of(sp, smp)


def test_batch_order_is_deterministic_and_covers_epochs():
    n, b = 10, 4
    seq = np.concatenate([batch_indices(s, b, n, seed=3) for s in range(5)])  # 20 = 2 epochs
    assert sorted(seq[:10]) == list(range(10)) and sorted(seq[10:]) == list(range(10))
    assert not np.array_equal(seq[:10], seq[10:])  # a new permutation each epoch
    assert np.array_equal(batch_indices(3, b, n, seed=3), seq[12:16])
    assert not np.array_equal(batch_indices(0, b, n, seed=4), seq[:4])


def test_store_samples(store):
    ds = StoreSamples(store, "train")
    assert len(ds) == 3 * 12 and ds.species == ["procedural_00", "procedural_01", "procedural_02"]
    st = open_store(store)
    item = ds[13]  # species 1, sample 1 = view 0 mirrored
    assert item["species"] == 1 and item["view"] == 0 and item["mirrored"]
    np.testing.assert_array_equal(item["xray"][0].numpy(), st.images("procedural_01", 1))
    np.testing.assert_array_equal(item["rotation"].numpy(), st.rotations("procedural_01")[0])
    # the target of a sample equals the store's own on-the-fly view volume
    vols = SpeciesVolumes(ds, "cpu", size=16, steps=32)
    batch = torch.utils.data.default_collate([ds[13], ds[4]])
    tgt = vols.targets(batch)
    ref = st.sample("procedural_01", 1, view_size=16, backend="cpu").view_volume
    np.testing.assert_allclose(tgt[0].numpy(), ref, atol=1e-5)
    with pytest.raises(ValueError, match="no species"):
        StoreSamples(store, "test")


def test_data_fingerprint_names_per_species_views(store, tmp_path):
    """A shared store's fingerprint has no view_sets (that of a store made before per-species views, so
    old checkpoints resume); a per-species one names it, a resume check says so, and a checkpoint that
    predates the key is compared without it."""
    other = tmp_path / "psv"
    args = [*demo_args(species=4, held_out=1, views=6), "--view-sets", "per_species"]
    assert main(["build-demo", "-o", str(other), *args]) == 0
    shared = data_fingerprint(StoreSamples(store, "train"))
    own = data_fingerprint(StoreSamples(other / "dataset.zarr", "train"))
    assert "view_sets" not in shared and own["view_sets"] == "per_species"
    assert "data.view_sets: 'per_species' (checkpoint) != 'shared' (now)" in data_differences(own, shared)
    assert any(d.startswith("data.content") for d in data_differences(shared, own))
    older = {k: v for k, v in own.items() if k != "view_sets"}  # a per-species checkpoint before the key
    assert data_differences(older, own) == []  # still resumes and evaluates; content tells stores apart
    assert any(d.startswith("data.content") for d in data_differences(older, shared))


def test_a_species_lacking_a_data_file_is_refused(store, tmp_path):
    """A complete species whose shard file is gone would read as zeros (zarr's fill value): training
    and evaluation refuse it, naming the species and the file."""
    damaged = tmp_path / "dataset.zarr"
    shutil.copytree(store, damaged)
    (damaged / "species" / "procedural_01" / "images" / "c" / "0" / "0" / "0").unlink()
    with pytest.raises(ValueError, match=r"lack data files.*procedural_01: array images lacks its data file c/0/0/0"):
        StoreSamples(damaged, "train")
    StoreSamples(damaged, "train", species=["procedural_00"])  # the others are whole
    with pytest.raises(ValueError, match="procedural_01: array images lacks"):
        open_store(damaged).require_complete(["procedural_00", "procedural_01"])
    shard = damaged / "species" / "procedural_00" / "images" / "c" / "0" / "0" / "0"
    data = shard.read_bytes()
    shard.write_bytes(bytes(len(data)))  # every file there, its contents zeros (its index too): refused up front
    with pytest.raises(
        ValueError, match=r"procedural_00: array images has a damaged data file c/0/0/0: its shard index"
    ):
        StoreSamples(damaged, "train", species=["procedural_00"])
    index = _shard_index(json.loads((shard.parents[3] / "zarr.json").read_text())).nbytes
    shard.write_bytes(bytes(len(data) - index) + data[-index:])  # the chunks zeros under a sound index: read fails
    with pytest.raises(RuntimeError, match=r"species procedural_00, samples 0: cannot be read .* tomo validate"):
        StoreSamples(damaged, "train", species=["procedural_00"])[0]


def test_loader_with_spawned_workers(store):
    ds = StoreSamples(store, "train")
    sampler = [batch_indices(s, 4, len(ds), 0).tolist() for s in range(3)]
    dl = torch.utils.data.DataLoader(
        ds, batch_sampler=sampler, num_workers=1, multiprocessing_context=loader_workers_context(1)
    )
    got = [b["index"].tolist() for b in dl]
    assert got == sampler
    assert bench_loader(store, batch=4, batches=3) > 0


def _losses(run: Path) -> list[str]:
    with open(run / "train_log.csv", newline="") as fh:
        return [r["loss"] for r in csv.DictReader(fh)]


def test_training_lowers_loss_and_resumes_exactly(store, tmp_path):
    cfg = TrainConfig(
        steps=8, batch_size=4, lr=3e-3, warmup_steps=1, val_every=4, val_samples=8, ckpt_every=3, log_every=1
    )
    full = train(store, tmp_path / "full", net=TINY, cfg=cfg, resume=False, progress=False)
    assert full["step"] == 8
    losses = [float(x) for x in _losses(tmp_path / "full")]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    # stop at step 3 (a checkpoint), resume: the next losses are bit-identical
    part = train(store, tmp_path / "part", net=TINY, cfg=cfg, resume=False, max_steps=3, progress=False)
    assert part["step"] == 3 and load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 3
    rest = train(store, tmp_path / "part", net=TINY, cfg=cfg, resume=True, progress=False)
    assert rest["start"] == 3 and rest["step"] == 8
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a second run from scratch writes the same checkpoint bytes (every RNG it records is seeded)
    train(store, tmp_path / "again", net=TINY, cfg=cfg, resume=False, progress=False)
    for name in ("last.pt", "best.pt"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    assert (tmp_path / "full" / "val_log.csv").read_text().count("\n") == 3  # header + steps 4, 8
    assert any((tmp_path / "full" / "tensorboard").iterdir())
    model, state = model_from_checkpoint(tmp_path / "full" / "last.pt")
    assert not model.training and state["network"] == TINY.to_dict()


def test_best_checkpoint_is_chosen_on_val(store, tmp_path):
    """best.pt is the checkpoint of the lowest val-split loss (model choice), kept across a resume."""
    cfg = TrainConfig(
        steps=6, batch_size=4, lr=3e-3, warmup_steps=1, val_every=2, val_samples=8, ckpt_every=2, log_every=1
    )
    part = train(store, tmp_path / "r", net=TINY, cfg=cfg, resume=False, max_steps=4, progress=False)
    full = train(store, tmp_path / "r", net=TINY, cfg=cfg, resume=True, progress=False)
    with open(tmp_path / "r" / "val_log.csv", newline="") as fh:
        val = {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(fh)}
    assert sorted(val) == [2, 4, 6]
    best_step = min(val, key=val.get)
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["step"] == best_step == full["best_step"] and best["metrics"]["val_loss"] == val[best_step]
    assert part["best_step"] == min((s for s in val if s <= 4), key=val.get)
    assert full["val_species"] == ["procedural_03"] and "val split" in full["model_choice"]
    model, _ = model_from_checkpoint(tmp_path / "r" / "best.pt")  # an ordinary checkpoint
    assert not model.training


def test_workflow_resume_restores_deleted_outputs_and_restarts_on_change(store, tmp_path, capsys):
    """The workflow's mode (restart_if_changed): a re-run job resumes from last.pt, restoring best.pt and
    val_log.csv (Snakemake deletes a job's declared outputs before re-running it); with
    other settings (another step count too) or other data it starts afresh instead of refusing."""
    cfg = TrainConfig(
        steps=8, batch_size=4, lr=3e-3, warmup_steps=1, val_every=2, val_samples=8, ckpt_every=5, log_every=1
    )
    full = tmp_path / "full"
    train(store, full, net=TINY, cfg=cfg, resume=False, progress=False)
    part = tmp_path / "part"
    train(store, part, net=TINY, cfg=cfg, resume=False, max_steps=5, progress=False)
    for name in ("best.pt", "val_log.csv"):
        (part / name).unlink()
    rest = train(store, part, net=TINY, cfg=cfg, progress=False, restart_if_changed=True)
    assert rest["start"] == 5 and rest["step"] == 8 and rest["stopped"] is None
    assert _losses(part) == _losses(full)
    for name in ("best.pt", "last.pt"):  # the same weights (the RNG states differ: a new DataLoader draws a seed)
        a, b = load_checkpoint(part / name), load_checkpoint(full / name)
        assert a["step"] == b["step"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), name
    full_val = (full / "val_log.csv").read_text().splitlines()
    assert set(full_val) <= set((part / "val_log.csv").read_text().splitlines())  # + step 5, where part stopped
    # another step count: a fresh start, saying what differs (the CLI without the flag refuses); the
    # earlier run's files are kept (helper-77: they were overwritten, days of training at paper scale)
    before = {n: (part / n).read_bytes() for n in ("last.pt", "best.pt", "train_log.csv", "val_log.csv")}
    again = train(store, part, net=TINY, cfg=dataclasses.replace(cfg, steps=6), progress=False, restart_if_changed=True)
    assert again["start"] == 0 and again["step"] == 6
    err = capsys.readouterr().err
    assert "starting afresh (the earlier run's files are kept in " in err, err
    (kept,) = (part / "superseded").iterdir()
    assert kept.name.startswith("step8-") and {n: (kept / n).read_bytes() for n in before} == before


def test_training_stops_on_sigterm_with_a_checkpoint_and_resumes(store, tmp_path):
    """SIGTERM (a cluster's time limit) stops tomo train after its current step with last.pt written
    and exit status 130; the job run again continues from that step."""
    out = tmp_path / "run"
    args = [str(BIN / "tomo"), "train", str(store), "-o", str(out), *TINY_NET, "--steps", "100000"]
    args += ["--batch-size", "2", "--warmup", "0", "--val-every", "100000", "--ckpt-every", "100000"]
    args += ["--log-every", "1", "--restart-if-changed"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_tiny_env())
    deadline = time.monotonic() + 240
    while not (out / "train_log.csv").is_file() or (out / "train_log.csv").read_text().count("\n") < 4:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "SIGTERM: stopped after step" in err and "Traceback" not in err
    stopped = load_checkpoint(out / "last.pt")["step"]
    assert stopped >= 3
    r = subprocess.run([*args, "--max-steps", str(stopped + 2)], capture_output=True, text=True, env=_tiny_env())
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["start"] == stopped and summary["step"] == stopped + 2 and summary["stopped"] is None
    # the folder's history outlives the job's log (Snakemake deletes it before the job runs again)
    rows = [(r["event"], r.get("from_step"), r.get("status"), r.get("step")) for r in read_attempts(out)]
    assert rows == [
        ("start", 0, None, None),
        ("end", None, "stopped: SIGTERM", stopped),
        ("start", stopped, None, None),
        ("end", None, "finished", stopped + 2),
    ]
    assert "previous attempt" not in r.stderr  # a stop on a signal is not a failure


def test_a_second_stop_signal_stops_at_once_naming_it():
    """The first SIGTERM/SIGINT asks training to stop after its step; a second raises at once, and the
    tomo command's log line names it (tomodata.cli.run)."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set on the main thread only")
    run, before = types.SimpleNamespace(world=1, stop=None), signal.getsignal(signal.SIGTERM)
    with _stop_on_signals(run):
        signal.raise_signal(signal.SIGTERM)
        assert run.stop == "SIGTERM"
        with pytest.raises(KeyboardInterrupt, match=r"^a second stop signal \(SIGINT\)$"):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before and run.stop == "SIGTERM"  # the old handlers are back


def _tiny_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1")


def test_resume_refuses_other_settings(store, tmp_path):
    cfg = TrainConfig(steps=2, batch_size=2, warmup_steps=0, val_every=2, val_samples=2, ckpt_every=1, log_every=1)
    train(store, tmp_path, net=TINY, cfg=cfg, resume=False, progress=False)
    other = NetworkConfig.from_dict(TINY.to_dict() | {"width": 24})
    with pytest.raises(ValueError, match="network.width: 16 .* 24"):
        train(store, tmp_path, net=other, cfg=cfg, progress=False)
    with pytest.raises(ValueError, match="train.lr"):
        train(store, tmp_path, net=TINY, cfg=TrainConfig(**(cfg.to_dict() | {"lr": 0.5})), progress=False)


def test_compiled_training_resumes_either_way_and_matches_eager(store, tmp_path):
    """--compile (torch.compile of the training step's forward pass) writes the same kind of
    checkpoint, never blocks a resume either way, and learns as the eager network does."""
    cfg = TrainConfig(steps=4, batch_size=2, warmup_steps=0, val_every=4, val_samples=2, ckpt_every=2, log_every=1)
    compiled = dataclasses.replace(cfg, compile=True)
    part = train(store, tmp_path / "mixed", net=TINY, cfg=compiled, resume=False, max_steps=2, progress=False)
    assert part["step"] == 2
    rest = train(store, tmp_path / "mixed", net=TINY, cfg=cfg, progress=False)  # eager resumes a compiled run
    assert rest["start"] == 2 and rest["step"] == 4
    eager = train(store, tmp_path / "eager", net=TINY, cfg=cfg, resume=False, progress=False)
    np.testing.assert_allclose(  # the same steps; compiled kernels round differently
        [float(x) for x in _losses(tmp_path / "mixed")], [float(x) for x in _losses(tmp_path / "eager")], rtol=1e-3
    )
    assert eager["step"] == 4
    model, state = model_from_checkpoint(tmp_path / "mixed" / "last.pt")  # plain keys: no _orig_mod. prefix
    assert state["train"]["compile"] is False and isinstance(model, torch.nn.Module)


def test_memory_formats_train_alike_and_resume_either_way(store, tmp_path):
    """memory_format "nchw" learns as the default NHWC order does, never blocks a resume either way,
    and its checkpoints load into a default network; a session-13 checkpoint's channels_last key (it
    never changed the order) neither blocks a resume nor the settings' reading."""
    cfg = TrainConfig(steps=4, batch_size=2, warmup_steps=0, val_every=4, val_samples=2, ckpt_every=2, log_every=1)
    nchw = dataclasses.replace(cfg, memory_format="nchw")
    train(store, tmp_path / "mixed", net=TINY, cfg=nchw, resume=False, max_steps=2, progress=False)
    state = torch.load(tmp_path / "mixed" / "last.pt", weights_only=False)
    state["train"]["channels_last"] = False  # as session 13 wrote it
    del state["train"]["memory_format"]
    torch.save(state, tmp_path / "mixed" / "last.pt")
    rest = train(store, tmp_path / "mixed", net=TINY, cfg=cfg, progress=False)  # NHWC resumes an NCHW run
    assert rest["start"] == 2 and rest["step"] == 4
    train(store, tmp_path / "plain", net=TINY, cfg=cfg, resume=False, progress=False)
    np.testing.assert_allclose(  # the same arithmetic in another memory order: only rounding differs
        [float(x) for x in _losses(tmp_path / "mixed")], [float(x) for x in _losses(tmp_path / "plain")], rtol=1e-4
    )
    assert TrainConfig.from_dict(state["train"]).memory_format == "nhwc"
    nchw_run = train(store, tmp_path / "nchw", net=TINY, cfg=nchw, resume=False, max_steps=2, progress=False)
    assert nchw_run["step"] == 2
    model, state = model_from_checkpoint(tmp_path / "nchw" / "last.pt")
    assert state["train"]["memory_format"] == "nchw" and isinstance(model, torch.nn.Module)
    with pytest.raises(ValueError, match="memory_format"):
        TrainConfig(memory_format="nhcw").validate()


def test_bad_training_settings(store, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(amp="fp8").validate()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"is a folder, not a checkpoint file \(it holds best.pt: pass .*best.pt\)"):
        load_checkpoint(tmp_path / "run")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_a_network_larger_than_the_data_is_noted(store):
    """tomo train says where the network's input or output exceeds the store's x-rays or volumes
    (the store: 32² x-rays, 32³ volumes)."""
    attrs = StoreSamples(store, "train").attrs
    assert size_notes(TINY, attrs) == []
    big = dataclasses.replace(TINY, input_size=64, out_size=64, out_depth=16)
    assert size_notes(big, attrs) == [
        "the network's input (64²) is larger than the store's x-rays (32²): they are upsampled, no detail is added",
        "the network's output (16 x 64²) is larger than the store's volumes (32³): its targets are interpolated "
        "from them, no detail is added",
    ]


def test_training_device_names(tmp_path):
    """tomo train --device: auto, cpu, cuda, cuda:N; CUDA where torch sees none and other names are
    refused before any data is read (the workflow's model.train.device reaches it)."""
    assert _device(0, "cpu") == torch.device("cpu")
    assert _device(0, "auto") == torch.device(
        "cuda" if torch.cuda.is_available() else "cpu", 0 if torch.cuda.is_available() else None
    )
    for bad in ("gpu", "mps:x", ""):
        with pytest.raises(ValueError, match="device must be auto, cpu, cuda or cuda:N"):
            _device(0, bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device here"):
            _device(0, "cuda")
    with pytest.raises(ValueError, match="with 2 processes would put every one on the same GPU"):
        _device(1, "cuda:0", world=2)
    r = subprocess.run(
        [str(BIN / "tomo"), "train", "nowhere.zarr", "-o", "x", "--device", "cuda:99"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    # refused before any data is read: no CUDA here, or fewer than 100 devices
    assert r.returncode == 2 and "device 'cuda:99'" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "x").exists()  # a refused command leaves no output folder (nor its lock file)


def test_cli_train_and_ddp_two_processes(store, tmp_path):
    """The CLI under torchrun with 2 CPU processes (gloo): both ranks train, rank 0 writes."""
    args = [
        "train",
        str(store),
        "-o",
        str(tmp_path / "ddp"),
        *TINY_NET,
        *train_args(steps=3, batch_size=4, val_samples=4),
        "--log-every",
        "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port (not a fixed one another process may hold)
        "--nproc_per_node",
        "2",
        "-m",
        "model.cli",
    ] + args
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["step"] == 3
    assert '"world_size": 2' in (tmp_path / "ddp" / "summary.json").read_text()


def test_checkpoint_carries_the_training_xrays_and_infer_warns_far_from_them(store, tmp_path):
    """Issue #13: the out-of-distribution check. A training x-ray of a held-out species is near the
    reference; the same film with grey air (a display offset) or the specimen blown up to fill the
    whole image is far: tomo infer warns, and records the check."""
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=1, val_every=2, val_samples=4, ckpt_every=2)
    train(store, tmp_path / "r", net=TINY, cfg=cfg, resume=False, progress=False)
    ref = load_checkpoint(tmp_path / "r" / "last.pt")["xray_reference"]
    assert ref["features"] == FEATURES and ref["size"] == TINY.input_size and len(ref["values"]) == ref["samples"] > 0
    held_out = StoreSamples(store, "val")
    x = held_out[3]["xray"][0].numpy()
    small = cv2.resize(x, (32, 32), interpolation=cv2.INTER_AREA)
    near = ood_check(small, ref)
    assert near["far"] is False, near
    grey = ood_check(np.clip(0.4 + 0.6 * small, 0, 1), ref)
    assert grey["far"] and "border" in grey["outside"], grey
    ys, xs = np.nonzero(small > 0.02)
    blown = cv2.resize(small[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], (32, 32))
    assert ood_check(blown, ref)["far"]
    assert ood_check(small, None)["far"] is None  # an older checkpoint: recorded as not checked
    # through tomo infer: a warning, and the record
    png = tmp_path / "grey.png"
    cv2.imwrite(str(png), np.rint(np.clip(0.4 + 0.6 * x, 0, 1) * 255).astype(np.uint8))
    with pytest.warns(UserWarning, match="far from every training x-ray"):
        rec = infer_file(png, tmp_path / "r" / "last.pt", tmp_path / "o" / "v.nrrd", polarity="keep", previews=False)
    assert rec["ood"]["far"] is True and any("far from every training" in w for w in rec["warnings"])
