"""The fits of a grid (analysis/grid_fits.py) are made once and read by the tables and the figures:
the figures draw the fits the tables list, and the same runs give the same bootstrap draws."""

from __future__ import annotations

import pandas as pd

from analysis.compare import main
from analysis.grid_fits import fit_accuracy_curves, fit_grid, fit_loss_frontiers, resample_unit
from analysis.notes import Notes
from analysis.runs import chance_levels, load_grid_runs


def test_the_figures_fits_are_the_grids_fits(isoflop_grid):
    """``fit_grid`` (the tables) and ``fit_accuracy_curves`` / ``fit_loss_frontiers`` (the figures of a
    notebook or a test) fit the same points in the same order: the same fits and replicates."""
    data = load_grid_runs(isoflop_grid.grid, runs_dir=isoflop_grid.runs_dir)
    metric_of = {"toy_mc": "acc", "toy_arithmetic": "exact_match"}
    chance = chance_levels(list(metric_of))
    resample = resample_unit(data.used_runs)
    settings = {"n_resamples": 8, "confidence": 0.9, "seed": 0}
    notes = Notes()
    grid = fit_grid(data.scores, chance, metric_of, notes, resample=resample, **settings)
    figures = {**fit_accuracy_curves(data.scores, chance, tasks=list(metric_of), metric=metric_of,
                                     resample=resample, **settings),
               **fit_loss_frontiers(data.scores, **settings)}
    assert set(grid.fits) == set(figures) == {(task, metric, objective) for task, metric in
                                              [("validation", "loss"), *metric_of.items()]
                                              for objective in ("arm", "mdm")}
    for key, boot in figures.items():
        assert grid.fits[key].fit == boot.fit and grid.fits[key].replicates == boot.replicates, key
    assert not grid.errors and grid.first_error([("validation", "loss")]) is None


def test_the_same_runs_logged_twice_give_the_same_intervals(synthetic_grid, capsys):
    """Run ids are random: two stores holding the same runs must give the same bootstrap draws."""
    tables = []
    for name in ("first", "second"):
        grid = synthetic_grid(name, sizes=(1 / 3, 1.0, 3.0), extras=False)
        out = grid.runs_dir / "out"
        assert main(["--grid", grid.grid, "--runs-dir", str(grid.runs_dir), "--out", str(out),
                     "--n-resamples", "8", "--no-log"]) == 0
        tables.append({n: pd.read_csv(out / f"{n}.csv") for n in ("fits", "multipliers", "held_out")})
    capsys.readouterr()
    for name, first in tables[0].items():
        pd.testing.assert_frame_equal(first, tables[1][name], check_exact=True, obj=name)
