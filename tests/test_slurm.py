"""The workflow on a real SLURM cluster: a single-node cluster started on localhost by the fixture
(munged, slurmctld, slurmd; no slurmdbd), and a tiny config run through `--executor slurm`
(snakemake-executor-plugin-slurm) with workflow/profiles/slurm.

The fixture installs the Debian packages (slurmctld slurmd slurm-client munge) where they are
missing, which needs root and apt-get. Without them, or without the executor plugin, the test is
skipped with the reason; with TOMO_REQUIRE_SLURM=1 in the environment (CI) it fails instead. It
does not touch a SLURM controller that is already running, and it restores /etc/slurm/slurm.conf;
a cluster that a killed earlier run of this test left running (its slurm.conf still the test's) is
stopped first, and that conf removed at the end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tomodata.store import validate_store

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REQUIRE = os.environ.get("TOMO_REQUIRE_SLURM", "") == "1"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
TOOLS = ["slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "scancel", "munged"]
CONF = Path("/etc/slurm/slurm.conf")
PIDS = {"slurmctld": Path("/run/slurmctld.pid"), "slurmd": Path("/run/slurmd.pid")}
MUNGE_PID = Path("/run/munge/munged.pid")

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"SLURM test required (TOMO_REQUIRE_SLURM=1) but: {reason}")
    pytest.skip(reason)


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def _run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, **kw)


def _alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def _stop(pidfile: Path, timeout: float = 15) -> None:
    pid = _alive(pidfile)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    pidfile.unlink(missing_ok=True)


def _install() -> None:
    if all(_which(t) for t in TOOLS):
        return
    if not shutil.which("apt-get"):
        _unavailable(
            f"SLURM is not installed ({', '.join(t for t in TOOLS if not _which(t))} missing) and there is no apt-get"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    proc = _run(cmd, timeout=600, env=env)
    if proc.returncode != 0:  # stale package lists: update once, then try again
        _run(["apt-get", "update"], timeout=600, env=env)
        proc = _run(cmd, timeout=600, env=env)
    if proc.returncode != 0 or not all(_which(t) for t in TOOLS):
        _unavailable(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stdout[-2000:]}")


def _conf_is_ours() -> bool:
    """Whether /etc/slurm/slurm.conf is the one this test writes (its first line says so)."""
    try:
        return CONF.read_text().startswith(_CONF_MARK)
    except OSError:
        return False


def _controller_running() -> bool:
    return bool(_alive(PIDS["slurmctld"])) or _run(["pgrep", "-x", "slurmctld"]).returncode == 0


def _stop_leftover() -> None:
    """Stop the cluster that a killed earlier run of this test left running (its slurm.conf is still
    ours, so no one else's controller runs with it)."""
    _stop(PIDS["slurmd"])
    _stop(PIDS["slurmctld"])
    for name in ("slurmd", "slurmctld"):  # pid files of a run killed before they were written
        _run(["pkill", "-x", name])
    deadline = time.monotonic() + 15
    while _controller_running() and time.monotonic() < deadline:
        time.sleep(0.2)


_CONF_MARK = "# written by tests/test_slurm.py"


def _slurm_conf() -> str:
    cpus = os.cpu_count() or 1
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return "\n".join(
        [
            f"{_CONF_MARK}: a single-node test cluster on localhost",
            "ClusterName=tomotest",
            "SlurmctldHost=localhost",
            "SlurmUser=slurm",
            "AuthType=auth/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "MinJobAge=600",
            "StateSaveLocation=/var/spool/slurmctld",
            "SlurmdSpoolDir=/var/spool/slurmd",
            f"SlurmctldPidFile={PIDS['slurmctld']}",
            f"SlurmdPidFile={PIDS['slurmd']}",
            "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
            "SlurmdLogFile=/var/log/slurm/slurmd.log",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb - 512} State=UNKNOWN",
            "PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _logs() -> str:
    out = []
    for name in ("slurmctld", "slurmd"):
        p = Path(f"/var/log/slurm/{name}.log")
        if p.is_file():
            out.append(f"--- {p} (tail)\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(out)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node SLURM cluster on localhost; stopped (and slurm.conf restored) after."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install snakemake-executor-plugin-slurm)")
    if os.geteuid() != 0:
        _unavailable("starting munged, slurmctld and slurmd needs root")
    _install()
    leftover = _conf_is_ours()  # a killed run of this test left its conf (and maybe its cluster)
    if leftover and _controller_running():
        _stop_leftover()
    if _controller_running():
        _unavailable("a slurmctld is already running on this machine: not touching it")

    backup = CONF.read_bytes() if CONF.exists() and not leftover else None  # ours is no one's to restore
    started_munge = False
    try:
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(_slurm_conf())
        for pidfile in PIDS.values():
            pidfile.unlink(missing_ok=True)  # stale pid files from an earlier, killed cluster
        for folder, owner in (
            ("/run/munge", "munge"),
            ("/var/spool/slurmctld", "slurm"),
            ("/var/log/slurm", "slurm"),
            ("/var/spool/slurmd", "root"),
        ):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, owner, owner)
        munge_ok = _run([_which("munge") or "munge", "-n"]).returncode == 0 if _which("munge") else False
        if not munge_ok:
            MUNGE_PID.unlink(missing_ok=True)
            proc = _run(["runuser", "-u", "munge", "--", _which("munged"), "--force"])
            if proc.returncode != 0:
                _unavailable(f"munged did not start: {proc.stdout}")
            started_munge = True
        for cmd in ([_which("slurmctld")], [_which("slurmd"), "-N", "localhost"]):
            proc = _run(cmd)
            if proc.returncode != 0:
                _unavailable(f"{cmd[0]} did not start: {proc.stdout}\n{_logs()}")
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline:
            state = _run([_which("sinfo"), "-h", "-o", "%T"]).stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        else:
            _unavailable(f"the SLURM node did not become idle (state {state!r})\n{_logs()}")
        yield {"cpus": os.cpu_count() or 1}
    finally:
        if _which("scancel"):
            _run([_which("scancel"), "--user", "root"])
        _stop(PIDS["slurmd"])
        _stop(PIDS["slurmctld"])
        if started_munge:
            _stop(MUNGE_PID)
        if backup is None:
            CONF.unlink(missing_ok=True)
        else:
            CONF.write_bytes(backup)


def test_tiny_demo_on_slurm(slurm_cluster, tmp_path, kill_tree):
    """3 procedural species (2 train + 1 val), 32³, 4 views of 32²: every job an sbatch job."""
    work = tmp_path / "w"  # the submit folder: SLURM's and the plugin's logs land here
    work.mkdir()
    config = work / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run": "slurm",
                "data": {"source": "demo", "demo": {"species": 3, "val": 1, "test": 1, "movie_size": 32}},
                "dataset": {"n_views": 4, "image_size": 32, "steps": 32, "chi": 10.0, "volume_size": 32},
                "render": {"backend": "cpu"},
                "resources": {"default": {"threads": 1, "mem_mb": 500, "runtime": 10}},
                "model": {"enabled": False},  # the data part on SLURM (the model rules run in test_workflow)
            },
            sort_keys=False,
        )
    )
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("SNAKEMAKE_PROFILE", None)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--workflow-profile",
        str(ROOT / "workflow/profiles/slurm"),
        "--configfile",
        str(config),
        "--jobs",
        str(2 * slurm_cluster["cpus"]),
        "--retries",
        "0",
        "--latency-wait",
        "10",
        # no slurmdbd here: sacct cannot answer, so poll squeue (MinJobAge keeps finished jobs)
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-no-account",
        "--slurm-keep-successful-logs",
    ]
    proc = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out = proc.communicate()[0]
        pytest.fail(f"the SLURM run did not finish in 600 s:\n{out[-6000:]}\n{_logs()}")
    finally:
        kill_tree(proc.pid)
        _run([_which("scancel"), "--user", "root"])
    assert proc.returncode == 0, f"snakemake --executor slurm failed:\n{out[-8000:]}\n{_logs()}"
    print(out)

    assert "SLURM" in out and "Nothing to be done" not in out
    report = validate_store(work / "results/slurm/dataset.zarr")
    assert report.ok, report.summary()
    logdir = work / ".snakemake/slurm_logs"  # the plugin's: <rule>/<wildcards>/<SLURM job id>.log
    rules = {p.relative_to(logdir).parts[0] for p in logdir.rglob("*.log")}
    assert {"rule_fetch", "rule_cube", "rule_render_species", "rule_store_finalize"} <= rules, rules
