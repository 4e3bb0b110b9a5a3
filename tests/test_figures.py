"""model.figures from synthetic eval CSVs (the formats model.evaluate writes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from model import applications as A
from model import figures as F
from model import plotting
from model import qualitative as Q
from model.evaluate import SPECIES_COLUMNS, SUMMARY_COLUMNS, TESTS_COLUMNS, depth_resample, dssim, statistics_tables

METHODS = ("ours", "ours_nofusion", "nn", "oracle", "mean")
CLASSES = ("top", "front", "side", "other")
MEANS = {
    "l2": {"ours": 0.051, "ours_nofusion": 0.053, "nn": 0.067, "oracle": 0.060, "mean": 0.075},
    "dssim": {"ours": 0.097, "ours_nofusion": 0.104, "nn": 0.109, "oracle": 0.110, "mean": 0.14},
    "mse": {"ours": 0.004, "ours_nofusion": 0.0042, "nn": 0.006, "oracle": 0.005, "mean": 0.0065},
}


def _ci(v: np.ndarray) -> tuple[float, float, float]:
    m = float(v.mean())
    h = 1.96 * float(v.std(ddof=1)) / np.sqrt(v.size)
    return m, m - h, m + h


GAUSS = {"ours": 0.15, "ours_nofusion": 0.16, "nn": 0.17, "oracle": 0.18, "mean": 0.3}


def make_eval_dir(d: Path, n_species: int = 5, n_views: int = 6, seed: int = 0, gauss: bool = False) -> Path:
    """Synthetic metrics.csv (``n_species`` x ``n_views`` x 2 samples, a species effect, mirrors close
    to their view) and the summary/tests/species tables from it as model.evaluate writes them
    (:func:`model.evaluate.statistics_tables`), plus view_classes/slice_counts CSVs, in ``d``; with
    ``gauss`` also dssim_gauss (as evaluations since session 25 have; before, none)."""
    table = {**MEANS, **({"dssim_gauss": GAUSS} if gauss else {})}
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    n = n_species * 2 * n_views
    sp_effect = rng.normal(0, 1, n_species)
    view_effect = rng.normal(0, 1, n // 2)
    for m in METHODS:
        for s in range(n):
            sp, smp = divmod(s, 2 * n_views)
            r = dict(
                method=m,
                species=f"sp{sp:02d}",
                sample=smp,
                view=smp // 2,
                mirrored=bool(smp % 2),
                view_class=CLASSES[s % 4],
            )
            for met, means in table.items():
                r[met] = max(
                    1e-4, means[m] * (1 + 0.12 * sp_effect[sp] + 0.08 * view_effect[s // 2] + 0.03 * rng.normal())
                )
            rows.append(r)
    metrics = pd.DataFrame(rows)
    metrics.to_csv(d / "metrics.csv", index=False)
    per = {m: {met: metrics.loc[metrics.method == m, met].to_numpy() for met in table} for m in METHODS}
    first = metrics[metrics.method == METHODS[0]]
    st = statistics_tables(
        per,
        first["species"].tolist(),
        first["sample"].to_numpy(),
        n_views,
        methods=METHODS,
        metrics=tuple(table),
    )
    pd.DataFrame(st["summary"], columns=SUMMARY_COLUMNS).to_csv(d / "summary.csv", index=False)
    pd.DataFrame(st["tests"], columns=TESTS_COLUMNS).to_csv(d / "tests.csv", index=False)
    pd.DataFrame(st["species"], columns=SPECIES_COLUMNS).to_csv(d / "species.csv", index=False)
    vcs = []
    for met in table:
        for m in METHODS:
            for c in CLASSES:
                vc = metrics.loc[(metrics.method == m) & (metrics.view_class == c), met].to_numpy()
                mean, lo, hi = _ci(vc)
                vcs.append(dict(method=m, view_class=c, metric=met, mean=mean, ci_low=lo, ci_high=hi, n=vc.size))
    pd.DataFrame(vcs).to_csv(d / "view_classes.csv", index=False)
    sl = []
    for m in ("ours", "oracle"):
        for k, s in enumerate((8, 16, 32, 64, 128)):
            mean = (0.2 / 2**k if s < 128 else 0.0) * (1.2 if m == "oracle" else 1.0)
            sl.append(dict(method=m, slices=s, dssim=mean, ci_low=mean * 0.9, ci_high=mean * 1.1, n=20))
    pd.DataFrame(sl).to_csv(d / "slice_counts.csv", index=False)
    return d


@pytest.fixture()
def eval_dir(tmp_path) -> Path:
    return make_eval_dir(tmp_path / "eval")


@pytest.fixture(autouse=True)
def _low_dpi(monkeypatch):
    """Draw at 75 dpi (half the default) to keep the tests fast; sizes below are for 75 dpi."""
    monkeypatch.setattr(plotting, "DPI", 75)


def _check_png(p: Path, min_w: int, min_h: int) -> tuple[int, int]:
    assert p.is_file() and p.stat().st_size > 3000
    with Image.open(p) as im:
        assert im.format == "PNG"
        w, h = im.size
        arr = np.asarray(im.convert("L"))
    assert w >= min_w and h >= min_h
    assert arr.std() > 5  # not blank
    return w, h


def test_fig_slice_counts_flexible_columns(eval_dir, tmp_path):
    df = pd.read_csv(eval_dir / "slice_counts.csv")
    df = df[df.method == "ours"].drop(columns=["method", "ci_low", "ci_high"]).rename(columns={"dssim": "dssim_mean"})
    df.to_csv(eval_dir / "slice_counts.csv", index=False)
    _check_png(F.fig_slice_counts(eval_dir, tmp_path / "s.png"), 400, 250)
    df.rename(columns={"dssim_mean": "ssim"}).to_csv(eval_dir / "slice_counts.csv", index=False)
    with pytest.raises(ValueError, match="DSSIM column"):
        F.fig_slice_counts(eval_dir, tmp_path / "s2.png")


def test_fig_fusion_with_example(eval_dir, tmp_path):
    rng = np.random.default_rng(1)
    fused = rng.uniform(0, 0.2, (16, 24, 24)).astype(np.float32)
    nof = rng.uniform(0, 0.2, (16, 24, 24)).astype(np.float32)
    xray = -np.expm1(-10 * fused.mean(0))
    _check_png(
        F.fig_fusion(eval_dir, tmp_path / "f2.png", example=dict(xray=xray, fused=fused, nofusion=nof)), 700, 450
    )
    with pytest.raises(ValueError, match="nofusion"):
        F.fig_fusion(eval_dir, tmp_path / "f3.png", example=dict(xray=xray, fused=fused))


def _blob(n: int, centre, radii) -> np.ndarray:
    c = (2 * np.arange(n) + 1) / n - 1
    w, v, u = np.meshgrid(c, c, c, indexing="ij")
    r2 = ((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2 + ((w - centre[2]) / radii[2]) ** 2
    return np.clip(1.2 - r2, 0, 0.6).astype(np.float32)


def _qual_rows():
    truth = _blob(24, (0.1, 0.0, 0.2), (0.6, 0.4, 0.3))
    ours = _blob(24, (0.1, 0.0, 0.1), (0.55, 0.4, 0.35))
    nn = _blob(24, (-0.1, 0.1, 0.0), (0.5, 0.5, 0.5))
    xray = -np.expm1(-10 * truth.mean(0))
    return [
        dict(xray=xray, ours=ours, truth=truth, nn=nn, oracle=truth * 0.9, title="species A"),
        dict(xray=xray[:, ::-1], ours=ours[:, :, ::-1], truth=truth[:, :, ::-1], title="species B"),
    ]


def test_gaussian_window_dssim_drawn_where_the_evaluation_has_it(tmp_path):
    """Figs. 6 and 8b add a row / panel for dssim_gauss (the paper's means beside it too) where the
    evaluation has it, and draw the two metrics as before for an evaluation folder without it."""
    with_g = make_eval_dir(tmp_path / "g", gauss=True)
    without = make_eval_dir(tmp_path / "u")
    w6, h6 = _check_png(F.fig_methods(with_g, tmp_path / "m_g.png"), 600, 500)
    w6u, h6u = _check_png(F.fig_methods(without, tmp_path / "m_u.png"), 600, 500)
    assert w6 == w6u and h6 > h6u * 1.3  # three rows against two
    w8, h8 = _check_png(F.fig_view_classes(with_g, tmp_path / "v_g.png"), 300, 250)
    w8u, h8u = _check_png(F.fig_view_classes(without, tmp_path / "v_u.png"), 300, 250)
    assert h8 == h8u and w8 > w8u * 1.3  # three panels against two
    assert F.PAPER_MEANS["dssim_gauss"] == F.PAPER_MEANS["dssim"]
    with pytest.raises(ValueError, match="lacks column"):  # a metric asked for that is not optional
        F.fig_methods(without, tmp_path / "m.png", metrics=("l2", "mse", "nope"))
    with pytest.raises(ValueError, match="none of the metrics dssim_gauss"):
        F.fig_methods(without, tmp_path / "m.png", metrics=("dssim_gauss",))


def test_fig_view_classes_nan_ci(eval_dir, tmp_path):
    """evaluate writes NaN CI bounds for n < 2: drawn without error bars, no crash."""
    df = pd.read_csv(eval_dir / "view_classes.csv")
    top = df.view_class == "top"
    df.loc[top, ["ci_low", "ci_high"]] = np.nan
    df.loc[top, "n"] = 1
    df[df.metric == "dssim"].to_csv(eval_dir / "view_classes.csv", index=False)
    _check_png(F.fig_view_classes(eval_dir, tmp_path / "v.png"), 300, 250)
    df[df.metric == "mse"].to_csv(eval_dir / "view_classes.csv", index=False)
    with pytest.raises(ValueError, match="none of the metrics"):
        F.fig_view_classes(eval_dir, tmp_path / "v2.png")


def test_fig_qualitative_xray_mode(tmp_path):
    p = F.fig_qualitative(_qual_rows(), tmp_path / "q.png", mode="xray", backend="cpu")
    _check_png(p, 1000, 250)


def test_fig_qualitative_bad_rows(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        F.fig_qualitative([], tmp_path / "q.png")
    with pytest.raises(ValueError, match="lacks 'xray'"):
        F.fig_qualitative([dict(ours=np.zeros((4, 4, 4), np.float32))], tmp_path / "q.png")
    rows = _qual_rows()
    rows[0]["ours"] = np.zeros((4, 4), np.float32)
    with pytest.raises(ValueError, match="row 0, ours"):
        F.fig_qualitative(rows, tmp_path / "q.png", mode="xray")


def test_slice_view_renders():
    v = _qual_rows()[0]["truth"]  # 24 slices
    cells = Q.slice_view_renders(v, [2, 12], [0.0, 60.0], backend="cpu")
    assert sorted(cells) == [2, 12, 24]
    grid = dict(size=128, steps=128)  # rendered for display at 128², whatever the volume's size
    full = A.novel_views(v, [0.0, 60.0], mode="surface", backend="cpu", **grid)
    assert full.shape == (2, 128, 128)
    np.testing.assert_array_equal(cells[24][0], full)
    assert (cells[24][1] == 0).all()
    for c in (2, 12):
        imgs, d = cells[c]
        ref = A.novel_views(
            depth_resample(torch.from_numpy(v)[None], c)[0].numpy(), [0.0, 60.0], mode="surface", backend="cpu", **grid
        )
        np.testing.assert_allclose(imgs, ref)
        np.testing.assert_allclose(d, [dssim(ref[a], full[a]) for a in range(2)])
    # fewer slices: a larger difference from the full depth, seen from the side
    assert cells[2][1][1] > cells[12][1][1] > 0
    with pytest.raises(ValueError, match="slice count 24"):
        Q.slice_view_renders(v, [24], [0.0], backend="cpu")


def test_fig_slice_views(tmp_path, monkeypatch):
    rows = _qual_rows()
    calls = []
    real = Q.slice_view_renders

    def record(vol, counts, angles, **kw):
        calls.append((vol.shape, list(counts), list(angles)))
        return real(vol, counts, angles, **kw)

    monkeypatch.setattr(Q, "slice_view_renders", record)
    p = Q.fig_slice_views(rows, tmp_path / "s.png", slice_counts=(4, 8, 64), backend="cpu")
    w, h = _check_png(p, 250, 300)  # 4, 8 and the full 24 slices; truth and ours, two views each
    assert calls == [((24, 24, 24), [4, 8], [0.0, 60.0])] * 2  # truth and ours; 64 >= D is left out
    # only truth: half the rows
    w2, h2 = _check_png(
        F.fig_slice_views([dict(xray=rows[0]["xray"], truth=rows[0]["truth"])], tmp_path / "t.png", backend="cpu"),
        250,
        150,
    )
    assert h2 < h
    with pytest.raises(ValueError, match="no row has"):
        F.fig_slice_views([dict(xray=rows[0]["xray"])], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no slice count below"):
        F.fig_slice_views(rows, tmp_path / "x.png", slice_counts=(24, 32))
    with pytest.raises(ValueError, match="non-empty"):
        F.fig_slice_views([], tmp_path / "x.png")


def test_write_all_figures(eval_dir, tmp_path):
    paths = F.write_all_figures(eval_dir, tmp_path / "figs", qualitative_rows=_qual_rows()[:1], backend="cpu")
    assert all(p.parent == tmp_path / "figs" for p in paths)
    names = sorted(p.name for p in paths)
    assert names == [
        "fig17_qualitative.png",
        "fig6_methods.png",
        "fig7_slice_views.png",
        "fig8a_slice_counts.png",
        "fig8b_view_classes.png",
        "fig9_fusion.png",
    ]
    for p in paths:
        _check_png(p, 400, 150)
    # fig6 without tests.csv still works, without the p-value brackets: a different image
    (eval_dir / "tests.csv").unlink()
    p2 = F.fig_methods(eval_dir, tmp_path / "m2.png")
    _check_png(p2, 600, 500)
    assert p2.read_bytes() != (tmp_path / "figs" / "fig6_methods.png").read_bytes()


def test_write_all_figures_renders_fig9_with_the_evaluations_chi(eval_dir, tmp_path, monkeypatch):
    """Fig. 9 re-renders x-rays: with the χ the store's x-rays had (summary.json), 10 where unrecorded."""
    seen = []
    monkeypatch.setattr(F, "fig_fusion", lambda d, out, **kw: seen.append(kw["chi"]) or out)
    monkeypatch.setattr(F, "fig_methods", lambda d, out: out)
    F.write_all_figures(eval_dir, tmp_path / "a", backend="cpu")
    (eval_dir / "summary.json").write_text(json.dumps({"chi": 7.5}))
    F.write_all_figures(eval_dir, tmp_path / "b", backend="cpu")
    assert seen == [10.0, 7.5]


def test_write_all_figures_skips_what_is_absent(eval_dir, tmp_path, monkeypatch):
    calls = []
    for name in ("fig_methods", "fig_fusion", "fig_view_classes", "fig_slice_counts", "fig_qualitative"):
        monkeypatch.setattr(F, name, lambda *a, _n=name, **k: calls.append(_n) or Path(a[1]))
    d2 = tmp_path / "eval2"
    d2.mkdir()
    for f in ("metrics.csv", "summary.csv"):
        df = pd.read_csv(eval_dir / f)
        df[df.method != "ours_nofusion"].to_csv(d2 / f, index=False)
    with pytest.warns(UserWarning, match="figures left out") as rec:
        assert [p.name for p in F.write_all_figures(d2, tmp_path / "figs2")] == ["fig6_methods.png"]
    text = str(rec[0].message)
    assert "fig8b_view_classes.png (the eval folder has no view_classes.csv" in text
    assert "fig8a_slice_counts.png" in text and "fig17_qualitative.png and fig7_slice_views.png" in text
    assert calls == ["fig_methods"]
    calls.clear()
    with pytest.warns(UserWarning, match="figures left out: fig17_qualitative.png and fig7_slice_views.png"):
        F.write_all_figures(eval_dir, tmp_path / "figs3")
    assert calls == ["fig_methods", "fig_fusion", "fig_view_classes", "fig_slice_counts"]


@pytest.mark.parametrize(
    "fn, fname, drop, match",
    [
        (F.fig_methods, "metrics.csv", None, "missing file"),
        (F.fig_methods, "summary.csv", None, "missing file"),
        (F.fig_methods, "metrics.csv", "dssim", r"lacks column\(s\) \['dssim'\]"),
        (F.fig_methods, "summary.csv", "ci_high", "ci_high"),
        (F.fig_methods, "tests.csv", "p", r"\['p'\]"),
        (F.fig_view_classes, "view_classes.csv", None, "missing file"),
        (F.fig_view_classes, "view_classes.csv", "view_class", "view_class"),
        (F.fig_slice_counts, "slice_counts.csv", None, "missing file"),
        (F.fig_slice_counts, "slice_counts.csv", "slices", "slices"),
        (F.fig_fusion, "summary.csv", "mean", "mean"),
    ],
)
def test_missing_inputs_raise(eval_dir, tmp_path, fn, fname, drop, match):
    path = eval_dir / fname
    if drop is None:
        path.unlink()
    else:
        pd.read_csv(path).drop(columns=[drop]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=match):
        fn(eval_dir, tmp_path / "x.png")


def test_missing_rows_and_folder_raise(eval_dir, tmp_path):
    s = pd.read_csv(eval_dir / "summary.csv")
    s[s.method != "ours_nofusion"].to_csv(eval_dir / "summary.csv", index=False)
    with pytest.raises(ValueError, match="ours_nofusion"):
        F.fig_fusion(eval_dir, tmp_path / "f.png")
    with pytest.raises(ValueError, match="ours_nofusion"):
        F.fig_methods(eval_dir, tmp_path / "m.png")  # metrics.csv still has it
    with pytest.raises(ValueError, match="does not exist"):
        F.fig_methods(tmp_path / "nope", tmp_path / "m.png")
    (eval_dir / "metrics.csv").write_text("")
    with pytest.raises(ValueError, match="cannot read"):
        F.fig_methods(eval_dir, tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"\.png"):
        F.fig_view_classes(eval_dir, tmp_path / "v.jpg")


def test_fig_methods_shows_both_levels_and_species_level_p_values(eval_dir, tmp_path, monkeypatch):
    texts = []
    real = F._bracket
    monkeypatch.setattr(
        F, "_bracket", lambda ax, x0, x1, y, h, text: texts.append(text) or real(ax, x0, x1, y, h, text)
    )
    _check_png(F.fig_methods(eval_dir, tmp_path / "m.png"), 800, 600)
    tests = pd.read_csv(eval_dir / "tests.csv")
    baselines = [m for m in METHODS if m != "ours"]
    assert len(texts) == 2 * 2 * len(baselines)  # 2 metrics x (species, sample) x baselines
    for metric_i, metric in enumerate(("l2", "dssim")):
        block = texts[metric_i * 2 * len(baselines) : (metric_i + 1) * 2 * len(baselines)]
        species, sample = block[: len(baselines)], block[len(baselines) :]
        for b, sp_text, s_text in zip(baselines, species, sample):
            rows = tests[(tests.metric == metric) & (tests.method_a == "ours") & (tests.method_b == b)]
            t = rows[(rows.level == "species") & (rows.test == "t")].iloc[0]
            w = rows[(rows.level == "species") & (rows.test == "wilcoxon")].iloc[0]
            ts = rows[(rows.level == "sample") & (rows.test == "t")].iloc[0]
            assert sp_text == f"p: t {_with_holm(t)}, Wilcoxon {_with_holm(w)}; n=5 species"
            assert s_text == f"t: {F._fmt_p(ts.p)} (n=30 views)"  # 5 species x 6 views: mirrors counted once
    assert w.p == 0.0625  # 5 species all better: the exact two-sided minimum 2/2^5


def _with_holm(row) -> str:
    """A species-level p as Fig. 6 prints it: with the Holm-adjusted p beside it where that differs."""
    assert np.isfinite(row.p_holm) and row.p_holm >= row.p  # every comparison of ours is in a Holm family
    return F._p_num(row.p) + (f" (Holm {F._p_num(row.p_holm)})" if row.p_holm != row.p else "")


def test_figures_read_tests_csv_written_before_p_holm(eval_dir, tmp_path, monkeypatch):
    """An eval folder from before the Holm column still draws, with the unadjusted p only."""
    tests = pd.read_csv(eval_dir / "tests.csv")
    tests.drop(columns="p_holm").to_csv(eval_dir / "tests.csv", index=False)
    texts = []
    real = F._bracket
    monkeypatch.setattr(
        F, "_bracket", lambda ax, x0, x1, y, h, text: texts.append(text) or real(ax, x0, x1, y, h, text)
    )
    _check_png(F.fig_methods(eval_dir, tmp_path / "m.png"), 800, 600)
    assert texts and not any("Holm" in t for t in texts)


def test_fig_methods_and_fusion_with_one_species(tmp_path, monkeypatch):
    """One evaluated species: no species-level CI or test (NaN); drawn without them; Fig. 9 falls back to
    the sample level."""
    d = make_eval_dir(tmp_path / "one", n_species=1)
    s = pd.read_csv(d / "summary.csv")
    assert s.loc[s.level == "species", "ci_low"].isna().all() and (s.loc[s.level == "species", "n"] == 1).all()
    texts = []
    monkeypatch.setattr(F, "_bracket", lambda ax, x0, x1, y, h, text: texts.append(text))
    _check_png(F.fig_methods(d, tmp_path / "m.png"), 800, 600)
    assert any("p: t n/a, Wilcoxon n/a" in t for t in texts)
    texts.clear()
    _check_png(F.fig_fusion(d, tmp_path / "f.png"), 500, 200)
    assert texts and all("Wilcoxon" not in t for t in texts)


def test_figures_need_the_level_column(eval_dir, tmp_path):
    s = pd.read_csv(eval_dir / "summary.csv")
    s[s.level == "sample"].drop(columns=["level"]).to_csv(eval_dir / "summary.csv", index=False)
    for fn in (F.fig_methods, F.fig_fusion):
        with pytest.raises(ValueError, match=r"lacks column\(s\) \['level'\]"):
            fn(eval_dir, tmp_path / "x.png")
