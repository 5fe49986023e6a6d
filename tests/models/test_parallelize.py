"""models/parallelize.py: activation checkpointing and compilation applied from outside the backbone.

FSDP2 is tested end to end over gloo in tests/studies/test_sharded_training.py; the parameter,
gradient and optimizer bytes of a sharded rank in tests/sweeps/test_memory.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from models.config import preset
from models.lightning import LanguageModel
from models.parallelize import Parallelism, parallelize

REPO = Path(__file__).resolve().parents[2]


def _module(objective: str) -> LanguageModel:
    torch.manual_seed(0)
    config = preset("tiny", causal=objective == "arm")
    return LanguageModel(config, objective, total_steps=10, tokens_per_step=64, mask_id=config.vocab_size - 1)


def _loss_and_grads(module: LanguageModel, batch: dict) -> tuple[torch.Tensor, dict]:
    module.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(1)
    loss = module.loss(batch, generator)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in module.named_parameters()}


def _batch(vocab: int, sft: bool = False) -> dict:
    tokens = torch.randint(0, vocab - 1, (3, 24), generator=torch.Generator().manual_seed(2))
    return {"input_ids": tokens, **({"prompt_lengths": torch.tensor([3, 9, 5])} if sft else {})}


@pytest.mark.parametrize("objective", ["arm", "mdm"])
@pytest.mark.parametrize("sft", [False, True])
def test_activation_checkpointing_gives_the_plain_loss_and_gradients_bit_for_bit(objective, sft):
    plain = _module(objective)
    checkpointed = copy.deepcopy(plain)
    parallelize(checkpointed.model, Parallelism(activation_checkpointing=True))
    batch = _batch(plain.config.vocab_size, sft)
    loss, grads = _loss_and_grads(plain, batch)
    loss_ac, grads_ac = _loss_and_grads(checkpointed, batch)
    assert torch.equal(loss, loss_ac)
    for name, grad in grads.items():
        assert torch.equal(grad, grads_ac[name]), name


def test_activation_checkpointing_keeps_only_each_blocks_input():
    """What makes it worth its recomputation: the saved tensors of a forward shrink to the block inputs."""
    def saved_bytes(module: LanguageModel) -> int:
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            module.loss(_batch(module.config.vocab_size), None)
        return sum(storages.values())

    plain = _module("arm")
    checkpointed = copy.deepcopy(plain)
    parallelize(checkpointed.model, Parallelism(activation_checkpointing=True))
    assert saved_bytes(checkpointed) < 0.6 * saved_bytes(plain)


def test_parallelize_keeps_parameter_names_so_checkpoints_load_into_a_plain_model():
    plain = _module("mdm")
    applied = copy.deepcopy(plain)
    parallelize(applied.model, Parallelism(activation_checkpointing=True, compile=True))
    assert list(applied.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(applied.state_dict())


@pytest.mark.integration  # compiles a block with inductor: tens of seconds on a CPU
@pytest.mark.parametrize("objective", ["arm", "mdm"])
def test_a_compiled_step_equals_the_eager_one(objective):
    eager = _module(objective)
    compiled = copy.deepcopy(eager)
    parallelize(compiled.model, Parallelism(compile=True, activation_checkpointing=objective == "mdm"))
    batch = _batch(eager.config.vocab_size)
    loss, grads = _loss_and_grads(eager, batch)
    loss_c, grads_c = _loss_and_grads(compiled, batch)
    torch.testing.assert_close(loss_c, loss, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-4, atol=1e-6, msg=name)


GATHERED_WORKER = r'''
import sys
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from models.config import preset
from models.parallelize import Parallelism, gathered, parallelize
from models.transformer import Transformer

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
plain = Transformer(preset("tiny", vocab_size=64, causal=False, max_seq_len=32))
model = parallelize(__import__("copy").deepcopy(plain), Parallelism(activation_checkpointing=True),
                    init_device_mesh("cpu", (2,)))
x = torch.randint(0, 64, (2, 12))
model(x).sum().backward()  # a training step's forward and backward first
model.eval()
with torch.no_grad(), gathered(model):
    for _ in range(3 if rank == 0 else 1):  # unequal numbers of forward calls, as an evaluation's shards make
        assert torch.allclose(model(x), plain.eval()(x), atol=1e-5)
model.train()
model(x).sum().backward()  # sharded training goes on afterwards
open(f"{sys.argv[1]}/rank{rank}.ok", "w").close()  # a file per rank: the ranks' stdout lines can interleave
dist.destroy_process_group()
'''


def test_gathered_weights_let_ranks_make_unequal_numbers_of_forward_calls(tmp_path):
    """Inside ``gathered`` no forward call is a collective, so ranks scoring different shards of an
    evaluation cannot deadlock; the sharded model trains on afterwards."""
    import os
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(GATHERED_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("rank*.ok")) == ["rank0.ok", "rank1.ok"]
