"""A branched grid on the real cluster: the trunk's segments form a chain of afterok dependencies,
each branch waits for its segment, and a trunk segment preempted mid-way resumes from its checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from slurm_jobs import queue_empty, scontrol_fields, train_losses, wait_for

from models.config import preset

pytestmark = pytest.mark.slurm

REPO_ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN, BATCH = 32, 2
# cooldowns of 20 %: branch points 160 and 200; the first segment trains long enough to be signalled
STEPS = (200, 250)
BRANCH_STEPS = (160, 200)
ALL_DONE_TIMEOUT_S = 600


def _budget(steps: int) -> float:
    return 6 * preset("tiny").non_embedding_params * steps * BATCH * SEQ_LEN


def test_branched_grid_chains_segments_and_branches_and_a_preempted_segment_resumes(slurm_cluster, tmp_path):
    argv = [sys.executable, str(REPO_ROOT / "sweeps" / "launch.py"), "--grid", "smoke", "--cluster", "slurm",
            "--profile", "dev", "--only", "objective=arm", "models=[tiny]",
            f"budgets=[{_budget(STEPS[0])},{_budget(STEPS[1])}]", "branching=true", "schedule.kind=cooldown",
            "schedule.warmup_steps=5", f"trainer.seq_len={SEQ_LEN}", f"trainer.global_batch_size={BATCH}",
            f"trainer.micro_batch_size={BATCH}", "trainer.val_batches=1", "trainer.val_every_n_steps=100",
            "trainer.checkpoint_every_n_steps=5", "trainer.log_every_n_steps=1", "trainer.progress_bar=false",
            "data.toyworld.num_people=40", "data.toyworld.num_arithmetic=100", "data.toyworld.task_items=10",
            "data.toyworld.validation_bios=10", "data.toyworld.validation_arithmetic=10",
            "data.tokenizer.vocab_size=300", "eval.suite=none"]
    launch = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    records = [json.loads(line) for line in
               (tmp_path / "runs" / "smoke" / "sweep" / "submissions.jsonl").read_text().splitlines()]
    jobs = {r["run_key"]: r for r in records if r.get("event") == "submitted"}
    segments = sorted((k for k in jobs if "@" in k), key=lambda k: int(k.split("@")[1]))
    branches = [k for k in jobs if "@" not in k]
    assert [int(k.split("@")[1]) for k in segments] == list(BRANCH_STEPS) and len(branches) == 2
    first, second = (jobs[k]["job_id"] for k in segments)
    try:
        # the chain, as SLURM holds it: segment 2 after segment 1; each branch after its segment
        assert "afterok:" + first in scontrol_fields(second).get("Dependency", "")
        for key in branches:
            config = OmegaConf.load(jobs[key]["config"])
            expected = first if config["branching"]["branch_step"] == BRANCH_STEPS[0] else second
            assert "afterok:" + expected in scontrol_fields(jobs[key]["job_id"]).get("Dependency", ""), key
        assert re.search(rf"as SLURM job {second}, after job {first}", launch.stdout)

        trunk_dir = Path(jobs[segments[0]]["config"]).parent
        wait_for(lambda: (trunk_dir / "checkpoints" / "last.ckpt").exists(), 240, "the first segment's checkpoint",
                 slurm_cluster)
        subprocess.run(["scancel", "--signal=USR2", first], check=True, timeout=30)  # preempt segment 1
        for record in jobs.values():
            wait_for(lambda: queue_empty(record["job_id"]), ALL_DONE_TIMEOUT_S, f"job {record['job_id']} ending",
                     slurm_cluster, every=2)
    finally:
        for record in jobs.values():
            slurm_cluster.cancel(record["job_id"])

    log = Path(jobs[segments[0]]["log"]).read_text()
    assert re.search(r"saved \S+ at step \d+; requeueing the job", log), log[-3000:]
    assert "segment done at step 160" in Path(jobs[segments[0]]["stdout"]).read_text()
    assert json.loads((trunk_dir / "result.json").read_text())["steps"] == BRANCH_STEPS[1]
    steps = [step for step, _ in train_losses(trunk_dir)]  # every attempt's log: resumed, nothing repeated or lost
    assert steps == list(range(BRANCH_STEPS[1]))
    for key in branches:
        out = Path(jobs[key]["config"]).parent
        result = json.loads((out / "result.json").read_text())
        step = BRANCH_STEPS[STEPS.index(result["steps"])]
        assert [s for s, _ in train_losses(out)] == list(range(step, result["steps"]))  # from its segment's checkpoint
