"""The CUDA kernels' source, compiled as plain C++ on the host and run thread by thread.

Where no GPU exists this still checks the kernels' arithmetic, indexing and ray clipping against the
numba backend; `test_render.py::test_gpu_matches_cpu` checks the real device path where one exists.
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
"""
    + _render_cuda._SOURCE
    + r"""
extern "C" void host_render(const float* vf, int pz, int py, int px, const double* geom, int n,
                            const double* clip, int size, int steps, double chi, float* out, int threads) {
    blockDim.x = threads;
    long long blocks = ((long long)size * size + threads - 1) / threads;
    for (int v = 0; v < n; ++v) for (long long b = 0; b < blocks; ++b) for (int t = 0; t < threads; ++t) {
        blockIdx.x = (unsigned)b; blockIdx.y = v; threadIdx.x = t;
        render_kernel(vf, pz, py, px, geom, n, clip, size, steps, chi, out);
    }
}
extern "C" void host_view_volumes(const float* vf, int pz, int py, int px, const double* geom, int n,
                                  const double* clip, int size, int steps, float* out, int threads) {
    blockDim.x = threads;
    long long blocks = ((long long)size * size + threads - 1) / threads;
    for (int v = 0; v < n; ++v) for (long long b = 0; b < blocks; ++b) for (int t = 0; t < threads; ++t) {
        blockIdx.x = (unsigned)b; blockIdx.y = v; threadIdx.x = t;
        view_volume_kernel(vf, pz, py, px, geom, n, clip, size, steps, out);
    }
}
"""
)


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA kernels' source on the host")
    d = tmp_path_factory.mktemp("cuda_host")
    (d / "k.cpp").write_text(HARNESS)
    # -ffp-contract=fast: nvcc contracts a*b+c into FMAs by default, as numba does with fastmath
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
    lib.host_render.argtypes = common + [ctypes.c_double, ptr(np.float32, flags="C"), ctypes.c_int]
    lib.host_view_volumes.argtypes = common + [ptr(np.float32, flags="C"), ctypes.c_int]
    return lib


def _host_call(lib, volume, rots, size, steps, chi=None):
    vol, geom, clip, size, steps, empty = _prepare(volume, rots, size, steps)
    vp = _pad(vol)
    lo, hi, r2, ctr, inv = clip
    c = np.concatenate([lo, hi, [r2], ctr, inv]).astype(np.float64)
    g = np.ascontiguousarray(geom)
    if chi is None:
        out = np.full((len(g), steps, size, size), np.nan, np.float32)  # every slice must be written
        lib.host_view_volumes(vp, *vp.shape, g, len(g), c, size, steps, out, 256)
    else:
        out = np.full((len(g), size, size), np.nan, np.float32)
        lib.host_render(vp, *vp.shape, g, len(g), c, size, steps, chi, out, 256)
    return out


def _volume(rng, shape, sparse):
    vol = rng.random(shape).astype(np.float32)
    if sparse:  # an off-centre object: exercises the box and ball clipping
        mask = np.zeros(shape, bool)
        mask[2 : shape[0] // 2, shape[1] // 3 : -2, 3 : shape[2] - 4] = True
        vol *= mask
    return vol


@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_render_kernel_source_matches_cpu(host_lib, sparse):
    rng = np.random.default_rng(1)
    vol = _volume(rng, (20, 24, 28), sparse)
    rots = np.concatenate([hemisphere_views(7, seed=3), rotation_from_direction(np.eye(3))])
    host = _host_call(host_lib, vol, rots, 30, 26, chi=10.0)
    cpu = render_xrays(vol, rots, size=30, steps=26, chi=10.0, backend="cpu")
    np.testing.assert_allclose(host, cpu, atol=1e-5)
    assert cpu.max() > 0.3


@pytest.mark.parametrize("sparse", [False, True])
def test_cuda_view_volume_kernel_source_matches_cpu(host_lib, sparse):
    rng = np.random.default_rng(2)
    vol = _volume(rng, (18, 18, 18), sparse)
    rots = np.concatenate([hemisphere_views(5, seed=4), rotation_from_direction(np.eye(3))])
    host = _host_call(host_lib, vol, rots, 16, 18)
    cpu = view_volumes(vol, rots, size=16, steps=18, backend="cpu")
    np.testing.assert_allclose(host, cpu, atol=1e-5)
