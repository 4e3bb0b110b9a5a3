"""The computing phases of one evaluation run (:func:`model.evaluate.evaluate_run`), in order:
:func:`load_run` (store, checkpoint, checks, sources, the evaluated samples), :func:`nn_phase` (the
exact NN search), :func:`oracle_phase` (the training view cache and the exact Oracle scan) and
:func:`score_phase` (predictions, baselines, per-sample metrics, slice counts). They share one
:class:`EvalState`; the tables are written by :mod:`model.evaluate` from it.

Conventions: the evaluated samples are ``Q`` global indices ``sel`` into the held-out
:class:`model.sources.ViewSource`, evenly spaced; every per-sample array is (Q,) in that order.
Training samples are global indices into ``train_src`` (species-major). View volumes are
(B, D, S, S) on the network's output grid; x-rays (B, image_size, image_size) opacities. Timings are
seconds, keyed as in summary.json's ``timings``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tomodata.progress import phase
from tomodata.progress import progress as progress_bar
from tomodata.store import SPLITS, DatasetStore, open_store

from .checkpoint import data_differences, data_fingerprint, model_from_checkpoint
from .data import StoreSamples, resize_xrays
from .eval_config import EvalConfig
from .fusion import as_density, fuse, xray_at
from .metrics import METRICS, depth_resample, dssim, view_class, volume_errors
from .network import NetworkConfig, TomographyNet
from .oracle import OracleResult, oracle_search
from .search import coarse_factors, coarse_for_memory, nearest_images, nearest_images_bounded, train_coarse_features
from .sources import ImageSource, ViewSource, mean_volume, release_freed_memory, select_evenly, store_image_blocks
from .surface import render_isosurface_torch

__all__ = ["EvalState", "Matches", "Scores", "load_run", "nn_phase", "oracle_phase", "score_phase"]


@dataclass
class Matches:
    """A baseline's match per evaluated sample, (Q,) each: ``index`` the training sample's global
    index (-1: not searched), ``dist2`` the squared L2 distance (NaN: not searched), ``evaluated`` how
    many training samples were compared exactly."""

    index: np.ndarray
    dist2: np.ndarray
    evaluated: np.ndarray

    @classmethod
    def empty(cls, q: int) -> Matches:
        return cls(np.full(q, -1, np.int64), np.full(q, np.nan), np.zeros(q, np.int64))


@dataclass
class Scores:
    """The per-sample results: ``per[method][metric]`` (Q,), ``slice_vals[method][count]`` (Q,) DSSIM
    of the depth-resampled render (methods ``slice_methods``: ``truth`` and ours or ours_nofusion;
    counts ``used_counts`` < D; ``skipped_counts`` >= D), ``classes`` the samples' view classes."""

    per: dict[str, dict[str, np.ndarray]]
    slice_methods: list[str]
    used_counts: list[int]
    skipped_counts: list[int]
    slice_vals: dict[str, dict[int, np.ndarray]]
    classes: list[str]


@dataclass
class EvalState:
    """What the phases of one run share: the config, what :func:`load_run` opened and the phases' results."""

    cfg: EvalConfig
    t_start: float  # time.perf_counter() at the start of the run
    ds: DatasetStore
    model: TomographyNet
    ckpt: dict  # the checkpoint (its ``step`` and ``data`` fingerprint)
    splits: dict[str, list[str]]  # train / val / test species of the store
    diffs: list[str]  # differences between the checkpoint's data and the store's (strict=False only)
    out: Path
    held_src: ViewSource
    train_src: ViewSource | None  # None unless the NN or the Oracle is evaluated
    held_images: ImageSource
    sel: np.ndarray  # (Q,) global held-out indices
    sp_idx: np.ndarray  # (Q,) their species (index into held)
    smp_idx: np.ndarray  # (Q,) their sample within the species
    mean_vol: torch.Tensor | None  # the mean training volume (mean baseline)
    timings: dict[str, float] = field(default_factory=dict)
    nn: Matches | None = None
    nn_coarse_used: int | None = None
    oracle: Matches | None = None
    oracle_res: OracleResult | None = None
    cached: bool = False  # every training view volume kept in memory
    scores: Scores | None = None

    @property
    def dev(self) -> torch.device:
        return self.cfg.torch_device

    @property
    def net(self) -> NetworkConfig:
        return self.model.config

    @property
    def held(self) -> list[str]:
        return self.splits[self.cfg.split]

    @property
    def train(self) -> list[str]:
        return self.splits["train"]

    @property
    def D(self) -> int:
        return int(self.net.out_depth)

    @property
    def S(self) -> int:
        return int(self.net.out_size)

    @property
    def Q(self) -> int:
        return int(self.sel.size)

    @property
    def image_size(self) -> int:
        return self.ds.settings.image_size

    @property
    def chi(self) -> float:
        return self.ds.settings.chi

    def held_xrays(self, ix: np.ndarray) -> np.ndarray:
        """(B, image_size, image_size) held-out x-rays of global indices ``ix``, read on demand."""
        return self.held_images.views(ix, size=self.image_size, depth=1)[:, 0].numpy()


