"""The qualitative examples belong to their evaluation (model.examples, model.eval_source): the store,
the checkpoint and the eval folder must be those the evaluation was made from (else one error that
names both and what to run), the checkpoint must fit the store and must not have trained on the
shown species (evaluation's own checks), and ``ours`` is fused as the evaluation fused it (its
``--beta`` and ``--fusion-at``, recorded in the examples file's meta)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import TINY_NET, build_demo, train_args

from model import examples as E
from model.checkpoint import model_from_checkpoint
from model.cli import main
from model.data import resize_xrays
from model.eval_phases import _fuse_batch
from model.eval_source import store_content
from model.qualitative import fusion_panels
from tomodata.store import open_store


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny store A, a 2-step network trained on it and an evaluation with β = 3 fused on the target
    grid (eval/); a second store B built otherwise (other/dataset.zarr)."""
    root = tmp_path_factory.mktemp("compat")
    store = str(build_demo(root, species=4, val=1, test=1, views=4))
    assert main(["train", store, "-o", str(root / "model"), *TINY_NET, *train_args()]) == 0
    ck = str(root / "model" / "best.pt")
    ev = ["evaluate", store, "--checkpoint", ck, "-o", str(root / "eval"), "--max-samples", "4"]
    assert main([*ev, "--nn-search", "brute", "--beta", "3", "--fusion-at", "target"]) == 0
    build_demo(root / "other", species=3, val=1, test=1, views=4)
    return root


def _paths(run: Path) -> tuple[Path, Path, Path]:
    return run / "dataset.zarr", run / "model" / "best.pt", run / "eval"


def _edited_eval(run: Path, dest: Path, drop: tuple[str, ...] = (), **changes) -> Path:
    """A copy of run/eval whose summary.json has ``changes`` (``settings`` merged key by key) and
    lacks the keys ``drop`` (e.g. the content ids, as in eval folders from before they were recorded)."""
    shutil.copytree(run / "eval", dest)
    summary = json.loads((dest / "summary.json").read_text())
    for key in drop:
        del summary[key]
    settings = summary.get("settings", {}) | changes.pop("settings", {})
    summary |= changes | {"settings": {k: v for k, v in settings.items() if v is not None}}
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


def _raw(checkpoint, xray: np.ndarray) -> torch.Tensor:
    model, _ = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        return model(resize_xrays(torch.from_numpy(xray)[None, None], model.config.input_size)).float()


def test_ours_is_fused_as_evaluated(run):
    """β = 3 on the target grid: each row's ours has the L2 to its truth that metrics.csv records."""
    store, ck, ev = _paths(run)
    ex = E.qualitative_examples(store, ck, ev, n=3)
    assert ex["meta"]["fusion"] == {"beta": 3.0, "fusion_at": "target"}
    with open(ev / "metrics.csv", newline="") as fh:
        l2 = {(r["species"], r["sample"]): float(r["l2"]) for r in csv.DictReader(fh) if r["method"] == "ours"}
    for row, full in zip(ex["rows"], ex["ours_full"], strict=True):
        species, _, sample = row["title"].rpartition(" sample ")
        got = float(np.sqrt(np.mean((row["ours"].astype(np.float64) - row["truth"]) ** 2)))
        assert got == pytest.approx(l2[(species, sample)], rel=1e-5, abs=1e-7)
        assert full.shape == (row["ours"].shape[0], *row["xray"].shape)  # the applications' grid
    assert np.array_equal(ex["fusion"]["fused"], ex["ours_full"][0])


