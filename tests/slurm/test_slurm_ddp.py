"""Two processes through SLURM: a job with 2 tasks trains with Lightning DDP, or with FSDP2 through
ModelParallelStrategy, on CPU (gloo).

``srun`` starts the tasks; Lightning's SLURMEnvironment takes rank and world size from SLURM, the code
path of a multi-node GPU job. Each rank trains on half of every global batch (2 of 4 sequences) and
DDP averages the gradients, so the run must follow a single process that trains on all 4 sequences:
the same validation losses and the same final weights, up to float summation order.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
from run_configs import tiny_run_config
from slurm_jobs import render_job, start_local_run, write_run_config

from studies.consolidate import consolidate

pytestmark = pytest.mark.slurm

STEPS = 8
JOB_TIMEOUT_S = 240


def _val_losses(out_dir) -> dict[int, float]:
    rows = {}
    for metrics in sorted((out_dir / "logs").glob("version_*/metrics.csv")):
        with open(metrics, newline="") as f:
            rows.update({int(r["step"]): float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")})
    return rows


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_task_job_trains_like_one_process(strategy, slurm_cluster, data_cache, tmp_path):
    if slurm_cluster.cpus < 2:
        pytest.skip(f"the node has {slurm_cluster.cpus} CPU(s); a 2-task job needs 2")
    # One validation set for both: studies.run validates on the first val_batches x micro_batch_size
    # windows, split across ranks (1 x 4 here; 2 x 2 in halves of 2 for the DDP run). val/loss is
    # averaged over ranks (sync_dist), so both report the mean over the same 4 windows.
    trainer = {"global_batch_size": 4, "micro_batch_size": 4, "val_every_n_steps": 4, "val_batches": 1}
    single = tiny_run_config(tmp_path / "single", data_cache, "arm", STEPS, trainer=trainer)
    ddp = dataclasses.replace(single, out_dir=str(tmp_path / "ddp"), trainer=dataclasses.replace(
        single.trainer, devices=2, strategy=strategy, micro_batch_size=2, val_batches=2))
    script = render_job(write_run_config(ddp, tmp_path / "jobs" / "ddp.yaml"), tmp_path / "jobs" / "ddp.sbatch")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text()

    job_id = slurm_cluster.sbatch(str(script))
    local = start_local_run(write_run_config(single, tmp_path / "single.yaml"), tmp_path / "single.log")
    try:
        info = slurm_cluster.wait_until_final(job_id, JOB_TIMEOUT_S)
        assert local.wait(timeout=JOB_TIMEOUT_S) == 0, (tmp_path / "single.log").read_text()[-3000:]
    finally:
        slurm_cluster.cancel(job_id)
        if local.poll() is None:
            local.kill()
    log = (tmp_path / "jobs" / f"slurm-{job_id}.out").read_text()
    assert (info.state, info.exit_code) == ("COMPLETED", "0:0"), log[-4000:]
    # both ranks of one job, world size 2, from SLURM's environment
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in log and "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-4000:]

    results = {name: json.loads((tmp_path / name / "result.json").read_text()) for name in ("single", "ddp")}
    assert results["ddp"]["steps"] == results["single"]["steps"] == STEPS
    assert results["ddp"]["tokens"] == results["single"]["tokens"]  # same global batch
    val_single, val_ddp = _val_losses(tmp_path / "single"), _val_losses(tmp_path / "ddp")
    assert len(val_single) >= 2 and val_ddp.keys() == val_single.keys()
    for step, loss in val_single.items():
        assert val_ddp[step] == pytest.approx(loss, rel=1e-5), step
    assert results["ddp"]["val_loss"] == pytest.approx(results["single"]["val_loss"], rel=1e-5)

    final = {name: tmp_path / name / "checkpoints" / "final.ckpt" for name in ("single", "ddp")}
    if strategy == "fsdp2":  # one shard per rank, gathered into one file
        assert len(list(final["ddp"].glob("*.distcp"))) == 2
        final["ddp"] = consolidate(final["ddp"])
    weights = {name: torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
               for name, path in final.items()}
    assert weights["ddp"].keys() == weights["single"].keys()
    # DDP sums each gradient in another order than one process does, so the two agree to the last bits
    # only. Adam divides by sqrt(v): where a gradient is at rounding level (the embedding row of a token
    # seen once) those bits can move the update by up to lr per step. So every weight must agree to
    # 1e-4, except at most one coordinate in 10^4, which must stay within lr x steps.
    lr = single.optim.lr
    for key, value in weights["single"].items():
        off = ~torch.isclose(weights["ddp"][key], value, rtol=1e-4, atol=1e-5)
        assert off.sum() <= max(1, value.numel() // 10_000), (key, int(off.sum()))
        assert (weights["ddp"][key] - value).abs().max() <= lr * STEPS, key
