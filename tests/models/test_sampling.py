"""models/sampling.py: LLaDA's MDM reverse-process sampler and ARM decoding."""

from __future__ import annotations

import pytest
import torch

from models.config import preset
from models.sampling import arm_generate, generate, top_p_filter, transfer_schedule
from models.transformer import Transformer

VOCAB, MASK_ID = 32, 31


@pytest.fixture(scope="module")
def mdm():
    torch.manual_seed(0)
    return Transformer(preset("tiny", causal=False, vocab_size=VOCAB, max_seq_len=32, init_std=0.3)).eval()


@pytest.fixture(scope="module")
def arm():
    torch.manual_seed(0)
    return Transformer(preset("tiny", vocab_size=VOCAB, max_seq_len=32, init_std=0.3)).eval()


class Recorder:
    """Records every input and the logits the model returned for it."""

    def __init__(self, model):
        self.model, self.inputs, self.logits = model, [], []

    def __call__(self, ids, **kwargs):
        logits = self.model(ids, **kwargs)
        self.inputs.append(ids.clone())
        self.logits.append(logits.detach().clone())
        return logits


class FixedLogits:
    """A model whose logits depend only on the position (and, optionally, on whether the prompt
    is visible): a controlled stand-in for confidence and guidance tests."""

    def __init__(self, conditional, unconditional=None, prompt_length=0):
        self.conditional, self.unconditional, self.prompt_length = conditional, unconditional, prompt_length
        self.calls = 0

    def __call__(self, ids, **kwargs):
        self.calls += 1
        out = self.conditional[None, : ids.shape[1]].expand(ids.shape[0], -1, -1).clone()
        if self.unconditional is not None:
            blind = (ids[:, : self.prompt_length] == MASK_ID).all(-1)
            out[blind] = self.unconditional[: ids.shape[1]]
        return out


# ----------------------------------------------------------------------------- MDM


def test_transfer_schedule_matches_llada():
    assert transfer_schedule(6, 4) == [2, 2, 1, 1]
    assert transfer_schedule(8, 8) == [1] * 8
    assert transfer_schedule(3, 5) == [1, 1, 1, 0, 0]


def test_greedy_generation_is_deterministic_and_keeps_the_prompt(mdm):
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    first = generate(mdm, prompt, gen_length=8, steps=8, block_length=4, mask_id=MASK_ID)
    second = generate(mdm, prompt, gen_length=8, steps=8, block_length=4, mask_id=MASK_ID)
    assert first.shape == (2, 12)
    assert torch.equal(first, second)
    assert torch.equal(first[:, :4], prompt)
    assert not (first == MASK_ID).any()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_commits_the_scheduled_count_inside_the_current_block_only(mdm, remasking):
    recorder = Recorder(mdm)
    prompt, gen_length, block_length, steps = [3, 1, 4], 12, 6, 8  # 2 blocks of 4 steps: 2, 2, 1, 1
    out = generate(recorder, torch.tensor([prompt]), gen_length=gen_length, steps=steps, block_length=block_length,
                   remasking=remasking, mask_id=MASK_ID, generator=torch.Generator().manual_seed(0))
    states = [x[0] for x in recorder.inputs] + [out[0]]
    assert len(recorder.inputs) == steps
    for step in range(steps):
        block = step // 4
        lo, hi = len(prompt) + block * block_length, len(prompt) + (block + 1) * block_length
        before, after = states[step] == MASK_ID, states[step + 1] == MASK_ID
        committed = (before & ~after).nonzero().flatten()
        assert len(committed) == [2, 2, 1, 1][step % 4]
        assert ((committed >= lo) & (committed < hi)).all()
        assert after[hi:].all()  # nothing beyond the current block
        assert not before[:lo].any()  # earlier blocks are complete


