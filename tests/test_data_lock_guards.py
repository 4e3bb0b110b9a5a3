"""Training data of per-species view sets, the GPU targets' cube mask, and the output folder's train lock."""

from __future__ import annotations

import fcntl
import os
import re

import numpy as np
import pytest
import torch
from tiny_runs import demo_args

from model.cli import main
from model.data import SpeciesVolumes, StoreSamples, torch_view_volumes
from model.run_lock import LOCK_NAME, train_lock
from tomodata.render import view_volumes
from tomodata.store import open_store
from tomodata.views import mirror, species_views


@pytest.fixture(scope="module")
def psv_store(tmp_path_factory):
    """A tiny store of 2 train species, each rendered from its own 2 views (per-species view sets)."""
    out = tmp_path_factory.mktemp("psv")
    args = [*demo_args(species=2, val=0, views=2, size=16), "--view-sets", "per_species"]
    assert main(["build-demo", "-o", str(out), *args]) == 0
    return out / "dataset.zarr"


# ------------------------------------------------------------------------------ per-species view sets
def test_each_species_samples_carry_its_own_views(psv_store):
    """With per-species view sets, a sample's rotation is its own species' view (tomodata.views'
    species_views for that species' name), not another species' view of the same index; and its
    training target is its own volume seen from that rotation."""
    ds = StoreSamples(psv_store, "train")
    st = open_store(psv_store)
    s = st.settings
    assert s.view_sets == "per_species" and len(ds.species) == 2, (s, ds.species)
    own = {name: species_views(s.n_views, seed=s.view_seed, name=name, view_sets="per_species") for name in ds.species}
    assert not np.allclose(own[ds.species[0]], own[ds.species[1]]), "the two species must have different views"
    for i in range(len(ds)):
        item = ds[i]
        name = ds.species[item["species"]]
        want = own[name][item["view"]]
        np.testing.assert_allclose(
            item["rotation"].numpy(), want, atol=1e-12, err_msg=f"sample {i} ({name}, view {item['view']})"
        )
    # the targets of a batch of species 1 (plain and mirrored) and species 0: each from its own volume and views
    items = [ds[ds.gindex.of(1, 0)], ds[ds.gindex.of(1, 3)], ds[ds.gindex.of(0, 2)]]
    batch = torch.utils.data.default_collate(items)
    tgt = SpeciesVolumes(ds, "cpu", size=12, steps=10).targets(batch).numpy()
    for k, item in enumerate(items):
        name = ds.species[item["species"]]
        ref = view_volumes(st.volume(name), own[name][item["view"]], size=12, steps=10, backend="cpu")[0]
        if item["mirrored"]:
            ref = mirror(ref)
        np.testing.assert_allclose(tgt[k], ref, atol=1e-5, err_msg=f"target {k} ({name}, view {item['view']})")


# ------------------------------------------------------------------------------ the GPU targets' mask
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU branch of the targets needs a CUDA device")
def test_gpu_targets_equal_cpu_targets_outside_the_cube():
    """The GPU branch (grid_sample) zeroes points outside the cube as the CPU branch does: with a volume
    whose boundary voxels are dense, grid_sample's zero padding alone would leave half a voxel's worth of
    density just outside the cube."""
    rng = np.random.default_rng(3)
    vols = torch.from_numpy(0.5 + 0.5 * rng.random((2, 1, 10, 12, 14)).astype(np.float32))
    rots = torch.from_numpy(species_views(5, seed=1, name="x", view_sets="per_species"))
    pick = torch.tensor([0, 1, 1, 0, 1])
    mir = torch.tensor([0, 1, 0, 1, 0]).bool()
    cpu = torch_view_volumes(vols, rots, size=20, steps=18, mirrored=mir, index=pick)
    gpu = torch_view_volumes(vols.cuda(), rots, size=20, steps=18, mirrored=mir, index=pick).cpu()
    assert bool((cpu == 0).any()), "the views must reach outside the cube"
    np.testing.assert_allclose(gpu.numpy(), cpu.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------ the train lock
def _hold(lock):
    """Hold ``lock`` the way another trainer does (an open file of its own, flocked, its pid written)."""
    fh = open(lock, "a+")  # noqa: SIM115 - the caller closes it
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def test_a_refused_lock_leaves_the_users_existing_folder(tmp_path):
    """Refused because another trainer holds the lock: a folder that existed before the call (here one
    with nothing but the holder's lock file) is left as it was, lock file included."""
    out = tmp_path / "run"
    out.mkdir()
    holder = _hold(out / LOCK_NAME)
    try:
        refusal = rf"another tomo train \(pid {os.getpid()}\) is writing {re.escape(str(out))}"
        with pytest.raises(ValueError, match=refusal):
            with train_lock(out):
                raise AssertionError("the block must not run while another trainer holds the lock")
        assert out.is_dir(), "the refusal removed a folder that existed before the call"
        assert (out / LOCK_NAME).is_file(), "the refusal removed the holder's lock file"
    finally:
        holder.close()


def test_an_existing_empty_folder_is_kept_and_a_new_one_removed_when_nothing_is_written(tmp_path):
    """A block that writes nothing: a folder the user had stays (empty before the call, so only the lock
    file is added); a folder the lock made is removed again."""
    had = tmp_path / "had"
    had.mkdir()
    with train_lock(had):
        pass
    assert had.is_dir(), "a folder that existed before the call was removed"
    new = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with train_lock(new):
            raise RuntimeError("refused for bad input")
    assert not new.exists(), "a folder made by the lock and left empty must be removed"


def test_a_stale_lock_file_is_replaced_by_this_pid(tmp_path):
    """A lock file left by an earlier trainer (a longer old pid, garbage after it) holds exactly this
    process's pid record ("PID\\n") while the lock is held: the old content is truncated, the pid written."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("98765432109876 an old trainer's record\nmore garbage\n")
    with train_lock(out):
        assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    # the record is what a refused second trainer reports
    with train_lock(out):
        with pytest.raises(ValueError, match=rf"another tomo train \(pid {os.getpid()}\)"):
            with train_lock(out):
                pass
