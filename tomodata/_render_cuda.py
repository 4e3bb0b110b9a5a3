"""CUDA backend of :mod:`tomodata.render`: CuPy RawKernels, one thread per (view, pixel).

The kernels sample as the numba kernels do (:mod:`tomodata._render_cpu`: same padded volume, same
per-view geometry, same ray clipping, float32 sample positions ``entry + j·dw``) but sum a ray in
float32 front to back (the CPU sums in fixed point, the same bits on every CPU checked), so both
backends agree to float32 rounding (1e-5, tested on an H200), not bit for bit.
Many views go into one launch (grid z = view) and batches of views alternate between two streams, so
one batch renders while the previous one is copied back.

Launch layout and voxel fetch (measured on an H200, docs/benchmarks.md): blocks of 8 × 32 pixels put
8 × 4 neighbouring rays in a warp, and the warp steps through depth together, so its samples share
cache lines ("tiles": 1.3–1.5× the one-row warps of "rows" with the linear fetch); voxels are read
from a plain array through the read-only cache ("linear": 1.5–2.3× a point-filtered 3D texture,
"texture"). The default is tiles + linear; the others stay for ``tomo bench render``. X-rays come
back in page-locked host memory (3–6× faster than pageable memory; on skulls the copy back, not the
kernel, bounds ``render_xrays``).
"""

from __future__ import annotations

import numpy as np

