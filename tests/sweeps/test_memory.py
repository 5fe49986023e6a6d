"""sweeps/memory.py: the per-device memory plan against the tensors torch really holds.

- State: the plan's parameter, gradient and AdamW bytes equal, to the byte, the tensors of a model
  after one optimizer step (``LanguageModel.configure_optimizers``), and under FSDP2 the local shards
  of each of two gloo ranks, with dim 0 sizes that do not divide by two.
- Activations: the bytes of the unique storages autograd saves during one micro-batch's forward
  pass (``saved_tensors_hooks``) equal the plan's count exactly, in fp32, under bf16 autocast and in
  bf16 (FSDP2's compute dtype), for ARM and MDM, with and without activation checkpointing and a
  chunked loss. The tolerance is zero bytes: every saved tensor is enumerated.
- A whole step on CPU (``tests/bench/step_memory.py``) peaks below the plan.
- The launcher shows each run's GiB and refuses a run that does not fit its profile's GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bench.step_memory import step_peak  # tests/bench/step_memory.py
from models.config import ModelConfig, preset
from models.lightning import LanguageModel
from models.objectives import mdm_forward_process
from models.parallelize import Parallelism, parallelize
from models.recipe import MDMConfig
from studies.config import TrainerConfig
from sweeps import launch
from sweeps.memory import (GIB, activation_bytes, head_rows, output_head_bytes, parameter_shapes, plan_memory,
                           state_bytes)

REPO = Path(__file__).resolve().parents[2]

CONFIGS = {
    "gqa": ModelConfig(vocab_size=101, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=32),
    "mha": ModelConfig(vocab_size=97, d_model=48, n_layers=3, n_heads=4, n_kv_heads=4, ffn_dim=131, max_seq_len=32),
    "mqa-tied": ModelConfig(vocab_size=103, d_model=64, n_layers=2, n_heads=8, n_kv_heads=1, ffn_dim=77,
                            max_seq_len=32, tie_embeddings=True),
}


def _module(model: ModelConfig, objective: str = "arm", mdm: MDMConfig | None = None, chunk: int = 0):
    model = dataclasses.replace(model, causal=objective == "arm")
    return LanguageModel(dataclasses.asdict(model), objective, total_steps=10, tokens_per_step=64,
                         mask_id=model.vocab_size - 1 if objective == "mdm" else None,
                         mdm=dataclasses.asdict(mdm or MDMConfig()), loss_chunk_size=chunk)


def _storage_bytes(tensors) -> int:
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


@pytest.mark.parametrize("name", CONFIGS)
def test_parameter_shapes_are_the_transformers(name):
    module = _module(CONFIGS[name])
    assert parameter_shapes(CONFIGS[name]) == [(n, tuple(p.shape)) for n, p in module.model.named_parameters()]


@pytest.mark.parametrize("name", CONFIGS)
def test_state_bytes_equal_the_tensors_after_one_optimizer_step(name):
    torch.manual_seed(0)
    module = _module(CONFIGS[name])
    optimizer = module.configure_optimizers()["optimizer"]
    module.loss({"input_ids": torch.randint(0, 90, (2, 16))}, None).backward()
    optimizer.step()
    params = list(module.model.parameters())  # a tied head is the embedding: listed once
    held = {
        "parameters": _storage_bytes(params),
        "gradients": _storage_bytes(p.grad for p in params),
        "optimizer": sum(t.nbytes for state in optimizer.state.values() for t in state.values()),
    }
    assert held == state_bytes(CONFIGS[name], "ddp", 1)
    assert held == state_bytes(CONFIGS[name], "ddp", 8)  # replicated: every rank holds all of it


RANK_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    sys.path.insert(0, sys.argv[1])
    from models.config import ModelConfig
    from models.lightning import LanguageModel
    from models.parallelize import Parallelism, shard

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    held = {}
    for name, fields in json.loads(sys.argv[2]).items():
        torch.manual_seed(0)
        module = LanguageModel(fields, "arm", total_steps=10, tokens_per_step=32)
        shard(module.model, mesh, Parallelism())
        optimizer = module.configure_optimizers()["optimizer"]
        tokens = torch.randint(0, 90, (2, 16), generator=torch.Generator().manual_seed(rank))
        module.loss({"input_ids": tokens}, None).backward()
        optimizer.step()
        local = lambda t: t.to_local() if hasattr(t, "to_local") else t
        def storages(tensors):
            unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in map(local, tensors)}
            return sum(unique.values())
        params = list(module.model.parameters())
        held[name] = {"parameters": storages(params), "gradients": storages(p.grad for p in params),
                      "optimizer": sum(local(t).nbytes for s in optimizer.state.values() for t in s.values())}
    with open(f"{sys.argv[3]}/rank{rank}.json", "w") as f:
        json.dump(held, f)
    dist.destroy_process_group()
""")


