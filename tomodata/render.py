"""Orthographic Beer–Lambert x-rays and view-aligned volumes of a density volume.

One public function per product, backends behind them (``_render_cpu`` with numba, ``_render_cuda``
with CuPy). The math (``docs/geometry.md``):

* Volume ``vol[z, y, x]`` with N_a voxels along axis a; voxel centre ``i`` sits at the normalised
  coordinate ``(2i + 1)/N_a − 1``, so the volume fills the cube [−1, 1]³. Between centres µ is
  trilinear; between the outermost centres and the cube's faces it falls linearly towards 0 (zero
  padding, as ``torch.nn.functional.grid_sample(align_corners=False, padding_mode="zeros")``);
  outside the cube µ = 0.
* A view is a rotation ``R`` (camera → volume): ``p = R @ (u, v, w)``. Pixel ``[r, c]`` of an S×S
  image is at ``u = (2c + 1)/S − 1``, ``v = (2r + 1)/S − 1``; the ray's samples are the midpoints
  ``w_k = (2k + 1)/steps − 1``, k = 0 … steps − 1.
* Opacity (absorption only, path across the cube's depth normalised to length 1):

      opacity[r, c] = 1 − exp(−chi · (1/steps) · Σ_k µ(R @ (u_c, v_r, w_k)))

* View volume: ``view[k, r, c] = µ(R @ (u_c, v_r, w_k))``; with the image size equal to the volume
  size, ``render_xrays(...) == 1 − exp(−chi · view_volumes(...).mean(axis=1))``.

The mirrored sample of a view is ``image[::-1, :]`` and ``view_volume[:, ::-1, :]``: rendering it
again is never needed.
"""

from __future__ import annotations

import numpy as np

from . import _render_cpu, _render_cuda
from .views import cell_centres, check_rotations

__all__ = ["render_xrays", "view_volumes", "available_backends", "cuda_available", "check_volume", "resolve_backend"]

BACKENDS = ("auto", "cpu", "cuda")


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - a CuPy without a driver or device fails in many ways: then no CUDA
        return False


def available_backends() -> list[str]:
    """Backends that can run here: always ``"cpu"``, plus ``"cuda"`` with CuPy and a device."""
    return ["cpu", "cuda"] if cuda_available() else ["cpu"]


