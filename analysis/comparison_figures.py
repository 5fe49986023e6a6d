"""The figures of a comparison, written as PNG and PDF: which are drawn, with which fits, and a note
for each one drawn without its fitted curves or not drawn at all.

A figure is drawn with its curves where ``analysis.grid_fits.fit_grid`` fitted every quantity it
shows; where one of them could not be fitted, it is drawn with the points alone and joins the note
of that fit's cause (``analysis.notes.Notes``).
"""

from __future__ import annotations

from pathlib import Path

from analysis.figures import plot_allocation, plot_isoflop, plot_loss_vs_compute, plot_task_scaling, save_figure
from analysis.runs import VALIDATION


def _draw(plot, name: str, out: Path, notes, args: dict, grid_fits=None, quantities=()) -> list[Path]:
    """Draw ``name`` (``plot(**args)``) with the fits of ``quantities`` ((task, metric) pairs) where
    ``grid_fits`` holds every one of them, else with the points alone; a figure that cannot be drawn
    is noted and skipped."""
    if grid_fits is not None:
        cause = grid_fits.first_error(quantities)
        if cause is not None:
            notes.add(cause, "figures drawn without fitted curves", name)
            grid_fits = None
    try:
        fig = plot(**args, fits=grid_fits.fits) if grid_fits is not None else plot(**args)
    except ValueError as err:
        notes.add(str(err), "figures not drawn", name)
        return []
    return save_figure(fig, out / name)


def write_figures(scores, chance: dict, metric_of: dict, out: Path, *, fits, notes, minima=None,
                  allocation_fits=None) -> list[Path]:
    """The figures of the comparison, written to ``out``.

    ``fits`` is the ``analysis.grid_fits.GridFits`` of the grid, or None to draw points only;
    ``minima`` are the IsoFLOP optima (``analysis.optimal_allocation.isoflop_optima``) and
    ``allocation_fits`` their N*(C) fits per objective.
    """
    files = []
    if metric_of:
        files += _draw(plot_task_scaling, "task_scaling", out, notes,
                       {"df": scores, "chance": chance, "tasks": list(metric_of), "metric": metric_of},
                       fits, [(t, metric_of[t]) for t in metric_of])
    validation = scores[scores["task"] == VALIDATION]
    if validation.empty:
        notes.add("no validation loss logged: loss-vs-compute and IsoFLOP figures skipped")
        return files
    files += _draw(plot_loss_vs_compute, "loss_vs_compute", out, notes, {"df": scores}, fits, [(VALIDATION, "loss")])
    if minima is not None:
        files += _draw(plot_isoflop, "isoflop", out, notes, {"df": scores, "minima": minima})
        files += _draw(plot_allocation, "allocation", out, notes, {"minima": minima, "fits": allocation_fits or {}})
    else:
        notes.add("IsoFLOP figure skipped: every budget has a single model size")
    return files
