"""tomodata.store_settings.StoreSettings: the typed settings of a store (one home)."""

from __future__ import annotations

import json

import pytest

from model.cli import main
from tomodata.store import create_store, open_store
from tomodata.store_settings import StoreSettings


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
