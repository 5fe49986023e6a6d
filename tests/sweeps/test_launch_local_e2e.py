"""The local executor runs the real ``studies.run`` end to end for a tiny smoke grid, and a
re-launch of the finished grid submits nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import preset

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_smoke_grid_trains_checkpoints_and_is_idempotent(tmp_path, read_events):
    seq_len, batch, steps = 32, 2, 4
    # a budget of exactly four optimizer steps: C = 6 N (4 x 2 x 32), no rounding
    budget = 6 * preset("tiny").non_embedding_params * steps * batch * seq_len
    argv = [
        sys.executable, str(REPO_ROOT / "sweeps" / "launch.py"), "--grid", "smoke", "--cluster", "local",
        "models=[tiny]", f"budgets=[{budget}]", f"trainer.seq_len={seq_len}", f"trainer.global_batch_size={batch}",
        f"trainer.micro_batch_size={batch}", "trainer.val_batches=1", "trainer.val_every_n_steps=2",
        "trainer.checkpoint_every_n_steps=2", "trainer.progress_bar=false", "data.toyworld.num_people=40",
        "data.toyworld.num_arithmetic=100", "data.toyworld.task_items=10", "data.toyworld.validation_bios=10",
        "data.toyworld.validation_arithmetic=10", "data.tokenizer.vocab_size=300",
    ]
    # run from a scratch folder: runs/ and the data cache land there, as for a user in their own folder
    first = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[1/2] arm-tiny" in first.stdout and "[2/2] mdm-tiny" in first.stdout
    assert first.stdout.count("finished in") == 2

    events = read_events(tmp_path / "runs", "smoke")
    assert sorted(e["name"].split("-")[0] for e in events) == ["arm", "mdm"]
    for event in events:
        out_dir = tmp_path / "runs" / "smoke" / event["run_key"]
        result = json.loads((out_dir / "result.json").read_text())
        assert result["steps"] == steps
        assert result["flops"] == pytest.approx(budget)
        assert (out_dir / "checkpoints" / "final.ckpt").is_file()
        assert (out_dir / "config.yaml").is_file() and (out_dir / "run.log").stat().st_size > 0

    # the whole chain: finished MLflow runs with downstream scores, nested under the launch's run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    records = client.search_runs([experiment.experiment_id])
    launches = [r for r in records if r.data.tags.get("kind") == "launch"]
    jobs = [r for r in records if r.data.tags.get("kind") != "launch"]
    assert len(launches) == 1 and len(jobs) == 2
    assert launches[0].info.status == "FINISHED"  # the launch's run ends with the launch
    for job in jobs:
        assert job.info.status == "FINISHED"
        assert job.data.tags["mlflow.parentRunId"] == launches[0].info.run_id
        for task in ("toy_mc", "toy_forward", "toy_reverse"):
            assert 0.0 <= job.data.metrics[f"eval/{task}/acc"] <= 1.0
        assert "eval/toy_arithmetic/exact_match" in job.data.metrics
    # ...and the comparison the launch printed: the table and figure hold every run
    analysis = tmp_path / "runs" / "smoke" / "analysis"
    assert "analysis: " in first.stdout and str(analysis) in first.stdout
    assert (analysis / "task_scaling.png").stat().st_size > 0
    import csv

    with open(analysis / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["task"] for row in rows} >= {"toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic", "validation"}
    for task in ("toy_mc", "toy_forward", "toy_reverse", "toy_arithmetic", "validation"):
        assert {row["objective"] for row in rows if row["task"] == task} == {"arm", "mdm"}, task
    assert "| toy_reverse |" in first.stdout

    again = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "nothing to do: all 2 runs of grid smoke finished" in again.stdout
    assert len(read_events(tmp_path / "runs", "smoke")) == 2

    status = subprocess.run([sys.executable, str(REPO_ROOT / "sweeps" / "status.py"), "--grid", "smoke",
                             "--format", "json", *argv[6:]], cwd=tmp_path, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert {row["state"] for row in json.loads(status.stdout)} == {"finished"}
