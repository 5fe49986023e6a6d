"""Per-device memory of one training step, planned from the configs alone (no torch).

The planner checks every run against its cluster profile's ``gpu_memory_gb`` before anything is
submitted. The plan follows the training code tensor by tensor:

- **State** (``state_bytes``): fp32 parameters, gradients and AdamW's ``exp_avg`` and
  ``exp_avg_sq``, plus the float32 scalar ``step`` torch's AdamW keeps per parameter tensor: 16 bytes
  per parameter, the mixed-precision Adam state of ZeRO (Rajbhandari et al. 2020, Sec. 3.1: 2 + 2 +
  12 bytes; here the compute copies of the weights are transient, and the gradients fp32). Under
  ``ddp`` (or ``auto`` on several devices) every rank holds all of it; under ``fsdp2`` each parameter
  is sharded along dim 0 over the dp = devices x num_nodes ranks (ZeRO-3; Zhao et al. 2023, PyTorch
  FSDP). FSDP2 pads dim 0 to a multiple of dp (``_fsdp_param.py``: every rank allocates chunk 0 of
  ``torch.chunk``, ceil(dim0 / dp) rows), and so do its gradients (views into the padded
  reduce-scatter output); AdamW's states are ``zeros_like`` the unpadded local shard, at most
  ceil(dim0 / dp) rows on rank 0, the rank planned.
- **Activations** (``activation_bytes``): the tensors autograd saves for the backward pass of one
  micro-batch, enumerated per block as Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models", Sec. 4.1) do for GPT, but for this block: RMSNorm (its fp32 input,
  1/rms per row, its normalised output), the inputs of the q/k/v, output and SwiGLU projections,
  rotated q and k, v, the attention output and its logsumexp (a fused kernel, FlashAttention (Dao
  et al. 2022) or memory-efficient SDPA: no T x T matrix), and w1 x, w3 x, silu(w1 x) and the gated
  product. Under autocast (``bf16-mixed`` with ddp/auto) the residual stream and the norms stay fp32
  and every projection saves its own bf16 cast of its input; under fsdp2's bf16 policy everything but
  the norms' internals is bf16. With activation checkpointing (Chen et al. 2016) a block keeps only
  its input, and one block's saved set exists again while it is recomputed.
- **Output head** (``output_head_bytes``): the logits and their gradients, 12 bytes per row and
  vocabulary entry at the loss's peak (below), for B x T rows (ARM) or the masked rows (MDM,
  ``head_rows``), or ``trainer.loss_chunk_size`` rows at a time (``models/linear_cross_entropy.py``),
  plus the head weight's gradient in flight.
- **Transient**: the weight copies a step computes with and the communication buffers (below), or
  what the optimizer step adds once activations are freed.
- **Headroom**: ``GPU_HEADROOM`` (4 GiB) on a GPU: about 1 GiB for the CUDA context and the
  workspaces of cuBLAS and NCCL, which ``torch.cuda.max_memory_allocated`` does not see, and 3 GiB
  (about 4 % of an 80 GB device) for the caching allocator's fragmentation. None on a CPU
  (``trainer.accelerator: cpu``).

The sum errs high: activations, logits and the optimizer's temporaries never coexist in full, and
the logits' 12 bytes are the backward pass's peak. ``tests/bench/step_memory.py`` measures a step
against it (``torch.cuda.max_memory_allocated`` on a GPU); on a CPU, steps of a small model peak at
0.96 to 0.99 of the plan where every row is scored and nothing recomputed, lower with recomputation
or an MDM's masked rows (0.56 to 0.88). It assumes eager execution (``trainer.compile`` fuses and
usually saves less) and a fused attention kernel; with a key-padding mask (MDM's
``random_length_prob`` cuts) SDPA's memory-efficient kernel also saves the mask as a [B, 1, T, T]
bias per layer, which is counted. On CUDA such a masked batch repeats the key and value heads to
the query heads before SDPA (``models/transformer.py``: the memory-efficient kernel takes grouped
heads only in some torch releases, and the math fallback would keep [B, H, T, T] scores); the
repeated keys and values, n_heads / n_kv_heads times larger, are not counted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from models.config import ModelConfig
from models.objective_names import MDM
from models.recipe import MDMConfig
from studies.config import TrainerConfig

GIB = 2**30
GB = 10**9  # the unit of a profile's gpu_memory_gb
GPU_HEADROOM = 4 * GIB
# Bytes of the output head per logit at the loss's peak, measured on CPU for fp32, bf16 and autocast
# (tests/sweeps/test_memory.py): log-softmax's fp32 output, saved for backward, its incoming gradient
# and the gradient of the fp32 logits, 4 + 4 + 4. The forward's compute-dtype logits and their fp32
# copy (2 + 4, or 4 in fp32) are gone by then.
LOGIT_BYTES = 12
TOKEN_BYTES = 8  # int64 token ids and gather indices
STEP_BYTES = 4  # AdamW's per-tensor float32 step
# Probability that one micro-batch's masked rows exceed the stratified bound (``head_rows``): below
# one in 10^4 over the 3e7 micro-batches of a 1e23-FLOP run of 1B parameters.
STRATIFIED_TAIL = 1e-12


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per device at the peak of a training step (the module docstring says what each holds).

    ``transient``: under autocast, the bf16 weight casts saved for the backward pass; under FSDP2,
    the root's unsharded parameters (embedding, final norm, output head; never resharded after
    forward) and, per block, two unsharded blocks plus a third's all-gather output and one block's
    reduce-scatter (its unsharded gradient and the fp32 input), or at the end of the backward pass
    the root's reduce-scatter; under DDP, its gradient buckets (one fp32 copy of every gradient:
    ``gradient_as_bucket_view`` is off). The optimizer step runs after the activations and logits are
    freed: what its foreach temporaries (one fp32 copy of the local parameters) need beyond those is
    added here too. ``headroom``: ``GPU_HEADROOM`` on a GPU, else 0."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int
    output_head: int
    transient: int
    headroom: int

    @property
    def total(self) -> int:
        return sum(value for _, value in self.parts())

    @property
    def gib(self) -> float:
        return self.total / GIB

    def parts(self) -> list[tuple[str, int]]:
        return [("parameters", self.parameters), ("gradients", self.gradients), ("optimizer", self.optimizer),
                ("activations", self.activations), ("output_head", self.output_head),
                ("transient", self.transient), ("headroom", self.headroom)]


@dataclass(frozen=True)
class _Dtypes:
    """Bytes per element of what a step holds, as ``studies.strategy.lightning_strategy`` runs it."""

    state: int  # parameters, gradients, AdamW states
    compute: int  # projection outputs, attention, logits
    residual: int  # embedding output, residual stream, norm outputs
    autocast: bool  # fp32 weights cast to the compute dtype per projection
    gathered: int  # FSDP2's unsharded parameters (param_dtype, else the state's dtype)


def _dtypes(trainer: TrainerConfig) -> _Dtypes:
    precision, fsdp2 = trainer.precision, trainer.strategy == "fsdp2"
    if precision in ("32-true", "32"):
        return _Dtypes(4, 4, 4, False, 4)
    if precision in ("64-true", "64"):
        return _Dtypes(8, 8, 8, False, 8)
    if precision in ("bf16-true", "16-true"):
        return _Dtypes(2, 2, 2, False, 2)
    if fsdp2 and precision == "bf16-mixed":  # FSDP2's MixedPrecisionPolicy(param_dtype=bf16), no autocast
        return _Dtypes(4, 2, 2, False, 2)
    return _Dtypes(4, 2, 4, True, 4)  # Lightning's autocast over fp32 weights


def data_parallel_size(trainer: TrainerConfig) -> int:
    return trainer.devices * trainer.num_nodes


def _uses_ddp(trainer: TrainerConfig) -> bool:
    """Lightning's ``auto`` picks DDP on several devices."""
    return trainer.strategy == "ddp" or (trainer.strategy == "auto" and data_parallel_size(trainer) > 1)


