"""The ``tomo`` command line, run as a user would (a subprocess for the entry point, main() for speed)."""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import nibabel
import nrrd
import numpy as np
import pytest
import torch
from tiny_runs import TINY_NET, build_demo, train_args

from model.bench_train import kernel_kind
from model.cli import build_parser, main
from model.network import NetworkConfig, TomographyNet
from model.train import TrainConfig, save_checkpoint
from tomodata.cli import run
from tomodata.folder_contents import contents_problem
from tomodata.render import render_xrays
from tomodata.store import open_store
from tomodata.store.layout import _open_species_group
from tomodata.views import hemisphere_views

SUBCOMMANDS = ["phantom", "render", "build-demo", "validate", "previews", "bench"]


def test_entry_point_help():
    exe = shutil.which("tomo")
    cmd = [exe] if exe else [sys.executable, "-m", "model.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


def test_warnings_show_as_one_line_each():
    """A command's own warnings read ``warning: ...`` (one line, no file:line and source line); other
    kinds keep their category and origin."""
    code = (
        "import argparse, sys, warnings\n"
        "from tomodata.cli import run\n"
        "p = argparse.ArgumentParser(); sub = p.add_subparsers(dest='command')\n"
        "def f(a):\n"
        "    warnings.warn('the scan is odd', stacklevel=2)\n"
        "    warnings.warn('old call', FutureWarning, stacklevel=2)\n"
        "    return 0\n"
        "sub.add_parser('x').set_defaults(func=f)\n"
        "sys.exit(run(p, ['x']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0] == "warning: the scan is odd"
    assert lines[1].startswith("warning (FutureWarning, ") and lines[1].endswith(": old call") and len(lines) == 2


def test_a_failed_rename_names_both_paths(capsys):
    def fail(a):
        raise FileNotFoundError(2, "No such file or directory", "x.part", None, "gone/x")

    p = argparse.ArgumentParser()
    p.add_subparsers(dest="command").add_parser("x").set_defaults(func=fail)
    assert run(p, ["x"]) == 2
    assert capsys.readouterr().err == "error: No such file or directory: x.part -> gone/x\n"


def test_a_missing_file_is_named_without_errno(tmp_path, capsys):
    args = ["examples", str(tmp_path), "--checkpoint", str(tmp_path / "c.pt"), "-o", str(tmp_path / "x.npz")]
    assert main([*args, "--eval", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err == f"error: eval folder {tmp_path / 'e'} does not exist (tomo evaluate writes it)\n"
    (tmp_path / "e").mkdir()
    assert main([*args, "--eval", str(tmp_path / "e")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'e' / 'matches.csv'} does not exist\n"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: tomo " + name in capsys.readouterr().out


def test_phantom_then_render(tmp_path, capsys):
    vol_path = tmp_path / "skull.npy"
    assert main(["phantom", str(vol_path), "--species", "2", "--size", "48", "--preview", str(tmp_path / "pv")]) == 0
    vol = np.load(vol_path)
    assert vol.shape == (48, 48, 48) and vol.dtype == np.float32 and 0 <= vol.min() and vol.max() <= 1
    assert (tmp_path / "pv" / "skull_sheet.png").is_file()
    for odd in ("x.txt", "x"):  # np.save would have written x.txt.npy / x.npy and said "wrote x.txt"
        assert main(["phantom", str(tmp_path / odd), "--size", "16"]) == 2
        assert "the output must be a .npy or .npz file" in capsys.readouterr().err
    assert not list(tmp_path.glob("x*"))
    out = tmp_path / "render"
    assert (
        main(
            [
                "render",
                str(vol_path),
                "-o",
                str(out),
                "--views",
                "3",
                "--size",
                "40",
                "--steps",
                "48",
                "--backend",
                "cpu",
                "--previews",
                "2",
            ]
        )
        == 0
    )
    imgs = np.load(out / "images.npy")
    assert imgs.shape == (3, 40, 40) and imgs.max() > 0.1

    np.testing.assert_array_equal(imgs, render_xrays(vol, hemisphere_views(3), size=40, steps=48, backend="cpu"))
    assert json.loads((out / "render.json").read_text())["steps"] == 48
    assert sorted(p.name for p in out.glob("*.png")) == ["xray_000.png", "xray_001.png", "xray_sheet.png"]


def test_render_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((4, 4, 4), -1.0, np.float32))
    assert main(["render", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "negative densities" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "missing.npy"), "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["render", str(bad), "-o", str(tmp_path / "o"), "--views", "0"])


def test_build_demo_then_validate(tmp_path, capsys):
    out = tmp_path / "demo"
    build_demo(out, species=3, held_out=1, views=4)
    store = out / "dataset.zarr"
    assert main(["validate", str(store)]) == 0

    ds = open_store(store)
    assert ds.species_names(split="val") == ["procedural_02"]
    assert ds.n_samples("procedural_00") == 8
    # break one species: validate must fail and name it
    shard = next((store / "species" / "procedural_01" / "images").rglob("c/*/0/0"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    capsys.readouterr()
    assert main(["validate", str(store)]) == 1
    assert "procedural_01" in capsys.readouterr().out


def test_previews_from_the_store_are_those_of_the_render(tmp_path, capsys):
    """``tomo previews`` (the workflow's preview_sheet job) writes from the stored x-rays the files the
    render wrote (first views, unmirrored; the same 8-bit pixels); an unknown or incomplete species is
    refused naming it, and nothing is written."""
    out = tmp_path / "demo"
    store = build_demo(out, species=2, held_out=1, views=12)
    rendered = sorted((out / "previews").glob("procedural_01_*.png"))
    assert len(rendered) == 10  # 9 views and the sheet
    assert main(["previews", str(store), "--species", "procedural_01", "-o", str(tmp_path / "p")]) == 0
    for path in rendered:
        again = cv2.imread(str(tmp_path / "p" / path.name), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(again, cv2.imread(str(path), cv2.IMREAD_UNCHANGED)), path.name
    capsys.readouterr()
    assert main(["previews", str(store), "--species", "nope", "-o", str(tmp_path / "q")]) == 2
    assert "unknown species 'nope'" in capsys.readouterr().err
    _open_species_group(store, "procedural_00", "r+").attrs["status"] = "writing"
    assert main(["previews", str(store), "--species", "procedural_00", "-o", str(tmp_path / "q")]) == 2
    assert "not complete" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_bench_render_runs(capsys):
    assert (
        main(
            [
                "bench",
                "render",
                "--views",
                "2",
                "--size",
                "24",
                "--steps",
                "16",
                "--volume-size",
                "16",
                "--repeats",
                "1",
                "--backend",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "render_xrays" in out and "view_volumes" in out and "ms/view" in out


def test_bench_cube_runs(capsys):
    assert main(["bench", "cube", "--cube-shape", "40", "30", "20", "--volume-size", "16", "--repeats", "1"]) == 0
    assert "to_cube uint8 40×30×20 → 16³" in capsys.readouterr().out


def test_train_evaluate_figures_apps(tmp_path, capsys):
    """The model commands end to end on a tiny store and network."""
    out = tmp_path / "d"
    build_demo(out, species=4, val=1, test=1, views=4)
    store = str(out / "dataset.zarr")
    tiny = TINY_NET
    assert main(["model-info", "--preset", "paper"] + tiny) == 0
    assert "params" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", store, "-o", str(run)] + tiny + train_args()) == 0
    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                store,
                "--checkpoint",
                str(run / "last.pt"),
                "-o",
                str(ev),
                "--max-samples",
                "4",
                "--oracle-memory-gb",
                "1e-6",
                "--beta",
                "1.5",
                "--nn-search",
                "brute",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "4 held-out samples" in text and "oracle" in text
    settings = json.loads((ev / "summary.json").read_text())["settings"]
    assert settings["oracle_bytes"] == int(1e-6 * 2**30)  # 1 kB: one held-out view volume per pass
    assert json.loads((ev / "summary.json").read_text())["oracle"]["passes"] == 4
    assert settings["beta"] == 1.5 and settings["nn_search"] == "brute" and settings["fusion_at"] == "xray"
    for bad in ("0", "-1", "nan", "lots"):
        with pytest.raises(SystemExit) as e:
            main(["evaluate", store, "--checkpoint", "c", "-o", "o", "--oracle-memory-gb", bad])
        assert e.value.code == 2
    assert "--oracle-memory-gb" in capsys.readouterr().err
    assert (
        main(
            [
                "figures",
                "--eval",
                str(ev),
                "-o",
                str(tmp_path / "figs"),
                "--store",
                store,
                "--checkpoint",
                str(run / "last.pt"),
                "--examples",
                "1",
            ]
        )
        == 0
    )
    assert (tmp_path / "figs" / "fig6_methods.png").stat().st_size > 10_000
    assert (tmp_path / "figs" / "fig17_qualitative.png").is_file()
    assert (
        main(
            [
                "apps",
                store,
                "--checkpoint",
                str(run / "last.pt"),
                "--eval",
                str(ev),
                "-o",
                str(tmp_path / "apps"),
                "--examples",
                "1",
                "--frames",
                "4",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "apps").glob("*.gif"))) == 2
    assert contents_problem(tmp_path / "apps") is None and (tmp_path / "apps" / ".contents.json").is_file()
    # the applications show ours fused at the x-ray's resolution: it re-renders to the input x-ray

    (inp,) = (tmp_path / "apps").glob("*_xray_input.png")
    rerender = cv2.imread(str(inp).replace("_xray_input", "_xray_rerender"), cv2.IMREAD_GRAYSCALE)
    x = cv2.imread(str(inp), cv2.IMREAD_GRAYSCALE)
    assert x.shape == rerender.shape == (32, 32) and np.abs(x.astype(int) - rerender).max() <= 1


def test_infer_cli_on_a_real_radiograph(shared_data, tmp_path, capsys):

    net = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)
    model = TomographyNet(net)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    save_checkpoint(
        tmp_path / "c.pt",
        model=model,
        optimizer=opt,
        scheduler=sched,
        step=0,
        net=net,
        cfg=TrainConfig(),
        data={"chi": 10.0},
    )
    xray = shared_data / "real" / "xray" / "00000001_000.png"
    assert (
        main(
            [
                "infer",
                str(xray),
                "--checkpoint",
                str(tmp_path / "c.pt"),
                "-o",
                str(tmp_path / "v.nii.gz"),
                "--apps",
                str(tmp_path / "apps"),
            ]
        )
        == 2
    )  # a chest film: polarity not guessed
    assert "--polarity keep" in capsys.readouterr().err
    assert (
        main(
            [
                "infer",
                str(xray),
                "--checkpoint",
                str(tmp_path / "c.pt"),
                "-o",
                str(tmp_path / "v.nii.gz"),
                "--apps",
                str(tmp_path / "apps"),
                "--polarity",
                "keep",
                "--square",
                "crop",
                "--air",
                "subtract",
            ]
        )
        == 0
    )  # the film as it is (its grey air taken off)
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "apps" / "v_turntable.gif").is_file()  # named like the output volume
    assert (tmp_path / "apps" / "v_anaglyph.png").is_file()
    assert "v_anaglyph.png" in json.loads((tmp_path / "apps" / ".contents.json").read_text())["files"]

    img = nibabel.load(tmp_path / "v.nii.gz")
    assert img.shape == (512, 512, 16)
    assert json.loads((tmp_path / "v.json").read_text())["air"]["mode"] == "subtract"
    assert (
        main(["infer", str(tmp_path / "c.pt"), "--checkpoint", str(tmp_path / "c.pt"), "-o", str(tmp_path / "w.nrrd")])
        == 2
    )
    assert not (tmp_path / "w.nrrd").exists()


def test_bench_infer_runs(capsys):
    assert main(["bench", "infer", "--preset", "demo", "--size", "64", "--fuse-to", "96", "--repeats", "1"]) == 0
    assert "infer demo network 64² + fusion to 96²" in capsys.readouterr().out


def test_bench_train_runs(capsys):
    assert main(["bench", "train", "--preset", "demo", "--batch-size", "2", "--repeats", "1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "train demo network, batch 2, cpu, amp none, NHWC, 1 threads:" in out and "minor page faults" in out
    args = ["bench", "train", "--preset", "demo", "--batch-size", "2", "--repeats", "1", "--threads", "1"]
    assert main([*args, "--amp", "bf16", "--cudnn-benchmark"]) == 0  # bf16 autocast runs on the CPU too
    assert "amp bf16, cudnn benchmark, NHWC, 1 threads:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--amp", "fp8"])


def test_bench_train_memory_format_and_profile(capsys, tmp_path):
    """--memory-format nchw runs the step in NCHW order; --profile writes torch.profiler's operator table."""
    args = ["bench", "train", "--preset", "demo", "--batch-size", "2", "--repeats", "1", "--threads", "1"]
    assert main([*args, "--memory-format", "nchw", "--profile", str(tmp_path / "p.txt")]) == 0
    assert "amp none, NCHW, 1 threads:" in capsys.readouterr().out
    table = (tmp_path / "p.txt").read_text()
    assert "torch.profiler over 3 steps on cpu" in table and "aten::convolution_backward" in table
    assert main([*args, "--compile-mode", "fast"]) == 2  # refused before any work
    assert "compile_mode must be one of ('default', 'reduce-overhead'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, kind",
    [
        (
            "sm90_xmma_fprop_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc_tilesize128x128x64",
            "convolution (cuDNN / GEMM)",
        ),
        ("void cudnn::bn_fw_tr_1C11_kernel_NCHW<__nv_bfloat16, float, 512, true, 1>", "batch norm"),
        ("void cudnn::ops::nchwToNhwcKernel<__nv_bfloat16, __nv_bfloat16, float, false, true>", "copies / layout"),
        (
            "void at::native::vectorized_elementwise_kernel<4, at::native::threshold_kernel_impl>",
            "elementwise (ReLU, add, casts, loss)",
        ),
        ("void at::native::multi_tensor_apply_kernel<at::native::FusedAdamMathFunctor>", "optimizer (Adam)"),
        ("triton_per_fused__native_batch_norm_legit_functional_relu_0", "batch norm"),
        ("void at::native::reduce_kernel<512, 1>", "other"),
        ("void at::native::_scatter_gather_elementwise_kernel<128, 4>", "elementwise (ReLU, add, casts, loss)"),
    ],
)
def test_profile_kernel_kinds(name, kind):
    assert kernel_kind(name) == kind


def test_render_reads_a_scan_through_the_ingest_path(tmp_path):

    c = (2 * np.arange(40) + 1) / 40 - 1
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    scan = np.where(x**2 + (y / 0.6) ** 2 + z**2 < 0.5, 180, 0).astype(np.uint8)
    nrrd.write(str(tmp_path / "scan.nrrd"), scan, {"spacings": [0.5, 0.5, 1.0]}, index_order="C")
    assert (
        main(
            [
                "render",
                str(tmp_path / "scan.nrrd"),
                "-o",
                str(tmp_path / "r"),
                "--views",
                "2",
                "--size",
                "32",
                "--steps",
                "32",
                "--previews",
                "0",
                "--backend",
                "cpu",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "r" / "images.npy").max() > 0.3


def test_readme_lists_every_subcommand():
    """The README's `tomo` table names every subcommand of the parser (tomo cv-view and cv-summary were
    missing from it for two sessions); `tomo store-create / render-species / finalize` counts for each."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## The `tomo` command", 1)[1].split("```", 2)[1]
    listed = set()
    for line in block.splitlines():
        command = line.split("  ")[0]  # the command column, before the description
        listed |= {w for w in command.replace("/", " ").split() if not w.startswith(("-", "'"))}
    assert sorted(set(sub.choices) - listed) == []
