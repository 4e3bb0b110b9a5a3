"""tomodata.folder_contents: the record a folder output's command writes last, and its check."""

from __future__ import annotations

import hashlib
import json

import pytest

from tomodata.folder_contents import CONTENTS_FILE, contents_problem, record_contents


def _folder(tmp_path):
    out = tmp_path / "apps"
    (out / "samples").mkdir(parents=True)
    (out / "a_turntable.gif").write_bytes(b"GIF89a" + bytes(10))
    (out / "samples" / "s000.js").write_text("x = 1;\n")
    return out


def test_record_lists_every_file_with_its_size(tmp_path):
    out = _folder(tmp_path)
    rec = record_contents(out)
    assert rec == out / CONTENTS_FILE
    sha = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in ("a_turntable.gif", "samples/s000.js")}
    assert json.loads(rec.read_text()) == {
        "format": 2,
        "files": {
            "a_turntable.gif": {"size": 16, "sha256": sha["a_turntable.gif"]},
            "samples/s000.js": {"size": 7, "sha256": sha["samples/s000.js"]},
        },
    }
    assert contents_problem(out) is None
    record_contents(out)  # written again: the record does not list itself
    assert CONTENTS_FILE not in json.loads(rec.read_text())["files"]


def test_a_file_gone_or_changed_is_named(tmp_path):
    out = _folder(tmp_path)
    record_contents(out)
    (out / "samples" / "s000.js").unlink()
    assert contents_problem(out) == "1 of its 2 files are gone (samples/s000.js)"
    (out / "samples" / "s000.js").write_text("x = 12;\n")
    assert contents_problem(out) == "1 of its files changed size (samples/s000.js)"


def test_an_edit_that_keeps_the_size_is_named(tmp_path):
    out = _folder(tmp_path)
    record_contents(out)
    gif = out / "a_turntable.gif"
    gif.write_bytes(b"GIF89a" + bytes(9) + b"x")  # damaged by hand: same 16 bytes
    assert contents_problem(out) == "1 of its files changed content (a_turntable.gif)"


def test_a_format_1_record_is_checked_by_size(tmp_path):
    out = _folder(tmp_path)
    (out / CONTENTS_FILE).write_text(json.dumps({"format": 1, "files": {"a_turntable.gif": 16, "samples/s000.js": 7}}))
    assert contents_problem(out) is None
    (out / "samples" / "s000.js").write_text("x = 2;\n")  # same size: a format-1 record cannot tell
    assert contents_problem(out) is None
    (out / "samples" / "s000.js").write_text("x = 12;\n")
    assert contents_problem(out) == "1 of its files changed size (samples/s000.js)"


def test_many_files_gone_are_counted(tmp_path):
    out = _folder(tmp_path)
    for i in range(5):
        (out / f"f{i}.png").write_bytes(b"p")
    record_contents(out)
    for i in range(5):
        (out / f"f{i}.png").unlink()
    assert contents_problem(out) == "5 of its 7 files are gone (f0.png, f1.png, f2.png and 2 more)"


def test_nothing_to_check_without_folder_or_record(tmp_path):
    assert contents_problem(tmp_path / "absent") is None
    out = _folder(tmp_path)
    assert contents_problem(out) is None  # an older folder without a record: unknown, not wrong
    (out / CONTENTS_FILE).write_text("{not json")
    assert "unreadable" in contents_problem(out)
    with pytest.raises(ValueError, match="not a folder"):
        record_contents(tmp_path / "absent")