_SOURCE = r"""
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

// The two fetches of one voxel value at integer padded coordinates (x, y, z): a linear array read
// through the read-only cache, or a texture of point-filtered texels (the same value; the texture's
// block-linear layout keeps a warp's 3D neighbourhood in fewer cache lines).
struct LinearFetch {
    const float* __restrict__ vf;
    unsigned long long sy, sz;
    __device__ __forceinline__ float operator()(int x, int y, int z) const {
        return __ldg(vf + (unsigned long long)z * sz + (unsigned long long)y * sy + (unsigned long long)x);
    }
};

struct TextureFetch {
    cudaTextureObject_t tex;
    __device__ __forceinline__ float operator()(int x, int y, int z) const {
        return tex3D<float>(tex, (float)x + 0.5f, (float)y + 0.5f, (float)z + 0.5f);
    }
};

template <class F>
__device__ __forceinline__ float trilinear_at(const F& f, float x, float y, float z)
{
    int jx = (int)x, jy = (int)y, jz = (int)z;
    float fx = x - (float)jx, fy = y - (float)jy, fz = z - (float)jz;
    float a0 = f(jx, jy, jz), a1 = f(jx + 1, jy, jz), a2 = f(jx, jy + 1, jz), a3 = f(jx + 1, jy + 1, jz);
    float b0 = f(jx, jy, jz + 1), b1 = f(jx + 1, jy, jz + 1);
    float b2 = f(jx, jy + 1, jz + 1), b3 = f(jx + 1, jy + 1, jz + 1);
    float c00 = a0 + fx * (a1 - a0), c10 = a2 + fx * (a3 - a2);
    float c01 = b0 + fx * (b1 - b0), c11 = b2 + fx * (b3 - b2);
    float c0 = c00 + fy * (c10 - c00), c1 = c01 + fy * (c11 - c01);
    return c0 + fz * (c1 - c0);
}

// The pixel of this thread: block (bx, by) of pixels, grid z = view. With blockDim (8, 32) a warp
// covers 8 × 4 pixels, whose rays stay close together in the volume. Threads outside the image
// still take part in the warp's depth range (warp_sync), then write nothing.
__device__ __forceinline__ bool pixel_of(int size, int n, int* r, int* c, int* v)
{
    *c = blockIdx.x * blockDim.x + threadIdx.x;
    *r = blockIdx.y * blockDim.y + threadIdx.y;
    *v = blockIdx.z;
    return *c < size && *r < size && *v < n;
}

// [lo, hi] of the warp: the union of its lanes' ranges, so that all lanes step through depth k
// together (a sample's value depends only on its own k0 and k; the union changes no value).
__device__ __forceinline__ void warp_range(int k0, int k1, int* lo, int* hi)
{
    int a = (k1 >= k0) ? k0 : 0x7fffffff, b = (k1 >= k0) ? k1 : -1;
    for (int o = 16; o > 0; o >>= 1) {
        a = min(a, __shfl_xor_sync(0xffffffffu, a, o));
        b = max(b, __shfl_xor_sync(0xffffffffu, b, o));
    }
    *lo = a; *hi = b;
}

template <class F>
__device__ __forceinline__ void render_body(const F& f, const double* __restrict__ geom, int n,
                                            const double* clip, int size, int steps, double chi,
                                            float* __restrict__ out)
{
    int r, c, v;
    bool inside = pixel_of(size, n, &r, &c, &v);
    int k0 = 0, k1 = -1, lo, hi;
    float b[3] = {0.0f, 0.0f, 0.0f}, fw[3] = {0.0f, 0.0f, 0.0f};
    if (inside) ray_start(geom, v, r, c, clip, steps, &k0, &k1, b, fw);
    warp_range(k0, k1, &lo, &hi);
    float acc = 0.0f;
    for (int k = lo; k <= hi; ++k) {
        if (k >= k0 && k <= k1) {
            float j = (float)(k - k0);
            acc += trilinear_at(f, b[0] + j * fw[0], b[1] + j * fw[1], b[2] + j * fw[2]);
        }
    }
    if (inside) out[((long long)v * size + r) * size + c] = (float)(1.0 - exp(-(chi / steps) * (double)acc));
}

template <class F>
__device__ __forceinline__ void view_volume_body(const F& f, const double* __restrict__ geom, int n,
                                                 const double* clip, int size, int steps,
                                                 float* __restrict__ out)
{
    int r, c, v;
    if (!pixel_of(size, n, &r, &c, &v)) return;  // no warp-wide step here: every k is visited
    long long plane = (long long)size * size;
    float* o = out + (long long)v * steps * plane + (long long)r * size + c;
    int k0 = 0, k1 = -1;
    float b[3] = {0.0f, 0.0f, 0.0f}, fw[3] = {0.0f, 0.0f, 0.0f};
    ray_start(geom, v, r, c, clip, steps, &k0, &k1, b, fw);  // k1 < k0 when the ray is clipped away
    for (int k = 0; k < steps; ++k) {
        float val = 0.0f;
        if (k >= k0 && k <= k1) {
            float j = (float)(k - k0);
            val = trilinear_at(f, b[0] + j * fw[0], b[1] + j * fw[1], b[2] + j * fw[2]);
        }
        o[(long long)k * plane] = val;
    }
}

// clip: lo[3], hi[3], ball_r2, ctr[3], inv_scale[3]; vf: the padded (pz, py, px) volume.
extern "C" __global__ void render_linear(const float* __restrict__ vf, int pz, int py, int px,
                              const double* __restrict__ geom, int n, const double* clip,
                              int size, int steps, double chi, float* __restrict__ out)
{
    LinearFetch f = {vf, (unsigned long long)px, (unsigned long long)py * px};
    render_body(f, geom, n, clip, size, steps, chi, out);
}

extern "C" __global__ void render_texture(cudaTextureObject_t tex, const double* __restrict__ geom, int n,
                               const double* clip, int size, int steps, double chi,
                               float* __restrict__ out)
{
    TextureFetch f = {tex};
    render_body(f, geom, n, clip, size, steps, chi, out);
}

extern "C" __global__ void view_volume_linear(const float* __restrict__ vf, int pz, int py, int px,
                                   const double* __restrict__ geom, int n, const double* clip,
                                   int size, int steps, float* __restrict__ out)
{
    LinearFetch f = {vf, (unsigned long long)px, (unsigned long long)py * px};
    view_volume_body(f, geom, n, clip, size, steps, out);
}

extern "C" __global__ void view_volume_texture(cudaTextureObject_t tex, const double* __restrict__ geom, int n,
                                    const double* clip, int size, int steps, float* __restrict__ out)
{
    TextureFetch f = {tex};
    view_volume_body(f, geom, n, clip, size, steps, out);
}

"""

