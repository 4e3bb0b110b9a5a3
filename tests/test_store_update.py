"""create_store(update=True) and the CLI pieces the Snakemake workflow uses: tomo store-create
--update --done, tomo store-settings, tomo cube --fetched, tomo finalize --done."""

import json
import warnings

import numpy as np
import pytest

from model.cli import main
from tomodata.ingest import load_cube, save_cube
from tomodata.species_table import _warn_split_species
from tomodata.store import array_sha256, create_store, finalize_store, open_store, validate_store, write_species
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views

N, S, V = 3, 8, 8


def entry(name, split="train"):
    return dict(
        name=name,
        split=split,
        source=f"test {name}",
        source_checksum="0" * 64,
        original_shape=[V, V, V],
        spacing_mm=[1.0, 1.0, 1.0],
    )


def volume(k):
    v = np.zeros((V, V, V), np.float32)
    v[2:6, 2:6, 2:6] = 0.1 * (k + 1)
    return v


def fill(store, name, k):
    rots = hemisphere_views(N, seed=0)
    write_species(store, name, volume=volume(k), rotations=rots, images=np.full((N, S, S), 0.1 * (k + 1), np.float32))


def make(store, names, *, splits=None, n_views=N, **kw):
    splits = splits or {}
    table = [entry(n, splits.get(n, "train")) for n in names]
    hashes = {n: array_sha256(volume(int(n[-1]))) for n in names}
    return create_store(
        store,
        StoreSettings(image_size=S, volume_size=V, steps=8, n_views=n_views),
        species=table,
        update=True,
        volume_sha256=hashes,
        **kw,
    )


def test_update_keeps_unchanged_species_and_resets_the_others(tmp_path):
    store = tmp_path / "d.zarr"
    assert make(store, ["sp0", "sp1"])["mode"] == "created"
    fill(store, "sp0", 0)
    fill(store, "sp1", 1)
    finalize_store(store)

    again = make(store, ["sp0", "sp1"], splits={"sp1": "val"})
    assert again == {"mode": "updated", "kept": ["sp0", "sp1"], "reset": [], "removed": []}
    assert validate_store(store).ok
    ds = open_store(store)
    assert ds.attrs["splits"]["val"] == ["sp1"] and "completion" not in ds.attrs
    assert ds.species_info("sp1")["split"] == "val"

    # sp1's cube changed (its volume hash differs), sp2 is new, sp0 is dropped
    table = [entry("sp1"), entry("sp2")]
    out = create_store(
        store,
        StoreSettings(image_size=S, volume_size=V, steps=8, n_views=N),
        species=table,
        update=True,
        volume_sha256={"sp1": "f" * 64, "sp2": array_sha256(volume(2))},
    )
    assert out == {"mode": "updated", "kept": [], "reset": ["sp1", "sp2"], "removed": ["sp0"]}
    report = validate_store(store)
    assert sorted(report.species_to_rebuild) == ["sp1", "sp2"]
    assert not (store / "species" / "sp0").exists()
    fill(store, "sp1", 1)
    fill(store, "sp2", 2)
    assert finalize_store(store).ok


def test_update_with_other_settings_recreates(tmp_path):
    store = tmp_path / "d.zarr"
    make(store, ["sp0"])
    fill(store, "sp0", 0)
    out = make(store, ["sp0"], n_views=N + 1)
    assert out["mode"] == "recreated" and out["reset"] == ["sp0"]
    assert open_store(store).attrs["n_views"] == N + 1 and not validate_store(store).ok


def test_existing_store_still_refused_without_update(tmp_path):
    store = tmp_path / "d.zarr"
    make(store, ["sp0"])
    with pytest.raises(FileExistsError):
        create_store(store, StoreSettings(image_size=S, volume_size=V, steps=8, n_views=N), species=[entry("sp0")])


