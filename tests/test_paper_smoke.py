"""The paper-size smoke run (issue #14): workflow/configs/paper-smoke.yaml through the whole DAG at the
paper's sizes (8 demo species, 1,332 views each mirrored, 256², 128 steps, 128³, the paper network
trained 6 steps, 100 held-out samples evaluated with NN and Oracle) on this machine's CPUs.

About 30 minutes on 2 cores, so it is not part of the default suite: ``python -m pytest -m paper``
runs it (``TOMO_PAPER_SMOKE_DIR=DIR`` keeps the run there for its benchmark files). It checks that
every rule finishes, that the evaluation covers ours, NN and Oracle on every sample, and that every
long job logged progress lines; it prints the per-rule timings and peak memory
(``tomodata.bench.rule_benchmarks``) that docs/benchmarks.md quotes. No time is asserted (speed
targets live in docs/benchmarks.md).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tomodata.bench import format_rule_rows, rule_benchmarks, suggest_resources

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.paper


def test_paper_smoke_run(tmp_path):
    work = Path(os.environ.get("TOMO_PAPER_SMOKE_DIR", tmp_path))
    work.mkdir(parents=True, exist_ok=True)
    snakemake = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--cores",
        "2",
        "-d",
        str(work),
        "--configfile",
        str(ROOT / "workflow/configs/paper-smoke.yaml"),
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=2 * 3600)
    assert r.returncode == 0, r.stderr[-4000:]
    res = work / "results" / "paper-smoke"
    assert (res / "dataset.final.json").is_file() and (res / "figures" / "fig6_methods.png").is_file()
    with open(res / "eval" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    methods = {m: sum(1 for r in rows if r.get("method") == m) for m in ("ours", "nn", "oracle")}
    assert all(n == 100 for n in methods.values()), methods
    # progress lines in the logs of the long jobs (tomodata.progress: every 30 s or 5 %)
    for rule in ("render_species", "train", "evaluate"):
        logs = sorted((work / "logs" / "paper-smoke" / rule).glob("*.log"))
        assert logs and all("%" in p.read_text() or "heartbeat" in p.read_text() for p in logs), rule
    bench = rule_benchmarks(work, "paper-smoke")
    print("\n" + format_rule_rows(bench))
    print(suggest_resources(bench))
    assert {b["rule"] for b in bench} >= {
        "cube",
        "render_species",
        "store_finalize",
        "train",
        "evaluate",
        "figures",
        "apps",
    }
