"""Tests of publishable exports (tomodata/export/): data and recipe-only folders, the dataset card,
Croissant metadata (validated with mlcroissant), SHA256SUMS (checked with the real sha256sum), the
licence rules and atomic writing."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import yaml
import zarr
from tiny_runs import demo_args

from model.cli import main
from tomodata import export
from tomodata.export.card import _contents, _geometry
from tomodata.export.croissant import _array_layout_text
from tomodata.ingest_settings import orient
from tomodata.recipe import cube_settings, recipe_files
from tomodata.store import create_store, finalize_store, open_store, validate_store, write_species
from tomodata.store_settings import StoreSettings
from tomodata.views import hemisphere_views
from tomodata.volume_files import write_canonical_volume

DEMO_ARGS = demo_args(species=3, held_out=1, views=4)
UTCT_LICENCE = "UTCT/DigiMorph: research use, no redistribution"
pytestmark = pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")  # rdflib


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["build-demo", "-o", str(out), *DEMO_ARGS]) == 0
    return out / "dataset.zarr"


@pytest.fixture(scope="module")
def demo_data_export(demo, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("exports") / "data"
    summary = export.export_dataset(demo, out)
    return out, summary


def tiny_store(
    path: Path, licences: list[str], sources: list[str] | None = None, finalize: bool = True, credits=("", "")
) -> Path:
    """A tiny complete store (random data) with two species under the given licence texts (finalised),
    with the given attributions (none where empty)."""
    n_views, size, vol = 3, 8, 8
    names = [("Didelphis_virginiana", "train"), ("Felis_catus", "val")]
    sources = sources or [f"https://digimorph.org/specimens/{n}/x.mp4" for n, _ in names]
    species = [
        dict(
            name=n,
            split=s,
            species=n.replace("_", " "),
            source=src,
            source_checksum=f"{i:x}" * 64,
            original_shape=[40, 30, 30],
            spacing_mm=[0.1, 0.1, 0.1],
            licence=lic,
            **({"attribution": credit} if credit else {}),
        )
        for i, ((n, s), lic, src, credit) in enumerate(zip(names, licences, sources, credits), start=1)
    ]
    create_store(
        path,
        StoreSettings(chi=10.0, steps=8, image_size=size, volume_size=vol, n_views=n_views, view_seed=0),
        species=species,
        provenance={"command": "test", "config": {"views": n_views}},
    )
    rng = np.random.default_rng(0)
    for e in species:
        write_species(
            path,
            e["name"],
            volume=rng.random((vol,) * 3, dtype=np.float32),
            rotations=hemisphere_views(n_views, seed=0),
            images=rng.random((n_views, size, size)),
        )
    assert validate_store(path).ok
    if finalize:
        finalize_store(path)
    return path


@pytest.fixture(scope="module")
def utct_store(tmp_path_factory) -> Path:
    """Species from UTCT/DigiMorph (made-up data, the real licence text)."""
    return tiny_store(tmp_path_factory.mktemp("utct") / "utct.zarr", [UTCT_LICENCE] * 2)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    head, _, _ = card[4:].partition("\n---\n")
    return yaml.safe_load(head)


def sha256sum_check(folder: Path) -> subprocess.CompletedProcess:
    if shutil.which("sha256sum") is None:
        pytest.skip("the sha256sum program is not installed")
    return subprocess.run(
        ["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )


def croissant_records(path: Path, record_set: str) -> list[dict] | None:
    """Load with mlcroissant (the [test] extra) and read a record set; None where it is not installed."""
    try:
        import mlcroissant as mlc  # noqa: PLC0415 - optional here: the check is skipped where it is not installed
    except ImportError:
        return None
    ds = mlc.Dataset(jsonld=str(path))  # raises mlcroissant's ValidationError on any error
    assert not ds.metadata.ctx.issues.errors
    return [r for r in ds.records(record_set)]  # a fresh Dataset per record set: records() iterate once


# ------------------------------------------------------------------------------------------------ data


def test_data_export_of_procedural_species(demo, demo_data_export):
    out, summary = demo_data_export
    assert summary["mode"] == "data" and summary["recipe_only"] is False
    assert summary["licence"] == "cc0-1.0" and summary["warnings"] == []
    assert set(summary["licence_classes"].values()) == {"free"}
    assert summary["species"] == 3 and summary["samples"] == 24
    on_disk = [p for p in out.rglob("*") if p.is_file()]
    assert summary["bytes"] == sum(p.stat().st_size for p in on_disk) and summary["files"] == len(on_disk)
    for rel in (
        "README.md",
        "croissant.json",
        "SHA256SUMS",
        "provenance.json",
        "species.csv",
        "samples.csv",
        "splits/train.txt",
        "splits/val.txt",
        "splits/test.txt",
        "recipe/checksums.json",
        "recipe/store_attrs.json",
        "recipe/config.json",
        "dataset.zarr/zarr.json",
    ):
        assert (out / rel).is_file(), rel
    # the store is copied byte for byte
    src = {p.relative_to(demo).as_posix(): p.read_bytes() for p in demo.rglob("*") if p.is_file()}
    dst = {
        p.relative_to(out / "dataset.zarr").as_posix(): p.read_bytes()
        for p in (out / "dataset.zarr").rglob("*")
        if p.is_file()
    }
    assert src == dst
    assert validate_store(out / "dataset.zarr").ok
    assert (out / "splits/train.txt").read_text() == "procedural_00\nprocedural_01\n"
    assert (out / "splits/val.txt").read_text() == "procedural_02\n"
    assert (out / "splits/test.txt").read_text() == ""
    # per-species checksums = the completion markers
    sums = json.loads((out / "recipe/checksums.json").read_text())["species"]
    for n in ("procedural_00", "procedural_01", "procedural_02"):
        marker = json.loads((demo / "species" / n / "zarr.json").read_text())["attributes"]["complete"]
        assert sums[n]["arrays_sha256"] == marker["sha256"]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["export"]["mode"] == "data" and prov["code_version"]["tomodata"]
    assert prov["export"]["source_store"] == str(demo.resolve())  # absolute, whatever the working folder
    assert prov["config"]["command"] == "tomo build-demo" and prov["store"]["finalized"] is True
    # the code that built the store (creation, each species' render) is recorded there and quoted, not
    # only the exporter's (helper-69: the card named the export's commit as the build's)
    built = json.loads((demo / "zarr.json").read_text())["attributes"]["provenance"]["code"]
    assert set(built) == {"tomodata", "git_commit", "git_dirty"} and prov["store"]["provenance"]["code"] == built
    assert sum(len(v) for v in prov["store"]["species_code"].values()) == 3
    # and the backend each species was rendered on (the rebuild's default follows it)
    assert prov["store"]["species_renderer"] == {"cpu": ["procedural_00", "procedural_01", "procedural_02"]}
    assert (
        json.loads((demo / "species/procedural_00/zarr.json").read_text())["attributes"]["complete"]["renderer"]
        == "cpu"
    )
    assert (
        export.card._rebuild_backend({"store": {"species_renderer": {"cuda": ["a"], "not recorded": ["b"]}}}) == "cuda"
    )
    assert export.card._rebuild_backend({"store": {"species_renderer": {"cuda": ["a"], "cpu": ["b"]}}}) == "cpu"
    card = (out / "README.md").read_text()
    if built["git_commit"]:
        assert f"the store created or last updated (store-create) at commit {built['git_commit'][:12]}" in card
        assert next(iter(prov["store"]["species_code"])).startswith(built["git_commit"][:12])
    else:
        assert "the store records no commit" in card
    assert export.verify_export(out) == []


def test_card_front_matter_and_licence(demo_data_export):
    out, _ = demo_data_export
    card = (out / "README.md").read_text()
    fm = front_matter(card)
    assert fm["license"] == "cc0-1.0"
    assert fm["task_categories"] == ["image-to-3d"] and fm["size_categories"] == ["n<1K"]
    assert "synthetic" in fm["tags"] and fm["pretty_name"]
    # procedural species only: no CT, no mammals in the card's words (helper-54)
    assert "procedural skull" in fm["pretty_name"] and not {"computed-tomography", "mammals"} & set(fm["tags"])
    assert "# Single-image tomography: procedural skull x-rays" in card and "mammal" not in card
    assert "CC0-1.0" in card and "10.1111/cgf.13369" in card and "Henzler" in card
    assert "NOT FOR REDISTRIBUTION" not in card


def test_croissant_validates_and_iterates(demo_data_export):
    pytest.importorskip("mlcroissant", reason="mlcroissant (the [test] extra) validates the Croissant file")
    out, _ = demo_data_export
    doc = json.loads((out / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    assert doc["@type"] == "sc:Dataset" and "Henzler" in doc["citeAs"]
    assert doc["license"] == ["https://creativecommons.org/publicdomain/zero/1.0/"]
    assert "synthetic" in doc["keywords"] and "mammals" not in doc["keywords"]
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    kinds = {d["@id"]: d for d in doc["distribution"]}
    for d in kinds.values():
        if d["@type"] == "cr:FileObject":
            assert d["sha256"] == sums[d["contentUrl"]]
    assert kinds["zarr/procedural_01"]["@type"] == "cr:FileSet"
    assert kinds["zarr/procedural_01"]["includes"] == "dataset.zarr/species/procedural_01/**"
    spec = json.loads((out / "dataset.zarr/zarr.json").read_text())["attributes"]["spec_version"]
    assert f"spec_version {spec})" in kinds["dataset.zarr/zarr.json"]["description"]
    assert "volume/0 (" in doc["description"] and "OME-Zarr" in doc["description"]
    recipe = [d["description"] for k, d in kinds.items() if k.startswith("recipe/")]
    assert len(set(recipe)) == len(recipe)  # each recipe file says what it is
    samples = croissant_records(out / "croissant.json", "samples")
    assert len(samples) == 24
    s5 = next(r for r in samples if r["samples/sample_id"] in (b"procedural_00/5", "procedural_00/5"))
    assert s5["samples/view"] == 2 and bool(s5["samples/mirrored"]) is True and s5["samples/sample"] == 5
    species = croissant_records(out / "croissant.json", "species")
    assert len(species) == 3
    assert {bool(r["species/redistribution"]) for r in species} == {True}


def _outsider_render(vol: np.ndarray, R: np.ndarray, size: int, steps: int, chi: float) -> np.ndarray:
    """An x-ray made from the card's Geometry section alone (float64 numpy, none of tomodata's code):
    voxel centres at (2i + 1)/N − 1, trilinear with zero padding, p = R @ (u, v, w), midpoints w_k,
    opacity 1 − exp(−chi · mean_k mu)."""
    c = (2 * np.arange(size) + 1) / size - 1
    w = (2 * np.arange(steps) + 1) / steps - 1
    W, V, U = np.meshgrid(w, c, c, indexing="ij")
    p = np.stack([U, V, W], -1) @ R.T  # (steps, S, S, (x, y, z))
    pad = np.pad(vol.astype(np.float64), 1)  # zeros around: mu falls to 0 at the faces
    idx = [((p[..., a] + 1) * n - 1) / 2 + 1 for a, n in zip((2, 1, 0), vol.shape)]  # (z, y, x), padded
    lo = [np.floor(f).astype(int) for f in idx]
    mu = np.zeros(p.shape[:-1])
    for corner in np.ndindex(2, 2, 2):
        weight = np.ones_like(mu)
        at = []
        for f, i0, d, n in zip(idx, lo, corner, pad.shape):
            weight *= (f - i0) if d else (1 - (f - i0))
            at.append(np.clip(i0 + d, 0, n - 1))
        mu += weight * pad[tuple(at)]
    mu[(np.abs(p) > 1).any(-1)] = 0.0
    return 1 - np.exp(-chi * mu.mean(0))


def test_an_outsider_re_renders_the_images_from_the_card(demo_data_export):
    """The card's Geometry section is enough: a renderer written from it alone gives every stored image
    (mirrored ones too) within 1 uint16 step, as the card says, and its view recipe gives the rotations."""
    out, _ = demo_data_export
    card = (out / "README.md").read_text()
    g = zarr.open_group(str(out / "dataset.zarr"), mode="r", use_consolidated=False)
    attrs = g.attrs.asdict()
    assert "## Geometry" in card and "within 1 uint16 step" in card
    for text in attrs["geometry"].values():
        assert text in card
    assert "numpy.random.default_rng(seed)" in card
    size, steps, chi = attrs["image_size"], attrs["steps"], attrs["chi"]
    worst = 0
    for name in ("procedural_00", "procedural_01", "procedural_02"):
        sp = g[f"species/{name}"]
        vol, rots, images = sp["volume/0"][:], sp["rotations"][:], sp["images"][:]
        for s, (v, m) in enumerate(zip(sp["views"][:], sp["mirrored"][:])):
            img = _outsider_render(vol, rots[v], size, steps, chi)
            img = img[::-1, :] if m else img
            q = np.round(np.clip(img, 0, 1) * 65535).astype(np.int64)
            worst = max(worst, int(np.abs(q - images[s]).max()))
        # the views, re-derived from the card's recipe
        n, seed = attrs["n_views"], attrs["view_scheme"]["seed"]
        rng = np.random.default_rng(seed)
        phi0, j = rng.uniform(0, 2 * np.pi), rng.uniform(-0.25, 0.25, size=n)
        z = 1 - (np.arange(n) + 0.5 + j) / n
        phi = phi0 + 2 * np.pi * np.arange(n) / ((1 + 5**0.5) / 2) ** 2
        d = np.stack([np.sqrt(np.maximum(0, 1 - z * z)) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], -1)
        th, ph = np.arccos(z), np.arctan2(d[:, 1], d[:, 0])
        e_th = np.stack([np.cos(th) * np.cos(ph), np.cos(th) * np.sin(ph), -np.sin(th)], -1)
        e_ph = np.stack([-np.sin(ph), np.cos(ph), np.zeros(n)], -1)
        np.testing.assert_allclose(np.stack([e_th, e_ph, d], -1), rots, atol=1e-12)
    assert worst <= 1


def test_card_geometry_states_the_agreement_of_the_stores_encoding(demo_data_export):
    out, _ = demo_data_export
    attrs = json.loads((out / "recipe/store_attrs.json").read_text())
    assert "within 1 uint16 step" in "\n".join(_geometry(attrs))
    attrs["encoding"]["images"]["dtype"] = "float16"  # a float16 store: no uint16 steps to speak of
    text = "\n".join(_geometry(attrs))
    assert "float16 rounding" in text and "uint16 step" not in text


def test_urls_go_into_croissant_card_and_provenance(demo, tmp_path, capsys):
    out = tmp_path / "pub"
    url, code = "https://data.example.org/sit", "https://git.example.org/tomo"
    export.export_dataset(demo, out, url=url, code_url=code)
    assert json.loads((out / "croissant.json").read_text())["url"] == url
    card = (out / "README.md").read_text()
    assert f"* this dataset: {url}" in card and f"published at {code}" in card and f"code ({code})" in card
    prov = json.loads((out / "provenance.json").read_text())["export"]
    assert prov["dataset_url"] == url and prov["code_url"] == code
    assert sha256sum_check(out).returncode == 0
    with pytest.raises(ValueError, match=r"code_url \(--code-url\) must be an absolute http"):
        export.export_dataset(demo, tmp_path / "bad", code_url="git.example.org/tomo")
    assert not (tmp_path / "bad").exists()
    # without --url the CLI says croissant.json's url is a placeholder (stderr; stdout stays the JSON)
    assert main(["export", str(demo), str(tmp_path / "cli")]) == 0
    cap = capsys.readouterr()
    assert "url is a placeholder" in cap.err and json.loads(cap.out)["mode"] == "data"
    assert re.search(r"\[export: store\] \d+/\d+ file \(100 %\), .* in all", cap.err)  # progress on stderr
    doc = json.loads((tmp_path / "cli/croissant.json").read_text())
    assert doc["url"] == export.URL_PLACEHOLDER
    # Croissant 1.1 requires a creator: without one the CLI says so; given, it is in croissant, card, provenance
    assert "croissant.json has no creator" in cap.err and "creator" not in doc
    args = ["export", str(demo), str(tmp_path / "by"), "--creator", "Ada Lovelace", "--organization", "Lab X"]
    assert main([*args, "--dataset-version", "2.1"]) == 2  # not MAJOR.MINOR.PATCH: refused, nothing written
    assert "MAJOR.MINOR.PATCH" in capsys.readouterr().err and not (tmp_path / "by").exists()
    assert main([*args, "--dataset-version", "2.1.0"]) == 0
    assert "no creator" not in capsys.readouterr().err
    makers = [{"@type": "sc:Person", "name": "Ada Lovelace"}, {"@type": "sc:Organization", "name": "Lab X"}]
    assert json.loads((tmp_path / "by/croissant.json").read_text())["creator"] == makers
    assert "* made by: Ada Lovelace, Lab X" in (tmp_path / "by/README.md").read_text()
    assert json.loads((tmp_path / "by/provenance.json").read_text())["export"]["creators"] == makers
    # the dataset's version, not the code's (croissant's version was tomodata's)
    assert json.loads((tmp_path / "by/croissant.json").read_text())["version"] == "2.1.0"
    assert json.loads((tmp_path / "cli/croissant.json").read_text())["version"] == "1.0.0"
    assert "* dataset version: 2.1.0" in (tmp_path / "by/README.md").read_text()
    assert json.loads((tmp_path / "by/provenance.json").read_text())["export"]["dataset_version"] == "2.1.0"
    assert export.verify_export(tmp_path / "by") == []


def test_sha256sums_verify_with_sha256sum(demo_data_export):
    out, _ = demo_data_export
    listed = [line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()]
    assert listed == sorted(listed)
    every = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert listed == [p for p in every if p != "SHA256SUMS"]
    r = sha256sum_check(out)
    assert r.returncode == 0, r.stdout + r.stderr


def test_tampering_is_detected(demo_data_export, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(demo_data_export[0], out)
    assert export.verify_export(out) == []
    shard = next((out / "dataset.zarr/species/procedural_01/images").rglob("c/*/0/0"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    problems = export.verify_export(out)
    rel = shard.relative_to(out).as_posix()
    assert any(p.startswith(rel) and "sha256" in p for p in problems), problems
    assert any("procedural_01" in p and p.startswith("dataset.zarr:") for p in problems), problems
    assert sha256sum_check(out).returncode != 0
    # an added file and an edited table are reported too
    (out / "extra.txt").write_text("x")
    with open(out / "samples.csv", "a") as f:
        f.write("procedural_09/0,procedural_09,train,0,0,false,x\n")
    problems = export.verify_export(out)
    assert any(p.startswith("extra.txt") and "not listed" in p for p in problems)
    assert any(p.startswith("samples.csv") for p in problems)


def _resum(out: Path, rel: str) -> None:
    """Rewrite ``rel``'s line of ``out/SHA256SUMS`` to its present sha256 (a consistent forgery)."""
    digest = hashlib.sha256((out / rel).read_bytes()).hexdigest()
    lines = [
        f"{digest}  {rel}" if ln.endswith(f"  {rel}") else ln for ln in (out / "SHA256SUMS").read_text().splitlines()
    ]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def test_forgeries_that_keep_sha256sums_consistent_are_detected(demo_data_export, tmp_path):
    """Edits that SHA256SUMS alone cannot see (helper-83: each check could be removed with every test
    passing): recorded array checksums that no longer match the store, a Croissant sha256 that
    disagrees with SHA256SUMS, a file replaced by a symbolic link."""
    out = tmp_path / "sums"
    shutil.copytree(demo_data_export[0], out)
    sums = json.loads((out / "recipe/checksums.json").read_text())
    sums["species"]["procedural_00"]["arrays_sha256"]["volume"] = "0" * 64
    (out / "recipe/checksums.json").write_text(json.dumps(sums))
    _resum(out, "recipe/checksums.json")
    problems = export.verify_export(out)
    assert "dataset.zarr: species 'procedural_00' arrays disagree with recipe/checksums.json" in problems, problems
    out = tmp_path / "croissant"
    shutil.copytree(demo_data_export[0], out)
    cr = json.loads((out / "croissant.json").read_text())
    fo = next(d for d in cr["distribution"] if d.get("@type") == "cr:FileObject" and d.get("sha256"))
    fo["sha256"] = "0" * 64
    (out / "croissant.json").write_text(json.dumps(cr))
    _resum(out, "croissant.json")
    problems = export.verify_export(out)
    assert any(p.startswith("croissant.json: sha256 of") and "disagrees with SHA256SUMS" in p for p in problems), (
        problems
    )
    out = tmp_path / "link"
    shutil.copytree(demo_data_export[0], out)
    (out / "species.csv").rename(out / "species.real.csv")
    (out / "species.csv").symlink_to("species.real.csv")
    assert "species.csv: is a symbolic link" in export.verify_export(out)


