"""The tidy results table that the fits and the figures read: its columns, its checks, its selections.

One row per run x evaluation point x task x metric (``analysis.runs`` builds it from MLflow; a test
or notebook may build it by hand), with the columns in ``REQUIRED_COLUMNS``. Compute is C = 6ND
with N the non-embedding parameter count; validation loss is the task ``"validation"``, metric
``"loss"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from models.objective_names import OBJECTIVES

REQUIRED_COLUMNS = ("run_id", "grid", "objective", "model", "non_embedding_params", "tokens",
                    "flops", "flops_budget", "seed", "task", "metric", "value")


def check_table(df: pd.DataFrame) -> None:
    """Raise a ValueError naming the problem if ``df`` is not a usable results table."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"the results table lacks column(s) {missing}; expected {list(REQUIRED_COLUMNS)}")
    if df.empty:
        raise ValueError("the results table has no rows: there is nothing to plot")
    unknown = sorted(set(df["objective"]) - set(OBJECTIVES))
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}; expected one of {sorted(OBJECTIVES)}")
    for column in ("value", "flops", "non_embedding_params"):
        bad = df[~np.isfinite(pd.to_numeric(df[column], errors="coerce"))]
        if len(bad):
            runs = sorted(map(str, bad["run_id"].unique()))
            raise ValueError(
                f"{column} is NaN/non-numeric in {len(bad)} row(s) (runs {runs[:5]}, tasks "
                f"{sorted(map(str, bad['task'].unique()))[:5]}); drop them, e.g. "
                f"df.dropna(subset=['{column}']), or re-evaluate those runs"
            )
    if (df["flops"] <= 0).any():
        raise ValueError("flops must be > 0 for a log axis; rows before the first step have 0")


def select(df: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    """The rows of one task and metric; a ValueError lists the pairs the table has if there are none."""
    rows = df[(df["task"] == task) & (df["metric"] == metric)]
    if rows.empty:
        have = sorted({f"{t}/{m}" for t, m in zip(df["task"], df["metric"])})
        raise ValueError(f"no rows for task={task!r}, metric={metric!r}; the table has {have}")
    return rows


def objectives_in(rows: pd.DataFrame) -> list[str]:
    """The objectives ``rows`` hold, ARM first."""
    return [o for o in OBJECTIVES if (rows["objective"] == o).any()]


def resolve_tasks(df: pd.DataFrame, chance: Mapping[str, float], tasks=None,
                  metric: str | Mapping[str, str] = "accuracy") -> tuple[list[str], Callable[[str], str]]:
    """The downstream tasks to fit and draw, and each one's metric (as a function of the task).

    ``metric`` is one metric name or a task -> metric mapping. Without ``tasks``: every task with
    rows for its metric, those in ``chance`` first, in its order. Every task needs a chance level.
    """
    metric_of = metric.get if isinstance(metric, Mapping) else (lambda t: metric)
    if tasks is None:
        pairs = set(zip(df["task"], df["metric"]))
        present = [t for t in dict.fromkeys(df["task"]) if (t, metric_of(t)) in pairs]
        tasks = [t for t in chance if t in present] + [t for t in present if t not in chance]
    if len(tasks) == 0:
        raise ValueError("no tasks to plot: pass tasks=[...] or a chance mapping naming them")
    missing = [t for t in tasks if t not in chance]
    if missing:
        raise ValueError(f"no chance level for task(s) {missing}; add them to `chance` "
                         "(e.g. 0.25 for 4-way multiple choice, 0.0 for generation tasks)")
    return list(tasks), metric_of


def final_points(rows: pd.DataFrame) -> pd.DataFrame:
    """The last evaluation of every run (its largest flops), in the order the runs appear in ``rows``.

    ``analysis.runs.load_grid_runs`` orders the scores by what the runs are; grouping by the
    (random) run id would reorder them, and a seeded bootstrap over the points would then draw
    other runs on every load.
    """
    return rows.loc[rows.groupby("run_id", sort=False)["flops"].idxmax()]


def largest_compute(rows: pd.DataFrame, objectives=OBJECTIVES) -> dict[str, float]:
    """Each objective's largest training compute among ``rows``: where its fit is read for its best level."""
    return {o: float(rows.loc[rows["objective"] == o, "flops"].max()) for o in objectives}
