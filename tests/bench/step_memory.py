"""Peak memory of a training step against the plan of ``sweeps/memory.py``.

    python tests/bench/step_memory.py --model arm-1b --objective arm --micro-batch 1 --seq-len 4096 \\
        --precision bf16-mixed [--activation-checkpointing] [--loss-chunk-size 4096]

:func:`step_peak` trains with ``LanguageModel``'s own loss and optimizer, in the regime of the worst
micro-batch of an accumulation: the AdamW states exist (one optimizer step taken) and so do the
gradients (one micro-batch accumulated), then one more micro-batch, gradient clipping and an
optimizer step are measured. On a GPU the peak is ``torch.cuda.max_memory_allocated``; a CPU has no
such counter, so there every storage an ATen op creates is counted until it is freed (a
``TorchDispatchMode``; scratch buffers inside a kernel are not seen). One process, strategy ``auto``
on one device: the plan's DDP buckets and FSDP2 buffers do not arise, and its headroom covers what
the allocator's counter does not see, so the measured peak is compared with the plan's total less
the headroom. A throughput benchmark calls :func:`step_peak` with its own configs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.config import ModelConfig, preset  # noqa: E402
from models.recipe import MDMConfig  # noqa: E402
from studies.config import TrainerConfig  # noqa: E402
from sweeps.memory import GIB, plan_memory  # noqa: E402


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages ATen ops create inside the block, live now (``live``) and at most
    (``peak``). Storages that existed before (``known``) are not counted when an op returns a view
    of them or writes into them."""

    def __init__(self, known=()):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()
        for tensor in known:
            self._track(tensor.untyped_storage(), count=False)

    def _track(self, storage, count: bool = True) -> None:
        pointer = storage.data_ptr()
        if pointer in self._seen or storage.nbytes() == 0:
            return
        self._seen.add(pointer)
        size = storage.nbytes() if count else 0
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, pointer, size)

    def _free(self, pointer: int, size: int) -> None:
        self._seen.discard(pointer)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                self._track(tensor.untyped_storage())
        return out


def _module(model: ModelConfig, objective: str, trainer: TrainerConfig, mdm: MDMConfig):
    from models.lightning import LanguageModel
    from models.parallelize import Parallelism, parallelize

    module = LanguageModel(dataclasses.asdict(model), objective, total_steps=100,
                           tokens_per_step=trainer.micro_batch_size * trainer.seq_len,
                           mask_id=model.vocab_size - 1 if objective == "mdm" else None,
                           mdm=dataclasses.asdict(mdm), loss_chunk_size=trainer.loss_chunk_size)
    if trainer.activation_checkpointing:
        parallelize(module.model, Parallelism(activation_checkpointing=True))
    return module


def step_peak(model: ModelConfig, objective: str, trainer: TrainerConfig, mdm: MDMConfig | None = None, *,
              device: str = "cuda", seed: int = 0) -> dict:
    """Measured peak bytes of a training step against ``sweeps.memory.plan_memory`` (module docstring).

    Returns ``measured``, ``planned`` (the plan's total less its headroom), their ``ratio`` and the
    ``plan``. ``trainer`` must describe one device under strategy ``auto``."""
    if trainer.devices * trainer.num_nodes != 1 or trainer.strategy != "auto":
        raise ValueError("step_peak measures one process: trainer.strategy=auto on one device")
    mdm = mdm or MDMConfig()
    torch.manual_seed(seed)
    module = _module(model, objective, trainer, mdm).to(device)
    optimizer = module.configure_optimizers()["optimizer"]
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = {"input_ids": torch.randint(0, model.vocab_size - 1, (trainer.micro_batch_size, trainer.seq_len),
                                        generator=generator, device=device)}
    autocast = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
                if trainer.precision in ("bf16-mixed", "bf16") else contextlib.nullcontext())

    def micro_batch():
        with autocast:
            loss = module.loss(batch, generator)
        loss.backward()

    def optimizer_step():
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1.0)
        optimizer.step()

    micro_batch()
    optimizer_step()
    optimizer.zero_grad(set_to_none=True)
    micro_batch()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        micro_batch()
        optimizer_step()
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated()
    else:
        known = [*module.model.parameters(), *(p.grad for p in module.model.parameters() if p.grad is not None),
                 *(v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)),
                 batch["input_ids"]]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage() for t in known}
        baseline = sum(s.nbytes() for s in storages.values())
        with LiveBytes(known) as live:
            micro_batch()
            optimizer_step()
        measured = baseline + live.peak
    plan = plan_memory(model, objective, trainer, mdm)
    planned = plan.total - plan.headroom
    return {"measured": measured, "planned": planned, "ratio": measured / planned, "plan": plan}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--objective", choices=("arm", "mdm"), default="arm")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on a GPU, 32-true on a CPU")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--loss-chunk-size", type=int, default=0)
    parser.add_argument("--t-sampling", choices=("uniform", "stratified"), default="uniform")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    model = preset(args.model, causal=args.objective == "arm", max_seq_len=max(args.seq_len, 1))
    trainer = TrainerConfig(seq_len=args.seq_len, micro_batch_size=args.micro_batch,
                            global_batch_size=args.micro_batch, accelerator="gpu" if gpu else "cpu",
                            precision=args.precision or ("bf16-mixed" if gpu else "32-true"),
                            activation_checkpointing=args.activation_checkpointing,
                            loss_chunk_size=args.loss_chunk_size)
    result = step_peak(model, args.objective, trainer, MDMConfig(t_sampling=args.t_sampling), device=args.device)
    print(f"{args.model} {args.objective}, micro-batch {args.micro_batch} x {args.seq_len}, {trainer.precision}, "
          f"activation checkpointing {args.activation_checkpointing}, loss chunk {args.loss_chunk_size}, {args.device}")
    for name, value in result["plan"].parts():
        print(f"  plan {name:12s} {value / GIB:8.3f} GiB")
    print(f"  measured peak {result['measured'] / GIB:.3f} GiB, planned (less headroom) "
          f"{result['planned'] / GIB:.3f} GiB, ratio {result['ratio']:.3f}")


if __name__ == "__main__":
    main()
