"""Tests of models/objectives.py: the ARM and MDM losses and the MDM forward process."""

import math

import pytest
import torch
import torch.nn.functional as F

from largest_tensor import LargestTensor  # tests/largest_tensor.py
from models.linear_cross_entropy import linear_cross_entropy
from models.objectives import (IGNORE_INDEX, _token_cross_entropy, arm_linear_loss, arm_loss, arm_token_weights,
                               mdm_forward_process, mdm_linear_loss, mdm_loss, mdm_token_weights,
                               sft_response_mask)


def test_mdm_loss_matches_hand_computed_value():
    # Two positions, vocabulary of two. Position 0 is masked with p_mask 0.5 and its target (1)
    # has probability 3/4; position 1 is unmasked and must not count.
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    targets = torch.tensor([[1, 1]])
    masked = torch.tensor([[True, False]])
    p_mask = torch.tensor([0.5])
    expected = (math.log(4 / 3) / 0.5) / (1 * 2)  # eq. 3: sum of CE / p_mask over masked, / (B L)
    assert mdm_loss(logits, targets, masked, p_mask).item() == pytest.approx(expected, rel=1e-6)
    # per-position p_mask and a per-sequence normaliser (SFT: response length 1)
    per_position = torch.tensor([[0.25, 0.9]])
    expected_sft = (math.log(4 / 3) / 0.25) / 1
    got = mdm_loss(logits, targets, masked, per_position, lengths=torch.tensor([1]))
    assert got.item() == pytest.approx(expected_sft, rel=1e-6)


def test_mdm_loss_batch_normalisation_is_sum_over_batch_times_length():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    targets = torch.randint(0, 7, (3, 5))
    masked = torch.rand(3, 5) < 0.5
    p_mask = torch.rand(3) * 0.9 + 0.1
    ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    expected = (ce * masked / p_mask[:, None]).sum() / 15
    assert mdm_loss(logits, targets, masked, p_mask).item() == pytest.approx(expected.item(), rel=1e-6)


def test_mdm_loss_on_the_masked_rows_alone_equals_the_full_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 7)
    targets = torch.randint(0, 7, (3, 6))
    masked = torch.rand(3, 6) < 0.5
    masked[0, 0] = masked[1, 1] = masked[2, 2] = True
    p_mask = torch.rand(3) * 0.9 + 0.1
    lengths = torch.tensor([6, 3, 4])
    for normaliser in (None, lengths):
        full = mdm_loss(logits, targets, masked, p_mask, normaliser)
        rows = mdm_loss(logits[masked], targets, masked, p_mask, normaliser)
        assert rows.item() == pytest.approx(full.item(), rel=1e-6)
    with pytest.raises(ValueError, match="rows for"):
        mdm_loss(logits[masked][1:], targets, masked, p_mask)


def test_arm_loss_equals_cross_entropy_on_shifted_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    tokens = torch.randint(0, 11, (2, 6))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), tokens[:, 1:].reshape(-1))
    assert arm_loss(logits, tokens).item() == pytest.approx(expected.item(), rel=1e-6)


def test_arm_sft_never_scores_prompt_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    tokens = torch.randint(0, 11, (2, 6))
    response = sft_response_mask(torch.tensor([3, 2]), 6)
    base = arm_loss(logits, tokens, target_mask=response)
    # Logits that predict prompt tokens (positions before prompt_length - 1) are irrelevant.
    changed = logits.clone()
    changed[0, :2] += 100 * torch.randn(2, 11)
    changed[1, :1] += 100 * torch.randn(1, 11)
    assert arm_loss(changed, tokens, target_mask=response).item() == pytest.approx(base.item(), rel=1e-6)
    # ...but a logit that predicts a response token is scored.
    changed[0, 2] += 100 * torch.randn(11)
    assert arm_loss(changed, tokens, target_mask=response).item() != pytest.approx(base.item(), rel=1e-3)


