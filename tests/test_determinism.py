"""Determinism and recovery: the same config and inputs give bit-identical stores (build-demo and the
per-species CLI path); the CPU renderer does not depend on the run or the thread count; CUDA and CPU
builds agree within 1 uint16 step; a writer killed mid-write leaves a species that validates as
incomplete, and re-running it gives the bytes of an uninterrupted build; ``tomo validate`` names the
species to rebuild for wrong shapes/dtypes, missing species and checksum mismatches."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import zarr
from tiny_runs import demo_args

from model.cli import main
from tomodata import store as tstore
from tomodata.ingest import load_cube
from tomodata.phantoms import skull_volume, species_params
from tomodata.render import render_xrays, view_volumes
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views

DEMO_ARGS = demo_args(species=3, held_out=1, views=4)
# What may differ between two builds of the same config: the times, and build-demo's output folder,
# which it records among its arguments. Nothing else (not even the order species were written in).
ALLOWED_ROOT_DIFFS = {"timestamps.created", "timestamps.finalized", "provenance.config.args.output"}


def files_under(root: Path, *, skip_root_meta: bool = True) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (skip_root_meta and p.relative_to(root).as_posix() == "zarr.json")
    }


def root_attrs(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]


def json_diff(a, b, path: str = "") -> set[str]:
    """Dotted paths where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = set()
        for k in set(a) | set(b):
            p = f"{path}.{k}" if path else k
            out |= json_diff(a.get(k), b.get(k), p) if k in a and k in b else {p}
        return out
    return set() if a == b else {path}


def assert_same_species_bytes(s1: Path, s2: Path) -> None:
    f1, f2 = files_under(s1), files_under(s2)
    assert f1.keys() == f2.keys()
    assert sum(1 for k in f1 if "/c/" in k) >= 5  # chunk/shard files of every array were compared
    differ = [k for k in f1 if f1[k] != f2[k]]
    assert not differ, f"differ between builds: {differ}"


# ------------------------------------------------------------------------------------------------ builds


def test_two_demo_builds_are_bit_identical(tmp_path):
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:
        assert main(["build-demo", "-o", str(out), *DEMO_ARGS]) == 0
    s1, s2 = (o / "dataset.zarr" for o in outs)
    assert_same_species_bytes(s1, s2)  # every array byte, every per-species zarr.json (markers)
    diff = json_diff(root_attrs(s1), root_attrs(s2))
    assert "provenance.config.args.output" in diff and diff <= ALLOWED_ROOT_DIFFS, diff
    a1, a2 = root_attrs(s1), root_attrs(s2)
    assert a1["completion"] == a2["completion"] and a1["completion"]["ok"]
    assert files_under(outs[0] / "previews") == files_under(outs[1] / "previews")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Two procedural specimens through the real ingest path: phantom .npy -> tomo cube -> .npz,
    with a manifest and a YAML config for tomo store-create."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "scans").mkdir()
    rows, cubes = [], {}
    for i, (sid, split) in enumerate([("skull_a", "train"), ("skull_b", "val")]):
        scan = d / "scans" / f"{sid}.npy"
        assert main(["phantom", str(scan), "--species", str(i), "--size", "40"]) == 0
        cube = d / "cubes" / f"{sid}.npz"
        assert main(["cube", str(scan), "-o", str(cube), "--spacing", "0.5", "--size", "32", "--id", sid]) == 0
        cubes[sid] = cube
        rows.append(
            f"{sid}\tprocedural {i}\tscans/{sid}.npy\tnpy\t0.5,0.5,0.5\t{split}"
            "\tprocedural (tomodata.phantoms): free, no restrictions"
        )
    manifest = d / "manifest.tsv"
    manifest.write_text("id\tspecies\tsource\tsource_kind\tspacing_mm\tsplit\tlicence\n" + "\n".join(rows) + "\n")
    config = d / "build.yaml"
    config.write_text("views: 6\nsize: 32\nsteps: 32\nbackend: cpu\n")
    return dict(dir=d, cubes=cubes, manifest=manifest, config=config)


STORE_OPTS = ["--views", "6", "--size", "32", "--steps", "32", "--volume-size", "32"]


def cli_store(inputs, path: Path, order=("skull_a", "skull_b"), backend="cpu") -> Path:
    assert (
        main(
            [
                "store-create",
                str(path),
                "--manifest",
                str(inputs["manifest"]),
                "--cubes",
                *(str(c) for c in inputs["cubes"].values()),
                *STORE_OPTS,
                "--config",
                str(inputs["config"]),
            ]
        )
        == 0
    )
    for sid in order:
        assert main(["render-species", str(path), "--cube", str(inputs["cubes"][sid]), "--backend", backend]) == 0
    assert main(["finalize", str(path)]) == 0
    return path


