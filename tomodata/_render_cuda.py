"""CUDA backend of :mod:`tomodata.render`: CuPy RawKernels, one thread per (view, pixel).

The kernels are line-for-line the numba kernels of :mod:`tomodata._render_cpu` (same padded volume,
same per-view geometry, same ray clipping, float32 sample positions ``entry + j·dw``, float32
accumulation front to back), so both backends agree to float32 rounding (tested to 1e-5 where a GPU
exists). Many views go into one launch (grid y = view); views are processed in batches that bound
the device memory used for the output.
"""

from __future__ import annotations

import numpy as np

_SOURCE = r"""
extern "C" {

__device__ __forceinline__ bool k_range(
    double gx, double gy, double gz, double wx, double wy, double wz,
    const double* lo, const double* hi, int steps, double ball_r2, const double* ctr,
    const double* inv_scale, int* k0_out, int* k1_out)
{
    double t0 = 0.0, t1 = steps - 1.0;
    double g[3] = {gx, gy, gz};
    double w[3] = {wx, wy, wz};
    for (int a = 0; a < 3; ++a) {
        if (fabs(w[a]) < 1e-12) {
            if (g[a] < lo[a] || g[a] > hi[a]) return false;
        } else {
            double ta = (lo[a] - g[a]) / w[a];
            double tb = (hi[a] - g[a]) / w[a];
            if (ta > tb) { double t = ta; ta = tb; tb = t; }
            if (ta > t0) t0 = ta;
            if (tb < t1) t1 = tb;
        }
    }
    if (ball_r2 > 0.0) {
        double px = (gx - ctr[0]) * inv_scale[0], py = (gy - ctr[1]) * inv_scale[1], pz = (gz - ctr[2]) * inv_scale[2];
        double qx = wx * inv_scale[0], qy = wy * inv_scale[1], qz = wz * inv_scale[2];
        double qq = qx * qx + qy * qy + qz * qz;
        double pq = px * qx + py * qy + pz * qz;
        double pp = px * px + py * py + pz * pz;
        double disc = pq * pq - qq * (pp - ball_r2);
        if (disc < 0.0) return false;
        double s = sqrt(disc);
        double ta = (-pq - s) / qq, tb = (-pq + s) / qq;
        if (ta > t0) t0 = ta;
        if (tb < t1) t1 = tb;
    }
    if (t1 < t0) return false;
    int k0 = (int)ceil(t0), k1 = (int)floor(t1);
    if (k0 < 0) k0 = 0;
    if (k1 > steps - 1) k1 = steps - 1;
    *k0_out = k0; *k1_out = k1;
    return k1 >= k0;
}

__device__ __forceinline__ float trilinear(const float* __restrict__ vf, float x, float y, float z,
                                           unsigned long long sy, unsigned long long sz)
{
    int jx = (int)x, jy = (int)y, jz = (int)z;
    float fx = x - (float)jx, fy = y - (float)jy, fz = z - (float)jz;
    unsigned long long i = (unsigned long long)jz * sz + (unsigned long long)jy * sy + (unsigned long long)jx;
    float a0 = __ldg(vf + i), a1 = __ldg(vf + i + 1), a2 = __ldg(vf + i + sy), a3 = __ldg(vf + i + sy + 1);
    float b0 = __ldg(vf + i + sz), b1 = __ldg(vf + i + sz + 1);
    float b2 = __ldg(vf + i + sz + sy), b3 = __ldg(vf + i + sz + sy + 1);
    float c00 = a0 + fx * (a1 - a0), c10 = a2 + fx * (a3 - a2);
    float c01 = b0 + fx * (b1 - b0), c11 = b2 + fx * (b3 - b2);
    float c0 = c00 + fy * (c10 - c00), c1 = c01 + fy * (c11 - c01);
    return c0 + fz * (c1 - c0);
}

// The ray of pixel (r, c) of view v, shared by both kernels: its clipped inclusive k-range
// [k0, k1] (k1 < k0: no sample can be non-zero), its first unclipped sample (b) and step (fw) as
// float32 padded voxel coordinates. clip: lo[3], hi[3], ball_r2, ctr[3], inv_scale[3].
__device__ __forceinline__ bool ray_start(const double* geom, int v, int r, int c, const double* clip,
                                          int steps, int* k0, int* k1, float* b, float* fw)
{
    const double* G = geom + 12 * v;
    double gx = G[0] + c * G[3] + r * G[6];
    double gy = G[1] + c * G[4] + r * G[7];
    double gz = G[2] + c * G[5] + r * G[8];
    double wx = G[9], wy = G[10], wz = G[11];
    *k0 = 0; *k1 = -1;
    if (!k_range(gx, gy, gz, wx, wy, wz, clip, clip + 3, steps, clip[6], clip + 7, clip + 10, k0, k1)) {
        *k0 = 0; *k1 = -1;
        return false;
    }
    b[0] = (float)(gx + *k0 * wx); b[1] = (float)(gy + *k0 * wy); b[2] = (float)(gz + *k0 * wz);
    fw[0] = (float)wx; fw[1] = (float)wy; fw[2] = (float)wz;
    return true;
}

__global__ void render_kernel(const float* __restrict__ vf, int pz, int py, int px,
                              const double* __restrict__ geom, int n, const double* clip,
                              int size, int steps, double chi, float* __restrict__ out)
{
    // clip: lo[3], hi[3], ball_r2, ctr[3], inv_scale[3]
    long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int v = blockIdx.y;
    if (pix >= (long long)size * size || v >= n) return;
    int r = (int)(pix / size), c = (int)(pix % size);
    unsigned long long sy = (unsigned long long)px, sz = (unsigned long long)py * px;
    float acc = 0.0f;
    int k0, k1;
    float b[3], fw[3];
    if (ray_start(geom, v, r, c, clip, steps, &k0, &k1, b, fw)) {
        float j = 0.0f;
        for (int k = k0; k <= k1; ++k) {
            acc += trilinear(vf, b[0] + j * fw[0], b[1] + j * fw[1], b[2] + j * fw[2], sy, sz);
            j += 1.0f;
        }
    }
    out[(long long)v * size * size + pix] = (float)(1.0 - exp(-(chi / steps) * (double)acc));
}

__global__ void view_volume_kernel(const float* __restrict__ vf, int pz, int py, int px,
                                   const double* __restrict__ geom, int n, const double* clip,
                                   int size, int steps, float* __restrict__ out)
{
    long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    int v = blockIdx.y;
    if (pix >= (long long)size * size || v >= n) return;
    int r = (int)(pix / size), c = (int)(pix % size);
    unsigned long long sy = (unsigned long long)px, sz = (unsigned long long)py * px;
    long long plane = (long long)size * size;
    float* o = out + (long long)v * steps * plane + pix;
    int k0, k1;
    float b[3] = {0.0f, 0.0f, 0.0f}, fw[3] = {0.0f, 0.0f, 0.0f};
    ray_start(geom, v, r, c, clip, steps, &k0, &k1, b, fw);  // k1 < k0 when the ray is clipped away
    float j = 0.0f;
    for (int k = 0; k < steps; ++k) {
        float val = 0.0f;
        if (k >= k0 && k <= k1) {
            val = trilinear(vf, b[0] + j * fw[0], b[1] + j * fw[1], b[2] + j * fw[2], sy, sz);
            j += 1.0f;
        }
        o[(long long)k * plane] = val;
    }
}

}
"""