def test_mdm_sft_never_masks_prompt_and_normalises_by_response_length():
    tokens = torch.arange(40).reshape(4, 10)
    prompt_lengths = torch.tensor([3, 5, 1, 9])
    response = sft_response_mask(prompt_lengths, 10)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        draw = mdm_forward_process(tokens, 99, maskable=response, generator=generator)
        assert not (draw.masked & ~response).any()
        assert torch.equal(draw.noisy[~response], tokens[~response])
        assert torch.equal(draw.lengths, 10 - prompt_lengths)


def test_forward_process_masking_rate_and_eps():
    tokens = torch.zeros(4000, 64, dtype=torch.long)
    draw = mdm_forward_process(tokens, 5, eps=1e-3, generator=torch.Generator().manual_seed(1))
    assert draw.p_mask.min() >= 1e-3 and draw.p_mask.max() <= 1.0
    # each sequence's masking rate tracks its own p_mask; overall E[p_mask] = (1 - eps)/2 + eps
    rate = draw.masked.float().mean(dim=1)
    assert (rate - draw.p_mask[:, 0]).abs().mean() < 0.06
    assert draw.masked.float().mean().item() == pytest.approx(0.5 * (1 - 1e-3) + 1e-3, abs=0.02)
    assert torch.equal(draw.noisy[draw.masked], torch.full_like(draw.noisy[draw.masked], 5))
    assert draw.key_padding_mask is None


def test_random_length_cut_hits_the_configured_fraction_and_never_masks_past_the_cut():
    tokens = torch.zeros(20000, 16, dtype=torch.long)
    draw = mdm_forward_process(tokens, 1, random_length_prob=0.05, generator=torch.Generator().manual_seed(2))
    cut = draw.lengths < 16
    # P(cut and length < 16) = 0.05 * 15/16
    assert cut.float().mean().item() == pytest.approx(0.05 * 15 / 16, abs=0.006)
    assert draw.key_padding_mask is not None
    beyond = torch.arange(16)[None, :] >= draw.lengths[:, None]
    assert not (draw.masked & beyond).any()
    assert torch.equal(draw.key_padding_mask, ~beyond)


def test_forward_process_is_reproducible_from_its_generator():
    tokens = torch.randint(0, 9, (3, 12))
    a = mdm_forward_process(tokens, 9, generator=torch.Generator().manual_seed(7))
    b = mdm_forward_process(tokens, 9, generator=torch.Generator().manual_seed(7))
    c = mdm_forward_process(tokens, 9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.masked, b.masked) and not torch.equal(a.masked, c.masked)


def test_stratified_t_puts_one_draw_in_each_stratum_and_keeps_every_t_uniform():
    from scipy import stats

    from models.objectives import _draw_t

    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([_draw_t(8, "stratified", "cpu", generator) for _ in range(2000)])  # [2000, 8]
    strata = torch.floor(draws * 8).sort(dim=1).values
    assert torch.equal(strata, torch.arange(8.0).expand(2000, 8))
    # each position of the batch is still U(0, 1), so eq. 3 is unchanged in expectation
    for position in (0, 5):
        assert stats.kstest(draws[:, position].numpy(), "uniform").pvalue > 1e-3
    # and the batch mean varies far less than with independent draws
    independent = torch.stack([_draw_t(8, "uniform", "cpu", generator) for _ in range(2000)])
    assert draws.mean(dim=1).std() < 0.5 * independent.mean(dim=1).std()  # 1/sqrt(8) in theory
    tokens = torch.randint(4, 50, (8, 64))
    masked = mdm_forward_process(tokens, 3, t_sampling="stratified", generator=generator)
    assert sorted(torch.floor(masked.p_mask[:, 0] * 8).tolist()) == list(range(8))
    with pytest.raises(ValueError, match="unknown mdm.t_sampling"):
        mdm_forward_process(tokens, 3, t_sampling="sobol")


