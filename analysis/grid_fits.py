"""Bootstrap fits of a grid's scores: each objective's validation-loss frontier and task accuracy
curves, the compute multipliers between the objectives, and the held-out check of each fit.

Every fit is made once, here, and read by everything that shows it: the tables of
``analysis.compare`` and the curves and bands of ``analysis.figures``. Fits are keyed by
(task, metric, objective), e.g. ("validation", "loss", "arm") or ("toy_mc", "acc", "mdm").

- validation loss: L = E + A C^-alpha through the objective's compute frontier, the best model
  size per budget of each run's final evaluation (``analysis.fits.fit_loss_frontier``);
- a task: a sigmoid in log-compute between chance and a fitted ceiling through every evaluation
  point of every run (``analysis.accuracy_fits.fit_accuracy``), or with a task loss the two-step
  OLMo-ladder form;
- the bootstrap (``analysis.bootstrap``) resamples whole runs, or single points where an objective
  has too few runs (``resample_unit``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.accuracy_fits import fit_accuracy
from analysis.bootstrap import BootstrapFit, bootstrap_fit, compute_multiplier_interval, held_out_check
from analysis.fits import fit_loss_frontier, fit_power_law, multiplier_level
from analysis.results_table import (check_table, final_points, largest_compute, objectives_in, resolve_tasks,
                                    select)
from analysis.runs import VALIDATION
from models.objective_names import ARM, MDM

MIN_BUDGETS = 3  # a 3-parameter law (E, A, alpha or ceiling, slope, midpoint) needs 3 budgets
MIN_RUNS_TO_RESAMPLE_RUNS = 5  # below this per objective, bootstrap single points, not whole runs
FRONTIER_FORM = "L = E + A C^-alpha (compute frontier)"
ACCURACY_FORM = "chance + (ceiling - chance) sigmoid(slope (log10 C - midpoint))"

Quantity = tuple[str, str, str]  # (task, metric, objective)


def budgets_per_objective(scores: pd.DataFrame) -> dict[str, int]:
    """How many budgets each objective's runs reached the end of."""
    final = scores[scores["final"]]
    return {o: int(n) for o, n in final.groupby("objective")["flops_budget"].nunique().items()}


def resample_unit(used_runs: pd.DataFrame) -> str:
    """"runs" where every objective has ``MIN_RUNS_TO_RESAMPLE_RUNS`` runs to resample, else "points"."""
    return "runs" if used_runs.groupby("objective").size().min() >= MIN_RUNS_TO_RESAMPLE_RUNS else "points"


# ---------------------------------------------------------------------------------------------
# one objective's fit of one quantity: the one path of the tables and the figures
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ObjectiveFit:
    """One objective's bootstrap fit of one quantity, with the points and inputs it was fitted on;
    where the bootstrap failed, ``boot`` is None and ``error`` says why."""

    points: pd.DataFrame
    fit_fn: Callable
    args: tuple  # the fit's columns: (C, N, loss) or (C, accuracy)
    kwargs: dict  # its other inputs: budget, or chance, max_score, task_loss and groups
    boot: BootstrapFit | None
    error: str | None = None


def _fit_objective(rows: pd.DataFrame, objective: str, *, chance: float | None = None, max_score: float = 1.0,
                   resample: str = "runs", task_loss: Callable[[pd.DataFrame], np.ndarray] | None = None,
                   n_resamples: int, confidence: float, seed: int) -> _ObjectiveFit:
    """The bootstrap fit of ``objective`` in ``rows`` (the rows of one task and metric).

    Without ``chance``: L = E + A C^-alpha through the compute frontier of the objective's final
    evaluations (``analysis.fits.fit_loss_frontier``). With ``chance``: an accuracy curve through
    every evaluation point in order of compute (``analysis.accuracy_fits.fit_accuracy``), the
    bootstrap resampling whole runs (``resample="runs"``) or single points; ``task_loss`` gives the
    task loss at each of those points, for the two-step OLMo-ladder form.
    """
    if chance is None:
        pts = final_points(rows[rows["objective"] == objective])
        fit_fn = fit_loss_frontier
        args = (pts["flops"].to_numpy(float), pts["non_embedding_params"].to_numpy(float),
                pts["value"].to_numpy(float))
        kwargs = {"budget": pts["flops_budget"].to_numpy(float)}
    else:
        pts = rows[rows["objective"] == objective].sort_values("flops", kind="stable")
        fit_fn = fit_accuracy
        args = (pts["flops"].to_numpy(float), pts["value"].to_numpy(float))
        kwargs = {"chance": float(chance), "max_score": max_score}
        if task_loss is not None:
            kwargs["task_loss"] = task_loss(pts)
        kwargs["groups"] = pts["run_id"].to_numpy() if resample == "runs" else None
    try:
        boot = bootstrap_fit(fit_fn, *args, **kwargs, n_resamples=n_resamples, confidence=confidence, seed=seed)
    except ValueError as err:
        return _ObjectiveFit(pts, fit_fn, args, kwargs, None, str(err))
    return _ObjectiveFit(pts, fit_fn, args, kwargs, boot)