def test_low_confidence_commits_the_most_confident_positions(mdm):
    recorder = Recorder(mdm)
    out = generate(recorder, torch.tensor([[7, 7, 2]]), gen_length=8, steps=4, mask_id=MASK_ID)
    states = [x[0] for x in recorder.inputs] + [out[0]]
    for step, logits in enumerate(recorder.logits):
        logits = logits[0].clone()
        logits[:, MASK_ID] = float("-inf")
        confidence = logits.softmax(-1).max(-1).values
        masked = states[step] == MASK_ID
        committed = masked & (states[step + 1] != MASK_ID)
        assert confidence[committed].min() >= confidence[masked & ~committed].max() if (masked & ~committed).any() else True
        assert torch.equal(states[step + 1][committed], logits.argmax(-1)[committed])


def test_low_confidence_order_with_known_confidences():
    gen_length, prompt_length = 6, 2
    peaks = torch.tensor([0.0, 0.0, 1.0, 5.0, 3.0, 0.5, 4.0, 2.0])  # confidence per position
    logits = torch.zeros(8, VOCAB)
    logits[torch.arange(8), torch.arange(8) + 10] = peaks
    recorder = Recorder(FixedLogits(logits))
    out = generate(recorder, torch.tensor([[1, 2]]), gen_length=gen_length, steps=3, mask_id=MASK_ID)
    states = [x[0] for x in recorder.inputs] + [out[0]]
    order = [set(((states[s] == MASK_ID) & (states[s + 1] != MASK_ID)).nonzero().flatten().tolist()) for s in range(3)]
    assert order == [{3, 6}, {4, 7}, {2, 5}]
    assert out[0, prompt_length:].tolist() == [12, 13, 14, 15, 16, 17]


def test_cfg_scale_zero_is_no_guidance_and_guidance_follows_eq_16():
    # conditional favours token A = 1 by 1 nat, unconditional by 2: guided A - B = 1 - w
    conditional = torch.zeros(6, VOCAB)
    conditional[:, 1] = 1.0
    unconditional = torch.zeros(6, VOCAB)
    unconditional[:, 1] = 2.0
    for scale, expected in [(0.0, 1), (0.5, 1), (2.0, 0)]:
        model = FixedLogits(conditional, unconditional, prompt_length=2)
        out = generate(model, torch.tensor([[5, 6]]), gen_length=4, steps=2, cfg_scale=scale, mask_id=MASK_ID)
        assert out[0, 2:].tolist() == [expected] * 4, scale
        assert model.calls == 2  # one batched call per step, unconditional rows included when scale > 0
    plain = FixedLogits(conditional, unconditional, prompt_length=2)
    assert torch.equal(generate(plain, torch.tensor([[5, 6]]), gen_length=4, steps=2, mask_id=MASK_ID),
                       generate(plain, torch.tensor([[5, 6]]), gen_length=4, steps=2, cfg_scale=0.0, mask_id=MASK_ID))


def test_temperature_samples_from_the_softmax():
    logits = torch.zeros(2, VOCAB)
    logits[1, :] = float("-inf")
    logits[1, 3], logits[1, 4] = torch.tensor(0.7).log(), torch.tensor(0.3).log()
    draws = generate(FixedLogits(logits), torch.tensor([[9]] * 4000), gen_length=1, steps=1, temperature=1.0,
                     mask_id=MASK_ID, generator=torch.Generator().manual_seed(0))[:, 1]
    assert set(draws.tolist()) == {3, 4}
    assert abs((draws == 3).float().mean().item() - 0.7) < 4 * (0.7 * 0.3 / 4000) ** 0.5


def test_unequal_prompts_in_one_batch_match_generating_alone(mdm):
    prompts = [[1, 2, 3, 4, 5], [6, 7]]
    batched = generate(mdm, prompts, gen_length=6, steps=6, block_length=3, cfg_scale=1.0, mask_id=MASK_ID)
    alone = [generate(mdm, p, gen_length=6, steps=6, block_length=3, cfg_scale=1.0, mask_id=MASK_ID) for p in prompts]
    assert batched == alone
    assert batched[1][:2] == [6, 7] and len(batched[1]) == 8


