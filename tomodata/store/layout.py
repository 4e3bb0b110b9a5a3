"""The store's layout and conventions: spec versions, names, the recorded geometry, checksums, image
encoding, the OME-Zarr volume pyramid, and opening a store's groups and arrays (see the package
docstring, :mod:`tomodata.store`)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import zarr

from ..run_layout import STORE_NAME, store_in
from ..store_settings import IMAGE_ENCODINGS, StoreSettings
from ..views import DEFAULT_VIEW_SETS, SampleIndex

SPEC_VERSION = "tomo-dataset/2"
#: specs this code reads (tomo-dataset/1: the volume a plain array, before OME-Zarr); it writes SPEC_VERSION
READ_SPECS = ("tomo-dataset/1", SPEC_VERSION)
#: where a logical array lives inside species/<name>/, per spec (default: its own name)
_ARRAY_PATHS = {"tomo-dataset/1": {}, "tomo-dataset/2": {"volume": "volume/0"}}
#: OME-Zarr (NGFF) version of the volumes
OME_VERSION = "0.5"
#: the root attribute of a cross-validation fold view (:mod:`.folds`): its base store and fold
CV_KEY = "cross_validation"
SPECIES_REQUIRED_KEYS = ("name", "split", "source", "source_checksum", "original_shape", "spacing_mm")
ARRAY_NAMES = ("volume", "rotations", "mirrored", "views", "images")
SAMPLE_ORDER = "interleaved-mirror"
DEFAULT_IMAGES_PER_SHARD = 256
ZSTD_LEVEL = 3
ROTATION_SCHEME_ATOL = 1e-6  # stored rotations must equal hemisphere_views(n_views, seed) this closely
_UINT16_MAX = 65535

HASH_DEFINITION = (
    "sha256 of np.ascontiguousarray(a, dtype=a.dtype.newbyteorder('<')).tobytes(), where a is the "
    "whole array as stored and decoded by zarr (stored dtype and shape, C order, little endian; "
    "images as their stored uint16/float16 values, bool as one byte 0/1)"
)

GEOMETRY = {
    "volume": (
        "vol[z, y, x], C order, float32 linear density mu in [0, 1] (0 = air). Along an axis of N "
        "voxels, voxel centre i sits at c(i) = (2i + 1)/N - 1, so the volume fills the cube [-1, 1]^3 "
        "in (x, y, z); trilinear between centres, falling linearly to 0 between the outermost centres and "
        "the faces (zero padding, as torch grid_sample with align_corners=False, padding_mode='zeros'), "
        "mu = 0 outside the cube. The specimen is scaled "
        "isotropically (physical spacing honoured) and centred inside the ball of radius 1."
    ),
    "camera": (
        "orthographic. A view is a rotation R (3x3, det +1) mapping camera coordinates (u, v, w) to "
        "volume coordinates (x, y, z): p = R @ (u, v, w); rotations[i][a, b] = R_ab (row a: volume "
        "axis x/y/z, column b: camera axis u/v/w). Third column = ray direction d, d_z >= 0."
    ),
    "pixels": "pixel [r, c] of an S x S image sits at u = (2c + 1)/S - 1, v = (2r + 1)/S - 1",
    "image_formation": (
        "Beer-Lambert, absorption only: samples at w_k = (2k + 1)/steps - 1, k = 0..steps-1; "
        "opacity = 1 - exp(-chi * (1/steps) * sum_k mu(R @ (u, v, w_k))); linear, no gamma"
    ),
    "view_volume": (
        "view[k, r, c] = mu(R @ (u_c, v_r, w_k)), shape (steps, S', S'); derived on the fly from "
        "volume + rotation (tomodata.render.view_volumes), not stored"
    ),
    "mirroring": (
        "sample 2i = view i; sample 2i + 1 = view i mirrored: image rows reversed (v -> -v), "
        "img[::-1, :], and view-volume rows reversed, view[:, ::-1, :]. Stored images include the "
        "mirrored ones."
    ),
}

# root attributes that fix the data of every species: a store whose settings differ is recreated
_SETTINGS_KEYS = (
    "spec_version",
    "chi",
    "steps",
    "image_size",
    "volume_size",
    "n_views",
    "samples_per_species",
    "view_scheme",
    "sample_order",
    "geometry",
    "encoding",
    "layout",
    "checksums",
)


def _settings(attrs: dict) -> str:
    """The root attributes of :data:`_SETTINGS_KEYS` as one canonical JSON string (to compare stores);
    ``view_scheme.sets: shared`` counts as absent (the default; stores before session 30 lack it)."""
    values = {k: attrs.get(k) for k in _SETTINGS_KEYS}
    vs = values["view_scheme"]
    if isinstance(vs, dict) and vs.get("sets") == DEFAULT_VIEW_SETS:
        values["view_scheme"] = {k: v for k, v in vs.items() if k != "sets"}
    return json.dumps(values, sort_keys=True, default=str)


def _now() -> str:
    """The UTC time now, ISO 8601 to the second (the root attribute ``timestamps``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# checksums and image encoding


def array_sha256(a) -> str:
    """Hex sha256 of an array's bytes: C order, little endian, its own dtype (see module docstring)."""
    a = np.asarray(a)
    return hashlib.sha256(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _hash_update(h, a: np.ndarray) -> None:
    h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())


def encode_images(opacity, encoding: str = "uint16") -> np.ndarray:
    """Opacity (..., S, S) in [0, 1] -> stored values.

    ``uint16``: ``round(clip(x, 0, 1) * 65535)`` (computed in float64, round half to even);
    ``float16``: ``clip(x, 0, 1)`` cast to float16.
    """
    if encoding == "uint16":  # clip(x·65535, 0, 65535) equals clip(x, 0, 1)·65535: scaling is monotone
        x = np.asarray(opacity)
        buf = np.multiply(x, float(_UINT16_MAX), out=np.empty(x.shape, np.float64), dtype=np.float64)  # exact: float32
        np.clip(buf, 0.0, float(_UINT16_MAX), out=buf)
        return np.rint(buf, out=buf).astype(np.uint16)  # rint: half to even, as np.round
    if encoding == "float16":
        return np.clip(np.asarray(opacity), 0.0, 1.0).astype(np.float16)
    raise ValueError(f"image encoding must be one of {IMAGE_ENCODINGS}, got {encoding!r}")


def decode_images(values) -> np.ndarray:
    """Stored image values -> float32 opacity: uint16 / 65535, or float16 cast to float32."""
    v = np.asarray(values)
    if v.dtype == np.uint16:
        return v.astype(np.float32) / np.float32(_UINT16_MAX)
    if v.dtype == np.float16:
        return v.astype(np.float32)
    raise ValueError(f"stored images must be uint16 or float16, got {v.dtype}")


# ----------------------------------------------------------------------------------------------
# expected arrays


def _images_per_shard(attrs: dict) -> int:
    return int(attrs["layout"]["arrays"]["images"]["shards"][0])


def _expected_arrays(attrs: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """Array name -> (shape, dtype) of every species array, from the store's root attributes."""
    st = StoreSettings.from_attrs(attrs)
    n, s, v = st.n_views, st.image_size, st.volume_size
    return {
        "volume": ((v, v, v), "float32"),
        "rotations": ((n, 3, 3), "float64"),
        "mirrored": ((2 * n,), "bool"),
        "views": ((2 * n,), "int32"),
        "images": ((2 * n, s, s), st.image_encoding),
    }


def _expected_mirrored_views(n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """The arrays ``mirrored`` (2 n_views,) bool and ``views`` (2 n_views,) int32 of every species."""
    view, mirrored = SampleIndex(n_views).table()  # the convention's one home
    return mirrored, view.astype(np.int32)


def volume_pyramid(volume: np.ndarray) -> list[np.ndarray]:
    """The OME-Zarr levels of a (V, V, V) float32 volume: itself and, for even V >= 8, its 2×2×2 mean
    (float64 sum of the eight, then float32)."""
    v = np.asarray(volume, np.float32)
    V = v.shape[0]
    if V % 2 or V < 8:
        return [v]
    h = V // 2
    return [v, v.astype(np.float64).reshape(h, 2, h, 2, h, 2).mean(axis=(1, 3, 5)).astype(np.float32)]


def ome_multiscales(name: str, volume_size: int, voxel_mm: float | None) -> dict:
    """The ``ome`` attribute (OME-Zarr 0.5 ``multiscales``) of a species' volume group: axes z, y, x
    of type space; unit millimetre with the specimen's voxel size where ingest recorded it, else no
    unit and the voxel as the unit (scale 1 at level 0, 2 at level 1: OME-NGFF 0.5 requires the scale,
    where no physical size is known, to be the factor between a level and level 0); translations put
    the cube's centre at 0 (voxel centre i of a level with voxel size h at (i + 1/2)·h − V·h0/2). The
    coordinates are those of ``tomo export --volumes`` (tomodata.volume_files), oriented."""
    h0 = float(voxel_mm) if voxel_mm else 1.0
    unit = (
        "millimetre (the specimen's scale at ingest)"
        if voxel_mm
        else "voxel of level 0 (no physical scale recorded; the normalised cube [-1, 1]^3 is these "
        "coordinates times 2/V)"
    )
    return _multiscales(name, volume_size, h0, "millimeter" if voxel_mm else None, unit)


def _ome_multiscales_normalised(name: str, volume_size: int) -> dict:
    """The ``ome`` attribute that stores written before :func:`ome_multiscales` followed the OME-NGFF
    scale rule gave a species without a recorded voxel size: the normalised cube's voxel size 2/V
    without a unit (read and validated, with a warning; never written)."""
    unit = "normalised: the cube [-1, 1]^3 (no physical scale recorded)"
    return _multiscales(name, volume_size, 2.0 / volume_size, None, unit)


def _multiscales(name: str, volume_size: int, h0: float, axis_unit: str | None, unit_text: str) -> dict:
    """``multiscales`` with level-0 voxel size ``h0`` (in ``axis_unit``, or none), centred at 0."""
    half = volume_size * h0 / 2.0
    axes = [{"name": a, "type": "space", **({"unit": axis_unit} if axis_unit else {})} for a in "zyx"]
    levels = 2 if volume_size % 2 == 0 and volume_size >= 8 else 1
    datasets = []
    for k in range(levels):
        h = h0 * 2**k
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [h] * 3},
                    {"type": "translation", "translation": [h / 2 - half] * 3},
                ],
            }
        )
    return {
        "version": OME_VERSION,
        "multiscales": [
            {
                "name": name,
                "axes": axes,
                "datasets": datasets,
                "type": "mean",
                "metadata": {
                    "description": "linear density mu in [0, 1], vol[z, y, x]; level 1 = 2x2x2 mean of level 0",
                    "unit": unit_text,
                },
            }
        ],
    }


