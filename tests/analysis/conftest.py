"""MLflow stores for the analysis tests, filled the way training jobs fill them.

``fill_grid`` writes a synthetic grid with MlflowClient: a launch (parent) run tagged kind=launch
and one child run per (objective, budget, size) with the tags of ``studies.tracking.run_tags`` and
the metrics of ``studies.run`` / ``studies.tasks.eval_callback``. The curves are known:

- validation loss along the compute frontier L*(C) = E + A C^-alpha, plus K ln(N/N*)^2 for sizes
  off the budget's optimum N*(C) (a parabola in log N, so IsoFLOP slices have their minimum at N*);
- toy_mc accuracy = 0.25 + 0.6 sigmoid(1.5 (log10 C - 16.5)), toy_arithmetic exact match
  = 0.5 sigmoid(1.2 (log10 C - 17));
- MDM's curves are ARM's at C / MDM_MULTIPLIER (SMDM's 16x), so every compute multiplier is known.
"""

from __future__ import annotations

import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

# The tests import the recorder of real runs (recorded_runs.py) from this folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))

E, A, ALPHA, K = 2.0, 533.0, 0.15, 0.04
MDM_MULTIPLIER = 16.0
TOTAL_STEPS = 100
EVAL_STEPS = (25, 50, 100)
BUDGETS = (1e15, 1e16, 1e17, 1e18)


def frontier_loss(c):
    return E + A * np.asarray(c, dtype=float) ** (-ALPHA)


def accuracy(task: str, c: float) -> float:
    if task == "toy_mc":
        return 0.25 + 0.6 / (1 + math.exp(-1.5 * (math.log10(c) - 16.5)))
    return 0.5 / (1 + math.exp(-1.2 * (math.log10(c) - 17.0)))


def optimal_size(budget: float) -> float:
    return 0.1 * math.sqrt(budget / 6.0)


@dataclass
class SyntheticGrid:
    uri: str
    runs_dir: Path
    grid: str
    parent_run_id: str
    finished: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    nan_run: str | None = None
    budgets: tuple = BUDGETS
    total_steps: int = TOTAL_STEPS
    mdm_multiplier: float = MDM_MULTIPLIER

    @staticmethod
    def frontier_loss(c):
        return frontier_loss(c)


def _metric(key, value, step):
    from mlflow.entities import Metric

    return Metric(key, float(value), 1_700_000_000_000 + step, int(step))


def _job_run(client, experiment_id, grid, parent, objective, budget, n, seed, rng, *,
             steps_done=TOTAL_STEPS, nan_at=None):
    from mlflow.entities import RunTag

    n = float(round(n))
    shift = MDM_MULTIPLIER if objective == "mdm" else 1.0
    tags = {"grid": grid, "objective": objective, "model": f"n{n:.3g}", "seed": str(seed),
            "run_key": f"{objective}-{budget:.0e}-{n:.3g}-{seed}", "non_embedding_params": str(int(n)),
            "tokens": str(int(budget / (6 * n))), "flops_budget": repr(budget), "flops": repr(budget)}
    run = client.create_run(experiment_id, run_name=f"{grid}/{objective}-n{n:.3g}-{budget:.0e}",
                            tags={"mlflow.parentRunId": parent, **tags})
    penalty = K * math.log(n / optimal_size(budget)) ** 2

    def loss(c):
        return float(frontier_loss(c / shift) + penalty) * math.exp(rng.normal(0, 0.002))

    metrics = []
    for s in range(9, steps_done, 10):  # Lightning's counter: step s holds s + 1 optimizer steps
        c = (s + 1) / TOTAL_STEPS * budget
        metrics += [_metric("train/flops_seen", c, s), _metric("train/tokens_seen", c / (6 * n), s),
                    _metric("train/loss", loss(c), s)]
    for s in (24, 49):
        if s < steps_done:
            metrics.append(_metric("val/loss", loss((s + 1) / TOTAL_STEPS * budget), s))
    for s in EVAL_STEPS:
        if s > steps_done:
            continue
        c = s / TOTAL_STEPS * budget
        metrics += [_metric("eval/flops_seen", c, s), _metric("eval/tokens_seen", c / (6 * n), s)]
        for task, metric in (("toy_mc", "acc"), ("toy_mc", "acc_norm"), ("toy_arithmetic", "exact_match")):
            value = float(np.clip(accuracy(task, c / shift) + rng.normal(0, 0.005), 0, 1))
            if nan_at == (task, s):
                value = float("nan")
            metrics.append(_metric(f"eval/{task}/{metric}", value, s))
            metrics.append(_metric(f"eval/{task}/n", 100, s))
    if steps_done == TOTAL_STEPS:
        final = loss(budget)
        metrics += [_metric("val/loss", final, TOTAL_STEPS), _metric("final/val_loss", final, TOTAL_STEPS),
                    _metric("final/flops", budget, TOTAL_STEPS)]
    client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag("host", "test")])
    return run.info.run_id