def test_files_croissant_names_are_checked_even_when_dropped_from_sha256sums(demo_data_export, tmp_path):
    """A file Croissant describes, deleted together with its SHA256SUMS line, is still reported
    (helper-69: sha256sum -c and verify_export both passed), and so is a species' FileSet gone."""
    out = tmp_path / "copy"
    shutil.copytree(demo_data_export[0], out)
    sums = (out / "SHA256SUMS").read_text().splitlines()
    keep = [ln for ln in sums if not ln.endswith((" species.csv", " splits/test.txt"))]
    keep = [ln for ln in keep if "dataset.zarr/species/procedural_02/" not in ln]
    (out / "SHA256SUMS").write_text("\n".join(keep) + "\n")
    (out / "species.csv").unlink()
    (out / "splits" / "test.txt").unlink()
    shutil.rmtree(out / "dataset.zarr" / "species" / "procedural_02")
    problems = export.verify_export(out)
    assert "croissant.json: the FileObject species.csv is missing" in problems, problems
    assert "croissant.json: the FileObject splits/test.txt is missing" in problems
    assert any("FileSet dataset.zarr/species/procedural_02/**" in p for p in problems)


# ------------------------------------------------------------------------------------------ recipe-only


def test_recipe_only_export_of_demo(demo, tmp_path):
    out = tmp_path / "recipe"
    summary = export.export_dataset(demo.parent, out, recipe_only=True)  # the build-demo folder works too
    assert summary["mode"] == "recipe-only" and summary["licence"] == "cc0-1.0"
    assert not (out / "dataset.zarr").exists()
    assert export.verify_export(out) == []
    assert sha256sum_check(out).returncode == 0
    doc = json.loads((out / "croissant.json").read_text())
    assert not any(d["@id"].startswith(("zarr/", "dataset.zarr")) for d in doc["distribution"])
    records = croissant_records(out / "croissant.json", "samples")
    assert records is None or len(records) == 24
    card = (out / "README.md").read_text()
    assert front_matter(card)["license"] == "cc0-1.0" and "recipe-only" in card
    assert "tomo build-demo" in card  # how to rebuild
    # the tables name dataset.zarr/... paths the export does not hold: said so (they read "in the export")
    fields = {f["name"]: f["description"] for rs in doc["recordSet"] for f in rs["field"]}
    assert "Rebuild section makes" in fields["group"] and "Rebuild section makes" in fields["images_array"]
    assert "paths are those of a data export" in card


