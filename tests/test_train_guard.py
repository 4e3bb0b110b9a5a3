"""Guards of ``tomo train``'s output folder: one trainer at a time, corrupt logs and checkpoints named
with what to do, and settings that do not change the weights (ckpt_every, log_every) never restart a run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import _env
from tiny_runs import build_demo

from model.checkpoint import load_checkpoint, resume_differences
from model.network import NetworkConfig
from model.train import TrainConfig, train

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)
CFG = TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup_steps=2, val_every=2, val_samples=8, ckpt_every=2, log_every=1)

HOLD = """
import fcntl, os, sys, time
fh = open(sys.argv[1], "a+")
fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
fh.seek(0); fh.truncate(); fh.write(str(os.getpid())); fh.flush()
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("store"), species=4, held_out=1, views=6)


def test_a_second_trainer_of_the_same_folder_is_refused(store, tmp_path):
    """Another process holding the folder's lock (an orphaned tomo train): refused in one line naming
    the folder and its pid, nothing written; once it is gone the folder trains."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / ".train.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(ValueError) as e:
            train(store, tmp_path, net=TINY, cfg=CFG, max_steps=2, progress=False)
        msg = str(e.value)
        assert "\n" not in msg
        assert f"another tomo train (pid {holder.pid}) is writing {tmp_path}" in msg
        assert not (tmp_path / "last.pt").exists() and not (tmp_path / "train_log.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    summary = train(store, tmp_path, net=TINY, cfg=CFG, max_steps=2, progress=False)
    assert summary["step"] == 2
    # released when train returns: the same process (and any other) may train the folder again
    assert train(store, tmp_path, net=TINY, cfg=CFG, max_steps=4, progress=False)["start"] == 2


def test_the_lock_is_released_when_training_fails(store, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"junk")
    for _ in range(2):  # the second attempt is refused for the checkpoint, not for a stale lock
        with pytest.raises(ValueError, match="not a readable checkpoint"):
            train(store, tmp_path, net=TINY, cfg=CFG, max_steps=2, progress=False)


@pytest.mark.parametrize("name", ["train_log.csv", "val_log.csv"])
def test_a_corrupt_log_on_resume_names_the_file_and_what_to_do(store, tmp_path, name):
    """NUL bytes in a log (two trainers wrote it, a crash): one error naming the file, the line and
    what to do; deleting the file resumes (val_log.csv rebuilt from last.pt)."""
    train(store, tmp_path, net=TINY, cfg=CFG, max_steps=4, progress=False)
    log = tmp_path / name
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[1] + "\x00" * 40 + ",1.0\n" + "".join(lines[2:]))
    with pytest.raises(ValueError) as e:
        train(store, tmp_path, net=TINY, cfg=CFG, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "\x00" not in msg
    assert str(log) in msg and "line 3" in msg and "delete it" in msg and "--no-resume" in msg
    log.unlink()
    summary = train(store, tmp_path, net=TINY, cfg=CFG, progress=False)
    assert summary["start"] == 4 and summary["step"] == 6
    if name == "val_log.csv":
        assert [r.split(",")[0] for r in log.read_text().splitlines()] == ["step", "2", "4", "6"]


def test_ckpt_every_and_log_every_do_not_restart_a_run(store, tmp_path):
    """How often a run checkpoints and logs does not change its weights: a run resumed with other
    values continues (the workflow's restart_if_changed did start afresh); val_every (model choice) is compared."""
    train(store, tmp_path, net=TINY, cfg=CFG, max_steps=4, progress=False)
    other = dataclasses.replace(CFG, ckpt_every=1, log_every=3)
    summary = train(store, tmp_path, net=TINY, cfg=other, progress=False, restart_if_changed=True)
    assert summary["start"] == 4 and summary["step"] == 6
    state = load_checkpoint(tmp_path / "last.pt")
    diffs = resume_differences(
        state, net=TINY.to_dict(), train=dataclasses.replace(CFG, val_every=3).to_dict(), data=state["data"]
    )
    assert diffs == ["train.val_every: 2 (checkpoint) != 3 (now)"]
    # every setting that changes what a step computes is compared, one at a time; only how a step
    # runs is not (helper-83: dropping batch_size or seed from the comparison passed every test)
    changed = {"amp": "bf16", "memory_format": "nchw"}
    how = {"compile", "memory_format", "ckpt_every", "keep_checkpoints", "log_every", "num_workers"}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(CFG, f.name)
        if f.name in changed:
            other = changed[f.name]
        else:
            other = (not value) if isinstance(value, bool) else value * 2 + 1
        diffs = resume_differences(
            state, net=TINY.to_dict(), train=dataclasses.replace(CFG, **{f.name: other}).to_dict(), data=state["data"]
        )
        assert bool(diffs) is (f.name not in how), (f.name, diffs)
        assert all(d.startswith(f"train.{f.name}:") for d in diffs), (f.name, diffs)


def test_an_uninterrupted_run_equals_one_with_other_ckpt_and_log_every(store, tmp_path):
    """ckpt_every and log_every change neither the weights nor the RNG: same losses, same val log."""
    a = train(store, tmp_path / "a", net=TINY, cfg=CFG, progress=False)
    b = train(store, tmp_path / "b", net=TINY, cfg=dataclasses.replace(CFG, ckpt_every=5, log_every=4), progress=False)
    assert a["val_loss"] == b["val_loss"] and a["best_val_loss"] == b["best_val_loss"]
    assert (tmp_path / "a" / "val_log.csv").read_text() == (tmp_path / "b" / "val_log.csv").read_text()


def test_loader_workers_change_nothing_and_do_not_restart_a_run(store, tmp_path):
    """Samples are drawn in the main process (model.data.batch_indices) and read without randomness, so
    loader workers change no loss: a run resumed with other workers continues (the workflow passes
    --workers untracked; an interrupted job resumed with other workers used to start afresh)."""
    train(store, tmp_path / "r", net=TINY, cfg=CFG, max_steps=4, progress=False)
    w = dataclasses.replace(CFG, num_workers=1)
    resumed = train(store, tmp_path / "r", net=TINY, cfg=w, progress=False, restart_if_changed=True)
    assert resumed["start"] == 4 and resumed["step"] == 6
    whole = train(store, tmp_path / "w", net=TINY, cfg=CFG, progress=False)
    assert resumed["val_loss"] == whole["val_loss"] and resumed["best_val_loss"] == whole["best_val_loss"]


@pytest.mark.parametrize(("name", "hint"), [("best.pt", "snakemake --forcerun train"), ("last.pt", "--no-resume")])
def test_a_corrupt_checkpoint_says_what_to_do(tmp_path, name, hint):
    (tmp_path / name).write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError) as e:
        load_checkpoint(tmp_path / name)
    assert f"{tmp_path / name} is not a readable checkpoint" in str(e.value) and hint in str(e.value)
    if name == "last.pt":
        assert "delete it" in str(e.value)


