"""What a launch does with MLflow before anything is submitted.

It resolves the store (``tracking.uri`` of the grid, else ``MLFLOW_TRACKING_URI``, else the embedded
SQLite store ``<runs dir>/mlflow.db``), checks that it is reachable, refuses an experiment that holds
another grid's runs, opens one parent run for this launch (closed when the launch ends) and hands its
id to every submitted run through the run folder's ``tracking.json`` (a run that already has an MLflow
run keeps it). It also answers "which run keys finished?" from MLflow's status and tags.

``studies.tracking`` imports only the standard library at module level; MLflow is imported here
only on a real launch, never for a dry run.
"""

from __future__ import annotations

import sys
from typing import Callable

from models.metric_names import LAUNCH_RUNS
from studies.credentials import mask_uri
from studies.tracking import (
    check_reachable,
    finished_run_keys,
    read_tracking_file,
    resolve_tracking_uri,
    start_parent_run,
    ui_command,
    write_tracking_file,
)


def tracking_store(plan) -> str | None:
    """The store a launch of ``plan`` reports to (None when tracking is off); ValueError (the
    launcher's "bad input, nothing submitted") when a server does not answer. Writes nothing."""
    tracking = plan.grid_config.tracking
    if not tracking.enabled:
        return None
    uri = resolve_tracking_uri(tracking.uri, plan.runs_root.parent)
    if uri.startswith(("http://", "https://")):
        try:
            check_reachable(uri)
        except RuntimeError as error:
            raise ValueError(str(error)) from error
    return uri


def launch_tracking(plan, todo, say: Callable[..., None]) -> tuple[set[str], str | None]:
    """Prepare MLflow for submitting ``todo``: the run keys MLflow already knows as finished, and the
    launch's parent run (None when tracking is off or nothing is left to submit).

    Raises ValueError (the launcher's "bad input, nothing submitted") when the store is unusable
    or the experiment belongs to another grid.
    """
    uri = tracking_store(plan)  # a server: reachable
    if uri is None:
        return set(), None
    if not uri.startswith(("http://", "https://")):
        try:
            check_reachable(uri)  # a local store: its folder can be made
        except RuntimeError as error:
            raise ValueError(str(error)) from error
    tracking = plan.grid_config.tracking
    experiment = tracking.experiment or plan.grid
    say(f"MLflow: {mask_uri(uri)} (experiment {experiment}); browse with: {ui_command(uri)}")
    finished = finished_run_keys(uri, experiment)
    remaining = [run for run in todo if run.key not in finished]
    parent = None
    if remaining:
        parent = start_parent_run(uri, plan.grid, experiment, tags={LAUNCH_RUNS: str(len(remaining))})
        for run in remaining:
            if not read_tracking_file(run.out_dir).get("run_id"):
                write_tracking_file(run.out_dir, parent_run_id=parent, run_key=run.key)
    return finished, parent


def end_launch_run(plan, parent: str, status: str) -> None:
    """Close a launch's parent run: FINISHED when every local run finished or every SLURM job was
    submitted, FAILED or KILLED otherwise. An unreachable store only costs a message."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(plan.grid_config.tracking.uri, plan.runs_root.parent)
    try:
        MlflowClient(uri).set_terminated(parent, status=status)
    except Exception as error:  # noqa: BLE001 - the runs are done; only the grouping run stays open
        print(f"[tracking] could not close the launch's MLflow run {parent} at {mask_uri(uri)}: {error}",
              file=sys.stderr)
