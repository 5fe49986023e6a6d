"""Test helpers for runs: tiny run configs (a toy world small enough to prepare in seconds) and
callbacks that interrupt a run."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from omegaconf import OmegaConf

from models.config import preset
from studies.config import RunConfig

# The launcher tests run the smoke grid with this model and these budgets, whatever the grid's own
# choice: six runs named arm-tiny-1e+11 ... mdm-tiny-1e+12.
SMOKE_TESTED = ["models=[tiny]", "budgets=[1e11,3e11,1e12]"]


def tiny_run_config(out_dir: Path, data_cache: Path, objective: str = "arm", steps: int = 6, **sections) -> RunConfig:
    base = OmegaConf.structured(RunConfig(
        grid=sections.pop("grid", "testgrid"),
        name=f"{objective}-tiny",
        objective=objective,
        out_dir=str(out_dir),
        model=preset("tiny", causal=objective == "arm"),
    ))
    values = {
        "data": {"cache_dir": str(data_cache),
                 "toyworld": {"num_people": 60, "num_arithmetic": 200, "task_items": 20,
                              "validation_bios": 20, "validation_arithmetic": 20}},
        "trainer": {"seq_len": 32, "global_batch_size": 4, "micro_batch_size": 4, "precision": "32-true",
                    "accelerator": "cpu", "num_workers": 0, "val_every_n_steps": 3, "val_batches": 1,
                    "checkpoint_every_n_steps": 2, "log_every_n_steps": 1, "progress_bar": False},
        "budget": {"steps": steps},
        "schedule": {"warmup_steps": 1},
    }
    merged = OmegaConf.merge(base, values, sections)
    return OmegaConf.to_object(merged)


class CrashAt(L.Callback):
    """Raises inside training at optimizer step ``step``: a job that dies mid-run."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("injected crash")


def train_losses(out_dir) -> dict[int, float]:
    """Per-step train/loss from every CSV log version of a run (one version per attempt)."""
    losses = {}
    for path in sorted((Path(out_dir) / "logs").glob("version_*/metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss"):
                    losses[int(row["step"])] = float(row["train/loss"])
    return losses


def train_tiny_checkpoints(root, data, max_seq_len: int = 64, suffix: str = "") -> dict:
    """{objective: final.ckpt} of tiny ARM and MDM runs trained for thirty steps on ``data``."""
    from models.config import preset
    from studies.config import BudgetConfig, EvalConfig, RunConfig, TrackingConfig, TrainerConfig
    from studies.run import run

    checkpoints = {}
    for objective in ("arm", "mdm"):
        cfg = RunConfig(
            name=f"{objective}-tiny{suffix}", objective=objective, out_dir=str(root / objective),
            model=preset("tiny", causal=objective == "arm", max_seq_len=max_seq_len), data=data,
            trainer=TrainerConfig(seq_len=32, global_batch_size=4, micro_batch_size=4, precision="32-true",
                                  accelerator="cpu", num_workers=0, val_batches=1, progress_bar=False,
                                  log_every_n_steps=1),
            budget=BudgetConfig(steps=30), eval=EvalConfig(suite="none"), tracking=TrackingConfig(enabled=False),
        )
        checkpoints[objective] = run(cfg)["checkpoint"]
    return checkpoints
