"""FSDP2 (``trainer.strategy: fsdp2``) over gloo with two processes, started by torch.distributed.run.
The same runs under SLURM's srun: tests/slurm/test_slurm_ddp.py.

Two ranks with micro-batch 2 read the sequences, and draw the MDM masks, of one process that
accumulates two micro-batches of 2 (``LanguageModel.global_micro_batch``), so both runs take the same
optimizer steps up to float summation order: FSDP2 reduce-scatters each gradient where one process
adds the two micro-batches' gradients. A run preempted and resumed from its sharded checkpoint
(a torch distributed checkpoint folder) follows the uninterrupted sharded run bit for bit.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from run_configs import tiny_run_config
from studies.config import config_yaml
from studies.consolidate import consolidate
from studies.run import run

REPO = Path(__file__).resolve().parents[2]
STEPS = 6
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _configs(root: Path, data_cache: Path, objective: str):
    trainer = {"global_batch_size": 4, "micro_batch_size": 2, "val_every_n_steps": 1, "val_batches": 2}
    if objective == "mdm":  # the MDM runs also recompute activations and take the loss in chunks of 7 rows
        trainer.update(activation_checkpointing=True, loss_chunk_size=7)
    evaluation = {"suite": "toyworld", "limit": 3, "mc_samples": 2, "at_fractions": [1.0]}
    single = tiny_run_config(root / "g" / "single", data_cache, objective, STEPS, trainer=trainer,
                             eval=evaluation, tracking={"enabled": False})
    sharded = dataclasses.replace(single, out_dir=str(root / "g" / "fsdp2"), trainer=dataclasses.replace(
        single.trainer, devices=2, strategy="fsdp2"))
    return single, sharded


def _torchrun(config, root: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    path = root / f"{name}.yaml"
    path.write_text(config_yaml(config))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(REPO / "tests" / "distributed_run.py"), str(path), *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def _val_losses(out_dir) -> dict[int, float]:
    rows = {}
    for metrics in sorted((Path(out_dir) / "logs").glob("version_*/metrics.csv")):
        with open(metrics, newline="") as f:
            rows.update({int(r["step"]): float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")})
    return rows


def _weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module", params=["arm", "mdm"])
def trained(request, tmp_path_factory, data_cache):
    """One process and two FSDP2 ranks, trained on the same sequences and masks."""
    root = tmp_path_factory.mktemp(request.param)
    single, sharded = _configs(root, data_cache, request.param)
    run(single)  # prepares the data first, so that the ranks find it ready
    done = _torchrun(sharded, root, "fsdp2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, single, sharded


def test_two_sharded_ranks_train_and_evaluate_like_one_process(trained):
    root, single, sharded = trained
    checkpoint = Path(sharded.out_dir) / "checkpoints" / "final.ckpt"
    assert checkpoint.is_dir() and len(list(checkpoint.glob("*.distcp"))) == 2  # one shard per rank

    val_single, val_sharded = _val_losses(single.out_dir), _val_losses(sharded.out_dir)
    assert len(val_single) >= STEPS and val_sharded.keys() == val_single.keys()
    for step, loss in val_single.items():
        assert val_sharded[step] == pytest.approx(loss, rel=1e-5), step

    expected = _weights(Path(single.out_dir) / "checkpoints" / "final.ckpt")
    got = _weights(consolidate(checkpoint))
    assert got.keys() == expected.keys()
    # the tolerance of the DDP test (tests/slurm/test_slurm_ddp.py): a gradient at rounding level can
    # move one coordinate in 10^4 by up to lr per step under Adam
    lr = single.optim.lr
    for key, value in expected.items():
        off = ~torch.isclose(got[key], value, rtol=1e-4, atol=1e-5)
        assert off.sum() <= max(1, value.numel() // 10_000), (key, int(off.sum()))
        assert (got[key] - value).abs().max() <= lr * STEPS, key

    # downstream evaluation on gathered weights: the ranks score 2 and 1 of 3 items per task
    scores = {name: {task: result["metrics"] for task, result in
                     json.loads((Path(c.out_dir) / "result.json").read_text())["eval"][0]["tasks"].items()}
              for name, c in (("single", single), ("sharded", sharded))}
    assert len(scores["single"]) == 4 and scores["sharded"].keys() == scores["single"].keys()
    for task, metrics in scores["single"].items():
        assert scores["sharded"][task] == pytest.approx(metrics), task


def test_a_preempted_sharded_run_resumes_exactly(trained):
    root, _, sharded = trained
    resumed = dataclasses.replace(sharded, out_dir=str(root / "g" / "resumed"))
    preempted = _torchrun(resumed, root, "resumed", "--preempt-at", "3")
    assert preempted.returncode != 0 and f"exitcode  : {128 + signal.SIGUSR1}" in preempted.stderr, \
        preempted.stderr[-3000:]
    checkpoints = Path(resumed.out_dir) / "checkpoints"
    assert (checkpoints / "last.ckpt").is_dir() and not (checkpoints / "final.ckpt").exists()
    assert not list(checkpoints.glob("*.partial-*"))

    done = _torchrun(resumed, root, "resumed")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _val_losses(resumed.out_dir) == _val_losses(sharded.out_dir)
    expected = _weights(consolidate(Path(sharded.out_dir) / "checkpoints" / "final.ckpt"))
    got = _weights(consolidate(checkpoints / "final.ckpt"))
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert sorted(p.name for p in checkpoints.iterdir()) == ["final.ckpt", "final.consolidated.ckpt"]


def test_a_sharded_checkpoint_is_refused_by_readers_of_one_file_with_the_fix(trained, capsys):
    from studies.checkpoint_inputs import resolve_checkpoint

    _, _, sharded = trained
    folder = Path(sharded.out_dir) / "checkpoints" / "final.ckpt"
    with pytest.raises(SystemExit, match="python -m studies.consolidate"):
        resolve_checkpoint(folder)
