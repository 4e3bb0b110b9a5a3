"""Single-image tomography of a real radiograph (paper §4, §5.4): file in, view volume out.

Pipeline of :func:`infer_file`::

    read_xray  ->  polarity  ->  gamma  ->  alpha mask  ->  square  ->  resize (network input)
        -> network (D, n, n)  ->  fusion at the x-ray's resolution (or lateral upsampling)
        -> NRRD / NIfTI volume + preview PNGs + JSON record

Public API
----------
``read_xray(path) -> (image (H, W) float64 in [0, 1], info)``
``detect_polarity(image, mask=None) -> dict``
``prepare_xray(image, *, mask=None, polarity="auto", gamma=None, square="field", fill=FIELD_FILL)
    -> (square image, record)``   (:func:`infer_file` picks ``fill`` by :func:`model.ood.field_fill`)
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
The radiograph's reading: :mod:`model.xray_files`; polarity, gamma, air, background and square:
:mod:`model.xray` and :mod:`model.polarity`; the output files: :mod:`model.volume_io`.

**Output resolution**: the square side ``S`` of the prepared x-ray, or ``max_size`` when given and
smaller (the x-ray's optical depth is then area-averaged to ``max_size`` before fusion,
:func:`model.fusion.xray_at`, as ``tomo evaluate --fusion-at target`` does). With ``fusion=True`` the
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

**Speed and threads** (BatchNorm folding, ``channels_last``, ``threads="auto"``): :mod:`model.predict`,
where the network is loaded and run; the benchmark ``bench_infer``: :mod:`model.bench_infer`.
Both are re-exported here.

Steps of :func:`infer_file` (each a function; 1–2 below, 3–6 in :mod:`model.infer_outputs`):
:func:`_check_options` (every argument, before any work) -> :func:`_run_network` (read, prepare,
network, out-of-distribution check; warnings recorded) -> :func:`_output_grid` (resolution N,
spacing, origin) -> :func:`_write_volume_file` (slabs into the scratch file, then the volume file;
the preview planes gathered on the way) -> :func:`_write_previews` -> :func:`_record` (the JSON record).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomodata.files import json_text
from tomodata.store_settings import StoreSettings

from .bench_infer import bench_infer
from .devices import torch_device
from .fusion import _check_positive
from .infer_outputs import _output_grid, _record, _write_previews, _write_volume_file
from .network import NetworkConfig, TomographyNet
from .ood import GREY_AIR, field_fill, ood_check, shape_distance
from .polarity import MIN_SIDE, detect_polarity
from .predict import (
    _network_input,
    _resolve_threads,
    auto_threads,
    fold_batchnorm,
    load_model,
    optimize_for_inference,
    predict_volume,
)
from .volume_io import (
    VOLUME_SUFFIXES,
    _check_writable,
    _make_folder,
    _Outputs,
    _remove_empty,
    _stem,
    volume_suffix,
)
from .xray import (
    AIR_MODES,
    FIELD_FILL,
    SQUARE_MODES,
    _check_choice,
    _check_gamma,
    prepare_xray,
    read_xray,
    xray_file_problem,
)
from .xray_files import polarity_header

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

# --------------------------------------------------------------------------------------------------
# arguments
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
    return StoreSettings.chi, "default (the checkpoint does not say)"


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


@dataclass(frozen=True)
class _Options:
    """:func:`infer_file`'s arguments after :func:`_check_options`; kept as given where the checks do
    not convert them (``fusion``, ``previews``, ``device``, ``max_size``, ``beta`` without fusion)."""

    polarity: str  # "auto", "keep" or "invert"
    square: str  # one of SQUARE_MODES
    gamma: float | None  # value ** gamma after polarity; None: unchanged
    air: str  # "keep" or "subtract" the air's grey level
    fusion: Any  # truthy: fuse with the x-ray; else lateral upsampling
    beta: Any  # fusion sharpness, > 0 when fusion
    chi: float | None  # Beer–Lambert scale; None: the checkpoint's
    previews: Any  # truthy: write the preview PNGs
    device: Any  # torch device of the network, as given (the network cache keys on it)
    max_size: Any  # integer >= MIN_SIDE or None
    spacing: list[float] | None  # pixel_spacing as (row, column) mm; None: not given
    threads: int  # torch threads of the forward pass


def _check_options(
    polarity, square, gamma, air, fusion, beta, chi, previews, device, max_size, pixel_spacing, threads, /
) -> _Options:
    """Every argument of :func:`infer_file` checked before any work (ValueError naming the bad one),
    in :class:`_Options`' field order (``pixel_spacing`` becomes ``spacing``)."""
    polarity = _check_choice(polarity, "polarity", ("auto", "keep", "invert"))
    square = _check_choice(square, "square", SQUARE_MODES)
    gamma = _check_gamma(gamma)
    air = _check_choice(air, "air", AIR_MODES)
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
    torch_device(device)
    return _Options(polarity, square, gamma, air, fusion, beta, chi, previews, device, max_size, spacing_arg, n_threads)


