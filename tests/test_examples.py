"""model.examples (the qualitative examples' file shared by tomo figures and tomo apps) and
model.names (the file names the workflow reads at parse time)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from model import examples as E
from model import names
from model.cli import main
from model.volume_io import PREVIEWS


def _examples(n: int = 3, *, nn: bool = True) -> dict:
    """A dict as model.examples.qualitative_examples returns it: n rows, (8, 8, 8) volumes, 16² x-rays."""
    rng = np.random.default_rng(0)
    rows, fulls = [], []
    for i in range(n):
        row = dict(
            xray=rng.random((16, 16), dtype=np.float32),
            ours=rng.random((8, 8, 8), dtype=np.float32),
            truth=rng.random((8, 8, 8), dtype=np.float32),
            title=f"sp{i} sample {i}",
        )
        row["mean"] = rng.random((8, 8, 8), dtype=np.float32)
        if nn:
            row["nn"] = rng.random((8, 8, 8), dtype=np.float32)
            row["oracle"] = rng.random((8, 8, 8), dtype=np.float32)
        rows.append(row)
        fulls.append(rng.random((8, 16, 16), dtype=np.float32))
    fusion = dict(xray=rows[0]["xray"], fused=fulls[0], nofusion=rng.random((8, 16, 16)))
    return dict(rows=rows, fusion=fusion, ours_full=fulls)


def _same(a: dict, b: dict, n: int) -> None:
    assert len(b["rows"]) == len(b["ours_full"]) == n
    for ra, rb in zip(a["rows"][:n], b["rows"]):
        assert set(ra) == set(rb) and rb["title"] == ra["title"] and type(rb["title"]) is str
        for k in set(ra) - {"title"}:
            assert rb[k].dtype == ra[k].dtype and np.array_equal(rb[k], ra[k])
    for fa, fb in zip(a["ours_full"], b["ours_full"]):
        assert np.array_equal(fa, fb)
    for k in ("xray", "fused", "nofusion"):
        assert b["fusion"][k].dtype == np.asarray(a["fusion"][k]).dtype
        assert np.array_equal(b["fusion"][k], a["fusion"][k])


def test_save_load_round_trip_and_prefix(tmp_path):
    ex = _examples(3)
    p = E.save_examples(ex, tmp_path / "ex" / "examples.npz", requested=3)
    assert list(p.parent.iterdir()) == [p]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes files (mkstemp's 0600 before)
    _same(ex, E.load_examples(p), 3)
    _same(ex, E.load_examples(p, 2), 2)  # the first rows: what a run for 2 makes
    with pytest.raises(ValueError, match="make it with tomo examples --examples 4"):
        E.load_examples(p, 4)
    # fewer evaluated samples than requested: every one is there, asking for more is fine
    short = E.save_examples(_examples(2, nn=False), tmp_path / "short.npz", requested=5)
    got = E.load_examples(short, 4)
    assert len(got["rows"]) == 2 and "nn" not in got["rows"][0]
    with pytest.raises(ValueError, match=r"\.npz"):
        E.save_examples(ex, tmp_path / "x.npy", requested=3)
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not an examples file"):
        E.load_examples(tmp_path / "other.npz")


def test_examples_for_picks_the_source(tmp_path):
    p = E.save_examples(_examples(2), tmp_path / "e.npz", requested=2)
    assert E.examples_for(None, None, None, None, n=2) is None
    assert len(E.examples_for(p, None, None, None, n=1)["rows"]) == 1
    with pytest.raises(ValueError, match="not both"):
        E.examples_for(p, None, "c.pt", None, n=1)
    with pytest.raises(ValueError, match="not both"):  # the file replaces the store too
        E.examples_for(p, "s.zarr", None, None, n=1)
    with pytest.raises(ValueError, match="--eval"):
        E.examples_for(None, "s.zarr", "c.pt", None, n=1)
    np.save(tmp_path / "plain.npy", np.zeros(3))
    with pytest.raises(
        ValueError,
        match=r"plain.npy is not an examples file \(\.npz written by tomo examples\): it holds a plain array",
    ):
        E.load_examples(tmp_path / "plain.npy")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(
        ValueError, match=r"empty.npz is not an examples file \(\.npz written by tomo examples\): cannot read it"
    ):
        E.load_examples(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match="the store alone gives no examples: add --checkpoint"):
        E.examples_for(None, "s.zarr", None, "eval", n=1)  # figures 5, 7 and 17 would be left out


def test_cli_apps_from_an_examples_file(tmp_path, capsys):
    p = E.save_examples(_examples(2), tmp_path / "e.npz", requested=2)
    out = tmp_path / "apps"
    assert main(["apps", "--examples-file", str(p), "-o", str(out), "--examples", "1", "--frames", "2"]) == 0
    assert sorted(f.name for f in out.glob("*.gif")) == ["sp0_sample_0_turntable.gif", "sp0_sample_0_wiggle.gif"]
    assert main(["apps", "-o", str(out)]) == 2
    assert "needs --examples-file" in capsys.readouterr().err
    # what the file replaces is refused beside it, never silently ignored
    assert main(["apps", "--examples-file", str(p), "--eval", str(tmp_path), "-o", str(out)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["apps", str(tmp_path / "s.zarr"), "--examples-file", str(p), "-o", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_names_are_torch_free_and_used():
    code = "import sys, model.names; sys.exit(bool({'torch', 'numpy', 'matplotlib'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert names.FIGURES == (
        "fig6_methods",
        "fig7_slice_views",
        "fig8a_slice_counts",
        "fig8b_view_classes",
        "fig9_fusion",
        "fig17_qualitative",
    )
    assert PREVIEWS is names.PREVIEWS
