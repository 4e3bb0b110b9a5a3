"""Evaluation (paper §5): iso-surface renderer, metrics, exact NN / Oracle search, evaluate_run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, uniform_filter

import model.oracle as OR
import model.search as E
import model.sources as SO
from model import surface
from model.bench_evaluate import bench_evaluate
from model.cli import main
from model.data import torch_view_volumes
from model.eval_phases import _check_compat
from model.evaluate import (
    METHODS,
    SUMMARY_COLUMNS,
    TESTS_COLUMNS,
    EvalConfig,
    _fuse_batch,
    depth_resample,
    dssim,
    evaluate_run,
    paired_tests,
    view_class,
    volume_dssim,
    volume_errors,
)
from model.fusion import opacity_max
from model.network import NetworkConfig
from model.oracle import oracle_search, scan_error
from model.search import (
    bench_nn,
    bounded_search,
    coarse_cells,
    coarse_factors,
    coarse_features,
    coarse_for_memory,
    nearest_images,
    nearest_images_bounded,
)
from model.sources import ImageSource, ViewSource, mean_volume, store_image_blocks
from model.stats import holm, mean_ci
from model.surface import ShadingParams, environment_map, isosurface_depth, render_isosurface
from model.train import TrainConfig, load_checkpoint, train
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import render_xrays
from tomodata.store import DatasetStore, create_store, finalize_store, open_store, write_species
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views, sample_to_view

TINY = NetworkConfig(input_size=32, out_depth=16, out_size=16, width=16, stem_channels=8, hourglass_levels=2)


#: the fixture store's splits: 3 training species (the NN/Oracle/mean database), 1 val, 2 test
SPLITS = ("train", "train", "train", "val", "test", "test")


def build_split_store(path, splits, *, views: int = 6, size: int = 32):
    """A store like ``tomo build-demo``'s (procedural species ``procedural_XX``, every view rendered),
    but with the given split per species (build-demo knows only train and val)."""

    names = [f"procedural_{i:02d}" for i in range(len(splits))]
    table = [
        dict(
            name=n,
            split=sp,
            source=f"tomodata.phantoms species {i} seed 0",
            source_checksum=f"test:{i}",
            original_shape=[size] * 3,
            spacing_mm=[1.0, 1.0, 1.0],
        )
        for i, (n, sp) in enumerate(zip(names, splits))
    ]
    create_store(
        path,
        StoreSettings(chi=10.0, steps=size, image_size=size, volume_size=size, n_views=views, view_seed=0),
        species=table,
    )
    rots = hemisphere_views(views, seed=0)
    for i, n in enumerate(names):
        vol = skull_volume(species_params(i, seed=0), size=size, seed=0)
        write_species(
            path,
            n,
            volume=vol,
            rotations=rots,
            images=render_xrays(vol, rots, size=size, steps=size, chi=10.0, backend="cpu"),
        )
    assert finalize_store(path).ok
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_split_store(tmp_path_factory.mktemp("evstore") / "dataset.zarr", SPLITS)


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("evrun")
    train(
        store,
        out,
        net=TINY,
        cfg=TrainConfig(steps=4, batch_size=4, warmup_steps=0, val_every=4, val_samples=4, ckpt_every=4, log_every=1),
        resume=False,
        progress=False,
    )
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
    rho2 = uu**2 + vv**2
    headlight = ShadingParams(lighting="headlight")
    for ao in (True, False):
        img = render_isosurface(vol, ao=ao, shading=headlight)
        assert img.shape == (n, n) and img.dtype == np.float32
        assert img.min() >= 0 and img.max() <= 1
        inside, outside = rho2 < (R - 0.04) ** 2, rho2 > (R + 0.04) ** 2
        assert (img[inside] > 0.2).all() and (img[outside] == 0).all()  # a disc on a black background
        profile = img[n // 2, n // 2 :]  # centre → rim along a row
        rim = int(np.nonzero(profile == 0)[0][0])
        assert np.all(np.diff(profile[:rim]) <= 1e-3)  # shading falls off toward the rim (headlight)
        assert profile[0] - profile[rim - 1] > 0.3
        if not ao:  # the headlight shading of a sphere: n·L = sqrt(1 - rho²/R²)
            ndl = np.sqrt(np.clip(1 - rho2[inside] / R**2, 0, 1))
            np.testing.assert_allclose(img[inside], 0.3 + 0.55 * ndl + 0.15 * ndl**24, atol=0.01)
    # hit depth: w = -sqrt(R² - u² - v²); depth index k = (w + 1) n/2 - 1/2
    depth = isosurface_depth(vol)
    disc = rho2 < (R - 0.05) ** 2
    want = (-np.sqrt(np.maximum(R**2 - rho2, 0)) + 1) * n / 2 - 0.5
    assert np.isnan(depth[rho2 > (R + 0.04) ** 2]).all()
    assert np.abs(depth[disc] - want[disc]).max() < 0.15  # well below a slice
    i = n // 2
    assert abs(depth[i, i] - want[i, i]) < 0.02  # linear along the central rays: interpolation exact


def test_environment_lighting_is_the_irradiance_of_the_map():
    """The default image-based lighting: the order-2 SH irradiance equals brute-force quadrature of
    the environment map's cosine-weighted radiance (Ramamoorthi & Hanrahan: about 1 % here)."""
    n = 20000
    i = np.arange(n) + 0.5
    zc, phi = 1 - 2 * i / n, np.pi * (1 + 5**0.5) * i
    d = np.stack([zc, np.sqrt(1 - zc**2) * np.sin(phi), np.sqrt(1 - zc**2) * np.cos(phi)], -1)
    normals = np.random.default_rng(0).normal(size=(300, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    brute = (np.clip(normals @ d.T, 0, None) * environment_map(d)).sum(1)
    ed, _ = surface._environment_light(torch.from_numpy(normals.T[None, :, :, None]).float(), ShadingParams())
    ed = ed.numpy().ravel()
    np.testing.assert_allclose(brute / brute.max() * ed.max(), ed, atol=0.02)
    # lit from the upper left: a sphere is brighter there than at the lower right; a flat wall facing
    # the viewer is shaded uniformly; everything in [0, 1]
    vol = _ramp_sphere(64, 0.6)
    img = render_isosurface(vol)
    assert img[20, 20] > img[44, 44] + 0.1 and 0 <= img.min() and img.max() <= 1
    wall = np.zeros((32, 16, 16), np.float32)
    wall[16:] = 0.5
    flat = render_isosurface(wall, ao=False)
    assert np.ptp(flat[1:-1, 1:-1]) < 1e-6 and flat[8, 8] > 0.3  # (the outermost pixels see the zero padding)
    with pytest.raises(ValueError, match="lighting"):
        render_isosurface(wall, shading=ShadingParams(lighting="sun"))


def test_iso_threshold_respected():
    v = np.zeros((32, 16, 16), np.float32)
    v[8:12] = 0.05  # a faint slab in front (below the default iso)
    v[20:] = 0.5  # a dense one behind
    d = isosurface_depth(v, iso=0.1)
    assert np.allclose(d, 19 + 0.2)  # crossing 0 -> 0.5 at 0.1: 1/5 of the way
    d2 = isosurface_depth(v, iso=0.03)
    assert np.allclose(d2, 7 + 0.6)  # the faint slab now counts: 0 -> 0.05 at 0.03
    assert (render_isosurface(v, iso=0.6) == 0).all()  # nothing reaches 0.6: all background
    assert (render_isosurface(v, iso=0.1) > 0).all()


def test_ambient_occlusion_darkens_a_pit():
    v = np.zeros((64, 64, 64), np.float32)
    v[32:] = 0.5  # a flat wall facing the viewer
    v[32:44, 28:36, 28:36] = 0.0  # a square pit, 12 slices deep
    with_ao, without = render_isosurface(v), render_isosurface(v, ao=False)
    assert abs(without[32, 32] - without[8, 8]) < 1e-6  # same normal: same shading without AO
    assert with_ao[32, 32] < with_ao[8, 8] - 0.08  # the pit's floor is occluded
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


def test_dssim_gaussian_window_is_wang_et_al():
    """``window="gaussian"`` (metric dssim_gauss) is the SSIM of Wang et al. 2004: 11x11 Gaussian window
    (sigma 1.5), population covariance, K1 .01, K2 .03, mean over the pixels the window fits around;
    written here from the formula with scipy's Gaussian filter."""
    rng = np.random.default_rng(0)
    a = gaussian_filter(rng.random((40, 36)), 2.0)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    f = lambda x: gaussian_filter(x, 1.5, truncate=3.5)  # noqa: E731 - radius 5: the 11x11 window
    ma, mb = f(a), f(b)
    va, vb, cab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
    c1, c2 = 0.01**2, 0.03**2
    s_map = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    expect = (1 - s_map[5:-5, 5:-5].mean()) / 2
    assert dssim(a, b, window="gaussian") == pytest.approx(expect, rel=1e-9)
    assert dssim(a, b, window="gaussian") != pytest.approx(dssim(a, b), rel=1e-3)  # the windows differ
    # window="uniform" (metric dssim, the paper's comparison): 7x7 box, sample covariance (N/(N-1)),
    # K1 .01, K2 .03, mean over the pixels the window fits around (helper-82: only "> 0.01" tied it,
    # so K2 = 0.3 passed with a 20x smaller DSSIM)
    u = lambda x: uniform_filter(x, 7)  # noqa: E731
    ma, mb = u(a), u(b)
    cov = 49 / 48
    va, vb, cab = cov * (u(a * a) - ma**2), cov * (u(b * b) - mb**2), cov * (u(a * b) - ma * mb)
    s_map = ((2 * ma * mb + c1) * (2 * cab + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    assert dssim(a, b) == pytest.approx((1 - s_map[3:-3, 3:-3].mean()) / 2, rel=1e-9)
    with pytest.raises(ValueError, match="11x11"):
        dssim(np.zeros((9, 9)), np.zeros((9, 9)), window="gaussian")
    with pytest.raises(ValueError, match="window must be one of"):
        dssim(a, b, window="box")


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
    assert view_class(rot([math.sqrt(1 - c29**2), 0, c29])) == "side"
    assert view_class(rot([math.sqrt(1 - c31**2), 0, c31])) == "other"


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
    # ties go to the lowest index, also across blocks (helper-84: "<=" gave the later block's copy)
    imgs = np.random.default_rng(0).random((10, 16)).astype(np.float32)
    imgs[7] = imgs[2]
    imgs[4] = imgs[3]
    idx, d2 = nearest_images(imgs[[2, 7, 3, 4]], lambda: iter([(0, imgs[:5]), (5, imgs[5:])]), query_block=4)
    assert idx.tolist() == [2, 2, 3, 3] and (d2 == 0).all()


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


def test_bounded_search_equals_brute_force(store):
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
    res = bounded_search(queries, train_src, coarse=4, k=3, chunk=2)
    assert np.array_equal(res.index, want_i)
    np.testing.assert_allclose(res.dist2, want_d, rtol=1e-9)
    assert res.certified.all() and res.fallback.any()  # exact, and the fallback had to run somewhere
    assert (res.evaluated < len(train_src)).any()  # and the bound pruned somewhere
    # the plain rule "top-k by the bound, re-rank exactly": exact wherever it is certified
    short = bounded_search(queries, train_src, coarse=4, k=3, chunk=3, max_evaluated=3)
    assert (short.evaluated <= 3).all()
    cert = short.certified
    assert np.array_equal(short.index[cert], want_i[cert])
    assert (short.dist2 >= want_d - 1e-9).all()
    # at full resolution the bound is the distance itself: one exact round certifies
    full = bounded_search(queries, train_src, coarse=16, k=4, chunk=4)
    assert np.array_equal(full.index, want_i) and full.certified.all() and not full.fallback.any()


def test_oracle_scan_equals_brute_force(store):
    """The Oracle's scan: every training view volume once, error-bounded float32 products, exact
    re-ranking; equal to brute force in index (ties to the lowest) and distance, whatever the query
    blocks, training blocks and chunk (a chunk that does not divide the grid is zero-padded)."""
    ds = open_store(store)
    names = ds.species_names("train")
    D, S = 16, 16
    dup = ViewSource(ds, names + names[:1])  # the first species twice: exact ties across the copies
    all_train = dup.views(np.arange(len(dup)), size=S, depth=D).double()
    queries = ViewSource(ds, ds.species_names("test")).views(np.arange(0, 24, 3), size=S, depth=D)
    queries = torch.cat([queries, all_train[[5, 40]].float()])  # training views themselves: distance 0
    brute = ((queries[:, None].double() - all_train[None]) ** 2).flatten(2).sum(2).numpy()
    want_d = brute.min(1)
    want_i = np.array([np.nonzero(r == r.min())[0][0] for r in brute])  # lowest index among ties
    assert want_i[-2:].tolist() == [5, 4]  # sample 40 is sample 4's copy (the first species twice)
    for kw in (dict(), dict(query_bytes=3 * D * S * S * 4, block=5, chunk=1000), dict(block=1, chunk=7)):
        res = oracle_search(lambda ix: queries[ix], len(queries), dup, size=S, depth=D, **kw)
        assert np.array_equal(res.index, want_i), kw
        np.testing.assert_allclose(res.dist2, want_d, rtol=1e-12, atol=0)
        assert res.dist2[-2:].tolist() == [0.0, 0.0]
        assert (res.evaluated >= 1).all() and (res.evaluated < len(dup)).all()
    assert (
        oracle_search(lambda ix: queries[ix], len(queries), dup, size=S, depth=D, query_bytes=3 * D * S * S * 4).passes
        == 4
    )  # 10 queries, 3 per pass
    # the bound holds with room: float32 chunked products against the float64 truth
    qn = torch.linalg.vector_norm(queries.double().flatten(1), dim=1)
    tn = torch.linalg.vector_norm(all_train.flatten(1), dim=1)
    approx = (
        qn[:, None] ** 2
        + tn[None] ** 2
        - 2 * (queries.flatten(1)[:, None, :] * all_train.float().flatten(1)[None]).sum(-1).double()
    )
    assert ((approx - torch.from_numpy(brute)).abs() <= scan_error(qn, tn, chunk=D * S * S, n=D * S * S)).all()
    with pytest.raises(ValueError, match="query_views returned"):
        oracle_search(lambda ix: queries[:1], 3, dup, size=S, depth=D)


def test_oracle_refuses_a_violated_bound(store, monkeypatch):
    """A scan bound that does not hold (here: an error allowance made negative) is a RuntimeError,
    never a silent -1 index and inf distance (helper-84: the check could be removed unnoticed)."""
    ds = open_store(store)
    src = ViewSource(ds, ds.species_names("train"))
    queries = ViewSource(ds, ds.species_names("test")).views(np.arange(2), size=8, depth=8)
    monkeypatch.setattr(OR, "scan_error", lambda qn, tn, *, chunk, n: torch.full((len(qn), len(tn)), -1e3).double())
    with pytest.raises(RuntimeError, match="scan bound was violated"):
        oracle_search(lambda ix: queries[ix], len(queries), src, size=8, depth=8)


# --------------------------------------------------------------------------------------------------
# evaluate_run
# --------------------------------------------------------------------------------------------------


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_an_output_too_small_for_ssims_gaussian_window_is_refused_before_any_search(store, tmp_path):
    """dssim_gauss's 11x11 window must fit the renders of the output grid: an 8-pixel network is refused
    up front (the searches would otherwise run first and the metric fail at the end)."""
    small = NetworkConfig(input_size=16, out_depth=8, out_size=8, width=16, stem_channels=8, hourglass_levels=2)
    cfg = TrainConfig(steps=1, batch_size=2, warmup_steps=0, val_every=1, val_samples=2, ckpt_every=1, log_every=1)
    train(store, tmp_path / "run", net=small, cfg=cfg, resume=False, progress=False)
    with pytest.raises(ValueError, match="output size 8 is below 11"):
        evaluate_run(EvalConfig(store, tmp_path / "run" / "last.pt", tmp_path / "eval", max_samples=4))
    assert not (tmp_path / "eval" / "metrics.csv").exists()


def test_evaluate_run_writes_tables(store, checkpoint, tmp_path):
    out = tmp_path / "eval"
    s = evaluate_run(EvalConfig(store, checkpoint, out, max_samples=8, batch=3, slice_counts=(4, 8, 16, 32)))
    rows = _read(out / "metrics.csv")
    assert list(rows[0]) == [
        *("method", "species", "sample", "view", "mirrored", "view_class"),
        *("l2", "mse", "dssim", "dssim_gauss"),
    ]
    assert [r["method"] for r in rows[::8]] == list(METHODS) and len(rows) == len(METHODS) * 8
    for r in rows:
        assert float(r["l2"]) == pytest.approx(math.sqrt(float(r["mse"])), rel=1e-6)
        assert 0 <= float(r["dssim"]) <= 1 and r["view_class"] in ("top", "front", "side", "other")
        assert 0 <= float(r["dssim_gauss"]) <= 1
        assert int(r["view"]) == int(r["sample"]) // 2 and (r["mirrored"] == "True") == (int(r["sample"]) % 2 == 1)
    summ = _read(out / "summary.csv")
    assert list(summ[0]) == list(SUMMARY_COLUMNS) == ["method", "metric", "level", "mean", "ci_low", "ci_high", "n"]
    assert len(summ) == 2 * len(METHODS) * 4  # two levels, four metrics
    ours_l2 = [float(r["l2"]) for r in rows if r["method"] == "ours"]
    # the 8 evenly spaced samples of 2 x 12 are 8 distinct views, 4 per species: at both levels the
    # mean is the plain mean of the samples; the sample level's n counts those 8 views
    row = next(r for r in summ if r["method"] == "ours" and r["metric"] == "l2" and r["level"] == "sample")
    assert float(row["mean"]) == pytest.approx(np.mean(ours_l2), rel=1e-6) and row["n"] == "8"
    row = next(r for r in summ if r["method"] == "ours" and r["metric"] == "l2" and r["level"] == "species")
    assert float(row["mean"]) == pytest.approx(np.mean(ours_l2), rel=1e-6) and row["n"] == "2"
    tests = _read(out / "tests.csv")
    assert (
        list(tests[0])
        == list(TESTS_COLUMNS)
        == ["metric", "method_a", "method_b", "level", "test", "statistic", "p", "p_holm", "n"]
    )
    assert len(tests) == 4 * 10 * 3  # metrics x pairs of 5 methods x (species t, species wilcoxon, sample t)
    assert {(r["method_a"], r["method_b"]) for r in tests} >= {
        ("ours", "nn"),
        ("ours", "oracle"),
        ("ours", "ours_nofusion"),
    }
    vc = _read(out / "view_classes.csv")
    assert {r["view_class"] for r in vc} == {"top", "front", "side", "other"}
    assert sum(int(r["n"]) for r in vc if r["method"] == "ours" and r["metric"] == "l2") == 8
    sc = _read(out / "slice_counts.csv")
    assert [(r["method"], r["slices"]) for r in sc] == [("truth", "4"), ("truth", "8"), ("ours", "4"), ("ours", "8")]
    assert s["slice_counts"]["skipped"] == [16, 32]
    matches = _read(out / "matches.csv")
    assert len(matches) == 8 and all(int(m["oracle_evaluated"]) >= 1 for m in matches)
    js = json.loads((out / "summary.json").read_text())
    assert js["target_shape"] == [16, 16, 16] and js["n_samples"] == 8 and js["oracle"]["exact"] is True
    assert js["eval_split"] == "test" and js["eval_species"] == js["val_species"] == ["procedural_04", "procedural_05"]
    # the Oracle is the best of all training view volumes: no method beats it in L2 ... except by
    # predicting something that is not a training view; the NN is a training view, so it cannot
    nn_l2 = np.array([float(r["l2"]) for r in rows if r["method"] == "nn"])
    or_l2 = np.array([float(r["l2"]) for r in rows if r["method"] == "oracle"])
    assert (or_l2 <= nn_l2 + 1e-9).all()
    # each baseline is scored on the very volume its match names (helper-84: the NN scored on its
    # match's mirror partner passed every test, matches.csv unchanged)
    ds, (d, h, w) = open_store(store), js["target_shape"]
    assert h == w
    by = {(r["method"], r["species"], r["sample"]): float(r["l2"]) for r in rows}
    for m in matches:
        truth = ViewSource(ds, [m["species"]]).views([int(m["sample"])], size=w, depth=d)
        for method in ("nn", "oracle"):
            vol = ViewSource(ds, [m[f"{method}_species"]]).views([int(m[f"{method}_sample"])], size=w, depth=d)
            want = math.sqrt(float(((vol.double() - truth.double()) ** 2).mean()))
            assert by[(method, m["species"], m["sample"])] == pytest.approx(want, rel=1e-6), (method, m)


def test_evaluate_run_subset_of_methods(store, checkpoint, tmp_path):
    s = evaluate_run(
        EvalConfig(store, checkpoint, tmp_path / "e", max_samples=3, methods=("ours_nofusion", "nn"), slice_counts=(8,))
    )
    rows = _read(tmp_path / "e" / "metrics.csv")
    assert {r["method"] for r in rows} == {"ours_nofusion", "nn"} and len(rows) == 6
    assert [r["method"] for r in _read(tmp_path / "e" / "slice_counts.csv")] == ["truth", "ours_nofusion"]
    assert s["oracle"] is None
    s = evaluate_run(
        EvalConfig(
            store,
            checkpoint,
            tmp_path / "t",
            max_samples=2,
            methods=("ours", "oracle"),
            fusion_at="target",
            slice_counts=(),
            cache_bytes=0,
        )
    )  # the Oracle without the view cache
    assert s["settings"]["fusion_at"] == "target" and s["oracle"]["exact"] and not s["settings"]["train_views_cached"]
    assert _read(tmp_path / "t" / "slice_counts.csv") == []


def test_coarseness_fits_the_memory_budget():
    shape, n = (32, 32, 32), 1000
    assert coarse_cells(shape, 16) == 16**3 and coarse_cells(shape, 7) == 4**3  # 32 = 4 · 8
    assert coarse_for_memory(shape, n, 16, 1 << 40) == 16  # fits: unchanged
    budget = 4_000_000  # bytes; 16 cells per axis would need 1000 · 2 · 4096 · 4 = 32.8 MB
    c = coarse_for_memory(shape, n, 16, budget)
    assert c < 16 and n * 2 * coarse_cells(shape, c) * 4 <= budget  # fits ...
    assert n * 2 * coarse_cells(shape, c + 1) * 4 > budget  # ... and is the finest that does
    assert coarse_for_memory(shape, n, 16, 8 * n) == 1  # one cell per volume
    with pytest.raises(ValueError, match="at least 8000 bytes"):
        coarse_for_memory(shape, n, 16, 8 * n - 1)
    with pytest.raises(ValueError, match="coarse must be"):
        coarse_for_memory(shape, n, 0, budget)


def test_evaluate_run_nn_bound_and_brute_agree(store, checkpoint, tmp_path):
    a = evaluate_run(EvalConfig(store, checkpoint, tmp_path / "a", max_samples=6, methods=("nn",), slice_counts=()))
    b = evaluate_run(
        EvalConfig(
            store,
            checkpoint,
            tmp_path / "b",
            max_samples=6,
            methods=("nn",),
            slice_counts=(),
            nn_search="brute",
            nn_query_block=4,
            train_block=5,
        )
    )
    assert a["settings"]["nn_search"] == "bound" and b["settings"]["nn_search"] == "brute"
    ma, mb = _read(tmp_path / "a" / "matches.csv"), _read(tmp_path / "b" / "matches.csv")
    key = [(r["nn_species"], r["nn_sample"]) for r in ma]
    assert key == [(r["nn_species"], r["nn_sample"]) for r in mb]
    np.testing.assert_allclose([float(r["nn_dist2"]) for r in ma], [float(r["nn_dist2"]) for r in mb], rtol=1e-10)
    n_train = 3 * 12  # 3 training species of 6 views x 2
    assert {int(r["nn_evaluated"]) for r in mb} == {n_train} and min(int(r["nn_evaluated"]) for r in ma) < n_train
    assert _read(tmp_path / "a" / "metrics.csv") == _read(tmp_path / "b" / "metrics.csv")
    with pytest.raises(ValueError, match="NN's lower-bound features"):
        evaluate_run(
            EvalConfig(
                store, checkpoint, tmp_path / "c", max_samples=2, methods=("nn",), slice_counts=(), nn_feature_bytes=8
            )
        )
    with pytest.raises(ValueError, match="nn_search"):
        evaluate_run(EvalConfig(store, checkpoint, tmp_path / "d", max_samples=2, nn_search="fast"))


def test_evaluate_run_oracle_within_a_small_memory_budget(store, checkpoint, tmp_path):
    # a budget of two evaluated view volumes: two passes over the training samples, the same Oracle
    a = evaluate_run(EvalConfig(store, checkpoint, tmp_path / "a", max_samples=4, methods=("oracle",), slice_counts=()))
    b = evaluate_run(
        EvalConfig(
            store,
            checkpoint,
            tmp_path / "b",
            max_samples=4,
            methods=("oracle",),
            slice_counts=(),
            oracle_bytes=2 * 16**3 * 4,
            cache_bytes=0,
        )
    )
    assert a["oracle"]["passes"] == 1 and b["oracle"]["passes"] == 2 and b["oracle"]["exact"]
    ma, mb = _read(tmp_path / "a" / "matches.csv"), _read(tmp_path / "b" / "matches.csv")
    assert ma == mb
    assert _read(tmp_path / "a" / "metrics.csv") == _read(tmp_path / "b" / "metrics.csv")


def test_checkpoint_data_content_is_checked(store, checkpoint):
    """A checkpoint trained on other stored data (same species and sizes) is told apart by its content
    digest; one from before the digest was recorded is compared without it."""
    state = load_checkpoint(checkpoint)
    assert len(state["data"]["content"]) == 64 and _check_compat(state, store) == []
    state["data"]["content"] = "0" * 64
    assert [d.split(":")[0] for d in _check_compat(state, store)] == ["data.content"]
    del state["data"]["content"]
    assert _check_compat(state, store) == []


def test_evaluate_run_refuses_mismatches(store, checkpoint, tmp_path):
    state = load_checkpoint(checkpoint)
    state["data"]["image_size"] = 64
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match="image_size"):
        evaluate_run(EvalConfig(store, bad, tmp_path / "x", max_samples=2))
    state = load_checkpoint(checkpoint)
    state["data"]["species"] = state["data"]["species"][:2]
    torch.save(state, bad)
    with pytest.raises(ValueError, match="species"):
        evaluate_run(EvalConfig(store, bad, tmp_path / "x", max_samples=2))
    with pytest.raises(ValueError, match="unknown methods"):
        evaluate_run(EvalConfig(store, checkpoint, tmp_path / "x", methods=("ours", "wenger")))
    with pytest.raises(ValueError, match="fusion_at"):
        evaluate_run(EvalConfig(store, checkpoint, tmp_path / "x", fusion_at="nowhere"))
    assert not (tmp_path / "x" / "metrics.csv").exists()


# --------------------------------------------------------------------------------------------------
# the mean baseline, the evaluated split, the two levels of statistics
# --------------------------------------------------------------------------------------------------


def test_mean_baseline_equals_the_literal_average(store, checkpoint, tmp_path):

    ds = open_store(store)
    train_names, test_names = ds.species_names("train"), ds.species_names("test")
    src = ViewSource(ds, test_names)
    g = np.array([0, 1, 5, 12, 19, 23])  # both species, views and their mirrors
    got = src.views(g, size=16, depth=16, volume=torch.from_numpy(mean_volume(ds, train_names)))
    s, j = src.locate(g)
    view, mirrored = sample_to_view(j, 6)
    for i in range(g.size):
        rot = torch.from_numpy(ds.rotations(test_names[s[i]])[view[i]])[None]
        each = [
            torch_view_volumes(
                torch.from_numpy(ds.volume(t))[None, None],
                rot,
                size=16,
                steps=16,
                mirrored=torch.tensor([bool(mirrored[i])]),
            )[0]
            for t in train_names
        ]
        torch.testing.assert_close(got[i], torch.stack(each).mean(0), atol=1e-5, rtol=0)  # the literal average
    # no input used: the same view of another species gives the same prediction
    torch.testing.assert_close(
        got[0], src.views([12], size=16, depth=16, volume=torch.from_numpy(mean_volume(ds, train_names)))[0]
    )
    # in evaluate_run: its errors are those of the literal average against the truth
    evaluate_run(EvalConfig(store, checkpoint, tmp_path / "m", methods=("mean",), slice_counts=(), max_samples=6))
    rows = _read(tmp_path / "m" / "metrics.csv")
    assert {r["method"] for r in rows} == {"mean"} and len(rows) == 6
    for r in rows:
        gi = test_names.index(r["species"]) * 12 + int(r["sample"])
        v, m = sample_to_view(int(r["sample"]), 6)
        rot = torch.from_numpy(ds.rotations(r["species"])[v])[None]
        lit = torch.stack(
            [
                torch_view_volumes(
                    torch.from_numpy(ds.volume(t))[None, None], rot, size=16, steps=16, mirrored=torch.tensor([m])
                )[0]
                for t in train_names
            ]
        ).mean(0)
        l2, _ = volume_errors(lit, src.views([gi], size=16, depth=16)[0])
        assert float(r["l2"]) == pytest.approx(float(l2), rel=1e-5)


def test_ours_nofusion_is_the_output_clamped_to_the_density_range(store, checkpoint, tmp_path):
    # an output bias of +5 puts every raw voxel far above 1: as densities (as_density, the rule of
    # fusion, the figures and tomo infer) the prediction is all ones, so its l2 is that of ones
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["model"]["out.bias"] = torch.full_like(state["model"]["out.bias"], 5.0)
    bright = tmp_path / "bright.pt"
    torch.save(state, bright)
    evaluate_run(EvalConfig(store, bright, tmp_path / "e", methods=("ours_nofusion",), slice_counts=(), max_samples=4))
    ds = open_store(store)
    src = ViewSource(ds, ds.species_names("test"))
    for r in _read(tmp_path / "e" / "metrics.csv"):
        truth = src.views([ds.species_names("test").index(r["species"]) * 12 + int(r["sample"])], size=16, depth=16)[0]
        l2, _ = volume_errors(torch.ones_like(truth), truth)
        assert float(r["l2"]) == pytest.approx(float(l2), rel=1e-5)


def test_evaluated_split_only(store, checkpoint, tmp_path, monkeypatch):

    ds = open_store(store)
    val_names, test_names = ds.species_names("val"), ds.species_names("test")
    read = []
    for name in ("images", "volume", "rotations", "n_samples", "sample"):
        real = getattr(DatasetStore, name)

        def spy(self, species, *a, _real=real, **k):
            read.append(species)
            return _real(self, species, *a, **k)

        monkeypatch.setattr(DatasetStore, name, spy)
    s = evaluate_run(EvalConfig(store, checkpoint, tmp_path / "t", max_samples=6, slice_counts=()))
    assert read and not set(read) & set(val_names)  # split=test never touches a val species
    assert set(test_names) <= set(read)
    assert s["eval_split"] == "test" and s["eval_species"] == test_names == s["val_species"]
    assert s["splits"] == {"train": ds.species_names("train"), "val": val_names, "test": test_names}
    assert "never evaluated" in s["split_use"]["val"] and "reported result" in s["split_use"]["test"]
    assert {r["species"] for r in _read(tmp_path / "t" / "metrics.csv")} == set(test_names)
    assert "t-interval over them" in s["statistics"] and "Holm-Bonferroni" in s["statistics"]
    monkeypatch.undo()
    # split=val: only the val species; a single species: species-level CIs and tests are NaN, n = 1
    s = evaluate_run(
        EvalConfig(
            store, checkpoint, tmp_path / "v", split="val", max_samples=4, methods=("ours", "mean"), slice_counts=()
        )
    )
    assert s["eval_species"] == val_names and "evaluated in this run" in s["split_use"]["val"]
    assert {r["species"] for r in _read(tmp_path / "v" / "metrics.csv")} == set(val_names)
    sp = [r for r in _read(tmp_path / "v" / "summary.csv") if r["level"] == "species"]
    assert all(r["n"] == "1" and r["ci_low"] == "nan" and r["mean"] != "nan" for r in sp)
    assert all(r["p"] == "nan" for r in _read(tmp_path / "v" / "tests.csv") if r["level"] == "species")
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate_run(EvalConfig(store, checkpoint, tmp_path / "x", split="train"))
    # a store without test species: a clear error, nothing written
    other = build_split_store(tmp_path / "nt.zarr", ("train", "val"), views=2, size=16)
    with pytest.raises(ValueError, match=r"no 'test' species.*build-demo --test N.*which is no test result"):
        evaluate_run(EvalConfig(other, checkpoint, tmp_path / "x"))
    # an evaluated species the checkpoint was trained on is refused
    state = load_checkpoint(checkpoint)
    state["data"]["species"] = state["data"]["species"] + [test_names[0]]
    torch.save(state, tmp_path / "leak.pt")
    with pytest.raises(ValueError, match="training species"):
        evaluate_run(EvalConfig(store, tmp_path / "leak.pt", tmp_path / "x", strict=False))
    assert not (tmp_path / "x").exists()


def test_tables_have_both_levels_and_count_mirrored_pairs_once(store, checkpoint, tmp_path):
    out = tmp_path / "all"
    s = evaluate_run(EvalConfig(store, checkpoint, out, slice_counts=()))  # every test sample
    rows = _read(out / "metrics.csv")
    assert len(rows) == len(METHODS) * 24  # 2 species x 6 views x 2
    assert s["n_samples"] == 24 and s["n_species"] == 2 and s["n_views_evaluated"] == 12
    summ = _read(out / "summary.csv")
    assert {r["level"] for r in summ} == {"species", "sample"}
    for r in summ:  # n: species at the species level; distinct (species, view), half the samples, at the sample level
        assert r["n"] == ("2" if r["level"] == "species" else "12")
    spc = _read(out / "species.csv")
    assert list(spc[0]) == ["method", "species", "metric", "mean", "n_samples"]
    assert len(spc) == len(METHODS) * 2 * 4 and {r["n_samples"] for r in spc} == {"12"}
    for m in METHODS:
        v = np.array([float(r["dssim"]) for r in rows if r["method"] == m])
        sp = np.array([r["species"] for r in rows if r["method"] == m])
        means = {r["species"]: float(r["mean"]) for r in spc if r["method"] == m and r["metric"] == "dssim"}
        for name, x in means.items():
            assert x == pytest.approx(v[sp == name].mean(), rel=1e-6)
        row = {r["level"]: r for r in summ if r["method"] == m and r["metric"] == "dssim"}
        assert float(row["species"]["mean"]) == pytest.approx(np.mean(list(means.values())), rel=1e-6)
        assert float(row["species"]["ci_low"]) <= float(row["species"]["mean"]) <= float(row["species"]["ci_high"])
        pairs = v.reshape(2, 6, 2).mean(2)  # rows in (species, sample) order: a view and its mirror are neighbours
        assert float(row["sample"]["mean"]) == pytest.approx(pairs.mean(), rel=1e-6)

        assert float(row["sample"]["ci_high"]) == pytest.approx(mean_ci(pairs.ravel())[2], rel=1e-6)
    tests = _read(out / "tests.csv")
    kinds = {(r["level"], r["test"]) for r in tests}
    assert kinds == {("species", "t"), ("species", "wilcoxon"), ("sample", "t")}
    assert all(r["n"] == ("2" if r["level"] == "species" else "12") for r in tests if r["test"] == "t")
    mean_of = {(r["method"], r["metric"], r["species"]): float(r["mean"]) for r in spc}
    names = sorted({r["species"] for r in spc})
    for r in (r for r in tests if r["test"] == "wilcoxon"):  # n: the species it ranks (non-zero differences)
        a, b = ([mean_of[(m, r["metric"], n)] for n in names] for m in (r["method_a"], r["method_b"]))
        assert int(r["n"]) == sum(x != y for x, y in zip(a, b)), r
    w = [float(r["p"]) for r in tests if r["test"] == "wilcoxon" and r["p"] != "nan"]
    assert w and all(p >= 0.5 for p in w)  # two species: nothing can be significant
    # Holm over the first method's comparisons: one family per level and test of l2 and both DSSIMs (the
    # claims), mse its own
    family = {"l2": "claims", "dssim": "claims", "dssim_gauss": "claims", "mse": "mse"}
    for fam in {(family[r["metric"]], r["level"], r["test"]) for r in tests}:
        grp = [r for r in tests if (family[r["metric"]], r["level"], r["test"]) == fam]
        first = [r for r in grp if r["method_a"] == METHODS[0]]
        assert len(first) == (len(METHODS) - 1) * (3 if fam[0] == "claims" else 1)
        expect = holm([float(r["p"]) for r in first])
        np.testing.assert_allclose([float(r["p_holm"]) for r in first], expect, equal_nan=True)
        assert all(r["p_holm"] == "nan" for r in grp if r["method_a"] != METHODS[0])  # other pairs: uncorrected
    js = json.loads((out / "summary.json").read_text())
    assert set(js["code_version"]) == {"tomodata", "git_commit", "git_dirty"}  # which evaluation made these
    assert set(js["means"]) == {"species", "sample"} and set(js["means"]["species"]) == set(METHODS)
    assert len(js["differences"]) == 4 * 10 and "n_boot" not in js["settings"]
    assert len(js["tests"]) == len(tests) and len(js["species_means"]) == len(spc)


def test_streaming_searches_are_exact_and_bounded(store, monkeypatch, capsys):
    """Lower-bound features of training view volumes and x-rays are streamed from the store block by
    block (a small block size, counted), give the very features of one pass over everything, and the
    bounded searches on them return exactly the brute-force nearest neighbours."""

    ds = open_store(store)
    names = ds.species_names("train")
    D, S = 16, 16

    def counting(src):  # record the number of samples each views() call materialises
        sizes, orig = [], src.views

        def views(g, **kw):
            sizes.append(np.asarray(g).size)
            return orig(g, **kw)

        src.views = views
        return sizes

    made = []  # views per torch_view_volumes call
    orig_tvv = SO.torch_view_volumes
    monkeypatch.setattr(SO, "torch_view_volumes", lambda v, r, **kw: made.append(v.shape[0]) or orig_tvv(v, r, **kw))

    # ---- view volumes made 4 samples (2 views) per block, one view per call, one volume kept
    src = ViewSource(ds, names, view_batch=1, max_volumes=1)
    sizes = counting(src)
    factors = coarse_factors((D, S, S), 4)
    feats = E.train_coarse_features(src, size=D, depth=D, factors=factors, block=4)
    assert max(sizes) == 4 and sum(sizes) == len(src) and set(made) == {1}
    assert len(src._volumes) == 1 and src.volume_reads == len(names)  # species by species, each read once
    whole = E.train_coarse_features(ViewSource(ds, names), size=D, depth=D, factors=factors, block=len(src))
    assert torch.equal(feats, whole)  # the block size changes nothing
    capsys.readouterr()
    logged = E.train_coarse_features(ViewSource(ds, names), size=D, depth=D, factors=factors, block=4, progress="f")
    assert (
        torch.equal(logged, whole) and f"[f] {len(src) // 4}/{len(src) // 4} block (100 %)" in capsys.readouterr().err
    )
    all_train = ViewSource(ds, names).views(np.arange(len(src)), size=S, depth=D).double()
    queries = ViewSource(ds, ds.species_names("test")).views(np.arange(12), size=S, depth=D)
    brute = ((queries[:, None].double() - all_train[None]) ** 2).flatten(2).sum(2)
    # lower bounds streamed 5 training features at a time
    lb_blocks = []
    orig_lb = E._lower_bounds
    monkeypatch.setattr(E, "LOWER_BOUND_BLOCK_BYTES", 5 * 8 * feats.shape[1])
    monkeypatch.setattr(
        E,
        "_lower_bounds",
        lambda qf, tf, block=None: (lb_blocks.append(lb.shape[1]) or (a, lb) for a, lb in orig_lb(qf, tf, block)),
    )
    sizes.clear()
    res = bounded_search(
        queries, src, coarse=4, k=3, chunk=2, train_features=feats, view_budget_bytes=3 * D * S * S * 4
    )
    assert np.array_equal(res.index, brute.argmin(1).numpy()) and res.certified.all()
    np.testing.assert_allclose(res.dist2, brute.min(1).values.numpy(), rtol=1e-9)
    # 36 training samples: blocks of 5, the last lone one joined to the block before it (_row_chunks)
    assert max(lb_blocks) <= 5 + 1 and sum(lb_blocks) >= len(src) and max(sizes) <= 3

    # ---- NN: training x-rays read 5 at a time (never all in memory), features of one pass
    images = ImageSource(ds, names)
    isizes = counting(images)
    nfac = coarse_factors((1, 32, 32), 4)
    nfeats = E.train_coarse_features(images, size=32, depth=1, factors=nfac, block=5)
    assert max(isizes) <= 5 and images._all is None and images.images_read == len(images)
    assert torch.equal(
        nfeats, E.train_coarse_features(ImageSource(ds, names), size=32, depth=1, factors=nfac, block=len(images))
    )
    train_imgs = np.concatenate([ds.images(s, slice(0, ds.n_samples(s))) for s in names])
    q = ds.images(ds.species_names("test")[0], slice(0, 12))
    want = ((q[:, None].astype(np.float64) - train_imgs[None]) ** 2).reshape(12, len(train_imgs), -1).sum(-1)
    r = nearest_images_bounded(q, images, coarse=4, k=2, chunk=1, train_features=nfeats)
    assert np.array_equal(r.index, want.argmin(1)) and r.certified.all()
    np.testing.assert_allclose(r.dist2, want.min(1), rtol=1e-12)


def test_row_chunked_reductions_match_one_pass():
    """Chunked float64 distances (bounded temporaries) give the same bits as one pass over all rows."""

    assert E._row_chunks(1, 4) == [(0, 1)] and E._row_chunks(5, 4) == [(0, 5)]
    assert E._row_chunks(9, 4) == [(0, 4), (4, 9)] and E._row_chunks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert E._row_chunks(7, None) == [(0, 7)]
    rng = np.random.default_rng(1)
    v = torch.from_numpy(rng.random((9, 32, 64, 64), dtype=np.float32))
    q = torch.from_numpy(rng.random((3, 32, 64, 64), dtype=np.float32))
    qi = np.array([0, 1, 2, 2, 1, 0, 0, 1, 2])
    for n in range(1, 10):
        one = ((v[:n].double() - q[qi[:n]].double()) ** 2).flatten(1).sum(1)
        assert torch.equal(E._sq_distances(v[:n], q, qi[:n], rows=2), one)
        mse_one = ((v[:n].double() - q[qi[:n]].double()) ** 2).flatten(1).mean(1).numpy()
        assert np.array_equal(volume_errors(v[:n], q[qi[:n]], rows=2)[1], mse_one)


def test_bench_evaluate(store, checkpoint, capsys):

    r = bench_evaluate(store, checkpoint, samples=3, progress=False, slice_counts=(4,))
    assert r["n_queries"] == 3 and r["n_train"] == 36 and r["peak_rss_gb"] > 0
    assert {
        "network",
        "fusion",
        "metrics",
        "nn features",
        "nn search",
        "oracle training views",
        "oracle products",
        "oracle re-rank",
    } <= set(r["phases"])
    assert r["phases"]["oracle training views"]["unit"] == "training sample and pass"
    assert r["phases"]["oracle products"]["unit"] == "(held-out, training) pair"
    assert r["paper_projection_total_s"] == pytest.approx(sum(r["paper_projection_s"].values()))
    assert main(["bench", "evaluate", "--store", str(store), "--checkpoint", str(checkpoint), "--samples", "2"]) == 0
    out = capsys.readouterr().out
    assert "peak RSS" in out and "oracle products" in out and "paper scale" in out
    assert main(["bench", "evaluate", "--store", str(store)]) == 2  # no checkpoint
    assert "needs --store and --checkpoint" in capsys.readouterr().err
