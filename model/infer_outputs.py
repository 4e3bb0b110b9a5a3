"""The output files of :func:`model.infer.infer_file` (its steps 3–6): the volume's grid (resolution,
spacing, origin), the volume file written slab by slab through a scratch file, the preview PNGs and
the JSON record. The rules: :mod:`model.infer`'s docstring; the file formats: :mod:`model.volume_io`."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tomodata.files import json_safe
from tomodata.previews import write_png

from .fusion import fuse_slabs, rerender_error, xray_at
from .predict import _rows_per_slab, _upsample_slabs
from .volume_io import PREVIEW_MAX, PREVIEWS, _fit, _Outputs, _u8, write_volume

if TYPE_CHECKING:
    from .infer import _Options, _Prediction


@dataclass(frozen=True)
class _Grid:
    """The output volume's grid (:func:`_output_grid`): (D, N, N), spacing in mm or input pixels."""

    D: int  # depth slices (the network's)
    S: int  # side of the prepared square x-ray
    N: int  # output side: S, or max_size when smaller
    xr: np.ndarray  # (N, N) float64 x-ray fused with, clipped to [0, 1]
    rows: int  # output rows per slab
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    unit_mm: bool  # spacing in mm (else in input pixels of unknown size)
    spacing_source: str | None


#: bytes in a GiB (the size above which the output's size is named, with --max-size)
_GIB = float(2**30)


def _resize_rule(square: int, net: int) -> str:
    """How ``model.data.resize_xrays`` takes a ``square``-pixel film to the network's ``net`` pixels."""
    if square == net:
        return "none (the square is the network input's size)"
    return "area averaging down" if square > net else "bilinear (pixel centres) up"


def _output_grid(pred: _Prediction, opts: _Options, warn_list: list[str]) -> _Grid:
    """Step 3, the output's resolution, spacing and origin (:mod:`model.infer`'s docstring);
    anisotropic pixels warn (the message also appended to ``warn_list``)."""
    D = int(pred.coarse.shape[0])
    S = int(pred.sq.shape[0])
    N = S if opts.max_size is None else min(S, int(opts.max_size))
    xr = pred.sq if N == S else xray_at(pred.sq, (N, N), chi=pred.chi).astype(pred.sq.dtype)  # optical depth averaged
    xr = np.clip(xr, 0.0, 1.0)
    px = opts.spacing or pred.info.get("pixel_spacing_mm")
    sp_src = "argument pixel_spacing" if opts.spacing else pred.info.get("pixel_spacing_source")
    unit_mm = px is not None
    if px is None:
        px = [1.0, 1.0]
        sp_src = "unknown: 1.0 per input pixel"
    notes = []
    if unit_mm and abs(px[0] - px[1]) > 1e-6 * max(px):
        notes.append(
            f"anisotropic pixel spacing {px} (row, column): the network assumes square pixels, so the anatomy "
            "reaches it stretched; resample the film to square pixels first for a true shape"
        )
    net = int(pred.cfg.input_size)
    if S < net:
        notes.append(
            f"the film's square is {S} px, smaller than the network's input {net} px: it is enlarged "
            "(bilinear), and the volume has no more detail than the film"
        )
    gib = D * N * N * 4 / _GIB
    if gib > 1.0:
        notes.append(f"the volume is {D} x {N} x {N} float32, {gib:.1f} GiB; --max-size N writes it at N x N")
    for note in notes:
        warn_list.append(note)
        warnings.warn(note, UserWarning, stacklevel=3)  # infer_file's caller
    sy, sx = px[0] * S / N, px[1] * S / N
    extent_y, extent_x = sy * N, sx * N
    sz = 0.5 * (extent_y + extent_x) / D
    origin_xyz = (-extent_x / 2 + sx / 2, -extent_y / 2 + sy / 2, -sz * D / 2 + sz / 2)
    return _Grid(D, S, N, xr, _rows_per_slab(D, N), (sz, sy, sx), origin_xyz, unit_mm, sp_src)


