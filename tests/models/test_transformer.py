"""Behaviour of the backbone (models/transformer.py) and its parameter accounting (models/config.py).

Attention direction is the single difference between ARM and MDM, so it is tested as behaviour
(which logits move when which tokens change), not by reading the mask. Parameter counts are checked
against instantiated models for small configs and against LLaDA Table 5 for the paper presets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.config import ModelConfig, preset
from models.transformer import Transformer

REPO = Path(__file__).resolve().parents[2]
VOCAB = 97


def make_model(causal: bool = True, seed: int = 0, **overrides) -> Transformer:
    """A tiny model with large weights, so that any information flow shows up in the logits."""
    torch.manual_seed(seed)
    config = preset("tiny", vocab_size=VOCAB, max_seq_len=32, causal=causal, init_std=0.2, **overrides)
    return Transformer(config).eval()


def random_tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


# --- attention direction ---------------------------------------------------------------------------


@torch.no_grad()
def test_causal_logits_ignore_later_tokens():
    model = make_model(causal=True)
    tokens = random_tokens(2, 12)
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1 + torch.arange(6)) % VOCAB
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :6], before[:, :6], atol=1e-6, rtol=0)
    assert (after[:, 6:] - before[:, 6:]).abs().amax() > 1e-2


@torch.no_grad()
def test_bidirectional_logits_depend_on_later_tokens():
    model = make_model(causal=False)
    tokens = random_tokens(2, 12)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    before, after = model(tokens), model(changed)
    # every earlier position, the first one included, sees the changed last token
    assert ((after[:, :-1] - before[:, :-1]).abs().amax(dim=-1) > 1e-4).all()


@torch.no_grad()
def test_same_weights_differ_only_in_attention_direction():
    causal, bidirectional = make_model(causal=True, n_layers=1), make_model(causal=False, n_layers=1)
    bidirectional.load_state_dict(causal.state_dict())
    tokens = random_tokens(1, 8)
    # with one layer the last position attends to the same keys in both directions, so it agrees;
    # earlier positions do not (with more layers the earlier hidden states differ too)
    torch.testing.assert_close(bidirectional(tokens)[:, -1], causal(tokens)[:, -1], atol=1e-5, rtol=1e-5)
    assert (bidirectional(tokens)[:, 0] - causal(tokens)[:, 0]).abs().amax() > 1e-2


# --- parameter accounting --------------------------------------------------------------------------


EMBEDDING_TENSORS = {"embed.weight", "output.weight"}  # input embedding and output projection


@pytest.mark.parametrize(
    "config",
    [
        preset("tiny"),
        preset("cpu-0.4m"),
        preset("cpu-2m", vocab_size=1000),
        preset("tiny", tie_embeddings=True),
        preset("cpu-1m", n_kv_heads=4),  # plain multi-head attention, as in LLaDA 8B
        ModelConfig(vocab_size=50, d_model=48, n_layers=3, n_heads=6, n_kv_heads=1, ffn_dim=100),  # MQA
    ],
    ids=["tiny", "cpu-0.4m", "cpu-2m", "tiny-tied", "cpu-1m-mha", "custom-mqa"],
)
def test_analytic_parameter_counts_match_instantiated_model(config):
    model = Transformer(config)
    total = sum(p.numel() for p in model.parameters())  # parameters() counts a tied tensor once
    non_embedding = sum(p.numel() for name, p in model.named_parameters() if name not in EMBEDDING_TENSORS)
    assert total == config.total_params
    assert non_embedding == config.non_embedding_params


# LLaDA Table 5, in billions, as printed: (total params, non-embedding params)
TABLE_5 = {
    "arm-1b": (1.49, 0.97),
    "llada-1b": (1.49, 0.97),
    "arm-7b": (6.83, 5.80),
    "llada-8b": (8.02, 6.98),
    "llama3-8b": (8.03, 6.98),
}


@pytest.mark.parametrize("name", sorted(TABLE_5))
def test_paper_presets_reproduce_llada_table_5(name):
    config = preset(name)
    total, non_embedding = TABLE_5[name]
    assert round(config.total_params / 1e9, 2) == total
    assert round(config.non_embedding_params / 1e9, 2) == non_embedding


def test_llada_1b_is_arm_1b_without_the_causal_mask():
    arm, mdm = preset("arm-1b"), preset("llada-1b")
    assert arm.causal and not mdm.causal
    assert {**arm.summary(), "name": None, "causal": None} == {**mdm.summary(), "name": None, "causal": None}


def test_summary_cli_prints_counts_as_json():
    result = subprocess.run(
        [sys.executable, "-m", "models.summary", "llada-8b", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["total_params"] == preset("llada-8b").total_params
    assert summary["non_embedding_params"] == preset("llada-8b").non_embedding_params
    assert round(summary["non_embedding_params"] / 1e9, 2) == TABLE_5["llada-8b"][1]


def test_summary_cli_does_not_import_torch():
    code = (
        "import runpy, sys\n"
        "sys.argv = ['models.summary', 'arm-7b', '--json']\n"
        "try:\n"
        "    runpy.run_module('models.summary', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH')\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[0])["total_params"] == preset("arm-7b").total_params
    assert lines[-1] == "NO_TORCH"


def test_summary_cli_rejects_unknown_preset():
    result = subprocess.run(
        [sys.executable, "-m", "models.summary", "llada-9b", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "llada-9b" in result.stderr and "llada-8b" in result.stderr  # names the typo and a fix


# --- bad input -------------------------------------------------------------------------------------


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown model preset 'lada-1b'.*llada-1b"):
        preset("lada-1b")


def test_heads_not_divisible_by_kv_heads_is_a_clear_error():
    with pytest.raises(ValueError, match=r"n_heads=4 is not divisible by n_kv_heads=3"):
        ModelConfig(d_model=64, n_heads=4, n_kv_heads=3)


def test_d_model_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(ValueError, match=r"d_model=66 is not divisible by n_heads=4"):
        preset("tiny", d_model=66)


def test_unknown_override_is_a_clear_error():
    with pytest.raises(ValueError, match="n_head"):
        preset("tiny", n_head=8)


@torch.no_grad()
def test_forward_refuses_bad_input():
    model = make_model()
    with pytest.raises(ValueError, match="exceeds the model's limit"):
        model(random_tokens(1, 33))
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        model(random_tokens(2, 5), key_padding_mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="KV cache needs a causal model"):
        make_model(causal=False).new_cache(1)


# --- KV cache --------------------------------------------------------------------------------------


@torch.no_grad()
def test_kv_cache_decoding_matches_full_forward():
    model = make_model()
    tokens = random_tokens(2, 14)
    full = model(tokens)
    cache = model.new_cache(batch_size=2, max_len=16)
    pieces = [model(tokens[:, :5], cache=cache)]  # prefill
    for position in range(5, 14):
        pieces.append(model(tokens[:, position:position + 1], cache=cache))
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kv_cache_with_left_padding_matches_full_forward():
    """Batched generation left-pads prompts; the mask must hide padded keys at every step."""
    model = make_model()
    tokens = random_tokens(2, 10)
    real = torch.ones(2, 10, dtype=torch.bool)
    real[1, :4] = False  # the second prompt is 4 tokens shorter
    full = model(tokens, key_padding_mask=real)
    cache = model.new_cache(batch_size=2, max_len=10)
    pieces = [model(tokens[:, :6], key_padding_mask=real[:, :6], cache=cache)]
    for position in range(6, 10):
        pieces.append(model(tokens[:, position:position + 1], key_padding_mask=real[:, :position + 1], cache=cache))
    torch.testing.assert_close(torch.cat(pieces, dim=1)[real], full[real], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kv_cache_overflow_is_refused():
    model = make_model()
    cache = model.new_cache(batch_size=1, max_len=4)
    model(random_tokens(1, 4), cache=cache)
    with pytest.raises(ValueError, match="exceeds"):
        model(random_tokens(1, 1), cache=cache)


# --- key-padding mask ------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@torch.no_grad()
def test_right_padding_gives_the_unpadded_logits(causal):
    model = make_model(causal=causal)
    lengths = [9, 5, 2]
    tokens = random_tokens(len(lengths), 9)
    real = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    padded = model(tokens, key_padding_mask=real)
    for row, n in enumerate(lengths):
        alone = model(tokens[row:row + 1, :n])[0]
        torch.testing.assert_close(padded[row, :n], alone, atol=1e-5, rtol=1e-5)
    if not causal:  # the mask is what makes it so: without it, padding leaks into real positions
        unmasked = model(tokens)
        assert (unmasked[2, :2] - padded[2, :2]).abs().amax() > 1e-3


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@torch.no_grad()
def test_padding_token_values_do_not_reach_real_positions(causal):
    """With left padding a causal model's real tokens come after the padded keys, so the mask is
    the only thing that keeps the padding's contents out."""
    model = make_model(causal=causal)
    tokens = random_tokens(2, 10)
    real = torch.ones(2, 10, dtype=torch.bool)
    real[0, :3] = False
    real[1, :7] = False
    other = torch.where(real, tokens, (tokens + 13) % VOCAB)
    torch.testing.assert_close(
        model(other, key_padding_mask=real)[real], model(tokens, key_padding_mask=real)[real], atol=1e-6, rtol=0
    )
    assert (model(other)[real] - model(tokens)[real]).abs().amax() > 1e-3  # unmasked, it would leak


@torch.no_grad()
def test_fully_padded_query_rows_stay_finite():
    model = make_model(causal=False)
    real = torch.zeros(2, 6, dtype=torch.bool)
    real[0] = True
    assert torch.isfinite(model(random_tokens(2, 6), key_padding_mask=real)).all()


def test_sdpa_only_turns_flash_attention_off_inside_the_block_alone(monkeypatch):
    """flash-attn runs only on CUDA, so its choice is checked on a stand-in query tensor."""
    from types import SimpleNamespace

    from models import transformer

    monkeypatch.setattr(transformer, "flash_attn_func", lambda *args, **kwargs: None)
    query = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16)
    assert transformer._use_flash(query)
    with transformer.sdpa_only():
        assert not transformer._use_flash(query)
        with transformer.sdpa_only():
            pass
        assert not transformer._use_flash(query)  # nesting restores the outer setting
    assert transformer._use_flash(query)
    with pytest.raises(RuntimeError), transformer.sdpa_only():
        raise RuntimeError
    assert transformer._use_flash(query)  # restored after an error too
    assert not transformer._use_flash(SimpleNamespace(is_cuda=True, dtype=torch.float32))
