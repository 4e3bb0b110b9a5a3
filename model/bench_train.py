"""``tomo bench train``: the time of one training step of a network preset on synthetic data.

One step is what :func:`model.train.train` does per batch after loading it: forward, L2 loss against
targets of the network's output shape, backward, Adam. Inputs and targets are random (the cost does
not depend on their values), so no store is needed; the loader and the view-volume targets are
measured separately (docs/benchmarks.md). Reports seconds per step (median of ``repeats`` after
``warmup`` steps), samples/s, the process's CPU seconds (user, system) and minor page faults per step:
on the CPU, system time is mostly the kernel mapping fresh pages for freed-and-reallocated tensors.
"""

from __future__ import annotations

import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from .network import NetworkConfig, TomographyNet

__all__ = ["bench_train"]


def bench_train(
    preset: str = "demo",
    *,
    batch: int = 16,
    repeats: int = 5,
    warmup: int = 2,
    threads: int = 0,
    device="cpu",
    amp: str = "none",
    cudnn_benchmark: bool = False,
    compile: bool = False,
) -> dict:
    """Time ``repeats`` training steps of the ``preset`` network on a ``batch`` of random inputs
    (B, 1, S, S) and targets (B, D, S/2, S/2); ``threads`` > 0 sets torch's CPU threads; ``amp``
    ``"bf16"`` runs the forward pass under bf16 autocast, as training does on CUDA; ``cudnn_benchmark``
    lets cuDNN time its convolution algorithms in the warm-up steps and keep the fastest; ``compile``
    runs the network through ``torch.compile`` (compiled in the warm-up steps)."""
    if amp not in ("none", "bf16"):
        raise ValueError(f"amp must be 'none' or 'bf16', got {amp!r}")
    device = torch.device(device)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = getattr(NetworkConfig, preset)()
    model = TomographyNet(net).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if compile else model
    x = torch.rand(batch, net.in_channels, net.input_size, net.input_size, device=device)
    y = torch.rand(batch, net.out_depth, net.out_size, net.out_size, device=device)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            pred = forward(x)
        loss = F.mse_loss(pred.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times, r0 = [], resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    seconds = float(np.median(times))
    return dict(
        preset=preset,
        batch=batch,
        amp=amp,
        cudnn_benchmark=cudnn_benchmark,
        compile=compile,
        device=str(device),
        threads=torch.get_num_threads(),
        seconds_per_step=seconds,
        samples_per_s=batch / seconds,
        user_s_per_step=(r1.ru_utime - r0.ru_utime) / repeats,
        system_s_per_step=(r1.ru_stime - r0.ru_stime) / repeats,
        minor_faults_per_step=(r1.ru_minflt - r0.ru_minflt) / repeats,
    )
