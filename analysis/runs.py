"""Read a grid's runs from MLflow into tidy tables for fitting and plotting.

What the training jobs record (``studies/tracking/``, ``studies/run.py``,
``studies/tasks/eval_callback.py``; the names are those of ``models/metric_names.py``): one MLflow
experiment per grid; a parent run per launch (tag ``kind=launch``) and one child run per job,
tagged with its objective, model, seed, non-embedding parameter count N, FLOP budget and realised
FLOPs. Downstream scores are logged as ``eval/{task}/{metric}`` at evaluation points, with
``eval/flops_seen`` (C = 6 N D at that point, LLaDA Sec. 3.1) at the same step; losses as
``train/loss`` and ``val/loss`` next to ``train/flops_seen``; the end of a run as
``final/val_loss`` and ``final/flops``.

``load_grid_runs`` turns that into
- ``scores``: one row per (run, evaluation point, task, metric), the results table of
  ``analysis.results_table`` that ``analysis.grid_fits`` and ``analysis.figures`` read; validation
  loss is the task ``"validation"``, metric ``"loss"``;
- ``curves``: train and validation loss against FLOPs, for every logged step;
- ``runs``: one row per job run with its status and whether (and why not) it was used;
- ``excluded``: a count of everything left out, and why. Nothing is dropped without a line here.

The ``step`` column is MLflow's step: evaluation points use the optimizer step, Lightning's loss
metrics its own counter, so compare points by ``flops``, not by ``step``.
"""

from __future__ import annotations

import json

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from models.flops import FLOPS_PER_PARAM_PER_TOKEN, tokens_for_budget
from models.metric_names import (EVAL_FLOPS_SEEN, EVAL_ITEMS, EVAL_PREFIX, EVAL_TOKENS_SEEN, FINAL_FLOPS,
                                 FINAL_VAL_LOSS, FLOPS, FLOPS_BUDGET, GRID, KIND, LAUNCH_KIND, LOSS_METRICS,
                                 MODEL, NON_EMBEDDING_PARAMS, OBJECTIVE, ROLE, RUN_KEY, SEED, TRAIN_FLOPS_SEEN,
                                 TRAIN_TOKENS_SEEN, VAL_LOSS)
from models.objective_names import OBJECTIVES
from studies.config import TRUNK

VALIDATION = "validation"
STATUSES = ("FINISHED", "RUNNING", "FAILED", "KILLED", "SCHEDULED")
RUN_COLUMNS = ("run_id", "run_name", "run_key", "status", "objective", "model", "seed",
               "non_embedding_params", "flops_budget", "budget_source", "n_scores", "used", "reason")
SCORE_COLUMNS = ("run_id", "grid", "objective", "model", "non_embedding_params", "tokens", "flops",
                 "flops_budget", "seed", "task", "metric", "value", "step", "final", "status",
                 "run_name")
CURVE_COLUMNS = ("run_id", "objective", "model", "non_embedding_params", "flops_budget", "seed",
                 "status", "metric", "step", "value", "tokens", "flops")


@dataclass(frozen=True)
class GridRuns:
    """The runs of one grid as tidy tables (see the module docstring)."""

    grid: str
    tracking_uri: str
    experiment_id: str
    statuses: tuple[str, ...]
    scores: pd.DataFrame
    curves: pd.DataFrame
    runs: pd.DataFrame
    excluded: pd.DataFrame  # columns: reason, count, runs
    parent_run_id: str | None  # the latest launch of the grid (tag kind=launch)

    @property
    def used_runs(self) -> pd.DataFrame:
        return self.runs[self.runs["used"]]

    def status_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.runs["status"].value_counts().sort_index().items()}

    def summary(self) -> str:
        """Human-readable account of what was read, used and left out."""
        counts = ", ".join(f"{n} {s}" for s, n in self.status_counts().items()) or "none"
        lines = [f"grid {self.grid!r} at {_masked(self.tracking_uri)}: {len(self.runs)} job run(s) "
                 f"({counts}); {len(self.used_runs)} used ({'/'.join(self.statuses)}), "
                 f"{len(self.scores)} score rows, {len(self.curves)} loss-curve points"]
        for row in self.excluded.itertuples():
            lines.append(f"  excluded: {row.count} x {row.reason}" + (f" (runs {row.runs})" if row.runs else ""))
        return "\n".join(lines)