def _task_loss(df: pd.DataFrame, pts: pd.DataFrame, task: str, metric: str) -> np.ndarray:
    """The task loss logged at the same (run, evaluation) as each accuracy point."""
    losses = select(df, task, metric).set_index(["run_id", "flops"])["value"]
    if losses.index.duplicated().any():
        raise ValueError(f"task {task!r}: {metric!r} has several rows for one run and evaluation; "
                         "keep one value per (run_id, flops)")
    keys = pd.MultiIndex.from_arrays([pts["run_id"], pts["flops"]])
    matched = losses.reindex(keys)
    if matched.isna().any():
        runs = sorted(map(str, pts.loc[matched.isna().to_numpy(), "run_id"].unique()))
        raise ValueError(f"task {task!r}: {metric!r} is missing at {int(matched.isna().sum())} "
                         f"accuracy point(s) (runs {runs[:5]}); log it at every evaluation")
    return matched.to_numpy(float)


# ---------------------------------------------------------------------------------------------
# the fits of a results table, for its figures
# ---------------------------------------------------------------------------------------------
def _figure_fit(fitted: _ObjectiveFit, where: str) -> BootstrapFit:
    """The bootstrap of ``fitted``; a ValueError naming the fit (``where``) if it failed."""
    if fitted.error is not None:
        raise ValueError(f"{where}: {fitted.error}. Plot without fits (fits=None) to draw the points alone")
    return fitted.boot


def fit_loss_frontiers(df: pd.DataFrame, *, task: str = VALIDATION, metric: str = "loss",
                       n_resamples: int = 200, confidence: float = 0.9,
                       seed: int = 0) -> dict[Quantity, BootstrapFit]:
    """A power law through each objective's compute frontier, with its bootstrap: the curves of
    ``analysis.figures.plot_loss_vs_compute``. A fit that fails raises a ValueError naming it."""
    check_table(df)
    rows = select(df, task, metric)
    fits = {}
    for objective in objectives_in(rows):
        fitted = _fit_objective(rows, objective, n_resamples=n_resamples, confidence=confidence, seed=seed)
        fits[(task, metric, objective)] = _figure_fit(fitted, f"{task}/{metric}, objective {objective!r}")
    return fits


def fit_accuracy_curves(df: pd.DataFrame, chance: Mapping[str, float], *, tasks=None,
                        metric: str | Mapping[str, str] = "accuracy", max_score: float = 1.0,
                        n_resamples: int = 200, confidence: float = 0.9, seed: int = 0,
                        resample: str = "runs",
                        task_loss_metric: str | None = None) -> dict[Quantity, BootstrapFit]:
    """Each task's accuracy against compute per objective, with its bootstrap: the curves of
    ``analysis.figures.plot_task_scaling``.

    ``chance`` maps task -> chance accuracy (the sigmoid's floor); ``tasks`` and ``metric`` select
    the panels as ``plot_task_scaling`` does. Every evaluation point of every run is fitted; the
    bootstrap resamples whole runs (``resample="runs"``) or single points (``"points"``, for
    studies with fewer than about five runs per objective). With ``task_loss_metric`` (e.g.
    "task_loss", logged at the same evaluations) the fit is the two-step OLMo-ladder form, loss ->
    accuracy, instead of a sigmoid in log-compute. A fit that fails raises a ValueError naming it.
    """
    check_table(df)
    if resample not in ("runs", "points"):
        raise ValueError(f"resample must be 'runs' or 'points', got {resample!r}")
    tasks, metric_of = resolve_tasks(df, chance, tasks, metric)
    panels = {t: select(df, t, metric_of(t)) for t in tasks}
    fits = {}
    for task in tasks:
        rows = panels[task]
        task_loss = None if task_loss_metric is None else functools.partial(
            _task_loss, df, task=task, metric=task_loss_metric)
        for objective in objectives_in(rows):
            fitted = _fit_objective(rows, objective, chance=chance[task], max_score=max_score,
                                    resample=resample, task_loss=task_loss, n_resamples=n_resamples,
                                    confidence=confidence, seed=seed)
            fits[(task, metric_of(task), objective)] = _figure_fit(fitted, f"task {task!r}, objective {objective!r}")
    return fits


# ---------------------------------------------------------------------------------------------
# the fits of a grid, for its comparison
# ---------------------------------------------------------------------------------------------
@dataclass
class GridFits:
    """What ``fit_grid`` made: the bootstrap fits, why the others failed, and the tables' rows."""

    fits: dict[Quantity, BootstrapFit] = field(default_factory=dict)
    errors: dict[Quantity, str] = field(default_factory=dict)  # in the order they were fitted
    parameters: list[dict] = field(default_factory=list)  # one row per fitted parameter
    multipliers: list[dict] = field(default_factory=list)
    held_out: list[dict] = field(default_factory=list)

    def first_error(self, quantities) -> str | None:
        """The error of the first fit of ``quantities`` ((task, metric) pairs) that failed, in the
        order they were fitted; None where every one of them was fitted."""
        wanted = set(quantities)
        return next((err for (task, metric, _), err in self.errors.items() if (task, metric) in wanted), None)


