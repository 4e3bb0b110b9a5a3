"""Tests of the dataset store (tomodata/store/): layout, round trip, validation, concurrency."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing as mp
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr_models.v05.image import Image

from tomodata import store
from tomodata.store import write as store_write
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views

N_VIEWS, IMG, VOL, STEPS = 6, 32, 16, 16
PER_SHARD = 4  # 12 samples -> 3 shards of images per species (last one full here)


def species_table(names, split="train"):
    return [
        dict(
            name=n,
            split=split,
            source=f"phantom:{n}",
            source_checksum="sha256:" + "0" * 64,
            original_shape=[20, 21, 22],
            spacing_mm=[0.5, 0.5, 0.6],
        )
        for n in names
    ]


def make_store(path, names=("alpha", "beta"), **kw):
    args = dict(
        species=species_table(names),
        chi=10.0,
        steps=STEPS,
        image_size=IMG,
        volume_size=VOL,
        n_views=N_VIEWS,
        view_seed=0,
        provenance={"config": {"phantoms": list(names)}},
        images_per_shard=PER_SHARD,
    )
    args.update(kw)
    settings, rest = split_settings(args)
    store.create_store(path, settings, **rest)
    return path


def split_settings(kw):
    """create_store's keywords of the old form -> (StoreSettings of the settings keys, the rest)."""
    names = {f.name for f in dataclasses.fields(StoreSettings)}
    return StoreSettings(**{k: v for k, v in kw.items() if k in names}), {k: v for k, v in kw.items() if k not in names}


