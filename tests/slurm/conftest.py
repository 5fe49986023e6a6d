"""The `slurm_cluster` fixture: a real single-node SLURM cluster on this machine.

The cluster is the one `slurm/dev-cluster/up.sh` builds (Debian's slurm-wlm, partition "debug").
When `sinfo` already shows a usable node the fixture only describes it; otherwise it runs up.sh,
which installs, configures and starts everything (needs root and apt-get on a fresh machine).
Where the machine cannot host the cluster the tests are skipped with the reason, except when the
CI environment variable is set: CI must exercise SLURM, so there the fixture fails instead.
The cluster is left running after the session; `slurm/dev-cluster/down.sh` stops it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# The tests import their job helpers (slurm_jobs.py) from this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO_ROOT = Path(__file__).resolve().parents[2]
UP_SCRIPT = REPO_ROOT / "slurm" / "dev-cluster" / "up.sh"
PARTITION = "debug"
# sinfo's node states in which jobs can start (flags such as '*' or '+' are stripped first).
USABLE_STATES = {"idle", "mixed", "allocated", "completing"}
# Job states after which a job never runs again by itself.
FINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED",
    "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}
UP_TIMEOUT_S = 600  # a fresh machine runs apt-get update + install first
READY_TIMEOUT_S = 60


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _node_rows() -> list[tuple[str, str, int]]:
    """(node, state, cpus) for each node of the "debug" partition; empty when SLURM is absent or down."""
    if shutil.which("sinfo") is None:
        return []
    if "SLURM_CONF" not in os.environ and not Path("/etc/slurm/slurm.conf").exists():
        return []  # not configured: skip sinfo's ~10 s wait for a controller that cannot exist
    try:
        proc = _run(["sinfo", "-h", "-N", f"--partition={PARTITION}", "-o", "%N|%T|%c"], timeout=15)
    except subprocess.TimeoutExpired:
        return []
    rows = []
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        node, state, cpus = line.strip().split("|")
        rows.append((node, state.rstrip("*~#$@^-+!%"), int(cpus)))
    return rows


def _usable_nodes() -> list[tuple[str, str, int]]:
    return [row for row in _node_rows() if row[1] in USABLE_STATES]


def _why_unable() -> str | None:
    """Why this machine cannot bring the cluster up itself, or None when it can."""
    if os.name != "posix" or shutil.which("bash") is None:
        return "needs a Linux machine with bash"
    if os.geteuid() != 0:
        return "needs root to install and start munged/slurmctld/slurmd (run `sudo bash slurm/dev-cluster/up.sh` first)"
    installed = all(shutil.which(cmd) or Path("/usr/sbin", cmd).exists() for cmd in ("slurmctld", "slurmd", "munged", "sbatch"))
    if not installed and shutil.which("apt-get") is None:
        return "slurm-wlm and munge are not installed and there is no apt-get to install them"
    return None


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    state: str  # JobState from scontrol, e.g. RUNNING, COMPLETED, FAILED
    exit_code: str  # "exitcode:signal", e.g. "0:0"
    restarts: int


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster plus the few commands tests need (no accounting, so no sacct)."""

    partition: str
    node: str
    cpus: int

    def sbatch(self, *args: str, cwd: Path | None = None) -> str:
        """Submit with `sbatch --parsable` to this cluster's partition; return the job id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", f"--partition={self.partition}", *args],
            capture_output=True, text=True, timeout=30, cwd=cwd, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> JobInfo | None:
        """The job as the controller sees it; None once it was purged (MinJobAge) or never existed."""
        proc = _run(["scontrol", "-o", "show", "job", job_id], timeout=15)
        if proc.returncode != 0 or not proc.stdout.strip():
            return None
        fields = dict(
            item.split("=", 1) for item in proc.stdout.split() if "=" in item
        )
        return JobInfo(job_id, fields["JobState"], fields.get("ExitCode", ""), int(fields.get("Restarts", "0")))

    def wait_until_final(self, job_id: str, timeout: float) -> JobInfo:
        """Poll until the job reaches a final state; fail the test with its details otherwise."""
        deadline = time.monotonic() + timeout
        info = self.job(job_id)
        while info is None or info.state not in FINAL_STATES:
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} not finished after {timeout}s: {info}\n{self.describe()}")
            time.sleep(0.5)
            info = self.job(job_id)
        return info

    def cancel(self, job_id: str) -> None:
        _run(["scancel", job_id], timeout=15)

    def describe(self) -> str:
        """sinfo and squeue output, for failure messages."""
        return "\n".join(_run(cmd, timeout=15).stdout for cmd in (["sinfo"], ["squeue"]))


def _bring_up() -> None:
    with tempfile.TemporaryFile("w+") as log:
        # Output goes to a file, not a pipe: the daemons up.sh starts must not hold our pipe open.
        try:
            proc = subprocess.run(
                ["bash", str(UP_SCRIPT)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                timeout=UP_TIMEOUT_S, check=False,
            )
            returncode: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            returncode = f"timeout after {UP_TIMEOUT_S}s"
        log.seek(0)
        output = log.read()
    if returncode != 0:
        pytest.fail(f"{UP_SCRIPT} failed ({returncode}):\n{output[-6000:]}", pytrace=False)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A usable single-node SLURM cluster with partition "debug" (brought up on demand)."""
    if not _usable_nodes():
        reason = _why_unable()
        if reason is not None:
            message = f"SLURM dev cluster NOT available, SLURM tests not run: {reason}"
            if os.environ.get("CI"):
                pytest.fail(f"{message} (CI is set, so this is an error, not a skip)", pytrace=False)
            pytest.skip(message)
        _bring_up()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _usable_nodes():
            if time.monotonic() > deadline:
                pytest.fail(f"up.sh succeeded but sinfo shows no usable node: {_node_rows()}", pytrace=False)
            time.sleep(1)
    node, _, cpus = _usable_nodes()[0]
    return SlurmCluster(partition=PARTITION, node=node, cpus=cpus)



@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """A data cache holding the tiny toy world of ``tests/run_configs.py``, prepared once.

    Preparing it here, before any job starts, keeps concurrent jobs from building it at once."""
    from run_configs import tiny_run_config
    from studies.data.prepare import prepare_dataset

    cache = tmp_path_factory.mktemp("slurm-data-cache")
    prepare_dataset(tiny_run_config(cache / "unused", cache).data)
    return cache
