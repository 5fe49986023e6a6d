"""Compute-optimal allocation (Hoffmann et al. 2022, Approach 2): the loss-optimal size N* and tokens
D* = C / 6N* of every IsoFLOP slice, and the power law N*(C) = G C^a through them.

An IsoFLOP slice is the runs of one objective at one budget with different model sizes; its
optimum is the vertex of a parabola in log N through their final validation losses
(``analysis.fits.fit_isoflop``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.fits import fit_allocation, fit_isoflop
from analysis.results_table import check_table, final_points, select
from analysis.runs import VALIDATION
from models.flops import tokens_for_budget

OPTIMA_COLUMNS = ["objective", "flops_budget", "optimal_params", "optimal_tokens", "optimal_loss", "method",
                  "n_sizes", "inside_sizes"]


def isoflop_minima(df: pd.DataFrame, *, task: str = VALIDATION,
                   metric: str = "loss") -> pd.DataFrame:
    """Per objective and budget, the loss-minimising size: the vertex of a parabola in log N
    (Hoffmann et al. Approach 2) where the slice has 3+ sizes and is convex, else the best run;
    with it the tokens D* = C / 6N* that size trains on at the budget.

    A vertex further outside the sizes trained than the slice's own span (in log N) is not kept: a
    slice whose loss only rises with N is nearly straight, and its parabola puts the vertex decades
    away (a fraction of one parameter on a real ladder). The best run, a bound, stands in for it.
    """
    check_table(df)
    final = final_points(select(df, task, metric))
    records = []
    for (objective, budget), sl in final.groupby(["objective", "flops_budget"], sort=True):
        n, y = sl["non_embedding_params"].to_numpy(float), sl["value"].to_numpy(float)
        record = (float(n[np.argmin(y)]), float(y.min()), "best run")
        try:
            parabola = fit_isoflop(n, y)
        except ValueError:
            parabola = None
        if parabola is not None and _vertex_near(parabola.optimal_params, n):
            record = (parabola.optimal_params, parabola.optimal_loss, "parabola")
        records.append({"objective": objective, "flops_budget": float(budget),
                        "optimal_params": record[0],
                        "optimal_tokens": tokens_for_budget(float(budget), record[0]),
                        "optimal_loss": record[1],
                        "method": record[2], "n_sizes": int(np.unique(n).size),
                        "inside_sizes": bool(n.min() <= record[0] <= n.max())})
    return pd.DataFrame.from_records(records)


def _vertex_near(vertex: float, sizes: np.ndarray) -> bool:
    """Whether ``vertex`` lies within one slice span (in log N) of the sizes trained."""
    low, high = np.log10(sizes.min()), np.log10(sizes.max())
    return low - (high - low) <= np.log10(vertex) <= high + (high - low)


def allocation_points(minima: pd.DataFrame, objective: str) -> pd.DataFrame:
    """The optima an allocation fit uses: parabola vertices inside the sizes trained.

    A vertex beyond the smallest or largest size is an extrapolation of a parabola and a "best run"
    is only a bound on the optimum; neither locates N*.
    """
    rows = minima[minima["objective"] == objective]
    return rows[(rows["method"] == "parabola") & rows["inside_sizes"]].sort_values("flops_budget", kind="stable")


def isoflop_optima(scores: pd.DataFrame) -> pd.DataFrame | None:
    """The IsoFLOP slices' optima (``isoflop_minima``), or None where every budget has a single
    model size."""
    final = scores[(scores["task"] == VALIDATION) & scores["final"]]
    if final.empty or final.groupby(["objective", "flops_budget"])["non_embedding_params"].nunique().max() < 2:
        return None
    return isoflop_minima(scores)


def fit_allocations(minima: pd.DataFrame, notes, *, confidence: float):
    """N*(C) = G C^a through each objective's IsoFLOP optima (``allocation_points``; Approach 2).

    What cannot be fitted goes to ``notes`` (``analysis.notes.Notes``). Returns (the optima's
    table, allocation-fit rows, {objective: AllocationFit}).
    """
    fits, rows = {}, []
    for objective in dict.fromkeys(minima["objective"]):
        used = allocation_points(minima, objective)
        try:
            fit = fit_allocation(used["flops_budget"], used["optimal_params"], confidence=confidence)
        except ValueError as err:
            notes.add(f"it needs IsoFLOP optima at 3+ budgets located inside the sizes trained (a convex "
                      f"parabola with its vertex between the smallest and largest size); {len(used)} "
                      f"budget(s) have one ({err})", "no N*(C) fit", objective.upper())
            continue
        fits[objective] = fit
        rows.append({"objective": objective, "a (N* ~ C^a)": fit.exponent, "low": fit.exponent_low,
                     "high": fit.exponent_high, "b (D* ~ C^b)": 1 - fit.exponent,
                     "G (N* = G C^a)": fit.coefficient, "n_budgets": fit.n_points})
    return minima[OPTIMA_COLUMNS], rows, fits