def test_recipe_verifies_a_rebuild(demo, tmp_path):
    out = tmp_path / "recipe"
    export.export_dataset(demo, out, recipe_only=True)
    rebuilt = tmp_path / "rebuilt"
    assert main(["build-demo", "-o", str(rebuilt), *DEMO_ARGS]) == 0
    assert export.verify_rebuild(rebuilt, out) == []
    other = tmp_path / "other"
    assert (
        main(
            [
                "build-demo",
                "-o",
                str(other),
                *DEMO_ARGS[:-6],
                "--volume-size",
                "32",
                "--steps",
                "31",
                "--backend",
                "cpu",
            ]
        )
        == 0
    )
    problems = export.verify_rebuild(other, out)
    assert problems and all("images" in p for p in problems), problems  # only the images depend on steps
    assert all("images='skip'" in p for p in problems), problems  # the message says how to check the rest
    assert export.verify_rebuild(other, out, images="skip") == []
    # where the volume differs too, the images follow from it: no backend hint (helper-96: it named
    # the backend and images='skip' for a rebuild whose cubes differed)
    sums = json.loads((out / "recipe/checksums.json").read_text())
    name = next(iter(sums["species"]))
    sums["species"][name]["arrays_sha256"]["volume"] = "0" * 64
    (out / "recipe/checksums.json").write_text(json.dumps(sums))
    problems = export.verify_rebuild(other, out)
    mine = [p for p in problems if p.startswith(f"species {name!r}")]
    assert any("array volume " in p for p in mine) and any("array images" in p for p in mine), mine
    assert not any("images='skip'" in p for p in mine), mine
    assert all("images='skip'" in p for p in problems if p not in mine), problems  # the others: images alone
    # a rebuild whose splits are not the recipe's (helper-83: the check could be removed, untested)
    sums = json.loads((out / "recipe/checksums.json").read_text())
    name, entry = next(iter(sums["species"].items()))
    was, entry["split"] = entry["split"], "val" if entry["split"] != "val" else "train"
    (out / "recipe/checksums.json").write_text(json.dumps(sums))
    assert f"species {name!r}: split {was!r}, the recipe says {entry['split']!r}" in export.verify_rebuild(rebuilt, out)


