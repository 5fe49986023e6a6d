"""Tests of studies/tracking/experiments.py against a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from studies.tracking.experiments import ensure_experiment

pytestmark = pytest.mark.mlflow_server


def test_an_experiment_of_another_grid_is_refused(mlflow_server):
    client = MlflowClient(mlflow_server.uri)
    ensure_experiment(client, "shared-name", "grid-a")
    assert ensure_experiment(client, "shared-name", "grid-a")  # same grid: reused
    with pytest.raises(ValueError, match="grid 'grid-a'"):
        ensure_experiment(client, "shared-name", "grid-b")
    client.create_experiment("someone-elses")
    with pytest.raises(ValueError, match="not made by this project"):
        ensure_experiment(client, "someone-elses", "grid-a")
