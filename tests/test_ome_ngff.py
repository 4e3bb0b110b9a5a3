"""The "standard files" checked with independent readers: each species' OME-Zarr 0.5 volume group
(ome-zarr-models and ome-zarr-py, both in the [test] extra) against the rules of the OME-NGFF 0.5 text, and the
NIfTI / NRRD volumes of ``tomo export --volumes`` (nibabel, pynrrd, SimpleITK) against the OME
coordinates of the same volume, for a species with a recorded voxel size (millimetre) and one without.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import ome_zarr_models as models  # the [test] extra, as ome-zarr-py: a missing one fails, not skips
import ome_zarr_models.v05.image as image_mod
import pytest
import SimpleITK as sitk
import zarr
from ome_zarr import reader
from ome_zarr.io import parse_url

from tomodata.export import export_dataset
from tomodata.store import create_store, finalize_store, open_store, validate_store, write_species
from tomodata.store.layout import array_sha256, ome_multiscales
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views

N_VIEWS, IMG = 3, 8
VOXEL_MM = {"alpha": 0.25, "beta": None}  # alpha: fit.voxel_mm recorded at ingest; beta: no physical scale
#: docs/export.md: the cube's x is anterior, y inferior, z left. OME point (z, y, x) -> RAS (R, A, S)
ZYX_TO_RAS = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
#: OME-NGFF 0.5, "axes" metadata: the units a space axis may name
SPACE_UNITS = {
    "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot", "gigameter",
    "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile", "millimeter", "nanometer",
    "parsec", "petameter", "picometer", "terameter", "yard", "yoctometer", "yottameter", "zeptometer", "zettameter",
}  # fmt: skip


def _build(path: Path, volume_size: int) -> Path:
    species = []
    for i, (name, mm) in enumerate(VOXEL_MM.items(), start=1):
        e = dict(
            name=name,
            split="train" if i == 1 else "val",
            source=f"phantom:{name}",
            source_checksum=f"{i:x}" * 64,
            original_shape=[40, 30, 30],
            spacing_mm=[0.1, 0.1, 0.1],
            licence="CC0-1.0",
        )
        if mm is not None:
            e["fit"] = {"voxel_mm": mm}
        species.append(e)
    settings = StoreSettings(chi=10.0, steps=8, image_size=IMG, volume_size=volume_size, n_views=N_VIEWS, view_seed=0)
    create_store(path, settings, species=species, provenance={"command": "test", "config": {}})
    rng = np.random.default_rng(volume_size)
    for e in species:
        write_species(
            path,
            e["name"],
            volume=rng.random((volume_size,) * 3, dtype=np.float32),
            rotations=hemisphere_views(N_VIEWS, seed=0),
            images=rng.random((N_VIEWS, IMG, IMG)),
        )
    finalize_store(path)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[int, Path]:
    """Tiny finalised stores: V = 16 (two OME levels) and V = 7 (odd: one level)."""
    base = tmp_path_factory.mktemp("ome")
    return {v: _build(base / f"v{v}.zarr", v) for v in (16, 7)}


def _multiscale(store: Path, name: str) -> dict:
    return json.loads((store / "species" / name / "volume" / "zarr.json").read_text())["attributes"]["ome"]


def _ome_points(ms: dict, level: int, idx_zyx: np.ndarray) -> np.ndarray:
    """(n, 3) OME coordinates (z, y, x) of voxel centres ``idx_zyx`` of ``level``: scale, then translation."""
    p = np.asarray(idx_zyx, np.float64)
    for t in ms["datasets"][level]["coordinateTransformations"]:
        p = p * np.asarray(t["scale"]) if t["type"] == "scale" else p + np.asarray(t["translation"])
    return p


def _corners(n: int) -> np.ndarray:
    """Some voxel indices (z, y, x) of an n³ array: the corners on each axis and an asymmetric one."""
    return np.array([[0, 0, 0], [n - 1, 0, 0], [0, n - 1, 0], [0, 0, n - 1], [n - 1, n - 1, n - 1], [2, 3, 1]])


# --------------------------------------------------------------------------------------- OME-Zarr
@pytest.mark.parametrize("size", [16, 7])
def test_volume_groups_validate_with_ome_zarr_models(stores, size):
    """Each volume group is an OME-Zarr 0.5 Image by ome-zarr-models (metadata, arrays, dimension names)."""
    store = stores[size]
    for name, mm in VOXEL_MM.items():
        group = zarr.open_group(str(store), path=f"species/{name}/volume", mode="r", zarr_format=3)
        image = image_mod.Image.from_zarr(group)  # raises unless valid
        ms = image.ome_attributes.multiscales[0]
        assert image.ome_attributes.version == "0.5"
        assert [a.name for a in ms.axes] == ["z", "y", "x"] and {a.type for a in ms.axes} == {"space"}
        assert all(a.unit == ("millimeter" if mm else None) for a in ms.axes)
        paths = [d.path for d in ms.datasets]
        assert paths == (["0", "1"] if size % 2 == 0 else ["0"])
        levels = [np.asarray(group[p][...]) for p in paths]
        for p, level in zip(paths, levels, strict=True):
            assert tuple(group[p].metadata.dimension_names) == ("z", "y", "x")  # = the axes' names (0.5 MUST)
            assert level.dtype == np.float32
        if len(levels) == 2:
            h = size // 2
            mean = levels[0].astype(np.float64).reshape(h, 2, h, 2, h, 2).mean(axis=(1, 3, 5))
            np.testing.assert_allclose(levels[1], mean, rtol=1e-6)


def test_volume_groups_follow_the_multiscales_rules(stores):
    """The OME-NGFF 0.5 rules, read off its text (some are not checked by ome-zarr-models): ``ome`` in
    the group's attributes with version "0.5"; space units from the spec's list; per dataset exactly one
    scale, then at most one translation, each of length 3; paths from highest resolution down;
    name, type and metadata present (the strict schema)."""
    for store in stores.values():
        for name in VOXEL_MM:
            node = json.loads((store / "species" / name / "volume" / "zarr.json").read_text())
            assert node["node_type"] == "group" and set(node["attributes"]) == {"ome"}
            ome = node["attributes"]["ome"]
            assert ome["version"] == "0.5" and len(ome["multiscales"]) == 1
            ms = ome["multiscales"][0]
            assert {"name", "type", "metadata", "axes", "datasets"} <= set(ms)
            for ax in ms["axes"]:
                assert ax["type"] == "space" and ax.get("unit", "millimeter") in SPACE_UNITS
            shapes = []
            for ds in ms["datasets"]:
                types = [t["type"] for t in ds["coordinateTransformations"]]
                assert types in (["scale"], ["scale", "translation"])
                assert all(len(t[t["type"]]) == 3 for t in ds["coordinateTransformations"])
                shapes.append(zarr.open_array(str(store), path=f"species/{name}/volume/{ds['path']}", mode="r").shape)
            assert shapes == sorted(shapes, reverse=True)


def test_scale_is_relative_to_level_0_where_no_voxel_size_is_recorded(stores):
    """OME-NGFF 0.5: the scale is the voxel size in physical units; "if scaling information is not
    available ... the value MUST express the scaling factor between the current resolution and the
    first resolution" (1 at level 0, 2 at level 1), not the normalised cube's 2/V. With a recorded size
    it is that size in millimetre. Either way the translation puts the cube's centre at 0."""
    for size, store in stores.items():
        for name, mm in VOXEL_MM.items():
            ms = _multiscale(store, name)["multiscales"][0]
            for k, ds in enumerate(ms["datasets"]):
                scale = ds["coordinateTransformations"][0]["scale"]
                assert scale == pytest.approx([(mm or 1.0) * 2**k] * 3), (size, name, k)
                n = size // 2**k
                first, last = _ome_points(ms, k, [[0, 0, 0], [n - 1] * 3])
                np.testing.assert_allclose(first + last, 0, atol=1e-12)  # centred
                np.testing.assert_allclose(last - first, (n - 1) * np.asarray(scale))