def test_pid_file_is_not_needed_to_refuse(store, tmp_path):
    """A holder that recorded no pid: still refused, naming the folder."""
    code = HOLD.replace("fh.seek(0); fh.truncate(); fh.write(str(os.getpid())); fh.flush()", "")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / ".train.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(ValueError, match=f"another tomo train is writing {tmp_path}"):
            train(store, tmp_path, net=TINY, cfg=CFG, max_steps=2, progress=False)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------------ the workflow
ROOT = Path(__file__).resolve().parents[1]


def _smk(workdir: Path, *args: str) -> str:
    env = _env()
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    proc = subprocess.run(
        [*cmd, "--workflow-profile", "none", "--cores", "2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=560,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


@pytest.mark.timeout(600)  # a hang guard; the suite runs on 2 workers, so a test may get half the machine
def test_workflow_ckpt_every_resumes_instead_of_training_afresh(tmp_path):
    """model.train.ckpt_every is a tracked option (the train job re-runs), but tomo train resumes across
    it: a finished run trains nothing and keeps its best.pt (it used to train afresh); val_every (model
    choice) still re-runs the job."""
    config = {
        "run": "tiny",
        "data": {"source": "demo", "demo": {"species": 4, "val": 1, "test": 1, "movie_size": 32}},
        "dataset": {"n_views": 4, "view_seed": 0, "image_size": 32, "steps": 32, "chi": 10.0, "volume_size": 32},
        "render": {"backend": "cpu", "batch": 64},
        "resources": {"default": {"threads": 1, "mem_mb": 500, "runtime": 5}},
        "model": {
            "preset": "demo",
            "train": {"steps": 2, "batch_size": 4, "warmup": 0, "val_every": 2, "val_samples": 4, "ckpt_every": 2},
        },
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    out = _smk(tmp_path, "--configfile", str(tmp_path / "tiny.yaml"), "--until", "train", "-p")
    assert "--val-every 2 --val-samples 4 --ckpt-every 2 --seed 0 --workers" in out
    best = (tmp_path / "results/tiny/model/best.pt").read_bytes()
    config["model"]["train"]["ckpt_every"] = 1
    (tmp_path / "ckpt.yaml").write_text(yaml.safe_dump(config))
    _smk(tmp_path, "--configfile", str(tmp_path / "ckpt.yaml"), "--until", "train")
    log = "".join(p.read_text() for p in (tmp_path / "logs").rglob("train*.log"))
    assert "nothing to train" in log and "starting afresh" not in log
    assert (tmp_path / "results/tiny/model/best.pt").read_bytes() == best
    config["model"]["train"]["val_every"] = 1
    (tmp_path / "val.yaml").write_text(yaml.safe_dump(config))
    assert "rule train:" in _smk(tmp_path, "--configfile", str(tmp_path / "val.yaml"), "--until", "train", "-n")
