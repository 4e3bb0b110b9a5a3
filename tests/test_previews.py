"""The one PNG writer and image grid (tomodata.previews): pixels, colour order, layout, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from tomodata.previews import contact_grid, tile, to_png, write_png, write_previews


def test_write_png_grey_float_is_opacity_and_uint8_is_kept(tmp_path):
    img = np.linspace(-0.2, 1.2, 48, dtype=np.float32).reshape(6, 8)
    p = write_png(tmp_path / "deeper" / "a.png", img)
    assert p == tmp_path / "deeper" / "a.png"
    np.testing.assert_array_equal(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), to_png(img))
    u8 = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    np.testing.assert_array_equal(np.asarray(Image.open(write_png(tmp_path / "b.png", u8))), u8)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["b.png", "deeper"]  # no temporary left


def test_write_png_rgb_keeps_its_colour_order(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[1, 2] = 200, (10, 20, 30)  # red, one pixel of a known colour
    back = np.asarray(Image.open(write_png(tmp_path / "c.png", rgb)).convert("RGB"))
    np.testing.assert_array_equal(back, rgb)


@pytest.mark.parametrize("shape", [(3, 4, 2), (0, 4), (2, 3, 4, 3), (5,)])
def test_write_png_refuses_shapes_it_cannot_write(tmp_path, shape):
    with pytest.raises(ValueError, match=r"bad\.png.*not"):
        write_png(tmp_path / "bad.png", np.zeros(shape, np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_write_png_into_a_file_is_an_error_not_a_silent_skip(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        write_png(tmp_path / "file" / "a.png", np.zeros((2, 2), np.uint8))


def test_tile_layout_pad_border_and_short_rows():
    imgs = np.arange(1, 6, dtype=np.uint8)[:, None, None] * np.ones((5, 2, 3), np.uint8)
    g = tile(imgs, 3, pad=1, border=2)
    assert g.shape == (2 * 2 + 1 + 4, 3 * 3 + 2 + 4) and g.dtype == np.uint8
    for i in range(5):
        y, x = 2 + (i // 3) * 3, 2 + (i % 3) * 4
        assert (g[y : y + 2, x : x + 3] == i + 1).all()
    assert g.sum() == sum((i + 1) * 6 for i in range(5))  # zeros elsewhere
    assert tile(imgs[:2], 8).shape == (2, 6)  # fewer columns where there are fewer images
    rgb = np.ones((3, 2, 2, 3), np.float32)
    assert tile(rgb, 2, pad=1).shape == (5, 5, 3)


def test_contact_grid_is_ceil_sqrt_columns_of_to_png():
    imgs = np.random.default_rng(0).random((5, 3, 4)).astype(np.float32)
    g = contact_grid(imgs)
    assert g.shape == (2 * 3, 3 * 4)
    np.testing.assert_array_equal(g[3:6, 4:8], to_png(imgs[4]))
    assert (g[3:6, 8:12] == 0).all()


def test_write_previews_files_and_sheet(tmp_path):
    imgs = np.random.default_rng(1).random((3, 4, 4)).astype(np.float32)
    paths = write_previews(imgs, tmp_path / "p", prefix="s", limit=2)
    assert [p.name for p in paths] == ["s_000.png", "s_001.png", "s_sheet.png"]
    np.testing.assert_array_equal(cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED), to_png(imgs[1]))
    np.testing.assert_array_equal(cv2.imread(str(paths[2]), cv2.IMREAD_UNCHANGED), contact_grid(imgs[:2]))
