"""Tests of models/objectives.py: the ARM and MDM losses and the MDM forward process."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.objectives import arm_loss, mdm_forward_process, mdm_loss, sft_response_mask


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