_THREADS = 256
_module = None


def _kernels():
    global _module
    import cupy as cp

    if _module is None:
        _module = cp.RawModule(code=_SOURCE, options=("--std=c++14",))
    return _module.get_function("render_kernel"), _module.get_function("view_volume_kernel")


def _device_inputs(vp, geom, clip):
    import cupy as cp

    lo, hi, ball_r2, ball_ctr, inv_scale = clip
    clip_arr = np.concatenate([lo, hi, [ball_r2], ball_ctr, inv_scale]).astype(np.float64)
    return (
        cp.asarray(np.ascontiguousarray(vp, dtype=np.float32)),
        cp.asarray(np.ascontiguousarray(geom, dtype=np.float64)),
        cp.asarray(clip_arr),
    )


def render(vp, geom, clip, size, steps, chi, *, batch: int = 1024):
    """(n, size, size) float32 opacity; ``vp`` is the padded (Z+2, Y+2, X+2) float32 volume."""
    import cupy as cp

    kern, _ = _kernels()
    d_vol, d_geom, d_clip = _device_inputs(vp, geom, clip)
    n = geom.shape[0]
    out = np.empty((n, size, size), dtype=np.float32)
    blocks_x = (size * size + _THREADS - 1) // _THREADS
    for s in range(0, n, batch):
        m = min(batch, n - s)
        d_out = cp.empty((m, size, size), dtype=cp.float32)
        kern(
            (blocks_x, m),
            (_THREADS,),
            (
                d_vol,
                np.int32(vp.shape[0]),
                np.int32(vp.shape[1]),
                np.int32(vp.shape[2]),
                d_geom[s : s + m],
                np.int32(m),
                d_clip,
                np.int32(size),
                np.int32(steps),
                np.float64(chi),
                d_out,
            ),
        )
        out[s : s + m] = d_out.get()
    return out


def view_volumes(vp, geom, clip, size, steps, *, max_bytes: int = 1 << 30):
    """(n, steps, size, size) float32 view volumes; batches keep device output under ``max_bytes``."""
    import cupy as cp

    _, kern = _kernels()
    d_vol, d_geom, d_clip = _device_inputs(vp, geom, clip)
    n = geom.shape[0]
    out = np.empty((n, steps, size, size), dtype=np.float32)
    per_view = steps * size * size * 4
    batch = max(1, min(n, max_bytes // per_view))
    blocks_x = (size * size + _THREADS - 1) // _THREADS
    for s in range(0, n, batch):
        m = min(batch, n - s)
        d_out = cp.empty((m, steps, size, size), dtype=cp.float32)
        kern(
            (blocks_x, m),
            (_THREADS,),
            (
                d_vol,
                np.int32(vp.shape[0]),
                np.int32(vp.shape[1]),
                np.int32(vp.shape[2]),
                d_geom[s : s + m],
                np.int32(m),
                d_clip,
                np.int32(size),
                np.int32(steps),
                d_out,
            ),
        )
        out[s : s + m] = d_out.get()
    return out
