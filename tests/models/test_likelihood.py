"""models/likelihood.py: exact ARM scoring and LLaDA's eq. 6 Monte Carlo bound for MDM."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
import torch

from models.config import preset
from models.likelihood import (
    ESTIMATORS,
    arm_nll,
    mask_plan,
    mdm_nll_bound,
    mdm_nll_bound_exact,
    neyman_allocation,
)
from models.transformer import Transformer

VOCAB, MASK_ID = 32, 31


@pytest.fixture(scope="module")
def arm():
    torch.manual_seed(0)
    return Transformer(preset("tiny", vocab_size=VOCAB, max_seq_len=16, init_std=0.2)).eval()


@pytest.fixture(scope="module")
def mdm():
    # a large init makes predictions depend strongly on which tokens are visible, so a wrong
    # distribution of masks would move the mean far outside the tolerance
    torch.manual_seed(1)
    return Transformer(preset("tiny", causal=False, vocab_size=VOCAB, max_seq_len=16, init_std=0.5)).eval()


class Counting:
    """Wraps a model and records the batch of every call."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __call__(self, ids, **kwargs):
        self.batches.append(ids.clone())
        return self.model(ids, **kwargs)


# ----------------------------------------------------------------------------- ARM


def test_arm_nll_is_the_sum_of_next_token_log_probs(arm):
    prompt, answer = [3, 1, 4, 1, 5], [9, 2, 6]
    with torch.no_grad():
        log_probs = arm(torch.tensor([prompt + answer])).log_softmax(-1)[0]
    direct = -sum(log_probs[len(prompt) - 1 + k, token].item() for k, token in enumerate(answer))
    assert arm_nll(arm, prompt, answer).item() == pytest.approx(direct, abs=1e-5)


