"""Model architecture configs, named presets and analytic parameter counts.

This module imports no torch: the sweep planner reads parameter counts from it, and a dry run of a
grid with 1B and 8B models must answer instantly.

Parameter accounting follows LLaDA (Nie et al. 2025, Table 5): *non-embedding* parameters are
everything but the input embedding and the output projection (norms included). Training compute is
counted as C = 6 * N * D with N = non-embedding parameters.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass


@dataclass
class ModelConfig:
    """A LLaMA-style Transformer: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases.

    ``causal`` is the single switch between an autoregressive model (causal attention) and a
    masked-diffusion mask predictor (bidirectional attention); the parameter count does not depend
    on it.
    """

    name: str = "custom"
    vocab_size: int = 512
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    ffn_dim: int = 176
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    causal: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        validate(self)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def params_per_layer(self) -> int:
        attention = self.d_model * (self.d_model + 2 * self.kv_dim) + self.d_model * self.d_model
        feed_forward = 3 * self.d_model * self.ffn_dim  # SwiGLU: gate, up, down
        norms = 2 * self.d_model  # attention and feed-forward RMSNorm weights
        return attention + feed_forward + norms

    @property
    def non_embedding_params(self) -> int:
        """N in C = 6ND: all blocks plus the final norm; no input embedding, no output head."""
        return self.n_layers * self.params_per_layer + self.d_model

    @property
    def embedding_params(self) -> int:
        table = self.vocab_size * self.d_model
        return table if self.tie_embeddings else 2 * table

    @property
    def total_params(self) -> int:
        return self.non_embedding_params + self.embedding_params

    def summary(self) -> dict:
        """Architecture and parameter counts as one flat, JSON-ready dict."""
        return {
            **dataclasses.asdict(self),
            "head_dim": self.head_dim,
            "non_embedding_params": self.non_embedding_params,
            "embedding_params": self.embedding_params,
            "total_params": self.total_params,
        }


def validate(config: ModelConfig) -> None:
    """Raise a ValueError that names the offending field and what would fix it."""
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
        value = getattr(config, name)
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
    if config.d_model % config.n_heads:
        raise ValueError(
            f"d_model={config.d_model} is not divisible by n_heads={config.n_heads}: "
            f"pick n_heads among the divisors of d_model"
        )
    if config.n_heads % config.n_kv_heads:
        raise ValueError(
            f"n_heads={config.n_heads} is not divisible by n_kv_heads={config.n_kv_heads}: "
            f"grouped-query attention shares each key/value head among n_heads/n_kv_heads query heads"
        )
    if config.head_dim % 2:
        raise ValueError(
            f"head_dim = d_model/n_heads = {config.head_dim} must be even for rotary embeddings"
        )
    if config.rope_theta <= 0 or config.norm_eps <= 0 or config.init_std <= 0:
        raise ValueError("rope_theta, norm_eps and init_std must be positive")


LLADA_VOCAB = 126_464
LLAMA3_VOCAB = 128_000  # as listed in LLaDA Table 5

# LLaDA Table 5. The 1B ARM baseline and LLaDA 1B share one architecture; only attention differs.
_PAPER = {
    "arm-1b": dict(vocab_size=LLADA_VOCAB, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                   ffn_dim=5634, max_seq_len=4096, causal=True),
    "llada-1b": dict(vocab_size=LLADA_VOCAB, d_model=2048, n_layers=22, n_heads=32, n_kv_heads=4,
                     ffn_dim=5634, max_seq_len=4096, causal=False),
    "arm-7b": dict(vocab_size=LLADA_VOCAB, d_model=4096, n_layers=28, n_heads=32, n_kv_heads=8,
                   ffn_dim=13_440, max_seq_len=4096, causal=True),
    "llada-8b": dict(vocab_size=LLADA_VOCAB, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                     ffn_dim=12_288, max_seq_len=4096, causal=False),
    "llama3-8b": dict(vocab_size=LLAMA3_VOCAB, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                      ffn_dim=14_336, max_seq_len=8192, rope_theta=500_000.0, causal=True),
}

# A ladder for CPU-scale studies. Names give the approximate non-embedding parameter count; the
# vocabulary is a placeholder that a run replaces with its tokenizer's size.
_CPU_LADDER = {
    "cpu-12k": dict(d_model=24, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=64),
    "cpu-25k": dict(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=88),
    "cpu-50k": dict(d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128),
    "tiny": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176),
    "cpu-0.2m": dict(d_model=64, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=176),
    "cpu-0.4m": dict(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=352),
    "cpu-1m": dict(d_model=128, n_layers=6, n_heads=4, n_kv_heads=2, ffn_dim=352),
    "cpu-2m": dict(d_model=192, n_layers=6, n_heads=6, n_kv_heads=3, ffn_dim=512),
    "cpu-4m": dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, ffn_dim=688),
    "cpu-8m": dict(d_model=320, n_layers=8, n_heads=8, n_kv_heads=4, ffn_dim=864),
}

PRESETS: dict[str, dict] = {**_PAPER, **{k: dict(v, vocab_size=512, max_seq_len=256) for k, v in _CPU_LADDER.items()}}


def preset_names() -> list[str]:
    return list(PRESETS)


def preset(name: str, **overrides) -> ModelConfig:
    """The named architecture, with fields replaced by ``overrides`` (e.g. ``vocab_size=``)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model preset {name!r}.{hint} Known presets: {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ModelConfig field(s) {unknown}; fields are {sorted(fields)}")
    return ModelConfig(**{"name": name, **PRESETS[name], **overrides})


def from_dict(values: dict) -> ModelConfig:
    """Rebuild a config from ``dataclasses.asdict`` output (e.g. a checkpoint's hyperparameters)."""
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in values.items() if k in fields})


__all__ = ["ModelConfig", "PRESETS", "preset", "preset_names", "from_dict", "validate"]