def test_cli_workflow_pieces(tmp_path, capsys):
    src = tmp_path / "src"
    assert main(["demo-movies", "-o", str(src), "--species", "2", "--held-out", "1", "--movie-size", "24"]) == 0
    manifest = src / "manifest.tsv"
    record = tmp_path / "fetched.tsv"
    capsys.readouterr()
    assert main(["fetch", str(manifest), "-d", str(tmp_path / "f")]) == 0
    record.write_text(capsys.readouterr().out)
    cubes = []
    for sid in ("procedural_00", "procedural_01"):
        cube = tmp_path / f"{sid}.npz"
        assert (
            main(
                [
                    "cube",
                    "--fetched",
                    str(record),
                    "--id",
                    sid,
                    "--manifest",
                    str(manifest),
                    "-o",
                    str(cube),
                    "--size",
                    "16",
                ]
            )
            == 0
        )
        cubes.append(str(cube))
    capsys.readouterr()
    assert main(["cube", "--fetched", str(record), "--id", "nope", "-o", str(tmp_path / "x.npz")]) == 2
    assert f"error: fetch record {record} has no line for specimen 'nope'" in capsys.readouterr().err

    settings = tmp_path / "settings.json"
    assert (
        main(
            [
                "store-settings",
                "-o",
                str(settings),
                "--views",
                "3",
                "--size",
                "16",
                "--steps",
                "16",
                "--volume-size",
                "16",
            ]
        )
        == 0
    )
    assert json.loads(settings.read_text())["n_views"] == 3

    store = tmp_path / "d.zarr"
    capsys.readouterr()
    wrong = ["store-create", str(store), "--manifest", str(manifest), "--cubes", *cubes, "--volume-size", "32"]
    assert main(wrong) == 2
    assert "procedural_00.npz is 16x16x16, the store's volumes 32³" in capsys.readouterr().err
    assert not store.exists()
    opts = ["--views", "3", "--size", "16", "--steps", "16", "--volume-size", "16", "--update"]
    created = tmp_path / "created.json"
    assert (
        main(
            ["store-create", str(store), "--manifest", str(manifest), "--cubes", *cubes, *opts, "--done", str(created)]
        )
        == 0
    )
    record = json.loads(created.read_text())
    assert record["mode"] == "created" and record["settings"]["n_views"] == 3  # to notice a replaced store
    assert record["splits"] == open_store(store).attrs["splits"] and len(record["species_sha256"]) == 64
    # a cube of one specimen is never rendered as another (its data would enter the other's split)
    capsys.readouterr()
    assert main(["render-species", str(store), "--cube", cubes[0], "--name", "procedural_01"]) == 2
    assert "is specimen 'procedural_00', not 'procedural_01'" in capsys.readouterr().err
    vol, meta = load_cube(cubes[0])
    renamed = save_cube(tmp_path / "renamed.npz", vol, {**meta, "id": "procedural_01"})
    assert main(["render-species", str(store), "--cube", str(renamed)]) == 2
    err = capsys.readouterr().err
    assert "is not the cube species 'procedural_01'" in err and "in the store's table" in err
    assert open_store(store).status("procedural_01") == "pending"
    for cube in cubes:
        assert main(["render-species", str(store), "--cube", cube, "--backend", "cpu"]) == 0
    final = tmp_path / "final.json"
    assert main(["finalize", str(store), "--done", str(final)]) == 0
    done = json.loads(final.read_text())
    assert done["ok"] is True and done["n_species"] == 2 and done["completion"]["ok"] is True

    assert (
        main(
            ["store-create", str(store), "--manifest", str(manifest), "--cubes", *cubes, *opts, "--done", str(created)]
        )
        == 0
    )
    assert json.loads(created.read_text())["kept"] == ["procedural_00", "procedural_01"]
    assert validate_store(store).ok


def test_a_species_with_specimens_in_two_splits_is_warned():
    """Specimens of one species (case and spaces aside) in two splits: a warning that names them (the
    held-out unit is then the specimen); one split per species: no warning."""
    table = [
        dict(name="a", species="Mus musculus", split="train"),
        dict(name="b", species=" mus musculus", split="test"),
        dict(name="c", species="Rattus rattus", split="val"),
    ]
    with pytest.warns(UserWarning, match=r"species 'Mus musculus' has specimens in 2 splits \(test: b; train: a\)"):
        _warn_split_species(table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_split_species([table[0], table[2]])