def test_fusion_at_the_xray_with_the_eval_beta(run, tmp_path):
    store, ck, _ = _paths(run)
    ev = _edited_eval(run, tmp_path / "eval", settings=dict(beta=5.0, fusion_at="xray"))
    ex = E.qualitative_examples(store, ck, ev, n=1)
    assert ex["meta"]["fusion"] == {"beta": 5.0, "fusion_at": "xray"}
    row = ex["rows"][0]
    chi = open_store(store).settings.chi
    S = row["ours"].shape[-1]
    want = _fuse_batch(_raw(ck, row["xray"]), row["xray"][None], size=S, fusion_at="xray", beta=5.0, chi=chi)
    np.testing.assert_allclose(row["ours"], want[0].numpy(), rtol=1e-6, atol=1e-7)
    # an eval folder from before the settings were recorded: β = 2 at the x-ray's resolution, as then
    old = _edited_eval(run, tmp_path / "old", settings=dict(beta=None, fusion_at=None))
    assert E.qualitative_examples(store, ck, old, n=1)["meta"]["fusion"] == {"beta": 2.0, "fusion_at": "xray"}


def test_the_examples_file_records_the_fusion(run, tmp_path):
    store, ck, ev = _paths(run)
    path = E.write_examples(store, ck, ev, tmp_path / "ex.npz", n=1)
    meta = E.load_examples(path)["meta"]
    assert meta["fusion"] == {"beta": 3.0, "fusion_at": "target"} and meta["format"] == E.FORMAT
    assert meta["source"]["store"] == str(store.resolve()) and meta["source"]["eval"] == str(ev.resolve())
    # a format-1 file (before the settings were recorded) was fused with β = 2 at the x-ray's resolution
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = np.array(json.dumps({"format": 1, "requested": 1, "rows": 1}))
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    old = E.load_examples(tmp_path / "old.npz")
    assert old["meta"]["fusion"] == {"beta": 2.0, "fusion_at": "xray"} and len(old["rows"]) == 1


def test_same_files_by_other_paths_are_accepted(run, tmp_path, monkeypatch):
    store, ck, ev = _paths(run)
    (tmp_path / "link.zarr").symlink_to(store)
    monkeypatch.chdir(run)
    assert len(E.qualitative_examples(tmp_path / "link.zarr", "model/best.pt", "eval", n=1)["rows"]) == 1


@pytest.mark.parametrize("key,id_key", [("store", "store_content"), ("checkpoint", "checkpoint_sha256")])
def test_refuses_an_eval_of_another_store_or_checkpoint(run, tmp_path, key, id_key):
    """An eval folder without content ids (from before they were recorded): compared by path."""
    store, ck, _ = _paths(run)
    elsewhere = str(tmp_path / f"elsewhere_{key}")
    ev = _edited_eval(run, tmp_path / "eval", drop=(id_key,), **{key: elsewhere})
    with pytest.raises(ValueError) as e:
        E.qualitative_examples(store, ck, ev, n=1)
    msg = str(e.value)
    assert f"eval folder {ev} was not made from the store {store} and checkpoint {ck}" in msg
    assert f"{key} {elsewhere}" in msg and f"tomo evaluate {store} --checkpoint {ck}" in msg


@pytest.mark.parametrize("key,id_key", [("store", "store_content"), ("checkpoint", "checkpoint_sha256")])
def test_content_ids_decide_where_recorded(run, tmp_path, key, id_key):
    """summary.json records the store's content id and the checkpoint's sha256: a run folder moved
    (or evaluated from another working directory) is accepted, other content refused whatever the path."""
    store, ck, _ = _paths(run)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["store_content"] == store_content(open_store(store)) and len(summary["checkpoint_sha256"]) == 64
    moved = _edited_eval(run, tmp_path / "moved", **{key: str(tmp_path / "old_place")})
    assert len(E.qualitative_examples(store, ck, moved, n=1)["rows"]) == 1
    other = _edited_eval(run, tmp_path / "other", **{id_key: "0" * 64})
    with pytest.raises(ValueError, match=f"{key} {id_key} {'0' * 64}, not "):
        E.qualitative_examples(store, ck, other, n=1)


def test_refuses_a_checkpoint_trained_again(run, tmp_path):
    store, ck, _ = _paths(run)
    ev = _edited_eval(run, tmp_path / "eval", checkpoint_step=12345)
    with pytest.raises(ValueError, match=r"checkpoint_step 12345, not 2 \(trained again since\?\)"):
        E.qualitative_examples(store, ck, ev, n=1)


