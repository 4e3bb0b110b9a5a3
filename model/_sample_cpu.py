"""CPU backend of :func:`model.data.torch_view_volumes`: trilinear sampling with zero padding, the
arithmetic of PyTorch's ``grid_sample`` (3-D, bilinear, ``padding_mode="zeros"``,
``align_corners=False``; ``grid_sampler_3d_cpu_impl`` in ATen's GridSampler.cpp) in the same float32
operations and order, so the values are the same bits (tests/test_train.py checks it against
``grid_sample``), fused with the float64 → float32 point conversion and the cube mask, and parallel
over slices (``grid_sample`` on the CPU runs one thread per batch item: one view per thread).

Per point: ``i = ((c + 1) · n − 1) / 2`` in float32 per axis, the 8 corners around ``floor(i)``,
weights as products of the distances to the opposite corner in ATen's order, the output
``0 + Σ v_k · w_k`` over the in-bounds corners in ATen's order (tnw, tne, tsw, tse, bnw, bne, bsw,
bse), then times 1 or 0 by the mask ``max |p| <= 1`` taken on the float64 point.
"""

from __future__ import annotations

import numba
import numpy as np

from tomodata import numba_cache

numba_cache.install()  # before the first compile: concurrent jobs must not mix up cached code

__all__ = ["sample_views"]

_ONE = np.float32(1.0)
_TWO = np.float32(2.0)


@numba.njit(cache=True, inline="always")
def _unnormalize(c, n):
    return ((c + _ONE) * np.float32(n) - _ONE) / _TWO


@numba.njit(cache=True, parallel=True)
def sample_views(volumes, which, pts, out):  # pragma: no cover - compiled
    """Fill ``out`` (B, D, H, W) float32 with the masked trilinear samples of ``volumes`` (N, Z, Y, X)
    float32, item ``b`` from ``volumes[which[b]]`` (``which``: (B,) int64 in [0, N); no copy of the
    volumes is made), at ``pts`` (B, 3, D, H, W) float64 (x, y, z in [−1, 1] across the volume's X,
    Y, Z)."""
    B, D, H, W = out.shape
    nz, ny, nx = volumes.shape[1], volumes.shape[2], volumes.shape[3]
    zero = np.float32(0.0)
    for bd in numba.prange(B * D):
        b = bd // D
        d = bd % D
        vol = volumes[which[b]]
        for h in range(H):
            for w in range(W):
                px = pts[b, 0, d, h, w]
                py = pts[b, 1, d, h, w]
                pz = pts[b, 2, d, h, w]
                inside = abs(px) <= 1.0 and abs(py) <= 1.0 and abs(pz) <= 1.0
                ix = _unnormalize(np.float32(px), nx)
                iy = _unnormalize(np.float32(py), ny)
                iz = _unnormalize(np.float32(pz), nz)
                x0 = np.int64(np.floor(ix))
                y0 = np.int64(np.floor(iy))
                z0 = np.int64(np.floor(iz))
                x1, y1, z1 = x0 + 1, y0 + 1, z0 + 1
                fx0, fy0, fz0 = np.float32(x0), np.float32(y0), np.float32(z0)
                fx1, fy1, fz1 = np.float32(x1), np.float32(y1), np.float32(z1)
                tnw = (fx1 - ix) * (fy1 - iy) * (fz1 - iz)
                tne = (ix - fx0) * (fy1 - iy) * (fz1 - iz)
                tsw = (fx1 - ix) * (iy - fy0) * (fz1 - iz)
                tse = (ix - fx0) * (iy - fy0) * (fz1 - iz)
                bnw = (fx1 - ix) * (fy1 - iy) * (iz - fz0)
                bne = (ix - fx0) * (fy1 - iy) * (iz - fz0)
                bsw = (fx1 - ix) * (iy - fy0) * (iz - fz0)
                bse = (ix - fx0) * (iy - fy0) * (iz - fz0)
                inx0 = 0 <= x0 < nx
                inx1 = 0 <= x1 < nx
                iny0 = 0 <= y0 < ny
                iny1 = 0 <= y1 < ny
                inz0 = 0 <= z0 < nz
                inz1 = 0 <= z1 < nz
                acc = zero
                if inz0 and iny0 and inx0:
                    acc = acc + vol[z0, y0, x0] * tnw
                if inz0 and iny0 and inx1:
                    acc = acc + vol[z0, y0, x1] * tne
                if inz0 and iny1 and inx0:
                    acc = acc + vol[z0, y1, x0] * tsw
                if inz0 and iny1 and inx1:
                    acc = acc + vol[z0, y1, x1] * tse
                if inz1 and iny0 and inx0:
                    acc = acc + vol[z1, y0, x0] * bnw
                if inz1 and iny0 and inx1:
                    acc = acc + vol[z1, y0, x1] * bne
                if inz1 and iny1 and inx0:
                    acc = acc + vol[z1, y1, x0] * bsw
                if inz1 and iny1 and inx1:
                    acc = acc + vol[z1, y1, x1] * bse
                out[b, d, h, w] = acc * (_ONE if inside else zero)