def fill_grid(uri: str, runs_dir: Path, grid: str = "synth", *, budgets=BUDGETS, sizes=(1.0,),
              objectives=("arm", "mdm"), seeds=(0,), extras: bool = True, seed: int = 0) -> SyntheticGrid:
    """A grid of finished runs (objectives x budgets x sizes x seeds; ``sizes`` are multiples of
    each budget's optimal size) plus, with ``extras``, one RUNNING run, one FAILED run and one
    NaN score in a finished run."""
    from mlflow.tracking import MlflowClient

    from studies.tracking import ensure_experiment

    client = MlflowClient(uri)
    rng = np.random.default_rng(seed)
    experiment_id = ensure_experiment(client, grid, grid)
    client.create_run(experiment_id, run_name=f"{grid}/launch-old", start_time=1_600_000_000_000,
                      tags={"grid": grid, "kind": "launch"})
    parent = client.create_run(experiment_id, run_name=f"{grid}/launch-new", start_time=1_700_000_000_000,
                               tags={"grid": grid, "kind": "launch"}).info.run_id
    out = SyntheticGrid(uri=uri, runs_dir=runs_dir, grid=grid, parent_run_id=parent, budgets=tuple(budgets))
    for objective in objectives:
        for budget in budgets:
            for size in sizes:
                for s in seeds:
                    nan_at = ("toy_arithmetic", 25) if extras and out.nan_run is None else None
                    run_id = _job_run(client, experiment_id, grid, parent, objective, budget,
                                      size * optimal_size(budget), s, rng, nan_at=nan_at)
                    client.set_terminated(run_id, "FINISHED")
                    out.finished.append(run_id)
                    out.nan_run = out.nan_run or (run_id if nan_at else None)
    if extras:
        running = _job_run(client, experiment_id, grid, parent, "arm", budgets[-1], 2 * optimal_size(budgets[-1]),
                           7, rng, steps_done=30)
        failed = _job_run(client, experiment_id, grid, parent, "mdm", budgets[-1], 2 * optimal_size(budgets[-1]),
                          8, rng, steps_done=60)
        client.set_terminated(failed, "FAILED")
        out.running.append(running)
        out.failed.append(failed)
    return out


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store; copying it spares each test the schema migration."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def new_store(mlflow_template, tmp_path):
    """Factory: a fresh store at ``<tmp>/<name>/mlflow.db``; returns (runs_dir, uri)."""
    def make(name: str = "runs") -> tuple[Path, str]:
        runs_dir = tmp_path / name
        runs_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(mlflow_template, runs_dir / "mlflow.db")
        return runs_dir, f"sqlite:///{runs_dir / 'mlflow.db'}"
    return make


@pytest.fixture
def synthetic_grid(new_store):
    """Factory: ``synthetic_grid(**fill_grid kwargs)`` -> SyntheticGrid in a fresh store."""
    def make(name: str = "runs", **kwargs) -> SyntheticGrid:
        runs_dir, uri = new_store(name)
        return fill_grid(uri, runs_dir, **kwargs)
    return make


@pytest.fixture(scope="session")
def isoflop_grid(mlflow_template, tmp_path_factory) -> SyntheticGrid:
    """Shared read-only store: 2 objectives x 4 budgets x 3 sizes, plus running/failed/NaN extras."""
    runs_dir = tmp_path_factory.mktemp("isoflop-grid")
    shutil.copy(mlflow_template, runs_dir / "mlflow.db")
    return fill_grid(f"sqlite:///{runs_dir / 'mlflow.db'}", runs_dir, sizes=(1 / 3, 1.0, 3.0))