def test_fsdp2_state_bytes_equal_each_ranks_local_shards(tmp_path):
    """Two gloo ranks: vocabularies and FFN widths of odd size make FSDP2 pad dim 0, and rank 1 holds
    fewer rows than rank 0 (its AdamW states are smaller; its padded parameters are not)."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    fields = {name: dataclasses.asdict(config) for name, config in CONFIGS.items()}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script), str(REPO), json.dumps(fields), str(tmp_path)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        held = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for name, config in CONFIGS.items():
            assert held[name] == state_bytes(config, "fsdp2", 2, rank=rank), (name, rank)
    odd = CONFIGS["gqa"]
    assert state_bytes(odd, "fsdp2", 2, rank=1)["optimizer"] < state_bytes(odd, "fsdp2", 2)["optimizer"]
    whole = state_bytes(odd, "ddp", 1)
    assert state_bytes(odd, "fsdp2", 2)["parameters"] > whole["parameters"] / 2  # padding


def _from_parameter(tensor) -> bool:
    """Whether ``tensor`` is a cast (and view) of a parameter: autocast's bf16 weight copies."""
    node, cast = tensor.grad_fn, False
    while node is not None:
        name = type(node).__name__
        if name == "AccumulateGrad":
            return cast
        if name not in ("TBackward0", "ToCopyBackward0", "ViewBackward0"):
            return False
        cast = cast or name == "ToCopyBackward0"
        node = node.next_functions[0][0]
    return False


