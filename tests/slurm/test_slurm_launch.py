"""``sweeps/launch.py`` against the real local cluster: submitit submission, the emitted sbatch job
array, and the bad inputs (a partition the cluster lacks, a run that crashes inside its job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_jobs import queue_empty, wait_for

from models.config import preset

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]
STEPS, SEQ_LEN, BATCH = 4, 32, 2
# a budget of exactly four optimizer steps of the tiny model: C = 6 N (4 x 2 x 32)
BUDGET = 6 * preset("tiny").non_embedding_params * STEPS * BATCH * SEQ_LEN
TINY = [
    "models=[tiny]", f"budgets=[{BUDGET}]", f"trainer.seq_len={SEQ_LEN}", f"trainer.global_batch_size={BATCH}",
    f"trainer.micro_batch_size={BATCH}", "trainer.val_batches=1", "trainer.val_every_n_steps=2",
    "trainer.checkpoint_every_n_steps=2", "trainer.progress_bar=false", "data.toyworld.num_people=40",
    "data.toyworld.num_arithmetic=100", "data.toyworld.task_items=10", "data.toyworld.validation_bios=10",
    "data.toyworld.validation_arithmetic=10", "data.tokenizer.vocab_size=300", "eval.suite=none",
]
JOB_TIMEOUT_S = 240


def _cli(script: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "sweeps" / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _status(cwd: Path, *args: str) -> list[dict]:
    proc = _cli("status.py", "--grid", "smoke", "--profile", "dev", "--format", "json", *args, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_smoke_grid_through_submitit_finishes(slurm_cluster, tmp_path):
    args = ["--grid", "smoke", "--cluster", "slurm", "--profile", "dev", "--only", "objective=arm", *TINY]
    launch = _cli("launch.py", *args, cwd=tmp_path)
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    assert "as SLURM job" in launch.stdout

    rows = wait_for(lambda: [r for r in _status(tmp_path, "--only", "objective=arm", *TINY) if r["state"] == "finished"],
                    JOB_TIMEOUT_S, "the submitit run finishing", slurm_cluster, every=2)
    assert len(rows) == 1 and rows[0]["executor"] == "slurm" and rows[0]["job_id"]
    out_dir = tmp_path / "runs" / "smoke" / rows[0]["run_key"]
    result = json.loads((out_dir / "result.json").read_text())
    assert result["steps"] == STEPS and result["objective"] == "arm"
    # the run trained inside the SLURM job: its submitit log (in the sweep folder) holds Lightning's output
    assert rows[0]["job_id"] in rows[0]["log"] and "max_steps=4" in Path(rows[0]["log"]).read_text()
    table = _cli("status.py", "--grid", "smoke", "--profile", "dev", "--only", "objective=arm", *TINY, cwd=tmp_path)
    assert "1 finished" in table.stdout, table.stdout

    again = _cli("launch.py", *args, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr


def test_emitted_sbatch_array_is_accepted_and_finishes(slurm_cluster, tmp_path):
    emit = _cli("launch.py", "--grid", "smoke", "--profile", "dev", "--emit-sbatch", str(tmp_path / "batch"), *TINY,
                cwd=tmp_path)
    assert emit.returncode == 0, emit.stderr
    script = tmp_path / "batch" / "array.sbatch"
    text = script.read_text()
    assert "#SBATCH --array=0-1%2" in text and "#SBATCH --partition=debug" in text
    assert "#SBATCH --signal=USR1@30" in text and "#SBATCH --requeue" in text
    configs = (tmp_path / "batch" / "configs.txt").read_text().split()
    assert len(configs) == 2 and all(Path(c).is_file() for c in configs)
    assert not list((tmp_path / "runs" / "smoke").glob("*/result.json"))  # emitting submits nothing

    job_id = subprocess.run(["sbatch", "--parsable", str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30, check=True).stdout.strip()
    try:
        wait_for(lambda: queue_empty(job_id), JOB_TIMEOUT_S, f"job array {job_id} leaving the queue", slurm_cluster, every=2)
    finally:
        slurm_cluster.cancel(job_id)
    logs = sorted((tmp_path / "batch" / "logs").glob(f"{job_id}_*.out"))
    assert [p.name for p in logs] == [f"{job_id}_0.out", f"{job_id}_1.out"]
    for task, log in enumerate(logs):
        assert slurm_cluster.job(f"{job_id}_{task}").state == "COMPLETED", log.read_text()[-2000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "smoke").glob("*/result.json")]
    assert sorted(r["objective"] for r in results) == ["arm", "mdm"]
    assert all(r["steps"] == STEPS for r in results)


def _profile(tmp_path: Path, partition: str) -> Path:
    dev = (REPO_ROOT / "slurm" / "clusters" / "dev.yaml").read_text()
    path = tmp_path / "elsewhere.yaml"
    path.write_text(dev.replace("partition: debug", f"partition: {partition}"))
    return path


def test_unknown_partition_fails_at_submission_with_slurms_message(slurm_cluster, tmp_path):
    profile = _profile(tmp_path, "no_such_partition")
    launch = _cli("launch.py", "--grid", "smoke", "--cluster", "slurm", "--profile", str(profile),
                  "--only", "objective=arm", *TINY, cwd=tmp_path)
    assert launch.returncode == 2, launch.stdout + launch.stderr
    assert "sbatch refused the job array" in launch.stderr
    assert "Invalid partition name specified" in launch.stderr
    assert "Traceback" not in launch.stderr


def test_crashing_job_is_failed_with_its_log_and_not_retried(slurm_cluster, tmp_path):
    # passes planning, raises inside the job: Lightning knows no such accelerator
    crash = [*TINY, "trainer.accelerator=no_such_accelerator"]
    args = ["--grid", "smoke", "--cluster", "slurm", "--profile", "dev", "--only", "objective=arm", *crash]
    launch = _cli("launch.py", *args, cwd=tmp_path)
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]

    rows = wait_for(lambda: [r for r in _status(tmp_path, "--only", "objective=arm", *crash) if r["state"] == "failed"],
                    JOB_TIMEOUT_S, "the crashing run shown as failed", slurm_cluster, every=2)
    row = rows[0]
    assert "raised" in row["detail"] and "no_such_accelerator" in row["detail"], row
    log = Path(row["log"])
    assert log.is_file() and "no_such_accelerator" in log.read_text()
    table = _cli("status.py", "--grid", "smoke", "--profile", "dev", "--only", "objective=arm", *crash, cwd=tmp_path)
    assert "failed" in table.stdout and str(log) in table.stdout, table.stdout

    again = _cli("launch.py", *args, cwd=tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "not resubmitted; pass --retry-failed" in again.stdout and str(log) in again.stdout
    submitted = [json.loads(line) for line in (tmp_path / "runs" / "smoke" / "sweep" / "submissions.jsonl").read_text().splitlines()]
    assert sum(r["event"] == "submitted" for r in submitted) == 1
    retry = _cli("launch.py", *args, "--retry-failed", "--dry-run", cwd=tmp_path)
    assert "to submit: 1" in retry.stdout, retry.stdout
