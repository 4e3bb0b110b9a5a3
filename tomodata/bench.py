"""Benchmarks behind ``tomo bench``: plain functions that time the renderer and return numbers.

Timings are wall-clock medians over repeats after a warm-up call (numba compilation and CUDA module
loading are excluded). Figures for the project's machines are kept in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import numba
import numpy as np

from . import _render_cuda
from .phantoms import skull_volume, species_params
from .render import _pad, _prepare, available_backends, render_xrays, view_volumes
from .views import hemisphere_views


def machine_summary() -> str:
    """One line naming the CPU, its core count, numba's thread count and any CUDA device."""
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


def bench_render(
    *,
    volume: str = "skull",
    n_views: int = 32,
    image_size: int = 256,
    steps: int = 128,
    volume_size: int = 128,
    view_size: int = 128,
    repeats: int = 3,
    backends: list[str] | None = None,
) -> list[dict]:
    """Time ``render_xrays`` and ``view_volumes`` per backend.

    Returns rows ``{"backend", "what", "volume", "views", "ms_per_view", "views_per_s"}``;
    ``render_xrays`` is timed at ``image_size``² with ``steps`` samples, ``view_volumes`` at
    ``view_size``² × ``steps``.
    """
    vol = bench_volume(volume, volume_size)
    rots = hemisphere_views(n_views, seed=0)
    rows = []
    for backend in backends or available_backends():
        t = _time(partial(render_xrays, vol, rots, size=image_size, steps=steps, backend=backend), repeats)
        rows.append(_row(backend, f"render_xrays {image_size}² × {steps}", f"{volume} {volume_size}³", n_views, t))
        if backend == "cuda":
            rows += _cuda_kernel_rows(vol, rots, image_size, steps, repeats, f"{volume} {volume_size}³")
        nv = max(1, min(n_views, 16))
        t = _time(partial(view_volumes, vol, rots[:nv], size=view_size, steps=steps, backend=backend), repeats)
        rows.append(_row(backend, f"view_volumes {steps} × {view_size}²", f"{volume} {volume_size}³", nv, t))
    return rows


def _row(backend: str, what: str, volume: str, views: int, seconds: float) -> dict:
    return dict(
        backend=backend,
        what=what,
        volume=volume,
        views=views,
        ms_per_view=1e3 * seconds / views,
        views_per_s=views / seconds,
    )


def _cuda_kernel_rows(vol, rots, size: int, steps: int, repeats: int, volume: str) -> list[dict]:
    """CUDA rows without the ray set-up: the kernel and the copy back into page-locked or pageable
    host memory, then the kernel alone (CUDA events, output left on the device) per launch layout
    and voxel fetch."""
    vol, geom, clip, size, steps, _ = _prepare(vol, rots, size, steps)
    vp, n = _pad(vol), len(rots)
    rows = []
    for pinned in (True, False):
        t = _time(partial(_render_cuda.render, vp, geom, clip, size, steps, 10.0, pinned=pinned), repeats)
        rows.append(_row("cuda", f"render + copy, {'pinned' if pinned else 'pageable'}", volume, n, t))
    for layout in _render_cuda.LAYOUTS:
        for fetch in _render_cuda.FETCHES:
            t = _render_cuda.kernel_seconds(
                vp, geom, clip, size, steps, 10.0, layout=layout, fetch=fetch, repeats=repeats
            )
            rows.append(_row("cuda", f"kernel {layout}/{fetch}", volume, n, t))
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of benchmark rows."""
    head = f"{'backend':8} {'what':28} {'volume':12} {'views':>6} {'ms/view':>9} {'views/s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['backend']:8} {r['what']:28} {r['volume']:12} {r['views']:>6} "
            f"{r['ms_per_view']:>9.4f} {r['views_per_s']:>9.1f}"
        )
    return "\n".join(lines)


def rule_benchmarks(workdir, run: str) -> list[dict]:
    """Per rule, from the Snakemake benchmark files ``WORKDIR/benchmarks/RUN/RULE/*.tsv`` of a run:
    ``rule``, ``jobs``, ``total_s``, ``max_s`` (the slowest job), ``max_rss_mb`` (the largest job's
    peak resident memory) and ``cpu_s`` (CPU seconds, all jobs). ValueError where there are none."""
    root = Path(workdir) / "benchmarks" / run
    rows = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir()):
        recs = []
        for f in sorted(folder.glob("*.tsv")):
            with open(f, newline="") as fh:
                recs += list(csv.DictReader(fh, delimiter="\t"))
        if not recs:
            continue

        def col(recs, name):
            return [float(r[name]) for r in recs if r.get(name) not in (None, "", "NA", "-")]

        s, rss, cpu = col(recs, "s"), col(recs, "max_rss"), col(recs, "cpu_time")
        rows.append(
            {
                "rule": folder.name,
                "jobs": len(recs),
                "total_s": sum(s),
                "max_s": max(s, default=0.0),
                "max_rss_mb": max(rss, default=0.0),
                "cpu_s": sum(cpu),
            }
        )
    if not rows:
        raise ValueError(f"no Snakemake benchmark files under {root} (run the workflow with this run name first)")
    return rows


def suggest_resources(rows: list[dict], *, margin: float = 1.5, min_mem_mb: int = 500, min_runtime: int = 5) -> dict:
    """Requests from measured rows (:func:`rule_benchmarks`): per rule ``mem_mb`` = peak RSS ×
    ``margin`` rounded up to 100 MB, ``runtime`` = slowest job × ``margin`` in minutes, rounded up."""
    return {
        r["rule"]: {
            "mem_mb": max(min_mem_mb, int(math.ceil(r["max_rss_mb"] * margin / 100.0)) * 100),
            "runtime": max(min_runtime, int(math.ceil(r["max_s"] * margin / 60.0))),
        }
        for r in rows
    }


def format_rule_rows(rows: list[dict]) -> str:
    """A Markdown table of :func:`rule_benchmarks` rows."""
    lines = ["| rule | jobs | wall s (all jobs) | slowest job s | peak RSS MB | CPU s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['rule']} | {r['jobs']} | {r['total_s']:.0f} | {r['max_s']:.0f} | {r['max_rss_mb']:.0f} | "
            f"{r['cpu_s']:.0f} |"
        )
    return "\n".join(lines)