def runs_missing_from_tracking(data: GridRuns, runs_dir: str | Path) -> list[str]:
    """Runs whose folder under ``runs_dir/<grid>`` holds a ``result.json`` (they finished) but that
    the comparison does not use (MLflow lacks them, e.g. a deleted or other store): their names, so
    that a comparison never silently drops a finished run."""
    used = set(data.runs.loc[data.runs["used"].astype(bool), "run_key"])  # (no MLflow runs: an empty frame)
    missing = []
    for result in sorted(Path(runs_dir, data.grid).glob("*/result.json")):
        if result.parent.name not in used:
            try:
                name = json.loads(result.read_text()).get("name") or result.parent.name
            except (OSError, ValueError, AttributeError):
                name = result.parent.name
            missing.append(f"{name} ({result.parent.name})")
    return missing


def _masked(uri: str) -> str:
    from studies.credentials import mask_uri

    return mask_uri(uri)


def chance_levels(tasks) -> dict[str, float]:
    """Chance accuracy of each task from the suite definitions (``studies.tasks.suite``).

    Tasks the suites do not know are left out, so a caller can say which ones lack a level.
    """
    from studies.tasks.suite import TASKS

    return {t: float(TASKS[t].chance) for t in tasks if t in TASKS}


def primary_metric(task: str, available=()) -> str | None:
    """The metric a task is reported by: its suite definition's first (acc, exact_match, pass@1), else
    the first of ``available``, else None."""
    from studies.tasks.suite import TASKS

    available = list(available)
    if task in TASKS:
        for name in TASKS[task].metrics:
            if not available or name in available:
                return name
    return available[0] if available else None


# ---------------------------------------------------------------------------------------------
# reading MLflow
# ---------------------------------------------------------------------------------------------
def resolve_uri(tracking_uri: str | None, runs_dir: str | Path = "runs") -> str:
    """``tracking_uri``, else MLFLOW_TRACKING_URI, else the embedded ``<runs_dir>/mlflow.db``."""
    from studies.tracking import resolve_tracking_uri

    return resolve_tracking_uri(tracking_uri, runs_dir)


def _find_experiment(client, name: str, uri: str):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments(max_results=1000))
        raise ValueError(f"no MLflow experiment named {name!r} at {_masked(uri)}; experiments there: "
                         f"{names or 'none'}. Pass --grid with one of them, or --tracking-uri / "
                         "--runs-dir of the store the grid was launched with")
    return experiment


