"""Graphics applications of a predicted view volume (paper §5.5): novel views, turntables, cut-aways,
red–cyan and wiggle stereo, and colour re-rendering with a transfer function.

Conventions
-----------
* **The view volume is a volume in camera coordinates.** A prediction ``vol`` of shape (D, H, W) is
  indexed ``vol[k, r, c]`` = (depth w, row v, column u) of its x-ray's camera (``docs/geometry.md``).
  Handed to :mod:`tomodata.render` as a volume ``vol[z, y, x]`` it has x = u, y = v, z = w and fills
  the cube [−1, 1]³ whatever its shape; the original camera is then the identity rotation, and
  ``render_xrays(vol, I, size=W, steps=D)`` is the original x-ray ``1 − exp(−chi · vol.mean(0))``.
* **Novel cameras** turn about the image-vertical v axis: :func:`rotation_about_v` gives the
  camera → view-volume rotation

      R(θ) = [[cos θ, 0, sin θ], [0, 1, 0], [−sin θ, 0, cos θ]]

  (right-handed about +v; v points down the image). The novel ray direction is (sin θ, 0, cos θ) in
  (u, v, w), the camera sits on the −u side for θ > 0, and points in front of the centre (w < 0)
  move towards +u (the right of the image) as θ grows. θ = 0 is the original view. θ = 180° looks
  from behind: its x-ray is the original x-ray mirrored left–right, ``xray[:, ::-1]`` (columns
  reversed, u → −u); rows are not flipped.
* **Render modes** (``mode=``):
    - ``"xray"``: Beer–Lambert opacity with ``chi`` (as the dataset's x-rays), rendered with
      :func:`tomodata.render.render_xrays`;
    - ``"surface"``: iso-surface shading (``model.surface.render_isosurface``, iso 0.1 with ambient
      occlusion, as the paper's figures) of the view volume resampled with
      :func:`tomodata.render.view_volumes` for the novel camera;
    - ``"depth"``: a plain first-hit depth shading of the same resampled volume (no dependencies):
      1 − 0.8·t where t ∈ [0, 1) is the normalised depth of the first crossing of ``iso`` (linearly
      interpolated between slices), 0 where the ray misses;
    - ``"colour"`` (only :func:`novel_views`, :func:`turntable_gif`, :func:`cut_away`): the
      emission–absorption render of :func:`colour_render`, (…, S, S, 3).
  Grey images are float32 in [0, 1] with rows = v and columns = u (bright = dense/near).
* Stereo: the **left eye is at θ = +baseline/2, the right eye at −baseline/2** (the left eye's camera is
  on the −u side). Red–cyan anaglyph: red = left eye, green = blue = right eye.
* GIFs (Pillow): 8-bit greyscale (colour for ``mode="colour"``), ``loop=0`` (forever), every frame
  shown for ``frame_ms`` milliseconds (turntable default 80 ms = 12.5 frames/s, wiggle default
  150 ms). Pillow merges consecutive frames whose 8-bit images are identical into one frame (their
  durations add), which only happens for degenerate input such as an empty volume.
* Densities: the volume must be 3D, floating point, finite and non-negative; values above 1 (a raw
  network output can overshoot) are clipped to 1, the dataset's density range.

Everything is deterministic (no randomness anywhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import nibabel
import nrrd
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tomodata.previews import tile, to_png, write_png
from tomodata.render import check_volume, render_xrays, view_volumes
from tomodata.views import cell_centres

from .colour import DEFAULT_TRANSFER, check_background, check_transfer, composite
from .fusion import render_view
from .surface import DEFAULT_ISO, render_isosurface

__all__ = [
    "DEFAULT_TRANSFER",
    "DISPLAY_MIN",
    "display_grid",
    "MODES",
    "rotation_about_v",
    "check_view_volume",
    "resample_view",
    "novel_views",
    "turntable_gif",
    "cut_volume",
    "cut_away",
    "stereo_pair",
    "anaglyph",
    "wiggle_gif",
    "colour_render",
    "to_uint8",
    "surface_available",
    "write_applications",
]

#: the smallest image side :func:`write_applications` and the qualitative figures render at: smaller
#: volumes (the demo's 32³) are sampled trilinearly onto a finer grid for display (data unchanged)
DISPLAY_MIN = 128

MODES = ("xray", "surface", "depth", "colour")
_GREY_MODES = ("xray", "surface", "depth")


# ---------------------------------------------------------------------------------------------
# validation and geometry


def check_view_volume(vol, *, name: str = "vol") -> np.ndarray:
    """Validate a view volume (numpy or torch) and return it as C-contiguous float32 (D, H, W) clipped
    to [0, 1] (:func:`tomodata.render.check_volume`, which it is apart from the clip above 1).

    Raises ``ValueError`` for a non-3D array, an empty axis, a non-floating dtype, NaN/inf or
    negative densities.
    """
    if hasattr(vol, "detach"):  # torch tensor
        vol = vol.detach().cpu().numpy()
    return check_volume(vol, name=name, axes="(D, H, W)", clip_above_one=True)


def _check_angle(a, name: str = "angle_deg") -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)) or not np.isfinite(a):
        raise ValueError(f"{name} must be a finite number of degrees, got {a!r}")
    return float(a)


def _check_pos_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_mode(mode: str, allowed: Sequence[str] = MODES) -> str:
    if mode not in allowed:
        raise ValueError(f"mode must be one of {tuple(allowed)}, got {mode!r}")
    return mode


def _check_chi(chi) -> float:
    if isinstance(chi, bool) or not isinstance(chi, (int, float, np.number)) or not np.isfinite(chi) or chi < 0:
        raise ValueError(f"chi must be a finite number >= 0, got {chi!r}")
    return float(chi)


def rotation_about_v(angle_deg: float) -> np.ndarray:
    """Camera → view-volume rotation (3, 3) float64 of a camera turned by ``angle_deg`` about v.

    ``R = [[c, 0, s], [0, 1, 0], [−s, 0, c]]`` with c = cos θ, s = sin θ; the novel ray direction is
    ``(s, 0, c)`` in (u, v, w). Exact for multiples of 90° (no 1e-16 residues).
    """
    a = _check_angle(angle_deg)
    q = a / 90.0
    if q == round(q):  # exact quarter turns
        k = int(round(q)) % 4
        c, s = (1.0, 0.0, -1.0, 0.0)[k], (0.0, 1.0, 0.0, -1.0)[k]
    else:
        t = np.deg2rad(a)
        c, s = float(np.cos(t)), float(np.sin(t))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=np.float64)


def _sizes(vol: np.ndarray, size, steps) -> tuple[int, int]:
    d, h, w = vol.shape
    size = w if size is None else _check_pos_int(size, "size")
    steps = max(d, h, w) if steps is None else _check_pos_int(steps, "steps")
    return size, steps


def resample_view(
    vol, angle_deg: float = 0.0, *, size: int | None = None, steps: int | None = None, backend: str = "auto"
) -> np.ndarray:
    """The view volume seen from the camera turned by ``angle_deg`` about v: (steps, S, S) float32.

    ``out[k, r, c] = vol(R(θ) @ (u_c, v_r, w_k))`` (trilinear, :func:`tomodata.render.view_volumes`).
    ``size`` defaults to W, ``steps`` to max(D, H, W). At θ = 0 with the default-equal sizes
    (S = W = H, steps = D) this is ``vol`` itself (returned without resampling).
    """
    v = check_view_volume(vol)
    size, steps = _sizes(v, size, steps)
    angle = _check_angle(angle_deg)
    if angle % 360.0 == 0.0 and v.shape == (steps, size, size):
        return v.copy()
    return view_volumes(v, rotation_about_v(angle), size=size, steps=steps, backend=backend)[0]


# ---------------------------------------------------------------------------------------------
# renderers of one (resampled) view volume along its depth


def surface_available() -> bool:
    """True: the ``surface`` mode's renderer (``model.surface.render_isosurface``) is part of the package."""
    return True


