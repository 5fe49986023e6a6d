"""sweeps/run_states.py: where a run stands, from its folder, the sweep log, its process, SLURM's queue
and submitit's result."""

from __future__ import annotations

import pickle
import subprocess
import sys

from run_configs import SMOKE_TESTED
from sweeps.plan import plan_grid
from sweeps.run_states import log_progress, run_states
from sweeps.sweep_log import SweepLog, local_job_id, process_identity


def test_running_local_run_shows_progress_then_failure_when_killed(tmp_path, capsys):
    plan = plan_grid("smoke", SMOKE_TESTED, runs_dir=str(tmp_path), only=["budget=1e11", "objective=arm"])
    [run] = plan.runs
    run.out_dir.mkdir(parents=True)
    log_file = run.out_dir / "run.log"
    log_file.write_bytes(b"tokenize: 100%|####| 300/300 [00:00]\nEpoch 0:  40%|####      | 35/88 [00:10<00:15]\r")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        SweepLog(plan.sweep_dir).submitted(run.key, run.name, local_job_id(proc.pid), "local", pid=proc.pid,
                                           host=socket.gethostname(), log=str(log_file))
        state = run_states(plan.runs, SweepLog(plan.sweep_dir).latest())[run.key]
        assert (state.state, state.progress) == ("running", "35/88 (40%)")
    finally:
        proc.kill()
        proc.wait()
    state = run_states(plan.runs, SweepLog(plan.sweep_dir).latest())[run.key]
    assert state.state == "failed" and "without an exit record" in state.detail


def test_a_live_process_that_is_not_the_run_does_not_keep_it_running(tmp_path):
    """The run's PID now belongs to another process (PIDs are reused): its start time differs."""
    import socket

    plan = plan_grid("smoke", SMOKE_TESTED, runs_dir=str(tmp_path), only=["budget=1e11", "objective=arm"])
    [run] = plan.runs
    run.out_dir.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        identity = process_identity(other.pid)
        assert identity and identity.count(":") == 1
        log = SweepLog(plan.sweep_dir)
        log.submitted(run.key, run.name, local_job_id(other.pid), "local", pid=other.pid,
                      host=socket.gethostname(), process=identity)
        assert run_states(plan.runs, log.latest())[run.key].state == "running"  # the very process
        boot, ticks = identity.split(":")
        log.submitted(run.key, run.name, local_job_id(other.pid), "local", pid=other.pid,
                      host=socket.gethostname(), process=f"{boot}:{int(ticks) - 1}")  # an earlier one
        state = run_states(plan.runs, log.latest())[run.key]
        assert state.state == "failed" and "without an exit record" in state.detail
    finally:
        other.kill()
        other.wait()


def test_progress_reads_lightnings_rich_bar(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes("Epoch 0/-2 ━━━━━━━━━ 61/88 0:00:31 • 0:00:14 1.95it/s v_num: 0.000\n".encode())
    assert log_progress(str(log)) == "61/88 (69%)"
    assert log_progress(str(log), steps=122) == "61/122 (50%)"
    assert log_progress(str(tmp_path / "missing.log")) is None


def test_slurm_records_map_to_states(tmp_path, monkeypatch):
    """SLURM's answer (squeue) and submitit's result pickle decide the state of a submitted job."""
    import sweeps.run_states as state_module

    plan = plan_grid("smoke", SMOKE_TESTED, runs_dir=str(tmp_path), only=["budget=1e11"])
    arm, mdm = plan.runs
    log = SweepLog(plan.sweep_dir)
    error_pickle = tmp_path / "77_1_0_result.pkl"
    error_pickle.write_bytes(pickle.dumps(("error", "Traceback ...\nRuntimeError: studies.run exited with code 1")))
    log.submitted(arm.key, arm.name, "77_0", "slurm", log="/x/77_0_0_log.err", result_pickle=str(tmp_path / "none.pkl"))
    log.submitted(mdm.key, mdm.name, "77_1", "slurm", log="/x/77_1_0_log.err", result_pickle=str(error_pickle))

    cases = {
        "queue lists both": ({"77_0": "PENDING", "77_1": "RUNNING"}, ("queued", "running")),
        "queue is empty": ({}, ("failed", "failed")),
        "no squeue here": (None, ("unknown", "failed")),
    }
    for name, (queue, expected) in cases.items():
        monkeypatch.setattr(state_module, "squeue_states", lambda ids, q=queue: q)
        states = run_states(plan.runs, log.latest())
        assert (states[arm.key].state, states[mdm.key].state) == expected, name
    assert "RuntimeError: studies.run exited with code 1" in states[mdm.key].detail