def latest_launch_run(client, experiment_id: str) -> str | None:
    """Run id of the most recent launch (parent run) of the experiment, or None."""
    found = client.search_runs([experiment_id], filter_string=f"tags.{KIND} = '{LAUNCH_KIND}'",
                               order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


def _history(client, run_id: str, key: str) -> pd.Series:
    """A metric's history as a Series indexed by step (the last value logged at a step wins)."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return pd.Series({m.step: m.value for m in points}, dtype=float).sort_index()


def _at_steps(history: pd.Series, steps) -> np.ndarray:
    """Values of a counter (FLOPs or tokens seen, linear in the step) at ``steps``: exact where
    logged, linearly interpolated between logged steps, NaN outside them (never extrapolated)."""
    steps = np.asarray(list(steps), dtype=float)
    if history.empty:
        return np.full(steps.shape, np.nan)
    x, y = history.index.to_numpy(float), history.to_numpy(float)
    out = np.interp(steps, x, y) if x.size > 1 else np.where(steps == x[0], y[0], np.nan)
    return np.where((steps < x.min()) | (steps > x.max()), np.nan, out)


def _tag_float(tags: dict, name: str) -> float:
    try:
        value = float(tags.get(name, "nan"))
    except ValueError:
        return math.nan
    return value if math.isfinite(value) and value > 0 else math.nan


def _run_identity(run, latest: dict[str, float]) -> dict:
    """Tags of a job run with N and the budget filled in where the tags hold none (ad-hoc runs
    launched without the planner): N = FLOPs / (6 tokens), the budget = the realised FLOPs."""
    tags = run.data.tags
    n = _tag_float(tags, NON_EMBEDDING_PARAMS)
    if math.isnan(n):
        for flops, tokens in ((EVAL_FLOPS_SEEN, EVAL_TOKENS_SEEN), (TRAIN_FLOPS_SEEN, TRAIN_TOKENS_SEEN)):
            if latest.get(tokens, 0) > 0 and latest.get(flops, 0) > 0:
                n = float(round(latest[flops] / (FLOPS_PER_PARAM_PER_TOKEN * latest[tokens])))
                break
    budget, source = _tag_float(tags, FLOPS_BUDGET), f"tag {FLOPS_BUDGET}"
    for fallback, name in ((_tag_float(tags, FLOPS), f"tag {FLOPS}"),
                           (latest.get(FINAL_FLOPS, math.nan), FINAL_FLOPS)):
        if math.isnan(budget) and fallback > 0:
            budget, source = float(fallback), f"{name} (no {FLOPS_BUDGET} tag)"
    seed = tags.get(SEED, "")
    return {
        "run_id": run.info.run_id, "run_name": run.info.run_name or "", "run_key": tags.get(RUN_KEY, ""),
        "status": run.info.status, "objective": tags.get(OBJECTIVE, ""), "model": tags.get(MODEL, ""),
        "seed": int(seed) if seed.lstrip("-").isdigit() else -1, "non_embedding_params": n,
        "flops_budget": budget, "budget_source": source if math.isfinite(budget) else "none",
    }


class _Exclusions:
    """Counts of left-out runs and rows, by reason."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.runs: dict[str, list[str]] = {}

    def add(self, reason: str, run_id: str, count: int = 1) -> None:
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + count
        self.runs.setdefault(reason, [])
        if run_id not in self.runs[reason]:
            self.runs[reason].append(run_id)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"reason": r, "count": c, "runs": ", ".join(self.runs[r][:5]) + (" ..." if len(self.runs[r]) > 5 else "")}
             for r, c in self.counts.items()], columns=["reason", "count", "runs"])


def _tokens(logged: float, flops: float, identity: dict) -> float:
    """Tokens seen: the logged counter, else D = C / (6 N) (the last step has FLOPs only)."""
    n = identity["non_embedding_params"]
    return float(logged) if np.isfinite(logged) or not n > 0 else tokens_for_budget(flops, n)


def _score_rows(client, identity: dict, latest: dict, grid: str) -> list[dict]:
    """Rows of one run: every eval/{task}/{metric} point and every validation-loss point."""
    run_id = identity["run_id"]
    base = {k: identity[k] for k in ("run_id", "objective", "model", "non_embedding_params",
                                     "flops_budget", "seed", "status", "run_name")}
    base["grid"] = grid
    rows = []
    eval_keys = sorted(k for k in latest if k.startswith(EVAL_PREFIX) and k.count("/") == 2
                       and not k.endswith("/" + EVAL_ITEMS))
    if eval_keys:
        flops, tokens = _history(client, run_id, EVAL_FLOPS_SEEN), _history(client, run_id, EVAL_TOKENS_SEEN)
        for key in eval_keys:
            _, task, metric = key.split("/")
            history = _history(client, run_id, key)
            for step, value in history.items():
                rows.append({**base, "task": task, "metric": metric, "value": value, "step": int(step),
                             "flops": flops.get(step, math.nan), "tokens": tokens.get(step, math.nan)})
    if VAL_LOSS in latest or FINAL_VAL_LOSS in latest:
        val = _history(client, run_id, VAL_LOSS)
        train_flops, train_tokens = (_history(client, run_id, k) for k in (TRAIN_FLOPS_SEEN, TRAIN_TOKENS_SEEN))
        final_flops, final_loss = (_history(client, run_id, k) for k in (FINAL_FLOPS, FINAL_VAL_LOSS))
        # the evaluation after training is logged as both val/loss and final/val_loss at the last step
        val = pd.concat([val.drop(final_loss.index, errors="ignore"), final_loss]).sort_index()
        flops_at = _at_steps(train_flops, val.index)
        tokens_at = _at_steps(train_tokens, val.index)
        for i, (step, value) in enumerate(val.items()):
            f = final_flops.get(step, flops_at[i])
            rows.append({**base, "task": VALIDATION, "metric": "loss", "value": value, "step": int(step),
                         "flops": f, "tokens": _tokens(tokens_at[i], f, identity)})
    return rows


