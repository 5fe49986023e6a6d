"""The MLflow UI shows a grid's runs: headless Chromium renders the experiment page of a real server."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from studies.tracking.tracker import RunTracker

pytestmark = pytest.mark.mlflow_server

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=20000", "--window-size=1600,1000",
]


def render(chromium: str, url: str, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=180)


def test_the_ui_lists_the_runs_of_a_grid(chromium, mlflow_server, tmp_path):
    grid = "ui-grid"
    names = []
    for objective in ("arm", "mdm"):
        config = {"grid": grid, "name": f"{objective}-tiny-1e+11", "objective": objective, "model": {"name": "tiny"},
                  "budget": {"flops_budget": 1e11, "flops": 1e11}}
        tracker = RunTracker(tmp_path / objective, mlflow_server.uri, grid, config, f"key-{objective}",
                             flush_every_s=0)
        tracker.log_metrics({"train/loss": 3.0}, 0)
        assert tracker.finish()
        names.append(f"{grid}/{objective}-tiny-1e+11")
    experiment = MlflowClient(mlflow_server.uri).get_experiment_by_name(grid)
    url = f"{mlflow_server.uri}/#/experiments/{experiment.experiment_id}/runs"

    dom = render(chromium, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in names:
        assert name in dom.stdout, f"{name} not on the rendered page of {url}"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = render(chromium, url, f"--screenshot={ARTIFACTS / 'mlflow_ui.png'}")
    assert shot.returncode == 0 and (ARTIFACTS / "mlflow_ui.png").stat().st_size > 10_000