def parameter_shapes(model: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Name and shape of every parameter tensor of ``models.transformer.Transformer``, in
    ``named_parameters`` order; a tied output head is the embedding and is listed once."""
    d, kv, ffn, vocab = model.d_model, model.kv_dim, model.ffn_dim, model.vocab_size
    shapes = [("embed.weight", (vocab, d))]
    for i in range(model.n_layers):
        block = f"layers.{i}."
        shapes += [
            (block + "attention_norm.weight", (d,)),
            (block + "attention.wq.weight", (d, d)),
            (block + "attention.wk.weight", (kv, d)),
            (block + "attention.wv.weight", (kv, d)),
            (block + "attention.wo.weight", (d, d)),
            (block + "ffn_norm.weight", (d,)),
            (block + "feed_forward.w1.weight", (ffn, d)),
            (block + "feed_forward.w3.weight", (ffn, d)),
            (block + "feed_forward.w2.weight", (d, ffn)),
        ]
    shapes.append(("norm.weight", (d,)))
    if not model.tie_embeddings:
        shapes.append(("output.weight", (vocab, d)))
    return shapes


def shard_rows(dim0: int, data_parallel: int, rank: int = 0) -> int:
    """Rows of dim 0 that ``rank`` holds under FSDP2: chunk ``rank`` of ``torch.chunk``, whose chunks
    have ceil(dim0 / dp) rows until the rows run out (later ranks may hold fewer, or none)."""
    rows = -(-dim0 // data_parallel)
    return max(0, min(rows, dim0 - rank * rows))


def state_bytes(model: ModelConfig, strategy: str, data_parallel_size: int, *, rank: int = 0,
                element_bytes: int = 4) -> dict[str, int]:
    """Bytes of ``rank``'s parameters, gradients and AdamW states (``exp_avg``, ``exp_avg_sq``, the
    float32 ``step`` per tensor) after an optimizer step, in ``element_bytes`` per element (fp32).

    ``fsdp2`` shards dim 0 over ``data_parallel_size`` ranks: parameters and gradients are allocated
    padded to ceil(dim0 / dp) rows on every rank, AdamW's states at the rank's own rows (rank 0 holds
    the most). Any other strategy keeps everything whole on every rank."""
    parameters = optimizer_elements = tensors = 0
    for _, shape in parameter_shapes(model):
        rest = math.prod(shape[1:])
        if strategy == "fsdp2":
            padded = shard_rows(shape[0], data_parallel_size, 0) * rest
            local = shard_rows(shape[0], data_parallel_size, rank) * rest
        else:
            padded = local = math.prod(shape)
        parameters += padded
        optimizer_elements += 2 * local
        tensors += 1
    return {"parameters": parameters * element_bytes, "gradients": parameters * element_bytes,
            "optimizer": optimizer_elements * element_bytes + tensors * STEP_BYTES}


def head_rows(objective: str, trainer: TrainerConfig, mdm: Optional[MDMConfig] = None) -> int:
    """Rows of the output head in one micro-batch at worst (B = micro_batch_size, T = seq_len).

    ARM: all B T positions. MDM: the masked positions. With ``t_sampling: uniform`` every t of a
    micro-batch can lie near 1, so up to B T. With ``stratified``, t_i = (u + pi(i)) / B, so the
    masking probabilities p_i = (1 - eps) t_i + eps sum to (1 - eps)(u + (B - 1) / 2) + B eps, below
    S = (B + 1) / 2 + eps (B - 1) / 2 for u < 1: the expected masked count is below T S. The count is a
    sum of B T independent Bernoulli draws, so by Hoeffding's inequality it exceeds T S + k with
    probability below exp(-2 k^2 / (B T)); k = sqrt(B T ln(1 / STRATIFIED_TAIL) / 2) bounds it for
    every micro-batch of any run in practice. Random-length cuts and SFT prompts only remove rows."""
    batch, length = trainer.micro_batch_size, trainer.seq_len
    every = batch * length
    mdm = mdm or MDMConfig()
    if objective != MDM or mdm.t_sampling != "stratified":
        return every
    mean_bound = length * ((batch + 1) / 2 + mdm.eps * (batch - 1) / 2)
    spread = math.sqrt(every * math.log(1 / STRATIFIED_TAIL) / 2)
    return min(every, math.ceil(mean_bound + spread))


def _masked_attention(objective: str, mdm: MDMConfig) -> bool:
    """Whether some micro-batches carry a key-padding mask (MDM pretraining's random-length cuts)."""
    return objective == MDM and mdm.random_length_prob > 0


def block_activation_bytes(model: ModelConfig, trainer: TrainerConfig, *, masked_attention: bool = False) -> int:
    """What one block saves for its backward pass, micro-batch B x T (module docstring)."""
    dt = _dtypes(trainer)
    batch, length = trainer.micro_batch_size, trainer.seq_len
    tokens = batch * length
    d, kv, ffn = model.d_model, model.kv_dim, model.ffn_dim
    e, r = dt.compute, dt.residual
    norms = 2 * ((4 + r) * tokens * d + 4 * tokens)  # fp32 input, 1/rms, normalised output
    if dt.autocast and r != e:
        inputs = (3 + 2) * e * tokens * d  # a cast of the norm's output per projection: q, k, v; w1, w3
    else:
        inputs = 2 * r * tokens * d  # each norm's output, shared by its projections
    attention = 2 * e * tokens * d + 2 * e * tokens * kv + 4 * batch * model.n_heads * length  # q, out; k, v; lse
    feed_forward = 4 * e * tokens * ffn  # w1 x, w3 x, silu(w1 x), their product
    bias = e * batch * length * length if masked_attention else 0  # the key-padding mask as a float bias
    return norms + inputs + attention + feed_forward + bias


def activation_bytes(model: ModelConfig, objective: str, trainer: TrainerConfig,
                     mdm: Optional[MDMConfig] = None) -> dict[str, int]:
    """Saved activations of one micro-batch by part; their sum is ``MemoryPlan.activations``.

    ``blocks``: every block's saved set, or with activation checkpointing each block's input;
    ``recompute``: one block's saved set while it is recomputed (less its input where that is the
    saved fp32 norm input itself); ``embedding``: the token ids; ``rotary``: cos and sin, shared by
    the layers; ``final_norm``; ``head_input``: what the output head saves of its input (or the
    chunked loss's gradient of it); ``loss``: targets, the MDM gather's mask, indices and weights;
    ``mask``: the boolean key-padding mask a checkpointed block keeps."""
    mdm = mdm or MDMConfig()
    dt = _dtypes(trainer)
    batch, length = trainer.micro_batch_size, trainer.seq_len
    tokens = batch * length
    d, r = model.d_model, dt.residual
    masked = _masked_attention(objective, mdm)
    block = block_activation_bytes(model, trainer, masked_attention=masked)
    block_input = r * tokens * d
    checkpointing = trainer.activation_checkpointing
    rows = head_rows(objective, trainer, mdm)
    if trainer.loss_chunk_size:
        head_input = r * rows * d  # the saved gradient of the hidden rows, in their dtype
    else:
        head_input = (dt.compute if dt.autocast else r) * rows * d
    if objective == MDM:
        loss = tokens  # the boolean mask of the masked rows' gather
        if not trainer.loss_chunk_size:
            # per row: target, p_mask, the [M, 2] indices of masked.nonzero() and the weighted loss;
            # per sequence: its length; and cross-entropy's scalar weight
            loss += (TOKEN_BYTES + 4 + 2 * TOKEN_BYTES + 4) * rows + 4 * batch + 4
    else:
        loss = 0 if trainer.loss_chunk_size else TOKEN_BYTES * tokens + 4  # shifted targets, the scalar weight
    return {
        "embedding": TOKEN_BYTES * tokens,
        "rotary": 2 * 4 * length * model.head_dim,
        "blocks": model.n_layers * (block_input if checkpointing else block),
        "recompute": (block - (block_input if r == 4 else 0)) if checkpointing else 0,
        "mask": batch * length * length if masked and checkpointing else 0,
        "final_norm": (4 + r) * tokens * d + 4 * tokens,
        "head_input": head_input,
        "loss": loss,
    }


def output_head_bytes(model: ModelConfig, objective: str, trainer: TrainerConfig,
                      mdm: Optional[MDMConfig] = None) -> int:
    """Logits and their gradients at the loss's peak, plus the head weight's gradient in flight.

    ``LOGIT_BYTES`` per logit for ``head_rows`` rows, or ``loss_chunk_size`` rows at a time (the
    chunked loss's per-chunk logits, logsumexp and gradient fit in the same 12 bytes). The head's
    [V, d] weight gradient: unchunked, the backward pass computes it in the compute dtype (and casts
    it to fp32 under autocast before accumulating); chunked, an fp32 accumulator lives from the
    forward pass to the backward pass, beside a cast of the weight (autocast) or the gradient's copy
    in the weight's dtype, and the backward pass scales the saved [rows, d] gradient into a new one."""
    dt = _dtypes(trainer)
    rows = head_rows(objective, trainer, mdm)
    chunk = trainer.loss_chunk_size
    at_once = min(chunk, rows) if chunk else rows
    weight = model.vocab_size * model.d_model
    if chunk:
        weight_dtype = dt.gathered if trainer.strategy == "fsdp2" else dt.state
        cast = dt.compute if dt.compute != weight_dtype else 0
        head_weight = weight * (4 + max(cast, weight_dtype)) + dt.residual * rows * model.d_model
    else:
        head_weight = weight * (dt.compute + (4 if dt.autocast else 0))
    return at_once * model.vocab_size * LOGIT_BYTES + head_weight


def _transient(model: ModelConfig, trainer: TrainerConfig, states: dict[str, int], freed: int) -> int:
    """``MemoryPlan.transient``; ``freed``: activations and output head, gone before the optimizer step."""
    dt = _dtypes(trainer)
    total, block = model.total_params, model.params_per_layer
    root = total - model.n_layers * block  # embedding, final norm, output head
    matmul = block - 2 * model.d_model  # a block's projection weights (autocast casts them)
    backward = after = persistent = 0  # beside the activations; once they are freed; throughout
    if dt.autocast:
        cast_blocks = 1 if trainer.activation_checkpointing else model.n_layers
        backward += dt.compute * (cast_blocks * matmul + (0 if trainer.loss_chunk_size else
                                                           model.vocab_size * model.d_model))
    if trainer.strategy == "fsdp2":
        g = dt.gathered
        root_params = g * root
        backward += root_params + block * (4 * g + 4)
        after = root_params + root * (g + 4)  # the root's reduce-scatter, at the end of the backward pass
    elif _uses_ddp(trainer):
        persistent = dt.state * total
    after = max(after, states["parameters"])  # foreach AdamW: one temporary the size of the local parameters
    return persistent + max(backward, after - freed)


def plan_memory(model: ModelConfig, objective: str, trainer: TrainerConfig,
                mdm: Optional[MDMConfig] = None) -> MemoryPlan:
    """The per-device memory of one training step of ``model`` under ``trainer`` (module docstring)."""
    mdm = mdm or MDMConfig()
    dt = _dtypes(trainer)
    strategy = "fsdp2" if trainer.strategy == "fsdp2" else "replicated"
    states = state_bytes(model, strategy, data_parallel_size(trainer), element_bytes=dt.state)
    activations = sum(activation_bytes(model, objective, trainer, mdm).values())
    head = output_head_bytes(model, objective, trainer, mdm)
    return MemoryPlan(
        parameters=states["parameters"],
        gradients=states["gradients"],
        optimizer=states["optimizer"],
        activations=activations,
        output_head=head,
        transient=_transient(model, trainer, states, activations + head),
        headroom=0 if trainer.accelerator == "cpu" else GPU_HEADROOM,
    )


def run_memory(run_config, trainer: Optional[TrainerConfig] = None) -> MemoryPlan:
    """``plan_memory`` of a resolved ``studies.config.RunConfig``, or of it under another ``trainer``."""
    return plan_memory(run_config.model, run_config.objective, trainer or run_config.trainer, run_config.mdm)


def _fixes(run_config, plan: MemoryPlan, budget: int) -> list[str]:
    """Each change that shrinks ``plan``, with the GiB it gives, those that fit ``budget`` first."""
    t = run_config.trainer
    dp = data_parallel_size(t)
    options: list[tuple[str, TrainerConfig]] = []
    smaller = [m for m in range(t.micro_batch_size - 1, 0, -1) if t.global_batch_size % (m * dp) == 0]
    if smaller:
        fits = [m for m in smaller
                if run_memory(run_config, dataclasses.replace(t, micro_batch_size=m)).total <= budget]
        m = fits[0] if fits else smaller[-1]
        options.append((f"trainer.micro_batch_size={m}", dataclasses.replace(t, micro_batch_size=m)))
    if not t.activation_checkpointing:
        options.append(("trainer.activation_checkpointing=true", dataclasses.replace(t, activation_checkpointing=True)))
    if t.strategy != "fsdp2":
        options.append(("trainer.strategy=fsdp2", dataclasses.replace(t, strategy="fsdp2")))
    if not t.loss_chunk_size and plan.output_head >= max(plan.activations, plan.parameters) / 4:
        options.append(("trainer.loss_chunk_size=4096", dataclasses.replace(t, loss_chunk_size=4096)))
    rated = [(name, run_memory(run_config, changed).total) for name, changed in options]
    rated = sorted(((n, total) for n, total in rated if total < plan.total), key=lambda r: (r[1] > budget, r[1]))
    texts = [f"{name} ({total / GIB:.1f} GiB)" for name, total in rated]
    texts.append("more GPUs (fsdp2 shards the states over them)" if t.strategy == "fsdp2" else
                 "more GPUs with trainer.strategy=fsdp2")
    return texts


def fit_error(runs, gpu_memory_gb: Optional[float], profile_name: str) -> Optional[str]:
    """None when every run fits ``gpu_memory_gb`` (or the profile gives none), else one line naming
    the largest run, its GiB against the budget, its largest parts and the fixes, with their GiB."""
    if gpu_memory_gb is None:
        return None
    budget = int(gpu_memory_gb * GB)
    over = [run for run in runs if run.memory.total > budget]  # sweeps.plan.PlannedRun.memory
    if not over:
        return None
    run = max(over, key=lambda r: r.memory.total)
    plan = run.memory
    largest = sorted(((n, v) for n, v in plan.parts() if v), key=lambda p: -p[1])[:3]
    parts = ", ".join(f"{name} {value / GIB:.1f}" for name, value in largest)
    others = f" (and {len(over) - 1} other run(s))" if len(over) > 1 else ""
    t = run.run_config.trainer
    return (f"run {run.name} ({run.key}) needs {plan.gib:.1f} GiB per device{others}, more than the "
            f"{budget / GIB:.1f} GiB (gpu_memory_gb: {gpu_memory_gb:g}) of profile {profile_name} at "
            f"micro_batch_size={t.micro_batch_size}, strategy={t.strategy}, activation_checkpointing="
            f"{str(t.activation_checkpointing).lower()}, {data_parallel_size(t)} GPU(s); largest parts (GiB): "
            f"{parts}; fixes: {'; '.join(_fixes(run.run_config, plan, budget))}")


__all__ = ["GIB", "GPU_HEADROOM", "LOGIT_BYTES", "MemoryPlan", "activation_bytes", "block_activation_bytes",
           "data_parallel_size", "fit_error", "head_rows", "output_head_bytes", "parameter_shapes", "plan_memory",
           "run_memory", "shard_rows", "state_bytes"]