def _depth_shade(v: np.ndarray, iso: float) -> np.ndarray:
    """First-hit depth shading of a (D, H, W) volume along depth: (H, W) float32 in [0, 1]."""
    d = v.shape[0]
    above = v >= iso
    hit = above.any(axis=0)
    k = np.argmax(above, axis=0)  # first slice at/above iso (0 where none)
    h_idx, w_idx = np.indices(k.shape)
    v1 = v[k, h_idx, w_idx].astype(np.float64)
    v0 = np.where(k > 0, v[np.maximum(k - 1, 0), h_idx, w_idx], 0.0).astype(np.float64)
    # crossing between slice k-1 (below iso) and k (at/above): fractional position
    frac = np.where(v1 > v0, (iso - v0) / np.maximum(v1 - v0, 1e-12), 1.0)
    frac = np.clip(frac, 0.0, 1.0)
    t = np.clip((k - 1 + frac + 0.5) / d, 0.0, 1.0)  # slice centres at (k + 0.5)/d
    out = np.where(hit, 1.0 - 0.8 * t, 0.0)
    return out.astype(np.float32)


def _render_grey(v: np.ndarray, mode: str, *, chi: float, iso: float, surface_kwargs: dict | None) -> np.ndarray:
    """Render a view volume along its depth (k = 0 front): (H, W) float32 in [0, 1]."""
    if mode == "xray":
        return render_view(v, chi=chi).astype(np.float32)
    if mode == "depth":
        return _depth_shade(v, iso)
    if mode == "surface":
        img = np.asarray(render_isosurface(v, iso=iso, **(surface_kwargs or {})), dtype=np.float32)
        return np.clip(img, 0.0, 1.0)
    raise ValueError(f"mode {mode!r} is not a grey-level mode {_GREY_MODES}")