# --------------------------------------------------------------------------------------------------
# the network's side: read, prepare, predict
# --------------------------------------------------------------------------------------------------


@dataclass
class _Prediction:
    """One radiograph through the network (:func:`_run_network`)."""

    sq: np.ndarray  # (S, S) float64 prepared x-ray (opacity in [0, 1])
    info: dict  # read_xray's record, alpha mask removed
    prep: dict  # prepare_xray's record (polarity, gamma, background, square)
    coarse: np.ndarray  # (D, n, n) float32 network output, raw (not clamped)
    cfg: NetworkConfig
    ck: dict  # load_model's record, plus threads and loadavg_1min
    chi: float  # Beer–Lambert scale used
    chi_source: str
    ood: dict  # model.ood.ood_check's record


def _run_network(xray_path, checkpoint, opts: _Options, timing: dict) -> tuple[_Prediction, list[str]]:
    """Steps 1–2 with the warnings on the way recorded: ``(prediction, their messages)``; the
    warnings are passed on to the caller too (only when both steps succeed)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = time.perf_counter()
        img, info = read_xray(xray_path)
        mask = info.pop("alpha_mask")
        timing["read_s"] = time.perf_counter() - t
        t = time.perf_counter()
        model, state, ck = cached_model(checkpoint, opts.device)
        timing["load_model_s"] = time.perf_counter() - t
        t = time.perf_counter()
        header = polarity_header(info)
        reference = state.get("xray_reference")
        try:
            sq, prep = prepare_xray(
                img,
                mask=mask,
                polarity=opts.polarity,
                gamma=opts.gamma,
                square=opts.square,
                header=header,
                air=opts.air,
                fill=_fill_chooser(model.config.input_size, reference) if reference else FIELD_FILL,
            )
        except ValueError as e:  # name the file: several radiographs may be on their way
            raise ValueError(f"{xray_path}: {e}") from None
        timing["prepare_s"] = time.perf_counter() - t
        pred = _predict(xray_path, model, state, ck, sq, info, prep, opts, timing)
    warn_list = [str(w.message) for w in caught]
    for w in caught:  # pass them on to the caller too
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return pred, warn_list


def _fill_chooser(size: int, reference: dict):
    """square="field"'s fill for :func:`prepare_xray`: the one nearest to the checkpoint's training
    x-rays (:func:`model.ood.field_fill`), kept only where the square at it measures nearer
    (:func:`model.ood.shape_distance`); :data:`model.xray.FIELD_FILL` otherwise (recorded)."""

    def choose(square_at) -> tuple[float, dict]:
        fill, choice = field_fill(_network_input(square_at(FIELD_FILL), size), FIELD_FILL, reference)
        if fill != FIELD_FILL:
            measured = shape_distance(_network_input(square_at(fill), size), reference)
            choice["mean_distance_measured"] = measured
            if not measured < choice["mean_distance_at_from_fill"]:  # the search's model failed on the image
                fill = FIELD_FILL
                choice.update(fill=FIELD_FILL, kept="the image squared at the fill found was not nearer")
        return fill, choice

    return choose


def far_warning(xray_path, ood: dict, air: str) -> str:
    """The warning of an x-ray far from every training x-ray (:func:`model.ood.ood_check`'s record
    ``ood``): the features outside the training range (else the two that part it most from its
    nearest training x-ray), and --air subtract only where the air reads as grey (border above
    :data:`model.ood.GREY_AIR` with ``air`` "keep")."""
    far = ", ".join(
        f"{k} {v['input']:.2f} (training {v['training_1_99'][0]:.2f}–{v['training_1_99'][1]:.2f})"
        for k, v in ood["outside"].items()
    ) or "the features together, mostly " + " and ".join(ood["largest_gaps"])
    grey = "border" in ood["outside"] and ood["features"]["border"] > GREY_AIR and air == "keep"
    return (
        f"{xray_path}: this x-ray is far from every training x-ray (distance {ood['distance']:.2f} > "
        f"{ood['threshold']:.2f}: {far}); the reconstruction may be unreliable ("
        + ("the air is grey, unlike the training x-rays' black: try --air subtract; " if grey else "")
        + "check --polarity, --gamma, --square)"
    )


def _predict(
    xray_path, model, state: dict, ck: dict, sq: np.ndarray, info: dict, prep: dict, opts: _Options, timing: dict
) -> _Prediction:
    """Step 2, the model's prediction and the out-of-distribution check (a warning when the x-ray is
    far from every training x-ray)."""
    chi_v, chi_src = _resolve_chi(opts.chi, state)
    t = time.perf_counter()
    coarse = predict_volume(model, sq, device=opts.device, threads=opts.threads)
    timing["network_s"] = time.perf_counter() - t
    ood = ood_check(_network_input(sq, model.config.input_size), state.get("xray_reference"))
    if ood["far"]:
        warnings.warn(far_warning(xray_path, ood, opts.air), UserWarning, stacklevel=4)  # infer_file's caller
    ck["threads"] = opts.threads
    try:
        ck["loadavg_1min"] = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover
        pass
    return _Prediction(sq, info, prep, coarse, model.config, ck, chi_v, chi_src, ood)


# --------------------------------------------------------------------------------------------------
# the whole pipeline
# --------------------------------------------------------------------------------------------------


def infer_file(
    xray_path,
    checkpoint,
    out_path,
    *,
    gamma: float | None = None,
    air: str = "keep",
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
        air: "keep", or "subtract" the air's grey level (a display offset; :func:`prepare_xray`).
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
        threads: torch threads for the forward pass: "auto" (:mod:`model.predict`) or an integer >= 1.

    Returns the record (also written to ``STEM.json``). ValueError for bad input; nothing is left
    behind on any error.
    """
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    out = Path(out_path)
    suffix = volume_suffix(out)
    opts = _check_options(
        polarity, square, gamma, air, fusion, beta, chi, previews, device, max_size, pixel_spacing, threads
    )
    if out.exists() and out.is_dir():
        raise ValueError(f"output {out} is a folder")
    _check_writable(out)
    pred, warn_list = _run_network(xray_path, checkpoint, opts, timing)
    grid = _output_grid(pred, opts, warn_list)

    folder = out.parent
    created = _make_folder(folder)
    outs = _Outputs(folder)
    stem = _stem(out, suffix)
    record_path = folder / f"{stem}.json"
    try:
        t = time.perf_counter()
        planes = _write_volume_file(out, suffix, outs, pred, grid, opts)
        timing["volume_s"] = time.perf_counter() - t
        t = time.perf_counter()
        scale = planes.vmax if planes.vmax > 0 else 1.0
        preview_paths = _write_previews(folder, stem, outs, pred.sq, planes, grid, scale) if opts.previews else {}
        timing["previews_s"] = time.perf_counter() - t
        timing["total_s"] = time.perf_counter() - t_start
        record = _record(out, suffix, record_path, opts, pred, grid, planes, preview_paths, scale, timing, warn_list)
        outs.temp(record_path).write_text(json_text(record), encoding="utf-8")
        outs.commit()
    except BaseException:
        outs.abort()
        _remove_empty(created)
        raise
    return record