def species_data(name, n_views=N_VIEWS, img=IMG, vol=VOL):
    """Deterministic data from the species name (so a parent can recompute a child's data)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    volume = rng.random((vol, vol, vol), dtype=np.float32)
    volume[0, 0, 0], volume[-1, -1, -1] = 0.0, 1.0
    images = rng.random((n_views, img, img), dtype=np.float32)
    images[0, 0, :3] = [0.0, 1.0, 0.5 / 65535]  # edge values and a rounding tie
    return dict(volume=volume, rotations=hemisphere_views(n_views, seed=0), images=images)


def write(path, name, **overrides):
    data = species_data(name)
    data.update(overrides)
    return store.write_species(path, name, **data)


def assert_fails_for(report, name):
    assert not report.ok
    assert name in report.species_to_rebuild
    assert any(e.startswith(f"species {name!r}") for e in report.errors), report.errors


# ------------------------------------------------------------------------------------------------


def test_round_trip_and_mirroring(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    data = species_data("alpha")
    marker = store.write_species(path, "alpha", **data)
    assert set(marker["sha256"]) == set(store.ARRAY_NAMES)

    ds = store.open_store(path)
    assert ds.n_samples("alpha") == 2 * N_VIEWS
    np.testing.assert_array_equal(ds.volume("alpha"), data["volume"])
    np.testing.assert_array_equal(ds.rotations("alpha"), data["rotations"])
    all_imgs = ds.images("alpha", slice(None))
    assert all_imgs.shape == (2 * N_VIEWS, IMG, IMG) and all_imgs.dtype == np.float32
    tol = 0.5 / 65535 + 1e-7
    assert np.abs(all_imgs[0::2] - data["images"]).max() <= tol
    np.testing.assert_array_equal(all_imgs[1::2], all_imgs[0::2, ::-1, :])
    assert np.abs(all_imgs[1::2] - data["images"][:, ::-1, :]).max() <= tol
    assert all_imgs[0, 0, 0] == 0.0 and all_imgs[0, 0, 1] == 1.0
    np.testing.assert_array_equal(ds.images("alpha", [5, 2, 9]), all_imgs[[5, 2, 9]])

    for i in (0, 1, 7):
        s = ds.sample("alpha", i, with_volume=False)
        assert s.view == i // 2 and s.mirrored == bool(i % 2)
        assert s.species == "alpha" and s.split == "train" and s.sample == i and s.view_volume is None
        np.testing.assert_array_equal(s.image, all_imgs[i])

    zm = zarr.open_array(str(path), path="species/alpha/mirrored", mode="r")[...]
    zv = zarr.open_array(str(path), path="species/alpha/views", mode="r")[...]
    np.testing.assert_array_equal(zm, np.arange(12) % 2 == 1)
    np.testing.assert_array_equal(zv, np.arange(12) // 2)
    assert ds.status("alpha") == "complete" and ds.status("beta") == "pending"
    assert ds.species_names(complete_only=True) == ["alpha"]
    with pytest.raises(ValueError, match="unknown species"):
        ds.volume("gamma")


def test_float16_encoding(tmp_path):
    path = make_store(tmp_path / "ds.zarr", names=("alpha",), image_encoding="float16")
    data = species_data("alpha")
    store.write_species(path, "alpha", **data)
    ds = store.open_store(path)
    assert ds.attrs["encoding"]["images"]["dtype"] == "float16"
    imgs = ds.images("alpha", slice(None))
    np.testing.assert_array_equal(imgs[0::2], data["images"].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(imgs[1::2], imgs[0::2, ::-1, :])
    assert store.validate_store(path).ok


def test_sample_view_volume_matches_renderer(tmp_path):
    render = pytest.importorskip("tomodata.render")
    path = make_store(tmp_path / "ds.zarr", names=("alpha",), steps=VOL)
    data = species_data("alpha")
    data["images"] = render.render_xrays(
        data["volume"], data["rotations"], size=IMG, steps=VOL, chi=10.0, backend="cpu"
    )
    store.write_species(path, "alpha", **data)
    ds = store.open_store(path)
    even = ds.sample("alpha", 4, backend="cpu")
    odd = ds.sample("alpha", 5, backend="cpu")
    want = render.view_volumes(data["volume"], data["rotations"][2:3], size=VOL, steps=VOL, backend="cpu")[0]
    assert even.view_volume.shape == (VOL, VOL, VOL) and even.view_volume.dtype == np.float32
    np.testing.assert_array_equal(even.view_volume, want)
    np.testing.assert_array_equal(odd.view_volume, want[:, ::-1, :])
    assert odd.view_volume.flags.c_contiguous
    # x-ray of the view volume at the image resolution agrees with the stored image, mirror included
    big = ds.sample("alpha", 5, view_size=IMG, backend="cpu")
    assert big.view_volume.shape == (VOL, IMG, IMG)
    xray = 1.0 - np.exp(-10.0 * big.view_volume.mean(axis=0))
    assert np.abs(xray - odd.image).max() < 1e-4


def test_attributes_describe_the_data(tmp_path):
    path = make_store(tmp_path / "ds.zarr", names=("alpha", "beta"))
    attrs = json.loads((Path(path) / "zarr.json").read_text())["attributes"]  # plain JSON, no code
    assert attrs["spec_version"] == store.SPEC_VERSION
    assert (attrs["chi"], attrs["steps"], attrs["image_size"], attrs["volume_size"]) == (10.0, STEPS, IMG, VOL)
    assert attrs["n_views"] == N_VIEWS and attrs["samples_per_species"] == 2 * N_VIEWS
    assert attrs["view_scheme"]["name"] == "fibonacci-jitter-v1" and attrs["view_scheme"]["seed"] == 0
    assert attrs["sample_order"]["name"] == "interleaved-mirror"
    assert {"volume", "camera", "pixels", "image_formation", "view_volume", "mirroring"} <= set(attrs["geometry"])
    assert attrs["encoding"]["images"]["dtype"] == "uint16" and "65535" in attrs["encoding"]["images"]["decode"]
    assert attrs["encoding"]["volume"]["dtype"] == "float32"
    assert [s["name"] for s in attrs["species"]] == ["alpha", "beta"]
    assert attrs["species"][0] == species_table(["alpha"])[0] | {"spacing_mm": [0.5, 0.5, 0.6]}
    assert attrs["splits"]["train"] == ["alpha", "beta"] and attrs["splits"]["val"] == []
    assert attrs["provenance"]["code_version"] == __import__("tomodata").__version__
    assert attrs["provenance"]["config"] == {"config": {"phantoms": ["alpha", "beta"]}}
    assert "created" in attrs["timestamps"]
    assert not any("created" in json.dumps(attrs[k]) for k in attrs if k != "timestamps")
    assert attrs["checksums"]["algorithm"] == "sha256"
    lay = attrs["layout"]["arrays"]["images"]
    assert lay["chunks"] == [1, IMG, IMG] and lay["shards"] == [PER_SHARD, IMG, IMG]
    # the arrays exist up front with the declared shapes, chunks, shards and zstd
    for name in ("alpha", "beta"):
        meta = json.loads((Path(path) / "species" / name / "images" / "zarr.json").read_text())
        assert meta["shape"] == [2 * N_VIEWS, IMG, IMG] and meta["data_type"] == "uint16"
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [PER_SHARD, IMG, IMG]
        shard = meta["codecs"][0]
        assert shard["name"] == "sharding_indexed"
        assert shard["configuration"]["chunk_shape"] == [1, IMG, IMG]
        assert [c["name"] for c in shard["configuration"]["codecs"]] == ["bytes", "zstd"]
        for arr, shape in (("volume", [VOL] * 3), ("rotations", [N_VIEWS, 3, 3]), ("mirrored", [12]), ("views", [12])):
            where = attrs["layout"]["arrays"][arr].get("path", arr)  # volume: level 0 of its OME-Zarr group
            m = json.loads((Path(path) / "species" / name / where / "zarr.json").read_text())
            assert m["shape"] == shape
            assert m["codecs"][-1]["name"] == "zstd"
    # default shard: all of a species' samples when fewer than 256
    p2 = make_store(tmp_path / "d2.zarr", images_per_shard=256)
    assert store.open_store(p2).attrs["layout"]["arrays"]["images"]["shards"] == [12, IMG, IMG]


def test_validate_passes_then_finalize(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    marker_a = write(path, "alpha")
    write(path, "beta")
    report = store.validate_store(path)
    assert report.ok, report.summary()
    assert report.errors == [] and report.species_to_rebuild == []
    assert report.checksums["alpha"] == marker_a["sha256"]
    rep = store.finalize_store(path)
    assert rep.ok
    attrs = store.open_store(path).attrs
    assert attrs["completion"]["ok"] is True
    assert attrs["completion"]["complete_species"] == ["alpha", "beta"]
    assert attrs["completion"]["species_sha256"]["alpha"] == marker_a["sha256"]
    assert "finalized" in attrs["timestamps"]
    assert store.validate_store(path).ok  # the summary does not break validation


def test_finalize_refuses_incomplete_store(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    with pytest.raises(store.StoreValidationError, match="beta"):
        store.finalize_store(path)
    assert "completion" not in store.open_store(path).attrs


def test_validate_missing_species_subgroup(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    shutil.rmtree(Path(path) / "species" / "beta")
    report = store.validate_store(path)
    assert_fails_for(report, "beta")
    assert report.species_to_rebuild == ["beta"]


def test_validate_never_written_species(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    report = store.validate_store(path)
    assert_fails_for(report, "beta")
    assert report.species_to_rebuild == ["beta"]
    assert any("completion marker" in e for e in report.errors)


def test_validate_truncated_shard(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    shard = Path(path) / "species" / "beta" / "images" / "c" / "1" / "0" / "0"
    assert shard.is_file()
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.truncate(size // 2)
    report = store.validate_store(path)  # must not raise
    assert_fails_for(report, "beta")
    assert report.species_to_rebuild == ["beta"]
    assert any("images" in e for e in report.errors)


def test_validate_truncated_volume_chunk(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    chunk = Path(path) / "species" / "alpha" / "volume" / "0" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])
    report = store.validate_store(path)
    assert_fails_for(report, "alpha")
    assert report.species_to_rebuild == ["alpha"]


def test_validate_tampered_value(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    a = zarr.open_array(str(path), path="species/alpha/images", mode="r+")
    a[6, 3, 4] = (int(a[6, 3, 4]) + 1) % 65536
    report = store.validate_store(path)
    assert_fails_for(report, "alpha")
    assert report.species_to_rebuild == ["alpha"]
    assert any("sha256" in e and "images" in e for e in report.errors)
    # sample 7 is sample 6 mirrored: the pair check names it too (helper-82: untested)
    assert any("image of sample 7 is not the row-reversed image of sample 6" in e for e in report.errors), report.errors


def test_validate_volume_level_1_not_the_mean_of_level_0(tmp_path):
    """The OME-Zarr level 1 is not in the completion marker's sha256: validation recomputes it from
    level 0, the only guard on what OME viewers and exports read (helper-82: no test changed it)."""
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    v1 = zarr.open_array(str(path), path="species/alpha/volume/1", mode="r+")
    v1[0, 0, 0] = 0.987 if float(v1[0, 0, 0]) != 0.987 else 0.5
    report = store.validate_store(path, species=["alpha"])
    assert_fails_for(report, "alpha")
    assert any("level 1" in e for e in report.errors), report.errors


def test_validate_tampered_volume_checksum_only(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    v = zarr.open_array(str(path), path="species/alpha/volume/0", mode="r+")
    v[1, 2, 3] = 0.25 if float(v[1, 2, 3]) != 0.25 else 0.5  # still in range: only the checksum sees it
    report = store.validate_store(path, species=["alpha"])
    assert_fails_for(report, "alpha")
    assert any("sha256" in e and "volume" in e for e in report.errors)


def test_interrupted_writer_leaves_no_marker(tmp_path, monkeypatch):
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    assert store.validate_store(path).ok
    calls = {"n": 0}
    real = store_write._encode_block

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kw)

    monkeypatch.setattr(store_write, "_encode_block", dying)
    with pytest.raises(KeyboardInterrupt):
        write(path, "beta", images=species_data("gamma")["images"])
    report = store.validate_store(path)
    assert_fails_for(report, "beta")
    assert report.species_to_rebuild == ["beta"]
    assert store.open_store(path).status("beta") == "writing"
    monkeypatch.setattr(store_write, "_encode_block", real)
    write(path, "beta")  # a rerun repairs it
    assert store.validate_store(path).ok


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(images=np.zeros((N_VIEWS, IMG, IMG + 1), np.float32)), "images must have shape"),
        (dict(images=np.zeros((2 * N_VIEWS, IMG, IMG), np.float32)), "images must have shape"),
        (dict(images=np.full((N_VIEWS, IMG, IMG), np.nan, np.float32)), "NaN"),
        (dict(images=np.full((N_VIEWS, IMG, IMG), 1.5, np.float32)), r"\[0.0, 1.0\]"),
        (dict(images=np.zeros((N_VIEWS, IMG, IMG), np.uint16)), "floating"),
        (dict(volume=np.zeros((VOL, VOL, VOL + 1), np.float32)), "volume must have shape"),
        (dict(volume=np.full((VOL, VOL, VOL), -0.1, np.float32)), r"\[0.0, 1.0\]"),
        (dict(volume=np.full((VOL, VOL, VOL), np.inf, np.float32)), "NaN or inf"),
        (dict(rotations=np.zeros((N_VIEWS, 3, 3))), "orthonormal"),
        (dict(rotations=hemisphere_views(N_VIEWS, seed=1)), "view scheme"),
        (dict(rotations=hemisphere_views(N_VIEWS + 1)), "rotations must have shape"),
    ],
)
def test_write_species_rejects_bad_inputs(tmp_path, override, match):
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    with pytest.raises(ValueError, match=match):
        write(path, "alpha", **override)
    assert store.open_store(path).status("alpha") == "pending"  # nothing touched


def test_unknown_species_lists_known_names(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    with pytest.raises(ValueError, match=r"unknown species 'gamma'.*alpha.*beta"):
        write(path, "gamma")


@pytest.mark.parametrize(
    "species, kw, match",
    [
        (species_table(["a", "a"]), {}, "not unique"),
        (species_table(["Skull", "skull"]), {}, "not unique"),
        (species_table(["../evil"]), {}, "not safe"),
        (species_table(["a/b"]), {}, "not safe"),
        (species_table(["__a"]), {}, "not safe"),
        (species_table(["a"], split="holdout"), {}, "split"),
        ([{"name": "a", "split": "train"}], {}, "lacks required keys"),
        ([species_table(["a"])[0] | {"spacing_mm": [1, 0, 1]}], {}, "spacing_mm"),
        ([species_table(["a"])[0] | {"original_shape": [1, 2]}], {}, "original_shape"),
        ([], {}, "non-empty"),
        (species_table(["a"]), {"image_encoding": "uint8"}, "image_encoding"),
        (species_table(["a"]), {"n_views": 0}, "n_views"),
        (species_table(["a"]), {"chi": float("nan")}, "chi"),
        (species_table(["a"]), {"images_per_shard": 3}, "even"),
        (species_table(["a"]), {"provenance": {"x": float("inf")}}, "JSON"),
    ],
)
def test_create_store_rejects_bad_arguments(tmp_path, species, kw, match):
    with pytest.raises(ValueError, match=match):
        settings, rest = split_settings(kw)
        store.create_store(tmp_path / "ds.zarr", settings, species=species, **rest)
    assert not (tmp_path / "ds.zarr").exists()


def test_create_store_overwrite_rules(tmp_path):
    path = make_store(tmp_path / "ds.zarr")
    with pytest.raises(FileExistsError):
        make_store(path)
    make_store(path, names=("gamma",), overwrite=True)
    assert store.open_store(path).species_names() == ["gamma"]
    other = tmp_path / "notazarr"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        make_store(other, overwrite=True)
    assert (other / "precious.txt").exists()


def test_validate_garbage_paths(tmp_path):
    report = store.validate_store(tmp_path / "nothing")
    assert not report.ok and report.errors
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["n_views"] = 7
    report = store.validate_store(path)
    assert not report.ok and any(e.startswith("store:") for e in report.errors)


# --- several writers at once ----------------------------------------------------------------------


def _writer_process(path, name, barrier):
    barrier.wait(timeout=60)
    write(path, name)


def test_concurrent_writers_one_per_species(tmp_path):
    names = ("alpha", "beta", "gamma")
    path = make_store(tmp_path / "ds.zarr", names=names)
    root_meta = (Path(path) / "zarr.json").read_bytes()
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(names))
    procs = [ctx.Process(target=_writer_process, args=(str(path), n, barrier)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    assert (Path(path) / "zarr.json").read_bytes() == root_meta  # writers never touch the root
    report = store.validate_store(path)
    assert report.ok, report.summary()
    ds = store.open_store(path)
    for n in names:
        data = species_data(n)
        np.testing.assert_array_equal(ds.volume(n), data["volume"])
        np.testing.assert_array_equal(ds.rotations(n), data["rotations"])
        imgs = zarr.open_array(str(path), path=f"species/{n}/images", mode="r")[...]
        enc = store.encode_images(data["images"])
        np.testing.assert_array_equal(imgs[0::2], enc)
        np.testing.assert_array_equal(imgs[1::2], enc[:, ::-1, :])


# --- determinism ----------------------------------------------------------------------------------


def _species_files(root: Path, name: str) -> dict[str, bytes]:
    base = root / "species" / name
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_two_builds_are_byte_identical(tmp_path):
    builds = []
    for d in ("one", "two"):
        path = make_store(tmp_path / d / "ds.zarr")
        for n in ("beta", "alpha") if d == "one" else ("alpha", "beta"):  # order must not matter
            write(path, n)
        builds.append(Path(path))
    for n in ("alpha", "beta"):
        f1, f2 = _species_files(builds[0], n), _species_files(builds[1], n)
        assert len([k for k in f1 if "/c/" in k]) >= 5  # chunk/shard files of all arrays
        assert f1.keys() == f2.keys()
        for k in f1:
            assert f1[k] == f2[k], f"{n}/{k} differs between builds"
    a1 = json.loads((builds[0] / "zarr.json").read_text())["attributes"]
    a2 = json.loads((builds[1] / "zarr.json").read_text())["attributes"]
    a1.pop("timestamps"), a2.pop("timestamps")
    assert a1 == a2
    # and a different input changes the bytes (the comparison can fail)
    path3 = make_store(tmp_path / "three" / "ds.zarr")
    data = species_data("alpha")
    data["images"][0, 5, 5] = 0.123
    store.write_species(path3, "alpha", **data)
    assert _species_files(Path(path3), "alpha") != _species_files(builds[0], "alpha")


def test_store_pickles_for_dataloader_workers(tmp_path):
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    write(path, "alpha")
    ds = store.open_store(path)
    ds2 = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(ds2.images("alpha", 3), ds.images("alpha", 3))


# --- OME-Zarr volumes (issue #15) -----------------------------------------------------------------


def test_species_volume_is_an_ome_zarr_image(tmp_path):
    """Validated by an independent OME-Zarr library (ome-zarr-models); read as a generic reader would:
    the multiscales' datasets, shape and scale, level 1 the 2×2×2 mean of level 0."""
    table = species_table(["alpha", "beta"])
    table[0]["fit"] = {"voxel_mm": 0.25}  # recorded at ingest: millimetre
    path = make_store(tmp_path / "ds.zarr", species=table)
    write(path, "alpha")
    write(path, "beta")
    assert store.validate_store(path).ok
    for name, unit, h in (("alpha", "millimeter", 0.25), ("beta", None, 1.0)):  # beta: no scale, voxel units
        group = zarr.open_group(str(path), path=f"species/{name}/volume", mode="r")
        image = Image.from_zarr(group)  # raises unless the metadata is valid OME-Zarr 0.5
        ms = image.ome_attributes.multiscales[0]
        assert [a.name for a in ms.axes] == ["z", "y", "x"] and all(a.unit == unit for a in ms.axes)
        paths = [d.path for d in ms.datasets]
        assert paths == ["0", "1"]
        scale0 = ms.datasets[0].coordinateTransformations[0].scale
        assert list(scale0) == pytest.approx([h] * 3)
        level0 = np.asarray(group[paths[0]][...])
        np.testing.assert_array_equal(level0, species_data(name)["volume"])
        level1 = np.asarray(group[paths[1]][...])
        assert level1.shape == (VOL // 2,) * 3 and level1.dtype == np.float32
        np.testing.assert_allclose(level1, level0.reshape(8, 2, 8, 2, 8, 2).mean(axis=(1, 3, 5)), rtol=1e-6)
        # the cube's centre at 0: first voxel centre at h/2 − V·h/2
        assert ms.datasets[0].coordinateTransformations[1].translation[0] == pytest.approx(h / 2 - VOL * h / 2)
    # the x-ray stacks stay plain Zarr v3 arrays with dimension names
    images = zarr.open_array(str(path), path="species/alpha/images", mode="r")
    assert tuple(images.metadata.dimension_names) == ("sample", "row", "col")


def test_older_spec_is_read_and_named(tmp_path):
    """A tomo-dataset/1 store (the volume a plain array) is still read and validated, with a warning that
    names its spec; writing into it is refused with what to do."""
    path = make_store(tmp_path / "ds.zarr")
    write(path, "alpha")
    write(path, "beta")
    for name in ("alpha", "beta"):  # back to the v1 layout
        sp = Path(path) / "species" / name
        (sp / "volume" / "0").rename(sp / "vol0")
        shutil.rmtree(sp / "volume")
        (sp / "vol0").rename(sp / "volume")
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["spec_version"] = "tomo-dataset/1"
    report = store.validate_store(path)
    assert report.ok and any("older spec 'tomo-dataset/1'" in w for w in report.warnings), report.summary()
    np.testing.assert_array_equal(store.open_store(path).volume("alpha"), species_data("alpha")["volume"])
    with pytest.raises(ValueError, match=r"spec 'tomo-dataset/1'.*writes tomo-dataset/2: rebuild it"):
        write(path, "alpha")


def test_encode_images_is_the_documented_rounding():
    """uint16 = round_half_even(clip(x, 0, 1) · 65535) in float64, for every input kind (the encoder
    avoids float64 temporaries; its values must not move)."""

    def reference(x):
        return np.round(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * 65535).astype(np.uint16)

    ties = (np.arange(65535) + 0.5) / 65535
    cases = [ties, np.nextafter(ties, 2), np.nextafter(ties, -1), ties.astype(np.float32)]
    cases += [np.random.default_rng(3).random(100_000).astype(np.float32) * 1.4 - 0.2]
    cases += [np.float16([0.3, 1.5, -2.0]), [0.1, 1.2, -3], 0.5, np.float32(0.25), np.array(0.75)]
    for x in cases:
        got = store.encode_images(x)
        assert got.dtype == np.uint16 and np.array_equal(got, reference(x))


def test_per_species_store_checks_each_species_rotations(tmp_path):
    """A store with per-species views takes each species' own rotations, refuses another's (also the
    shared set), and validate finds a species whose stored rotations are another species'."""
    path = make_store(tmp_path / "ds.zarr", view_sets="per_species")
    st = store.open_store(path).settings
    with pytest.raises(ValueError, match=r"view scheme.*name='alpha'.*per_species"):
        write(path, "alpha")  # the shared set
    with pytest.raises(ValueError, match="view scheme"):
        write(path, "alpha", rotations=st.species_rotations("beta"))
    for name in ("alpha", "beta"):
        write(path, name, rotations=st.species_rotations(name))
    assert store.validate_store(path).ok
    rot = zarr.open_array(path / "species" / "alpha" / "rotations", mode="r+")
    rot[...] = st.species_rotations("beta")
    report = store.validate_store(path)
    assert_fails_for(report, "alpha")
    assert any("deviate from the view scheme" in e for e in report.errors), report.errors
