"""write_species' guards the other store tests leave open (tomodata/store/write.py): the exact input
shapes and tolerances it accepts, the view scheme within its tolerance, and the file a failed write
names."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import zarr
from test_store import IMG, N_VIEWS, make_store, species_data, species_table, write

from tomodata import store
from tomodata.store import write as store_write


def test_images_in_the_wrong_axis_order_are_refused_before_anything_is_touched(tmp_path):
    """Images of the right size but axes swapped ((S, n_views, S)) are a ValueError naming the shape,
    raised before the species' folder is reset: its complete data stays."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    write(path, "alpha")
    swapped = species_data("alpha")["images"].transpose(1, 0, 2)
    assert swapped.shape == (IMG, N_VIEWS, IMG)
    with pytest.raises(ValueError, match="images must have shape"):
        write(path, "alpha", images=swapped)
    assert store.open_store(path).status("alpha") == "complete"
    assert store.validate_store(path).ok


def test_image_tolerance_is_one_millionth(tmp_path):
    """Renderer round-off just outside [0, 1] (within 1e-6) is accepted and stored clipped to 0 and 1;
    more than that is refused."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    images = species_data("alpha")["images"]
    images[0, 0, 0], images[0, 0, 1] = np.float32(1 + 4e-7), np.float32(-4e-7)
    assert images[0, 0, 0] > 1 and images[0, 0, 1] < 0
    write(path, "alpha", images=images)
    stored = store.open_store(path).images("alpha", [0])
    assert stored[0, 0, 0] == 1.0 and stored[0, 0, 1] == 0.0
    for bad in (1 + 5e-6, -5e-6):
        images[0, 0, 0] = bad
        with pytest.raises(ValueError, match=r"images values must lie in \[0.0, 1.0\]"):
            write(path, "alpha", images=images)


def test_rotations_off_the_view_scheme_by_more_than_its_tolerance_are_refused(tmp_path):
    """Orthonormal rotations that differ from the store's view scheme by 1e-4 (far above its 1e-6
    tolerance) are refused: the stored rotations would not be the ones the views were drawn from."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    c, s = np.cos(1e-4), np.sin(1e-4)
    turned = species_data("alpha")["rotations"] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="view scheme"):
        write(path, "alpha", rotations=turned)
    assert store.open_store(path).status("alpha") == "pending"