def _voxel_mm(entry: dict) -> float | None:
    """The specimen's voxel size in mm that ingest recorded (``fit.voxel_mm``), or None."""
    fit = entry.get("fit")
    v = fit.get("voxel_mm") if isinstance(fit, dict) else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0 else None


# ----------------------------------------------------------------------------------------------
# opening


#: zarr's access modes (read, read/write, append, create or replace, create new)
_Mode = Literal["r", "r+", "a", "w", "w-"]


def _open_root(path, mode: _Mode = "r"):
    return zarr.open_group(str(path), mode=mode, use_consolidated=False, zarr_format=3)


def _open_store_root(path, *, write: bool = False):
    """The root group of a dataset store with the store's attributes checked; ValueError naming the
    path and what to do where it is missing, is not a store, or is of a spec this code does not read
    (``write``: not the one it writes)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(
            f"{p}: no such dataset store (the workflow's store_create rule or `tomo build-demo` makes one)"
        )
    if not (p / "zarr.json").is_file():
        inner = store_in(p)  # p holds no zarr.json: the store inside it, if any
        hint = f"; the store in it is {inner}" if inner else ""
        raise ValueError(
            f"{p} exists but is not a dataset store (no zarr.json in it; a store is the folder that "
            f"holds zarr.json and species/, e.g. results/RUN/{STORE_NAME}){hint}"
        )
    try:
        root = _open_root(p, "r")
        attrs = root.attrs.asdict()
    except Exception as e:  # noqa: BLE001 - report any failure to open as a clear error
        raise ValueError(f"{p} is not a readable dataset store: {type(e).__name__}: {e}") from None
    if attrs.get("spec_version") not in ((SPEC_VERSION,) if write else READ_SPECS):
        sw = attrs.get("software") if isinstance(attrs.get("software"), dict) else {}
        made = sw.get("tomodata", "an unknown version")
        raise ValueError(
            f"{p}: a store of spec {attrs.get('spec_version')!r} (written by tomodata {made}); this code "
            f"{'writes' if write else 'reads'} {SPEC_VERSION if write else ' and '.join(map(repr, READ_SPECS))}: "
            "rebuild it (delete it and rerun snakemake, which renders it again) "
            "or read it with the version that wrote it"
        )
    check_fold_view(p, attrs, write=write)
    return root, attrs


def check_store(path, *, write: bool = False) -> dict:
    """The root attributes of the dataset store at ``path``; ValueError naming the path and what to do
    where it is missing, is not a store, or is of a spec this code does not read (``write``: not the
    one it writes, e.g. a cross-validation fold's view)."""
    return _open_store_root(path, write=write)[1]


def _root_json(store) -> dict:
    """The root zarr.json of ``store`` as JSON (ValueError naming the store where it cannot be read)."""
    try:
        return json.loads((Path(store) / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{store}: not a readable dataset store ({type(e).__name__}: {e})") from None


def check_fold_view(view, attrs: dict, *, write: bool = False) -> None:
    """ValueError where ``attrs`` (the root attributes of ``view``) are a fold view's and it is opened
    for writing, its base is gone, or its base's completion record (species and checksums) changed since."""
    cv = attrs.get(CV_KEY)
    if not cv:
        return
    base = (Path(view) / cv["base"]).resolve()
    if write:
        raise ValueError(f"{view} is a read-only fold view of {base}: write to that store instead")
    if not (Path(view) / "species").is_dir():
        raise ValueError(f"{view}: fold view whose base store {base} is gone: make the view again (tomo cv-view)")
    try:
        now = (json.loads((base / "zarr.json").read_text(encoding="utf-8")).get("attributes") or {}).get("completion")
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{view}: fold view whose base store {base} cannot be read ({e}): make the view again"
        ) from None
    if now != cv.get("base_completion"):
        raise ValueError(
            f"{view}: the base store {base} was finalised again after this fold view was made (its species "
            "may have changed): make the view again (tomo cv-view; the workflow's cv_view rule does)"
        )


def array_subpath(spec: str, array: str) -> str:
    """Where the logical array ``array`` lives inside ``species/<name>/`` in a store of ``spec``
    (``volume/0`` for the volume of tomo-dataset/2, ``volume`` of tomo-dataset/1, else its name)."""
    return _ARRAY_PATHS.get(spec, _ARRAY_PATHS[SPEC_VERSION]).get(array, array)


def _open_array(path, name: str, array: str, mode: _Mode = "r", spec: str = SPEC_VERSION):
    """Species ``name``'s logical array ``array`` (its path inside the species group per ``spec``)."""
    sub = array_subpath(spec, array)
    return zarr.open_array(str(path), path=f"species/{name}/{sub}", mode=mode, zarr_format=3)


def _open_species_group(path, name: str, mode: _Mode = "r"):
    """The group ``species/<name>`` of the store at ``path``."""
    return zarr.open_group(str(path), path=f"species/{name}", mode=mode, zarr_format=3)
