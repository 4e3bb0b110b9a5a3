"""scripts/gpu-check.sh without a GPU: a stand-in for Python records every command the script runs,
and each ``model.cli`` command line must parse with the project's own parser (a misspelt or removed
option would otherwise be found only on the lent GPU machine, whose time is scarce). Every stage is
reached, and OUT holds at most the 8 files the device tool brings back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

# records each command; the test parses the tomo ones afterwards in its own process (one import of
# model.cli, not one per command: about a minute less)
SHIM = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["-m", "model.cli"] and "--profile" in args:
    open(args[args.index("--profile") + 1], "w").write("profile table\\n")
with open(os.environ["SHIM_LOG"], "a") as f:
    f.write(json.dumps({{"args": args}}) + "\\n")
"""


def _parses(args: list[str]) -> bool:
    try:
        build_parser().parse_args(args)
    except SystemExit:
        return False
    return True


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_every_command_of_the_gpu_check_parses(tmp_path):
    shim = tmp_path / "python-shim"
    shim.write_text(SHIM.format(python=sys.executable))
    shim.chmod(0o755)
    log, out = tmp_path / "calls.jsonl", tmp_path / "out"
    env = dict(os.environ, PYTHON=str(shim), SHIM_LOG=str(log), ONLY="1 2 3 4 5 6 7 8 9", MAX_SECONDS="5")
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    tomo = [c for c in calls if c["args"][:2] == ["-m", "model.cli"]]
    bad = [" ".join(c["args"][2:]) for c in tomo if not _parses(c["args"][2:])]
    assert not bad, f"commands that tomo's parser refuses: {bad}"
    subcommands = [c["args"][2:4] for c in tomo]
    assert ["bench", "render"] in subcommands and ["bench", "dataset"] in subcommands
    assert ["bench", "evaluate"] in subcommands and ["bench", "nn"] in subcommands
    assert {"build-demo", "train", "evaluate"} <= {s[0] for s in subcommands}
    assert any(c["args"][:2] == ["-m", "pytest"] for c in calls), "stage 1 runs the gpu tests"
    summary = (out / "summary.txt").read_text()
    stages = [ln for ln in summary.splitlines() if "rc=" in ln]
    assert {ln.split()[0] for ln in stages} == {str(k) for k in range(1, 10)}, summary
    assert all("rc=0" in ln for ln in stages), summary
    assert "##### nhwc" in (out / "profile.txt").read_text()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, sorted(p.name for p in files)  # the device tool brings back 8 files at most