# ----------------------------------------------- the output head's loss in chunks (linear_cross_entropy)
B, L, D, V = 3, 10, 16, 50  # N = B * L = 30 rows
CHUNK_SIZES = [1, 7, B * L, 1000]  # one row, a size that does not divide N, N, more than N


def _head(seed=0):
    torch.manual_seed(seed)
    hidden = torch.randn(B, L, D, requires_grad=True)
    weight = (0.5 * torch.randn(V, D)).requires_grad_()
    tokens = torch.randint(0, V, (B, L))
    return hidden, weight, tokens


def _mdm_cases(tokens):
    """(name, masked, p_mask, lengths) for pretraining, a random-length cut, and SFT."""
    generator = torch.Generator().manual_seed(3)
    pretraining = mdm_forward_process(tokens, V - 1, generator=generator)
    cut = mdm_forward_process(tokens, V - 1, random_length_prob=1.0, generator=generator)
    assert cut.key_padding_mask is not None
    sft = mdm_forward_process(tokens, V - 1, maskable=sft_response_mask(torch.tensor([2, 5, 0]), L),
                              generator=generator)
    return [("pretraining", pretraining.masked, pretraining.p_mask[:, 0], None),
            ("random length", cut.masked, cut.p_mask, cut.lengths),
            ("sft", sft.masked, sft.p_mask, sft.lengths)]


def _value_and_grads(loss, inputs):
    return loss.detach(), torch.autograd.grad(loss, inputs)


def _assert_same(got, want):
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1], want[1]):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-7)


def test_token_weights_reproduce_arm_and_mdm_losses():
    hidden, weight, tokens = _head()
    logits = (hidden @ weight.t()).detach()
    for target_mask in (None, sft_response_mask(torch.tensor([2, 5, 0]), L)):
        targets, weights = arm_token_weights(tokens, target_mask)
        weighted = (_token_cross_entropy(logits, targets) * weights).sum()
        assert weighted.item() == pytest.approx(arm_loss(logits, tokens, target_mask).item(), rel=1e-6)
        assert (targets[:, -1] == IGNORE_INDEX).all() and weights.sum().item() == pytest.approx(1.0)
    for _, masked, p_mask, lengths in _mdm_cases(tokens):
        weighted = (_token_cross_entropy(logits[masked], tokens[masked]) * mdm_token_weights(masked, p_mask, lengths)).sum()
        assert weighted.item() == pytest.approx(mdm_loss(logits, tokens, masked, p_mask, lengths).item(), rel=1e-6)
    with pytest.raises(ValueError, match="no target token"):
        arm_token_weights(tokens, torch.zeros(B, L, dtype=torch.bool))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
@pytest.mark.parametrize("sft", [False, True])
def test_arm_loss_in_chunks_equals_the_plain_loss_and_gradients(chunk_size, sft):
    hidden, weight, tokens = _head()
    target_mask = sft_response_mask(torch.tensor([2, 5, 0]), L) if sft else None
    want = _value_and_grads(arm_loss(hidden @ weight.t(), tokens, target_mask), [hidden, weight])
    got = _value_and_grads(arm_linear_loss(hidden, weight, tokens, target_mask, chunk_size=chunk_size), [hidden, weight])
    _assert_same(got, want)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_mdm_loss_in_chunks_equals_the_plain_loss_and_gradients(chunk_size):
    hidden, weight, tokens = _head()
    for name, masked, p_mask, lengths in _mdm_cases(tokens):
        want = _value_and_grads(mdm_loss(hidden[masked] @ weight.t(), tokens, masked, p_mask, lengths), [hidden, weight])
        for rows in (hidden, hidden[masked]):  # the full hidden states, or the masked rows alone
            got = mdm_linear_loss(rows, weight, tokens, masked, p_mask, lengths, chunk_size=chunk_size)
            _assert_same(_value_and_grads(got, [hidden, weight]), want)


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_linear_cross_entropy_ignores_ignore_index_targets_and_weights_each_row(chunk_size):
    hidden, weight, tokens = _head()
    rows, targets = hidden.reshape(-1, D), tokens.reshape(-1).clone()
    targets[::4] = IGNORE_INDEX
    token_weights = torch.rand(B * L)
    plain = (F.cross_entropy(rows @ weight.t(), targets, reduction="none") * token_weights).sum()
    want = _value_and_grads(plain, [hidden, weight])
    got = _value_and_grads(linear_cross_entropy(rows, weight, targets, token_weights, chunk_size), [hidden, weight])
    _assert_same(got, want)
    assert (got[1][0].reshape(-1, D)[::4] == 0).all()  # an ignored row gets no gradient


