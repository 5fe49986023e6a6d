"""MLflow wiring: where runs go, what a run records, resume into the same run, outage buffering.

- Where (``uri``): ``tracking.uri`` of the run config, else ``MLFLOW_TRACKING_URI``, else an
  embedded SQLite store ``sqlite:///<runs root>/mlflow.db`` that needs no server (browse it with
  ``mlflow ui``).
- What (``run_tags``): tags the analysis selects runs by, the resolved config as params, and the
  display name ``{grid}/{name}``.
- Experiments (``experiments``): one MLflow experiment per grid; a launch of a grid is a parent run
  and each job a nested child run (tag ``mlflow.parentRunId``), so the UI groups a sweep.
- One run (``tracker``): the run id lives in ``<out_dir>/tracking.json``, so a requeued or restarted
  job reopens that run; every record goes first to an on-disk buffer
  (``<out_dir>/mlflow-pending.jsonl``) that is flushed in batches, so training goes on through an
  outage and each metric's step reaches MLflow once. ``logger`` is the Lightning logger that writes
  through it.
- Replay (``sync``): ``python -m studies.tracking sync RUN_DIR`` sends what a run left unsent.
- Secrets stay out: a tracking URI with credentials is refused (``studies.credentials``; MLflow
  reads them from its environment variables), config keys that look like credentials are never
  logged, and URIs are masked wherever they are printed.

Importing this package needs only the standard library: MLflow is imported inside the functions that
talk to the store, and the Lightning logger is imported from ``studies.tracking.logger`` by the run
that uses it, so a sweep's dry run plans without MLflow, torch or Lightning.
"""

from studies.tracking.experiments import ensure_experiment, finished_run_keys, start_parent_run
from studies.tracking.run_tags import flatten, run_display_name
from studies.tracking.tracker import PENDING_FILE, RunTracker, read_tracking_file, write_tracking_file
from studies.tracking.uri import TrackingUnavailable, check_reachable, resolve_tracking_uri, ui_command

__all__ = [
    "PENDING_FILE",
    "RunTracker",
    "TrackingUnavailable",
    "check_reachable",
    "ensure_experiment",
    "finished_run_keys",
    "flatten",
    "read_tracking_file",
    "resolve_tracking_uri",
    "run_display_name",
    "start_parent_run",
    "ui_command",
    "write_tracking_file",
]
