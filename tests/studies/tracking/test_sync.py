"""Tests of studies/tracking/sync.py (``python -m studies.tracking sync``) against a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from mlflow_server import MlflowServer, runs_of
from studies.tracking.tracker import PENDING_FILE, RunTracker

pytestmark = pytest.mark.mlflow_server


def test_unsent_records_are_replayed_by_the_sync_command(tmp_path):
    server = MlflowServer(tmp_path / "server")
    out = tmp_path / "runs" / "g-sync" / "key4"
    config = {"grid": "g-sync", "objective": "arm", "model": {"name": "tiny"}, "out_dir": str(out),
              "tracking": {"uri": server.uri}, "budget": {"flops_budget": 1e12}}
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(json.dumps(config))
    tracker = RunTracker(out, server.uri, "g-sync", config, "key4", flush_every_s=0)
    for step in range(5):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    assert tracker.finish() is False  # server never came up: everything stays on disk
    assert len((out / PENDING_FILE).read_text().splitlines()) == 6
    server.start()
    try:
        done = subprocess.run([sys.executable, "-m", "studies.tracking", "sync", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        (record,) = runs_of(server.uri, "g-sync")
        history = MlflowClient(server.uri).get_metric_history(record.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == list(range(5))
        assert record.info.status == "FINISHED"
    finally:
        server.stop()
