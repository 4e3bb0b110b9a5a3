"""``tomo bench evaluate``: the per-sample cost of each phase of :func:`model.evaluate.evaluate_run`
and its peak memory, at whatever sizes the store and checkpoint have (the paper's: 256² x-rays,
128³ volumes, 128 × 128² view volumes, the ``paper`` network).

The evaluation is the real one (same code, same defaults as ``tomo evaluate``) on ``samples``
held-out samples, evenly spaced, with the methods ours, NN and Oracle (``methods``); its timings are
split into

* per held-out sample: ``network`` (the forward pass), ``fusion``, ``truth views`` (the target view
  volumes), ``metrics`` (L2, the iso-surface renders and SSIM, the slice-count analysis), ``nn
  search`` (lower bounds and exact re-ranking), ``nn views`` (the matched training view volumes),
  ``oracle queries`` (the held-out view volumes for the scan), ``oracle re-rank`` (the exact
  distances of the few candidates) and ``oracle views`` (the result's view volumes);
* per training sample: ``nn features`` (reading every training x-ray once and its lower-bound
  features); per training sample and pass: ``oracle training views`` (the scan makes every training
  view volume once per block of held-out samples);
* per (held-out, training) pair: ``oracle products`` (the scan's error-bounded matrix products).

``paper_projection`` scales the measured unit costs to the paper's 53,280 held-out × 412,920
training samples (:data:`PAPER_EVAL_SCALE`): per-query phases by the queries, per-training phases by
the training samples (the Oracle's views also by the passes that the same ``oracle_bytes`` would
need there), pair phases and the NN's lower-bound pass by queries × training samples (its exact part
by the queries, assuming as many exact comparisons per query as measured). Peak memory is the
process's maximum resident set size (``resource.getrusage``), which includes everything the process
held before the evaluation (reported apart as ``rss_before_gb``).
"""

from __future__ import annotations

import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from tomodata.store import open_store

from .evaluate import EvalConfig, evaluate_run

__all__ = ["PAPER_EVAL_SCALE", "bench_evaluate", "format_bench_evaluate"]

#: the paper's evaluation: 20 held-out species and 155 training species of 2,664 samples each
PAPER_EVAL_SCALE = dict(n_queries=20 * 2664, n_train=155 * 2664)


def _max_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _rss_gb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9
    except OSError:  # not Linux
        return float("nan")


