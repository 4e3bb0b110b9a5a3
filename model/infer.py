"""Single-image tomography of a real radiograph (paper §4, §5.4): file in, view volume out.

Pipeline of :func:`infer_file`::

    read_xray  ->  polarity  ->  gamma  ->  alpha mask  ->  square  ->  resize (network input)
        -> network (D, n, n)  ->  fusion at the x-ray's resolution (or lateral upsampling)
        -> NRRD / NIfTI volume + preview PNGs + JSON record

Public API
----------
``read_xray(path) -> (image (H, W) float64 in [0, 1], info)``
``detect_polarity(image, mask=None) -> dict``
``prepare_xray(image, *, mask=None, polarity="auto", gamma=None, square="field") -> (square image, record)``
``xray_file_problem(path) -> str | None``   (cheap pre-check of an input file: why it cannot be read)
``load_model(checkpoint, *, device="cpu", optimize=True) -> (model, state, record)``
``cached_model(checkpoint, device="cpu") -> (model, state, record)``   (load_model, kept for the next call)
``fold_batchnorm(model) -> model``   (a copy with every BatchNorm folded into its convolution)
``optimize_for_inference(model) -> model``   (eval + BN folded + channels_last, a copy)
``predict_volume(model, image, *, device="cpu", threads="auto") -> (D, n, n) float32``
``infer_file(xray_path, checkpoint, out_path, *, gamma=None, fusion=True, beta=2.0, chi=None,
             polarity="auto", square="field", previews=True, device="cpu", max_size=None,
             pixel_spacing=None, threads="auto") -> dict``   (the record that is also written as JSON)
``bench_infer(*, net="paper", size=256, fuse_to=512, repeats=3, compare=False, threads="auto")
    -> dict(seconds=..., network_s=..., fusion_s=..., first_call_s=..., [options])``

Rules (every decision is written to the JSON record)
----------------------------------------------------
The radiograph's reading, polarity, gamma, background and square: :mod:`model.xray` and
:mod:`model.polarity`; the output files: :mod:`model.volume_io`.

**Output resolution**: the square side ``S`` of the prepared x-ray, or ``max_size`` when given and
smaller (the x-ray is then area-averaged to ``max_size`` before fusion). With ``fusion=True`` the
network's (D, n, n) view volume is fused with the x-ray at that resolution (``model.fusion``, paper
Eq. 2); the result re-renders (``1 − exp(−chi · mean over depth)``) to the prepared x-ray. With
``fusion=False`` the prediction, clamped to [0, 1], is upsampled laterally (bilinear per depth slice,
``align_corners=False`` with edge clamp, the same as fusion's first step) to the same resolution, so
that outputs with and without fusion share one grid and one spacing. Depth stays D.

**Memory**. The volume is never held whole: fusion (``fuse_slabs``) or upsampling runs in slabs of
output rows (≈ 64 MiB each) that are written at their offsets into a pre-sized scratch file (raw
float32, one contiguous block per depth slice), which pynrrd or nibabel then write into the output
file from a memory map (:func:`model.volume_io.write_volume`; measured: 14 MB (NRRD) and 50 MB
(.nii.gz) of heap for a 2048² × 64 volume of 1 GB). A 2048² x-ray with D = 128 thus needs about
4 GB of disk for a moment (scratch and output), not of RAM; ``max_size`` caps the resolution when
that is too much.

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
import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from tomodata.files import json_safe

from .data import resize_xrays
from .fusion import _check_positive, fuse_slabs, opacity_max
from .network import NetworkConfig, TomographyNet
from .ood import ood_check
from .polarity import MIN_SIDE, detect_polarity
from .train import load_checkpoint
from .volume_io import (
    PREVIEW_MAX,
    PREVIEWS,
    VOLUME_SUFFIXES,
    _fit,
    _Outputs,
    _stem,
    _u8,
    _write_png,
    volume_suffix,
    write_volume,
)
from .xray import (
    SQUARE_MODES,
    _check_choice,
    _check_gamma,
    prepare_xray,
    read_xray,
    xray_file_problem,
)

__all__ = [
    "VOLUME_SUFFIXES",
    "bench_infer",
    "cached_model",
    "detect_polarity",
    "fold_batchnorm",
    "infer_file",
    "auto_threads",
    "load_model",
    "optimize_for_inference",
    "predict_volume",
    "prepare_xray",
    "read_xray",
    "volume_suffix",
    "xray_file_problem",
]

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


def _device(device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return dev


def load_model(checkpoint, *, device="cpu", optimize: bool = True) -> tuple[TomographyNet, dict, dict]:
    """Load a training checkpoint for inference: ``(model, state, record)``.

    The model is in eval mode on ``device``, through :func:`optimize_for_inference` when ``optimize``
    (BN folded, channels_last). ValueError for a file that
    is not a checkpoint, a network config that is invalid or does not take a 1-channel x-ray, weights
    that do not fit the config, or non-finite weights."""
    dev = _device(device)
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
    dev = _device(device)
    with _Threads(threads), torch.inference_mode():
        t = resize_xrays(torch.from_numpy(np.ascontiguousarray(x))[None, None], cfg.input_size)
        y = model(t.to(dev))
    return np.ascontiguousarray(y[0].float().cpu().numpy())


# --------------------------------------------------------------------------------------------------
# slabs: fusion or lateral upsampling, row block by row block
# --------------------------------------------------------------------------------------------------


def _axis_taps(n_in: int, n_out: int):
    """Bilinear taps, align_corners=False with edge clamp (the same rule as model.fusion)."""
    src = np.clip((np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def _upsample_slabs(coarse: np.ndarray, N: int, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    c = np.clip(np.asarray(coarse, np.float64), 0.0, 1.0)
    yi0, yi1, yf = _axis_taps(c.shape[1], N)
    xi0, xi1, xf = _axis_taps(c.shape[2], N)
    cx = c[:, :, xi0] * (1.0 - xf) + c[:, :, xi1] * xf  # (D, h, N): columns first (small)
    for r0 in range(0, N, rows):
        r1 = min(N, r0 + rows)
        f = yf[r0:r1][None, :, None]
        yield r0, (cx[:, yi0[r0:r1]] * (1.0 - f) + cx[:, yi1[r0:r1]] * f).astype(np.float32)


def _rows_per_slab(D: int, N: int) -> int:
    return int(max(1, min(N, SLAB_BYTES // max(1, D * N * 4))))


# --------------------------------------------------------------------------------------------------
# the whole pipeline
# --------------------------------------------------------------------------------------------------


def _resolve_chi(chi, state: dict) -> tuple[float, str]:
    if chi is not None:
        return _check_positive(chi, "chi"), "argument"
    data = state.get("data")
    if not isinstance(data, dict):
        data = {}
    c: Any = data.get("chi")
    try:
        c = float(c)
        if math.isfinite(c) and c > 0:
            return c, "checkpoint data"
    except (TypeError, ValueError):
        pass
    return 10.0, "default (the checkpoint does not say)"


def _check_spacing(pixel_spacing):
    if pixel_spacing is None:
        return None
    vals: list[Any] = [pixel_spacing, pixel_spacing] if np.isscalar(pixel_spacing) else list(pixel_spacing)
    try:
        nums = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise ValueError(f"pixel_spacing must be a positive number or (row, column), got {pixel_spacing!r}") from None
    if len(nums) != 2 or not all(math.isfinite(v) and v > 0 for v in nums):
        raise ValueError(f"pixel_spacing must be a positive number or (row, column), got {pixel_spacing!r}")
    return nums


_MODELS: dict = {}


def _network_input(sq: np.ndarray, size: int) -> np.ndarray:
    """The (size, size) image the network sees (:func:`model.data.resize_xrays`)."""
    return resize_xrays(torch.from_numpy(np.ascontiguousarray(sq, np.float32))[None, None], size)[0, 0].numpy()


def cached_model(checkpoint, device="cpu") -> tuple[TomographyNet, dict, dict]:
    """``load_model(checkpoint, device=device, optimize=True)``, kept for the next radiograph (a call
    with several inputs builds the network once; :func:`infer_file` uses it). Keyed by the file's
    path, size and modification time, so a rewritten checkpoint reloads; one network at a time."""
    try:
        st = os.stat(checkpoint)
    except OSError:
        return load_model(checkpoint, device=device, optimize=True)  # its own error message
    key = (os.path.abspath(checkpoint), st.st_size, st.st_mtime_ns, str(device))
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_model(checkpoint, device=device, optimize=True)
    return _MODELS[key]


def infer_file(
    xray_path,
    checkpoint,
    out_path,
    *,
    gamma: float | None = None,
    fusion: bool = True,
    beta: float = 2.0,
    chi: float | None = None,
    polarity: str = "auto",
    square: str = "field",
    previews: bool = True,
    device="cpu",
    max_size: int | None = None,
    pixel_spacing=None,
    threads="auto",
) -> dict:
    """Reconstruct the view volume of a real radiograph and write it (rules: module docstring).

    Args:
        xray_path: PNG / JPEG / TIFF / DICOM … file.
        checkpoint: a training checkpoint (``model.train``).
        out_path: ``.nrrd``, ``.nii`` or ``.nii.gz``; previews and ``STEM.json`` go next to it.
        gamma: undo a display gamma: ``value ** gamma`` after polarity (None: no change).
        fusion: fuse with the x-ray at its resolution (paper §4.2); False: upsample laterally.
        beta: fusion sharpness (Eq. 2).
        chi: Beer–Lambert scale; None: the checkpoint's data ``chi``, else 10.
        polarity: "auto" (detect; module docstring), "keep" or "invert".
        square: "crop" (centre crop to the short side) or "pad" (to the long side, background value).
        previews: write the preview PNGs.
        device: torch device of the network ("cpu", "cuda").
        max_size: cap on the output's lateral resolution (None: the prepared x-ray's side).
        pixel_spacing: (row, column) mm of the x-ray's pixels, overriding the file's (None: DICOM's
            if any, else unknown = 1.0 per input pixel).
        threads: torch threads for the forward pass: "auto" (module docstring) or an integer >= 1.

    Returns the record (also written to ``STEM.json``). ValueError for bad input; nothing is left
    behind on any error.
    """
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    out = Path(out_path)
    suffix = volume_suffix(out)
    polarity = _check_choice(polarity, "polarity", ("auto", "keep", "invert"))
    square = _check_choice(square, "square", SQUARE_MODES)
    gamma = _check_gamma(gamma)
    if fusion:
        beta = _check_positive(beta, "beta")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < MIN_SIDE
    ):
        raise ValueError(f"max_size must be an integer >= {MIN_SIDE} or None, got {max_size!r}")
    spacing_arg = _check_spacing(pixel_spacing)
    n_threads = _resolve_threads(threads)
    if chi is not None:
        chi = _check_positive(chi, "chi")
    _device(device)
    if out.exists() and out.is_dir():
        raise ValueError(f"output {out} is a folder")
    warn_list: list[str] = []

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # 1. read + prepare (nothing written yet)
        t = time.perf_counter()
        img, info = read_xray(xray_path)
        mask = info.pop("alpha_mask")
        timing["read_s"] = time.perf_counter() - t
        t = time.perf_counter()
        header = f"PhotometricInterpretation {info['photometric']}" if info.get("photometric") else None
        try:
            sq, prep = prepare_xray(img, mask=mask, polarity=polarity, gamma=gamma, square=square, header=header)
        except ValueError as e:  # name the file: several radiographs may be on their way
            raise ValueError(f"{xray_path}: {e}") from None
        timing["prepare_s"] = time.perf_counter() - t
        # 2. model
        t = time.perf_counter()
        model, state, ck = cached_model(checkpoint, device)
        chi_v, chi_src = _resolve_chi(chi, state)
        timing["load_model_s"] = time.perf_counter() - t
        t = time.perf_counter()
        coarse = predict_volume(model, sq, device=device, threads=n_threads)
        timing["network_s"] = time.perf_counter() - t
        ood = ood_check(_network_input(sq, model.config.input_size), state.get("xray_reference"))
        if ood["far"]:
            far = (
                ", ".join(
                    f"{k} {v['input']:.2f} (training {v['training_1_99'][0]:.2f}–{v['training_1_99'][1]:.2f})"
                    for k, v in ood["outside"].items()
                )
                or "the features together"
            )
            warnings.warn(
                f"{xray_path}: this x-ray is far from every training x-ray (distance {ood['distance']:.1f} > "
                f"{ood['threshold']:.1f}: {far}); the reconstruction may be unreliable (check --polarity, "
                "--gamma, --square)",
                UserWarning,
                stacklevel=2,
            )
        ck["threads"] = n_threads
        try:
            ck["loadavg_1min"] = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover
            pass
    warn_list += [str(w.message) for w in caught]
    for w in caught:  # pass them on to the caller too
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    cfg = model.config
    D = int(coarse.shape[0])
    S = int(sq.shape[0])
    N = S if max_size is None else min(S, int(max_size))
    xr = sq if N == S else cv2.resize(sq, (N, N), interpolation=cv2.INTER_AREA)
    xr = np.clip(xr, 0.0, 1.0)

    # spacing
    px = spacing_arg or info.get("pixel_spacing_mm")
    sp_src = "argument pixel_spacing" if spacing_arg else info.get("pixel_spacing_source")
    unit_mm = px is not None
    if px is None:
        px = [1.0, 1.0]
        sp_src = "unknown: 1.0 per input pixel"
    if unit_mm and abs(px[0] - px[1]) > 1e-6 * max(px):
        warn_list.append(f"anisotropic pixel spacing {px} (row, column): the network assumes square pixels")
        warnings.warn(warn_list[-1], UserWarning, stacklevel=2)
    sy, sx = px[0] * S / N, px[1] * S / N
    extent_y, extent_x = sy * N, sx * N
    sz = 0.5 * (extent_y + extent_x) / D
    spacing_zyx = (sz, sy, sx)
    origin_xyz = (-extent_x / 2 + sx / 2, -extent_y / 2 + sy / 2, -sz * D / 2 + sz / 2)

    folder = out.parent
    created: list[Path] = []
    d = folder
    while not d.exists():
        created.append(d)
        d = d.parent
    folder.mkdir(parents=True, exist_ok=True)
    outs = _Outputs(folder)
    fh = None
    stem = _stem(out, suffix)
    record_path = folder / f"{stem}.json"
    preview_paths: dict[str, str] = {}
    try:
        # 3. volume, slab by slab, into a memory map of the output file
        t = time.perf_counter()
        rows = _rows_per_slab(D, N)
        if fusion:
            slabs = fuse_slabs(coarse, xr, beta=beta, chi=chi_v, rows_per_slab=rows)
        else:
            slabs = _upsample_slabs(coarse, N, rows)
        extra = {
            "tomo_array_axes": "z y x = depth, image rows, image columns (C order (D, H, W))",
            "tomo_spacing_source": sp_src,
            "tomo_fusion": str(bool(fusion)),
        }
        descrip = f"tomo view volume zyx=depth,rows,cols fused={int(bool(fusion))}"
        raw_path = outs.scratch(out.name + ".raw")  # (D, N, N) float32, then written by pynrrd / nibabel
        nbytes = D * N * N * 4
        fh = open(raw_path, "w+b")
        fh.truncate(nbytes)
        c_mid, r_mid, k_mid = N // 2, N // 2, D // 2
        coronal = np.zeros((N, N), np.float32)
        axial = np.zeros((D, N), np.float32)
        sagittal = np.zeros((D, N), np.float32)
        mip_depth = np.zeros((N, N), np.float32)
        mip_side = np.zeros((D, N), np.float32)
        rerender_err = 0.0
        vmin, vmax = math.inf, -math.inf
        for r0, slab in slabs:
            r1 = r0 + slab.shape[1]
            slab = np.ascontiguousarray(slab, dtype="<f4")
            for k in range(D):  # rows r0:r1 of depth slice k are contiguous in the (D, N, N) file
                fh.seek(4 * (k * N * N + r0 * N))
                fh.write(memoryview(slab[k]).cast("B"))
            coronal[r0:r1] = slab[k_mid]
            if r0 <= r_mid < r1:
                axial[:] = slab[:, r_mid - r0]
            sagittal[:, r0:r1] = slab[:, :, c_mid]
            mip_depth[r0:r1] = slab.max(axis=0)
            mip_side[:, r0:r1] = slab.max(axis=2)
            vmin, vmax = min(vmin, float(slab.min())), max(vmax, float(slab.max()))
            if fusion:
                rr = -np.expm1(-chi_v * slab.mean(axis=0, dtype=np.float64))
                target = np.minimum(xr[r0:r1], opacity_max(chi_v))
                rerender_err = max(rerender_err, float(np.abs(rr - target).max()))
        fh.close()
        write_volume(outs.temp(out), suffix, raw_path, (D, N, N), spacing_zyx, origin_xyz, unit_mm, extra, descrip)
        raw_path.unlink()
        timing["volume_s"] = time.perf_counter() - t

        # 4. previews
        t = time.perf_counter()
        scale = vmax if vmax > 0 else 1.0
        if previews:
            Np = min(N, PREVIEW_MAX)
            imgs = {
                "xray": _u8(_fit(sq, (S, S)), 1.0),
                "coronal": _u8(_fit(coronal, (N, N)), scale),
                "axial": _u8(_fit(axial, (Np, Np)), scale),
                "sagittal": _u8(_fit(sagittal.T, (Np, Np)), scale),
                "mip_depth": _u8(_fit(mip_depth, (N, N)), scale),
                "mip_side": _u8(_fit(mip_side.T, (Np, Np)), scale),
            }
            for name in PREVIEWS:
                im = imgs[name]
                final = folder / f"{stem}_{name}.png"
                _write_png(outs.temp(final), im)
                preview_paths[name] = str(final)
        timing["previews_s"] = time.perf_counter() - t
        timing["total_s"] = time.perf_counter() - t_start

        record = {
            "input": info,
            **prep,
            "sizes": {
                "input_hw": [info["height"], info["width"]],
                "square": S,
                "network_input": int(cfg.input_size),
                "network_output_dhw": [D, int(coarse.shape[1]), int(coarse.shape[2])],
                "output_dhw": [D, N, N],
                "max_size": None if max_size is None else int(max_size),
                "resize_rule": "area averaging down to the network input (model.data.resize_xrays); "
                "the fused x-ray area-averaged to max_size when given",
            },
            "checkpoint": ck,
            "ood": ood,
            "fusion": {
                "enabled": bool(fusion),
                "beta": float(beta) if fusion else None,
                "chi": chi_v,
                "chi_source": chi_src,
                "rows_per_slab": rows,
                "rerender_max_abs_error": rerender_err if fusion else None,
                "no_fusion_rule": None
                if fusion
                else "prediction clamped to [0, 1], bilinear lateral upsampling to the output resolution",
            },
            "output": {
                "path": str(out),
                "format": suffix,
                "dtype": "float32",
                "array_axes": "z, y, x = depth, image rows, image columns; file axes (x, y, z)",
                "shape_zyx": [D, N, N],
                "spacing_zyx": list(spacing_zyx),
                "spacing_unit": "mm" if unit_mm else "input pixel (unknown physical size)",
                "spacing_source": sp_src,
                "depth_spacing_rule": "lateral extent / D (the view volume spans [-1, 1] in depth as laterally)",
                "origin_xyz": list(origin_xyz),
                "value_range": [vmin, vmax],
            },
            "previews": {"files": preview_paths, "display_range": [0.0, scale]} if previews else None,
            "timing": timing,
            "warnings": warn_list,
            "record": str(record_path),
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
        }
        record = json_safe(record)
        outs.temp(record_path).write_text(json.dumps(record, indent=2))
        outs.commit()
    except BaseException:
        if fh is not None:
            fh.close()
        outs.abort()
        for dd in created:  # folders this call made, innermost first, if left empty
            try:
                dd.rmdir()
            except OSError:
                break
        raise
    return record


# --------------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------------


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
    :func:`infer_file` runs them (random weights; no reading or writing of files).

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
        x = resize_xrays(torch.from_numpy(xray.astype(np.float32))[None, None], cfg.input_size)
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
        res["options"] = {
            f"{name}, {n} thread{'s' if n > 1 else ''}": {"median_s": _median(v), "min_s": min(v)}
            for (name, n), v in times.items()
        }
    res["loadavg_1min"] = [load0, os.getloadavg()[0] if hasattr(os, "getloadavg") else None]
    return res
