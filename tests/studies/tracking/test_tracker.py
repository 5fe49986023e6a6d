"""Tests of studies/tracking/tracker.py against a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from mlflow_server import runs_of
from studies.tracking.tracker import PENDING_FILE, RunTracker, read_tracking_file

pytestmark = pytest.mark.mlflow_server


def test_a_torn_line_in_the_buffer_is_skipped_and_blocks_nothing(mlflow_server, tmp_path):
    """A full disk or a kill can cut the buffer's last line short; what follows it must still reach
    MLflow, from the run and from the sync command."""
    out = tmp_path / "runs" / "g-torn" / "key6"
    config = {"grid": "g-torn", "name": "arm-tiny-1e+12", "objective": "arm", "model": {"name": "tiny"},
              "out_dir": str(out), "tracking": {"uri": mlflow_server.uri}, "budget": {"flops_budget": 1e12}}
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(json.dumps(config))
    tracker = RunTracker(out, mlflow_server.uri, "g-torn", config, "key6", flush_every_s=3600)
    tracker.log_metrics({"train/loss": 1.0}, 0)  # the first call flushes: the run exists
    with (out / PENDING_FILE).open("a") as handle:
        handle.write('{"kind": "metric", "key": "train/lo')  # cut off mid-record
    for step in range(1, 4):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    assert tracker.flush()
    with (out / PENDING_FILE).open("a") as handle:
        handle.write('{"kind": "met')
    for step in range(4, 6):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    done = subprocess.run([sys.executable, "-m", "studies.tracking", "sync", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipped 1 torn line(s)" in done.stderr
    history = MlflowClient(mlflow_server.uri).get_metric_history(tracker.run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(6))
    assert (out / PENDING_FILE).read_text() == ""


def test_a_run_pointed_at_another_store_continues_as_a_new_run_there(mlflow_server, tmp_path, capsys):
    out = tmp_path / "runs" / "g-moved" / "key7"
    config = {"grid": "g-moved", "name": "arm-tiny-1e+12", "objective": "arm", "model": {"name": "tiny"},
              "budget": {"flops_budget": 1e12}}
    first = RunTracker(out, f"sqlite:///{tmp_path / 'first.db'}", "g-moved", config, "key7", flush_every_s=0)
    first.log_metrics({"train/loss": 2.0}, 0)
    assert first.finish("FAILED")
    moved = RunTracker(out, mlflow_server.uri, "g-moved", config, "key7", flush_every_s=0)
    assert "continues as a new MLflow run" in capsys.readouterr().err
    moved.log_metrics({"train/loss": 1.0}, 1)
    assert moved.finish()
    (record,) = runs_of(mlflow_server.uri, "g-moved")
    assert record.info.run_id == moved.run_id != first.run_id and record.info.status == "FINISHED"
    assert read_tracking_file(out)["tracking_uri"] == mlflow_server.uri


def test_the_run_is_opened_once_per_process_and_reopened_on_resume(mlflow_server, tmp_path):
    """Only a process that resumes a run marks it resumed, and a flush after the final status
    leaves that status in place."""
    out = tmp_path / "runs" / "g-open" / "key8"
    config = {"grid": "g-open", "name": "arm-tiny-1e+12", "objective": "arm", "model": {"name": "tiny"},
              "budget": {"flops_budget": 1e12}}
    client = MlflowClient(mlflow_server.uri)
    fresh = RunTracker(out, mlflow_server.uri, "g-open", config, "key8", flush_every_s=0)
    for step in range(3):
        fresh.log_metrics({"train/loss": 1.0 / (step + 1)}, step)  # each call flushes
    assert fresh.finish("KILLED")
    assert fresh.flush()
    run = client.get_run(fresh.run_id)
    assert "resumed_on_host" not in run.data.tags
    assert run.info.status == "KILLED"

    resumed = RunTracker(out, mlflow_server.uri, "g-open", config, "key8", flush_every_s=0)
    resumed.log_metrics({"train/loss": 0.2}, 3)
    assert resumed.finish()
    run = client.get_run(fresh.run_id)
    assert resumed.run_id == fresh.run_id
    assert run.data.tags["resumed_on_host"]
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/loss")) == [0, 1, 2, 3]