def test_refuses_a_checkpoint_that_does_not_fit_the_store(run):
    _, ck, ev = _paths(run)
    other = run / "other" / "dataset.zarr"
    with pytest.raises(ValueError, match=f"checkpoint {ck} was trained on other data than the store {other}"):
        E.qualitative_examples(other, ck, ev, n=1)


def test_refuses_species_the_checkpoint_trained_on(run, tmp_path):
    store, ck, _ = _paths(run)
    ev = tmp_path / "eval"
    shutil.copytree(run / "eval", ev)
    trained = open_store(store).species_names("train")[0]
    with open(ev / "matches.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["species"] = trained
    with open(ev / "matches.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ValueError, match=rf"species \['{trained}'\] .* were training species of {ck}"):
        E.qualitative_examples(store, ck, ev, n=1)


def test_the_commands_refuse(run, tmp_path, capsys):
    store, ck, _ = _paths(run)
    ev = str(_edited_eval(run, tmp_path / "eval", store_content="0" * 64))
    out = str(tmp_path / "out")
    for args in (
        ["examples", str(store), "--checkpoint", str(ck), "--eval", ev, "-o", str(tmp_path / "x.npz")],
        ["apps", str(store), "--checkpoint", str(ck), "--eval", ev, "-o", out, "--examples", "1"],
        ["figures", "--eval", ev, "--store", str(store), "--checkpoint", str(ck), "-o", out, "--examples", "1"],
        ["explorer", "--store", str(store), "--checkpoint", str(ck), "--eval", ev, "-o", out, "--samples", "1"],
    ):
        assert main(args) == 2, args
        assert "was not made from the store" in capsys.readouterr().err, args
    assert not Path(out).exists() and not (tmp_path / "x.npz").exists()


def test_figures_refuse_examples_of_another_evaluation(run, tmp_path, capsys):
    store, ck, ev = _paths(run)
    ex = str(E.write_examples(store, ck, ev, tmp_path / "ex.npz", n=1))
    out = str(tmp_path / "figs")
    beta2 = _edited_eval(run, tmp_path / "beta2", settings=dict(beta=2.0))
    assert main(["figures", "--eval", str(beta2), "--examples-file", ex, "-o", out, "--examples", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{ex} was made with fusion {{'beta': 3.0, 'fusion_at': 'target'}}" in err
    assert f"{beta2} evaluated {{'beta': 2.0, 'fusion_at': 'target'}}" in err and "tomo examples" in err
    other = _edited_eval(run, tmp_path / "other", checkpoint_sha256="0" * 64)
    assert main(["figures", "--eval", str(other), "--examples-file", ex, "-o", out, "--examples", "1"]) == 2
    assert f"checkpoint checkpoint_sha256 {'0' * 64}" in capsys.readouterr().err
    assert not Path(out).exists()
    assert len(E.examples_for(ex, None, None, ev, n=1)["rows"]) == 1  # its own evaluation: fine


def test_fig9_panels_name_the_fusion(run, tmp_path):
    store, ck, ev = _paths(run)
    example = E.load_examples(E.write_examples(store, ck, ev, tmp_path / "ex.npz", n=1))["fusion"]
    assert example["settings"] == {"beta": 3.0, "fusion_at": "target"}
    titles = [t for t, _ in fusion_panels(example, chi=open_store(store).settings.chi)]
    assert titles[1].startswith("fusion: re-rendered x-ray\nβ = 3, target grid\nmax |Δ| = ")
    assert titles[2].endswith("\nβ = 3, target grid") and "β" not in titles[3] + titles[4]
    assert titles[3].startswith("no fusion: re-rendered x-ray")
    old = {k: v for k, v in example.items() if k != "settings"}  # a caller's own example: no label
    assert [t for t, _ in fusion_panels(old)][1].startswith("fusion: re-rendered x-ray")