def test_root_and_species_groups_claim_no_ome_metadata(stores):
    """The root holds several images; OME-NGFF 0.5 has no collection for that (bioformats2raw.layout,
    plate), and the store invents none: neither the root nor a species group carries ``ome``, so no
    OME-Zarr reader takes them for an image, a plate or a collection."""
    store = stores[16]
    for group in ("", "species", "species/alpha"):
        attrs = json.loads((store / group / "zarr.json").read_text())["attributes"]
        assert "ome" not in attrs and "multiscales" not in attrs and "bioformats2raw.layout" not in attrs
    with pytest.raises(RuntimeError):  # "Could not successfully validate ... against any OME-Zarr group model"
        models.open_ome_zarr(zarr.open_group(str(store), mode="r"))


def test_ome_zarr_py_reads_the_levels(stores):
    """ome-zarr-py (the reference reader; the [test] extra) finds the multiscales image and reads each
    level as the store holds it."""
    for store in stores.values():
        for name in VOXEL_MM:
            node = next(iter(reader.Reader(parse_url(str(store / "species" / name / "volume")))()))
            assert node.load(reader.Multiscales) is not None
            assert [a["name"] for a in node.metadata["axes"]] == ["z", "y", "x"]
            ours = zarr.open_group(str(store), path=f"species/{name}/volume", mode="r")
            for k, data in enumerate(node.data):
                np.testing.assert_array_equal(np.asarray(data), ours[str(k)][...])


