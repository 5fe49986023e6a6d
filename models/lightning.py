"""One LightningModule for both objectives: a backbone, an objective (ARM or MDM), AdamW and a
learning-rate schedule, logging loss, learning rate, gradient norm, tokens and training FLOPs seen.

Tokens seen are derived from the optimizer step (global batch x sequence length per step), so the
FLOPs axis C = 6 N D of every logged metric is exact and survives restarts without extra state.
The MDM forward-process noise is drawn from a generator seeded by (seed, step, micro-batch): a
resumed run draws exactly the masks an uninterrupted run would have drawn. The micro-batch is counted
over all ranks (``global_micro_batch``), as the data loader deals sequences out, so W ranks with
micro-batch B draw the masks of one process that accumulates W micro-batches of B.
"""

from __future__ import annotations

import dataclasses
import time

import lightning as L
import torch

from models import metric_names as metric
from models.config import ModelConfig, from_dict
from models.flops import model_flops_per_token, training_flops
from models.objective_names import ARM, MDM, check_attention
from models.objectives import (arm_linear_loss, arm_loss, mdm_forward_process, mdm_linear_loss, mdm_loss,
                               sft_response_mask)
from models.recipe import MDMConfig, OptimConfig, ScheduleConfig, lr_multiplier
from models.transformer import Transformer
from models.parallelize import Parallelism, parallelize

def _mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style), stable across processes and Python versions."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