# --------------------------------------------------------------------------------------------------
# load: store, checkpoint, checks, sources
# --------------------------------------------------------------------------------------------------


def _check_compat(state: dict, store) -> list[str]:
    """Differences between the data a checkpoint was trained on (its ``data`` fingerprint: spec,
    chi, steps, image and volume sizes, views, view scheme and seed, training species, the stored
    content of the train and val species) and the store's (empty = compatible). Keys a checkpoint
    predates are not compared (:func:`model.checkpoint.data_differences`)."""
    return data_differences(state.get("data", {}), data_fingerprint(StoreSamples(store, "train")))


def _open_checked(cfg: EvalConfig) -> tuple[DatasetStore, TomographyNet, dict, dict[str, list[str]], list[str]]:
    """Open the store and the checkpoint and refuse what cannot be evaluated (ValueError): no
    evaluated or training species, incomplete species, other training data (``strict``), evaluated
    species the checkpoint trained on, an output below SSIM's window. Returns (ds, model on the CPU,
    checkpoint, splits, data differences)."""
    store, checkpoint, split = cfg.store, cfg.checkpoint, cfg.split
    ds = open_store(store)
    model, state = model_from_checkpoint(checkpoint, map_location="cpu")
    splits = {sp: ds.species_names(sp) for sp in SPLITS}
    held = splits[split]  # the evaluated species: exactly the asked split
    train = splits["train"]
    if not held:
        have = ", ".join(f"{k}: {len(v)}" for k, v in splits.items())
        hint = (
            "build the store with test species (e.g. tomo build-demo --test N; a manifest's split column); "
            "--split val evaluates the model-choice species, which is no test result"
            if split == "test"
            else "pick another split (--split)"
        )
        raise ValueError(f"the store {store} has no {split!r} species to evaluate ({have} species): {hint}")
    if not train:
        raise ValueError(f"the store {store} has no 'train' species (the NN, Oracle and mean database)")
    ds.require_complete(held + train)
    diffs = _check_compat(state, store)
    if diffs and cfg.strict:
        raise ValueError(
            f"checkpoint {checkpoint} was trained on other data than the store {store}:\n  " + "\n  ".join(diffs)
        )
    leaked = sorted(set(held) & set(state.get("data", {}).get("species", [])))
    if leaked:
        raise ValueError(f"evaluated ({split!r}) species {leaked} of {store} were training species of {checkpoint}")
    if int(model.config.out_size) < 11:  # before any search: dssim_gauss's window must fit the renders
        raise ValueError(
            f"the network's output size {int(model.config.out_size)} is below 11, the side of SSIM's Gaussian "
            "window (dssim_gauss; dssim's uniform window is 7)"
        )
    return ds, model, state, splits, diffs


