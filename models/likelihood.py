"""Log-likelihood scoring of an answer given a prompt: exact for ARM, a Monte Carlo bound for MDM.

Multiple-choice tasks (MMLU, ARC-C, CMMLU, PIQA) rank answers by these scores, as LLaDA does
(Nie et al. 2025, Sec. 4 and App. B.6).

* ``arm_nll``: -log p(answer | prompt) = -sum_i log p(a_i | prompt, a_<i), exact;
  ``arm_loglikelihood`` returns log p with lm-eval's ``is_greedy`` beside it.
* ``mdm_nll_bound``: LLaDA eq. 6, an upper bound on -log p(answer | prompt):
  ``E_{l ~ U{1..L}} E_{r_l} [ (L / l) * sum_{i masked} -log p(a_i | prompt, r_l) ]`` where r_l is the
  answer with exactly l of its L tokens masked, chosen uniformly without replacement, and the prompt
  is never masked. Estimated by Monte Carlo; exact (one pass) for a single-token answer. The
  default ``stratified`` estimator (fixed, Neyman-allocated counts per l and position-balanced
  masks, see ``mask_plan``) is unbiased like the ``plain`` one; on a trained tiny MDM
  (tests/bench/likelihood_variance.py) it reaches at 32 passes about the standard error the plain
  estimator has at 128, for answers of at most 32 tokens.
* ``mdm_nll_bound_exact``: the same expectation by enumerating every mask (short answers only);
  the reference the estimators are tested and benchmarked against.

``model`` is any callable mapping token ids [B, T] (and, where a batch holds sequences of unequal
length, ``key_padding_mask=`` bool [B, T], True = real token) to logits [B, T, V]. Batches are right
padded. When prompt + answer exceed the model's context the prompt is truncated from the left (as
lm-evaluation-harness does); an answer that cannot fit at all is an error.
"""

from __future__ import annotations

import functools
import math
from itertools import combinations
from typing import Callable, Sequence, Union

import torch

Tokens = Union[Sequence[int], torch.Tensor]
Model = Callable[..., torch.Tensor]

ESTIMATORS = ("stratified", "plain")


# ----------------------------------------------------------------------------- shared helpers


def context_length(model: Model, max_len: int | None = None) -> int | None:
    """The longest sequence ``model`` accepts: ``max_len`` if given, else ``model.config.max_seq_len``
    or ``model.max_seq_len`` when the model declares one, else None (unknown, not checked)."""
    if max_len is not None:
        return int(max_len)
    config = getattr(model, "config", None)
    for source in (config, model):
        value = getattr(source, "max_seq_len", None)
        if isinstance(value, int):
            return value
    return None


def model_device(model: Model) -> torch.device:
    """Where the model's parameters live (CPU for a parameterless callable)."""
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        for parameter in parameters():
            return parameter.device
    return torch.device("cpu")