def test_validate_accepts_the_normalised_ome_metadata_of_older_stores(tmp_path):
    """Stores written before the scale followed the rule above carry, for a species without a recorded
    voxel size, the normalised cube's scale 2/V: ``tomo validate`` still accepts them, with a warning
    naming the species; metadata of any other form stays an error."""
    store = _build(tmp_path / "old.zarr", 16)
    g = zarr.open_group(str(store), path="species/beta/volume", mode="r+", zarr_format=3)
    old = _multiscale(store, "beta")
    for k, ds in enumerate(old["multiscales"][0]["datasets"]):  # as tomodata wrote it before
        h = 2.0 / 16 * 2**k
        ds["coordinateTransformations"] = [
            {"type": "scale", "scale": [h] * 3},
            {"type": "translation", "translation": [h / 2 - 1.0] * 3},
        ]
    old["multiscales"][0]["metadata"]["unit"] = "normalised: the cube [-1, 1]^3 (no physical scale recorded)"
    g.attrs["ome"] = old
    report = validate_store(store)
    assert report.ok, report.summary()
    assert any("'beta'" in w and "2/V" in w for w in report.warnings), report.warnings
    # the workflow's store update (tomo store-create --update) keeps the species and mends the metadata
    root = zarr.open_group(str(store), mode="r", zarr_format=3).attrs.asdict()
    vols = {e["name"]: array_sha256(open_store(store).volume(e["name"])) for e in root["species"]}
    settings = StoreSettings.from_attrs(root)
    done = create_store(
        store, settings, species=root["species"], provenance={"command": "t"}, update=True, volume_sha256=vols
    )
    assert sorted(done["kept"]) == ["alpha", "beta"] and done["reset"] == []
    assert _multiscale(store, "beta") == ome_multiscales("beta", 16, None)
    report = validate_store(store)
    assert report.ok and not report.warnings, report.warnings
    old["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [0.5] * 3
    g.attrs["ome"] = old
    report = validate_store(store)
    assert not report.ok and report.species_to_rebuild == ["beta"]


# ------------------------------------------------------------------------------ NIfTI / NRRD export
@pytest.fixture(scope="module")
def exports(stores, tmp_path_factory) -> dict[tuple[int, str], Path]:
    base = tmp_path_factory.mktemp("ome-exports")
    out = {}
    for size, store in stores.items():
        for fmt in ("nifti", "nrrd"):
            out[size, fmt] = base / f"{size}-{fmt}"
            export_dataset(store, out[size, fmt], volumes=fmt)
    return out


@pytest.mark.parametrize("size", [16, 7])
def test_nifti_volumes_share_the_ome_coordinates(stores, exports, size):
    """nibabel: (x, y, z) float32 data equal to level 0; zooms = the OME level-0 scale; units mm where
    recorded (else unknown); qform = sform (code 1); each voxel centre's RAS position is the OME
    position of the same voxel after the documented orientation (x anterior, y inferior, z left)."""
    for name, mm in VOXEL_MM.items():
        vol = zarr.open_array(str(stores[size]), path=f"species/{name}/volume/0", mode="r")[...]
        ms = _multiscale(stores[size], name)["multiscales"][0]
        img = nib.load(exports[size, "nifti"] / "volumes" / f"{name}.nii.gz")
        data = np.asarray(img.dataobj)
        assert data.dtype == np.float32 and data.shape == (size,) * 3
        np.testing.assert_array_equal(data.transpose(2, 1, 0), vol)
        assert img.header.get_zooms() == pytest.approx(ms["datasets"][0]["coordinateTransformations"][0]["scale"])
        assert img.header.get_xyzt_units()[0] == ("mm" if mm else "unknown")
        assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
        np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-6)
        idx = _corners(size)
        ras = nib.affines.apply_affine(img.affine, idx[:, ::-1])  # file index (i, j, k) = (x, y, z)
        np.testing.assert_allclose(ras, _ome_points(ms, 0, idx) @ ZYX_TO_RAS.T, atol=1e-6)


