"""What a checkpoint guards: the data fingerprint (val species, χ), the format check, the differences
a resume is refused over and the messages that say what to do."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from test_infer import _phantom, _png, _read_volume, _u8
from tiny_runs import demo_args

from model.checkpoint import (
    CHECKPOINT_FORMAT,
    config_differences,
    data_differences,
    data_fingerprint,
    load_checkpoint,
    model_from_checkpoint,
    resume_differences,
    resume_refusal,
)
from model.cli import main
from model.data import StoreSamples
from model.fusion import render_view
from model.infer import infer_file
from model.network import NetworkConfig
from model.train import TrainConfig, train

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)
CFG = TrainConfig(steps=1, batch_size=2, warmup_steps=0, val_every=1, val_samples=2, ckpt_every=1)
CHI = 5.0  # not the default χ 10: a checkpoint that lost it would look like one of the default


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-step run (best.pt and last.pt) on a tiny store of χ 5: two train species, one val."""
    out = tmp_path_factory.mktemp("guards")
    args = ["build-demo", "-o", str(out / "data"), *demo_args(species=3, held_out=1, views=4), "--chi", str(CHI)]
    assert main(args) == 0
    store = out / "data" / "dataset.zarr"
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: one thread avoids OpenMP stalls on a loaded machine
    try:
        train(store, out / "run", net=TINY, cfg=CFG, resume=False, progress=False)
    finally:
        torch.set_num_threads(old)
    return store, out / "run"


def _set_digest(store, species: str, array: str, digest: str) -> None:
    """Change one stored checksum of ``species`` (as a render of other values would)."""
    meta = store / "species" / species / "zarr.json"
    d = json.loads(meta.read_text())
    assert d["attributes"]["complete"]["sha256"][array] != digest
    d["attributes"]["complete"]["sha256"][array] = digest
    meta.write_text(json.dumps(d))


def test_fingerprint_changes_when_only_the_val_species_change(run, tmp_path):
    """The val species choose best.pt, so their data is part of the fingerprint: a store whose val
    species alone were rendered again has another ``content``, and resuming on it is refused."""
    store, out = run
    before = data_fingerprint(StoreSamples(store, "train"))
    other = tmp_path / "dataset.zarr"
    shutil.copytree(store, other)
    val = StoreSamples(other, "val").species
    assert val == ["procedural_02"] and "procedural_02" not in before["species"]
    _set_digest(other, val[0], "images", "0" * 64)
    after = data_fingerprint(StoreSamples(other, "train"))
    assert after["species"] == before["species"], "the train species are the same"
    assert after["content"] != before["content"], "the val species' data must be part of the fingerprint"
    state = load_checkpoint(out / "last.pt")
    diffs = resume_differences(state, net=TINY.to_dict(), train=CFG.to_dict(), data=after)
    assert [d.split(":")[0] for d in diffs] == ["data.content"], diffs


def test_checkpoint_carries_the_store_chi_and_inference_uses_it(run, tmp_path):
    """χ of the store (not the default 10) travels in the checkpoint's data fingerprint; tomo infer
    fuses and re-renders with it, says where it came from, and a store of another χ is a difference."""
    store, out = run
    assert data_fingerprint(StoreSamples(store, "train")).get("chi") == CHI, "the fingerprint names the store's χ"
    for name in ("best.pt", "last.pt"):
        assert load_checkpoint(out / name)["data"].get("chi") == CHI, f"{name} carries the store's χ"
    state = load_checkpoint(out / "best.pt")
    assert data_differences(state["data"], {**state["data"], "chi": 10.0}) == [
        "data.chi: 5.0 (checkpoint) != 10.0 (now)"
    ]
    png = _png(tmp_path / "x.png", _u8(_phantom(32, 32)))
    vol_path = tmp_path / "res" / "v.nrrd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the phantom is far from the training x-rays: not the point here
        rec = infer_file(png, out / "best.pt", vol_path, polarity="keep", square="crop", previews=False, threads=1)
    assert (rec["fusion"]["chi"], rec["fusion"]["chi_source"]) == (CHI, "checkpoint data"), rec["fusion"]
    assert rec["checkpoint"]["data"].get("chi") == CHI, "the record names the checkpoint's χ"
    vol, _ = _read_volume(vol_path)
    x = np.asarray(_u8(_phantom(32, 32)), np.float64) / 255.0
    err = np.abs(render_view(vol, chi=CHI) - np.minimum(x, 1 - np.exp(-CHI)))
    assert float(err.max()) < 1e-3, "the fused volume re-renders to the x-ray with the store's χ"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda s: {k: v for k, v in s.items() if k != "format"}, id="no-format"),
        pytest.param(lambda s: {**s, "format": "tomo-checkpoint/2"}, id="other-format"),
        pytest.param(lambda s: [s], id="a-list"),
        pytest.param(lambda s: s["model"], id="a-state-dict"),
    ],
)
def test_a_torch_file_that_is_not_our_checkpoint_is_refused(run, tmp_path, make):
    """A file torch reads but that is not a checkpoint of this format (none, another, not a dict) is
    refused with a ValueError that names the format, by load_checkpoint and model_from_checkpoint."""
    _, out = run
    path = tmp_path / "foreign.pt"
    torch.save(make(load_checkpoint(out / "last.pt")), path)
    for load in (load_checkpoint, model_from_checkpoint):
        with pytest.raises(ValueError, match=f"is not a {CHECKPOINT_FORMAT} checkpoint"):
            load(path)