def test_bad_generation_settings_are_clear_errors(mdm):
    prompt = torch.tensor([[1, 2]])
    with pytest.raises(ValueError, match="block_length=5 does not divide gen_length=8"):
        generate(mdm, prompt, gen_length=8, steps=8, block_length=5, mask_id=MASK_ID)
    with pytest.raises(ValueError, match="steps=6 is not divisible by the number of blocks"):
        generate(mdm, prompt, gen_length=8, steps=6, block_length=2, mask_id=MASK_ID)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        generate(mdm, prompt, gen_length=31, steps=31, mask_id=MASK_ID)
    with pytest.raises(ValueError, match="remasking"):
        generate(mdm, prompt, gen_length=4, steps=4, remasking="entropy", mask_id=MASK_ID)


# ----------------------------------------------------------------------------- ARM


def test_arm_greedy_with_cache_matches_recomputation_and_a_manual_loop(arm):
    prompt = [1, 2, 3]
    cached = arm_generate(arm, [prompt], max_new_tokens=6)[0]
    recomputed = arm_generate(arm, [prompt], max_new_tokens=6, use_cache=False)[0]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):
            ids.append(int(arm(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == recomputed == ids[3:]


def test_arm_batch_of_unequal_prompts_matches_one_by_one(arm):
    prompts = [[5, 6, 7, 8, 9], [1], [2, 3]]
    batched = arm_generate(arm, prompts, max_new_tokens=5)
    assert batched == [arm_generate(arm, [p], max_new_tokens=5)[0] for p in prompts]


class Cycle:
    """A causal stand-in that always predicts (last token + 1) mod 8 with certainty."""

    def __call__(self, ids, **kwargs):
        logits = torch.full((*ids.shape, VOCAB), -1e9)
        logits.scatter_(-1, ((ids + 1) % 8)[..., None], 0.0)
        return logits


def test_arm_stops_at_stop_sequences_and_eos():
    assert arm_generate(Cycle(), [[0]], max_new_tokens=10) == [[1, 2, 3, 4, 5, 6, 7, 0, 1, 2]]
    assert arm_generate(Cycle(), [[0], [4]], max_new_tokens=10, stop_sequences=[[3, 4]]) == [[1, 2], [5, 6, 7, 0, 1, 2]]
    assert arm_generate(Cycle(), [[0]], max_new_tokens=10, eos_id=5) == [[1, 2, 3, 4]]


def test_top_p_keeps_the_nucleus_and_samples_it_in_proportion():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    filtered = top_p_filter(probs.log()[None], 0.6)[0]
    assert torch.isinf(filtered[2:]).all() and torch.isfinite(filtered[:2]).all()

    class Fixed:
        def __call__(self, ids, **kwargs):
            out = torch.full((*ids.shape, VOCAB), float("-inf"))
            out[..., :4] = probs.log()
            return out

    draws = torch.tensor(arm_generate(Fixed(), [[0]] * 3000, max_new_tokens=1, temperature=1.0, top_p=0.6,
                                      generator=torch.Generator().manual_seed(0))).flatten()
    assert set(draws.tolist()) == {0, 1}
    share = (draws == 0).float().mean().item()
    assert abs(share - 0.5 / 0.8) < 4 * (0.625 * 0.375 / 3000) ** 0.5


def test_arm_generation_rejects_overlong_requests(arm):
    with pytest.raises(ValueError, match="exceeds the model's context of 32"):
        arm_generate(arm, [[1] * 30], max_new_tokens=3)
    with pytest.raises(ValueError, match="BOS"):
        arm_generate(arm, [[]], max_new_tokens=3)


@pytest.mark.parametrize("sampler", ["arm", "mdm"])
def test_sampling_builds_no_autograd_graph(arm, mdm, sampler):
    grad_enabled = []

    def record(ids, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return (arm if sampler == "arm" else mdm)(ids, **kwargs)

    prompt = [[1, 2, 3]]
    if sampler == "arm":
        arm_generate(record, prompt, max_new_tokens=3, use_cache=False, max_len=32)
    else:
        generate(record, prompt, gen_length=4, steps=2, mask_id=MASK_ID)
    assert grad_enabled and not any(grad_enabled)
