"""tomodata.files: atomic writes, strict JSON, file checksums (the one home of each)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from tomodata.files import atomic_write, json_safe, sha256_file, write_json, write_text


def test_atomic_write_keeps_suffixes_and_replaces_whole(tmp_path):
    seen = []
    out = atomic_write(tmp_path / "sub" / "a.nii.gz", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"new")))
    assert out.read_bytes() == b"new" and seen[0].name.endswith(".nii.gz") and seen[0].parent == out.parent
    atomic_write(tmp_path / "b.npz", lambda tmp: np.savez_compressed(tmp, x=np.arange(3)))
    assert np.load(tmp_path / "b.npz")["x"].tolist() == [0, 1, 2]  # no second .npz appended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.npz", "sub"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_a_new_file_follows_the_umask(tmp_path, mask):
    """As open() would make it (mkstemp's 0600 is not kept), under the process's umask."""
    old = os.umask(mask)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "m.json"
    p.write_text("old")
    os.chmod(p, 0o640)

    def broken(tmp: Path):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(p, broken)
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["m.json"]
    write_text(p, "new\n")
    assert p.read_text() == "new\n" and (p.stat().st_mode & 0o777) == 0o640  # permissions kept


def test_json_is_strict_and_plain(tmp_path):
    obj = {
        1: np.float32(0.5),
        "nan": float("nan"),
        "inf": np.float64(-math.inf),
        "i": np.int64(3),
        "b": np.bool_(True),
        "t": (1, 2),
        "a": np.arange(2),
        "p": Path("x/y"),
    }
    assert json_safe(obj) == {
        "1": 0.5,
        "nan": None,
        "inf": None,
        "i": 3,
        "b": True,
        "t": [1, 2],
        "a": [0, 1],
        "p": "x/y",
    }
    assert json_safe(True) is True and json_safe(np.int8(-1)) == -1
    write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    assert text.endswith("}\n") and "NaN" not in text and json.loads(text)["nan"] is None


def test_sha256_file(tmp_path):
    data = os.urandom(3 << 20)  # several blocks
    (tmp_path / "d").write_bytes(data)
    assert sha256_file(tmp_path / "d") == hashlib.sha256(data).hexdigest()