def _render_one(v: np.ndarray, mode: str, *, chi: float, iso: float, surface_kwargs, transfer, background):
    if mode == "colour":
        return composite(v, check_transfer(transfer), check_background(background))
    return _render_grey(v, mode, chi=chi, iso=iso, surface_kwargs=surface_kwargs)


# ---------------------------------------------------------------------------------------------
# novel views and turntables


def novel_views(
    vol,
    angles_deg,
    *,
    mode: str = "xray",
    chi: float = 10.0,
    size: int | None = None,
    steps: int | None = None,
    iso: float = DEFAULT_ISO,
    surface_kwargs: dict | None = None,
    transfer=None,
    background=(0.0, 0.0, 0.0),
    backend: str = "auto",
) -> np.ndarray:
    """Re-render ``vol`` (D, H, W) from cameras turned about v by each of ``angles_deg`` (degrees).

    Returns (n, S, S) float32 in [0, 1] (``mode="colour"``: (n, S, S, 3)); S = ``size`` (default W).
    ``"xray"`` uses :func:`tomodata.render.render_xrays` with ``steps`` samples (default max(D, H, W));
    at 0° with S = W and steps = D it equals the x-ray ``1 − exp(−chi · vol.mean(0))`` and at 180° that
    x-ray with its columns reversed. Other modes resample with :func:`resample_view` and render along
    the new depth (see the module docstring).
    """
    v = check_view_volume(vol)
    mode = _check_mode(mode)
    chi = _check_chi(chi)
    angles = np.atleast_1d(np.asarray(angles_deg, dtype=object))
    if angles.ndim != 1 or angles.size == 0:
        raise ValueError(f"angles_deg must be a non-empty 1D sequence of degrees, got {angles_deg!r}")
    checked = [_check_angle(a, "angles_deg") for a in angles]
    size, steps = _sizes(v, size, steps)
    if mode == "xray":
        rots = np.stack([rotation_about_v(a) for a in checked])
        return render_xrays(v, rots, size=size, steps=steps, chi=chi, backend=backend)
    out = [
        _render_one(
            resample_view(v, a, size=size, steps=steps, backend=backend),
            mode,
            chi=chi,
            iso=iso,
            surface_kwargs=surface_kwargs,
            transfer=transfer,
            background=background,
        )
        for a in checked
    ]
    return np.stack(out).astype(np.float32)


def to_uint8(img) -> np.ndarray:
    """[0, 1] floats → uint8 (clipped, round half to even, in float64): :func:`tomodata.previews.to_png`."""
    return to_png(np.asarray(img, dtype=np.float64))