def test_a_failed_image_shard_names_its_file(tmp_path, monkeypatch):
    """A write that fails in the third image shard (samples 8..11: views 4 and 5) is a RuntimeError
    naming that shard's file, images/c/2/0/0, and the species."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))  # 12 samples, 4 per shard
    real = store_write._encode_block

    def broken(images, v0, v1, encoding):
        block = real(images, v0, v1, encoding)
        return block[:, :-1] if v0 <= 4 < v1 else block  # a block the shard cannot hold

    monkeypatch.setattr(store_write, "_encode_block", broken)
    with pytest.raises(RuntimeError) as e:
        write(path, "alpha")
    msg = str(e.value)
    assert msg.startswith(f"species alpha: writing {path / 'species/alpha/images/c/2/0/0'} failed"), msg


def test_every_chunk_file_is_written_also_when_all_fill_values(tmp_path):
    """A species whose images and volume are all 0 (the arrays' fill value) still gets every data file its
    shapes imply (3 image shards, each volume level, rotations, mirrored, views): a complete species
    never has a file missing."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))  # 12 samples, 4 per shard
    data = species_data("alpha")
    write(path, "alpha", images=np.zeros_like(data["images"]), volume=np.zeros_like(data["volume"]))
    folder = path / "species/alpha"
    files = {str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file() and f.name != "zarr.json"}
    assert files == {
        "images/c/0/0/0",
        "images/c/1/0/0",
        "images/c/2/0/0",
        "volume/0/c/0/0/0",
        "volume/1/c/0/0/0",
        "rotations/c/0/0/0",
        "mirrored/c/0",
        "views/c/0",
    }, sorted(files)
    assert store.validate_store(path).ok


def test_the_species_group_records_its_split(tmp_path):
    """The species group's attributes name the species' split from the store's table (here "val")."""
    path = make_store(tmp_path / "ds.zarr", species=species_table(["alpha"], split="val"))
    write(path, "alpha")
    attrs = dict(zarr.open_group(str(path), path="species/alpha", mode="r").attrs)
    assert attrs["split"] == "val" and attrs["status"] == "complete", attrs


def test_the_marker_records_the_renderer_when_given(tmp_path):
    """``renderer`` ("cpu", "cuda") is recorded in the complete marker, stored and returned; without it
    the marker has no renderer key."""
    path = make_store(tmp_path / "ds.zarr")
    marker = write(path, "alpha", renderer="cuda")
    stored = dict(zarr.open_group(str(path), path="species/alpha", mode="r").attrs)["complete"]
    assert marker["renderer"] == "cuda" and stored["renderer"] == "cuda", stored
    assert "renderer" not in write(path, "beta")


@pytest.fixture()
def failing_image_writes(monkeypatch):
    """``fail(exc)``: every write into a species' images array raises ``exc`` (a full disk, say)."""

    def fail(exc: Exception) -> None:
        real = zarr.Array.__setitem__

        def setitem(self, key, value):
            if self.path.endswith("/images"):
                raise exc
            return real(self, key, value)

        monkeypatch.setattr(zarr.Array, "__setitem__", setitem)

    return fail


def test_a_disk_error_without_a_file_name_is_given_the_shard_file(tmp_path, failing_image_writes):
    """An OSError from zarr that names no file (ENOSPC from a buffered write) stays an OSError (tomo
    reports it as a disk problem), now naming the shard it failed in, with its errno and text."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    failing_image_writes(OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError) as e:
        write(path, "alpha")
    assert type(e.value) is not RuntimeError and e.value.errno == errno.ENOSPC
    assert e.value.filename == str(path / "species/alpha/images/c/0/0/0")
    assert e.value.strerror == "No space left on device"


def test_a_disk_error_that_names_its_file_is_raised_unchanged(tmp_path, failing_image_writes):
    """An OSError that already names its file (e.g. a read-only file) is raised as it is."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    original = PermissionError(errno.EACCES, "Permission denied", "/somewhere/images/c/0/0/0")
    failing_image_writes(original)
    with pytest.raises(PermissionError) as e:
        write(path, "alpha")
    assert e.value is original and e.value.filename == "/somewhere/images/c/0/0/0"


def test_a_last_shard_cut_short_is_written_whole(tmp_path):
    """5 views: 10 samples in shards of 4, the last one holding 2; every sample reads back as written
    (views in even rows, their mirrors in odd rows) and the store validates."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",), n_views=5)
    data = species_data("alpha", n_views=5)
    store.write_species(path, "alpha", **data)
    images = store.open_store(path).images("alpha", slice(None))
    assert images.shape == (10, IMG, IMG)
    assert np.abs(images[0::2] - data["images"]).max() <= 0.5 / 65535 + 1e-7
    np.testing.assert_array_equal(images[1::2], images[0::2, ::-1, :])
    assert store.validate_store(path).ok


def test_a_store_without_its_species_group_is_refused_with_what_to_do(tmp_path):
    """A store whose ``species`` group is gone (its zarr.json deleted) cannot take a species: a
    ValueError that says to recreate the store, not a zarr error."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    (path / "species/zarr.json").unlink()
    with pytest.raises(ValueError, match="has no species group: recreate the store"):
        write(path, "alpha")


def test_the_layout_check_sees_a_dtype_alone(tmp_path, monkeypatch):
    """Each array opened for writing is checked against the layout: a dtype that differs while the
    shape agrees is reported as an inconsistent store."""
    path = make_store(tmp_path / "ds.zarr", names=("alpha",))
    real = store_write._expected_arrays

    def expected(attrs):
        out = dict(real(attrs))
        out["images"] = (out["images"][0], "float16")
        return out

    monkeypatch.setattr(store_write, "_expected_arrays", expected)
    with pytest.raises(
        ValueError, match=r"species/alpha/images has shape .* expected .* float16: the store is inconsistent"
    ):
        write(path, "alpha")