def test_linear_cross_entropy_scales_by_the_incoming_gradient_and_handles_a_frozen_head():
    hidden, weight, tokens = _head()
    rows, targets, token_weights = hidden.reshape(-1, D), tokens.reshape(-1), torch.full((B * L,), 0.1)
    plain = (F.cross_entropy(rows @ weight.t(), targets, reduction="none") * token_weights).sum()
    want = _value_and_grads(3.5 * plain, [hidden, weight])
    got = _value_and_grads(3.5 * linear_cross_entropy(rows, weight, targets, token_weights, 7), [hidden, weight])
    _assert_same(got, want)
    frozen = weight.detach()
    loss = linear_cross_entropy(rows, frozen, targets, token_weights, 7)
    (grad_hidden,) = torch.autograd.grad(loss, [hidden])
    torch.testing.assert_close(grad_hidden, want[1][0] / 3.5)
    with torch.no_grad():
        value = linear_cross_entropy(rows, weight, targets, token_weights, 7)
    assert value.grad_fn is None and value.item() == pytest.approx(plain.item(), rel=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(rows, weight, targets, token_weights, 0)
    with pytest.raises(ValueError, match="one per row"):
        linear_cross_entropy(rows, weight, targets[1:], token_weights, 7)


def test_linear_cross_entropy_under_autocast_runs_the_head_in_the_autocast_dtype():
    """bf16-mixed: the matmul in bf16 as nn.Linear would run it, the log-softmax in float32, and the
    gradients in the dtypes of the inputs (float32 master weights)."""
    hidden, weight, tokens = _head()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = _value_and_grads(arm_loss(F.linear(hidden, weight), tokens), [hidden, weight])
        loss = arm_linear_loss(hidden, weight, tokens, chunk_size=7)
        got = _value_and_grads(loss, [hidden, weight])
    assert loss.dtype == torch.float32
    assert got[1][0].dtype == hidden.dtype and got[1][1].dtype == weight.dtype
    # Same bf16 logits, so the same loss; the plain weight gradient is one bf16 matmul over all rows,
    # the chunked one sums per-chunk bf16 products in float32.
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-2, atol=1e-4)
    torch.testing.assert_close(got[1][1], want[1][1], rtol=2e-2, atol=1e-3)
    bf16_hidden = hidden.detach().bfloat16().requires_grad_()
    (grad,) = torch.autograd.grad(arm_linear_loss(bf16_hidden, weight.bfloat16(), tokens, chunk_size=7), [bf16_hidden])
    assert grad.dtype == torch.bfloat16


def test_the_full_logits_never_exist_in_chunks():
    """No op creates, and nothing is saved for backward, of N x V elements; the plain path does both
    (which is what makes this check meaningful)."""
    hidden, weight, tokens = _head()
    full = B * L * V

    def largest_created_and_saved(loss_fn):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            with LargestTensor() as largest:
                loss_fn().backward()
        return largest.numel, max(saved)

    created, saved = largest_created_and_saved(lambda: arm_loss(hidden @ weight.t(), tokens))
    assert created >= full and saved >= full
    for chunk_size in (7, 15):
        created, saved = largest_created_and_saved(lambda: arm_linear_loss(hidden, weight, tokens, chunk_size=chunk_size))
        assert created == max(chunk_size * V, V * D) and saved == max(B * L * D, V * D)