def _curve_rows(client, identity: dict, latest: dict) -> list[dict]:
    run_id = identity["run_id"]
    base = {k: identity[k] for k in ("run_id", "objective", "model", "non_embedding_params",
                                     "flops_budget", "seed", "status")}
    train_flops, train_tokens = (_history(client, run_id, k) for k in (TRAIN_FLOPS_SEEN, TRAIN_TOKENS_SEEN))
    final_flops = _history(client, run_id, FINAL_FLOPS)
    rows = []
    for key in LOSS_METRICS:
        if key not in latest:
            continue
        history = _history(client, run_id, key)
        flops, tokens = _at_steps(train_flops, history.index), _at_steps(train_tokens, history.index)
        for i, (step, value) in enumerate(history.items()):
            f = final_flops.get(step, flops[i])
            rows.append({**base, "metric": key, "step": int(step), "value": value, "flops": f,
                         "tokens": _tokens(tokens[i], f, identity)})
    return rows


def _numeric(frame: pd.DataFrame, columns) -> pd.DataFrame:
    """Float columns even when the frame is empty (an empty frame's columns are objects)."""
    return frame.astype({c: float for c in columns})


def _clean_scores(scores: pd.DataFrame, skip: _Exclusions) -> pd.DataFrame:
    """Drop rows that cannot be plotted or fitted, counting each by reason."""
    scores = _numeric(scores, ("value", "flops", "tokens", "non_embedding_params", "flops_budget"))
    checks = [
        (~np.isfinite(scores["value"]), "score rows with a NaN/inf value"),
        (~np.isfinite(scores["flops"]), "score rows without FLOPs at their step (no eval/flops_seen or train/flops_seen)"),
        (scores["flops"] <= 0, "score rows at 0 FLOPs (evaluated before training; no place on a log axis)"),
        (~np.isfinite(scores["non_embedding_params"]), "score rows of runs without N (no non_embedding_params tag or FLOPs/tokens metrics)"),
    ]
    keep = pd.Series(True, index=scores.index)
    for bad, reason in checks:
        bad = bad.fillna(True) & keep
        for run_id, n in scores.loc[bad, "run_id"].value_counts().items():
            skip.add(reason, run_id, int(n))
        keep &= ~bad
    return scores[keep]


