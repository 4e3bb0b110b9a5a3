"""tomodata.store_settings.StoreSettings: the typed settings of a store (one home)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.cli import main
from tomodata.store import create_store, open_store, validate_store
from tomodata.store_markers import settings_differences, settings_file_changes, settings_record
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views, species_views, view_sets_of


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
    create_store(tmp_path / "s.zarr", s, species=_species())
    ds = open_store(tmp_path / "s.zarr")
    assert ds.settings == s and ds.attrs["view_scheme"]["sets"] == "per_species"
    assert "species_view_seed" in ds.attrs["view_scheme"]["function"]
    ra, rb = s.species_rotations("a"), s.species_rotations("b")
    assert np.array_equal(ra, species_views(5, seed=0, name="a", view_sets="per_species"))
    assert np.abs(ra - rb).max() > 0.1
    assert np.array_equal(StoreSettings(n_views=5).species_rotations("a"), hemisphere_views(5, seed=0))
    old = {k: v for k, v in ds.attrs["view_scheme"].items() if k != "sets"}
    assert StoreSettings.from_attrs(ds.attrs | {"view_scheme": old}).view_sets == "shared"


def _species(names=("a", "b")):
    return [
        dict(
            name=n,
            split="train",
            source="x",
            source_checksum="sha256:0",
            original_shape=[4, 4, 4],
            spacing_mm=[1.0] * 3,
        )
        for n in names
    ]


def test_a_shared_store_has_the_attributes_of_older_stores_and_updates_in_place(tmp_path):
    """A shared store's view_scheme has no 'sets' (as every store before session 30), and an update of a
    store whose attributes lack it, or say 'sets: shared', is an update, not a re-creation (which
    would re-render every species)."""
    s = StoreSettings(n_views=3, image_size=8, steps=8, volume_size=8)
    path = tmp_path / "s.zarr"
    create_store(path, s, species=_species())
    assert "sets" not in open_store(path).attrs["view_scheme"]
    assert create_store(path, s, species=_species(), update=True)["mode"] == "updated"
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["view_scheme"]["sets"] = "shared"  # as written by the first per-species commits
    (path / "zarr.json").write_text(json.dumps(meta))
    assert create_store(path, s, species=_species(), update=True)["mode"] == "updated"
    per = StoreSettings(n_views=3, image_size=8, steps=8, volume_size=8, view_sets="per_species")
    assert create_store(path, per, species=_species(), update=True)["mode"] == "recreated"


def test_settings_comparisons_read_a_missing_view_sets_as_shared(tmp_path):
    """A settings record leaves out view_sets: shared; compared with a per-species store or file, that is
    a difference, named, not an unknown key."""
    per = StoreSettings(n_views=3, image_size=8, steps=8, volume_size=8, view_sets="per_species")
    create_store(tmp_path / "p.zarr", per, species=_species())
    attrs = open_store(tmp_path / "p.zarr").attrs
    shared = settings_record(StoreSettings(n_views=3, image_size=8, steps=8, volume_size=8), attrs["spec_version"])
    assert settings_differences(attrs, shared) == ["view_sets: store 'per_species', settings 'shared'"]
    assert settings_differences(attrs, settings_record(per, attrs["spec_version"])) == []
    f = tmp_path / "set.json"
    f.write_text(json.dumps(settings_record(per, attrs["spec_version"])))
    assert settings_file_changes(f, shared) == ["view_sets: file 'per_species', config 'shared'"]
    f.write_text(json.dumps(shared))
    assert settings_file_changes(f, shared) == []


def test_malformed_view_sets_are_refused_by_their_value(tmp_path):
    """view_scheme.sets: null (or an unknown name) is not read as a set called 'None': view_sets_of
    names the value, and the store's validation refuses the scheme."""
    assert view_sets_of({}) == "shared" and view_sets_of({"view_sets": "per_species"}, "view_sets") == "per_species"
    for bad in (None, "None", 3):
        with pytest.raises(ValueError, match=f"sets must be one of .*got {bad!r}"):
            view_sets_of({"sets": bad})
    path = tmp_path / "s.zarr"
    create_store(path, StoreSettings(n_views=3, image_size=8, steps=8, volume_size=8), species=_species())
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["view_scheme"]["sets"] = None
    (path / "zarr.json").write_text(json.dumps(meta))
    report = validate_store(path)
    assert not report.ok and any("view_scheme must be" in e and "'sets': None" in e for e in report.errors)
