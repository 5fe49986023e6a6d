"""Preemption through the real local cluster loses nothing.

A tiny MDM run, submitted with the sbatch template of slurm/templates, is signalled twice while it
trains (``scancel --signal=USR1``, as SLURM's ``--signal=USR1@N`` does before the time limit, then
``--signal=TERM``, as before a kill). Each time it saves its checkpoint after the current optimizer
step and requeues itself; the requeued job resumes. The finished run must have the per-step training
losses of an uninterrupted run of the same config (CPU, bit for bit: the model, optimizer, schedule,
MDM noise and data position all resume exactly), every step logged exactly once, one final
checkpoint, one result and one MLflow run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess

import pytest
from run_configs import tiny_run_config
from slurm_jobs import mtime, queue_empty, render_job, scontrol_fields, start_local_run, train_losses, wait_for, write_run_config

pytestmark = pytest.mark.slurm

STEPS = 120  # enough that both signals land while the run trains (about 0.1-0.3 s per step here)
START_TIMEOUT_S = 120  # submission to training, on a busy 2-core machine
REQUEUE_TIMEOUT_S = 120  # requeue hold (about 15 s with the dev cluster's settings) plus start-up


def _signal(job_id: str, name: str) -> None:
    proc = subprocess.run(["scancel", f"--signal={name}", job_id], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_run_signalled_twice_is_requeued_and_matches_uninterrupted_run(slurm_cluster, data_cache, tmp_path):
    config = tiny_run_config(tmp_path / "runs" / "testgrid" / "preempted", data_cache, "mdm", STEPS,
                             trainer={"checkpoint_every_n_steps": 5, "val_every_n_steps": STEPS})
    reference = dataclasses.replace(config, out_dir=str(tmp_path / "reference"),
                                    tracking=dataclasses.replace(config.tracking, enabled=False))
    config_path = write_run_config(config, tmp_path / "jobs" / "preempted.yaml")
    script = render_job(config_path, tmp_path / "jobs" / "preempted.sbatch")
    out = tmp_path / "runs" / "testgrid" / "preempted"
    last = out / "checkpoints" / "last.ckpt"

    job_id = slurm_cluster.sbatch(str(script))
    local = start_local_run(write_run_config(reference, tmp_path / "reference.yaml"), tmp_path / "reference.log")
    job_log = tmp_path / "jobs" / f"slurm-{job_id}.out"
    try:
        # 1st signal: as soon as the run has written its first periodic checkpoint (step 5)
        wait_for(lambda: last.exists(), START_TIMEOUT_S, "first checkpoint of the SLURM run", slurm_cluster)
        _signal(job_id, "USR1")
        saved = wait_for(lambda: re.findall(r"saved \S+ at step (\d+)", job_log.read_text()), 60,
                         "checkpoint after SIGUSR1", slurm_cluster)
        first_saved = mtime(last)
        # 2nd signal: once the requeued job trains again (it has written a newer checkpoint)
        wait_for(lambda: mtime(last) > first_saved, REQUEUE_TIMEOUT_S, "training after the first requeue",
                 slurm_cluster)
        _signal(job_id, "TERM")
        info = slurm_cluster.wait_until_final(job_id, REQUEUE_TIMEOUT_S + 120)
        assert local.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        slurm_cluster.cancel(job_id)
        if local.poll() is None:
            local.kill()

    log = job_log.read_text()
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", "0:0", 2), log[-3000:]
    saved = [int(s) for s in re.findall(r"saved \S+ at step (\d+)", log)]
    assert len(saved) == 2 and saved[0] < saved[1] < STEPS, log[-3000:]  # both mid-training
    assert "received SIGUSR1" in log and "received SIGTERM" in log
    assert [int(r) for r in re.findall(r"restart (\d+) on", log)] == [0, 1, 2]

    # losses: every step exactly once, equal to the uninterrupted run's
    preempted, uninterrupted = train_losses(out), train_losses(tmp_path / "reference")
    steps = [step for step, _ in preempted]
    assert steps == sorted(set(steps)) and len(steps) == STEPS, steps
    assert preempted == uninterrupted
    assert len(list((out / "logs").glob("version_*"))) == 3  # one CSV log per attempt

    # one final checkpoint, one result
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final.ckpt"]
    assert list(out.glob("result*.json")) == [out / "result.json"]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == STEPS
    assert result["train_loss"] == pytest.approx(json.loads((tmp_path / "reference" / "result.json").read_text())["train_loss"], abs=0)

    # one MLflow run, finished, with the whole loss curve
    from mlflow.tracking import MlflowClient

    tracking = json.loads((out / "tracking.json").read_text())
    client = MlflowClient(tracking["tracking_uri"])
    runs = client.search_runs([tracking["experiment_id"]], filter_string=f"tags.run_key = '{tracking['run_key']}'")
    assert [r.info.run_id for r in runs] == [tracking["run_id"]]
    assert runs[0].info.status == "FINISHED"
    history = client.get_metric_history(tracking["run_id"], "train/loss")
    assert sorted({m.step for m in history}) == steps
    assert scontrol_fields(job_id).get("Restarts") == "2"


def test_submitit_run_signalled_is_requeued_by_submitit_and_resumes(slurm_cluster, tmp_path):
    """Under submitit the run saves as above but leaves the requeue to submitit's Checkpointable."""
    import sys
    from pathlib import Path

    from models.config import preset

    repo = Path(__file__).resolve().parents[2]
    steps = 200  # the signal must land while the run trains, seconds after its first checkpoint
    budget = 6 * preset("tiny").non_embedding_params * steps * 2 * 32
    args = [sys.executable, str(repo / "sweeps" / "launch.py"), "--grid", "smoke", "--cluster", "slurm",
            "--profile", "dev", "--only", "objective=arm", "models=[tiny]", f"budgets=[{budget}]", "trainer.seq_len=32",
            "trainer.global_batch_size=2", "trainer.micro_batch_size=2", "trainer.val_batches=1",
            f"trainer.val_every_n_steps={steps}", "trainer.checkpoint_every_n_steps=5", "trainer.log_every_n_steps=1",
            "trainer.progress_bar=false",
            "data.toyworld.num_people=40", "data.toyworld.num_arithmetic=100", "data.toyworld.task_items=10",
            "data.toyworld.validation_bios=10", "data.toyworld.validation_arithmetic=10",
            "data.tokenizer.vocab_size=300", "eval.suite=none"]
    launch = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    record = json.loads((tmp_path / "runs" / "smoke" / "sweep" / "submissions.jsonl").read_text().splitlines()[-1])
    out, job_id = Path(record["config"]).parent, record["job_id"]
    try:
        wait_for(lambda: (out / "checkpoints" / "last.ckpt").exists(), START_TIMEOUT_S, "first checkpoint",
                 slurm_cluster)
        _signal(job_id, "USR2")  # submitit's signal (its --signal=USR2@N before the time limit)
        wait_for(lambda: queue_empty(job_id), REQUEUE_TIMEOUT_S + 120, "the requeued job finishing",
                 slurm_cluster, every=1)
    finally:
        slurm_cluster.cancel(job_id)
    # submitit appends every attempt to one log: its warnings and the run's output in stderr, its info in stdout
    log, info = Path(record["log"]).read_text(), Path(record["stdout"]).read_text()
    assert re.search(r"saved \S+ at step \d+; requeueing the job", log), log[-3000:]
    assert "Caught signal SIGUSR2" in log and f"Requeued job {job_id.split('_')[0]}" in info, info[-3000:]
    assert log.count("Restored all states from the checkpoint") == 1
    assert json.loads((out / "result.json").read_text())["steps"] == steps
    steps_logged = [step for step, _ in train_losses(out)]
    assert steps_logged == sorted(set(steps_logged)) and len(steps_logged) == steps
    assert len(list((out / "logs").glob("version_*"))) == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["final.ckpt"]
