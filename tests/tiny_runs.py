"""The tiny demo stores and networks that the command-line tests build: their options in one place."""

from __future__ import annotations

from pathlib import Path

from model.cli import main


def demo_args(
    *,
    species: int = 3,
    held_out: int | None = None,
    val: int | None = None,
    test: int | None = None,
    views: int = 4,
    size: int = 32,
) -> list[str]:
    """``tomo build-demo`` options of a tiny store: ``species`` species, ``views`` views each,
    size² x-rays of ``size`` steps, size³ volumes, the CPU renderer (the last six items)."""
    args = ["--species", str(species)]
    for flag, value in (("--held-out", held_out), ("--val", val), ("--test", test)):
        if value is not None:
            args += [flag, str(value)]
    args += ["--views", str(views), "--size", str(size)]
    return args + ["--steps", str(size), "--volume-size", str(size), "--backend", "cpu"]


def build_demo(out, **options) -> Path:
    """``tomo build-demo -o out`` with :func:`demo_args` ``(**options)``; asserts that it succeeds and
    returns the store's path ``out/dataset.zarr``."""
    assert main(["build-demo", "-o", str(out), *demo_args(**options)]) == 0
    return Path(out) / "dataset.zarr"


#: ``tomo train`` / ``tomo model-info`` options of a tiny network: 32² in, 16 slices of 16², width 16
TINY_NET = [
    "--input-size",
    "32",
    "--out-depth",
    "16",
    "--out-size",
    "16",
    "--width",
    "16",
    "--stem-channels",
    "8",
    "--hourglass-levels",
    "2",
]


def train_args(*, steps: int = 2, batch_size: int = 2, val_samples: int = 2) -> list[str]:
    """``tomo train`` options of a short run: ``steps`` steps of ``batch_size``, no warm-up, one
    validation of ``val_samples`` samples and one checkpoint at the last step."""
    return [
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        "--warmup",
        "0",
        "--val-every",
        str(steps),
        "--val-samples",
        str(val_samples),
        "--ckpt-every",
        str(steps),
    ]