def bench_evaluate(
    store,
    checkpoint,
    *,
    samples: int = 100,
    methods: Sequence[str] = ("ours", "nn", "oracle"),
    device="cpu",
    out_dir=None,
    strict: bool = False,
    progress: bool = True,
    **options,
) -> dict:
    """Run :func:`model.evaluate.evaluate_run` on ``samples`` held-out samples and return its costs.

    Args:
        store, checkpoint: as for ``tomo evaluate``.
        samples: held-out samples evaluated (evenly spaced over the ``test`` split).
        methods: the evaluated methods (default ours, NN, Oracle; "ours" includes the fusion).
        out_dir: where the evaluation's tables go (default: a temporary folder, removed).
        strict: refuse a checkpoint trained on other data (off: the costs do not depend on it).
        progress: named phases and progress lines on stderr.
        options: further :class:`model.evaluate.EvalConfig` fields.

    Returns:
        ``seconds`` (wall of the evaluation), ``cpu_seconds`` (the process's CPU time: on a shared
        machine, with ``loadavg_1min`` at the start and end, it tells how much the wall clock was
        stretched by other work), ``phases`` (name → dict(seconds, per, unit)), sizes,
        ``peak_rss_gb``, ``rss_before_gb``, the Oracle's and NN's mean exact comparisons per query,
        ``paper_projection_s`` (phase → seconds at :data:`PAPER_EVAL_SCALE` on this machine) and
        its total.
    """

    rss_before = _rss_gb()
    cfg = dict(max_samples=int(samples), methods=tuple(methods), device=device, strict=strict, progress=progress)
    s, wall, cpu, load0 = _timed_run(store, checkpoint, out_dir, **cfg, **options)
    peak = _max_rss_gb()
    spp = open_store(store).settings.samples_per_species
    Q, N = int(s["n_samples"]), len(s["train_species"]) * spp
    t = s["timings"]
    oracle = s.get("oracle") or {}
    phases = _phases(t, Q, N, passes=max(1, int(oracle.get("passes") or 1)))
    ps = PAPER_EVAL_SCALE
    D, S, _ = s["target_shape"]
    paper_passes = math.ceil(ps["n_queries"] / max(1, int(s["settings"]["oracle_bytes"] // (D * S * S * 4))))
    proj = _paper_projection(phases, t, Q, N, paper_passes=paper_passes)
    return dict(
        store=str(store),
        checkpoint=str(checkpoint),
        n_queries=Q,
        n_train=N,
        train_species=len(s["train_species"]),
        target_shape=s["target_shape"],
        image_size=s["image_size"],
        network=s["network"],
        methods=list(methods),
        threads=torch.get_num_threads(),
        seconds=wall,
        cpu_seconds=cpu,
        loadavg_1min=(load0, _loadavg()),
        evaluate_total_s=t.get("total_s", wall),
        phases=phases,
        timings=t,
        oracle_evaluated_mean=oracle.get("mean_evaluated"),
        oracle_passes=oracle.get("passes"),
        paper_oracle_passes=paper_passes,
        peak_rss_gb=peak,
        rss_before_gb=rss_before,
        paper_scale=ps,
        paper_projection_s=proj,
        paper_projection_total_s=sum(proj.values()),
    )


def _timed_run(store, checkpoint, out_dir, **options) -> tuple[dict, float, float, float]:
    """The evaluation (into ``out_dir``, or a temporary folder, removed): (summary, wall seconds, CPU
    seconds, 1-min load average at the start)."""
    tmp = tempfile.TemporaryDirectory(prefix="bench_evaluate_") if out_dir is None else None
    try:
        cfg = EvalConfig(store, checkpoint, Path(tmp.name if tmp is not None else out_dir), **options)
        t0, c0, load0 = time.perf_counter(), time.process_time(), _loadavg()
        s = evaluate_run(cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        if tmp is not None:
            tmp.cleanup()
    return s, wall, cpu, load0


def _phases(t: dict[str, float], Q: int, N: int, *, passes: int) -> dict[str, dict]:
    """The named phases' costs from the run's timings ``t``: seconds, seconds ``per`` unit, the unit
    (``Q`` held-out samples, ``N`` training samples, the Oracle's ``passes``)."""
    q_phases = [
        ("network", "network_s"),
        ("fusion", "fusion_s"),
        ("truth views", "truth_views_s"),
        ("metrics", "render_and_ssim_s"),
        ("nn search", "nn_search_s"),
        ("nn views", "nn_views_s"),
        ("oracle queries", "oracle_queries_s"),
        ("oracle re-rank", "oracle_exact_s"),
        ("oracle views", "oracle_views_s"),
    ]
    n_phases = [("nn features", "nn_features_s")]
    phases = {}
    for name, key in q_phases:
        if key in t and t[key] > 0:
            phases[name] = dict(seconds=t[key], per=t[key] / max(Q, 1), unit="held-out sample")
    for name, key in n_phases:
        if key in t:
            phases[name] = dict(seconds=t[key], per=t[key] / max(N, 1), unit="training sample")
    if "oracle_scan_s" in t:  # every training view volume made once per pass; products per (query, training) pair
        tv = t["oracle_scan_views_s"]
        phases["oracle training views"] = dict(seconds=tv, per=tv / (N * passes), unit="training sample and pass")
        prod = t["oracle_scan_s"] - tv
        phases["oracle products"] = dict(seconds=prod, per=prod / max(Q * N, 1), unit="(held-out, training) pair")
    return phases


def _paper_projection(phases: dict[str, dict], t: dict[str, float], Q: int, N: int, *, paper_passes: int) -> dict:
    """Seconds per phase at :data:`PAPER_EVAL_SCALE` from the measured unit costs (module docstring)."""
    ps = PAPER_EVAL_SCALE
    proj = {}
    for name, ph in phases.items():
        if ph["unit"] == "training sample":
            proj[name] = ph["per"] * ps["n_train"]
        elif ph["unit"] == "training sample and pass":
            proj[name] = ph["per"] * ps["n_train"] * paper_passes
        elif ph["unit"] == "(held-out, training) pair":
            proj[name] = ph["per"] * ps["n_train"] * ps["n_queries"]
        elif name == "nn search":
            bound = t.get("nn_bound_s", 0.0)  # the lower-bound pass: per query and training sample
            proj[name] = (
                bound / max(Q * N, 1) * ps["n_queries"] * ps["n_train"]
                + (ph["seconds"] - bound) / max(Q, 1) * ps["n_queries"]
            )
        else:
            proj[name] = ph["per"] * ps["n_queries"]
    return proj


def format_bench_evaluate(r: dict) -> str:
    """The report of :func:`bench_evaluate` as printed by ``tomo bench evaluate``."""
    D, S, _ = r["target_shape"]
    lines = [
        f"evaluate {r['n_queries']} held-out samples against {r['n_train']} training samples "
        f"({r['train_species']} species), x-rays {r['image_size']}², view volumes {D} x {S}², "
        f"methods {', '.join(r['methods'])}, {r['threads']} threads: {r['seconds']:.1f} s wall, "
        f"{r['cpu_seconds']:.1f} s CPU (1-min load {r['loadavg_1min'][0]:.1f} at the start, "
        f"{r['loadavg_1min'][1]:.1f} at the end)",
        f"{'phase':<16} {'seconds':>9} {'per sample':>12}  unit",
    ]
    for name, ph in r["phases"].items():
        lines.append(f"{name:<16} {ph['seconds']:9.1f} {ph['per'] * 1e3:10.2f} ms  per {ph['unit']}")
    if r.get("oracle_evaluated_mean") is not None:
        lines.append(
            f"Oracle: {r['oracle_evaluated_mean']:.1f} training samples re-ranked exactly per query, "
            f"{r['oracle_passes']} pass(es) over the training view volumes "
            f"({r['paper_oracle_passes']} at the paper's scale with the same memory)"
        )
    lines.append(f"peak RSS {r['peak_rss_gb']:.2f} GB (the process held {r['rss_before_gb']:.2f} GB before)")
    ps = r["paper_scale"]
    lines.append(
        f"paper scale ({ps['n_queries']} held-out x {ps['n_train']} training samples) at these unit "
        f"costs, this machine: {r['paper_projection_total_s'] / 3600:.1f} h ("
        + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in r["paper_projection_s"].items())
        + ")"
    )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - python -m model.bench_evaluate STORE CKPT [N]
    print(
        format_bench_evaluate(
            bench_evaluate(sys.argv[1], sys.argv[2], samples=int(sys.argv[3]) if len(sys.argv) > 3 else 100)
        )
    )