def _saved_bytes(run, module, vocab: int) -> dict[str, int]:
    """Bytes of the unique storages autograd saves while ``run`` runs, by kind: ``weights`` (parameters
    and their autocast casts), ``head`` ([.., V] logits and the [V, d] head gradient), ``activations``."""
    parameters = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, tuple[str, int]] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            kind = ("weights" if storage.data_ptr() in parameters or _from_parameter(tensor) else
                    "head" if vocab in tensor.shape else "activations")
            seen[storage.data_ptr()] = (kind, storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    totals = {"weights": 0, "head": 0, "activations": 0}
    for kind, size in seen.values():
        totals[kind] += size
    return totals


# (precision, strategy): fp32; bf16 autocast over fp32 weights (ddp, auto); bf16 weights as FSDP2 gathers them
REGIMES = [("32-true", "auto"), ("bf16-mixed", "auto"), ("bf16-mixed", "fsdp2")]
ACTIVATION_CASES = list(itertools.product(REGIMES, ("arm", "mdm"), (0, 24), (False, True)))


@pytest.mark.parametrize("regime, objective, chunk, checkpointing", ACTIVATION_CASES,
                         ids=[f"{p}-{s}-{o}-chunk{c}-{'ac' if a else 'noac'}" for (p, s), o, c, a in ACTIVATION_CASES])
def test_saved_activations_equal_the_plan_to_the_byte(regime, objective, chunk, checkpointing):
    precision, strategy = regime
    model = dataclasses.replace(CONFIGS["gqa"], causal=objective == "arm")
    mdm = MDMConfig(eps=1.0, random_length_prob=0.0)  # every position masked: the worst case of B x T rows
    batch, length = 2, 32
    trainer = TrainerConfig(seq_len=length, micro_batch_size=batch, global_batch_size=batch, precision=precision,
                            strategy=strategy, accelerator="cpu", activation_checkpointing=checkpointing,
                            loss_chunk_size=chunk)
    torch.manual_seed(0)
    module = _module(model, objective, mdm, chunk)
    if strategy == "fsdp2":
        module.model.to(torch.bfloat16)  # the unsharded weights FSDP2's bf16 policy computes with
    if checkpointing:
        parallelize(module.model, Parallelism(activation_checkpointing=True))
    tokens = torch.randint(0, model.vocab_size - 1, (batch, length))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if (precision, strategy) == ("bf16-mixed", "auto")
                else contextlib.nullcontext())

    def forward():
        with autocast:
            module.loss({"input_ids": tokens}, torch.Generator().manual_seed(0))

    saved = _saved_bytes(forward, module, model.vocab_size)
    parts = activation_bytes(model, objective, trainer, mdm)
    # the forward pass keeps each checkpointed block's input; the recompute happens in the backward pass
    assert saved["activations"] == sum(parts.values()) - parts["recompute"]
    assert saved["head"] <= output_head_bytes(model, objective, trainer, mdm)
    if checkpointing:  # the recompute: one block's saved set as measured without checkpointing, its input aside
        block = activation_bytes(model, objective, dataclasses.replace(trainer, activation_checkpointing=False),
                                 mdm)["blocks"] // model.n_layers
        assert block - parts["blocks"] // model.n_layers <= parts["recompute"] <= block


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_key_padding_mask_is_saved_as_one_bias_per_block(checkpointing):
    """MDM's random-length cuts: SDPA saves the mask as a [B, 1, T, T] bias in every layer."""
    model = dataclasses.replace(CONFIGS["gqa"], causal=False)
    batch, length = 2, 32
    trainer = TrainerConfig(seq_len=length, micro_batch_size=batch, global_batch_size=batch, precision="32-true",
                            accelerator="cpu", activation_checkpointing=checkpointing)
    module = _module(model, "mdm")
    if checkpointing:
        parallelize(module.model, Parallelism(activation_checkpointing=True))
    tokens = torch.randint(0, 100, (batch, length))
    keep = torch.arange(length)[None, :] < torch.tensor([[length], [20]])
    saved = _saved_bytes(lambda: module.model.hidden_states(tokens, keep), module, model.vocab_size)
    parts = activation_bytes(model, "mdm", trainer, MDMConfig(random_length_prob=0.01))
    backbone = ("embedding", "rotary", "blocks", "mask", "final_norm")
    assert saved["activations"] == sum(parts[p] for p in backbone)


def test_stratified_masks_stay_below_the_rows_bound():
    batch, length = 4, 64
    trainer = TrainerConfig(seq_len=length, micro_batch_size=batch, global_batch_size=batch)
    mdm = MDMConfig(t_sampling="stratified")
    bound = head_rows("mdm", trainer, mdm)
    assert length * (batch + 1) / 2 < bound < batch * length
    assert head_rows("mdm", trainer, MDMConfig(t_sampling="uniform")) == batch * length == head_rows("arm", trainer)
    generator = torch.Generator().manual_seed(0)
    counts = [int(mdm_forward_process(torch.zeros(batch, length, dtype=torch.long), 1, generator=generator,
                                      t_sampling="stratified").masked.sum()) for _ in range(3000)]
    assert max(counts) <= bound
    assert max(counts) > 0.9 * length * (batch + 1) / 2  # the bound is about as tight as the mean allows


CPU_STEPS = [("arm", "32-true", False, 0), ("arm", "bf16-mixed", False, 64), ("mdm", "32-true", True, 0),
             ("mdm", "bf16-mixed", False, 0)]