def guided_logits(conditional: torch.Tensor, unconditional: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Unsupervised classifier-free guidance (LLaDA eq. 16):
    p~(r | p, r_t) ∝ p(r | p, r_t)^(1+w) / p(r | m, r_t)^w, i.e. logits u + (1 + w)(c - u), where the
    unconditional pass sees the prompt replaced by mask tokens."""
    return unconditional + (1.0 + cfg_scale) * (conditional - unconditional)


def as_batch(prompt, answer) -> tuple[list[list[int]], list[list[int]], bool]:
    """Normalise one (prompt, answer) pair or a batch of pairs to lists of id lists.

    Returns (prompts, answers, single) where ``single`` says the caller passed one pair."""
    prompts, prompt_single = _as_id_lists(prompt, "prompt")
    answers, answer_single = _as_id_lists(answer, "answer")
    if prompt_single != answer_single or len(prompts) != len(answers):
        raise ValueError(
            f"got {len(prompts)} prompt(s) and {len(answers)} answer(s): pass one prompt with one answer, "
            "or equally long lists of prompts and answers"
        )
    for index, ids in enumerate(answers):
        if not ids:
            raise ValueError(f"answer {index} is empty; a likelihood needs at least one answer token")
    return prompts, answers, prompt_single


def _as_id_lists(value, name: str) -> tuple[list[list[int]], bool]:
    if isinstance(value, torch.Tensor):
        if value.dim() == 1:
            return [value.tolist()], True
        if value.dim() == 2:
            return value.tolist(), False
        raise ValueError(f"{name} must be 1-D (one sequence) or 2-D (a batch), got shape {tuple(value.shape)}")
    value = list(value)
    if not value or isinstance(value[0], int) or (isinstance(value[0], torch.Tensor) and value[0].dim() == 0):
        return [[int(v) for v in value]], True
    return [[int(v) for v in (item.tolist() if isinstance(item, torch.Tensor) else item)] for item in value], False


def _fit_context(prompt: list[int], answer: list[int], limit: int | None, reserve: int, index: int) -> list[int]:
    """Left-truncate ``prompt`` so that prompt + answer fit ``limit`` positions; ``reserve`` extra
    prompt tokens are required (ARM needs one token before the first answer token)."""
    if limit is None:
        return prompt
    if len(answer) + reserve > limit:
        raise ValueError(
            f"answer {index} has {len(answer)} tokens but the model's context is {limit} positions"
            + (" (one more is needed for the token it is conditioned on)" if reserve else "")
            + "; shorten the answer or use a model with a larger max_seq_len"
        )
    keep = limit - len(answer)
    return prompt[-keep:] if len(prompt) > keep else prompt


def run_padded(model: Model, rows: list[list[int]], device: torch.device, pad_id: int) -> torch.Tensor:
    """Logits [B, T, V] (float32) for right-padded ``rows``; a key-padding mask only when needed."""
    lengths = [len(r) for r in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    ids = ids.to(device)
    if min(lengths) == width:
        logits = model(ids)
    else:
        real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        logits = model(ids, key_padding_mask=real.to(device))
    return logits.float()


# ----------------------------------------------------------------------------- ARM


@torch.no_grad()
def arm_nll(model: Model, prompt, answer, *, batch_size: int = 32, max_len: int | None = None, pad_id: int = 0) -> torch.Tensor:
    """Exact -log p(answer | prompt) under a causal model: the sum of next-token NLLs of the answer.

    ``prompt``/``answer``: one sequence each (returns a 0-d tensor) or equally long lists of
    sequences (returns [N]). The prompt must hold at least one token (a BOS if nothing else):
    the first answer token is predicted from the position before it. Float64 on the CPU.
    """
    log_prob, _ = arm_loglikelihood(model, prompt, answer, batch_size=batch_size, max_len=max_len, pad_id=pad_id)
    return -log_prob


@torch.no_grad()
def arm_loglikelihood(model: Model, prompt, answer, *, batch_size: int = 32, max_len: int | None = None,
                      pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(answer | prompt), is_greedy) under a causal model, as lm-evaluation-harness's
    ``loglikelihood`` returns them: the exact sum of next-token log-probabilities of the answer, and
    whether greedy decoding from the prompt produces exactly the answer (every answer token is the
    argmax at its position). Shapes and truncation as ``arm_nll``; float64 and bool on the CPU.
    """
    prompts, answers, single = as_batch(prompt, answer)
    limit = context_length(model, max_len)
    for index, ids in enumerate(prompts):
        if not ids:
            raise ValueError(f"prompt {index} is empty; ARM scoring needs a context token (prepend BOS)")
    prompts = [_fit_context(p, a, limit, 1, i) for i, (p, a) in enumerate(zip(prompts, answers))]
    device = model_device(model)
    scores = torch.zeros(len(prompts), dtype=torch.float64)
    greedy = torch.zeros(len(prompts), dtype=torch.bool)
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        logits = run_padded(model, [prompts[i] + answers[i] for i in chunk], device, pad_id)
        log_probs = logits.log_softmax(-1)
        for row, i in enumerate(chunk):
            p, a = len(prompts[i]), len(answers[i])
            targets = torch.tensor(answers[i], device=log_probs.device)
            # logits at position t predict token t + 1
            scored = log_probs[row, p - 1 : p + a - 1]  # [a, V]
            scores[i] = scored.gather(-1, targets[:, None]).sum().double().cpu()
            greedy[i] = bool((scored.argmax(-1) == targets).all())
    return (scores[0], greedy[0]) if single else (scores, greedy)


# ----------------------------------------------------------------------------- MDM: mask plans


def neyman_allocation(answer_length: int, samples: int) -> torch.Tensor:
    """Samples per masked count l = 1..L (for samples >= L): one each, the rest given greedily in
    proportion to a_l = sqrt((L - l) / l) (Neyman allocation, n_l ∝ the stratum's spread): the spread
    of (L / l) * (a sum of l of L per-token losses drawn without replacement) grows like that.
    l = L has a single possible mask and L windows of l = 1 enumerate every position, so those two
    strata are capped at 1 and L samples while another stratum can still take more."""
    return torch.tensor(_neyman_allocation(answer_length, samples), dtype=torch.long)


@functools.lru_cache(maxsize=1024)
def _neyman_allocation(answer_length: int, samples: int) -> tuple[int, ...]:
    L = answer_length
    spread = [math.sqrt((L - l) / l) for l in range(1, L + 1)]
    counts = [1] * L
    for _ in range(samples - L):
        open_ = [l for l in range(1, L - 1) if spread[l] > 0] + ([0] if counts[0] < L else [])
        best = min(open_, key=lambda i: counts[i] / spread[i]) if open_ else 0
        counts[best] += 1
    return tuple(counts)


def mask_plan(
    answer_length: int, samples: int, estimator: str, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks [samples, L] (True = masked) and weights [samples] such that
    ``sum_j weight_j * sum_{i masked in j} nll_ij`` is an unbiased estimate of the eq. 6 bound.

    ``plain`` (LLaDA eq. 6 as written): l_j ~ U{1..L} i.i.d., each mask a uniform l_j-subset,
    weight (L / l_j) / samples.

    ``stratified`` (variance-reduced), two changes that leave the mean alone:

    1. l is stratified. With samples n >= L, every l gets a fixed number n_l >= 1 of samples
       (``neyman_allocation``: more where l is small and the (L / l)-weighted sum is noisy) and the
       estimate is (1 / L) sum_l mean_l, i.e. weight (L / l) / (L n_l). With n < L, sample j draws
       u_j uniformly from [j / n, (j + 1) / n) and takes l_j = floor(u_j L) + 1, weight (L / l_j) / n.
    2. Positions are balanced: the samples sharing an l mask consecutive windows of length l
       along a random cyclic order of the answer positions (a fresh order after every L / gcd(l, L)
       windows, which mask each position equally often), so masked counts per position differ by
       at most one instead of varying at random (l = 1 with L samples enumerates every position
       and is exact).

    Any window of a uniformly random cyclic order is a uniform l-subset, so each sample is
    unbiased for E[X | l]; the strata recombine with their true weights 1 / L. Correlation between
    samples changes only the variance.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    if samples < 1:
        raise ValueError(f"mc_samples must be at least 1, got {samples}")
    L = answer_length
    if estimator == "plain":
        counts = torch.randint(1, L + 1, (samples,), generator=generator)
        ranks = torch.rand(samples, L, generator=generator).argsort(-1).argsort(-1)
        masks = ranks < counts[:, None]  # a uniform counts_j-subset per row
        return masks, L / counts.double() / samples
    if samples >= L:
        per_length = _neyman_allocation(L, samples)
        counts = torch.tensor([l for l, n_l in enumerate(per_length, 1) for _ in range(n_l)])
        weights = 1.0 / torch.tensor([l * n_l for l, n_l in enumerate(per_length, 1) for _ in range(n_l)], dtype=torch.float64)
    else:
        u = (torch.arange(samples, dtype=torch.float64) + torch.rand(samples, generator=generator, dtype=torch.float64)) / samples
        counts = (u * L).long().clamp(max=L - 1) + 1
        weights = L / counts.double() / samples
    masks = torch.zeros(samples, L, dtype=torch.bool)
    for l in sorted(set(counts.tolist())):
        rows = (counts == l).nonzero().flatten()
        # window k covers [k l, k l + l) mod L of a cyclic order; L / gcd(l, L) windows mask every
        # position equally often, after which a fresh order is drawn
        window = torch.arange(len(rows))
        turns = window // (L // math.gcd(l, L))
        orders = torch.stack([torch.randperm(L, generator=generator) for _ in range(int(turns[-1]) + 1)])
        positions = (window[:, None] * l + torch.arange(l)[None, :]) % L
        masks[rows[:, None], orders[turns[:, None], positions]] = True
    return masks, weights


def exact_plan(answer_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every non-empty mask with its probability times L / l: the eq. 6 expectation as a finite sum."""
    if answer_length > 14:
        raise ValueError(f"enumerating all 2^{answer_length} masks is too costly; use mdm_nll_bound for answers over 14 tokens")
    L = answer_length
    masks, weights = [], []
    for l in range(1, L + 1):
        subsets = list(combinations(range(L), l))
        for subset in subsets:
            row = torch.zeros(L, dtype=torch.bool)
            row[list(subset)] = True
            masks.append(row)
            weights.append((1.0 / L) * (L / l) / len(subsets))
    return torch.stack(masks), torch.tensor(weights, dtype=torch.float64)


# ----------------------------------------------------------------------------- MDM: scoring


@torch.no_grad()
def mdm_nll_bound(
    model: Model,
    prompt,
    answer,
    *,
    mask_id: int,
    mc_samples: int = 128,
    cfg_scale: float = 0.0,
    batch_size: int = 32,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    estimator: str = "stratified",
    max_len: int | None = None,
) -> torch.Tensor:
    """Monte Carlo estimate of LLaDA's eq. 6 upper bound on -log p(answer | prompt).

    ``mc_samples`` forward passes per pair (twice that with ``cfg_scale > 0``: the unconditional
    pass replaces the prompt by ``mask_id``); a single-token answer uses one pass and is exact.
    ``estimator``: ``"stratified"`` (default; unbiased, lower variance, see ``mask_plan``) or
    ``"plain"`` (eq. 6 exactly as LLaDA samples it). ``generator``: a CPU torch.Generator for
    reproducible masks, drawn pair after pair, or one generator per pair, so that a pair's masks do
    not depend on which pairs share its batch. ``batch_size`` counts model rows per forward call.
    Returns a 0-d tensor for one pair, [N] for a batch (float64, CPU).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    prompts, answers, single = as_batch(prompt, answer)
    generators = generator if isinstance(generator, (list, tuple)) else [generator] * len(answers)
    if len(generators) != len(answers):
        raise ValueError(f"{len(generators)} generators for {len(answers)} pairs; give one per pair or a single one")
    plans = [
        mask_plan(len(a), 1 if len(a) == 1 else mc_samples, estimator, g) for a, g in zip(answers, generators)
    ]
    scores = _score_plans(model, prompts, answers, plans, mask_id, cfg_scale, batch_size, max_len)
    return scores[0] if single else scores


@torch.no_grad()
def mdm_nll_bound_exact(
    model: Model, prompt, answer, *, mask_id: int, cfg_scale: float = 0.0, batch_size: int = 32, max_len: int | None = None
) -> torch.Tensor:
    """The eq. 6 bound itself, enumerating all 2^L - 1 masks (answers of at most 14 tokens)."""
    prompts, answers, single = as_batch(prompt, answer)
    plans = [exact_plan(len(a)) for a in answers]
    scores = _score_plans(model, prompts, answers, plans, mask_id, cfg_scale, batch_size, max_len)
    return scores[0] if single else scores


def _score_plans(model, prompts, answers, plans, mask_id, cfg_scale, batch_size, max_len) -> torch.Tensor:
    """sum_j weight_j * sum_{i masked in j} -log p~(a_i | prompt, masked answer), per pair."""
    if cfg_scale < 0:
        raise ValueError(f"cfg_scale must be >= 0 (LLaDA searches 0, 0.5, 1, 1.5, 2), got {cfg_scale}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    limit = context_length(model, max_len)
    prompts = [_fit_context(p, a, limit, 0, i) for i, (p, a) in enumerate(zip(prompts, answers))]
    # all scored rows, right padded: clean ids, which positions are masked (and scored), lengths
    counts = [len(masks) for masks, _ in plans]
    width = max(len(p) + len(a) for p, a in zip(prompts, answers))
    clean = torch.full((sum(counts), width), mask_id, dtype=torch.long)
    masked = torch.zeros(sum(counts), width, dtype=torch.bool)
    is_prompt = torch.zeros(sum(counts), width, dtype=torch.bool)
    lengths = torch.zeros(sum(counts), dtype=torch.long)
    owners = torch.repeat_interleave(torch.arange(len(prompts)), torch.tensor(counts))
    weights = torch.cat([w for _, w in plans])
    row = 0
    for p, a, (masks, _) in zip(prompts, answers, plans):
        n, P, T = len(masks), len(p), len(p) + len(a)
        clean[row : row + n, :T] = torch.tensor(p + a, dtype=torch.long)
        masked[row : row + n, P:T] = masks
        is_prompt[row : row + n, :P] = True
        lengths[row : row + n] = T
        row += n
    noisy = clean.masked_fill(masked, mask_id)
    guided = cfg_scale > 0
    step = max(1, batch_size // 2) if guided else batch_size
    device = model_device(model)
    scores = torch.zeros(len(prompts), dtype=torch.float64)
    for start in range(0, len(noisy), step):
        stop = min(start + step, len(noisy))
        T = int(lengths[start:stop].max())
        ids = noisy[start:stop, :T]
        real = torch.arange(T)[None, :] < lengths[start:stop, None]
        if guided:  # the unconditional twin sees the prompt replaced by masks (LLaDA eq. 16)
            ids = torch.cat([ids, ids.masked_fill(is_prompt[start:stop, :T], mask_id)])
            real = torch.cat([real, real])
        ids = ids.to(device)
        logits = (model(ids) if bool(real.all()) else model(ids, key_padding_mask=real.to(device))).float()
        if guided:
            logits = guided_logits(logits[: stop - start], logits[stop - start :], cfg_scale)
        target = clean[start:stop, :T].to(logits.device)
        token_nll = -logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)  # [B, T]
        row_nll = torch.where(masked[start:stop, :T].to(logits.device), token_nll, 0.0).sum(-1).double().cpu()
        scores.index_add_(0, owners[start:stop], weights[start:stop] * row_nll)
    return scores


__all__ = [
    "arm_nll",
    "arm_loglikelihood",
    "mdm_nll_bound",
    "mdm_nll_bound_exact",
    "mask_plan",
    "neyman_allocation",
    "exact_plan",
    "guided_logits",
    "context_length",
    "model_device",
    "ESTIMATORS",
]
