"""The MLflow experiments this project owns: one per grid, the parent run of each launch, finished runs.

An experiment is tagged with the grid that owns it (``EXPERIMENT_GRID``), and a grid's runs never go
into an experiment of another grid or one not made by this project. A launch of a grid is a parent
run and each job a nested child run (tag ``mlflow.parentRunId``), so the UI groups a sweep. MLflow is
imported inside the functions that use it.
"""

from __future__ import annotations

import time

from models.metric_names import EXPERIMENT_GRID, GRID, KIND, LAUNCH_KIND, RUN_KEY
from studies.tracking.run_tags import git_state
from studies.tracking.uri import default_artifact_location


def ensure_experiment(client, name: str, grid: str, artifact_location: str | None = None) -> str:
    """The experiment of a grid; refuses one that belongs to a different grid or to someone else."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location or default_artifact_location(client.tracking_uri, name)
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_GRID: grid})
    owner = experiment.tags.get(EXPERIMENT_GRID)
    if owner != grid:
        held = f"the runs of grid {owner!r}" if owner else "runs not made by this project"
        raise ValueError(
            f"MLflow experiment {name!r} already holds {held}; refusing to mix grid {grid!r} into it. "
            "Set tracking.experiment to another name"
        )
    return experiment.experiment_id


def start_parent_run(uri: str, grid: str, experiment: str | None = None, tags: dict | None = None) -> str:
    """A parent run for one launch of a grid; the jobs' runs nest under it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, experiment or grid, grid)
    run = client.create_run(
        experiment_id,
        run_name=f"{grid}/launch-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={GRID: grid, KIND: LAUNCH_KIND, **git_state(), **(tags or {})},
    )
    return run.info.run_id


def finished_run_keys(uri: str, experiment: str) -> set[str]:
    """Run keys of an experiment's runs whose MLflow status is FINISHED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return set()
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=50_000)
    return {run.data.tags[RUN_KEY] for run in runs if RUN_KEY in run.data.tags}
