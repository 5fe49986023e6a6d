"""Parity of models.transformer with Hugging Face's LlamaForCausalLM, through models.convert.

The reference is an independent implementation of the same architecture: identical logits after
conversion check RMSNorm, SwiGLU, half-split RoPE (with a non-default theta), grouped-query
attention and the padding mask at once. Models are built from a LlamaConfig; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from models.config import preset  # noqa: E402
from models.convert import config_from_hf, config_to_hf, from_hf_llama, name_map, to_hf_llama  # noqa: E402
from models.transformer import Transformer  # noqa: E402

VOCAB = 128
TOL = dict(atol=1e-5, rtol=1e-5)


def hf_config(**overrides) -> LlamaConfig:
    fields = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=96, max_position_embeddings=64, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0},
        attn_implementation="eager", tie_word_embeddings=False,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def random_hf_model(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A float32 Llama whose weights (norms included) are far from their initial values, so that a
    wrong mapping (e.g. gate/up swapped, norms dropped) changes the logits well beyond tolerance."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(hf_config(**overrides)).float().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.15)
    return model


@pytest.fixture(scope="module")
def hf_model() -> LlamaForCausalLM:
    return random_hf_model()


def test_config_from_hf_reads_every_field():
    config = config_from_hf(hf_config(max_position_embeddings=96, rms_norm_eps=1e-6, initializer_range=0.01))
    assert (config.vocab_size, config.d_model, config.n_layers, config.n_heads, config.n_kv_heads) == (VOCAB, 64, 2, 4, 2)
    assert (config.ffn_dim, config.max_seq_len, config.rope_theta) == (96, 96, 500.0)
    assert (config.norm_eps, config.init_std, config.tie_embeddings, config.causal) == (1e-6, 0.01, False, True)


def test_config_from_hf_reads_theta_given_the_legacy_way():
    """transformers 5.x folds a top-level ``rope_theta`` into ``rope_parameters``; either spelling works."""
    legacy = LlamaConfig(hidden_size=64, num_attention_heads=4, intermediate_size=96, vocab_size=VOCAB,
                         num_hidden_layers=1, rope_theta=123_456.0)
    assert config_from_hf(legacy).rope_theta == 123_456.0
    assert config_from_hf(LlamaConfig(hidden_size=64, num_attention_heads=4)).rope_theta == 10_000.0


def test_config_round_trip():
    config = preset("tiny", vocab_size=VOCAB, rope_theta=2_000.0, norm_eps=1e-6, tie_embeddings=True)
    back = config_from_hf(config_to_hf(config), name=config.name)
    assert back == config


def test_logits_match_hugging_face(hf_model):
    model = from_hf_llama(hf_model)
    tokens = torch.randint(0, VOCAB, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(input_ids=tokens).logits
        actual = model(tokens)
    assert expected.abs().max() > 1.0  # a test of something: logits are not all near zero
    torch.testing.assert_close(actual, expected, **TOL)


def test_logits_match_with_sdpa_and_tied_embeddings():
    reference = random_hf_model(seed=3, attn_implementation="sdpa", tie_word_embeddings=True, num_key_value_heads=1)
    assert reference.lm_head.weight is reference.model.embed_tokens.weight
    model = from_hf_llama(reference)
    assert model.config.tie_embeddings and model.output.weight is model.embed.weight
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), reference(input_ids=tokens).logits, **TOL)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_mask_matches_hugging_face_attention_mask(hf_model, side):
    """Our ``key_padding_mask`` plays the role of HF's ``attention_mask``; only real positions are
    compared (padded queries are undefined in both). Left padding makes the mask matter for a
    causal model: real tokens come after padded keys they must not see."""
    lengths = [11, 6, 1]
    total = max(lengths)
    generator = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, VOCAB, (len(lengths), total), generator=generator)
    real = torch.zeros(len(lengths), total, dtype=torch.bool)
    for row, n in enumerate(lengths):
        if side == "right":
            real[row, :n] = True
        else:
            real[row, total - n:] = True
    model = from_hf_llama(hf_model)
    positions = torch.arange(total).expand(len(lengths), total)  # the positions our model uses
    with torch.no_grad():
        expected = hf_model(input_ids=tokens, attention_mask=real.long(), position_ids=positions).logits
        actual = model(tokens, key_padding_mask=real)
    torch.testing.assert_close(actual[real], expected[real], **TOL)


def test_round_trip_gives_identical_state_dict(hf_model):
    back = to_hf_llama(from_hf_llama(hf_model))
    original, returned = hf_model.state_dict(), back.state_dict()
    assert set(returned) == set(original)
    for key, tensor in original.items():
        assert torch.equal(returned[key], tensor), key
    assert back.config.rope_parameters["rope_theta"] == 500.0


def test_export_of_our_model_matches_its_logits():
    torch.manual_seed(5)
    model = Transformer(preset("tiny", vocab_size=VOCAB, init_std=0.2)).eval()
    exported = to_hf_llama(model)
    tokens = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(exported(input_ids=tokens).logits, model(tokens), **TOL)
    assert not exported.training


def test_conversion_copies_rather_than_shares(hf_model):
    model = from_hf_llama(hf_model)
    with torch.no_grad():
        model.embed.weight.zero_()
    assert hf_model.model.embed_tokens.weight.abs().sum() > 0


def test_conversion_keeps_dtype():
    reference = random_hf_model(seed=6).to(torch.bfloat16)
    model = from_hf_llama(reference)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in to_hf_llama(model).parameters()} == {torch.bfloat16}


def test_name_map_covers_both_state_dicts(hf_model):
    names = name_map(2)
    assert set(names) == set(Transformer(config_from_hf(hf_model.config)).state_dict())
    assert set(names.values()) == set(hf_model.state_dict())
    assert names["layers.1.feed_forward.w1.weight"] == "model.layers.1.mlp.gate_proj.weight"
    assert names["layers.1.feed_forward.w3.weight"] == "model.layers.1.mlp.up_proj.weight"


def test_bidirectional_import_is_allowed_but_export_is_refused(hf_model):
    mdm = from_hf_llama(hf_model, causal=False)
    assert not mdm.config.causal
    with pytest.raises(ValueError, match="not a causal LM"):
        to_hf_llama(mdm)
    with pytest.raises(ValueError, match="not a causal LM"):
        config_to_hf(mdm.config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}), "'linear'"),
        (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
                               "rope_theta": 500.0}), "'llama3'"),
        (dict(attention_bias=True), "attention_bias"),
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(head_dim=32), "head_dim=32"),
        (dict(hidden_act="gelu"), "hidden_act"),
    ],
)
def test_unsupported_llama_variants_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf(hf_config(**overrides))


def test_rope_scaling_given_the_legacy_way_is_refused():
    config = hf_config(rope_parameters=None, rope_scaling={"type": "dynamic", "factor": 2.0})
    with pytest.raises(ValueError, match="'dynamic'"):
        config_from_hf(config)


def test_non_llama_state_dict_is_refused(hf_model):
    broken = random_hf_model(seed=7)
    broken.model.layers[0].self_attn.q_proj.register_parameter("bias", torch.nn.Parameter(torch.zeros(64)))
    with pytest.raises(ValueError, match="unexpected"):
        from_hf_llama(broken)


def test_importing_convert_does_not_import_transformers():
    """transformers is loaded only when a conversion runs, so models/ stays light to import."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys, models.convert; print('transformers' in sys.modules)"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
