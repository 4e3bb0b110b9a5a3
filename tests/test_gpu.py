"""The CUDA renderer on a real device against the numba renderer (skipped without CuPy and a GPU).

Every launch layout and voxel fetch of :mod:`tomodata._render_cuda` is compared with the CPU to 1e-5
in opacity (float32 rounding; the kernels do the CPU's arithmetic) on a skull at the paper's
settings, on dense volumes (no clipping helps), on a non-cubic volume (strides), and across launch
batches (more views than one launch holds; view volumes split over several device buffers).
"""

from __future__ import annotations

import numpy as np
import pytest

from tomodata import _render_cuda
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import _pad, _prepare, render_xrays, view_volumes
from tomodata.views import hemisphere_views, rotation_from_direction

pytestmark = pytest.mark.gpu

VARIANTS = [(layout, fetch) for layout in _render_cuda.LAYOUTS for fetch in _render_cuda.FETCHES]


def _cuda_render(vol, rots, size, steps, chi=10.0, **kw):
    v, geom, clip, size, steps, empty = _prepare(vol, rots, size, steps)
    assert not empty
    return _render_cuda.render(_pad(v), geom, clip, size, steps, chi, **kw)


def _cuda_views(vol, rots, size, steps, **kw):
    v, geom, clip, size, steps, empty = _prepare(vol, rots, size, steps)
    return _render_cuda.view_volumes(_pad(v), geom, clip, size, steps, **kw)


def _views(n: int, seed: int) -> np.ndarray:
    """``n`` hemisphere views plus the three axis-aligned ones (rays along the volume's axes)."""
    return np.concatenate([hemisphere_views(n, seed=seed), rotation_from_direction(np.eye(3))])


@pytest.fixture(scope="module")
def skull():
    return skull_volume(species_params(3, seed=3), size=128, seed=3)


@pytest.mark.parametrize("layout,fetch", VARIANTS)
def test_skull_at_paper_settings_matches_cpu(skull, layout, fetch):
    rots = _views(21, seed=5)
    cpu = render_xrays(skull, rots, size=256, steps=128, backend="cpu")
    gpu = _cuda_render(skull, rots, 256, 128, layout=layout, fetch=fetch)
    np.testing.assert_allclose(gpu, cpu, atol=1e-5)
    assert cpu.max() > 0.5  # a real skull's x-rays, not an empty picture


def test_public_render_uses_cuda_and_matches(skull):
    rots = _views(9, seed=6)
    np.testing.assert_allclose(
        render_xrays(skull, rots, backend="cuda"), render_xrays(skull, rots, backend="cpu"), atol=1e-5
    )


@pytest.mark.parametrize("kind", ["uniform", "noise"])
@pytest.mark.parametrize("layout,fetch", VARIANTS)
def test_dense_volumes_match_cpu(kind, layout, fetch):
    rng = np.random.default_rng(7)
    vol = np.full((96, 96, 96), 0.3, np.float32) if kind == "uniform" else rng.random((96, 96, 96), dtype=np.float32)
    rots = _views(12, seed=7)
    cpu = render_xrays(vol, rots, size=160, steps=96, backend="cpu")
    np.testing.assert_allclose(_cuda_render(vol, rots, 160, 96, layout=layout, fetch=fetch), cpu, atol=1e-5)
    assert np.median(cpu) > 0.5  # most rays cross the dense cube (an oblique view's corners miss it)


@pytest.mark.parametrize("layout,fetch", VARIANTS)
def test_non_cubic_volume_matches_cpu(layout, fetch):
    rng = np.random.default_rng(8)
    vol = rng.random((40, 56, 72), dtype=np.float32)
    vol[:, :10] = 0.0  # an empty slab: the clipping box is not the volume
    rots = _views(10, seed=8)
    cpu = render_xrays(vol, rots, size=75, steps=50, backend="cpu")  # 75: not a multiple of any block side
    np.testing.assert_allclose(_cuda_render(vol, rots, 75, 50, layout=layout, fetch=fetch), cpu, atol=1e-5)
    vc = view_volumes(vol, rots[:4], size=33, steps=40, backend="cpu")
    np.testing.assert_allclose(_cuda_views(vol, rots[:4], 33, 40, layout=layout, fetch=fetch), vc, atol=1e-5)


def test_more_views_than_one_launch(skull):
    rots = hemisphere_views(1100, seed=9)  # more than the default batch of 1024 views per launch
    cpu = render_xrays(skull, rots, size=24, steps=32, backend="cpu")
    np.testing.assert_allclose(render_xrays(skull, rots, size=24, steps=32, backend="cuda"), cpu, atol=1e-5)
    small = _cuda_render(skull, rots[:50], 24, 32, batch=7)  # 8 launches, the last one partial
    np.testing.assert_allclose(small, cpu[:50], atol=1e-5)


def test_view_volumes_across_device_buffers(skull):
    rots = _views(6, seed=10)
    cpu = view_volumes(skull, rots, size=64, steps=64, backend="cpu")
    np.testing.assert_allclose(view_volumes(skull, rots, size=64, steps=64, backend="cuda"), cpu, atol=1e-5)
    per_view = 64 * 64 * 64 * 4
    split = _cuda_views(skull, rots, 64, 64, max_bytes=2 * per_view)  # 2 views per launch: 5 launches
    np.testing.assert_allclose(split, cpu, atol=1e-5)
    one = _cuda_views(skull, rots, 64, 64, max_bytes=1)  # less than one view: one view per launch
    np.testing.assert_allclose(one, cpu, atol=1e-5)


def test_xrays_are_the_view_volume_mean(skull):
    rots = _views(4, seed=11)
    vv = view_volumes(skull, rots, size=128, steps=128, backend="cuda")
    img = render_xrays(skull, rots, size=128, steps=128, chi=10.0, backend="cuda")
    np.testing.assert_allclose(img, 1.0 - np.exp(-10.0 * vv.mean(axis=1)), atol=2e-5)


def test_kernel_timing_and_bad_inputs(skull):
    v, geom, clip, size, steps, _ = _prepare(skull, hemisphere_views(8, seed=0), 64, 32)
    assert _render_cuda.kernel_seconds(_pad(v), geom, clip, size, steps, 10.0, repeats=1) > 0
    with pytest.raises(ValueError, match="fetch"):
        _render_cuda.render(_pad(v), geom, clip, size, steps, 10.0, fetch="surface")
    import cupy

    with pytest.raises(ValueError, match="numpy array"):
        render_xrays(cupy.asarray(skull), np.eye(3), backend="cuda")
    with pytest.raises(ValueError, match="3D"):
        render_xrays(np.zeros((4, 4), np.float32), np.eye(3), backend="cuda")
