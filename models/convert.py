"""Conversion between our backbone and Hugging Face ``LlamaForCausalLM``.

Both models are the same LLaMA architecture (RMSNorm, SwiGLU, half-split "rotate_half" RoPE,
grouped-query attention, no biases), so conversion is a renaming of tensors: no permutation of the
query/key rows is needed, unlike conversions from Meta's original interleaved-RoPE checkpoints.

The uses are (1) a parity test of ``models.transformer`` against an independent implementation, and
(2) moving weights in and out of the Hugging Face ecosystem (evaluation harnesses, released ARM
checkpoints). An MDM (``causal=False``) has the same tensors, but it is a mask predictor, not a
causal LM: exporting it as ``LlamaForCausalLM`` would silently run it with a causal mask, so
``to_hf_llama`` refuses it.

``transformers`` is imported inside the functions: ``models`` must stay importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from models.config import ModelConfig
from models.transformer import Transformer

if TYPE_CHECKING:  # pragma: no cover
    from transformers import LlamaConfig, LlamaForCausalLM

# our name -> Hugging Face name; "{i}" is the layer index
_GLOBAL_NAMES = {
    "embed.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attention_norm.weight": "input_layernorm.weight",
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",  # gate
    "feed_forward.w3.weight": "mlp.up_proj.weight",  # up
    "feed_forward.w2.weight": "mlp.down_proj.weight",  # down
}


def name_map(n_layers: int) -> dict[str, str]:
    """Every tensor of our ``Transformer.state_dict()`` mapped to its ``LlamaForCausalLM`` name."""
    names = dict(_GLOBAL_NAMES)
    for i in range(n_layers):
        for ours, theirs in _LAYER_NAMES.items():
            names[f"layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    return names


def _rope_settings(hf_config: Any) -> tuple[str, float]:
    """(rope type, theta) from a LlamaConfig of transformers 4.x (``rope_theta`` + ``rope_scaling``)
    or 5.x (one ``rope_parameters`` dict holding both)."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise ValueError(
            f"unsupported RoPE settings rope_parameters={params!r} rope_scaling={scaling!r}: "
            "expected a single dict (per-layer RoPE is not part of the LLaMA architecture)"
        )
    merged = {**scaling, **params}
    rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
    theta = merged.get("rope_theta", getattr(hf_config, "rope_theta", None))
    return rope_type, float(10_000.0 if theta is None else theta)


def config_from_hf(hf_config: "LlamaConfig", *, causal: bool = True, name: str | None = None) -> ModelConfig:
    """Our ``ModelConfig`` for a Hugging Face ``LlamaConfig``.

    Refuses (ValueError) what our backbone cannot represent exactly: RoPE scaling (llama3, linear,
    dynamic, yarn, ...), attention or MLP biases, an activation other than SiLU, and a ``head_dim``
    other than hidden_size / num_attention_heads. ``causal=False`` gives the bidirectional variant of
    the same architecture (an MDM initialised from an ARM's weights).
    """
    if getattr(hf_config, "model_type", "llama") != "llama":
        raise ValueError(f"expected a LlamaConfig, got model_type={hf_config.model_type!r}")
    rope_type, rope_theta = _rope_settings(hf_config)
    if rope_type != "default":
        raise ValueError(
            f"RoPE scaling type {rope_type!r} is not supported: the backbone implements plain RoPE "
            "(rope_type='default'); remove the scaling from the config or extend models.transformer"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf_config, flag, False):
            raise ValueError(f"{flag}=True is not supported: the backbone's linear layers have no bias")
    activation = getattr(hf_config, "hidden_act", "silu")
    if activation != "silu":
        raise ValueError(f"hidden_act={activation!r} is not supported: the backbone's SwiGLU uses silu")
    hidden, heads = hf_config.hidden_size, hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None)
    if head_dim is not None and head_dim * heads != hidden:
        raise ValueError(
            f"head_dim={head_dim} differs from hidden_size/num_attention_heads = {hidden}/{heads}: "
            "the backbone derives head_dim from d_model and n_heads"
        )
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    return ModelConfig(
        name=name or getattr(hf_config, "_name_or_path", "") or "hf-llama",
        vocab_size=hf_config.vocab_size,
        d_model=hidden,
        n_layers=hf_config.num_hidden_layers,
        n_heads=heads,
        n_kv_heads=kv_heads,
        ffn_dim=hf_config.intermediate_size,
        max_seq_len=hf_config.max_position_embeddings,
        rope_theta=rope_theta,
        norm_eps=float(hf_config.rms_norm_eps),
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        causal=causal,
        init_std=float(getattr(hf_config, "initializer_range", 0.02)),
    )