def test_arm_nll_batch_of_unequal_lengths_matches_one_by_one(arm):
    prompts = [[1, 2, 3, 4, 5, 6], [7], [8, 9, 10]]
    answers = [[11], [12, 13, 14, 15], [16, 17]]
    batched = arm_nll(arm, prompts, answers)
    alone = torch.stack([arm_nll(arm, p, a) for p, a in zip(prompts, answers)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_arm_nll_truncates_the_prompt_from_the_left(arm):
    prompt, answer = list(range(1, 15)), [20, 21, 22, 23]  # 18 tokens, context 16
    kept = prompt[-(16 - len(answer)):]
    assert arm_nll(arm, prompt, answer).item() == pytest.approx(arm_nll(arm, kept, answer).item(), abs=1e-6)


def test_arm_nll_rejects_an_answer_longer_than_the_context(arm):
    with pytest.raises(ValueError, match="context is 16"):
        arm_nll(arm, [1], list(range(16)))
    with pytest.raises(ValueError, match="BOS"):
        arm_nll(arm, [], [1, 2])


# ----------------------------------------------------------------------------- MDM


def test_single_token_answer_is_the_exact_masked_cross_entropy(mdm):
    prompt, answer = [5, 6, 7, 8], [9]
    with torch.no_grad():
        log_probs = mdm(torch.tensor([prompt + [MASK_ID]])).log_softmax(-1)
    expected = -log_probs[0, -1, answer[0]].item()
    counting = Counting(mdm)
    for estimator in ESTIMATORS:
        got = mdm_nll_bound(counting, prompt, answer, mask_id=MASK_ID, mc_samples=128, estimator=estimator)
        assert got.item() == pytest.approx(expected, abs=1e-5)
    assert [b.shape[0] for b in counting.batches] == [1, 1]  # one pass each: the bound is exact


def test_cfg_applies_unsupervised_guidance_to_the_logits(mdm):
    prompt, answer, w = [5, 6, 7, 8], [9], 1.5
    with torch.no_grad():
        conditional = mdm(torch.tensor([prompt + [MASK_ID]]))[0, -1]
        unconditional = mdm(torch.tensor([[MASK_ID] * 5]))[0, -1]
    guided = ((1 + w) * conditional - w * unconditional).log_softmax(-1)
    got = mdm_nll_bound(mdm, prompt, answer, mask_id=MASK_ID, cfg_scale=w)
    assert got.item() == pytest.approx(-guided[answer[0]].item(), abs=1e-4)


def test_cfg_scale_zero_is_no_guidance_and_no_extra_pass(mdm):
    counting = Counting(mdm)
    generator = torch.Generator().manual_seed(0)
    with_zero = mdm_nll_bound(counting, [1, 2, 3], [4, 5, 6], mask_id=MASK_ID, mc_samples=8, cfg_scale=0.0, generator=generator)
    assert sum(b.shape[0] for b in counting.batches) == 8
    assert not any((b[:, :3] == MASK_ID).any() for b in counting.batches)  # the prompt is never masked
    guided = mdm_nll_bound(mdm, [1, 2, 3], [4, 5, 6], mask_id=MASK_ID, mc_samples=8, cfg_scale=1.0,
                           generator=torch.Generator().manual_seed(0))
    assert guided.item() != pytest.approx(with_zero.item(), abs=1e-3)


def _enumerated_bound(model, prompt, answer):
    """LLaDA eq. 6 by brute force, one forward pass per mask: (1/L) sum_l E_{|M|=l}[(L/l) sum_M nll].
    Also returns E[X | l] for each l."""
    L = len(answer)
    per_length = []
    for l in range(1, L + 1):
        values = []
        for subset in combinations(range(L), l):
            noisy = [MASK_ID if i in subset else t for i, t in enumerate(answer)]
            with torch.no_grad():
                log_probs = model(torch.tensor([prompt + noisy])).log_softmax(-1)[0]
            nll = -sum(log_probs[len(prompt) + i, answer[i]].item() for i in subset)
            values.append(L / l * nll)
        per_length.append(sum(values) / len(values))
    return sum(per_length) / L, per_length


@pytest.mark.parametrize("estimator,samples", [("plain", 4), ("stratified", 4), ("stratified", 2)])
def test_estimators_are_unbiased_against_the_enumerated_bound(mdm, estimator, samples):
    prompt, answer = [3, 14, 15, 9], [26, 5, 20]
    exact, per_length = _enumerated_bound(mdm, prompt, answer)
    assert mdm_nll_bound_exact(mdm, prompt, answer, mask_id=MASK_ID).item() == pytest.approx(exact, abs=1e-4)

    repeats = 3000
    estimates = mdm_nll_bound(
        mdm, [prompt] * repeats, [answer] * repeats, mask_id=MASK_ID, mc_samples=samples,
        estimator=estimator, batch_size=2048, generator=torch.Generator().manual_seed(7),
    )
    standard_error = estimates.std().item() / math.sqrt(repeats)
    # the test has power: drawing l non-uniformly would shift the mean by many standard errors
    assert max(per_length) - min(per_length) > 10 * standard_error
    assert abs(estimates.mean().item() - exact) < 4 * standard_error


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("length,samples", [(3, 2), (3, 4), (4, 7)])
def test_every_mask_gets_its_eq6_weight_in_expectation(estimator, length, samples):
    """Model-free unbiasedness: the estimate is sum_j w_j X(M_j), so it is unbiased for every model
    iff each mask M receives expected total weight P(l) P(M | l) (L / l) = 1 / (l C(L, l))."""
    generator, plans = torch.Generator().manual_seed(0), 8000
    codes = 2 ** torch.arange(length)
    totals = torch.zeros(plans, 2**length, dtype=torch.float64)
    for k in range(plans):
        masks, weights = mask_plan(length, samples, estimator, generator)
        totals[k].index_add_(0, (masks.long() * codes).sum(-1), weights)
    sizes = torch.tensor([bin(code).count("1") for code in range(2**length)])
    target = torch.tensor([0.0] + [1 / (l * math.comb(length, l)) for l in sizes[1:].tolist()], dtype=torch.float64)
    mean, standard_error = totals.mean(0), totals.std(0) / math.sqrt(plans)
    assert ((mean - target).abs() <= 5 * standard_error + 1e-12).all(), (mean - target) / standard_error


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("length,samples", [(5, 3), (5, 5), (5, 17), (8, 128)])
def test_mask_plan_weights_count_every_answer_token_once_in_expectation(estimator, length, samples):
    masks, weights = mask_plan(length, samples, estimator, torch.Generator().manual_seed(0))
    assert masks.shape == (samples, length) and masks.any(-1).all()
    # if every token's NLL were c, each sample would read (L / l) * l * c: the estimate must be L * c
    assert (weights * masks.sum(-1)).sum().item() == pytest.approx(length)


def test_stratified_plan_enumerates_single_token_masks_and_balances_positions():
    L = 6
    masks, _ = mask_plan(L, 40, "stratified", torch.Generator().manual_seed(3))
    allocation = neyman_allocation(L, 40)
    assert allocation.sum() == 40 and allocation[0] == L and allocation[-1] == 1
    assert (allocation[1:-1] >= allocation[2:]).all()  # l = 1 is capped at L; beyond it, more where l is small
    sizes = masks.sum(-1)
    assert (masks[sizes == 1].sum(0) == 1).all()  # l = 1: every position exactly once
    for l in range(2, L):
        coverage = masks[sizes == l].sum(0)
        assert coverage.max() - coverage.min() <= 2, (l, coverage)


def test_batch_with_unequal_prompts_matches_one_by_one(mdm):
    prompts, answers = [[1, 2, 3, 4, 5, 6, 7], [8], [9, 10, 11]], [[12, 13], [14, 15, 16], [17]]
    batched = mdm_nll_bound_exact(mdm, prompts, answers, mask_id=MASK_ID)
    alone = torch.stack([mdm_nll_bound_exact(mdm, p, a, mask_id=MASK_ID) for p, a in zip(prompts, answers)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_mdm_bound_rejects_bad_input(mdm):
    with pytest.raises(ValueError, match="context is 16"):
        mdm_nll_bound(mdm, [1], list(range(17)), mask_id=MASK_ID)
    with pytest.raises(ValueError, match="empty"):
        mdm_nll_bound(mdm, [1], [], mask_id=MASK_ID)
    with pytest.raises(ValueError, match="estimator"):
        mdm_nll_bound(mdm, [1], [2, 3], mask_id=MASK_ID, estimator="antithetic")
    with pytest.raises(ValueError, match="2 prompt"):
        mdm_nll_bound(mdm, [[1], [2]], [[3]], mask_id=MASK_ID)


def test_one_generator_per_pair_makes_a_pairs_estimate_independent_of_its_batch(mdm):
    """With a generator per pair, a pair's masks (and so its estimate) are the same alone or beside
    others; one shared generator draws them pair after pair, so a neighbour changes them."""
    prompts, answers = [[1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]

    def seeded(n):
        return [torch.Generator().manual_seed(100 + k) for k in range(n)]

    together = mdm_nll_bound(mdm, prompts, answers, mask_id=MASK_ID, mc_samples=4, generator=seeded(2))
    alone = mdm_nll_bound(mdm, prompts[1], answers[1], mask_id=MASK_ID, mc_samples=4,
                          generator=[torch.Generator().manual_seed(101)])
    assert together[1].item() == pytest.approx(alone.item(), abs=1e-5)
    shared = mdm_nll_bound(mdm, prompts, answers, mask_id=MASK_ID, mc_samples=4,
                           generator=torch.Generator().manual_seed(101))
    assert shared[1].item() != pytest.approx(alone.item(), abs=1e-5)
    with pytest.raises(ValueError, match="3 generators for 2 pairs"):
        mdm_nll_bound(mdm, prompts, answers, mask_id=MASK_ID, generator=seeded(3))
