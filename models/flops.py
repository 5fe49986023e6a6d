"""FLOP accounting: every count of training compute in the project comes from here.

Budgets are matched with the scaling-law convention of LLaDA (Nie et al. 2025, Sec. 3.1) and Kaplan
et al. (2020): training compute C = 6 N D, with N the *non-embedding* parameter count and D the
training tokens (2 FLOPs per parameter per token forward, 4 backward). The planner derives a run's
tokens from its budget with it, the Lightning module logs ``train/flops_seen`` with it, the
evaluation callback logs ``eval/flops_seen`` with it, and the analysis puts it on every x-axis.

Throughput and MFU add the attention score and value products, as in PaLM's MFU definition
(Chowdhery et al. 2022, App. B): 12 n_layers L d_model FLOPs per token for context length L. That
count is never used for matching, so that ARM and MDM runs at one grid point see identical N, D, C.

Pure Python: no torch, so the planner stays instant.
"""

from __future__ import annotations

from models.config import ModelConfig

FLOPS_PER_PARAM_PER_TOKEN = 6  # forward 2 + backward 4 (Kaplan et al. 2020, C = 6ND)


def training_flops(non_embedding_params: int, tokens: float) -> float:
    """C = 6 N D with N the non-embedding parameter count (LLaDA Sec. 3.1)."""
    return float(FLOPS_PER_PARAM_PER_TOKEN * non_embedding_params * tokens)


def tokens_for_budget(flops_budget: float, non_embedding_params: int) -> float:
    """D = C / (6 N): the training tokens a budget buys, before rounding to whole steps."""
    return flops_budget / (FLOPS_PER_PARAM_PER_TOKEN * non_embedding_params)


def training_flops_per_token(config: ModelConfig) -> float:
    """6 N: forward and backward FLOPs per training token with N = non-embedding parameters.

    This is the accounting of the scaling study (C = 6 N D) and the only count used to match
    budgets between runs.
    """
    return float(FLOPS_PER_PARAM_PER_TOKEN * config.non_embedding_params)


def attention_flops_per_token(n_layers: int, seq_len: int, d_model: int) -> int:
    """Attention scores (QK^T) and values (AV), forward and backward: 12 n_layers L d_model.

    PaLM's MFU accounting (Chowdhery et al. 2022, App. B), counted for a full L x L attention
    matrix: the nominal cost of a causal ARM kernel and the cost of a bidirectional MDM alike.
    """
    return 12 * n_layers * seq_len * d_model


def model_flops_per_token(config: ModelConfig, seq_len: int) -> float:
    """6 N + 12 n_layers L d_model: the attention-inclusive count of PaLM's MFU, for throughput,
    MFU and device-hour estimates only, never for matching budgets."""
    return training_flops_per_token(config) + attention_flops_per_token(config.n_layers, seq_len, config.d_model)


def device_hours(model_flops: float, peak_flops_per_s: float, mfu: float) -> float:
    """Wall-clock device-hours to execute ``model_flops`` at ``mfu`` of a device's peak throughput."""
    if peak_flops_per_s <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"need peak FLOP/s > 0 and 0 < mfu <= 1, got {peak_flops_per_s} and {mfu}")
    return model_flops / (peak_flops_per_s * mfu) / 3600.0