def _save_gif(frames: np.ndarray, path, frame_ms: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = to_uint8(frames)
    imgs = [Image.fromarray(f, mode="RGB" if f.ndim == 3 else "L") for f in u8]
    imgs[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=imgs[1:],
        duration=int(frame_ms),
        loop=0,
        optimize=False,
        disposal=1,
    )
    return path


def turntable_gif(
    vol, path, *, n: int = 36, mode: str = "surface", frame_ms: int = 80, size: int | None = None, **render_kwargs
) -> Path:
    """Write an animated GIF of ``n`` views at θ_i = 360° · i/n (i = 0 … n − 1) about v; returns path.

    Loops forever, ``frame_ms`` ms per frame (default 80 ms: a turn in n · 80 ms, 2.9 s for 36).
    ``render_kwargs`` go to :func:`novel_views` (chi, steps, iso, surface_kwargs, transfer, backend).
    """
    n = _check_pos_int(n, "n")
    frame_ms = _check_pos_int(frame_ms, "frame_ms")
    frames = novel_views(vol, [360.0 * i / n for i in range(n)], mode=mode, size=size, **render_kwargs)
    return _save_gif(frames, path, frame_ms)


# ---------------------------------------------------------------------------------------------
# cut-aways


def _plane_normal(axis) -> np.ndarray:
    names = {"u": (1.0, 0.0, 0.0), "v": (0.0, 1.0, 0.0), "w": (0.0, 0.0, 1.0)}
    if isinstance(axis, str):
        if axis not in names:
            raise ValueError(f"axis must be 'u', 'v', 'w' or a 3-vector normal (u, v, w), got {axis!r}")
        return np.array(names[axis])
    n = np.asarray(axis, dtype=np.float64)
    if n.shape != (3,) or not np.isfinite(n).all() or np.linalg.norm(n) == 0:
        raise ValueError(f"axis must be 'u', 'v', 'w' or a finite non-zero 3-vector (u, v, w), got {axis!r}")
    return n / np.linalg.norm(n)


def cut_volume(vol, *, axis="w", fraction: float = 0.5) -> np.ndarray:
    """Zero the half-space ``n̂ · p < −1 + 2 · fraction`` of a view volume; returns a new (D, H, W).

    ``p = (u, v, w)`` are voxel centres in normalised camera coordinates ((2i + 1)/N − 1 per axis) and
    ``n̂`` the unit normal: ``axis="w"`` (default) removes the front ``fraction`` of the depth slices
    (those nearest the camera), ``"u"`` the left part, ``"v"`` the top part; a 3-vector gives an
    oblique plane (``fraction=0.5`` passes through the centre). ``fraction`` in [0, 1].
    """
    v = check_view_volume(vol)
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float, np.number))
        or not np.isfinite(fraction)
        or not 0.0 <= fraction <= 1.0
    ):
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
    n = _plane_normal(axis)
    d, h, w = v.shape
    cw = cell_centres(d)
    cv = cell_centres(h)
    cu = cell_centres(w)
    dist = n[2] * cw[:, None, None] + n[1] * cv[None, :, None] + n[0] * cu[None, None, :]
    keep = dist >= (-1.0 + 2.0 * float(fraction)) - 1e-9
    return np.where(keep, v, np.float32(0.0)).astype(np.float32)


def cut_away(
    vol,
    *,
    axis="w",
    fraction: float = 0.5,
    mode: str = "surface",
    angle_deg: float = 0.0,
    chi: float = 10.0,
    size: int | None = None,
    steps: int | None = None,
    iso: float = DEFAULT_ISO,
    surface_kwargs: dict | None = None,
    transfer=None,
    background=(0.0, 0.0, 0.0),
    backend: str = "auto",
) -> np.ndarray:
    """Cut away part of ``vol`` (:func:`cut_volume`) and render the rest from ``angle_deg`` about v.

    The default removes the front half of the depth and looks from the original camera, showing the
    interior at the cut (the paper's Fig. 11). Returns (S, S) float32 in [0, 1] ((S, S, 3) for
    ``mode="colour"``).
    """
    cut = cut_volume(vol, axis=axis, fraction=fraction)
    return novel_views(
        cut,
        [angle_deg],
        mode=mode,
        chi=chi,
        size=size,
        steps=steps,
        iso=iso,
        surface_kwargs=surface_kwargs,
        transfer=transfer,
        background=background,
        backend=backend,
    )[0]


# ---------------------------------------------------------------------------------------------
# stereo


def _check_baseline(b) -> float:
    b = _check_angle(b, "baseline_deg")
    if b < 0 or b >= 180:
        raise ValueError(f"baseline_deg must be in [0, 180), got {b}")
    return b


def stereo_pair(vol, *, baseline_deg: float = 4.0, mode: str = "surface", **render_kwargs) -> np.ndarray:
    """Left and right eye views (2, S, S): left at θ = +baseline/2, right at −baseline/2 (degrees)."""
    b = _check_baseline(baseline_deg)
    _check_mode(mode, _GREY_MODES)
    return novel_views(vol, [b / 2.0, -b / 2.0], mode=mode, **render_kwargs)