#: launch layouts (block shape in pixels, columns × rows): "tiles" puts 8 × 4 pixels in a warp,
#: "rows" 32 pixels of one row (the first kernel's layout, kept for the benchmark)
LAYOUTS = {"tiles": (8, 32), "rows": (256, 1)}
#: how voxels are read: "texture" (point-filtered texels, block-linear) or "linear" (a C array)
FETCHES = ("texture", "linear")
#: views in one launch at most (grid z; CUDA allows 65,535)
MAX_VIEWS_PER_LAUNCH = 65_535
#: results up to this size come back in page-locked memory (CuPy's pinned pool keeps such blocks,
#: rounded up to a power of two, for later calls; larger results go to pageable memory)
PINNED_MAX_BYTES = 1 << 30
_module = None
_streams: dict = {}  # device id -> two streams, made once: CuPy keeps each stream's pool arena


def _function(name: str):
    global _module
    import cupy as cp

    if _module is None:
        _module = cp.RawModule(code=_SOURCE, options=("--std=c++14",))
    return _module.get_function(name)


class _Volume:
    """The padded volume on the device, as the kernels' first arguments for ``fetch``."""

    def __init__(self, vp: np.ndarray, fetch: str):
        import cupy as cp

        if fetch not in FETCHES:
            raise ValueError(f"fetch must be one of {FETCHES}, got {fetch!r}")
        self.fetch = fetch
        vp = np.ascontiguousarray(vp, dtype=np.float32)
        if fetch == "linear":
            self._arr = cp.asarray(vp)
            self.args: tuple = (self._arr, *(np.int32(d) for d in vp.shape))
            return
        from cupy.cuda import runtime, texture

        ch = texture.ChannelFormatDescriptor(32, 0, 0, 0, runtime.cudaChannelFormatKindFloat)
        self._arr = texture.CUDAarray(ch, vp.shape[2], vp.shape[1], vp.shape[0])  # width x, height y, depth z
        self._arr.copy_from(vp)
        res = texture.ResourceDescriptor(runtime.cudaResourceTypeArray, cuArr=self._arr)
        desc = texture.TextureDescriptor(
            (runtime.cudaAddressModeClamp,) * 3, runtime.cudaFilterModePoint, runtime.cudaReadModeElementType
        )
        self._tex = texture.TextureObject(res, desc)
        self.args = (self._tex,)


def _clip_array(clip) -> np.ndarray:
    lo, hi, ball_r2, ball_ctr, inv_scale = clip
    return np.concatenate([lo, hi, [ball_r2], ball_ctr, inv_scale]).astype(np.float64)


def _batches(n: int, per_view: tuple, batch: int, launch, *, pinned: bool = False) -> np.ndarray:
    """Run ``launch(d_out, start, m)`` for views ``start … start + m − 1`` in batches of ``batch`` and
    copy the results to a host array (n, *per_view) float32 (in page-locked memory if ``pinned`` and
    it holds at most :data:`PINNED_MAX_BYTES`).

    Two streams alternate, and each batch's kernel is queued before the previous batch is copied
    back, so the device renders batch i + 1 while batch i travels to the host. The streams first wait
    for the work already queued on the current stream (the uploads of the volume and geometry)."""
    import cupy as cp
    import cupyx

    shape = (n, *per_view)
    nbytes = 4 * n * int(np.prod(per_view))
    if pinned and nbytes <= PINNED_MAX_BYTES:
        out = cupyx.empty_pinned(shape, dtype=np.float32)
    else:
        out = np.empty(shape, dtype=np.float32)
    batch = max(1, min(batch, MAX_VIEWS_PER_LAUNCH))
    dev = cp.cuda.Device().id
    if dev not in _streams:
        _streams[dev] = (cp.cuda.Stream(), cp.cuda.Stream())
    streams = _streams[dev]
    uploaded = cp.cuda.get_current_stream().record()
    for st in streams:
        st.wait_event(uploaded)
    bufs: list = [None, None]
    starts = list(range(0, n, batch))
    pending = None  # (device view, start, m, stream) launched but not yet copied
    for i, s in enumerate(starts):
        m = min(batch, n - s)
        st = streams[i % 2]
        with st:
            if bufs[i % 2] is None:
                bufs[i % 2] = cp.empty((min(batch, n), *per_view), dtype=cp.float32)
            d = bufs[i % 2][:m]
            launch(d, s, m)
        if pending is not None:
            _copy_back(pending, out)
        pending = (d, s, m, st)
    if pending is not None:
        _copy_back(pending, out)
    return out


