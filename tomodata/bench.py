"""Benchmarks behind ``tomo bench``: plain functions that time the renderer and return numbers.

Timings are wall-clock medians over repeats after a warm-up call (numba compilation and CUDA module
loading are excluded). Figures for the project's machines are kept in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from .render import available_backends, render_xrays, view_volumes
from .views import hemisphere_views


def machine_summary() -> str:
    """One line naming the CPU, its core count, numba's thread count and any CUDA device."""
    import numba

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = "no CUDA device"
    if "cuda" in available_backends():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"{cpu}, {os.cpu_count()} cores, numba threads {numba.get_num_threads()}, {gpu}"


def bench_volume(kind: str, size: int) -> np.ndarray:
    """A benchmark volume: ``"skull"`` (a procedural skull, the real workload) or ``"dense"``
    (uniform density filling the whole cube: the worst case, no ray clipping helps)."""
    if kind == "dense":
        return np.full((size, size, size), 0.3, dtype=np.float32)
    if kind == "skull":
        from .phantoms import skull_volume, species_params

        return skull_volume(species_params(0), size=size, seed=0)
    raise ValueError(f"unknown benchmark volume {kind!r}: use 'skull' or 'dense'")


def _time(fn, repeats: int) -> float:
    fn()  # warm-up: compilation, caches, device context
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_render(*, volume: str = "skull", n_views: int = 32, image_size: int = 256, steps: int = 128,
                 volume_size: int = 128, view_size: int = 128, repeats: int = 3,
                 backends: list[str] | None = None) -> list[dict]:
    """Time ``render_xrays`` and ``view_volumes`` per backend.

    Returns rows ``{"backend", "what", "volume", "views", "ms_per_view", "views_per_s"}``;
    ``render_xrays`` is timed at ``image_size``² with ``steps`` samples, ``view_volumes`` at
    ``view_size``² × ``steps``.
    """
    vol = bench_volume(volume, volume_size)
    rots = hemisphere_views(n_views, seed=0)
    rows = []
    for backend in backends or available_backends():
        t = _time(lambda: render_xrays(vol, rots, size=image_size, steps=steps, backend=backend), repeats)
        rows.append(dict(backend=backend, what=f"render_xrays {image_size}² × {steps}", volume=f"{volume} {volume_size}³",
                         views=n_views, ms_per_view=1e3 * t / n_views, views_per_s=n_views / t))
        nv = max(1, min(n_views, 16))
        t = _time(lambda: view_volumes(vol, rots[:nv], size=view_size, steps=steps, backend=backend), repeats)
        rows.append(dict(backend=backend, what=f"view_volumes {steps} × {view_size}²", volume=f"{volume} {volume_size}³",
                         views=nv, ms_per_view=1e3 * t / nv, views_per_s=nv / t))
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of benchmark rows."""
    head = f"{'backend':8} {'what':28} {'volume':12} {'views':>6} {'ms/view':>9} {'views/s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['backend']:8} {r['what']:28} {r['volume']:12} {r['views']:>6} "
                     f"{r['ms_per_view']:>9.2f} {r['views_per_s']:>9.1f}")
    return "\n".join(lines)