def anaglyph(vol, *, baseline_deg: float = 4.0, mode: str = "surface", **render_kwargs) -> np.ndarray:
    """Red–cyan anaglyph (S, S, 3) uint8: red = left eye, green = blue = right eye.

    ``baseline_deg`` is the angle between the eyes' cameras (4° ≈ a 6.5 cm eye distance at ~1 m);
    ``baseline_deg=0`` gives a grey image (all channels equal).
    """
    left, right = to_uint8(stereo_pair(vol, baseline_deg=baseline_deg, mode=mode, **render_kwargs))
    return np.stack([left, right, right], axis=-1)


def wiggle_gif(
    vol,
    path,
    *,
    baseline_deg: float = 4.0,
    frames: int = 2,
    mode: str = "surface",
    frame_ms: int = 150,
    **render_kwargs,
) -> Path:
    """Write wiggle stereo as a looping GIF; returns the path.

    ``frames`` views at angles evenly spaced from +baseline/2 (left eye) to −baseline/2 (right eye);
    ``frames=2`` alternates left, right; more frames play there and back (ping-pong, 2·frames − 2 GIF
    frames). Each frame shows ``frame_ms`` ms (default 150 ms).
    """
    b = _check_baseline(baseline_deg)
    frames = _check_pos_int(frames, "frames", minimum=2)
    frame_ms = _check_pos_int(frame_ms, "frame_ms")
    _check_mode(mode, _GREY_MODES)
    angles = np.linspace(b / 2.0, -b / 2.0, frames)
    imgs = novel_views(vol, list(angles), mode=mode, **render_kwargs)
    if frames > 2:
        imgs = np.concatenate([imgs, imgs[-2:0:-1]])
    return _save_gif(imgs, path, frame_ms)


# ---------------------------------------------------------------------------------------------
# colour re-rendering


