"""The trained network at inference, and the volume's slabs: the layer below :mod:`model.infer`.

``load_model(checkpoint, *, device="cpu", optimize=True) -> (model, state, record)``
``fold_batchnorm(model) -> model``   (a copy with every BatchNorm folded into its convolution)
``optimize_for_inference(model) -> model``   (eval + BN folded + channels_last, a copy)
``auto_threads() -> int``   (the ``threads="auto"`` rule)
``predict_volume(model, image, *, device="cpu", threads="auto") -> (D, n, n) float32``
``_upsample_slabs(coarse, N, rows)`` / ``_rows_per_slab(D, N)``: the no-fusion volume and the slab
size (rows of output, ≈ ``SLAB_BYTES`` each) that :func:`model.infer.infer_file` writes and
:func:`model.bench_infer.bench_infer` times.

**Speed** (CPU; ``optimize_for_inference``). The model is put in eval mode, every BatchNorm is folded
into the preceding convolution / transposed convolution (``fold_batchnorm``; exact up to float
rounding), its weights are converted to ``channels_last`` (oneDNN's native NHWC layout: no reorders
between layers), and the forward pass runs under ``torch.inference_mode``. Measured on this
project's shared 2-core AMD EPYC (AVX2, no AVX-512/AMX; other jobs running, load 2–7), paper network,
one 256² input, interleaved warm runs, 1 thread (the stable figures; medians): eval 1.38 s, + BN
folding 1.26 s, + channels_last 1.32 s, both 1.11 s (−20 %); with 2 threads the minima were 0.72–0.90 s
but the medians 2–4 s under load, ≈ 0.65–0.8 s at load ≈ 2. bf16 autocast: 193 s (~50x *slower*: no
native bf16 on this CPU). TorchScript trace + freeze / ``torch.jit.optimize_for_inference``: no gain
over folding, 4–8 s of preparation. ``torch.utils.mkldnn.to_mkldnn``: no gain. The first call costs
1.5–3 s more (oneDNN primitive creation). ``bench_infer(compare=True)`` re-measures the options.

**Threads**: ``threads="auto"`` (default, :func:`auto_threads`) uses torch's default thread count
``n`` (= cores) unless the machine is oversubscribed (1-minute load average above the core count),
then its fair share ``round(n · cores / load)``, at least 1. On the 2-core machine with other jobs
running at load 5–7, 2 OpenMP threads were 1.5–2x *slower* than 1 (every layer's parallel region
waits at a barrier for a thread the OS has descheduled); at load ≈ 2.5, 2 threads were still faster.
The thread count is set for the forward pass only and restored afterwards; it is recorded.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .checkpoint import load_checkpoint
from .data import resize_xrays
from .devices import torch_device
from .fusion import as_density, bilinear_taps
from .network import NetworkConfig, TomographyNet

#: bytes per fused / upsampled slab of output rows
SLAB_BYTES = 64 * 2**20
ModuleT = TypeVar("ModuleT", bound=nn.Module)

# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------


def fold_batchnorm(model: ModuleT) -> ModuleT:
    """A copy of ``model`` in eval mode with every ``BatchNorm2d`` that directly follows a ``Conv2d``
    or ``ConvTranspose2d`` inside an ``nn.Sequential`` folded into that convolution (weights scaled by
    ``gamma / sqrt(var + eps)``, bias ``beta − mean · scale``) and replaced by ``nn.Identity``. This is
    the whole BN cost of :class:`~model.network.TomographyNet`; the original model is not changed."""
    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if not isinstance(mod, nn.Sequential):
            continue
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = mod._modules[a], mod._modules[b]
            if (
                isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
                and isinstance(bn, nn.BatchNorm2d)
                and bn.track_running_stats
                and bn.running_mean is not None
            ):
                mod._modules[a] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                mod._modules[b] = nn.Identity()
    return m


def optimize_for_inference(model: ModuleT) -> ModuleT:
    """A copy of ``model`` for inference: eval mode, BatchNorm folded (:func:`fold_batchnorm`) and
    weights in ``channels_last`` memory format. Same outputs to float rounding."""
    # Module.to takes memory_format (documented), which its type overloads leave out
    return fold_batchnorm(model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def auto_threads() -> int:
    """The ``threads="auto"`` rule: torch's default thread count ``n`` (= cores) while the 1-minute load
    average is at most the number of cores, else the fair share ``round(n · cores / load)``, at
    least 1 (an oversubscribed machine: see the module docstring)."""
    default = max(1, torch.get_num_threads())
    cores = os.cpu_count() or default
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return default
    return int(min(default, max(1, round(default * cores / max(load, cores, 1e-9)))))


def _resolve_threads(threads) -> int:
    if isinstance(threads, str) and threads == "auto":
        return auto_threads()
    if isinstance(threads, (int, np.integer)) and not isinstance(threads, bool) and threads >= 1:
        return int(threads)
    raise ValueError(f"threads must be 'auto' or an integer >= 1, got {threads!r}")


class _Threads:
    """Set torch's intra-op thread count for a block and restore it afterwards."""

    def __init__(self, threads):
        self.n = _resolve_threads(threads)

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n != self.old:
            torch.set_num_threads(self.n)
        return self.n

    def __exit__(self, *exc):
        if torch.get_num_threads() != self.old:
            torch.set_num_threads(self.old)
        return False


