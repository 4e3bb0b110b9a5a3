"""Checking a store (:func:`validate_store`, never raises for a broken store) and closing a build
(:func:`finalize_store`, which writes the root attribute ``completion``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..progress import progress as progress_bar
from ..store_markers import species_file_problem
from ..store_settings import IMAGE_ENCODINGS, StoreSettings, number_problems
from ..views import VIEW_SCHEME, VIEW_SETS, SampleIndex, check_rotations, mirror, view_sets_of
from .layout import (
    _SETTINGS_KEYS,
    ARRAY_NAMES,
    READ_SPECS,
    ROTATION_SCHEME_ATOL,
    SAMPLE_ORDER,
    SPEC_VERSION,
    _expected_arrays,
    _expected_mirrored_views,
    _hash_update,
    _images_per_shard,
    _now,
    _ome_multiscales_normalised,
    _open_array,
    _open_root,
    _open_species_group,
    _open_store_root,
    _voxel_mm,
    array_sha256,
    check_fold_view,
    ome_multiscales,
    volume_pyramid,
)
from .schema import _validate_species_table


@dataclass
class ValidationReport:
    """Result of :func:`validate_store`.

    ok: no errors. errors: messages, per-species ones start with ``species 'name':``.
    species_to_rebuild: species with any error (rerun their writer). warnings: non-fatal notes.
    checksums: the verified per-species, per-array sha256.
    """

    ok: bool
    errors: list[str] = field(default_factory=list)
    species_to_rebuild: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checksums: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary(self) -> str:
        head = "OK" if self.ok else f"{len(self.errors)} error(s); rebuild: {self.species_to_rebuild}"
        return "\n".join([head] + [f"  error: {e}" for e in self.errors] + [f"  warning: {w}" for w in self.warnings])


class StoreValidationError(RuntimeError):
    """Raised by :func:`finalize_store` when the store does not validate; ``.report`` holds details."""

    def __init__(self, report: ValidationReport):
        self.report = report
        shown = report.errors[:20]
        more = f"\n  ... and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        super().__init__(
            "dataset store does not validate; species to rebuild: "
            f"{report.species_to_rebuild}\n  " + "\n  ".join(shown) + more
        )


def _known_view_sets(scheme: dict) -> bool:
    """Whether ``scheme`` names known view sets (:func:`tomodata.views.view_sets_of`)."""
    try:
        view_sets_of(scheme)
    except ValueError:
        return False
    return True


def _check_root_attrs(attrs: dict) -> list[str]:
    errs = []
    need = [*_SETTINGS_KEYS, "species", "provenance"]
    missing = [k for k in need if k not in attrs]
    if missing:
        return [f"store: missing root attributes {missing}"]
    if attrs["spec_version"] not in READ_SPECS:
        errs.append(f"store: spec_version {attrs['spec_version']!r} is not one of {list(READ_SPECS)}")
    errs += [f"store: {p}" for p in number_problems(attrs)]  # the settings' own checks (store_settings)
    if errs:
        return errs
    if attrs["samples_per_species"] != 2 * attrs["n_views"]:
        errs.append("store: samples_per_species != 2 * n_views")
    vs = attrs["view_scheme"]
    if (
        not isinstance(vs, dict)
        or vs.get("name") != VIEW_SCHEME
        or not isinstance(vs.get("seed"), int)
        or not _known_view_sets(vs)
    ):
        errs.append(
            f"store: view_scheme must be {{'name': {VIEW_SCHEME!r}, 'seed': int, 'sets': one of {list(VIEW_SETS)}}}, "
            f"got {vs!r}"
        )
    if not isinstance(attrs["sample_order"], dict) or attrs["sample_order"].get("name") != SAMPLE_ORDER:
        errs.append(f"store: sample_order name must be {SAMPLE_ORDER!r}")
    try:
        if attrs["encoding"]["images"]["dtype"] not in IMAGE_ENCODINGS:
            errs.append(f"store: image encoding must be one of {IMAGE_ENCODINGS}")
        _images_per_shard(attrs)
    except (KeyError, TypeError, IndexError, ValueError):
        errs.append("store: encoding/layout attributes are malformed")
    if not isinstance(attrs["provenance"], dict) or "code_version" not in attrs["provenance"]:
        errs.append("store: provenance lacks code_version")
    try:
        _validate_species_table(attrs["species"])
    except ValueError as e:
        errs.append(f"store: species table: {e}")
    return errs


def _check_ome_volume(path, name: str, entry: dict, vol: np.ndarray, warnings: list[str]) -> list[str]:
    """Errors of a species' OME-Zarr volume group: its multiscales metadata and its level 1. The
    normalised-cube scale that stores written before gave a species without a recorded voxel size
    (:func:`~.layout._ome_multiscales_normalised`) is accepted with a note in ``warnings``."""
    try:
        g = _open_species_group(path, f"{name}/volume")
        ome = g.attrs.asdict().get("ome")
    except Exception as e:  # noqa: BLE001
        return [f"volume group is unreadable ({type(e).__name__}: {e})"]
    voxel_mm = _voxel_mm(entry)
    if voxel_mm is None and ome == _ome_multiscales_normalised(name, vol.shape[0]):
        warnings.append(
            "volume group's OME-Zarr scale is the normalised cube's 2/V (written before the scale "
            "followed OME-NGFF 0.5: without a physical size, 1 at level 0): readable; tomo store-create "
            "--update (the workflow's store_create job, when it next runs) or a new render updates it"
        )
    elif ome != ome_multiscales(name, vol.shape[0], voxel_mm):
        return ["volume group's OME-Zarr multiscales metadata is missing or differs from the layout"]
    levels = volume_pyramid(vol)
    for k in range(1, len(levels)):
        try:
            got = g[str(k)][...]
        except Exception as e:  # noqa: BLE001
            return [f"volume level {k} cannot be read/decoded: {type(e).__name__}: {e}"]
        if not np.array_equal(got, levels[k]):
            return [f"volume level {k} is not the 2x2x2 mean of level 0 (rerun this species' writer)"]
    return []


def _check_marker(attrs: dict, sattrs: dict, errs: list[str]) -> dict | None:
    """The species' completion marker if usable (else None), its problems appended to ``errs``."""
    marker = sattrs.get("complete")
    if sattrs.get("status") != "complete" or not isinstance(marker, dict):
        errs.append(f"no completion marker: the writer did not finish (status={sattrs.get('status')!r})")
        return None
    if not isinstance(marker.get("sha256"), dict) or set(marker["sha256"]) != set(ARRAY_NAMES):
        errs.append(f"completion marker lacks sha256 of the arrays {list(ARRAY_NAMES)}")
        return None
    if (
        marker.get("n_views") != attrs["n_views"]
        or marker.get("image_encoding") != attrs["encoding"]["images"]["dtype"]
    ):
        errs.append("completion marker disagrees with the store's n_views or image encoding")
    return marker


