"""The mice run's data: a manifest generated from the atlas folder, seeded splits, clear errors."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import nrrd
import numpy as np
import pytest
import yaml
from snakemake.utils import update_config
from test_io import _dicom_slice
from test_workflow import _env

from model.cli import main
from tomodata.fetch.checksums import source_sha256
from tomodata.manifest import load_manifest
from tomodata.manifest_folder import manifest_from_folder, seeded_splits, specimen_id

ROOT = Path(__file__).resolve().parents[1]
ATLAS = ROOT.parent / "shared" / "data" / "real" / "mouse-ct-atlas"
needs_atlas = pytest.mark.skipif(not ATLAS.is_dir(), reason=f"{ATLAS} is absent (the real mouse heads)")


def _generate_args() -> dict:
    """The generating command's options, read from the comment block of workflow/configs/mice.yaml."""
    text = (ROOT / "workflow/configs/mice.yaml").read_text()
    cmd = " ".join(
        line.lstrip("# ").rstrip("\\ ")
        for line in text.splitlines()
        if line.startswith("#") and ("manifest-folder" in line or line.startswith("#     --"))
    )
    words = shlex.split(cmd)
    opts, k = {}, words.index("-o") + 2
    while k < len(words):
        opts[words[k].lstrip("-").replace("-", "_")] = words[k + 1]
        k += 2
    return opts


def test_seeded_splits_rule():
    ids = [f"s{k:02d}" for k in range(20)]
    a = seeded_splits(ids, val=5, test=8, seed=0)
    assert a == seeded_splits(list(reversed(ids)), val=5, test=8, seed=0)  # order of the input does not matter
    assert sorted(a.values()).count("test") == 8 and list(a.values()).count("val") == 5
    assert list(a.values()).count("train") == 7
    assert a != seeded_splits(ids, val=5, test=8, seed=1)
    # the rule written out: sorted ids, numpy's permutation, first test, next val
    order = np.random.default_rng(0).permutation(20)
    assert [i for i in sorted(ids) if a[i] == "test"] == sorted(sorted(ids)[k] for k in order[:8])


@pytest.mark.parametrize("val,test", [(10, 10), (-1, 2), (0, 20)])
def test_seeded_splits_refuse_no_train(val, test):
    with pytest.raises(ValueError, match="at least one train"):
        seeded_splits([f"s{k}" for k in range(20)], val=val, test=test)


def test_specimen_id_from_file_names():
    assert specimen_id(Path("129S1_SVLMJ_.nii.gz")) == "129S1_SVLMJ"
    assert specimen_id(Path("B6129PF1.J_.nii.gz")) == "B6129PF1.J"
    with pytest.raises(ValueError, match="does not match"):
        specimen_id(Path("_bad name.nii.gz"))


