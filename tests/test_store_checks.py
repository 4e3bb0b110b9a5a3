"""validate_store's checks of a store's root attributes and its quick and partial modes, on tiny stores
(test_store_update's): a tampered root attribute is named in the report (never raised), a missing chunk
is found without reading the data, an unknown species name is an error."""

from __future__ import annotations

import json

import pytest
import test_store_update as tu

from tomodata.store import validate_store


@pytest.fixture
def store(tmp_path):
    """A complete tiny store of two species (sp0, sp1) that validates."""
    path = tmp_path / "d.zarr"
    tu.make(path, ["sp0", "sp1"])
    for n in ("sp0", "sp1"):
        tu.fill(path, n, int(n[-1]))
    assert validate_store(path).ok
    return path


def _tamper(store, change) -> None:
    """Rewrite the store's root attributes with ``change`` (a function that edits them in place)."""
    meta = json.loads((store / "zarr.json").read_text())
    change(meta["attributes"])
    (store / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda a: a["view_scheme"].update(name="other-scheme"), "store: view_scheme must be"),
        (
            lambda a: a["sample_order"].update(name="other-order"),
            "store: sample_order name must be 'interleaved-mirror'",
        ),
        (lambda a: a["provenance"].pop("code_version"), "store: provenance lacks code_version"),
        (lambda a: a["species"][0].update(split="training"), "store: species table: species 'sp0': split must be"),
    ],
    ids=["view_scheme name", "sample_order name", "no code_version", "split training"],
)
def test_a_tampered_root_attribute_is_named(store, change, named):
    """A root attribute that is not what the store's readers assume (another view scheme or sample
    order, provenance without the code that made it, a split the training does not know): the store
    does not validate, and the error names the attribute. Without these checks such a store passed
    tomo validate and finalize, and training read its views or splits wrongly."""
    _tamper(store, change)
    report = validate_store(store)
    assert not report.ok and any(e.startswith(named) for e in report.errors), report.errors


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda a: a.update(chi=-5), "store: chi must be a positive number, got -5"),
        (lambda a: a["view_scheme"].update(seed="7"), "store: view_scheme must be"),
        (lambda a: a["encoding"]["images"].update(dtype="int8"), "store: image encoding must be one of"),
    ],
    ids=["chi -5", "seed '7'", "encoding int8"],
)
@pytest.mark.parametrize("check_data", [True, False], ids=["data", "quick"])
def test_a_bad_setting_in_the_root_is_reported_not_raised(store, change, named, check_data):
    """A setting the store cannot have been made with (a negative chi, a view seed that is a string, an
    image encoding not written): validate_store reports it (ok False, the error naming it), as its
    docstring promises, instead of raising from deeper down (tomo validate then printed a traceback
    and no species to rebuild)."""
    _tamper(store, change)
    report = validate_store(store, check_data=check_data)
    assert not report.ok and any(e.startswith(named) for e in report.errors), report.errors


@pytest.mark.parametrize("check_data", [False, True])
@pytest.mark.parametrize("chunk", ["volume/0/c/0/0/0", "mirrored/c/0"])
def test_a_deleted_chunk_file_is_named_as_missing(store, chunk, check_data):
    """validate_store with or without data checks (tomo validate, --quick) names a chunk file that is
    gone, and the species to rebuild. Without the quick check a species whose volume chunk was deleted
    passed, and training read zeros (zarr's fill value) for its volume; the full check reported a
    deleted `mirrored` chunk as a wrong sample order and a sha256 mismatch (helper-96), not the file."""
    (store / "species/sp1" / chunk).unlink()
    report = validate_store(store, check_data=check_data)
    assert not report.ok and report.species_to_rebuild == ["sp1"], report.errors
    array, _, rel = chunk.partition("/c/")
    assert report.errors == [f"species 'sp1': array {array} lacks its data file c/{rel} (1 expected)"]


def test_a_species_without_its_marker_is_named_once(store):
    """A species not (yet) complete: one error, its missing marker, not also each chunk file it has not
    written (helper-100: the file check ran for it too, two errors per pending species)."""
    (store / "species/sp1/volume/0/c/0/0/0").unlink()
    meta = json.loads((store / "species/sp1/zarr.json").read_text())
    meta["attributes"].pop("complete", None)
    (store / "species/sp1/zarr.json").write_text(json.dumps(meta))
    for check_data in (False, True):
        report = validate_store(store, check_data=check_data)
        mine = [e for e in report.errors if e.startswith("species 'sp1'")]
        assert len(mine) == 1 and "lacks its data file" not in mine[0], mine


def test_an_unknown_species_name_is_an_error(store):
    """validate_store(species=[...]) with a name the store does not hold (a typo, another store's
    species): an error listing the store's species, not an OK report about nothing checked."""
    report = validate_store(store, species=["sp9"])
    assert not report.ok
    assert report.errors == ["store: unknown species ['sp9']; the store's species are ['sp0', 'sp1']"]
    report = validate_store(store, species=["sp0", "sp9"])  # the known one is still checked
    assert not report.ok and "sp0" in report.checksums