def test_config_differences_name_keys_of_either_side():
    """A key only in the checkpoint's settings and a key only in the new ones are both differences."""
    assert config_differences({"a": 1}, {"a": 1}) == []
    assert config_differences({"a": 1}, {"a": 1, "b": 2}, "train.") == ["train.b: None (checkpoint) != 2 (now)"]
    assert config_differences({"a": 1, "b": 2}, {"a": 1}, "train.") == ["train.b: 2 (checkpoint) != None (now)"]
    state = {"network": TINY.to_dict(), "train": CFG.to_dict(), "data": {"chi": CHI}}
    newer = {**CFG.to_dict(), "new_setting": 3}  # a setting the checkpoint's code did not have
    diffs = resume_differences(state, net=TINY.to_dict(), train=newer, data={"chi": CHI})
    assert diffs == ["train.new_setting: None (checkpoint) != 3 (now)"]


def test_resume_refusal_over_steps_says_how_to_stop_early(run, tmp_path):
    """Another --steps is refused with the reason (the schedule ends at steps) and what to do instead
    (--max-steps to stop early); other differences do not get that hint."""
    store, out = run
    folder = tmp_path / "run"
    shutil.copytree(out, folder)
    with pytest.raises(ValueError) as e:
        train(store, folder, net=TINY, cfg=dataclasses.replace(CFG, steps=3), progress=False)
    msg = str(e.value)
    assert "train.steps: 1 (checkpoint) != 3 (now)" in msg
    assert "a run keeps its length; --max-steps stops early" in msg, msg
    other = resume_refusal(folder / "last.pt", ["train.lr: 0.001 (checkpoint) != 0.002 (now)"])
    assert "--max-steps" not in other and "--no-resume" in other


def test_an_unreadable_run_checkpoint_says_what_to_do(run, tmp_path):
    """A damaged best.pt names how to write it again (from last.pt); a damaged last.pt how to train
    afresh; a damaged file of another name gets no run advice."""
    _, out = run
    for name in ("best.pt", "last.pt", "other.pt"):
        (tmp_path / name).write_bytes((out / "last.pt").read_bytes()[:200])  # cut short: a full disk, a kill
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        load_checkpoint(tmp_path / "best.pt")
    assert f"`snakemake --forcerun train` writes it again from {tmp_path / 'last.pt'}" in str(e.value)
    assert "delete it and run the same tomo train again" in str(e.value)
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        load_checkpoint(tmp_path / "last.pt")
    assert "(delete it, or run tomo train with --no-resume, to train afresh in its folder)" in str(e.value)
    with pytest.raises(ValueError, match="not a readable checkpoint") as e:
        load_checkpoint(tmp_path / "other.pt")
    assert "snakemake" not in str(e.value) and "--no-resume" not in str(e.value)


def test_a_run_folder_given_as_checkpoint_names_best_pt_first(run, tmp_path):
    """A run folder passed for a checkpoint is refused naming best.pt (the checkpoint chosen on val,
    the one to evaluate or infer with) where both best.pt and last.pt are there; last.pt where alone."""
    _, out = run
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    with pytest.raises(ValueError, match=r"is a folder, not a checkpoint file") as e:
        load_checkpoint(out)
    assert f"(it holds best.pt: pass {out / 'best.pt'})" in str(e.value)
    (tmp_path / "last.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"\(it holds last.pt: pass .*last.pt\)"):
        load_checkpoint(tmp_path)
