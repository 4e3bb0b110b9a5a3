"""``tomo bench dataset``: the whole dataset's x-rays, rendered alone and rendered into a store.

Two timings at the store's settings (the paper: 175 species × 1,332 views, 256² × 128 steps from
128³ volumes, mirrored samples stored too):

* **render**: every species' views rendered in this process (one ``render_xrays`` call per species:
  ray setup, upload, kernel, copy back to host memory), nothing written;
* **render + write**: what the workflow's ``render-species`` jobs do, ``workers`` of them at a time:
  render in batches of ``batch`` views and write the species' Zarr shards, encoded and mirrored
  (:func:`tomodata.render_jobs.render_species`, the job's own function; default 64 views a batch)
  into a store made with :func:`tomodata.store.create_store`.

Volumes are procedural skulls (``distinct`` of them, reused round-robin; made before the clock
starts). ``max_seconds`` bounds each timing: species not begun by then are left out and the row says
how many were done, so a slow machine reports a measured rate, not a guess for the whole. Figures for
the project's machines are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import shutil
import time
from pathlib import Path

import numpy as np

from .files import tree_bytes
from .phantoms import skull_volume, species_params
from .render import render_xrays
from .render_jobs import render_species
from .store import create_store
from .store_settings import StoreSettings
from .views import hemisphere_views

__all__ = ["bench_dataset", "format_dataset_rows"]

PAPER_SPECIES = 175


def _species_table(n: int, size: int) -> list[dict]:
    """``n`` synthetic species entries (train, with every 10th val and every 10th + 5 test)."""
    split = {0: "val", 5: "test"}
    return [
        dict(
            name=f"bench_{i:03d}",
            split=split.get(i % 10, "train"),
            source="procedural skull (tomo bench dataset)",
            source_checksum="none",
            original_shape=[size, size, size],
            spacing_mm=[1.0, 1.0, 1.0],
        )
        for i in range(n)
    ]


def _warm(backend: str) -> None:
    """A worker's start-up, before any species is timed: imports, numba compilation or the CUDA
    context and module."""
    render_xrays(np.zeros((4, 4, 4), np.float32) + 0.5, np.eye(3), size=4, steps=4, backend=backend)


def _render_and_write(
    store: str, name: str, volume_file: str, batch: int, backend: str, deadline: float
) -> tuple[float, float] | None:
    """One species as the workflow's job does it (render in batches, write the shards); its (start,
    end) wall-clock times, or None where the deadline had passed before it began."""
    t0 = time.time()
    if t0 > deadline:
        return None
    render_species(store, name, np.load(volume_file), backend=backend, batch=batch)
    return t0, time.time()


def bench_dataset(
    folder,
    *,
    species: int = PAPER_SPECIES,
    settings: StoreSettings | None = None,
    backend: str = "cuda",
    workers: int = 8,
    batch: int = 64,
    distinct: int = 4,
    max_seconds: float = 600.0,
    write: bool = True,
    keep: bool = False,
) -> list[dict]:
    """Time rendering ``species`` species' views, then rendering and writing them into a store under
    ``folder`` (deleted afterwards unless ``keep``). ``settings``: the store's (default: the paper's).
    The write timing runs from the first species' start to the last one's end, with the ``workers``
    processes already started and warm (imports, compilation, CUDA context: :func:`_warm`).

    Returns rows ``{"what", "species", "views", "seconds", "views_per_s", "raw_gb", "disk_gb",
    "est_all_s"}``: ``species`` done within ``max_seconds``; ``raw_gb`` the stored uint16 samples
    (mirrors included) before compression, ``disk_gb`` the store's files; ``est_all_s`` the time for
    all ``species`` at the measured rate (measured where all were done, else extrapolated: the table
    marks it "est.").
    """
    st = settings or StoreSettings()  # its defaults are the paper's settings
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vols = []
    for k in range(min(distinct, species)):
        v = skull_volume(species_params(k, seed=k), size=st.volume_size, seed=k)
        f = folder / f"volume_{k}.npy"
        np.save(f, v)
        vols.append((v, f))
    table = _species_table(species, st.volume_size)
    raw_per_species = 2 * st.n_views * st.image_size**2 * 2 / 1e9
    rows = []

    warm = hemisphere_views(8, seed=st.view_seed)
    render_xrays(vols[0][0], warm, size=st.image_size, steps=st.steps, chi=st.chi, backend=backend)  # warm-up
    t0, done = time.perf_counter(), 0
    for i in range(species):
        if time.perf_counter() - t0 > max_seconds:
            break
        rots = st.species_rotations(table[i]["name"])  # each species' own views where the store has them
        render_xrays(vols[i % len(vols)][0], rots, size=st.image_size, steps=st.steps, chi=st.chi, backend=backend)
        done += 1
    rows.append(_row("render (no store)", done, species, st, time.perf_counter() - t0, 0.0, 0.0))
    if not write:
        return rows

    store = folder / "bench.zarr"
    if store.exists():
        shutil.rmtree(store)
    create_store(store, st, species=table, provenance={"config": {"bench": "dataset"}})
    with cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_warm, initargs=(backend,)
    ) as pool:
        for f in [pool.submit(time.sleep, 0.5) for _ in range(workers)]:  # every worker started and warm
            f.result()
        deadline = time.time() + max_seconds
        futures = [
            pool.submit(_render_and_write, str(store), e["name"], str(vols[i % len(vols)][1]), batch, backend, deadline)
            for i, e in enumerate(table)
        ]
        spans = [t for t in (f.result() for f in futures) if t is not None]
    done = len(spans)
    seconds = max(e for _, e in spans) - min(b for b, _ in spans) if spans else 0.0
    rows.append(
        _row(
            f"render + write ({workers} jobs, {batch} views per call)",
            done,
            species,
            st,
            seconds,
            done * raw_per_species,
            tree_bytes(store) / 1e9,
        )
    )
    if not keep:
        shutil.rmtree(store)
    return rows


def _row(what: str, done: int, species: int, st: StoreSettings, seconds: float, raw_gb: float, disk_gb: float) -> dict:
    views = done * st.n_views
    rate = views / seconds if seconds > 0 else 0.0
    return dict(
        what=what,
        species=done,
        views=views,
        seconds=seconds,
        views_per_s=rate,
        raw_gb=raw_gb,
        disk_gb=disk_gb,
        est_all_s=species * st.n_views / rate if rate > 0 else float("inf"),
    )


def format_dataset_rows(rows: list[dict], species: int) -> str:
    """A plain-text table of :func:`bench_dataset` rows (``species``: the number asked for)."""
    head = f"{'what':44} {'species':>9} {'views':>8} {'s':>8} {'views/s':>9} {'raw GB':>7} {'disk GB':>7} {'all s':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['what']:44} {r['species']:>4}/{species:<4} {r['views']:>8} {r['seconds']:>8.1f} "
            f"{r['views_per_s']:>9.0f} {r['raw_gb']:>7.1f} {r['disk_gb']:>7.1f} {r['est_all_s']:>7.0f}"
            + ("" if r["species"] == species else " est.")
        )
    return "\n".join(lines)
