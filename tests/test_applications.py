"""model.applications on a small procedural skull's view volume and on analytic phantoms."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from model import applications as A
from model.surface import render_isosurface
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import render_xrays, view_volumes
from tomodata.views import rotation_from_direction

N = 48


@pytest.fixture(scope="module")
def skull():
    """(canonical volume, rotation, view volume (48³), its x-ray rendered from the canonical volume)."""
    vol = skull_volume(species_params(0), size=N)
    rot = rotation_from_direction(np.array([0.4, -0.3, 1.0]))
    vv = view_volumes(vol, rot, size=N, steps=N, backend="cpu")[0]
    xray = render_xrays(vol, rot, size=N, steps=N, backend="cpu")[0]
    return vol, rot, vv, xray


def _ball(n: int, centre, radius: float, value: float = 0.6) -> np.ndarray:
    c = (2 * np.arange(n) + 1) / n - 1
    w, v, u = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt((u - centre[0]) ** 2 + (v - centre[1]) ** 2 + (w - centre[2]) ** 2)
    return (value * np.clip((radius - r) * n / 2 + 0.5, 0, 1)).astype(np.float32)


def _shell_with_core(n: int = 40) -> np.ndarray:
    shell = _ball(n, (0, 0, 0), 0.8) - _ball(n, (0, 0, 0), 0.7)
    return np.clip(shell + _ball(n, (0, 0, 0), 0.3, 0.9), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# novel views


def test_novel_view_shapes(skull):
    _, _, vv, _ = skull
    for mode in ("xray", "surface", "depth"):
        out = A.novel_views(vv, [0, 30, 90], mode=mode, backend="cpu")
        assert out.shape == (3, N, N) and out.dtype == np.float32
        assert 0 <= out.min() and out.max() <= 1 and out.max() > 0.2
    col = A.novel_views(vv, [10.0], mode="colour", size=32, backend="cpu")
    assert col.shape == (1, 32, 32, 3) and col.dtype == np.float32
    assert A.novel_views(vv, [0], mode="xray", size=24, backend="cpu").shape == (1, 24, 24)


def test_novel_view_zero_is_the_xray_and_180_is_mirrored_left_right(skull):
    _, _, vv, xray = skull
    x0, x180, x360 = A.novel_views(vv, [0.0, 180.0, 360.0], mode="xray", backend="cpu")
    np.testing.assert_allclose(x0, xray, atol=1e-5)
    np.testing.assert_allclose(x0, -np.expm1(-10.0 * vv.astype(np.float64).mean(0)), atol=1e-5)
    np.testing.assert_allclose(x360, xray, atol=1e-5)
    # 180° about v: u -> -u, so the columns are reversed (not the rows)
    np.testing.assert_allclose(x180, xray[:, ::-1], atol=1e-5)
    assert np.abs(x180 - xray[::-1, :]).max() > 0.1
    assert np.abs(x180 - xray).max() > 0.1


def test_surface_mode_at_zero_is_the_view_volume_render(skull):
    _, _, vv, _ = skull
    np.testing.assert_allclose(
        A.novel_views(vv, [0.0], mode="surface", backend="cpu")[0], render_isosurface(vv, iso=0.1), atol=1e-6
    )
    # a novel surface view is a different image
    assert np.abs(A.novel_views(vv, [40.0], mode="surface", backend="cpu")[0] - render_isosurface(vv)).mean() > 0.02


def test_rotation_direction_convention():
    """θ > 0: points in front of the centre (w < 0) move towards +u (image right)."""
    blob = _ball(32, (0.0, 0.0, -0.6), 0.15)
    cols = np.arange(32)
    for angle, sign in ((30.0, 1), (-30.0, -1)):
        img = A.novel_views(blob, [angle], mode="xray", backend="cpu")[0]
        cu = (img.sum(0) * cols).sum() / img.sum()
        assert sign * (cu - 15.5) > 3  # expected shift 0.6·sin 30° = 0.3 → 4.8 px
    r = A.rotation_about_v(30.0)
    np.testing.assert_allclose(r[:, 2], [0.5, 0, np.cos(np.pi / 6)], atol=1e-12)
    np.testing.assert_array_equal(A.rotation_about_v(180.0), np.diag([-1.0, 1.0, -1.0]))


# ----------------------------------------------------------------------------------------------
# GIFs


def _gif_info(path):
    with Image.open(path) as im:
        frames, durations = im.n_frames, []
        for i in range(frames):
            im.seek(i)
            durations.append(im.info.get("duration"))
        return frames, im.info.get("loop"), durations, im.size


def test_turntable_gif(skull, tmp_path):
    _, _, vv, _ = skull
    p = A.turntable_gif(vv, tmp_path / "t.gif", n=6, mode="surface", backend="cpu")
    frames, loop, durations, size = _gif_info(p)
    assert (frames, loop, size) == (6, 0, (N, N))
    assert durations == [80] * 6
    p = A.turntable_gif(vv, tmp_path / "t2.gif", n=3, mode="xray", frame_ms=50, size=32, backend="cpu")
    assert _gif_info(p)[0] == 3 and _gif_info(p)[2] == [50] * 3 and _gif_info(p)[3] == (32, 32)


def test_wiggle_gif(skull, tmp_path):
    _, _, vv, _ = skull
    frames, loop, durations, _ = _gif_info(A.wiggle_gif(vv, tmp_path / "w.gif", baseline_deg=6, backend="cpu"))
    assert (frames, loop, durations) == (2, 0, [150, 150])
    frames, _, _, _ = _gif_info(A.wiggle_gif(vv, tmp_path / "w4.gif", frames=4, mode="depth", backend="cpu"))
    assert frames == 6  # ping-pong: 4 views there, 2 back


# ----------------------------------------------------------------------------------------------
# stereo


def test_anaglyph(skull):
    _, _, vv, _ = skull
    a = A.anaglyph(vv, baseline_deg=6.0, backend="cpu")
    assert a.shape == (N, N, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a[..., 1], a[..., 2])
    assert np.abs(a[..., 0].astype(int) - a[..., 1]).max() > 30
    left, right = A.stereo_pair(vv, baseline_deg=6.0, backend="cpu")
    np.testing.assert_array_equal(a[..., 0], A.to_uint8(left))
    np.testing.assert_array_equal(a[..., 0], A.to_uint8(A.novel_views(vv, [3.0], mode="surface", backend="cpu")[0]))
    z = A.anaglyph(vv, baseline_deg=0.0, mode="xray", backend="cpu")
    np.testing.assert_array_equal(z[..., 0], z[..., 1])
    np.testing.assert_array_equal(z[..., 0], z[..., 2])
    assert z.max() > 50


# ----------------------------------------------------------------------------------------------
# cut-aways


def test_cut_volume_half_spaces():
    v = np.full((8, 6, 10), 0.5, np.float32)
    w = A.cut_volume(v, axis="w", fraction=0.25)
    assert (w[:2] == 0).all() and (w[2:] == 0.5).all()
    u = A.cut_volume(v, axis="u", fraction=0.5)
    assert (u[:, :, :5] == 0).all() and (u[:, :, 5:] == 0.5).all()
    assert (A.cut_volume(v, axis="v", fraction=1.0) == 0).all()
    np.testing.assert_array_equal(A.cut_volume(v, fraction=0.0), v)
    o = A.cut_volume(np.full((8, 8, 8), 0.5, np.float32), axis=(1.0, 0.0, 1.0), fraction=0.5)
    assert o.sum() == pytest.approx(0.5 * 0.5 * 512, rel=0.15) and o[0, 0, 0] == 0 and o[-1, 0, -1] == 0.5


def test_cut_away_xray_removes_front_density(skull):
    _, _, vv, xray = skull
    cut = A.cut_away(vv, fraction=0.5, mode="xray", backend="cpu")
    assert cut.shape == (N, N)
    assert (cut <= xray + 1e-5).all() and (xray - cut).max() > 0.1
    back = vv.astype(np.float64).copy()
    back[: N // 2] = 0
    np.testing.assert_allclose(cut, -np.expm1(-10 * back.mean(0)), atol=1e-5)


def test_cut_away_shows_the_interior():
    vol = _shell_with_core(40)
    whole = A.novel_views(vol, [0.0], mode="depth")[0]
    cut = A.cut_away(vol, fraction=0.5, mode="depth")
    c, off = 20, 20 + 10  # centre pixel; a pixel at u ≈ 0.5 (outside the core, inside the shell)
    # depth shading 1 − 0.8 t with t = (w + 1)/2: the shell's front (w ≈ −0.8 / −0.62) uncut,
    # the core's cut face (w ≈ 0) and the inside of the shell's back (w ≈ +0.49) after the cut
    assert whole[c, c] == pytest.approx(1 - 0.8 * 0.1, abs=0.04)
    assert cut[c, c] == pytest.approx(1 - 0.8 * 0.5, abs=0.04)
    assert whole[c, off] == pytest.approx(1 - 0.8 * (1 - 0.62) / 2, abs=0.04)
    assert cut[c, off] == pytest.approx(1 - 0.8 * (1 + 0.49) / 2, abs=0.04)
    # the iso-surface render changes where the front was cut and is lit there (the interior is hit)
    s_whole = A.novel_views(vol, [0.0], mode="surface")[0]
    s_cut = A.cut_away(vol, fraction=0.5, mode="surface")
    assert s_cut.shape == (40, 40) and s_cut[c, c] > 0.2 and s_cut[c, off] > 0.05
    assert np.abs(s_cut - s_whole).max() > 0.1
    # seen from the −u side (90°), a cut of the left half (u < 0) shows the core's cut face at u = 0
    side = A.cut_away(vol, axis="u", fraction=0.5, mode="depth", angle_deg=90.0)
    assert side[c, c] == pytest.approx(1 - 0.8 * 0.5, abs=0.04)
    assert A.novel_views(vol, [90.0], mode="depth")[0][c, c] == pytest.approx(1 - 0.8 * 0.1, abs=0.04)
    # ... but seen from the +u side (−90°) the same cut changes nothing at the centre (shell in front)
    assert A.cut_away(vol, axis="u", fraction=0.5, mode="depth", angle_deg=-90.0)[c, c] == pytest.approx(
        1 - 0.8 * 0.1, abs=0.04
    )


# ----------------------------------------------------------------------------------------------
# colour


def test_colour_render_empty_dense_and_formula():
    bg = (0.2, 0.4, 0.6)
    empty = A.colour_render(np.zeros((16, 12, 12), np.float32), background=bg)
    assert empty.shape == (12, 12, 3) and empty.dtype == np.float32
    np.testing.assert_allclose(empty, np.broadcast_to(bg, (12, 12, 3)), atol=1e-7)
    dense = A.colour_render(np.ones((16, 12, 12), np.float32), background=bg)
    np.testing.assert_allclose(dense, np.broadcast_to(A.DEFAULT_TRANSFER[-1, 1:4], (12, 12, 3)), atol=1e-4)
    # one uniform density, custom table: C = c (1 − e^{−σ}) + bg e^{−σ}, whatever the depth resolution
    tf = [[0.0, 0, 0, 0, 0.0], [1.0, 1.0, 0.5, 0.0, 4.0]]
    expected = np.array([1.0, 0.5, 0.0]) * 0.5 * (1 - np.exp(-2.0)) + np.array(bg) * np.exp(-2.0)
    for d in (8, 32):
        img = A.colour_render(np.full((d, 4, 4), 0.5, np.float32), transfer=tf, background=bg)
        np.testing.assert_allclose(img[0, 0], expected, atol=1e-6)


def test_colour_render_front_to_back(skull):
    _, _, vv, _ = skull
    img = A.colour_render(vv)
    assert img.shape == (N, N, 3)
    # the opaque front hides what is behind: a red slab in front of a blue one shows red
    tf = [[0.0, 0, 0, 0, 0.0], [0.5, 1.0, 0.0, 0.0, 500.0], [1.0, 0.0, 0.0, 1.0, 500.0]]
    v = np.zeros((10, 4, 4), np.float32)
    v[2:4], v[6:8] = 0.5, 1.0
    np.testing.assert_allclose(A.colour_render(v, transfer=tf)[0, 0], [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(A.colour_render(v[::-1].copy(), transfer=tf)[0, 0], [0.0, 0.0, 1.0], atol=1e-6)
    turned = A.colour_render(vv, angle_deg=60.0, backend="cpu")
    assert turned.shape == (N, N, 3) and np.abs(turned - img).max() > 0.1


# ----------------------------------------------------------------------------------------------
# everything, and bad input


def test_write_applications(skull, tmp_path):
    _, _, vv, xray = skull
    small = vv[::2, ::2, ::2].copy()
    paths = A.write_applications(small, tmp_path / "apps", xray=xray, name="s0", n_turntable=4, backend="cpu")
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "s0_xray_input.png",
            "s0_xray_rerender.png",
            "s0_novel_surface.png",
            "s0_novel_xray.png",
            "s0_turntable.gif",
            "s0_cutaway.png",
            "s0_anaglyph.png",
            "s0_wiggle.gif",
            "s0_colour.png",
        ]
    )
    side = small.shape[2]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 100
        with Image.open(p) as im:
            if p.name == "s0_xray_input.png":
                assert im.size == xray.shape[::-1]  # the input as it is
            elif p.name == "s0_xray_rerender.png":
                assert im.size == (side, side)  # the volume's own x-ray
            elif p.suffix == ".gif":
                assert im.size == (A.DISPLAY_MIN,) * 2  # a coarse volume is shown at 128²
            else:  # montages of 128² tiles
                assert min(im.size) >= A.DISPLAY_MIN
    with Image.open(tmp_path / "apps" / "s0_anaglyph.png") as im:
        assert im.mode == "RGB" and im.size == (128, 128)
    assert _gif_info(tmp_path / "apps" / "s0_turntable.gif")[0] == 4
    # the display side is an option; the trilinear display grid shows the same object as the voxels
    p = A.write_applications(small, tmp_path / "a48", name="s", n_turntable=2, size=48, backend="cpu")
    with Image.open(tmp_path / "a48" / "s_anaglyph.png") as im:
        assert im.size == (48, 48)
    fine = A.novel_views(small, [30.0], mode="xray", size=128, steps=128, backend="cpu")[0]
    coarse = A.novel_views(small, [30.0], mode="xray", backend="cpu")[0]
    assert np.abs(cv2.resize(fine, coarse.shape[::-1], interpolation=cv2.INTER_AREA) - coarse).mean() < 0.02


def test_display_grid():
    assert A.display_grid((32, 32, 32)) == (128, 128)
    assert A.display_grid((32, 256, 256)) == (256, 256)
    assert A.display_grid((128, 64, 64), 96) == (96, 128)
    with pytest.raises(ValueError, match="size"):
        A.display_grid((8, 8, 8), 0)


def test_values_above_one_are_clipped():
    v = np.full((4, 4, 4), 1.5, np.float32)
    assert A.check_view_volume(v).max() == 1.0
    np.testing.assert_allclose(A.novel_views(v, [0.0], mode="xray")[0], -np.expm1(-10.0), atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda v: A.novel_views(v[0], [0]), "3D"),
        (lambda v: A.novel_views(np.where(v > 0.5, np.nan, v), [0]), "NaN"),
        (lambda v: A.novel_views(v - 0.1, [0]), "negative"),
        (lambda v: A.novel_views((v * 255).astype(np.uint8), [0]), "floating"),
        (lambda v: A.novel_views(v, [0], mode="mip"), "mode"),
        (lambda v: A.novel_views(v, []), "non-empty"),
        (lambda v: A.novel_views(v, [float("nan")]), "finite"),
        (lambda v: A.novel_views(v, [0], chi=-1), "chi"),
        (lambda v: A.novel_views(v, [0], size=0), "size"),
        (lambda v: A.cut_away(v, fraction=1.5), "fraction"),
        (lambda v: A.cut_away(v, axis="x"), "axis"),
        (lambda v: A.cut_away(v, axis=(0, 0, 0)), "axis"),
        (lambda v: A.anaglyph(v, baseline_deg=-2), "baseline"),
        (lambda v: A.anaglyph(v, mode="colour"), "mode"),
        (lambda v: A.colour_render(v, transfer=[[0.5, 1, 1, 1, 1], [0.2, 1, 1, 1, 1]]), "increasing"),
        (lambda v: A.colour_render(v, transfer=[[0, 1, 1, 1, 1]]), "at least 2 rows"),
        (lambda v: A.colour_render(v, transfer=[[0, 1, 1, 1, 1], [1, 2, 1, 1, 1]]), "colours"),
        (lambda v: A.colour_render(v, background=(1, 2)), "background"),
        (lambda v: A.turntable_gif(v, "/tmp/never.gif", n=0), "n must"),
        (lambda v: A.wiggle_gif(v, "/tmp/never.gif", frames=1), "frames"),
        (lambda v: A.write_applications(v, "/tmp/never_apps", name="a/b"), "name"),
    ],
)
def test_bad_inputs(call, match):
    v = _ball(8, (0, 0, 0), 0.5)
    with pytest.raises(ValueError, match=match):
        call(v)
