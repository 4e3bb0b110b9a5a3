"""The Oracle baseline (paper §5.1): for each ground-truth view volume, the nearest training view
volume in L2 on the target grid, over every training sample (mirrored ones included) — exactly.

**One scan, an error-bounded product, an exact re-ranking.** Per block of queries (as many
ground-truth view volumes as fit ``query_bytes``), every training view volume t is made once
(:class:`model.sources.ViewSource`, a mirrored sample is its view's flipped) and compared with every
query q of the block at once: ``d̃ = ‖q‖² + ‖t‖² − 2 q·t``, the dot products by float32 matrix
products over chunks of m voxels (default 1,024) summed in float64, the norms in float64. Each chunk's
float32 dot product is within ``γ_m Σ|q_i t_i|`` of the real one (γ_m = m·u / (1 − m·u), u = 2⁻²⁴,
for any summation order; Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), and by
Cauchy–Schwarz the chunks' Σ|q_i t_i| add up to at most ‖q‖‖t‖, so

    |d̃ − d| <= ε = 2.02 γ_m ‖q‖ ‖t‖ + 4 n 2⁻⁵³ (‖q‖ + ‖t‖)²

(the second term covers the float64 sums of n voxels). A training sample can be the nearest only if
``d̃ − ε`` is at most the smallest ``d̃ + ε`` of all training samples; those candidates (a handful:
d̃ is within about 1e-4 relative of d) are re-ranked exactly, Σ (t − q)² in float64 on the grid, and
the smallest wins, ties to the lowest global index. The result is the exact nearest neighbour by that
distance; a winner above the bound it must meet raises ``RuntimeError`` (never a silent result).
tests/test_evaluate.py checks it against brute force.

**Cost.** Making every training view volume once (ViewSource: ~50 ms each at 128³ on 2 cores) plus
``2 · Q · N · n`` flops of products (~70 GFLOP/s on 2 cores) per pass; a pass per block of queries.
The lower-bound pre-filter that serves the NN (:mod:`model.search`) does not help here: almost all
of two view volumes' difference lies at scales finer than its blocks, so the bound passes 40–50 % of
the training samples at 16 cells per axis and each of those needed its view volume made again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from tomodata.progress import progress as progress_bar

from .sources import ViewSource, release_freed_memory

__all__ = ["OracleResult", "oracle_search", "scan_error", "ORACLE_CHUNK"]

#: voxels per float32 dot-product chunk (the error bound grows with it; the speed barely does)
ORACLE_CHUNK = 1024
#: scan steps between handing freed memory back (model.sources.release_freed_memory)
TRIM_EVERY = 8
#: bytes of training view volumes made per step of the scan (float32)
TRAIN_BLOCK_BYTES = 128 << 20


@dataclass
class OracleResult:
    index: np.ndarray  # (Q,) int64 global training index of the nearest view volume
    dist2: np.ndarray  # (Q,) float64 exact Σ (t − q)² on the target grid
    evaluated: np.ndarray  # (Q,) int64 training samples re-ranked exactly (the scan could not rule them out)
    passes: int = 1  # passes over the training samples (one per block of queries)
    timings: dict = field(default_factory=dict)  # seconds: queries_s, scan_s (of which scan_views_s), exact_s
    per_pass: int = 0  # queries per pass (``query_bytes``)


def _gamma(m: int) -> float:
    u = 2.0**-24
    return m * u / (1.0 - m * u)


def scan_error(qn: torch.Tensor, tn: torch.Tensor, *, chunk: int, n: int) -> torch.Tensor:
    """(Q, N) float64 bound ε on ``|d̃ − d|`` for queries with norms ``qn`` (Q,) and training samples
    with norms ``tn`` (N,), dot products in float32 chunks of ``chunk`` of ``n`` voxels (module docstring)."""
    qt = qn[:, None] * tn[None, :]
    return 2.02 * _gamma(chunk) * qt + 4.0 * n * 2.0**-53 * (qn[:, None] + tn[None, :]) ** 2


@contextmanager
def _float32_matmul_exact():
    """float32 matrix products in full float32 (no TF32 or bf16 shortcuts) inside the block."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _row_norms(x: torch.Tensor) -> torch.Tensor:
    """(B,) float64 Euclidean norms of the rows of (B, ...) float32, one row at a time in float64."""
    return (
        torch.stack([r.double().square().sum().sqrt() for r in x.reshape(x.shape[0], -1)])
        if len(x)
        else torch.empty(0, dtype=torch.float64, device=x.device)
    )