def load_model(checkpoint, *, device="cpu", optimize: bool = True) -> tuple[TomographyNet, dict, dict]:
    """Load a training checkpoint for inference: ``(model, state, record)``.

    The model is in eval mode on ``device``, through :func:`optimize_for_inference` when ``optimize``
    (BN folded, channels_last). ValueError for a file that
    is not a checkpoint, a network config that is invalid or does not take a 1-channel x-ray, weights
    that do not fit the config, or non-finite weights."""
    dev = torch_device(device)
    p = Path(checkpoint)
    state = load_checkpoint(p)
    if not isinstance(state.get("network"), dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{p}: the checkpoint lacks its network config or weights")
    try:
        cfg = NetworkConfig.from_dict(state["network"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: unusable network config {state['network']}: {exc}") from None
    if cfg.in_channels != 1:
        raise ValueError(f"{p}: the network takes {cfg.in_channels}-channel input; an x-ray (opacity) has 1 channel")
    model = TomographyNet(cfg)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{p}: the weights do not match the checkpoint's network config: {str(exc).splitlines()[0]}"
        ) from None
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{p}: non-finite values in the weights ({name})")
    model.eval()
    if optimize:
        model = optimize_for_inference(model)
    model = model.to(dev)
    data = state.get("data")
    if not isinstance(data, dict):
        data = {}
    rec = {
        "path": str(p),
        "step": state.get("step"),
        "code_version": state.get("code_version"),
        "network": cfg.to_dict(),
        "data": {
            k: data[k] for k in ("spec_version", "chi", "steps", "image_size", "volume_size", "n_views") if k in data
        },
        "batchnorm_folded": bool(optimize),
        "channels_last": bool(optimize),
        "device": str(dev),
    }
    return model, state, rec


def _network_config(model: nn.Module):
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ValueError("model has no .config (expected a TomographyNet)")
    return cfg


def predict_volume(model: nn.Module, image, *, device="cpu", threads="auto") -> np.ndarray:
    """Run the network on a square (S, S) opacity image: resized to ``input_size`` (area averaging
    down, bilinear up), forward under ``torch.inference_mode`` with ``threads`` torch threads
    ("auto": :func:`auto_threads`); returns the (D, n, n) float32 view volume (raw, not clamped)."""
    cfg = _network_config(model)
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expected a square (S, S) image, got shape {x.shape}")
    dev = torch_device(device)
    with _Threads(threads), torch.inference_mode():
        t = resize_xrays(torch.from_numpy(np.ascontiguousarray(x))[None, None], cfg.input_size)
        y = model(t.to(dev))
    return np.ascontiguousarray(y[0].float().cpu().numpy())


# --------------------------------------------------------------------------------------------------
# slabs: fusion or lateral upsampling, row block by row block
# --------------------------------------------------------------------------------------------------


def _upsample_slabs(coarse: np.ndarray, N: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """The no-fusion volume: ``coarse`` (D, h, w) as densities (clamped to [0, 1]), bilinear to (D, N, N)
    (fusion's step 1, :func:`model.fusion.upsample_lateral`, streamed), as
    ``(first row, (D, rows, N) float32 slab)`` pairs of up to ``rows`` output rows."""
    c = as_density(np.asarray(coarse, np.float64))
    yi0, yi1, yf = bilinear_taps(c.shape[1], N)
    xi0, xi1, xf = bilinear_taps(c.shape[2], N)
    cx = c[:, :, xi0] * (1.0 - xf) + c[:, :, xi1] * xf  # (D, h, N): columns first (small)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        f = yf[r0:r1][None, :, None]
        yield r0, (cx[:, yi0[r0:r1]] * (1.0 - f) + cx[:, yi1[r0:r1]] * f).astype(np.float32)


def _rows_per_slab(D: int, N: int) -> int:
    """Output rows per slab of a (D, N, N) float32 volume: about ``SLAB_BYTES``, at least 1, at most N."""
    return int(max(1, min(N, SLAB_BYTES // max(1, D * N * 4))))


def _network_input(sq: np.ndarray, size: int) -> np.ndarray:
    """The (size, size) image the network sees (:func:`model.data.resize_xrays`)."""
    return resize_xrays(torch.from_numpy(np.ascontiguousarray(sq, np.float32))[None, None], size)[0, 0].numpy()
