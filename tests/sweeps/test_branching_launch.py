"""A branched grid, planned and launched locally: trunk segments, then each branch from its segment's
checkpoint, nested under its trunk in MLflow; the dry run's accounting of what branching saves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import preset
from run_configs import train_losses
from sweeps import launch
from sweeps.plan import plan_grid

REPO_ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN, BATCH = 32, 2
STEPS = (5, 8)  # cooldowns of round(0.25 x 5) = 1 and 2 steps: branch points 4 and 6


def _budget(steps: int) -> float:
    return 6 * preset("tiny").non_embedding_params * steps * BATCH * SEQ_LEN


BRANCHED = [
    "models=[tiny]", f"budgets=[{_budget(STEPS[0])},{_budget(STEPS[1])}]", "branching=true",
    "schedule.kind=cooldown", "schedule.cooldown_fraction=0.25", "schedule.warmup_steps=2",
    f"trainer.seq_len={SEQ_LEN}", f"trainer.global_batch_size={BATCH}", f"trainer.micro_batch_size={BATCH}",
    "trainer.val_batches=1", "trainer.val_every_n_steps=2", "trainer.checkpoint_every_n_steps=2",
    "trainer.log_every_n_steps=1", "trainer.progress_bar=false", "data.toyworld.num_people=40",
    "data.toyworld.num_arithmetic=100", "data.toyworld.task_items=10", "data.toyworld.validation_bios=10",
    "data.toyworld.validation_arithmetic=10", "data.tokenizer.vocab_size=300", "eval.limit=4",
]


def test_scaling_1b_branched_costs_at_most_three_quarters_of_independent_runs(capsys):
    argv = ["--grid", "scaling_1b", "--dry-run", "branching=true", "schedule.kind=cooldown", "eval.at_fractions=[1.0]"]
    assert launch.main(argv) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("branching: "))
    found = re.match(r"branching: ([\d,.]+) GPU-h, independent runs: ([\d,.]+) GPU-h, ratio ([\d.]+) ", line)
    branched, independent, ratio = (float(x.replace(",", "")) for x in found.groups())
    assert ratio == pytest.approx(branched / independent, abs=1e-3)
    # 7 log-spaced budgets sum to 1.46x the largest: the bound is 1/1.46 = 0.69, plus 20 % cooldowns
    assert 0.69 < ratio <= 0.75

    plan = plan_grid("scaling_1b", argv[3:])
    assert len(plan.trunks) == 2 and len(plan.runs) == 14
    for trunk in plan.trunks:
        members = [r for r in plan.runs if r.config["branching"]["trunk_dir"] == str(trunk.out_dir)]
        assert {r.objective for r in members} == {trunk.objective} and len(members) == 7
        assert trunk.config["branching"]["branch_steps"] == sorted(r.config["branching"]["branch_step"] for r in members)
        assert trunk.budget.steps == max(r.config["branching"]["branch_step"] for r in members)
        # one warmup for the whole group, at most 10 % of its shortest run
        assert {r.config["schedule"]["warmup_steps"] for r in members} == {trunk.config["schedule"]["warmup_steps"]}


def test_branching_is_refused_with_a_schedule_or_evaluation_it_cannot_branch(capsys):
    assert launch.main(["--grid", "scaling_1b", "--dry-run", "branching=true"]) == 2
    assert "needs schedule.kind=cooldown" in capsys.readouterr().err
    assert launch.main(["--grid", "scaling_1b", "--dry-run", "branching=true", "schedule.kind=cooldown"]) == 2
    assert "eval.at_fractions=[1.0]" in capsys.readouterr().err


def test_a_branch_has_the_key_of_the_run_trained_from_step_zero():
    """The branching section is not part of a run's identity: switching branching on reuses runs
    already trained with the same schedule (the group's warmup, here capped to 0 steps, written out)."""
    branched = plan_grid("smoke", BRANCHED)
    assert {r.config["schedule"]["warmup_steps"] for r in branched.runs} == {0}  # 10 % of 5 steps
    common = [o for o in BRANCHED if o != "branching=true"] + ["schedule.warmup_steps=0",
                                                              "schedule.max_warmup_fraction=1.0"]
    alone = plan_grid("smoke", common)
    branched = plan_grid("smoke", BRANCHED)
    assert [r.key for r in alone.runs] == [r.key for r in branched.runs] and not alone.trunks


@pytest.mark.integration
def test_branched_grid_runs_segments_then_branches_nested_under_their_trunks(tmp_path):
    argv = [sys.executable, str(REPO_ROOT / "sweeps" / "launch.py"), "--grid", "smoke", "--cluster", "local",
            "--no-analysis", *BRANCHED]
    first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("finished in") == 8  # 2 trunks x 2 segments, 4 branches

    plan = plan_grid("smoke", BRANCHED, runs_dir=str(tmp_path / "runs"))
    log = [json.loads(line) for line in (tmp_path / "runs" / "smoke" / "sweep" / "submissions.jsonl").read_text().splitlines()]
    started = {r["run_key"]: i for i, r in enumerate(log) if r.get("event") == "submitted"}
    ended = {r["run_key"]: (i, r["returncode"]) for i, r in enumerate(log) if r.get("event") == "exited"}
    for trunk in plan.trunks:
        assert (trunk.out_dir / "result.json").is_file()
        assert sorted(p.name for p in (trunk.out_dir / "checkpoints").glob("branch-step*")) == \
            ["branch-step4.ckpt", "branch-step6.ckpt"]
    for run in plan.runs:
        step = run.config["branching"]["branch_step"]
        segment = f"{Path(run.config['branching']['trunk_dir']).name}@{step}"
        # the branch started after its segment ended well, and trained its cooldown only
        assert ended[segment][1] == 0 and ended[segment][0] < started[run.key]
        result = json.loads((run.out_dir / "result.json").read_text())
        assert result["steps"] == run.budget.steps and result["flops"] == pytest.approx(run.budget.flops)
        assert sorted(train_losses(run.out_dir)) == list(range(step, run.budget.steps))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    records = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    launch_run = next(r for r in records if r.data.tags.get("kind") == "launch")
    trunks = {r.info.run_id: r for r in records if r.data.tags.get("role") == "trunk"}
    branches = [r for r in records if r.data.tags.get("role") == "branch"]
    assert len(trunks) == 2 and len(branches) == 4
    for trunk in trunks.values():
        assert trunk.info.status == "FINISHED" and trunk.data.tags["mlflow.parentRunId"] == launch_run.info.run_id
    for branch in branches:
        assert branch.info.status == "FINISHED"
        parent = trunks[branch.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["objective"] == branch.data.tags["objective"]
        assert branch.data.tags["branch_step"] in ("4", "6")
        assert "eval/toy_reverse/acc" in branch.data.metrics

    from analysis.runs import load_grid_runs

    used = load_grid_runs("smoke", tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}").used_runs
    assert set(used["run_key"]) == {r.key for r in plan.runs}  # the branches are the grid's runs; trunks are not

    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: all 4 runs of grid smoke finished" in again.stdout


def test_a_failed_segment_fails_the_jobs_that_wait_for_it_without_starting_them(tmp_path, capsys):
    argv = ["--grid", "smoke", "--cluster", "local", "--no-analysis", "--runs-dir", str(tmp_path), "--parallel", "2",
            "--only", "objective=arm", *BRANCHED]
    assert launch.main(argv, command=[sys.executable, "-c", "raise SystemExit(3)"]) == 1
    out = capsys.readouterr().out
    assert "arm-tiny-trunk@4 FAILED (exit code 3)" in out
    # segment @6 waits for @4, each branch for its segment: none of them ran
    assert out.count("failed before it") == 3 and out.count("... running") == 1


def test_status_lists_the_trunk_segments_and_emit_sbatch_refuses_a_branched_grid(tmp_path, capsys):
    from sweeps import status

    assert status.main(["--grid", "smoke", "--runs-dir", str(tmp_path), "--format", "json", *BRANCHED]) == 0
    rows = json.loads(capsys.readouterr().out)
    segments = [r for r in rows if r.get("role") == "segment"]
    assert sorted((r["objective"], r["until_step"]) for r in segments) == [("arm", 4), ("arm", 6), ("mdm", 4), ("mdm", 6)]
    assert all(r["state"] == "planned" for r in rows)
    assert launch.main(["--grid", "smoke", "--runs-dir", str(tmp_path), "--emit-sbatch", str(tmp_path / "b"),
                        *BRANCHED]) == 2
    assert "cannot chain a branched grid's trunk segments" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