@dataclass
class _Planes:
    """The previews' planes and the value statistics of the (D, N, N) volume, gathered slab by slab."""

    coronal: np.ndarray  # (N, N) float32: depth slice D // 2
    axial: np.ndarray  # (D, N): image row N // 2
    sagittal: np.ndarray  # (D, N): image column N // 2
    mip_depth: np.ndarray  # (N, N): maximum over depth
    mip_side: np.ndarray  # (D, N): maximum over image columns
    vmin: float = math.inf
    vmax: float = -math.inf
    rerender_err: float = 0.0  # max |re-rendering − x-ray| (fusion only)

    @classmethod
    def zeros(cls, D: int, N: int) -> _Planes:
        z = np.zeros
        f4 = np.float32
        return cls(z((N, N), f4), z((D, N), f4), z((D, N), f4), z((N, N), f4), z((D, N), f4))

    def add(self, r0: int, slab: np.ndarray) -> None:
        """Rows ``r0 : r0 + h`` of the volume: ``slab`` (D, h, N) float32."""
        N, D = self.coronal.shape[0], self.axial.shape[0]
        c_mid, r_mid, k_mid = N // 2, N // 2, D // 2
        r1 = r0 + slab.shape[1]
        self.coronal[r0:r1] = slab[k_mid]
        if r0 <= r_mid < r1:
            self.axial[:] = slab[:, r_mid - r0]
        self.sagittal[:, r0:r1] = slab[:, :, c_mid]
        self.mip_depth[r0:r1] = slab.max(axis=0)
        self.mip_side[:, r0:r1] = slab.max(axis=2)
        self.vmin, self.vmax = min(self.vmin, float(slab.min())), max(self.vmax, float(slab.max()))


def _write_slabs(fh, slabs, pred: _Prediction, grid: _Grid, fusion) -> _Planes:
    """Each (D, h, N) slab of ``slabs`` written at its offsets into ``fh``, the raw (D, N, N)
    float32 file (one contiguous block per depth slice), and gathered into the planes (and, with
    fusion, the re-rendering error: ``1 − exp(−chi · mean over depth)`` against the x-ray)."""
    D, N = grid.D, grid.N
    planes = _Planes.zeros(D, N)
    for r0, slab in slabs:
        r1 = r0 + slab.shape[1]
        slab = np.ascontiguousarray(slab, dtype="<f4")
        for k in range(D):  # rows r0:r1 of depth slice k are contiguous in the (D, N, N) file
            fh.seek(4 * (k * N * N + r0 * N))
            fh.write(memoryview(slab[k]).cast("B"))
        planes.add(r0, slab)
        if fusion:
            err = rerender_error(slab, grid.xr[r0:r1], chi=pred.chi)
            planes.rerender_err = max(planes.rerender_err, err)
    return planes


def _write_volume_file(
    out: Path, suffix: str, outs: _Outputs, pred: _Prediction, grid: _Grid, opts: _Options
) -> _Planes:
    """Step 4, the volume: fusion or lateral upsampling slab by slab into a scratch file, which
    pynrrd / nibabel then write into ``out`` (a temporary of ``outs`` until its commit)."""
    D, N = grid.D, grid.N
    if opts.fusion:
        slabs = fuse_slabs(pred.coarse, grid.xr, beta=opts.beta, chi=pred.chi, rows_per_slab=grid.rows)
    else:
        slabs = _upsample_slabs(pred.coarse, N, grid.rows)
    extra = {
        "tomo_array_axes": "z y x = depth, image rows, image columns (C order (D, H, W))",
        "tomo_spacing_source": grid.spacing_source,
        "tomo_fusion": str(bool(opts.fusion)),
    }
    descrip = f"tomo view volume zyx=depth,rows,cols fused={int(bool(opts.fusion))}"
    raw_path = outs.scratch(out.name + ".raw")  # (D, N, N) float32, then written by pynrrd / nibabel
    with open(raw_path, "w+b") as fh:
        fh.truncate(D * N * N * 4)
        planes = _write_slabs(fh, slabs, pred, grid, opts.fusion)
    write_volume(
        outs.temp(out), suffix, raw_path, (D, N, N), grid.spacing_zyx, grid.origin_xyz, grid.unit_mm, extra, descrip
    )
    raw_path.unlink()
    return planes


