"""A grid recorded from MLflow and replayed into a fresh store gives the comparison it was recorded
with (tests/analysis/recorded_runs.py), so a recording of real runs can stand in for its store."""

from __future__ import annotations

import json
import math

import pandas as pd

from recorded_runs import TABLES, record, replay, table_records


def test_a_recorded_grid_replays_to_the_same_comparison(synthetic_grid, new_store, tmp_path):
    from analysis.compare import compare

    grid = synthetic_grid(sizes=(1 / 3, 1.0, 3.0), budgets=(1e15, 1e16, 1e17, 1e18, 1e19))
    recorded = json.loads(json.dumps(record(grid.grid, grid.uri, runs_dir=grid.runs_dir, n_resamples=16)))
    names = {r["run_name"] for r in recorded["runs"]}
    assert len(names) == len(recorded["runs"]) == len(grid.finished)  # the RUNNING and FAILED runs stay out
    assert {"fits", "multipliers", "held_out", "isoflop_optima", "allocation"} <= set(recorded["comparison"])
    assert all(recorded["comparison"][name] for name in recorded["comparison"])
    nan_run = next(r for r in recorded["runs"] if any(math.isnan(v) for points in r["metrics"].values()
                                                      for _, v in points))
    assert "val/loss" in nan_run["metrics"]

    runs_dir, uri = new_store("replayed")
    replay(recorded, uri)
    out = tmp_path / "replayed-analysis"
    result = compare(recorded["grid"], tracking_uri=uri, runs_dir=runs_dir, out=out,
                     n_resamples=recorded["n_resamples"], log_artifacts=False)
    for name in TABLES:
        if name in recorded["comparison"]:
            pd.testing.assert_frame_equal(pd.DataFrame.from_records(table_records(out / f"{name}.csv")),
                                          pd.DataFrame.from_records(recorded["comparison"][name]),
                                          check_dtype=False, rtol=1e-9, obj=name)
    assert result.messages == recorded["notes"]
    multiplier = pd.read_csv(out / "multipliers.csv").set_index("quantity").loc["validation/loss"]
    assert multiplier["low"] < grid.mdm_multiplier < multiplier["high"]