class LanguageModel(L.LightningModule):
    """Batches are dicts with ``input_ids`` [B, L]; SFT batches add ``prompt_lengths`` [B]
    (prompt tokens are then never masked nor scored)."""

    def __init__(
        self,
        model: dict,
        objective: str,
        *,
        total_steps: int,
        tokens_per_step: int,
        mask_id: int | None = None,
        optim: dict | None = None,
        schedule: dict | None = None,
        mdm: dict | None = None,
        seed: int = 0,
        peak_flops_per_second: float | None = None,
        # Rows of the output head computed at once in the loss (models/linear_cross_entropy.py), so that
        # the [B, L, V] logits never exist; 0 projects every row at once (the plain path).
        loss_chunk_size: int = 0,
    ):
        super().__init__()
        config = from_dict(model) if isinstance(model, dict) else model
        check_attention(objective, config.causal)
        if objective == MDM and (mask_id is None or not 0 <= mask_id < config.vocab_size):
            raise ValueError(f"MDM needs a mask token id inside the vocabulary (0..{config.vocab_size - 1}), got {mask_id}")
        if loss_chunk_size < 0:
            raise ValueError(f"loss_chunk_size must be 0 (no chunks) or a number of rows, got {loss_chunk_size}")
        self.save_hyperparameters(
            {"model": dataclasses.asdict(config), "objective": objective, "total_steps": total_steps,
             "tokens_per_step": tokens_per_step, "mask_id": mask_id, "optim": optim or {},
             "schedule": schedule or {}, "mdm": mdm or {}, "seed": seed,
             "peak_flops_per_second": peak_flops_per_second, "loss_chunk_size": loss_chunk_size}
        )
        self.config: ModelConfig = config
        self.objective = objective
        self.mask_id = mask_id
        self.optim_config = OptimConfig(**(optim or {}))
        self.schedule_config = ScheduleConfig(**(schedule or {}))
        self.mdm_config = MDMConfig(**(mdm or {}))
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.seed = seed
        self.peak_flops_per_second = peak_flops_per_second
        self.loss_chunk_size = loss_chunk_size
        self.model = Transformer(config)
        self._last_log_time: float | None = None
        self._last_log_step = 0

    # How the backbone is executed (activation checkpointing, compile, FSDP2): set by the run that trains
    # it, never a hyperparameter, so a module loaded from a checkpoint is the plain model.
    parallelism: Parallelism | None = None

    def configure_model(self) -> None:
        """Lightning's hook for applying parallelism: ``self.parallelism`` is applied to the backbone
        once, sharded over the data-parallel mesh when the strategy is ``ModelParallelStrategy``."""
        if self.parallelism is None or getattr(self, "_parallelized", False):
            return
        mesh = self._device_mesh["data_parallel"] if self._device_mesh is not None else None
        parallelize(self.model, self.parallelism, mesh)
        self._parallelized = True

    # ------------------------------------------------------------------ loss
    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(tokens, key_padding_mask)

    def loss(self, batch: dict, generator: torch.Generator | None) -> torch.Tensor:
        tokens = batch["input_ids"]
        prompt_lengths = batch.get("prompt_lengths")
        response = None if prompt_lengths is None else sft_response_mask(prompt_lengths, tokens.shape[1])
        chunk_size = self.loss_chunk_size
        if self.objective == ARM:
            if chunk_size:
                return arm_linear_loss(self.model.hidden_states(tokens), self.model.output.weight, tokens,
                                       target_mask=response, chunk_size=chunk_size)
            return arm_loss(self.model(tokens), tokens, target_mask=response)
        noisy = mdm_forward_process(
            tokens,
            self.mask_id,
            eps=self.mdm_config.eps,
            random_length_prob=self.mdm_config.random_length_prob if response is None else 0.0,
            maskable=response,
            generator=generator,
            t_sampling=self.mdm_config.t_sampling,
        )
        hidden = self.model.hidden_states(noisy.noisy, noisy.key_padding_mask)
        if chunk_size:
            return mdm_linear_loss(hidden[noisy.masked], self.model.output.weight, tokens, noisy.masked,
                                   noisy.p_mask, noisy.lengths, chunk_size=chunk_size)
        masked_logits = self.model.output(hidden[noisy.masked])  # only masked positions are scored
        return mdm_loss(masked_logits, tokens, noisy.masked, noisy.p_mask, noisy.lengths)

    def global_micro_batch(self, batch_idx: int) -> int:
        """The index of this rank's micro-batch ``batch_idx`` among all ranks' micro-batches: the loader
        gives rank r the r-th block of B sequences of each batch of W x B (``studies.data.loader``)."""
        return batch_idx * self.trainer.world_size + self.global_rank

    def _generator(self, *parts: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(_mix_seed(self.seed, *parts))
        return generator

    # -------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # the last part was the rank: at 0, a single process draws the masks it drew before
        generator = self._generator(0, self.global_step, self.global_micro_batch(batch_idx), 0)
        loss = self.loss(batch, generator)
        self.log(metric.TRAIN_LOSS, loss, prog_bar=True)
        if self._logged_step():
            tokens_seen = (self.global_step + 1) * self.tokens_per_step
            self.log(metric.TRAIN_LR, self.trainer.optimizers[0].param_groups[0]["lr"])
            self.log(metric.TRAIN_TOKENS_SEEN, float(tokens_seen))
            self.log(metric.TRAIN_FLOPS_SEEN, training_flops(self.config.non_embedding_params, tokens_seen))
        return loss

    def _logged_step(self) -> bool:
        """Whether the logger writes this optimizer step's metrics (every ``log_every_n_steps``, as
        Lightning decides it). Metrics only the logger reads are computed and logged then alone: a
        ``self.log`` call costs about a millisecond, a noticeable share of a small model's step."""
        every = self.trainer.log_every_n_steps
        return bool(every) and (self.global_step + 1) % every == 0

    def on_before_optimizer_step(self, optimizer) -> None:
        """The global gradient norm before clipping: with a small batch the MDM's 1/t weights make it
        spiky, and how often it exceeds ``optim.grad_clip`` says how much clipping slows training."""
        if not self._logged_step():
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            if hasattr(norm, "full_tensor"):  # FSDP2: a norm over local shards, reduced over ranks
                norm = norm.full_tensor()
            self.log(metric.TRAIN_GRAD_NORM, norm)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Throughput (tokens/s) and MFU over each logging interval of optimizer steps.

        Lightning's ``ThroughputMonitor`` is not used: it synchronises CUDA after every micro-batch,
        takes the peak FLOP/s from its own table of chips (none on CPU) where this MFU uses the
        cluster profile's peak that the planner's device-hour estimates use too, and counts samples
        per micro-batch where tokens here follow from the optimizer step, exact across restarts."""
        step = self.global_step
        every = max(self.trainer.log_every_n_steps, 1)
        if step == self._last_log_step or step % every:
            return
        now = time.perf_counter()
        if self._last_log_time is not None:
            seconds = now - self._last_log_time
            tokens_per_second = (step - self._last_log_step) * self.tokens_per_step / max(seconds, 1e-9)
            self.log(metric.TOKENS_PER_S, tokens_per_second)
            if self.peak_flops_per_second:
                seq_len = batch["input_ids"].shape[1]
                achieved = tokens_per_second * model_flops_per_token(self.config, seq_len)
                world = self.trainer.world_size
                self.log(metric.MFU, achieved / (self.peak_flops_per_second * world))
        self._last_log_time = now
        self._last_log_step = step

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """ARM: next-token NLL per token. MDM: the eq. 3 bound per token, with noise fixed by the
        batch's index among all ranks' (``batch_index``, else ``batch_idx``), so that validation
        losses are comparable across steps and across numbers of ranks."""
        generator = self._generator(1, int(batch.get("batch_index", batch_idx)), 0)
        loss = self.loss(batch, generator)
        self.log(metric.VAL_LOSS, loss, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].shape[0])
        return loss

    # ------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
        o = self.optim_config
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=tuple(o.betas), eps=o.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_multiplier(step, self.total_steps, self.schedule_config)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