def _copy_back(pending, out: np.ndarray) -> None:
    d, s, m, st = pending
    d.get(out=out[s : s + m], stream=st)  # blocks until the batch's kernel and copy are done


def _grid(size: int, m: int, layout: str):
    bx, by = LAYOUTS[layout]
    return ((size + bx - 1) // bx, (size + by - 1) // by, m), (bx, by, 1)


def render(
    vp,
    geom,
    clip,
    size,
    steps,
    chi,
    *,
    batch: int = 1024,
    layout: str = "tiles",
    fetch: str = "linear",
    pinned: bool = True,
):
    """(n, size, size) float32 opacity; ``vp`` is the padded (Z+2, Y+2, X+2) float32 volume, ``geom``
    (n, 4, 3) and ``clip`` from :func:`tomodata.render._prepare`. ``pinned``: a result of at most
    :data:`PINNED_MAX_BYTES` lives in page-locked host memory from CuPy's pinned pool (the copy back
    runs 3–6× faster; the pool keeps the block for later calls)."""
    import cupy as cp

    vol = _Volume(vp, fetch)
    kern = _function(f"render_{fetch}")
    d_geom = cp.asarray(np.ascontiguousarray(geom, dtype=np.float64))
    d_clip = cp.asarray(_clip_array(clip))

    def launch(d_out, s, m):
        grid, block = _grid(size, m, layout)
        args = (d_geom[s : s + m], np.int32(m), d_clip, np.int32(size), np.int32(steps), np.float64(chi), d_out)
        kern(grid, block, (*vol.args, *args))

    return _batches(geom.shape[0], (size, size), batch, launch, pinned=pinned)


def view_volumes(
    vp, geom, clip, size, steps, *, max_bytes: int = 1 << 29, layout: str = "tiles", fetch: str = "linear"
):
    """(n, steps, size, size) float32 view volumes; each of the two device buffers holds at most
    ``max_bytes`` (one view at least)."""
    import cupy as cp

    vol = _Volume(vp, fetch)
    kern = _function(f"view_volume_{fetch}")
    d_geom = cp.asarray(np.ascontiguousarray(geom, dtype=np.float64))
    d_clip = cp.asarray(_clip_array(clip))
    batch = max(1, max_bytes // (steps * size * size * 4))

    def launch(d_out, s, m):
        grid, block = _grid(size, m, layout)
        kern(grid, block, (*vol.args, d_geom[s : s + m], np.int32(m), d_clip, np.int32(size), np.int32(steps), d_out))

    return _batches(geom.shape[0], (steps, size, size), batch, launch)


def kernel_seconds(
    vp, geom, clip, size, steps, chi, *, layout: str = "tiles", fetch: str = "linear", repeats: int = 3
) -> float:
    """Seconds of one launch rendering all views of ``geom`` into device memory (CUDA events, median
    of ``repeats`` after a warm-up): the kernel alone, without transfers or the host's preparation."""
    import cupy as cp

    vol = _Volume(vp, fetch)
    kern = _function(f"render_{fetch}")
    n = geom.shape[0]
    if n > MAX_VIEWS_PER_LAUNCH:
        raise ValueError(f"kernel_seconds times one launch: at most {MAX_VIEWS_PER_LAUNCH} views, got {n}")
    d_geom = cp.asarray(np.ascontiguousarray(geom, dtype=np.float64))
    d_clip = cp.asarray(_clip_array(clip))
    d_out = cp.empty((n, size, size), dtype=cp.float32)
    grid, block = _grid(size, n, layout)
    args = (*vol.args, d_geom, np.int32(n), d_clip, np.int32(size), np.int32(steps), np.float64(chi), d_out)
    times = []
    for i in range(repeats + 1):
        t0, t1 = cp.cuda.Event(), cp.cuda.Event()
        t0.record()
        kern(grid, block, args)
        t1.record()
        t1.synchronize()
        if i:  # the first launch is the warm-up
            times.append(cp.cuda.get_elapsed_time(t0, t1) / 1e3)
    return float(np.median(times))
