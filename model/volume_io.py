"""Volumes out: the view volume of a radiograph as NRRD or NIfTI, preview PNGs, and transactional
outputs (every file under a temporary name until the whole result is there).

**Output file and spacing** (written by pynrrd and nibabel). ``.nrrd`` (raw float32, little endian, attached
header), ``.nii`` or ``.nii.gz`` (NIfTI-1, float32), chosen by the suffix of ``out_path``. The written array is
the view volume ``vol[z, y, x]`` of shape (D, N, N): **z = depth** (the ray direction of the x-ray; its sign is
ambiguous: docs/geometry.md, "Samples and mirroring"), **y = image rows** (down), **x = image columns** (right).
The file axes are therefore (x, y, z) = (columns, rows, depth) with sizes (N, N, D). Lateral spacing: the
x-ray's pixel spacing (DICOM, or ``pixel_spacing=`` given by the caller) times ``S / N``; else 1.0 per *input*
pixel ("unit: pixel", recorded as unknown). Depth spacing: the lateral extent / D, because the view volume spans
the same [−1, 1] in depth as laterally (docs/geometry.md). The volume is centred at the origin (voxel centres at
``((2i + 1)/N − 1) · extent / 2``). NRRD: ``space directions`` diagonal, ``space origin``, ``space units`` (mm,
only when known), ``kinds: domain domain domain``, labels and ``key:=value`` lines saying the axis order; NIfTI:
diagonal qform/sform (code 1), ``pixdim``, units mm when known, ``descrip``.


**Files**. Next to ``OUT`` (stem = name without ``.nrrd``/``.nii``/``.nii.gz``): ``STEM.json`` (the
record), and with ``previews=True`` PNGs ``STEM_xray.png`` (the prepared square x-ray),
``STEM_coronal.png`` (central depth slice, the plane of the x-ray: coronal for a frontal
radiograph), ``STEM_axial.png`` (central row: depth vertical × columns), ``STEM_sagittal.png``
(central column: rows × depth horizontal), ``STEM_mip_depth.png`` (maximum along depth) and
``STEM_mip_side.png`` (maximum along the columns: rows × depth). Depth axes are drawn at the same
physical scale as the lateral ones. Densities are shown linearly on [0, max of the volume] (recorded).
Everything is written under temporary names and renamed at the end; on any error nothing is left.

"""

from __future__ import annotations

import gzip
import os
import tempfile
import uuid
from pathlib import Path

import cv2
import nibabel as nib
import nrrd
import numpy as np

from tomodata.previews import to_png
from tomodata.volume_files import nifti_image, stable_nrrd_header

from .names import PREVIEWS  # the preview names (one home: the workflow reads them too)

__all__ = ["PREVIEWS", "VOLUME_SUFFIXES", "volume_suffix", "write_volume"]

#: output formats by suffix
VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz")
#: preview images are at most this many pixels on a side
PREVIEW_MAX = 1024


def volume_suffix(path) -> str:
    """'.nrrd', '.nii' or '.nii.gz' from the name of ``path``; ValueError otherwise."""
    name = Path(path).name.lower()
    for s in (".nii.gz", ".nrrd", ".nii"):
        if name.endswith(s) and len(name) > len(s):
            return s
    raise ValueError(f"output {path}: the suffix must be one of {list(VOLUME_SUFFIXES)}")


def _stem(path: Path, suffix: str) -> str:
    return path.name[: len(path.name) - len(suffix)]


class _Mapped(np.memmap):
    """A memory map whose ``tobytes()`` is a view of the mapped bytes (no copy). pynrrd writes
    ``data.tobytes()``; with a plain array that would hold the whole volume in memory once more."""

    def tobytes(self, order="C"):  # noqa: D102 - numpy's signature
        if order in ("C", "A") and self.flags.c_contiguous:
            return np.asarray(self).data.cast("B")
        return super().tobytes(order)


