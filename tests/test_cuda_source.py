"""The CUDA kernels' source, compiled as plain C++ on the host and run thread by thread.

Where no GPU exists this still checks the kernels' arithmetic, indexing and ray clipping against the
numba backend, for every launch layout and voxel fetch. It cannot check the warp-wide depth range
(``__shfl_xor_sync`` is the identity here, one thread at a time): `tests/test_gpu.py` checks that,
and the real device path, where a GPU exists (it passed on an H200, docs/benchmarks.md).
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from tomodata import _render_cuda
from tomodata.render import _pad, _prepare, render_xrays, view_volumes
from tomodata.views import hemisphere_views, rotation_from_direction

HARNESS = (
    r"""
#include <math.h>
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
// one thread at a time: the warp's range is the thread's own (a superset changes no value)
static inline int __shfl_xor_sync(unsigned, int v, int) { return v; }
struct HostTexture { const float* p; unsigned long long sy, sz; };
typedef const HostTexture* cudaTextureObject_t;
template <class T> static inline T tex3D(cudaTextureObject_t t, float x, float y, float z) {
    return t->p[(unsigned long long)z * t->sz + (unsigned long long)y * t->sy + (unsigned long long)x];
}
"""
    + _render_cuda._SOURCE
    + r"""
#define FOR_EACH_THREAD(BX, BY, SIZE, N, CALL)                                              \
    blockDim.x = BX; blockDim.y = BY; blockDim.z = 1;                                      \
    for (unsigned v = 0; v < (unsigned)(N); ++v)                                           \
    for (unsigned gy = 0; gy < ((unsigned)(SIZE) + BY - 1) / BY; ++gy)                     \
    for (unsigned gx = 0; gx < ((unsigned)(SIZE) + BX - 1) / BX; ++gx)                     \
    for (unsigned ty = 0; ty < (unsigned)BY; ++ty) for (unsigned tx = 0; tx < (unsigned)BX; ++tx) { \
        blockIdx.x = gx; blockIdx.y = gy; blockIdx.z = v; threadIdx.x = tx; threadIdx.y = ty; CALL; }

extern "C" void host_render(const float* vf, int pz, int py, int px, const double* geom, int n,
                            const double* clip, int size, int steps, double chi, float* out,
                            int bx, int by, int texture) {
    HostTexture t = {vf, (unsigned long long)px, (unsigned long long)py * px};
    if (texture) { FOR_EACH_THREAD(bx, by, size, n, render_texture(&t, geom, n, clip, size, steps, chi, out)) }
    else { FOR_EACH_THREAD(bx, by, size, n, render_linear(vf, pz, py, px, geom, n, clip, size, steps, chi, out)) }
}
extern "C" void host_view_volumes(const float* vf, int pz, int py, int px, const double* geom, int n,
                                  const double* clip, int size, int steps, float* out,
                                  int bx, int by, int texture) {
    HostTexture t = {vf, (unsigned long long)px, (unsigned long long)py * px};
    if (texture) { FOR_EACH_THREAD(bx, by, size, n, view_volume_texture(&t, geom, n, clip, size, steps, out)) }
    else { FOR_EACH_THREAD(bx, by, size, n, view_volume_linear(vf, pz, py, px, geom, n, clip, size, steps, out)) }
}
"""
)

#: (block columns, block rows, texture fetch) of each launch variant the tests run
VARIANTS = [
    (*_render_cuda.LAYOUTS[layout], fetch == "texture")
    for layout in _render_cuda.LAYOUTS
    for fetch in _render_cuda.FETCHES
]


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA kernels' source on the host")
    d = tmp_path_factory.mktemp("cuda_host")
    (d / "k.cpp").write_text(HARNESS)
    # -ffp-contract=fast lets the compiler fuse a*b+c as nvcc does by default; on baseline x86-64
    # (no -mfma) it emits no FMA, so these runs use separate roundings: the 1e-5 tolerance covers both
    subprocess.run(
        [cxx, "-O2", "-ffp-contract=fast", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cpp")],
        check=True,
        capture_output=True,
    )
    lib = ctypes.CDLL(str(d / "k.so"))
    ptr = np.ctypeslib.ndpointer
    common = [
        ptr(np.float32, flags="C"),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ptr(np.float64, flags="C"),
        ctypes.c_int,
        ptr(np.float64, flags="C"),
        ctypes.c_int,
        ctypes.c_int,
    ]
    launch = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.host_render.argtypes = common + [ctypes.c_double, ptr(np.float32, flags="C"), *launch]
    lib.host_view_volumes.argtypes = common + [ptr(np.float32, flags="C"), *launch]
    return lib


def _host_call(lib, volume, rots, size, steps, chi=None, variant=VARIANTS[0]):
    vol, geom, clip, size, steps, empty = _prepare(volume, rots, size, steps)
    vp = _pad(vol)
    lo, hi, r2, ctr, inv = clip
    c = np.concatenate([lo, hi, [r2], ctr, inv]).astype(np.float64)
    g = np.ascontiguousarray(geom)
    if chi is None:
        out = np.full((len(g), steps, size, size), np.nan, np.float32)  # every slice must be written
        lib.host_view_volumes(vp, *vp.shape, g, len(g), c, size, steps, out, *variant)
    else:
        out = np.full((len(g), size, size), np.nan, np.float32)
        lib.host_render(vp, *vp.shape, g, len(g), c, size, steps, chi, out, *variant)
    return out


def _volume(rng, shape, sparse):
    vol = rng.random(shape).astype(np.float32)
    if sparse:  # an off-centre object: exercises the box and ball clipping
        mask = np.zeros(shape, bool)
        mask[2 : shape[0] // 2, shape[1] // 3 : -2, 3 : shape[2] - 4] = True
        vol *= mask
    return vol


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_render_kernel_source_matches_cpu(host_lib, sparse, variant):
    rng = np.random.default_rng(1)
    vol = _volume(rng, (20, 24, 28), sparse)
    rots = np.concatenate([hemisphere_views(7, seed=3), rotation_from_direction(np.eye(3))])
    host = _host_call(host_lib, vol, rots, 30, 26, chi=10.0, variant=variant)
    cpu = render_xrays(vol, rots, size=30, steps=26, chi=10.0, backend="cpu")
    np.testing.assert_allclose(host, cpu, atol=1e-5)
    assert cpu.max() > 0.3


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_view_volume_kernel_source_matches_cpu(host_lib, sparse, variant):
    rng = np.random.default_rng(2)
    vol = _volume(rng, (18, 18, 18), sparse)
    rots = np.concatenate([hemisphere_views(5, seed=4), rotation_from_direction(np.eye(3))])
    host = _host_call(host_lib, vol, rots, 16, 18, variant=variant)
    cpu = view_volumes(vol, rots, size=16, steps=18, backend="cpu")
    np.testing.assert_allclose(host, cpu, atol=1e-5)
