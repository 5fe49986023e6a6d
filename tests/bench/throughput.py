"""Throughput of one training step of ARM and MDM: tokens/s, MFU, peak memory against the memory plan.

One step is what a run does per micro-batch at gradient accumulation 1: ``LanguageModel.loss``
forward under autocast (bf16-mixed), backward, gradient clipping at ``optim.grad_clip`` and the AdamW
step of ``LanguageModel.configure_optimizers``, on one device, without a Lightning Trainer. Each
configuration is timed for ARM and MDM in a fresh model and optimizer, and varies one thing at a time
from a base (``--grid factors``) or all combinations (``--grid full``):

- attention: flash-attn (when installed; ``models.transformer`` uses it on CUDA in bf16) or SDPA
  (``models.transformer.sdpa_only``);
- compile: ``torch.compile`` per block, and checkpointing: activation checkpointing per block, both
  through ``models.parallelize.parallelize``;
- chunk: ``loss_chunk_size``, the output head's loss in chunks of rows (0: all logits at once).

Columns: the median step time (robust to a shared machine's load) and tokens/s; MFU by the PaLM
accounting of ``models.flops.model_flops_per_token`` (6N plus attention) and by 6N alone
(``training_flops_per_token``, the study's C = 6ND), against ``--peak-tflops`` (989: an H100 SXM's
dense bf16; '-' on a CPU unless given); peak memory (``torch.cuda.max_memory_allocated``; on a CPU
the weights and AdamW states plus what the ops of a step allocate, '-' when compiled) next to the prediction of ``sweeps.memory.plan_memory`` without its headroom; and
the MDM step time over the ARM step time of the same configuration. MDM sequences are not cut to a
random length unless ``--random-length-prob`` says so (runs cut 1%, each cut step attends with a mask
and recompiles a compiled block). A configuration that runs out of memory prints OOM and the next one
runs; one that fails otherwise prints its error (traceback on stderr). Rows print as they finish;
configurations that would start after ``--time-limit`` seconds are skipped.

    python tests/bench/throughput.py [--device cuda|cpu] [--shape full|small] [--steps 5] [--warmup 2]
        [--peak-tflops 989] [--grid factors|full] [--time-limit 480]

``--shape full``: arm-1b and llada-1b (LLaDA Table 5, vocabulary 126,464) at 4 x 4096 tokens, chunk
4096, the default on CUDA. ``--shape small``, the default on a CPU: cpu-1m with a 4096-token
vocabulary at 2 x 256 tokens, chunk 128, in float32 (a CPU's bf16 autocast measures its emulation).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.config import ModelConfig, preset  # noqa: E402
from models.flops import model_flops_per_token, training_flops_per_token  # noqa: E402

SHAPES = {
    "full": dict(arm="arm-1b", mdm="llada-1b", overrides={}, seq_len=4096, micro_batch=4, chunk=4096),
    "small": dict(arm="cpu-1m", mdm="cpu-1m", overrides=dict(vocab_size=4096), seq_len=256, micro_batch=2, chunk=128),
}
GIB = 2**30


@dataclass(frozen=True)
class Setup:
    attention: str  # "flash" or "sdpa"
    compile: bool
    checkpointing: bool
    loss_chunk_size: int

    def label(self) -> list[str]:
        return [self.attention, "on" if self.compile else "off", "on" if self.checkpointing else "off",
                str(self.loss_chunk_size)]


def setups(grid: str, flash: bool, chunk: int) -> list[Setup]:
    """The configurations to time, cheapest and most telling first (compiled ones last: they take the
    longest to start)."""
    attentions = ["flash", "sdpa"] if flash else ["sdpa"]
    if grid == "full":
        return [Setup(a, c, k, s) for c in (False, True) for a in attentions for k in (False, True) for s in (chunk, 0)]
    base = Setup(attentions[0], False, False, chunk)
    varied = [base, dataclasses.replace(base, loss_chunk_size=0)]
    if flash:
        varied.append(dataclasses.replace(base, attention="sdpa"))
    varied += [dataclasses.replace(base, checkpointing=True), dataclasses.replace(base, compile=True),
               dataclasses.replace(base, compile=True, checkpointing=True)]
    return varied


def mdm_settings(args) -> dict:
    return dict(random_length_prob=args.random_length_prob)


def flash_available() -> bool:
    from models import transformer

    return transformer.flash_attn_func is not None


def attention_context(setup: Setup):
    import contextlib

    from models.transformer import sdpa_only

    return sdpa_only() if setup.attention == "sdpa" else contextlib.nullcontext()


def gib(value: float) -> str:
    """Three significant figures: the small CPU shape needs a few MiB, the full one tens of GiB."""
    return f"{value:.3g}"


def cpu_step_peak(step, module, optimizer) -> int | None:
    """A CPU has no allocator counter: the weights and AdamW states, plus the peak of the storages the
    ATen ops of one more step create (``step_memory.LiveBytes``). None for a compiled model, whose
    fused kernels the dispatch mode does not see one by one."""
    if any(getattr(block, "_compiled_call_impl", None) is not None for block in module.model.layers):
        return None
    from step_memory import LiveBytes  # tests/bench/step_memory.py

    state = [*module.model.parameters(),
             *(v for values in optimizer.state.values() for v in values.values() if isinstance(v, torch.Tensor))]
    with LiveBytes(known=state) as counter:
        step()
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state}
    return sum(storages.values()) + counter.peak


def time_step(objective: str, config: ModelConfig, setup: Setup, args, device: torch.device) -> tuple[float, int | None]:
    """The median seconds of a training step and the peak bytes allocated (None off CUDA), in a fresh
    model."""
    from models.lightning import LanguageModel
    from models.parallelize import Parallelism, parallelize

    tokens_per_step = args.micro_batch * args.seq_len
    with torch.device(device):
        module = LanguageModel(
            dataclasses.asdict(config), objective, total_steps=10**6, tokens_per_step=tokens_per_step,
            mask_id=config.vocab_size - 1 if objective == "mdm" else None, mdm=mdm_settings(args),
            loss_chunk_size=setup.loss_chunk_size,
        )
    parallelize(module.model, Parallelism(activation_checkpointing=setup.checkpointing, compile=setup.compile))
    optimizer = module.configure_optimizers()["optimizer"]
    generator = torch.Generator(device=device).manual_seed(0)
    batch = {"input_ids": torch.randint(0, config.vocab_size - 1, (args.micro_batch, args.seq_len), device=device,
                                        generator=generator)}
    autocast = args.precision == "bf16-mixed"
    grad_clip = module.optim_config.grad_clip

    def step():
        with attention_context(setup):  # backward too: checkpointed blocks replay their forward there
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = module.loss(batch, generator)
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(module.model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    synchronize()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else cpu_step_peak(step, module, optimizer)
    return statistics.median(seconds), peak


def planned_gib(config: ModelConfig, objective: str, setup: Setup, args) -> float | None:
    """The memory plan of this configuration in GiB without its headroom (``max_memory_allocated``
    sees neither the CUDA context nor the allocator's fragmentation), or None where it cannot answer."""
    from models.recipe import MDMConfig
    from studies.config import TrainerConfig
    from sweeps.memory import GIB, plan_memory

    values = dict(seq_len=args.seq_len, global_batch_size=args.micro_batch, micro_batch_size=args.micro_batch,
                  precision=args.precision, devices=1, accelerator="cpu" if args.device == "cpu" else "gpu",
                  activation_checkpointing=setup.checkpointing,
                  loss_chunk_size=setup.loss_chunk_size, compile=setup.compile)
    known = {f.name for f in dataclasses.fields(TrainerConfig)}
    try:
        trainer = TrainerConfig(**{k: v for k, v in values.items() if k in known})
        plan = plan_memory(config, objective, trainer, MDMConfig(**mdm_settings(args)))
        return (plan.total - plan.headroom) / GIB
    except Exception as exc:  # a plan that cannot answer must not stop the benchmark
        print(f"memory plan: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


COLUMNS = ["objective", "model", "attention", "compile", "ckpt", "chunk", "step s", "tokens/s",
           "MFU PaLM", "MFU 6N", "peak GiB", "plan GiB", "MDM/ARM"]
WIDTHS = [9, 9, 9, 7, 4, 5, 7, 9, 8, 7, 8, 8, 7]


def print_row(values: list[str]) -> None:
    print("  ".join(str(v).rjust(w) if i >= 6 else str(v).ljust(w) for i, (v, w) in enumerate(zip(values, WIDTHS))),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: full on cuda, small on cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="dense peak of the device for MFU (default: 989 on cuda, an H100's bf16; none on cpu)")
    parser.add_argument("--grid", choices=["factors", "full"], default="factors",
                        help="factors: one change at a time from a base; full: every combination")
    parser.add_argument("--precision", choices=["bf16-mixed", "32-true"], default=None,
                        help="default: bf16-mixed on cuda, 32-true on cpu")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--micro-batch", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="loss_chunk_size of the chunked configurations")
    parser.add_argument("--random-length-prob", type=float, default=0.0,
                        help="MDM sequences cut to a random length (runs: 0.01); 0 times the uncut step, "
                             "whose attention needs no mask")
    parser.add_argument("--time-limit", type=float, default=480.0,
                        help="seconds after which no further configuration starts (a compiled one: 120 s earlier)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    shape = SHAPES[args.shape or ("full" if on_cuda else "small")]
    args.seq_len = args.seq_len or shape["seq_len"]
    args.micro_batch = args.micro_batch or shape["micro_batch"]
    args.precision = args.precision or ("bf16-mixed" if on_cuda else "32-true")
    chunk = shape["chunk"] if args.chunk is None else args.chunk
    peak_tflops = args.peak_tflops if args.peak_tflops is not None else (989.0 if on_cuda else None)
    flash = on_cuda and args.precision == "bf16-mixed" and flash_available()
    import torch._dynamo as dynamo

    for name in ("cache_size_limit", "recompile_limit"):  # one compiled block per (objective, setup)
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, 64)

    configs = {
        objective: preset(shape[objective], causal=objective == "arm",
                          **dict(shape["overrides"], max_seq_len=max(args.seq_len, 1)))
        for objective in ("arm", "mdm")
    }
    tokens = args.micro_batch * args.seq_len
    print(f"device {torch.cuda.get_device_name(device) if on_cuda else 'cpu'} ({device}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, flash-attn {'installed' if flash_available() else 'not installed'}"
          f"{'' if flash or not flash_available() else ' (unused: needs cuda bf16)'}")
    print(f"micro-batch {args.micro_batch} x {args.seq_len} tokens, {args.precision}, "
          f"{args.warmup} warm-up + {args.steps} timed steps (forward, backward, grad clip, AdamW), "
          f"MDM random_length_prob {args.random_length_prob:g}")
    for objective, config in configs.items():
        print(f"  {objective}: {config.name}, N = {config.non_embedding_params:,} non-embedding of "
              f"{config.total_params:,}, vocabulary {config.vocab_size:,}; FLOPs/token PaLM "
              f"{model_flops_per_token(config, args.seq_len):.3e}, 6N {training_flops_per_token(config):.3e}")
    print(f"MFU against {f'{peak_tflops:g} TFLOP/s' if peak_tflops else '- (no --peak-tflops given)'}; "
          f"peak memory: {'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'weights, AdamW states and the storages ATen ops create (step_memory.LiveBytes)'}; plan: sweeps.memory.plan_memory(...) less its headroom\n")
    print_row(COLUMNS)

    start = time.perf_counter()
    for setup in setups(args.grid, flash, chunk):
        arm_seconds = None
        for objective, config in configs.items():
            row = [objective, config.name, *setup.label()]
            plan = planned_gib(config, objective, setup, args)
            plan_text = "-" if plan is None else gib(plan)
            elapsed = time.perf_counter() - start
            if elapsed > args.time_limit - (120 if setup.compile else 0):
                print_row(row + ["skipped (time limit)", "", "", "", "", plan_text, ""])
                continue
            status = None
            try:
                seconds, peak = time_step(objective, config, setup, args, device)
            except Exception as exc:  # noqa: BLE001 - one failed configuration must not stop the others
                if is_out_of_memory(exc):
                    status = "OOM"
                else:
                    status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''}"
                    print(f"--- {objective} {setup}:", file=sys.stderr)
                    traceback.print_exc(limit=8, file=sys.stderr)
            release(device)
            if status is not None:
                print_row(row + [status, "", "", "", "", plan_text, ""])
                continue
            tokens_per_second = tokens / seconds
            mfu = ["-", "-"]
            if peak_tflops:
                mfu = [f"{100 * tokens_per_second * flops / (peak_tflops * 1e12):.1f}%"
                       for flops in (model_flops_per_token(config, args.seq_len), training_flops_per_token(config))]
            ratio = ""
            if objective == "arm":
                arm_seconds = seconds
            elif arm_seconds:
                ratio = f"{seconds / arm_seconds:.2f}"
            print_row(row + [f"{seconds:.3f}", f"{tokens_per_second:,.0f}", *mfu,
                             "-" if peak is None else gib(peak / GIB), plan_text, ratio])
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
