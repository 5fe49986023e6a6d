"""python analysis/compare.py end to end on MLflow stores with known curves: figures, tables,
fits and compute multipliers are written and logged; thin grids get a message, not a traceback;
--launch-summary prints what a local launch shows after its sweep."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from analysis.compare import main

ROOT = Path(__file__).resolve().parents[2]


def test_full_grid_writes_figures_tables_fits_and_multipliers_and_logs_them(isoflop_grid, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--grid", isoflop_grid.grid, "--runs-dir", str(isoflop_grid.runs_dir), "--out", str(out),
                 "--n-resamples", "64"])
    printed = capsys.readouterr().out
    assert code == 0
    assert str(out.resolve()) in printed
    # the excluded runs and the NaN score are reported, not silently dropped
    assert "1 x runs with status RUNNING" in printed and "1 x runs with status FAILED" in printed
    assert "1 x score rows with a NaN/inf value" in printed

    for name in ("task_scaling", "loss_vs_compute", "isoflop", "allocation"):
        for suffix in (".png", ".pdf"):
            assert (out / f"{name}{suffix}").stat().st_size > 10_000, name
        height, width = imread(out / f"{name}.png").shape[:2]
        assert width > 900 and height > 300  # 300 dpi at column/page width
    for name in ("scores", "fits", "multipliers", "held_out"):
        assert (out / f"{name}.csv").is_file() and (out / f"{name}.md").read_text().startswith("| ")

    # every finished run is in the scores table: 2 objectives x 4 budgets x 3 sizes
    scores = pd.read_csv(out / "scores.csv")
    val = scores[(scores["task"] == "validation") & (scores["metric"] == "loss")]
    assert val["n_runs"].sum() == len(isoflop_grid.finished) == 24
    assert set(scores["task"]) == {"validation", "toy_mc", "toy_arithmetic"}

    fits = pd.read_csv(out / "fits.csv").set_index(["quantity", "objective", "parameter"])
    assert fits.loc[("validation/loss", "arm", "alpha"), "estimate"] == pytest.approx(0.15, abs=0.02)
    assert fits.loc[("toy_mc/acc", "arm", "midpoint"), "estimate"] == pytest.approx(16.5, abs=0.1)
    assert (fits["low"] <= fits["estimate"]).all() and (fits["estimate"] <= fits["high"]).all()

    # MDM's curves are ARM's at 1/16 of the compute: the multipliers recover the factor
    multipliers = pd.read_csv(out / "multipliers.csv").set_index("quantity")
    loss = multipliers.loc["validation/loss"]
    assert loss["estimate"] == pytest.approx(isoflop_grid.mdm_multiplier, rel=0.25)
    assert loss["low"] < isoflop_grid.mdm_multiplier < loss["high"]
    # Read at MDM's best level: arithmetic's MDM runs end below the sigmoid's midpoint, where its
    # ceiling is barely identified, so a 90% interval from four budgets need not cover the truth.
    for quantity in ("toy_mc/acc", "toy_arithmetic/exact_match"):
        row = multipliers.loc[quantity]
        assert 1 < row["low"] <= row["estimate"] <= row["high"]
        assert row["estimate"] == pytest.approx(isoflop_grid.mdm_multiplier, rel=0.15)
    # The level is the worse objective's best: MDM's, for the loss (higher) and accuracies (lower).
    assert loss["level"] == pytest.approx(2.0 + 533.0 * (1e18 / 16) ** -0.15, rel=0.02)
    mdm_best_mc = 0.25 + 0.6 / (1 + math.exp(-1.5 * (math.log10(1e18 / 16) - 16.5)))
    assert multipliers.loc["toy_mc/acc", "level"] == pytest.approx(mdm_best_mc, rel=0.02)

    held_out = pd.read_csv(out / "held_out.csv")
    assert set(held_out["quantity"]) == {"toy_mc/acc", "toy_arithmetic/exact_match"}
    assert (held_out["held_out_budget"] == max(isoflop_grid.budgets)).all()
    held_out_note = [line for line in printed.splitlines() if "no held-out check" in line]
    assert held_out_note == ["note: no held-out check: validation/loss (ARM, MDM). Cause: a held-out "
                             "check needs 5 budgets (one to predict, enough left to bootstrap a fit), "
                             "the grid has 4"]

    # sizes 1/3, 1 and 3 x N*(C) = 0.1 sqrt(C / 6): each slice's vertex is N*, and N* grows as C^0.5
    optima = pd.read_csv(out / "isoflop_optima.csv")
    assert len(optima) == 8 and (optima["method"] == "parabola").all() and optima["inside_sizes"].all()
    expected = 0.1 * (optima["flops_budget"] / 6) ** 0.5
    assert (optima["optimal_params"] / expected).between(0.8, 1.25).all()  # 0.2% loss noise moves a vertex ~10%
    assert (optima["optimal_tokens"] * 6 * optima["optimal_params"] / optima["flops_budget"]).between(0.999, 1.001).all()
    allocation = pd.read_csv(out / "allocation.csv").set_index("objective")
    for objective in ("arm", "mdm"):
        row = allocation.loc[objective]
        assert row["a (N* ~ C^a)"] == pytest.approx(0.5, abs=0.03)
        assert row["low"] < 0.5 < row["high"] and row["n_budgets"] == 4

    report = (out / "report.md").read_text()
    assert "![isoflop](isoflop.png)" in report and "C_MDM / C_ARM" in report
    assert "## IsoFLOP optima" in report and "![allocation](allocation.png)" in report

    client = MlflowClient(isoflop_grid.uri)
    logged = {Path(a.path).name for a in client.list_artifacts(isoflop_grid.parent_run_id, "analysis")}
    assert {"task_scaling.png", "loss_vs_compute.pdf", "scores.csv", "report.md"} <= logged


def test_a_single_budget_gives_the_table_and_points_with_a_message_and_no_fit(synthetic_grid, capsys):
    grid = synthetic_grid(budgets=(1e16,), sizes=(0.5, 1.0, 2.0), extras=False)
    code = main(["--grid", grid.grid, "--runs-dir", str(grid.runs_dir), "--no-log"])
    printed = capsys.readouterr().out
    out = grid.runs_dir / grid.grid / "analysis"  # the default output folder
    assert code == 0
    assert "no fits: a scaling fit needs at least 3 budgets per objective and the grid has ARM 1, MDM 1" in printed
    assert (out / "scores.csv").is_file() and (out / "task_scaling.png").is_file()
    assert not (out / "fits.csv").exists() and not (out / "multipliers.csv").exists()
    assert len(pd.read_csv(out / "scores.csv").query("task == 'validation'")) == 6
    assert not MlflowClient(grid.uri).list_artifacts(grid.parent_run_id)


def test_a_grid_without_finished_runs_exits_with_a_message(synthetic_grid, capsys):
    grid = synthetic_grid(budgets=(1e16,), objectives=(), extras=True)  # one RUNNING, one FAILED
    code = main(["--grid", grid.grid, "--runs-dir", str(grid.runs_dir)])
    err = capsys.readouterr().err
    assert code == 2
    assert "has no finished runs with scores" in err and "1 FAILED, 1 RUNNING" in err
    assert "--include-running" in err and "Traceback" not in err

    assert main(["--grid", "missing", "--runs-dir", str(grid.runs_dir)]) == 2
    assert "no MLflow experiment named 'missing'" in capsys.readouterr().err


def test_finished_runs_that_mlflow_lacks_are_named(synthetic_grid, capsys):
    """Run folders with a result.json but no MLflow run (a deleted or another store) are named in the
    comparison's notes; one whose MLflow run exists is not."""
    import json

    grid = synthetic_grid(budgets=(1e16,), sizes=(0.5, 1.0, 2.0), extras=False)
    present = MlflowClient(grid.uri).get_run(grid.finished[0]).data.tags["run_key"]
    for key, name in ((present, "tracked"), ("0123456789ab", "arm-tiny-4.3e+11")):
        (grid.runs_dir / grid.grid / key).mkdir(parents=True)
        (grid.runs_dir / grid.grid / key / "result.json").write_text(json.dumps({"name": name}))
    assert main(["--grid", grid.grid, "--runs-dir", str(grid.runs_dir), "--no-log"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    (missing,) = [line for line in notes if "have no usable MLflow run" in line]
    assert "1 finished run(s)" in missing and "arm-tiny-4.3e+11 (0123456789ab)" in missing
    assert "tracked" not in missing


def test_an_unreachable_server_is_one_line_from_the_health_check(tmp_path, capsys):
    """The message is the 5-second health check's (studies.tracking.check_reachable), not the
    traceback MLflow's client gives after minutes of retries."""
    assert main(["--grid", "g", "--tracking-uri", "http://127.0.0.1:9", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MLflow tracking server http://127.0.0.1:9 is unreachable") and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_help_runs_as_a_script_without_heavy_imports():
    done = subprocess.run([sys.executable, "analysis/compare.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "--grid" in done.stdout and "--n-resamples" in done.stdout
    probe = ("import sys, analysis.compare, analysis.runs; "
             "print(sorted(m for m in ('mlflow', 'matplotlib', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_three_budgets_of_one_seed_give_one_note_per_cause(synthetic_grid, capsys):
    """The smoke grid's shape: every bootstrap of the loss frontier fails for one reason, and the
    figure that draws it goes without curves for that reason: one note names all of them."""
    grid = synthetic_grid(budgets=(1e15, 1e16, 1e17), extras=False)
    assert main(["--grid", grid.grid, "--runs-dir", str(grid.runs_dir), "--no-log", "--n-resamples", "50"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]
    failed = [line for line in notes if "bootstrap resamples could not be fitted" in line]
    assert len(failed) == 1, notes
    assert failed[0].startswith("note: no fit: validation/loss (ARM, MDM); figures drawn without fitted "
                                "curves: loss_vs_compute. Cause: ")
    causes = [line.partition("Cause: ")[2] or line for line in notes]
    assert len(set(causes)) == len(causes)
    report = (grid.runs_dir / grid.grid / "analysis" / "report.md").read_text()
    assert report.count("bootstrap resamples could not be fitted") == 1


def test_the_launch_summary_is_the_score_table_the_notes_and_where_the_files_are(synthetic_grid, capsys):
    grid = synthetic_grid(budgets=(1e16,), sizes=(0.5, 1.0, 2.0), extras=False)
    assert main(["--grid", grid.grid, "--runs-dir", str(grid.runs_dir), "--no-log", "--launch-summary"]) == 0
    printed = capsys.readouterr().out
    out = grid.runs_dir / grid.grid / "analysis"
    scores = (out / "scores.md").read_text()
    assert printed.startswith("\n" + scores + "\n")  # the table, as the launch shows it
    lines = printed[len(scores) + 2:].splitlines()
    files = sorted(p.name for p in out.iterdir())
    assert lines[-1] == f"analysis: {len(files)} files in {out}; figure: {out / 'task_scaling.png'}"
    notes = lines[:-1]
    assert notes and all(line.startswith("note: ") for line in notes)
    assert "note: no fits: a scaling fit needs at least 3 budgets per objective and the grid has ARM 1, MDM 1; " \
           "scores table and points only" in notes
    assert not any(line.startswith(("grid ", "wrote ", "  ")) for line in lines)  # not the usual printout

    assert main(["--grid", "missing", "--runs-dir", str(grid.runs_dir), "--launch-summary"]) == 0
    skipped = capsys.readouterr()
    assert skipped.out.startswith("analysis skipped: no MLflow experiment named 'missing'") and not skipped.err