def test_cli_pipeline_builds_are_bit_identical(inputs, tmp_path):
    # the cube step is deterministic too
    again = tmp_path / "skull_a.npz"
    assert (
        main(
            [
                "cube",
                str(inputs["dir"] / "scans" / "skull_a.npy"),
                "-o",
                str(again),
                "--spacing",
                "0.5",
                "--size",
                "32",
                "--id",
                "skull_a",
            ]
        )
        == 0
    )
    (v1, m1), (v2, m2) = load_cube(inputs["cubes"]["skull_a"]), load_cube(again)
    assert v1.tobytes() == v2.tobytes()
    m1.pop("source_path"), m2.pop("source_path")
    assert m1 == m2

    s1 = cli_store(inputs, tmp_path / "one.zarr")
    s2 = cli_store(inputs, tmp_path / "two.zarr", order=("skull_b", "skull_a"))  # order must not matter
    assert_same_species_bytes(s1, s2)
    diff = json_diff(root_attrs(s1), root_attrs(s2))
    assert diff <= {"timestamps.created", "timestamps.finalized"}, diff  # same manifest path, same config


# ------------------------------------------------------------------------------------------------ renderer


def _render_pair(threads: int):
    numba.set_num_threads(threads)
    vol = skull_volume(species_params(1, seed=0), size=40, seed=0)
    rots = hemisphere_views(7, seed=3)
    return (
        render_xrays(vol, rots, size=37, steps=41, backend="cpu"),
        view_volumes(vol, rots[:2], size=19, steps=23, backend="cpu"),
    )


def test_cpu_renderer_is_deterministic_across_runs_and_thread_counts(tmp_path):
    before = numba.get_num_threads()
    try:
        ref = _render_pair(1)
        counts = sorted({1, 2, numba.config.NUMBA_NUM_THREADS} & set(range(1, numba.config.NUMBA_NUM_THREADS + 1)))
        for t in counts + counts:  # each count twice: run to run as well
            imgs, vvs = _render_pair(t)
            assert imgs.tobytes() == ref[0].tobytes(), f"images differ with {t} threads"
            assert vvs.tobytes() == ref[1].tobytes(), f"view volumes differ with {t} threads"
    finally:
        numba.set_num_threads(before)
    # another process with 3 threads (rows do not split evenly; more threads than cores here)
    np.save(tmp_path / "ref.npy", ref[0])
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_determinism import _render_pair
        imgs, _ = _render_pair(3)
        sys.exit(0 if imgs.tobytes() == np.load({str(tmp_path / "ref.npy")!r}).tobytes() else 3)
    """)
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=os.environ | {"NUMBA_NUM_THREADS": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.gpu
def test_cuda_and_cpu_builds_agree(inputs, tmp_path):
    """Same arithmetic on both backends; float32 rounding and FMA contraction may move an opacity by
    ~1e-6, which can flip the uint16 encoding by 1 step (1/65535 = 1.5e-5). Volumes, rotations and
    the sample arrays are identical; images within 1 step."""
    s_cpu = cli_store(inputs, tmp_path / "cpu.zarr", backend="cpu")
    s_gpu = cli_store(inputs, tmp_path / "gpu.zarr", backend="cuda")
    for sid in inputs["cubes"]:
        for arr in ("volume/0", "volume/1", "rotations", "mirrored", "views"):
            a = zarr.open_array(str(s_cpu), path=f"species/{sid}/{arr}", mode="r")[...]
            b = zarr.open_array(str(s_gpu), path=f"species/{sid}/{arr}", mode="r")[...]
            assert a.tobytes() == b.tobytes(), f"{sid}/{arr} differs between CPU and CUDA builds"
        a = zarr.open_array(str(s_cpu), path=f"species/{sid}/images", mode="r")[...].astype(np.int32)
        b = zarr.open_array(str(s_gpu), path=f"species/{sid}/images", mode="r")[...].astype(np.int32)
        assert np.abs(a - b).max() <= 1, f"{sid}: images differ by {np.abs(a - b).max()} uint16 steps"
    # and at the paper's settings (128³ volume, 256², 128 steps)
    vol = skull_volume(species_params(2, seed=0), size=128, seed=0)
    rots = hemisphere_views(1332, seed=0)[::111]
    cpu = tstore.encode_images(render_xrays(vol, rots, size=256, steps=128, backend="cpu")).astype(np.int32)
    gpu = tstore.encode_images(render_xrays(vol, rots, size=256, steps=128, backend="cuda")).astype(np.int32)
    assert np.abs(cpu - gpu).max() <= 1


# ------------------------------------------------------------------------------------------------ recovery


SLOW_WRITER = textwrap.dedent("""
    import pathlib, sys, time
    from tomodata.store import write
    real = write._encode_block
    calls = [0]

    def slow(*args, **kw):  # the second image shard: the first one is on disk, the rest not yet
        calls[0] += 1
        if calls[0] == 2:
            pathlib.Path(sys.argv[1]).write_text("writing")
            time.sleep(300)
        return real(*args, **kw)

    write._encode_block = slow
    from model.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def api_store(path: Path, species: list[dict]) -> Path:
    """A store like tomo store-create's, with 4 images per shard (3 shards per species)."""
    tstore.create_store(
        path,
        StoreSettings(chi=10.0, steps=32, image_size=32, volume_size=32, n_views=6, view_seed=0),
        species=species,
        images_per_shard=4,
        provenance={"config": {"test": "recovery"}},
    )
    return path