def load_run(cfg: EvalConfig, t_start: float) -> EvalState:
    """Phase 1: the checked store and checkpoint, the model on the device, the output folder, the
    view and image sources, the evaluated samples and (``mean``) the mean training volume."""
    ds, model, ckpt, splits, diffs = _open_checked(cfg)
    dev = cfg.torch_device
    model = model.to(dev)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held, train = splits[cfg.split], splits["train"]
    held_src = ViewSource(ds, held, device=dev)
    train_src = ViewSource(ds, train, device=dev) if cfg.needs_train_views else None
    sel = select_evenly(len(held_src), cfg.max_samples)
    sp_idx, smp_idx = held_src.locate(sel)
    timings: dict[str, float] = {}
    mean_vol = None
    if "mean" in cfg.methods:  # the mean baseline: views of the mean training volume (= mean of their views)
        t0 = time.perf_counter()
        mean_vol = torch.from_numpy(mean_volume(ds, train)).to(dev)
        timings["mean_volume_s"] = time.perf_counter() - t0
    held_images = ImageSource(ds, held)  # the held-out x-rays, read on demand (same global indices)
    return EvalState(
        cfg=cfg,
        t_start=t_start,
        ds=ds,
        model=model,
        ckpt=ckpt,
        splits=splits,
        diffs=diffs,
        out=out,
        held_src=held_src,
        train_src=train_src,
        held_images=held_images,
        sel=sel,
        sp_idx=sp_idx,
        smp_idx=smp_idx,
        mean_vol=mean_vol,
        timings=timings,
        nn=Matches.empty(sel.size),
        oracle=Matches.empty(sel.size),
    )


# --------------------------------------------------------------------------------------------------
# the NN and the Oracle
# --------------------------------------------------------------------------------------------------


def nn_phase(st: EvalState) -> None:
    """Phase 2 (``nn``): the exact nearest training x-ray of every evaluated sample (``st.nn``)."""
    cfg = st.cfg
    if "nn" not in cfg.methods:
        return
    if cfg.progress:
        phase("evaluate", f"NN search ({cfg.nn_search}) of {st.Q} held-out x-rays in {len(st.train)} training species")
    if cfg.nn_search == "brute":
        _nn_brute(st)
    else:
        _nn_bound(st)


def _nn_brute(st: EvalState) -> None:
    """Every (held-out, training) pair by blocked float64 matrix products."""
    cfg, nn = st.cfg, st.nn
    assert nn is not None
    t0 = time.perf_counter()
    blocks = store_image_blocks(st.ds, st.train, block=cfg.train_block)
    query_starts = range(0, st.Q, cfg.nn_query_block)
    for a in progress_bar(query_starts, enabled=cfg.progress, desc="NN search", unit="query block"):
        ix = st.sel[a : a + cfg.nn_query_block]
        nn.index[a : a + ix.size], nn.dist2[a : a + ix.size] = nearest_images(
            st.held_xrays(ix), blocks, device=st.dev, query_block=cfg.nn_query_block
        )
    nn.evaluated[:] = len(st.train) * st.ds.settings.samples_per_species
    st.timings["nn_s"] = st.timings["nn_search_s"] = time.perf_counter() - t0