def _exact_sq(v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``Σ (v[r] − q[r])²`` per row r of two (R, ...) float32 stacks, in float64; the bits do not depend
    on R (a lone row is reduced as part of a 2-row tensor, like every other)."""
    lone = v.shape[0] == 1
    if lone:
        v, q = v.expand(2, *v.shape[1:]), q.expand(2, *q.shape[1:])
    d = (v.double() - q.double()).square().flatten(1).sum(1)
    return d[:1] if lone else d


def oracle_search(
    query_views: Callable[[np.ndarray], torch.Tensor],
    n_queries: int,
    source: ViewSource,
    *,
    size: int,
    depth: int,
    query_bytes: int = 1 << 30,
    chunk: int = ORACLE_CHUNK,
    block: int | None = None,
    progress: bool = False,
) -> OracleResult:
    """Exact nearest training view volume of each of ``n_queries`` ground-truth view volumes.

    Args:
        query_views: ``query_views(ix)`` → (len(ix), depth, size, size) float32 view volumes of the
            queries ``ix`` (int64 array in ``range(n_queries)``) on ``source.device``; called a few
            queries at a time, so only the block's product layout is kept.
        n_queries: number of queries Q.
        source: the training samples (every sample of every training species).
        size, depth: the target grid (depth, size, size).
        query_bytes: memory for one block of queries (float32); more queries than fit take more passes.
        chunk: voxels per float32 dot product (:func:`scan_error`).
        block: training samples made per scan step (even; default: :data:`TRAIN_BLOCK_BYTES` of them).
        progress: log lines (or a bar on a terminal) over the scan's training samples.

    Returns:
        :class:`OracleResult`. The rule and why it is exact: the module docstring.
    """
    n = depth * size * size
    m = max(1, min(int(chunk), n))
    C = math.ceil(n / m)
    N = len(source)
    if n_queries < 0 or N < 1:
        raise ValueError(f"need queries and training samples, got {n_queries} and {N}")
    per_pass = max(1, int(query_bytes // (C * m * 4)))
    if block is None:
        block = max(2, int(TRAIN_BLOCK_BYTES // (n * 4)) // 2 * 2)  # even: a view and its mirror together
    block = max(1, int(block))
    dev = source.device
    index = np.full(n_queries, -1, np.int64)
    dist2 = np.full(n_queries, np.inf)
    evaluated = np.zeros(n_queries, np.int64)
    passes = math.ceil(n_queries / per_pass) if n_queries else 0
    timings = dict(queries_s=0.0, scan_s=0.0, scan_views_s=0.0, exact_s=0.0)
    bar = progress_bar(total=N * passes, enabled=progress, desc="oracle scan", unit="training sample")
    for q0 in range(0, n_queries, per_pass):
        q1 = min(n_queries, q0 + per_pass)
        t0 = time.perf_counter()
        ql, qn = _query_layout(query_views, np.arange(q0, q1), n=n, m=m, C=C, device=dev)
        t1 = time.perf_counter()
        cand_q, cand_g, upper, views_s = _scan(ql, qn, source, size=size, depth=depth, m=m, block=block, bar=bar)
        timings["scan_views_s"] += views_s
        t2 = time.perf_counter()
        bi, bd, ne = _rerank(ql, cand_q, cand_g, source, size=size, depth=depth, n=n)
        if np.any(bd > upper * (1.0 + 1e-9) + 1e-30):
            raise RuntimeError(
                "the Oracle's scan bound was violated (a re-ranked distance above the bound it "
                "must meet); please report this with the store and grid size"
            )
        index[q0:q1], dist2[q0:q1], evaluated[q0:q1] = bi, bd, ne
        timings["queries_s"] += t1 - t0
        timings["scan_s"] += t2 - t1
        timings["exact_s"] += time.perf_counter() - t2
        del ql
    bar.close()
    return OracleResult(index, dist2, evaluated, passes, timings, per_pass)


def _query_layout(
    query_views, ix: np.ndarray, *, n: int, m: int, C: int, device, batch: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries ``ix`` as a (C, Q, m) float32 product layout (zero-padded to C·m voxels) and their
    (Q,) float64 norms; made ``batch`` at a time."""
    Q = ix.size
    ql = torch.zeros((C, Q, m), dtype=torch.float32, device=device)
    qn = torch.empty(Q, dtype=torch.float64, device=device)
    for a in range(0, Q, batch):
        v = query_views(ix[a : a + batch]).to(device=device, dtype=torch.float32)
        if v.shape[0] != min(batch, Q - a) or v[0].numel() != n:
            raise ValueError(f"query_views returned {tuple(v.shape)} for {min(batch, Q - a)} queries of {n} voxels")
        qn[a : a + v.shape[0]] = _row_norms(v)
        for r in range(v.shape[0]):
            row = torch.zeros(C * m, dtype=torch.float32, device=device)
            row[:n] = v[r].reshape(-1)
            ql[:, a + r, :] = row.view(C, m)
    return ql, qn


def _query_row(ql: torch.Tensor, i: int, n: int) -> torch.Tensor:
    """Query ``i`` of a product layout as a flat (n,) float32 vector."""
    return ql[:, i, :].reshape(-1)[:n]


def _scan(
    ql: torch.Tensor, qn: torch.Tensor, source: ViewSource, *, size: int, depth: int, m: int, block: int, bar
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One pass over the training samples: the (query, sample) candidate pairs that the bound cannot
    rule out (``cand_q``, ``cand_g``), the per-query smallest upper bound ``min_t (d̃ + ε)`` and the
    seconds spent making training view volumes."""
    C, Q, _ = ql.shape
    n = depth * size * size
    N = len(source)
    upper = torch.full((Q,), math.inf, dtype=torch.float64, device=ql.device)
    cq: list[np.ndarray] = []
    cg: list[np.ndarray] = []
    clo: list[np.ndarray] = []
    qn2 = qn.square()
    views_s = 0.0
    with _float32_matmul_exact():
        for a in range(0, N, block):
            g = np.arange(a, min(N, a + block))
            tv = time.perf_counter()
            t = source.views(g, size=size, depth=depth).reshape(g.size, n)
            views_s += time.perf_counter() - tv
            tn = _row_norms(t)
            if C * m != n:
                t = torch.nn.functional.pad(t, (0, C * m - n))
            s = torch.bmm(ql, t.view(g.size, C, m).permute(1, 2, 0)).sum(0, dtype=torch.float64)  # (Q, B)
            d = qn2[:, None] + tn.square()[None, :] - 2.0 * s
            eps = scan_error(qn, tn, chunk=m, n=n)
            lo = d - eps
            upper = torch.minimum(upper, (d + eps).min(1).values)
            qi, bj = torch.nonzero(lo <= upper[:, None], as_tuple=True)
            cq.append(qi.cpu().numpy())
            cg.append(bj.cpu().numpy() + a)
            clo.append(lo[qi, bj].cpu().numpy())
            if sum(x.size for x in cq) > 4 * Q + 4096:  # prune what the tightened bounds now rule out
                cq, cg, clo = _prune(cq, cg, clo, upper.cpu().numpy())
            bar.update(g.size)
            if (a // block) % TRIM_EVERY == TRIM_EVERY - 1:
                release_freed_memory()  # the heap would otherwise fragment and grow over the scan
    cq, cg, clo = _prune(cq, cg, clo, upper.cpu().numpy())
    return cq[0], cg[0], upper.cpu().numpy(), views_s


def _prune(cq, cg, clo, upper: np.ndarray):
    q, g, lo = np.concatenate(cq), np.concatenate(cg), np.concatenate(clo)
    keep = lo <= upper[q]
    return [q[keep]], [g[keep]], [lo[keep]]


def _rerank(
    ql: torch.Tensor,
    cand_q: np.ndarray,
    cand_g: np.ndarray,
    source: ViewSource,
    *,
    size: int,
    depth: int,
    n: int,
    budget_bytes: int = 256 << 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact distances of the candidate pairs; per query the smallest (ties to the lowest index)."""
    Q = ql.shape[1]
    best_i = np.full(Q, -1, np.int64)
    best_d = np.full(Q, np.inf)
    evaluated = np.bincount(cand_q, minlength=Q).astype(np.int64)
    order = np.lexsort((cand_q, cand_g))  # by training sample, then query
    cand_q, cand_g = cand_q[order], cand_g[order]
    uniq = np.unique(cand_g)
    per_call = max(1, int(budget_bytes // (n * 4)))
    for u0 in range(0, uniq.size, per_call):
        gs = uniq[u0 : u0 + per_call]
        v = source.views(gs, size=size, depth=depth).reshape(gs.size, n)
        sel = np.nonzero((cand_g >= gs[0]) & (cand_g <= gs[-1]))[0]
        rows = np.searchsorted(gs, cand_g[sel])
        for a in range(0, sel.size, 8):
            r, qs = rows[a : a + 8], cand_q[sel[a : a + 8]]
            qv = torch.stack([_query_row(ql, int(i), n) for i in qs])
            d = _exact_sq(v[torch.from_numpy(r).to(v.device)], qv).cpu().numpy()
            for i, gi, di in zip(qs.tolist(), cand_g[sel[a : a + 8]].tolist(), d.tolist()):
                if di < best_d[i] or (di == best_d[i] and gi < best_i[i]):
                    best_d[i], best_i[i] = di, gi
    return best_i, best_d, evaluated
