"""End-to-end checks of the single-node SLURM cluster from slurm/dev-cluster/.

These run real jobs through slurmctld/slurmd: batch jobs, multi-task `srun`, submitit (the way
studies/ submits) and requeueing, which preemption handling relies on. Requeue speed depends on
`AuthInfo=cred_expire=10` and `SchedulerParameters=sched_interval=5` in slurm.conf; with SLURM's
defaults a requeued job is held for about 150 s and the requeue test fails.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

JOB_TIMEOUT_S = 90  # generous: on a 2-core machine other jobs may hold the CPUs for a while
# A requeued job waits out cred_expire (10 s) and a scheduler pass (up to 5 s): 12 to 15 s measured,
# with a second test suite loading the CPUs. SLURM's defaults hold it about 150 s, so 60 s tells
# the two apart with room for a slow machine.
REQUEUE_RESTART_LIMIT_S = 60


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _wait_for(condition, timeout: float, what: str, cluster) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen after {timeout}s\n{cluster.describe()}")
        time.sleep(0.25)


def test_sbatch_job_writes_file_and_completes(slurm_cluster, tmp_path):
    out = tmp_path / "job.txt"
    job_id = slurm_cluster.sbatch(
        "--time=2",
        f"--output={tmp_path / 'slurm-%j.out'}",
        f'--wrap=echo "$SLURM_JOB_ID $SLURM_JOB_PARTITION $SLURMD_NODENAME" > {shlex.quote(str(out))}',
    )
    try:
        info = slurm_cluster.wait_until_final(job_id, JOB_TIMEOUT_S)
    finally:
        slurm_cluster.cancel(job_id)
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0")
    assert out.read_text().split() == [job_id, "debug", slurm_cluster.node]


def test_srun_two_tasks_get_distinct_ranks(slurm_cluster):
    # A unique name lets a timed-out allocation be cancelled: killing srun alone can leave its
    # request pending in the queue, where it would hold back the jobs of the tests that follow.
    job_name = f"srun-ranks-{os.getpid()}"  # unique among test sessions running at once
    try:
        proc = subprocess.run(
            ["srun", "--partition=debug", f"--job-name={job_name}", "-n", "2", "--time=1", "bash", "-c",
             'echo "$SLURM_PROCID $SLURM_NTASKS $SLURM_JOB_ID"'],
            capture_output=True, text=True, timeout=JOB_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        queue = slurm_cluster.describe()  # before the cancel, so it shows what held the CPUs
        subprocess.run(["scancel", f"--name={job_name}"], capture_output=True, timeout=30, check=False)
        said = timeout.stderr.decode() if isinstance(timeout.stderr, bytes) else timeout.stderr or ""
        pytest.fail(f"srun -n 2 got no allocation within {JOB_TIMEOUT_S}s: {said.strip()}\n{queue}")
    assert proc.returncode == 0, proc.stderr
    rows = sorted(line.split() for line in proc.stdout.splitlines())
    assert [row[0] for row in rows] == ["0", "1"]
    assert all(row[1] == "2" for row in rows)
    assert rows[0][2] == rows[1][2], "both tasks must belong to one job step"


def test_submitit_job_returns_result(slurm_cluster, tmp_path):
    submitit = pytest.importorskip("submitit")

    # Defined locally so cloudpickle ships it by value: the job cannot import this test module.
    def sum_of_squares(n: int) -> tuple[int, str]:
        import os

        return sum(i * i for i in range(n)), os.environ["SLURM_JOB_PARTITION"]

    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(slurm_partition="debug", timeout_min=2, cpus_per_task=1)
    job = executor.submit(sum_of_squares, 10)
    try:
        # Without accounting, submitit cannot read states from sacct; the result file decides.
        _wait_for(lambda: job.paths.result_pickle.exists(), JOB_TIMEOUT_S, f"result of job {job.job_id}", slurm_cluster)
        assert job.result() == (285, "debug")
    finally:
        slurm_cluster.cancel(job.job_id)


def test_unknown_partition_fails_at_submission(slurm_cluster, tmp_path):
    proc = subprocess.run(
        ["sbatch", "--partition=no_such_partition", "--wrap=true"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode != 0
    assert "Invalid partition name specified" in proc.stderr

    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(slurm_partition="no_such_partition", timeout_min=1)
    with pytest.raises(submitit.core.utils.FailedJobError, match="Invalid partition name specified"):
        executor.submit(int, "1")


def test_requeued_job_restarts_within_seconds(slurm_cluster, tmp_path):
    starts = tmp_path / "starts.txt"
    job_id = slurm_cluster.sbatch(
        "--requeue",
        "--time=2",
        "--output=/dev/null",
        f'--wrap=echo "${{SLURM_RESTART_COUNT:-0}}" >> {shlex.quote(str(starts))}; sleep 110',
    )
    try:
        _wait_for(lambda: _lines(starts) == ["0"], JOB_TIMEOUT_S, f"first start of job {job_id}", slurm_cluster)
        subprocess.run(["scontrol", "requeue", job_id], check=True, capture_output=True, text=True, timeout=30)
        requeued_at = time.monotonic()
        _wait_for(lambda: len(_lines(starts)) >= 2, REQUEUE_RESTART_LIMIT_S, f"restart of requeued job {job_id}", slurm_cluster)
        restart_s = time.monotonic() - requeued_at
        assert _lines(starts) == ["0", "1"], "the restarted job must see SLURM_RESTART_COUNT=1"
        assert slurm_cluster.job(job_id).restarts == 1
        assert restart_s < REQUEUE_RESTART_LIMIT_S
    finally:
        slurm_cluster.cancel(job_id)
