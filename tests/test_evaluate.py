"""Evaluation (paper §5): iso-surface renderer, metrics, exact NN / Oracle search, evaluate_run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from model.evaluate import (
    METHODS,
    ImageSource,
    ViewSource,
    coarse_cells,
    coarse_factors,
    coarse_features,
    depth_resample,
    dssim,
    evaluate_run,
    oracle_coarse_for_memory,
    mean_ci,
    nearest_images,
    nearest_images_bounded,
    oracle_search,
    paired_tests,
    store_image_blocks,
    view_class,
    volume_dssim,
    volume_errors,
)
from model.network import NetworkConfig
from model.surface import isosurface_depth, render_isosurface
from model.train import TrainConfig, load_checkpoint, train
from tomodata.cli import main
from tomodata.store import open_store

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("evstore")
    assert main(["build-demo", "-o", str(out), "--species", "4", "--held-out", "1", "--views", "6",
                 "--size", "32", "--steps", "32", "--volume-size", "32", "--backend", "cpu"]) == 0
    return out / "dataset.zarr"


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("evrun")
    train(store, out, net=TINY, cfg=TrainConfig(steps=4, batch_size=4, warmup_steps=0, val_every=4, val_samples=4,
                                                ckpt_every=4, log_every=1), resume=False, progress=False)
    return out / "last.pt"


def _ramp_sphere(n: int, radius: float = 0.6, iso: float = 0.1) -> np.ndarray:
    """µ linear in the distance from the centre (slope 1), crossing ``iso`` exactly at ``radius``."""
    c = (2 * np.arange(n) + 1) / n - 1
    w, v, u = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt(u * u + v * v + w * w)
    return np.clip(iso + (radius - r), 0, 1).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# renderer
# --------------------------------------------------------------------------------------------------


def test_sphere_renders_as_shaded_disc_at_the_right_depth():
    n, R = 64, 0.6
    vol = _ramp_sphere(n, R)
    c = (2 * np.arange(n) + 1) / n - 1
    vv, uu = np.meshgrid(c, c, indexing="ij")
    rho2 = uu ** 2 + vv ** 2
    for ao in (True, False):
        img = render_isosurface(vol, ao=ao)
        assert img.shape == (n, n) and img.dtype == np.float32
        assert img.min() >= 0 and img.max() <= 1
        inside, outside = rho2 < (R - 0.04) ** 2, rho2 > (R + 0.04) ** 2
        assert (img[inside] > 0.2).all() and (img[outside] == 0).all()  # a disc on a black background
        profile = img[n // 2, n // 2:]  # centre → rim along a row
        rim = int(np.nonzero(profile == 0)[0][0])
        assert np.all(np.diff(profile[:rim]) <= 1e-3)  # shading falls off toward the rim (headlight)
        assert profile[0] - profile[rim - 1] > 0.3
        if not ao:  # the headlight shading of a sphere: n·L = sqrt(1 - rho²/R²)
            ndl = np.sqrt(np.clip(1 - rho2[inside] / R ** 2, 0, 1))
            np.testing.assert_allclose(img[inside], 0.3 + 0.55 * ndl + 0.15 * ndl ** 24, atol=0.01)
    # hit depth: w = -sqrt(R² - u² - v²); depth index k = (w + 1) n/2 - 1/2
    depth = isosurface_depth(vol)
    disc = rho2 < (R - 0.05) ** 2
    want = (-np.sqrt(np.maximum(R ** 2 - rho2, 0)) + 1) * n / 2 - 0.5
    assert np.isnan(depth[rho2 > (R + 0.04) ** 2]).all()
    assert np.abs(depth[disc] - want[disc]).max() < 0.15  # well below a slice
    i = n // 2
    assert abs(depth[i, i] - want[i, i]) < 0.02  # linear along the central rays: interpolation exact


def test_iso_threshold_respected():
    v = np.zeros((32, 16, 16), np.float32)
    v[8:12] = 0.05   # a faint slab in front (below the default iso)
    v[20:] = 0.5     # a dense one behind
    d = isosurface_depth(v, iso=0.1)
    assert np.allclose(d, 19 + 0.2)  # crossing 0 -> 0.5 at 0.1: 1/5 of the way
    d2 = isosurface_depth(v, iso=0.03)
    assert np.allclose(d2, 7 + 0.6)  # the faint slab now counts: 0 -> 0.05 at 0.03
    assert (render_isosurface(v, iso=0.6) == 0).all()  # nothing reaches 0.6: all background
    assert (render_isosurface(v, iso=0.1) > 0).all()


def test_ambient_occlusion_darkens_a_pit():
    v = np.zeros((64, 64, 64), np.float32)
    v[32:] = 0.5                    # a flat wall facing the viewer
    v[32:44, 28:36, 28:36] = 0.0    # a square pit, 12 slices deep
    with_ao, without = render_isosurface(v), render_isosurface(v, ao=False)
    assert abs(without[32, 32] - without[8, 8]) < 1e-6  # same normal: same shading without AO
    assert with_ao[32, 32] < with_ao[8, 8] - 0.08       # the pit's floor is occluded
    assert abs(isosurface_depth(v)[32, 32] - 43.2) < 1e-5


def test_render_batches_and_rejects_bad_input():
    vol = _ramp_sphere(24)
    batch = np.stack([vol, vol[:, ::-1]])
    imgs = render_isosurface(batch)
    assert imgs.shape == (2, 24, 24)
    np.testing.assert_allclose(imgs[0], render_isosurface(vol), atol=1e-6)
    np.testing.assert_allclose(imgs[1], render_isosurface(np.ascontiguousarray(vol[:, ::-1])), atol=1e-6)
    with pytest.raises(ValueError, match="iso"):
        render_isosurface(vol, iso=0)
    with pytest.raises(ValueError, match="shape"):
        render_isosurface(np.zeros((4, 4)))


# --------------------------------------------------------------------------------------------------
# metrics and statistics
# --------------------------------------------------------------------------------------------------


def test_dssim_and_volume_errors():
    a = _ramp_sphere(32, 0.6)
    b = _ramp_sphere(32, 0.45)
    assert volume_dssim(a, a) == 0.0
    assert volume_dssim(a, b) > 0.01
    assert dssim(np.zeros((8, 8)), np.zeros((8, 8))) == 0.0
    with pytest.raises(ValueError, match="7x7"):
        dssim(np.zeros((5, 5)), np.zeros((5, 5)))
    l2, mse = volume_errors(a, b)
    assert mse == pytest.approx(float(np.mean((a.astype(np.float64) - b) ** 2)))
    assert l2 == pytest.approx(math.sqrt(mse))
    l2s, _ = volume_errors(np.stack([a, a]), np.stack([a, b]))
    assert l2s[0] == 0 and l2s[1] == pytest.approx(l2)


def test_statistics():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    m, lo, hi, n = mean_ci(x)
    assert (m, n) == (2.5, 4) and lo < 2.5 < hi
    assert hi - m == pytest.approx(3.182446305 * x.std(ddof=1) / 2)  # t_{.975, 3}
    assert math.isnan(mean_ci([1.0])[1])
    rows = paired_tests({"l2": {"a": x, "b": x + np.array([1.0, 1.1, 0.9, 1.0]), "c": x}}, ["a", "b", "c"], ["l2"])
    assert [(r["method_a"], r["method_b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert rows[0]["t"] < 0 and rows[0]["p"] < 0.001 and math.isnan(rows[1]["t"])


def test_view_classes():
    def rot(d):
        d = np.asarray(d, float) / np.linalg.norm(d)
        u = np.cross([0.3, 0.5, 0.8], d)
        u /= np.linalg.norm(u)
        return np.stack([u, np.cross(d, u), d], 1)

    assert view_class(rot([0, 0, 1])) == "side"
    assert view_class(rot([0, 1, 0.2])) == "top"
    assert view_class(rot([-1, 0, 0.3])) == "front"
    assert view_class(rot([1, 1, 1])) == "other"
    c29, c31 = math.cos(math.radians(29)), math.cos(math.radians(31))
    assert view_class(rot([math.sqrt(1 - c29 ** 2), 0, c29])) == "side"
    assert view_class(rot([math.sqrt(1 - c31 ** 2), 0, c31])) == "other"


def test_depth_resample():
    v = torch.rand(2, 16, 5, 5)
    assert torch.allclose(depth_resample(v, 16), v, atol=1e-6)
    lin = torch.linspace(0, 1, 16)[None, :, None, None].expand(1, 16, 3, 3)
    got = depth_resample(lin, 8)  # linear in depth: kept away from the ends
    assert torch.allclose(got[:, 1:-1], lin[:, 1:-1], atol=1e-5)
    assert not torch.allclose(depth_resample(v, 4), v, atol=1e-2)


# --------------------------------------------------------------------------------------------------
# NN and Oracle: exact search against brute force
# --------------------------------------------------------------------------------------------------


def test_view_source_matches_training_targets(store):
    from model.data import torch_view_volumes

    ds = open_store(store)
    names = ds.species_names("train")
    src = ViewSource(ds, names)
    g = np.array([25, 0, 1, 13, 12, 35])  # mixed species, views and mirrors, unordered
    got = src.views(g, size=12, depth=10)
    s, j = g // 12, g % 12
    for i in range(g.size):
        vol = torch.from_numpy(ds.volume(names[s[i]]))[None, None]
        rot = torch.from_numpy(ds.rotations(names[s[i]])[j[i] // 2])[None]
        want = torch_view_volumes(vol, rot, size=12, steps=10, mirrored=torch.tensor([j[i] % 2 == 1]))[0]
        torch.testing.assert_close(got[i], want, atol=1e-6, rtol=0)
    assert src.cache(size=12, depth=10) and not src.cache(size=16, depth=16, budget_bytes=1000)
    torch.testing.assert_close(src.views(g, size=12, depth=10), got, atol=0, rtol=0)
    assert src.views(g, size=16, depth=16).shape == (6, 16, 16, 16)  # another grid: made on the fly


def test_fusion_at_target_rerenders_to_the_averaged_xray():
    from model.evaluate import _fuse_batch
    from model.fusion import opacity_max

    rng = np.random.default_rng(1)
    raw = torch.from_numpy(rng.random((2, 8, 6, 6)).astype(np.float32) * 0.3)
    xr = rng.random((2, 12, 12)).astype(np.float32) * 0.9
    got = _fuse_batch(raw, xr, size=6, fusion_at="target", beta=2.0, chi=10.0).numpy()
    tau = -np.log1p(-np.minimum(xr.astype(np.float64), opacity_max(10.0)))
    want = 1 - np.exp(-tau.reshape(2, 6, 2, 6, 2).mean((2, 4)))  # optical depth averaged per coarse pixel
    np.testing.assert_allclose(1 - np.exp(-10.0 * got.mean(1)), want, atol=1e-5)
    at_xray = _fuse_batch(raw, xr, size=6, fusion_at="xray", beta=2.0, chi=10.0).numpy()
    assert at_xray.shape == (2, 8, 6, 6) and not np.allclose(at_xray, got, atol=1e-4)


def test_nn_blocked_search_is_exact(store):
    ds = open_store(store)
    train_names, val_names = ds.species_names("train"), ds.species_names("val")
    n = ds.n_samples(train_names[0])
    train_imgs = np.concatenate([ds.images(s, slice(0, n)) for s in train_names]).reshape(len(train_names) * n, -1)
    queries = ds.images(val_names[0], slice(0, n)).reshape(n, -1)
    brute = ((queries[:, None].astype(np.float64) - train_imgs[None]) ** 2).sum(-1)
    # small blocks so that queries and training images both span several blocks
    idx, d2 = nearest_images(queries, store_image_blocks(ds, train_names, block=5), query_block=7)
    assert np.array_equal(idx, brute.argmin(1))
    np.testing.assert_allclose(d2, brute.min(1), rtol=1e-12)
    # a query that is a training image finds itself at distance exactly 0
    pick = [3, 17, 30]
    idx, d2 = nearest_images(train_imgs[pick], store_image_blocks(ds, train_names, block=4), query_block=2)
    assert idx.tolist() == pick and (d2 == 0).all()


def test_nn_bounded_search_is_exact(store):
    ds = open_store(store)
    train_names, val_names = ds.species_names("train"), ds.species_names("val")
    n = ds.n_samples(train_names[0])
    train_imgs = np.concatenate([ds.images(s, slice(0, n)) for s in train_names])
    queries = np.concatenate([ds.images(val_names[0], slice(0, n)), train_imgs[[3, 17, 30]]])
    brute = ((queries[:, None].astype(np.float64) - train_imgs[None]) ** 2).reshape(len(queries), len(train_imgs), -1)
    want_i, want_d = brute.sum(-1).argmin(1), brute.sum(-1).min(1)
    assert want_i[-3:].tolist() == [3, 17, 30]
    for cached in (False, True):
        src = ImageSource(ds, train_names)  # read from the store on demand ...
        assert len(src) == len(train_imgs)
        if cached:  # ... or all kept
            assert src.cache() and not ImageSource(ds, train_names).cache(budget_bytes=1000)
        np.testing.assert_array_equal(src.views([30, 3, 3], size=32, depth=1)[:, 0].numpy(), train_imgs[[30, 3, 3]])
        # a coarse bound (4² cells) and a short list: the shortlist, its certificates and the fallback
        r = nearest_images_bounded(queries, src, coarse=4, k=2, chunk=1, query_block=5)
        assert np.array_equal(r.index, want_i) and r.certified.all()
        np.testing.assert_allclose(r.dist2, want_d, rtol=1e-12)
        assert (r.dist2[-3:] == 0).all()  # a training image finds itself at distance exactly 0
        assert r.fallback.any() and (r.evaluated < len(src)).any()
    with pytest.raises(ValueError, match=r"x-rays are \(1, 32, 32\)"):
        src.views([0], size=16, depth=1)
    with pytest.raises(IndexError):
        src.views([len(src)], size=32, depth=1)
    with pytest.raises(ValueError, match="queries must be"):
        nearest_images_bounded(queries[:, :16], src)


def test_bench_nn(store, capsys):
    from model.evaluate import bench_nn

    r = bench_nn(store, queries=5, coarse=4)
    assert r["same"] and r["n_queries"] == 5 and r["n_train"] == 36 and r["cells"] == 16
    assert set(r["bound_timings"]) == {"bound_s", "exact_s"} and r["paper_estimate_s"]["brute"] > 0
    est = r["paper_estimate_s"]
    assert est["bound"] == pytest.approx(est["features"] + est["bounds"] + est["exact"])
    assert main(["bench", "nn", "--store", str(store), "--queries", "3", "--nn-coarse", "4"]) == 0
    assert "same neighbours: True" in capsys.readouterr().out
    assert main(["bench", "nn"]) == 2  # no store
    assert "needs --store" in capsys.readouterr().err


def test_coarse_features_lower_bound():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.random((6, 8, 12, 12)).astype(np.float32) ** 3)
    b = torch.from_numpy(rng.random((6, 8, 12, 12)).astype(np.float32) ** 3)
    assert coarse_factors((8, 12, 12), 4) == (2, 3, 3)
    assert coarse_factors((16, 16, 16), 16) == (1, 1, 1)
    for f in [(1, 1, 1), (2, 3, 3), (4, 4, 6), (8, 12, 12)]:
        lb = ((coarse_features(a, f).double() - coarse_features(b, f).double()) ** 2).sum(1)
        exact = ((a.double() - b.double()) ** 2).flatten(1).sum(1)
        assert (lb <= exact * (1 + 1e-6)).all()
        if f == (1, 1, 1):
            torch.testing.assert_close(lb, exact, rtol=1e-6, atol=1e-6)


def test_oracle_search_equals_brute_force(store):
    ds = open_store(store)
    train_src = ViewSource(ds, ds.species_names("train"))
    val_src = ViewSource(ds, ds.species_names("val"))
    D, S = 16, 16
    all_train = train_src.views(np.arange(len(train_src)), size=S, depth=D).double()
    queries = val_src.views(np.arange(len(val_src)), size=S, depth=D)
    # the Oracle may also be asked about a training view itself
    queries = torch.cat([queries, all_train[[5, 22]].float()])
    brute = ((queries[:, None].double() - all_train[None]) ** 2).flatten(2).sum(2)
    want_i, want_d = brute.argmin(1).numpy(), brute.min(1).values.numpy()
    assert want_i[-2:].tolist() == [5, 22]
    # a coarse bound (4³ cells of 4³ voxels) with a short list: shortlist, certificates and the fallback
    res = oracle_search(queries, train_src, coarse=4, k=3, chunk=2)
    assert np.array_equal(res.index, want_i)
    np.testing.assert_allclose(res.dist2, want_d, rtol=1e-9)
    assert res.certified.all() and res.fallback.any()  # exact, and the fallback had to run somewhere
    assert (res.evaluated < len(train_src)).any()  # and the bound pruned somewhere
    # the plain rule "top-k by the bound, re-rank exactly": exact wherever it is certified
    short = oracle_search(queries, train_src, coarse=4, k=3, chunk=3, max_evaluated=3)
    assert (short.evaluated <= 3).all()
    cert = short.certified
    assert np.array_equal(short.index[cert], want_i[cert])
    assert (short.dist2 >= want_d - 1e-9).all()
    # at full resolution the bound is the distance itself: one exact round certifies
    full = oracle_search(queries, train_src, coarse=16, k=4, chunk=4)
    assert np.array_equal(full.index, want_i) and full.certified.all() and not full.fallback.any()


# --------------------------------------------------------------------------------------------------
# evaluate_run
# --------------------------------------------------------------------------------------------------


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_evaluate_run_writes_tables(store, checkpoint, tmp_path):
    out = tmp_path / "eval"
    s = evaluate_run(store, checkpoint, out, max_samples=8, batch=3, slice_counts=(4, 8, 16, 32), oracle_coarse=4)
    rows = _read(out / "metrics.csv")
    assert list(rows[0]) == ["method", "species", "sample", "view", "mirrored", "view_class", "l2", "mse", "dssim"]
    assert [r["method"] for r in rows[::8]] == list(METHODS) and len(rows) == 4 * 8
    for r in rows:
        assert float(r["l2"]) == pytest.approx(math.sqrt(float(r["mse"])), rel=1e-6)
        assert 0 <= float(r["dssim"]) <= 1 and r["view_class"] in ("top", "front", "side", "other")
        assert int(r["view"]) == int(r["sample"]) // 2 and (r["mirrored"] == "True") == (int(r["sample"]) % 2 == 1)
    summ = _read(out / "summary.csv")
    assert list(summ[0]) == ["method", "metric", "mean", "ci_low", "ci_high", "n"] and len(summ) == 4 * 3
    ours_l2 = [float(r["l2"]) for r in rows if r["method"] == "ours"]
    row = next(r for r in summ if r["method"] == "ours" and r["metric"] == "l2")
    assert float(row["mean"]) == pytest.approx(np.mean(ours_l2), rel=1e-6) and row["n"] == "8"
    tests = _read(out / "tests.csv")
    assert list(tests[0]) == ["metric", "method_a", "method_b", "t", "p", "n"] and len(tests) == 3 * 6
    assert {(r["method_a"], r["method_b"]) for r in tests} >= {("ours", "nn"), ("ours", "oracle"), ("ours", "ours_nofusion")}
    vc = _read(out / "view_classes.csv")
    assert {r["view_class"] for r in vc} == {"top", "front", "side", "other"}
    assert sum(int(r["n"]) for r in vc if r["method"] == "ours" and r["metric"] == "l2") == 8
    sc = _read(out / "slice_counts.csv")
    assert [(r["method"], r["slices"]) for r in sc] == [("truth", "4"), ("truth", "8"), ("ours", "4"), ("ours", "8")]
    assert s["slice_counts"]["skipped"] == [16, 32]
    matches = _read(out / "matches.csv")
    assert len(matches) == 8 and all(m["oracle_certified"] == "True" for m in matches)
    js = json.loads((out / "summary.json").read_text())
    assert js["target_shape"] == [16, 16, 16] and js["n_samples"] == 8 and js["oracle"]["exact"] is True
    # the Oracle is the best of all training view volumes: no method beats it in L2 ... except by
    # predicting something that is not a training view; the NN is a training view, so it cannot
    nn_l2 = np.array([float(r["l2"]) for r in rows if r["method"] == "nn"])
    or_l2 = np.array([float(r["l2"]) for r in rows if r["method"] == "oracle"])
    assert (or_l2 <= nn_l2 + 1e-9).all()


def test_evaluate_run_subset_of_methods(store, checkpoint, tmp_path):
    s = evaluate_run(store, checkpoint, tmp_path / "e", max_samples=3, methods=("ours_nofusion", "nn"),
                     slice_counts=(8,))
    rows = _read(tmp_path / "e" / "metrics.csv")
    assert {r["method"] for r in rows} == {"ours_nofusion", "nn"} and len(rows) == 6
    assert [r["method"] for r in _read(tmp_path / "e" / "slice_counts.csv")] == ["truth", "ours_nofusion"]
    assert s["oracle"] is None
    s = evaluate_run(store, checkpoint, tmp_path / "t", max_samples=2, methods=("ours", "oracle"), fusion_at="target",
                     slice_counts=(), cache_bytes=0)  # the Oracle without the view cache
    assert s["settings"]["fusion_at"] == "target" and s["oracle"]["exact"] and not s["settings"]["train_views_cached"]
    assert _read(tmp_path / "t" / "slice_counts.csv") == []


def test_oracle_coarseness_fits_the_memory_budget():
    shape, n = (32, 32, 32), 1000
    assert coarse_cells(shape, 16) == 16 ** 3 and coarse_cells(shape, 7) == 4 ** 3  # 32 = 4 · 8
    assert oracle_coarse_for_memory(shape, n, 16, 1 << 40) == 16  # fits: unchanged
    budget = 4_000_000  # bytes; 16 cells per axis would need 1000 · 2 · 4096 · 4 = 32.8 MB
    c = oracle_coarse_for_memory(shape, n, 16, budget)
    assert c < 16 and n * 2 * coarse_cells(shape, c) * 4 <= budget  # fits ...
    assert n * 2 * coarse_cells(shape, c + 1) * 4 > budget  # ... and is the finest that does
    assert oracle_coarse_for_memory(shape, n, 16, 8 * n) == 1  # one cell per volume
    with pytest.raises(ValueError, match="at least 8000 bytes"):
        oracle_coarse_for_memory(shape, n, 16, 8 * n - 1)
    with pytest.raises(ValueError, match="coarse must be"):
        oracle_coarse_for_memory(shape, n, 0, budget)


def test_evaluate_run_nn_bound_and_brute_agree(store, checkpoint, tmp_path):
    a = evaluate_run(store, checkpoint, tmp_path / "a", max_samples=6, methods=("nn",), slice_counts=())
    b = evaluate_run(store, checkpoint, tmp_path / "b", max_samples=6, methods=("nn",), slice_counts=(),
                     nn_search="brute", nn_query_block=4, train_block=5)
    assert a["settings"]["nn_search"] == "bound" and b["settings"]["nn_search"] == "brute"
    ma, mb = _read(tmp_path / "a" / "matches.csv"), _read(tmp_path / "b" / "matches.csv")
    key = [(r["nn_species"], r["nn_sample"]) for r in ma]
    assert key == [(r["nn_species"], r["nn_sample"]) for r in mb]
    np.testing.assert_allclose([float(r["nn_dist2"]) for r in ma], [float(r["nn_dist2"]) for r in mb], rtol=1e-10)
    n_train = 3 * 12  # 3 training species of 6 views x 2
    assert {int(r["nn_evaluated"]) for r in mb} == {n_train} and min(int(r["nn_evaluated"]) for r in ma) < n_train
    assert _read(tmp_path / "a" / "metrics.csv") == _read(tmp_path / "b" / "metrics.csv")
    with pytest.raises(ValueError, match="NN's lower-bound features"):
        evaluate_run(store, checkpoint, tmp_path / "c", max_samples=2, methods=("nn",), slice_counts=(),
                     oracle_feature_bytes=8)
    with pytest.raises(ValueError, match="nn_search"):
        evaluate_run(store, checkpoint, tmp_path / "d", max_samples=2, nn_search="fast")


def test_evaluate_run_oracle_within_a_small_memory_budget(store, checkpoint, tmp_path):
    # a budget that forces coarser lower-bound features: the same (exact) Oracle matches
    a = evaluate_run(store, checkpoint, tmp_path / "a", max_samples=4, methods=("oracle",), slice_counts=(),
                     oracle_coarse=8)
    b = evaluate_run(store, checkpoint, tmp_path / "b", max_samples=4, methods=("oracle",), slice_counts=(),
                     oracle_coarse=8, oracle_feature_bytes=4096)
    assert a["settings"]["oracle_coarse_used"] == 8 and b["settings"]["oracle_coarse_used"] < 8
    grid = a["target_shape"]
    cells = [math.prod(n // f for n, f in zip(grid, s["oracle"]["coarse_factors"])) for s in (a, b)]
    assert cells[1] < cells[0] and cells[0] == coarse_cells(grid, 8)
    ma, mb = _read(tmp_path / "a" / "matches.csv"), _read(tmp_path / "b" / "matches.csv")
    assert [(r["oracle_species"], r["oracle_sample"]) for r in ma] == [(r["oracle_species"], r["oracle_sample"]) for r in mb]
    assert all(r["oracle_certified"] == "True" for r in mb)
    with pytest.raises(ValueError, match="Oracle's features"):
        evaluate_run(store, checkpoint, tmp_path / "c", max_samples=2, methods=("oracle",), slice_counts=(),
                     oracle_feature_bytes=8)


def test_evaluate_run_refuses_mismatches(store, checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    state["data"]["image_size"] = 64
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="image_size"):
        evaluate_run(store, bad, tmp_path / "x", max_samples=2)
    state = load_checkpoint(checkpoint)
    state["data"]["species"] = state["data"]["species"][:2]
    torch.save(state, bad)
    with pytest.raises(ValueError, match="species"):
        evaluate_run(store, bad, tmp_path / "x", max_samples=2)
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_run(store, checkpoint, tmp_path / "x", methods=("ours", "wenger"))
    with pytest.raises(ValueError, match="fusion_at"):
        evaluate_run(store, checkpoint, tmp_path / "x", fusion_at="nowhere")
    assert not (tmp_path / "x" / "metrics.csv").exists()
