"""Activation checkpointing, compilation and FSDP2 applied to a plain ``Transformer`` from outside.

As in torchtitan's ``parallelize`` functions, the backbone (``models/transformer.py``) holds no
distributed or compilation code; this module rewrites an instantiated one in place, in torchtitan's
order: activation checkpointing per block, then ``torch.compile`` per block, then ``fully_shard``
per block and at the root. Parameter names do not change, so a checkpoint written by a parallelized
model loads into a plain one.

FSDP2 (Zhao et al. 2023, PyTorch FSDP; the ``fully_shard`` per-parameter DTensor API) shards every
parameter along dim 0 over the data-parallel ranks. Before a block's forward and backward its
parameters are all-gathered (in ``param_dtype``), and afterwards its gradients are reduce-scattered
(in ``reduce_dtype``). The sharded fp32 parameters, their gradients and the AdamW states of a rank
are thus 1/dp of the model's, which ``sweeps/memory.py`` counts.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch.utils.checkpoint import checkpoint

from models.transformer import Transformer


@dataclass(frozen=True)
class Parallelism:
    """How a backbone is executed: neither field changes what it computes beyond float rounding.

    ``param_dtype``: the dtype FSDP2 all-gathers parameters in for compute (bf16 under
    ``bf16-mixed``), the fp32 master copy staying sharded; ``reduce_dtype``: the dtype gradients are
    reduce-scattered in (fp32, so that averaging over ranks loses no precision)."""

    activation_checkpointing: bool = False
    compile: bool = False
    param_dtype: Optional[torch.dtype] = None
    reduce_dtype: Optional[torch.dtype] = torch.float32


def parallelize(model: Transformer, parallelism: Parallelism, mesh=None) -> Transformer:
    """Apply ``parallelism`` to ``model`` in place and return it; ``mesh``: a 1-D data-parallel
    DeviceMesh to shard over with FSDP2, or None for a model that stays whole on one device."""
    for block in model.layers:
        if parallelism.activation_checkpointing:
            checkpoint_activations(block)
        if parallelism.compile:
            block.compile()  # in place: parameter names stay those of the plain model
    if mesh is not None:
        shard(model, mesh, parallelism)
    return model


def checkpoint_activations(block: torch.nn.Module) -> None:
    """Keep only ``block``'s inputs for the backward pass and recompute its forward there (Chen et al.
    2016). Non-reentrant checkpointing replays the same kernels on the same inputs, so loss and
    gradients are bit for bit those of the plain block; the block's own ``forward`` is wrapped rather
    than the module, so that parameter names are unchanged."""
    if getattr(block, "_checkpointed", False):
        return
    forward = block.forward

    def checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed
    block._checkpointed = True


def shard(model: Transformer, mesh, parallelism: Parallelism) -> None:
    """``fully_shard`` each block, then the root (embedding, final norm, output head).

    The last block is not resharded after forward: backward needs it at once. The root is never
    resharded after forward by FSDP2. ``hidden_states`` is registered as a forward method, so that
    the MDM loss, which calls it and then the output head on the masked rows alone, gathers the root's
    parameters as a call of the model would."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=parallelism.param_dtype, reduce_dtype=parallelism.reduce_dtype)
    for index, block in enumerate(model.layers):
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=_reshards_after_forward(model, index))
    fully_shard(model, mesh=mesh, mp_policy=policy)
    register_fsdp_forward_method(model, "hidden_states")


def _reshards_after_forward(model: Transformer, index: int) -> bool:
    return index < len(model.layers) - 1


@contextmanager
def gathered(model: Transformer) -> Iterator[Transformer]:
    """Every parameter of a sharded ``model`` gathered on every rank while the block runs, with no
    collective in any forward call; a model that is not sharded is left as it is.

    Downstream evaluation scores a different shard of items on each rank, so the ranks make different
    numbers of forward calls, which FSDP2's per-call all-gathers would deadlock on. Gathered once, the
    weights take ``param_dtype`` bytes per parameter on each device (16 GB for an 8B model in bf16)."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield model
        return
    blocks = [block for block in model.layers if isinstance(block, FSDPModule)]
    for module in (*blocks, model):
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    # ``forward`` calls ``hidden_states``, which ``shard`` registers as an FSDP forward method: its
    # post-forward leaves the root's state idle, and the outer post-forward then reshards the root
    # whatever ``reshard_after_forward`` says, so the next call would all-gather it again. The plain
    # method runs while the weights are gathered.
    registered = model.__dict__.pop("hidden_states", None)
    try:
        yield model
    finally:
        if registered is not None:
            model.hidden_states = registered
        for index, block in enumerate(blocks):
            block.reshard()
            block.set_reshard_after_forward(_reshards_after_forward(model, index), recurse=False)
        model.reshard()


__all__ = ["Parallelism", "parallelize", "checkpoint_activations", "shard", "gathered"]