def _checked_arrays(path, name: str, attrs: dict, errs: list[str]) -> dict:
    """The species' arrays that open and have the layout's shape and dtype (problems to ``errs``)."""
    arrays = {}
    for arr, (shape, dtype) in _expected_arrays(attrs).items():
        try:
            a = _open_array(path, name, arr, "r", attrs["spec_version"])
        except Exception as e:  # noqa: BLE001
            errs.append(f"array {arr} is missing or unreadable ({type(e).__name__}: {e})")
            continue
        if a.shape != shape or str(a.dtype) != dtype:
            errs.append(f"array {arr} has shape {a.shape} dtype {a.dtype}, expected {shape} {dtype}")
            continue
        arrays[arr] = a
    return arrays


def _validate_one_species(
    path, attrs: dict, entry: dict, check_data: bool, warnings: list[str] | None = None
) -> tuple[list[str], dict | None]:
    """One species' errors and, when it has none and ``check_data``, its verified sha256 per array;
    its non-fatal notes appended to ``warnings``."""
    name = entry["name"]
    errs: list[str] = []
    try:
        sattrs = _open_species_group(path, name).attrs.asdict()
    except Exception as e:  # noqa: BLE001
        return [f"subgroup species/{name} is missing or unreadable ({type(e).__name__}: {e})"], None
    marker = _check_marker(attrs, sattrs, errs)
    arrays = _checked_arrays(path, name, attrs, errs)
    # a chunk file missing or shorter than its shard index (sizes only), in both modes: zarr reads a
    # missing one as fill values, which the data checks would report as wrong values, not as the file
    # (not for a species without its marker: pending or being written, its chunks are not there yet)
    problem = species_file_problem(path, name, attrs) if marker and len(arrays) == len(ARRAY_NAMES) else None
    if problem:
        errs.append(problem)
    if marker is None or not check_data or problem or len(arrays) != len(ARRAY_NAMES):
        return errs, None
    got = _check_data(path, attrs, entry, arrays, errs, [] if warnings is None else warnings)
    for arr, hexd in got.items():
        if hexd != marker["sha256"].get(arr):
            errs.append(f"array {arr}: sha256 of stored data does not match the completion marker")
    return errs, (dict(marker["sha256"]) if not errs else None)


