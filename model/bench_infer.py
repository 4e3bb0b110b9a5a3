"""``tomo bench infer``: the CPU time of one x-ray through the network plus fusion, as
:func:`model.infer.infer_file` runs them (random weights; no files read or written).

``bench_infer(*, net="paper", size=256, fuse_to=512, repeats=3, compare=False, threads="auto")
    -> dict(seconds=..., network_s=..., fusion_s=..., first_call_s=..., [options])``

The speed options it compares and the thread rule: :mod:`model.predict`. ``from model.infer import
bench_infer`` keeps working (re-exported there).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from typing import Any

import numpy as np
import torch

from .data import resize_xrays
from .fusion import fuse_slabs
from .network import NetworkConfig, TomographyNet
from .polarity import MIN_SIDE
from .predict import (
    _resolve_threads,
    _rows_per_slab,
    _Threads,
    fold_batchnorm,
    optimize_for_inference,
    predict_volume,
)

__all__ = ["bench_infer"]


def _bench_xray(n: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic opacity image (n, n): a few Gaussian blobs on air, values in [0, 0.95]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n * 2 - 1
    img = np.zeros((n, n))
    for _ in range(12):
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        s = rng.uniform(0.05, 0.3)
        img += rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return 0.95 * (1 - np.exp(-img))


def _median(v) -> float:
    v = sorted(v)
    n = len(v)
    return float(v[n // 2]) if n % 2 else float(0.5 * (v[n // 2 - 1] + v[n // 2]))


def bench_infer(
    *,
    net: str = "paper",
    size: int = 256,
    fuse_to: int = 512,
    repeats: int = 3,
    compare: bool = False,
    threads="auto",
    seed: int = 0,
) -> dict:
    """Time one x-ray through the network plus fusion to ``fuse_to``² on the CPU, as
    :func:`model.infer.infer_file` runs them (random weights; no reading or writing of files).

    The network is the ``net`` preset with ``input_size = size`` (random weights, through
    :func:`optimize_for_inference`); a synthetic ``fuse_to``² opacity image is area-averaged to
    ``size`` for the network, and the prediction is fused with it at ``fuse_to``² (``fuse_slabs``,
    the slabs that ``infer_file`` would write). One cold run (the first call: oneDNN primitive
    creation, numba cache load) is timed apart, then ``repeats`` warm runs.

    Returns ``seconds`` (median warm total), ``network_s`` / ``fusion_s`` (their medians),
    ``first_call_s``, ``runs_s``, ``threads`` (torch threads used), ``loadavg_1min`` (before and
    after) and the sizes; with ``compare=True`` also ``options``: for each of eval / + BN folding /
    + channels_last / both, and 1 thread / torch's default, the warm median and minimum of the
    forward pass over ``repeats`` runs, interleaved so that a change of machine load hits all alike.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    for name, v in (("size", size), ("fuse_to", fuse_to)):
        if isinstance(v, bool) or not isinstance(v, int) or v < MIN_SIDE:
            raise ValueError(f"{name} must be an integer >= {MIN_SIDE}, got {v!r}")
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    n_threads = _resolve_threads(threads)
    base = NetworkConfig.preset(net)
    cfg = dataclasses.replace(base, input_size=size, out_size=size // 2).validate()
    torch.manual_seed(seed)
    model = TomographyNet(cfg).eval()
    fast = optimize_for_inference(model)
    xray = _bench_xray(fuse_to, seed)

    def once() -> tuple[float, float]:
        t0 = time.perf_counter()
        coarse = predict_volume(fast, xray, threads=n_threads)
        t1 = time.perf_counter()
        for _r0, _slab in fuse_slabs(coarse, xray, rows_per_slab=_rows_per_slab(coarse.shape[0], fuse_to)):
            pass
        return t1 - t0, time.perf_counter() - t1

    first = once()
    runs = [once() for _ in range(repeats)]
    res: dict[str, Any] = {
        "seconds": _median([a + b for a, b in runs]),
        "network_s": _median([a for a, _ in runs]),
        "fusion_s": _median([b for _, b in runs]),
        "first_call_s": float(sum(first)),
        "runs_s": [float(a + b) for a, b in runs],
        "net": net,
        "network": cfg.to_dict(),
        "size": size,
        "fuse_to": fuse_to,
        "repeats": repeats,
        "threads": n_threads,
        "settings": "eval, BatchNorm folded, channels_last, torch.inference_mode, float32",
    }
    if compare:
        res["options"] = _compare_options(model, fast, xray, cfg.input_size, repeats)
    res["loadavg_1min"] = [load0, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    return res


def _compare_options(model: torch.nn.Module, fast: torch.nn.Module, xray: np.ndarray, size: int, repeats: int) -> dict:
    """Warm forward-pass times of eval / + BN folding / + channels_last / both (``fast``), with 1
    thread and torch's default: ``{"VARIANT, N thread(s)": {"median_s", "min_s"}}``, interleaved."""
    x = resize_xrays(torch.from_numpy(xray.astype(np.float32))[None, None], size)
    cl = torch.channels_last
    variants = {
        "eval": model,
        "eval+fold_bn": fold_batchnorm(model),
        "eval+channels_last": copy.deepcopy(model).to(memory_format=cl),  # type: ignore[call-overload]
        "eval+fold_bn+channels_last": fast,
    }
    counts = sorted({1, max(1, torch.get_num_threads())})
    times: dict[tuple[str, int], list[float]] = {}
    with torch.inference_mode():
        for n in counts:  # warm every variant once per thread count
            with _Threads(n):
                for m in variants.values():
                    m(x)
        for _ in range(repeats):
            for n in counts:
                with _Threads(n):
                    for name, m in variants.items():
                        t = time.perf_counter()
                        m(x)
                        times.setdefault((name, n), []).append(time.perf_counter() - t)
    return {
        f"{name}, {n} thread{'s' if n > 1 else ''}": {"median_s": _median(v), "min_s": min(v)}
        for (name, n), v in times.items()
    }
