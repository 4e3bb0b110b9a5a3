"""Which code made a file: a checkout counts as dirty when a tracked file changed or a new, untracked
file lies in the code's folders (a module not committed yet), not for a stray note beside the code."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tomodata.code_version import _dirty, code_version

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _run(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_dirty_counts_changed_tracked_files_and_new_code(tmp_path):
    (tmp_path / "tomodata").mkdir()
    (tmp_path / "tomodata/a.py").write_text("x = 1\n")
    (tmp_path / ".gitignore").write_text("results/\n")
    _run(tmp_path, "init", "-q")
    _run(tmp_path, "add", "-A")
    _run(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    assert _dirty(tmp_path) is False
    (tmp_path / "notes.txt").write_text("a stray note is not code\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results/x.py").write_text("ignored\n")
    assert _dirty(tmp_path) is False
    (tmp_path / "tomodata/new.py").write_text("y = 2\n")  # a new module: the commit does not hold the code
    assert _dirty(tmp_path) is True
    (tmp_path / "tomodata/new.py").unlink()
    (tmp_path / "tomodata/a.py").write_text("x = 2\n")
    assert _dirty(tmp_path) is True


def test_code_version_names_its_fields():
    assert set(code_version()) == {"tomodata", "git_commit", "git_dirty"}