def load_grid_runs(grid: str, *, tracking_uri: str | None = None, runs_dir: str | Path = "runs",
              experiment: str | None = None, statuses=("FINISHED",)) -> GridRuns:
    """Read every job run of ``grid`` and return its tidy tables.

    ``statuses`` are the MLflow run statuses whose data are used (default: finished runs only;
    add "RUNNING" to look at a study in progress). Runs of other statuses are listed in ``runs``
    and counted in ``excluded``. ``experiment`` is the MLflow experiment when it is not named after
    the grid (``tracking.experiment`` of the run configs).
    """
    from mlflow.tracking import MlflowClient

    statuses = tuple(s.upper() for s in ([statuses] if isinstance(statuses, str) else statuses))
    unknown = sorted(set(statuses) - set(STATUSES))
    if unknown:
        raise ValueError(f"unknown run status(es) {unknown}; MLflow statuses are {list(STATUSES)}")
    uri = resolve_uri(tracking_uri, runs_dir)
    if uri.startswith(("http://", "https://")):  # seconds, not MLflow's minutes of retries
        from studies.tracking import TrackingUnavailable, check_reachable

        try:
            check_reachable(uri)
        except TrackingUnavailable as error:
            raise ValueError(str(error)) from None
    client = MlflowClient(uri)
    found = _find_experiment(client, experiment or grid, uri)
    all_runs = client.search_runs([found.experiment_id], max_results=50_000)
    skip = _Exclusions()
    identities, scores, curves = [], [], []
    for run in all_runs:
        tags = run.data.tags
        if tags.get(KIND) == LAUNCH_KIND:
            continue  # a launch's parent run holds no measurements
        if tags.get(ROLE) == TRUNK:
            continue  # a branched grid's shared stable phase; its branches are the grid's runs
        latest = dict(run.data.metrics)
        identity = _run_identity(run, latest)
        reason = None
        if identity["objective"] not in OBJECTIVES:
            reason = (f"runs without an {OBJECTIVE} tag of {'/'.join(OBJECTIVES)} "
                      f"(got {identity['objective'] or 'none'!r})")
        elif run.info.status not in statuses:
            reason = f"runs with status {run.info.status} (used: {'/'.join(statuses)})"
        if tags.get(GRID, grid) != grid:
            reason = f"runs of another grid ({tags[GRID]!r}) in the experiment"
        rows = [] if reason else _score_rows(client, identity, latest, grid)
        if not reason and not rows:
            reason = "runs without any eval/ or validation-loss metrics"
        if reason:
            skip.add(reason, identity["run_id"])
        else:
            scores.extend(rows)
            curves.extend(_curve_rows(client, identity, latest))
        identities.append({**identity, "n_scores": len(rows), "used": reason is None, "reason": reason or ""})

    score_frame = pd.DataFrame(scores, columns=[c for c in SCORE_COLUMNS if c != "final"])
    score_frame = _clean_scores(score_frame, skip).copy()
    last = score_frame.groupby(["run_id", "task", "metric"])["flops"].transform("max")
    score_frame["final"] = score_frame["flops"] == last
    # Ordered by what the runs are (run ids are random), so that analyses of the same runs repeat.
    score_frame = score_frame.sort_values(["task", "metric", "objective", "flops_budget", "non_embedding_params",
                                           "seed", "run_name", "run_id", "flops"])
    curve_frame = _numeric(pd.DataFrame(curves, columns=CURVE_COLUMNS),
                           ("value", "flops", "tokens", "non_embedding_params", "flops_budget"))
    bad_curve = ~np.isfinite(curve_frame["value"]) | ~np.isfinite(curve_frame["flops"])
    for run_id, n in curve_frame.loc[bad_curve, "run_id"].value_counts().items():
        skip.add("loss-curve points with a NaN value or no FLOPs at their step", run_id, int(n))
    runs = pd.DataFrame(identities, columns=RUN_COLUMNS)
    n_used = score_frame.groupby("run_id").size()
    runs["n_scores"] = runs["run_id"].map(n_used).fillna(0).astype(int)
    emptied = runs["used"] & (runs["n_scores"] == 0)
    runs.loc[emptied, "reason"] = "every score row excluded (see the rows counted above)"
    runs.loc[emptied, "used"] = False
    return GridRuns(
        grid=grid, tracking_uri=uri, experiment_id=found.experiment_id, statuses=statuses,
        scores=score_frame[list(SCORE_COLUMNS)].reset_index(drop=True),
        curves=curve_frame[~bad_curve].sort_values(["run_id", "metric", "step"]).reset_index(drop=True),
        runs=runs.sort_values(["objective", "flops_budget", "model", "seed", "run_id"]).reset_index(drop=True),
        excluded=skip.frame(), parent_run_id=latest_launch_run(client, found.experiment_id),
    )


__all__ = ["GridRuns", "load_grid_runs", "latest_launch_run", "chance_levels", "primary_metric",
           "resolve_uri", "VALIDATION"]