def _refuse_non_causal(config: ModelConfig) -> None:
    if not config.causal:
        raise ValueError(
            f"model {config.name!r} is bidirectional (causal=False): an MDM mask predictor is not a "
            "causal LM, and LlamaForCausalLM would run it with a causal mask. Only ARM (causal=True) "
            "models can be exported to Hugging Face Llama"
        )


def config_to_hf(config: ModelConfig) -> "LlamaConfig":
    """The ``LlamaConfig`` describing the same causal architecture as ``config``."""
    import transformers
    from transformers import LlamaConfig

    _refuse_non_causal(config)
    rope = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    fields = dict(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.ffn_dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        max_position_embeddings=config.max_seq_len,
        initializer_range=config.init_std,
        rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
    )
    if int(transformers.__version__.split(".")[0]) >= 5:
        return LlamaConfig(**fields, rope_parameters=rope)
    return LlamaConfig(**fields, rope_theta=rope["rope_theta"])  # 4.x: theta is a top-level field


def _check_keys(found: set[str], expected: set[str], what: str) -> None:
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise ValueError(
            f"{what} does not match the LLaMA layout: missing {missing[:5]}, unexpected {unexpected[:5]}"
            + (" ..." if len(missing) > 5 or len(unexpected) > 5 else "")
        )


@torch.no_grad()
def from_hf_llama(hf_model: "LlamaForCausalLM", *, causal: bool = True) -> Transformer:
    """Our ``Transformer`` with the weights of ``hf_model`` (copied, on its device and dtype).

    The logits agree with ``hf_model`` to float rounding for the same token ids (positions 0..T-1),
    and with ``attention_mask`` given as our ``key_padding_mask``.
    """
    config = config_from_hf(hf_model.config, causal=causal)
    source = hf_model.state_dict()
    names = name_map(config.n_layers)
    found, expected = set(source), set(names.values())
    if config.tie_embeddings:  # the tied head may or may not be listed; it is the embedding either way
        found.discard("lm_head.weight")
        expected.discard("lm_head.weight")
    _check_keys(found, expected, "the Hugging Face state dict")
    reference = source["model.embed_tokens.weight"]
    with torch.device("meta"):  # no random init of weights that are overwritten next
        model = Transformer(config)
    model.to_empty(device=reference.device).to(reference.dtype)
    if config.tie_embeddings:
        model.output.weight = model.embed.weight
    target = model.state_dict()
    _check_keys(set(target), set(names), "the backbone's state dict")
    for ours, theirs in names.items():
        if config.tie_embeddings and ours == "output.weight":
            continue
        if target[ours].shape != source[theirs].shape:
            raise ValueError(f"{theirs} has shape {tuple(source[theirs].shape)}, expected {tuple(target[ours].shape)}")
        target[ours].copy_(source[theirs])
    return model.train(hf_model.training)


@torch.no_grad()
def to_hf_llama(model: Transformer) -> "LlamaForCausalLM":
    """A ``LlamaForCausalLM`` with the weights of ``model`` (copied, on its device and dtype).

    Refuses a bidirectional model: an MDM is not a causal LM.
    """
    from transformers import LlamaForCausalLM

    hf_config = config_to_hf(model.config)
    source = model.state_dict()
    reference = source["embed.weight"]
    hf_model = LlamaForCausalLM(hf_config).to(device=reference.device, dtype=reference.dtype)
    target = hf_model.state_dict()
    names = name_map(model.config.n_layers)
    _check_keys(set(target), set(names.values()), "LlamaForCausalLM's state dict")
    hf_model.load_state_dict({theirs: source[ours] for ours, theirs in names.items()}, strict=True)
    return hf_model.train(model.training)


__all__ = ["config_from_hf", "config_to_hf", "from_hf_llama", "to_hf_llama", "name_map"]