def _check_data(path, attrs: dict, entry: dict, arrays: dict, errs: list[str], warnings: list[str]) -> dict[str, str]:
    """Read and check every array's data (problems to ``errs``, notes to ``warnings``); the sha256 of
    each array read."""
    st = StoreSettings.from_attrs(attrs)
    expected_mirrored, expected_views = _expected_mirrored_views(st.n_views)
    got: dict[str, str] = {}

    def read(arr):
        try:
            return arrays[arr][...]
        except Exception as e:  # noqa: BLE001
            errs.append(f"array {arr}: cannot be read/decoded (corrupt or truncated chunk?): {type(e).__name__}: {e}")
            return None

    vol = read("volume")
    if vol is not None and attrs["spec_version"] != "tomo-dataset/1":
        errs.extend(_check_ome_volume(path, entry["name"], entry, vol, warnings))
    if vol is not None:
        got["volume"] = array_sha256(vol)
        if not np.all(np.isfinite(vol)):
            errs.append("volume has NaN or inf")
        elif vol.size and (vol.min() < 0 or vol.max() > 1):
            errs.append(f"volume values outside [0, 1]: [{vol.min():.6g}, {vol.max():.6g}]")
    rot = read("rotations")
    if rot is not None:
        got["rotations"] = array_sha256(rot)
        try:
            check_rotations(rot, hemisphere=True)
            dev = float(np.abs(rot - st.species_rotations(entry["name"])).max())
            if dev > ROTATION_SCHEME_ATOL:
                errs.append(f"rotations deviate from the view scheme by {dev:.3g}")
        except ValueError as e:
            errs.append(f"rotations invalid: {e}")
    for arr, want in (("mirrored", expected_mirrored), ("views", expected_views)):
        a = read(arr)
        if a is not None:
            got[arr] = array_sha256(a)
            if not np.array_equal(a, want):
                errs.append(f"array {arr} does not follow the interleaved-mirror sample order")
    images_sha = _check_images(arrays["images"], st.samples_per_species, errs)
    if images_sha is not None:
        got["images"] = images_sha
    return got


def _check_images(img, n_samples: int, errs: list[str]) -> str | None:
    """Read the images shard by shard: float16 values in [0, 1], odd samples the mirrors of even ones
    (problems to ``errs``); the sha256 of the stored values, None if a shard cannot be read."""
    shard_n = int(img.shards[0]) if img.shards is not None else 2
    h = hashlib.sha256()
    for start in range(0, n_samples, shard_n):
        stop = min(start + shard_n, n_samples)
        try:
            block = img[start:stop]
        except Exception as e:  # noqa: BLE001
            errs.append(
                f"array images: samples {start}:{stop} cannot be read/decoded (corrupt or truncated "
                f"shard?): {type(e).__name__}: {e}"
            )
            return None
        _hash_update(h, block)
        if block.dtype == np.float16:
            if not np.all(np.isfinite(block)) or block.min() < 0 or block.max() > 1:
                errs.append(f"images {start}:{stop} hold values outside [0, 1] or NaN")
        if (stop - start) % 2 == 0:
            plain, mirrored = SampleIndex.split(block)
            same = np.all(mirrored == mirror(plain), axis=(1, 2))
            if not np.all(same):
                bad = start + SampleIndex.to_sample(int(np.argmax(~same)), True)  # block-local pair -> sample
                errs.append(f"image of sample {bad} is not the row-reversed image of sample {bad - 1}")
    return h.hexdigest()


