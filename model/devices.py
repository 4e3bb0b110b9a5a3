"""The torch device a command runs on, from its ``--device`` text: the names accepted and the errors
in one place (training, inference, evaluation)."""

from __future__ import annotations

import torch

__all__ = ["torch_device"]


def torch_device(name: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """``"auto"`` (CUDA where torch sees a device, else the CPU), ``"cpu"``, ``"cuda"`` (device
    ``local_rank`` where given: a torchrun process's own GPU) or ``"cuda:N"``. ``ValueError`` for
    another name, for CUDA where torch sees none and for an N beyond the devices."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if dev.type == "cpu":
        return dev
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA device here (use cpu or auto)")
    index = dev.index if dev.index is not None else local_rank
    if index is not None and index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: there are {torch.cuda.device_count()} CUDA devices")
    return dev if index is None else torch.device("cuda", index)
