"""The LLaMA-style Transformer backbone shared by ARM and MDM.

RMSNorm, SwiGLU feed-forward, rotary position embeddings (the half-split convention of LLaMA and
Hugging Face's ``LlamaForCausalLM``), grouped-query attention, no biases. ``config.causal`` is the
only difference between an autoregressive model and a masked-diffusion mask predictor (LLaDA
removes the causal mask and changes nothing else). The module maps token ids to logits and knows
nothing about losses, training or logging.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig

try:  # optional GPU kernel; scaled_dot_product_attention is always available
    from flash_attn import flash_attn_func
except ImportError:  # pragma: no cover - depends on the machine
    flash_attn_func = None


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in float32 (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_tables(head_dim: int, positions: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of RoPE angles, [T, head_dim], for integer ``positions`` [T] (Su et al. 2021)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # [T, head_dim/2]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of ``x`` [B, H, T, head_dim] by the position's angle."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


@dataclass
class KVCache:
    """Keys and values of every layer for incremental causal decoding.

    ``keys[i]`` and ``values[i]`` are [B, n_kv_heads, max_len, head_dim]; ``length`` is the number of
    positions already written. Only meaningful for causal models: a bidirectional model's earlier
    keys change whenever a later token changes, so MDM sampling recomputes every step.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wq = nn.Linear(config.d_model, config.d_model, bias=False)
        self.wk = nn.Linear(config.d_model, config.kv_dim, bias=False)
        self.wv = nn.Linear(config.d_model, config.kv_dim, bias=False)
        self.wo = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, d_model]
        cos: torch.Tensor,
        sin: torch.Tensor,
        attn_mask: torch.Tensor | None,  # bool [B, 1, T, S], True = may attend; None = plain causal/full
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        c = self.config
        batch, length, _ = x.shape
        q = self.wq(x).view(batch, length, c.n_heads, c.head_dim).transpose(1, 2)
        k = self.wk(x).view(batch, length, c.n_kv_heads, c.head_dim).transpose(1, 2)
        v = self.wv(x).view(batch, length, c.n_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start:start + length] = k
            cache.values[layer][:, :, start:start + length] = v
            k = cache.keys[layer][:, :, : start + length]
            v = cache.values[layer][:, :, : start + length]
        if attn_mask is None and cache is None and _use_flash(q):
            out = flash_attn_func(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=c.causal
            ).transpose(1, 2)
        else:
            grouped = c.n_kv_heads != c.n_heads
            if grouped and attn_mask is not None and q.is_cuda:
                # CUDA's memory-efficient kernel takes a mask, but grouped heads only in some torch
                # releases (PyTorch's SDPA docs: GQA in the flash and math kernels); given both, SDPA
                # may fall back to the math kernel, which keeps [B, H, T, S] scores for backward
                groups = c.n_heads // c.n_kv_heads
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
                grouped = False
            out = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=attn_mask,
                is_causal=c.causal and attn_mask is None,
                enable_gqa=grouped,
            )
        return self.wo(out.transpose(1, 2).reshape(batch, length, c.d_model))


_flash_allowed = True  # cleared by sdpa_only()


@contextmanager
def sdpa_only():
    """Attention through ``F.scaled_dot_product_attention`` even where flash-attn would run: to compare
    the two backends. The backward pass must run inside too where blocks are recomputed (activation
    checkpointing replays the forward there)."""
    global _flash_allowed
    previous, _flash_allowed = _flash_allowed, False
    try:
        yield
    finally:
        _flash_allowed = previous


def _use_flash(q: torch.Tensor) -> bool:
    return (_flash_allowed and flash_attn_func is not None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x) (Shazeer 2020)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.w3 = nn.Linear(config.d_model, config.ffn_dim, bias=False)
        self.w2 = nn.Linear(config.ffn_dim, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x, cos, sin, attn_mask, cache=None, layer=0):
        x = x + self.attention(self.attention_norm(x), cos, sin, attn_mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """Token ids [B, T] (and an optional key-padding mask) to logits [B, T, vocab_size]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.output = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.embed.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2 n_layers)
        (GPT-2, and the LLaMA-style recipes of OLMo and torchtitan), norms at one."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layers)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(param)
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(param, 0.0, residual_std)
            else:
                nn.init.normal_(param, 0.0, std)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for causal decoding of up to ``max_len`` positions."""
        if not self.config.causal:
            raise ValueError("a KV cache needs a causal model; bidirectional (MDM) models recompute each step")
        c = self.config
        max_len = max_len or c.max_seq_len
        weight = self.embed.weight
        shape = (batch_size, c.n_kv_heads, max_len, c.head_dim)
        keys = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in range(c.n_layers)]
        values = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in range(c.n_layers)]
        return KVCache(keys, values)

    def forward(
        self,
        tokens: torch.Tensor,  # [B, T] int64
        key_padding_mask: torch.Tensor | None = None,  # bool [B, S], True = real token
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Logits [B, T, vocab]. With a ``cache``, ``tokens`` continue the cached positions and
        ``key_padding_mask`` (if given) covers all ``cache.length + T`` positions."""
        return self.output(self.hidden_states(tokens, key_padding_mask, cache))

    def hidden_states(
        self,
        tokens: torch.Tensor,  # [B, T] int64
        key_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The final normalised hidden states [B, T, d_model], before the output projection.

        ``self.output`` applied to some of them gives those positions' logits: the MDM loss needs
        logits only at masked positions, and the output projection with its cross-entropy is a large
        share of a small model's step.
        """
        batch, length = tokens.shape
        start = 0 if cache is None else cache.length
        if start + length > (cache.max_len if cache is not None else self.config.max_seq_len):
            raise ValueError(
                f"sequence of {start + length} positions exceeds the model's limit "
                f"({cache.max_len if cache is not None else self.config.max_seq_len}); "
                "raise max_seq_len or shorten the input"
            )
        positions = torch.arange(start, start + length, device=tokens.device)
        cos, sin = rotary_tables(self.config.head_dim, positions, self.config.rope_theta)
        attn_mask = self._attention_mask(batch, length, start, key_padding_mask, tokens.device)
        x = self.embed(tokens)
        for index, layer in enumerate(self.layers):
            x = layer(x, cos, sin, attn_mask, cache, index)
        if cache is not None:
            cache.length += length
        return self.norm(x)

    def _attention_mask(self, batch, length, start, key_padding_mask, device) -> torch.Tensor | None:
        """Boolean [B, 1, T, S] mask (True = may attend), or None when plain causal or full
        attention over the T new positions suffices (then SDPA's ``is_causal`` applies)."""
        if key_padding_mask is None and start == 0:
            return None
        total = start + length
        if self.config.causal:
            query_positions = torch.arange(start, total, device=device)[:, None]
            allowed = torch.arange(total, device=device)[None, :] <= query_positions
        else:
            allowed = torch.ones(length, total, dtype=torch.bool, device=device)
        allowed = allowed[None, None].expand(batch, 1, length, total)
        if key_padding_mask is not None:
            if tuple(key_padding_mask.shape) != (batch, total):
                raise ValueError(
                    f"key_padding_mask has shape {tuple(key_padding_mask.shape)}, expected {(batch, total)} "
                    "(batch, cached + new positions)"
                )
            allowed = allowed & key_padding_mask.bool()[:, None, None, :]
            # a padded query would attend to nothing (a NaN row); let every position see itself
            rows = torch.arange(length, device=device)
            allowed[:, :, rows, rows + start] = True
        return allowed