def resolve_backend(backend: str) -> str:
    """The backend ``backend`` runs on here: "auto" becomes "cuda" where CuPy sees a device, else "cpu";
    ValueError for an unknown name, RuntimeError for "cuda" without a device."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "cuda" if cuda_available() else "cpu"
    if backend == "cuda" and not cuda_available():
        raise RuntimeError(
            "backend='cuda' needs CuPy and a CUDA device: on a machine with an NVIDIA GPU install the extra "
            "of your driver's CUDA major (nvidia-smi's 'CUDA Version'): pip install -e '.[gpu-cuda12]' "
            "or '.[gpu-cuda13]'; or use backend='cpu'"
        )
    return backend


def check_volume(volume, *, name: str = "volume", axes: str = "(z, y, x)", clip_above_one: bool = False) -> np.ndarray:
    """Validate a density volume and return it as C-contiguous float32 (Z, Y, X).

    Raises ``ValueError`` for a non-3D array, an empty axis, a non-float dtype, NaN/inf, or densities
    outside [0, 1] (docs/geometry.md: linear density, 0 = air). With ``clip_above_one`` densities above 1
    (e.g. a network's output) are clipped to 1 instead, in a new array; ``axes`` names the axes in
    messages.
    """
    if not isinstance(volume, np.ndarray):
        if hasattr(volume, "__cuda_array_interface__") or type(volume).__module__.startswith("cupy"):
            raise ValueError(f"{name} must be a numpy array (pass cupy arrays through .get())")
        volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be 3D {axes}, got shape {volume.shape}")
    if min(volume.shape) < 1:
        raise ValueError(f"{name} has an empty axis: shape {volume.shape}")
    if not np.issubdtype(volume.dtype, np.floating):
        raise ValueError(
            f"{name} must hold floating-point densities in [0, 1], got dtype {volume.dtype} "
            "(convert 8-bit data with vol / 255, or use tomodata.resample.to_cube)"
        )
    vol = np.ascontiguousarray(volume, dtype=np.float32)
    if not np.isfinite(vol).all():
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = float(vol.min()), float(vol.max())
    if lo < 0.0:
        raise ValueError(f"{name} has negative densities (min {lo:.4g}); densities must be in [0, 1]")
    if clip_above_one:
        return np.minimum(vol, np.float32(1.0))  # a new array, as before
    if hi > 1.0 + 1e-6:
        raise ValueError(f"{name} has densities above 1 (max {hi:.4g}); densities must be in [0, 1]")
    return vol


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _pad(vol: np.ndarray) -> np.ndarray:
    """(Z, Y, X) → (Z + 2, Y + 2, X + 2) float32 with a zero border (the stencil's padding)."""
    return np.pad(vol, 1, mode="constant")


def _support(vol: np.ndarray):
    """Where samples can be non-zero, in padded voxel units (x, y, z order).

    Returns ``(lo, hi, ball_r2, ball_ctr, inv_scale, empty)``: the box [lo, hi] is the cube
    [0.5, N + 0.5] cut to the support's bounding box widened by the stencil (one voxel); the ball
    (centre ``ball_ctr`` in padded voxels, squared radius ``ball_r2`` in normalised units) holds every
    point within the stencil of a non-zero voxel; ``inv_scale`` = 2/N converts voxels to normalised units.
    """
    shape_xyz = np.array(vol.shape[::-1], dtype=np.float64)
    inv_scale = 2.0 / shape_xyz
    nz = vol != 0
    if not nz.any():
        zero = np.zeros(3)
        return zero, zero, 0.0, zero, inv_scale, True
    lo = np.empty(3)
    hi = np.empty(3)
    for a_xyz, axis_zyx in enumerate((2, 1, 0)):
        other = tuple(ax for ax in range(3) if ax != axis_zyx)
        idx = np.flatnonzero(nz.any(axis=other))
        lo[a_xyz] = max(0.5, float(idx[0]))  # padded index of voxel i is i + 1; stencil reaches i - 1
        hi[a_xyz] = min(shape_xyz[a_xyz] + 0.5, float(idx[-1]) + 2.0)
    # ball around the box centre, in normalised coordinates
    ctr_pad = 0.5 * (lo + hi)
    ctr_norm = (ctr_pad - 1.0 + 0.5) * inv_scale - 1.0  # padded g -> unpadded g -> normalised
    dz = (cell_centres(vol.shape[0]) - ctr_norm[2]) ** 2
    dy = (cell_centres(vol.shape[1]) - ctr_norm[1]) ** 2
    dx = (cell_centres(vol.shape[2]) - ctr_norm[0]) ** 2
    r2_max = 0.0
    for z in np.flatnonzero(nz.any(axis=(1, 2))):
        plane = nz[z]
        d2 = dz[z] + dy[:, None] + dx[None, :]
        r2_max = max(r2_max, float(d2[plane].max()))
    stencil = float(np.sqrt((inv_scale**2).sum()))
    r = np.sqrt(r2_max) + stencil * (1.0 + 1e-6)
    return lo, hi, r * r, ctr_pad, inv_scale, False


def _ray_setup(vol_shape, rotations: np.ndarray, size: int, steps: int) -> np.ndarray:
    """Per-view ray geometry in padded voxel units: (n, 4, 3) float64 rows origin, du, dv, dw (x, y, z).

    Sample (r, c, k) is at ``origin + c·du + r·dv + k·dw``; the map from normalised coordinates p to
    padded voxel coordinates is ``g = p · N/2 + N/2 + 0.5``.
    """
    n_xyz = np.array(vol_shape[::-1], dtype=np.float64)
    a = n_xyz / 2.0
    b = n_xyz / 2.0 + 0.5
    r0, r1, r2 = rotations[:, :, 0], rotations[:, :, 1], rotations[:, :, 2]
    first_uv = -1.0 + 1.0 / size
    first_w = -1.0 + 1.0 / steps
    geom = np.empty((rotations.shape[0], 4, 3), dtype=np.float64)
    geom[:, 0] = b + a * (first_uv * r0 + first_uv * r1 + first_w * r2)
    geom[:, 1] = a * r0 * (2.0 / size)
    geom[:, 2] = a * r1 * (2.0 / size)
    geom[:, 3] = a * r2 * (2.0 / steps)
    return geom


def _prepare(volume, rotations, size, steps):
    vol = check_volume(volume)
    rot = check_rotations(rotations)
    size = _check_int(size, "size")
    steps = _check_int(steps, "steps")
    lo, hi, ball_r2, ball_ctr, inv_scale, empty = _support(vol)
    geom = _ray_setup(vol.shape, rot, size, steps)
    clip = (lo, hi, float(ball_r2), ball_ctr, inv_scale)
    return vol, geom, clip, size, steps, empty


def render_xrays(
    volume, rotations, *, size: int = 256, steps: int = 128, chi: float = 10.0, backend: str = "auto"
) -> np.ndarray:
    """Orthographic Beer–Lambert x-rays of ``volume`` from each view.

    Args:
        volume: (Z, Y, X) float densities in [0, 1] (usually a 128³ cube).
        rotations: (n, 3, 3) or (3, 3) camera → volume rotations (see :mod:`tomodata.views`).
        size: image side S in pixels.
        steps: samples per ray (midpoint rule over the cube's depth).
        chi: extinction coefficient (the paper: 10).
        backend: ``"auto"`` (CUDA when available), ``"cpu"`` (numba) or ``"cuda"`` (CuPy).

    Returns:
        (n, S, S) float32 opacity ``1 − exp(−chi/steps · Σ_k µ(R @ (u_c, v_r, w_k)))``, rows = v.
        The CPU sums each ray in fixed point (samples to 2⁻²⁴: the same bits on every CPU checked),
        CUDA in float32; they agree to 1e-5 (docs/geometry.md, "Renderer backends").
    """
    if isinstance(chi, bool) or not isinstance(chi, (int, float, np.number)) or not np.isfinite(chi) or chi < 0:
        raise ValueError(f"chi must be a finite number >= 0, got {chi!r}")
    backend = resolve_backend(backend)
    vol, geom, clip, size, steps, empty = _prepare(volume, rotations, size, steps)
    if empty:
        return np.zeros((geom.shape[0], size, size), dtype=np.float32)
    if backend == "cuda":
        return _render_cuda.render(_pad(vol), geom, clip, size, steps, float(chi))
    return _render_cpu.render(vol, geom, clip, size, steps, float(chi))


def view_volumes(volume, rotations, *, size: int = 128, steps: int = 128, backend: str = "auto") -> np.ndarray:
    """The volume resampled into each view's camera frame (the network's target).

    Args:
        volume: (Z, Y, X) float densities in [0, 1].
        rotations: (n, 3, 3) or (3, 3) camera → volume rotations.
        size: side S' of each slice (rows = v, columns = u).
        steps: number of depth slices (w midpoints), front (w = −1) to back.
        backend: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        (n, steps, S', S') float32 with ``out[i, k, r, c] = µ(R_i @ (u_c, v_r, w_k))``. Memory is
        n · steps · S'² · 4 bytes (8 MiB per view at 128³): call it in batches of views.
    """
    backend = resolve_backend(backend)
    vol, geom, clip, size, steps, empty = _prepare(volume, rotations, size, steps)
    if empty:
        return np.zeros((geom.shape[0], steps, size, size), dtype=np.float32)
    if backend == "cuda":
        return _render_cuda.view_volumes(_pad(vol), geom, clip, size, steps)
    return _render_cpu.view_volumes(vol, geom, clip, size, steps)
