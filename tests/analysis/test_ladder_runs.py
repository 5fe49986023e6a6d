"""The analysis on real runs: the ``ladder`` grid's results, replayed into MLflow and compared.

``data/ladder_runs.json`` holds every finished run of a full ``python sweeps/launch.py --grid
ladder`` on a 2-core CPU (``recorded_runs.py`` wrote it from that launch's MLflow store) and the
comparison ``analysis/compare.py`` computed from that store. Replayed into a fresh store, the runs
must give the same fits, multiplier, held-out check and IsoFLOP optima; what they say about the
science is checked beside it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from recorded_runs import TABLES, replay, table_records

DATA = Path(__file__).resolve().parent / "data" / "ladder_runs.json"


@pytest.fixture(scope="module")
def ladder(mlflow_template, tmp_path_factory):
    from analysis.compare import compare

    recorded = json.loads(DATA.read_text())
    runs_dir = tmp_path_factory.mktemp("ladder")
    shutil.copy(mlflow_template, runs_dir / "mlflow.db")
    uri = f"sqlite:///{runs_dir / 'mlflow.db'}"
    replay(recorded, uri)
    out = runs_dir / "analysis"
    result = compare(recorded["grid"], tracking_uri=uri, runs_dir=runs_dir, out=out,
                     n_resamples=recorded["n_resamples"], log_artifacts=False)
    tables = {name: pd.read_csv(out / f"{name}.csv") for name in TABLES if (out / f"{name}.csv").is_file()}
    return recorded, tables, result, out


def test_the_replayed_runs_reproduce_the_recorded_comparison(ladder):
    recorded, tables, result, out = ladder
    assert {"fits", "multipliers", "held_out", "isoflop_optima", "allocation"} <= set(recorded["comparison"])
    assert set(tables) == set(recorded["comparison"])
    for name, expected in recorded["comparison"].items():
        assert expected, name
        pd.testing.assert_frame_equal(pd.DataFrame.from_records(table_records(out / f"{name}.csv")),
                                      pd.DataFrame.from_records(expected), check_dtype=False, rtol=1e-6, obj=name)
    assert result.messages == recorded["notes"]


def test_every_run_of_the_grid_is_recorded_and_reads_its_corpus_at_most_about_four_times(ladder, tmp_path):
    from sweeps.plan import plan_grid

    recorded, *_ = ladder
    stand_in = tmp_path / "play.txt"  # planning checks that the grid's files exist
    stand_in.write_text("Ber.\nWho's there?\n")
    plan = plan_grid("ladder", [f"data.files=[{stand_in}]"], runs_dir=str(tmp_path))
    assert sorted(r["run_name"] for r in recorded["runs"]) == sorted(f"ladder/{r.name}" for r in plan.runs)
    epochs = [r["metrics"]["data/epochs"][-1][1] for r in recorded["runs"]]
    assert 3 < max(epochs) <= 4.0  # the compute-bound regime the grid is meant to stay in


def test_mdm_needs_more_compute_than_arm_for_the_same_validation_loss(ladder):
    _, tables, *_ = ladder
    multiplier = tables["multipliers"].set_index("quantity").loc["validation/loss"]
    assert 1 < multiplier["low"] <= multiplier["estimate"] <= multiplier["high"]
    fits = tables["fits"].query("quantity == 'validation/loss'").set_index(["objective", "parameter"])
    for objective in ("arm", "mdm"):
        assert 0 < fits.loc[(objective, "alpha"), "low"] <= fits.loc[(objective, "alpha"), "high"]


def test_the_largest_budget_is_predicted_from_the_others_for_both_objectives(ladder):
    _, tables, *_ = ladder
    held_out = tables["held_out"].query("quantity == 'validation/loss'").set_index("objective")
    assert set(held_out.index) == {"arm", "mdm"}
    assert held_out["held_out_budget"].tolist() == pytest.approx([2.56e12] * 2, rel=0.01)
    assert all(math.isfinite(v) and abs(v) < 0.2 for v in held_out["mean_relative_error"])


def test_isoflop_optima_are_reported_at_every_budget(ladder):
    _, tables, *_ = ladder
    optima = tables["isoflop_optima"]
    for objective in ("arm", "mdm"):
        rows = optima[optima["objective"] == objective]
        assert len(rows) == 6
        assert (rows["optimal_tokens"] * rows["optimal_params"] * 6 / rows["flops_budget"]).tolist() == \
            pytest.approx([1.0] * 6, rel=0.02)  # D* = C / 6 N*


def test_the_arm_optimum_is_located_inside_the_sizes_and_grows_with_compute(ladder):
    _, tables, *_ = ladder
    optima = tables["isoflop_optima"]
    inside = optima[(optima["objective"] == "arm") & (optima["method"] == "parabola") & optima["inside_sizes"]]
    assert len(inside) >= 3
    assert inside.sort_values("flops_budget")["optimal_params"].is_monotonic_increasing
    allocation = tables["allocation"].set_index("objective").loc["arm"]
    assert 0 < allocation["low"] <= allocation["a (N* ~ C^a)"] <= allocation["high"] < 1
