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
from torch import profiler
from torch.autograd import DeviceType

from .network import NetworkConfig, TomographyNet

__all__ = ["COMPILE_MODES", "bench_train", "kernel_kind"]

#: torch.compile's modes that ``tomo bench train --compile-mode`` takes ("max-autotune" is left out:
#: its autotuning of every convolution takes many minutes)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


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
    compile_mode: str = "default",
    memory_format: str = "nhwc",
    profile=None,
) -> dict:
    """Time ``repeats`` training steps of the ``preset`` network on a ``batch`` of random inputs
    (B, 1, S, S) and targets (B, D, S/2, S/2); ``threads`` > 0 sets torch's CPU threads; ``amp``
    ``"bf16"`` runs the forward pass under bf16 autocast, as training does on CUDA; ``cudnn_benchmark``
    lets cuDNN time its convolution algorithms in the warm-up steps and keep the fastest; ``compile``
    runs the network through ``torch.compile`` (compiled in the warm-up steps) with ``compile_mode``
    (one of :data:`COMPILE_MODES`; "reduce-overhead" replays the step's kernels as CUDA graphs, with
    ``torch.compiler.cudagraph_mark_step_begin()`` before each step); ``memory_format`` "nhwc"
    (every network's: ``torch.channels_last``, the layout cuDNN's tensor-core convolutions read
    without transposing) or "nchw" orders the network's weights and activations. ``profile``: a file that receives
    ``torch.profiler``'s table of the operators' own (self) device time, or CPU time without CUDA,
    over 3 more steps after the timing, and a summary of it by kind of kernel."""
    if amp not in ("none", "bf16"):
        raise ValueError(f"amp must be 'none' or 'bf16', got {amp!r}")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
    device = torch.device(device)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = getattr(NetworkConfig, preset)()
    model = TomographyNet(net).set_memory_format(memory_format).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    forward = torch.compile(model, mode=compile_mode) if compile else model
    graphs = compile and compile_mode == "reduce-overhead"
    x = torch.rand(batch, net.in_channels, net.input_size, net.input_size, device=device)
    y = torch.rand(batch, net.out_depth, net.out_size, net.out_size, device=device)

    def step() -> None:
        if graphs:  # the previous step's graph outputs may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
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
    if profile is not None:
        _profile(step, device, profile)
    seconds = float(np.median(times))
    return dict(
        preset=preset,
        batch=batch,
        amp=amp,
        cudnn_benchmark=cudnn_benchmark,
        compile=compile,
        compile_mode=compile_mode if compile else None,
        memory_format=memory_format,
        device=str(device),
        threads=torch.get_num_threads(),
        seconds_per_step=seconds,
        samples_per_s=batch / seconds,
        user_s_per_step=(r1.ru_utime - r0.ru_utime) / repeats,
        system_s_per_step=(r1.ru_stime - r0.ru_stime) / repeats,
        minor_faults_per_step=(r1.ru_minflt - r0.ru_minflt) / repeats,
    )


#: kinds of kernel in :func:`_profile`'s summary: the first pattern found in a name (lower case) wins
KERNEL_KINDS = (  # layout and batch norm first: cuDNN names its transposes and BN kernels "cudnn::..." too
    ("copies / layout", ("nchwtonhwc", "nhwctonchw", "transpose", "copy", "permute")),  # cat: CatArrayBatchedCopy
    ("batch norm", ("batch_norm", "batchnorm", "bn_")),
    ("optimizer (Adam)", ("adam", "foreach", "multi_tensor")),
    ("pooling / upsampling", ("pool", "upsample")),
    ("convolution (cuDNN / GEMM)", ("conv", "cudnn", "gemm", "sm90", "sm80", "cutlass", "xmma", "wgrad", "dgrad")),
    ("elementwise (ReLU, add, casts, loss)", ("elementwise", "relu", "threshold", "add", "mul", "mse", "triton")),
)


def kernel_kind(name: str) -> str:
    """The kind (:data:`KERNEL_KINDS`) of a device kernel's name; "other" where no pattern is found."""
    low = name.lower()
    return next((kind for kind, pats in KERNEL_KINDS if any(p in low for p in pats)), "other")


def _profile(step, device: torch.device, path) -> None:
    """Profile three ``step`` calls; write the operator table and a summary by kernel kind to ``path``."""
    cuda = device.type == "cuda"
    acts = [profiler.ProfilerActivity.CPU] + ([profiler.ProfilerActivity.CUDA] if cuda else [])
    with profiler.profile(activities=acts) as prof:
        for _ in range(3):
            step()
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    table = f"torch.profiler over 3 steps on {device}; sorted by {key}\n{events.table(sort_by=key, row_limit=40)}\n"
    with open(path, "w") as f:  # the table first: the summary below reads attributes only CUDA runs have
        f.write(table)
    kinds: dict[str, float] = {}
    for e in prof.events() if cuda else []:
        if e.device_type == DeviceType.CUDA:  # a kernel (or a copy) on the device
            kind = kernel_kind(e.name)
            kinds[kind] = kinds.get(kind, 0.0) + e.time_range.elapsed_us() / 3e3  # ms per step
    if not kinds:
        return
    total = sum(kinds.values())
    lines = [f"device kernels by kind, ms per step (total {total:.1f}):"]
    lines += [f"  {k:40s} {v:8.2f}  {100 * v / total:5.1f} %" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])]
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n")
