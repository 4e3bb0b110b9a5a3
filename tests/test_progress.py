"""tomodata.progress: lines in a log when stderr is not a terminal."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time

import pytest

from tomodata.progress import LineProgress, heartbeat, phase, progress


def test_lines_every_five_percent_with_count_rate_and_eta():
    out = io.StringIO()
    bar = LineProgress(range(40), desc="render", unit="batch", file=out)
    assert list(bar) == list(range(40))
    lines = out.getvalue().splitlines()
    assert 18 <= len(lines) <= 21  # every 5 % of 40 = every 2, and the last line
    assert lines[0].startswith("[render] 2/40 batch (5 %),") and "ETA" in lines[0]
    assert re.search(r", at \d\d:\d\d:\d\d$", lines[0]), lines[0]  # the time of day, for a log read later
    assert lines[-1].startswith("[render] 40/40 batch (100 %)") and "in all" in lines[-1]


def test_the_rate_leaves_out_the_start_up(monkeypatch):
    """Time before the first update (a resumed run's loading, a kernel's compilation) is not in the rate
    (helper-77: a resumed training's first ETA was 4:42:04 for about 10 minutes of work)."""
    clock = iter([0.0, 600.0, 600.0, 610.0, 610.0])  # made; first step after 10 min (and its line); 10 s later
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    out = io.StringIO()
    bar = LineProgress(total=100, initial=13, desc="train", unit="step", every_s=0.0, file=out)
    bar.update(1)  # at 600 s: the rate's origin
    bar.update(1)  # at 610 s: one step in 10 s
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("[train] 15/100 step (15 %), 0.1 step/s, ETA 14:10"), line


def test_time_based_lines_and_phases(monkeypatch):
    out = io.StringIO()
    bar = LineProgress(total=10_000, desc="evaluate", unit="sample", every_s=0.0, every_frac=1.0, file=out)
    bar.update(3)
    bar.set_postfix(loss="0.1")
    bar.close()
    text = out.getvalue()
    assert "[evaluate] 3/10000 sample (0 %)" in text and "loss=0.1" in text
    phase("evaluate", "NN search", file=out)
    assert "phase NN search" in out.getvalue()


def test_off_a_terminal_progress_gives_lines(capsys):
    for _ in progress(range(3), desc="x", unit="it"):
        pass
    assert "[x] 3/3 it (100 %)" in capsys.readouterr().err
    for _ in progress(range(3), desc="y", enabled=False):
        pass
    assert capsys.readouterr().err == ""


def test_heartbeat_lines_while_a_call_runs():
    """A line every every_s while the block runs, none after it. Waited for, not timed: on a loaded
    machine (the suite runs on 2 workers) the thread may wake late."""
    out = io.StringIO()
    t0 = time.monotonic()
    with heartbeat("tomo cube", every_s=0.05, file=out, force=True):
        while len(out.getvalue().splitlines()) < 2 and time.monotonic() - t0 < 30:
            time.sleep(0.01)
    n = len(out.getvalue().splitlines())
    assert 2 <= n <= (time.monotonic() - t0) / 0.05 + 1
    time.sleep(0.15)
    lines = out.getvalue().splitlines()
    assert len(lines) == n and all(ln.startswith("[tomo cube] working, 0:0") for ln in lines)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_command_stopped_by_a_signal_says_so_in_its_log(sig):
    """SIGTERM (a cluster's time limit) and SIGINT (Ctrl-C, a stopped workflow) end a tomo command by
    the signal, as before, after one line naming the command and no traceback."""
    code = (
        "import argparse, os, signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as from a shell: xdist's workers ignore it
        "from tomodata.cli import run\n"
        "p = argparse.ArgumentParser(prog='tomo')\n"
        "sub = p.add_subparsers(dest='command', required=True)\n"
        f"stop = lambda a: os.kill(os.getpid(), signal.{sig}) or time.sleep(30)\n"
        "sub.add_parser('render-species').set_defaults(func=stop)\n"
        "run(p, ['render-species'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -getattr(signal, sig)
    assert r.stderr.strip() == f"tomo render-species: stopped by {sig} before it finished", r.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_stopped_command_cleans_up_first(sig, tmp_path):
    """SIGTERM, like SIGINT, lets the command's cleanup run (``finally``: a staging folder, a partial
    export, a temporary copy) before it ends by the signal; SIGTERM used to end it inside the handler,
    leaving them behind (helper-72: tomo fetch's .copy-*, tomo export's .partial-* folders)."""
    staging = tmp_path / ".out.partial-x"
    code = (
        "import argparse, os, shutil, signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from tomodata.cli import run\n"
        "def work(a):\n"
        f"    os.mkdir({str(staging)!r})\n"
        "    try:\n"
        f"        os.kill(os.getpid(), signal.{sig}); time.sleep(30)\n"
        "    finally:\n"
        f"        shutil.rmtree({str(staging)!r})\n"
        "p = argparse.ArgumentParser(prog='tomo')\n"
        "sub = p.add_subparsers(dest='command', required=True)\n"
        "sub.add_parser('export').set_defaults(func=work)\n"
        "run(p, ['export'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -getattr(signal, sig)
    assert r.stderr.strip() == f"tomo export: stopped by {sig} before it finished", r.stderr
    assert not staging.exists()
