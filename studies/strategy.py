"""A run's ``trainer.strategy`` as Lightning executes it, and the sharded checkpoints of fsdp2.

- ``auto``: one device (or Lightning's choice); ``ddp``: every rank holds the whole model and its
  AdamW states, gradients are all-reduced; ``fsdp2``: Lightning's ``ModelParallelStrategy`` over a
  one-dimensional data-parallel mesh, on which ``LanguageModel.configure_model`` applies
  ``models.parallelize`` (FSDP2's ``fully_shard`` per block and at the root).

Precision under fsdp2 is FSDP2's mixed-precision policy, as in torchtitan: the sharded master
weights and the optimizer stay fp32, blocks compute in bf16 (``param_dtype``) and gradients are
reduce-scattered in fp32. Lightning then runs at ``32-true``, without autocast on top. Under the
other strategies ``bf16-mixed`` is Lightning's autocast over fp32 weights.

Sharded checkpoints are written by torch distributed checkpoint (DCP): a folder with one file per
rank plus Lightning's ``meta.pt``. ``ShardedCheckpointStrategy`` writes the folder beside its target
and renames it into place once every rank has written, keeping the previous one as ``NAME.prev``,
so a kill mid-save leaves a complete checkpoint, as ``studies.checkpoints.AtomicCheckpointIO`` does
for single files. ``python -m studies.checkpoints consolidate FOLDER`` turns one into the single file
that evaluation, the probe and conversion read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from models.parallelize import Parallelism
from studies.checkpoints import SHARDED_PARTIAL, install_checkpoint, remove_checkpoint
from studies.config import TrainerConfig



class ShardedCheckpointStrategy(ModelParallelStrategy):
    """``ModelParallelStrategy`` whose distributed checkpoints replace the previous one atomically."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Optional[Any] = None) -> None:
        target = Path(self.broadcast(str(filepath)))
        partial = target.with_name(target.name + SHARDED_PARTIAL)
        if self.global_rank == 0:
            remove_checkpoint(partial)  # left by a save that was killed
        self.barrier("sharded-checkpoint-start")
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier("sharded-checkpoint-written")
        if self.global_rank == 0:
            install_checkpoint(partial, target)
        self.barrier("sharded-checkpoint-installed")

    def remove_checkpoint(self, filepath) -> None:
        if self.is_global_zero:
            remove_checkpoint(filepath)


def lightning_strategy(trainer: TrainerConfig) -> tuple[Any, str, Optional[Parallelism]]:
    """(Lightning strategy, Lightning precision, the backbone's Parallelism) for ``trainer``.

    The Parallelism is None when nothing is applied to the backbone (no sharding, checkpointing or
    compilation), so that the plain module runs exactly as before."""
    sharded = trainer.strategy == "fsdp2"
    parallelism = Parallelism(
        activation_checkpointing=trainer.activation_checkpointing,
        compile=trainer.compile,
        param_dtype=torch.bfloat16 if sharded and trainer.precision == "bf16-mixed" else None,
        reduce_dtype=torch.float32,
    )
    if not sharded:
        applied = trainer.activation_checkpointing or trainer.compile
        return trainer.strategy, trainer.precision, parallelism if applied else None
    world = trainer.devices * trainer.num_nodes
    strategy = ShardedCheckpointStrategy(data_parallel_size=world, tensor_parallel_size=1)
    precision = "32-true" if trainer.precision == "bf16-mixed" else trainer.precision
    return strategy, precision, parallelism


__all__ = ["ShardedCheckpointStrategy", "lightning_strategy"]