def validate_store(
    path, *, species: list[str] | None = None, check_data: bool = True, progress: bool = False
) -> ValidationReport:
    """Check a store thoroughly; never raises for a broken store (errors go to the report).

    Checks the root attributes; for every species of the table (or of ``species``): its subgroup,
    arrays (shapes, dtypes), completion marker, and with ``check_data`` every array's data: decoded
    without error (corrupt/truncated shards are reported), sha256 equal to the marker's, volume
    finite in [0, 1], rotations valid and equal to the view scheme, mirrored/views interleaved,
    float16 images in [0, 1], odd images the row-reversed even ones.
    """
    report = ValidationReport(ok=False)
    if not Path(path).is_dir() or not (Path(path) / "zarr.json").is_file():
        try:
            _open_store_root(path)
        except ValueError as e:
            report.errors.append(f"store: {e}")
        return report
    try:
        root = _open_root(path, "r")
        attrs = root.attrs.asdict()
    except Exception as e:  # noqa: BLE001
        report.errors.append(f"store: cannot open {path}: {type(e).__name__}: {e}")
        return report
    try:
        check_fold_view(path, attrs)
    except (OSError, ValueError) as e:
        report.errors.append(f"store: {e}")
        return report
    root_errs = _check_root_attrs(attrs)
    if not root_errs:  # the species' checks build the settings: one the root checks missed is reported here
        try:
            StoreSettings.from_attrs(attrs)
        except (ValueError, TypeError, KeyError) as e:
            root_errs = [f"store settings: {e}"]
    if root_errs:
        report.errors.extend(root_errs)
        return report
    if attrs["spec_version"] != SPEC_VERSION:
        report.warnings.append(
            f"store of the older spec {attrs['spec_version']!r} (volumes are plain arrays, not "
            f"OME-Zarr): readable; rebuild it to get {SPEC_VERSION!r}"
        )
    table = attrs["species"]
    names = [e["name"] for e in table]
    if species is not None:
        unknown = [s for s in species if s not in names]
        if unknown:
            report.errors.append(f"store: unknown species {unknown}; the store's species are {names}")
        table = [e for e in table if e["name"] in species]
    for entry in progress_bar(table, enabled=progress, desc="validate", unit="species"):
        notes: list[str] = []
        errs, sums = _validate_one_species(path, attrs, entry, check_data, notes)
        report.warnings.extend(f"species {entry['name']!r}: {m}" for m in notes)
        if errs:
            report.errors.extend(f"species {entry['name']!r}: {m}" for m in errs)
            report.species_to_rebuild.append(entry["name"])
        elif sums is not None:
            report.checksums[entry["name"]] = sums
    _check_extras(root, attrs, names, report)
    report.ok = not report.errors
    return report


def _check_extras(root, attrs: dict, names: list[str], report: ValidationReport) -> None:
    """Warnings for subgroups outside the table and a stale root ``completion`` summary."""
    try:
        on_disk = sorted(root["species"].group_keys())
        extra = sorted(set(on_disk) - set(names))
        if extra:
            report.warnings.append(f"subgroups not in the species table (ignored): {extra}")
    except Exception as e:  # noqa: BLE001
        report.errors.append(f"store: cannot list species/: {type(e).__name__}: {e}")
    done = attrs.get("completion")
    if isinstance(done, dict) and isinstance(done.get("species_sha256"), dict):
        stale = [n for n, s in report.checksums.items() if done["species_sha256"].get(n) not in (None, s)]
        if stale:
            report.warnings.append(f"root 'completion' summary is stale for {stale} (rewritten after finalize)")


def finalize_store(path, *, require_ok: bool = True, progress: bool = False) -> ValidationReport:
    """Validate the store, then write the root attribute ``completion`` (run once, after all writers).

    ``completion = {"ok", "spec_version", "n_species", "complete_species", "species_to_rebuild",
    "errors", "species_sha256": {name: {array: hex}}}``; the time goes to ``timestamps.finalized``.
    With ``require_ok`` (default) a failing store raises :class:`StoreValidationError` and nothing
    is written.
    """
    _open_store_root(path, write=True)  # a fold view or a store of another spec: refused before reading it all
    report = validate_store(path, progress=progress)
    if not report.ok and require_ok:
        raise StoreValidationError(report)
    root = _open_root(path, "r+")
    attrs = root.attrs.asdict()
    attrs["completion"] = {
        "ok": report.ok,
        "spec_version": attrs.get("spec_version"),
        "n_species": len(attrs.get("species", [])),
        "complete_species": sorted(report.checksums),
        "species_to_rebuild": list(report.species_to_rebuild),
        "errors": list(report.errors),
        "species_sha256": report.checksums,
        "validated_by": f"tomodata {__version__}",
    }
    ts = dict(attrs.get("timestamps") or {})
    ts["finalized"] = _now()
    attrs["timestamps"] = ts
    root.attrs.put(attrs)
    return report
