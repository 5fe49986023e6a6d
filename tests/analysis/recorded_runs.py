"""Finished runs of a grid, recorded from MLflow into a JSON file and replayed into a fresh store.

The analysis tests on synthetic stores know the truth they fit; a recording carries real runs, so
that a test can check the analysis on what training actually logged. ``record`` keeps, for every
finished job run, the tags ``analysis.runs`` reads and the metrics its score tables are built from:
every ``eval/`` metric, ``val/loss``, ``final/val_loss``, ``final/flops`` and ``data/epochs``, and
``train/flops_seen`` / ``train/tokens_seen`` at the steps where the validation loss was logged
(the only steps at which the analysis reads them). Training-loss curves are left out, so the
replayed loss-vs-compute figure shows the validation points without the curves between them.
It also stores what ``analysis.compare`` computed from the original store (the tables of
``TABLES`` and the notes), so a test can require that the replay reproduces it.

    python tests/analysis/recorded_runs.py --grid NAME --tracking-uri sqlite:///runs/mlflow.db \\
        --out tests/analysis/data/NAME_runs.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

TAGS = ("grid", "objective", "model", "seed", "run_key", "non_embedding_params", "tokens",
        "flops_budget", "flops")
METRICS = ("val/loss", "final/val_loss", "final/flops", "data/epochs")
AT_VALIDATION = ("train/flops_seen", "train/tokens_seen")
TABLES = ("fits", "multipliers", "held_out", "isoflop_optima", "allocation")
N_RESAMPLES = 64  # the comparison stored with the runs, and the one a test repeats


def _history(client, run_id: str, key: str) -> list[list[float]]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [[int(m.step), float(m.value)] for m in points]


def table_records(path: Path) -> list[dict]:
    """A table that ``analysis.compare`` wrote, as JSON records (an empty cell is null)."""
    import pandas as pd

    return json.loads(pd.read_csv(path).to_json(orient="records"))


def record(grid: str, tracking_uri: str, *, runs_dir: str | Path = "runs", n_resamples: int = N_RESAMPLES) -> dict:
    """The grid's finished job runs and the comparison computed from them (``N_RESAMPLES``).

    ``runs_dir`` is the root of the grid's run folders, which the comparison reconciles with MLflow.
    """
    import tempfile

    from mlflow.tracking import MlflowClient

    from analysis.compare import compare

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(grid)
    runs = []
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                                  max_results=50_000):
        if run.data.tags.get("kind") == "launch":
            continue
        metrics = {k: _history(client, run.info.run_id, k) for k in run.data.metrics
                   if k.startswith("eval/") or k in METRICS}
        val_steps = {step for step, _ in metrics.get("val/loss", []) + metrics.get("final/val_loss", [])}
        for key in AT_VALIDATION:
            metrics[key] = [p for p in _history(client, run.info.run_id, key) if p[0] in val_steps]
        runs.append({"run_name": run.info.run_name,
                     "tags": {k: run.data.tags[k] for k in TAGS if k in run.data.tags},
                     "metrics": dict(sorted(metrics.items()))})
    runs.sort(key=lambda r: r["run_name"])
    with tempfile.TemporaryDirectory() as out:
        result = compare(grid, tracking_uri=tracking_uri, runs_dir=runs_dir, out=out,
                         n_resamples=n_resamples, log_artifacts=False)
        tables = {name: table_records(Path(out) / f"{name}.csv")
                  for name in TABLES if (Path(out) / f"{name}.csv").is_file()}
    return {"grid": grid, "n_resamples": n_resamples, "runs": runs, "comparison": tables,
            "notes": result.messages}


def replay(recorded: dict, tracking_uri: str) -> str:
    """Log the recorded runs into ``tracking_uri`` as a launch and its job runs; returns the launch's id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from studies.tracking import ensure_experiment

    grid = recorded["grid"]
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, grid, grid)
    parent = client.create_run(experiment_id, run_name=f"{grid}/launch",
                               tags={"grid": grid, "kind": "launch"}).info.run_id
    for run in recorded["runs"]:
        run_id = client.create_run(experiment_id, run_name=run["run_name"],
                                   tags={"mlflow.parentRunId": parent, **run["tags"]}).info.run_id
        metrics = [Metric(key, value, 1_700_000_000_000 + step, step)
                   for key, points in run["metrics"].items() for step, value in points]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
        client.set_terminated(run_id, "FINISHED")
    return parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--runs-dir", default="runs", help="root of the run folders (default: runs)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    recorded = record(args.grid, args.tracking_uri, runs_dir=args.runs_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"recorded {len(recorded['runs'])} runs of {args.grid} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
