"""The store's CPU kernels give the same bits on another x86-64 CPU family.

numba compiles for the CPU it runs on, so the resampling and ray-marching kernels' bits could depend
on it: until session 31 the ray's float sum was split over the vector lanes (``fastmath``'s
``reassoc``: as many lanes as the code has) and 15 % of a mouse's x-ray pixels differed between the
two. An export's recipe promises a rebuild bit for bit (docs/export.md), so this test compiles the
kernels for the host and for numba's ``haswell`` target with the target's own features (AVX2 + FMA;
``NUMBA_CPU_FEATURES=""``, without which numba keeps the host's features and only the tuning
changes) in two fresh processes with their own numba caches, and requires the cube, the x-rays and
the view volumes to be equal bit for bit; a third build, haswell with 128-bit vectors
(``+prefer-128-bit``: 4 float32 lanes), splits a sum otherwise than any AVX2 or AVX-512 host, so the
test means something on an AVX2 host too. On the AVX-512 host of session 31 the kernel before the
change fails both (1,251 and 1,359 of the 6 x-rays' values differ), and the resampling before it the
128-bit build (the long-filter cube). The evaluation's fusion (:mod:`model.fusion`, compiled without
fast-math flags) is checked beside them.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from llvmlite import binding as llvm

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tomodata import views
    from tomodata.render import render_xrays, view_volumes
    from tomodata.resample import to_cube
    from model.fusion import fuse

    def scan(shape, seed):
        rng = np.random.default_rng(seed)
        z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
        r2 = sum(((g - n / 2) / (0.43 * n)) ** 2 for g, n in zip((z, y, x), shape))
        a = np.where(r2 < 1, 120 + 100 * np.cos(z / 5.0) * np.sin(x / 4.0), 0)
        return np.clip(a + rng.integers(0, 6, a.shape), 0, 255).astype(np.uint8)

    cube = to_cube(scan((70, 60, 50), 3), (0.7, 0.9, 1.1), size=48, background=6 / 255)
    # a 4.7x shrink: filters long enough for the taps' sum to run on the vector lanes
    long_filters = to_cube(scan((150, 120, 100), 4), (0.7, 0.9, 1.1), size=32, background=6 / 255)
    rots = views.hemisphere_views(6, seed=0)
    xr = render_xrays(cube, rots, size=40, steps=48, backend="cpu")
    vv = view_volumes(cube, rots[:2], size=24, steps=24, backend="cpu")
    fused = fuse(vv[0], xr[0])  # the evaluation's fusion: a 24-pixel view volume with a 40-pixel x-ray
    np.savez(sys.argv[1], cube=cube, cube_long_filters=long_filters, xrays=xr, view_volumes=vv, fused=fused)
    """
)


def _host_has(*features: str) -> bool:
    """Whether the host CPU has every LLVM feature named (as numba's code generator sees it)."""
    found = llvm.get_host_cpu_features()
    return all(found.get(f, False) for f in features)


def _run(tmp_path: Path, tag: str, cpu_name: str | None, features: str = "") -> dict[str, np.ndarray]:
    """The script's arrays, compiled in a fresh process for the host or for ``cpu_name`` with that
    target's own features plus ``features`` (a fresh numba cache under ``tmp_path``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}  # no inherited target, JIT off, opt level
    env["NUMBA_CACHE_DIR"] = str(tmp_path / f"numba-{tag}")
    if cpu_name:
        env.update(NUMBA_CPU_NAME=cpu_name, NUMBA_CPU_FEATURES=features)
    out = tmp_path / f"{tag}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, check=True, timeout=300)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.timeout(900)
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="an x86-64 check")
@pytest.mark.skipif(not _host_has("avx2", "fma"), reason="the haswell target needs AVX2 and FMA")
def test_kernels_equal_bit_for_bit_on_the_haswell_target(tmp_path):
    host = _run(tmp_path, "host", None)
    assert host["cube"].max() > 0.1 and host["xrays"].max() > 0.1 and host["fused"].max() > 0.1  # not zeros
    for tag, features in (("haswell", ""), ("haswell-128", "+prefer-128-bit")):
        other = _run(tmp_path, tag, "haswell", features)
        for k in host:
            assert host[k].dtype == other[k].dtype and host[k].shape == other[k].shape, (tag, k)
            n = int(np.count_nonzero(host[k] != other[k]))
            assert n == 0, f"{k}: {n} values differ between the host's and the {tag} target's kernels"