def test_killed_writer_is_reported_and_rerun_matches(inputs, tmp_path, capsys):
    species = root_attrs(_created(inputs, tmp_path / "table.zarr"))["species"]  # tomo store-create's table
    killed = api_store(tmp_path / "killed.zarr", species)
    reference = api_store(tmp_path / "reference.zarr", species)
    cube_a, cube_b = (str(inputs["cubes"][s]) for s in ("skull_a", "skull_b"))
    for s in (reference, killed):
        assert main(["render-species", str(s), "--cube", cube_b, "--backend", "cpu"]) == 0
    assert main(["render-species", str(reference), "--cube", cube_a, "--backend", "cpu"]) == 0

    flag = tmp_path / "mid-write"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_WRITER,
            str(flag),
            "render-species",
            str(killed),
            "--cube",
            cube_a,
            "--backend",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the writer never reached its second shard"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    first_shard = killed / "species" / "skull_a" / "images" / "c" / "0" / "0" / "0"
    assert first_shard.is_file()  # it really died mid-write: one shard on disk, the others not
    assert not (killed / "species" / "skull_a" / "images" / "c" / "2" / "0" / "0").exists()

    report = tstore.validate_store(killed)
    assert not report.ok and report.species_to_rebuild == ["skull_a"]
    assert any("completion marker" in e for e in report.errors)
    assert tstore.open_store(killed).status("skull_a") == "writing"
    capsys.readouterr()
    assert main(["validate", str(killed)]) == 1
    assert "rebuild: skull_a" in capsys.readouterr().out
    assert main(["finalize", str(killed)]) == 1

    assert main(["render-species", str(killed), "--cube", cube_a, "--backend", "cpu"]) == 0
    assert tstore.validate_store(killed).ok
    assert_same_species_bytes(killed, reference)


def _created(inputs, path: Path) -> Path:
    assert (
        main(
            [
                "store-create",
                str(path),
                "--manifest",
                str(inputs["manifest"]),
                "--cubes",
                *(str(c) for c in inputs["cubes"].values()),
                *STORE_OPTS,
            ]
        )
        == 0
    )
    return path


# ------------------------------------------------------------------------------------------------ validate


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "ds.zarr"
    species = [
        dict(
            name=n,
            split="train",
            source=f"test:{n}",
            source_checksum="0" * 64,
            original_shape=[8, 8, 8],
            spacing_mm=[1.0, 1.0, 1.0],
        )
        for n in ("a", "b")
    ]
    tstore.create_store(path, StoreSettings(steps=8, image_size=8, volume_size=8, n_views=3), species=species)
    rng = np.random.default_rng(1)
    for n in ("a", "b"):
        tstore.write_species(
            path,
            n,
            volume=rng.random((8, 8, 8), dtype=np.float32),
            rotations=hemisphere_views(3, seed=0),
            images=rng.random((3, 8, 8)),
        )
    assert tstore.validate_store(path).ok
    return path


def _wrong_shape(p):
    g = zarr.open_group(str(p), path="species/b", mode="r+", zarr_format=3)
    g.create_array("images", shape=(6, 8, 9), dtype="uint16", chunks=(1, 8, 9), overwrite=True)


def _wrong_dtype(p):
    g = zarr.open_group(str(p), path="species/b/volume", mode="r+", zarr_format=3)  # the OME-Zarr group
    g.create_array("0", shape=(8, 8, 8), dtype="float64", chunks=(8, 8, 8), overwrite=True)


def _missing(p):
    shutil.rmtree(p / "species" / "b")


def _checksum(p):
    v = zarr.open_array(str(p), path="species/b/volume/0", mode="r+", zarr_format=3)
    v[1, 2, 3] = 0.25 if float(v[1, 2, 3]) != 0.25 else 0.5  # in range: only the checksum sees it


def _truncated(p):
    shard = sorted(f for f in (p / "species" / "b" / "images" / "c").rglob("*") if f.is_file())[0]
    shard.write_bytes(shard.read_bytes()[:10])  # shorter than its shard index: --quick sees the size


@pytest.mark.parametrize(
    "corrupt, words, quick_catches",
    [
        (_truncated, ["images"], True),
        (_wrong_shape, ["images", "shape (6, 8, 9)", "expected (6, 8, 8)"], True),
        (_wrong_dtype, ["volume", "float64", "expected (8, 8, 8) float32"], True),
        (_missing, ["species/b", "missing"], True),
        (_checksum, ["volume", "sha256"], False),  # --quick reads no data, so it cannot see this
    ],
)
def test_tomo_validate_names_the_species_to_rebuild(small_store, tmp_path, capsys, corrupt, words, quick_catches):
    path = tmp_path / "ds.zarr"
    shutil.copytree(small_store, path)
    corrupt(path)
    capsys.readouterr()
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "rebuild: b" in out and "species 'a'" not in out, out
    for w in words:
        assert w in out, (w, out)
    assert main(["validate", "--quick", str(path)]) == (1 if quick_catches else 0)
