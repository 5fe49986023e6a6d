"""What a launch does with MLflow before anything is submitted.

It resolves the store (``tracking.uri`` of the grid, else ``MLFLOW_TRACKING_URI``, else the embedded
SQLite store ``<runs dir>/mlflow.db``), checks that it is reachable, refuses an experiment that holds
another grid's runs, opens one parent run for this launch and hands its id to every submitted run
through the run folder's ``tracking.json`` (a run that already has an MLflow run keeps it). It also
answers "which run keys finished?" from MLflow's status and tags.

``studies.tracking`` imports only the standard library at module level; MLflow is imported here
only on a real launch, never for a dry run.
"""

from __future__ import annotations

from typing import Callable

from studies.tracking import (
    check_reachable,
    finished_run_keys,
    mask_uri,
    read_tracking_file,
    resolve_tracking_uri,
    start_parent_run,
    ui_command,
    write_tracking_file,
)


def launch_tracking(plan, todo, say: Callable[..., None]) -> set[str]:
    """Prepare MLflow for submitting ``todo``; returns the run keys MLflow already knows as finished.

    Raises ValueError (the launcher's "bad input, nothing submitted") when the store is unreachable
    or the experiment belongs to another grid.
    """
    tracking = plan.grid_config.tracking
    if not tracking.enabled:
        return set()
    uri = resolve_tracking_uri(tracking.uri, plan.runs_root.parent)
    try:
        check_reachable(uri)
    except RuntimeError as error:
        raise ValueError(str(error)) from error
    experiment = tracking.experiment or plan.grid
    say(f"MLflow: {mask_uri(uri)} (experiment {experiment}); browse with: {ui_command(uri)}")
    finished = finished_run_keys(uri, experiment)
    remaining = [run for run in todo if run.key not in finished]
    if remaining:
        parent = start_parent_run(uri, plan.grid, experiment, tags={"runs": str(len(remaining))})
        for run in remaining:
            if not read_tracking_file(run.out_dir).get("run_id"):
                write_tracking_file(run.out_dir, parent_run_id=parent, run_key=run.key)
    return finished