def _nn_bound(st: EvalState) -> None:
    """Lower-bound features of every training x-ray, then the certified bounded search per block."""
    cfg, nn, timings, size = st.cfg, st.nn, st.timings, st.image_size
    assert nn is not None
    t0 = time.perf_counter()
    images = ImageSource(st.ds, st.train, device=st.dev)
    images.cache(budget_bytes=cfg.cache_bytes, block=cfg.train_block)
    st.nn_coarse_used = coarse_for_memory(
        (1, size, size), len(images), cfg.nn_coarse, cfg.nn_feature_bytes, what="the NN's lower-bound features"
    )
    nn_feats = train_coarse_features(
        images,
        size=size,
        depth=1,
        factors=coarse_factors((1, size, size), st.nn_coarse_used),
        progress="NN features" if cfg.progress else None,
    )
    timings["nn_features_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    timings["nn_bound_s"] = 0.0
    query_starts = range(0, st.Q, cfg.nn_query_block)
    for a in progress_bar(query_starts, enabled=cfg.progress, desc="NN search", unit="query block"):
        ix = st.sel[a : a + cfg.nn_query_block]
        r = nearest_images_bounded(
            st.held_xrays(ix), images, coarse=st.nn_coarse_used, k=cfg.nn_k, train_features=nn_feats
        )
        timings["nn_bound_s"] += r.timings["bound_s"]
        if not r.certified.all():  # cannot happen without a cap on the evaluations; never report unproven
            raise RuntimeError("the bounded NN search left a query uncertified")
        nn.index[a : a + ix.size], nn.dist2[a : a + ix.size], nn.evaluated[a : a + ix.size] = (
            r.index,
            r.dist2,
            r.evaluated,
        )
    del images, nn_feats
    release_freed_memory()
    timings["nn_search_s"] = time.perf_counter() - t1
    timings["nn_s"] = time.perf_counter() - t0


def oracle_phase(st: EvalState) -> None:
    """Phase 3: cache the training view volumes when they fit (NN or Oracle), then (``oracle``) the
    exact nearest training view volume of every evaluated sample by one scan per block (``st.oracle``)."""
    cfg, train_src, S, D, Q = st.cfg, st.train_src, st.S, st.D, st.Q
    if train_src is not None:
        if cfg.progress:
            phase("evaluate", "training view volumes: cache")
        t0 = time.perf_counter()
        st.cached = train_src.cache(
            size=S, depth=D, budget_bytes=cfg.cache_bytes, progress="training view volumes" if cfg.progress else None
        )
        st.timings["train_views_cache_s"] = time.perf_counter() - t0
    if "oracle" not in cfg.methods:
        return
    assert train_src is not None  # made whenever nn or oracle is evaluated
    if cfg.progress:
        phase("evaluate", f"Oracle: exact scan of {len(train_src)} training view volumes for {Q} held-out samples")
    t0 = time.perf_counter()
    res = oracle_search(
        lambda ix: st.held_src.views(st.sel[ix], size=S, depth=D),
        Q,
        train_src,
        size=S,
        depth=D,
        query_bytes=cfg.oracle_bytes,
        progress=cfg.progress,
    )
    st.oracle_res, st.oracle = res, Matches(res.index, res.dist2, res.evaluated)
    st.timings["oracle_s"] = time.perf_counter() - t0
    st.timings.update({f"oracle_{k}": v for k, v in res.timings.items()})
    release_freed_memory()


# --------------------------------------------------------------------------------------------------
# predictions, baselines and metrics
# --------------------------------------------------------------------------------------------------

#: The per-batch timings of :func:`score_phase`, in summary.json's order.
_BATCH_TIMINGS = (
    "network_s",
    "fusion_s",
    "truth_views_s",
    "nn_views_s",
    "mean_views_s",
    "oracle_views_s",  # the results' view volumes (the scan's: oracle_scan_views_s)
    "render_and_ssim_s",
)


@contextmanager
def _timed(acc: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block to ``acc[key]`` (seconds)."""
    t0 = time.perf_counter()
    yield
    acc[key] += time.perf_counter() - t0


def _fuse_batch(
    raw: torch.Tensor, xrays: np.ndarray, *, size: int, fusion_at: str, beta: float, chi: float
) -> torch.Tensor:
    """'ours' for a batch: raw (B, D, s, s) network output, xrays (B, S, S) opacity → (B, D, size, size)."""

    out = []
    coarse = raw.detach().float().cpu().numpy()
    for c, x in zip(coarse, xrays):
        if fusion_at == "target":
            x = xray_at(x, (size, size), chi=chi)
        f = torch.from_numpy(np.ascontiguousarray(fuse(c, x, beta=beta, chi=chi)))
        out.append(resize_xrays(f[None], size)[0])
    return torch.stack(out).to(raw.device)


def _batch_volumes(
    st: EvalState, a: int, ix: np.ndarray, acc: dict[str, float]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The truth (B, D, S, S) and every method's view volumes of the samples ``ix`` (batch start ``a``)."""
    cfg, S, D, b = st.cfg, st.S, st.D, ix.size
    methods = cfg.methods
    xr = st.held_xrays(ix)
    with _timed(acc, "truth_views_s"):
        truth = st.held_src.views(ix, size=S, depth=D)
    vols: dict[str, torch.Tensor] = {}
    if "ours" in methods or "ours_nofusion" in methods:
        with _timed(acc, "network_s"):
            raw = st.model(resize_xrays(torch.from_numpy(xr)[:, None].to(st.dev), st.net.input_size)).float()
        if "ours_nofusion" in methods:
            vols["ours_nofusion"] = as_density(raw)
        if "ours" in methods:
            with _timed(acc, "fusion_s"):
                vols["ours"] = _fuse_batch(raw, xr, size=S, fusion_at=cfg.fusion_at, beta=cfg.beta, chi=st.chi)
        del raw
    if "nn" in methods:
        assert st.train_src is not None and st.nn is not None
        with _timed(acc, "nn_views_s"):
            vols["nn"] = st.train_src.views(st.nn.index[a : a + b], size=S, depth=D)
    if "mean" in methods:
        with _timed(acc, "mean_views_s"):
            vols["mean"] = st.held_src.views(ix, size=S, depth=D, volume=st.mean_vol)
    if "oracle" in methods:
        assert st.train_src is not None and st.oracle is not None
        with _timed(acc, "oracle_views_s"):
            vols["oracle"] = st.train_src.views(st.oracle.index[a : a + b], size=S, depth=D)
    return truth, vols


def _score_batch(sc: Scores, methods, iso: float, a: int, truth: torch.Tensor, vols: dict[str, torch.Tensor]) -> None:
    """L2, MSE and DSSIM (both windows) of every method, and the slice-count DSSIMs, of one batch (rows a : a + B)."""
    b = truth.shape[0]
    # each volume group is rendered on its own and dropped (the renderer's result for a volume
    # does not depend on what it is batched with): no concatenated stack of every method's and
    # every slice count's volumes (14 groups of `batch` view volumes at the paper's sizes)
    imgs_truth = render_isosurface_torch(truth, iso=iso).cpu().numpy()
    imgs_m = {m: render_isosurface_torch(vols[m], iso=iso).cpu().numpy() for m in methods}
    for m in methods:
        l2, mse = volume_errors(vols[m], truth, rows=4)
        sc.per[m]["l2"][a : a + b], sc.per[m]["mse"][a : a + b] = l2, mse
        sc.per[m]["dssim"][a : a + b] = [dssim(imgs_m[m][i], imgs_truth[i]) for i in range(b)]
        sc.per[m]["dssim_gauss"][a : a + b] = [dssim(imgs_m[m][i], imgs_truth[i], window="gaussian") for i in range(b)]
    for m in sc.slice_methods:
        base = truth if m == "truth" else vols[m]
        ref = imgs_truth if m == "truth" else imgs_m[m]
        for c in sc.used_counts:
            im = render_isosurface_torch(depth_resample(base, c), iso=iso).cpu().numpy()
            sc.slice_vals[m][c][a : a + b] = [dssim(im[i], ref[i]) for i in range(b)]


def score_phase(st: EvalState) -> None:
    """Phase 4: per batch of ``cfg.batch`` samples the truth, ours (raw and fused), the baselines'
    view volumes, their metrics and the slice-count DSSIMs (``st.scores``)."""
    cfg, Q, D = st.cfg, st.Q, st.D
    methods = cfg.methods
    t0 = time.perf_counter()
    used = [c for c in cfg.slice_counts if c < D]
    slice_methods = ["truth"] + [m for m in ("ours", "ours_nofusion") if m in methods][:1]
    sc = Scores(
        per={m: {k: np.full(Q, np.nan) for k in METRICS} for m in methods},
        slice_methods=slice_methods,
        used_counts=used,
        skipped_counts=[c for c in cfg.slice_counts if c >= D],
        slice_vals={m: {c: np.full(Q, np.nan) for c in used} for m in slice_methods},
        classes=[view_class(st.held_src.rotation(int(g))) for g in st.sel],
    )
    if cfg.progress:
        phase("evaluate", f"predictions, baselines and metrics of {Q} samples")
    bar = progress_bar(total=Q, enabled=cfg.progress, desc="evaluate", unit="sample")
    acc = dict.fromkeys(_BATCH_TIMINGS, 0.0)
    with torch.no_grad():
        for a in range(0, Q, cfg.batch):
            ix = st.sel[a : a + cfg.batch]
            truth, vols = _batch_volumes(st, a, ix, acc)
            with _timed(acc, "render_and_ssim_s"):
                _score_batch(sc, methods, cfg.iso, a, truth, vols)
                del vols, truth
            bar.update(ix.size)
    bar.close()
    st.timings["predict_and_metrics_s"] = time.perf_counter() - t0
    st.timings.update(acc)
    st.scores = sc
