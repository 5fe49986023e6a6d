"""Replaying what a run left unsent: each run folder's buffer goes to the run's MLflow run.

A run that ends while MLflow is unreachable keeps its unsent records in
``<out_dir>/mlflow-pending.jsonl``; :func:`sync` (``python -m studies.tracking sync RUN_DIR``) reopens
the folder's run (or creates it) and flushes that buffer, with the same once-per-step rule as the run.
The store is the run config's ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the URI recorded in
``tracking.json`` when it carries no masked credentials.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from studies.config import CONFIG_FILE
from studies.credentials import mask_uri
from studies.tracking.tracker import RunTracker, read_tracking_file


def sync(run_dirs: list[str]) -> int:
    """Replay the unsent buffer of each run folder into MLflow."""
    failures = 0
    for run_dir in run_dirs:
        out = Path(run_dir)
        state = read_tracking_file(out)
        config_path = out / CONFIG_FILE
        if not config_path.exists():
            print(f"{out}: no config.yaml, not a run folder", file=sys.stderr)
            failures += 1
            continue
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(OmegaConf.load(config_path), resolve=True)
        recorded = state.get("tracking_uri") if "***" not in state.get("tracking_uri", "***") else None
        uri = config.get("tracking", {}).get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or recorded
        if not uri:
            print(f"{out}: no tracking URI recorded; set MLFLOW_TRACKING_URI", file=sys.stderr)
            failures += 1
            continue
        tracker = RunTracker(out, uri, config["grid"], config, state.get("run_key", out.name),
                             experiment=config.get("tracking", {}).get("experiment"))
        pending = tracker.pending_path
        count = len(pending.read_text().splitlines()) if pending.exists() else 0
        if tracker.flush():
            print(f"{out}: sent {count} buffered records to {mask_uri(uri)} (run {tracker.run_id})")
        else:
            failures += 1
    return 1 if failures else 0
