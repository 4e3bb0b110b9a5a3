"""tomodata.store_settings.StoreSettings: the typed settings of a store (one home)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.cli import main
from tomodata.store import create_store, open_store
from tomodata.store_markers import settings_record
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views, species_views


def test_settings_round_trip_through_a_store_and_json(tmp_path):
    s = StoreSettings(
        chi=8.0, steps=16, image_size=24, volume_size=16, n_views=5, view_seed=3, image_encoding="float16"
    )
    assert s.samples_per_species == 10
    species = [
        dict(
            name="a",
            split="train",
            source="x",
            source_checksum="sha256:0",
            original_shape=[4, 4, 4],
            spacing_mm=[1.0, 1.0, 1.0],
        )
    ]
    create_store(tmp_path / "s.zarr", s, species=species)
    assert open_store(tmp_path / "s.zarr").settings == s
    assert StoreSettings.from_json(json.loads(json.dumps(s.to_json()))) == s
    # the workflow's settings file (tomo store-settings) reads back as the same settings
    assert (
        main(
            [
                "store-settings",
                "-o",
                str(tmp_path / "set.json"),
                "--views",
                "5",
                "--seed",
                "3",
                "--size",
                "24",
                "--steps",
                "16",
                "--chi",
                "8",
                "--volume-size",
                "16",
                "--encoding",
                "float16",
            ]
        )
        == 0
    )
    assert StoreSettings.from_json(json.loads((tmp_path / "set.json").read_text())) == s


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="chi must be a positive number.*n_views must be a positive integer"):
        StoreSettings(chi=float("nan"), n_views=0)
    with pytest.raises(ValueError, match="image_encoding must be one of"):
        StoreSettings(image_encoding="uint8")
    with pytest.raises(ValueError, match="unknown keys \\['chii'\\]"):
        StoreSettings.from_json({"chii": 3})
    with pytest.raises(ValueError, match="lack"):
        StoreSettings.from_attrs({"chi": 1.0})


def test_view_sets_default_leaves_records_and_commands_as_before():
    """view_sets at its default (shared) is in neither the JSON record nor the options, so settings files
    and the workflow's job commands written before the setting existed are the same setting; a store's
    attributes without view_scheme.sets read as shared."""
    s = StoreSettings()
    assert "view_sets" not in s.to_json() and "--view-sets" not in s.cli_options()
    assert s.cli_options()[:4] == ["--views", "1332", "--seed", "0"]
    assert settings_record(s, "tomo-dataset/4") == {
        "spec_version": "tomo-dataset/4",
        "n_views": 1332,
        "view_seed": 0,
        "image_size": 256,
        "steps": 128,
        "chi": 10.0,
        "volume_size": 128,
        "image_encoding": "uint16",
    }
    p = StoreSettings(view_sets="per_species")
    assert p.to_json()["view_sets"] == "per_species" and StoreSettings.from_json(p.to_json()) == p
    assert p.cli_options()[4:6] == ["--view-sets", "per_species"]
    assert list(settings_record(p, "x"))[-1] == "view_sets"
    with pytest.raises(ValueError, match=r"view_sets must be one of \['shared', 'per_species'\]"):
        StoreSettings(view_sets="each")


def test_per_species_views_through_store_settings_and_a_store(tmp_path):
    """tomo store-settings --view-sets per_species, a store made with it (attributes and card say so) and
    its species' rotations: each species its own, as tomodata.views.species_views defines them."""
    assert main(["store-settings", "-o", str(tmp_path / "set.json"), "--views", "5", "--view-sets", "per_species"]) == 0
    s = StoreSettings.from_json(json.loads((tmp_path / "set.json").read_text()))
    assert s.view_sets == "per_species" and s.n_views == 5
    species = [
        dict(
            name=n,
            split="train",
            source="x",
            source_checksum="sha256:0",
            original_shape=[4, 4, 4],
            spacing_mm=[1.0] * 3,
        )
        for n in ("a", "b")
    ]
    create_store(tmp_path / "s.zarr", s, species=species)
    ds = open_store(tmp_path / "s.zarr")
    assert ds.settings == s and ds.attrs["view_scheme"]["sets"] == "per_species"
    assert "species_view_seed" in ds.attrs["view_scheme"]["function"]
    ra, rb = s.species_rotations("a"), s.species_rotations("b")
    assert np.array_equal(ra, species_views(5, seed=0, name="a", view_sets="per_species"))
    assert np.abs(ra - rb).max() > 0.1
    assert np.array_equal(StoreSettings(n_views=5).species_rotations("a"), hemisphere_views(5, seed=0))
    old = {k: v for k, v in ds.attrs["view_scheme"].items() if k != "sets"}
    assert StoreSettings.from_attrs(ds.attrs | {"view_scheme": old}).view_sets == "shared"
