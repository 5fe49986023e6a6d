"""The tables of a comparison: the final scores per budget and the fitted results, as CSV and markdown.

Markdown tables are GitHub-flavoured (``studies.text_table.render_table``), numbers to four
significant digits, empty cells where a value is missing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from models.objective_names import OBJECTIVES
from studies.text_table import render_table

FIT_COLUMNS = ["quantity", "objective", "form", "parameter", "estimate", "low", "high", "n_points",
               "failed_resamples"]
MULTIPLIER_COLUMNS = ["quantity", "level", "ratio", "estimate", "low", "high", "note"]
HELD_OUT_COLUMNS = ["quantity", "objective", "held_out_budget", "n_train", "n_held_out", "mean_observed",
                    "mean_predicted", "mean_relative_error", "covered"]
ALLOCATION_COLUMNS = ["objective", "a (N* ~ C^a)", "low", "high", "b (D* ~ C^b)", "G (N* = G C^a)", "n_budgets"]


def score_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Final score of every run, mean/std/count per (task, metric, budget, model, objective)."""
    final = scores[scores["final"]]
    grouped = final.groupby(["task", "metric", "flops_budget", "non_embedding_params", "model", "objective"])
    table = grouped["value"].agg(n_runs="count", mean="mean", std="std").reset_index()
    return table.sort_values(["task", "metric", "flops_budget", "non_embedding_params", "objective"])


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """``frame`` as a markdown table, one line per row and a final newline."""
    def cell(v):
        if isinstance(v, float):
            return "" if v != v else format(v, floatfmt)
        return str(v)

    rows = [[cell(v) for v in row] for row in frame.itertuples(index=False)]
    return render_table(list(frame.columns), rows, markdown=True) + "\n"


def score_markdown(table: pd.DataFrame) -> str:
    """Objectives side by side: 'mean ± std (n)' per task, metric, budget and model."""
    text = table.assign(score=[f"{m:.4g}" + (f" ± {s:.2g}" if s == s else "") + f" (n={n})"
                               for m, s, n in zip(table["mean"], table["std"], table["n_runs"])])
    wide = text.pivot_table(index=["task", "metric", "flops_budget", "model"], columns="objective",
                            values="score", aggfunc="first").reset_index()
    wide.columns.name = None
    wide["flops_budget"] = [f"{b:.3g}" for b in wide["flops_budget"]]
    return markdown_table(wide.rename(columns={o: o.upper() for o in OBJECTIVES}).fillna("")) if len(wide) else \
        markdown_table(pd.DataFrame(columns=["task", "metric", "flops_budget", "model"]))


def fit_tables(parameters: list[dict], multipliers: list[dict], held_out: list[dict]) -> dict[str, pd.DataFrame]:
    """The fitted parameters, compute multipliers and held-out checks (``analysis.grid_fits.GridFits``)
    as tables named after their files."""
    return {"fits": pd.DataFrame(parameters, columns=FIT_COLUMNS),
            "multipliers": pd.DataFrame(multipliers, columns=MULTIPLIER_COLUMNS),
            "held_out": pd.DataFrame(held_out, columns=HELD_OUT_COLUMNS)}


def allocation_table(rows: list[dict]) -> pd.DataFrame:
    """The N*(C) fits of ``analysis.optimal_allocation.fit_allocations``, one row per objective."""
    return pd.DataFrame(rows, columns=ALLOCATION_COLUMNS)


def write_table(frame: pd.DataFrame, out: Path, name: str, markdown: str | None = None) -> list[Path]:
    """``out/name.csv`` and ``out/name.md`` (``markdown``, else ``markdown_table(frame)``)."""
    csv, md = out / f"{name}.csv", out / f"{name}.md"
    frame.to_csv(csv, index=False)
    md.write_text(markdown if markdown is not None else markdown_table(frame))
    return [csv, md]