@pytest.mark.parametrize("size", [16, 7])
def test_nrrd_volumes_share_the_ome_coordinates(stores, exports, size):
    """pynrrd: data equal to level 0 (C order), space right-anterior-superior, space units mm where
    recorded; space directions/origin place each voxel centre at its OME position (oriented)."""
    for name, mm in VOXEL_MM.items():
        vol = zarr.open_array(str(stores[size]), path=f"species/{name}/volume/0", mode="r")[...]
        ms = _multiscale(stores[size], name)["multiscales"][0]
        data, header = nrrd.read(str(exports[size, "nrrd"] / "volumes" / f"{name}.nrrd"), index_order="C")
        assert data.dtype == np.float32 and data.shape == (size,) * 3
        np.testing.assert_array_equal(data, vol)
        assert header["space"] == "right-anterior-superior"
        assert header.get("space units") == (["mm"] * 3 if mm else None)
        idx = _corners(size)
        ras = idx[:, ::-1] @ np.asarray(header["space directions"]) + np.asarray(header["space origin"])
        np.testing.assert_allclose(ras, _ome_points(ms, 0, idx) @ ZYX_TO_RAS.T, atol=1e-9)


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
def test_simpleitk_reads_the_volume_files_where_ome_puts_them(stores, exports, fmt):
    """SimpleITK (ITK's reader, LPS world): same array, same spacing, voxel centres at the OME positions."""
    size = 16
    lps_from_ras = np.diag([-1.0, -1.0, 1.0])
    for name in VOXEL_MM:
        vol = zarr.open_array(str(stores[size]), path=f"species/{name}/volume/0", mode="r")[...]
        ms = _multiscale(stores[size], name)["multiscales"][0]
        f = exports[size, fmt] / "volumes" / (name + (".nii.gz" if fmt == "nifti" else ".nrrd"))
        image = sitk.ReadImage(str(f))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), vol)  # sitk arrays are (k, j, i)
        scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
        assert image.GetSpacing() == pytest.approx(scale)
        idx = _corners(size)
        lps = np.array([image.TransformIndexToPhysicalPoint([int(c) for c in p]) for p in idx[:, ::-1]])
        np.testing.assert_allclose(lps, _ome_points(ms, 0, idx) @ ZYX_TO_RAS.T @ lps_from_ras, atol=1e-6)