def colour_render(
    vol,
    *,
    transfer=None,
    background=(0.0, 0.0, 0.0),
    angle_deg: float = 0.0,
    size: int | None = None,
    steps: int | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """Emission–absorption colour rendering of ``vol`` (D, H, W) → (S, S, 3) float32 in [0, 1].

    ``transfer``: (N, 5) rows ``(density, r, g, b, sigma)`` with strictly increasing densities,
    interpolated piecewise linearly (clamped beyond the ends); default :data:`DEFAULT_TRANSFER`.
    ``sigma`` is extinction per unit depth, so each of the D slices (thickness 1/D) has opacity
    ``α_k = 1 − exp(−sigma(µ_k)/D)`` and emits its colour; compositing runs front (k = 0) to back:

        C = Σ_k T_k α_k c(µ_k) + T_D · background,   T_0 = 1,  T_{k+1} = T_k (1 − α_k)

    (resolution-independent). An empty volume gives ``background``; a thick dense one the colour at
    its density. ``angle_deg`` turns the camera about v first (:func:`resample_view`).
    """
    tf = check_transfer(transfer)
    bg = check_background(background)
    v = resample_view(vol, angle_deg, size=size, steps=steps, backend=backend)
    return composite(v, tf, bg)


# ---------------------------------------------------------------------------------------------
# everything at once


def _save_png(img, path) -> Path:
    """``img`` (uint8 as it is, else [0, 1] floats through :func:`to_uint8`) as PNG at ``path``."""
    return write_png(path, img if np.asarray(img).dtype == np.uint8 else to_uint8(img))


def display_grid(vol_shape, size: int | None = None) -> tuple[int, int]:
    """(size, steps) to render a (D, H, W) view volume at for display: ``size`` (default
    max(W, :data:`DISPLAY_MIN`)) pixels a side and max(D, H, W, size) ray steps, so that a coarse
    volume's iso-surface is interpolated between its voxels instead of drawn as their blocks."""
    d, h, w = (int(n) for n in vol_shape)
    size = max(w, DISPLAY_MIN) if size is None else _check_pos_int(size, "size")
    return size, max(d, h, w, size)


def write_applications(
    vol,
    out_dir,
    *,
    xray=None,
    name: str = "sample",
    mode: str | None = None,
    chi: float = 10.0,
    n_turntable: int = 36,
    baseline_deg: float = 4.0,
    size: int | None = None,
    backend: str = "auto",
) -> list[Path]:
    """Write all applications of one view volume to ``out_dir``; returns the written paths.

    Files (``{name}_…``): ``xray_input.png`` (when ``xray`` (H, W) in [0, 1] is given),
    ``xray_rerender.png`` (original view), ``novel_{mode}.png`` (a 2×4 montage at 0°, 45°, …, 315°
    about v), ``novel_xray.png`` (the same in x-ray), ``turntable.gif`` (``n_turntable`` frames),
    ``cutaway.png`` (front half removed, original view | left half removed, seen from 60°),
    ``anaglyph.png``, ``wiggle.gif`` (``baseline_deg``), ``colour.png`` (:func:`colour_render`
    at 0° | 60°). ``mode`` is the shaded mode for novel views, cut-aways and stereo: default
    ``"surface"`` when ``model.surface`` is importable, else ``"depth"``. Images are ``size`` pixels
    a side (:func:`display_grid`: default max(W, 128)); ``xray_rerender.png`` is the volume's own
    x-ray at W².
    """
    v = check_view_volume(vol)
    if mode is None:
        mode = "surface" if surface_available() else "depth"
    _check_mode(mode, _GREY_MODES)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name:
        raise ValueError(f"name must be a non-empty file-name stem, got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size, steps = display_grid(v.shape, size)
    kw: dict[str, Any] = dict(chi=chi, size=size, steps=steps, backend=backend)
    paths: list[Path] = []
    if xray is not None:
        x = np.asarray(xray, dtype=np.float64)
        if x.ndim != 2 or not np.isfinite(x).all():
            raise ValueError(f"xray must be a finite 2D image (H, W), got shape {x.shape}")
        paths.append(_save_png(np.clip(x, 0.0, 1.0), out / f"{name}_xray_input.png"))
    paths.append(
        _save_png(
            novel_views(v, [0.0], mode="xray", chi=chi, steps=v.shape[0], backend=backend)[0],
            out / f"{name}_xray_rerender.png",
        )
    )
    angles = [45.0 * i for i in range(8)]
    paths.append(_save_png(tile(novel_views(v, angles, mode=mode, **kw), 4, pad=2), out / f"{name}_novel_{mode}.png"))
    if mode != "xray":
        xrays = tile(novel_views(v, angles, mode="xray", **kw), 4, pad=2)
        paths.append(_save_png(xrays, out / f"{name}_novel_xray.png"))
    paths.append(turntable_gif(v, out / f"{name}_turntable.gif", n=n_turntable, mode=mode, **kw))
    cuts = np.stack(
        [
            cut_away(v, axis="w", fraction=0.5, mode=mode, **kw),
            cut_away(v, axis="u", fraction=0.5, mode=mode, angle_deg=60.0, **kw),
        ]
    )
    paths.append(_save_png(tile(cuts, 2, pad=2), out / f"{name}_cutaway.png"))
    paths.append(_save_png(anaglyph(v, baseline_deg=baseline_deg, mode=mode, **kw), out / f"{name}_anaglyph.png"))
    paths.append(wiggle_gif(v, out / f"{name}_wiggle.gif", baseline_deg=baseline_deg, mode=mode, **kw))
    colours = np.stack(
        [
            colour_render(v, size=size, steps=steps, backend=backend),
            colour_render(v, angle_deg=60.0, size=size, steps=steps, backend=backend),
        ]
    )
    paths.append(_save_png(tile(colours, 2, pad=2), out / f"{name}_colour.png"))
    return paths


def read_view_volume_file(path, *, max_side: int | None = 128) -> np.ndarray:
    """A view volume written by ``tomo infer`` (NRRD or NIfTI) as (D, H, W) float32, laterally
    area-averaged so that H, W <= ``max_side`` (None keeps the full resolution)."""
    p = str(path)
    if p.endswith(".nrrd"):
        vol, _ = nrrd.read(p, index_order="C")  # file axes x, y, z → array (z, y, x) = (D, H, W)
    elif p.endswith((".nii", ".nii.gz")):
        vol = np.asarray(cast(nibabel.Nifti1Image, nibabel.load(p)).dataobj).transpose(2, 1, 0)  # (x, y, z) → (z, y, x)
    else:
        raise ValueError(f"{path}: expected a .nrrd, .nii or .nii.gz view volume")
    vol = np.ascontiguousarray(vol, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {vol.shape}")
    if max_side is not None and max(vol.shape[1:]) > max_side:
        h = max(1, round(vol.shape[1] * max_side / max(vol.shape[1:])))
        w = max(1, round(vol.shape[2] * max_side / max(vol.shape[1:])))
        vol = F.interpolate(torch.from_numpy(vol)[None], size=(h, w), mode="area")[0].numpy()
    return vol