def fit_grid(scores: pd.DataFrame, chance: Mapping[str, float], metric_of: Mapping[str, str], notes, *,
             n_resamples: int, confidence: float, seed: int, resample: str) -> GridFits:
    """Bootstrap fits of validation loss and of every task (``metric_of``: task -> its metric),
    multipliers and held-out checks.

    What could not be fitted goes to ``notes`` (``analysis.notes.Notes``), grouped by cause.
    """
    out = GridFits()
    settings = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}
    quantities = [(VALIDATION, "loss")] if (scores["task"] == VALIDATION).any() else []
    quantities += [(t, metric_of[t]) for t in metric_of]
    for task, metric in quantities:
        rows = scores[(scores["task"] == task) & (scores["metric"] == metric)]
        name, validation = f"{task}/{metric}", task == VALIDATION
        for objective in objectives_in(rows):
            fitted = _fit_objective(rows, objective, chance=None if validation else chance[task],
                                    resample=resample, **settings)
            if fitted.error is not None:
                notes.add(fitted.error, "no fit", name, objective.upper())
                out.errors[(task, metric, objective)] = fitted.error
                continue
            pts, boot = fitted.points, fitted.boot
            out.fits[(task, metric, objective)] = boot
            out.parameters += _parameter_rows(name, objective, FRONTIER_FORM if validation else ACCURACY_FORM,
                                              boot)
            n_budgets = pts["flops_budget"].nunique()
            if validation and n_budgets < MIN_BUDGETS + 2:
                notes.add(f"a held-out check needs {MIN_BUDGETS + 2} budgets (one to predict, enough left "
                          f"to bootstrap a fit), the grid has {n_budgets}", "no held-out check", name,
                          objective.upper())
                continue
            try:
                if validation:  # the frontier (best size per budget) is what is extrapolated
                    front = _frontier(pts)
                    check = held_out_check(fit_power_law, front["flops"], front["value"], **settings)
                else:
                    check = held_out_check(fitted.fit_fn, *fitted.args, budget=pts["flops_budget"].to_numpy(float),
                                           **fitted.kwargs, **settings)
            except ValueError as err:
                notes.add(f"fitting the {n_budgets - 1} budget(s) below the largest failed: {err}",
                          "no held-out check", name, objective.upper())
                continue
            out.held_out.append({"quantity": name, "objective": objective, "held_out_budget": check.budget,
                                 "n_train": check.n_train, "n_held_out": int(check.observed.size),
                                 "mean_observed": float(np.mean(check.observed)),
                                 "mean_predicted": float(np.mean(check.predicted)),
                                 "mean_relative_error": float(np.mean(check.relative_error)),
                                 "covered": f"{int(check.covered.sum())}/{check.covered.size}"})
        if (task, metric, ARM) in out.fits and (task, metric, MDM) in out.fits:
            out.multipliers.append(_multiplier(name, rows, out.fits[(task, metric, MDM)],
                                               out.fits[(task, metric, ARM)]))
    return out


def _parameter_rows(quantity: str, objective: str, form: str, boot: BootstrapFit) -> list[dict]:
    intervals = boot.intervals()
    return [{"quantity": quantity, "objective": objective, "form": form, "parameter": name,
             "estimate": value, "low": intervals[name][0], "high": intervals[name][1],
             "n_points": boot.fit.n_points, "failed_resamples": boot.n_failed}
            for name, value in boot.fit.params().items()]


def _frontier(final: pd.DataFrame) -> pd.DataFrame:
    """Per budget, the model size with the lowest mean final value (Kaplan et al.'s envelope)."""
    means = final.groupby(["flops_budget", "non_embedding_params"])[["flops", "value"]].mean().reset_index()
    return means.loc[means.groupby("flops_budget")["value"].idxmin()]


def _multiplier(name: str, rows: pd.DataFrame, boot_mdm: BootstrapFit, boot_arm: BootstrapFit) -> dict:
    """C_MDM / C_ARM at ``analysis.fits.multiplier_level``."""
    level = multiplier_level({ARM: boot_arm.fit, MDM: boot_mdm.fit}, largest_compute(rows))
    row = {"quantity": name, "level": level, "ratio": "C_MDM / C_ARM", "estimate": float("nan"),
           "low": float("nan"), "high": float("nan"), "note": ""}
    try:
        estimate, (low, high) = compute_multiplier_interval(boot_mdm, boot_arm, level)
        row.update(estimate=estimate, low=low, high=high,
                   note="interval reaches inf: some resamples never reach the level" if high == float("inf") else "")
    except ValueError as err:
        row["note"] = f"not defined: {err}"
    return row