def write_volume(
    path: Path, suffix: str, raw: Path, shape_dhw, spacing_zyx, origin_xyz, unit_mm: bool, extra: dict, descrip: str
) -> None:
    """Write the float32 (D, H, W) volume held raw (C order, little endian) in ``raw`` to ``path`` as
    NRRD (pynrrd: raw encoding, attached header) or NIfTI-1 (nibabel; ``.nii.gz`` gzip level 1),
    streamed from a memory map. File axes (x, y, z) = (columns, rows, depth), in both formats in the
    frame viewers give NIfTI's qform (RAS+; NRRD's ``space``), so the two files overlay; ``spacing_zyx`` (mm or
    pixels) on the diagonal, ``origin_xyz`` the first voxel's centre; ``extra``: NRRD ``key:=value``
    fields; ``descrip``: the NIfTI description (≤ 79 characters)."""
    D, H, W = (int(n) for n in shape_dhw)
    sz, sy, sx = (float(v) for v in spacing_zyx)
    vol = _Mapped(raw, dtype="<f4", mode="r", shape=(D, H, W))
    if suffix == ".nrrd":
        header = {
            "content": "single-image tomography view volume",
            # the frame NIfTI's qform implies (viewers read it as RAS+): without a space, ITK and 3D Slicer
            # take NRRD as LPS, and the two files of one prediction showed turned 180° about z (helper-73)
            "space": "right-anterior-superior",
            "space directions": np.diag([sx, sy, sz]),
            "space origin": np.asarray(origin_xyz, float),
            "kinds": ["domain", "domain", "domain"],
            "labels": ["x (image columns)", "y (image rows)", "z (depth, ray direction)"],
            "encoding": "raw",
            **({"space units": ["mm", "mm", "mm"]} if unit_mm else {}),
            **{k: str(v) for k, v in extra.items()},
        }
        nrrd.write(str(path), vol, header, index_order="C")
        stable_nrrd_header(path)  # no wall-clock time in the file: reruns are byte-identical
    else:
        aff = np.diag([sx, sy, sz, 1.0])
        aff[:3, 3] = origin_xyz
        img = nifti_image(vol.T, aff, unit_mm=unit_mm, descrip=descrip)  # (x, y, z): the same bytes, Fortran order
        with open(path, "wb") as fh:  # a file object: the temporary name's suffix is not NIfTI's
            stream = gzip.GzipFile(fileobj=fh, mode="wb", compresslevel=1, mtime=0) if suffix == ".nii.gz" else fh
            img.to_file_map({"image": nib.FileHolder(fileobj=stream)})
            if stream is not fh:
                stream.close()
    del vol


def _u8(a: np.ndarray, vmax: float) -> np.ndarray:
    return to_png(np.asarray(a, np.float64) / vmax)


def _fit(img: np.ndarray, shape_hw: tuple[int, int]) -> np.ndarray:
    """Resize a float image to (h, w) (area down, linear up), limited to PREVIEW_MAX."""
    h, w = shape_hw
    s = min(1.0, PREVIEW_MAX / max(h, w))
    h, w = max(1, int(round(h * s))), max(1, int(round(w * s)))
    if (h, w) == img.shape:
        return img
    down = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(
        np.ascontiguousarray(img, dtype=np.float32), (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR
    )


class _Outputs:
    """Files written under temporary names in the output folder, renamed on commit, removed on abort."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.token = uuid.uuid4().hex[:8]
        self.pending: list[tuple[Path, Path | None]] = []  # (temporary, final); None: scratch
        self.done: list[Path] = []

    def temp(self, final: Path) -> Path:
        t = final.with_name(f".{final.name}.{self.token}.part")
        self.pending.append((t, final))
        return t

    def scratch(self, name: str) -> Path:
        t = self.folder / f".{name}.{self.token}.part"
        self.pending.append((t, None))
        return t

    def commit(self) -> None:
        for t, final in self.pending:
            if final is not None:
                os.replace(t, final)
                self.done.append(final)
            elif t.exists():
                t.unlink()
        self.pending = []

    def abort(self) -> None:
        for t, _ in self.pending:
            try:
                t.unlink()
            except FileNotFoundError:
                pass
        for f in self.done:
            try:
                f.unlink()
            except FileNotFoundError:
                pass


# --------------------------------------------------------------------------------------------------
# the output's folder


def _check_writable(out: Path) -> None:
    """Before any work: the output's folder can be made and written (ValueError naming the path)."""
    d = out.parent
    while not d.exists() and not d.is_symlink() and d != d.parent:
        d = d.parent
    if not d.is_dir():
        raise ValueError(f"cannot write {out}: {d} is a file, not a folder")
    try:  # a probe file in the nearest folder that exists (permissions, read-only or virtual file systems)
        fd, probe = tempfile.mkstemp(prefix=".tomo-write-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"cannot write {out}: nothing can be made in {d} ({e.strerror})") from None


def _make_folder(folder: Path) -> list[Path]:
    """Make ``folder`` (and its parents); returns the folders made, innermost first."""
    created: list[Path] = []
    d = folder
    while not d.exists():
        created.append(d)
        d = d.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(created: list[Path]) -> None:
    """After a failure: remove the folders this call made, innermost first, if left empty."""
    for dd in created:
        try:
            dd.rmdir()
        except OSError:
            break
