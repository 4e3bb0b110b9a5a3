"""``tomo bench dataset`` on the CPU: small settings, the real render and write path, honest counts."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from model.cli import main
from tomodata.bench_dataset import bench_dataset, format_dataset_rows
from tomodata.store import open_store
from tomodata.store_settings import StoreSettings

SMALL = StoreSettings(chi=10.0, steps=16, image_size=16, volume_size=16, n_views=6, view_seed=0)


def test_renders_and_writes_every_species(tmp_path):
    rows = bench_dataset(tmp_path, species=3, settings=SMALL, backend="cpu", workers=2, batch=4, keep=True)
    render, write = rows
    assert render["species"] == write["species"] == 3 and write["views"] == 18
    assert write["raw_gb"] == pytest.approx(3 * 2 * 6 * 16 * 16 * 2 / 1e9)  # uint16, mirrors included
    assert write["disk_gb"] > 0 and write["est_all_s"] == pytest.approx(write["seconds"])
    store = open_store(tmp_path / "bench.zarr")  # kept: a complete species as the workflow writes it
    assert store.species_attrs("bench_001")["status"] == "complete"
    images = zarr.open_array(str(tmp_path / "bench.zarr"), path="species/bench_001/images", mode="r")[...]
    assert images.shape == (12, 16, 16) and np.array_equal(images[1], images[0][::-1])
    assert "render + write (2 jobs, 4 views per call)" in format_dataset_rows(rows, 3)


def test_time_limit_leaves_species_out_and_says_so(tmp_path):
    rows = bench_dataset(tmp_path, species=2, settings=SMALL, backend="cpu", workers=1, max_seconds=0.0)
    assert [r["species"] for r in rows] == [0, 0]  # nothing begun after the limit; no rate invented
    assert all(r["est_all_s"] == float("inf") for r in rows)
    assert not (tmp_path / "bench.zarr").exists()  # the scratch store is removed
    assert "0/2" in format_dataset_rows(rows, 2)


@pytest.mark.parametrize("option", [["--species", "0"], ["--max-seconds", "-1"], ["--workers", "0"]])
def test_cli_refuses_bad_options(option, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "dataset", *option])
    assert "error" in capsys.readouterr().err
