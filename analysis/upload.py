"""Log a comparison's output folder to MLflow: artifacts ``analysis/`` of the grid's latest launch
run (the parent run of its job runs), next to the runs it was computed from."""

from __future__ import annotations

from pathlib import Path

from models.metric_names import KIND, LAUNCH_KIND

ARTIFACT_PATH = "analysis"
NO_LAUNCH_RUN = (f"no launch run (tag {KIND}={LAUNCH_KIND}) in the grid's experiment: "
                 "the analysis was not logged to MLflow")


def log_analysis(tracking_uri: str, launch_run_id: str | None, out_dir: Path) -> str | None:
    """Log every file of ``out_dir`` under ``ARTIFACT_PATH`` of ``launch_run_id``; the run's id, or
    None where there is no launch run to log to (``NO_LAUNCH_RUN`` says so)."""
    if launch_run_id is None:
        return None
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).log_artifacts(launch_run_id, str(out_dir), ARTIFACT_PATH)
    return launch_run_id
