"""Volume files: NRRD (attached or detached headers, including multi-file ``data file: <fmt> <min>
<max> <step> [<subdim>]`` and ``data file: LIST``, which pynrrd does not read), NIfTI-1/2 (nibabel's
(x, y, z) transposed to (z, y, x)) and NumPy ``.npy``/``.npz``. Values as stored (NIfTI scaled data
as float32); spacing (dz, dy, dx) in mm from the file's header where it gives all three axes."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import cast

import nibabel as nib
import nrrd
import numpy as np

from .common import Spacing, _file_spacing, _head, _refuse_text, _to_mm


def _nrrd_header_lines(p: Path) -> tuple[list[str], list[str]]:
    """Header lines up to the blank line (text), and for ``data file: LIST`` the file names after it."""
    lines: list[str] = []
    listed: list[str] = []
    in_list = False
    with open(p, "rb") as fh:
        for _ in range(100_000):
            raw = fh.readline()
            if not raw:
                break
            line = raw.decode("latin-1").rstrip("\r\n")
            if in_list:
                if line.strip():
                    listed.append(line.strip())
                continue
            if not line.strip():
                break
            lines.append(line)
            m = re.match(r"\s*data ?file\s*:=?\s*(.*)$", line, flags=re.IGNORECASE)
            if m and m.group(1).split()[:1] == ["LIST"]:
                in_list = True
    return lines, listed


def nrrd_data_names(p: Path) -> list[str]:
    """The data files a detached NRRD header (.nhdr) names, as written (relative to its folder, or
    absolute): ``data file: NAME``, a ``%d`` pattern with min max step, or ``LIST``; [] for an NRRD
    with attached data."""
    lines, listed = _nrrd_header_lines(Path(p))
    line = next((ln for ln in lines if re.match(r"\s*data ?file\s*:", ln, flags=re.IGNORECASE)), None)
    if line is None:
        return []
    value = re.split(r":=?", line, maxsplit=1)[1].split()
    if value[:1] == ["LIST"]:
        return list(listed)
    if _nrrd_multi(line):
        fmt, lo, hi, step = value[0], int(value[1]), int(value[2]), int(value[3])
        if step == 0:
            raise ValueError(f"{p}: data file step 0")
        return [fmt % i for i in range(lo, hi + (1 if step > 0 else -1), step)]
    return [re.split(r":=?", line, maxsplit=1)[1].strip()]


def _read_nrrd(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """NRRD (.nrrd attached, .nhdr detached; single, pattern or LIST data files) → C-order z, y, x."""
    head = _head(p, 8)
    if not head.startswith(b"NRRD000"):
        _refuse_text(p, "NRRD file")
        raise ValueError(f"{p}: not an NRRD file (no 'NRRD000x' magic line)")
    lines, listed = _nrrd_header_lines(p)
    data_line = next((ln for ln in lines if re.match(r"\s*data ?file\s*:", ln, flags=re.IGNORECASE)), None)
    try:
        if data_line is None or not _nrrd_multi(data_line):
            arr, header = nrrd.read(str(p), index_order="C")
        else:
            header_lines = [ln for ln in lines if ln is not data_line]
            header = nrrd.read_header(header_lines)
            arr = _nrrd_multi_read(p, header, data_line, listed)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - NRRDError, missing data file, size mismatch …
        raise ValueError(f"{p}: cannot read this NRRD ({type(exc).__name__}: {exc})") from None
    return _nrrd_squeeze(arr, header, p)


def _nrrd_multi(data_line: str) -> bool:
    value = re.split(r":=?", data_line, maxsplit=1)[1].split()
    if value[:1] == ["LIST"]:
        return True
    return len(value) in (4, 5) and all(re.fullmatch(r"-?\d+", v) for v in value[1:])


def _nrrd_multi_read(p: Path, header: dict, data_line: str, listed: list[str]) -> np.ndarray:
    value = re.split(r":=?", data_line, maxsplit=1)[1].split()
    dim = int(header["dimension"])
    sizes = [int(s) for s in header["sizes"]]
    if value[0] == "LIST":
        names = listed
        subdim = int(value[1]) if len(value) > 1 else dim - 1
    else:
        fmt, lo, hi, step = value[0], int(value[1]), int(value[2]), int(value[3])
        subdim = int(value[4]) if len(value) > 4 else dim - 1
        if step == 0:
            raise ValueError(f"{p}: data file step 0")
        stop = hi + (1 if step > 0 else -1)
        names = [fmt % i for i in range(lo, stop, step)]
    if not names:
        raise ValueError(f"{p}: the header lists no data files")
    if subdim not in (dim - 1, dim):
        raise ValueError(f"{p}: data files of dimension {subdim} (of {dim}) are not supported")
    if subdim == dim - 1 and len(names) != sizes[-1]:
        raise ValueError(f"{p}: {len(names)} data files for {sizes[-1]} slices")
    if sizes[-1] % len(names):
        raise ValueError(f"{p}: {sizes[-1]} slices do not split evenly over {len(names)} data files")
    slab = sizes[-1] // len(names)
    out = None
    for i, name in enumerate(names):
        sub = dict(header)
        sub["sizes"] = np.array(sizes[:-1] + [slab])
        sub["data file"] = name
        sub.pop("datafile", None)
        f = Path(name) if Path(name).is_absolute() else p.parent / name
        if not f.is_file():
            raise ValueError(f"{p}: data file {f} is missing")
        part = nrrd.read_data(sub, filename=str(p), index_order="C")
        if out is None:
            out = np.empty((sizes[-1],) + part.shape[1:], dtype=part.dtype)
        out[i * slab : (i + 1) * slab] = part
    assert out is not None  # names is not empty
    return out


def _nrrd_squeeze(arr: np.ndarray, header: dict, p: Path) -> tuple[np.ndarray, Spacing | None]:
    """Drop size-1 non-spatial axes; spacing (z, y, x) mm from spacings / space directions."""
    dim = int(header["dimension"])
    per_axis: list[float | None] = [None] * dim  # NRRD axis order: fastest first
    sd = header.get("space directions")
    if sd is not None:
        sd = np.asarray(sd, dtype=float)
        for i in range(dim):
            row = sd[i]
            per_axis[i] = None if not np.all(np.isfinite(row)) else float(np.linalg.norm(row))
        units = header.get("space units")
    else:
        sp = header.get("spacings")
        if sp is not None:
            for i, v in enumerate(np.asarray(sp, dtype=float)[:dim]):
                per_axis[i] = float(v) if math.isfinite(v) else None
        units = header.get("units")
    sizes = [int(s) for s in header["sizes"]]
    keep = list(range(dim)) if dim == 3 else [i for i in range(dim) if sizes[i] != 1]
    if len(keep) != 3:
        raise ValueError(f"{p}: the NRRD holds a {dim}-D array of sizes {sizes}; expected a 3-D volume")
    arr = arr.reshape([sizes[i] for i in reversed(keep)])  # C order: slowest (last NRRD axis) first
    vals = [per_axis[i] for i in keep]
    if any(v is None for v in vals):
        return arr, None
    scale = [1.0] * 3
    if units is not None:
        ulist = [str(u) for u in units]
        if sd is not None:
            ulist = ulist * 3 if len(ulist) == 1 else ulist
            conv = [_to_mm(u) if u.strip() else 1.0 for u in ulist]
            if any(c is None for c in conv) or len(set(conv)) != 1:
                warnings.warn(f"{p}: unknown space units {ulist}; spacing ignored", UserWarning, stacklevel=3)
                return arr, None
            scale = [cast(float, conv[0])] * 3
        else:
            conv = []
            for i in keep:
                u = ulist[i].strip() if i < len(ulist) else ""
                conv.append(_to_mm(u) if u else 1.0)
            if any(c is None for c in conv):
                warnings.warn(f"{p}: unknown units {ulist}; spacing ignored", UserWarning, stacklevel=3)
                return arr, None
            scale = cast(list[float], conv)  # no None left
    mm = [cast(float, v) * s for v, s in zip(vals, scale)]  # no None in vals (returned above)
    return arr, _file_spacing(mm[::-1], p, "NRRD")


def _read_nifti(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """NIfTI-1/2 → (z, y, x) = transposed nibabel (x, y, z); zooms → mm. A zero, negative or non-finite
    zoom gives no spacing (a warning; then the caller's spacing= or its 1 mm default), not nibabel's 1."""
    _refuse_text(p, "NIfTI file")
    try:
        img = cast(nib.Nifti1Image, nib.load(str(p), mmap=False))  # NIfTI-2 images are Nifti1Image subclasses
        proxy = img.dataobj
        raw_dtype = img.get_data_dtype()
        arr = np.asarray(proxy)
        # the zooms as written: nibabel's loader makes a zero pixdim 1 and a negative one positive (a
        # line on stderr), which would pass for a spacing; read this way, _file_spacing refuses them
        with img.file_map["image"].get_prepare_fileobj(mode="rb") as fh:  # a .nii holds its header
            written = type(img.header).from_fileobj(fh, check=False)
        zooms = [float(z) for z in written.get_zooms()[:3]]
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{p}: cannot read this NIfTI ({type(exc).__name__}: {exc})") from None
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise ValueError(f"{p}: the NIfTI holds an array of shape {arr.shape}; expected a 3-D volume")
    if arr.dtype == np.float64 and raw_dtype != np.float64:
        arr = arr.astype(np.float32)
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0))
    unit = img.header.get_xyzt_units()[0]
    scale = {"mm": 1.0, "unknown": 1.0, "micron": 1e-3, "meter": 1000.0}.get(unit)
    if scale is None:
        return arr, None
    return arr, _file_spacing([z * scale for z in zooms[::-1]], p, "NIfTI")


def _read_npy(p: Path) -> tuple[np.ndarray, Spacing | None]:
    """.npy (no spacing) or .npz (key ``volume`` or the only array; optional ``spacing`` of 3 mm values)."""
    _refuse_text(p, f"{p.suffix} file")
    try:
        if p.suffix.lower() != ".npz":
            return np.load(p, allow_pickle=False), None
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            arrays = [k for k in keys if k != "spacing"]
            if "volume" in keys:
                key = "volume"
            elif len(arrays) == 1:
                key = arrays[0]
            else:
                raise ValueError(f"{p}: holds arrays {keys}; name the volume 'volume'")
            arr = z[key]
            sp = _file_spacing(np.asarray(z["spacing"]).ravel(), p, ".npz") if "spacing" in keys else None
        return arr, sp
    except ValueError as exc:
        if str(p) in str(exc):
            raise
        raise ValueError(f"{p}: cannot read ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{p}: cannot read ({exc})") from None