@pytest.mark.parametrize("objective, precision, checkpointing, chunk", CPU_STEPS)
def test_a_cpu_training_step_peaks_below_the_plan(objective, precision, checkpointing, chunk):
    """tests/bench/step_memory.py on CPU: every storage an op creates, live at once, at most the plan."""
    model = dataclasses.replace(CONFIGS["gqa"], vocab_size=1001, max_seq_len=128, causal=objective == "arm")
    trainer = TrainerConfig(seq_len=128, micro_batch_size=4, global_batch_size=4, precision=precision,
                            accelerator="cpu", activation_checkpointing=checkpointing, loss_chunk_size=chunk)
    result = step_peak(model, objective, trainer, MDMConfig(eps=1.0, random_length_prob=0.0), device="cpu")
    assert result["plan"].headroom == 0
    assert 0.7 < result["ratio"] <= 1.0, result


def test_fsdp2_shards_the_state_and_autocast_keeps_the_residual_stream_in_fp32():
    model = preset("arm-1b")
    trainer = TrainerConfig(seq_len=4096, micro_batch_size=4, devices=8, num_nodes=4, accelerator="gpu",
                            global_batch_size=1280, precision="bf16-mixed")
    ddp = plan_memory(model, "arm", dataclasses.replace(trainer, strategy="ddp"))
    fsdp2 = plan_memory(model, "arm", dataclasses.replace(trainer, strategy="fsdp2"))
    assert ddp.parameters + ddp.gradients + ddp.optimizer == pytest.approx(16 * model.total_params, rel=1e-6)
    assert fsdp2.optimizer == pytest.approx(ddp.optimizer / 32, rel=1e-2)  # FSDP2 pads 5634 FFN rows to 32 x 177
    assert fsdp2.activations < ddp.activations  # bf16 residuals and one norm output per projection
    assert ddp.headroom == fsdp2.headroom == 4 * GIB


def test_scaling_1b_fits_an_h100_without_recomputation(tmp_path, capsys):
    """The dry run shows each run's GiB (the grid's choice, argued in its YAML) within the 80 GB budget."""
    assert launch.main(["--grid", "scaling_1b", "--runs-dir", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1].split()
    assert "mem" in header and "GiB" in header
    assert "checked against 74.5 GiB (gpu_memory_gb: 80)" in out
    assert launch.main(["--grid", "scaling_1b", "--runs-dir", str(tmp_path), "--dry-run", "--format", "json",
                        "branching=true", "schedule.kind=cooldown", "eval.at_fractions=[1.0]"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r.get("role") for r in rows} == {"branch", "trunk"}
    memory = {r["model"]: r["memory_gib_per_device"] for r in rows}
    assert set(memory) == {"arm-1b", "llada-1b"} and all(30 < gib < 60 for gib in memory.values()), memory
    assert launch.main(["--grid", "scaling_1b", "--runs-dir", str(tmp_path), "--dry-run",
                        "trainer.strategy=ddp", "trainer.loss_chunk_size=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run ") and "GiB per device" in err and "\n" not in err
    for fix in ("trainer.activation_checkpointing=true", "trainer.strategy=fsdp2", "trainer.micro_batch_size=",
                "trainer.loss_chunk_size=4096", "more GPUs"):
        assert fix in err, err
    assert not (tmp_path / "scaling_1b").exists()


def test_scaling_8b_fits_with_recomputation_and_not_without(tmp_path, capsys):
    """The 7B/8B grid's profile accepts its plan; the same grid without activation checkpointing is
    refused, the fix named."""
    assert launch.main(["--grid", "scaling_8b", "--runs-dir", str(tmp_path), "--dry-run", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    memory = {r["model"]: r["memory_gib_per_device"] for r in rows}
    assert set(memory) == {"arm-7b", "llada-8b"} and all(gib < 74.5 for gib in memory.values()), memory
    assert launch.main(["--grid", "scaling_8b", "--runs-dir", str(tmp_path), "--dry-run",
                        "trainer.activation_checkpointing=false"]) == 2
    out, err = capsys.readouterr()
    assert "mem GiB" in out.splitlines()[1]
    assert "trainer.activation_checkpointing=true" in err and "llada-8b" in err
