"""Resuming ``tomo train``: a checkpoint of another schedule is refused, a finished run re-run is left as it was."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from tiny_runs import build_demo

from model import train as train_mod
from model import train_loop
from model.network import NetworkConfig
from model.train import TrainConfig, load_checkpoint, train
from model.train_attempts import last_attempt_note, read_attempts, recorded_attempt
from model.train_logs import restore_lost_val_log

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)
CFG = TrainConfig(steps=6, batch_size=4, lr=3e-3, warmup_steps=2, val_every=2, val_samples=8, ckpt_every=2, log_every=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("store"), species=4, held_out=1, views=6)


@pytest.mark.parametrize(
    ("setting", "value"), [("steps", 12), ("steps", 5), ("lr", 1e-3), ("warmup_steps", 3), ("batch_size", 2)]
)
def test_resume_with_another_schedule_is_refused(store, tmp_path, setting, value):
    """The learning rate at step s is a function of steps, lr, warm-up (and the batch decides the samples):
    resuming last.pt with another value would jump the schedule, so it is refused in one line that
    names the setting, both values and what to do; the checkpoint is left as it was."""
    train(store, tmp_path, net=TINY, cfg=CFG, resume=False, max_steps=4, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    other = dataclasses.replace(CFG, **{setting: value})
    with pytest.raises(ValueError) as e:
        train(store, tmp_path, net=TINY, cfg=other, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert f"train.{setting}: {getattr(CFG, setting)!r} (checkpoint) != {value!r} (now)" in msg
    assert "new output folder" in msg and "--no-resume" in msg
    assert (tmp_path / "last.pt").read_bytes() == before


def test_rerun_of_a_finished_training_leaves_its_results(store, tmp_path, capsys):
    """Re-running a finished training (last.pt at its final step) trains nothing, says so and leaves
    summary.json (val_loss included), the logs and the checkpoints as they were."""
    first = train(store, tmp_path, net=TINY, cfg=CFG, resume=False, progress=False)
    assert first["step"] == CFG.steps and math.isfinite(first["val_loss"])
    names = ("summary.json", "last.pt", "best.pt", "train_log.csv", "val_log.csv")
    before = {n: (tmp_path / n).read_bytes() for n in names}
    capsys.readouterr()
    again = train(store, tmp_path, net=TINY, cfg=CFG, progress=False)
    assert {n: (tmp_path / n).read_bytes() for n in names} == before
    assert again == json.loads(before["summary.json"])
    assert again["val_loss"] == pytest.approx(first["val_loss"])
    assert f"already at step {CFG.steps}" in capsys.readouterr().err


def test_rerun_of_a_finished_training_restores_deleted_outputs(store, tmp_path, capsys):
    """The workflow's re-run (restart_if_changed) of a finished job: Snakemake deleted best.pt and
    val_log.csv; they come back from last.pt, and a missing summary.json is written again with the
    last validation loss and the best one that last.pt records."""
    first = train(store, tmp_path, net=TINY, cfg=CFG, resume=False, progress=False)
    kept = {n: (tmp_path / n).read_bytes() for n in ("best.pt", "val_log.csv")}
    for name in ("best.pt", "val_log.csv", "summary.json"):
        (tmp_path / name).unlink()
    again = train(store, tmp_path, net=TINY, cfg=CFG, progress=False, restart_if_changed=True)
    assert {n: (tmp_path / n).read_bytes() for n in kept} == kept
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("step", "val_loss", "best_step", "best_val_loss", "stopped"):
        assert summary[key] == pytest.approx(first[key]) == pytest.approx(again[key]), key
    assert load_checkpoint(tmp_path / "last.pt")["step"] == CFG.steps
    assert "summary.json written" in capsys.readouterr().err


def test_lost_val_log_of_a_finished_run_is_written_again(store, tmp_path):
    """The workflow's repair before planning (restore_lost_val_log): a deleted val_log.csv comes back
    byte for byte from last.pt; nothing is done where it is there or no run finished; a last.pt
    without the history (or none) is named with what to do, and nothing is written."""
    train(store, tmp_path, net=TINY, cfg=CFG, resume=False, progress=False)
    log = tmp_path / "val_log.csv"
    before = log.read_bytes()
    assert restore_lost_val_log(tmp_path) is None  # nothing lost
    log.unlink()
    msg = restore_lost_val_log(tmp_path)
    assert msg is not None and "written again" in msg and f"({CFG.steps // CFG.val_every} rows)" in msg
    assert log.read_bytes() == before

    log.unlink()
    state = load_checkpoint(tmp_path / "last.pt")
    del state["val_history"]  # a last.pt of before the history was carried
    torch.save(state, tmp_path / "last.pt")
    msg = restore_lost_val_log(tmp_path)
    assert msg is not None and "before checkpoints carried" in msg and "--forcerun train" in msg
    (tmp_path / "last.pt").unlink()
    assert "--no-resume" in restore_lost_val_log(tmp_path)
    assert not log.exists()
    (tmp_path / "best.pt").unlink()
    assert restore_lost_val_log(tmp_path) is None  # no finished run: nothing to say


def test_attempts_are_recorded_and_a_failed_or_killed_one_is_named(store, tmp_path, monkeypatch, capsys):
    """train_attempts.jsonl: a start and an end line per call that trains (none for a finished run's
    re-run); a failure records its error and the step reached and is re-raised; the next call names
    it, and names a start without an end (a killed process) the same way."""
    real_step = train_loop._train_step

    def failing(run, targets, batch):
        if run.reached == 3:
            raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")
        return real_step(run, targets, batch)

    monkeypatch.setattr(train_loop, "_train_step", failing)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        train(store, tmp_path, net=TINY, cfg=CFG, resume=False, progress=False)
    start, end = read_attempts(tmp_path)
    assert start["event"] == "start" and (start["from_step"], start["to_step"], start["world"]) == (0, 6, 1)
    assert start["device"] == "cpu" and start["pid"] > 0 and start["utc"].endswith("+00:00")
    assert (end["status"], end["step"]) == ("failed", 3)
    assert end["error"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    monkeypatch.setattr(train_loop, "_train_step", real_step)
    # a failure before the first step (the data, say) records the step the attempt started from
    monkeypatch.setattr(train_mod, "_batches", lambda run: (_ for _ in ()).throw(OSError("store unreadable")))
    with pytest.raises(OSError, match="store unreadable"):
        train(store, tmp_path, net=TINY, cfg=CFG, progress=False)
    assert (read_attempts(tmp_path)[-1]["status"], read_attempts(tmp_path)[-1]["step"]) == ("failed", 2)
    monkeypatch.undo()
    capsys.readouterr()
    done = train(store, tmp_path, net=TINY, cfg=CFG, progress=False)  # resumes from last.pt (step 2)
    err = capsys.readouterr().err
    assert "note: the previous attempt failed after step 2 at " in err and "store unreadable" in err
    start, end = read_attempts(tmp_path)[-2:]
    assert done["start"] == 2 and (start["event"], start["from_step"]) == ("start", 2)
    assert (end["event"], end["status"], end["step"]) == ("end", "finished", 6)
    n = len(read_attempts(tmp_path))
    train(store, tmp_path, net=TINY, cfg=CFG, progress=False)  # finished: nothing trained, nothing recorded
    assert len(read_attempts(tmp_path)) == n and "previous attempt" not in capsys.readouterr().err
    # a process killed while training leaves a start without an end (and perhaps half a line)
    with open(tmp_path / "train_attempts.jsonl", "a") as fh:
        fh.write('{"event": "start", "utc": "2026-01-01T00:00:00+00:00", "host": "node7", "pid": 4242, ')
        fh.write('"from_step": 2}\n{"ev')
    train(store, tmp_path, net=TINY, cfg=dataclasses.replace(CFG, steps=8), progress=False, restart_if_changed=True)
    err = capsys.readouterr().err
    assert "note: the previous attempt (started 2026-01-01T00:00:00+00:00 on node7, pid 4242, from step 2) " in err
    assert "recorded no end: it was killed" in err
    start, end = read_attempts(tmp_path)[-2:]  # the cut line skipped, the new start on a line of its own
    assert (start["event"], start["from_step"], end["status"], end["step"]) == ("start", 0, "finished", 8)
    assert len(read_attempts(tmp_path)) == n + 3


def test_attempt_records_a_second_stop_signal_and_skips_foreign_lines(tmp_path):
    """A KeyboardInterrupt (a second stop signal) ends the attempt as failed, not as a kill; a JSON line
    that is no record (no event) is skipped, not a KeyError; ranks other than 0 write nothing
    (helper-89: each of these could be undone with every test passing)."""
    kw = dict(from_step=4, to_step=9, device="cpu", world=2, reached=lambda: 6)
    with pytest.raises(KeyboardInterrupt), recorded_attempt(tmp_path, enabled=True, **kw):
        raise KeyboardInterrupt("a second stop signal (SIGINT)")
    with (tmp_path / "train_attempts.jsonl").open("a") as fh:
        fh.write('{"note": 1}\n[1, 2]\n')
    start, end = read_attempts(tmp_path)
    assert (start["event"], end["status"], end["step"]) == ("start", "failed", 6)
    assert "KeyboardInterrupt: a second stop signal" in end["error"]
    assert "failed after step 6" in last_attempt_note(tmp_path)
    with recorded_attempt(tmp_path, enabled=False, **kw):
        pass
    assert len(read_attempts(tmp_path)) == 2