def test_manifest_from_folder_small(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    for k in range(6):
        (folder / f"m{k}_.nii.gz").write_bytes(b"x" * (k + 1))
    (folder / "readme.txt").write_text("not a scan")
    out = manifest_from_folder(
        folder, tmp_path / "m" / "mice.tsv", licence="own", val=2, test=2, seed=3, species="Mus musculus {id}"
    )
    table = load_manifest(out)
    assert list(table["id"]) == [f"m{k}" for k in range(6)]
    assert sorted(table["split"]) == ["test", "test", "train", "train", "val", "val"]
    assert table["source"].iloc[0] == "../scans/m0_.nii.gz" and len(table["sha256"].iloc[0]) == 64
    first = out.read_bytes()
    manifest_from_folder(folder, out, licence="own", val=2, test=2, seed=3, species="Mus musculus {id}")
    assert out.read_bytes() == first  # byte for byte
    assert not list(out.parent.glob("*.partial"))


@pytest.mark.parametrize(
    "extra, inside",
    [
        ({}, False),
        ({"notes": "it's a note", "checksums": False, "pattern": "*_.nii.gz"}, False),
        ({}, True),
        ({"attribution": "A. Lab 2026, https://example.org/scans"}, False),
        ({"ingest": {"crop": "largest", "orientation": "-z,y,x", "window": "hu-bone", "background": "0.02"}}, False),
    ],
)
def test_manifest_comment_is_the_command_that_writes_it(tmp_path, monkeypatch, extra, inside):
    """The first comment line holds the whole command (every option): run in the manifest's folder
    it writes the same file byte for byte."""
    folder = tmp_path / "scan s"
    folder.mkdir()
    for k in range(5):
        (folder / f"m{k}_.nii.gz").write_bytes(b"x" * (k + 1))
    out = manifest_from_folder(
        folder,
        folder / "a.tsv" if inside else tmp_path / "m" / "a.tsv",  # inside: the command names the folder "."
        licence="CC BY 4.0",
        val=1,
        test=1,
        seed=2,
        species="Mus musculus {id}",
        **extra,
    )
    first = out.read_bytes()
    command = re.search(r"`(tomo manifest-folder .*)`", first.decode().splitlines()[0]).group(1)
    out.unlink()
    monkeypatch.chdir(out.parent)
    assert main(shlex.split(command)[1:]) == 0
    assert out.read_bytes() == first
    credit = extra.get("attribution", "")
    assert list(load_manifest(out)["attribution"]) == [credit] * 5
    assert ("\tattribution" in first.decode()) == bool(credit)  # the column only where given
    table = load_manifest(out)
    for column, value in extra.get("ingest", {}).items():  # settings the folder's scans share, in every row
        assert list(table[column]) == [value] * 5, column
    assert ("\twindow" in first.decode()) == ("ingest" in extra)  # the columns only where given


def test_manifest_from_folder_checks_each_match_is_a_scan_of_its_kind(tmp_path):
    """Folders are scans of the folder kinds; a detached NRRD header's data file is not a specimen and
    the header's sha256 is the one tomo fetch records; matches of another kind, and single DICOM
    slices, are refused with every problem named."""
    root = tmp_path / "scans"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for k in range(3):
            cv2.imwrite(str(root / name / f"s{k}.png"), np.full((8, 8), 40 * k, np.uint8))
    with pytest.raises(ValueError, match="image_folder scans carry no voxel spacing"):
        manifest_from_folder(
            root, tmp_path / "m.tsv", pattern="*", source_kind="image_folder", licence="x", val=0, test=0
        )
    out = manifest_from_folder(
        root, tmp_path / "m.tsv", pattern="*", source_kind="image_folder", licence="x", val=0, test=0, spacing="2,1,1"
    )
    table = load_manifest(out)
    assert list(table["id"]) == ["a", "b"] and set(table["spacing_mm"]) == {"2,1,1"}
    nd = tmp_path / "nrrd"
    nd.mkdir()
    nrrd.write(str(nd / "v.nhdr"), np.zeros((4, 4, 4), np.uint8), detached_header=True)
    assert sorted(p.name for p in nd.iterdir()) == ["v.nhdr", "v.raw.gz"]
    table = load_manifest(
        manifest_from_folder(nd, tmp_path / "n.tsv", pattern="*", source_kind="nrrd", licence="x", val=0, test=0)
    )
    assert list(table["id"]) == ["v"] and table["sha256"][0] == source_sha256(nd / "v.nhdr")
    with pytest.raises(ValueError, match=r"(?s)1 of 1 matches of '\*.nhdr' .* v.nhdr: holds nrrd data, not nifti"):
        manifest_from_folder(nd, tmp_path / "x.tsv", pattern="*.nhdr", licence="x", val=0, test=0)
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    shutil.make_archive(str(zipped / "c"), "zip", root / "a")  # an archive of slices: tomo fetch unpacks it
    table = load_manifest(
        manifest_from_folder(
            zipped,
            tmp_path / "z.tsv",
            pattern="*.zip",
            source_kind="image_folder",
            licence="x",
            val=0,
            test=0,
            spacing="1,1,1",
        )
    )
    assert list(table["id"]) == ["c"]
    with pytest.raises(ValueError, match=r"only folders: a, b"):
        manifest_from_folder(root, tmp_path / "x.tsv", pattern="*", licence="x", val=0, test=0)
    assert not (tmp_path / "x.tsv").exists()


def test_manifest_from_folder_refuses_single_dicom_slices(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(4):
        _dicom_slice(folder / f"{k:02d}.dcm", np.zeros((4, 4)), z=2.5 * k, series_uid="1.2.3.9", instance=k + 1)
    with pytest.raises(ValueError, match=r"(?s)4 of 4 .*00.dcm, 01.dcm, 02.dcm and 1 more: a single-frame DICOM"):
        manifest_from_folder(
            folder, tmp_path / "x.tsv", pattern="*.dcm", source_kind="dicom", licence="x", val=0, test=0
        )
    out = manifest_from_folder(
        tmp_path, tmp_path / "m.tsv", pattern="series", source_kind="dicom", licence="x", val=0, test=0
    )
    assert list(load_manifest(out)["id"]) == ["series"]


def test_manifest_from_folder_bad_input(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        manifest_from_folder(tmp_path / "absent", tmp_path / "m.tsv", licence="x", val=1, test=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no file"):
        manifest_from_folder(tmp_path / "empty", tmp_path / "m.tsv", licence="x", val=1, test=1)
    assert not (tmp_path / "m.tsv").exists()
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "ok" / "b.nii.gz").write_bytes(b"y")
    bad = {"window": "nope", "crop": "most", "orientation": "-z,y,q"}
    with pytest.raises(ValueError) as e:  # each option named, not a temporary file's rows
        manifest_from_folder(tmp_path / "ok", tmp_path / "m.tsv", licence="x", val=0, test=1, ingest=bad)
    for said in ("--window: window must be", "--orientation: '-z,y,q' is not valid", "--crop: 'most' is not one of"):
        assert said in str(e.value)
    assert "row 1" not in str(e.value) and not (tmp_path / "m.tsv").exists()
    with pytest.raises(ValueError, match="ingest settings are"):
        manifest_from_folder(tmp_path / "ok", tmp_path / "m.tsv", licence="x", val=0, test=1, ingest={"shade": "1"})


@needs_atlas
def test_committed_mice_manifest_is_the_generated_one():
    """manifests/mice.tsv is byte for byte what the command in workflow/configs/mice.yaml writes."""
    opts = _generate_args()
    assert opts["val"] == "6" and opts["test"] == "10"
    out = ROOT / "manifests" / f".mice-regenerated-{__import__('os').getpid()}.tsv"  # same folder: same relative paths
    try:
        manifest_from_folder(
            ATLAS,
            out,
            species=opts["species"],
            licence=opts["licence"],
            val=int(opts["val"]),
            test=int(opts["test"]),
            seed=int(opts["seed"]),
            notes=opts["notes"],
        )
        written = out.read_bytes().replace(f"-o {out.name} ".encode(), b"-o mice.tsv ", 1)  # the comment's command
        assert written == (ROOT / "manifests/mice.tsv").read_bytes()
    finally:
        out.unlink(missing_ok=True)
    table = load_manifest(ROOT / "manifests/mice.tsv")
    assert len(table) == 51
    assert (table["split"] == "test").sum() >= 8 and (table["split"] == "val").sum() >= 5
    assert set(table["split"]) == {"train", "val", "test"}
    for row in table.itertuples():
        assert (ROOT / "manifests" / row.source).resolve() == (ATLAS / Path(row.source).name).resolve()


def test_mice_config_matches_the_schema():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    for name in ("mice.yaml", "mice-paper.yaml"):
        cfg = yaml.safe_load((ROOT / "workflow/configs" / name).read_text())
        jsonschema.validate(cfg, schema)
        assert cfg["data"]["align"]["enabled"] is True and cfg["model"]["evaluate"]["split"] == "test"


def _overlaid(overlay: str) -> dict:
    """mice.yaml with workflow/configs/OVERLAY merged over it as `--configfile a b` does, checked
    against the schema."""
    merged = yaml.safe_load((ROOT / "workflow/configs/mice.yaml").read_text())
    update_config(merged, yaml.safe_load((ROOT / "workflow/configs" / overlay).read_text()))
    assert merged.pop("overlay") == {"over": "mice.yaml"}  # the Snakefile drops it likewise
    jsonschema.validate(merged, yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text()))
    return merged


@pytest.mark.parametrize(("overlay", "steps"), [("mice-long", 6000), ("mice-12k", 12000)])
def test_mice_length_overlays_change_only_the_training_length(overlay: str, steps: int):
    """workflow/configs/mice-long.yaml and mice-12k.yaml, merged over mice.yaml as `--configfile a b`
    does, are valid configs that differ from the mice run only in their name, their steps and the
    train rule's time."""
    base = yaml.safe_load((ROOT / "workflow/configs/mice.yaml").read_text())
    merged = _overlaid(f"{overlay}.yaml")
    assert merged["run"] == overlay and merged["model"]["train"]["steps"] == steps
    for cfg in (base, merged):
        cfg.pop("run")
        cfg["model"]["train"].pop("steps")
        cfg["resources"].pop("train")
    assert merged == base


def _rows(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def test_mice_smoke_manifest_is_rows_of_the_mice_manifest():
    """manifests/mice-smoke.tsv: the header and the first 6 train, 1 val and 1 test rows of mice.tsv,
    verbatim and in its order (so its heads, splits and checksums cannot drift from the mice run's)."""
    full, smoke = _rows(ROOT / "manifests/mice.tsv"), _rows(ROOT / "manifests/mice-smoke.tsv")
    assert smoke[0] == full[0]
    col = full[0].split("\t").index("split")
    want, left = [], {"train": 6, "val": 1, "test": 1}
    for row in full[1:]:
        if left.get(split := row.split("\t")[col], 0):
            want.append(row)
            left[split] -= 1
    assert smoke[1:] == want


def test_mice_paper_smoke_overlay_has_the_papers_sizes():
    merged = _overlaid("mice-paper-smoke.yaml")
    d = merged["dataset"]
    assert (d["n_views"], d["image_size"], d["steps"], d["volume_size"], d["chi"]) == (1332, 256, 128, 128, 10.0)
    assert merged["model"]["preset"] == "release" and merged["data"]["manifest"] == "manifests/mice-smoke.tsv"
    assert merged["data"]["align"]["enabled"] is True


def test_mice_config_without_the_atlas_names_the_folder(tmp_path):
    """Where ../shared is absent the workflow stops before any job, one line naming the folder."""
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("Snakefile", "config.yaml"):
        (work / name).write_bytes((ROOT / name).read_bytes())
    for name in ("workflow", "manifests"):
        subprocess.run(["cp", "-r", str(ROOT / name), str(work / name)], check=True)
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "snakemake"), "-n", "--cores", "1", "--configfile", "workflow/configs/mice.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "51 of 51 specimens cannot be read" in out and "mouse-ct-atlas does not exist" in out
    assert len([ln for ln in out.splitlines() if "does not exist" in ln]) == 1  # one line for the folder
    assert "--keep-going" not in out  # nothing else to build
    assert not (work / "results").exists() and not (work / "resources").exists()


@needs_atlas
@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_align_refuses_a_broken_strain_file(tmp_path, capsys, kind):
    """A strain file that is truncated or not a volume: exit 2, the file named, nothing written."""
    bad = tmp_path / "BROKEN_.nii.gz"
    if kind == "truncated":
        bad.write_bytes((ATLAS / "A_J_.nii.gz").read_bytes()[:200_000])
    else:
        bad.write_text("not a volume")
    out = tmp_path / "aligned" / "BROKEN.nii.gz"
    assert main(["align", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "NIfTI" in err
    assert not out.exists() and not (tmp_path / "aligned" / "BROKEN.json").exists()


def test_empty_split_stops_the_workflow_naming_it(tmp_path):
    """A manifest without test species (the evaluated split): the dry run stops at parse time."""
    work = tmp_path / "w"
    work.mkdir()
    for name in ("Snakefile", "config.yaml"):
        (work / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "workflow"), str(work / "workflow")], check=True)
    rows = [
        f"s{k}\tsp {k}\thttps://example.org/s{k}.mp4\tmovie\t1,1,1\tz\t{split}\tfree\t\t"
        for k, split in enumerate(["train", "train", "val"])
    ]
    (work / "m.tsv").write_text(
        "id\tspecies\tsource\tsource_kind\tspacing_mm\tslice_axis\tsplit\tlicence\tsha256\tnotes\n"
        + "\n".join(rows)
        + "\n"
    )
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["data"].update(source="manifest", manifest="m.tsv")
    (work / "c.yaml").write_text(yaml.safe_dump(cfg))
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "snakemake"), "-n", "--cores", "1", "--configfile", "c.yaml"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "split 'test' (the evaluation (model.evaluate.split)) has no species" in out and "m.tsv" in out
