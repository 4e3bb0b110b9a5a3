"""tomodata.workflow_logs: the run's job errors and warnings, for the workflow's onerror/onsuccess
(the workflow runs themselves: tests/test_workflow_extend.py)."""

from __future__ import annotations

import os

from tomodata.workflow_logs import WARNINGS_SHOWN, job_failures, job_warnings


def _log(logs, job: str, text: str, mtime: float) -> None:
    path = logs / f"{job}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def test_failures_and_warnings_of_this_runs_logs_only(tmp_path):
    logs = tmp_path / "logs"
    _log(logs, "cube/a", "reading\nerror: first\nerror: cube a: the window lifts air\n", 200.0)
    _log(logs, "cube/old", "error: an earlier run's\nwarning: old\n", 50.0)  # before this run: not counted
    _log(logs, "real_xray/film", "error: looks inverted: give --polarity keep or --gamma 2.0\n", 200.0)
    _log(logs, "render_species/a", "warning: spacing overrides the file's\n", 200.0)
    failures = job_failures(logs, since=100.0)
    assert failures[0] == f"cube/a failed ({logs / 'cube/a.log'}): cube a: the window lifts air"  # the last error
    assert failures[1] == (
        "real x-ray film: looks inverted: give --polarity keep or --gamma 2.0\n"
        "  in the config: model.real_xrays.film.polarity: keep or model.real_xrays.film.gamma: 2.0"
    )
    assert len(failures) == 2
    text = job_warnings(logs, since=100.0)
    assert text.splitlines() == [
        f"1 warning(s) in this run's job logs ({logs}/; render_species 1):",
        "  render_species/a: spacing overrides the file's",
    ]
    assert job_warnings(tmp_path / "none", since=0.0) is None


def test_many_warnings_are_cut(tmp_path):
    logs = tmp_path / "logs"
    _log(logs, "cube/a", "".join(f"warning: w{i} " + "x" * 500 + "\n" for i in range(WARNINGS_SHOWN + 3)), 10.0)
    lines = job_warnings(logs, since=0.0).splitlines()
    assert len(lines) == 1 + WARNINGS_SHOWN + 1 and lines[-1].startswith("  and 3 more: grep -r")
    assert lines[1].endswith(" …") and len(lines[1]) < 450