def _write_previews(
    folder: Path, stem: str, outs: _Outputs, sq: np.ndarray, planes: _Planes, grid: _Grid, scale: float
) -> dict[str, str]:
    """Step 5, the preview PNGs ``STEM_NAME.png`` (temporaries of ``outs``): the x-ray (values × 255)
    and the volume's planes (values / ``scale`` × 255), long sides fitted; ``{name: final path}``."""
    N, S = grid.N, grid.S
    Np = min(N, PREVIEW_MAX)
    imgs = {
        "xray": _u8(_fit(sq, (S, S)), 1.0),
        "coronal": _u8(_fit(planes.coronal, (N, N)), scale),
        "axial": _u8(_fit(planes.axial, (Np, Np)), scale),
        "sagittal": _u8(_fit(planes.sagittal.T, (Np, Np)), scale),
        "mip_depth": _u8(_fit(planes.mip_depth, (N, N)), scale),
        "mip_side": _u8(_fit(planes.mip_side.T, (Np, Np)), scale),
    }
    paths: dict[str, str] = {}
    for name in PREVIEWS:
        final = folder / f"{stem}_{name}.png"
        write_png(outs.temp(final), imgs[name])
        paths[name] = str(final)
    return paths


def _record(
    out: Path,
    suffix: str,
    record_path: Path,
    opts: _Options,
    pred: _Prediction,
    grid: _Grid,
    planes: _Planes,
    preview_paths: dict[str, str],
    scale: float,
    timing: dict,
    warn_list: list[str],
) -> dict:
    """Step 6, the record (JSON-safe), written as ``STEM.json`` and returned by :func:`model.infer.infer_file`."""
    D, N, fusion = grid.D, grid.N, opts.fusion
    record = {
        "input": pred.info,
        **pred.prep,
        "sizes": {
            "input_hw": [pred.info["height"], pred.info["width"]],
            "square": grid.S,
            "network_input": int(pred.cfg.input_size),
            "network_output_dhw": [D, int(pred.coarse.shape[1]), int(pred.coarse.shape[2])],
            "output_dhw": [D, N, N],
            "max_size": None if opts.max_size is None else int(opts.max_size),
            "resize_rule": _resize_rule(grid.S, int(pred.cfg.input_size))
            + " to the network input (model.data.resize_xrays); below max_size, the x-ray's optical depth "
            "area-averaged to it before fusion (model.fusion.xray_at)",
        },
        "checkpoint": pred.ck,
        "ood": pred.ood,
        "fusion": {
            "enabled": bool(fusion),
            "beta": float(opts.beta) if fusion else None,
            "chi": pred.chi,
            "chi_source": pred.chi_source,
            "rows_per_slab": grid.rows,
            "rerender_max_abs_error": planes.rerender_err if fusion else None,
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
            "spacing_zyx": list(grid.spacing_zyx),
            "spacing_unit": "mm" if grid.unit_mm else "input pixel: physical size unknown",
            "spacing_source": grid.spacing_source,
            "depth_spacing_rule": "lateral extent / D (the view volume spans [-1, 1] in depth as laterally)",
            "origin_xyz": list(grid.origin_xyz),
            "value_range": [planes.vmin, planes.vmax],
        },
        "previews": {"files": preview_paths, "display_range": [0.0, scale]} if opts.previews else None,
        "timing": timing,
        "warnings": warn_list,
        "record": str(record_path),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    return json_safe(record)
