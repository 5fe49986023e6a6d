"""analysis/runs.py reads what training jobs write to MLflow into tidy tables, and accounts for
every run and row it leaves out."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from analysis.runs import chance_levels, load_grid_runs, primary_metric
from models.config import preset
from run_configs import tiny_run_config

TINY_N = preset("tiny").non_embedding_params
TOKENS_PER_STEP = 4 * 32  # tiny_run_config: global batch 4 x seq_len 32
EVAL = {"suite": "toy_mc,toy_arithmetic", "limit": 3, "mc_samples": 1, "at_fractions": [0.5, 1.0]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template):
    """Two tiny real training runs (ARM with planner budget tags, MDM without) under one launch."""
    from studies.run import run
    from studies.tracking import start_parent_run, write_tracking_file

    root = tmp_path_factory.mktemp("real-runs")
    shutil.copy(mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    data_cache = tmp_path_factory.mktemp("data")
    parent = start_parent_run(uri, "tinygrid")
    steps = 4
    budgets = {"arm": {"steps": steps, "flops_budget": 3.0e8, "non_embedding_params": TINY_N,
                       "tokens": steps * TOKENS_PER_STEP, "flops": 6.0 * TINY_N * steps * TOKENS_PER_STEP},
               "mdm": {"steps": steps}}  # an ad-hoc run: no budget tags, the loader derives them
    results = {}
    for objective, budget in budgets.items():
        out = root / "tinygrid" / objective
        write_tracking_file(out, parent_run_id=parent, run_key=f"key-{objective}")
        cfg = tiny_run_config(out, data_cache, objective=objective, steps=steps, grid="tinygrid",
                              tracking={"uri": uri}, eval=EVAL, budget=budget)
        results[objective] = run(cfg)
    return load_grid_runs("tinygrid", tracking_uri=uri), results, parent


def test_real_runs_become_one_row_per_run_evaluation_task_and_metric(trained):
    data, results, parent = trained
    assert data.parent_run_id == parent
    assert sorted(data.runs["objective"]) == ["arm", "mdm"] and data.runs["used"].all()
    assert data.excluded.empty
    scores = data.scores
    for objective, result in results.items():
        rows = scores[(scores["objective"] == objective) & (scores["task"] != "validation")]
        assert set(zip(rows["task"], rows["metric"])) == {
            ("toy_mc", "acc"), ("toy_mc", "acc_norm"), ("toy_mc", "acc_bytes"),
            ("toy_arithmetic", "exact_match"), ("toy_arithmetic", "exact_match_strict")}
        # evaluation points at 50% and 100% of 4 steps; C = 6 N D at each
        assert sorted(set(rows["tokens"])) == [2 * TOKENS_PER_STEP, 4 * TOKENS_PER_STEP]
        np.testing.assert_allclose(rows["flops"], 6.0 * TINY_N * rows["tokens"])
        assert (rows["non_embedding_params"] == TINY_N).all()
        # the scores are the ones the run wrote to result.json at its last evaluation
        last = result["eval"][-1]
        for task, metric in (("toy_mc", "acc"), ("toy_arithmetic", "exact_match")):
            final = rows[(rows["task"] == task) & (rows["metric"] == metric) & rows["final"]]
            assert final["value"].tolist() == [pytest.approx(last["tasks"][task]["metrics"][metric])]
            assert final["flops"].tolist() == [pytest.approx(result["flops"])]
        validation = scores[(scores["objective"] == objective) & (scores["task"] == "validation")]
        end = validation[validation["final"]]
        assert end["value"].tolist() == [pytest.approx(result["val_loss"])]
        assert end["flops"].tolist() == [pytest.approx(result["flops"])]
        assert (validation["flops"] <= result["flops"]).all() and len(validation) >= 2


def test_budget_comes_from_tags_or_from_the_realised_flops(trained):
    data, results, _ = trained
    runs = data.runs.set_index("objective")
    assert runs.loc["arm", "flops_budget"] == 3.0e8 and runs.loc["arm", "budget_source"] == "tag flops_budget"
    # no planner tags: N from FLOPs / (6 tokens), the budget from the realised FLOPs
    assert runs.loc["mdm", "non_embedding_params"] == TINY_N
    assert runs.loc["mdm", "flops_budget"] == pytest.approx(results["mdm"]["flops"])
    assert "final/flops" in runs.loc["mdm", "budget_source"]


def test_loss_curves_hold_train_and_validation_loss_against_flops(trained):
    data, results, _ = trained
    for objective, result in results.items():
        curve = data.curves[data.curves["objective"] == objective]
        train = curve[curve["metric"] == "train/loss"].sort_values("step")
        assert len(train) == result["steps"]
        # training step k (0-based) has seen k + 1 optimizer steps of tokens
        np.testing.assert_allclose(train["flops"], 6.0 * TINY_N * TOKENS_PER_STEP * (train["step"] + 1))
        val = curve[curve["metric"] == "val/loss"]
        assert val["flops"].max() == pytest.approx(result["flops"])
        assert np.isfinite(curve["value"]).all()


def test_finished_running_and_failed_runs_are_told_apart_and_counted(synthetic_grid):
    grid = synthetic_grid()
    data = load_grid_runs(grid.grid, runs_dir=grid.runs_dir)
    status = data.runs.set_index("run_id")["status"]
    assert status[grid.running[0]] == "RUNNING" and status[grid.failed[0]] == "FAILED"
    assert set(data.used_runs["run_id"]) == set(grid.finished)
    assert set(data.scores["run_id"]) == set(grid.finished)  # every finished run is present
    excluded = dict(zip(data.excluded["reason"], data.excluded["count"]))
    assert excluded["runs with status RUNNING (used: FINISHED)"] == 1
    assert excluded["runs with status FAILED (used: FINISHED)"] == 1
    assert excluded["score rows with a NaN/inf value"] == 1
    assert grid.nan_run in data.excluded.set_index("reason").loc["score rows with a NaN/inf value", "runs"]
    assert np.isfinite(data.scores["value"]).all()
    assert "1 RUNNING" in data.summary() and "NaN" in data.summary()
    assert data.parent_run_id == grid.parent_run_id  # the newest launch, not the older one

    with_running = load_grid_runs(grid.grid, runs_dir=grid.runs_dir, statuses=("FINISHED", "RUNNING"))
    assert grid.running[0] in set(with_running.scores["run_id"])
    partial = with_running.scores[(with_running.scores["run_id"] == grid.running[0]) & with_running.scores["final"]]
    assert set(partial["flops"]) == {0.25 * grid.budgets[-1]}  # its last evaluation so far


def test_validation_points_get_the_flops_of_their_step(synthetic_grid):
    grid = synthetic_grid(budgets=(1e15, 1e17), extras=False)
    data = load_grid_runs(grid.grid, runs_dir=grid.runs_dir)
    val = data.scores[data.scores["task"] == "validation"]
    # val/loss at Lightning steps 24 and 49 (interpolated between logged train/flops_seen), then the end
    np.testing.assert_allclose(sorted(set(val["flops"] / val["flops_budget"])), [0.25, 0.5, 1.0])
    arm_end = val[(val["objective"] == "arm") & val["final"]].sort_values("flops_budget")
    np.testing.assert_allclose(arm_end["value"], grid.frontier_loss(arm_end["flops"]), rtol=0.01)
    np.testing.assert_allclose(val["tokens"], val["flops"] / (6 * val["non_embedding_params"]))
    assert len(data.curves[data.curves["metric"] == "train/loss"]) == 4 * grid.total_steps // 10


def test_bad_requests_get_a_message_that_names_the_fix(synthetic_grid):
    grid = synthetic_grid(budgets=(1e15,), extras=False)
    with pytest.raises(ValueError, match=r"no MLflow experiment named 'nope'.*experiments there: .*'synth'"):
        load_grid_runs("nope", runs_dir=grid.runs_dir)
    with pytest.raises(ValueError, match="unknown run status"):
        load_grid_runs(grid.grid, runs_dir=grid.runs_dir, statuses=("DONE",))


def test_chance_and_primary_metric_come_from_the_task_registry():
    assert chance_levels(["toy_mc", "piqa", "gsm8k", "unknown_task"]) == {"toy_mc": 0.25, "piqa": 0.5, "gsm8k": 0.0}
    assert primary_metric("toy_mc", ["acc_norm", "acc"]) == "acc"
    assert primary_metric("toy_arithmetic", ["exact_match_strict", "exact_match"]) == "exact_match"
    assert primary_metric("unknown_task", ["f1"]) == "f1"