def test_verify_rebuild_names_a_missing_or_foreign_checksums_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not an export folder \(no recipe/checksums\.json\)"):
        export.verify_rebuild(tmp_path / "x.zarr", tmp_path)
    (tmp_path / "recipe").mkdir()
    for text, said in (("[]", "not an object"), ('{"files": 1}', "lacks species"), ('{"species": 2}', "not a mapping")):
        (tmp_path / "recipe" / "checksums.json").write_text(text)
        with pytest.raises(ValueError, match=rf"export checksums .*checksums\.json.*{said}"):
            export.verify_rebuild(tmp_path / "x.zarr", tmp_path)


@pytest.mark.parametrize("view_sets", ["shared", "per_species"])
def test_the_cards_build_demo_line_rebuilds_the_store(tmp_path, view_sets):
    """The card's one `tomo build-demo` line makes the same store again, splits and view sets included."""
    src = tmp_path / "src"
    args = demo_args(species=3, val=1, test=1, views=2, size=16)
    assert main(["build-demo", "-o", str(src), *args, "--view-sets", view_sets]) == 0
    out = tmp_path / "recipe"
    export.export_dataset(src, out, recipe_only=True)
    line = next(ln for ln in (out / "README.md").read_text().splitlines() if ln.startswith("tomo build-demo"))
    words = shlex.split(line)
    assert "--val" in words and "--test" in words and words[words.index("--view-sets") + 1] == view_sets, line
    card = (out / "README.md").read_text()
    assert ("each species from its own views" in card) == (view_sets == "per_species")
    assert ("each species with its own seed: seed of species NAME = " in card) == (view_sets == "per_species")
    # the card's lines run as written in the export folder: the rebuild goes beside it, named after it
    # (the export stays as published; two exports in one folder do not share it), and the check finds it
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert subprocess.run(["bash", "-c", line], cwd=out, env=env, capture_output=True).returncode == 0
    assert export.verify_rebuild(tmp_path / "recipe-rebuilt", out) == []
    check = re.search(r"`(python -c .*?verify_rebuild.*?)` \(in the export folder\)", card)
    assert check, card
    proc = subprocess.run(["bash", "-c", check.group(1)], cwd=out, env=env, capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_a_store_not_finalised_exports_with_a_warning(tmp_path, capsys):
    src = tiny_store(tmp_path / "s.zarr", ["CC0-1.0"] * 2, finalize=False)
    with pytest.warns(export.NotFinalisedWarning, match="is not finalised"):
        summary = export.export_dataset(src, tmp_path / "out")
    assert any("not finalised" in n for n in summary["warnings"])
    assert json.loads((tmp_path / "out/provenance.json").read_text())["store"]["finalized"] is False
    assert main(["export", str(src), str(tmp_path / "out2")]) == 0  # tomo export: said once, not twice
    assert capsys.readouterr().err.lower().count("is not finalised") == 1


def test_an_export_folder_that_cannot_be_made_is_named(demo, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["export", str(demo), str(tmp_path / "afile" / "out")]) == 2
    assert f"cannot create the export folder {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file" in (
        capsys.readouterr().err
    )
    if Path("/proc/self").is_dir():  # a folder in which nothing can be made
        assert main(["export", str(demo), "/proc/out-of-reach"]) == 2
        err = capsys.readouterr().err
        assert "cannot create the export folder /proc/out-of-reach" in err and ".partial" not in err


# ------------------------------------------------------------------------------------------ licences


@pytest.mark.parametrize(
    "entry, cls",
    [
        (dict(licence=UTCT_LICENCE, source="https://digimorph.org/specimens/x/y.mp4"), "restricted"),
        (dict(licence="research use only, no redistribution", source="/data/x.nrrd"), "restricted"),
        (dict(licence="", source="https://www.digimorph.org/specimens/x/y.mp4"), "restricted"),
        # a restriction wins over an open licence named beside it, and a DigiMorph source over any text
        # (helper-83: no case combined them, so either rule could be dropped with every test passing)
        (dict(licence="CC BY 4.0, no redistribution", source="/d/x"), "restricted"),
        (dict(licence="MIT License, all rights reserved", source="/d/x"), "restricted"),
        (dict(licence="CC BY 4.0", source="https://digimorph.org/specimens/x/y.mp4"), "restricted"),
        (dict(licence="procedural (tomodata.phantoms): free, no restrictions", source="movies/p.mp4"), "free"),
        (dict(source="tomodata.phantoms species 0 seed 0"), "free"),
        (dict(licence="CC-BY-4.0 (MorphoSource media 1234)", source="https://example.org/a.nii.gz"), "open"),
        (dict(licence="CC0", source="/data/x.tif"), "open"),
        (dict(licence="ask the lab", source="/data/x.tif"), "unknown"),
        (dict(source="/data/x.tif"), "unknown"),
    ],
)
def test_classify_licence(entry, cls):
    c = export.classify_licence(entry)
    assert c["class"] == cls
    assert c["redistribution"] is (cls in ("free", "open"))
    if cls == "free":
        assert c["spdx"] == "CC0-1.0"


def test_utct_store_defaults_to_recipe_only(utct_store, tmp_path):
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(
        "id\tspecies\tsource\tsource_kind\tspacing_mm\tsplit\tlicence\n"
        f"Didelphis_virginiana\tDidelphis virginiana\thttps://digimorph.org/specimens/Didelphis_virginiana/x.mp4"
        f"\tmovie\t0.1,0.1,0.1\ttrain\t{UTCT_LICENCE}\n"
        f"Felis_catus\tFelis catus\thttps://digimorph.org/specimens/Felis_catus/x.mp4\tmovie\t0.1,0.1,0.1\tval"
        f"\t{UTCT_LICENCE}\n"
    )
    config = tmp_path / "build.yaml"
    config.write_text("views: 3\nbackend: cpu\n")
    out = tmp_path / "export"
    with warnings.catch_warnings():
        warnings.simplefilter("error", export.RedistributionWarning)
        summary = export.export_dataset(utct_store, out, manifest=manifest, config=config)
    assert summary["mode"] == "recipe-only"
    assert set(summary["licence_classes"].values()) == {"restricted"}
    assert not (out / "dataset.zarr").exists()
    assert (out / "recipe/manifest.tsv").read_bytes() == manifest.read_bytes()
    assert (out / "recipe/config.yaml").read_bytes() == config.read_bytes()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"] == {"views": 3, "backend": "cpu"} and prov["manifest_file"] == "recipe/manifest.tsv"
    sums = json.loads((out / "recipe/checksums.json").read_text())
    assert sums["species"]["Felis_catus"]["source_checksum"] == "2" * 64
    assert set(sums["species"]["Felis_catus"]["arrays_sha256"]) == {
        "volume",
        "rotations",
        "mirrored",
        "views",
        "images",
    }
    card = (out / "README.md").read_text()
    fm = front_matter(card)
    assert fm["license"] == "other" and "recipe-only" in fm["license_name"]
    assert "Redistribution is not allowed" in card and UTCT_LICENCE in card and "no redistribution" in card
    assert "bash recipe/rebuild.sh" in card  # the recipe that rebuilds (recipe/specimens.tsv, every setting)
    assert "mammal skull x-rays" in fm["pretty_name"] and "computed-tomography" in fm["tags"]
    doc = json.loads((out / "croissant.json").read_text())
    assert "mammals" in doc["keywords"] and "synthetic" not in doc["keywords"]
    # prose terms are CreativeWork items (Croissant 1.1: URL or CreativeWork), the recipe's licence a URL
    prose = [lic["name"] for lic in doc["license"] if isinstance(lic, dict)]
    assert all(lic.get("@type") == "sc:CreativeWork" for lic in doc["license"] if isinstance(lic, dict))
    assert any("no redistribution" in t for t in prose) and doc["license"][0].startswith("https://")
    records = croissant_records(out / "croissant.json", "species")
    assert records is None or len(records) == 2
    assert export.verify_export(out) == [] and sha256sum_check(out).returncode == 0

    # data only on explicit request, with a warning, and marked NOT FOR REDISTRIBUTION
    out2 = tmp_path / "internal"
    with pytest.warns(export.RedistributionWarning, match="Felis_catus"):
        summary = export.export_dataset(utct_store, out2, recipe_only=False)
    assert summary["mode"] == "data" and summary["not_for_redistribution"] is True
    assert (out2 / "dataset.zarr/zarr.json").is_file()
    card = (out2 / "README.md").read_text()
    assert front_matter(card)["license"] == "other" and "NOT FOR REDISTRIBUTION" in card
    first = json.loads((out2 / "croissant.json").read_text())["license"][0]
    assert first == {"@type": "sc:CreativeWork", "name": "NOT FOR REDISTRIBUTION"}
    assert export.verify_export(out2) == []

    # a manifest that lacks a species of the store is refused
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(manifest.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(ValueError, match="Felis_catus"):
        export.export_dataset(utct_store, tmp_path / "x", manifest=bad)
    # one of other splits and source checksums is refused, every disagreement named
    other = manifest.read_text().replace("\tval\t", "\ttrain\t")
    other = other.replace(
        "0.1,0.1,0.1\ttrain\t" + UTCT_LICENCE + "\n", "0.1,0.1,0.1\ttrain\t" + UTCT_LICENCE + "\t" + "c" * 64 + "\n", 1
    )
    bad.write_text(
        other.replace("source_kind\tspacing_mm\tsplit\tlicence", "source_kind\tspacing_mm\tsplit\tlicence\tsha256")
    )
    with pytest.raises(ValueError, match=r"not the one this store was built from") as ei:
        export.export_dataset(utct_store, tmp_path / "x", manifest=bad)
    assert "Felis_catus: split 'train', the store's 'val'" in str(ei.value)
    assert "Didelphis_virginiana: sha256 cccccccccccc…" in str(ei.value)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "licences, mode, card_licence",
    [
        (["CC-BY-4.0", "CC-BY-4.0"], "data", "cc-by-4.0"),
        (["CC-BY-4.0", "CC0-1.0"], "data", "other"),
        (["CC-BY-4.0", "ask the lab"], "recipe-only", "other"),  # unknown terms are not cleared
    ],
)
def test_default_mode_follows_the_least_cleared_species(tmp_path, licences, mode, card_licence):
    path = tiny_store(tmp_path / "s.zarr", licences, sources=["/data/a.nii.gz", "/data/b.nii.gz"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", export.RedistributionWarning)
        summary = export.export_dataset(path, tmp_path / "out")
    assert summary["mode"] == mode and summary["licence"] == card_licence
    unknown = "ask the lab" in licences  # an unknown licence: a warning in the summary, the card and on stderr
    assert any(issubclass(w.category, export.UnknownLicenceWarning) for w in caught) == unknown
    assert ("is not a recognised licence" in (tmp_path / "out/README.md").read_text()) == unknown
    assert front_matter((tmp_path / "out/README.md").read_text())["license"] == card_licence
    assert export.verify_export(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------ writing


def test_out_folder_rules_and_atomicity(demo, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_dataset(demo, out, recipe_only=True)
    with pytest.raises(FileExistsError, match="not an earlier export"):
        export.export_dataset(demo, out, recipe_only=True, overwrite=True)
    assert (out / "precious.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="contain"):
        export.export_dataset(demo, demo / "export")

    fresh = tmp_path / "fresh"
    export.export_dataset(demo, fresh, recipe_only=True)
    first = (fresh / "SHA256SUMS").read_text()
    export.export_dataset(demo, fresh, recipe_only=False, overwrite=True)  # an earlier export is replaced
    assert (fresh / "dataset.zarr").is_dir() and (fresh / "SHA256SUMS").read_text() != first
    assert export.verify_export(fresh) == []

    # a failure mid-way leaves nothing: no OUT, no temporary folder
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_card", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_dataset(demo, tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # ... and an existing export survives a failed overwrite
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_dataset(demo, fresh, overwrite=True)
    assert export.verify_export(fresh) == []


def test_refuses_a_store_that_does_not_validate(demo, tmp_path):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(demo, broken)
    shutil.rmtree(broken / "species" / "procedural_02" / "images")
    with pytest.raises(ValueError, match="procedural_02"):
        export.export_dataset(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError):
        export.export_dataset(tmp_path / "nothing", tmp_path / "out")


@pytest.mark.parametrize("stray", ["species/Secret/", ".notes.txt"])
def test_refuses_files_outside_the_species_table(demo, tmp_path, stray):
    """A species group the table does not name (a copy of another's: the store still validates, with a
    warning; its licence never checked) or any other file in the store is not published: the export
    refuses and names it (helper-69: it was copied silently)."""
    store = tmp_path / "s.zarr"
    shutil.copytree(demo, store)
    if stray.endswith("/"):
        shutil.copytree(store / "species" / "procedural_00", store / stray)
    else:
        (store / stray).write_text("notes")
    with pytest.raises(ValueError, match=f"outside its metadata and the species of its table .*{stray}"):
        export.export_dataset(store, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_is_reproducible_with_source_date_epoch(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "a", tmp_path / "b"
    export.export_dataset(demo, a, recipe_only=True)
    export.export_dataset(demo, b, recipe_only=True)
    assert (a / "SHA256SUMS").read_text() == (b / "SHA256SUMS").read_text()
    assert json.loads((a / "provenance.json").read_text())["exported_at"].startswith("2023-11-14T22:13:20")


# ------------------------------------------------------------------ the recipe rebuilds the store
def test_recipe_rebuilds_the_store_bit_identically(tmp_path, capsys):
    """A store made with per-specimen settings (window, background, orientation, crop, spacing, cube size)
    exported recipe-only; bash recipe/rebuild.sh makes it again and verify_rebuild finds no difference."""
    src = tmp_path / "src"
    assert main(["demo-movies", "-o", str(src), "--species", "2", "--held-out", "1", "--movie-size", "24"]) == 0
    manifest = src / "manifest.tsv"
    lines = manifest.read_text().splitlines()
    lines[1] += "\twindow\tbackground\torientation\tcrop\tattribution"
    lines[2] += "\t10,250\t0.02\tz,-y,x\tlargest\tA. Lab 2026, scan 7 | https://example.org/7"
    lines[3] += "\t\t\tx,y,z\tnone\t"
    manifest.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["fetch", str(manifest), "-d", str(tmp_path / "f")]) == 0
    record = tmp_path / "fetched.tsv"
    record.write_text(capsys.readouterr().out)
    cubes = []
    for sid in ("procedural_00", "procedural_01"):
        cubes.append(str(tmp_path / f"{sid}.npz"))
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
                    cubes[-1],
                    "--size",
                    "16",
                    "--content-key",
                    f"demo:0:24:test:{sid}",
                ]
            )
            == 0
        )
    store = tmp_path / "d.zarr"
    opts = ["--views", "3", "--size", "16", "--steps", "16", "--volume-size", "16", "--chi", "7.5"]
    merged = {"data": {"cube": {"size": 16}}, "note": 'it\'s "quoted" $HOME `x`'}  # survives the shell
    assert (
        main(
            [
                "store-create",
                str(store),
                "--manifest",
                str(manifest),
                "--cubes",
                *cubes,
                *opts,
                "--config-json",
                json.dumps(merged),
            ]
        )
        == 0
    )
    for cube in cubes:
        assert main(["render-species", str(store), "--cube", cube, "--backend", "cpu"]) == 0
    assert main(["finalize", str(store)]) == 0

    out = tmp_path / "export"
    summary = export.export_dataset(store, out, recipe_only=True)
    assert any("local source" in w for w in summary["warnings"])  # the rebuild needs the local files
    table = (out / "recipe/specimens.tsv").read_text()
    assert "10,250\t0.02\tz,-y,x\tlargest" in table and "x,y,z\tnone" in table
    assert table.count("\tlocal: supply this file") == 2  # the local sources are marked
    script = (out / "recipe/rebuild.sh").read_text()
    assert "--size 16" in script and "--window=10,250" in script and "--chi 7.5" in script
    assert "--content-key demo:0:24:test:procedural_00" in script and "--config-json" in script
    assert json.loads((out / "recipe/workflow_config.json").read_text()) == merged
    assert "is not a recognised licence" not in (out / "README.md").read_text()

    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        REBUILD_WORK=str(tmp_path / "work"),
    )
    proc = subprocess.run(
        ["bash", "recipe/rebuild.sh", str(tmp_path / "rebuilt.zarr")],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert export.verify_rebuild(tmp_path / "rebuilt.zarr", out) == []
    assert export.verify_export(out) == []  # the rebuild wrote nothing into the export
    # the stores agree beyond the arrays: every species setting, the recorded config, the rendering settings
    a, b = (
        zarr.open_group(str(p), mode="r", use_consolidated=False).attrs.asdict()
        for p in (store, tmp_path / "rebuilt.zarr")
    )
    local = ("source", "source_resolved")  # the rebuild reads the sources at their absolute paths
    assert [{k: v for k, v in e.items() if k not in local} for e in a["species"]] == [
        {k: v for k, v in e.items() if k not in local} for e in b["species"]
    ]
    assert [e["source_resolved"] for e in a["species"]] == [e["source"] for e in b["species"]]
    assert [e.get("attribution") for e in b["species"]] == ["A. Lab 2026, scan 7 | https://example.org/7", None]
    assert b["provenance"]["config"]["config"] == merged
    skip = ("species", "provenance", "timestamps", "completion")
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


@pytest.mark.parametrize(
    "text, spdx",
    [
        ("public domain (UNC CThead)", "LicenseRef-PublicDomain"),
        ("GPL-2", "GPL-2.0-only"),
        ("GPLv2+", "GPL-2.0-or-later"),
        ("GNU General Public License v3", "GPL-3.0-only"),
        ("GPL-3.0 (LICENSE)", "GPL-3.0-only"),
        ("cc-by-4.0", "CC-BY-4.0"),
        ("CC BY-NC 4.0", "CC-BY-NC-4.0"),
        ("CC0", "CC0-1.0"),
        ("MIT", "MIT"),
        ("BSD-3-Clause", "BSD-3-Clause"),
        ("VTK BSD-3-Clause", "BSD-3-Clause"),
        ("BSD-2-Clause (LICENSE)", "BSD-2-Clause"),
        ("Apache License 2.0", "Apache-2.0"),
        ("public domain", "LicenseRef-PublicDomain"),
        ("GPLv2", "GPL-2.0-only"),
        ("GNU GPL v2", "GPL-2.0-only"),
        ("GNU GPL v2 or later", "GPL-2.0-or-later"),
        ("CC BY 4.0", "CC-BY-4.0"),
        ("Creative Commons Attribution-NonCommercial 4.0 International", "CC-BY-NC-4.0"),
        ("CC BY-SA 3.0", "CC-BY-SA-3.0"),
        ("cc-by-nc-nd-4.0", "CC-BY-NC-ND-4.0"),
        ("CC-BY 2.5", "CC-BY-2.5"),
        ("CC0 1.0 public domain dedication", "CC0-1.0"),
        ("ODbL", "ODbL-1.0"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("AGPL-3.0", "AGPL-3.0-only"),
        ("MIT License", "MIT"),
        ("MIT", "MIT"),
        ("Licensed under the MIT license", "MIT"),
        ("License: MIT", "MIT"),
        ("Licensed under the MIT license.", "MIT"),
        ("CC BY 4.0 (no permission required)", "CC-BY-4.0"),
        ("Public domain (no licence required)", "LicenseRef-PublicDomain"),
        # a full stop after the version ends the sentence (was unknown; helper-71)
        ("CC BY 4.0.", "CC-BY-4.0"),
        ("Licensed under CC BY-SA 2.5.", "CC-BY-SA-2.5"),
        # the IGO ports of CC 3.0 are their own licences (were read as the unported ones; helper-69)
        ("CC BY 3.0 IGO", "CC-BY-3.0-IGO"),
        ("Creative Commons Attribution-NonCommercial-ShareAlike 3.0 IGO", "CC-BY-NC-SA-3.0-IGO"),
        ("CC BY-NC 3.0 IGO", "LicenseRef-CC-BY-NC-3.0-IGO"),
        # the long forms of ODbL, LGPL and AGPL (were unknown; helper-96)
        ("Open Database License", "ODbL-1.0"),
        ("GNU Lesser General Public License v2.1", "LGPL-2.1-only"),
        ("GNU Lesser General Public License, version 2.1 or later", "LGPL-2.1-or-later"),
        ("GNU Affero General Public License v3.0 or later", "AGPL-3.0-or-later"),
        # a clause the licence has itself is no added term
        ("Creative Commons Attribution-NonCommercial-ShareAlike 4.0 (non-commercial use only)", "CC-BY-NC-SA-4.0"),
        # a "not" that denies no licence (helper-100: these read as unknown for a while)
        ("CC BY 4.0. These data are not offered with any warranty", "CC-BY-4.0"),
        ("CC BY 4.0 (the scans are not licensed for clinical use)", "CC-BY-4.0"),
        ("CC BY 4.0; images are not released with patient identifiers", "CC-BY-4.0"),
        ("Public domain; not licensed", "LicenseRef-PublicDomain"),
        ("CC BY 4.0; commercial use is not restricted", "CC-BY-4.0"),
    ],
)
def test_licence_strings_to_spdx(text, spdx):
    got = export.classify_licence({"licence": text})
    assert got["spdx"] == spdx and got["class"] == "open", got
    assert ("non-commercial use only" in got["conditions"]) == ("-NC" in spdx)


@pytest.mark.parametrize(
    "text",
    [
        "ask the lab",
        "CC BY",
        "GPL",
        "BSD",
        "see website",
        "Used with permission of the MIT Press",
        "Not in the public domain; contact the curator",
        "no licence",
        "Licensed under the MIT Museum terms of use",
        "License: MIT Museum terms of use",
        "Expat collection",
        "never in the public domain",
        "not yet in the public domain",
        "Copyrighted, not released to the public domain",
        "CC BY 4.01",
        "CC BY 2.55",
        # a licence named only to deny it, or with terms it does not have (were open; helper-96)
        "This work is not licensed under CC BY 4.0",
        "not released under CC0",
        "CC BY-SA 4.0 (not for commercial use)",
        "MIT License, non-commercial use only",
        "CC BY 4.0; may not be modified",
        # restrictions and denials in other words (helper-100)
        "CC BY 4.0; commercial use forbidden",
        "CC BY 4.0; commercial use requires permission",
        "CC BY 4.0, not to be used commercially",
        "CC BY 4.0 for academic use only",
        "CC BY 4.0, for non-profit research only",
        "CC BY 4.0; derivatives not permitted",
        "CC BY 4.0; modifications are not allowed",
        "CC BY 4.0; no adaptations",
        "CC BY 4.0 unless otherwise noted; derived works must not be sold",
        "Licensed under CC BY 4.0. Not available for commercial use without permission",
        "This dataset is not under CC BY 4.0",
        "The CC BY 4.0 licence does not apply to these scans",
        "Not CC BY 4.0",
    ],
)
def test_unrecognised_licence_strings(text):
    assert export.classify_licence({"licence": text})["class"] == "unknown"


@pytest.mark.parametrize("text", ["(c) MIT Museum, all rights reserved", "All Rights Reserved"])
def test_all_rights_reserved_is_restricted(text):
    """Rights reserved is no licence to redistribute, whatever else the text names (helper-69: MIT)."""
    got = export.classify_licence({"licence": text})
    assert got["class"] == "restricted" and got["redistribution"] is False


def test_unknown_licence_is_a_warning_not_a_silent_switch(tmp_path, capsys):
    """tomo export: the unknown licence makes the export recipe-only, and says so on stderr and in the card."""
    path = tiny_store(tmp_path / "s.zarr", ["CC-BY-4.0", "ask the lab"], sources=["/data/a.nii.gz", "/data/b.nii.gz"])
    assert main(["export", str(path), str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["mode"] == "recipe-only"
    warn = "WARNING: species Felis_catus: licence 'ask the lab' is not a recognised licence"
    assert warn in captured.err and captured.err.count("is not a recognised licence") == 1
    assert "WARNING: species Felis_catus: local source /data/b.nii.gz" in captured.err
    card = (tmp_path / "out/README.md").read_text()
    assert "## Warnings" in card and "'ask the lab' is not a recognised licence" in card


def test_card_states_non_commercial_and_no_derivatives(tmp_path):
    path = tiny_store(tmp_path / "s.zarr", ["CC BY-NC 4.0", "CC BY-ND 4.0"], sources=["/d/a.nii", "/d/b.nii"])
    with pytest.warns(export.RedistributionWarning, match="Felis_catus: licence CC-BY-ND-4.0 forbids"):
        summary = export.export_dataset(path, tmp_path / "out")
    assert summary["mode"] == "data"
    card = (tmp_path / "out/README.md").read_text()
    assert "**Non-commercial use only** (CC-BY-NC-4.0): Didelphis_virginiana." in card
    assert "**No derivatives** (CC-BY-ND-4.0): Felis_catus." in card
    # the licence table's redistribution cell agrees with the warning (helper-96: it said "allowed")
    rows = {line.split("|")[1].strip(): line for line in card.splitlines() if line.startswith("| ")}
    assert (
        rows["Felis_catus"]
        .rstrip(" |")
        .endswith("not of these data (no derivatives: the cubes and x-rays are adaptations)")
    )
    assert rows["Didelphis_virginiana"].rstrip(" |").endswith("| allowed")


def test_attribution_goes_into_card_tables_and_croissant_and_its_absence_is_said(tmp_path, capsys):
    """CC BY asks for credit: the species' attribution (the manifest's column) is the card's credit column,
    species.csv's attribution and a Croissant field; a data export of a CC BY species without one warns
    (AttributionWarning, the summary, the card's Warnings, stderr), a recipe-only export does not."""
    credit = "A. Lab 2026, scan 7 | https://example.org/7"
    path = tiny_store(
        tmp_path / "s.zarr", ["CC BY 4.0", "ODC-By"], sources=["/d/a.nii", "/d/b.nii"], credits=(credit, "")
    )
    with pytest.warns(export.AttributionWarning, match="Felis_catus: licence ODC-By-1.0 asks to credit") as rec:
        summary = export.export_dataset(path, tmp_path / "out")
    assert [str(w.message) for w in rec if w.category is export.AttributionWarning][0].count("species ") == 1
    assert summary["mode"] == "data" and any("ODC-By-1.0 asks to credit" in w for w in summary["warnings"])
    card = (tmp_path / "out/README.md").read_text()
    assert "| species | split | licence | credit | class | redistribution |" in card
    assert "| Didelphis_virginiana | train | CC BY 4.0 | A. Lab 2026, scan 7 \\| https://example.org/7 | open |" in card
    assert "| Felis_catus | val | ODC-By | (none given) | open |" in card
    assert "> **Attribution** (CC-BY-4.0, ODC-By-1.0): Didelphis_virginiana, Felis_catus. Credit each" in card
    assert "## Warnings" in card and "asks to credit the creator" in card
    with open(tmp_path / "out/species.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["attribution"] for r in rows] == ["A. Lab 2026, scan 7 | https://example.org/7", ""]
    records = croissant_records(tmp_path / "out/croissant.json", "species")
    if records is not None:
        got = [r["species/attribution"] for r in records]
        assert [g.decode() if isinstance(g, bytes) else g for g in got][0].startswith("A. Lab 2026")
    assert export.verify_export(tmp_path / "out") == []
    # the command line prints it once; a recipe-only export holds no data and does not warn
    capsys.readouterr()
    assert main(["export", str(path), str(tmp_path / "out2")]) == 0
    assert capsys.readouterr().err.count("asks to credit the creator") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", export.AttributionWarning)
        export.export_dataset(path, tmp_path / "out3", recipe_only=True)


def test_a_card_without_attribution_licences_has_no_credit_column(demo_data_export):
    card = (demo_data_export[0] / "README.md").read_text()
    assert "| species | split | licence | class | redistribution |" in card and "**Attribution**" not in card


def recipe_attrs(species: list[dict], settings: StoreSettings) -> dict:
    """The store attributes a recipe reads, by hand: the species table, the settings, no provenance."""
    return {
        "species": species,
        "volume_size": settings.volume_size,
        "n_views": settings.n_views,
        "samples_per_species": settings.samples_per_species,
        "view_scheme": {"seed": settings.view_seed},
        "image_size": settings.image_size,
        "steps": settings.steps,
        "chi": settings.chi,
        "encoding": {"images": {"dtype": settings.image_encoding}},
        "provenance": {},
    }


def test_recipe_names_missing_local_sources_before_any_work(tmp_path):
    def entry(name, source):
        return {
            "name": name,
            "species": name,
            "source": source,
            "source_resolved": source,
            "source_kind": "nifti",
            "split": "train",
            "licence": "CC0",
            "source_checksum": "ab" * 32,
            "spacing_mm": [1, 1, 1],
        }

    attrs = recipe_attrs(
        [entry("m1", str(tmp_path / "gone.nii.gz")), entry("m2", "https://example.org/m2.nii.gz")],
        StoreSettings(volume_size=16, n_views=3, image_size=16, steps=16),
    )
    files, warns = recipe_files(attrs)
    assert len(warns) == 1 and "m1: local source" in warns[0]
    rows = [r.split("\t") for r in files["recipe/specimens.tsv"].splitlines()]
    assert rows[1][9].startswith("local:") and rows[2][9] == ""
    (tmp_path / "recipe").mkdir()
    for name in ("rebuild.sh", "specimens.tsv"):
        (tmp_path / "recipe" / name).write_text(files[f"recipe/{name}"])

    def rebuild():
        path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
        env = {"PATH": path, "REBUILD_WORK": str(tmp_path / "work")}  # default ../rebuild-work: beside the export
        return subprocess.run(
            ["bash", "recipe/rebuild.sh", "x.zarr"], cwd=tmp_path, capture_output=True, text=True, env=env
        )

    # by default the rebuild and its scratch folder go beside the export, named after it: two exports in
    # one folder do not share them (they shared ../rebuilt.zarr; helper-71)
    head = files["recipe/rebuild.sh"].split('RAW="$WORK/raw"')[0] + 'echo "$OUT|$WORK"\n'
    for name in ("a", "b"):
        (tmp_path / "two" / name / "recipe").mkdir(parents=True)
        (tmp_path / "two" / name / "recipe/head.sh").write_text(head)
        got = subprocess.run(["bash", "recipe/head.sh"], cwd=tmp_path / "two" / name, capture_output=True, text=True)
        where = Path(got.stdout.strip().split("|")[0]).parent
        assert got.stdout.strip() == f"{where}/{name}-rebuilt.zarr|{where}/{name}-rebuild-work", got
        assert where.resolve() == (tmp_path / "two").resolve()
    proc = rebuild()
    assert proc.returncode == 2 and "m1 (" in proc.stderr and "gone.nii.gz does not exist" in proc.stderr
    assert "m2" not in proc.stderr and not (tmp_path / "work").exists()
    # the row edited to where the file is now: the check reads specimens.tsv when it runs
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(tmp_path / "here.nii.gz"))
    text = (tmp_path / "recipe/specimens.tsv").read_text().replace(str(tmp_path / "gone.nii.gz"), "../here.nii.gz")
    (tmp_path / "recipe/specimens.tsv").write_text(text.replace("https://example.org/m2.nii.gz", "../here.nii.gz"))
    proc = rebuild()
    assert "cannot be read" not in proc.stderr and (tmp_path / "work").is_dir()
    assert proc.returncode != 0 and "sha256" in proc.stderr  # the recorded checksum is not this file's


def test_cube_settings_of_stores_without_the_ingest_record():
    """Old stores: settings from the table's fields, defaults for what they lack; the spacing a manifest
    states is the recorded one taken back through the orientation."""
    old = {"name": "a", "spacing_mm": [0.5, 0.25, 0.125], "slice_axis": "y"}
    ing = cube_settings(old, 32)
    assert ing == {
        "size": 32,
        "slice_axis": "y",
        "orientation": "z,y,x",
        "spacing": [0.5, 0.25, 0.125],
        "window": None,
        "background": None,
        "crop": "none",
        "allow_default_spacing": False,
        "content_key": None,
    }
    turned = dict(old, orientation="-x,z,y", window=[0, 100], crop="largest")
    ing = cube_settings(turned, 32)
    assert list(orient(np.zeros((2, 3, 4)), ing["spacing"], "-x,z,y")[1]) == turned["spacing_mm"]
    assert ing["window"] == [0, 100] and ing["crop"] == "largest"
    new = dict(
        old,
        ingest={
            "size": 16,
            "spacing": None,
            "slice_axis": "z",
            "orientation": "z,y,x",
            "window": None,
            "background": None,
            "crop": "none",
            "allow_default_spacing": True,
        },
        content_key="k",
    )
    assert cube_settings(new, 32) | {"content_key": "k"} == new["ingest"] | {"content_key": "k"}


def test_recipe_replays_alignments():
    """An aligned specimen: its row states the scan's settings, its transform goes to
    recipe/alignment/ID.json and rebuild.sh runs tomo align --replay before the cube."""
    summary = {
        "rotation_zyx": [[1, 0, 0], [0, 1, 0], [0, 0, 1]],
        "centre_mm_zyx": [1, 2, 3],
        "output_shape": [5, 5, 5],
        "output_spacing_zyx": [1, 1, 1],
        "background": 0.0,
        "scan": {"spacing": [0.1, 0.1, 0.1], "slice_axis": "z", "orientation": "z,-y,x"},
    }
    entry = {
        "name": "m1",
        "species": "Mus musculus",
        "source": "/data/m1.nii.gz",
        "source_resolved": "/data/m1.nii.gz",
        "source_kind": "nifti",
        "split": "train",
        "licence": "GPL-3.0",
        "source_checksum": "ab" * 32,
        "alignment": summary,
        "ingest": {
            "size": 64,
            "spacing": None,
            "slice_axis": "z",
            "orientation": "z,y,x",
            "window": None,
            "background": None,
            "crop": "none",
        },
    }
    attrs = recipe_attrs([entry], StoreSettings(volume_size=64, n_views=4, image_size=32, steps=32))
    files, warnings = recipe_files(attrs)
    assert json.loads(files["recipe/alignment/m1.json"])["centre_mm_zyx"] == [1, 2, 3]
    script = files["recipe/rebuild.sh"]
    assert '--replay "$HERE/alignment/m1.json"' in script and "--orientation z,-y,x" in script
    assert 'tomo cube "$ALIGNED/m1.nii.gz" --align-record "$ALIGNED/m1.json"' in script
    row = files["recipe/specimens.tsv"].splitlines()[1].split("\t")
    assert row[4] == "0.1,0.1,0.1" and row[12] == "z,-y,x" and warnings


# ------------------------------------------------------------------------------- standard volume files
def test_volumes_as_nifti_and_nrrd_in_ras_with_spacing(tmp_path):
    """Issue #15: `tomo export --volumes nifti|nrrd`: each species' canonical volume as a file 3D Slicer
    opens upright with its spacing (cube x → anterior, y → inferior, z → left; centre at the origin)."""
    src = tiny_store(tmp_path / "s.zarr", ["CC0-1.0"] * 2)
    ds = open_store(src)
    attrs = ds.attrs
    for fmt in ("nifti", "nrrd"):
        out = tmp_path / f"exp-{fmt}"
        assert main(["export", str(src), str(out), "--with-data", "--volumes", fmt]) == 0
        assert export.verify_export(out) == []  # the volume files are in SHA256SUMS
        suffix = ".nii.gz" if fmt == "nifti" else ".nrrd"
        assert f"| `volumes/<name>{suffix}` |" in (out / "README.md").read_text()  # the card's Contents
        doc = json.loads((out / "croissant.json").read_text())
        vols = [d for d in doc["distribution"] if d["@id"] == "volumes"]
        assert len(vols) == 1 and vols[0]["includes"] == f"volumes/*{suffix}"
        for e in attrs["species"]:
            vol = ds.volume(e["name"])
            f = out / "volumes" / (e["name"] + (".nii.gz" if fmt == "nifti" else ".nrrd"))
            if fmt == "nifti":
                img = nib.load(f)
                np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), vol)
                assert nib.aff2axcodes(img.affine) == ("A", "I", "L")
                assert np.allclose(img.affine @ [3.5, 3.5, 3.5, 1], [0, 0, 0, 1])  # centre at the origin
                assert img.header.get_xyzt_units()[0] == "unknown"  # no scale recorded for these species
            else:
                data, header = nrrd.read(str(f), index_order="C")
                np.testing.assert_array_equal(data, vol)
                assert header["space"] == "right-anterior-superior"
                np.testing.assert_allclose(header["space directions"], [[0, 1, 0], [0, 0, -1], [-1, 0, 0]])
    # one volume file removed with its SHA256SUMS line: the pattern still matches the other, the
    # species' file is named missing (helper-71)
    out = tmp_path / "exp-nrrd"
    gone = f"volumes/{attrs['species'][1]['name']}.nrrd"
    (out / gone).unlink()
    lines = [ln for ln in (out / "SHA256SUMS").read_text().splitlines() if not ln.endswith(" " + gone)]
    (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert export.verify_export(out) == [f"{gone}: a species' volume file is missing"]
    with pytest.raises(ValueError, match="which --recipe-only leaves out: give one of them"):
        export.export_dataset(src, tmp_path / "r", recipe_only=True, volumes="nifti")


def test_volumes_of_a_store_whose_terms_make_it_recipe_only(utct_store, tmp_path):
    with pytest.raises(ValueError, match=r"recipe-only export leaves out \(their terms .*--with-data"):
        export.export_dataset(utct_store, tmp_path / "r", volumes="nifti")


def test_card_and_croissant_texts_of_dotted_names_and_odd_sizes(utct_store):
    rows = _contents(["volumes/B6129PF1.J.nii.gz"], recipe_only=False, has_manifest=False)
    assert any(r.startswith("| `volumes/<name>.nii.gz` |") for r in rows)
    attrs = open_store(utct_store).attrs
    assert "level 1 its 2x2x2 mean; chunks" in _array_layout_text(attrs)  # 8³: two levels
    odd = {**attrs, "volume_size": 7}
    assert "level 0 of the OME-Zarr 0.5 image volume; chunks" in _array_layout_text(odd)


def test_canonical_volume_file_carries_the_recorded_millimetres(tmp_path):
    vol = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
    img = nib.load(write_canonical_volume(tmp_path / "v.nii.gz", vol, 0.25))
    assert img.header.get_zooms() == pytest.approx((0.25, 0.25, 0.25)) and img.header.get_xyzt_units()[0] == "mm"
    _, header = nrrd.read(str(write_canonical_volume(tmp_path / "v.nrrd", vol, 0.25)))
    assert header["space units"] == ["mm", "mm", "mm"] and np.abs(header["space directions"]).sum() == pytest.approx(
        0.75
    )
    with pytest.raises(ValueError, match="suffix"):
        write_canonical_volume(tmp_path / "v.tif", vol, 0.25)


def test_the_cards_python_lines_run_on_a_small_store(tmp_path, monkeypatch):
    """The card's example reads a view every store has (helper-69: images[5] of a 2-view store failed)
    and names volume/1 only where the volume has that level."""
    src = tmp_path / "b"
    args = ["--species", "2", "--val", "0", "--views", "2", "--size", "8", "--steps", "8", "--volume-size", "8"]
    assert main(["build-demo", "-o", str(src), *args]) == 0
    out = tmp_path / "out"
    export.export_dataset(src, out)
    card = (out / "README.md").read_text()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(out)
    scope: dict = {}
    exec(code, scope)  # the card's own lines, in the export folder
    assert scope["img"].shape == (8, 8) and scope["R"].shape == (3, 3)
    levels = len(
        zarr.open_group(str(out / "dataset.zarr/species/procedural_00/volume"), mode="r").attrs["ome"]["multiscales"][
            0
        ]["datasets"]
    )
    assert ("volume/1 its 2x2x2 mean" in card) == (levels == 2)


def test_a_config_given_to_the_export_that_is_not_the_recorded_one_is_said(tmp_path):
    """--config is copied as given; where it is not what the store recorded, a note says so (helper-69:
    views 999 was accepted silently as 'the build configuration')."""
    src = tiny_store(tmp_path / "s.zarr", ["CC0-1.0"] * 2)
    recorded = {"command": "test", "config": {"views": 3}}  # what tiny_store's store recorded
    same = export.export_dataset(src, tmp_path / "a", config=recorded)
    assert not any("differs from the one the store recorded" in n for n in same["warnings"])
    (tmp_path / "views.yaml").write_text("views: 3\n")  # the recorded workflow config itself, as a file
    inner = export.export_dataset(src, tmp_path / "c", config=tmp_path / "views.yaml")
    assert not any("the one the store recorded" in n for n in inner["warnings"])
    other = export.export_dataset(src, tmp_path / "b", config={"command": "test", "config": {"views": 999}})
    assert any("differs from the one the store recorded" in n for n in other["warnings"])
    assert "differs from the one the store recorded" in (tmp_path / "b/README.md").read_text()


def test_a_public_domain_data_export_names_its_licence_in_the_card(tmp_path):
    """Hugging Face has no id for a public-domain statement ('other'): the front matter names it
    (helper-69: license other without a name)."""
    src = tiny_store(tmp_path / "s.zarr", ["public domain"] * 2, sources=["/data/a.nii.gz", "/data/b.nii.gz"])
    export.export_dataset(src, tmp_path / "out")
    fm = front_matter((tmp_path / "out/README.md").read_text())
    assert fm["license"] == "other" and fm["license_name"].startswith("LicenseRef-PublicDomain")
